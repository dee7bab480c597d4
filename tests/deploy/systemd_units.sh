#!/usr/bin/env bash
# The systemd units of deploy/systemd/ (docs/DEPLOY.md) against the code:
#
#   tests/deploy/systemd_units.sh BUILD_DIR
#
# 1. deploy/systemd/ is what scripts/systemd-units.sh writes (no unit edited
#    by hand, none missing, none left over);
# 2. every program scripts/services.sh starts has its unit template;
# 3. each unit's ExecStart runs its own program with only options that
#    program accepts (the programs answer 2 to any other: the built program
#    is run with the unit's command line and --print-config, the config path
#    swapped for config/test.yaml), also with the instance options
#    docs/DEPLOY.md gives (SHOP_ARGS); its ExecStartPost is shop-ready on
#    the same command line;
# 4. systemd-analyze verify, in a root of its own (a copy of the machine's
#    system units, stand-ins at the ExecStart paths), prints nothing and
#    exits 0 for every unit;
# 5. shop-ready against a real program of BUILD_DIR on the test profile's
#    MariaDB and Kafka: 0 once /readyz answers 200 from $MAINPID, 1 when
#    $MAINPID ends first (another process answering on the port does not
#    count), 2 for --listen without --admin-port; and the program exits 0
#    on SIGTERM well within the units' TimeoutStopSec;
# 6. every program under the units' file-system and privilege limits
#    (tests/deploy/under_limits.sh, in a mount namespace of its own): ready,
#    and 0 on SIGTERM. Where unshare --mount is not allowed (not root), it
#    says NOT CHECKED and why.
# Prints PASS at the end; FAIL: ... and exit 1 on the first failure.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: systemd_units.sh BUILD_DIR}
# shellcheck source=scripts/lib/common.sh
source "$repo/scripts/lib/common.sh"
# shellcheck source=scripts/lib/proc.sh
source "$repo/scripts/lib/proc.sh"
units=$repo/deploy/systemd
bindir=$build/bin
tmp=$(mktemp -d)
pid=
down() {
	[[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
	rm -rf -- "$tmp"
}
trap down EXIT
fail() {
	printf 'FAIL: %s\n' "$*"
	exit 1
}

# The value of KEY= in a unit file (its one line).
unit_get() { sed -n "s/^$2=//p" "$1"; }

# 1. The units are the generator's output.
"$repo/scripts/systemd-units.sh" "$tmp/gen"
diff -r -x shop-ready "$tmp/gen" "$units" >"$tmp/diff" ||
	fail "deploy/systemd/ is not what scripts/systemd-units.sh writes (run it; edit the script, not the units):
$(cat "$tmp/diff")"
echo "ok: deploy/systemd/ is scripts/systemd-units.sh's output"

# 2. Every program services.sh starts has a unit.
mapfile -t programs < <(SHOP_PROFILE=test "$repo/scripts/services.sh" list --profile test --build "$build")
((${#programs[@]} >= 11)) || fail "scripts/services.sh list gave ${#programs[@]} programs: ${programs[*]}"
for p in "${programs[@]}"; do
	[[ -f $units/$(shop_unit_of "$p")@.service ]] || fail "$p (scripts/services.sh) has no unit $(shop_unit_of "$p")@.service"
done
echo "ok: ${#programs[@]} programs, each with its unit template"

# 3. Command lines. Runs the built program with ARGS... and --print-config:
# 0 when the program takes ARGS, 2 (usage) when not.
accepts() {
	local prog=$1
	shift
	"$bindir/$prog" "$@" --print-config log.level >/dev/null 2>"$tmp/err"
}
# A control: an option no program has is refused.
! accepts order-command --config "$repo/config/test.yaml" --no-such-option ||
	fail "order-command accepted --no-such-option: the check below proves nothing"
for p in "${programs[@]}"; do
	f=$units/$(shop_unit_of "$p")@.service
	exec_start=$(unit_get "$f" ExecStart)
	read -r -a words <<<"$exec_start"
	[[ ${words[0]} == /opt/shop/bin/$p ]] || fail "$f: ExecStart runs ${words[0]}, not /opt/shop/bin/$p"
	[[ -x $bindir/$p ]] || fail "$p: not built in $bindir"
	args=()
	for w in "${words[@]:1}"; do
		case $w in
		'$SHOP_ARGS') ;;
		/etc/shop/shop.yaml) args+=("$repo/config/test.yaml") ;;
		*) args+=("$w") ;;
		esac
	done
	[[ " ${words[*]} " == *' $SHOP_ARGS '* ]] || fail "$f: ExecStart has no \$SHOP_ARGS for the instance's options"
	accepts "$p" "${args[@]}" || fail "$f: $p does not accept '${args[*]}': $(cat "$tmp/err")"
	# The instance options of docs/DEPLOY.md.
	accepts "$p" "${args[@]}" --listen tcp://127.0.0.1:17055 --admin-port 19155 ||
		fail "$p does not accept the instance options --listen URL --admin-port N: $(cat "$tmp/err")"
	[[ $(unit_get "$f" ExecStartPost) == "/opt/shop/bin/shop-ready $exec_start" ]] ||
		fail "$f: ExecStartPost is not shop-ready on ExecStart's command line"
done
exec_start=$(unit_get "$units/shop-topics.service" ExecStart)
[[ $exec_start == '/opt/shop/bin/shop-admin topics --config /etc/shop/shop.yaml' ]] ||
	fail "shop-topics.service: ExecStart is '$exec_start'"
"$bindir/shop-admin" topics --config "$repo/config/test.yaml" --list >/dev/null ||
	fail "shop-admin does not accept 'topics --config PATH'"
echo "ok: every ExecStart runs its program with options it accepts; ExecStartPost probes the same command line"

# 4. systemd-analyze verify.
analyze=$(command -v systemd-analyze) ||
	fail "systemd-analyze is not installed (Debian package systemd, scripts/deps.sh): the units cannot be verified"
root=$tmp/root
mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "$units"/*.service "$units"/*.target "$root/etc/systemd/system/"
check=()
for f in "$units"/*.service "$units"/*.target; do
	n=${f##*/}
	[[ $n == *@.service ]] && n=${n%@.service}@1.service
	check+=("/etc/systemd/system/$n")
	for b in $(grep -Eo '^Exec[A-Za-z]*=[^ ]+' "$f" | cut -d= -f2); do
		mkdir -p "$root${b%/*}"
		printf '#!/bin/sh\n' >"$root$b"
		chmod +x "$root$b"
	done
done
if ! out=$("$analyze" verify --root="$root" "${check[@]}" 2>&1) || [[ -n $out ]]; then
	fail "systemd-analyze verify: $out"
fi
# A control: verify does report a unit that is wrong.
mkdir -p "$root/etc/systemd/system/shop-order-command@.service.d"
printf '[Service]\nTimeoutStopSec=soon\n' >"$root/etc/systemd/system/shop-order-command@.service.d/bad.conf"
out=$("$analyze" verify --root="$root" /etc/systemd/system/shop-order-command@1.service 2>&1) || true
[[ $out == *bad.conf*soon* ]] || fail "systemd-analyze verify did not report TimeoutStopSec=soon: the check proves nothing"
echo "ok: systemd-analyze verify ($("$analyze" --version | head -n 1)) passes on ${#check[@]} units"

# 5. shop-ready against a real program: product-command (RPC and relay) on
# ports of its own, with the test profile's environment (scripts/test.sh).
ready=$units/shop-ready
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cfg=$repo/config/test.yaml
rpc_port=$(free_port) admin_port=$(free_port)
run=("$bindir/product-command" --config "$cfg" --listen "tcp://127.0.0.1:$rpc_port" --admin-port "$admin_port")

out=$(MAINPID=$$ "$ready" "${run[@]:0:5}" 2>&1) && rc=0 || rc=$?
((rc == 2)) && [[ $out == *"without --admin-port"* ]] || fail "shop-ready with --listen and no --admin-port: status $rc, '$out'"

"${run[@]}" >"$tmp/product-command.log" 2>&1 &
pid=$!
t0=$EPOCHREALTIME
MAINPID=$pid timeout 60 "$ready" "${run[@]}" >"$tmp/ready.out" 2>&1 && rc=0 || rc=$?
((rc == 0)) || fail "shop-ready gave $rc for a product-command that starts (pid $pid): $(cat "$tmp/ready.out"); its log: $(tail -5 "$tmp/product-command.log")"
head=$(curl -s -o /dev/null -D - "http://127.0.0.1:$admin_port/readyz" | tr -d '\r')
[[ $head == "HTTP/"*" 200"* ]] && grep -qix "x-shop-pid: $pid" <<<"$head" ||
	fail "shop-ready said ready but /readyz answers: $head"
echo "ok: shop-ready returned 0 once product-command (pid $pid) was ready, after $(proc_elapsed "$t0") s"

# Another process's pid: the program's 200 is not its readiness; the probe
# waits, and gives 1 when that process ends.
sleep 3 &
other=$!
t0=$EPOCHSECONDS
MAINPID=$other timeout 20 "$ready" "${run[@]}" >"$tmp/other.out" 2>&1 && rc=0 || rc=$?
((rc == 1)) || fail "shop-ready for pid $other (not the program on port $admin_port) gave $rc: $(cat "$tmp/other.out")"
((EPOCHSECONDS - t0 >= 2)) || fail "shop-ready for pid $other returned before that process ended"
echo "ok: a 200 from another pid is not ready; the probe gave 1 when its own process ended"

# SIGTERM: the program drains and exits 0 within TimeoutStopSec.
stop_s=$(unit_get "$units/shop-product-command@.service" TimeoutStopSec)
stop_s=${stop_s%s}
t0=$EPOCHSECONDS
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
took=$((EPOCHSECONDS - t0))
pid=
if grep -E 'ERROR: (Leak|Address)Sanitizer|runtime error:' "$tmp/product-command.log"; then
	fail "product-command's log has a sanitizer report (above)"
fi
((rc == 0)) || fail "product-command exited $rc on SIGTERM (the units take 0 as a clean stop)"
((took < stop_s)) || fail "product-command took $took s to stop on SIGTERM; TimeoutStopSec is ${stop_s} s"
echo "ok: product-command exited 0 on SIGTERM after $took s (TimeoutStopSec ${stop_s} s)"

# 6. Every program under the units' limits.
if unshare --mount --propagation private true 2>/dev/null && command -v setpriv findmnt >/dev/null; then
	state=$repo/.shop/deploy-under-limits
	rm -rf -- "$state"
	mkdir -p "$state"
	unshare --mount --propagation private "$repo/tests/deploy/under_limits.sh" "$build" "$state" ||
		fail "the programs under the units' limits (logs in $state)"
	rm -rf -- "$state"
else
	echo "NOT CHECKED: the programs under the units' limits (unshare --mount is not allowed to $(id -un) here, or setpriv/findmnt are missing)"
fi
echo PASS
