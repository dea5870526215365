//! Wire codec: the one place where event values become record bytes and back.
//!
//! ```text
//!  encode(topic, schema, value)                  decode(bytes)
//!    │ conform to the CURRENT schema               │ first byte
//!    │ (strict; errors name the field path)        ├─ C3 01 ─► fingerprint ─► store (any version)
//!    ├─ no registry: C3 01 │ fp 8 B LE │ avro      ├─ 00 ────► schema id ───► registry (cached)
//!    │  (fp: CRC-64-AVRO of the spec's Parsing Canonical Form, see fingerprint.rs)
//!    └─ registry:    00 │ id 4 B BE │ avro         ├─ else ──► DecodeError::UnknownMagic
//!       (subject "<topic>-value")                  └─ writer schema ─► resolve ─► current schema
//! ```
//!
//! Why two formats: production clusters run a Confluent-compatible registry, so we speak the
//! Confluent wire format there (`SCHEMA_REGISTRY_URL` set) and interoperate with every Kafka
//! tool. Development, CI and air-gapped deployments have no registry; there the Avro
//! specification's single-object encoding makes each record self-describing by fingerprint, and
//! the schemas bundled from the repository's `schemas/` directory act as the registry. The
//! decoder accepts both at all times, so a topic can migrate from one to the other.
//!
//! Decoding never panics and never trusts a length prefix beyond [`MAX_ALLOCATION_BYTES`]:
//! every failure is a typed [`DecodeError`] that the runtime dead-letters.

pub(crate) mod de;
mod direct;
mod error;
mod fingerprint;
mod framed;
mod read;
mod schema_registry;
pub(crate) mod ser;
mod store;
mod value;
mod writer;

use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::Schema;

pub use error::{CodecError, DecodeError};
pub use fingerprint::{
    crc64_avro, json_schema_fingerprint, legacy_schema_fingerprint, parsing_canonical_form,
    schema_fingerprint, CRC64_AVRO_EMPTY,
};
pub use framed::Framed;
pub use store::{SchemaStore, StoredSchema, HISTORY_DIR};
pub use value::{avro_to_json, example_value, json_to_avro};

use framed::Writer;
use schema_registry::SchemaRegistry;

use crate::record::{self, Record, RecordError};

/// First two bytes of Avro single-object encoding (marker 0xC3, format version 0x01).
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];
/// Single-object header length: marker plus the 8-byte little-endian fingerprint.
pub const SINGLE_OBJECT_HEADER_LEN: usize = 10;
/// Magic byte of the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0x00;
/// Confluent header length: magic byte plus the 4-byte big-endian schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;
/// Upper bound on any single allocation the Avro decoder makes for a length prefix (strings,
/// bytes, array and map blocks), installed process-wide by [`Codec::new`]. Garbage bytes can
/// claim a length of gigabytes; this caps the damage per record. 16 MiB is far above any record
/// our topics accept (Kafka's default `max.message.bytes` is 1 MiB).
pub const MAX_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

/// Environment variable naming the schema registry (unset or empty: single-object encoding).
pub const REGISTRY_URL_ENV: &str = "SCHEMA_REGISTRY_URL";
/// Environment variable with registry basic-auth credentials as `user:password` (the name
/// Confluent's tools use), e.g. a Confluent Cloud API key and secret.
pub const REGISTRY_AUTH_ENV: &str = "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO";

/// How a decoded record was framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// Avro single-object encoding; `fingerprint` is the writer schema's CRC-64-AVRO.
    SingleObject {
        /// Writer schema fingerprint from the header.
        fingerprint: u64,
    },
    /// Confluent wire format; `schema_id` is the registry id of the writer schema.
    Confluent {
        /// Registry schema id from the header.
        schema_id: u32,
    },
}

/// A decoded record value.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Full name of the schema (e.g. `evalstream.eval.EvalSubmission`); processors dispatch on it.
    pub schema_name: String,
    /// The value in the shape of the CURRENT schema of that name (resolved from the writer
    /// schema when the record was written with an older version). When the registry's writer
    /// schema has a name this binary does not know, the value keeps the writer's shape.
    pub value: Value,
    /// How the record was framed, for diagnostics and DLQ headers.
    pub format: WireFormat,
}

/// Encoder/decoder shared by every part of a process. Cheap to clone (one `Arc`), `Send + Sync`,
/// and synchronous: registry calls block the calling thread (only on cache misses).
#[derive(Clone)]
pub struct Codec {
    inner: Arc<Inner>,
}

struct Inner {
    store: SchemaStore,
    registry: Option<SchemaRegistry>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("schemas", &self.inner.store.names().count())
            .field("registry", &self.registry_url())
            .finish()
    }
}

impl Codec {
    /// A codec over `store`; with `registry_url` it writes the Confluent wire format through that
    /// registry, without it Avro single-object encoding. Also installs the process-wide Avro
    /// allocation limit ([`MAX_ALLOCATION_BYTES`]).
    pub fn new(store: SchemaStore, registry_url: Option<String>) -> Result<Codec, CodecError> {
        Codec::build(store, registry_url, None)
    }

    /// The bundled schemas, the registry from `SCHEMA_REGISTRY_URL` (empty means none) and
    /// optional basic auth from `SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO` (`user:password`).
    pub fn from_env() -> Result<Codec, CodecError> {
        let url = std::env::var(REGISTRY_URL_ENV).ok().filter(|u| !u.trim().is_empty());
        let auth = std::env::var(REGISTRY_AUTH_ENV).ok().filter(|a| !a.is_empty()).map(|a| match a
            .split_once(':')
        {
            Some((user, password)) => (user.to_string(), Some(password.to_string())),
            None => (a, None),
        });
        Codec::build(SchemaStore::bundled()?, url, auth)
    }

    fn build(
        store: SchemaStore,
        registry_url: Option<String>,
        auth: Option<(String, Option<String>)>,
    ) -> Result<Codec, CodecError> {
        let limit = apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        if limit != MAX_ALLOCATION_BYTES {
            tracing::warn!(limit, "apache-avro allocation limit was set before the codec's");
        }
        let registry = registry_url.map(|url| SchemaRegistry::new(url, auth)).transpose()?;
        Ok(Codec { inner: Arc::new(Inner { store, registry }) })
    }

    /// The schema store (names, versions, fingerprints).
    pub fn store(&self) -> &SchemaStore {
        &self.inner.store
    }

    /// The registry URL when the codec writes the Confluent wire format, for `/ready` and logs.
    pub fn registry_url(&self) -> Option<&str> {
        self.inner.registry.as_ref().map(SchemaRegistry::url)
    }

    /// Readiness check of the schema registry (`GET /subjects`); `Ok` when no registry is
    /// configured, since nothing then depends on one.
    pub fn check_registry(&self) -> Result<(), CodecError> {
        match &self.inner.registry {
            Some(r) => r.check(),
            None => Ok(()),
        }
    }

    /// Encodes `value` with the current version of `schema_name` for `topic` (the topic names the
    /// registry subject `<topic>-value`; it is unused without a registry). The value is checked
    /// strictly first: an unknown field, an unknown enum symbol or a wrong type is a
    /// [`CodecError::Value`] naming the field path, never bytes that readers choke on.
    pub fn encode(
        &self,
        topic: &str,
        schema_name: &str,
        value: &Value,
    ) -> Result<Vec<u8>, CodecError> {
        let stored = self.stored(schema_name)?;
        // Fast path: conform and write in one pass (see `direct`). It declines anything unusual
        // and every mismatch; the two-step path below then gives the same bytes or the error
        // that names the field path.
        let mut out = self.header(topic, stored, 128)?;
        if direct::write_conformed(stored.schema(), &stored.names, value, &mut out).is_ok() {
            return Ok(out);
        }
        let conformed = value::conform(stored.schema(), &stored.names, value)
            .map_err(|m| m.into_error(stored.full_name()))?;
        self.write_frame(topic, stored, &conformed)
    }

    /// A buffer holding the framing header of `stored` for `topic` (registry id or
    /// fingerprint), with room for a body of `room` bytes after it (a written body's exact
    /// length: growing a 1 KiB record's buffer from a guess copied it four times).
    fn header(
        &self,
        topic: &str,
        stored: &StoredSchema,
        room: usize,
    ) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(SINGLE_OBJECT_HEADER_LEN + room);
        match &self.inner.registry {
            None => out.extend_from_slice(&single_object_header(stored.fingerprint())),
            Some(registry) => {
                let id = registry.id_for(&format!("{topic}-value"), stored)?;
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        Ok(out)
    }

    /// Like [`Codec::encode`] for the friendly JSON form (see [`json_to_avro`]), which is what
    /// `evalstream produce` reads from events files.
    pub fn encode_json(
        &self,
        topic: &str,
        schema_name: &str,
        json: &serde_json::Value,
    ) -> Result<Vec<u8>, CodecError> {
        let stored = self.stored(schema_name)?;
        let value = value::json_to_avro_with(stored.schema(), &stored.names, json)
            .map_err(|m| m.into_error(stored.full_name()))?;
        self.write_frame(topic, stored, &value)
    }

    /// The framed record of `body`, an Avro body of the current `schema_name` written earlier
    /// with the schema whose fingerprint is `fingerprint` (see `Output::record`); `None` when
    /// that is not this codec's current schema of the name, and the caller must encode a value.
    pub(crate) fn encode_written(
        &self,
        topic: &str,
        schema_name: &str,
        fingerprint: u64,
        body: &[u8],
    ) -> Option<Result<Vec<u8>, CodecError>> {
        let stored = match self.stored(schema_name) {
            Ok(stored) => stored,
            Err(e) => return Some(Err(e)),
        };
        if stored.fingerprint() != fingerprint {
            return None;
        }
        Some(self.header(topic, stored, body.len()).map(|mut out| {
            out.extend_from_slice(body);
            out
        }))
    }

    /// Encodes a typed record with the current version of `T::SCHEMA` (see [`crate::record`]).
    pub fn encode_record<T: Record>(&self, topic: &str, value: &T) -> Result<Vec<u8>, RecordError> {
        Ok(self.encode(topic, T::SCHEMA, &record::to_avro(value)?)?)
    }

    /// Decodes record bytes into a typed record; a record of another schema is
    /// [`RecordError::WrongSchema`].
    pub fn decode_record<T: Record>(&self, bytes: &[u8]) -> Result<T, RecordError> {
        self.frame(bytes)?.decode()
    }

    fn stored(&self, schema_name: &str) -> Result<&StoredSchema, CodecError> {
        self.inner
            .store
            .current_arc(schema_name)
            .map(|s| &**s)
            .ok_or_else(|| CodecError::UnknownSchema(schema_name.to_string()))
    }

    fn write_frame(
        &self,
        topic: &str,
        stored: &StoredSchema,
        value: &Value,
    ) -> Result<Vec<u8>, CodecError> {
        match &self.inner.registry {
            None => write_framed(stored, value, &single_object_header(stored.fingerprint())),
            Some(registry) => {
                let id = registry.id_for(&format!("{topic}-value"), stored)?;
                let mut header = [0u8; CONFLUENT_HEADER_LEN];
                header[0] = CONFLUENT_MAGIC;
                header[1..].copy_from_slice(&id.to_be_bytes());
                write_framed(stored, value, &header)
            }
        }
    }

    /// Decodes record bytes in either wire format into the current schema of their name.
    /// Never panics: empty, truncated, foreign, unknown or corrupt input is a [`DecodeError`].
    pub fn decode(&self, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let (writer, format, body) = self.parse_header(bytes)?;
        let value = self.decode_body(&writer, body)?;
        Ok(Decoded { schema_name: writer.name().to_string(), value, format })
    }

    /// The writer schema named by the framing header, the format, and the Avro body after it.
    fn parse_header<'a>(
        &'a self,
        bytes: &'a [u8],
    ) -> Result<(Writer<'a>, WireFormat, &'a [u8]), DecodeError> {
        match bytes.first() {
            None => Err(DecodeError::Empty),
            Some(&b) if b == SINGLE_OBJECT_MARKER[0] => self.parse_single_object(bytes),
            Some(&CONFLUENT_MAGIC) => self.parse_confluent(bytes),
            Some(&byte) => Err(DecodeError::UnknownMagic { byte }),
        }
    }

    fn parse_single_object<'a>(
        &'a self,
        bytes: &'a [u8],
    ) -> Result<(Writer<'a>, WireFormat, &'a [u8]), DecodeError> {
        let truncated = || DecodeError::TruncatedHeader {
            format: "single-object",
            needed: SINGLE_OBJECT_HEADER_LEN,
            got: bytes.len(),
        };
        match bytes.get(1) {
            None => return Err(truncated()),
            Some(&v) if v != SINGLE_OBJECT_MARKER[1] => {
                return Err(DecodeError::UnsupportedSingleObjectVersion { byte: v })
            }
            Some(_) => {}
        }
        let (header, body) = match bytes.split_at_checked(SINGLE_OBJECT_HEADER_LEN) {
            Some(parts) => parts,
            None => return Err(truncated()),
        };
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&header[2..]);
        let fingerprint = u64::from_le_bytes(fp);
        let writer = self
            .inner
            .store
            .by_fingerprint(fingerprint)
            .ok_or(DecodeError::UnknownFingerprint { fingerprint })?;
        Ok((Writer::Stored(writer), WireFormat::SingleObject { fingerprint }, body))
    }

    fn parse_confluent<'a>(
        &'a self,
        bytes: &'a [u8],
    ) -> Result<(Writer<'a>, WireFormat, &'a [u8]), DecodeError> {
        let (header, body) =
            bytes.split_at_checked(CONFLUENT_HEADER_LEN).ok_or(DecodeError::TruncatedHeader {
                format: "confluent",
                needed: CONFLUENT_HEADER_LEN,
                got: bytes.len(),
            })?;
        let mut id = [0u8; 4];
        id.copy_from_slice(&header[1..]);
        let schema_id = u32::from_be_bytes(id);
        let registry = self.inner.registry.as_ref().ok_or(DecodeError::NoRegistry { schema_id })?;
        let writer = registry.schema(schema_id)?;
        Ok((Writer::Registry(writer), WireFormat::Confluent { schema_id }, body))
    }

    /// The value of `body` written with `writer`, resolved to the current schema of its name.
    fn decode_body(&self, writer: &Writer<'_>, body: &[u8]) -> Result<Value, DecodeError> {
        let value = match writer {
            Writer::Stored(w) => read_stored(w, body)?,
            Writer::Registry(w) => read_datum(&w.schema, &w.name, body)?,
        };
        match self.inner.store.current(writer.name()) {
            Some(reader) if reader.fingerprint() != writer.fingerprint() => {
                resolve(value, reader.schema(), writer.name())
            }
            _ => Ok(value),
        }
    }
}

/// Writes `value` as an Avro body of `stored` straight from serde (`ser`), or declines.
pub(crate) fn write_serialized<T: serde::Serialize + ?Sized>(
    stored: &StoredSchema,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), direct::NotDirect> {
    ser::write_serialized(stored.schema(), &stored.names, value, out)
}

/// The value of an Avro body of `stored` (no resolution). Fast path (see `read`); anything it
/// declines is decoded by apache-avro, which gives the same value or the precise error.
pub(crate) fn read_stored(stored: &StoredSchema, body: &[u8]) -> Result<Value, DecodeError> {
    match read::read_value(stored.schema(), &stored.names, body) {
        Ok((value, [])) => Ok(value),
        _ => read_datum(stored.schema(), stored.full_name(), body),
    }
}

/// `T` read straight from a valid Avro body of `stored` (`de`; the runtime wrote it); `None`
/// when that path does not support it and the value path must be used.
pub(crate) fn deserialize_stored<T: serde::de::DeserializeOwned>(
    stored: &StoredSchema,
    body: &[u8],
) -> Option<Result<T, RecordError>> {
    match de::from_validated_slice::<T>(stored.schema(), &stored.names, body) {
        Ok(value) => Some(Ok(value)),
        Err(de::DeError::Shape(message)) => {
            Some(Err(RecordError::Shape { schema: stored.full_name().to_string(), message }))
        }
        Err(de::DeError::Unsupported(_) | de::DeError::Malformed(_)) => None,
    }
}

/// Encodes `value` in single-object format with one specific stored version (current or
/// history), bypassing the registry. Exists so compatibility tests and replay tools can produce
/// data exactly as an older producer would have.
pub fn encode_single_object(stored: &StoredSchema, value: &Value) -> Result<Vec<u8>, CodecError> {
    let conformed = value::conform(stored.schema(), &stored.names, value)
        .map_err(|m| m.into_error(stored.full_name()))?;
    write_framed(stored, &conformed, &single_object_header(stored.fingerprint()))
}

fn single_object_header(fingerprint: u64) -> [u8; SINGLE_OBJECT_HEADER_LEN] {
    let mut header = [0u8; SINGLE_OBJECT_HEADER_LEN];
    header[..2].copy_from_slice(&SINGLE_OBJECT_MARKER);
    header[2..].copy_from_slice(&fingerprint.to_le_bytes());
    header
}

/// `header` then the Avro encoding of a conformed `value` (see [`writer`]: map entries in key
/// order, so equal values always give equal bytes).
fn write_framed(
    stored: &StoredSchema,
    value: &Value,
    header: &[u8],
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(header.len() + 64);
    out.extend_from_slice(header);
    writer::write_value(&mut out, value)
        .map_err(|message| CodecError::Avro { schema: stored.full_name().to_string(), message })?;
    Ok(out)
}

/// A byte-slice reader that remembers whether anyone tried to read past its end.
///
/// Why: apache-avro decodes a union whose branch index hits end-of-input as `Union(0, null)`
/// (a leniency for old writers), even when branch 0 is not `null`. For us a record that ends
/// early is truncated, never a record with a null field, so any read at the end is an error.
struct StrictSlice<'a> {
    rest: &'a [u8],
    read_past_end: bool,
}

impl std::io::Read for StrictSlice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.rest.is_empty() && !buf.is_empty() {
            self.read_past_end = true;
        }
        self.rest.read(buf)
    }
}

/// Decodes one datum that must span `body` exactly.
fn read_datum(schema: &Schema, name: &str, body: &[u8]) -> Result<Value, DecodeError> {
    let invalid = |message: String| DecodeError::InvalidBody { schema: name.to_string(), message };
    let reader = GenericDatumReader::builder(schema).build().map_err(|e| invalid(e.to_string()))?;
    let mut input = StrictSlice { rest: body, read_past_end: false };
    let value = reader.read_value(&mut input).map_err(|e| invalid(e.to_string()))?;
    if input.read_past_end {
        return Err(invalid("unexpected end of data".into()));
    }
    if !input.rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            schema: name.to_string(),
            count: input.rest.len(),
        });
    }
    Ok(value)
}

/// Avro schema resolution of writer-shaped data into the reader schema (fields added with
/// defaults, removed fields dropped, unknown enum symbols mapped to the enum default).
fn resolve(value: Value, reader: &Schema, name: &str) -> Result<Value, DecodeError> {
    value
        .resolve(reader)
        .map_err(|e| DecodeError::Resolution { schema: name.to_string(), message: e.to_string() })
}

#[cfg(test)]
mod tests;
