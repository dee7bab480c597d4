#!/usr/bin/env bash
# Starts and stops Shop's own programs for a profile, each in the
# background with its log under the run folder, after scripts/infra.sh has
# brought MariaDB and Kafka up.
#
#   scripts/services.sh start|stop|restart|status|list [--profile run|test] [--build DIR] [NAME...]
#
# NAME... limits the command to those programs (default: all of them);
# restart is stop then start; list prints the programs, in start order.
# The programs are those of internal/config/programs.list, started in this
# order: the query sides first (so that a command's events find their
# projections listening), then the command sides, then the workers.
# Each program runs under scripts/lib/supervise.sh, which restarts it with
# backoff when it dies and logs each restart. start is idempotent (a running
# program is left alone) and waits until each program answers 200 on its
# /readyz (its admin address from its own --print-config; time limit 60 s;
# the log's tail is printed on failure). stop sends SIGTERM to the
# supervisor, which passes it on (the programs drain and exit 0); SIGKILL
# after 30 s. Pid files (the supervisors'): <run dir>/pids/<name>.pid;
# logs: <run dir>/logs/<name>.log. status shows each program's metrics URL
# (/livez and /readyz on the same port).
# Per-program environment: <run dir>/env/<name>.env (every start) and
# <run dir>/env/<name>.once.env (the next start only), see
# scripts/lib/supervise.sh.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/proc.sh
source "$SHOP_REPO/scripts/lib/proc.sh"

# In start order (see above).
mapfile -t SHOP_PROGRAMS < <(shop_programs | grep -- '-query$'; shop_programs | grep -- '-command$'
	shop_programs | grep -v -- '-query$' | grep -v -- '-command$')

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

admin_url_of() { shop_admin_url "$bindir/$1" "$1" "$config"; }

# The supervisor's child (the program itself) answers 200 on /readyz.
ready() {
	local sup=$1 name=$2 url=$3 child
	child=$(pgrep -P "$sup" -f "bin/$name " | sed -n 1p) && [[ -n $child ]] && shop_ready "$url" "$child"
}

start_one() {
	local name=$1 bin=$bindir/$1 log=$SHOP_LOG_DIR/$1.log pidfile=$piddir/$1.pid pid url
	if [[ ! -x $bin ]]; then
		shop_log "$name: not built ($bin), skipped"
		return 0
	fi
	if pid=$(proc_pid_ours "$pidfile" "$(mark_of "$name")"); then
		shop_log "$name: already running (pid $pid)"
		return 0
	fi
	url=$(admin_url_of "$name") || return 1
	setsid "$SHOP_REPO/scripts/lib/supervise.sh" "$name" "$log" "$bin" --config "$config" \
		</dev/null >>"$log" 2>&1 &
	pid=$!
	printf '%s\n' "$pid" >"$pidfile"
	if ! proc_wait 60 "$pid" "$(mark_of "$name")" ready "$pid" "$name" "$url"; then
		shop_warn "$name: did not start; the end of $log:"
		tail -n 20 "$log" >&2 || true
		return 1
	fi
	shop_log "$name: ready (pid $pid, $url/readyz, log $log)"
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
			shop_log "$p: running (pid $pid, metrics $(admin_url_of "$p")/metrics)"
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
