//! The decoder never panics: arbitrary bytes, every truncation of every valid encoding, and
//! random corruptions of valid encodings all end in a value or a typed `DecodeError`.
//!
//! A record that crashes the decoder would crash-loop a processor (the record is re-read after
//! every restart), so this is a liveness property of the whole pipeline, not a nicety.

use apache_avro::types::Value;
use evalstream_runtime::codec::{
    avro_to_json, example_value, json_to_avro, Codec, DecodeError, SchemaStore,
    SINGLE_OBJECT_MARKER,
};
use proptest::prelude::*;

fn codec() -> Codec {
    Codec::new(SchemaStore::bundled().unwrap(), None).unwrap()
}

/// One valid encoding per schema.
fn valid_encodings(codec: &Codec) -> Vec<Vec<u8>> {
    codec
        .store()
        .names()
        .map(|name| {
            let value = example_value(codec.store().schema(name).unwrap());
            codec.encode("t", name, &value).unwrap()
        })
        .collect()
}

/// The decoder's verdict must be internally consistent: a value decodes to a schema it names,
/// an error is typed and classifiable.
fn check(codec: &Codec, bytes: &[u8]) -> Result<(), TestCaseError> {
    match codec.decode(bytes) {
        Ok(decoded) => {
            let schema = codec.store().schema(&decoded.schema_name);
            prop_assert!(schema.is_some(), "decoded into unknown schema {}", decoded.schema_name);
            prop_assert!(decoded.value.validate(schema.unwrap()));
        }
        Err(e) => prop_assert_eq!(e.class(), "deserialization"),
    }
    Ok(())
}

#[test]
fn every_truncation_of_every_valid_encoding_is_a_typed_error() {
    let codec = codec();
    for bytes in valid_encodings(&codec) {
        assert!(codec.decode(&bytes).is_ok());
        for len in 0..bytes.len() {
            let err = codec.decode(&bytes[..len]).expect_err("a strict prefix never decodes");
            match (len, &err) {
                (0, DecodeError::Empty) => {}
                (1..=9, DecodeError::TruncatedHeader { .. }) => {}
                (10.., DecodeError::InvalidBody { .. }) => {}
                _ => panic!("prefix of {len} bytes gave {err:?}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&codec(), &bytes)?;
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        schema in any::<prop::sample::Index>(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        // A known fingerprint makes the decoder run the Avro body decoder on garbage.
        let codec = codec();
        let names: Vec<&str> = codec.store().names().collect();
        let stored = codec.store().current(names[schema.index(names.len())]).unwrap();
        let mut bytes = SINGLE_OBJECT_MARKER.to_vec();
        bytes.extend_from_slice(&stored.fingerprint().to_le_bytes());
        bytes.extend_from_slice(&body);
        check(&codec, &bytes)?;
    }

    #[test]
    fn random_corruptions_of_valid_encodings_never_panic(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let codec = codec();
        let encodings = valid_encodings(&codec);
        let mut bytes = encodings[which.index(encodings.len())].clone();
        for (at, xor) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        check(&codec, &bytes)?;
    }

    #[test]
    fn arbitrary_json_never_panics_the_converter(json in arb_json()) {
        let codec = codec();
        for name in codec.store().names() {
            let schema = codec.store().schema(name).unwrap();
            if let Ok(value) = json_to_avro(schema, &json) {
                // Whatever converts must validate and round-trip through the friendly form.
                prop_assert!(value.validate(schema));
                let again = json_to_avro(schema, &avro_to_json(&value)).unwrap();
                prop_assert_eq!(avro_to_json(&again), avro_to_json(&value));
            }
        }
        let _ = codec.encode_json("t", "evalstream.runtime.TotalsInput", &json);
        let _ = codec.encode("t", "evalstream.runtime.TotalsInput", &Value::String(json.to_string()));
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z_]{0,8}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("2024-01-01T00:00:00Z")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("key".to_string()),
                    Just("amount".to_string()),
                    Just("payload".to_string()),
                    "[a-z_]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
