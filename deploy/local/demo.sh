#!/usr/bin/env bash
# The README's "one command runs it": the processors against the local broker, sample events
# flowing end to end.
#
#   deploy/local/demo.sh          run, show the results, keep the processors running until Ctrl-C
#   deploy/local/demo.sh --once   run, show the results, stop (used by the test command)
#
# Steps: start the local broker (Apache Kafka by default; BROKER=tansu for Tansu, see
# deploy/local/broker.sh) unless one answers on KAFKA_BOOTSTRAP_SERVERS, build evalstream,
# create the topology, start each processor as a consumer-group member (logs in
# .evalstream/logs/), produce the sample events in deploy/local/sample/, wait until the
# processors have committed them, and show outputs, the DLQ, /ready and a few metrics.
# The domain part: three submissions become promotion and allocation requests; SentinelNet's
# sample decisions promote one model, deny the other (the denial) and approve two allocations;
# the development Finance stand-in signs their settlements, and one settlement signed with a key
# Finance never registered lands in finance.settlements.dlq (the bad proof); the allocations
# become settled; the audit chain, which now holds every domain event, verifies.
set -euo pipefail
cd "$(dirname "$0")/../.."
once=0
[[ "${1:-}" == "--once" ]] && once=1

export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
# A fresh prefix per demo run keeps runs apart on a long-lived broker.
export EVALSTREAM_TOPIC_PREFIX="${EVALSTREAM_TOPIC_PREFIX:-demo$(date +%s).}"
export EVALSTREAM_SESSION_TIMEOUT_MS="${EVALSTREAM_SESSION_TIMEOUT_MS:-6000}"
export EVALSTREAM_LOG_FORMAT="${EVALSTREAM_LOG_FORMAT:-text}"
# Tansu shows aborted records to read_committed readers: every process reads "committed" through
# the progress markers there (docs/exactly-once.md).
if [[ "${BROKER:-kafka}" == tansu ]]; then
    export EVALSTREAM_COMMITTED_VIEW="${EVALSTREAM_COMMITTED_VIEW:-markers}"
fi
OPS_PORT="${OPS_PORT:-18080}"
logs=.evalstream/logs
mkdir -p "$logs"

# Left running afterwards (like a development database): the next demo or test run reuses it.
KAFKA_PORT="${KAFKA_BOOTSTRAP_SERVERS##*:}" deploy/local/broker.sh start
# EVALSTREAM_BIN (set by test.sh): a binary already built from this checkout.
if [[ -n "${EVALSTREAM_BIN:-}" ]]; then
    bin="$EVALSTREAM_BIN"
else
    cargo build --quiet -p evalstream
    bin="${CARGO_TARGET_DIR:-target}/debug/evalstream"
fi

echo "== topology (prefix $EVALSTREAM_TOPIC_PREFIX)"
"$bin" topology apply
# New topics answer "not leader" until their leaders are elected; a processor whose first restore
# runs in that window stops (a retriable error it does not retry yet). Wait for every leader.
python3 deploy/local/kafka_probe.py "${KAFKA_BOOTSTRAP_SERVERS%%,*}" --quiet \
    --topics-with-prefix "$EVALSTREAM_TOPIC_PREFIX" --wait 60

# A development signing key and its registry entry (production signs with AWS KMS: see
# docs/signing.md). Kept under .evalstream/ so repeated demos reuse them.
keys=.evalstream/keys
mkdir -p "$keys"
if [[ ! -f "$keys/signers.json" ]]; then
    "$bin" signers add --file "$keys/signers.json" --kid demo-local --generate "$keys/demo-local.pem" \
        --valid-from 2000-01-01T00:00:00Z >/dev/null
fi
# The development Finance stand-in's key (kind finance: it verifies ledger proofs, never
# checkpoints), and a key that no registry trusts, for the demo's bad proof.
if ! grep -q '"kind": "finance"' "$keys/signers.json"; then
    "$bin" signers add --file "$keys/signers.json" --kind finance --kid demo-finance \
        --generate "$keys/demo-finance.pem" --valid-from 2000-01-01T00:00:00Z >/dev/null
fi
if [[ ! -f "$keys/demo-rogue.pem" ]]; then
    "$bin" signers add --file "$keys/untrusted.json" --kind finance --kid demo-rogue \
        --generate "$keys/demo-rogue.pem" --valid-from 2000-01-01T00:00:00Z >/dev/null
fi
export AUDIT_SIGNING_KEY_FILE="$keys/demo-local.pem" AUDIT_SIGNER_KID=demo-local SIGNERS_FILE="$keys/signers.json"

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

port=$OPS_PORT
for processor in totals audit-chain audit-verifier submissions policy settlement; do
    EVALSTREAM_OPS_LISTEN="127.0.0.1:$port" EVALSTREAM_INSTANCE_ID="demo-$processor" \
        "$bin" run "$processor" 2>"$logs/$processor.log" &
    pids+=($!)
    echo "== started $processor (pid $!, ops http://127.0.0.1:$port, log $logs/$processor.log)"
    port=$((port + 1))
done

echo "== producing sample events"
# The totals sample has one invalid event on purpose: an empty key is valid Avro, so it is
# produced, and the processor dead-letters it with its reason.
"$bin" produce totals.input --file deploy/local/sample/totals.input.jsonl --key-field key
"$bin" produce audit.events --file deploy/local/sample/audit.events.jsonl --key-field subject
"$bin" produce eval.submissions --file deploy/local/sample/eval.submissions.jsonl --key-field submission_id
"$bin" produce policy.decisions --file deploy/local/sample/policy.decisions.jsonl --key-field request_id

count_allocations() { # state -> how many allocations the settlement processor has in it
    "$bin" alloc list --state "$1" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])' 2>/dev/null || echo 0
}
echo "== waiting for SentinelNet's decisions to be applied (two allocations pending_finance)"
for _ in $(seq 1 120); do
    (( $(count_allocations pending_finance) >= 2 )) && break
    sleep 0.5
done
echo "== Finance settles them (development stand-in signing ledger proofs; one signed with an untrusted key)"
settlements=.evalstream/settlements.jsonl
{
    "$bin" finance sign-settlement --key "$keys/demo-finance.pem" --kid demo-finance --ledger-entry-id le-demo-1 \
        --allocation-id sub-demo-1:allocation --amount-minor 12000 --currency EUR --settled-at 2026-11-27T10:00:00Z
    "$bin" finance sign-settlement --key "$keys/demo-rogue.pem" --kid demo-rogue --ledger-entry-id le-demo-forged \
        --allocation-id sub-demo-3:allocation --amount-minor 48000 --currency EUR --settled-at 2026-11-27T10:00:30Z
    "$bin" finance sign-settlement --key "$keys/demo-finance.pem" --kid demo-finance --ledger-entry-id le-demo-3 \
        --allocation-id sub-demo-3:allocation --amount-minor 48000 --currency EUR --settled-at 2026-11-27T10:01:00Z
} > "$settlements"
"$bin" produce finance.settlements --file "$settlements" --key-field allocation_id
for _ in $(seq 1 120); do
    (( $(count_allocations settled) >= 2 )) && break
    sleep 0.5
done

echo "== waiting for the processors to commit"
expected=$(grep -cv '^\s*\(#\|$\)' deploy/local/sample/totals.input.jsonl)
for _ in $(seq 1 120); do
    out=$("$bin" consume totals.output --from-beginning --format json 2>/dev/null | wc -l)
    dlq=$("$bin" consume totals.input.dlq --from-beginning --format json 2>/dev/null | wc -l)
    if (( out + dlq >= expected )); then break; fi
    sleep 0.5
done

echo "== totals.output (running totals per key)"
"$bin" consume totals.output --from-beginning --format text
echo "== DLQ"
"$bin" dlq list totals.input
echo "== eval.promotions (the outcome of every promotion request: pending_policy, then promoted or denied)"
"$bin" consume eval.promotions --from-beginning --format json \
    | python3 -c 'import json,sys
for l in sys.stdin:
    o = json.loads(l)["value"]
    print("{:<22} {:<15} policy {}  {}".format(o["request_id"], o["outcome"], o["policy_version"] or "-", ", ".join(o["reasons"])))'
echo "== evalstream alloc list (allocations by state, from the settlement processor's state)"
"$bin" alloc list
echo "== finance.settlements DLQ (the settlement with the untrusted signature)"
"$bin" dlq list finance.settlements
echo "== evalstream finance verify-proof --ledger-entry-id le-demo-forged (the runbook's verify_ledger_proof.sh)"
"$bin" finance verify-proof --ledger-entry-id le-demo-forged || true
promoted=$("$bin" consume eval.promotions --from-beginning --format json 2>/dev/null | grep -c '"promoted"' || true)
denied=$("$bin" consume eval.promotions --from-beginning --format json 2>/dev/null | grep -c '"denied"' || true)
settled=$(count_allocations settled)
bad_proofs=$("$bin" dlq list finance.settlements 2>/dev/null | grep -c 'bad_proof' || true)
echo "== audit.chain (hash-chained entries and signed checkpoints; the duplicate was not chained)"
for _ in $(seq 1 40); do
    n=$("$bin" consume audit.verifications --from-beginning --format json 2>/dev/null | grep -c '"ok"' || true)
    if (( n > 0 )); then break; fi
    sleep 0.5
done
"$bin" consume audit.chain --from-beginning --format text | cut -c1-200
echo "== audit.verifications (from the audit-verifier processor)"
"$bin" consume audit.verifications --from-beginning --format text | cut -c1-200
echo "== evalstream audit verify (offline, the runbook's audit-verify)"
audit_ok=0
# The newest entries are covered by the idle checkpoint within a second or two: retry briefly.
for _ in $(seq 1 10); do
    if "$bin" audit verify --signers "$SIGNERS_FILE" >/dev/null 2>&1; then audit_ok=1; break; fi
    sleep 1
done
"$bin" audit verify --signers "$SIGNERS_FILE" || true
echo "== /ready"
http_get() { python3 -c 'import sys,urllib.request as u
try: print(u.urlopen(sys.argv[1], timeout=5).read().decode())
except Exception as e: print(getattr(e, "read", lambda: str(e).encode())().decode())' "$1"; }
http_get "http://127.0.0.1:$OPS_PORT/ready"
echo
echo "== metrics"
http_get "http://127.0.0.1:$OPS_PORT/metrics" | grep -E '^evalstream_(records|transactions)_' || true

if (( out + dlq < expected )); then
    echo "demo: expected $expected results, saw $out outputs and $dlq dead letters" >&2
    exit 1
fi
if (( promoted != 1 || denied != 1 || settled != 2 || bad_proofs != 1 )); then
    echo "demo: expected 1 promotion, 1 denial, 2 settled allocations and 1 bad proof in the DLQ; saw $promoted, $denied, $settled, $bad_proofs" >&2
    exit 1
fi
if (( audit_ok == 0 )); then
    echo "demo: the audit chain did not verify" >&2
    exit 1
fi
if (( once == 0 )); then
    echo "== processors keep running; produce more with: $bin produce totals.input --file FILE (Ctrl-C stops)"
    wait
fi
