//! A record whose framing is parsed and whose body is validated, decoded only on demand.
//!
//! The engine used to decode every input into an `apache_avro::types::Value` tree, and the
//! processor then turned the tree into its typed record with serde. Building, reading and
//! dropping the tree was about a third of the engine thread's instructions per record in the
//! totals benchmark (docs/performance.md). A [`Framed`] record instead keeps the body bytes:
//!
//! ```text
//!  Codec::frame(bytes): header → writer schema; body validated in one pass (no tree)
//!     Framed::decode::<T>()  body ─ serde, straight from the bytes (de.rs) ─► T
//!     Framed::value()        body ─ Value tree (read.rs / apache-avro), built once on demand
//! ```
//!
//! Validation happens when the record is framed, so a corrupt body is still a
//! [`DecodeError`] (dead-lettered as `deserialization`) before any processor sees it, with the
//! same message as [`super::Codec::decode`] gives. Reading straight from the bytes needs the
//! writer schema to be the current schema of its name (the common case; the store's copy has
//! its named types precomputed). A record written with another version is decoded into a
//! resolved `Value` when it is framed, as before, and typed from that.

use std::cell::OnceCell;
use std::sync::Arc;

use apache_avro::types::Value;
use serde::de::IgnoredAny;

use super::de::{self, DeError};
use super::schema_registry::RegistrySchema;
use super::{Codec, DecodeError, StoredSchema, WireFormat};
use crate::record::{self, Record, RecordError};

/// The writer schema a framing header names.
#[derive(Debug, Clone)]
pub(super) enum Writer<'a> {
    /// From the bundled store (single-object encoding, by fingerprint).
    Stored(&'a StoredSchema),
    /// From the schema registry (Confluent wire format, by id).
    Registry(Arc<RegistrySchema>),
}

impl Writer<'_> {
    pub(super) fn name(&self) -> &str {
        match self {
            Writer::Stored(s) => s.full_name(),
            Writer::Registry(r) => &r.name,
        }
    }

    pub(super) fn fingerprint(&self) -> u64 {
        match self {
            Writer::Stored(s) => s.fingerprint(),
            Writer::Registry(r) => r.fingerprint,
        }
    }
}

/// A record value with its framing parsed and its body validated (see the module doc).
#[derive(Debug, Clone)]
pub struct Framed<'a> {
    codec: &'a Codec,
    writer: Writer<'a>,
    format: WireFormat,
    body: &'a [u8],
    /// The store's current schema when the writer's is exactly that one: the body can then be
    /// read straight into typed records.
    direct: Option<&'a StoredSchema>,
    /// The value, resolved to the current schema; built on first use (or when framed, for a
    /// record that cannot be read directly).
    value: OnceCell<Value>,
}

impl Codec {
    /// Parses the framing of `bytes` and validates the body against the writer schema, without
    /// building a value. Fails exactly when [`Codec::decode`] fails, with the same error.
    pub fn frame<'a>(&'a self, bytes: &'a [u8]) -> Result<Framed<'a>, DecodeError> {
        let (writer, format, body) = self.parse_header(bytes)?;
        let direct = match &writer {
            // The common case, without a lookup by name.
            Writer::Stored(stored) if stored.is_current() => Some(*stored),
            _ => self
                .inner
                .store
                .current(writer.name())
                .filter(|current| current.fingerprint() == writer.fingerprint()),
        };
        let framed = Framed { codec: self, writer, format, body, direct, value: OnceCell::new() };
        if let Some(schema) = direct {
            if de::from_slice::<IgnoredAny>(schema.schema(), &schema.names, body).is_ok() {
                return Ok(framed);
            }
        }
        // Not readable directly, or invalid: decode as `decode` does, which gives the value or
        // the precise error (and the value is then at hand for the processor).
        let value = self.decode_body(&framed.writer, body)?;
        let _ = framed.value.set(value);
        Ok(Framed { direct: None, ..framed })
    }
}

impl<'a> Framed<'a> {
    /// Full name of the writer schema (processors dispatch on it).
    pub fn schema_name(&self) -> &str {
        self.writer.name()
    }

    /// How the record was framed on the wire.
    pub fn format(&self) -> WireFormat {
        self.format
    }

    /// The value in the shape of the current schema of its name, decoded on first use.
    pub fn value(&self) -> Result<&Value, DecodeError> {
        if let Some(value) = self.value.get() {
            return Ok(value);
        }
        let value = self.codec.decode_body(&self.writer, self.body)?;
        Ok(self.value.get_or_init(|| value))
    }

    /// `T` read straight from the body, borrowing its strings and bytes (`&'a str` fields), when
    /// the record is in the current schema of its name and the reader supports `T`'s shape;
    /// `None` otherwise (use [`Framed::value`]). The schema name is not checked: compare
    /// [`Framed::schema_name`] first.
    pub fn decode_borrowed<T: serde::Deserialize<'a>>(&self) -> Option<Result<T, RecordError>> {
        let schema = self.direct?;
        match de::from_validated_slice::<T>(schema.schema(), &schema.names, self.body) {
            Ok(value) => Some(Ok(value)),
            Err(DeError::Shape(message)) => {
                Some(Err(RecordError::Shape { schema: self.schema_name().to_string(), message }))
            }
            Err(DeError::Unsupported(_) | DeError::Malformed(_)) => None,
        }
    }

    /// The value as the typed record `T`, read straight from the body when it can be; a record
    /// of another schema is [`RecordError::WrongSchema`].
    pub fn decode<T: Record>(&self) -> Result<T, RecordError> {
        if self.schema_name() != T::SCHEMA {
            return Err(RecordError::WrongSchema {
                expected: T::SCHEMA,
                got: self.schema_name().to_string(),
            });
        }
        if let Some(schema) = self.direct {
            match de::from_validated_slice::<T>(schema.schema(), &schema.names, self.body) {
                Ok(value) => return Ok(value),
                Err(DeError::Shape(message)) => {
                    return Err(RecordError::Shape { schema: T::SCHEMA.to_string(), message })
                }
                // Not supported here (or, against the validation, malformed): the value path
                // gives the result or the precise error.
                Err(DeError::Unsupported(_) | DeError::Malformed(_)) => {}
            }
        }
        record::decode_value(self.schema_name(), self.value()?)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::codec::value::{conform, Names};
    use crate::codec::{encode_single_object, SchemaStore, SINGLE_OBJECT_HEADER_LEN};
    use crate::test_records::TotalsUpdate;

    /// Random values of every bundled schema version, framed as single objects, and the same
    /// bytes damaged: `frame` fails exactly when `decode` does, with the same error, and its
    /// value is `decode`'s.
    #[test]
    fn frames_exactly_what_decode_decodes() {
        let store = SchemaStore::bundled().unwrap();
        let codec = Codec::new(store.clone(), None).unwrap();
        let (mut direct, mut total) = (0, 0);
        for stored in store.entries() {
            let schema = stored.schema();
            let names = Names::of(schema);
            let mut rng = StdRng::seed_from_u64(stored.fingerprint() ^ 0xf4a3);
            for _ in 0..200 {
                let raw = crate::codec::writer::tests::random_value(&mut rng, &names, schema);
                let v = conform(schema, &names, &raw).expect("generated values conform");
                let bytes = encode_single_object(stored, &v).unwrap();
                let mut cases = vec![bytes.clone()];
                for _ in 0..4 {
                    // The body is damaged; the header stays (its damage is `decode`'s own test).
                    let (header, body) = bytes.split_at(SINGLE_OBJECT_HEADER_LEN);
                    let damaged = crate::codec::writer::tests::damage(&mut rng, body);
                    cases.push([header, &damaged].concat());
                }
                for case in &cases {
                    let decoded = codec.decode(case);
                    let framed = codec.frame(case);
                    match (&decoded, &framed) {
                        (Ok(d), Ok(f)) => {
                            direct += usize::from(f.direct.is_some());
                            assert_eq!(f.schema_name(), d.schema_name);
                            assert_eq!(f.format(), d.format);
                            assert_eq!(f.value().unwrap(), &d.value, "{}", stored.full_name());
                        }
                        (Err(d), Err(f)) => assert_eq!(d, f, "{}", stored.full_name()),
                        _ => panic!(
                            "{}: decode {:?} but frame {:?}",
                            stored.full_name(),
                            decoded.as_ref().err(),
                            framed.as_ref().err()
                        ),
                    }
                    total += 1;
                }
            }
        }
        assert!(direct * 10 >= total, "only {direct} of {total} records framed for direct reads");
    }

    /// Models only part of `TotalsUpdate`: the other fields are skipped.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct KeyAndOffset {
        key: String,
        source_offset: i64,
    }

    impl Record for KeyAndOffset {
        const SCHEMA: &'static str = "evalstream.runtime.TotalsUpdate";
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct WrongTypes {
        key: i64,
    }

    impl Record for WrongTypes {
        const SCHEMA: &'static str = "evalstream.runtime.TotalsUpdate";
    }

    /// A typed record read straight from the bytes is the one the value path reads, and a type
    /// that does not fit fails on both paths.
    #[test]
    fn typed_reads_agree_with_the_value_path() {
        let codec = Codec::new(SchemaStore::bundled().unwrap(), None).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..500 {
            let update = TotalsUpdate {
                key: (0..rng.gen_range(0..20)).map(|_| rng.gen_range('a'..='é')).collect(),
                amount: rng.gen(),
                total: rng.gen(),
                source_topic: "totals.input".into(),
                source_partition: rng.gen(),
                source_offset: rng.gen(),
            };
            let bytes = codec.encode_record("t", &update).unwrap();
            let framed = codec.frame(&bytes).unwrap();
            let by_value: TotalsUpdate =
                record::decode_value(framed.schema_name(), framed.value().unwrap()).unwrap();
            assert_eq!(framed.decode::<TotalsUpdate>().unwrap(), by_value);
            assert_eq!(by_value, update);
            let view: KeyAndOffset =
                record::decode_value(framed.schema_name(), framed.value().unwrap()).unwrap();
            assert_eq!(framed.decode::<KeyAndOffset>().unwrap(), view);
            assert!(framed.decode::<WrongTypes>().is_err());
            assert!(record::decode_value::<WrongTypes>(
                framed.schema_name(),
                framed.value().unwrap()
            )
            .is_err());
        }
    }
}
