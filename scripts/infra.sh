#!/usr/bin/env bash
# Shop's private infrastructure on loopback: a MariaDB and a single-node
# Kafka broker (KRaft), with data and logs under one run folder per profile.
#
#   scripts/infra.sh start|stop|status|env [--profile run|test]
#   scripts/infra.sh start-mariadb|start-kafka|stop-mariadb|stop-kafka [--profile ...]
#   scripts/infra.sh kill-mariadb|kill-kafka [--profile ...]   (SIGKILL, for fault tests)
#   scripts/infra.sh topics [--profile ...]   (create the topics again)
#
# The cluster profile (scripts/lib/cluster.sh): three Kafka brokers
# (KRaft, three voters; replication factor 3, min.insync.replicas=2) and a
# MariaDB primary with one replica (GTID replication), ports from
# SHOP_CLUSTER_PORT_BASE (default 25600), folder .shop/cluster:
#   scripts/infra.sh start|stop|status|env|topics --profile cluster
#   scripts/infra.sh start-kafka|stop-kafka|kill-kafka [N...] --profile cluster
#                                            (nodes 1 2 3; default all)
#   scripts/infra.sh start-mariadb|stop-mariadb|kill-mariadb --profile cluster   (the primary)
#   scripts/infra.sh start-replica|stop-replica|kill-replica|replica-state --profile cluster
#   scripts/infra.sh leader TOPIC --profile cluster   (the node leading most of its partitions)
#
# Profiles (default: $SHOP_PROFILE if set, else run):
#   run   .shop/run    MariaDB 13306, Kafka 19092, controller 19093
#   test  .shop/test   MariaDB 23306, Kafka 29092, controller 29093
# Overrides: SHOP_RUN_DIR, SHOP_MYSQL_PORT, SHOP_KAFKA_PORT,
# SHOP_KAFKA_CONTROLLER_PORT, SHOP_ADMIN_BIN (default build/bin/shop-admin),
# SHOP_KAFKA_HEAP_OPTS (default "-Xms512m -Xmx512m").
#
# start is idempotent, creates the databases, accounts and topics, and prints
# where things listen. stop ends exactly the processes start began (by their
# pid files) and keeps the data. status exits non-zero when a part is down.
# env prints export lines: eval "$(scripts/infra.sh env --profile test)".
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/proc.sh
source "$SHOP_REPO/scripts/lib/proc.sh"

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

# Sets the profile's variables from --profile and the environment.
infra_profile() {
	local profile=$1 run_dir mysql_port kafka_port ctl_port
	case $profile in
	run) run_dir=$SHOP_REPO/.shop/run mysql_port=13306 kafka_port=19092 ctl_port=19093 ;;
	test) run_dir=$SHOP_REPO/.shop/test mysql_port=23306 kafka_port=29092 ctl_port=29093 ;;
	*) shop_die "infra: unknown profile '$profile' (run, test or cluster)" ;;
	esac
	PROFILE=$profile
	RUN_DIR=${SHOP_RUN_DIR:-$run_dir}
	MYSQL_PORT=${SHOP_MYSQL_PORT:-$mysql_port}
	KAFKA_PORT=${SHOP_KAFKA_PORT:-$kafka_port}
	KAFKA_CTL_PORT=${SHOP_KAFKA_CONTROLLER_PORT:-$ctl_port}
	# `env` exports SHOP_PROFILE along with the folder and ports. After
	# eval "$(infra.sh env --profile test)", `infra.sh stop --profile run`
	# must not act on the test folder: another profile's settings are
	# ignored.
	if [[ -n ${SHOP_PROFILE:-} && $SHOP_PROFILE != "$profile" ]]; then
		if [[ -n ${SHOP_RUN_DIR:-}${SHOP_MYSQL_PORT:-}${SHOP_KAFKA_PORT:-}${SHOP_KAFKA_CONTROLLER_PORT:-} ]]; then
			shop_warn "infra: ignoring SHOP_RUN_DIR and ports from the environment: they belong to profile '$SHOP_PROFILE'"
		fi
		RUN_DIR=$run_dir MYSQL_PORT=$mysql_port KAFKA_PORT=$kafka_port KAFKA_CTL_PORT=$ctl_port
	fi
	local p
	for p in "$MYSQL_PORT" "$KAFKA_PORT" "$KAFKA_CTL_PORT"; do
		if ! [[ $p =~ ^[0-9]+$ ]] || ((p == 0 || p > 65535)); then
			shop_die "infra: bad port '$p'"
		fi
	done

	LOG_DIR=$RUN_DIR/logs
	SECRETS_DIR=$RUN_DIR/secrets
	MYSQL_DIR=$RUN_DIR/mysql
	MYSQL_DATA=$MYSQL_DIR/data
	MYSQL_SOCK=$MYSQL_DIR/mysqld.sock
	MYSQL_PID=$MYSQL_DIR/mysqld.pid
	MYSQL_LOG=$LOG_DIR/mariadb.log
	MYSQL_SECRETS=$SECRETS_DIR/mysql
	KAFKA_DIR=$RUN_DIR/kafka
	KAFKA_DATA=$KAFKA_DIR/data
	KAFKA_PROPS=$KAFKA_DIR/server.properties
	KAFKA_PID=$KAFKA_DIR/kafka.pid
	KAFKA_LOG=$LOG_DIR/kafka.log
}

infra_env() {
	printf 'export SHOP_PROFILE=%q\n' "$PROFILE"
	printf 'export SHOP_RUN_DIR=%q\n' "$RUN_DIR"
	printf 'export SHOP_MYSQL_HOST=127.0.0.1\n'
	printf 'export SHOP_MYSQL_PORT=%q\n' "$MYSQL_PORT"
	printf 'export SHOP_MYSQL_SOCKET=%q\n' "$MYSQL_SOCK"
	printf 'export SHOP_KAFKA_BROKERS=%q\n' "127.0.0.1:$KAFKA_PORT"
	printf 'export SHOP_KAFKA_CONTROLLER_PORT=%q\n' "$KAFKA_CTL_PORT"
	printf 'export SHOP_SECRETS_DIR=%q\n' "$SECRETS_DIR"
	printf 'export SHOP_LOG_DIR=%q\n' "$LOG_DIR"
}

# One start/stop at a time per run folder. The lock is fd 9; the daemons
# are started with 9>&- so they never hold it.
infra_lock() {
	mkdir -p -- "$RUN_DIR"
	exec 9>"$RUN_DIR/.infra.lock"
	flock -w 180 9 || shop_die "infra: another scripts/infra.sh holds $RUN_DIR/.infra.lock"
}

infra_where() {
	shop_log "mariadb: 127.0.0.1:$MYSQL_PORT (socket $MYSQL_SOCK), kafka: 127.0.0.1:$KAFKA_PORT," \
		"logs: $LOG_DIR, secrets: $SECRETS_DIR"
}

main() {
	local cmd=${1:-} profile=${SHOP_PROFILE:-run} args=()
	(($#)) && shift
	while (($#)); do
		case $1 in
		[1-9] | shop.*)
			args+=("$1") # the cluster profile's node numbers and topics
			shift
			;;
		--profile)
			(($# >= 2)) || shop_die "infra: --profile needs run or test"
			profile=$2
			shift 2
			;;
		--profile=*)
			profile=${1#--profile=}
			shift
			;;
		-h | --help)
			usage
			return 0
			;;
		*)
			usage >&2
			return 2
			;;
		esac
	done
	case $cmd in
	-h | --help)
		usage
		return 0
		;;
	"")
		usage >&2
		return 2
		;;
	esac
	if [[ $profile == cluster ]]; then
		infra_cluster "$cmd" ${args[@]+"${args[@]}"}
		return
	fi
	((${#args[@]} == 0)) || {
		usage >&2
		return 2
	}
	infra_profile "$profile"

	case $cmd in
	env)
		infra_env
		return 0
		;;
	status)
		# shellcheck source=scripts/lib/mariadb.sh
		source "$SHOP_REPO/scripts/lib/mariadb.sh"
		# shellcheck source=scripts/lib/kafka.sh
		source "$SHOP_REPO/scripts/lib/kafka.sh"
		local down=0
		mariadb_status || down=1
		kafka_status || down=1
		return "$down"
		;;
	start | stop | start-mariadb | start-kafka | stop-mariadb | stop-kafka | kill-mariadb | kill-kafka | topics) ;;
	*)
		usage >&2
		return 2
		;;
	esac

	# shellcheck source=scripts/lib/mariadb.sh
	source "$SHOP_REPO/scripts/lib/mariadb.sh"
	# shellcheck source=scripts/lib/kafka.sh
	source "$SHOP_REPO/scripts/lib/kafka.sh"
	# shellcheck source=scripts/lib/secrets.sh
	source "$SHOP_REPO/scripts/lib/secrets.sh"
	infra_lock
	case $cmd in
	start)
		secrets_ensure "$SECRETS_DIR"
		mariadb_start
		kafka_start
		kafka_topics
		infra_where
		;;
	stop)
		kafka_stop
		mariadb_stop
		;;
	start-mariadb) mariadb_start ;;
	start-kafka)
		kafka_start
		kafka_topics
		;;
	stop-mariadb) mariadb_stop ;;
	stop-kafka) kafka_stop ;;
	kill-mariadb) mariadb_kill ;;
	kill-kafka) kafka_kill ;;
	topics) kafka_topics ;;
	esac
}

# The cluster profile's commands (see the top of this file).
infra_cluster() {
	local cmd=$1
	shift
	# shellcheck source=scripts/lib/mariadb.sh
	source "$SHOP_REPO/scripts/lib/mariadb.sh"
	# shellcheck source=scripts/lib/kafka.sh
	source "$SHOP_REPO/scripts/lib/kafka.sh"
	# shellcheck source=scripts/lib/secrets.sh
	source "$SHOP_REPO/scripts/lib/secrets.sh"
	# shellcheck source=scripts/lib/cluster.sh
	source "$SHOP_REPO/scripts/lib/cluster.sh"
	cluster_profile
	local nodes=("$@")
	((${#nodes[@]})) || nodes=("${CLUSTER_NODES[@]}")
	case $cmd in
	env)
		cluster_env
		return 0
		;;
	status)
		cluster_status
		return
		;;
	replica-state)
		cluster_replica_state
		return 0
		;;
	leader)
		(($#)) || shop_die "infra: leader needs a topic"
		cluster_busiest_leader "$1"
		return 0
		;;
	start | stop | topics | start-kafka | stop-kafka | kill-kafka | start-mariadb | stop-mariadb | \
		kill-mariadb | start-replica | stop-replica | kill-replica) ;;
	*)
		usage >&2
		return 2
		;;
	esac
	infra_lock
	case $cmd in
	start) cluster_start ;;
	stop) cluster_stop ;;
	topics) cluster_topics ;;
	start-kafka) cluster_kafka_start "${nodes[@]}" ;;
	stop-kafka) cluster_kafka_stop "${nodes[@]}" ;;
	kill-kafka) cluster_kafka_kill "${nodes[@]}" ;;
	start-mariadb | stop-mariadb | kill-mariadb | start-replica | stop-replica | kill-replica)
		local what=${cmd%-*}
		cluster_mysql_node "$([[ $cmd == *-replica ]] && echo replica || echo primary)"
		case $what in
		start) mariadb_start ;;
		stop) mariadb_stop ;;
		kill) mariadb_kill ;;
		esac
		;;
	esac
}

main "$@"
