#!/usr/bin/env bash
# The cluster scenarios (`make test-cluster`; not part of `make test`).
#
#   scripts/cluster-test.sh [--build DIR] [--release DIR] [--keep] [s1 s2 s3 s4 s5]
#
# Brings up the cluster profile (scripts/lib/cluster.sh: three Kafka
# brokers, RF 3, min.insync.replicas=2; a MariaDB primary and its GTID
# replica) on a folder and ports of its own (.shop/cluster-test, ports from
# SHOP_CLUSTER_TEST_PORT_BASE, default 25700), two instances of every
# program (optimized build, --release) under their supervisors, an SMTP and
# a webhook sink, then runs the scenarios (default: all, in order) with
# faults-load (sanitized build, --build) placing orders through the RPC
# layer and retrying a transient answer with the same idempotency key:
#
#   s1  the leader of most partitions of shop.order.events.v1 SIGKILLed
#       under load, down SHOP_CLUSTER_DOWN_S (60) s, started again: no
#       supervisor restart of any program (relays and consumers carry on)
#   s2  two brokers SIGKILLed at once (below min.insync.replicas): commands
#       still accepted, no outbox row marked published while they are down,
#       the backlog drains once one of them is back
#   s3  the MariaDB replica stopped under load for 20 s and started again:
#       the query sides answer (from the primary: shop_db_read_fallbacks_total
#       grows; or 503/UNAVAILABLE, nothing else), the replica catches up
#       (CHECKSUM TABLE of the read models equal on both)
#   s4  one instance of every program SIGKILLed with its supervisor midway:
#       the survivors take every partition (the time is printed), no
#       duplicate effect
#   s5  a rolling restart of the three brokers (SIGTERM, start, wait for a
#       full ISR), under load: no customer error other than a retried
#       UNAVAILABLE (faults-load's retried codes, and the gateway probes)
#
# Each scenario ends with the books: faults-load quiet (no lag, backlog or
# PENDING order) and check (every invariant of tests/faults/README.md,
# reconcile clean, per-order ce_sequence order), as many orders as
# CreateOrder keys acknowledged, every email recorded as sent at the SMTP
# sink. One line of figures per scenario; exit 1 when one failed. The
# folder is wiped at the start; --keep leaves the stack running.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/proc.sh
source "$SHOP_REPO/scripts/lib/proc.sh"
# shellcheck source=scripts/lib/faults.sh
source "$SHOP_REPO/scripts/lib/faults.sh"

build=build release=build-release keep=0 scenarios=()
while (($#)); do
	case $1 in
	--build) build=$2 && shift ;;
	--release) release=$2 && shift ;;
	--keep) keep=1 ;;
	s[1-5]) scenarios+=("$1") ;;
	*) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2 && exit 2 ;;
	esac
	shift
done
((${#scenarios[@]})) || scenarios=(s1 s2 s3 s4 s5)
[[ $build == /* ]] || build=$SHOP_REPO/$build
[[ $release == /* ]] || release=$SHOP_REPO/$release

base=${SHOP_CLUSTER_TEST_PORT_BASE:-25700}
export SHOP_PROFILE=cluster SHOP_RUN_DIR=$SHOP_REPO/.shop/cluster-test
shop_cluster_ports_env "$base"
export SHOP_CONFIG=$SHOP_REPO/config/cluster.yaml SHOP_ADMIN_BIN=$release/bin/shop-admin
# Three JVMs on a small machine: small heaps, few GC and compiler threads.
export SHOP_KAFKA_HEAP_OPTS=${SHOP_KAFKA_HEAP_OPTS:--Xms256m -Xmx384m -XX:ActiveProcessorCount=1}
eval "$("$SHOP_REPO/scripts/infra.sh" env --profile cluster)"
FAULTS_BUILD=$release FAULTS_LOAD=$build/bin/faults-load
[[ -x $FAULTS_LOAD ]] || shop_die "cluster-test: $FAULTS_LOAD is not built (make build)"
[[ -x $release/bin/order-command ]] || shop_die "cluster-test: $release has no programs (make build-release)"
DOWN_S=${SHOP_CLUSTER_DOWN_S:-60}
TOPIC=shop.order.events.v1

infra() {
	mkdir -p "$SHOP_LOG_DIR"
	"$SHOP_REPO/scripts/infra.sh" "$@" --profile cluster >>"$SHOP_LOG_DIR/cluster-test-infra.log" 2>&1
}
services() { "$SHOP_REPO/scripts/services.sh" "$@" --profile cluster --build "$release"; }

sql() {
	mariadb --no-defaults --socket="$SHOP_RUN_DIR/$1/mysqld.sock" -u "$(id -un)" -N -B -e "$2"
}
primary() { sql mysql "$1"; }
replica() { sql mysql-replica "$1"; }

# Every instance, in start order (services.sh list: NAME, NAME@2, ...).
mapfile -t INSTANCES < <(services list)

up() {
	infra start
	mkdir -p "$SHOP_RUN_DIR/pids" "$SHOP_RUN_DIR/env"
	faults_sink_start smtp "$((base + 25))"
	faults_sink_start http "$((base + 26))"
	# Every instance at once (each services.sh waits for its own /readyz).
	local p pids=() rc=0
	for p in "${INSTANCES[@]}"; do
		services start "$p" >/dev/null &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	((rc == 0)) || shop_die "cluster-test: a program did not start (see $SHOP_LOG_DIR)"
}

down() {
	local f sup
	for f in "$SHOP_RUN_DIR"/pids/*.pid; do
		[[ -e $f ]] || continue
		sup=$(proc_pid_ours "$f" "supervise.sh") && kill -TERM "$sup" 2>/dev/null || true
	done
	services stop >/dev/null 2>&1 || true
	local s
	for s in smtp http; do
		proc_stop "$s sink" "$SHOP_RUN_DIR/pids/$s-sink.pid" "${s}_sink.py" 10 >/dev/null 2>&1 || true
	done
	"$SHOP_REPO/scripts/infra.sh" stop --profile cluster >/dev/null 2>&1 || true
}

# ---- what the scenarios look at ---------------------------------------------------------------

PUBLISHERS=(shop_user shop_product shop_order shop_inventory shop_payment shop_notification)
outbox_count() { # STATE-CONDITION: rows of every outbox
	local db n=0
	for db in "${PUBLISHERS[@]}"; do n=$((n + $(primary "SELECT COUNT(*) FROM $db.outbox WHERE $1"))); done
	echo "$n"
}
unsent() { outbox_count "state = 0"; }
published() { outbox_count "state = 1"; }
orders() { primary "SELECT COUNT(*) FROM shop_order.orders"; }
orders_at_least() { (($(orders) >= $1)); }
unsent_is() { (($(unsent) == $1)); }

# Supervisor restarts logged so far, over every program's log.
restarts() {
	cat "$SHOP_LOG_DIR"/*.log 2>/dev/null | grep -c '"service":"supervisor".*exited with status' || true
}

admin_of() { cat "$SHOP_RUN_DIR/pids/$1.admin" 2>/dev/null; }
# The sum of a metric's samples on the given instances.
metric_sum() {
	local name=$1 i url s=0 v
	shift
	for i in "$@"; do
		url=$(admin_of "$i") || continue
		v=$(curl -s --max-time 3 "$url/metrics" | awk -v m="$name" 'index($1, m) == 1 {s += $2} END {print s + 0}')
		s=$(awk -v a="$s" -v b="${v:-0}" 'BEGIN {print a + b}')
	done
	echo "$s"
}

# No partition of any topic with fewer than three in-sync replicas.
isr_full() {
	local out
	out=$(kcat -L -b "$SHOP_KAFKA_BROKERS" -m 5 2>/dev/null) || return 1
	[[ -n $out ]] && ! awk '/ partition [0-9]+, leader/ {
		sub(/.*isrs: /, ""); if (split($0, a, ",") < 3) bad = 1 } END { exit bad ? 0 : 1 }' <<<"$out"
}

# The gateway probes customers would send: ListProducts on both gateways,
# every 200 ms, until the file $1.stop exists; codes counted in $1.
probe_start() {
	local out=$1
	rm -f "$out" "$out.stop"
	(
		local g=0 code
		while [[ ! -e $out.stop ]]; do
			g=$(((g + 1) % 2))
			code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
				"http://127.0.0.1:$((base + 30 + g * ${SHOP_INSTANCE_PORT_STEP:-50}))/v1/products?page.pageSize=5") || true
			echo "$code" >>"$out"
			sleep 0.2
		done
	) &
	PROBE_PID=$!
}
# Sets PROBES to "200:n,503:m" (wait works in this shell, not in a $(...)).
probe_stop() {
	: >"$1.stop"
	wait "$PROBE_PID" 2>/dev/null || true
	PROBES=$(sort "$1" | uniq -c | awk '{printf "%s%s:%s", (NR > 1 ? "," : ""), $2, $1}')
}

LOAD_OUT=
load_start() { # ORDERS CONCURRENCY PACE_MS RUN
	LOAD_OUT=$SHOP_RUN_DIR/load-$4.out
	"$FAULTS_LOAD" load --orders "$1" --concurrency "$2" --pace-ms "$3" --run "$4-$$" \
		>"$LOAD_OUT" 2>"$LOAD_OUT.err" &
	LOAD_PID=$!
}
# Sets LOAD to the load's summary line once it has ended.
load_wait() {
	wait "$LOAD_PID" || true
	LOAD=$(cat "$LOAD_OUT")
}
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

# ---- the books, after every scenario ----------------------------------------------------------

PLACED=0
FAILED=0
declare -a RESULTS=()

# books NAME LOADLINE FIGURES [CONDITION-NAMES-THAT-FAILED]: quiet, check,
# the counts; records the scenario's line.
books() {
	local name=$1 load=$2 figures=$3 bad=${4:-} quiet check ok=1 emailed ids
	local placed
	placed=$(field placed "$load")
	[[ -n $placed ]] || bad+=" no-load-summary"
	PLACED=$((PLACED + ${placed:-0}))
	[[ $(field failed "$load") == 0 ]] || bad+=" load-failed"
	quiet=$(faults_quiet 300) || bad+=" not-quiet"
	check=$(faults_check 2>>"$SHOP_LOG_DIR/cluster-test-check.err") || bad+=" check"
	[[ $(field orders "$check") == "$PLACED" ]] || bad+=" orders($(field orders "$check"))!=placed($PLACED)"
	emailed=$(field emailed "$check")
	ids=$(cat "$SHOP_RUN_DIR"/sinks/smtp/*.eml 2>/dev/null | grep -i '^Message-ID:' | sort -u | wc -l)
	((ids >= ${emailed:-0})) || bad+=" emails($ids<$emailed)"
	[[ -z $bad ]] || ok=0
	local verdict=passed
	((ok)) || {
		verdict="FAILED:$bad"
		FAILED=1
	}
	local line="$name $verdict | $figures | $load | $quiet | $check"
	RESULTS+=("$line")
	shop_log "$line"
}

# ---- the scenarios ----------------------------------------------------------------------------

s1() {
	local leader r0 o0 t0 back max=0 u u_end o_kill o_back t_up drained load
	leader=$("$SHOP_REPO/scripts/infra.sh" leader "$TOPIC" --profile cluster)
	[[ $leader =~ ^[1-3]$ ]] || shop_die "s1: no leader found for $TOPIC"
	r0=$(restarts) o0=$(orders)
	load_start 900 4 250 s1
	faults_wait 120 orders_at_least $((o0 + 60)) || true
	o_kill=$(orders)
	t0=$EPOCHREALTIME
	infra kill-kafka "$leader"
	while (($(proc_elapsed "$t0" | cut -d. -f1) < DOWN_S)); do
		u=$(unsent)
		((u > max)) && max=$u
		sleep 1
	done
	o_back=$(orders) u_end=$(unsent)
	t_up=$EPOCHREALTIME
	infra start-kafka "$leader"
	back=$(proc_elapsed "$t_up")
	t_up=$EPOCHREALTIME
	faults_wait 180 unsent_is 0 || true
	drained=$(proc_elapsed "$t_up")
	load_wait
	load=$LOAD
	local bad=
	(($(restarts) == r0)) || bad+=" restarts($(($(restarts) - r0)))"
	((o_back > o_kill)) || bad+=" no-orders-while-down"
	faults_wait 180 isr_full || bad+=" isr-not-full"
	books s1 "$load" "leader node $leader SIGKILLed after $((o_kill - o0)) orders, down $(proc_elapsed "$t0") s (held ${DOWN_S} s, restart ${back} s); $((o_back - o_kill)) orders acknowledged while it was down; unsent outbox max $max, $u_end at the end of the outage, 0 again ${drained} s after it was back; supervisor restarts $(($(restarts) - r0))" "$bad"
}

s2() {
	local leader others=() n r0 o0 o_kill o_mid sent0 sent1 u0 u1 t0 t_up back drained load bad=
	leader=$("$SHOP_REPO/scripts/infra.sh" leader "$TOPIC" --profile cluster)
	for n in 1 2 3; do [[ $n == "$leader" ]] || others+=("$n"); done
	r0=$(restarts) o0=$(orders)
	load_start 500 4 250 s2
	faults_wait 120 orders_at_least $((o0 + 40)) || true
	o_kill=$(orders)
	t0=$EPOCHREALTIME
	infra kill-kafka "$leader" "${others[0]}"
	# Deliveries acknowledged before the kill may still be reported.
	sleep 5
	sent0=$(published) u0=$(unsent)
	sleep 25
	sent1=$(published) u1=$(unsent) o_mid=$(orders)
	((sent1 == sent0)) || bad+=" published-while-down($((sent1 - sent0)))"
	((o_mid > o_kill)) || bad+=" no-orders-accepted"
	((u1 > u0)) || bad+=" outbox-did-not-grow"
	t_up=$EPOCHREALTIME
	infra start-kafka "${others[0]}"
	back=$(proc_elapsed "$t_up")
	t_up=$EPOCHREALTIME
	faults_wait 240 unsent_is 0 || bad+=" not-drained"
	drained=$(proc_elapsed "$t_up")
	infra start-kafka "$leader"
	load_wait
	load=$LOAD
	faults_wait 180 isr_full || bad+=" isr-not-full"
	books s2 "$load" "nodes $leader and ${others[0]} SIGKILLed after $((o_kill - o0)) orders, down $(proc_elapsed "$t0") s in all; while down: $((o_mid - o_kill)) orders accepted, unsent outbox $u0 -> $u1, published rows $sent0 -> $sent1; node ${others[0]} back (restart ${back} s): backlog drained ${drained} s later; supervisor restarts $(($(restarts) - r0))" "$bad"
}

QUERY_INSTANCES=()
for i in "${INSTANCES[@]}"; do [[ ${i%@*} == *-query ]] && QUERY_INSTANCES+=("$i"); done

s3() {
	local o0 fb0 fb1 t0 t_up back probes load bad= sums_p sums_r
	o0=$(orders) fb0=$(metric_sum shop_db_read_fallbacks_total "${QUERY_INSTANCES[@]}")
	probe_start "$SHOP_RUN_DIR/probe-s3"
	load_start 500 4 150 s3
	faults_wait 120 orders_at_least $((o0 + 40)) || true
	local o_stop
	o_stop=$(orders)
	t0=$EPOCHREALTIME
	infra stop-replica
	sleep 20
	fb1=$(metric_sum shop_db_read_fallbacks_total "${QUERY_INSTANCES[@]}")
	local held_down
	held_down=$(proc_elapsed "$t0")
	t_up=$EPOCHREALTIME
	infra start-replica
	back=$(proc_elapsed "$t_up")
	# Replaying what it missed, while the load goes on.
	replica_current() { [[ $("$SHOP_REPO/scripts/infra.sh" replica-state --profile cluster) == *"io=Yes sql=Yes behind=0 "* ]]; }
	faults_wait 180 replica_current || bad+=" replica-not-replaying"
	local current
	current=$(proc_elapsed "$t_up")
	load_wait
	load=$LOAD
	probe_stop "$SHOP_RUN_DIR/probe-s3"
	probes=$PROBES
	[[ $probes =~ ^((200|503):[0-9]+,?)+$ ]] || bad+=" probe-codes($probes)"
	awk -v a="$fb1" -v b="$fb0" 'BEGIN {exit !(a > b)}' || bad+=" no-fallback"
	faults_quiet 300 >/dev/null || true
	# Caught up: the replica has replayed every transaction of the primary.
	replica_caught_up() { [[ $(replica "SELECT @@gtid_slave_pos") == "$(primary "SELECT @@gtid_binlog_pos")" ]]; }
	faults_wait 180 replica_caught_up || bad+=" replica-behind"
	local tables="shop_order_read.orders_view, shop_product_read.products_view, shop_product_read.product_stock, shop_user_read.users_view"
	sums_p=$(primary "CHECKSUM TABLE $tables" | awk '{print $2}' | tr '\n' ' ')
	sums_r=$(replica "CHECKSUM TABLE $tables" | awk '{print $2}' | tr '\n' ' ')
	[[ $sums_p == "$sums_r" && $sums_p != *NULL* ]] || bad+=" checksums($sums_p/$sums_r)"
	books s3 "$load" "replica stopped under load after $((o_stop - o0)) orders, down ${held_down} s (restart ${back} s); query connections from the primary meanwhile $(awk -v a="$fb1" -v b="$fb0" 'BEGIN {print a - b}'); gateway ListProducts probes $probes; replica replaying with 0 s behind ${current} s after its start, GTID equal to the primary's once quiet; read-model checksums equal on both" "$bad"
}

# The supervisor's child of instance $1.
child_of() { pgrep -P "$(cat "$SHOP_RUN_DIR/pids/$1.pid")" | sed -n 1p; }

s4() {
	local o0 o_kill victims=() survivors=() i before after t0 held load bad=
	for i in "${INSTANCES[@]}"; do
		if [[ $i == *@* ]]; then survivors+=("$i"); else victims+=("$i"); fi
	done
	before=$(metric_sum shop_consumer_assigned_partitions "${INSTANCES[@]}")
	o0=$(orders)
	load_start 500 4 100 s4
	faults_wait 120 orders_at_least $((o0 + 100)) || true
	o_kill=$(orders)
	t0=$EPOCHREALTIME
	# The instance is gone, as with its host: supervisor first, then the program.
	for i in "${victims[@]}"; do
		local sup child
		sup=$(cat "$SHOP_RUN_DIR/pids/$i.pid") child=$(child_of "$i")
		kill -KILL "$sup" 2>/dev/null || true
		[[ -n $child ]] && kill -KILL "$child" 2>/dev/null || true
	done
	survivors_hold() { [[ $(metric_sum shop_consumer_assigned_partitions "${survivors[@]}") == "$before" ]]; }
	faults_wait 120 survivors_hold || bad+=" partitions-not-taken"
	held=$(proc_elapsed "$t0")
	after=$(metric_sum shop_consumer_assigned_partitions "${survivors[@]}")
	load_wait
	load=$LOAD
	books s4 "$load" "instance 1 of ${#victims[@]} programs SIGKILLed with its supervisor after $((o_kill - o0)) orders; the survivors held all $after of $before partition assignments ${held} s later" "$bad"
	# Back to two of each for what follows.
	for i in "${victims[@]}"; do rm -f "$SHOP_RUN_DIR/pids/$i.pid"; done
	local p pids=()
	for i in "${victims[@]}"; do
		services start "$i" >/dev/null &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || shop_warn "s4: an instance did not start again"; done
}

s5() {
	local o0 n t_n figures="" r0 load probes bad= codes
	r0=$(restarts) o0=$(orders)
	probe_start "$SHOP_RUN_DIR/probe-s5"
	load_start 1500 4 200 s5
	faults_wait 120 orders_at_least $((o0 + 40)) || true
	for n in 1 2 3; do
		t_n=$EPOCHREALTIME
		infra stop-kafka "$n"
		infra start-kafka "$n"
		faults_wait 180 isr_full || bad+=" isr-not-full-after-$n"
		figures+="node $n $(proc_elapsed "$t_n") s; "
	done
	load_wait
	load=$LOAD
	probe_stop "$SHOP_RUN_DIR/probe-s5"
	probes=$PROBES
	codes=$(field retried_codes "$load")
	[[ $codes == none || $codes =~ ^(UNAVAILABLE:[0-9]+)$ ]] || bad+=" retried($codes)"
	[[ $probes =~ ^((200|503):[0-9]+,?)+$ ]] || bad+=" probe-codes($probes)"
	(($(restarts) == r0)) || bad+=" restarts($(($(restarts) - r0)))"
	books s5 "$load" "rolling restart (stop, start, full ISR): ${figures}customers' retried codes $codes; gateway probes $probes; supervisor restarts $(($(restarts) - r0))" "$bad"
}

# ---- main -------------------------------------------------------------------------------------

started=$EPOCHREALTIME
down
rm -rf -- "$SHOP_RUN_DIR"
cleanup() { ((keep)) || down; }
trap cleanup EXIT
up
shop_log "cluster-test: ${#INSTANCES[@]} instances, brokers $SHOP_KAFKA_BROKERS, MariaDB $SHOP_MYSQL_PORT (replica $SHOP_MYSQL_READ_PORT); up in $(proc_elapsed "$started") s ($SHOP_RUN_DIR)"
for s in "${scenarios[@]}"; do
	t=$EPOCHREALTIME
	n=${#RESULTS[@]}
	"$s" || true
	if ((${#RESULTS[@]} == n)); then
		FAILED=1
		RESULTS+=("$s FAILED: did not get to its books")
		shop_warn "${RESULTS[-1]}"
	fi
	shop_log "cluster-test: $s took $(proc_elapsed "$t") s"
done
verdict=passed
((FAILED)) && verdict=FAILED
shop_log "cluster-test: ${scenarios[*]} $verdict in $(proc_elapsed "$started") s"
exit "$FAILED"
