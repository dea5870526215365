#!/usr/bin/env bash
# Install and run the local schema registry: Apicurio Registry 3.x, whose Confluent-compatible
# API (/apis/ccompat/v7) is what `SCHEMA_REGISTRY_URL` points at (ARCHITECTURE.md "The local
# brokers").
#
#   deploy/local/registry.sh install   fetch apicurio-registry-app 3.3.3 (tar.gz) from Maven Central, unpack it
#   deploy/local/registry.sh start     install if needed, start on 127.0.0.1:8081, wait until the API answers
#   deploy/local/registry.sh stop      stop the registry this script started
#   deploy/local/registry.sh restart   stop, then start (in-memory storage: an empty registry)
#   deploy/local/registry.sh status    exit 0 when GET /apis/ccompat/v7/subjects answers 200
#   deploy/local/registry.sh pid       print the registry's pid
#   deploy/local/registry.sh url       print the Confluent-compatible base URL
#
# Why Apicurio: it is a real schema registry (Apache-2.0) that implements the Confluent REST API,
# compatibility rules included, and it is published on Maven Central, the one place our machines
# fetch Java software from. Storage is in memory (the default): a restart loses every schema, which
# is what tests want; nothing here is for production.
#
# Apicurio 3.3 is compiled for Java 21, so this script looks for a JDK >= 21 ($JAVA_HOME, `java`,
# then /usr/lib/jvm/*; our machines have Temurin 25 there) while the broker runs on Java 17.
#
# Quarkus also opens a management interface (health, metrics), by default on 0.0.0.0:9000: we bind
# it to 127.0.0.1 on a free port chosen by the kernel so that two registries (or anything else on
# 9000) never collide.
#
# Environment: EVALSTREAM_CACHE (default ~/.cache/evalstream; the app under
# apicurio-registry-3.3.3/, run state under run/registry-<port>/), REGISTRY_PORT (default 8081),
# REGISTRY_HEAP_OPTS (default -Xmx256m), REGISTRY_START_TIMEOUT (seconds, default 120).
set -euo pipefail

LOG_PREFIX=registry
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/local/common.sh
source "$HERE/common.sh"

APICURIO_VERSION="3.3.3"
ARTIFACT="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all"
PORT="${REGISTRY_PORT:-8081}"
APP_DIR="$CACHE/apicurio-registry-$APICURIO_VERSION"
STAMP="$APP_DIR/.installed"
RUN_DIR="$CACHE/run/registry-$PORT"
PID_FILE="$RUN_DIR/registry.pid"
LOG_FILE="$RUN_DIR/registry.log"
HEAP_OPTS="${REGISTRY_HEAP_OPTS:--Xmx256m}"
# Serial GC and C1 only: the registry serves a handful of requests per test run; on two cores
# that start-up CPU is better left to the broker and the build.
JVM_OPTS="-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError"
START_TIMEOUT="${REGISTRY_START_TIMEOUT:-120}"
BASE_URL="http://127.0.0.1:$PORT/apis/ccompat/v7"

# A real answer of the API we use, not an open port: Quarkus listens before the storage is ready.
api_ok() {
    python3 - "$BASE_URL/subjects" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

install() {
    if [[ -f "$STAMP" ]]; then return 0; fi
    log "fetching $ARTIFACT from Maven Central"
    local tmp="$APP_DIR.tmp"
    rm -rf "$tmp" "$APP_DIR"
    mkdir -p "$tmp/download" "$tmp/app"
    es_mvn "$DEPENDENCY_PLUGIN:copy" -Dartifact="$ARTIFACT" -DoutputDirectory="$tmp/download"
    # GNU tar, not the Maven unpack goal: the archive uses PAX headers for long file names.
    tar -xzf "$tmp"/download/*.tar.gz -C "$tmp/app"
    [[ -f "$tmp/app/quarkus-run.jar" ]] || die "quarkus-run.jar missing in $ARTIFACT"
    mv "$tmp/app" "$APP_DIR"
    rm -rf "$tmp"
    # The stamp is written last: an interrupted install is redone, never half-used.
    echo "$ARTIFACT" >"$STAMP"
    log "installed $APP_DIR"
}

start() {
    local pid
    if pid=$(es_live_pid "$PID_FILE"); then
        if api_ok; then log "already running on 127.0.0.1:$PORT (pid $pid)"; return 0; fi
        log "pid $pid is running but not ready yet; waiting"
    elif api_ok; then
        log "a registry not started by this script already answers on 127.0.0.1:$PORT; using it"
        return 0
    else
        install
        local java
        java=$(es_find_java 21)
        mkdir -p "$RUN_DIR"
        log "starting Apicurio Registry $APICURIO_VERSION on 127.0.0.1:$PORT (in-memory storage, $java)"
        # shellcheck disable=SC2086 # the option strings are word lists on purpose
        (cd "$RUN_DIR" && exec nohup "$java" $HEAP_OPTS $JVM_OPTS \
            -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$PORT" \
            -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port=0 \
            -jar "$APP_DIR/quarkus-run.jar" >"$LOG_FILE" 2>&1 </dev/null) &
        pid=$!
        echo "$pid" >"$PID_FILE"
    fi
    local took
    took=$(es_wait_ready "registry" "$pid" "$START_TIMEOUT" "$LOG_FILE" api_ok) \
        || { rm -f "$PID_FILE"; exit 1; }
    log "ready in ${took} s (pid $pid, RSS $(es_rss_mib "$pid") MiB, $BASE_URL, log $LOG_FILE)"
}

stop() { es_stop "registry on :$PORT" "$PID_FILE" 30; }

status() {
    if api_ok; then echo "$BASE_URL answers"; return 0; fi
    echo "nothing answers at $BASE_URL" >&2
    return 1
}

print_pid() {
    es_live_pid "$PID_FILE" || die "no registry started by this script is running on port $PORT"
}

case "${1:-start}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) status ;;
    pid) print_pid ;;
    url) echo "$BASE_URL" ;;
    *) echo "usage: $0 install|start|stop|restart|status|pid|url" >&2; exit 2 ;;
esac
