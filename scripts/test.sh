#!/usr/bin/env bash
# Runs the whole test suite against the test profile's own MariaDB and Kafka
# (their own ports and run folder, so a `make run` demo can keep running).
# Starts the infrastructure if it is not up, and stops it again afterwards
# if this script started it.
#
# SHOP_TEST_PORT_BASE=N moves every port of the run (the test profile's
# MariaDB, Kafka, RPC endpoints, sinks and admin ports from N, the crash
# matrix's stack from N+100; see shop_ports_env in scripts/lib/common.sh),
# so that two checkouts test side by side.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
cd "$repo"
# shellcheck source=scripts/lib/common.sh
source "$repo/scripts/lib/common.sh"

if [[ -n ${SHOP_TEST_PORT_BASE:-} ]]; then
  shop_ports_env "$SHOP_TEST_PORT_BASE"
  export SHOP_FAULTS_PORT_BASE=${SHOP_FAULTS_PORT_BASE:-$((SHOP_TEST_PORT_BASE + 100))}
fi

export SHOP_ADMIN_BIN="$repo/$build/bin/shop-admin"
eval "$(scripts/infra.sh env --profile test)"
export SHOP_CONFIG="$repo/config/test.yaml"
export SHOP_BUILD_DIR="$repo/$build"
export SHOP_REPO="$repo"
# Criterion runs each test in its own process and does not fail a test on a
# sanitizer report; CTest does (FAIL_REGULAR_EXPRESSION in cmake/shop.cmake).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

started=0
if ! scripts/infra.sh status --profile test >/dev/null 2>&1; then
  scripts/infra.sh start --profile test
  started=1
fi
cleanup() {
  if [ "$started" = 1 ] && [ -z "${SHOP_KEEP_INFRA:-}" ]; then
    scripts/infra.sh stop --profile test || true
  fi
}
trap cleanup EXIT

# -V shows each Criterion binary's own synthesis line, not only CTest's.
# shellcheck disable=SC2086 # CTEST_ARGS is a list of flags on purpose.
ctest --test-dir "$build" -V -j1 ${CTEST_ARGS:-}
