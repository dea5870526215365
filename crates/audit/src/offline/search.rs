//! Time → offset, without trusting the broker's offsets-for-times answer.
//!
//! ```text
//!   hint = offsets_for_times(T)            (may be anything: our local broker answers 0)
//!     │ check: pred(hint) and not pred(hint - 1)?     pred(x) = "the first timed record at or
//!     │   yes ─► done (2 reads)                               after x has time >= T, or there
//!     │   no  ─► gallop from the hint (1, 2, 4, ... records)  is none"
//!     ▼          to bracket the answer, then binary search inside the bracket
//!   the smallest x with pred(x): its record is the first one at or after T
//! ```
//!
//! Offsets are not dense (transaction markers, compaction), so a probe of offset `x` returns the
//! first *timed* record at or after `x` (the caller decides which records carry a time: entries
//! by `occurred_at`, or every record by its Kafka timestamp). Times are assumed to ascend along
//! the log; where they do not (out-of-order events), the search still ends at a point where the
//! log crosses `T`, and since verification links every entry to its predecessor, a boundary one
//! record off changes what is reported as "the range", never whether the chain holds.
//!
//! The search never reads at or past `end`, the offset after the partition's last record, which
//! the caller establishes by reading (the high watermark is only a hint on our local broker, and a
//! fetch beyond the end of its log neither returns records nor fails: it just waits).

use std::collections::HashMap;

/// Gallop at most this far from the hint before falling back to a binary search of the rest:
/// a hint that is close (Kafka's index is exact for log time; event time lags it slightly) costs
/// a few reads, a useless one (offset 0) costs no more than a plain binary search.
pub const GALLOP_LIMIT: i64 = 64;

/// The first timed record at or after a probed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Its offset (at or after the probed one).
    pub offset: i64,
    /// Its time, ms since the Unix epoch.
    pub time_ms: i64,
}

/// Reads single records of one partition. Implemented over the broker by the binary and over a
/// vector by the tests.
pub trait OffsetProbe {
    /// Why a read failed.
    type Error;

    /// The first timed record at or after `offset`, or `None` when there is none (the end of the
    /// partition).
    fn probe(&mut self, offset: i64) -> Result<Option<Probe>, Self::Error>;
}

/// Where a time falls in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// Offset of the first timed record at or after the time; `None` when every record is
    /// earlier.
    pub offset: Option<i64>,
    /// The broker's answer that served as the starting point.
    pub hint: Option<i64>,
    /// Whether the hint named the right record.
    pub hint_correct: bool,
    /// How many distinct offsets were read.
    pub probes: usize,
}

struct Search<'p, P: OffsetProbe> {
    probe: &'p mut P,
    target: i64,
    end: i64,
    memo: HashMap<i64, Option<Probe>>,
}

impl<P: OffsetProbe> Search<'_, P> {
    fn at(&mut self, x: i64) -> Result<Option<Probe>, P::Error> {
        if x >= self.end {
            return Ok(None);
        }
        if let Some(r) = self.memo.get(&x) {
            return Ok(*r);
        }
        let r = self.probe.probe(x)?;
        self.memo.insert(x, r);
        Ok(r)
    }

    fn pred(&mut self, x: i64) -> Result<bool, P::Error> {
        Ok(self.at(x)?.is_none_or(|p| p.time_ms >= self.target))
    }
}

/// The first record of the partition (offsets `low..end`, `end` being the offset after the last
/// record) whose time is at or after `target_ms`, starting from the broker's `hint` and checking
/// it by reading.
pub fn locate_time<P: OffsetProbe>(
    probe: &mut P,
    target_ms: i64,
    low: i64,
    end: i64,
    hint: Option<i64>,
) -> Result<Located, P::Error> {
    let mut s = Search { probe, target: target_ms, end, memo: HashMap::new() };
    // Invariant: pred(hi) holds (nothing is at or after `end`), and pred(lo - 1) does not (or
    // lo == low).
    let mut lo = low;
    let mut hi = end.max(low);
    let hint_at = hint.map(|g| g.clamp(lo, hi));
    if let Some(g) = hint_at {
        if s.pred(g)? {
            hi = g;
            let mut step = 1i64;
            while lo < hi && step <= GALLOP_LIMIT {
                let x = hi.saturating_sub(step).max(lo);
                if s.pred(x)? {
                    hi = x;
                    step *= 2;
                } else {
                    lo = x + 1;
                    break;
                }
            }
        } else {
            lo = g + 1;
            let mut step = 1i64;
            while lo < hi && step <= GALLOP_LIMIT {
                let x = g.saturating_add(step).min(hi);
                if s.pred(x)? {
                    hi = x;
                    break;
                }
                lo = x + 1;
                step *= 2;
            }
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if s.pred(mid)? {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let found = s.at(lo)?;
    let offset = found.map(|p| p.offset);
    let hint_correct = match hint_at {
        Some(g) => s.pred(g)? && s.at(g)?.map(|p| p.offset) == offset,
        None => false,
    };
    Ok(Located { offset, hint, hint_correct, probes: s.memo.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition as `(offset, time)` pairs, ascending offsets with gaps, counting reads.
    struct FakeLog {
        records: Vec<(i64, i64)>,
        reads: usize,
    }

    impl FakeLog {
        fn new(records: Vec<(i64, i64)>) -> Self {
            FakeLog { records, reads: 0 }
        }

        /// The right answer by linear scan.
        fn expected(&self, target: i64) -> Option<i64> {
            self.records.iter().find(|(_, t)| *t >= target).map(|(o, _)| *o)
        }
    }

    impl OffsetProbe for FakeLog {
        type Error = std::convert::Infallible;

        fn probe(&mut self, offset: i64) -> Result<Option<Probe>, Self::Error> {
            // Like our local broker, a read past the end would never return.
            let end = self.records.last().map_or(0, |(o, _)| o + 1);
            assert!(offset < end, "probed offset {offset} at or past the end {end}");
            self.reads += 1;
            Ok(self
                .records
                .iter()
                .find(|(o, _)| *o >= offset)
                .map(|&(offset, time_ms)| Probe { offset, time_ms }))
        }
    }

    /// 1000 records, every third offset a transaction marker (no record), one second apart.
    fn log() -> FakeLog {
        FakeLog::new((0..1500).filter(|o| o % 3 != 2).map(|o| (o, 1_000_000 + o * 1000)).collect())
    }

    #[test]
    fn a_correct_hint_costs_two_reads() {
        let mut l = log();
        // The hint and the record before it.
        let located = locate_time(&mut l, 1_000_000 + 601 * 1000, 0, 1499, Some(601)).unwrap();
        assert_eq!(located.offset, Some(601));
        assert!(located.hint_correct);
        assert_eq!(located.probes, 2, "{located:?}");
        // Before a marker offset the check needs a few more reads, not a search of the log.
        let mut l = log();
        let located = locate_time(&mut l, 1_000_000 + 600 * 1000, 0, 1499, Some(600)).unwrap();
        assert_eq!(located.offset, Some(600));
        assert!(located.hint_correct);
        assert!(located.probes <= 6, "{located:?}");
    }

    #[test]
    fn a_zero_hint_is_corrected_by_binary_search() {
        // What our local broker answers for every mid-log timestamp.
        for target_offset in [1, 3, 4, 299, 700, 1497, 1498] {
            let mut l = log();
            let target = 1_000_000 + target_offset * 1000;
            let want = l.expected(target);
            let located = locate_time(&mut l, target, 0, 1499, Some(0)).unwrap();
            assert_eq!(located.offset, want, "target offset {target_offset}");
            assert!(!located.hint_correct);
            assert!(located.probes <= 40, "{located:?}");
        }
    }

    #[test]
    fn hints_that_are_near_or_far_on_either_side_are_corrected() {
        for (target_offset, hint) in [(700, 690), (700, 712), (700, 1400), (9, 1200), (700, 0)] {
            let mut l = log();
            let target = 1_000_000 + target_offset * 1000;
            let located = locate_time(&mut l, target, 0, 1499, Some(hint)).unwrap();
            assert_eq!(located.offset, l.expected(target), "hint {hint}");
        }
    }

    #[test]
    fn times_between_records_and_outside_the_log() {
        let mut l = log();
        // Between offset 10 (t=1_010_000) and 12 (11 is a marker).
        let located = locate_time(&mut l, 1_010_500, 0, 1499, None).unwrap();
        assert_eq!(located.offset, Some(12));
        let located = locate_time(&mut l, 0, 0, 1499, Some(800)).unwrap();
        assert_eq!(located.offset, Some(0));
        let located = locate_time(&mut l, i64::MAX, 0, 1499, Some(0)).unwrap();
        assert_eq!(located.offset, None);
    }

    #[test]
    fn hints_past_the_end_are_never_read() {
        let mut l = log();
        let end = 1499; // offset 1498 is the last record
        for target in [1_000_000 + 1490 * 1000, i64::MAX] {
            let located = locate_time(&mut l, target, 0, end, Some(5000)).unwrap();
            assert_eq!(located.offset, l.expected(target));
        }
    }

    #[test]
    fn a_log_that_starts_late_and_an_empty_log() {
        let mut l = FakeLog::new((500..600).map(|o| (o, o)).collect());
        let located = locate_time(&mut l, 550, 500, 600, Some(0)).unwrap();
        assert_eq!(located.offset, Some(550));
        let located = locate_time(&mut l, 650, 500, 600, Some(0)).unwrap();
        assert_eq!(located.offset, None);
        let located = locate_time(&mut l, 0, 500, 600, None).unwrap();
        assert_eq!(located.offset, Some(500));
        let mut empty = FakeLog::new(vec![]);
        let located = locate_time(&mut empty, 5, 0, 0, Some(0)).unwrap();
        assert_eq!(located.offset, None);
        assert_eq!(located.probes, 0);
    }

    #[test]
    fn out_of_order_times_still_give_a_crossing_point() {
        // Times ascend except for one late event; the answer is a record at or after the target
        // whose predecessor (in probe order) is before it.
        let mut records: Vec<(i64, i64)> = (0..100).map(|o| (o, o * 10)).collect();
        records[70].1 = 5;
        records[30].1 = 900;
        for hint in [None, Some(0), Some(70), Some(99)] {
            let mut l = FakeLog::new(records.clone());
            let o = locate_time(&mut l, 600, 0, 100, hint).unwrap().offset.unwrap() as usize;
            assert!(records[o].1 >= 600 && records[o - 1].1 < 600, "hint {hint:?}: offset {o}");
        }
    }
}
