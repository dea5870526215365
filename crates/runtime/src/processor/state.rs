//! [`State`]: what a processor sees of its keyed state. Typed values (serde, stored as JSON) and
//! raw bytes over the partition's [`StateView`], without the engine's transaction bookkeeping
//! (`begin_record`, `rollback_record`, `take_changes`, `abort`, `restore` stay with the engine).
//!
//! **Why JSON for typed values.** State is what an operator looks at when something is stuck:
//! `evalstream consume evalstream.<processor>.changelog` prints a JSON value as text, so an
//! allocation waiting in `pending_finance` can be read without the processor's Rust types, and
//! an operator command can list state generically. JSON also evolves like the types do: a new
//! field with `#[serde(default)]` reads old state, a removed field is ignored, where a positional
//! binary format (bincode) breaks on either. It costs bytes (a few times bincode's for small
//! structs), but changelog traffic is bounded by distinct keys per commit, not by records, and
//! compaction keeps one value per key. Avro would need a schema file per state type.
//!
//! Determinism holds because the view stores bytes: a processor reads back what was written
//! (live, after an abort, or after a restore from the changelog) through the same parser, so
//! replays see identical values. JSON cannot hold NaN or ±∞ (serde_json writes `null`): such a
//! value is refused by [`State::put`] with [`ProcessError::Invalid`] (a bad input is
//! dead-lettered) instead of turning into a state that no longer reads.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ProcessError;
use crate::state::StateView;

/// The keyed state of the partition being processed. Writes are visible at once to later reads
/// and reach the changelog in the same transaction as the input's offset; when `process`
/// returns an error they are rolled back.
pub struct State<'a> {
    view: &'a mut StateView,
}

impl<'a> State<'a> {
    pub(crate) fn new(view: &'a mut StateView) -> Self {
        State { view }
    }

    /// The value under `key`, decoded from JSON; `None` when absent. A value that does not
    /// decode as `T` is [`ProcessError::Fatal`]: the state was written by an incompatible
    /// version, and continuing would act on a wrong belief.
    pub fn get<T: DeserializeOwned>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, ProcessError> {
        read(self.view, key.as_ref())
    }

    /// Stores `value` under `key` as JSON. A value JSON cannot represent (NaN, ±∞, a map with
    /// non-string keys) is [`ProcessError::Invalid`]: the record is dead-lettered with the
    /// reason rather than leaving a state that does not read back.
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<(), ProcessError> {
        let key = key.as_ref();
        let unrepresentable = |e: &dyn std::fmt::Display| {
            ProcessError::Invalid(format!(
                "state under key {} cannot be stored as JSON: {e}",
                show_key(key)
            ))
        };
        // serde_json would write a non-finite float as `null`, which does not read back.
        super::finite::check(value).map_err(|e| unrepresentable(&e))?;
        let bytes = serde_json::to_vec(value).map_err(|e| unrepresentable(&e))?;
        self.view.put(key, bytes);
        Ok(())
    }

    /// Removes `key` (a tombstone in the changelog).
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.view.delete(key.as_ref());
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: impl AsRef<[u8]>) -> bool {
        self.view.get(key.as_ref()).is_some()
    }

    /// The raw bytes under `key`, for processors that choose their own encoding.
    pub fn get_bytes(&self, key: impl AsRef<[u8]>) -> Option<&[u8]> {
        self.view.get(key.as_ref())
    }

    /// Stores raw bytes under `key`.
    pub fn put_bytes(&mut self, key: impl AsRef<[u8]>, value: Vec<u8>) {
        self.view.put(key.as_ref(), value);
    }

    /// Every key starting with `prefix` with its value decoded as `T`, **sorted by key**, so
    /// that anything derived from the scan (outputs, their order) is deterministic. Costs a pass
    /// over all keys of the partition: for periodic work (punctuation), not per record.
    pub fn scan<T: DeserializeOwned>(
        &self,
        prefix: impl AsRef<[u8]>,
    ) -> Result<Vec<(Vec<u8>, T)>, ProcessError> {
        let prefix = prefix.as_ref();
        let mut entries: Vec<(&[u8], &[u8])> =
            self.view.iter().filter(|(k, _)| k.starts_with(prefix)).collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        entries.into_iter().map(|(k, v)| Ok((k.to_vec(), decode(k, v)?))).collect()
    }

    /// Number of keys in the partition's state.
    pub fn len(&self) -> usize {
        self.view.len()
    }

    /// Whether the partition's state is empty.
    pub fn is_empty(&self) -> bool {
        self.view.is_empty()
    }
}

/// [`State::get`] on a view (the in-memory test runner reads state after the fact).
pub(crate) fn read<T: DeserializeOwned>(
    view: &StateView,
    key: &[u8],
) -> Result<Option<T>, ProcessError> {
    view.get(key).map(|bytes| decode(key, bytes)).transpose()
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, ProcessError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ProcessError::Fatal(format!(
            "state under key {} does not decode as {}: {e}",
            show_key(key),
            std::any::type_name::<T>()
        ))
    })
}

/// A key for messages: text when it is UTF-8, hex otherwise.
fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => format!("{s:?}"),
        Err(_) => key.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pending {
        id: String,
        score: f64,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn typed_values_round_trip_and_are_readable_json() {
        let mut view = StateView::new();
        let mut s = State::new(&mut view);
        let p = Pending { id: "a-1".into(), score: 0.1 + 0.2, tags: vec!["x".into()] };
        s.put("req/a-1", &p).unwrap();
        assert_eq!(s.get::<Pending>("req/a-1").unwrap(), Some(p));
        assert_eq!(s.get::<Pending>("req/none").unwrap(), None);
        assert!(s.contains(b"req/a-1"));
        assert_eq!(
            std::str::from_utf8(s.get_bytes("req/a-1").unwrap()).unwrap(),
            r#"{"id":"a-1","score":0.30000000000000004,"tags":["x"]}"#
        );
        s.put("n", &42i64).unwrap();
        assert_eq!(s.get::<i64>("n").unwrap(), Some(42));
        s.delete("n");
        assert_eq!(s.get::<i64>("n").unwrap(), None);
    }

    #[test]
    fn old_state_reads_into_a_type_with_a_new_defaulted_field() {
        let mut view = StateView::new();
        view.put(b"k", br#"{"id":"a","score":1.5}"#.to_vec());
        let s = State::new(&mut view);
        assert_eq!(
            s.get::<Pending>("k").unwrap(),
            Some(Pending { id: "a".into(), score: 1.5, tags: vec![] })
        );
    }

    #[test]
    fn state_that_does_not_decode_stops_the_processor() {
        let mut view = StateView::new();
        view.put(&[0xff, 0x00], vec![1, 2, 3]);
        let s = State::new(&mut view);
        let e = s.get::<Pending>([0xff, 0x00]).unwrap_err();
        assert!(matches!(&e, ProcessError::Fatal(m) if m.contains("ff00")), "{e}");
    }

    #[test]
    fn non_finite_numbers_are_refused_not_stored_as_null() {
        let mut view = StateView::new();
        let mut s = State::new(&mut view);
        let e = s.put("k", &Pending { id: "a".into(), score: f64::NAN, tags: vec![] });
        assert!(
            matches!(&e, Err(ProcessError::Invalid(m)) if m.contains("NaN is not a finite")),
            "{e:?}"
        );
        assert!(!s.contains("k"));
        // A legitimate null (an absent option) and the text "null" are fine.
        s.put("o", &(None::<i64>, "null")).unwrap();
        assert_eq!(s.get::<(Option<i64>, String)>("o").unwrap(), Some((None, "null".into())));
        let mut bad_keys = BTreeMap::new();
        bad_keys.insert((1, 2), 3);
        assert!(matches!(s.put("m", &bad_keys), Err(ProcessError::Invalid(_))));
    }

    #[test]
    fn scan_is_sorted_and_filtered_by_prefix() {
        let mut view = StateView::new();
        let mut s = State::new(&mut view);
        for k in ["p/3", "q/1", "p/1", "p/2"] {
            s.put(k, &k.to_string()).unwrap();
        }
        let keys: Vec<String> = s
            .scan::<String>("p/")
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                assert_eq!(k, v.as_bytes());
                v
            })
            .collect();
        assert_eq!(keys, ["p/1", "p/2", "p/3"]);
        assert_eq!(s.len(), 4);
    }
}
