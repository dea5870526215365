//! The policy processor's metrics (CONTRACTS.md names). Counters count when a record is
//! processed (a record re-processed after an aborted transaction counts again); the gauges are
//! recomputed from state every few seconds by punctuation, per partition, and summed over the
//! partitions this instance owns.

use std::collections::HashMap;
use std::sync::Mutex;

use evalstream_domain::records::{PolicyDecision, SubjectKind};
use evalstream_domain::reject::reason_label;
use evalstream_runtime::metrics::{CounterVec, Gauge, GaugeVec, Metrics};
use evalstream_runtime::readiness::FeedView;

/// What one partition's state says, for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Requests in `pending_policy`: promotions, allocations.
    pub pending: [i64; 2],
    /// Oldest `requested_at` among them (ms), if any.
    pub oldest: [Option<i64>; 2],
    /// Degraded mode on.
    pub degraded: bool,
}

/// Handles of every policy metric.
pub struct PolicyMetrics {
    denials: CounterVec,
    decisions: CounterVec,
    best_effort: CounterVec,
    pending: GaugeVec,
    oldest_age: GaugeVec,
    last_decision: Gauge,
    degraded: Gauge,
    last_decision_ms: Mutex<i64>,
    partitions: Mutex<HashMap<i32, Snapshot>>,
}

const KINDS: [SubjectKind; 2] = [SubjectKind::Promotion, SubjectKind::Allocation];

fn index(kind: SubjectKind) -> usize {
    match kind {
        SubjectKind::Promotion => 0,
        SubjectKind::Allocation => 1,
    }
}

impl PolicyMetrics {
    /// Registers the metrics in `m`.
    pub fn new(m: &Metrics) -> Self {
        let pm = PolicyMetrics {
            denials: m.counter_vec(
                "eval_engine.promotion_policy_denials_total",
                "Real policy denials applied, by subject kind, policy version and first reason (a machine code, else other)",
                &["subject_kind", "policy_version", "reason"],
            ),
            decisions: m.counter_vec(
                "eval_engine.policy_decisions_total",
                "Policy decisions consumed (duplicates included), by subject kind, verdict and simulate",
                &["subject_kind", "decision", "simulate"],
            ),
            best_effort: m.counter_vec(
                "eval_engine.policy_best_effort_total",
                "Requests let through as best effort in degraded mode",
                &["subject_kind"],
            ),
            pending: m.gauge_vec(
                "eval_engine.policy_pending_requests",
                "Requests waiting for a policy decision (fail closed), this instance's partitions",
                &["subject_kind"],
            ),
            oldest_age: m.gauge_vec(
                "eval_engine.policy_oldest_pending_age_seconds",
                "Wall clock minus requested_at of the oldest request waiting for a decision; 0 when none",
                &["subject_kind"],
            ),
            last_decision: m.gauge(
                "eval_engine.policy_last_decision_timestamp_seconds",
                "Event time of the newest real decision consumed (feed staleness: time() minus this)",
            ),
            degraded: m.gauge("eval_engine.policy_degraded_mode", "1 while degraded mode is on in any partition of this instance"),
            last_decision_ms: Mutex::new(0),
            partitions: Mutex::new(HashMap::new()),
        };
        for kind in KINDS {
            pm.pending.set(&[kind.as_str()], 0);
            pm.oldest_age.set(&[kind.as_str()], 0);
        }
        pm
    }

    /// A decision was consumed.
    pub fn decision(&self, d: &PolicyDecision) {
        let simulate = if d.simulate { "true" } else { "false" };
        self.decisions.inc(&[d.subject_kind.as_str(), d.decision.as_str(), simulate]);
        if !d.simulate {
            let mut last = self.last_decision_ms.lock().unwrap_or_else(|p| p.into_inner());
            if d.decided_at > *last {
                *last = d.decided_at;
                self.last_decision.set(d.decided_at / 1000);
            }
        }
    }

    /// A real denial was applied.
    pub fn denial(&self, d: &PolicyDecision) {
        let version = if is_label(&d.policy_version) { d.policy_version.as_str() } else { "other" };
        let reason = reason_label(d.reasons.first().map(String::as_str));
        self.denials.inc(&[d.subject_kind.as_str(), version, reason]);
    }

    /// A request went through as best effort.
    pub fn best_effort(&self, kind: SubjectKind) {
        self.best_effort.inc(&[kind.as_str()]);
    }

    /// Replaces `partition`'s snapshot (`None`: the partition was revoked) and republishes the
    /// gauges, with ages against `now_ms`.
    pub fn publish(&self, partition: i32, snapshot: Option<Snapshot>, now_ms: i64) {
        let mut parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        match snapshot {
            Some(s) => parts.insert(partition, s),
            None => parts.remove(&partition),
        };
        for kind in KINDS {
            let i = index(kind);
            let pending: i64 = parts.values().map(|s| s.pending[i]).sum();
            let oldest = parts.values().filter_map(|s| s.oldest[i]).min();
            self.pending.set(&[kind.as_str()], pending);
            self.oldest_age
                .set(&[kind.as_str()], oldest.map_or(0, |t| ((now_ms - t) / 1000).max(0)));
        }
        self.degraded.set(i64::from(parts.values().any(|s| s.degraded)));
    }
}

impl PolicyMetrics {
    /// The SentinelNet feed as this instance last saw it (its partitions' latest snapshots and
    /// the newest real decision consumed), for the `policy_feed` readiness check.
    pub fn feed_view(&self) -> FeedView<'static> {
        let parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let waiting = parts.values().map(|s| s.pending.iter().sum::<i64>()).sum();
        let oldest = parts.values().flat_map(|s| s.oldest.iter().flatten().copied()).min();
        let last_seen_ms = *self.last_decision_ms.lock().unwrap_or_else(|p| p.into_inner());
        FeedView {
            waiting,
            oldest_ms: oldest,
            last_seen_ms,
            what: "requests",
            feed: "real decision",
        }
    }
}

/// A policy version usable as a label value: `[A-Za-z0-9_.-]{1,48}` (else `other`).
fn is_label(s: &str) -> bool {
    (1..=48).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// `Snapshot` accumulation helper used by punctuation.
pub fn note_pending(s: &mut Snapshot, kind: SubjectKind, requested_at: i64) {
    let i = index(kind);
    s.pending[i] += 1;
    s.oldest[i] = Some(s.oldest[i].map_or(requested_at, |o| o.min(requested_at)));
}
