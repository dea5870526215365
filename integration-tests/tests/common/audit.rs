//! Shared machinery of the audit-chain tests: events, a local signing key and registry, and the
//! independent reading of `audit.chain` / `audit.verifications`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use evalstream_audit::chain::AuditEventJson;
use evalstream_audit::records::{ChainRecord, ChainRecordBody, VerificationResult};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;

/// Encodes an `AuditEvent`.
pub fn encode_event(codec: &Codec, topic: &str, id: &str, i: u64) -> Vec<u8> {
    let event = AuditEventJson {
        event_id: id.into(),
        event_type: "eval.submission_accepted".into(),
        actor: format!("svc-{}", i % 7),
        subject: format!("model-{}", i % 50),
        occurred_at: 1_790_000_000_000 + i as i64,
        payload: format!(r#"{{"n":{i},"note":"événement {i}","amount":{}.5}}"#, i % 1000),
    };
    codec.encode_record(topic, &event).expect("encode AuditEvent")
}

/// A fresh local signing key registered as `kid` in `dir/signers.json` (valid since 2000).
/// Returns (key file, signers file).
pub fn local_signer(dir: &Path, kid: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{kid}.pem"));
    let signers = dir.join("signers.json");
    it::run(
        it::evalstream().args([
            "signers",
            "add",
            "--file",
            signers.to_str().unwrap(),
            "--kid",
            kid,
            "--generate",
            key.to_str().unwrap(),
            "--valid-from",
            "2000-01-01T00:00:00Z",
        ]),
        None,
    )
    .assert_success();
    (key, signers)
}

/// A temporary directory for keys and registries.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(it::unique_name(name));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Waits (bounded) until the tail of every chain is under a signed checkpoint: the idle
/// punctuation checkpoints and signs what was chained last.
pub fn wait_tail_signed(codec: &Codec, prefix: &str, partitions: i32) {
    it::wait_until("every chain's tail to be signed", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(300));
        let chain = read_chain(codec, &format!("{prefix}audit.chain"));
        (0..partitions).all(|p| {
            let recs = chain.get(&p).map(Vec::as_slice).unwrap_or_default();
            let entries = entries(recs).len() as u64;
            recs.iter().any(|(_, r)| {
                matches!(&r.body, ChainRecordBody::Checkpoint(c)
                    if c.tree_size == entries && c.signature.is_some())
            })
        })
    });
}

/// The committed records of `topic` (`<prefix><name>`), written by the processor whose changelog
/// is `<prefix>evalstream.<processor>.changelog`: on Kafka what `read_committed` shows, on a
/// broker leaking aborted records the marker join (see `common::eos::MarkerJoin`).
fn committed_records(codec: &Codec, topic: &str, name: &str, processor: &str) -> Vec<it::Record> {
    let prefix = topic.strip_suffix(name).expect("topic is <prefix><name>");
    let committed =
        super::eos::committed_filter(codec, &format!("{prefix}evalstream.{processor}.changelog"));
    it::read_topic_stable(topic).into_iter().filter(|r| committed(r)).collect()
}

/// Every committed record of `audit.chain`, decoded, per partition in offset order.
pub fn read_chain(codec: &Codec, topic: &str) -> BTreeMap<i32, Vec<(i64, ChainRecord)>> {
    let mut out: BTreeMap<i32, Vec<(i64, ChainRecord)>> = BTreeMap::new();
    for r in committed_records(codec, topic, "audit.chain", "audit-chain") {
        let rec =
            ChainRecord::decode(codec, r.value.as_deref().expect("value")).expect("chain record");
        out.entry(r.partition).or_default().push((r.offset, rec));
    }
    out
}

/// Every committed verification result, per partition in order.
pub fn read_verifications(codec: &Codec, topic: &str) -> BTreeMap<i32, Vec<VerificationResult>> {
    let mut out: BTreeMap<i32, Vec<VerificationResult>> = BTreeMap::new();
    for r in committed_records(codec, topic, "audit.verifications", "audit-verifier") {
        let d = codec.decode(r.value.as_deref().expect("value")).expect("decodes");
        out.entry(r.partition)
            .or_default()
            .push(VerificationResult::from_avro(&d.value).expect("result"));
    }
    out
}

/// Entries of a chain partition (in offset order).
pub fn entries(records: &[(i64, ChainRecord)]) -> Vec<&evalstream_audit::records::ChainEntry> {
    records
        .iter()
        .filter_map(|(_, r)| match &r.body {
            ChainRecordBody::Entry(e) => Some(e),
            _ => None,
        })
        .collect()
}
