# shellcheck shell=bash
# The private single-node Kafka broker (KRaft, combined broker+controller) of
# scripts/infra.sh. Source after common.sh, proc.sh and after infra.sh has
# set the profile's variables (KAFKA_*, RUN_DIR, ...).
#
# The broker runs from the jars that scripts/deps.sh fetched (Kafka version
# pinned in deploy/kafka/pom.xml) on the java found on PATH.
#
# Durability note: with one broker, acks=all means "in the broker's page
# cache". A killed broker loses nothing; a power loss of the machine can lose
# the last seconds. That is accepted for a development and test broker.

KAFKA_HEAP_OPTS=${SHOP_KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}

# One node of a cluster (scripts/lib/cluster.sh sets these per node before
# calling kafka_start): its node id, the static KRaft voters
# ("1@host:port,2@host:port,..."; empty: a single node, formatted
# --standalone), the replication factor and min.insync.replicas of every
# topic, and the bootstrap list the topics are created through. The
# defaults are the single broker of make run and make test.
KAFKA_NODE_ID=${KAFKA_NODE_ID:-1}
KAFKA_VOTERS=${KAFKA_VOTERS:-}
KAFKA_REPLICAS=${KAFKA_REPLICAS:-1}
KAFKA_MIN_ISR=${KAFKA_MIN_ISR:-1}

kafka_pid() {
	proc_pid_ours "$KAFKA_PID" "$KAFKA_PROPS"
}

kafka_ping() {
	kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 3 >/dev/null 2>&1
}

kafka_log_tail() {
	shop_warn "--- last lines of $KAFKA_LOG ---"
	tail -n 25 -- "$KAFKA_LOG" >&2 2>/dev/null || true
}

kafka_check_tools() {
	local jv
	jv=$(shop_java_major)
	[[ -n $jv ]] || shop_die "kafka: java not found on PATH; Java >= $SHOP_JAVA_MIN is needed: run make deps"
	((jv >= SHOP_JAVA_MIN)) ||
		shop_die "kafka: java on PATH ($(command -v java)) is version $jv; Java >= $SHOP_JAVA_MIN is needed: run make deps"
	shop_kafka_libs_ok ||
		shop_die "kafka: the Kafka $SHOP_KAFKA_VERSION jars are missing from $SHOP_KAFKA_LIBS: run make deps"
	command -v kcat >/dev/null 2>&1 || shop_die "kafka: kcat not found: run make deps"
}

# Runs a Kafka tool class on the broker's classpath.
kafka_java() {
	java -Xmx256m -Dlog4j2.configurationFile="$SHOP_REPO/deploy/kafka/log4j2.yaml" \
		-cp "$SHOP_KAFKA_LIBS/*" "$@"
}

kafka_write_props() {
	cat >"$KAFKA_PROPS.new" <<PROPS
# Written by scripts/infra.sh on every start: change the script, not this file.
# $(if [[ -n $KAFKA_VOTERS ]]; then echo "Node $KAFKA_NODE_ID of a cluster: broker and KRaft controller (a voter) in one process, loopback only."; else echo "One node, broker and KRaft controller in one process, loopback only."; fi)
process.roles=broker,controller
node.id=$KAFKA_NODE_ID
$(if [[ -n $KAFKA_VOTERS ]]; then echo "controller.quorum.voters=$KAFKA_VOTERS"; else echo "controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CTL_PORT"; fi)
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CTL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CTL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA

# Topics are created by shop-admin (partitions, retention per topic), never
# by a client's metadata request.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$KAFKA_REPLICAS
min.insync.replicas=$KAFKA_MIN_ISR

# Internal topics: as many replicas as the domain topics, and one partition
# where that makes a consumer group's first join fast.
offsets.topic.replication.factor=$KAFKA_REPLICAS
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=$KAFKA_REPLICAS
transaction.state.log.min.isr=$KAFKA_MIN_ISR
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=$KAFKA_REPLICAS
share.coordinator.state.topic.min.isr=$KAFKA_MIN_ISR

# Do not wait for more members before the first rebalance.
group.initial.rebalance.delay.ms=0

# Two cores: fewer threads than the defaults (3 network, 8 io).
num.network.threads=2
num.io.threads=4
PROPS
	mv -- "$KAFKA_PROPS.new" "$KAFKA_PROPS"
}

# Formats the log dir once, with a cluster id generated once.
kafka_format() {
	[[ -f $KAFKA_DATA/meta.properties ]] && return 0
	if [[ ! -s $KAFKA_DIR/cluster.id ]]; then
		kafka_java kafka.tools.StorageTool random-uuid >"$KAFKA_DIR/cluster.id.new" 2>>"$KAFKA_LOG" ||
			shop_die "kafka: StorageTool random-uuid failed (log: $KAFKA_LOG)"
		mv -- "$KAFKA_DIR/cluster.id.new" "$KAFKA_DIR/cluster.id"
	fi
	shop_log "kafka: formatting $KAFKA_DATA"
	# A static voter set (KAFKA_VOTERS, in the properties) is formatted
	# without --standalone.
	local standalone=(--standalone)
	[[ -n $KAFKA_VOTERS ]] && standalone=()
	if ! kafka_java kafka.tools.StorageTool format "${standalone[@]}" -t "$(<"$KAFKA_DIR/cluster.id")" \
		-c "$KAFKA_PROPS" --ignore-formatted >>"$KAFKA_LOG" 2>&1; then
		kafka_log_tail
		shop_die "kafka: formatting $KAFKA_DATA failed"
	fi
}

kafka_started_since() {
	local offset=$1
	tail -c +"$((offset + 1))" -- "$KAFKA_LOG" | grep -q 'Kafka Server started' && kafka_ping
}

kafka_start() {
	local pid t0=$EPOCHREALTIME
	if pid=$(kafka_pid); then
		kafka_ping || shop_die "kafka: pid $pid runs but does not answer on 127.0.0.1:$KAFKA_PORT;" \
			"see $KAFKA_LOG, or 'scripts/infra.sh stop' and start again"
		shop_log "kafka: already running (pid $pid)"
		return 0
	fi
	rm -f -- "$KAFKA_PID"
	kafka_check_tools
	proc_port_free "$KAFKA_PORT" kafka
	proc_port_free "$KAFKA_CTL_PORT" "kafka controller"
	mkdir -p -- "$KAFKA_DATA" "$LOG_DIR"
	kafka_write_props
	kafka_format

	local offset
	offset=$(stat -c %s -- "$KAFKA_LOG" 2>/dev/null || echo 0)
	# shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of options.
	setsid java $KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
		-Djava.awt.headless=true \
		-Dlog4j2.configurationFile="$SHOP_REPO/deploy/kafka/log4j2.yaml" \
		-cp "$SHOP_KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" \
		</dev/null >>"$KAFKA_LOG" 2>&1 9>&- &
	pid=$!
	printf '%s\n' "$pid" >"$KAFKA_PID"
	local rc=0
	proc_wait 90 "$pid" "$KAFKA_PROPS" kafka_started_since "$offset" || rc=$?
	if ((rc != 0)); then
		kafka_log_tail
		((rc == 2)) && rm -f -- "$KAFKA_PID" && shop_die "kafka: the broker exited during start-up (log: $KAFKA_LOG)"
		shop_die "kafka: not ready within 90 s (pid $pid still runs; log: $KAFKA_LOG; 'scripts/infra.sh stop' ends it)"
	fi
	shop_log "kafka: started in $(proc_elapsed "$t0") s (pid $pid)"
}

# Creates the domain and dead-letter topics (idempotent).
kafka_topics() {
	local bin=${SHOP_ADMIN_BIN:-$SHOP_REPO/build/bin/shop-admin}
	[[ -x $bin ]] || shop_die "kafka: $bin not found, so no topics were created; build it (make build) or set SHOP_ADMIN_BIN"
	local brokers=${KAFKA_BOOTSTRAP:-127.0.0.1:$KAFKA_PORT}
	"$bin" topics --brokers "$brokers" ||
		shop_die "kafka: creating topics failed ($bin topics --brokers $brokers)"
}

kafka_stop() {
	proc_stop kafka "$KAFKA_PID" "$KAFKA_PROPS" 30
}

kafka_kill() {
	proc_kill kafka "$KAFKA_PID" "$KAFKA_PROPS"
}

kafka_status() {
	local pid
	if ! pid=$(kafka_pid); then
		shop_log "kafka: stopped (port $KAFKA_PORT)"
		return 1
	fi
	if ! kafka_ping; then
		shop_log "kafka: NOT ANSWERING (pid $pid, port $KAFKA_PORT, log $KAFKA_LOG)"
		return 1
	fi
	shop_log "kafka: running (pid $pid, 127.0.0.1:$KAFKA_PORT, controller 127.0.0.1:$KAFKA_CTL_PORT, $(proc_rss_mib "$pid") MiB)"
}
