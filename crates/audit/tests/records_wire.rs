//! The typed records write the same bytes as the hand-built Avro values they replaced.
//!
//! `legacy` below is the previous `to_avro` code, kept verbatim as the reference: for random
//! chain entries, checkpoints (pending and signed) and verification results, the codec's bytes
//! of the old value and of the new one are identical, and the new reader returns the record.

use apache_avro::types::Value;
use evalstream_audit::records::{
    ChainEntry, ChainRecord, ChainRecordBody, Checkpoint, CheckpointStatus, VerificationResult,
    VerificationStatus, CHAIN_RECORD_SCHEMA, VERIFICATION_RESULT_SCHEMA,
};
use evalstream_runtime::codec::{Codec, SchemaStore};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

mod legacy {
    use super::*;

    fn null() -> Value {
        Value::Union(0, Box::new(Value::Null))
    }
    fn some(v: Value) -> Value {
        Value::Union(1, Box::new(v))
    }
    fn opt<T>(v: &Option<T>, f: impl FnOnce(&T) -> Value) -> Value {
        v.as_ref().map(|x| some(f(x))).unwrap_or_else(null)
    }
    fn bytes(h: &[u8]) -> Value {
        Value::Bytes(h.to_vec())
    }

    pub fn chain_record(r: &ChainRecord) -> Value {
        let (kind, entry, checkpoint) = match &r.body {
            ChainRecordBody::Entry(e) => (Value::Enum(0, "entry".into()), some(entry(e)), null()),
            ChainRecordBody::Checkpoint(c) => {
                (Value::Enum(1, "checkpoint".into()), null(), some(checkpoint(c)))
            }
        };
        Value::Record(vec![
            ("partition".into(), Value::Int(r.partition as i32)),
            ("kind".into(), kind),
            ("entry".into(), entry),
            ("checkpoint".into(), checkpoint),
        ])
    }

    fn entry(e: &ChainEntry) -> Value {
        Value::Record(vec![
            ("seq".into(), Value::Long(e.seq as i64)),
            ("event_id".into(), Value::String(e.event_id.clone())),
            ("event_type".into(), Value::String(e.event_type.clone())),
            ("occurred_at".into(), Value::TimestampMillis(e.occurred_at)),
            ("prev_hash".into(), bytes(&e.prev_hash)),
            ("entry_hash".into(), bytes(&e.entry_hash)),
            ("canonical".into(), bytes(&e.canonical)),
            ("source_partition".into(), Value::Int(e.source_partition as i32)),
            ("source_offset".into(), Value::Long(e.source_offset)),
        ])
    }

    fn checkpoint(c: &Checkpoint) -> Value {
        let status = match c.status {
            CheckpointStatus::Signed => Value::Enum(0, "signed".into()),
            CheckpointStatus::PendingSignature => Value::Enum(1, "pending_signature".into()),
        };
        Value::Record(vec![
            ("tree_size".into(), Value::Long(c.tree_size as i64)),
            ("root".into(), bytes(&c.root)),
            ("head_hash".into(), bytes(&c.head_hash)),
            ("time_ms".into(), Value::TimestampMillis(c.time_ms)),
            ("frontier".into(), Value::Array(c.frontier.iter().map(|h| bytes(h)).collect())),
            ("status".into(), status),
            ("kid".into(), opt(&c.kid, |k| Value::String(k.clone()))),
            ("signature".into(), opt(&c.signature, |s| bytes(s))),
            ("signer_kind".into(), opt(&c.signer_kind, |k| Value::String(k.clone()))),
        ])
    }

    pub fn verification(r: &VerificationResult) -> Value {
        let index = [
            VerificationStatus::Ok,
            VerificationStatus::HashMismatch,
            VerificationStatus::Gap,
            VerificationStatus::SignatureInvalid,
            VerificationStatus::UnknownSigner,
            VerificationStatus::PendingSignature,
        ]
        .iter()
        .position(|s| *s == r.status)
        .unwrap();
        Value::Record(vec![
            ("partition".into(), Value::Int(r.partition as i32)),
            ("from_seq".into(), Value::Long(r.from_seq as i64)),
            ("to_seq".into(), Value::Long(r.to_seq as i64)),
            ("from_offset".into(), Value::Long(r.from_offset)),
            ("to_offset".into(), Value::Long(r.to_offset)),
            ("status".into(), Value::Enum(index as u32, r.status.as_str().into())),
            ("first_failing_seq".into(), opt(&r.first_failing_seq, |s| Value::Long(*s as i64))),
            ("event_id".into(), opt(&r.event_id, |e| Value::String(e.clone()))),
            ("offset".into(), opt(&r.offset, |o| Value::Long(*o))),
            ("detail".into(), Value::String(r.detail.clone())),
        ])
    }
}

fn codec() -> Codec {
    Codec::new(SchemaStore::bundled().unwrap(), None).unwrap()
}

fn hash() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9._é∑-]{0,16}"
}

fn entry() -> impl Strategy<Value = ChainEntry> {
    (
        0..i64::MAX as u64,
        text(),
        text(),
        any::<i64>(),
        hash(),
        hash(),
        proptest::collection::vec(any::<u8>(), 0..200),
        0..i32::MAX as u32,
        any::<i64>(),
    )
        .prop_map(|(seq, id, ty, at, prev, hash, canonical, sp, so)| ChainEntry {
            seq,
            event_id: id,
            event_type: ty,
            occurred_at: at,
            prev_hash: prev,
            entry_hash: hash,
            canonical,
            source_partition: sp,
            source_offset: so,
        })
}

fn checkpoint() -> impl Strategy<Value = Checkpoint> {
    (
        0..i64::MAX as u64,
        hash(),
        hash(),
        any::<i64>(),
        proptest::collection::vec(hash(), 0..6),
        proptest::option::of((text(), proptest::collection::vec(any::<u8>(), 0..72), text())),
    )
        .prop_map(|(tree_size, root, head_hash, time_ms, frontier, signed)| {
            let cp = Checkpoint {
                tree_size,
                root,
                head_hash,
                time_ms,
                frontier,
                status: CheckpointStatus::PendingSignature,
                kid: None,
                signature: None,
                signer_kind: None,
            };
            match signed {
                Some((kid, sig, kind)) => cp.with_signature(kid, kind, sig),
                None => cp,
            }
        })
}

fn verification() -> impl Strategy<Value = VerificationResult> {
    (
        (0..i32::MAX as u32, 0..i64::MAX as u64, 0..i64::MAX as u64, any::<i64>(), any::<i64>()),
        0..6usize,
        proptest::option::of(0..i64::MAX as u64),
        proptest::option::of(text()),
        proptest::option::of(any::<i64>()),
        text(),
    )
        .prop_map(|((p, fs, ts, fo, to), status, failing, id, offset, detail)| {
            VerificationResult {
                partition: p,
                from_seq: fs,
                to_seq: ts,
                from_offset: fo,
                to_offset: to,
                status: [
                    VerificationStatus::Ok,
                    VerificationStatus::HashMismatch,
                    VerificationStatus::Gap,
                    VerificationStatus::SignatureInvalid,
                    VerificationStatus::UnknownSigner,
                    VerificationStatus::PendingSignature,
                ][status],
                first_failing_seq: failing,
                event_id: id,
                offset,
                detail,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn chain_records_keep_their_bytes(
        partition in 0..i32::MAX as u32,
        body in prop_oneof![
            entry().prop_map(ChainRecordBody::Entry),
            checkpoint().prop_map(ChainRecordBody::Checkpoint),
        ],
    ) {
        let codec = codec();
        let record = ChainRecord { partition, body };
        let old = codec.encode("audit.chain", CHAIN_RECORD_SCHEMA, &legacy::chain_record(&record)).unwrap();
        let new = codec.encode("audit.chain", CHAIN_RECORD_SCHEMA, &record.to_avro().unwrap()).unwrap();
        prop_assert_eq!(&old, &new);
        prop_assert_eq!(ChainRecord::decode(&codec, &new).unwrap(), record);
    }

    #[test]
    fn verification_results_keep_their_bytes(result in verification()) {
        let codec = codec();
        let old = codec.encode("audit.verifications", VERIFICATION_RESULT_SCHEMA, &legacy::verification(&result)).unwrap();
        let new = codec.encode("audit.verifications", VERIFICATION_RESULT_SCHEMA, &result.to_avro().unwrap()).unwrap();
        prop_assert_eq!(&old, &new);
        let back = VerificationResult::from_avro(&codec.decode(&new).unwrap().value).unwrap();
        prop_assert_eq!(back, result);
    }
}

/// `to_avro` conformed to the schema is a value an Avro writer takes directly (the archive
/// export writes it into an object container file with apache-avro's writer).
#[test]
fn to_avro_validates_against_the_schema() {
    let store = SchemaStore::bundled().unwrap();
    let mut runner = proptest::test_runner::TestRunner::default();
    for _ in 0..50 {
        let e = entry().new_tree(&mut runner).unwrap().current();
        let c = checkpoint().new_tree(&mut runner).unwrap().current();
        for body in [ChainRecordBody::Entry(e.clone()), ChainRecordBody::Checkpoint(c)] {
            let v = ChainRecord { partition: 1, body }.to_avro().unwrap();
            let v = store.conform(CHAIN_RECORD_SCHEMA, &v).unwrap();
            assert!(v.validate(store.schema(CHAIN_RECORD_SCHEMA).unwrap()));
        }
    }
}
