#!/usr/bin/env bash
# Brings the demo stack up: MariaDB, Kafka, then every Shop program.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build-release}
cd "$repo"

export SHOP_ADMIN_BIN="$repo/$build/bin/shop-admin"
scripts/infra.sh start --profile run
scripts/services.sh start --profile run --build "$build"
eval "$(scripts/infra.sh env --profile run)"
cat <<MSG

Shop is up (profile run, folder $SHOP_RUN_DIR).
  RPC endpoints    see config/shop.yaml (tcp://127.0.0.1:17001..17007)
  metrics          http://127.0.0.1:19101..19110/metrics (also /livez, /readyz; make status lists them)
  first admin      admin@shop.local, password in $SHOP_RUN_DIR/secrets/admin.password
  events           kcat -b $SHOP_KAFKA_BROKERS -C -t shop.user.events.v1 -f '%k %h\n' -e
  logs             $SHOP_LOG_DIR/
  make status      what runs and where
  make stop        stop it all (data is kept for the next make run)
MSG
