#!/usr/bin/env bash
# Starts and stops Shop's own programs for a profile, each in the
# background with its log under the run folder, after scripts/infra.sh has
# brought MariaDB and Kafka up.
#
#   scripts/services.sh start|stop|restart|status|list [--profile run|test|cluster] [--build DIR] [NAME[@K]...]
#
# NAME... limits the command to those programs (default: all of them);
# restart is stop then start; list prints the programs, in start order.
# NAME@K (K = 2..9) is a further instance of NAME: it runs beside the
# first with its own log and pid file (NAME@K), its admin port and, for a
# program that serves RPC, its endpoint --listen moved by
# (K-1) * SHOP_INSTANCE_PORT_STEP (default 50) from the first instance's;
# clients reach both through an endpoint list
# (endpoints.<key>: "tcp://h:p1,tcp://h:p2"). Consumers share their
# group's partitions, relays their outbox's lock. stop and status also
# cover every instance that is running. Where endpoints.<key> is already
# such a list (config/cluster.yaml), instance K listens on its K-th entry.
# The cluster profile runs SHOP_CLUSTER_INSTANCES (default 2) instances
# of every program by default (NAME, NAME@2, ...); shop-gateway@K serves
# HTTP on gateway.port + (K-1) * the step.
# The programs are those of internal/config/programs.list, started in this
# order: the query sides first (so that a command's events find their
# projections listening), then the command sides, then the workers.
# Each program runs under scripts/lib/supervise.sh, which restarts it with
# backoff when it dies and logs each restart. start is idempotent (a running
# program is left alone) and waits until each program answers 200 on its
# /readyz (its admin address from its own --print-config; time limit 60 s;
# the log's tail is printed on failure). stop sends SIGTERM to the
# supervisor, which passes it on (the programs drain and exit 0); SIGKILL
# after 30 s. Pid files (the supervisors'): <run dir>/pids/<name>.pid, and
# beside each the admin URL it answered on (<name>.admin, for the bench);
# logs: <run dir>/logs/<name>.log. status shows each program's metrics URL
# (/livez and /readyz on the same port).
# Profile run also supervises a mail catcher (mail-catcher: the SMTP sink
# tests/notification/smtp_sink.py on notify.smtp_url's port, loopback),
# started before the programs and stopped after them, which keeps every
# message notification-worker sends as an .eml file in notify.mail_dir
# (shopctl mail list / show); ready once it listens (<mail_dir>/ready).
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
		[[ $1 =~ ^([a-z][a-z0-9-]*)(@[2-9])?$ ]] || shop_die "services: bad program name '$1'"
		[[ " ${SHOP_PROGRAMS[*]} " == *" ${BASH_REMATCH[1]} "* ]] ||
			shop_die "services: unknown program '${BASH_REMATCH[1]}'"
		only+=("$1")
		shift
		;;
	esac
done
if [[ $profile == cluster && ${#only[@]} == 0 ]]; then
	for p in "${SHOP_PROGRAMS[@]}"; do
		only+=("$p")
		for ((k = 2; k <= ${SHOP_CLUSTER_INSTANCES:-2}; k++)); do only+=("$p@$k"); done
	done
fi
((${#only[@]})) && SHOP_PROGRAMS=("${only[@]}")
case $profile in
run) config=$SHOP_REPO/config/shop.yaml ;;
test) config=$SHOP_REPO/config/test.yaml ;;
cluster) config=$SHOP_REPO/config/cluster.yaml ;;
*) shop_die "services: unknown profile '$profile' (run, test or cluster)" ;;
esac
# The cluster profile's ports move with SHOP_CLUSTER_PORT_BASE (the
# defaults are config/cluster.yaml's).
if [[ $profile == cluster && -n ${SHOP_CLUSTER_PORT_BASE:-} ]]; then
	shop_cluster_ports_env "$SHOP_CLUSTER_PORT_BASE"
fi
eval "$("$SHOP_REPO/scripts/infra.sh" env --profile "$profile")"
bindir=$SHOP_REPO/$build/bin
[[ $build == /* ]] && bindir=$build/bin
piddir=$SHOP_RUN_DIR/pids
mkdir -p "$piddir" "$SHOP_LOG_DIR" "$SHOP_RUN_DIR/env"
export SHOP_SUPERVISE_ENV_DIR=$SHOP_RUN_DIR/env

step=${SHOP_INSTANCE_PORT_STEP:-50}

# An instance NAME[@K]: its program and its K (1 for the first).
prog_of() { printf '%s\n' "${1%@*}"; }
inst_of() { [[ $1 == *@* ]] && printf '%s\n' "${1#*@}" || printf '1\n'; }

mark_of() { printf '%s --config %s' "$bindir/$(prog_of "$1")" "$config"; }

# http://host:port of an instance's admin server.
admin_url_of() {
	local prog k url port
	prog=$(prog_of "$1") k=$(inst_of "$1")
	url=$(shop_admin_url "$bindir/$prog" "$prog" "$config") || return 1
	((k == 1)) && { printf '%s\n' "$url"; return 0; }
	port=${url##*:}
	printf '%s:%s\n' "${url%:*}" $((port + (k - 1) * step))
}

# The endpoint list of an RPC program (endpoints.<key>), or nothing.
endpoint_of() {
	local key
	key=$(awk -v p="$1" '$1 == p { print $2 }' "$SHOP_PROGRAMS_LIST")
	[[ -z $key || $key == - ]] && return 0
	"$bindir/$1" --config "$config" --print-config "endpoints.$key"
}

# The arguments an instance runs with beyond --config.
inst_args() {
	local prog k url ep
	prog=$(prog_of "$1") k=$(inst_of "$1")
	ep=$(endpoint_of "$prog") || return 1
	if [[ $ep == *,* ]]; then
		# A list: instance K listens on its K-th entry, on its own admin port.
		local eps
		IFS=, read -r -a eps <<<"$ep"
		((k <= ${#eps[@]})) || shop_die "services: $1: endpoints list '$ep' has no entry $k"
		url=$(admin_url_of "$1") || return 1
		printf -- '--admin-port\n%s\n--listen\n%s\n' "${url##*:}" "${eps[k - 1]}"
		return 0
	fi
	((k == 1)) && return 0
	url=$(admin_url_of "$1") || return 1
	printf -- '--admin-port\n%s\n' "${url##*:}"
	[[ -z $ep ]] && return 0
	[[ $ep == tcp://*:* && $ep != *,* ]] ||
		shop_die "services: $1: its endpoint is '$ep'; an instance needs one tcp://host:port"
	printf -- '--listen\n%s:%s\n' "${ep%:*}" $((${ep##*:} + (k - 1) * step))
}

# The running further instances (NAME@K) of the programs in SHOP_PROGRAMS.
running_instances() {
	local p f
	for p in "${SHOP_PROGRAMS[@]}"; do
		[[ $p == *@* ]] && continue
		for f in "$piddir/$p"@[2-9].pid; do
			[[ -e $f ]] && basename "$f" .pid
		done
	done
	return 0
}

# The supervisor's child (the program itself) answers 200 on /readyz.
ready() {
	local sup=$1 name=$2 url=$3 child
	child=$(pgrep -P "$sup" -f "bin/$name " | sed -n 1p) && [[ -n $child ]] && shop_ready "$url" "$child"
}

start_one() {
	local name=$1 prog bin log=$SHOP_LOG_DIR/$1.log pidfile=$piddir/$1.pid pid url args text
	prog=$(prog_of "$name") bin=$bindir/$(prog_of "$name")
	if [[ ! -x $bin ]]; then
		shop_log "$name: not built ($bin), skipped"
		return 0
	fi
	if pid=$(proc_pid_ours "$pidfile" "$(mark_of "$name")"); then
		shop_log "$name: already running (pid $pid)"
		return 0
	fi
	url=$(admin_url_of "$name") || return 1
	args=()
	text=$(inst_args "$name") || return 1
	[[ -n $text ]] && mapfile -t args <<<"$text"
	local env=()
	if [[ $prog == shop-gateway && $(inst_of "$name") != 1 ]]; then
		local gport
		gport=$("$bin" --config "$config" --print-config gateway.port) || return 1
		env=("SHOP_GATEWAY__PORT=$((gport + ($(inst_of "$name") - 1) * step))")
	fi
	env ${env[@]+"${env[@]}"} setsid "$SHOP_REPO/scripts/lib/supervise.sh" "$name" "$log" "$bin" --config "$config" \
		${args[@]+"${args[@]}"} </dev/null >>"$log" 2>&1 &
	pid=$!
	printf '%s\n' "$pid" >"$pidfile"
	if ! proc_wait 60 "$pid" "$(mark_of "$name")" ready "$pid" "$prog" "$url"; then
		shop_warn "$name: did not start; the end of $log:"
		tail -n 20 "$log" >&2 || true
		return 1
	fi
	printf '%s\n' "$url" >"$piddir/$name.admin"
	shop_log "$name: ready (pid $pid, $url/readyz, log $log)"
}

stop_all() {
	local i p sup all
	mapfile -t all < <(printf '%s\n' "${SHOP_PROGRAMS[@]}"; running_instances)
	# Reverse order: further instances, workers and command sides first.
	for ((i = ${#all[@]} - 1; i >= 0; i--)); do
		p=${all[i]}
		if [[ -e $piddir/$p.pid ]]; then
			sup=$(proc_pid_ours "$piddir/$p.pid" "$(mark_of "$p")") || sup=
			proc_stop "$p" "$piddir/$p.pid" "$(mark_of "$p")" 30
			rm -f "$piddir/$p.admin"
			# A supervisor killed after the grace period leaves its program.
			[[ -n $sup ]] && pkill -KILL -P "$sup" 2>/dev/null || true
		fi
	done
}

# The mail catcher: profile run, when every program is meant.
mail_mark="smtp_sink.py"
mail_wanted() { [[ $profile == run ]] && ((${#only[@]} == 0)); }
mail_cfg() { "$bindir/notification-worker" --config "$config" --print-config "$1"; }
mail_start() {
	mail_wanted && [[ -x $bindir/notification-worker ]] || return 0
	local pidfile=$piddir/mail-catcher.pid log=$SHOP_LOG_DIR/mail-catcher.log pid url dir
	if pid=$(proc_pid_ours "$pidfile" "$mail_mark"); then
		shop_log "mail-catcher: already running (pid $pid)"
		return 0
	fi
	url=$(mail_cfg notify.smtp_url) dir=$(mail_cfg notify.mail_dir)
	[[ $url =~ ^smtp://(127\.0\.0\.1|localhost):([0-9]+)$ ]] ||
		shop_die "services: mail-catcher: notify.smtp_url '$url' is not smtp://127.0.0.1:PORT"
	[[ $dir == /* ]] || dir=$SHOP_REPO/$dir
	mkdir -p "$dir"
	rm -f "$dir/ready"
	setsid "$SHOP_REPO/scripts/lib/supervise.sh" mail-catcher "$log" /usr/bin/python3 \
		"$SHOP_REPO/tests/notification/smtp_sink.py" "${BASH_REMATCH[2]}" "$dir" </dev/null >>"$log" 2>&1 &
	pid=$!
	printf '%s\n' "$pid" >"$pidfile"
	# Until the background child has exec'd the supervisor, its command line
	# is this script's, then setsid's: proc_wait would take it for a
	# catcher that died.
	local i
	for ((i = 0; i < 50; i++)); do
		proc_is "$pid" supervise.sh && break
		[[ -e /proc/$pid ]] || break
		sleep 0.1
	done
	if ! proc_wait 30 "$pid" "$mail_mark" test -e "$dir/ready"; then
		shop_warn "mail-catcher: did not start; the end of $log:"
		tail -n 20 "$log" >&2 || true
		return 1
	fi
	shop_log "mail-catcher: ready (pid $pid, ${url}, mail in $dir)"
}
mail_stop() {
	mail_wanted || return 0
	[[ -e $piddir/mail-catcher.pid ]] || return 0
	proc_stop mail-catcher "$piddir/mail-catcher.pid" "$mail_mark" 10
}

case $cmd in
start)
	mail_start
	for p in "${SHOP_PROGRAMS[@]}"; do start_one "$p"; done
	;;
stop)
	stop_all
	mail_stop
	;;
restart)
	stop_all
	mail_stop
	mail_start
	for p in "${SHOP_PROGRAMS[@]}"; do start_one "$p"; done
	;;
list) printf '%s\n' "${SHOP_PROGRAMS[@]}" ;;
status)
	down=0
	for p in "${SHOP_PROGRAMS[@]}" $(running_instances); do
		if pid=$(proc_pid_ours "$piddir/$p.pid" "$(mark_of "$p")"); then
			shop_log "$p: running (pid $pid, metrics $(admin_url_of "$p")/metrics)"
		else
			shop_log "$p: stopped"
			down=1
		fi
	done
	if mail_wanted; then
		if pid=$(proc_pid_ours "$piddir/mail-catcher.pid" "$mail_mark"); then
			shop_log "mail-catcher: running (pid $pid, mail in $(mail_cfg notify.mail_dir))"
		else
			shop_log "mail-catcher: stopped"
			down=1
		fi
	fi
	exit "$down"
	;;
*)
	usage >&2
	exit 2
	;;
esac
