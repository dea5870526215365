//! The state a rebuild compares: a canonical digest and a difference, both pure.
//!
//! ```text
//!   state   = sorted map (changelog partition, store key) → value bytes
//!   digest  = SHA-256 over, for every entry in that order:
//!             partition (i32, big endian) ‖ len(key) (u32 BE) ‖ key ‖ len(value) (u32 BE) ‖ value
//!   diff    = keys only live, keys only rebuilt, keys whose values differ (each sorted)
//! ```
//!
//! The partition is part of the identity: state partition `p` serves input partition `p`, and
//! a processor may keep the same store key in two partitions (per-partition bookkeeping). Live
//! and rebuilt state use the same partitioning, so comparing per partition is exact, and a key
//! that moved partition is a difference worth seeing. Lengths are framed so that no two
//! different states can produce the same byte stream.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

/// One processor's state: (changelog partition, store key) → value.
pub type State = BTreeMap<(i32, Vec<u8>), Vec<u8>>;

/// SHA-256 of the canonical form of `state`, lower-case hex.
pub fn digest(state: &State) -> String {
    let mut h = Sha256::new();
    for ((p, k), v) in state {
        h.update(p.to_be_bytes());
        h.update((k.len() as u32).to_be_bytes());
        h.update(k);
        h.update((v.len() as u32).to_be_bytes());
        h.update(v);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// How two states differ.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Keys in the live state only.
    pub only_live: Vec<(i32, Vec<u8>)>,
    /// Keys in the rebuilt state only.
    pub only_rebuilt: Vec<(i32, Vec<u8>)>,
    /// Keys in both whose values differ.
    pub differing: Vec<(i32, Vec<u8>)>,
}

impl Diff {
    /// Whether the states are equal.
    pub fn is_empty(&self) -> bool {
        self.only_live.is_empty() && self.only_rebuilt.is_empty() && self.differing.is_empty()
    }
}

/// The difference between `live` and `rebuilt`, in key order (one merge pass).
pub fn diff(live: &State, rebuilt: &State) -> Diff {
    let mut d = Diff::default();
    let mut l = live.iter().peekable();
    let mut r = rebuilt.iter().peekable();
    loop {
        match (l.peek(), r.peek()) {
            (Some((lk, lv)), Some((rk, rv))) => match lk.cmp(rk) {
                std::cmp::Ordering::Less => {
                    d.only_live.push((*lk).clone());
                    l.next();
                }
                std::cmp::Ordering::Greater => {
                    d.only_rebuilt.push((*rk).clone());
                    r.next();
                }
                std::cmp::Ordering::Equal => {
                    if lv != rv {
                        d.differing.push((*lk).clone());
                    }
                    l.next();
                    r.next();
                }
            },
            (Some((lk, _)), None) => {
                d.only_live.push((*lk).clone());
                l.next();
            }
            (None, Some((rk, _))) => {
                d.only_rebuilt.push((*rk).clone());
                r.next();
            }
            (None, None) => return d,
        }
    }
}

/// A store key for people: the text when it is printable UTF-8, else `0x` and hex.
pub fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if !s.is_empty() && !s.chars().any(char::is_control) => s.to_string(),
        _ => format!("0x{}", key.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(entries: &[(i32, &str, &str)]) -> State {
        entries
            .iter()
            .map(|(p, k, v)| ((*p, k.as_bytes().to_vec()), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn the_digest_is_sha256_of_the_framed_sorted_entries() {
        // An empty state digests to SHA-256 of nothing.
        assert_eq!(
            digest(&State::new()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // One entry: 00000001 ‖ 00000001 'a' ‖ 00000001 'b', computed independently:
        // printf '\0\0\0\1\0\0\0\1a\0\0\0\1b' | sha256sum
        assert_eq!(
            digest(&state(&[(1, "a", "b")])),
            "6675a94c1551f356f7ec576a6b19de0f44dff8bd0b37d2af8521508861b0f4de"
        );
        // Insertion order does not matter; framing separates key from value.
        let a = state(&[(0, "x", "1"), (1, "y", "2")]);
        let b = state(&[(1, "y", "2"), (0, "x", "1")]);
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&state(&[(0, "ab", "c")])), digest(&state(&[(0, "a", "bc")])));
        // The partition is part of the identity.
        assert_ne!(digest(&state(&[(0, "x", "1")])), digest(&state(&[(1, "x", "1")])));
    }

    #[test]
    fn the_diff_names_each_kind_of_difference_in_key_order() {
        let live = state(&[(0, "a", "1"), (0, "b", "2"), (1, "c", "3"), (1, "e", "5")]);
        let rebuilt = state(&[(0, "a", "1"), (0, "b", "9"), (1, "d", "4"), (1, "e", "5")]);
        let d = diff(&live, &rebuilt);
        assert_eq!(d.only_live, vec![(1, b"c".to_vec())]);
        assert_eq!(d.only_rebuilt, vec![(1, b"d".to_vec())]);
        assert_eq!(d.differing, vec![(0, b"b".to_vec())]);
        assert!(!d.is_empty());
        assert!(diff(&live, &live).is_empty());
        assert_eq!(diff(&State::new(), &live).only_rebuilt.len(), 4);
    }

    #[test]
    fn keys_show_as_text_or_hex() {
        assert_eq!(show_key(b"k17"), "k17");
        assert_eq!(show_key(&[0, 1, 0xff]), "0x0001ff");
        assert_eq!(show_key(b""), "0x");
    }
}
