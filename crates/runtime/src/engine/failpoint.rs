//! Crash points for tests: kill the process exactly where it hurts.

/// A crash point for tests: abort the process (as SIGKILL would) at the `nth` time `point` is
/// reached. Points: `after_outputs` (outputs produced, no markers), `after_markers` (markers
/// produced, not committed), `after_commit` (committed, before the next poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailPoint {
    /// Which point.
    pub point: String,
    /// Crash on this (1-based) hit.
    pub nth: u64,
}

impl FailPoint {
    /// Parses `EVALSTREAM_FAIL_AT=<point>:<nth>`.
    pub fn from_env() -> Option<FailPoint> {
        let v = std::env::var("EVALSTREAM_FAIL_AT").ok()?;
        let (point, nth) = v.split_once(':')?;
        Some(FailPoint { point: point.to_string(), nth: nth.parse().ok()? })
    }
}

/// Counts hits of the configured [`FailPoint`] and aborts the process at the chosen one.
#[derive(Debug, Default)]
pub(super) struct FailPoints {
    point: Option<FailPoint>,
    hits: u64,
}

impl FailPoints {
    pub(super) fn new(point: Option<FailPoint>) -> Self {
        FailPoints { point, hits: 0 }
    }

    /// Called every time the engine passes `point`.
    pub(super) fn reach(&mut self, point: &str) {
        if let Some(fp) = &self.point {
            if fp.point == point {
                self.hits += 1;
                if self.hits == fp.nth {
                    eprintln!("fail point {point} hit #{}: aborting the process", fp.nth);
                    std::process::abort();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_point_parses() {
        std::env::set_var("EVALSTREAM_FAIL_AT", "after_markers:3");
        assert_eq!(
            FailPoint::from_env(),
            Some(FailPoint { point: "after_markers".into(), nth: 3 })
        );
        std::env::remove_var("EVALSTREAM_FAIL_AT");
    }
}
