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

use apache_avro::types::Value;

use crate::codec::Codec;
use crate::headers;

/// Avro schema of progress-marker values in a changelog topic.
pub const PROGRESS_MARKER_SCHEMA: &str = "evalstream.runtime.ProgressMarker";

/// A progress marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressMarker {
    /// Partition (of the inputs and of the changelog) it covers.
    pub partition: i32,
    /// Transaction that wrote it.
    pub txn: String,
    /// Instance that wrote it.
    pub instance: String,
    /// The partition's commit sequence (0: written before commit sequences existed).
    pub commit_seq: u64,
    /// Next offset to process per physical input topic of the partition (inputs and retry
    /// topics), after this transaction.
    pub positions: Vec<(String, i64)>,
}

impl ProgressMarker {
    /// The Avro value (schema [`PROGRESS_MARKER_SCHEMA`]).
    pub fn to_avro(&self) -> Value {
        let positions = self
            .positions
            .iter()
            .map(|(topic, next)| {
                Value::Record(vec![
                    ("topic".into(), Value::String(topic.clone())),
                    ("next_offset".into(), Value::Long(*next)),
                ])
            })
            .collect();
        Value::Record(vec![
            ("partition".into(), Value::Int(self.partition)),
            ("txn".into(), Value::String(self.txn.clone())),
            ("instance".into(), Value::String(self.instance.clone())),
            ("commit_seq".into(), Value::Long(self.commit_seq as i64)),
            ("positions".into(), Value::Array(positions)),
        ])
    }

    /// Decodes a marker value (any schema version).
    pub fn decode(codec: &Codec, bytes: &[u8]) -> Result<Self, String> {
        let decoded = codec.decode(bytes).map_err(|e| e.to_string())?;
        if decoded.schema_name != PROGRESS_MARKER_SCHEMA {
            return Err(format!("expected {PROGRESS_MARKER_SCHEMA}, got {}", decoded.schema_name));
        }
        let Value::Record(fields) = decoded.value else {
            return Err("marker is not a record".into());
        };
        let mut m = ProgressMarker {
            partition: -1,
            txn: String::new(),
            instance: String::new(),
            commit_seq: 0,
            positions: Vec::new(),
        };
        for (name, value) in fields {
            match (name.as_str(), value) {
                ("partition", Value::Int(p)) => m.partition = p,
                ("txn", Value::String(t)) => m.txn = t,
                ("instance", Value::String(i)) => m.instance = i,
                ("commit_seq", Value::Long(k)) => m.commit_seq = k.max(0) as u64,
                ("positions", Value::Array(items)) => {
                    for item in items {
                        let Value::Record(f) = item else { continue };
                        let topic = f.iter().find_map(|(n, v)| match (n.as_str(), v) {
                            ("topic", Value::String(t)) => Some(t.clone()),
                            _ => None,
                        });
                        let next = f.iter().find_map(|(n, v)| match (n.as_str(), v) {
                            ("next_offset", Value::Long(o)) => Some(*o),
                            _ => None,
                        });
                        if let (Some(t), Some(o)) = (topic, next) {
                            m.positions.push((t, o));
                        }
                    }
                }
                _ => {}
            }
        }
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
    pub commit_seq: u64,
}

impl ProgressRef {
    /// The header value.
    pub fn header_value(&self) -> String {
        headers::coordinate(&self.changelog, self.partition, self.commit_seq as i64)
    }

    /// Parses a header value.
    pub fn parse(value: &str) -> Option<Self> {
        let (changelog, partition, seq) = headers::parse_coordinate(value)?;
        Some(ProgressRef { changelog, partition, commit_seq: u64::try_from(seq).ok()? })
    }
}

/// The markers of one changelog as a reader has seen them, in log order per partition.
#[derive(Debug, Default, Clone)]
pub struct MarkerIndex {
    /// (partition, commit_seq) → transaction of the first marker with that sequence.
    first: HashMap<(i32, u64), String>,
    /// Highest commit sequence seen per partition.
    last: HashMap<i32, u64>,
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
    pub fn decide(&self, partition: i32, commit_seq: u64, txn: &str) -> Option<bool> {
        if commit_seq == 0 {
            return Some(self.legacy.contains(&(partition, txn.to_string())));
        }
        self.first.get(&(partition, commit_seq)).map(|t| t == txn)
    }

    /// Highest commit sequence seen for `partition`.
    pub fn last_seq(&self, partition: i32) -> u64 {
        self.last.get(&partition).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(txn: &str, seq: u64) -> ProgressMarker {
        ProgressMarker {
            partition: 0,
            txn: txn.into(),
            instance: "i".into(),
            commit_seq: seq,
            positions: vec![("t".into(), 5), ("t.retry".into(), 2)],
        }
    }

    #[test]
    fn markers_round_trip_through_avro() {
        let codec = Codec::new(crate::codec::SchemaStore::bundled().unwrap(), None).unwrap();
        let m = marker("i-1-7", 42);
        let bytes = codec.encode("cl", PROGRESS_MARKER_SCHEMA, &m.to_avro()).unwrap();
        assert_eq!(ProgressMarker::decode(&codec, &bytes).unwrap(), m);
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
