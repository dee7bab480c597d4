#!/usr/bin/env bash
# make bench: every benchmark in one go, on a stack of its own, and one
# table of figures against their baselines and aims.
#
#   scripts/bench.sh [BUILD_DIR]        (default build-release: optimized)
#
# 1. Brings up MariaDB (durable commits), Kafka and every Shop program
#    (notification and audit workers included, and make run's mail catcher for the mail)
#    under its own run folder and ports, from config/shop.yaml.
# 2. bench-rpc (RPC layer vs raw NNG), bench-events (event path vs raw
#    librdkafka), bench-gateway (GetProduct through shop-gateway vs the
#    same RPC direct), bench-mariadb (CreateOrder's transaction on raw
#    MariaDB, run beside CreateOrder alone in 3.); each writes JSON
#    (--json), which is all this script reads.
# 3. A warm-up load (the Kafka JVM compiles its hot paths under the first
#    minute of load), then shop-loadgen against the stack: the most
#    orders/s sustained end to end (closed loop, each customer waits for
#    CONFIRMED, customers doubled until the rate stops growing), with what
#    one order costs over that window (MariaDB's statements, commits and
#    fsyncs, the programs' Kafka requests and events, CPU per process);
#    completion p99 at half that rate (open loop); the scale line (the
#    sustained run again with a second order-command and a second of each
#    worker); CreateOrder throughput (closed loop, not waiting for
#    completion) at the raw transaction's concurrency, with the pipeline
#    running, then alone (its downstream consumers stopped, each run
#    paired with a bench-mariadb run on the same quiet machine); the books
#    check (shopctl reconcile) of the whole stack once the consumers have
#    taken the backlog.
# 4. Prints the figures beside their same-run baselines and gates, the
#    per-order cost table beside its budgets (scripts/lib/bench_report.py),
#    writes them to $BENCH_RUN_DIR/bench.json, and stops the stack (its
#    data stays in the folder).
#
# Environment (defaults in brackets):
#   BENCH_RUN_DIR [.shop/bench]  BENCH_PORT_BASE [24500, below the
#   kernel's ephemeral range]: the layout of shop_ports_env
#   (scripts/lib/common.sh): MariaDB base+0, Kafka base+1/+2, RPC
#   endpoints base+11..+17, the mail catcher base+25, the gateway's HTTP
#   base+30, admin HTTP ports base+40..+50
#   BENCH_DURATION [10] BENCH_WARMUP [3] seconds per load run;
#   BENCH_REPEAT [3]: runs of each final figure (the median is shown);
#   BENCH_CUSTOMERS ["16 32 64 128 256"]: the closed-loop steps;
#   BENCH_CONCURRENCY [16]: CreateOrder concurrency of the throughput runs;
#   BENCH_PAYMENT_LATENCY_MS [0]: the simulated card processor's latency
#   (config/shop.yaml has 20 for the demo; the payment worker calls the
#   gateway one event at a time, so 20 ms caps it near 25 orders/s);
#   BENCH_WARMUP_RUN [20]: seconds of the unmeasured warm-up load;
#   BENCH_SKIP ["" or e.g. "rpc events gateway scale alone"]: leave those out.
# Output: the table on stdout; every run's JSON and log under
# $BENCH_RUN_DIR/results/.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$SHOP_REPO"
build=${1:-build-release}
bin=$SHOP_REPO/$build/bin
py=/usr/bin/python3

base=${BENCH_PORT_BASE:-24500}
export SHOP_RUN_DIR=${BENCH_RUN_DIR:-$SHOP_REPO/.shop/bench}
shop_ports_env "$base"
smtp_port=$((base + 25))
export SHOP_NOTIFY__SMTP_URL=smtp://127.0.0.1:$smtp_port
export SHOP_NOTIFY__SMS_URL="" SHOP_NOTIFY__PUSH_URL=""
export SHOP_PAYMENT__LATENCY_MS=${BENCH_PAYMENT_LATENCY_MS:-0}
export SHOP_ADMIN_BIN=$bin/shop-admin
export SHOP_CONFIG=$SHOP_REPO/config/shop.yaml
unset SHOP_PROFILE

duration=${BENCH_DURATION:-10}
warmup=${BENCH_WARMUP:-3}
repeat=${BENCH_REPEAT:-3}
steps=${BENCH_CUSTOMERS:-16 32 64 128 256}
conc=${BENCH_CONCURRENCY:-16}
skip=" ${BENCH_SKIP:-} "
results=$SHOP_RUN_DIR/results
mkdir -p "$results"
rm -f "$results"/*.json "$results"/*.txt "$results"/*.err

cleanup() {
	local rc=$?
	scripts/services.sh stop --profile run --build "$build" >/dev/null 2>&1 || true
	scripts/infra.sh stop --profile run >/dev/null 2>&1 || true
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

shop_log "bench: stack under $SHOP_RUN_DIR (ports $base+), payment latency ${SHOP_PAYMENT__LATENCY_MS} ms"
scripts/infra.sh start --profile run >"$results/infra.txt" 2>&1 ||
	{ tail -n 20 "$results/infra.txt" >&2; exit 1; }
eval "$(scripts/infra.sh env --profile run)"
scripts/services.sh start --profile run --build "$build" >"$results/services.txt" 2>&1 ||
	{ tail -n 30 "$results/services.txt" >&2; exit 1; }

if [[ $skip != *" rpc "* ]]; then
	shop_log "bench: bench-rpc"
	"$bin/bench-rpc" --json "$results/rpc.json" >"$results/bench-rpc.txt" 2>&1 ||
		shop_warn "bench-rpc failed (see $results/bench-rpc.txt)"
fi
if [[ $skip != *" events "* ]]; then
	shop_log "bench: bench-events"
	"$bin/bench-events" --json "$results/events.json" >"$results/bench-events.txt" 2>&1 ||
		shop_warn "bench-events failed (see $results/bench-events.txt)"
fi

if [[ $skip != *" gateway "* ]]; then
	shop_log "bench: bench-gateway, ${duration}s per path"
	"$bin/bench-gateway" --seconds "$duration" >"$results/gateway.json" 2>"$results/gateway.err" ||
		shop_warn "bench-gateway failed (see $results/gateway.err)"
fi

# bench-mariadb I: the raw transaction once, results/mariadb-I.json.
raw_tx() {
	"$bin/bench-mariadb" --threads "$conc" --seconds "$duration" --json >"$results/mariadb-$1.json" ||
		shop_warn "bench: bench-mariadb failed"
}

# loadgen NAME ARGS...: one run, its JSON in results/NAME.json.
loadgen() {
	local name=$1
	shift
	"$bin/shop-loadgen" --duration "$duration" --warmup "$warmup" --run-dir "$SHOP_RUN_DIR" \
		--json "$@" >"$results/$name.json" 2>"$results/$name.err" || {
		local rc=$?
		shop_warn "bench: shop-loadgen $name exited $rc: $(tail -c 300 "$results/$name.err")"
		return $rc
	}
}
# field FILE EXPR: EXPR over the JSON document d of FILE (0 when unreadable).
field() {
	$py -c 'import json,sys
try: d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))
except Exception: print(0)' "$@"
}
gt() { $py -c 'import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)' "$@"; }

# The Kafka JVM compiles its hot paths in the first minute of load (a cold
# broker costs several times the CPU per order of a warm one): a run that
# is not measured first.
shop_log "bench: warm-up, ${BENCH_WARMUP_RUN:-20}s closed loop (not measured)"
"$bin/shop-loadgen" --duration "${BENCH_WARMUP_RUN:-20}" --warmup 0 --run-dir "$SHOP_RUN_DIR" \
	--customers 16 --drain 60 --no-reconcile --json >"$results/warmup.txt" 2>&1 || true

best=0 best_n=0
for n in $steps; do
	shop_log "bench: closed loop, $n customers waiting for completion"
	loadgen "closed-$n" --customers "$n" --drain 60 --no-reconcile || true
	r=$(field "$results/closed-$n.json" 'd["completed_per_s"]')
	shop_log "bench:   $r orders/s completed"
	if gt "$r" "$($py -c "print(1.1 * float('$best'))")"; then
		best=$r best_n=$n
	else
		gt "$r" "$best" && best=$r best_n=$n
		break
	fi
done
half=$($py -c "print(round(float('$best') / 2, 1))")
if gt "$half" 0; then
	for ((i = 1; i <= repeat; i++)); do
		shop_log "bench: open loop at $half orders/s ($i/$repeat)"
		loadgen "open-$i" --rate "$half" --drain 60 --no-reconcile || true
	done
fi

# The scale line: the same closed loop with a second instance of
# order-command and of every worker (consumers share their group's
# partitions; the loadgen's client dials both order-command endpoints).
if [[ $skip != *" scale "* ]] && ((best_n > 0)); then
	extra=(order-command@2 inventory-worker@2 payment-worker@2 notification-worker@2 audit-worker@2)
	shop_log "bench: scale line, ${extra[*]}"
	if scripts/services.sh start --profile run --build "$build" "${extra[@]}" >"$results/scale-services.txt" 2>&1; then
		ep=$("$bin/order-command" --config "$SHOP_CONFIG" --print-config endpoints.order_command)
		step=${SHOP_INSTANCE_PORT_STEP:-50}
		SHOP_ENDPOINTS__ORDER_COMMAND="$ep,${ep%:*}:$((${ep##*:} + step))" \
			loadgen "scale-$best_n" --customers "$best_n" --drain 60 --no-reconcile || true
	else
		shop_warn "bench: the second instances did not start (see $results/scale-services.txt)"
	fi
	scripts/services.sh stop --profile run --build "$build" "${extra[@]}" >>"$results/scale-services.txt" 2>&1 || true
fi

# Last, as they leave a backlog behind that would slow every later run:
# CreateOrder throughput (closed loop, not waiting for completion) at the
# raw transaction's concurrency. First with the whole pipeline running
# (the consumers take the events as they come, on the same two cores).
for ((i = 1; i <= repeat; i++)); do
	shop_log "bench: CreateOrder throughput, $conc customers not waiting, pipeline running ($i/$repeat)"
	loadgen "nowait-$i" --customers "$conc" --no-wait --drain 180 --no-reconcile || true
done
# Then the command side alone, as the raw transaction runs alone: every
# consumer downstream of CreateOrder stopped (the four workers and
# order-query; the loadgen does not watch the orders, --no-watch), each
# run paired with a raw run just before it on the same quiet machine.
# order-command still commits the order, its lines, the idempotency record
# and the outbox row durably and its relay publishes OrderCreated (acks=all):
# only the consumers' work waits, in Kafka. They are started again after,
# and the books of the whole stack are checked once that backlog has
# been taken (reconcile --settle).
consumers=(inventory-worker payment-worker notification-worker audit-worker order-query)
if [[ $skip != *" alone "* ]] &&
	scripts/services.sh stop --profile run --build "$build" "${consumers[@]}" >"$results/alone-services.txt" 2>&1; then
	for ((i = 1; i <= repeat; i++)); do
		shop_log "bench: bench-mariadb and CreateOrder alone, $conc threads, consumers stopped ($i/$repeat)"
		raw_tx "$i"
		loadgen "alone-$i" --customers "$conc" --no-watch --no-reconcile || true
	done
else
	shop_log "bench: bench-mariadb, $conc threads, $repeat x ${duration}s"
	for ((i = 1; i <= repeat; i++)); do raw_tx "$i"; done
fi
scripts/services.sh start --profile run --build "$build" "${consumers[@]}" >>"$results/alone-services.txt" 2>&1 ||
	shop_warn "bench: the consumers did not start again (see $results/alone-services.txt)"
shop_log "bench: books of the whole stack (shopctl reconcile --settle 600)"
"$bin/shopctl" --config "$SHOP_CONFIG" reconcile --settle 600 --json >"$results/reconcile.json" \
	2>"$results/reconcile.err" || shop_warn "bench: reconcile exited $? (see $results/reconcile.json)"

$py "$SHOP_REPO/scripts/lib/bench_report.py" "$results" "$best_n" "$conc" "$SHOP_RUN_DIR/bench.json"
