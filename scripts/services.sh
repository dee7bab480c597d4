#!/usr/bin/env bash
# Starts and stops Shop's own programs for a profile, each in the
# background with its log under the run folder, after scripts/infra.sh has
# brought MariaDB and Kafka up.
#
#   scripts/services.sh start|stop|restart|status|list [--profile run|test] [--build DIR] [NAME...]
#
# NAME... limits the command to those programs (default: all of them);
# restart is stop then start; list prints the programs, in start order.
# Each program runs under scripts/lib/supervise.sh, which restarts it with
# backoff when it dies and logs each restart. start is idempotent (a running
# program is left alone) and waits until each program logs "<name>:
# serving" (time limit 60 s; the log's tail is printed on failure). stop
# sends SIGTERM to the supervisor, which passes it on (the programs drain
# and exit 0); SIGKILL after 30 s. Pid files (the supervisors'):
# <run dir>/pids/<name>.pid; logs: <run dir>/logs/<name>.log. status shows
# each program's metrics URL (admin.<name> of the config; /livez and
# /readyz on the same port).
# Per-program environment: <run dir>/env/<name>.env (every start) and
# <run dir>/env/<name>.once.env (the next start only), see
# scripts/lib/supervise.sh.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/proc.sh
source "$SHOP_REPO/scripts/lib/proc.sh"

# In start order: the query sides first, so that a command's events find
# their projections listening; workers last.
SHOP_PROGRAMS=(user-query user-command product-query product-command
	order-query order-command inventory-worker payment-worker notification-worker audit-worker)

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

cmd=${1:-}
shift || true
profile=${SHOP_PROFILE:-run}
build=build-release
only=()
while (($#)); do
	case $1 in
	--profile) profile=$2 && shift 2 ;;
	--build) build=$2 && shift 2 ;;
	-*) usage >&2; exit 2 ;;
	*)
		[[ " ${SHOP_PROGRAMS[*]} " == *" $1 "* ]] || shop_die "services: unknown program '$1'"
		only+=("$1")
		shift
		;;
	esac
done
((${#only[@]})) && SHOP_PROGRAMS=("${only[@]}")
case $profile in
run) config=$SHOP_REPO/config/shop.yaml ;;
test) config=$SHOP_REPO/config/test.yaml ;;
*) shop_die "services: unknown profile '$profile' (run or test)" ;;
esac
eval "$("$SHOP_REPO/scripts/infra.sh" env --profile "$profile")"
bindir=$SHOP_REPO/$build/bin
[[ $build == /* ]] && bindir=$build/bin
piddir=$SHOP_RUN_DIR/pids
mkdir -p "$piddir" "$SHOP_LOG_DIR" "$SHOP_RUN_DIR/env"
export SHOP_SUPERVISE_ENV_DIR=$SHOP_RUN_DIR/env

mark_of() { printf '%s --config %s' "$bindir/$1" "$config"; }

# The admin HTTP address of a program: SHOP_ADMIN__<NAME> from the
# environment, else admin.<name> of the config (host admin.host).
admin_value() {
	local key=$1 var=SHOP_ADMIN__${1^^}
	if [[ -n ${!var:-} ]]; then
		printf '%s' "${!var}"
		return
	fi
	awk -v k="$key" '/^admin:/ { s = 1; next } /^[^ #]/ { s = 0 } s && $1 == k ":" { print $2; exit }' "$config"
}
metrics_url_of() { printf 'http://%s:%s/metrics' "$(admin_value host)" "$(admin_value "${1//-/_}")"; }

start_one() {
	local name=$1 bin=$bindir/$1 log=$SHOP_LOG_DIR/$1.log pidfile=$piddir/$1.pid pid offset
	if [[ ! -x $bin ]]; then
		shop_log "$name: not built ($bin), skipped"
		return 0
	fi
	if pid=$(proc_pid_ours "$pidfile" "$(mark_of "$name")"); then
		shop_log "$name: already running (pid $pid)"
		return 0
	fi
	offset=$(stat -c %s "$log" 2>/dev/null || echo 0)
	setsid "$SHOP_REPO/scripts/lib/supervise.sh" "$name" "$log" "$bin" --config "$config" \
		</dev/null >>"$log" 2>&1 &
	pid=$!
	printf '%s\n' "$pid" >"$pidfile"
	local serving="\"$name: serving"
	if ! proc_wait 60 "$pid" "$(mark_of "$name")" \
		bash -c 'tail -c "+$(($2 + 1))" "$1" 2>/dev/null | grep -qF -- "$3"' _ "$log" "$offset" "$serving"; then
		shop_warn "$name: did not start; the end of $log:"
		tail -n 20 "$log" >&2 || true
		return 1
	fi
	shop_log "$name: serving (pid $pid, log $log)"
}

stop_all() {
	local i p sup
	# Reverse order: workers and command sides first.
	for ((i = ${#SHOP_PROGRAMS[@]} - 1; i >= 0; i--)); do
		p=${SHOP_PROGRAMS[i]}
		if [[ -e $piddir/$p.pid ]]; then
			sup=$(proc_pid_ours "$piddir/$p.pid" "$(mark_of "$p")") || sup=
			proc_stop "$p" "$piddir/$p.pid" "$(mark_of "$p")" 30
			# A supervisor killed after the grace period leaves its program.
			[[ -n $sup ]] && pkill -KILL -P "$sup" 2>/dev/null || true
		fi
	done
}

case $cmd in
start)
	for p in "${SHOP_PROGRAMS[@]}"; do start_one "$p"; done
	;;
stop) stop_all ;;
restart)
	stop_all
	for p in "${SHOP_PROGRAMS[@]}"; do start_one "$p"; done
	;;
list) printf '%s\n' "${SHOP_PROGRAMS[@]}" ;;
status)
	down=0
	for p in "${SHOP_PROGRAMS[@]}"; do
		if pid=$(proc_pid_ours "$piddir/$p.pid" "$(mark_of "$p")"); then
			shop_log "$p: running (pid $pid, metrics $(metrics_url_of "$p"))"
		else
			shop_log "$p: stopped"
			down=1
		fi
	done
	exit "$down"
	;;
*)
	usage >&2
	exit 2
	;;
esac
