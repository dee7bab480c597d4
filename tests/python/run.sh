#!/usr/bin/env bash
# The Python client's tests (CTest test_python): starts the test profile's
# Shop programs of the sanitized build ($SHOP_BUILD_DIR/bin, through
# scripts/services.sh), runs pytest from the project venv with the client
# generated into $SHOP_PYTHON_DIR on PYTHONPATH, and stops the programs
# again, whatever pytest did. pytest's exit code is the test's; its summary
# line is the last line of the output.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
: "${SHOP_BUILD_DIR:?run through scripts/test.sh (make test)}"
: "${SHOP_PYTHON:?}" "${SHOP_PYTHON_DIR:?}"
programs=(user-query user-command product-query product-command order-query order-command
	inventory-worker payment-worker)
stop() { "$repo/scripts/services.sh" stop --profile test --build "$SHOP_BUILD_DIR" "${programs[@]}" >/dev/null 2>&1 || true; }
trap stop EXIT
"$repo/scripts/services.sh" start --profile test --build "$SHOP_BUILD_DIR" "${programs[@]}" >/dev/null
cd "$repo/tests/python"
PYTHONPATH="$SHOP_PYTHON_DIR${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
	"$SHOP_PYTHON" -m pytest -p no:cacheprovider -q -rfE "$@"
