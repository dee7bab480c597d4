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

shop_buf_ok() {
	[[ -f $SHOP_BUF_STAMP && -x $SHOP_BUF_BIN ]]
}
