//! Keyed state, one [`StateView`] per input partition, backed by a compacted changelog topic.
//!
//! ```text
//!   process(record) ── put/delete ──► StateView { map, record undo, transaction originals }
//!        │ Err: rollback_record()            │ commit: dirty keys ──► changelog partition p
//!        ▼                                    ▼ abort:  the view is dropped and restored
//!                                                       from the changelog (what the log proves)
//! ```
//!
//! The view keeps one undo level: per record, so a failed `process` call leaves no trace. An
//! aborted transaction is *not* undone in memory: the runtime drops the view and restores it from
//! the changelog, the same path as a new assignment, so after any abort (or a commit whose
//! outcome is unknown) the state is exactly what the log proves. The transaction's originals only
//! decide which keys changed: each is written to the changelog once per commit, however many
//! records touched it, so changelog traffic is bounded by distinct keys per commit.

use std::collections::HashMap;

/// Changelog record key of a state entry: this prefix, then the store key.
pub const STATE_KEY_PREFIX: u8 = 0x01;
/// Changelog record key of a progress marker: this byte alone (one marker key per partition, so
/// compaction keeps the latest marker of each partition). Markers written by older versions
/// append the input topic's name.
pub const MARKER_KEY_PREFIX: u8 = 0x00;

/// Keyed byte state of one partition.
#[derive(Debug, Default, Clone)]
pub struct StateView {
    map: HashMap<Vec<u8>, Vec<u8>>,
    record_undo: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    txn_orig: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl StateView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Stores `value` under `key`.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>) {
        // An existing key is updated in place: no copy of the key per write.
        let old = match self.map.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => self.map.insert(key.to_vec(), value),
        };
        self.remember(key, old);
    }

    /// Removes `key` (a tombstone in the changelog).
    pub fn delete(&mut self, key: &[u8]) {
        let old = self.map.remove(key);
        self.remember(key, old);
    }

    fn remember(&mut self, key: &[u8], old: Option<Vec<u8>>) {
        self.txn_orig.entry(key.to_vec()).or_insert_with(|| old.clone());
        self.record_undo.push((key.to_vec(), old));
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the view holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Iterates over all entries (unordered).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Starts a record: writes from here on can be undone by [`StateView::rollback_record`].
    pub fn begin_record(&mut self) {
        self.record_undo.clear();
    }

    /// Undoes every write since [`StateView::begin_record`].
    pub fn rollback_record(&mut self) {
        while let Some((key, old)) = self.record_undo.pop() {
            match old {
                Some(v) => self.map.insert(key, v),
                None => self.map.remove(&key),
            };
        }
    }

    /// Ends the transaction: returns `(key, new value or None for a delete)` for every key whose
    /// value differs from the transaction's start, sorted by key so changelog bytes are
    /// deterministic.
    pub fn take_changes(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.record_undo.clear();
        let mut changes: Vec<_> = self
            .txn_orig
            .drain()
            .filter_map(|(k, orig)| {
                let now = self.map.get(&k).cloned();
                (now != orig).then_some((k, now))
            })
            .collect();
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        changes
    }

    /// Whether the open transaction changed anything.
    pub fn has_changes(&self) -> bool {
        !self.txn_orig.is_empty()
    }

    /// Applies a changelog entry during restore (no undo bookkeeping).
    pub fn restore(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        match value {
            Some(v) => self.map.insert(key, v),
            None => self.map.remove(&key),
        };
    }
}

/// Changelog key of a state entry.
pub fn state_changelog_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(STATE_KEY_PREFIX);
    k.extend_from_slice(key);
    k
}

/// Changelog key of the progress marker of a partition.
pub fn marker_changelog_key() -> Vec<u8> {
    vec![MARKER_KEY_PREFIX]
}

/// What a changelog record key means.
#[derive(Debug, PartialEq, Eq)]
pub enum ChangelogKey<'a> {
    /// A state entry with this store key.
    State(&'a [u8]),
    /// A progress marker (the text after the prefix: empty, or an input topic's name in markers
    /// written by older versions).
    Marker(&'a str),
}

/// Parses a changelog key; `None` for keys this runtime did not write.
pub fn parse_changelog_key(key: &[u8]) -> Option<ChangelogKey<'_>> {
    match key.split_first()? {
        (&STATE_KEY_PREFIX, rest) => Some(ChangelogKey::State(rest)),
        (&MARKER_KEY_PREFIX, rest) => std::str::from_utf8(rest).ok().map(ChangelogKey::Marker),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_rollback_leaves_no_trace() {
        let mut s = StateView::new();
        s.begin_record();
        s.put(b"a", b"1".to_vec());
        s.begin_record();
        s.put(b"a", b"2".to_vec());
        s.put(b"b", b"x".to_vec());
        s.rollback_record();
        assert_eq!(s.get(b"a"), Some(&b"1"[..]));
        assert_eq!(s.get(b"b"), None);
        // b was touched and rolled back: unchanged since txn start, so not in the changelog.
        assert_eq!(s.take_changes(), vec![(b"a".to_vec(), Some(b"1".to_vec()))]);
    }

    #[test]
    fn changes_coalesce_and_sort() {
        let mut s = StateView::new();
        for i in 0..10u8 {
            s.put(b"z", vec![i]);
            s.put(b"m", vec![i]);
        }
        s.delete(b"gone");
        let ch = s.take_changes();
        assert_eq!(ch, vec![(b"m".to_vec(), Some(vec![9])), (b"z".to_vec(), Some(vec![9]))]);
    }

    #[test]
    fn changelog_keys_round_trip() {
        let k = state_changelog_key(b"acct-1");
        assert_eq!(parse_changelog_key(&k), Some(ChangelogKey::State(b"acct-1")));
        assert_eq!(parse_changelog_key(&marker_changelog_key()), Some(ChangelogKey::Marker("")));
        let legacy = [&[MARKER_KEY_PREFIX][..], b"totals.input"].concat();
        assert_eq!(parse_changelog_key(&legacy), Some(ChangelogKey::Marker("totals.input")));
        assert_eq!(parse_changelog_key(&[9, 1]), None);
        assert_eq!(parse_changelog_key(&[]), None);
    }
}
