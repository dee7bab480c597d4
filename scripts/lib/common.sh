# shellcheck shell=bash disable=SC2034
# Shared by scripts/deps.sh and scripts/infra.sh: where things live, pinned
# versions, messages. Source it; it defines names only and runs nothing.

# The repository root, from this file's own place (scripts/lib/).
SHOP_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)

# Downloads that are not Debian packages live in a per-user cache, one
# versioned folder each, with a stamp file written only after success.
SHOP_CACHE_DIR=${SHOP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shop}

# Kafka's version has one home: deploy/kafka/pom.xml.
SHOP_KAFKA_POM="$SHOP_REPO/deploy/kafka/pom.xml"
SHOP_KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$SHOP_KAFKA_POM")
SHOP_KAFKA_HOME="$SHOP_CACHE_DIR/kafka-$SHOP_KAFKA_VERSION"
SHOP_KAFKA_LIBS="$SHOP_KAFKA_HOME/libs"
# The stamp holds the pom's checksum, so editing the pom (say, the log4j
# binding) without changing Kafka's version still fetches again.
SHOP_KAFKA_STAMP="$SHOP_KAFKA_HOME/.complete"

SHOP_BUF_VERSION=1.75.0
SHOP_BUF_HOME="$SHOP_CACHE_DIR/buf-$SHOP_BUF_VERSION"
SHOP_BUF_BIN="$SHOP_BUF_HOME/node_modules/.bin/buf"
SHOP_BUF_STAMP="$SHOP_BUF_HOME/.complete"

# The Python venv for Shop's Python parts and their tests: one folder per
# content of deploy/python/requirements.txt, made by scripts/deps.sh.
SHOP_PY_REQUIREMENTS="$SHOP_REPO/deploy/python/requirements.txt"
SHOP_VENV="$SHOP_CACHE_DIR/venv-$(sha256sum "$SHOP_PY_REQUIREMENTS" | cut -c 1-12)"
SHOP_VENV_STAMP="$SHOP_VENV/.complete"

# Oldest Java the broker runs on.
SHOP_JAVA_MIN=17

shop_log() { printf '%s\n' "$*"; }
shop_warn() { printf '%s\n' "$*" >&2; }
shop_die() {
	printf '%s\n' "$*" >&2
	exit 1
}

# The major version of the `java` on PATH ("8" for 1.8), or nothing.
shop_java_major() {
	local line ver
	command -v java >/dev/null 2>&1 || return 0
	line=$(java -version 2>&1 | head -n 1) || return 0
	ver=${line#*\"}
	ver=${ver%%\"*}
	case $ver in
	1.*) ver=${ver#1.} ;;
	esac
	ver=${ver%%[!0-9]*}
	printf '%s\n' "$ver"
}

shop_kafka_pom_sum() {
	sha256sum "$SHOP_KAFKA_POM" | cut -d ' ' -f 1
}

# True when the Kafka jars for the pinned pom were fetched completely.
shop_kafka_libs_ok() {
	[[ -f $SHOP_KAFKA_STAMP && -d $SHOP_KAFKA_LIBS ]] &&
		[[ $(<"$SHOP_KAFKA_STAMP") == "$(shop_kafka_pom_sum)" ]]
}

shop_venv_ok() {
	[[ -f $SHOP_VENV_STAMP && -x $SHOP_VENV/bin/python ]]
}

shop_buf_ok() {
	[[ -f $SHOP_BUF_STAMP && -x $SHOP_BUF_BIN ]]
}

# The programs that serve RPC, with their endpoint key, and every program
# with an admin HTTP port, in the order of their ports (config keys).
SHOP_RPC_KEYS=(user_command user_query product_command product_query order_command order_query
	audit_query)
SHOP_ADMIN_KEYS=(user_command user_query product_command product_query order_command order_query
	inventory_worker payment_worker notification_worker audit_worker)

# shop_ports_env BASE: exports the ports of a whole Shop stack laid out
# from BASE, as environment overrides of the config (SHOP_<SECTION>__<KEY>)
# and of scripts/infra.sh: +0 MariaDB, +1/+2 Kafka (broker, controller),
# +11.. the RPC endpoints (SHOP_RPC_KEYS), +25 the SMTP sink, +26 the
# webhook sink, +40.. the admin HTTP ports (SHOP_ADMIN_KEYS). The fault
# scenarios, the benchmark and a test run with SHOP_TEST_PORT_BASE use it,
# so that several stacks (worktrees, say) run side by side.
shop_ports_env() {
	local base=$1 i key
	[[ $base =~ ^[0-9]+$ ]] && ((base >= 1024 && base + 50 <= 65535)) ||
		shop_die "ports: bad port base '$base'"
	export SHOP_MYSQL_PORT=$base SHOP_KAFKA_PORT=$((base + 1)) SHOP_KAFKA_CONTROLLER_PORT=$((base + 2))
	for i in "${!SHOP_RPC_KEYS[@]}"; do
		key=${SHOP_RPC_KEYS[i]}
		export "SHOP_ENDPOINTS__${key^^}=tcp://127.0.0.1:$((base + 11 + i))"
	done
	export SHOP_NOTIFY__SMTP_URL=smtp://127.0.0.1:$((base + 25))
	export SHOP_NOTIFY__SMS_URL=http://127.0.0.1:$((base + 26))/sms
	export SHOP_NOTIFY__PUSH_URL=http://127.0.0.1:$((base + 26))/push
	for i in "${!SHOP_ADMIN_KEYS[@]}"; do
		key=${SHOP_ADMIN_KEYS[i]}
		export "SHOP_ADMIN__${key^^}=$((base + 40 + i))"
	done
}
