#!/usr/bin/env bash
# Runs one Shop program and restarts it when it dies, with backoff:
#
#   supervise.sh NAME LOG PROGRAM ARGS...
#
# Started by scripts/services.sh (in its own session, detached). A program
# that exits is started again after 1 s, doubling to at most 30 s; a run
# that lasted over 60 s resets the backoff. Each restart is logged to LOG as
# a JSON line from "supervisor". SIGTERM or SIGINT is passed on to the
# program; when it has exited, the supervisor exits with its status.
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

backoff=1
restarts=0
while :; do
	started=$EPOCHSECONDS
	"$@" </dev/null >>"$log" 2>&1 &
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
	if ((EPOCHSECONDS - started > 60)); then backoff=1; fi
	restarts=$((restarts + 1))
	note warn "$name exited with status $rc; restart $restarts in ${backoff}s"
	sleep "$backoff" &
	wait $! 2>/dev/null
	((stopping)) && exit "$rc"
	backoff=$((backoff * 2 > 30 ? 30 : backoff * 2))
done
