//! Progress markers: the record in a processor's changelog that commits a transaction's work on
//! one partition, and the index that answers "is this record committed?" from them.
//!
//! ```text
//!  transaction T touches partition p ──► outputs, DLQ/retry records, state entries, each with
//!                                         evalstream.txn = T, evalstream.progress = <changelog>/p/k
//!                                    ──► ONE marker in changelog[p]: {txn T, commit_seq k,
//!                                         positions of every input topic of p}
//! ```
//!
//! `k` is the partition's commit sequence: one more than the last committed marker's. An aborted
//! transaction's work is redone under the same `k` by the next transaction, so for every `k` at
//! most one transaction can be committed, and on a broker that shows aborted records a reader
//! decides each record by the *first* marker with its `k`: committed iff that marker is its own
//! transaction's. A marker whose `k` is not above the last one seen is stale (written by a zombie
//! that restored from the same point) and is ignored everywhere. Markers written before commit
//! sequences existed carry `k = 0` and are matched by transaction id only.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::headers;
use crate::record::Record;

/// Avro schema of progress-marker values in a changelog topic.
pub const PROGRESS_MARKER_SCHEMA: &str = "evalstream.runtime.ProgressMarker";

/// A progress marker: `evalstream.runtime.ProgressMarker`, the value of the marker record (key
/// [`crate::state::marker_changelog_key`]) of one changelog partition in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressMarker {
    /// Partition (of the inputs and of the changelog) it covers.
    pub partition: i32,
    /// Transaction that wrote it.
    pub txn: String,
    /// Instance that wrote it.
    pub instance: String,
    /// The partition's commit sequence (0: written before commit sequences existed).
    pub commit_seq: i64,
    /// Where every input topic of the partition (inputs and retry topics) resumes after this
    /// transaction.
    pub positions: Vec<ProgressPosition>,
}

/// Where one input topic of a partition resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressPosition {
    /// Physical input topic.
    pub topic: String,
    /// Next offset to process (last processed + 1).
    pub next_offset: i64,
}

impl Record for ProgressMarker {
    const SCHEMA: &'static str = PROGRESS_MARKER_SCHEMA;
}

impl ProgressMarker {
    /// Decodes a marker value (any schema version: a marker written before commit sequences
    /// existed reads with `commit_seq` 0 and no positions).
    pub fn decode(codec: &Codec, bytes: &[u8]) -> Result<Self, String> {
        let m: ProgressMarker = codec.decode_record(bytes).map_err(|e| e.to_string())?;
        if m.txn.is_empty() {
            return Err("marker has no txn".into());
        }
        Ok(m)
    }
}

/// What a record's `evalstream.progress` header names: the marker that commits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressRef {
    /// Changelog topic (physical).
    pub changelog: String,
    /// Partition of the changelog.
    pub partition: i32,
    /// Commit sequence the record's transaction commits under.
    pub commit_seq: i64,
}

impl ProgressRef {
    /// The header value.
    pub fn header_value(&self) -> String {
        headers::coordinate(&self.changelog, self.partition, self.commit_seq)
    }

    /// Parses a header value.
    pub fn parse(value: &str) -> Option<Self> {
        let (changelog, partition, seq) = headers::parse_coordinate(value)?;
        (seq >= 0).then_some(ProgressRef { changelog, partition, commit_seq: seq })
    }
}

/// The markers of one changelog as a reader has seen them, in log order per partition.
#[derive(Debug, Default, Clone)]
pub struct MarkerIndex {
    /// (partition, commit_seq) → transaction of the first marker with that sequence.
    first: HashMap<(i32, i64), String>,
    /// Highest commit sequence seen per partition.
    last: HashMap<i32, i64>,
    /// (partition, txn) of markers without a commit sequence (written by older versions).
    legacy: HashSet<(i32, String)>,
}

impl MarkerIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next marker of `partition` in log order. Returns false when it is stale (its
    /// sequence is not above the last one seen: a zombie's), which every reader ignores.
    pub fn observe(&mut self, partition: i32, marker: &ProgressMarker) -> bool {
        if marker.commit_seq == 0 {
            self.legacy.insert((partition, marker.txn.clone()));
            return true;
        }
        let last = self.last.entry(partition).or_default();
        if marker.commit_seq <= *last {
            return false;
        }
        *last = marker.commit_seq;
        self.first.insert((partition, marker.commit_seq), marker.txn.clone());
        true
    }

    /// Whether the record of transaction `txn` committing under `progress` is committed:
    /// `Some(true)` / `Some(false)` once the marker with its sequence has been seen, `None` while
    /// it has not (its transaction is still open, or the index is behind the changelog).
    pub fn decide(&self, partition: i32, commit_seq: i64, txn: &str) -> Option<bool> {
        if commit_seq == 0 {
            return Some(self.legacy.contains(&(partition, txn.to_string())));
        }
        self.first.get(&(partition, commit_seq)).map(|t| t == txn)
    }

    /// Highest commit sequence seen for `partition`.
    pub fn last_seq(&self, partition: i32) -> i64 {
        self.last.get(&partition).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(txn: &str, seq: i64) -> ProgressMarker {
        ProgressMarker {
            partition: 0,
            txn: txn.into(),
            instance: "i".into(),
            commit_seq: seq,
            positions: vec![
                ProgressPosition { topic: "t".into(), next_offset: 5 },
                ProgressPosition { topic: "t.retry".into(), next_offset: 2 },
            ],
        }
    }

    #[test]
    fn markers_match_their_schema_and_round_trip() {
        crate::testkit::check_record::<ProgressMarker>();
        let codec = crate::testkit::codec();
        let m = marker("i-1-7", 42);
        let bytes = codec.encode_record("cl", &m).unwrap();
        assert_eq!(ProgressMarker::decode(codec, &bytes).unwrap(), m);
    }

    /// A marker written by an older version (schema v1: one per input topic, no sequence) still
    /// decodes, with sequence 0 and no positions.
    #[test]
    fn version_1_markers_decode() {
        use apache_avro::types::Value;
        let store = crate::codec::SchemaStore::bundled().unwrap();
        let v1 = store
            .entries()
            .find(|e| e.path() == "history/evalstream.runtime.ProgressMarker/v1.avsc")
            .expect("v1 is bundled");
        let value = Value::Record(vec![
            ("topic".into(), Value::String("p.totals.input".into())),
            ("partition".into(), Value::Int(3)),
            ("next_offset".into(), Value::Long(17)),
            ("txn".into(), Value::String("i-0000abcd-7".into())),
            ("instance".into(), Value::String("i".into())),
        ]);
        let bytes = crate::codec::encode_single_object(v1, &value).unwrap();
        let m = ProgressMarker::decode(crate::testkit::codec(), &bytes).unwrap();
        assert_eq!((m.partition, m.commit_seq, m.txn.as_str()), (3, 0, "i-0000abcd-7"));
        assert!(m.positions.is_empty());
    }

    #[test]
    fn the_first_marker_of_a_sequence_decides_and_stale_ones_are_ignored() {
        let mut idx = MarkerIndex::new();
        assert!(idx.observe(0, &marker("a-1", 1)));
        assert!(idx.observe(0, &marker("a-3", 2))); // a-2 aborted: its work redone by a-3
        assert!(!idx.observe(0, &marker("zombie-9", 2))); // same sequence, later: stale
        assert_eq!(idx.decide(0, 1, "a-1"), Some(true));
        assert_eq!(idx.decide(0, 2, "a-2"), Some(false));
        assert_eq!(idx.decide(0, 2, "a-3"), Some(true));
        assert_eq!(idx.decide(0, 2, "zombie-9"), Some(false));
        assert_eq!(idx.decide(0, 3, "a-4"), None, "not decided before its marker is seen");
        assert_eq!(idx.last_seq(0), 2);
    }

    #[test]
    fn progress_refs_round_trip() {
        let r = ProgressRef {
            changelog: "p.evalstream.x.changelog".into(),
            partition: 3,
            commit_seq: 9,
        };
        assert_eq!(ProgressRef::parse(&r.header_value()), Some(r));
        assert_eq!(ProgressRef::parse("x/1/-1"), None);
    }
}
