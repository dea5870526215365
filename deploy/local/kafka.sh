#!/usr/bin/env bash
# Install and run the local Apache Kafka broker: the broker the tests and the demo run against
# (ARCHITECTURE.md "The local brokers").
#
#   deploy/local/kafka.sh install   fetch kafka_2.13 4.4.0 and its dependencies from Maven Central
#   deploy/local/kafka.sh start     install if needed, format the log dir once, start, wait until ready
#   deploy/local/kafka.sh stop      stop the broker this script started (SIGTERM: controlled shutdown)
#   deploy/local/kafka.sh restart   stop, then start on the same log dir
#   deploy/local/kafka.sh status    exit 0 when a broker answers a Metadata request on the port
#   deploy/local/kafka.sh pid       print the broker's pid (fault tests SIGSTOP / SIGKILL it)
#   deploy/local/kafka.sh wipe      stop it and delete its log dir: the next start is a new cluster
#
# What runs: one JVM, `kafka.Kafka server.properties`, in KRaft mode with combined roles
# (process.roles=broker,controller, node 1, itself the only controller quorum voter). No
# ZooKeeper, no second process. The class path is a Maven dependency copy (deploy/local/kafka/
# pom.xml) because Maven Central is what our machines reach; the release tarball is not there.
#
# Why these broker settings (server.properties is written at every start from this script):
# - replication factor 1 and min.insync.replicas 1 for the internal topics (__consumer_offsets,
#   __transaction_state, __share_group_state): with one broker the defaults (3, 2) can never be
#   met, and the transaction coordinator then never loads, so init_transactions hangs.
# - 8 partitions for __consumer_offsets and __transaction_state instead of 50: they are created
#   on first use (first group join, first init_transactions), and on two cores creating and
#   loading 50 partitions each delays the first test by seconds for no benefit on one node.
# - group.initial.rebalance.delay.ms=0: the default 3 s delay of a new group's first rebalance
#   waits for more members; tests start their members themselves and would only wait longer.
# - the log dir persists across stop/start (and across kill -9): the broker recovers from its
#   log like a production broker does. `wipe` is the way to a fresh cluster.
#
# Readiness is a Kafka protocol answer (deploy/local/kafka_probe.py: a Metadata response with a
# broker and a controller), not an open port: the JVM opens the listener before it is usable.
#
# Environment:
#   EVALSTREAM_CACHE        cache root (default ~/.cache/evalstream): jars under kafka-4.4.0/libs,
#                           run state under run/kafka-<port>/ (pid, server.properties, logs)
#   KAFKA_PORT              client listener port on 127.0.0.1 (default 9092)
#   KAFKA_CONTROLLER_PORT   KRaft controller listener port (default KAFKA_PORT + 1)
#   KAFKA_LOG_DIR           the broker's data directory (default run/kafka-<port>/data)
#   KAFKA_HEAP_OPTS         JVM heap (default -Xms256m -Xmx512m)
#   KAFKA_JVM_OPTS          JVM options replacing the default GC flags below
#   KAFKA_START_TIMEOUT     seconds to wait for readiness (default 90)
set -euo pipefail

LOG_PREFIX=kafka
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/local/common.sh
source "$HERE/common.sh"

KAFKA_VERSION="4.4.0"
POM="$HERE/kafka/pom.xml"
LOG4J_CONFIG="$HERE/kafka/log4j2.properties"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
STAMP="$LIBS/.installed"
RUN_DIR="$CACHE/run/kafka-$PORT"
DEFAULT_DATA="$RUN_DIR/data"
DATA="${KAFKA_LOG_DIR:-$DEFAULT_DATA}"
PID_FILE="$RUN_DIR/kafka.pid"
CONSOLE="$RUN_DIR/console.log"
PROPS="$RUN_DIR/server.properties"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
# G1 with Kafka's own pause target (kafka-run-class.sh), sized for a 2-core machine: one
# concurrent GC thread leaves the other core to the network and request handler threads.
JVM_OPTS="${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:ParallelGCThreads=2 -XX:ConcGCThreads=1 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"

probe() { python3 "$HERE/kafka_probe.py" "127.0.0.1:$PORT" --timeout 1 "$@"; }

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

install() {
    # The stamp records the POM it was made from: editing the POM re-resolves the class path.
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(pom_hash)" ]]; then return 0; fi
    log "fetching kafka_2.13 $KAFKA_VERSION and its dependencies from Maven Central into $LIBS"
    rm -rf "$LIBS.tmp"
    es_mvn -f "$POM" "$DEPENDENCY_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp"
    [[ -f "$LIBS.tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"
    rm -rf "$LIBS"
    mv "$LIBS.tmp" "$LIBS"
    pom_hash >"$STAMP"
    log "installed $(find "$LIBS" -name '*.jar' | wc -l) jars"
}

write_properties() {
    mkdir -p "$RUN_DIR"
    cat >"$PROPS.tmp" <<EOF
# Written by deploy/local/kafka.sh at every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
    mv "$PROPS.tmp" "$PROPS"
}

start() {
    local pid
    if pid=$(es_live_pid "$PID_FILE"); then
        if probe --quiet 2>/dev/null; then log "already running on 127.0.0.1:$PORT (pid $pid)"; return 0; fi
        log "pid $pid is running but not ready yet; waiting"
    elif probe --quiet 2>/dev/null; then
        log "a broker not started by this script already answers on 127.0.0.1:$PORT; using it"
        return 0
    else
        install
        local java
        java=$(es_find_java 17)
        write_properties
        mkdir -p "$DATA" "$RUN_DIR/logs"
        if [[ -f "$DATA/meta.properties" ]]; then
            # A restart, possibly after kill -9: the broker recovers from its log; never reformat.
            log "reusing log dir $DATA ($(grep -m1 '^cluster.id=' "$DATA/meta.properties"))"
        else
            local cluster_id
            cluster_id=$("$java" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid)
            log "formatting $DATA for new cluster $cluster_id"
            "$java" -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$RUN_DIR/logs" \
                -cp "$LIBS/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" >>"$CONSOLE" 2>&1 \
                || { tail -n 20 "$CONSOLE" >&2; die "kafka-storage format failed"; }
        fi
        log "starting Apache Kafka $KAFKA_VERSION on 127.0.0.1:$PORT (controller :$CONTROLLER_PORT, $java)"
        # shellcheck disable=SC2086 # the option strings are word lists on purpose
        nohup "$java" $HEAP_OPTS $JVM_OPTS \
            -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$RUN_DIR/logs" \
            -cp "$LIBS/*" kafka.Kafka "$PROPS" >>"$CONSOLE" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$PID_FILE"
    fi
    local took
    took=$(es_wait_ready "kafka" "$pid" "$START_TIMEOUT" "$CONSOLE" probe --quiet) \
        || { rm -f "$PID_FILE"; exit 1; }
    log "ready in ${took} s (pid $pid, RSS $(es_rss_mib "$pid") MiB, log dir $DATA, logs $RUN_DIR/logs)"
}

stop() {
    # Controlled shutdown of a single KRaft node takes a few seconds; 60 s before SIGKILL.
    es_stop "kafka on :$PORT" "$PID_FILE" 60
}

status() {
    local pid=""
    pid=$(es_live_pid "$PID_FILE") || true
    if probe; then
        [[ -n "$pid" ]] && log "pid $pid, RSS $(es_rss_mib "$pid") MiB"
        return 0
    fi
    [[ -n "$pid" ]] && log "pid $pid is alive but does not answer on 127.0.0.1:$PORT (starting, or paused?)"
    return 1
}

print_pid() {
    es_live_pid "$PID_FILE" || die "no broker started by this script is running on port $PORT"
}

wipe() {
    stop
    if [[ "$DATA" != "$DEFAULT_DATA" && -d "$DATA" && ! -f "$DATA/meta.properties" && -n "$(ls -A "$DATA")" ]]; then
        die "refusing to delete $DATA: not empty and not a Kafka log dir (no meta.properties)"
    fi
    rm -rf "$DATA" "$RUN_DIR/logs" "$CONSOLE"
    log "deleted log dir $DATA; the next start formats a new cluster"
}

case "${1:-start}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) status ;;
    pid) print_pid ;;
    wipe) wipe ;;
    *) echo "usage: $0 install|start|stop|restart|status|pid|wipe" >&2; exit 2 ;;
esac
