//! JSON forms of chain records, verification results and archive lines.
//!
//! ```text
//!  ChainRecord ⇄ ChainRecordJson   {"partition":0,"kind":"entry","entry":{...}}
//!                                   {"partition":0,"kind":"checkpoint","checkpoint":{...}}
//!  archive (JSON lines):  {"type":"export",...}        what was asked for, once, first
//!                         {"type":"record","partition":0,"offset":41,"timestamp":...,"record":{...}}
//!                         {"type":"record",...,"raw":"<base64>","error":"..."}   (undecodable)
//!                         {"type":"range","partition":0,...}   per partition, last
//! ```
//!
//! Hashes are lowercase hex (as in `docs/audit-chain.md`, the parity vectors and the logs);
//! signatures are standard base64. Canonical bytes are written as the JSON string of their text
//! (they are UTF-8 JSON by construction, and an auditor comparing them with another copy wants
//! to read them), or as `{"base64": "..."}` when they are not UTF-8 — the same convention as
//! `evalstream consume`. Either way the bytes round-trip exactly. Reading is strict: unknown
//! members, a hash that is not 32 bytes or a `kind` that disagrees with the body are errors that
//! name the field, because an archive is evidence, not input to be repaired.

use evalstream_runtime::b64;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::merkle::{hash_from_slice, Hash};
use crate::records::{
    ChainEntry, ChainRecord, ChainRecordBody, Checkpoint, CheckpointStatus, VerificationResult,
};

/// `format` of an archive written by `evalstream audit export` (both file formats).
pub const EXPORT_FORMAT: &str = "evalstream.audit.export.v1";

/// Avro object container metadata key holding the [`ExportMetadata`] JSON.
pub const EXPORT_METADATA_KEY: &str = "evalstream.audit.export";

/// Why a JSON form does not convert into a record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JsonFormError {
    /// A hash field that is not 64 lowercase hex digits.
    #[error("{0}: expected 64 lowercase hex digits (a 32-byte hash)")]
    Hash(String),
    /// A base64 field that does not decode.
    #[error("{0}: not standard base64")]
    Base64(String),
    /// A symbol this version does not know.
    #[error("{field}: unknown value {value:?}")]
    Symbol {
        /// Field path.
        field: String,
        /// The value.
        value: String,
    },
    /// Fields that contradict each other.
    #[error("{0}")]
    Inconsistent(String),
    /// A number beyond what the Avro form can hold (`long` sequence numbers and tree sizes,
    /// `int` partitions), as the broker's records never carry.
    #[error("{field}: value {value} out of range")]
    OutOfRange {
        /// Field path.
        field: String,
        /// The value.
        value: u64,
    },
}

/// Checks that `value` fits an Avro `long` (sequence numbers, tree sizes) or, with `max`
/// `i32::MAX`, an `int` (partitions).
fn in_range(field: &str, value: u64, max: u64) -> Result<u64, JsonFormError> {
    if value <= max {
        Ok(value)
    } else {
        Err(JsonFormError::OutOfRange { field: field.to_string(), value })
    }
}

const LONG_MAX: u64 = i64::MAX as u64;
const INT_MAX: u64 = i32::MAX as u64;

/// Lowercase hex of a hash.
pub fn hash_hex(h: &Hash) -> String {
    hex::encode(h)
}

/// Parses a lowercase-hex hash; `field` names it in the error.
pub fn parse_hash(field: &str, text: &str) -> Result<Hash, JsonFormError> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(JsonFormError::Hash(field.to_string()));
    }
    hex::decode(text)
        .ok()
        .and_then(|b| hash_from_slice(&b))
        .ok_or_else(|| JsonFormError::Hash(field.to_string()))
}

/// Standard base64 (padded).
pub fn base64_encode(bytes: &[u8]) -> String {
    b64::encode(bytes)
}

/// Decodes standard base64; `field` names it in the error.
pub fn base64_decode(field: &str, text: &str) -> Result<Vec<u8>, JsonFormError> {
    b64::decode_canonical(text).map_err(|_| JsonFormError::Base64(field.to_string()))
}

/// Bytes that are normally text: the text itself, else `{"base64": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BytesJson {
    /// UTF-8 bytes as their text.
    Text(String),
    /// Any other bytes.
    Base64(Base64Bytes),
}

/// The `{"base64": "..."}` form of [`BytesJson`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base64Bytes {
    /// Standard base64 of the bytes.
    pub base64: String,
}

impl BytesJson {
    /// The JSON form of `bytes`.
    pub fn of(bytes: &[u8]) -> BytesJson {
        match std::str::from_utf8(bytes) {
            Ok(text) => BytesJson::Text(text.to_string()),
            Err(_) => BytesJson::Base64(Base64Bytes { base64: base64_encode(bytes) }),
        }
    }

    /// The bytes back.
    pub fn bytes(&self, field: &str) -> Result<Vec<u8>, JsonFormError> {
        match self {
            BytesJson::Text(t) => Ok(t.as_bytes().to_vec()),
            BytesJson::Base64(b) => base64_decode(field, &b.base64),
        }
    }
}

/// JSON form of a [`ChainEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryJson {
    /// Position in the chain.
    pub seq: u64,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The event's `occurred_at`, ms since the Unix epoch.
    pub occurred_at: i64,
    /// Hex of the previous entry hash.
    pub prev_hash: String,
    /// Hex of this entry's hash.
    pub entry_hash: String,
    /// The exact canonical bytes that were hashed.
    pub canonical: BytesJson,
    /// `audit.events` partition it came from.
    pub source_partition: u32,
    /// `audit.events` offset it came from.
    pub source_offset: i64,
}

impl EntryJson {
    /// The JSON form of `e`.
    pub fn of(e: &ChainEntry) -> EntryJson {
        EntryJson {
            seq: e.seq,
            event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            occurred_at: e.occurred_at,
            prev_hash: hash_hex(&e.prev_hash),
            entry_hash: hash_hex(&e.entry_hash),
            canonical: BytesJson::of(&e.canonical),
            source_partition: e.source_partition,
            source_offset: e.source_offset,
        }
    }

    /// The entry back.
    pub fn to_entry(&self) -> Result<ChainEntry, JsonFormError> {
        in_range("entry.source_partition", u64::from(self.source_partition), INT_MAX)?;
        Ok(ChainEntry {
            seq: in_range("entry.seq", self.seq, LONG_MAX)?,
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            occurred_at: self.occurred_at,
            prev_hash: parse_hash("entry.prev_hash", &self.prev_hash)?,
            entry_hash: parse_hash("entry.entry_hash", &self.entry_hash)?,
            canonical: self.canonical.bytes("entry.canonical")?,
            source_partition: self.source_partition,
            source_offset: self.source_offset,
        })
    }
}

/// JSON form of a [`Checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointJson {
    /// Number of entries covered.
    pub tree_size: u64,
    /// Hex of the RFC 6962 root.
    pub root: String,
    /// Hex of the entry hash of `tree_size - 1`.
    pub head_hash: String,
    /// `occurred_at` of entry `tree_size - 1`.
    pub time_ms: i64,
    /// Hex of the compact range hashes, largest subtree first.
    pub frontier: Vec<String>,
    /// `signed` or `pending_signature`.
    pub status: String,
    /// Signer key id.
    pub kid: Option<String>,
    /// Base64 of the DER signature.
    pub signature: Option<String>,
    /// `kms`, `local` or `proxy`.
    pub signer_kind: Option<String>,
}

/// Parses a checkpoint status symbol.
pub fn parse_status(field: &str, s: &str) -> Result<CheckpointStatus, JsonFormError> {
    [CheckpointStatus::Signed, CheckpointStatus::PendingSignature]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| JsonFormError::Symbol { field: field.to_string(), value: s.to_string() })
}

impl CheckpointJson {
    /// The JSON form of `c`.
    pub fn of(c: &Checkpoint) -> CheckpointJson {
        CheckpointJson {
            tree_size: c.tree_size,
            root: hash_hex(&c.root),
            head_hash: hash_hex(&c.head_hash),
            time_ms: c.time_ms,
            frontier: c.frontier.iter().map(hash_hex).collect(),
            status: c.status.as_str().to_string(),
            kid: c.kid.clone(),
            signature: c.signature.as_deref().map(base64_encode),
            signer_kind: c.signer_kind.clone(),
        }
    }

    /// The checkpoint back.
    pub fn to_checkpoint(&self) -> Result<Checkpoint, JsonFormError> {
        Ok(Checkpoint {
            tree_size: in_range("checkpoint.tree_size", self.tree_size, LONG_MAX)?,
            root: parse_hash("checkpoint.root", &self.root)?,
            head_hash: parse_hash("checkpoint.head_hash", &self.head_hash)?,
            time_ms: self.time_ms,
            frontier: self
                .frontier
                .iter()
                .map(|h| parse_hash("checkpoint.frontier", h))
                .collect::<Result<_, _>>()?,
            status: parse_status("checkpoint.status", &self.status)?,
            kid: self.kid.clone(),
            signature: self
                .signature
                .as_deref()
                .map(|s| base64_decode("checkpoint.signature", s))
                .transpose()?,
            signer_kind: self.signer_kind.clone(),
        })
    }
}

/// JSON form of a [`ChainRecord`]: `kind` says which of `entry` / `checkpoint` is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainRecordJson {
    /// The chain.
    pub partition: u32,
    /// `entry` or `checkpoint`.
    pub kind: String,
    /// The entry when `kind` is `entry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryJson>,
    /// The checkpoint when `kind` is `checkpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointJson>,
}

impl ChainRecordJson {
    /// The JSON form of `r`.
    pub fn of(r: &ChainRecord) -> ChainRecordJson {
        let (entry, checkpoint) = match &r.body {
            ChainRecordBody::Entry(e) => (Some(EntryJson::of(e)), None),
            ChainRecordBody::Checkpoint(c) => (None, Some(CheckpointJson::of(c))),
        };
        ChainRecordJson {
            partition: r.partition,
            kind: r.kind().as_str().to_string(),
            entry,
            checkpoint,
        }
    }

    /// The record back; `kind` must agree with the body.
    pub fn to_record(&self) -> Result<ChainRecord, JsonFormError> {
        let body = match (self.kind.as_str(), &self.entry, &self.checkpoint) {
            ("entry", Some(e), None) => ChainRecordBody::Entry(e.to_entry()?),
            ("checkpoint", None, Some(c)) => ChainRecordBody::Checkpoint(c.to_checkpoint()?),
            ("entry" | "checkpoint", _, _) => {
                return Err(JsonFormError::Inconsistent(format!(
                    "kind {:?} must come with exactly the {0} member",
                    self.kind
                )))
            }
            (other, _, _) => {
                return Err(JsonFormError::Symbol {
                    field: "kind".into(),
                    value: other.to_string(),
                })
            }
        };
        in_range("partition", u64::from(self.partition), INT_MAX)?;
        Ok(ChainRecord { partition: self.partition, body })
    }
}

/// A [`VerificationResult`] as JSON, with the offset of the failing entry when it is known and
/// differs from where the failure was detected (a checkpoint that does not verify is found at the
/// checkpoint, but the first entry it leaves unproven is earlier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultJson {
    /// The chain.
    pub partition: u32,
    /// `ok`, `hash_mismatch`, `gap`, `signature_invalid`, `unknown_signer`, `pending_signature`.
    pub status: String,
    /// First sequence number of the range the result is about.
    pub from_seq: u64,
    /// Last sequence number of that range (inclusive).
    pub to_seq: u64,
    /// `audit.chain` offset of the first record of that range.
    pub from_offset: i64,
    /// `audit.chain` offset of the last record of that range.
    pub to_offset: i64,
    /// The earliest failing sequence number, when failing.
    pub first_failing_seq: Option<u64>,
    /// Event id of that entry, when known.
    pub event_id: Option<String>,
    /// `audit.chain` offset of the record where the failure was detected.
    pub offset: Option<i64>,
    /// `audit.chain` offset of the failing entry itself, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_offset: Option<i64>,
    /// What went wrong (or right).
    pub detail: String,
}

impl ResultJson {
    /// The JSON form of `r`.
    pub fn of(r: &VerificationResult) -> ResultJson {
        ResultJson {
            partition: r.partition,
            status: r.status.as_str().to_string(),
            from_seq: r.from_seq,
            to_seq: r.to_seq,
            from_offset: r.from_offset,
            to_offset: r.to_offset,
            first_failing_seq: r.first_failing_seq,
            event_id: r.event_id.clone(),
            offset: r.offset,
            event_offset: None,
            detail: r.detail.clone(),
        }
    }
}

/// What an export was asked for (first line of a JSON-lines archive; part of the Avro metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    /// [`EXPORT_FORMAT`].
    pub format: String,
    /// Logical topic the records were read from (`audit.chain`).
    pub topic: String,
    /// `--from` as given, if any.
    pub from: Option<String>,
    /// `--to` as given, if any.
    pub to: Option<String>,
    /// Partitions exported.
    pub partitions: Vec<u32>,
    /// When the export was made (ms since the Unix epoch; informational, never verified).
    pub created_ms: i64,
}

/// What an export holds for one partition (last lines of a JSON-lines archive; part of the Avro
/// metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRange {
    /// The chain.
    pub partition: u32,
    /// Records written for it (context included).
    pub records: u64,
    /// Offset of the first record written (the preceding checkpoint, when there is one).
    pub first_offset: Option<i64>,
    /// Offset of the last record written (the covering checkpoint, when there is one).
    pub last_offset: Option<i64>,
    /// The requested range: first offset.
    pub range_from_offset: i64,
    /// The requested range: last offset (inclusive), `None` for "to the end".
    pub range_to_offset: Option<i64>,
    /// First sequence number in the requested range.
    pub from_seq: Option<u64>,
    /// Last sequence number in the requested range.
    pub to_seq: Option<u64>,
    /// Offset of the checkpoint the range is resumed from.
    pub anchor_offset: Option<i64>,
    /// Offset of the signed checkpoint that covers the range.
    pub covering_offset: Option<i64>,
    /// Offsets of the written records as `[first, count]` runs (Avro archives only: their
    /// records do not carry offsets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsets: Option<Vec<[i64; 2]>>,
}

/// The Avro archive's [`EXPORT_METADATA_KEY`] value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportMetadata {
    /// What was asked for.
    pub header: ExportHeader,
    /// What each partition holds, in file order.
    pub partitions: Vec<ExportRange>,
}

/// One record line of a JSON-lines archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRecord {
    /// Kafka partition it was read from.
    pub partition: u32,
    /// Its `audit.chain` offset.
    pub offset: i64,
    /// Its Kafka timestamp, when it has one.
    pub timestamp: Option<i64>,
    /// The decoded record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<ChainRecordJson>,
    /// The raw value (base64) of a record that did not decode; kept as evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// Why it did not decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of a JSON-lines archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ArchiveLine {
    /// The first line.
    Export(ExportHeader),
    /// A record (boxed: far larger than the other lines).
    Record(Box<ArchiveRecord>),
    /// A partition summary (after its records).
    Range(ExportRange),
}

/// Offsets as `[first, count]` runs of consecutive offsets.
pub fn offset_runs(offsets: impl IntoIterator<Item = i64>) -> Vec<[i64; 2]> {
    let mut runs: Vec<[i64; 2]> = Vec::new();
    for o in offsets {
        match runs.last_mut() {
            Some(run) if run[0].checked_add(run[1]) == Some(o) => run[1] += 1,
            _ => runs.push([o, 1]),
        }
    }
    runs
}

/// The offsets of [`offset_runs`] back; `None` when a run is malformed (negative count, overflow)
/// or the runs hold more than `limit` offsets.
pub fn expand_runs(runs: &[[i64; 2]], limit: u64) -> Option<Vec<i64>> {
    let mut out = Vec::new();
    for &[first, count] in runs {
        if count < 0 || (out.len() as u64).saturating_add(count as u64) > limit {
            return None;
        }
        first.checked_add(count)?;
        out.extend(first..first + count);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{AuditEventJson, ChainHead};
    use crate::merkle::CompactRange;

    fn entry() -> ChainEntry {
        let event = AuditEventJson {
            event_id: "evt-7".into(),
            event_type: "eval.submission_accepted".into(),
            actor: "eval-engine".into(),
            subject: "model-7".into(),
            occurred_at: 1_763_424_000_000,
            payload: r#"{"note":"caf\u00e9 \"quoted\"","score":0.875}"#.into(),
        };
        let canonical = event.canonical_bytes().unwrap();
        let mut head = ChainHead::genesis(3);
        let appended = head.append(&canonical).unwrap();
        ChainEntry::new(&appended, &event, canonical, 3, 99)
    }

    #[test]
    fn records_round_trip_through_json_text() {
        let e = entry();
        let range = CompactRange::from_entry_hashes(&[e.entry_hash]).unwrap();
        let cp = Checkpoint::pending(&range, e.entry_hash, e.occurred_at).with_signature(
            "local:0123456789abcdef".into(),
            "local".into(),
            vec![0x30, 0x44, 0xff],
        );
        for record in [
            ChainRecord { partition: 3, body: ChainRecordBody::Entry(e.clone()) },
            ChainRecord { partition: 3, body: ChainRecordBody::Checkpoint(cp) },
        ] {
            let text = serde_json::to_string(&ChainRecordJson::of(&record)).unwrap();
            let back: ChainRecordJson = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_record().unwrap(), record, "{text}");
        }
        let text = serde_json::to_string(&EntryJson::of(&e)).unwrap();
        // Canonical bytes are readable text inside the JSON.
        assert!(text.contains(r#"\"score\":0.875"#), "{text}");
    }

    #[test]
    fn non_utf8_bytes_use_base64() {
        let mut e = entry();
        e.canonical = vec![0xff, 0x00, b'{'];
        let j = EntryJson::of(&e);
        assert_eq!(j.canonical, BytesJson::Base64(Base64Bytes { base64: "/wB7".into() }));
        assert_eq!(j.to_entry().unwrap(), e);
    }

    #[test]
    fn malformed_forms_name_the_field() {
        let mut j = ChainRecordJson::of(&ChainRecord {
            partition: 3,
            body: ChainRecordBody::Entry(entry()),
        });
        let good = j.clone();
        j.entry.as_mut().unwrap().prev_hash.pop();
        assert_eq!(j.to_record(), Err(JsonFormError::Hash("entry.prev_hash".into())));
        let mut j = good.clone();
        j.entry.as_mut().unwrap().entry_hash = j.entry.as_ref().unwrap().entry_hash.to_uppercase();
        assert!(j.to_record().is_err());
        let mut j = good.clone();
        j.kind = "checkpoint".into();
        assert!(matches!(j.to_record(), Err(JsonFormError::Inconsistent(_))));
        let mut j = good;
        j.kind = "other".into();
        assert!(matches!(j.to_record(), Err(JsonFormError::Symbol { .. })));
        let mut j = ChainRecordJson::of(&ChainRecord {
            partition: 3,
            body: ChainRecordBody::Entry(entry()),
        });
        j.entry.as_mut().unwrap().seq = u64::MAX;
        assert!(matches!(j.to_record(), Err(JsonFormError::OutOfRange { .. })));
        j.entry.as_mut().unwrap().seq = 0;
        j.partition = u32::MAX;
        assert!(matches!(j.to_record(), Err(JsonFormError::OutOfRange { .. })));
        let unknown = r#"{"partition":0,"kind":"entry","extra":1}"#;
        assert!(serde_json::from_str::<ChainRecordJson>(unknown).is_err());
    }

    #[test]
    fn archive_lines_are_tagged() {
        let line = ArchiveLine::Record(Box::new(ArchiveRecord {
            partition: 1,
            offset: 5,
            timestamp: None,
            record: None,
            raw: Some("AAE=".into()),
            error: Some("bad magic".into()),
        }));
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.starts_with(r#"{"type":"record""#), "{text}");
        assert_eq!(serde_json::from_str::<ArchiveLine>(&text).unwrap(), line);
        assert!(serde_json::from_str::<ArchiveLine>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn offset_runs_round_trip() {
        let offsets = vec![3, 4, 5, 7, 8, 10, i64::MAX - 1];
        let runs = offset_runs(offsets.clone());
        assert_eq!(runs, vec![[3, 3], [7, 2], [10, 1], [i64::MAX - 1, 1]]);
        assert_eq!(expand_runs(&runs, 100), Some(offsets));
        assert_eq!(expand_runs(&runs, 3), None);
        assert_eq!(expand_runs(&[[0, -1]], 100), None);
        assert_eq!(expand_runs(&[[i64::MAX, 2]], 100), None);
    }
}
