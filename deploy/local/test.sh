#!/usr/bin/env bash
# The README's test command: lint, unit tests, and broker tests against the local broker.
#
# Starts the local broker (deploy/local/broker.sh) unless KAFKA_BOOTSTRAP_SERVERS already points
# at one that answers, runs every tier, and stops the broker again if it started it.
#   tier 0: deploy/check.sh: offline checks of deploy/ (promtool, kubernetes-validate, hadolint, ...)
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
# moto's server: a real implementation of the AWS KMS API for the KMS signer tests.
export MOTO_URL="${MOTO_URL:-http://127.0.0.1:5000}"
started_moto=0
if ! python3 -c "import sys,urllib.request as u; u.urlopen(sys.argv[1], timeout=2)" "$MOTO_URL" 2>/dev/null; then
    MOTO_PORT="${MOTO_URL##*:}" deploy/local/moto.sh start
    started_moto=1
fi
cleanup() {
    if [[ $started_moto == 1 ]]; then MOTO_PORT="${MOTO_URL##*:}" deploy/local/moto.sh stop || true; fi
    if [[ $started_broker == 1 ]]; then deploy/local/broker.sh stop; fi
}
trap cleanup EXIT

echo "== deploy checks (alert rules, dashboard, Kubernetes manifests, Dockerfile, compose)"
# Also installs Prometheus for the end-to-end alert test among the broker tests.
deploy/check.sh
echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --features evalstream-integration-tests/broker -- -D warnings
echo "== build"
cargo build --workspace --all-targets --features evalstream-integration-tests/broker
echo "== tests (unit + broker; broker at $KAFKA_BOOTSTRAP_SERVERS, KMS at $MOTO_URL)"
cargo test --workspace --features evalstream-integration-tests/broker -- --test-threads=2
echo "== parity vectors (independent Python implementation)"
python3 tools/verify_audit_vectors.py
echo "== quick start (deploy/local/demo.sh --once)"
deploy/local/demo.sh --once
