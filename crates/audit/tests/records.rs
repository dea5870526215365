//! The Rust record types agree with the Avro schemas: every value round-trips through the
//! runtime's codec (encode with the bundled current schema, decode, convert back), field order
//! included, and malformed values are typed errors.

use apache_avro::types::Value;
use evalstream_audit::chain::{AuditEventJson, ChainHead, AUDIT_EVENT_SCHEMA, EVENT_FIELDS};
use evalstream_audit::merkle::CompactRange;
use evalstream_audit::records::{
    ChainEntry, ChainRecord, ChainRecordBody, ChainRecordKind, Checkpoint, CheckpointStatus,
    RecordError, VerificationResult, VerificationStatus, CHAIN_RECORD_SCHEMA,
    VERIFICATION_RESULT_SCHEMA,
};
use evalstream_runtime::codec::{Codec, SchemaStore};

fn codec() -> Codec {
    // No registry: single-object encoding with the bundled schemas, independent of the
    // environment of whoever runs the tests.
    Codec::new(SchemaStore::bundled().expect("bundled schemas"), None).expect("codec")
}

fn round_trip(schema: &str, value: &Value) -> Value {
    let c = codec();
    let bytes = c.encode("audit.chain", schema, value).expect("encode");
    let decoded = c.decode(&bytes).expect("decode");
    assert_eq!(decoded.schema_name, schema);
    decoded.value
}

fn sample_entry() -> (ChainHead, ChainEntry) {
    let event = AuditEventJson {
        event_id: "evt-1".into(),
        event_type: "audit.emergency_signer".into(),
        actor: "audit-chain".into(),
        subject: "kid-2".into(),
        occurred_at: 1_731_900_000_000,
        payload: r#"{"reason":"kms unreachable","proxy":"https://signer.internal"}"#.into(),
    };
    let canonical = event.canonical_bytes().unwrap();
    let mut head = ChainHead::genesis(2);
    let appended = head.append(&canonical).unwrap();
    (head, ChainEntry::new(&appended, &event, canonical, 2, 41))
}

#[test]
fn chain_entries_round_trip_through_the_codec() {
    let (_, entry) = sample_entry();
    assert_eq!(entry.recomputed_hash(), entry.entry_hash);
    let record = ChainRecord { partition: 2, body: ChainRecordBody::Entry(entry) };
    let value = record.to_avro().unwrap();
    let back = ChainRecord::from_avro(&round_trip(CHAIN_RECORD_SCHEMA, &value)).unwrap();
    assert_eq!(back, record);
    assert_eq!(back.kind(), ChainRecordKind::Entry);
}

#[test]
fn checkpoints_round_trip_pending_and_signed() {
    let (head, entry) = sample_entry();
    let range = CompactRange::from_entry_hashes(&[entry.entry_hash]).unwrap();
    let pending = Checkpoint::pending(&range, head.head_hash, entry.occurred_at);
    assert_eq!(pending.status, CheckpointStatus::PendingSignature);
    assert_eq!(pending.compact_range().unwrap(), range);
    for cp in [
        pending.clone(),
        pending.clone().with_signature("kid-a".into(), "kms".into(), vec![0x30, 0x44, 1, 2]),
    ] {
        let record = ChainRecord { partition: 2, body: ChainRecordBody::Checkpoint(cp) };
        let back =
            ChainRecord::from_avro(&round_trip(CHAIN_RECORD_SCHEMA, &record.to_avro().unwrap()))
                .unwrap();
        assert_eq!(back, record);
    }
    // The signed body binds partition, size, root, head and time.
    let body = String::from_utf8(pending.body(2).unwrap()).unwrap();
    assert!(body.starts_with("evalstream.audit.checkpoint.v1\naudit.chain\n2\n1\n"), "{body}");
    assert!(body.ends_with("\n1731900000000\n"));

    // A frontier that does not reproduce the root is refused on resume.
    let mut forged = pending;
    forged.frontier[0][0] ^= 1;
    assert!(forged.compact_range().is_err());
}

#[test]
fn verification_results_round_trip() {
    let results = [
        VerificationResult {
            partition: 0,
            from_seq: 0,
            to_seq: 999,
            from_offset: 0,
            to_offset: 1010,
            status: VerificationStatus::Ok,
            first_failing_seq: None,
            event_id: None,
            offset: None,
            detail: "1000 entries, 11 checkpoints".into(),
        },
        VerificationResult {
            partition: 3,
            from_seq: 10,
            to_seq: 20,
            from_offset: 12,
            to_offset: 25,
            status: VerificationStatus::HashMismatch,
            first_failing_seq: Some(14),
            event_id: Some("evt-14".into()),
            offset: Some(17),
            detail: "entry_hash differs".into(),
        },
    ];
    for r in results {
        let back = VerificationResult::from_avro(&round_trip(
            VERIFICATION_RESULT_SCHEMA,
            &r.to_avro().unwrap(),
        ))
        .unwrap();
        assert_eq!(back, r);
    }
}

#[test]
fn field_order_matches_the_schemas() {
    let store = SchemaStore::bundled().unwrap();
    let field_names = |schema: &str| -> Vec<String> {
        let json: serde_json::Value =
            serde_json::from_str(store.current(schema).unwrap().source()).unwrap();
        json["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    let names = |v: &Value| -> Vec<String> {
        match v {
            Value::Record(f) => f.iter().map(|(n, _)| n.clone()).collect(),
            _ => panic!("not a record"),
        }
    };
    let (_, entry) = sample_entry();
    let record = ChainRecord { partition: 2, body: ChainRecordBody::Entry(entry) };
    assert_eq!(names(&record.to_avro().unwrap()), field_names(CHAIN_RECORD_SCHEMA));
    let v = VerificationResult {
        partition: 0,
        from_seq: 0,
        to_seq: 0,
        from_offset: 0,
        to_offset: 0,
        status: VerificationStatus::Gap,
        first_failing_seq: Some(0),
        event_id: None,
        offset: None,
        detail: String::new(),
    };
    assert_eq!(names(&v.to_avro().unwrap()), field_names(VERIFICATION_RESULT_SCHEMA));
    // The audit event's JSON form uses exactly the AuditEvent schema's fields: adding a field
    // there must be a conscious change of the chain specification (docs/audit-chain.md).
    assert_eq!(field_names(AUDIT_EVENT_SCHEMA), EVENT_FIELDS.map(String::from).to_vec());
}

#[test]
fn audit_events_decoded_by_the_codec_chain() {
    let c = codec();
    let json = serde_json::json!({
        "event_id": "e-9", "type": "eval.promotion_denied", "actor": "policy",
        "subject": "model-1", "occurred_at": 1_700_000_000_000i64,
        "payload": "{\"b\": [1, 2.50], \"a\": \"x\"}"
    });
    let bytes = c.encode_json("audit.events", AUDIT_EVENT_SCHEMA, &json).unwrap();
    let decoded = c.decode(&bytes).unwrap();
    let from_avro = AuditEventJson::from_avro(&decoded.value).unwrap();
    assert_eq!(from_avro, AuditEventJson::from_json(&json).unwrap());
    assert_eq!(
        String::from_utf8(from_avro.canonical_bytes().unwrap()).unwrap(),
        r#"{"actor":"policy","event_id":"e-9","occurred_at":1700000000000,"payload":{"a":"x","b":[1,2.5]},"subject":"model-1","type":"eval.promotion_denied"}"#
    );
}

#[test]
fn malformed_values_are_typed_errors() {
    let (_, entry) = sample_entry();
    let good = ChainRecord { partition: 2, body: ChainRecordBody::Entry(entry) }.to_avro().unwrap();
    // As the codec decodes it: union-wrapped, enum indexes set.
    let good = SchemaStore::bundled().unwrap().conform(CHAIN_RECORD_SCHEMA, &good).unwrap();
    let Value::Record(fields) = good.clone() else { unreachable!() };

    let with = |name: &str, v: Value| -> Value {
        Value::Record(
            fields
                .iter()
                .map(|(n, x)| (n.clone(), if n == name { v.clone() } else { x.clone() }))
                .collect(),
        )
    };
    // kind says checkpoint but the entry is set.
    assert!(matches!(
        ChainRecord::from_avro(&with("kind", Value::Enum(1, "checkpoint".into()))),
        Err(RecordError::Inconsistent(_))
    ));
    let bogus = ChainRecord::from_avro(&with("kind", Value::Enum(7, "bogus".into())));
    assert!(
        matches!(&bogus, Err(RecordError::Schema(m)) if m.contains("at kind: unknown symbol")),
        "{bogus:?}"
    );
    assert!(matches!(
        ChainRecord::from_avro(&with("partition", Value::Int(-1))),
        Err(RecordError::OutOfRange { .. })
    ));
    assert!(matches!(ChainRecord::from_avro(&Value::Null), Err(RecordError::Schema(_))));

    // A 31-byte prev_hash names its field.
    let Value::Union(_, inner) = &fields[2].1 else { unreachable!() };
    let Value::Record(ef) = &**inner else { unreachable!() };
    let short: Vec<(String, Value)> = ef
        .iter()
        .map(|(n, v)| {
            (n.clone(), if n == "prev_hash" { Value::Bytes(vec![0; 31]) } else { v.clone() })
        })
        .collect();
    let err =
        ChainRecord::from_avro(&with("entry", Value::Union(1, Box::new(Value::Record(short)))))
            .unwrap_err();
    assert_eq!(err, RecordError::HashLength { field: "entry.prev_hash".into(), len: 31 });
    let mut extra = fields.clone();
    extra.push(("zzz".into(), Value::Null));
    assert!(matches!(
        ChainRecord::from_avro(&Value::Record(extra)),
        Err(RecordError::Schema(m)) if m.contains("zzz: unknown field")
    ));
    let missing: Vec<_> = fields.iter().filter(|(n, _)| n != "partition").cloned().collect();
    assert!(matches!(
        ChainRecord::from_avro(&Value::Record(missing)),
        Err(RecordError::Schema(m)) if m.contains("partition: missing required field")
    ));
}
