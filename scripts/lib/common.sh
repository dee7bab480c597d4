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

# Shop's programs, one name a line, in the order of
# internal/config/programs.list (the one list of them; see its header).
SHOP_PROGRAMS_LIST=$SHOP_REPO/internal/config/programs.list
shop_programs() {
	sed -n 's/^\([a-z][a-z0-9-]*\)[[:space:]].*/\1/p' "$SHOP_PROGRAMS_LIST"
}

# shop_unit_of PROGRAM: the name of its systemd unit template, without
# "@.service" (scripts/systemd-units.sh): shop-PROGRAM, or PROGRAM itself
# when it already starts with shop- (shop-gateway).
shop_unit_of() {
	[[ $1 == shop-* ]] && printf '%s\n' "$1" || printf 'shop-%s\n' "$1"
}

# shop_ports_env BASE: exports the ports of a whole Shop stack laid out
# from BASE, as environment overrides of the config (SHOP_<SECTION>__<KEY>)
# and of scripts/infra.sh: +0 MariaDB, +1/+2 Kafka (broker, controller),
# +11.. the RPC endpoints (endpoints.port_base: one per program with an
# endpoint, in the order of internal/config/programs.list), +25 the SMTP
# sink, +26 the webhook sink, +30 the gateway's HTTP, +40.. the admin HTTP
# ports (admin.port_base, one per program). The fault scenarios, the benchmark and a test run with
# SHOP_TEST_PORT_BASE use it, so that several stacks (worktrees, say) run
# side by side.
shop_ports_env() {
	local base=$1
	[[ $base =~ ^[0-9]+$ ]] && ((base >= 1024 && base + 50 <= 65535)) ||
		shop_die "ports: bad port base '$base'"
	export SHOP_MYSQL_PORT=$base SHOP_KAFKA_PORT=$((base + 1)) SHOP_KAFKA_CONTROLLER_PORT=$((base + 2))
	export SHOP_ENDPOINTS__HOST=127.0.0.1 SHOP_ENDPOINTS__PORT_BASE=$((base + 11))
	export SHOP_NOTIFY__SMTP_URL=smtp://127.0.0.1:$((base + 25))
	export SHOP_NOTIFY__SMS_URL=http://127.0.0.1:$((base + 26))/sms
	export SHOP_NOTIFY__PUSH_URL=http://127.0.0.1:$((base + 26))/push
	export SHOP_GATEWAY__PORT=$((base + 30))
	export SHOP_ADMIN__PORT_BASE=$((base + 40))
}

# shop_cluster_ports_env BASE: shop_ports_env BASE for the cluster profile
# (config/cluster.yaml), plus what that profile has beyond one of each:
# the replica (+7), the three brokers (+1, +3, +5; scripts/lib/cluster.sh)
# and every RPC endpoint as the list of its instances (instance K at the
# first's port + (K-1) * SHOP_INSTANCE_PORT_STEP, default 50;
# SHOP_CLUSTER_INSTANCES of them, default 2).
shop_cluster_ports_env() {
	local base=$1 step=${SHOP_INSTANCE_PORT_STEP:-50} n=${SHOP_CLUSTER_INSTANCES:-2} key i k list
	shop_ports_env "$base"
	export SHOP_CLUSTER_PORT_BASE=$base SHOP_MYSQL_READ_PORT=$((base + 7))
	export SHOP_KAFKA_BROKERS=127.0.0.1:$((base + 1)),127.0.0.1:$((base + 3)),127.0.0.1:$((base + 5))
	i=0
	for key in $(awk '!/^#/ && NF >= 3 && $2 != "-" { print $2 }' "$SHOP_PROGRAMS_LIST"); do
		list=
		for ((k = 0; k < n; k++)); do
			list+=${list:+,}tcp://127.0.0.1:$((base + 11 + i + k * step))
		done
		export "SHOP_ENDPOINTS__${key^^}=$list"
		i=$((i + 1))
	done
}

# shop_admin_url BIN NAME [CONFIG]: http://host:port of program NAME's
# admin server, as NAME itself reads its config (BIN --print-config: the
# file, then the environment of the caller). Fails, said, when the port is
# 0 (ephemeral: no address to probe).
shop_admin_url() {
	local bin=$1 name=$2 cfg=() host port
	[[ -n ${3:-} ]] && cfg=(--config "$3")
	host=$("$bin" "${cfg[@]}" --print-config admin.host) &&
		port=$("$bin" "${cfg[@]}" --print-config "admin.${name//-/_}") || return 1
	if ((port <= 0)); then
		shop_warn "$name: admin.${name//-/_} is 0 (ephemeral): no address to probe"
		return 1
	fi
	printf 'http://%s:%s\n' "$host" "$port"
}

# shop_ready URL PID: true when URL/readyz answers 200 and the answer comes
# from process PID (the X-Shop-Pid header every Shop program sends), so
# that neither the run before a restart nor another process on the port
# is taken for the one we wait for.
shop_ready() {
	local head
	head=$(curl -s -o /dev/null -D - --max-time 2 "$1/readyz" 2>/dev/null | tr -d '\r') || return 1
	[[ $head == "HTTP/"*" 200"* ]] && grep -qix "x-shop-pid: $2" <<<"$head"
}
