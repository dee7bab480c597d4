#!/usr/bin/env bash
# make run, then an order: its confirmation email is in the run folder's
# mail/ (make run's mail catcher) within a few seconds, and shopctl mail
# list / show read it. CTest runs it with the debug build:
#
#   tests/demo/run_mail.sh BUILD_DIR
#
# Its own stack: folder .shop/demo-mail, ports from SHOP_DEMO_PORT_BASE
# (default SHOP_TEST_PORT_BASE + 200, or 24600); stopped at the end.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: run_mail.sh BUILD_DIR}
# run.sh takes the build folder relative to the repository.
[[ $build == "$repo"/* ]] && build=${build#"$repo"/}
[[ $build == /* ]] && { echo "FAIL: $build is not inside $repo"; exit 1; }
base=${SHOP_DEMO_PORT_BASE:-$((${SHOP_TEST_PORT_BASE:-24400} + 200))}
# The test run's environment (profile test) is not the demo's.
for v in $(compgen -e | grep '^SHOP_'); do unset "$v"; done
cd "$repo"
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh
shop_ports_env "$base"
unset SHOP_NOTIFY__SMS_URL SHOP_NOTIFY__PUSH_URL
export SHOP_RUN_DIR=$repo/.shop/demo-mail SHOP_RUN_PORT_BASE=$base
export XDG_CONFIG_HOME=$SHOP_RUN_DIR/xdg
rm -rf "$SHOP_RUN_DIR"
mkdir -p "$XDG_CONFIG_HOME"
down() {
	scripts/services.sh stop --profile run --build "$build" >/dev/null 2>&1 || true
	scripts/infra.sh stop --profile run >/dev/null 2>&1 || true
}
trap down EXIT
scripts/run.sh "$build" >"$SHOP_RUN_DIR.out" 2>&1 || { tail -40 "$SHOP_RUN_DIR.out"; exit 1; }
grep -q 'shopctl mail show' "$SHOP_RUN_DIR.out" || { echo "FAIL: run.sh does not say how to read the mail"; exit 1; }
eval "$(scripts/infra.sh env --profile run)"
shopctl=("$build/bin/shopctl" --config config/shop.yaml)
[[ $build == /* ]] || shopctl[0]=$repo/$build/bin/shopctl
mug=$(awk '$1 == "product" && $2 == "DEMO-MUG" {print $3}' "$SHOP_RUN_DIR/demo-seed.txt")
[[ -n $mug ]] || { echo "FAIL: no DEMO-MUG in the seed"; exit 1; }
"${shopctl[@]}" login customer@shop.local --password-file "$SHOP_RUN_DIR/secrets/customer.password" >/dev/null
order=$("${shopctl[@]}" call OrderCommandService.CreateOrder '{"lines":[{"productId":"'"$mug"'","quantity":1}],
  "paymentToken":"tok_visa","shippingAddress":{"recipient":"Demo Customer","line1":"1 Main St",
  "city":"Paris","postalCode":"75001","country":"FR"}}' | sed -n 's/.*"orderId": "\(.*\)".*/\1/p')
[[ -n $order ]] || { echo "FAIL: no order id"; exit 1; }
t0=$EPOCHSECONDS
until grep -l "order $order is confirmed" "$SHOP_RUN_DIR"/mail/*.eml >/dev/null 2>&1; do
	if ((EPOCHSECONDS - t0 > 30)); then
		echo "FAIL: no confirmation email of $order in $SHOP_RUN_DIR/mail after 30 s"
		ls -l "$SHOP_RUN_DIR/mail" || true
		tail -20 "$SHOP_LOG_DIR/notification-worker.log" || true
		exit 1
	fi
	sleep 0.5
done
echo "the confirmation email of $order arrived after $((EPOCHSECONDS - t0)) s"
file=$(grep -l "order $order is confirmed" "$SHOP_RUN_DIR"/mail/*.eml | tail -1)
id=$((10#$(basename "$file" .eml)))
list=$("${shopctl[@]}" mail list)
grep -Eq "^$id +.*customer@shop.local +Your order .* is confirmed" <<<"$list" ||
	{ echo "FAIL: mail list has no line $id:"; echo "$list"; exit 1; }
show=$("${shopctl[@]}" mail show "$id")
grep -q "^Message-ID: <" <<<"$show" && grep -q "your order $order is confirmed" <<<"$show" ||
	{ echo "FAIL: mail show $id:"; echo "$show"; exit 1; }
"${shopctl[@]}" mail show ../../etc/passwd >/dev/null 2>&1 && { echo "FAIL: mail show took a path"; exit 1; }
echo "PASS"
