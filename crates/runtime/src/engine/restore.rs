//! Restore: rebuild partitions' state from the changelog, and find where each input resumes.
//!
//! ```text
//!  changelog[p] (one read for all restored partitions, to the true end: see reader.rs)
//!     state entry  (txn T) ─► broker view: applied at once (read_committed shows only commits)
//!                             markers view: held until a marker decides T
//!     marker (T, commit_seq k, positions) ─► positions, k;  markers view: T's held entries
//!                                             applied, every other held entry dropped (aborted)
//!  start of input t[p] = max(marker position, group offset, processor's hint)
//! ```
//!
//! **Why the two views differ.** On Apache Kafka a `read_committed` reader sees committed
//! records only, so every visible state entry is applied; entries are *not* matched to their own
//! marker there, because compaction keeps only the latest marker of a partition (one marker key
//! per partition) while it keeps older state entries whose marker it removed. On a broker that
//! shows aborted records (the markers view) an entry counts only when its own transaction's
//! marker follows; such a broker (our in-memory Tansu) never compacts, so every marker is there.
//! A marker whose commit sequence is not above the previous one is a zombie's and is ignored,
//! with its entries.

use std::collections::{BTreeMap, HashMap};

use rdkafka::message::{Headers, Message};
use tracing::{debug, info, warn};

use crate::config::CommittedView;
use crate::error::RuntimeError;
use crate::headers;
use crate::progress::ProgressMarker;
#[cfg(test)]
use crate::progress::ProgressPosition;
use crate::reader::{CommittedReader, PartitionRead};
use crate::state::{self, ChangelogKey, StateView};

pub use crate::progress::PROGRESS_MARKER_SCHEMA;

/// What a changelog partition proves.
#[derive(Debug, Default)]
pub struct Restored {
    /// The state.
    pub state: StateView,
    /// Next offset per physical input topic, from the last accepted marker.
    pub positions: BTreeMap<String, i64>,
    /// The partition's commit sequence (last accepted marker's).
    pub commit_seq: i64,
}

/// Reads `changelog` partitions `partitions` to their end with one reader and rebuilds what each
/// proves.
pub fn restore_changelog(
    reader: &CommittedReader,
    changelog: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, Restored>, RuntimeError> {
    let view = reader.view();
    let mut folds: HashMap<i32, RestoreFold> =
        partitions.iter().map(|p| (*p, RestoreFold::new(view))).collect();
    let reads: Vec<PartitionRead> =
        partitions.iter().map(|p| PartitionRead { partition: *p, from: 0, until: None }).collect();
    reader.read_raw(changelog, &reads, |m| {
        let Some(fold) = folds.get_mut(&m.partition()) else { return Ok(true) };
        fold.records += 1;
        let Some(key) = m.key() else { return Ok(true) };
        let txn = m.headers().and_then(|h| {
            h.iter()
                .find(|x| x.key == headers::TXN)
                .and_then(|x| x.value)
                .and_then(|v| std::str::from_utf8(v).ok())
        });
        match state::parse_changelog_key(key) {
            Some(ChangelogKey::State(k)) => fold.state_entry(k, m.payload(), txn),
            Some(ChangelogKey::Marker(_)) => {
                let marker =
                    ProgressMarker::decode(reader.codec(), m.payload().unwrap_or_default())
                        .map_err(|e| RuntimeError::Restore {
                            topic: changelog.to_string(),
                            partition: m.partition(),
                            message: format!("marker at offset {}: {e}", m.offset()),
                        })?;
                fold.marker(marker);
            }
            None => warn!(offset = m.offset(), "changelog record with a foreign key; ignored"),
        }
        Ok(true)
    })?;
    Ok(folds.into_iter().map(|(p, fold)| (p, fold.finish(changelog, p))).collect())
}

/// The start offset of an input partition: the furthest of what its last marker, the group's
/// committed offset and the processor's own outputs prove (`None`: the log start). On Apache
/// Kafka markers and group offsets commit atomically and agree once the changelog is read to
/// its end; on a broker that shows aborted records a marker of an aborted transaction may be
/// ahead of the group offset, and its outputs are visible, so the marker wins. Taking the
/// furthest also means a marker can never move the start *back* past a committed offset.
pub fn start_position(marker: Option<i64>, group: Option<i64>, hint: Option<i64>) -> Option<i64> {
    [marker, group, hint].into_iter().flatten().max()
}

/// A state entry: store key and value (`None`: deleted).
type Entry = (Vec<u8>, Option<Vec<u8>>);

/// What one changelog partition proves, built record by record in log order.
#[derive(Debug)]
pub struct RestoreFold {
    view: CommittedView,
    restored: Restored,
    /// Markers view: entries waiting for their transaction's marker, grouped by transaction in
    /// log order (`None`: an entry without a transaction header, from an older version).
    held: Vec<(Option<String>, Vec<Entry>)>,
    /// Records read.
    pub records: u64,
    stale_markers: u64,
}

impl RestoreFold {
    /// An empty fold for `view`.
    pub fn new(view: CommittedView) -> Self {
        RestoreFold {
            view,
            restored: Restored::default(),
            held: Vec::new(),
            records: 0,
            stale_markers: 0,
        }
    }

    /// A state entry of transaction `txn`.
    pub fn state_entry(&mut self, key: &[u8], value: Option<&[u8]>, txn: Option<&str>) {
        let entry = (key.to_vec(), value.map(<[u8]>::to_vec));
        match self.view {
            CommittedView::Broker => {
                self.restored.state.restore(entry.0, entry.1);
            }
            CommittedView::Markers => match self.held.last_mut() {
                Some((t, entries)) if t.as_deref() == txn => entries.push(entry),
                _ => self.held.push((txn.map(str::to_string), vec![entry])),
            },
        }
    }

    /// The next marker in log order.
    pub fn marker(&mut self, m: ProgressMarker) {
        let stale = m.commit_seq != 0 && m.commit_seq <= self.restored.commit_seq;
        if stale {
            // A zombie's marker (same sequence as one already accepted): it and its entries are
            // not part of the committed history. Only possible where aborted records show.
            self.stale_markers += 1;
            self.held.retain(|(t, _)| t.as_deref() != Some(m.txn.as_str()));
            return;
        }
        if self.view == CommittedView::Markers {
            for (txn, entries) in self.held.drain(..) {
                // Entries of this transaction are committed; entries of other transactions
                // before this marker never got a marker of their own: aborted.
                if txn.is_none() || txn.as_deref() == Some(m.txn.as_str()) {
                    for (k, v) in entries {
                        self.restored.state.restore(k, v);
                    }
                }
            }
        }
        for p in m.positions {
            self.restored.positions.insert(p.topic, p.next_offset);
        }
        self.restored.commit_seq = self.restored.commit_seq.max(m.commit_seq);
    }

    /// The result; entries still held belong to transactions that never committed.
    pub fn finish(self, changelog: &str, partition: i32) -> Restored {
        let dropped: usize = self.held.iter().map(|(_, e)| e.len()).sum();
        if dropped > 0 || self.stale_markers > 0 {
            info!(
                changelog,
                partition,
                dropped,
                stale_markers = self.stale_markers,
                "ignored state entries of transactions that did not commit"
            );
        }
        debug!(
            changelog,
            partition,
            records = self.records,
            keys = self.restored.state.len(),
            commit_seq = self.restored.commit_seq,
            "restored"
        );
        self.restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(txn: &str, seq: i64, next: i64) -> ProgressMarker {
        ProgressMarker {
            partition: 0,
            txn: txn.into(),
            instance: "i".into(),
            commit_seq: seq,
            positions: vec![
                ProgressPosition { topic: "in".into(), next_offset: next },
                ProgressPosition { topic: "in.retry".into(), next_offset: 3 },
            ],
        }
    }

    fn get(r: &Restored, k: &str) -> Option<String> {
        r.state.get(k.as_bytes()).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Defect 4: on a broker that shows aborted records, the entries of an aborted transaction
    /// (`a-2`, no marker) must not be applied when the *next* transaction's marker arrives.
    #[test]
    fn markers_view_applies_only_the_markers_own_transaction() {
        let mut f = RestoreFold::new(CommittedView::Markers);
        f.state_entry(b"k", Some(b"1"), Some("a-1"));
        f.marker(marker("a-1", 1, 10));
        f.state_entry(b"k", Some(b"2-aborted"), Some("a-2"));
        f.state_entry(b"x", Some(b"aborted"), Some("a-2"));
        f.state_entry(b"k", Some(b"3"), Some("b-1"));
        f.marker(marker("b-1", 2, 20));
        f.state_entry(b"k", Some(b"4-open"), Some("b-2"));
        let r = f.finish("cl", 0);
        assert_eq!(get(&r, "k").as_deref(), Some("3"));
        assert_eq!(get(&r, "x"), None, "an aborted transaction's entry was applied");
        assert_eq!(r.positions.get("in"), Some(&20));
        assert_eq!(r.positions.get("in.retry"), Some(&3));
        assert_eq!(r.commit_seq, 2);
    }

    #[test]
    fn a_zombies_marker_and_entries_are_ignored() {
        let mut f = RestoreFold::new(CommittedView::Markers);
        f.state_entry(b"k", Some(b"1"), Some("a-1"));
        f.marker(marker("a-1", 1, 10));
        f.state_entry(b"k", Some(b"2"), Some("b-1"));
        f.marker(marker("b-1", 2, 20));
        // The zombie restored at sequence 1 too, and committed on a broker without fencing.
        f.state_entry(b"k", Some(b"zombie"), Some("z-7"));
        f.marker(marker("z-7", 2, 15));
        let r = f.finish("cl", 0);
        assert_eq!(get(&r, "k").as_deref(), Some("2"));
        assert_eq!(r.positions.get("in"), Some(&20));
    }

    /// On Kafka every visible entry is committed, including entries whose marker compaction
    /// removed (only the latest marker of a partition survives compaction).
    #[test]
    fn broker_view_applies_every_visible_entry() {
        let mut f = RestoreFold::new(CommittedView::Broker);
        f.state_entry(b"old", Some(b"kept by compaction"), Some("a-1"));
        f.state_entry(b"k", Some(b"2"), Some("a-5"));
        f.marker(marker("a-5", 5, 50));
        let r = f.finish("cl", 0);
        assert_eq!(get(&r, "old").as_deref(), Some("kept by compaction"));
        assert_eq!(get(&r, "k").as_deref(), Some("2"));
        assert_eq!(r.commit_seq, 5);
    }

    #[test]
    fn legacy_markers_apply_what_precedes_them() {
        let mut f = RestoreFold::new(CommittedView::Markers);
        f.state_entry(b"k", Some(b"1"), Some("a-1"));
        f.marker(ProgressMarker { commit_seq: 0, ..marker("a-1", 0, 7) });
        let r = f.finish("cl", 0);
        assert_eq!(get(&r, "k").as_deref(), Some("1"));
    }

    /// Defect 2: a stale marker must not win over a newer group offset.
    #[test]
    fn the_start_is_the_furthest_proven_position() {
        assert_eq!(start_position(Some(5), Some(10), None), Some(10));
        assert_eq!(start_position(Some(12), Some(10), None), Some(12));
        assert_eq!(start_position(None, Some(10), Some(11)), Some(11));
        assert_eq!(start_position(None, None, None), None);
    }
}
