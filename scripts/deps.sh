#!/usr/bin/env bash
# Installs what Shop needs to build, test and run, and only what is missing.
#
#   scripts/deps.sh                    install what is missing (quiet if nothing is)
#   scripts/deps.sh --print-buf        print the buf CLI's path (installs nothing)
#   scripts/deps.sh --print-kafka-libs print the Kafka broker's jar folder (installs nothing)
#   scripts/deps.sh --print-cache      print the download cache folder
#   scripts/deps.sh --print-venv       print the Python venv's folder (installs nothing)
#
# Four sources: Debian packages (apt, needs root), the Kafka broker's jars
# (Maven Central, through deploy/kafka/pom.xml), the buf CLI (npm) and the
# Python packages of deploy/python/requirements.txt (PyPI, into a venv). The
# last three go to ${XDG_CACHE_HOME:-~/.cache}/shop (SHOP_CACHE_DIR overrides),
# into versioned folders with a stamp file written only after success, so an
# interrupted download is redone on the next run.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Debian packages: libraries and tools for the build, the test suite and the
# private infrastructure (scripts/infra.sh; systemd for the systemd-analyze
# verify of tests/deploy). node/npm, java and maven are
# handled below: only installed when the PATH has none (or too old a java).
DEBIAN_PACKAGES=(
	libnng-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
	librdkafka-dev libmariadb-dev mariadb-server mariadb-client libyaml-dev
	libcriterion-dev libjansson-dev libsodium-dev libjwt-dev
	libcurl4-openssl-dev libmicrohttpd-dev uuid-dev kcat libprotobuf-dev chromium chromium-driver
	clang libclang-rt-14-dev python3-aiosmtpd python3-venv valgrind pkg-config
	clang-format cmake make gcc git curl procps iproute2 systemd
)

# Set to yes by whichever step had to install something.
INSTALLED=no

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

# Prints the packages of "$@" that are not fully installed.
missing_debian_packages() {
	local installed
	# One dpkg-query for all: unknown names are reported on stderr and
	# simply do not appear among the installed ones.
	installed=$(dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null |
		awk '$2 == "install" && $4 == "installed" { print $1 }') || true
	local p
	for p in "$@"; do
		grep -qxF -- "$p" <<<"$installed" || printf '%s\n' "$p"
	done
}

install_debian_packages() {
	local missing=()
	command -v dpkg-query >/dev/null 2>&1 ||
		shop_die "deps: this script installs with apt on Debian; install by hand: ${DEBIAN_PACKAGES[*]}, node/npm, Java >= $SHOP_JAVA_MIN, maven"
	mapfile -t missing < <(missing_debian_packages "${DEBIAN_PACKAGES[@]}")

	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
		missing+=(nodejs npm)
	fi
	local jv
	jv=$(shop_java_major)
	if [[ -z $jv || $jv -lt $SHOP_JAVA_MIN ]]; then
		missing+=(openjdk-17-jre-headless)
	fi
	command -v mvn >/dev/null 2>&1 || missing+=(maven)

	((${#missing[@]} == 0)) && return 0
	INSTALLED=yes

	if ((EUID != 0)); then
		shop_die "deps: missing Debian packages: ${missing[*]}
deps: install them as root, then run this again:
  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
	fi
	shop_log "deps: installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q -o Dpkg::Use-Pty=0 >/dev/null ||
		shop_die "deps: apt-get update failed"
	# mariadb-server's postinst may start a system MariaDB on 3306; Shop
	# never uses it (scripts/infra.sh runs its own on other ports).
	apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" ||
		shop_die "deps: apt-get install failed for: ${missing[*]}"

	jv=$(shop_java_major)
	if [[ -z $jv || $jv -lt $SHOP_JAVA_MIN ]]; then
		shop_die "deps: openjdk-17 is installed but 'java' on PATH is still ${jv:-missing};" \
			"select it with: update-alternatives --config java"
	fi
}

install_kafka_libs() {
	shop_kafka_libs_ok && return 0
	INSTALLED=yes
	command -v mvn >/dev/null 2>&1 || shop_die "deps: mvn not found; install maven"
	shop_log "deps: fetching Kafka $SHOP_KAFKA_VERSION broker jars into $SHOP_KAFKA_LIBS"
	local partial="$SHOP_KAFKA_HOME/libs.partial"
	rm -rf -- "$partial" "$SHOP_KAFKA_STAMP"
	mkdir -p -- "$partial"
	local log="$SHOP_KAFKA_HOME/mvn.log"
	# Maven prints its errors on stdout: keep all of it in a log, show the
	# end of it on failure.
	if ! mvn -q -B -Dstyle.color=never -f "$SHOP_KAFKA_POM" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$partial" >"$log" 2>&1; then
		tail -n 40 -- "$log" >&2
		rm -rf -- "$partial"
		shop_die "deps: maven could not fetch the Kafka jars (log: $log)"
	fi
	rm -rf -- "$SHOP_KAFKA_LIBS"
	mv -- "$partial" "$SHOP_KAFKA_LIBS"
	shop_kafka_pom_sum >"$SHOP_KAFKA_STAMP"
}

install_buf() {
	shop_buf_ok && return 0
	INSTALLED=yes
	command -v npm >/dev/null 2>&1 || shop_die "deps: npm not found; install nodejs and npm"
	shop_log "deps: installing buf $SHOP_BUF_VERSION into $SHOP_BUF_HOME"
	rm -f -- "$SHOP_BUF_STAMP"
	mkdir -p -- "$SHOP_BUF_HOME"
	npm install --prefix "$SHOP_BUF_HOME" --no-audit --no-fund --loglevel=error \
		"@bufbuild/buf@$SHOP_BUF_VERSION" >/dev/null ||
		shop_die "deps: npm could not install @bufbuild/buf@$SHOP_BUF_VERSION (see above)"
	local got
	got=$("$SHOP_BUF_BIN" --version 2>/dev/null) ||
		shop_die "deps: $SHOP_BUF_BIN does not run"
	[[ $got == "$SHOP_BUF_VERSION" ]] ||
		shop_die "deps: buf reports version $got, expected $SHOP_BUF_VERSION"
	printf '%s\n' "$SHOP_BUF_VERSION" >"$SHOP_BUF_STAMP"
}

# The venv is made with the python3 on PATH (Debian's needs python3-venv,
# which install_debian_packages adds); the stamp is written only after
# every package installed, so an interrupted install starts over.
install_venv() {
	shop_venv_ok && return 0
	INSTALLED=yes
	local py log=$SHOP_CACHE_DIR/venv-pip.log
	py=$(command -v python3) || shop_die "deps: python3 not found"
	shop_log "deps: installing the Python packages of deploy/python/requirements.txt into $SHOP_VENV"
	rm -rf -- "$SHOP_VENV"
	mkdir -p -- "$SHOP_CACHE_DIR"
	if ! "$py" -m venv "$SHOP_VENV" >"$log" 2>&1 ||
		! "$SHOP_VENV/bin/python" -m pip install -q --disable-pip-version-check \
			-r "$SHOP_PY_REQUIREMENTS" >>"$log" 2>&1; then
		tail -n 40 -- "$log" >&2
		rm -rf -- "$SHOP_VENV"
		shop_die "deps: could not make the Python venv of deploy/python/requirements.txt (log: $log)"
	fi
	sha256sum "$SHOP_PY_REQUIREMENTS" >"$SHOP_VENV_STAMP"
}

main() {
	case ${1:-} in
	"") ;;
	--print-buf)
		printf '%s\n' "$SHOP_BUF_BIN"
		return 0
		;;
	--print-kafka-libs)
		printf '%s\n' "$SHOP_KAFKA_LIBS"
		return 0
		;;
	--print-venv)
		printf '%s\n' "$SHOP_VENV"
		return 0
		;;
	--print-cache)
		printf '%s\n' "$SHOP_CACHE_DIR"
		return 0
		;;
	-h | --help)
		usage
		return 0
		;;
	*)
		usage >&2
		return 2
		;;
	esac

	install_debian_packages
	install_kafka_libs
	install_buf
	install_venv
	if [[ $INSTALLED == no ]]; then
		shop_log "deps: all present"
	else
		shop_log "deps: done (kafka jars: $SHOP_KAFKA_LIBS, buf: $SHOP_BUF_BIN)"
	fi
}

main "$@"
