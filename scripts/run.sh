#!/usr/bin/env bash
# Brings the demo stack up: MariaDB, Kafka, then every Shop program.
# SHOP_RUN_PORT_BASE=N moves every port of the stack (the layout of
# shop_ports_env in scripts/lib/common.sh); shopctl then needs the same
# environment (SHOP_RUN_PORT_BASE=N eval "$(scripts/run.sh --print-env)").
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=scripts/lib/common.sh
source "$repo/scripts/lib/common.sh"
if [[ -n ${SHOP_RUN_PORT_BASE:-} ]]; then
	shop_ports_env "$SHOP_RUN_PORT_BASE"
	# The demo has no SMS or push receiver (config/shop.yaml).
	unset SHOP_NOTIFY__SMS_URL SHOP_NOTIFY__PUSH_URL
	if [[ ${1:-} == --print-env ]]; then
		env | grep -E '^SHOP_(MYSQL_PORT|KAFKA_PORT|KAFKA_CONTROLLER_PORT|ENDPOINTS__|ADMIN__|GATEWAY__|NOTIFY__SMTP)' |
			sed 's/^/export /'
		printf 'export SHOP_KAFKA_BROKERS=127.0.0.1:%s\n' "$SHOP_KAFKA_PORT"
		exit 0
	fi
fi
[[ ${1:-} == --print-env ]] && exit 0
build=${1:-build-release}

export SHOP_ADMIN_BIN="$repo/$build/bin/shop-admin"
scripts/infra.sh start --profile run
scripts/services.sh start --profile run --build "$build"
eval "$(scripts/infra.sh env --profile run)"

# The demo data, once per run folder: a customer and a small catalog, made
# by `shopctl seed` through the ordinary command path (so every read model,
# the inventory and the audit log have them). Its output is kept as the
# marker: a second `make run` keeps the data and seeds nothing.
shopctl=$repo/$build/bin/shopctl
seed_out=$SHOP_RUN_DIR/demo-seed.txt
if [[ ! -s $seed_out ]]; then
	if "$shopctl" --config "$repo/config/shop.yaml" seed customer@shop.local \
		--password-file "$SHOP_RUN_DIR/secrets/customer.password" >"$seed_out.new"; then
		mv -- "$seed_out.new" "$seed_out"
		printf 'demo data: seeded (%s)\n' "$seed_out"
	else
		rm -f -- "$seed_out.new"
		printf 'demo data: the seed failed (see above); the next make run tries again\n' >&2
	fi
fi
mug=$(awk '$1 == "product" && $2 == "DEMO-MUG" {print $3}' "$seed_out" 2>/dev/null || true)
# The addresses as the programs read them (their config and environment).
cfg_of() { "$shopctl" --config "$repo/config/shop.yaml" --print-config "$1"; }
first_ep=$(cfg_of endpoints.user_command) last_ep=$(cfg_of endpoints.audit_query)
admin=http://$(cfg_of admin.host)
rel_bin=${shopctl#"$repo"/}
gw=http://$(cfg_of gateway.host):$(cfg_of gateway.port)
rel_run=${SHOP_RUN_DIR#"$repo"/}

cat <<MSG

Shop is up (profile run, folder $SHOP_RUN_DIR).
  RPC endpoints    $first_ep .. ${last_ep##*:} (internal/config/programs.list order; shopctl health)
  storefront       $gw/ (browse, log in as the demo customer, order; admin view for the first admin)
  HTTP/JSON API    $gw/v1/... (routes from proto/'s google.api.http), OpenAPI 3.1 at $gw/openapi.json
  metrics          $admin:$(cfg_of admin.user_command)..$(cfg_of admin.shop_gateway)/metrics (also /livez, /readyz; make status lists them)
  first admin      admin@shop.local, password in $rel_run/secrets/admin.password
  demo customer    customer@shop.local, password in $rel_run/secrets/customer.password
  demo catalog     $rel_run/demo-seed.txt (DEMO-MUG, DEMO-TEE, DEMO-BOOK, DEMO-STICKERS)
  events           kcat -b $SHOP_KAFKA_BROKERS -C -t shop.user.events.v1 -f '%k %h\n' -e
  logs             $SHOP_LOG_DIR/
  mail             $(cfg_of notify.smtp_url) keeps what it gets in $(cfg_of notify.mail_dir)/ (shopctl mail list)
  make status      what runs and where
  make stop        stop it all (data is kept for the next make run)

What to try next (from $repo):
  alias shopctl=\$PWD/$rel_bin
  shopctl login customer@shop.local --password-file $rel_run/secrets/customer.password
  shopctl call ProductQueryService.ListProducts '{"text":"mug"}'
  ORDER=\$(shopctl call OrderCommandService.CreateOrder '{"lines":[{"productId":"${mug:-<DEMO-MUG id>}","quantity":2}],
    "paymentToken":"tok_visa","shippingAddress":{"recipient":"Demo Customer","line1":"1 Main St",
    "city":"Paris","postalCode":"75001","country":"FR"}}' | sed -n 's/.*"orderId": "\(.*\)".*/\1/p'); echo \$ORDER
  shopctl call OrderQueryService.GetOrder '{"orderId":"'\$ORDER'","consistency":{"token":{"aggregateId":"'\$ORDER'","version":"1"},"waitMs":3000}}'
                # readable at once (PENDING or CONFIRMED); again a moment later: CONFIRMED, payment CAPTURED
  shopctl mail list                                      # the order's confirmation email, a few seconds later
  shopctl mail show last                                 # (or its ID from the list)
  shopctl events tail shop.order.events.v1 --from-beginning --max 20 --timeout 5s
  shopctl reconcile --settle 10                          # money, stock, audit log: exit 0 when clean

  # The same over HTTP/JSON (shop-gateway):
  curl -s '$gw/v1/products?text=mug'
  TOKEN=\$(curl -s -X POST $gw/v1/auth:login -H 'Idempotency-Key: '\$RANDOM -H 'Content-Type: application/json' \\
    -d '{"email":"customer@shop.local","password":"'"\$(cat $rel_run/secrets/customer.password)"'"}' | sed -n 's/.*"accessToken": *"\([^"]*\)".*/\1/p')
  curl -s -X POST $gw/v1/orders -H "Authorization: Bearer \$TOKEN" -H "Idempotency-Key: order-\$RANDOM" \\
    -H 'Content-Type: application/json' -d '{"lines":[{"productId":"${mug:-<DEMO-MUG id>}","quantity":1}],"paymentToken":"tok_visa",
    "shippingAddress":{"recipient":"Demo Customer","line1":"1 Main St","city":"Paris","postalCode":"75001","country":"FR"}}'
MSG
