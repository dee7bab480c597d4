# shellcheck shell=bash
# Process and port helpers for scripts/infra.sh. Source after common.sh.

# True when process PID is alive and its command line contains MARK (a path
# only our instance has), so a reused pid or a zombie is never taken for ours.
proc_is() {
	local cmd
	cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
	[[ $cmd == *"$2"* ]]
}

# Prints the pid in PIDFILE when that process is ours (see proc_is).
proc_pid_ours() {
	local pidfile=$1 mark=$2 pid
	[[ -r $pidfile ]] || return 1
	pid=$(<"$pidfile") || return 1
	[[ $pid =~ ^[0-9]+$ ]] && proc_is "$pid" "$mark" || return 1
	printf '%s\n' "$pid"
}

# Fails with "port N is in use by <process>" when something listens on the
# TCP port (on any address: a listener on 0.0.0.0 blocks 127.0.0.1 too).
proc_port_free() {
	local port=$1 what=$2 line who
	line=$(ss -Hltnp "sport = :$port" 2>/dev/null | head -n 1) || true
	[[ -z $line ]] && return 0
	who=$(sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' <<<"$line")
	shop_die "$what: port $port is in use by ${who:-another process (run ss -ltnp as root to see which)};" \
		"stop it, or pick other ports (SHOP_MYSQL_PORT, SHOP_KAFKA_PORT, SHOP_KAFKA_CONTROLLER_PORT)"
}

# Sends SIGTERM to our process, waits up to SECONDS for it to end, then
# SIGKILL. Removes the pid file. Quiet success when it is not running.
proc_stop() {
	local what=$1 pidfile=$2 mark=$3 seconds=$4 pid i
	if ! pid=$(proc_pid_ours "$pidfile" "$mark"); then
		rm -f -- "$pidfile"
		shop_log "$what: not running"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < seconds * 10; i++)); do
		proc_pid_ours "$pidfile" "$mark" >/dev/null || break
		sleep 0.1
	done
	if proc_pid_ours "$pidfile" "$mark" >/dev/null; then
		shop_warn "$what: pid $pid did not stop within ${seconds}s; sending SIGKILL"
		proc_kill "$what" "$pidfile" "$mark"
		return 0
	fi
	rm -f -- "$pidfile"
	proc_wait_reaped "$pid"
	shop_log "$what: stopped (pid $pid)"
}

# The daemons are not our children: whoever adopted them reaps them, a
# moment after they exit. Wait briefly for that, so that a `pgrep` right
# after stop does not see a <defunct> entry.
proc_wait_reaped() {
	local i
	for ((i = 0; i < 20; i++)); do
		[[ -e /proc/$1 ]] || return 0
		sleep 0.1
	done
}

# SIGKILL, for fault tests: no clean shutdown.
proc_kill() {
	local what=$1 pidfile=$2 mark=$3 pid i
	if ! pid=$(proc_pid_ours "$pidfile" "$mark"); then
		rm -f -- "$pidfile"
		shop_log "$what: not running"
		return 0
	fi
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		proc_pid_ours "$pidfile" "$mark" >/dev/null || break
		sleep 0.1
	done
	rm -f -- "$pidfile"
	proc_wait_reaped "$pid"
	shop_log "$what: killed (pid $pid)"
}

# Polls CHECK (a command) every 0.2 s until it succeeds, for at most
# SECONDS. Returns 2 at once when process PID (with MARK) has ended, 1 when
# time ran out.
proc_wait() {
	local seconds=$1 pid=$2 mark=$3
	shift 3
	local deadline=$((EPOCHSECONDS + seconds))
	while ((EPOCHSECONDS < deadline)); do
		"$@" && return 0
		# A second look before giving up: while a process exec's, its
		# /proc/PID/cmdline reads empty for a moment (setsid becoming the
		# supervisor, say).
		proc_is "$pid" "$mark" || { sleep 0.1 && proc_is "$pid" "$mark"; } || return 2
		sleep 0.2
	done
	"$@"
}

# Seconds since START (an $EPOCHREALTIME value), one decimal.
proc_elapsed() {
	awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

# Resident memory of PID in MiB.
proc_rss_mib() {
	awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/$1/status" 2>/dev/null
}
