//! Fault injection for tests: crash the process, or make a transaction call fail, exactly where it
//! hurts (Materialize's `fail_point!` idea).
//!
//! Compiled into every build and inert unless `EVALSTREAM_FAIL_AT` is set, so the fault tests run
//! the binary that ships. The variable holds comma-separated rules:
//!
//! ```text
//! EVALSTREAM_FAIL_AT=<point>:<n>          crash points: abort the process (like SIGKILL: no
//!                                         shutdown hook runs) the n-th time <point> is reached
//! EVALSTREAM_FAIL_AT=<point>:every=<n>    error points: the n-th, 2n-th, ... call fails with an
//!                                         error inside a living process, which must recover
//! ```
//!
//! | point            | kind  | where                                                          |
//! |------------------|-------|----------------------------------------------------------------|
//! | `after_outputs`  | crash | state changes produced, nothing flushed                        |
//! | `after_flush`    | crash | offsets not sent (markers view: everything delivered first)    |
//! | `after_offsets`  | crash | offsets sent to the transaction, not committed                 |
//! | `after_markers`  | crash | progress markers produced, not committed                       |
//! | `after_commit`   | crash | committed, before the next poll                                |
//! | `flush_error`    | error | the flush reports a delivery timeout                           |
//! | `offsets_error`  | error | `send_offsets_to_transaction` fails (abortable)                |
//! | `commit_error`   | error | `commit_transaction` fails (abortable) without committing      |
//! | `commit_unknown` | error | `commit_transaction` commits, then every call reports a timeout: the outcome is unknown to the engine |
//!
//! Every injected error is counted in `evalstream_faults_injected_total{point}`, so a fault test
//! can assert that its faults really happened.

use std::fmt;

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// Crash: state changes produced, nothing flushed.
    AfterOutputs,
    /// Crash: offsets not sent (with `committed_view = "markers"`: everything delivered).
    AfterFlush,
    /// Crash: offsets sent, not committed.
    AfterOffsets,
    /// Crash: progress markers produced, not committed.
    AfterMarkers,
    /// Crash: committed.
    AfterCommit,
    /// Error: the flush fails.
    FlushError,
    /// Error: `send_offsets_to_transaction` fails.
    OffsetsError,
    /// Error: `commit_transaction` fails without committing.
    CommitError,
    /// Error: `commit_transaction` commits but reports a timeout, every time it is asked.
    CommitUnknown,
}

impl Point {
    const ALL: [Point; 9] = [
        Point::AfterOutputs,
        Point::AfterFlush,
        Point::AfterOffsets,
        Point::AfterMarkers,
        Point::AfterCommit,
        Point::FlushError,
        Point::OffsetsError,
        Point::CommitError,
        Point::CommitUnknown,
    ];

    /// The name used in `EVALSTREAM_FAIL_AT` and in the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Point::AfterOutputs => "after_outputs",
            Point::AfterFlush => "after_flush",
            Point::AfterOffsets => "after_offsets",
            Point::AfterMarkers => "after_markers",
            Point::AfterCommit => "after_commit",
            Point::FlushError => "flush_error",
            Point::OffsetsError => "offsets_error",
            Point::CommitError => "commit_error",
            Point::CommitUnknown => "commit_unknown",
        }
    }

    fn is_crash(self) -> bool {
        matches!(
            self,
            Point::AfterOutputs
                | Point::AfterFlush
                | Point::AfterOffsets
                | Point::AfterMarkers
                | Point::AfterCommit
        )
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Abort the process at the n-th (1-based) hit.
    CrashAt(u64),
    /// Fail every n-th hit.
    FailEvery(u64),
}

/// One rule of `EVALSTREAM_FAIL_AT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailPoint {
    /// Where.
    pub point: Point,
    /// What.
    pub action: Action,
}

/// The fault-injection rules of one engine, with their hit counters. Empty (inert) by default.
#[derive(Debug, Default)]
pub struct FailPoints {
    rules: Vec<(FailPoint, u64)>,
}

impl FailPoints {
    /// No faults.
    pub fn none() -> Self {
        FailPoints::default()
    }

    /// Parses `EVALSTREAM_FAIL_AT` (unset or empty: no faults). A malformed value is an error,
    /// so a fault test cannot pass because its faults were silently ignored.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("EVALSTREAM_FAIL_AT") {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v),
            _ => Ok(Self::none()),
        }
    }

    /// Parses a rule list (see the module doc).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for rule in spec.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let bad = || {
                format!("EVALSTREAM_FAIL_AT rule {rule:?}: expected <point>:<n> or <point>:every=<n> with n >= 1")
            };
            let (name, arg) = rule.split_once(':').ok_or_else(bad)?;
            let point = Point::ALL.into_iter().find(|p| p.as_str() == name).ok_or_else(|| {
                let known: Vec<&str> = Point::ALL.iter().map(|p| p.as_str()).collect();
                format!("EVALSTREAM_FAIL_AT: unknown point {name:?} (known: {})", known.join(", "))
            })?;
            let action = match arg.strip_prefix("every=") {
                Some(n) => Action::FailEvery(n.parse().map_err(|_| bad())?),
                None => Action::CrashAt(arg.parse().map_err(|_| bad())?),
            };
            let n = match action {
                Action::CrashAt(n) | Action::FailEvery(n) => n,
            };
            if n == 0 {
                return Err(bad());
            }
            if point.is_crash() != matches!(action, Action::CrashAt(_)) {
                return Err(format!(
                    "EVALSTREAM_FAIL_AT rule {rule:?}: {point} is {} point; use {point}:{}",
                    if point.is_crash() { "a crash" } else { "an error" },
                    if point.is_crash() { "<n>" } else { "every=<n>" }
                ));
            }
            rules.push((FailPoint { point, action }, 0));
        }
        Ok(FailPoints { rules })
    }

    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Called every time the engine passes `point`: aborts the process at a crash rule's hit,
    /// and returns true when an error rule says this call must fail.
    pub(super) fn reach(&mut self, point: Point) -> bool {
        let mut fail = false;
        for (rule, hits) in self.rules.iter_mut().filter(|(r, _)| r.point == point) {
            *hits += 1;
            match rule.action {
                Action::CrashAt(n) if *hits == n => {
                    eprintln!("fail point {point} hit #{n}: aborting the process");
                    std::process::abort();
                }
                Action::FailEvery(n) if (*hits).is_multiple_of(n) => {
                    eprintln!("fail point {point} hit #{}: injecting an error", *hits);
                    fail = true;
                }
                _ => {}
            }
        }
        fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        let f =
            FailPoints::parse("after_markers:3, commit_error:every=7,flush_error:every=2").unwrap();
        let rules: Vec<FailPoint> = f.rules.into_iter().map(|(r, _)| r).collect();
        assert_eq!(
            rules,
            vec![
                FailPoint { point: Point::AfterMarkers, action: Action::CrashAt(3) },
                FailPoint { point: Point::CommitError, action: Action::FailEvery(7) },
                FailPoint { point: Point::FlushError, action: Action::FailEvery(2) },
            ]
        );
        assert!(FailPoints::parse("").unwrap().is_empty());
    }

    #[test]
    fn malformed_rules_are_errors_not_silence() {
        for bad in [
            "nowhere:1",
            "commit_error:3",
            "after_commit:every=3",
            "commit_error:every=0",
            "commit_error",
            "flush_error:every=x",
        ] {
            assert!(FailPoints::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_rules_fire_every_nth_hit() {
        let mut f = FailPoints::parse("commit_error:every=3").unwrap();
        let fired: Vec<bool> = (0..7).map(|_| f.reach(Point::CommitError)).collect();
        assert_eq!(fired, [false, false, true, false, false, true, false]);
        assert!(!f.reach(Point::FlushError));
    }
}
