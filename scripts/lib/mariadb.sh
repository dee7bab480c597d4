# shellcheck shell=bash
# The private MariaDB of scripts/infra.sh. Source after common.sh, proc.sh
# and after infra.sh has set the profile's variables (MYSQL_*, RUN_DIR, ...).
#
# Settings, and why:
# - innodb_flush_log_at_trx_commit=1: a committed transaction survives kill -9
#   and power loss; the outbox and the inbox rely on it. (No binary log, so
#   sync_binlog does not apply.)
# - transaction-isolation=READ-COMMITTED: no gap locks, so concurrent inserts
#   into outbox, processed-event and idempotency tables do not deadlock each
#   other, and every statement sees the latest committed rows (what code
#   expects after taking a lock or a conditional UPDATE). A transaction that
#   needs a stable snapshot asks for it itself.
# - utf8mb4 / utf8mb4_unicode_ci everywhere; skip-name-resolve (accounts are
#   by address: 127.0.0.1 over TCP, localhost over the socket);
#   max_connections=500 (every service instance keeps a small pool);
#   innodb_buffer_pool_size=256M; local_infile off.
# - SHOP_MYSQL_SERVER_OPTS adds server options for one start (split on
#   blanks), e.g. "--performance-schema=ON" to read statement digests.
# - tmpdir is the instance's own (<mysql dir>/tmp), not the shared /tmp:
#   several instances on one machine (make test beside the fault matrix)
#   once failed mariadb-install-db on a temporary table of /tmp.
# - Administration is over the socket as the OS user that runs this script
#   (unix_socket authentication, no password): root when run as root.

MYSQL_INNODB_OPTS=(
	--innodb-buffer-pool-size=256M
	--innodb-flush-log-at-trx-commit=1
)

MYSQL_ADMIN_USER=$(id -un)

# One server of a replicated pair (scripts/lib/cluster.sh sets these before
# calling mariadb_start): server options of its role (server id, binary
# log, read-only) and what runs once it answers (default: the databases and
# accounts; a replica sets up its replication instead, its accounts come
# from the primary). The defaults are the single server of make run and
# make test.
MYSQL_ROLE_OPTS=(${MYSQL_ROLE_OPTS[@]+"${MYSQL_ROLE_OPTS[@]}"})
MYSQL_AFTER_START=${MYSQL_AFTER_START:-mariadb_bootstrap}

mariadb_pid() {
	proc_pid_ours "$MYSQL_PID" "--datadir=$MYSQL_DATA"
}

mariadb_ping() {
	mariadb-admin --no-defaults --socket="$MYSQL_SOCK" -u "$MYSQL_ADMIN_USER" \
		--connect-timeout=2 ping >/dev/null 2>&1
}

mariadb_sql() {
	mariadb --no-defaults --socket="$MYSQL_SOCK" -u "$MYSQL_ADMIN_USER" --batch
}

mariadb_log_tail() {
	shop_warn "--- last lines of $MYSQL_LOG ---"
	tail -n 25 -- "$MYSQL_LOG" >&2 2>/dev/null || true
}

# Creates the system tables once. The marker file is written only after
# mariadb-install-db succeeded; a data dir without it is a leftover.
mariadb_init() {
	local marker="$MYSQL_DIR/initialised"
	if [[ -f $marker ]]; then
		[[ -d $MYSQL_DATA/mysql ]] ||
			shop_die "mariadb: $MYSQL_DATA has lost its system tables (no mysql/ folder) although it was initialised;" \
				"it is damaged. Move it away to start with an empty database."
		return 0
	fi
	if [[ -d $MYSQL_DATA && -n $(ls -A -- "$MYSQL_DATA") ]]; then
		shop_die "mariadb: $MYSQL_DATA is half-initialised (an earlier mariadb-install-db did not finish)." \
			"It cannot hold data yet: remove it and start again: rm -rf '$MYSQL_DATA'"
	fi
	mkdir -p -- "$MYSQL_DATA" "$MYSQL_DIR/tmp"
	shop_log "mariadb: initialising $MYSQL_DATA"
	local as_root=()
	((EUID == 0)) && as_root=(--user=root)
	if ! mariadb-install-db --no-defaults --datadir="$MYSQL_DATA" "${as_root[@]}" \
		--auth-root-authentication-method=socket --auth-root-socket-user="$MYSQL_ADMIN_USER" \
		--skip-test-db --skip-name-resolve --tmpdir="$MYSQL_DIR/tmp" "${MYSQL_INNODB_OPTS[@]}" \
		>>"$MYSQL_LOG" 2>&1; then
		mariadb_log_tail
		shop_die "mariadb: mariadb-install-db failed; remove $MYSQL_DATA before trying again"
	fi
	: >"$marker"
}

# Prints the SQL that makes deploy/mariadb/accounts.conf true, generating
# missing passwords. Passwords are hex, so they need no quoting.
mariadb_bootstrap_sql() {
	local conf="$SHOP_REPO/deploy/mariadb/accounts.conf"
	local account db privs pwfile pw grant_db host
	while read -r account db privs; do
		[[ -z $account || $account == \#* ]] && continue
		[[ $account =~ ^[a-z0-9_]+$ && -n $privs ]] ||
			shop_die "mariadb: bad line in $conf: $account $db $privs"
		pwfile="$MYSQL_SECRETS/$account"
		if [[ ! -s $pwfile ]]; then
			(umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$pwfile.new" &&
				mv -- "$pwfile.new" "$pwfile")
		fi
		pw=$(<"$pwfile")
		[[ $pw =~ ^[0-9a-f]{16,}$ ]] || shop_die "mariadb: $pwfile does not hold a generated password"
		if [[ $db == *%* ]]; then
			grant_db=$db
		else
			printf "CREATE DATABASE IF NOT EXISTS \`%s\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n" "$db"
			grant_db=${db//_/\\_}
		fi
		for host in 127.0.0.1 localhost; do
			# CREATE OR REPLACE drops every earlier grant, so the rights are
			# exactly the ones below. Nothing is connected yet at this point.
			printf "CREATE OR REPLACE USER '%s'@'%s' IDENTIFIED BY '%s';\n" "$account" "$host" "$pw"
			printf "GRANT %s ON \`%s\`.* TO '%s'@'%s';\n" "$privs" "$grant_db" "$account" "$host"
		done
	done <"$conf"
}

mariadb_bootstrap() {
	mkdir -p -- "$MYSQL_SECRETS"
	chmod 700 -- "$SECRETS_DIR" "$MYSQL_SECRETS"
	local sql
	sql=$(mariadb_bootstrap_sql)
	mariadb_sql <<<"$sql" || shop_die "mariadb: creating databases and accounts failed"
}

mariadb_start() {
	local pid t0=$EPOCHREALTIME
	if pid=$(mariadb_pid); then
		mariadb_ping || shop_die "mariadb: pid $pid runs but does not answer on $MYSQL_SOCK;" \
			"see $MYSQL_LOG, or 'scripts/infra.sh stop' and start again"
		shop_log "mariadb: already running (pid $pid)"
		return 0
	fi
	rm -f -- "$MYSQL_PID"
	command -v mariadbd >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
	command -v mariadbd >/dev/null 2>&1 || shop_die "mariadb: mariadbd not found; run make deps"
	# A Unix socket path holds at most 107 bytes.
	((${#MYSQL_SOCK} <= 107)) ||
		shop_die "mariadb: socket path $MYSQL_SOCK is longer than 107 bytes; set SHOP_RUN_DIR to a shorter folder"
	proc_port_free "$MYSQL_PORT" mariadb
	mkdir -p -- "$MYSQL_DIR" "$MYSQL_DIR/tmp"
	chmod 700 -- "$MYSQL_DIR"
	mkdir -p -- "$LOG_DIR"
	mariadb_init

	local as_root=()
	((EUID == 0)) && as_root=(--user=root)
	# setsid: its own session, so a Ctrl-C or hang-up of the calling terminal
	# does not reach it. 9>&- : it must not inherit infra.sh's lock.
	# shellcheck disable=SC2086 # SHOP_MYSQL_SERVER_OPTS is a list on purpose.
	setsid mariadbd --no-defaults --datadir="$MYSQL_DATA" "${as_root[@]}" \
		--port="$MYSQL_PORT" --bind-address=127.0.0.1 --socket="$MYSQL_SOCK" \
		--pid-file="$MYSQL_PID" --log-error="$MYSQL_LOG" --tmpdir="$MYSQL_DIR/tmp" \
		"${MYSQL_INNODB_OPTS[@]}" ${MYSQL_ROLE_OPTS[@]+"${MYSQL_ROLE_OPTS[@]}"} \
		--max-connections=500 \
		${SHOP_MYSQL_SERVER_OPTS:-} \
		--character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
		--transaction-isolation=READ-COMMITTED \
		--skip-name-resolve --local-infile=0 \
		</dev/null >>"$MYSQL_LOG" 2>&1 9>&- &
	pid=$!
	local rc=0
	proc_wait 30 "$pid" "--datadir=$MYSQL_DATA" mariadb_ping || rc=$?
	if ((rc != 0)); then
		mariadb_log_tail
		((rc == 2)) && shop_die "mariadb: mariadbd exited during start-up (log: $MYSQL_LOG)"
		shop_die "mariadb: no answer within 30 s (pid $pid still runs; log: $MYSQL_LOG; 'scripts/infra.sh stop' ends it)"
	fi
	# mariadbd writes its pid file itself; make sure it is the one we started.
	[[ $(cat -- "$MYSQL_PID" 2>/dev/null) == "$pid" ]] || printf '%s\n' "$pid" >"$MYSQL_PID"
	"$MYSQL_AFTER_START"
	shop_log "mariadb: started in $(proc_elapsed "$t0") s (pid $pid)"
}

mariadb_stop() {
	proc_stop mariadb "$MYSQL_PID" "--datadir=$MYSQL_DATA" 30
}

mariadb_kill() {
	proc_kill mariadb "$MYSQL_PID" "--datadir=$MYSQL_DATA"
}

# One line for `status`; fails when down.
mariadb_status() {
	local pid
	if ! pid=$(mariadb_pid); then
		shop_log "mariadb: stopped (port $MYSQL_PORT)"
		return 1
	fi
	if ! mariadb_ping; then
		shop_log "mariadb: NOT ANSWERING (pid $pid, port $MYSQL_PORT, log $MYSQL_LOG)"
		return 1
	fi
	shop_log "mariadb: running (pid $pid, 127.0.0.1:$MYSQL_PORT, socket $MYSQL_SOCK, $(proc_rss_mib "$pid") MiB)"
}
