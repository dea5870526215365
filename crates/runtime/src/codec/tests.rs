//! Unit tests of the codec without a registry (the registry path is tested against an HTTP
//! double in `tests/codec_registry.rs`).

use super::*;
use serde_json::json;

fn codec() -> Codec {
    Codec::new(SchemaStore::bundled().expect("bundled schemas"), None).expect("codec")
}

const TOTALS_INPUT: &str = "evalstream.runtime.TotalsInput";

fn totals_input(key: &str, amount: i64) -> Value {
    Value::Record(vec![
        ("key".into(), Value::String(key.into())),
        ("amount".into(), Value::Long(amount)),
        ("payload".into(), Value::String(String::new())),
    ])
}

#[test]
fn codec_is_clone_send_sync() {
    fn assert<T: Clone + Send + Sync + 'static>() {}
    assert::<Codec>();
    assert::<SchemaStore>();
}

#[test]
fn single_object_round_trip_for_every_schema() {
    let codec = codec();
    for name in codec.store().names().map(str::to_string).collect::<Vec<_>>() {
        let stored = codec.store().current(&name).unwrap();
        let example = example_value(stored.schema());
        let bytes = codec.encode("any.topic", &name, &example).unwrap();
        assert_eq!(bytes[..2], SINGLE_OBJECT_MARKER, "{name}");
        assert_eq!(bytes[2..10], stored.fingerprint().to_le_bytes(), "{name}");
        let decoded = codec.decode(&bytes).unwrap();
        assert_eq!(decoded.schema_name, name);
        assert_eq!(decoded.format, WireFormat::SingleObject { fingerprint: stored.fingerprint() });
        assert_eq!(decoded.value, example, "{name}");
        // And through JSON: friendly form → bytes → value → the same friendly form.
        let json = avro_to_json(&decoded.value);
        let again = codec.decode(&codec.encode_json("any.topic", &name, &json).unwrap()).unwrap();
        assert_eq!(avro_to_json(&again.value), json, "{name}");
    }
}

#[test]
fn records_written_with_the_legacy_fingerprint_still_decode() {
    // Before the codec followed the Avro specification it wrote apache-avro's fingerprint, which
    // differs for schemas with logical types (AuditEvent: occurred_at is timestamp-millis).
    // Such records are in topics already; they decode into the same schema, and new records
    // carry the spec's fingerprint.
    let codec = codec();
    let name = "evalstream.audit.AuditEvent";
    let stored = codec.store().current(name).unwrap();
    assert_ne!(stored.fingerprint(), stored.legacy_fingerprint());
    let example = example_value(stored.schema());
    let mut bytes = codec.encode("audit.events", name, &example).unwrap();
    assert_eq!(bytes[2..10], stored.fingerprint().to_le_bytes(), "encode writes the spec's");
    bytes[2..10].copy_from_slice(&stored.legacy_fingerprint().to_le_bytes());
    let decoded = codec.decode(&bytes).unwrap();
    assert_eq!(decoded.schema_name, name);
    assert_eq!(decoded.value, example);
    assert_eq!(
        decoded.format,
        WireFormat::SingleObject { fingerprint: stored.legacy_fingerprint() }
    );
}

#[test]
fn known_bytes_for_a_small_record() {
    // TotalsInput{key:"k", amount:3, payload:""}: string "k" = len 1 (zigzag 0x02) + 0x6b,
    // long 3 = zigzag 0x06, empty string = 0x00.
    let codec = codec();
    let bytes = codec.encode("totals.input", TOTALS_INPUT, &totals_input("k", 3)).unwrap();
    assert_eq!(&bytes[10..], &[0x02, b'k', 0x06, 0x00]);
}

#[test]
fn encode_json_applies_defaults_and_reports_paths() {
    let codec = codec();
    let bytes = codec
        .encode_json("totals.input", TOTALS_INPUT, &json!({"key": "a", "amount": -5}))
        .unwrap();
    let decoded = codec.decode(&bytes).unwrap();
    assert_eq!(decoded.value, totals_input("a", -5));

    let err = codec
        .encode_json(
            "alloc.requests",
            "evalstream.alloc.AllocationRequest",
            &json!({"allocation_id": "a", "requester": "r",
                    "resource": {"gpu_type": "h100", "gpu_count": "8", "hours": 1},
                    "amount_minor": 100, "currency": "EUR", "cost_center": "cc",
                    "requested_at": "2024-01-01T00:00:00Z"}),
        )
        .unwrap_err();
    match err {
        CodecError::Value { schema, path, .. } => {
            assert_eq!(schema, "evalstream.alloc.AllocationRequest");
            assert_eq!(path, "resource.gpu_count");
        }
        other => panic!("unexpected {other:?}"),
    }

    let err = codec
        .encode_json(
            "policy.decisions",
            "evalstream.policy.PolicyDecision",
            &json!({"decision_id": "d", "request_id": "r", "subject_kind": "promotion",
                    "decision": "allow", "reasons": ["a", "b", null], "policy_version": "1",
                    "risk_level": "low", "decided_at": 0}),
        )
        .unwrap_err();
    assert!(matches!(&err, CodecError::Value { path, .. } if path == "reasons[2]"), "{err}");
}

#[test]
fn encode_rejects_unknown_schema_and_bad_values() {
    let codec = codec();
    assert_eq!(
        codec.encode("t", "no.such.Schema", &Value::Null).unwrap_err(),
        CodecError::UnknownSchema("no.such.Schema".into())
    );
    let bad = Value::Record(vec![("key".into(), Value::Long(1))]);
    assert!(matches!(
        codec.encode("t", TOTALS_INPUT, &bad).unwrap_err(),
        CodecError::Value { path, .. } if path == "key"
    ));
    // Typo protection for Avro values too: an unknown enum symbol is not mapped to the default.
    let decision = codec.store().current("evalstream.policy.PolicyDecision").unwrap();
    let mut v = example_value(decision.schema());
    if let Value::Record(fields) = &mut v {
        for (name, field) in fields.iter_mut() {
            if name == "decision" {
                *field = Value::Enum(0, "alow".into());
            }
        }
    }
    assert!(matches!(
        codec.encode("t", "evalstream.policy.PolicyDecision", &v).unwrap_err(),
        CodecError::Value { path, .. } if path == "decision"
    ));
}

#[test]
fn every_decode_error_is_typed() {
    let codec = codec();
    let good = codec.encode("totals.input", TOTALS_INPUT, &totals_input("k", 3)).unwrap();
    let fp = codec.store().current(TOTALS_INPUT).unwrap().fingerprint();

    assert_eq!(codec.decode(&[]), Err(DecodeError::Empty));
    assert_eq!(
        codec.decode(&[0xC3]),
        Err(DecodeError::TruncatedHeader { format: "single-object", needed: 10, got: 1 })
    );
    assert_eq!(
        codec.decode(&good[..7]),
        Err(DecodeError::TruncatedHeader { format: "single-object", needed: 10, got: 7 })
    );
    assert_eq!(
        codec.decode(&[0x00, 0, 1]),
        Err(DecodeError::TruncatedHeader { format: "confluent", needed: 5, got: 3 })
    );
    assert_eq!(
        codec.decode(&[0xC3, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(DecodeError::UnsupportedSingleObjectVersion { byte: 0x02 })
    );
    assert_eq!(codec.decode(b"{\"key\":1}"), Err(DecodeError::UnknownMagic { byte: b'{' }));

    let mut unknown = good.clone();
    unknown[2..10].copy_from_slice(&(fp ^ 1).to_le_bytes());
    assert_eq!(
        codec.decode(&unknown),
        Err(DecodeError::UnknownFingerprint { fingerprint: fp ^ 1 })
    );

    assert_eq!(
        codec.decode(&[0x00, 0, 0, 0, 7, 0x02]),
        Err(DecodeError::NoRegistry { schema_id: 7 })
    );

    // Header only: the body ends before the first field.
    assert!(matches!(codec.decode(&good[..10]), Err(DecodeError::InvalidBody { .. })));
    // String length prefix far beyond the record (zigzag of a huge length).
    let mut huge = good[..10].to_vec();
    huge.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(codec.decode(&huge), Err(DecodeError::InvalidBody { .. })));
    // Negative length.
    let mut negative = good[..10].to_vec();
    negative.push(0x01);
    assert!(matches!(codec.decode(&negative), Err(DecodeError::InvalidBody { .. })));

    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        codec.decode(&trailing),
        Err(DecodeError::TrailingBytes { schema: TOTALS_INPUT.into(), count: 1 })
    );

    for e in [DecodeError::Empty, DecodeError::NoRegistry { schema_id: 1 }] {
        assert_eq!(e.class(), "deserialization");
        assert!(!e.is_transient());
    }
    assert!(
        DecodeError::RegistryUnavailable { schema_id: 1, message: String::new() }.is_transient()
    );
}

const STATE_V1: &str = r#"{"type":"record","name":"S","namespace":"t","doc":"d","fields":[
    {"name":"id","type":"string","doc":"d"},
    {"name":"state","type":{"type":"enum","name":"St","symbols":["a","b","gone"]},"doc":"d"}]}"#;
const STATE_V2: &str = r#"{"type":"record","name":"S","namespace":"t","doc":"d","fields":[
    {"name":"id","type":"string","doc":"d"},
    {"name":"state","type":{"type":"enum","name":"St","symbols":["a","b"]},"doc":"d"},
    {"name":"note","type":["null","string"],"default":null,"doc":"d"}]}"#;

#[test]
fn history_versions_decode_into_the_current_shape() {
    let store =
        SchemaStore::from_sources([("t/S.avsc", STATE_V2), ("history/t.S/v1.avsc", STATE_V1)])
            .unwrap();
    let codec = Codec::new(store, None).unwrap();
    let v1 = codec.store().version("t.S", 1).unwrap();
    let old = Value::Record(vec![
        ("id".into(), Value::String("x".into())),
        ("state".into(), Value::Enum(1, "b".into())),
    ]);
    let bytes = encode_single_object(v1, &old).unwrap();
    let decoded = codec.decode(&bytes).unwrap();
    assert_eq!(decoded.schema_name, "t.S");
    assert_eq!(decoded.format, WireFormat::SingleObject { fingerprint: v1.fingerprint() });
    assert_eq!(avro_to_json(&decoded.value), json!({"id": "x", "state": "b", "note": null}));

    // A symbol the current reader lacks, with no enum default: typed resolution error.
    let gone = Value::Record(vec![
        ("id".into(), Value::String("x".into())),
        ("state".into(), Value::Enum(2, "gone".into())),
    ]);
    let bytes = encode_single_object(v1, &gone).unwrap();
    assert!(matches!(codec.decode(&bytes), Err(DecodeError::Resolution { .. })));
}

#[test]
fn registry_url_is_validated() {
    let store = SchemaStore::bundled().unwrap();
    assert!(matches!(
        Codec::new(store.clone(), Some("localhost:8081".into())),
        Err(CodecError::Config(_))
    ));
    let codec = Codec::new(store, Some("http://127.0.0.1:9/".into())).unwrap();
    assert_eq!(codec.registry_url(), Some("http://127.0.0.1:9"));
    assert!(codec.check_registry().is_err());
    // Nothing listens on the discard port: a transient, typed error, not a panic or a DLQ verdict.
    let err = codec.decode(&[0x00, 0, 0, 0, 1, 0x00]).unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = codec.encode("t", TOTALS_INPUT, &totals_input("k", 1)).unwrap_err();
    assert!(matches!(err, CodecError::Registry { transient: true, .. }), "{err:?}");
}

#[test]
fn allocation_limit_is_installed() {
    let _ = codec();
    assert_eq!(apache_avro::util::max_allocation_bytes(0), MAX_ALLOCATION_BYTES);
}
