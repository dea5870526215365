#!/usr/bin/env bash
# The README's test command: lint, unit tests, and broker tests against Apache Kafka, then the
# smaller Tansu tier.
#
# Starts what the tests need unless it already answers, and stops what it started:
#   - Apache Kafka on KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092; deploy/local/broker.sh,
#     BROKER=kafka by default),
#   - Apicurio Registry for the registry tests (EVALSTREAM_TEST_REGISTRY_URL, default
#     http://127.0.0.1:8081/apis/ccompat/v7; deploy/local/registry.sh),
#   - moto's KMS for the signer tests (MOTO_URL, default http://127.0.0.1:5000),
#   - Tansu on TANSU_TIER_PORT (default 19092) for the Tansu tier.
#
#   tier 0: deploy/check.sh: offline checks of deploy/ (promtool, kubernetes-validate, hadolint,
#           docker compose config); also installs the Prometheus of the alert test
#   tier 1: rustfmt, clippy -D warnings, the schema fingerprint vectors are current
#   tier 2: unit tests next to the code (no broker)
#   tier 3: broker tests in integration-tests/ (--features broker) on Apache Kafka, crash/fault
#           tests included
#   tier 4: the Tansu tier: the broker tests listed in integration-tests/tansu-tier.txt, again,
#           on Tansu with EVALSTREAM_TEST_BROKER=tansu (Tansu shows aborted transactional
#           records to read_committed readers; the tests read the variable to know it)
#   then:   a short run of every benchmark suite (evalstream bench: totals with the Kafka
#           Streams peer, audit-chain with KMS Sign calls counted on moto, audit-verify,
#           audit-hash, restore) so the benchmarks cannot rot: small record counts, one run, no
#           timing assertions, only "it ran, its outputs verified, it printed the table";
#           the audit parity vectors in Python, and the quick start (demo.sh --once)
#
# Only the registry tests see the registry: EVALSTREAM_TEST_REGISTRY_URL is not
# SCHEMA_REGISTRY_URL, so every other test keeps the single-object encoding.
# Set TANSU_TIER=0 to skip tier 4.
set -euo pipefail
cd "$(dirname "$0")/../.."

export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
export EVALSTREAM_TEST_REGISTRY_URL="${EVALSTREAM_TEST_REGISTRY_URL:-http://127.0.0.1:8081/apis/ccompat/v7}"
export MOTO_URL="${MOTO_URL:-http://127.0.0.1:5000}"
TANSU_TIER_PORT="${TANSU_TIER_PORT:-19092}"
export EVALSTREAM_TEST_BROKER="${EVALSTREAM_TEST_BROKER:-${BROKER:-kafka}}"

port_of() { local rest=${1##*:}; echo "${rest%%/*}"; }
http_ok() { python3 -c "import sys,urllib.request as u; u.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; }

# What this script started, stopped again in reverse order on exit (also on failure).
started=()
cleanup() {
    local i
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do eval "${started[i]}" || true; done
}
trap cleanup EXIT

echo "== deploy checks (alert rules, dashboard, Kubernetes manifests, Dockerfile, compose)"
# Also installs Prometheus for the end-to-end alert test among the broker tests.
deploy/check.sh
echo "== services"
broker_port=$(port_of "$KAFKA_BOOTSTRAP_SERVERS")
if python3 deploy/local/kafka_probe.py "$KAFKA_BOOTSTRAP_SERVERS" --quiet 2>/dev/null; then
    echo "a broker already answers on $KAFKA_BOOTSTRAP_SERVERS; using it"
else
    # A broker this script starts gets a log dir of its own, wiped first: every run starts from
    # an empty cluster (no topics piling up across runs), and a developer's broker data in the
    # default log dir is left alone. The dir stays after the run for a post-mortem.
    export KAFKA_LOG_DIR="${EVALSTREAM_CACHE:-$HOME/.cache/evalstream}/run/kafka-$broker_port/test-data"
    KAFKA_PORT=$broker_port deploy/local/broker.sh wipe
    KAFKA_PORT=$broker_port deploy/local/broker.sh start
    started+=("KAFKA_PORT=$broker_port deploy/local/broker.sh stop")
fi
registry_port=$(port_of "${EVALSTREAM_TEST_REGISTRY_URL#*://}")
if http_ok "$EVALSTREAM_TEST_REGISTRY_URL/subjects"; then
    echo "a registry already answers at $EVALSTREAM_TEST_REGISTRY_URL; using it"
else
    REGISTRY_PORT=$registry_port deploy/local/registry.sh start
    started+=("REGISTRY_PORT=$registry_port deploy/local/registry.sh stop")
fi
moto_port=$(port_of "${MOTO_URL#*://}")
if http_ok "$MOTO_URL"; then
    echo "moto already answers at $MOTO_URL; using it"
else
    MOTO_PORT=$moto_port deploy/local/moto.sh start
    started+=("MOTO_PORT=$moto_port deploy/local/moto.sh stop")
fi

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --features evalstream-integration-tests/broker -- -D warnings
echo "== schema fingerprint vectors (Java Avro and fastavro)"
tools/schema_fingerprints.sh --check
echo "== build"
cargo build --workspace --all-targets --features evalstream-integration-tests/broker
# The broker tests and the demo run `evalstream` as a subprocess. Where several checkouts share one
# CARGO_TARGET_DIR, <target>/debug/evalstream is whichever checkout built last, and can change in
# the middle of a run; a private copy of this checkout's binary keeps the run self-consistent.
if [[ -z "${EVALSTREAM_BIN:-}" ]]; then
    EVALSTREAM_BIN="$(mktemp -d)/evalstream"
    cp "${CARGO_TARGET_DIR:-target}/debug/evalstream" "$EVALSTREAM_BIN"
    export EVALSTREAM_BIN
    started+=("rm -rf '$(dirname "$EVALSTREAM_BIN")'")
fi
echo "== tests (unit + broker; $EVALSTREAM_TEST_BROKER at $KAFKA_BOOTSTRAP_SERVERS, registry at $EVALSTREAM_TEST_REGISTRY_URL, KMS at $MOTO_URL)"
cargo test --workspace --features evalstream-integration-tests/broker -- --test-threads=2

if [[ "${TANSU_TIER:-1}" != 0 ]]; then
    echo "== Tansu tier (integration-tests/tansu-tier.txt on Tansu at 127.0.0.1:$TANSU_TIER_PORT)"
    if ! TANSU_PORT=$TANSU_TIER_PORT deploy/local/tansu.sh status >/dev/null 2>&1; then
        TANSU_PORT=$TANSU_TIER_PORT deploy/local/tansu.sh start
        started+=("TANSU_PORT=$TANSU_TIER_PORT deploy/local/tansu.sh stop")
    fi
    # Each line: a test target (a file in integration-tests/tests/) and optional name filters.
    while read -r target filters; do
        [[ -z "$target" || "$target" == \#* ]] && continue
        echo "-- $target ${filters:-(all tests)}"
        out=$(mktemp)
        # shellcheck disable=SC2086 # filters is a word list on purpose
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$TANSU_TIER_PORT" EVALSTREAM_TEST_BROKER=tansu \
            cargo test -p evalstream-integration-tests --features broker --test "$target" \
            -- --test-threads=2 $filters </dev/null 2>&1 | tee "$out"
        # A filter that no longer matches must not pass as "0 tests ran".
        if grep -q '^test result: ok\. 0 passed' "$out"; then
            echo "Tansu tier: '$target ${filters}' ran no test; fix integration-tests/tansu-tier.txt" >&2
            rm -f "$out"
            exit 1
        fi
        rm -f "$out"
    done <integration-tests/tansu-tier.txt
fi

echo "== benchmarks, short (each suite runs and prints its table; no timing is asserted)"
bench_log=$(mktemp -d)
bench() {
    local name=$1
    shift
    local t0=$SECONDS
    "$EVALSTREAM_BIN" bench --log-dir "$bench_log/$name" "$@" >"$bench_log/$name.out" 2>"$bench_log/$name.err" \
        || { tail -n 30 "$bench_log/$name.err" >&2; echo "bench $name failed" >&2; exit 1; }
    cat "$bench_log/$name.out"
    grep -q '^issue 8 target\|ns/event' "$bench_log/$name.out" || { echo "bench $name printed no table" >&2; exit 1; }
    echo "-- bench $name: $((SECONDS - t0)) s"
}
# Enough records that a run outlasts its first commit: a suite measures from its first
# observation of progress to the last record, and refuses a run that was done at the first one.
bench totals --suite totals --peer kafka-streams --records 20000 --runs 1 --latency-seconds 2
bench audit-chain --suite audit-chain --records 30000 --runs 1 --kms-endpoint "$MOTO_URL"
bench audit-verify --suite audit-verify --records 5000 --runs 1
bench audit-hash --suite audit-hash --records 2000 --runs 1
bench restore --suite restore --records 50000 --runs 1
rm -rf "$bench_log"

echo "== parity vectors (independent Python implementation)"
python3 tools/verify_audit_vectors.py
echo "== quick start (deploy/local/demo.sh --once)"
deploy/local/demo.sh --once
