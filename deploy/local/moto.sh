#!/usr/bin/env bash
# Install and run moto's server: a real implementation of the AWS KMS API for the KMS signer tests
# (docs/signing.md, integration-tests/tests/kms.rs).
#
#   deploy/local/moto.sh install   create a venv under the cache and pip install moto[server]==$MOTO_VERSION
#   deploy/local/moto.sh start     install if needed, start on 127.0.0.1:5000, wait until it answers HTTP
#   deploy/local/moto.sh stop      stop the server this script started
#   deploy/local/moto.sh status    exit 0 when the server answers HTTP
#   deploy/local/moto.sh pause     freeze the server (SIGSTOP): a KMS outage that keeps every key
#   deploy/local/moto.sh resume    unfreeze it (SIGCONT)
#
# Why moto: CreateKey with KeySpec ECC_NIST_P256, Sign (ECDSA_SHA_256, MessageType RAW) and
# GetPublicKey behave like AWS KMS, so the signer runs the same aws-sdk-kms calls it makes in
# production. moto keeps keys in memory only and generates private keys at random, so a
# stop/start loses every key for good (Sign then answers NotFoundException, a permanent failure).
# To simulate an outage that KMS recovers from, use pause/resume: while paused, connections are
# accepted by the kernel but never answered, so clients see timeouts, as in a real KMS outage.
# Why a venv under the cache: the pinned version is installed once per machine without touching
# the system Python, and repeated runs do not download again.
#
# Environment: EVALSTREAM_CACHE (default ~/.cache/evalstream) holds the venv; MOTO_PORT (default
# 5000). Clients need dummy credentials and a region (AWS_ACCESS_KEY_ID=testing,
# AWS_SECRET_ACCESS_KEY=testing, AWS_REGION=us-east-1); moto accepts any.
set -euo pipefail

# Verified to install and serve KMS on Python 3.11 (CPython 3.11.7).
MOTO_VERSION="5.2.5"
CACHE="${EVALSTREAM_CACHE:-$HOME/.cache/evalstream}"
PORT="${MOTO_PORT:-5000}"
VENV="$CACHE/moto-$MOTO_VERSION"
BIN="$VENV/bin/moto_server"
STAMP="$VENV/.installed"
RUN_DIR="$CACHE/run"
PID_FILE="$RUN_DIR/moto-$PORT.pid"
LOG_FILE="$RUN_DIR/moto-$PORT.log"

log() { printf 'moto: %s\n' "$*" >&2; }

# Answers HTTP, not merely an open port: moto's server opens the socket before Flask is ready.
http_ok() {
    python3 - "$PORT" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1).read()
    sys.exit(0)
except Exception:
    sys.exit(1)
PY
}

install() {
    if [[ -f "$STAMP" ]]; then return 0; fi
    mkdir -p "$CACHE"
    # The stamp is written last: an interrupted install is redone from scratch, never half-used.
    rm -rf "$VENV"
    log "creating $VENV and installing moto[server]==$MOTO_VERSION from PyPI"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    touch "$STAMP"
    log "installed $BIN"
}

start() {
    if http_ok; then log "something already answers on 127.0.0.1:$PORT; using it"; return 0; fi
    install
    mkdir -p "$RUN_DIR"
    log "starting moto_server on 127.0.0.1:$PORT (log $LOG_FILE)"
    # The request recorder (off until a client turns it on: `evalstream bench --suite
    # audit-chain` counts KMS Sign calls with it) writes here, not into the working directory.
    MOTO_RECORDER_FILEPATH="$RUN_DIR/moto-$PORT.recording" \
        nohup "$BIN" -H 127.0.0.1 -p "$PORT" >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    for _ in $(seq 1 150); do
        if http_ok; then log "ready (pid $(cat "$PID_FILE"))"; return 0; fi
        if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
            log "moto_server exited during start-up; last log lines:"; tail -n 20 "$LOG_FILE" >&2; exit 1
        fi
        sleep 0.2
    done
    log "moto_server did not answer on 127.0.0.1:$PORT within 30 s"; exit 1
}

stop() {
    if [[ -f "$PID_FILE" ]]; then
        local pid; pid=$(cat "$PID_FILE")
        kill -CONT "$pid" 2>/dev/null || true  # a paused server cannot act on SIGTERM
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            log "stopped pid $pid"
        fi
        rm -f "$PID_FILE"
    fi
}

signal() {
    if [[ ! -f "$PID_FILE" ]]; then log "no moto_server started by this script on port $PORT"; exit 1; fi
    kill "-$1" "$(cat "$PID_FILE")"
    log "sent SIG$1 to pid $(cat "$PID_FILE")"
}

case "${1:-start}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) http_ok ;;
    pause) signal STOP ;;
    resume) signal CONT ;;
    *) echo "usage: $0 install|start|stop|status|pause|resume" >&2; exit 2 ;;
esac
