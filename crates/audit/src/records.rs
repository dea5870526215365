//! Typed forms of the records on `audit.chain` and `audit.verifications`, and their Avro values.
//!
//! ```text
//!  audit.chain[p]:  ChainRecord { partition: p, kind, entry | checkpoint }
//!                      entry:      ChainEntry  (one per chained event, seq 0, 1, 2, ...)
//!                      checkpoint: Checkpoint  (tree size, root, head, frontier, signature)
//!  audit.verifications: VerificationResult { partition, seq/offset range, status, ... }
//! ```
//!
//! The schemas are `schemas/evalstream/audit/ChainRecord.avsc` and `VerificationResult.avsc`;
//! `to_avro` writes fields in schema order and `from_avro` reads by field name, accepting the
//! shapes the runtime's codec produces (union-wrapped or bare values, `timestamp-millis` or
//! `long`, enum or string symbols). Structural problems (a hash that is not 32 bytes, an entry
//! record without its entry) are [`RecordError`]s: on `audit.chain` such a record is itself a
//! finding for the verifier, not something to repair.

use apache_avro::types::Value;
use thiserror::Error;

use crate::chain::{self, AppendedEntry, AuditEventJson};
use crate::checkpoint::{CheckpointBody, CheckpointError, CHECKPOINT_ORIGIN};
use crate::merkle::{CompactRange, Hash, MerkleError};

/// Full name of the `audit.chain` record schema.
pub const CHAIN_RECORD_SCHEMA: &str = "evalstream.audit.ChainRecord";

/// Full name of the `audit.verifications` record schema.
pub const VERIFICATION_RESULT_SCHEMA: &str = "evalstream.audit.VerificationResult";

/// Why a value is not a well-formed record of our schemas (field paths are dotted, e.g.
/// `checkpoint.root`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// A required field is absent.
    #[error("{0}: missing field")]
    MissingField(String),
    /// A field that the schema (and so the hash) does not know.
    #[error("{0}: unknown field")]
    UnknownField(String),
    /// A field holds the wrong kind of value.
    #[error("{field}: expected {expected}")]
    WrongType {
        /// Field path.
        field: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A number outside the range of its type (negative sequence numbers, partitions beyond
    /// `i32::MAX`, ...).
    #[error("{field}: value {value} out of range")]
    OutOfRange {
        /// Field path.
        field: String,
        /// The value, as text.
        value: String,
    },
    /// A hash field that is not exactly 32 bytes.
    #[error("{field}: expected a 32-byte hash, got {len} bytes")]
    HashLength {
        /// Field path.
        field: String,
        /// Actual length.
        len: usize,
    },
    /// An enum symbol this version does not know.
    #[error("{field}: unknown symbol {symbol:?}")]
    UnknownSymbol {
        /// Field path.
        field: String,
        /// The symbol.
        symbol: String,
    },
    /// Fields that contradict each other (e.g. `kind` entry with a null `entry`).
    #[error("inconsistent record: {0}")]
    Inconsistent(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Enums

/// What a `ChainRecord` carries (Avro enum `evalstream.audit.ChainRecordKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainRecordKind {
    /// A chained event.
    Entry,
    /// A checkpoint over the entries before it.
    Checkpoint,
}

/// Signing state of a checkpoint (Avro enum `evalstream.audit.CheckpointStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointStatus {
    /// `kid`, `signature` and `signer_kind` are set.
    Signed,
    /// The signer was unavailable; the same checkpoint is re-emitted as `Signed` later.
    PendingSignature,
}

/// Outcome of verifying a range of a chain (Avro enum `evalstream.audit.VerificationStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationStatus {
    /// Every hash, link, sequence number, root and signature in the range checks out.
    Ok,
    /// A recomputed entry hash, link or Merkle root differs from the recorded one.
    HashMismatch,
    /// A sequence number is missing or repeated.
    Gap,
    /// A checkpoint signature does not verify with its signer's key.
    SignatureInvalid,
    /// A checkpoint names a `kid` absent from the signer registry (or not valid at its time).
    UnknownSigner,
    /// The range is only covered by checkpoints that still wait for a signature.
    PendingSignature,
}

/// Avro enum symbols in schema order, with their Rust values.
trait Symbols: Sized + Copy + PartialEq + 'static {
    const ALL: &'static [(Self, &'static str)];

    fn symbol(self) -> &'static str {
        Self::ALL.iter().find(|(v, _)| *v == self).map(|(_, s)| *s).unwrap_or("")
    }

    fn to_avro(self) -> Value {
        let index = Self::ALL.iter().position(|(v, _)| *v == self).unwrap_or(0);
        Value::Enum(index as u32, self.symbol().to_string())
    }

    fn from_symbol(field: &str, symbol: &str) -> Result<Self, RecordError> {
        Self::ALL.iter().find(|(_, s)| *s == symbol).map(|(v, _)| *v).ok_or_else(|| {
            RecordError::UnknownSymbol { field: field.to_string(), symbol: symbol.to_string() }
        })
    }
}

impl Symbols for ChainRecordKind {
    const ALL: &'static [(Self, &'static str)] =
        &[(ChainRecordKind::Entry, "entry"), (ChainRecordKind::Checkpoint, "checkpoint")];
}

impl Symbols for CheckpointStatus {
    const ALL: &'static [(Self, &'static str)] = &[
        (CheckpointStatus::Signed, "signed"),
        (CheckpointStatus::PendingSignature, "pending_signature"),
    ];
}

impl Symbols for VerificationStatus {
    const ALL: &'static [(Self, &'static str)] = &[
        (VerificationStatus::Ok, "ok"),
        (VerificationStatus::HashMismatch, "hash_mismatch"),
        (VerificationStatus::Gap, "gap"),
        (VerificationStatus::SignatureInvalid, "signature_invalid"),
        (VerificationStatus::UnknownSigner, "unknown_signer"),
        (VerificationStatus::PendingSignature, "pending_signature"),
    ];
}

impl ChainRecordKind {
    /// The Avro symbol (`entry`, `checkpoint`).
    pub fn as_str(self) -> &'static str {
        self.symbol()
    }
}

impl CheckpointStatus {
    /// The Avro symbol (`signed`, `pending_signature`).
    pub fn as_str(self) -> &'static str {
        self.symbol()
    }
}

impl VerificationStatus {
    /// The Avro symbol (`ok`, `hash_mismatch`, ...), also used as a metrics label.
    pub fn as_str(self) -> &'static str {
        self.symbol()
    }
}

// ---------------------------------------------------------------------------------------------
// Records

/// One record of `audit.chain`, written to partition `partition` (the chain's partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    /// The chain this record belongs to; equals the Kafka partition it is written to.
    pub partition: u32,
    /// An entry or a checkpoint.
    pub body: ChainRecordBody,
}

/// The payload of a [`ChainRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainRecordBody {
    /// A chained event.
    Entry(ChainEntry),
    /// A checkpoint.
    Checkpoint(Checkpoint),
}

/// One chained event (Avro record `evalstream.audit.ChainEntry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEntry {
    /// Position in the chain, from 0 without gaps.
    pub seq: u64,
    /// The event's id (deduplication key), copied out of `canonical` for lookups.
    pub event_id: String,
    /// The event's type, copied out of `canonical` for filtering.
    pub event_type: String,
    /// The event's `occurred_at` (ms since the Unix epoch).
    pub occurred_at: i64,
    /// Entry hash of `seq - 1`, or the partition's genesis hash for `seq` 0.
    pub prev_hash: Hash,
    /// `chain::entry_hash(prev_hash, seq, canonical)`.
    pub entry_hash: Hash,
    /// The exact RFC 8785 bytes that were hashed.
    pub canonical: Vec<u8>,
    /// `audit.events` partition the event was read from.
    pub source_partition: u32,
    /// `audit.events` offset the event was read from (progress lives in the outputs).
    pub source_offset: i64,
}

/// A checkpoint over entries `0..tree_size` (Avro record `evalstream.audit.Checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Number of entries covered.
    pub tree_size: u64,
    /// RFC 6962 tree head over their entry hashes.
    pub root: Hash,
    /// Entry hash of `tree_size - 1` (the genesis hash when `tree_size` is 0).
    pub head_hash: Hash,
    /// `occurred_at` of entry `tree_size - 1` (0 when empty); never the wall clock.
    pub time_ms: i64,
    /// Compact range at `tree_size` (largest subtree first), to resume the tree after a restart.
    pub frontier: Vec<Hash>,
    /// Whether the signature fields are set yet.
    pub status: CheckpointStatus,
    /// Signer key id in the signer registry.
    pub kid: Option<String>,
    /// DER ECDSA P-256 signature over the checkpoint body.
    pub signature: Option<Vec<u8>>,
    /// Which signer produced it: `kms`, `local` or `proxy`.
    pub signer_kind: Option<String>,
}

/// One verification finding or success (Avro record `evalstream.audit.VerificationResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationResult {
    /// The chain (partition) verified.
    pub partition: u32,
    /// First sequence number of the range.
    pub from_seq: u64,
    /// Last sequence number of the range (inclusive).
    pub to_seq: u64,
    /// `audit.chain` offset of the first record of the range.
    pub from_offset: i64,
    /// `audit.chain` offset of the last record of the range (inclusive).
    pub to_offset: i64,
    /// The outcome.
    pub status: VerificationStatus,
    /// The earliest failing sequence number, when not `ok`.
    pub first_failing_seq: Option<u64>,
    /// Event id of that entry, when known.
    pub event_id: Option<String>,
    /// `audit.chain` offset of that record, when known.
    pub offset: Option<i64>,
    /// Human-readable explanation.
    pub detail: String,
}

impl ChainEntry {
    /// The entry for `event`, chained as `appended`, read from `audit.events`
    /// `source_partition`/`source_offset`.
    pub fn new(
        appended: &AppendedEntry,
        event: &AuditEventJson,
        canonical: Vec<u8>,
        source_partition: u32,
        source_offset: i64,
    ) -> ChainEntry {
        ChainEntry {
            seq: appended.seq,
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            occurred_at: event.occurred_at,
            prev_hash: appended.prev_hash,
            entry_hash: appended.entry_hash,
            canonical,
            source_partition,
            source_offset,
        }
    }

    /// The entry hash recomputed from `prev_hash`, `seq` and `canonical`; a verifier compares
    /// it with `entry_hash`.
    pub fn recomputed_hash(&self) -> Hash {
        chain::entry_hash(&self.prev_hash, self.seq, &self.canonical)
    }
}

impl Checkpoint {
    /// An unsigned checkpoint at the current state of a chain: `range` covers its entries,
    /// `head_hash` is the last entry hash and `time_ms` the last entry's `occurred_at`.
    pub fn pending(range: &CompactRange, head_hash: Hash, time_ms: i64) -> Checkpoint {
        Checkpoint {
            tree_size: range.size(),
            root: range.root(),
            head_hash,
            time_ms,
            frontier: range.hashes().to_vec(),
            status: CheckpointStatus::PendingSignature,
            kid: None,
            signature: None,
            signer_kind: None,
        }
    }

    /// The same checkpoint, signed.
    pub fn with_signature(
        mut self,
        kid: String,
        signer_kind: String,
        signature: Vec<u8>,
    ) -> Checkpoint {
        self.status = CheckpointStatus::Signed;
        self.kid = Some(kid);
        self.signer_kind = Some(signer_kind);
        self.signature = Some(signature);
        self
    }

    /// The body a signer signs for this checkpoint of chain `partition`
    /// (origin [`CHECKPOINT_ORIGIN`]).
    pub fn body(&self, partition: u32) -> Result<Vec<u8>, CheckpointError> {
        CheckpointBody {
            origin: CHECKPOINT_ORIGIN.to_string(),
            partition,
            tree_size: self.tree_size,
            root: self.root,
            head_hash: self.head_hash,
            time_ms: self.time_ms,
        }
        .encode()
    }

    /// The compact range to resume from, checked against the signed root: a frontier that does
    /// not reproduce `root` is [`MerkleError::RootMismatch`].
    pub fn compact_range(&self) -> Result<CompactRange, MerkleError> {
        let range = CompactRange::from_hashes(self.tree_size, self.frontier.clone())?;
        if range.root() != self.root {
            return Err(MerkleError::RootMismatch);
        }
        Ok(range)
    }
}

// ---------------------------------------------------------------------------------------------
// Avro conversion

fn null() -> Value {
    Value::Union(0, Box::new(Value::Null))
}

fn some(v: Value) -> Value {
    Value::Union(1, Box::new(v))
}

fn opt<T>(v: &Option<T>, f: impl FnOnce(&T) -> Value) -> Value {
    v.as_ref().map(|x| some(f(x))).unwrap_or_else(null)
}

fn long(field: &str, v: u64) -> Result<Value, RecordError> {
    i64::try_from(v)
        .map(Value::Long)
        .map_err(|_| RecordError::OutOfRange { field: field.to_string(), value: v.to_string() })
}

fn int(field: &str, v: u32) -> Result<Value, RecordError> {
    i32::try_from(v)
        .map(Value::Int)
        .map_err(|_| RecordError::OutOfRange { field: field.to_string(), value: v.to_string() })
}

fn bytes(h: &[u8]) -> Value {
    Value::Bytes(h.to_vec())
}

/// The value inside any number of union wrappers.
fn plain(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => plain(inner),
        other => other,
    }
}

/// The fields of a record value (looking through union wrappers).
pub(crate) fn record_fields<'a>(
    value: &'a Value,
    what: &str,
) -> Result<&'a [(String, Value)], RecordError> {
    match plain(value) {
        Value::Record(fields) => Ok(fields),
        _ => Err(RecordError::WrongType { field: what.to_string(), expected: "record" }),
    }
}

/// Fails on the first field not in `known`.
pub(crate) fn reject_unknown(
    fields: &[(String, Value)],
    known: &[&str],
) -> Result<(), RecordError> {
    match fields.iter().find(|(n, _)| !known.contains(&n.as_str())) {
        Some((n, _)) => Err(RecordError::UnknownField(n.clone())),
        None => Ok(()),
    }
}

/// Typed access to the fields of one record value, naming fields by dotted path in errors.
struct Fields<'a> {
    fields: &'a [(String, Value)],
    prefix: &'static str,
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value, what: &'static str, prefix: &'static str) -> Result<Self, RecordError> {
        Ok(Fields { fields: record_fields(value, what)?, prefix })
    }

    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn wrong(&self, name: &str, expected: &'static str) -> RecordError {
        RecordError::WrongType { field: self.path(name), expected }
    }

    fn get(&self, name: &str) -> Result<&'a Value, RecordError> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| plain(v))
            .ok_or_else(|| RecordError::MissingField(self.path(name)))
    }

    /// `None` for an absent field or a null value.
    fn optional(&self, name: &str) -> Option<&'a Value> {
        match self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| plain(v)) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn string_value(&self, name: &str, v: &Value) -> Result<String, RecordError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.wrong(name, "string")),
        }
    }

    fn string(&self, name: &str) -> Result<String, RecordError> {
        self.string_value(name, self.get(name)?)
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, RecordError> {
        self.optional(name).map(|v| self.string_value(name, v)).transpose()
    }

    fn long_value(&self, name: &str, v: &Value) -> Result<i64, RecordError> {
        match v {
            Value::Long(l) | Value::TimestampMillis(l) => Ok(*l),
            Value::Int(i) => Ok(i64::from(*i)),
            _ => Err(self.wrong(name, "long")),
        }
    }

    fn long(&self, name: &str) -> Result<i64, RecordError> {
        self.long_value(name, self.get(name)?)
    }

    fn opt_long(&self, name: &str) -> Result<Option<i64>, RecordError> {
        self.optional(name).map(|v| self.long_value(name, v)).transpose()
    }

    fn non_negative(&self, name: &str, v: i64) -> Result<u64, RecordError> {
        u64::try_from(v)
            .map_err(|_| RecordError::OutOfRange { field: self.path(name), value: v.to_string() })
    }

    fn unsigned_long(&self, name: &str) -> Result<u64, RecordError> {
        self.non_negative(name, self.long(name)?)
    }

    fn opt_unsigned_long(&self, name: &str) -> Result<Option<u64>, RecordError> {
        self.opt_long(name)?.map(|v| self.non_negative(name, v)).transpose()
    }

    fn partition(&self, name: &str) -> Result<u32, RecordError> {
        let v = match self.get(name)? {
            Value::Int(i) => i64::from(*i),
            Value::Long(l) => *l,
            _ => return Err(self.wrong(name, "int")),
        };
        i32::try_from(v)
            .ok()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| RecordError::OutOfRange { field: self.path(name), value: v.to_string() })
    }

    fn bytes_value(&self, name: &str, v: &Value) -> Result<Vec<u8>, RecordError> {
        match v {
            Value::Bytes(b) | Value::Fixed(_, b) => Ok(b.clone()),
            _ => Err(self.wrong(name, "bytes")),
        }
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, RecordError> {
        self.bytes_value(name, self.get(name)?)
    }

    fn opt_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, RecordError> {
        self.optional(name).map(|v| self.bytes_value(name, v)).transpose()
    }

    fn hash_of(&self, name: &str, b: &[u8]) -> Result<Hash, RecordError> {
        b.try_into().map_err(|_| RecordError::HashLength { field: self.path(name), len: b.len() })
    }

    fn hash(&self, name: &str) -> Result<Hash, RecordError> {
        self.hash_of(name, &self.bytes(name)?)
    }

    fn symbol<S: Symbols>(&self, name: &str) -> Result<S, RecordError> {
        match self.get(name)? {
            Value::Enum(_, s) | Value::String(s) => S::from_symbol(&self.path(name), s),
            _ => Err(self.wrong(name, "enum symbol")),
        }
    }
}

/// `occurred_at` / `time_ms` style field: `timestamp-millis`.
fn millis(v: i64) -> Value {
    Value::TimestampMillis(v)
}

/// Reads a string field of a record value (used by `chain` for `AuditEvent`).
pub(crate) fn get_string(fields: &[(String, Value)], name: &str) -> Result<String, RecordError> {
    Fields { fields, prefix: "" }.string(name)
}

/// Reads a long / timestamp field of a record value (used by `chain` for `AuditEvent`).
pub(crate) fn get_long(fields: &[(String, Value)], name: &str) -> Result<i64, RecordError> {
    Fields { fields, prefix: "" }.long(name)
}

const CHAIN_RECORD_FIELDS: [&str; 4] = ["partition", "kind", "entry", "checkpoint"];
const ENTRY_FIELDS: [&str; 9] = [
    "seq",
    "event_id",
    "event_type",
    "occurred_at",
    "prev_hash",
    "entry_hash",
    "canonical",
    "source_partition",
    "source_offset",
];
const CHECKPOINT_FIELDS: [&str; 9] = [
    "tree_size",
    "root",
    "head_hash",
    "time_ms",
    "frontier",
    "status",
    "kid",
    "signature",
    "signer_kind",
];
const VERIFICATION_FIELDS: [&str; 10] = [
    "partition",
    "from_seq",
    "to_seq",
    "from_offset",
    "to_offset",
    "status",
    "first_failing_seq",
    "event_id",
    "offset",
    "detail",
];

impl ChainRecord {
    /// Decodes one `audit.chain` record value (wire bytes) with the runtime's codec.
    pub fn decode(codec: &evalstream_runtime::codec::Codec, value: &[u8]) -> Result<Self, String> {
        let d = codec.decode(value).map_err(|e| e.to_string())?;
        if d.schema_name != CHAIN_RECORD_SCHEMA {
            return Err(format!("expected {CHAIN_RECORD_SCHEMA}, got {}", d.schema_name));
        }
        ChainRecord::from_avro(&d.value).map_err(|e| e.to_string())
    }

    /// Whether this is an entry or a checkpoint.
    pub fn kind(&self) -> ChainRecordKind {
        match self.body {
            ChainRecordBody::Entry(_) => ChainRecordKind::Entry,
            ChainRecordBody::Checkpoint(_) => ChainRecordKind::Checkpoint,
        }
    }

    /// The Avro value of `evalstream.audit.ChainRecord`, fields in schema order. Fails only for
    /// numbers that do not fit their Avro type (a partition above `i32::MAX`, a sequence number
    /// or tree size above `i64::MAX`).
    pub fn to_avro(&self) -> Result<Value, RecordError> {
        let (entry, checkpoint) = match &self.body {
            ChainRecordBody::Entry(e) => (some(e.to_avro()?), null()),
            ChainRecordBody::Checkpoint(c) => (null(), some(c.to_avro()?)),
        };
        Ok(Value::Record(vec![
            ("partition".into(), int("partition", self.partition)?),
            ("kind".into(), self.kind().to_avro()),
            ("entry".into(), entry),
            ("checkpoint".into(), checkpoint),
        ]))
    }

    /// Reads an `evalstream.audit.ChainRecord` value; `kind` must agree with which of `entry`
    /// and `checkpoint` is set.
    pub fn from_avro(value: &Value) -> Result<ChainRecord, RecordError> {
        let f = Fields::of(value, CHAIN_RECORD_SCHEMA, "")?;
        reject_unknown(f.fields, &CHAIN_RECORD_FIELDS)?;
        let partition = f.partition("partition")?;
        let kind: ChainRecordKind = f.symbol("kind")?;
        let body = match (kind, f.optional("entry"), f.optional("checkpoint")) {
            (ChainRecordKind::Entry, Some(e), None) => {
                ChainRecordBody::Entry(ChainEntry::from_avro(e)?)
            }
            (ChainRecordKind::Checkpoint, None, Some(c)) => {
                ChainRecordBody::Checkpoint(Checkpoint::from_avro(c)?)
            }
            _ => {
                return Err(RecordError::Inconsistent(
                    "kind must match exactly one non-null entry or checkpoint",
                ))
            }
        };
        Ok(ChainRecord { partition, body })
    }
}

impl ChainEntry {
    /// The Avro value of `evalstream.audit.ChainEntry`, fields in schema order.
    pub fn to_avro(&self) -> Result<Value, RecordError> {
        Ok(Value::Record(vec![
            ("seq".into(), long("entry.seq", self.seq)?),
            ("event_id".into(), Value::String(self.event_id.clone())),
            ("event_type".into(), Value::String(self.event_type.clone())),
            ("occurred_at".into(), millis(self.occurred_at)),
            ("prev_hash".into(), bytes(&self.prev_hash)),
            ("entry_hash".into(), bytes(&self.entry_hash)),
            ("canonical".into(), bytes(&self.canonical)),
            ("source_partition".into(), int("entry.source_partition", self.source_partition)?),
            ("source_offset".into(), Value::Long(self.source_offset)),
        ]))
    }

    /// Reads an `evalstream.audit.ChainEntry` value.
    pub fn from_avro(value: &Value) -> Result<ChainEntry, RecordError> {
        let f = Fields::of(value, "entry", "entry.")?;
        reject_unknown(f.fields, &ENTRY_FIELDS)?;
        Ok(ChainEntry {
            seq: f.unsigned_long("seq")?,
            event_id: f.string("event_id")?,
            event_type: f.string("event_type")?,
            occurred_at: f.long("occurred_at")?,
            prev_hash: f.hash("prev_hash")?,
            entry_hash: f.hash("entry_hash")?,
            canonical: f.bytes("canonical")?,
            source_partition: f.partition("source_partition")?,
            source_offset: f.long("source_offset")?,
        })
    }
}

impl Checkpoint {
    /// The Avro value of `evalstream.audit.Checkpoint`, fields in schema order.
    pub fn to_avro(&self) -> Result<Value, RecordError> {
        Ok(Value::Record(vec![
            ("tree_size".into(), long("checkpoint.tree_size", self.tree_size)?),
            ("root".into(), bytes(&self.root)),
            ("head_hash".into(), bytes(&self.head_hash)),
            ("time_ms".into(), millis(self.time_ms)),
            ("frontier".into(), Value::Array(self.frontier.iter().map(|h| bytes(h)).collect())),
            ("status".into(), self.status.to_avro()),
            ("kid".into(), opt(&self.kid, |k| Value::String(k.clone()))),
            ("signature".into(), opt(&self.signature, |s| bytes(s))),
            ("signer_kind".into(), opt(&self.signer_kind, |k| Value::String(k.clone()))),
        ]))
    }

    /// Reads an `evalstream.audit.Checkpoint` value. Whether the frontier matches the root and
    /// whether a signed checkpoint really has its signature fields is for the verifier to judge
    /// (see [`Checkpoint::compact_range`]), not a decoding error.
    pub fn from_avro(value: &Value) -> Result<Checkpoint, RecordError> {
        let f = Fields::of(value, "checkpoint", "checkpoint.")?;
        reject_unknown(f.fields, &CHECKPOINT_FIELDS)?;
        let frontier = match f.get("frontier")? {
            Value::Array(items) => items
                .iter()
                .map(|item| f.hash_of("frontier", &f.bytes_value("frontier", plain(item))?))
                .collect::<Result<Vec<Hash>, RecordError>>()?,
            _ => return Err(f.wrong("frontier", "array of bytes")),
        };
        Ok(Checkpoint {
            tree_size: f.unsigned_long("tree_size")?,
            root: f.hash("root")?,
            head_hash: f.hash("head_hash")?,
            time_ms: f.long("time_ms")?,
            frontier,
            status: f.symbol("status")?,
            kid: f.opt_string("kid")?,
            signature: f.opt_bytes("signature")?,
            signer_kind: f.opt_string("signer_kind")?,
        })
    }
}

impl VerificationResult {
    /// The Avro value of `evalstream.audit.VerificationResult`, fields in schema order.
    pub fn to_avro(&self) -> Result<Value, RecordError> {
        Ok(Value::Record(vec![
            ("partition".into(), int("partition", self.partition)?),
            ("from_seq".into(), long("from_seq", self.from_seq)?),
            ("to_seq".into(), long("to_seq", self.to_seq)?),
            ("from_offset".into(), Value::Long(self.from_offset)),
            ("to_offset".into(), Value::Long(self.to_offset)),
            ("status".into(), self.status.to_avro()),
            (
                "first_failing_seq".into(),
                match self.first_failing_seq {
                    None => null(),
                    Some(s) => some(long("first_failing_seq", s)?),
                },
            ),
            ("event_id".into(), opt(&self.event_id, |e| Value::String(e.clone()))),
            ("offset".into(), opt(&self.offset, |o| Value::Long(*o))),
            ("detail".into(), Value::String(self.detail.clone())),
        ]))
    }

    /// Reads an `evalstream.audit.VerificationResult` value.
    pub fn from_avro(value: &Value) -> Result<VerificationResult, RecordError> {
        let f = Fields::of(value, VERIFICATION_RESULT_SCHEMA, "")?;
        reject_unknown(f.fields, &VERIFICATION_FIELDS)?;
        Ok(VerificationResult {
            partition: f.partition("partition")?,
            from_seq: f.unsigned_long("from_seq")?,
            to_seq: f.unsigned_long("to_seq")?,
            from_offset: f.long("from_offset")?,
            to_offset: f.long("to_offset")?,
            status: f.symbol("status")?,
            first_failing_seq: f.opt_unsigned_long("first_failing_seq")?,
            event_id: f.opt_string("event_id")?,
            offset: f.opt_long("offset")?,
            detail: f.string("detail")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_round_trip() {
        for &(v, s) in VerificationStatus::ALL {
            assert_eq!(v.as_str(), s);
            assert_eq!(VerificationStatus::from_symbol("status", s).unwrap(), v);
        }
        assert!(CheckpointStatus::from_symbol("status", "bogus").is_err());
        assert_eq!(
            CheckpointStatus::PendingSignature.to_avro(),
            Value::Enum(1, "pending_signature".into())
        );
    }

    #[test]
    fn out_of_range_numbers_are_errors_not_wraps() {
        let e = ChainEntry {
            seq: u64::MAX,
            event_id: String::new(),
            event_type: String::new(),
            occurred_at: 0,
            prev_hash: [0; 32],
            entry_hash: [0; 32],
            canonical: vec![],
            source_partition: 0,
            source_offset: 0,
        };
        assert!(matches!(e.to_avro(), Err(RecordError::OutOfRange { .. })));
        let r = ChainRecord {
            partition: u32::MAX,
            body: ChainRecordBody::Entry(ChainEntry { seq: 0, ..e }),
        };
        assert!(matches!(r.to_avro(), Err(RecordError::OutOfRange { .. })));
    }
}
