#!/usr/bin/env bash
# The README's test command: lint, unit tests, and broker tests against the local broker.
#
# Starts the local broker (deploy/local/broker.sh) unless KAFKA_BOOTSTRAP_SERVERS already points
# at one that answers, runs every tier, and stops the broker again if it started it.
#   tier 1: rustfmt + clippy -D warnings
#   tier 2: unit tests next to the code (no broker)
#   tier 3: broker tests in integration-tests/ (--features broker), crash/fault tests included
set -euo pipefail
cd "$(dirname "$0")/../.."

export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
started_broker=0
if ! TANSU_PORT="${KAFKA_BOOTSTRAP_SERVERS##*:}" deploy/local/broker.sh status 2>/dev/null; then
    deploy/local/broker.sh start
    started_broker=1
fi
cleanup() { if [[ $started_broker == 1 ]]; then deploy/local/broker.sh stop; fi; }
trap cleanup EXIT

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --features evalstream-integration-tests/broker -- -D warnings
echo "== build"
cargo build --workspace --all-targets --features evalstream-integration-tests/broker
echo "== tests (unit + broker; broker at $KAFKA_BOOTSTRAP_SERVERS)"
cargo test --workspace --features evalstream-integration-tests/broker -- --test-threads=2
