//! Typed records: processors read and build Avro records as plain Rust structs with serde.
//!
//! ```text
//!  #[derive(Serialize, Deserialize)] struct T { .. }    impl Record for T { const SCHEMA = "ns.Name" }
//!
//!  write: &T ─ serde, straight into the Avro body of the CURRENT `T::SCHEMA` (codec/ser.rs) ─►
//!            Output::record; the engine adds the framing header ─► bytes.
//!            When that writer declines (an unusual shape or a mismatch): &T ─ apache_avro::to_value
//!            ─► Value ─ union wrappers dropped; Codec::encode conforms it (strict: chooses the
//!            ["null", X] branch, enum index, timestamp-millis, fills defaults) or names the
//!            field that does not fit ─► bytes. Both give the same bytes (tested).
//!  read:  bytes ─ Codec::frame (header; body validated) ─ serde straight from the bytes
//!            (codec/de.rs) ─► T                                   Input::decode::<T>()
//!            A record of an older schema version: Value resolved to the current schema ─ serde ─► T
//! ```
//!
//! Why serde over the schema, not hand-built `Value::Record`s: a struct is checked by the
//! compiler where it is used, and the schema stays the one authority on the wire shape. The
//! serde side is shape-agnostic (it does not know which branch of a union a field is, or that a
//! `long` is a `timestamp-millis`); the codec's strict conformance against the schema supplies
//! that on the way out, and decoding has already resolved it on the way in. So the Rust types
//! follow a fixed mapping:
//!
//! | Avro                                   | Rust                                                  |
//! |----------------------------------------|-------------------------------------------------------|
//! | `string`                               | `String`                                              |
//! | `long`, `timestamp-millis`             | `i64` (never `u64`: serde writes it as an 8-byte `fixed`) |
//! | `int`                                  | `i32` (`u32` works below 2^31)                        |
//! | `double`, `float`, `boolean`           | `f64`, `f32`, `bool`                                  |
//! | `bytes`                                | `Vec<u8>` with `#[serde(with = "evalstream_runtime::record::bytes")]` (`bytes_opt` in a union) |
//! | `["null", X]`                          | `Option<X>`                                           |
//! | `enum`                                 | unit-variant enum, `#[serde(rename_all = "snake_case")]` so variants are the symbols |
//! | `array`, `map`                         | `Vec<X>`, `BTreeMap<String, X>` (or `HashMap`)        |
//! | `record`                               | a nested struct                                       |
//!
//! A field the schema gives a default may be left out of the struct (or skipped when
//! serializing): the codec fills the default. Fields of the schema that the struct does not name
//! are ignored when reading, so an input type may model only what the processor needs.
//! [`crate::testkit::check_record`] proves a type agrees with its schema; every record type
//! should have that test.

use apache_avro::types::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::codec::{CodecError, DecodeError, SchemaStore};

/// `#[serde(with = "evalstream_runtime::record::bytes")]` for a `Vec<u8>` field of Avro type
/// `bytes` (without it serde writes an array of ints), and `bytes_opt` for `["null", "bytes"]`.
pub use apache_avro::serde::{bytes, bytes_opt};

/// A Rust type that is the typed form of one Avro record schema.
pub trait Record: Serialize + DeserializeOwned {
    /// Full name of the schema (e.g. `evalstream.runtime.TotalsInput`): what the codec encodes
    /// with and what a decoded input's schema name must be.
    const SCHEMA: &'static str;
}

/// Why a typed record could not be built from or turned into an Avro value.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RecordError {
    /// The value was written with another schema than the one the type stands for.
    #[error("expected {expected}, got {got}")]
    WrongSchema {
        /// `T::SCHEMA`.
        expected: &'static str,
        /// The schema the value has.
        got: String,
    },
    /// The value and the Rust type disagree (serde's message; a missing field, a wrong type, an
    /// unknown enum variant). On a decoded input this means the type does not match its schema.
    #[error("{schema}: {message}")]
    Shape {
        /// The schema (or type) involved.
        schema: String,
        /// What does not fit.
        message: String,
    },
    /// Conforming to or encoding with the schema failed; the message names the field path.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The bytes do not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Longest serde message kept in an error: apache-avro's messages can quote a whole value, and
/// these messages end up in DLQ headers and logs.
const MAX_MESSAGE: usize = 300;

fn shape(schema: &str, e: impl std::fmt::Display) -> RecordError {
    let mut message = e.to_string();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    RecordError::Shape { schema: schema.to_string(), message }
}

/// The Avro value of `value` as serde sees it, with union wrappers removed: the shape
/// [`crate::codec::Codec::encode`] conforms to a schema (it chooses union branches itself, which
/// serde, unaware of the schema, cannot; apache-avro would always pick branch 1 for `Some`).
pub fn to_avro<T: Serialize + ?Sized>(value: &T) -> Result<Value, RecordError> {
    let mut v = apache_avro::to_value(value).map_err(|e| shape(std::any::type_name::<T>(), e))?;
    drop_union_wrappers(&mut v);
    Ok(v)
}

/// `T` from a value the codec decoded (union-wrapped, resolved to the current schema). For
/// values built by hand use [`from_any_avro`].
pub fn from_avro<T: DeserializeOwned>(value: &Value) -> Result<T, RecordError> {
    apache_avro::from_value(value).map_err(|e| shape(std::any::type_name::<T>(), e))
}

/// `T` from any value that conforms to the current `T::SCHEMA` (bare or union-wrapped, `long` or
/// `timestamp-millis`, enum or string symbols): conformed first, so every mismatch is an error
/// naming the field path (`checkpoint.root`), then read.
pub fn from_any_avro<T: Record>(value: &Value) -> Result<T, RecordError> {
    let conformed = bundled()?.conform(T::SCHEMA, value)?;
    from_avro(&conformed)
}

/// The value `T` encodes to: [`to_avro`] conformed to the current `T::SCHEMA` (exactly what the
/// codec writes). Tests compare these; the runtime leaves conforming to the codec.
pub fn to_conformed_avro<T: Record>(value: &T) -> Result<Value, RecordError> {
    Ok(bundled()?.conform(T::SCHEMA, &to_avro(value)?)?)
}

fn bundled() -> Result<SchemaStore, RecordError> {
    Ok(SchemaStore::bundled()?)
}

/// `value` written as the Avro body of the bundled current `T::SCHEMA`, with that schema's
/// fingerprint, when the direct serializer takes it (`codec/ser.rs`: no `Value` tree); `None`
/// when it declines (an unusual shape or a mismatch), and the value path must be used.
pub(crate) fn write_bundled<T: Record>(value: &T) -> Option<(u64, Vec<u8>)> {
    let seen = bundled_current(T::SCHEMA);
    let stored = seen.stored?;
    // Sized like the previous record of this schema: a 1 KiB body grown from a small guess was
    // reallocated and copied four times.
    let mut body = Vec::with_capacity(seen.last_len.max(128));
    crate::codec::write_serialized(stored, value, &mut body).ok()?;
    remember_len(T::SCHEMA, body.len());
    Some((stored.fingerprint(), body))
}

/// What this thread knows of a bundled schema name.
#[derive(Clone, Copy)]
struct Seen {
    /// The bundled current version (`None`: not bundled).
    stored: Option<&'static crate::codec::StoredSchema>,
    /// Body length of the last record written with it.
    last_len: usize,
}

thread_local! {
    /// Per name, remembered per thread: a processor writes the same few schemas for every
    /// record, and the lookup by name (hashing the name) cost ~900 instructions per output.
    static SEEN: std::cell::RefCell<Vec<(&'static str, Seen)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The bundled current version of `name` and the last body length written with it.
fn bundled_current(name: &'static str) -> Seen {
    SEEN.with(|seen| {
        if let Some((_, s)) = seen.borrow().iter().find(|(n, _)| *n == name) {
            return *s;
        }
        let stored = SchemaStore::bundled_ref().ok().and_then(|store| store.current(name));
        let s = Seen { stored, last_len: 0 };
        seen.borrow_mut().push((name, s));
        s
    })
}

fn remember_len(name: &'static str, len: usize) {
    SEEN.with(|seen| {
        if let Some((_, s)) = seen.borrow_mut().iter_mut().find(|(n, _)| *n == name) {
            s.last_len = len;
        }
    })
}

/// The value of a body [`write_bundled`] wrote.
pub(crate) fn read_bundled(fingerprint: u64, body: &[u8]) -> Result<Value, RecordError> {
    Ok(crate::codec::read_stored(bundled_version(fingerprint)?, body)?)
}

/// `T` from a body [`write_bundled`] wrote (straight from the bytes when it can be).
pub(crate) fn from_bundled_bytes<T: Record>(
    fingerprint: u64,
    body: &[u8],
) -> Result<T, RecordError> {
    let stored = bundled_version(fingerprint)?;
    match crate::codec::deserialize_stored::<T>(stored, body) {
        Some(result) => result,
        None => from_any_avro(&read_bundled(fingerprint, body)?),
    }
}

fn bundled_version(fingerprint: u64) -> Result<&'static crate::codec::StoredSchema, RecordError> {
    SchemaStore::bundled_ref()?
        .by_fingerprint(fingerprint)
        .ok_or(RecordError::Decode(DecodeError::UnknownFingerprint { fingerprint }))
}

/// Replaces every `Union(_, x)` by `x`, in place.
fn drop_union_wrappers(v: &mut Value) {
    match v {
        Value::Union(_, inner) => {
            let inner = std::mem::replace(&mut **inner, Value::Null);
            *v = inner;
            drop_union_wrappers(v);
        }
        Value::Record(fields) => fields.iter_mut().for_each(|(_, f)| drop_union_wrappers(f)),
        Value::Array(items) => items.iter_mut().for_each(drop_union_wrappers),
        Value::Map(entries) => entries.values_mut().for_each(drop_union_wrappers),
        _ => {}
    }
}

/// Checks that a decoded value has `T`'s schema, then reads it.
pub(crate) fn decode_value<T: Record>(schema: &str, value: &Value) -> Result<T, RecordError> {
    if schema != T::SCHEMA {
        return Err(RecordError::WrongSchema { expected: T::SCHEMA, got: schema.to_string() });
    }
    from_avro(value).map_err(|e| match e {
        RecordError::Shape { message, .. } => {
            RecordError::Shape { schema: T::SCHEMA.to_string(), message }
        }
        other => other,
    })
}
