#!/usr/bin/env bash
# The crash matrix (`make test-faults`; its fast mode runs in `make test`).
#
#   scripts/faults.sh [--fast|--full] [--build DIR] [--keep]
#
# Brings up its own supervised Shop (folder .shop/faults-<mode>, ports from
# SHOP_FAULTS_PORT_BASE, default 24400; scripts/lib/faults.sh), then, for
# each round of the matrix: arms the round's crash points (one per program,
# SHOP_CRASH_AT=<point>:<n> for one run of that program), runs a load of
# orders (faults-load: retries a command that the crash cut off, with the
# same idempotency key), waits until every armed program has aborted and
# been restarted by its supervisor (relay.fatal is a fault, not an abort:
# there the relay must rebuild its producer, with no restart), waits until
# the system is quiet (no consumer lag, no unsent outbox row, no PENDING
# order), and checks the counts (faults-load check, tests/faults/README.md).
# One line per armed point:
#
#   <program> <point:n> crashed=yes restarts=1 orders=.. confirmed=.. cancelled=.. pending=0 check=ok quiet_after_6.8_s round=40.2s
#
# preceded by the round's load summary and full check line.
#
# --full: every point in every program that passes it, one at a time, 200
# orders each. --fast: two rounds, several programs armed at once (one
# point each), 24 orders per round.
# Exit status 1 when a point did not fire or a check failed. The folder is
# wiped at the start; --keep leaves the stack running at the end.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/proc.sh
source "$SHOP_REPO/scripts/lib/proc.sh"
# shellcheck source=scripts/lib/faults.sh
source "$SHOP_REPO/scripts/lib/faults.sh"

mode=full build=build keep=0
while (($#)); do
	case $1 in
	--fast) mode=fast ;;
	--full) mode=full ;;
	--build) build=$2 && shift ;;
	--keep) keep=1 ;;
	*) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2 && exit 2 ;;
	esac
	shift
done

# Rounds: "program=point:n ..." armed together (one point per program).
# A consumer point counts batches, not events, and a batch holds whatever
# has arrived: order-command's saga takes the 200 orders of a round in
# about ten batches, so its points fire at the fourth.
if [[ $mode == full ]]; then
	orders=${SHOP_FAULTS_ORDERS:-200} concurrency=8
	rounds=(
		"order-command=command.after_commit:20"
		"order-command=saga.after_commit:4"
		"order-command=relay.after_ack:30"
		"order-command=consumer.mid_batch:4"
		"order-command=consumer.after_commit:4"
		"order-command=relay.fatal:30"
		"product-command=command.after_commit:2"
		"inventory-worker=consumer.mid_batch:10"
		"inventory-worker=consumer.after_commit:10"
		"inventory-worker=relay.after_ack:30"
		"payment-worker=consumer.mid_batch:10"
		"payment-worker=consumer.after_commit:10"
		"payment-worker=relay.after_ack:30"
		"notification-worker=consumer.mid_batch:5"
		"notification-worker=consumer.after_commit:5"
		"audit-worker=consumer.mid_batch:10"
		"audit-worker=consumer.after_commit:10"
		"order-query=consumer.mid_batch:10"
		"order-query=consumer.after_commit:10"
	)
else
	orders=${SHOP_FAULTS_ORDERS:-24} concurrency=6
	rounds=(
		"order-command=command.after_commit:5 product-command=command.after_commit:2 inventory-worker=consumer.mid_batch:3 payment-worker=consumer.mid_batch:3 notification-worker=relay.after_ack:2 audit-worker=consumer.mid_batch:3 order-query=consumer.after_commit:3"
		"order-command=saga.after_commit:5 inventory-worker=consumer.after_commit:3 payment-worker=relay.after_ack:5 notification-worker=consumer.mid_batch:2 audit-worker=consumer.after_commit:3 order-query=consumer.mid_batch:3"
	)
fi

faults_env "$SHOP_REPO/.shop/faults-$mode" "$build"
[[ -x $FAULTS_LOAD ]] || shop_die "faults: $FAULTS_LOAD is not built (make build)"
started=$EPOCHREALTIME
faults_down 2>/dev/null || true
rm -rf -- "$SHOP_RUN_DIR"
cleanup() { ((keep)) || faults_down; }
trap cleanup EXIT
faults_up
shop_log "faults: $mode matrix, ${#rounds[@]} round(s), $orders orders each; stack up in $(proc_elapsed "$started") s ($SHOP_RUN_DIR)"

failed=0 round=0 placed=0
for spec in "${rounds[@]}"; do
	round=$((round + 1))
	t0=$EPOCHREALTIME
	# shellcheck disable=SC2086 # spec is a list of NAME=SPEC words.
	faults_arm $spec
	load_out=$(faults_load --orders "$orders" --concurrency "$concurrency" --run "r$round-$$") || failed=1
	# Every armed program must have aborted and served again.
	for arm in $spec; do
		name=${arm%%=*}
		faults_wait 60 faults_fired "$name" "${FAULTS_OFF[$name]}" "${arm#*=}" || true
	done
	for arm in $spec; do
		name=${arm%%=*}
		if faults_crashed "$name" "${FAULTS_OFF[$name]}"; then
			faults_wait_ready "$name" "${FAULTS_PID[$name]:-}" 90 || true
		fi
	done
	quiet=$(faults_quiet 240) || failed=1
	check=$(faults_check) || failed=1
	secs=$(proc_elapsed "$t0")
	shop_log "round $round: $load_out; $quiet; $check"
	field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$check"; }
	# One order per CreateOrder idempotency key, whatever was retried.
	placed=$((placed + $(sed -n 's/.*placed=\([0-9]*\).*/\1/p' <<<"$load_out")))
	if (($(field orders) != placed)); then
		shop_warn "round $round: $placed orders placed, $(field orders) in shop_order"
		failed=1
	fi
	states="orders=$(field orders) confirmed=$(field confirmed) cancelled=$(field cancelled) pending=$(field pending)"
	# At least once: every email notification-worker recorded as sent
	# reached the SMTP sink (a crash may send one twice, never zero times).
	emails=$(cat "$SHOP_RUN_DIR"/sinks/smtp/*.eml 2>/dev/null | grep -ci '^Message-ID:') || true
	ids=$(cat "$SHOP_RUN_DIR"/sinks/smtp/*.eml 2>/dev/null | grep -i '^Message-ID:' | sort -u | wc -l)
	if ((ids < $(field emailed))); then
		shop_warn "round $round: $(field emailed) emails recorded as sent, $ids distinct Message-IDs at the sink"
		failed=1
	fi
	states+=" emails=$ids/$(field emailed)(${emails:-0} received) reconcile=$(field reconcile)"
	for arm in $spec; do
		name=${arm%%=*}
		crashed=no
		faults_fired "$name" "${FAULTS_OFF[$name]}" "${arm#*=}" && crashed=yes
		[[ $crashed == yes ]] || failed=1
		[[ ${arm#*=} == relay.fatal* && $crashed == yes ]] && crashed=yes-fault
		# The arming itself is one supervisor restart (SIGTERM, status 0).
		restarts=$(($(faults_restarts "$name" "${FAULTS_OFF[$name]}") - 1))
		printf '%-20s %-28s crashed=%s restarts=%d %s check=%s %s round=%ss\n' "$name" "${arm#*=}" \
			"$crashed" "$restarts" "$states" "$(field verdict)" "${quiet// /_}" "$secs"
	done
done
verdict=passed
((failed)) && verdict=FAILED
shop_log "faults: $mode matrix $verdict in $(proc_elapsed "$started") s"
exit "$failed"
