//! `--from` / `--to` of the operator commands: an `audit.chain` offset or a time.
//!
//! | text | meaning as `--from` | meaning as `--to` |
//! | --- | --- | --- |
//! | `1234` (digits only) | offset 1234 of `audit.chain` in that partition, inclusive | offset 1234, inclusive |
//! | `2025-11-18` | from 2025-11-18T00:00:00Z | through the whole day 2025-11-18 (before 2025-11-19T00:00:00Z) |
//! | `2025-11-18T09:30:00Z`, `...+01:00` | records at or after that instant | records before that instant |
//!
//! Why times are half-open (`from <= t < to`) and dates are whole days: consecutive runs
//! (`--from A --to B`, then `--from B --to C`) then cover every record exactly once, and the
//! runbook's `--from 2025-11-18 --to 2025-11-20` means the three days an operator reads in it.
//! Offsets are inclusive on both ends because an operator copies them from a report that names
//! the first and the last offset of a range.

use thiserror::Error;

use evalstream_runtime::time::parse_rfc3339_ms;

/// Milliseconds in a day (UTC days have no leap seconds in Unix time).
const DAY_MS: i64 = 86_400_000;

/// One end of a range, as the operator gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// An offset of `audit.chain` in the partition being read.
    Offset(i64),
    /// Milliseconds since the Unix epoch (UTC). As `--from`: the first record whose time is at
    /// or after it; as `--to`: stop before the first record whose time is at or after it.
    Time(i64),
}

/// Why a bound was refused; the message shows the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{text:?} is not an offset or a time ({reason}); use an offset (1234), a date (2025-11-18) \
     or an RFC 3339 time (2025-11-18T09:30:00Z)"
)]
pub struct BoundError {
    /// The rejected text.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

fn parse(text: &str, end_of_day: bool) -> Result<Bound, BoundError> {
    let fail = |reason: String| BoundError { text: text.to_string(), reason };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(fail("empty".into()));
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse::<i64>()
            .map(Bound::Offset)
            .map_err(|_| fail("offset out of range".into()));
    }
    let b = trimmed.as_bytes();
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let start = parse_rfc3339_ms(&format!("{trimmed}T00:00:00Z"))
            .map_err(|e| fail(e.reason.to_string()))?;
        return Ok(Bound::Time(if end_of_day { start + DAY_MS } else { start }));
    }
    parse_rfc3339_ms(trimmed).map(Bound::Time).map_err(|e| fail(e.reason.to_string()))
}

/// Parses a `--from` bound (a date means the start of that day).
pub fn parse_from(text: &str) -> Result<Bound, BoundError> {
    parse(text, false)
}

/// Parses a `--to` bound (a date means the end of that day: records before the next midnight).
pub fn parse_to(text: &str) -> Result<Bound, BoundError> {
    parse(text, true)
}

/// Rejects a pair of bounds that can only select nothing (both offsets with `from > to`, or
/// both times with `from >= to`), so a typo is an error instead of an empty, "successful" run.
pub fn check_order(from: Option<Bound>, to: Option<Bound>) -> Result<(), String> {
    match (from, to) {
        (Some(Bound::Offset(a)), Some(Bound::Offset(b))) if a > b => {
            Err(format!("--from offset {a} is after --to offset {b}"))
        }
        (Some(Bound::Time(a)), Some(Bound::Time(b))) if a >= b => {
            Err(format!("--from time {a} ms is not before --to time {b} ms"))
        }
        _ => Ok(()),
    }
}

/// Offsets selected by a range in one partition: `start <= offset < end`. `end` is
/// [`OffsetRange::OPEN`] when the range runs to the end of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    /// First offset in the range.
    pub start: i64,
    /// First offset after the range (exclusive).
    pub end: i64,
}

impl OffsetRange {
    /// `end` of a range without an upper bound.
    pub const OPEN: i64 = i64::MAX;

    /// Every offset.
    pub const ALL: OffsetRange = OffsetRange { start: 0, end: OffsetRange::OPEN };

    /// Whether `offset` is in the range.
    pub fn contains(&self, offset: i64) -> bool {
        self.start <= offset && offset < self.end
    }

    /// Whether no offset is in the range.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// Whether `offset` is the last offset of the range or beyond it (reading past it only
    /// serves to find the covering checkpoint).
    pub fn reached_end(&self, offset: i64) -> bool {
        self.end != Self::OPEN && offset >= self.end - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_offsets() {
        assert_eq!(parse_from("0"), Ok(Bound::Offset(0)));
        assert_eq!(parse_to(" 1234 "), Ok(Bound::Offset(1234)));
        assert!(parse_from("99999999999999999999").is_err());
        assert!(parse_from("-5").is_err());
        assert!(parse_from("").is_err());
    }

    #[test]
    fn dates_are_whole_utc_days() {
        // date -u -d 2025-11-18 +%s  →  1763424000
        assert_eq!(parse_from("2025-11-18"), Ok(Bound::Time(1_763_424_000_000)));
        assert_eq!(parse_to("2025-11-20"), Ok(Bound::Time(1_763_424_000_000 + 3 * DAY_MS)));
        assert!(parse_from("2025-02-30").is_err());
        assert!(parse_from("2025-1-18").is_err());
    }

    #[test]
    fn rfc3339_times_are_instants() {
        assert_eq!(parse_from("2025-11-18T00:20:00Z"), Ok(Bound::Time(1_763_425_200_000)));
        assert_eq!(parse_to("2025-11-18T01:20:00.5+01:00"), Ok(Bound::Time(1_763_425_200_500)));
        let err = parse_from("yesterday").unwrap_err();
        assert!(err.to_string().contains("2025-11-18T09:30:00Z"), "{err}");
    }

    #[test]
    fn impossible_orders_are_refused() {
        assert!(check_order(Some(Bound::Offset(5)), Some(Bound::Offset(4))).is_err());
        assert!(check_order(Some(Bound::Offset(5)), Some(Bound::Offset(5))).is_ok());
        assert!(check_order(Some(Bound::Time(5)), Some(Bound::Time(5))).is_err());
        assert!(check_order(Some(Bound::Time(5)), Some(Bound::Offset(0))).is_ok());
        assert!(check_order(None, Some(Bound::Offset(0))).is_ok());
    }

    #[test]
    fn offset_ranges() {
        let r = OffsetRange { start: 3, end: 6 };
        assert!(!r.contains(2) && r.contains(3) && r.contains(5) && !r.contains(6));
        assert!(!r.reached_end(4) && r.reached_end(5) && r.reached_end(9));
        assert!(!OffsetRange::ALL.reached_end(i64::MAX - 1));
        assert!(OffsetRange { start: 4, end: 4 }.is_empty());
    }
}
