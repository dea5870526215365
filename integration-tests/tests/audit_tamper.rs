//! Tamper detection and key rotation.
//!
//! * Forged records produced straight into `audit.chain` — a changed payload, a re-linked forged
//!   entry whose checkpoint has no valid signature, a skipped sequence — are each detected, and
//!   both the audit-verifier processor and `evalstream audit verify` name the first failing
//!   sequence.
//! * A chain signed with key A, rotated to key B mid-stream, verifies with both keys in the
//!   registry; with A removed, A's checkpoints report `unknown_signer`.
#![cfg(feature = "broker")]

mod common;

use std::path::Path;
use std::time::Duration;

use common::audit;
use common::eos::Instance;
use evalstream_audit::chain::entry_hash;
use evalstream_audit::merkle::CompactRange;
use evalstream_audit::records::{
    ChainEntry, ChainRecord, ChainRecordBody, Checkpoint, VerificationResult, VerificationStatus,
    CHAIN_RECORD_SCHEMA,
};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;

const PARTITIONS: i32 = 4;

fn setup(name: &str) -> (String, Codec) {
    let prefix = format!("{}.", it::unique_name(name));
    for t in ["audit.events", "audit.chain", "audit.verifications"] {
        it::create_topic(&format!("{prefix}{t}"), PARTITIONS);
    }
    (prefix, Codec::from_env().expect("codec"))
}

fn produce(codec: &Codec, prefix: &str, range: std::ops::Range<u64>) {
    let topic = format!("{prefix}audit.events");
    let recs: Vec<it::RawRecord> = range
        .map(|i| {
            let id = format!("ev-{i}");
            it::RawRecord::new(audit::encode_event(codec, &topic, &id, i))
                .key(id)
                .partition((i % PARTITIONS as u64) as i32)
        })
        .collect();
    it::produce_raw(&topic, &recs);
}

fn wait_group(group: &str, topic: &str) {
    let expected = common::eos::next_offsets(topic);
    it::wait_until(&format!("{group} to commit {topic}"), Duration::from_secs(180), || {
        std::thread::sleep(Duration::from_millis(300));
        common::eos::group_committed(group, topic, &expected)
    });
}

/// Runs audit-chain signing with `key` until `audit.events` is chained and checkpointed.
fn run_chain(prefix: &str, key: &Path, kid: &str) {
    let mut chain = Instance::new("audit-chain", prefix, "c0")
        .env("AUDIT_SIGNING_KEY_FILE", key.to_str().unwrap())
        .env("AUDIT_SIGNER_KID", kid);
    chain.start();
    wait_group(&format!("{prefix}evalstream.audit-chain"), &format!("{prefix}audit.events"));
    // The idle punctuation checkpoints and signs the tail.
    audit::wait_tail_signed(&Codec::from_env().expect("codec"), prefix, PARTITIONS);
    chain.stop();
}

/// Runs audit-verifier over the whole chain with `signers`, returns its results per partition.
fn run_verifier(
    prefix: &str,
    codec: &Codec,
    signers: &Path,
) -> std::collections::BTreeMap<i32, Vec<VerificationResult>> {
    let mut v = Instance::new("audit-verifier", prefix, "v0")
        .env("SIGNERS_FILE", signers.to_str().unwrap());
    v.start();
    wait_group(&format!("{prefix}evalstream.audit-verifier"), &format!("{prefix}audit.chain"));
    v.stop();
    audit::read_verifications(codec, &format!("{prefix}audit.verifications"))
}

fn produce_chain_record(codec: &Codec, prefix: &str, rec: &ChainRecord) {
    let topic = format!("{prefix}audit.chain");
    let bytes = codec.encode(&topic, CHAIN_RECORD_SCHEMA, &rec.to_avro().unwrap()).unwrap();
    it::produce_raw(&topic, &[it::RawRecord::new(bytes).partition(rec.partition as i32)]);
}

fn forged_entry(last: &ChainEntry, seq: u64, prev: [u8; 32], canonical: &[u8]) -> ChainEntry {
    let v: serde_json::Value = serde_json::from_slice(canonical).unwrap();
    ChainEntry {
        seq,
        event_id: v["event_id"].as_str().unwrap().to_string(),
        event_type: v["type"].as_str().unwrap().to_string(),
        occurred_at: v["occurred_at"].as_i64().unwrap(),
        prev_hash: prev,
        entry_hash: entry_hash(&prev, seq, canonical),
        canonical: canonical.to_vec(),
        source_partition: last.source_partition,
        source_offset: last.source_offset + 1,
    }
}

fn failure(rs: &[VerificationResult], status: VerificationStatus) -> Option<&VerificationResult> {
    rs.iter().find(|r| r.status == status)
}

#[test]
fn forged_records_are_detected_with_their_first_failing_sequence() {
    let (prefix, codec) = setup("tamper");
    let dir = audit::temp_dir("tamper");
    let (key, signers) = audit::local_signer(&dir, "tamper-a");
    produce(&codec, &prefix, 0..2000);
    run_chain(&prefix, &key, "tamper-a");

    let chain = audit::read_chain(&codec, &format!("{prefix}audit.chain"));
    let mut expected = Vec::new();
    for p in 0..3 {
        let entries = audit::entries(&chain[&p]);
        let last = entries.last().unwrap();
        let next = last.seq + 1;
        let forged_canonical = br#"{"actor":"mallory","event_id":"forged","occurred_at":1790000009999,"payload":{"n":1},"subject":"model-1","type":"eval.promotion_approved"}"#;
        let rec = match p {
            // Changed payload: a copy of the last entry with other canonical bytes but the old hash.
            0 => {
                let mut e = forged_entry(last, next, last.entry_hash, &last.canonical);
                e.canonical = forged_canonical.to_vec();
                e.event_id = "forged".into();
                e.event_type = "eval.promotion_approved".into();
                e.occurred_at = 1790000009999;
                (VerificationStatus::HashMismatch, vec![ChainRecordBody::Entry(e)])
            }
            // Re-linked forged entry (hashes consistent) and a checkpoint over it that no
            // registered key signed.
            1 => {
                let e = forged_entry(last, next, last.entry_hash, forged_canonical);
                let hashes: Vec<[u8; 32]> =
                    entries.iter().map(|x| x.entry_hash).chain([e.entry_hash]).collect();
                let range = CompactRange::from_entry_hashes(&hashes).unwrap();
                let cp = Checkpoint::pending(&range, e.entry_hash, e.occurred_at).with_signature(
                    "tamper-a".into(),
                    "local".into(),
                    vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],
                );
                (
                    VerificationStatus::SignatureInvalid,
                    vec![ChainRecordBody::Entry(e), ChainRecordBody::Checkpoint(cp)],
                )
            }
            // Skipped sequence.
            _ => {
                let e = forged_entry(last, next + 1, last.entry_hash, forged_canonical);
                (VerificationStatus::Gap, vec![ChainRecordBody::Entry(e)])
            }
        };
        for body in rec.1 {
            produce_chain_record(&codec, &prefix, &ChainRecord { partition: p as u32, body });
        }
        expected.push((p, rec.0, next));
    }

    let results = run_verifier(&prefix, &codec, &signers);
    for (p, status, seq) in &expected {
        let rs = &results[p];
        let f = failure(rs, *status)
            .unwrap_or_else(|| panic!("partition {p}: no {status:?} in {rs:?}"));
        assert_eq!(f.first_failing_seq, Some(*seq), "partition {p}: {f:?}");
        // Reported once.
        assert_eq!(
            rs.iter().filter(|r| r.status == *status && r.first_failing_seq == Some(*seq)).count(),
            1
        );
    }
    // The untouched partition verifies ok throughout.
    assert!(results[&3].iter().all(|r| matches!(
        r.status,
        VerificationStatus::Ok | VerificationStatus::PendingSignature
    )));

    // The operator command names the same first failing sequence and exits non-zero.
    for (p, status, seq) in &expected {
        let out = it::run(
            it::evalstream()
                .args([
                    "audit",
                    "verify",
                    "--partition",
                    &p.to_string(),
                    "--signers",
                    signers.to_str().unwrap(),
                    "--json",
                ])
                .env("EVALSTREAM_TOPIC_PREFIX", &prefix),
            None,
        );
        assert!(!out.status.success(), "audit verify must fail on partition {p}: {out}");
        let text = out.stdout.to_string();
        assert!(text.contains(status.as_str()), "partition {p}: {status:?} not named: {text}");
        assert!(
            text.contains(&format!("\"first_failing_seq\":{seq}"))
                || text.contains(&format!("\"first_failing_seq\": {seq}")),
            "partition {p}: seq {seq} not named: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rotation_verifies_with_both_keys_and_unknown_signer_without_the_old_one() {
    let (prefix, codec) = setup("rotate");
    let dir = audit::temp_dir("rotate");
    let (key_a, signers) = audit::local_signer(&dir, "rot-a");
    produce(&codec, &prefix, 0..800);
    run_chain(&prefix, &key_a, "rot-a");

    // Rotate: B from a time after every A checkpoint (event times of the first batch) and
    // before the second batch's.
    let key_b = dir.join("rot-b.pem");
    it::run(
        it::evalstream().args([
            "signers",
            "rotate",
            "--file",
            signers.to_str().unwrap(),
            "--kid",
            "rot-b",
            "--generate",
            key_b.to_str().unwrap(),
            "--at",
            "2026-09-22T00:00:00Z",
        ]),
        None,
    )
    .assert_success();
    // Second batch: occurred_at after the switch-over (1_790_000_000_000 + i ms is 2026-09-21;
    // i >= 200_000_000 moves past 2026-09-22T00:00Z).
    produce(&codec, &prefix, 300_000_000..300_000_800);
    run_chain(&prefix, &key_b, "rot-b");

    let results = run_verifier(&prefix, &codec, &signers);
    let chain = audit::read_chain(&codec, &format!("{prefix}audit.chain"));
    for p in 0..PARTITIONS {
        let rs = &results[&p];
        assert!(
            rs.iter().all(|r| matches!(
                r.status,
                VerificationStatus::Ok | VerificationStatus::PendingSignature
            )),
            "partition {p}: {rs:?}"
        );
        let kids: std::collections::HashSet<String> = chain[&p]
            .iter()
            .filter_map(|(_, r)| match &r.body {
                ChainRecordBody::Checkpoint(c) => c.kid.clone(),
                _ => None,
            })
            .collect();
        assert!(
            kids.contains("rot-a") && kids.contains("rot-b"),
            "partition {p}: signed by {kids:?}"
        );
    }

    // Without A in the registry, A's checkpoints are unknown_signer (and B's still verify).
    let only_b = dir.join("only-b.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&signers).unwrap()).unwrap();
    doc["signers"].as_array_mut().unwrap().retain(|s| s["kid"] != "rot-a");
    std::fs::write(&only_b, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = it::run(
        it::evalstream()
            .args(["audit", "verify", "--signers", only_b.to_str().unwrap(), "--json"])
            .env("EVALSTREAM_TOPIC_PREFIX", &prefix),
        None,
    );
    assert!(!out.status.success(), "{out}");
    assert!(out.stdout.contains("unknown_signer"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
