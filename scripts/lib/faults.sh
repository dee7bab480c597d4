# shellcheck shell=bash
# Pieces of the fault scenarios (scripts/faults.sh and whoever adds more):
# a supervised Shop on a folder and ports of its own, crash points armed in
# one program at a time, and waits on conditions with a bound. Source it
# after common.sh and proc.sh; it defines names only and runs nothing.
#
#   faults_env DIR BUILD    exports the profile (test config), the folder
#                           DIR, ports from $SHOP_FAULTS_PORT_BASE (default
#                           24400; the layout of shop_ports_env in common.sh:
#                           +0 MariaDB, +1/+2 Kafka, +11..+17 the RPC
#                           endpoints, +25 SMTP, +26 webhooks, +40.. admin
#                           HTTP) and FAULTS_*
#   faults_up               MariaDB, Kafka, the mail and webhook sinks, then
#                           every program under scripts/lib/supervise.sh
#   faults_down             stops all of it (by pid files), keeps DIR
#   faults_mark NAME        the current size of NAME's log (an offset)
#   faults_arm NAME=SPEC... restarts each NAME once with SHOP_CRASH_AT=SPEC
#                           (<point>:<n>), all at once; the restart after
#                           the crash runs clean. Log offsets in FAULTS_OFF,
#                           the armed runs' pids in FAULTS_PID
#   faults_crashed NAME OFF true once NAME's log says the point aborted it
#   faults_fired NAME OFF SPEC  the same, or the relay's rebuild for relay.fatal
#   faults_restarts NAME OFF  supervisor restarts of NAME since OFF
#   faults_wait_ready NAME OLDPID SECONDS  NAME runs as a process other than
#                           OLDPID and that process answers 200 on /readyz
#   faults_wait SECONDS CMD...            CMD until it succeeds, bounded
#   faults_load ARGS...     faults-load load (orders through the RPC layer)
#   faults_quiet SECONDS    faults-load quiet: no lag, backlog or pending
#   faults_check            faults-load check: the invariants, one line

faults_env() {
	local dir=$1 build=$2 base=${SHOP_FAULTS_PORT_BASE:-24400}
	[[ $build == /* ]] || build=$SHOP_REPO/$build
	export SHOP_PROFILE=test SHOP_RUN_DIR=$dir
	shop_ports_env "$base"
	export SHOP_CONFIG=$SHOP_REPO/config/test.yaml
	export SHOP_ADMIN_BIN=$build/bin/shop-admin
	FAULTS_BUILD=$build
	FAULTS_LOAD=$build/bin/faults-load
	FAULTS_SINK_PORT_SMTP=$((base + 25)) FAULTS_SINK_PORT_HTTP=$((base + 26))
	eval "$("$SHOP_REPO/scripts/infra.sh" env --profile test)"
}

faults_sink_start() {
	local what=$1 port=$2 dir=$SHOP_RUN_DIR/sinks/$1
	mkdir -p "$dir"
	rm -f "$dir/ready"
	setsid /usr/bin/python3 "$SHOP_REPO/tests/notification/${what}_sink.py" "$port" "$dir" \
		</dev/null >>"$SHOP_LOG_DIR/$what-sink.log" 2>&1 &
	echo $! >"$SHOP_RUN_DIR/pids/$what-sink.pid"
	faults_wait 30 test -e "$dir/ready" || shop_die "faults: the $what sink did not start"
}

faults_up() {
	"$SHOP_REPO/scripts/infra.sh" start --profile test >/dev/null
	mkdir -p "$SHOP_RUN_DIR/pids" "$SHOP_RUN_DIR/env"
	rm -f "$SHOP_RUN_DIR"/env/*.once.env
	faults_sink_start smtp "$FAULTS_SINK_PORT_SMTP"
	faults_sink_start http "$FAULTS_SINK_PORT_HTTP"
	# Every program at once (each services.sh waits for its own /readyz):
	# on two cores this halves the start-up of ten sanitized programs.
	local p pids=() rc=0
	for p in $("$SHOP_REPO/scripts/services.sh" list --profile test); do
		"$SHOP_REPO/scripts/services.sh" start --profile test --build "$FAULTS_BUILD" "$p" >/dev/null &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	((rc == 0)) || shop_die "faults: a program did not start (see $SHOP_LOG_DIR)"
}

faults_down() {
	# SIGTERM to every supervisor at once (they drain in parallel), then
	# services.sh stop waits for each and cleans up.
	local f sup
	for f in "$SHOP_RUN_DIR"/pids/*.pid; do
		[[ -e $f ]] || continue
		sup=$(proc_pid_ours "$f" "supervise.sh") && kill -TERM "$sup" 2>/dev/null || true
	done
	"$SHOP_REPO/scripts/services.sh" stop --profile test --build "$FAULTS_BUILD" >/dev/null || true
	local s
	for s in smtp http; do
		proc_stop "$s sink" "$SHOP_RUN_DIR/pids/$s-sink.pid" "${s}_sink.py" 10 >/dev/null || true
	done
	"$SHOP_REPO/scripts/infra.sh" stop --profile test >/dev/null || true
}

faults_mark() { stat -c %s "$SHOP_LOG_DIR/$1.log" 2>/dev/null || echo 0; }

# The text of NAME's log since offset OFF.
faults_log_since() { tail -c "+$(($2 + 1))" "$SHOP_LOG_DIR/$1.log" 2>/dev/null; }

faults_wait() {
	local seconds=$1 deadline
	shift
	deadline=$((EPOCHSECONDS + seconds))
	while ((EPOCHSECONDS < deadline)); do
		"$@" && return 0
		sleep 0.3
	done
	"$@"
}

# grep -c, not -q: -q stops reading at the first match, tail then dies of
# SIGPIPE and pipefail turns the match into a failure.
faults_log_has() { (($(faults_log_since "$1" "$2" | grep -cF -- "$3") > 0)); }

faults_crashed() { faults_log_has "$1" "$2" 'crash: SHOP_CRASH_AT reached'; }

# faults_fired NAME OFF SPEC: the armed point did its harm: an abort, or
# for relay.fatal (a fault, not an abort) the relay rebuilding its producer.
faults_fired() {
	case $3 in
	relay.fatal*) faults_log_has "$1" "$2" 'producer failed fatally' ;;
	*) faults_crashed "$1" "$2" ;;
	esac
}

faults_restarts() {
	local n
	n=$(faults_log_since "$1" "$2" | grep -c '"service":"supervisor".*exited with status') || true
	echo "${n:-0}"
}

# faults_ready_after NAME OLDPID: the supervisor runs NAME as a process
# other than OLDPID (so the run before has ended: the supervisor starts
# the next one only then) and that process answers 200 on /readyz.
faults_ready_after() {
	local child
	child=$(faults_child "$1") && [[ -n $child && $child != "$2" ]] &&
		shop_ready "${FAULTS_URL[$1]}" "$child"
}

faults_wait_ready() {
	[[ -n ${FAULTS_URL[$1]:-} ]] || FAULTS_URL[$1]=$(shop_admin_url "$FAULTS_BUILD/bin/$1" "$1") || return 1
	faults_wait "$3" faults_ready_after "$1" "${2:-}"
}
declare -gA FAULTS_URL=()

# The supervisor's child: the program itself.
faults_child() {
	local sup
	sup=$(proc_pid_ours "$SHOP_RUN_DIR/pids/$1.pid" "supervise.sh $1") || return 1
	pgrep -P "$sup" -f "bin/$1 " | sed -n 1p
}

# faults_arm NAME=SPEC...: writes each program's once-only environment
# (SHOP_CRASH_AT=SPEC), ends the running programs with SIGTERM (they drain;
# a clean exit restarts after 1 s), and waits until each armed run is
# ready (/readyz). Sets FAULTS_OFF[NAME] to the log offset after which the
# armed run's lines are, and FAULTS_PID[NAME] to the armed run's pid.
declare -gA FAULTS_OFF=() FAULTS_PID=()
faults_arm() {
	local arm name child
	FAULTS_OFF=() FAULTS_PID=()
	declare -A old=()
	for arm in "$@"; do
		name=${arm%%=*}
		printf 'SHOP_CRASH_AT=%s\n' "${arm#*=}" >"$SHOP_RUN_DIR/env/$name.once.env"
		FAULTS_OFF[$name]=$(faults_mark "$name")
		child=$(faults_child "$name") || shop_die "faults: $name is not running"
		old[$name]=$child
		kill -TERM "$child"
	done
	for arm in "$@"; do
		name=${arm%%=*}
		faults_wait_ready "$name" "${old[$name]}" 120 ||
			shop_die "faults: $name was not ready again after arming ${arm#*=} (see $SHOP_LOG_DIR/$name.log)"
		# A run that crashed already (before it was seen ready) leaves no
		# pid: then any ready run after it is the restart.
		faults_crashed "$name" "${FAULTS_OFF[$name]}" || FAULTS_PID[$name]=$(faults_child "$name")
	done
}

faults_load() { "$FAULTS_LOAD" load "$@"; }
faults_quiet() { "$FAULTS_LOAD" quiet --timeout "$1"; }
faults_check() { "$FAULTS_LOAD" check; }
