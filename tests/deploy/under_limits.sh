#!/usr/bin/env bash
# Every Shop program of BUILD_DIR under the limits the units of
# deploy/systemd/ set, as far as they can be had without systemd; each must
# become ready (shop-ready) and exit 0 on SIGTERM:
#
#   unshare --mount --propagation private tests/deploy/under_limits.sh BUILD_DIR STATE_DIR
#
# Run as root by tests/deploy/systemd_units.sh, in a mount namespace of its
# own, with the test profile's environment (its MariaDB and Kafka):
#   - ProtectSystem=strict: every mount read-only but /proc, /sys, /dev and
#     STATE_DIR;
#   - PrivateTmp: an empty tmpfs on /tmp;
#   - StateDirectory and WorkingDirectory: STATE_DIR, writable, the current
#     folder; payment.state_dir in it, as docs/DEPLOY.md's shop.yaml has it;
#   - NoNewPrivileges and CapabilityBoundingSet= (none): setpriv.
# Each program runs with a unit's instance options (SHOP_ARGS): an admin
# port of its own, and --listen on a port of its own for the RPC programs,
# whose endpoints.<key> points there so that order-command and shop-gateway
# reach them (the gateway is ready once it has every backend).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: under_limits.sh BUILD_DIR STATE_DIR}
state=${2:?usage: under_limits.sh BUILD_DIR STATE_DIR}
bindir=$build/bin
ready=$repo/deploy/systemd/shop-ready
cfg=$repo/config/test.yaml
pids=()
down() {
	local p
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap down EXIT
fail() {
	printf 'FAIL: %s\n' "$*"
	exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

mapfile -t programs < <(SHOP_PROFILE=test "$repo/scripts/services.sh" list --profile test --build "$build")
declare -A args
for p in "${programs[@]}"; do
	args[$p]="--admin-port $(free_port)"
	key=$(awk -v p="$p" '$1 == p { print $2 }' "$repo/internal/config/programs.list")
	if [[ $key != - ]]; then
		port=$(free_port)
		args[$p]+=" --listen tcp://127.0.0.1:$port"
		export "SHOP_ENDPOINTS__${key^^}=tcp://127.0.0.1:$port"
	fi
done
SHOP_GATEWAY__PORT=$(free_port)
export SHOP_GATEWAY__PORT SHOP_PAYMENT__STATE_DIR=$state/payment-gateway

mount --bind "$state" "$state"
while read -r m; do
	case $m in /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | "$state") continue ;; esac
	mount -o remount,bind,ro "$m" 2>/dev/null || true
done < <(findmnt -rno TARGET | sort -u)
mount -t tmpfs tmpfs /tmp
if touch "$repo/.shop/under-limits-probe" 2>/dev/null; then
	rm -f "$repo/.shop/under-limits-probe"
	fail "the repository is still writable: the limits were not set"
fi
cd "$state"

for p in "${programs[@]}"; do
	# shellcheck disable=SC2086 # args[$p] is a list of options, as a unit's $SHOP_ARGS
	setpriv --no-new-privs --inh-caps=-all --bounding-set=-all \
		"$bindir/$p" --config "$cfg" ${args[$p]} >"$state/$p.log" 2>&1 &
	pids+=($!)
done
for i in "${!programs[@]}"; do
	p=${programs[i]}
	# shellcheck disable=SC2086
	MAINPID=${pids[i]} timeout 120 "$ready" "$bindir/$p" --config "$cfg" ${args[$p]} >/dev/null 2>"$state/$p.ready" ||
		fail "$p did not become ready under the units' limits: $(cat "$state/$p.ready"); its log: $(tail -n 5 "$state/$p.log")"
done
echo "ok: ${#programs[@]} programs ready with the root read-only, a private /tmp, no new privileges, no capabilities"
[[ -d $state/payment-gateway ]] || fail "payment-worker made no $state/payment-gateway (payment.state_dir)"
for p in "${pids[@]}"; do kill -TERM "$p"; done
for i in "${!programs[@]}"; do
	rc=0
	wait "${pids[i]}" || rc=$?
	((rc == 0)) || fail "${programs[i]} exited $rc on SIGTERM: $(tail -n 5 "$state/${programs[i]}.log")"
done
pids=()
if grep -E 'Read-only file system|ERROR: (Leak|Address)Sanitizer|runtime error:' "$state"/*.log; then
	fail "a program's log says the above"
fi
echo "ok: each exited 0 on SIGTERM; what they wrote is in the state folder only"
