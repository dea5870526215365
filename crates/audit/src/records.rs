//! Typed forms of the records on `audit.chain` and `audit.verifications`, and their Avro values.
//!
//! ```text
//!  audit.chain[p]:  ChainRecord { partition: p, kind, entry | checkpoint }
//!                      entry:      ChainEntry  (one per chained event, seq 0, 1, 2, ...)
//!                      checkpoint: Checkpoint  (tree size, root, head, frontier, signature)
//!  audit.verifications: VerificationResult { partition, seq/offset range, status, ... }
//! ```
//!
//! The schemas are `schemas/evalstream/audit/ChainRecord.avsc` and `VerificationResult.avsc`.
//! The Avro side is a set of private structs that mirror the schemas field for field, read and
//! written with serde through the runtime's typed records (`evalstream_runtime::record`); the
//! public types carry the domain's shapes (u64 sequence numbers, u32 partitions, 32-byte hashes,
//! an entry *or* a checkpoint), and the conversions between the two are where ranges, hash
//! lengths and the `kind` agreement are checked. `from_avro` conforms the value to the schema
//! first, so it accepts every shape of a valid value (decoded by the codec, read from an Avro
//! archive, or built by hand) and names the field path of an invalid one. Structural problems (a
//! hash that is not 32 bytes, an entry record without its entry) are [`RecordError`]s: on
//! `audit.chain` such a record is itself a finding for the verifier, not something to repair.

use apache_avro::types::Value;
use evalstream_runtime::record::{self, Record};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::chain::{self, AppendedEntry, AuditEventJson, AuditEventRef};
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
    /// The value does not match its schema: a missing or unknown field, a wrong type, an
    /// unknown enum symbol. The message names the field path.
    #[error("{0}")]
    Schema(String),
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
    /// Fields that contradict each other (e.g. `kind` entry with a null `entry`).
    #[error("inconsistent record: {0}")]
    Inconsistent(&'static str),
}

impl From<record::RecordError> for RecordError {
    fn from(e: record::RecordError) -> Self {
        RecordError::Schema(e.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Enums (serde names are the Avro symbols)

/// What a `ChainRecord` carries (Avro enum `evalstream.audit.ChainRecordKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainRecordKind {
    /// A chained event.
    Entry,
    /// A checkpoint over the entries before it.
    Checkpoint,
}

/// Signing state of a checkpoint (Avro enum `evalstream.audit.CheckpointStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointStatus {
    /// `kid`, `signature` and `signer_kind` are set.
    Signed,
    /// The signer was unavailable; the same checkpoint is re-emitted as `Signed` later.
    PendingSignature,
}

/// Outcome of verifying a range of a chain (Avro enum `evalstream.audit.VerificationStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

impl ChainRecordKind {
    /// The Avro symbol (`entry`, `checkpoint`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChainRecordKind::Entry => "entry",
            ChainRecordKind::Checkpoint => "checkpoint",
        }
    }
}

impl CheckpointStatus {
    /// The Avro symbol (`signed`, `pending_signature`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointStatus::Signed => "signed",
            CheckpointStatus::PendingSignature => "pending_signature",
        }
    }
}

impl VerificationStatus {
    /// The Avro symbol (`ok`, `hash_mismatch`, ...), also used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationStatus::Ok => "ok",
            VerificationStatus::HashMismatch => "hash_mismatch",
            VerificationStatus::Gap => "gap",
            VerificationStatus::SignatureInvalid => "signature_invalid",
            VerificationStatus::UnknownSigner => "unknown_signer",
            VerificationStatus::PendingSignature => "pending_signature",
        }
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
        ChainEntry::of_event(appended, event.as_ref(), canonical, source_partition, source_offset)
    }

    /// [`ChainEntry::new`] for a borrowed event (the processor's path).
    pub fn of_event(
        appended: &AppendedEntry,
        event: AuditEventRef<'_>,
        canonical: Vec<u8>,
        source_partition: u32,
        source_offset: i64,
    ) -> ChainEntry {
        ChainEntry {
            seq: appended.seq,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.to_string(),
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
// Avro conversion: the schemas field for field

/// `evalstream.audit.ChainRecord` as the schema has it.
#[derive(Serialize, Deserialize)]
struct ChainRecordAvro {
    partition: i32,
    kind: ChainRecordKind,
    entry: Option<ChainEntryAvro>,
    checkpoint: Option<CheckpointAvro>,
}

impl Record for ChainRecordAvro {
    const SCHEMA: &'static str = CHAIN_RECORD_SCHEMA;
}

/// `evalstream.audit.ChainEntry`.
#[derive(Serialize, Deserialize)]
struct ChainEntryAvro {
    seq: i64,
    event_id: String,
    event_type: String,
    occurred_at: i64,
    #[serde(with = "record::bytes")]
    prev_hash: Vec<u8>,
    #[serde(with = "record::bytes")]
    entry_hash: Vec<u8>,
    #[serde(with = "record::bytes")]
    canonical: Vec<u8>,
    source_partition: i32,
    source_offset: i64,
}

/// `evalstream.audit.Checkpoint`.
#[derive(Serialize, Deserialize)]
struct CheckpointAvro {
    tree_size: i64,
    #[serde(with = "record::bytes")]
    root: Vec<u8>,
    #[serde(with = "record::bytes")]
    head_hash: Vec<u8>,
    time_ms: i64,
    frontier: Vec<AvroBytes>,
    status: CheckpointStatus,
    kid: Option<String>,
    #[serde(with = "record::bytes_opt")]
    signature: Option<Vec<u8>>,
    signer_kind: Option<String>,
}

/// One `bytes` item of an array.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct AvroBytes(#[serde(with = "record::bytes")] Vec<u8>);

/// `evalstream.audit.VerificationResult`.
#[derive(Serialize, Deserialize)]
struct VerificationResultAvro {
    partition: i32,
    from_seq: i64,
    to_seq: i64,
    from_offset: i64,
    to_offset: i64,
    status: VerificationStatus,
    first_failing_seq: Option<i64>,
    event_id: Option<String>,
    offset: Option<i64>,
    detail: String,
}

impl Record for VerificationResultAvro {
    const SCHEMA: &'static str = VERIFICATION_RESULT_SCHEMA;
}

/// A domain `u64` as an Avro `long`.
fn long(field: &str, v: u64) -> Result<i64, RecordError> {
    i64::try_from(v).map_err(|_| out_of_range(field, v))
}

/// A domain `u32` (partition) as an Avro `int`.
fn int(field: &str, v: u32) -> Result<i32, RecordError> {
    i32::try_from(v).map_err(|_| out_of_range(field, v))
}

/// An Avro `long` that must not be negative.
fn unsigned(field: &str, v: i64) -> Result<u64, RecordError> {
    u64::try_from(v).map_err(|_| out_of_range(field, v))
}

/// An Avro `int` partition that must not be negative.
fn partition(field: &str, v: i32) -> Result<u32, RecordError> {
    u32::try_from(v).map_err(|_| out_of_range(field, v))
}

fn hash(field: &str, b: &[u8]) -> Result<Hash, RecordError> {
    b.try_into().map_err(|_| RecordError::HashLength { field: field.to_string(), len: b.len() })
}

fn out_of_range(field: &str, v: impl ToString) -> RecordError {
    RecordError::OutOfRange { field: field.to_string(), value: v.to_string() }
}

impl ChainRecord {
    /// Decodes one `audit.chain` record value (wire bytes) with the runtime's codec.
    pub fn decode(codec: &evalstream_runtime::codec::Codec, value: &[u8]) -> Result<Self, String> {
        let wire: ChainRecordAvro = codec.decode_record(value).map_err(|e| e.to_string())?;
        ChainRecord::from_wire(wire).map_err(|e| e.to_string())
    }

    /// Whether this is an entry or a checkpoint.
    pub fn kind(&self) -> ChainRecordKind {
        match self.body {
            ChainRecordBody::Entry(_) => ChainRecordKind::Entry,
            ChainRecordBody::Checkpoint(_) => ChainRecordKind::Checkpoint,
        }
    }

    /// The Avro value of `evalstream.audit.ChainRecord` as serde writes it (fields in schema
    /// order, optional fields bare, enums as symbols): what [`evalstream_runtime::codec::Codec`]
    /// encodes, which conforms it to the schema on the way. A writer that does not conform
    /// (apache-avro's object container writer) needs `SchemaStore::conform` first. Fails only
    /// for numbers that do not fit their Avro type (a partition above `i32::MAX`, a sequence
    /// number or tree size above `i64::MAX`).
    pub fn to_avro(&self) -> Result<Value, RecordError> {
        let (entry, checkpoint) = match &self.body {
            ChainRecordBody::Entry(e) => (Some(e.to_wire()?), None),
            ChainRecordBody::Checkpoint(c) => (None, Some(c.to_wire()?)),
        };
        let wire = ChainRecordAvro {
            partition: int("partition", self.partition)?,
            kind: self.kind(),
            entry,
            checkpoint,
        };
        Ok(record::to_avro(&wire)?)
    }

    /// The entry record `entry` of chain `partition` as a typed record for
    /// `evalstream_runtime::processor::Output::record`, which writes it straight to Avro bytes:
    /// no `Value` tree (13 field names and a copy of every string), and the entry's strings and
    /// canonical bytes moved into it rather than copied. Tests check that it encodes to the
    /// bytes of [`ChainRecord::to_avro`] and that the runtime writes it directly.
    pub fn entry_record(partition: u32, entry: ChainEntry) -> Result<impl Record, RecordError> {
        Ok(ChainRecordAvro {
            partition: int("partition", partition)?,
            kind: ChainRecordKind::Entry,
            entry: Some(entry.into_wire()?),
            checkpoint: None,
        })
    }

    /// Reads an `evalstream.audit.ChainRecord` value; `kind` must agree with which of `entry`
    /// and `checkpoint` is set.
    pub fn from_avro(value: &Value) -> Result<ChainRecord, RecordError> {
        ChainRecord::from_wire(record::from_any_avro(value)?)
    }

    fn from_wire(w: ChainRecordAvro) -> Result<ChainRecord, RecordError> {
        let body = match (w.kind, w.entry, w.checkpoint) {
            (ChainRecordKind::Entry, Some(e), None) => {
                ChainRecordBody::Entry(ChainEntry::from_wire(e)?)
            }
            (ChainRecordKind::Checkpoint, None, Some(c)) => {
                ChainRecordBody::Checkpoint(Checkpoint::from_wire(c)?)
            }
            _ => {
                return Err(RecordError::Inconsistent(
                    "kind must match exactly one non-null entry or checkpoint",
                ))
            }
        };
        Ok(ChainRecord { partition: partition("partition", w.partition)?, body })
    }
}

impl ChainEntry {
    fn to_wire(&self) -> Result<ChainEntryAvro, RecordError> {
        self.clone().into_wire()
    }

    fn into_wire(self) -> Result<ChainEntryAvro, RecordError> {
        Ok(ChainEntryAvro {
            seq: long("entry.seq", self.seq)?,
            event_id: self.event_id,
            event_type: self.event_type,
            occurred_at: self.occurred_at,
            prev_hash: self.prev_hash.to_vec(),
            entry_hash: self.entry_hash.to_vec(),
            canonical: self.canonical,
            source_partition: int("entry.source_partition", self.source_partition)?,
            source_offset: self.source_offset,
        })
    }

    fn from_wire(w: ChainEntryAvro) -> Result<ChainEntry, RecordError> {
        Ok(ChainEntry {
            seq: unsigned("entry.seq", w.seq)?,
            event_id: w.event_id,
            event_type: w.event_type,
            occurred_at: w.occurred_at,
            prev_hash: hash("entry.prev_hash", &w.prev_hash)?,
            entry_hash: hash("entry.entry_hash", &w.entry_hash)?,
            canonical: w.canonical,
            source_partition: partition("entry.source_partition", w.source_partition)?,
            source_offset: w.source_offset,
        })
    }
}

impl Checkpoint {
    fn to_wire(&self) -> Result<CheckpointAvro, RecordError> {
        Ok(CheckpointAvro {
            tree_size: long("checkpoint.tree_size", self.tree_size)?,
            root: self.root.to_vec(),
            head_hash: self.head_hash.to_vec(),
            time_ms: self.time_ms,
            frontier: self.frontier.iter().map(|h| AvroBytes(h.to_vec())).collect(),
            status: self.status,
            kid: self.kid.clone(),
            signature: self.signature.clone(),
            signer_kind: self.signer_kind.clone(),
        })
    }

    /// Whether the frontier matches the root and whether a signed checkpoint really has its
    /// signature fields is for the verifier to judge (see [`Checkpoint::compact_range`]), not a
    /// decoding error.
    fn from_wire(w: CheckpointAvro) -> Result<Checkpoint, RecordError> {
        Ok(Checkpoint {
            tree_size: unsigned("checkpoint.tree_size", w.tree_size)?,
            root: hash("checkpoint.root", &w.root)?,
            head_hash: hash("checkpoint.head_hash", &w.head_hash)?,
            time_ms: w.time_ms,
            frontier: w
                .frontier
                .iter()
                .map(|h| hash("checkpoint.frontier", &h.0))
                .collect::<Result<_, _>>()?,
            status: w.status,
            kid: w.kid,
            signature: w.signature,
            signer_kind: w.signer_kind,
        })
    }
}

impl VerificationResult {
    /// The Avro value of `evalstream.audit.VerificationResult`, as [`ChainRecord::to_avro`].
    pub fn to_avro(&self) -> Result<Value, RecordError> {
        let wire = VerificationResultAvro {
            partition: int("partition", self.partition)?,
            from_seq: long("from_seq", self.from_seq)?,
            to_seq: long("to_seq", self.to_seq)?,
            from_offset: self.from_offset,
            to_offset: self.to_offset,
            status: self.status,
            first_failing_seq: self
                .first_failing_seq
                .map(|s| long("first_failing_seq", s))
                .transpose()?,
            event_id: self.event_id.clone(),
            offset: self.offset,
            detail: self.detail.clone(),
        };
        Ok(record::to_avro(&wire)?)
    }

    /// Reads an `evalstream.audit.VerificationResult` value.
    pub fn from_avro(value: &Value) -> Result<VerificationResult, RecordError> {
        let w: VerificationResultAvro = record::from_any_avro(value)?;
        Ok(VerificationResult {
            partition: partition("partition", w.partition)?,
            from_seq: unsigned("from_seq", w.from_seq)?,
            to_seq: unsigned("to_seq", w.to_seq)?,
            from_offset: w.from_offset,
            to_offset: w.to_offset,
            status: w.status,
            first_failing_seq: w
                .first_failing_seq
                .map(|s| unsigned("first_failing_seq", s))
                .transpose()?,
            event_id: w.event_id,
            offset: w.offset,
            detail: w.detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use evalstream_runtime::processor::Output;

    use super::*;

    #[test]
    fn enum_names_are_the_avro_symbols() {
        use VerificationStatus::*;
        for s in [Ok, HashMismatch, Gap, SignatureInvalid, UnknownSigner, PendingSignature] {
            assert_eq!(record::to_avro(&s).unwrap(), Value::String(s.as_str().into()));
            assert_eq!(
                record::from_avro::<VerificationStatus>(&Value::Enum(0, s.as_str().into()))
                    .unwrap(),
                s
            );
        }
        for s in [CheckpointStatus::Signed, CheckpointStatus::PendingSignature] {
            assert_eq!(record::to_avro(&s).unwrap(), Value::String(s.as_str().into()));
        }
        for k in [ChainRecordKind::Entry, ChainRecordKind::Checkpoint] {
            assert_eq!(record::to_avro(&k).unwrap(), Value::String(k.as_str().into()));
        }
        assert!(record::from_avro::<CheckpointStatus>(&Value::String("bogus".into())).is_err());
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
        let r = ChainRecord { partition: 0, body: ChainRecordBody::Entry(e.clone()) };
        assert!(
            matches!(r.to_avro(), Err(RecordError::OutOfRange { field, .. }) if field == "entry.seq")
        );
        let r = ChainRecord {
            partition: u32::MAX,
            body: ChainRecordBody::Entry(ChainEntry { seq: 0, ..e.clone() }),
        };
        assert!(matches!(r.to_avro(), Err(RecordError::OutOfRange { .. })));
        assert!(ChainRecord::entry_record(u32::MAX, ChainEntry { seq: 0, ..e.clone() }).is_err());
        assert!(ChainRecord::entry_record(0, e).is_err());
    }

    #[test]
    fn entry_record_is_written_directly_to_the_bytes_of_to_avro() {
        let codec = evalstream_runtime::codec::Codec::new(
            evalstream_runtime::codec::SchemaStore::bundled().unwrap(),
            None,
        )
        .unwrap();
        for i in 0..200u64 {
            let entry = ChainEntry {
                seq: if i == 199 { i64::MAX as u64 } else { i * 7_919 % 1_000_003 },
                event_id: format!("ev-{i}-é"),
                event_type: ["eval.x", "", "audit.emergency_signer"][i as usize % 3].to_string(),
                occurred_at: [0, -1, 1_790_000_000_000, i64::MIN, i64::MAX][i as usize % 5],
                prev_hash: [i as u8; 32],
                entry_hash: [!(i as u8); 32],
                canonical: (0..(i * 13) as usize).map(|b| (b * 31) as u8).collect(),
                source_partition: [0, 3, i32::MAX as u32][i as usize % 3],
                source_offset: [0, 1, i64::MAX, -1][i as usize % 4],
            };
            let partition = [0, 1, i32::MAX as u32][i as usize % 3];
            let record = ChainRecord { partition, body: ChainRecordBody::Entry(entry.clone()) };
            let want = codec.encode("audit.chain", CHAIN_RECORD_SCHEMA, &record.to_avro().unwrap());
            let typed = ChainRecord::entry_record(partition, entry).unwrap();
            let output = Output::record("audit.chain", b"k", &typed).unwrap();
            // Written straight to bytes (the value is rebuilt from them), not declined to the
            // value path, which would be correct but slow.
            assert!(matches!(output.value().unwrap(), Cow::Owned(_)), "entry {i} was declined");
            let got = output.encode(&codec, "audit.chain");
            assert_eq!(got.unwrap(), want.unwrap(), "entry {i}");
        }
    }
}
