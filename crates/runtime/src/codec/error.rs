//! Typed errors of the codec.
//!
//! Two enums because the two directions fail for different reasons and are handled by different
//! code: [`CodecError`] is what a *producer* of data gets (bad schema files, a value that does not
//! match its schema, a registry that refuses a schema) and is usually a bug or a bad input file;
//! [`DecodeError`] is what a *consumer* gets for bytes from a topic and always ends in the DLQ
//! (class `deserialization`), except that [`DecodeError::is_transient`] tells the engine when a
//! retry could succeed (registry unreachable).

use thiserror::Error;

/// Why encoding a value, converting JSON or loading schemas failed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CodecError {
    /// The store has no current schema with this full name (e.g. `evalstream.eval.EvalSubmission`).
    #[error("unknown schema {0}")]
    UnknownSchema(String),
    /// A schema file could not be read.
    #[error("reading {path}: {message}")]
    Io {
        /// File or directory that failed.
        path: String,
        /// The operating system's reason.
        message: String,
    },
    /// A schema file is not a valid Avro schema, or breaks the layout rules of `schemas/`
    /// (duplicate current name, history directory not named after the schema, ...).
    #[error("schema {path}: {message}")]
    Schema {
        /// Path of the offending file, relative to the schemas directory.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A value (Avro or JSON) does not match its schema. `path` names the field, e.g.
    /// `resource.gpu_count` or `reasons[2]`, so that a bad line of an events file can be fixed
    /// without guessing.
    #[error("{schema} at {path}: {message}")]
    Value {
        /// Full name of the schema the value was checked against.
        schema: String,
        /// Field path inside the value (`<root>` for the value itself).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Avro could not serialise an already validated value (should not happen; kept typed so it
    /// is never a panic).
    #[error("avro encoding of {schema}: {message}")]
    Avro {
        /// Full name of the schema.
        schema: String,
        /// The Avro library's message.
        message: String,
    },
    /// The codec configuration is invalid (e.g. a registry URL that is not http(s)).
    #[error("codec configuration: {0}")]
    Config(String),
    /// The schema registry refused or failed a request while encoding (e.g. registering the
    /// schema under `<topic>-value` was rejected as incompatible).
    #[error("schema registry, subject {subject}: {message}")]
    Registry {
        /// Registry subject (`<topic>-value`).
        subject: String,
        /// The registry client's message.
        message: String,
        /// True when the failure was transport-level and a retry may succeed.
        transient: bool,
    },
}

/// Why bytes from a topic could not be decoded. Every variant is a typed, non-panicking outcome
/// of garbage, truncated or foreign input; the runtime dead-letters the record with
/// [`DecodeError::class`] as the error class.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DecodeError {
    /// Zero-length value (a tombstone or an empty produce).
    #[error("empty record value")]
    Empty,
    /// The value is shorter than the header of the format its first byte announces.
    #[error("truncated {format} header: need {needed} bytes, got {got}")]
    TruncatedHeader {
        /// `single-object` or `confluent`.
        format: &'static str,
        /// Header length of that format.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The first byte is neither the Confluent magic byte 0x00 nor the single-object marker 0xC3.
    #[error(
        "unknown magic byte 0x{byte:02x} (expected 0x00 Confluent or 0xC3 0x01 single-object)"
    )]
    UnknownMagic {
        /// The first byte.
        byte: u8,
    },
    /// 0xC3 followed by something other than the single-object format version 0x01.
    #[error("unsupported single-object marker 0xc3 0x{byte:02x} (expected 0xc3 0x01)")]
    UnsupportedSingleObjectVersion {
        /// The second byte.
        byte: u8,
    },
    /// Single-object data whose writer-schema fingerprint is not in the schema store (neither a
    /// current nor a history version).
    #[error("unknown schema fingerprint {fingerprint:016x}")]
    UnknownFingerprint {
        /// CRC-64-AVRO fingerprint from the header.
        fingerprint: u64,
    },
    /// Confluent data whose schema id the registry does not know.
    #[error("unknown schema id {schema_id} in the schema registry")]
    UnknownSchemaId {
        /// Schema id from the header.
        schema_id: u32,
    },
    /// Confluent data, but this codec has no registry configured (`SCHEMA_REGISTRY_URL` unset).
    #[error("schema id {schema_id}: Confluent wire format but no schema registry is configured")]
    NoRegistry {
        /// Schema id from the header.
        schema_id: u32,
    },
    /// The registry could not be reached (network error, timeout, 502/503). A retry may succeed.
    #[error("schema registry unreachable while fetching schema id {schema_id}: {message}")]
    RegistryUnavailable {
        /// Schema id being fetched.
        schema_id: u32,
        /// The registry client's message.
        message: String,
    },
    /// The registry answered, but not with a usable Avro schema (error status, schema type
    /// other than Avro, unparsable schema, schema references).
    #[error("schema registry, schema id {schema_id}: {message}")]
    Registry {
        /// Schema id being fetched.
        schema_id: u32,
        /// What was wrong.
        message: String,
    },
    /// The Avro body does not decode with the writer schema (bad length, bad union index,
    /// invalid UTF-8, premature end, allocation limit, ...).
    #[error("invalid avro body for {schema}: {message}")]
    InvalidBody {
        /// Full name of the writer schema.
        schema: String,
        /// The Avro library's message.
        message: String,
    },
    /// Bytes remain after a complete datum: the record is not what its header claims.
    #[error("{count} trailing bytes after the {schema} datum")]
    TrailingBytes {
        /// Full name of the writer schema.
        schema: String,
        /// Number of unread bytes.
        count: usize,
    },
    /// The datum decoded with its writer schema but cannot be resolved into the current reader
    /// schema of that name (e.g. an enum symbol unknown to the reader and no default).
    #[error("cannot resolve {schema} data into the current schema: {message}")]
    Resolution {
        /// Full name of the schema.
        schema: String,
        /// The Avro library's message.
        message: String,
    },
}

impl DecodeError {
    /// DLQ error class for this failure (the `__evalstream.errors.class` header). Every decode
    /// failure is a `deserialization` failure: the record's bytes are the problem, not the
    /// processor.
    pub fn class(&self) -> &'static str {
        "deserialization"
    }

    /// True when the failure is about our environment rather than the record (the registry
    /// is unreachable), so the engine may back off and retry instead of dead-lettering a record
    /// that will decode fine a minute later.
    pub fn is_transient(&self) -> bool {
        matches!(self, DecodeError::RegistryUnavailable { .. })
    }
}
