//! The per-partition audit hash chain (version 1): event → canonical bytes → entry hash.
//!
//! ```text
//!  audit.events[p] record (Avro evalstream.audit.AuditEvent)
//!        │ AuditEventJson (typed record)
//!        ▼
//!  {"actor","event_id","occurred_at","payload": <payload parsed>,"subject","type"}
//!        │ RFC 8785 (canonical.rs)
//!        ▼
//!  canonical bytes ──► entry_hash = SHA-256( ENTRY_TAG ‖ prev_hash ‖ u64_be(seq)
//!                                            ‖ u64_be(len(canonical)) ‖ canonical )
//!
//!  prev_hash of seq 0 = genesis_hash(p) = SHA-256( GENESIS_TAG ‖ u32_be(p) )
//! ```
//!
//! Why each piece (the normative text is `docs/audit-chain.md`):
//! - the version tag separates this hash from every other SHA-256 in the system and lets a
//!   future v2 coexist without ambiguity; its trailing NUL ends the tag unambiguously;
//! - the sequence number makes gaps and reordering visible even where a forger could recompute
//!   hashes, and the explicit length makes the encoding injective (no two different
//!   (seq, canonical) pairs hash the same input bytes);
//! - the genesis hash binds a chain to its partition, so a chain cannot be replayed as another
//!   partition's;
//! - the payload enters as parsed JSON, not as the producer's string, so two producers that
//!   format the same details differently (spacing, key order, `1.0` vs `1`) chain the same bytes.

use apache_avro::types::Value;
use evalstream_runtime::record::{self, Record};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::canonical::{self, CanonicalError};
use crate::merkle::Hash;
use crate::records::RecordError;

/// Domain-separation and version tag hashed first into every entry hash (26 bytes, NUL
/// terminated).
pub const ENTRY_TAG: &[u8] = b"evalstream.audit.entry.v1\0";

/// Tag of the genesis hash, the `prev_hash` of sequence 0 (28 bytes, NUL terminated).
pub const GENESIS_TAG: &[u8] = b"evalstream.audit.genesis.v1\0";

/// Largest sequence number: the records carry it as an Avro `long`.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Largest `|occurred_at|` in milliseconds: JavaScript's `Number.MAX_SAFE_INTEGER` (2^53 - 1).
/// Beyond it the canonical JSON number would not be the exact value (about 285,000 years from
/// 1970, so only corrupt data gets there).
pub const MAX_OCCURRED_AT_MS: i64 = (1 << 53) - 1;

/// Full name of the input schema.
pub const AUDIT_EVENT_SCHEMA: &str = "evalstream.audit.AuditEvent";

/// The member names of an audit event's JSON form, which are the field names of
/// `evalstream.audit.AuditEvent` (`schemas/evalstream/audit/AuditEvent.avsc`).
pub const EVENT_FIELDS: [&str; 6] =
    ["event_id", "type", "actor", "subject", "occurred_at", "payload"];

/// Why an event cannot be chained or a chain cannot grow. Event errors are data errors (the
/// processor dead-letters the record); [`ChainError::SequenceExhausted`] is fatal.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ChainError {
    /// The record is not a well-formed `evalstream.audit.AuditEvent`.
    #[error("audit event: {0}")]
    Record(#[from] RecordError),
    /// `payload` is not a JSON document with a canonical form.
    #[error("audit event payload: {0}")]
    Payload(#[from] CanonicalError),
    /// `occurred_at` is beyond [`MAX_OCCURRED_AT_MS`].
    #[error("occurred_at {0} ms is beyond ±(2^53 - 1) and has no exact JSON number")]
    OccurredAtOutOfRange(i64),
    /// The chain reached [`MAX_SEQ`].
    #[error("the chain of partition {partition} has no sequence number left")]
    SequenceExhausted {
        /// The chain's partition.
        partition: u32,
    },
}

/// An audit event as the chain sees it: the fields of `evalstream.audit.AuditEvent`, with the
/// payload still the producer's JSON text. [`AuditEventJson::canonical_bytes`] turns it into the
/// bytes that are hashed.
///
/// Its serde form is the record's (`type` for [`AuditEventJson::event_type`]) and refuses
/// unknown fields, in Avro and in JSON alike: a field the chain does not know is an error, not
/// silently left out of the hash, so adding a field to the schema needs a new chain version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEventJson {
    /// `event_id`: unique id, the deduplication key.
    pub event_id: String,
    /// `type`: dotted event type, e.g. `audit.emergency_signer`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `actor`: who caused the event.
    pub actor: String,
    /// `subject`: what the event is about.
    pub subject: String,
    /// `occurred_at`: milliseconds since the Unix epoch, UTC.
    pub occurred_at: i64,
    /// `payload`: the event details as JSON text, exactly as produced.
    pub payload: String,
}

impl Record for AuditEventJson {
    const SCHEMA: &'static str = AUDIT_EVENT_SCHEMA;
}

impl AuditEventJson {
    /// From an Avro value of `evalstream.audit.AuditEvent` (as the codec decodes it from
    /// `audit.events`, or built by hand; `occurred_at` as `timestamp-millis` or `long`).
    pub fn from_avro(value: &Value) -> Result<AuditEventJson, ChainError> {
        Ok(record::from_any_avro(value).map_err(RecordError::from)?)
    }

    /// From the record's JSON form, as `evalstream consume --format json` writes it and the
    /// parity vectors store it: an object with exactly the members of [`EVENT_FIELDS`],
    /// `occurred_at` an integer and `payload` a string holding JSON.
    pub fn from_json(value: &serde_json::Value) -> Result<AuditEventJson, ChainError> {
        AuditEventJson::deserialize(value)
            .map_err(|e| RecordError::Schema(format!("{AUDIT_EVENT_SCHEMA}: {e}")).into())
    }

    /// The record's JSON form (payload as a string), the inverse of
    /// [`AuditEventJson::from_json`].
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "event_id": self.event_id,
            "type": self.event_type,
            "actor": self.actor,
            "subject": self.subject,
            "occurred_at": self.occurred_at,
            "payload": self.payload,
        })
    }

    /// The canonical bytes that are hashed: RFC 8785 of
    /// `{"event_id","type","actor","subject","occurred_at","payload"}` where `occurred_at` is a
    /// JSON number and `payload` is the payload text parsed strictly as JSON (any JSON value).
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, ChainError> {
        self.as_ref().canonical_bytes()
    }

    /// The event's fields, borrowed.
    pub fn as_ref(&self) -> AuditEventRef<'_> {
        AuditEventRef {
            event_id: &self.event_id,
            event_type: &self.event_type,
            actor: &self.actor,
            subject: &self.subject,
            occurred_at: self.occurred_at,
            payload: &self.payload,
        }
    }
}

/// An audit event's fields borrowed from where they already are (a decoded Avro record, an
/// [`AuditEventJson`]), so that chaining an event copies its payload only into its canonical
/// bytes. It deserializes (serde, `deny_unknown_fields`) from the runtime's direct reader
/// borrowing straight from the record's bytes (`Input::decode_borrowed`), with exactly the
/// fields and types [`AuditEventRef::from_decoded`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEventRef<'a> {
    /// `event_id`.
    pub event_id: &'a str,
    /// `type`.
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// `actor`.
    pub actor: &'a str,
    /// `subject`.
    pub subject: &'a str,
    /// `occurred_at`, milliseconds since the Unix epoch.
    pub occurred_at: i64,
    /// `payload`, the producer's JSON text.
    pub payload: &'a str,
}

impl<'a> AuditEventRef<'a> {
    /// The fields of a decoded `evalstream.audit.AuditEvent`, borrowed, when `value` has
    /// exactly the shape the codec decodes it to: a record of the six fields of [`EVENT_FIELDS`]
    /// in schema order, strings and a `timestamp-millis` (or `long`) `occurred_at`. `None` for
    /// any other shape: the caller then takes [`AuditEventJson::from_avro`], which conforms the
    /// value to the schema and accepts it or says why not. Every value accepted here is one
    /// `from_avro` accepts with the same fields, so the two paths chain the same bytes.
    pub fn from_decoded(value: &'a Value) -> Option<AuditEventRef<'a>> {
        let Value::Record(fields) = value else { return None };
        let [(n0, Value::String(event_id)), (n1, Value::String(event_type)), (n2, Value::String(actor)), (n3, Value::String(subject)), (n4, Value::TimestampMillis(occurred_at) | Value::Long(occurred_at)), (n5, Value::String(payload))] =
            fields.as_slice()
        else {
            return None;
        };
        if [n0, n1, n2, n3, n4, n5] != EVENT_FIELDS {
            return None;
        }
        Some(AuditEventRef {
            event_id,
            event_type,
            actor,
            subject,
            occurred_at: *occurred_at,
            payload,
        })
    }

    /// See [`AuditEventJson::canonical_bytes`].
    ///
    /// The six member names are fixed, so the object is written straight out in their UTF-16
    /// order (`actor`, `event_id`, `occurred_at`, `payload`, `subject`, `type`; a test checks
    /// it against [`canonical::cmp_utf16`]) with the payload canonicalized in place: one output
    /// buffer, no tree, no copies of the strings. `occurred_at` is an integer with
    /// `|x| <= 2^53 - 1`, whose ECMAScript form is its decimal digits.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, ChainError> {
        if !(-MAX_OCCURRED_AT_MS..=MAX_OCCURRED_AT_MS).contains(&self.occurred_at) {
            return Err(ChainError::OccurredAtOutOfRange(self.occurred_at));
        }
        let strings = self.event_id.len() + self.event_type.len() + self.actor.len();
        let mut out = Vec::with_capacity(strings + self.subject.len() + self.payload.len() + 96);
        out.extend_from_slice(b"{\"actor\":");
        canonical::write_string(&mut out, self.actor);
        out.extend_from_slice(b",\"event_id\":");
        canonical::write_string(&mut out, self.event_id);
        out.extend_from_slice(b",\"occurred_at\":");
        write_integer(&mut out, self.occurred_at);
        out.extend_from_slice(b",\"payload\":");
        canonical::canonicalize_into(&mut out, self.payload)?;
        out.extend_from_slice(b",\"subject\":");
        canonical::write_string(&mut out, self.subject);
        out.extend_from_slice(b",\"type\":");
        canonical::write_string(&mut out, self.event_type);
        out.push(b'}');
        Ok(out)
    }
}

/// Writes an integer in decimal, which is its ECMAScript form when `|v| < 10^21`.
fn write_integer(out: &mut Vec<u8>, v: i64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut n = v.unsigned_abs();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[start..]);
}

/// The canonical bytes of an audit event (see [`AuditEventJson::canonical_bytes`]).
pub fn event_canonical_bytes(event: &AuditEventJson) -> Result<Vec<u8>, ChainError> {
    event.canonical_bytes()
}

/// `SHA-256(GENESIS_TAG ‖ u32_be(partition))`: the `prev_hash` of the first entry of the chain
/// of `partition`.
pub fn genesis_hash(partition: u32) -> Hash {
    let mut h = Sha256::new();
    h.update(GENESIS_TAG);
    h.update(partition.to_be_bytes());
    h.finalize().into()
}

/// `SHA-256(ENTRY_TAG ‖ prev_hash ‖ u64_be(seq) ‖ u64_be(len(canonical)) ‖ canonical)`.
pub fn entry_hash(prev_hash: &Hash, seq: u64, canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(ENTRY_TAG);
    h.update(prev_hash);
    h.update(seq.to_be_bytes());
    h.update((canonical.len() as u64).to_be_bytes());
    h.update(canonical);
    h.finalize().into()
}

/// What [`ChainHead::append`] chained: the new entry's sequence number, the hash it links to and
/// its own hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedEntry {
    /// Sequence number of the new entry (0 for the first).
    pub seq: u64,
    /// The previous entry's hash (the genesis hash for sequence 0).
    pub prev_hash: Hash,
    /// The new entry's hash, now the chain head.
    pub entry_hash: Hash,
}

/// The tip of one partition's chain: all the state needed to append the next entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// The `audit.chain` (and `audit.events`) partition this chain belongs to.
    pub partition: u32,
    /// Sequence number the next entry gets (= number of entries so far).
    pub next_seq: u64,
    /// Hash of the last entry, or the genesis hash while the chain is empty.
    pub head_hash: Hash,
}

impl ChainHead {
    /// The empty chain of `partition`.
    pub fn genesis(partition: u32) -> ChainHead {
        ChainHead { partition, next_seq: 0, head_hash: genesis_hash(partition) }
    }

    /// Chains `canonical` (an event's canonical bytes) as the next entry and advances the head.
    pub fn append(&mut self, canonical: &[u8]) -> Result<AppendedEntry, ChainError> {
        let seq = self.next_seq;
        if seq > MAX_SEQ {
            return Err(ChainError::SequenceExhausted { partition: self.partition });
        }
        let prev_hash = self.head_hash;
        let hash = entry_hash(&prev_hash, seq, canonical);
        self.next_seq = seq + 1; // seq <= i64::MAX, no overflow
        self.head_hash = hash;
        Ok(AppendedEntry { seq, prev_hash, entry_hash: hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEventJson {
        AuditEventJson {
            event_id: "e-1".into(),
            event_type: "eval.promotion_denied".into(),
            actor: "policy".into(),
            subject: "model-7".into(),
            occurred_at: 1_700_000_000_123,
            payload: r#"{ "reason" : "risk", "score": 0.50, "tags": ["a","b"] }"#.into(),
        }
    }

    #[test]
    fn canonical_form_of_an_event() {
        assert_eq!(
            String::from_utf8(event().canonical_bytes().unwrap()).unwrap(),
            r#"{"actor":"policy","event_id":"e-1","occurred_at":1700000000123,"payload":{"reason":"risk","score":0.5,"tags":["a","b"]},"subject":"model-7","type":"eval.promotion_denied"}"#
        );
    }

    #[test]
    fn the_event_members_are_written_in_utf16_order() {
        let mut names = EVENT_FIELDS;
        names.sort_by(|a, b| canonical::cmp_utf16(a, b));
        assert_eq!(names, ["actor", "event_id", "occurred_at", "payload", "subject", "type"]);
    }

    #[test]
    fn occurred_at_is_written_as_ecmascript_writes_it() {
        let mut values = vec![0, 1, -1, 9, 10, -10, 123, MAX_OCCURRED_AT_MS, -MAX_OCCURRED_AT_MS];
        values.extend((0..63).map(|b| (1i64 << b) - 1).filter(|v| *v <= MAX_OCCURRED_AT_MS));
        values.extend((0..16).map(|e| 10i64.pow(e)));
        for v in values.into_iter().flat_map(|v| [v, -v]) {
            let mut out = Vec::new();
            write_integer(&mut out, v);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                canonical::format_number(v as f64).unwrap()
            );
        }
    }

    #[test]
    fn bad_payloads_and_times_are_errors() {
        let mut e = event();
        e.payload = r#"{"a":1,"a":2}"#.into();
        assert!(matches!(e.canonical_bytes(), Err(ChainError::Payload(_))));
        e.payload = String::new();
        assert!(matches!(e.canonical_bytes(), Err(ChainError::Payload(_))));
        e.payload = "null".into();
        assert!(e.canonical_bytes().is_ok());
        e.occurred_at = MAX_OCCURRED_AT_MS + 1;
        assert_eq!(e.canonical_bytes(), Err(ChainError::OccurredAtOutOfRange(1 << 53)));
        e.occurred_at = -MAX_OCCURRED_AT_MS;
        assert!(e.canonical_bytes().is_ok());
    }

    #[test]
    fn json_and_avro_forms() {
        let e = event();
        assert_eq!(AuditEventJson::from_json(&e.to_json()).unwrap(), e);
        let avro = Value::Record(vec![
            ("event_id".into(), Value::String(e.event_id.clone())),
            ("type".into(), Value::String(e.event_type.clone())),
            ("actor".into(), Value::String(e.actor.clone())),
            ("subject".into(), Value::String(e.subject.clone())),
            ("occurred_at".into(), Value::TimestampMillis(e.occurred_at)),
            ("payload".into(), Value::String(e.payload.clone())),
        ]);
        assert_eq!(AuditEventJson::from_avro(&avro).unwrap(), e);

        let mut extra = e.to_json();
        extra["severity"] = serde_json::json!("high");
        assert!(AuditEventJson::from_json(&extra).is_err());
        let mut missing = e.to_json();
        missing.as_object_mut().unwrap().remove("actor");
        assert!(AuditEventJson::from_json(&missing).is_err());
        let mut object_payload = e.to_json();
        object_payload["payload"] = serde_json::json!({"a": 1});
        assert!(AuditEventJson::from_json(&object_payload).is_err());
        let mut float_time = e.to_json();
        float_time["occurred_at"] = serde_json::json!(1.5);
        assert!(AuditEventJson::from_json(&float_time).is_err());
        if let Value::Record(mut f) = avro {
            f.push(("severity".into(), Value::String("high".into())));
            assert!(AuditEventJson::from_avro(&Value::Record(f)).is_err());
        }
        assert!(AuditEventJson::from_avro(&Value::Null).is_err());
    }

    #[test]
    fn the_borrowed_view_takes_only_the_decoded_shape() {
        let e = event();
        let fields = |time: Value| {
            vec![
                ("event_id".to_string(), Value::String(e.event_id.clone())),
                ("type".to_string(), Value::String(e.event_type.clone())),
                ("actor".to_string(), Value::String(e.actor.clone())),
                ("subject".to_string(), Value::String(e.subject.clone())),
                ("occurred_at".to_string(), time),
                ("payload".to_string(), Value::String(e.payload.clone())),
            ]
        };
        for time in [Value::TimestampMillis(e.occurred_at), Value::Long(e.occurred_at)] {
            let value = Value::Record(fields(time));
            assert_eq!(AuditEventRef::from_decoded(&value), Some(e.as_ref()));
            assert_eq!(AuditEventJson::from_avro(&value).unwrap(), e);
        }
        // Anything else goes to the strict path, which decides.
        let mut reordered = fields(Value::Long(e.occurred_at));
        reordered.swap(0, 1);
        let mut extra = fields(Value::Long(e.occurred_at));
        extra.push(("severity".into(), Value::String("high".into())));
        let mut wrapped = fields(Value::Long(e.occurred_at));
        wrapped[5].1 = Value::Union(0, Box::new(Value::String(e.payload.clone())));
        let mut renamed = fields(Value::Long(e.occurred_at));
        renamed[2].0 = "actors".into();
        let mut short = fields(Value::Long(e.occurred_at));
        short.pop();
        for other in [reordered, extra, wrapped, renamed, short] {
            assert_eq!(AuditEventRef::from_decoded(&Value::Record(other)), None);
        }
        assert_eq!(AuditEventRef::from_decoded(&Value::Null), None);
    }

    #[test]
    fn chain_links_and_counts() {
        let mut head = ChainHead::genesis(3);
        assert_eq!(head.head_hash, genesis_hash(3));
        assert_ne!(genesis_hash(3), genesis_hash(4));
        let a = head.append(b"{}").unwrap();
        let b = head.append(b"[]").unwrap();
        assert_eq!((a.seq, b.seq), (0, 1));
        assert_eq!(a.prev_hash, genesis_hash(3));
        assert_eq!(b.prev_hash, a.entry_hash);
        assert_eq!(head.head_hash, b.entry_hash);
        assert_eq!(head.next_seq, 2);
        assert_eq!(b.entry_hash, entry_hash(&a.entry_hash, 1, b"[]"));

        let mut last = ChainHead { partition: 0, next_seq: MAX_SEQ, head_hash: [0; 32] };
        assert!(last.append(b"1").is_ok());
        assert_eq!(last.append(b"2"), Err(ChainError::SequenceExhausted { partition: 0 }));
    }
}
