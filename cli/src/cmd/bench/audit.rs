//! The audit-chain benchmarks of `evalstream bench`.

use std::sync::Arc;
use std::time::Instant;

use evalstream_audit::chain::{AuditEventJson, ChainHead};
use evalstream_audit::merkle::CompactRange;
use evalstream_audit::records::{ChainEntry, ChainRecord, ChainRecordBody, CHAIN_RECORD_SCHEMA};
use evalstream_audit::signer::LocalKeySigner;
use evalstream_audit::verify::ChainVerifier;
use evalstream_audit_chain::{AuditChain, ChainSettings};
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::reader::TopicReader;

use super::{median, prepare, Args, Input};

/// Audit event `i` with a JSON payload carrying `filler` (so records are about `--record-bytes`).
pub(super) fn event(i: u64, filler: &str) -> AuditEventJson {
    let payload = serde_json::json!({ "n": i, "score": (i % 1000) as f64 / 8.0, "note": filler });
    AuditEventJson {
        event_id: format!("bench-{i}"),
        event_type: "eval.submission_accepted".into(),
        actor: format!("svc-{}", i % 7),
        subject: format!("model-{}", i % 50),
        occurred_at: 1_790_000_000_000 + i as i64,
        payload: payload.to_string(),
    }
}

/// An audit-chain processor signing with a throw-away local key.
pub(super) fn chain_processor(cfg: &RuntimeConfig) -> anyhow::Result<AuditChain> {
    let key = std::env::temp_dir().join(format!("{}bench-key.pem", cfg.topic_prefix));
    let signer = LocalKeySigner::generate(&key)?;
    let _ = std::fs::remove_file(&key);
    Ok(AuditChain::new(ChainSettings::default(), Some(Arc::new(signer)), None))
}

/// ns/event of canonicalize + entry hash + Merkle append + ChainRecord encode, in process.
pub(super) fn hash_cost(codec: &Codec, args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let filler = "x".repeat(args.record_bytes.saturating_sub(300));
    let events: Vec<AuditEventJson> =
        (0..args.records.min(200_000)).map(|i| event(i, &filler)).collect();
    let mut per_event = Vec::new();
    for run in 0..args.runs {
        let mut head = ChainHead::genesis(0);
        let mut range = CompactRange::new();
        let mut bytes_out = 0usize;
        let started = Instant::now();
        for (i, e) in events.iter().enumerate() {
            let canonical = e.canonical_bytes()?;
            let appended = head.append(&canonical)?;
            range.append(&appended.entry_hash)?;
            let entry = ChainEntry::new(&appended, e, canonical, 0, i as i64);
            let record = ChainRecord { partition: 0, body: ChainRecordBody::Entry(entry) };
            bytes_out +=
                codec.encode("audit.chain", CHAIN_RECORD_SCHEMA, &record.to_avro()?)?.len();
        }
        let ns = started.elapsed().as_nanos() as f64 / events.len() as f64;
        eprintln!(
            "run {}: {ns:.0} ns/event ({} events, {} bytes out)",
            run + 1,
            events.len(),
            bytes_out
        );
        per_event.push(ns);
    }
    println!(
        "canonicalize + hash + merkle + encode: median {:.0} ns/event over {} runs of {} events",
        median(&per_event),
        args.runs,
        events.len()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// (raw consume, audit verify) records/s over the same `audit.chain` range, built first by
/// running the audit-chain processor (not timed).
pub(super) fn verify_rates(
    base: &RuntimeConfig,
    codec: &Codec,
    args: &Args,
) -> anyhow::Result<(f64, f64)> {
    let cfg = prepare(base, codec, args, Input::Audit)?;
    super::bench_eos(&cfg, codec, args, "audit.events", "audit-chain", chain_processor(&cfg)?)?;
    let reader = TopicReader::new(&cfg, codec);
    let partitions = args.partitions;

    let started = Instant::now();
    let mut raw = 0u64;
    for p in 0..partitions {
        reader.scan("audit.chain", p, 0, |_| {
            raw += 1;
            true
        })?;
    }
    let raw_rate = raw as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut verified = 0u64;
    let mut failures = 0usize;
    for p in 0..partitions {
        let mut v = ChainVerifier::new(p as u32);
        reader.scan("audit.chain", p, 0, |r| {
            verified += 1;
            let results = match r.value.as_deref().map(|b| ChainRecord::decode(codec, b)) {
                Some(Ok(rec)) => v.feed(r.offset, &rec, None),
                Some(Err(e)) => v.feed_undecodable(r.offset, &e),
                None => v.feed_undecodable(r.offset, "no value"),
            };
            // Without a registry every signed checkpoint is unknown_signer; count only chain
            // failures here (signature checks are part of the rate all the same).
            failures += results
                .iter()
                .filter(|x| x.status.as_str() == "hash_mismatch" || x.status.as_str() == "gap")
                .count();
            true
        })?;
    }
    let verify_rate = verified as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(failures == 0, "the benchmark chain did not verify ({failures} failures)");
    anyhow::ensure!(raw == verified, "raw read {raw} records, verify {verified}");
    Ok((raw_rate, verify_rate))
}
