#!/usr/bin/env bash
# Brings the demo stack up: MariaDB, Kafka, then every Shop program.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build-release}
cd "$repo"

export SHOP_ADMIN_BIN="$repo/$build/bin/shop-admin"
scripts/infra.sh start --profile run
eval "$(scripts/infra.sh env --profile run)"
echo
echo "Shop infrastructure is up (profile run, folder $SHOP_RUN_DIR)."
echo "  make status   what runs and where"
echo "  make stop     stop it all (data is kept for the next make run)"
