//! The audit chain's per-event path without a broker, for instruction counts under callgrind.
//!
//! ```text
//!  N AuditEvent records, encoded once (outside the measured part)
//!        │  measured: chain_events()
//!        ▼
//!  Codec::frame ─► AuditChain::process ─► Output::encode of every output
//! ```
//!
//! That is what the engine does per record around the processor (minus Kafka), so the inclusive
//! cost of `chain_events` divided by N is the chain's instructions per event:
//!
//! ```text
//! cargo build --release --example chain_profile -p evalstream-audit-chain
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     $CARGO_TARGET_DIR/release/examples/chain_profile 5000 bench
//! callgrind_annotate --inclusive=yes cg.out | head -60
//! ```
//!
//! Payloads: `bench` is the shape `evalstream bench --suite audit-chain` writes (three members,
//! one ~1 KiB string); `structured` is ~1 KiB of nested objects, arrays, numbers, escapes and
//! non-ASCII text, the shape of a real promotion or allocation event.

use std::hint::black_box;

use sha2::{Digest, Sha256};
use std::time::Instant;

use evalstream_audit::chain::{AuditEventJson, AUDIT_EVENT_SCHEMA};
use evalstream_audit_chain::{AuditChain, ChainSettings, INPUT};
use evalstream_runtime::codec::{Codec, SchemaStore};
use evalstream_runtime::processor::{Context, Input, Processor};
use evalstream_runtime::state::StateView;

fn payload(kind: &str, i: u64) -> String {
    match kind {
        "bench" => serde_json::json!({
            "n": i,
            "score": (i % 1000) as f64 / 8.0,
            "note": "x".repeat(984),
        })
        .to_string(),
        _ => {
            let metrics: Vec<serde_json::Value> = (0..12)
                .map(|m| {
                    serde_json::json!({
                        "name": format!("metric_{m}"),
                        "value": (i as f64 * 0.37 + m as f64) / 7.0,
                        "threshold": 0.5 + m as f64 / 100.0,
                        "passed": m % 3 != 0,
                    })
                })
                .collect();
            serde_json::json!({
                "submission": {"id": format!("sub-{i}"), "model": "Modèle «α»", "version": i % 97},
                "metrics": metrics,
                "reason": "risk \"high\"\nreview by policy team ✓",
                "tags": ["eval", "gpu", "région-eu", "😀"],
                "limits": {"max_tokens": 4096, "temperature": 0.7, "budget_usd": 1.5e3},
            })
            .to_string()
        }
    }
}

fn event(kind: &str, i: u64) -> AuditEventJson {
    AuditEventJson {
        event_id: format!("bench-{i}"),
        event_type: "eval.submission_accepted".into(),
        actor: format!("svc-{}", i % 7),
        subject: format!("model-{}", i % 50),
        occurred_at: 1_790_000_000_000 + i as i64,
        payload: payload(kind, i),
    }
}

/// Everything the engine does per record around the processor, for every input.
#[inline(never)]
fn chain_events(codec: &Codec, chain: &mut AuditChain, inputs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut state = StateView::new();
    let mut outputs = Vec::with_capacity(inputs.len() + inputs.len() / 500);
    for (offset, bytes) in inputs.iter().enumerate() {
        let framed = codec.frame(bytes).expect("frame");
        let input = Input::framed(INPUT, 0, offset as i64, &framed);
        let mut ctx = Context::for_test(&mut state);
        chain.process(&input, &mut ctx).expect("process");
        for out in ctx.take_outputs() {
            outputs.push(out.encode(codec, &out.topic).expect("encode"));
        }
    }
    outputs
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map(|a| a.parse().expect("N")).unwrap_or(5000);
    let kind = args.next().unwrap_or_else(|| "bench".into());
    let codec = Codec::new(SchemaStore::bundled().expect("schemas"), None).expect("codec");
    let inputs: Vec<Vec<u8>> = (0..n)
        .map(|i| codec.encode_record(INPUT, &event(&kind, i)).expect("encode input"))
        .collect();
    assert!(inputs.iter().all(|b| !b.is_empty()), "{AUDIT_EVENT_SCHEMA}");
    let mean_len = inputs.iter().map(Vec::len).sum::<usize>() / inputs.len().max(1);
    // No signer: checkpoints stay pending (signing is one call per 1 000 entries either way).
    let mut chain = AuditChain::new(ChainSettings::default(), None, None);
    let started = Instant::now();
    let outputs = black_box(chain_events(&codec, &mut chain, &inputs));
    let elapsed = started.elapsed();
    // A digest of every output record's bytes: two builds that chain identically print the same.
    let mut digest = Sha256::new();
    for out in &outputs {
        digest.update((out.len() as u64).to_be_bytes());
        digest.update(out);
    }
    println!(
        "{n} {kind} events of {mean_len} bytes: {} outputs, {} bytes, sha256 {}, {:.0} ns/event",
        outputs.len(),
        outputs.iter().map(Vec::len).sum::<usize>(),
        hex::encode(digest.finalize()),
        elapsed.as_nanos() as f64 / n as f64
    );
}
