# shellcheck shell=bash
# The cluster profile of scripts/infra.sh: three Kafka brokers (KRaft,
# each broker and controller in one process: three voters), replication
# factor 3 and min.insync.replicas=2 for every topic, and MariaDB as a
# primary with one replica (GTID replication). Source after common.sh,
# proc.sh, mariadb.sh and kafka.sh; infra.sh calls cluster_profile, then
# the cluster_* commands. Everything of one node goes through the same
# kafka_* and mariadb_* functions as the single broker and server of the
# run and test profiles, with the node's variables set first
# (cluster_kafka_node, cluster_mysql_node).
#
# Ports, from SHOP_CLUSTER_PORT_BASE (default 25600; the layout of
# shop_ports_env in common.sh, so RPC, admin and sink ports follow it):
#   +0 MariaDB primary, +7 its replica,
#   +1/+2, +3/+4, +5/+6 Kafka node 1, 2, 3 (broker, controller).
# Folders: <run dir>/kafka-N, <run dir>/mysql (primary), <run dir>/mysql-replica;
# logs kafka-N.log, mariadb.log, mariadb-replica.log.

CLUSTER_NODES=(1 2 3)
CLUSTER_REPL_ACCOUNT=shop_repl

# Sets the profile's variables (RUN_DIR, LOG_DIR, ports) from the base.
cluster_profile() {
	local base=${SHOP_CLUSTER_PORT_BASE:-25600}
	[[ $base =~ ^[0-9]+$ ]] && ((base >= 1024 && base + 100 <= 65535)) ||
		shop_die "cluster: bad port base '$base' (SHOP_CLUSTER_PORT_BASE)"
	CLUSTER_BASE=$base
	RUN_DIR=${SHOP_RUN_DIR:-$SHOP_REPO/.shop/cluster}
	if [[ -n ${SHOP_PROFILE:-} && $SHOP_PROFILE != cluster ]]; then
		RUN_DIR=$SHOP_REPO/.shop/cluster
	fi
	LOG_DIR=$RUN_DIR/logs
	SECRETS_DIR=$RUN_DIR/secrets
	MYSQL_SECRETS=$SECRETS_DIR/mysql
	CLUSTER_MYSQL_PRIMARY_PORT=$base
	CLUSTER_MYSQL_REPLICA_PORT=$((base + 7))
	CLUSTER_VOTERS= CLUSTER_BROKERS=
	local n
	for n in "${CLUSTER_NODES[@]}"; do
		CLUSTER_VOTERS+=${CLUSTER_VOTERS:+,}$n@127.0.0.1:$((base + 2 * n))
		CLUSTER_BROKERS+=${CLUSTER_BROKERS:+,}127.0.0.1:$((base + 2 * n - 1))
	done
	cluster_mysql_node primary
	cluster_kafka_node 1
}

# The variables of Kafka node N (1..3) for the kafka_* functions.
cluster_kafka_node() {
	local n=$1
	[[ $n =~ ^[1-3]$ ]] || shop_die "cluster: no Kafka node '$n' (1, 2 or 3)"
	KAFKA_NODE_ID=$n
	KAFKA_VOTERS=$CLUSTER_VOTERS
	KAFKA_REPLICAS=3 KAFKA_MIN_ISR=2
	KAFKA_BOOTSTRAP=$CLUSTER_BROKERS
	KAFKA_PORT=$((CLUSTER_BASE + 2 * n - 1))
	KAFKA_CTL_PORT=$((CLUSTER_BASE + 2 * n))
	KAFKA_DIR=$RUN_DIR/kafka-$n
	KAFKA_DATA=$KAFKA_DIR/data
	KAFKA_PROPS=$KAFKA_DIR/server.properties
	KAFKA_PID=$KAFKA_DIR/kafka.pid
	KAFKA_LOG=$LOG_DIR/kafka-$n.log
}

# The variables of the MariaDB primary or replica for the mariadb_* functions.
cluster_mysql_node() {
	local dir=$RUN_DIR/mysql log=$LOG_DIR/mariadb.log
	case $1 in
	primary)
		MYSQL_PORT=$CLUSTER_MYSQL_PRIMARY_PORT
		# Durable on the binary log too: a commit acknowledged is in it.
		MYSQL_ROLE_OPTS=(--server-id=1 --log-bin=mariadb-bin --binlog-format=ROW --sync-binlog=1
			--gtid-strict-mode=1 --log-slave-updates=1 --binlog-expire-logs-seconds=604800)
		MYSQL_AFTER_START=cluster_primary_ready
		;;
	replica)
		dir=$RUN_DIR/mysql-replica log=$LOG_DIR/mariadb-replica.log
		MYSQL_PORT=$CLUSTER_MYSQL_REPLICA_PORT
		# read-only: the service accounts (no SUPER) cannot write here;
		# replication can. Its own binary log, so that it can be promoted.
		MYSQL_ROLE_OPTS=(--server-id=2 --read-only=1 --log-bin=mariadb-bin --binlog-format=ROW
			--gtid-strict-mode=1 --log-slave-updates=1 --relay-log=relay-bin
			--binlog-expire-logs-seconds=604800)
		MYSQL_AFTER_START=cluster_replica_ready
		;;
	*) shop_die "cluster: no MariaDB node '$1' (primary or replica)" ;;
	esac
	MYSQL_DIR=$dir
	MYSQL_DATA=$MYSQL_DIR/data
	MYSQL_SOCK=$MYSQL_DIR/mysqld.sock
	MYSQL_PID=$MYSQL_DIR/mysqld.pid
	MYSQL_LOG=$log
}

cluster_env() {
	printf 'export SHOP_PROFILE=cluster\n'
	printf 'export SHOP_RUN_DIR=%q\n' "$RUN_DIR"
	printf 'export SHOP_MYSQL_HOST=127.0.0.1\n'
	printf 'export SHOP_MYSQL_PORT=%q\n' "$CLUSTER_MYSQL_PRIMARY_PORT"
	printf 'export SHOP_MYSQL_READ_PORT=%q\n' "$CLUSTER_MYSQL_REPLICA_PORT"
	printf 'export SHOP_MYSQL_SOCKET=%q\n' "$RUN_DIR/mysql/mysqld.sock"
	printf 'export SHOP_KAFKA_BROKERS=%q\n' "$CLUSTER_BROKERS"
	printf 'export SHOP_SECRETS_DIR=%q\n' "$SECRETS_DIR"
	printf 'export SHOP_LOG_DIR=%q\n' "$LOG_DIR"
}

# The primary answers: its databases and accounts, and the account its
# replica reads the binary log with.
cluster_primary_ready() {
	mariadb_bootstrap
	local pwfile=$MYSQL_SECRETS/$CLUSTER_REPL_ACCOUNT pw
	if [[ ! -s $pwfile ]]; then
		(umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$pwfile.new" && mv -- "$pwfile.new" "$pwfile")
	fi
	pw=$(<"$pwfile")
	mariadb_sql <<SQL || shop_die "cluster: creating the replication account failed"
CREATE OR REPLACE USER '$CLUSTER_REPL_ACCOUNT'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '$CLUSTER_REPL_ACCOUNT'@'127.0.0.1';
SQL
}

# The replica answers: replicate from the primary by GTID, from the start
# of its binary log the first time (the primary's databases and accounts
# come with it), from where it stopped afterwards (the server resumes on
# its own; START SLAVE is for a replica stopped by hand).
cluster_replica_ready() {
	local pw
	pw=$(<"$MYSQL_SECRETS/$CLUSTER_REPL_ACCOUNT") || shop_die "cluster: no replication password; start the primary first"
	if [[ -z $(mariadb_sql <<<"SHOW SLAVE STATUS") ]]; then
		mariadb_sql <<SQL || shop_die "cluster: setting up replication failed"
SET GLOBAL gtid_slave_pos = '';
CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $CLUSTER_MYSQL_PRIMARY_PORT,
  MASTER_USER = '$CLUSTER_REPL_ACCOUNT', MASTER_PASSWORD = '$pw',
  MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1;
SQL
	fi
	mariadb_sql <<<"START SLAVE" >/dev/null 2>&1 || true
}

# "io=Yes sql=Yes behind=0 gtid=0-1-123" of the replica, or nothing.
cluster_replica_state() {
	cluster_mysql_node replica
	mariadb_sql <<<"SHOW SLAVE STATUS\\G" 2>/dev/null | awk -F': ' '
		/Slave_IO_Running:/ {io=$2} /Slave_SQL_Running:/ {sql=$2}
		/Seconds_Behind_Master:/ {b=$2} /Gtid_IO_Pos:/ {g=$2}
		END {if (io != "") printf "io=%s sql=%s behind=%s gtid=%s\n", io, sql, b, g}'
}

cluster_mysql_start() {
	cluster_mysql_node primary
	mariadb_start
	cluster_mysql_node replica
	mariadb_start
}

# Every node at once: a KRaft node of a three-voter quorum is started only
# once a majority of the voters answers, so one after the other would wait
# for the next. The cluster id is one for all nodes, generated once.
cluster_kafka_start() {
	local n pids=() rc=0
	kafka_check_tools
	mkdir -p -- "$RUN_DIR" "$LOG_DIR"
	if [[ ! -s $RUN_DIR/kafka-cluster.id ]]; then
		kafka_java kafka.tools.StorageTool random-uuid >"$RUN_DIR/kafka-cluster.id.new" ||
			shop_die "cluster: StorageTool random-uuid failed"
		mv -- "$RUN_DIR/kafka-cluster.id.new" "$RUN_DIR/kafka-cluster.id"
	fi
	for n in "$@"; do
		cluster_kafka_node "$n"
		mkdir -p -- "$KAFKA_DIR"
		cp -- "$RUN_DIR/kafka-cluster.id" "$KAFKA_DIR/cluster.id"
		(kafka_start) &
		pids+=($!)
	done
	for n in "${pids[@]}"; do wait "$n" || rc=1; done
	((rc == 0)) || shop_die "cluster: a Kafka node did not start (logs: $LOG_DIR/kafka-N.log)"
}

# At once: the last voters of a quorum stopped one after the other would
# each wait for a controller that is gone for their controlled shutdown.
cluster_kafka_stop() {
	local n pids=()
	for n in "$@"; do
		cluster_kafka_node "$n"
		(kafka_stop) &
		pids+=($!)
	done
	for n in "${pids[@]}"; do wait "$n" || true; done
}

cluster_kafka_kill() {
	local n
	for n in "$@"; do
		cluster_kafka_node "$n"
		kafka_kill
	done
}

cluster_topics() {
	cluster_kafka_node 1
	kafka_topics
}

cluster_start() {
	secrets_ensure "$SECRETS_DIR"
	cluster_mysql_start
	cluster_kafka_start "${CLUSTER_NODES[@]}"
	cluster_topics
	shop_log "mariadb: primary 127.0.0.1:$CLUSTER_MYSQL_PRIMARY_PORT, replica 127.0.0.1:$CLUSTER_MYSQL_REPLICA_PORT" \
		"($(cluster_replica_state)); kafka: $CLUSTER_BROKERS; logs: $LOG_DIR, secrets: $SECRETS_DIR"
}

cluster_stop() {
	cluster_kafka_stop "${CLUSTER_NODES[@]}"
	cluster_mysql_node replica
	mariadb_stop
	cluster_mysql_node primary
	mariadb_stop
}

cluster_status() {
	local n down=0 state
	cluster_mysql_node primary
	mariadb_status || down=1
	cluster_mysql_node replica
	if mariadb_status; then
		state=$(cluster_replica_state)
		shop_log "mariadb replica: ${state:-not replicating}"
		[[ $state == "io=Yes sql=Yes"* ]] || down=1
	else
		down=1
	fi
	for n in "${CLUSTER_NODES[@]}"; do
		cluster_kafka_node "$n"
		printf 'node %s: ' "$n"
		kafka_status || down=1
	done
	return "$down"
}

# The node that leads most partitions of topic $1, from the brokers'
# metadata (kcat -L: "partition P, leader N, replicas: ..., isrs: ...").
cluster_busiest_leader() {
	kcat -L -b "$CLUSTER_BROKERS" -t "$1" -m 5 2>/dev/null |
		sed -n 's/.*partition [0-9]*, leader \([0-9]*\),.*/\1/p' | sort | uniq -c | sort -rn |
		awk 'NR == 1 {print $2}'
}
