//! Shared machinery of the audit-chain tests: events, a local signing key and registry, and the
//! independent reading of `audit.chain` / `audit.verifications`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// Every record of `audit.chain`, decoded, per partition in offset order.
pub fn read_chain(codec: &Codec, topic: &str) -> BTreeMap<i32, Vec<(i64, ChainRecord)>> {
    let mut out: BTreeMap<i32, Vec<(i64, ChainRecord)>> = BTreeMap::new();
    for r in it::read_topic(topic) {
        let rec =
            ChainRecord::decode(codec, r.value.as_deref().expect("value")).expect("chain record");
        out.entry(r.partition).or_default().push((r.offset, rec));
    }
    out
}

/// Every verification result, per partition in order.
pub fn read_verifications(codec: &Codec, topic: &str) -> BTreeMap<i32, Vec<VerificationResult>> {
    let mut out: BTreeMap<i32, Vec<VerificationResult>> = BTreeMap::new();
    for r in it::read_topic(topic) {
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
