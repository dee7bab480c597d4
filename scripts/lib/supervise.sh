#!/usr/bin/env bash
# Runs one Shop program and restarts it when it dies, with backoff:
#
#   supervise.sh NAME LOG PROGRAM ARGS...
#
# Started by scripts/services.sh (in its own session, detached). A program
# that exits is started again after 1 s, doubling to at most 30 s; a run
# that lasted over 60 s, or ended with status 0, resets the backoff. Each
# restart is logged to LOG as a JSON line from "supervisor". SIGTERM or SIGINT is passed on to the
# program; when it has exited, the supervisor exits with its status.
#
# Per-program environment (fault tests, extra settings): when
# SHOP_SUPERVISE_ENV_DIR is set (scripts/services.sh sets it to
# <run dir>/env), each start adds the NAME=value lines of
#   $SHOP_SUPERVISE_ENV_DIR/NAME.env        to every start, and of
#   $SHOP_SUPERVISE_ENV_DIR/NAME.once.env   to the next start only (the
#                                           file is removed as it is read),
# so a crash point armed through NAME.once.env fires in one run and the
# restart after it runs clean. Blank lines and # comments are skipped.
set -uo pipefail

name=$1 log=$2
shift 2
child=0
stopping=0

note() {
	printf '{"ts":"%s","level":"%s","service":"supervisor","msg":"%s"}\n' \
		"$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$1" "$2" >>"$log"
}

on_stop() {
	stopping=1
	((child > 0)) && kill -TERM "$child" 2>/dev/null
}
trap on_stop TERM INT

# Appends the NAME=value lines of file $1 to the array extra.
read_env() {
	local line
	[[ -r $1 ]] || return 0
	while IFS= read -r line || [[ -n $line ]]; do
		[[ -z $line || $line == \#* ]] && continue
		if [[ ! $line =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
			note warn "$name: ignoring '$line' in $1 (want NAME=value)"
			continue
		fi
		extra+=("$line")
	done <"$1"
}

backoff=1
restarts=0
while :; do
	extra=()
	if [[ -n ${SHOP_SUPERVISE_ENV_DIR:-} ]]; then
		read_env "$SHOP_SUPERVISE_ENV_DIR/$name.env"
		once=$SHOP_SUPERVISE_ENV_DIR/$name.once.env
		if [[ -e $once ]]; then
			n=${#extra[@]}
			read_env "$once"
			rm -f -- "$once"
			note info "$name: this start only: ${extra[*]:n}"
		fi
	fi
	started=$EPOCHSECONDS
	env "${extra[@]}" "$@" </dev/null >>"$log" 2>&1 &
	child=$!
	# wait returns early when a trapped signal arrives: wait again until
	# the program itself has exited.
	while :; do
		wait "$child"
		rc=$?
		kill -0 "$child" 2>/dev/null || break
	done
	child=0
	((stopping)) && exit "$rc"
	# A long run, or a clean exit (status 0: someone asked it to stop),
	# is no crash loop: start again after 1 s.
	if ((EPOCHSECONDS - started > 60 || rc == 0)); then backoff=1; fi
	restarts=$((restarts + 1))
	note warn "$name exited with status $rc; restart $restarts in ${backoff}s"
	sleep "$backoff" &
	wait $! 2>/dev/null
	((stopping)) && exit "$rc"
	backoff=$((backoff * 2 > 30 ? 30 : backoff * 2))
done
