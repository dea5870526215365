//! The settlement processor's metrics (CONTRACTS.md names). Counters count when a record is
//! processed; gauges are recomputed every few seconds by punctuation from the `n/<state>`
//! counters and the `pf/` index in state, per partition, summed over this instance's partitions.

use std::collections::HashMap;
use std::sync::Mutex;

use evalstream_domain::records::AllocationState;
use evalstream_runtime::metrics::{CounterVec, Gauge, GaugeVec, Metrics};
use evalstream_runtime::readiness::FeedView;

/// What one partition's state says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Allocations per state, in [`AllocationState::ALL`] order.
    pub counts: [i64; 5],
    /// `since` of the oldest allocation in `pending_finance`.
    pub oldest_pending_finance: Option<i64>,
    /// Allocations frozen.
    pub frozen: bool,
}

/// Handles of every settlement metric.
pub struct SettlementMetrics {
    failures: CounterVec,
    settlements: CounterVec,
    allocations: GaugeVec,
    oldest: Gauge,
    frozen: Gauge,
    partitions: Mutex<HashMap<i32, Snapshot>>,
    /// `settled_at` of the newest settlement consumed (0: none yet), for the readiness check.
    last_settlement_ms: Mutex<i64>,
}

/// The `allocator_settlement_failures_total` reasons.
pub const FAILURE_REASONS: [&str; 9] = [
    "signature_invalid",
    "unknown_signer",
    "proof_mismatch",
    "amount_mismatch",
    "currency_mismatch",
    "allocation_denied",
    "already_settled",
    "retries_exhausted",
    "malformed",
];

impl SettlementMetrics {
    /// Registers the metrics in `m`; every contract series exists from the start (at 0).
    pub fn new(m: &Metrics) -> Self {
        let sm = SettlementMetrics {
            failures: m.counter_vec(
                "allocator.settlement_failures_total",
                "Settlements that failed: dead-lettered (bad proof, denied, already settled, retries exhausted, malformed) or mismatching the approved amount or currency",
                &["reason"],
            ),
            settlements: m.counter_vec(
                "allocator.settlements_total",
                "Settlements processed, by outcome: settled, failed (mismatch), held (frozen), duplicate",
                &["outcome"],
            ),
            allocations: m.gauge_vec("allocator.allocations", "Allocations by state, this instance's partitions", &["state"]),
            oldest: m.gauge(
                "allocator.pending_finance_oldest_age_seconds",
                "Wall clock minus the time the oldest allocation entered pending_finance; 0 when none",
            ),
            frozen: m.gauge("allocator.allocations_frozen", "1 while allocations are frozen"),
            partitions: Mutex::new(HashMap::new()),
            last_settlement_ms: Mutex::new(0),
        };
        for r in FAILURE_REASONS {
            sm.failures.with(&[r]);
        }
        for o in ["settled", "failed", "held", "duplicate"] {
            sm.settlements.with(&[o]);
        }
        for s in AllocationState::ALL {
            sm.allocations.set(&[s.as_str()], 0);
        }
        sm
    }

    /// A settlement failed for `reason` (one of [`FAILURE_REASONS`]).
    pub fn failure(&self, reason: &str) {
        self.failures.inc(&[reason]);
    }

    /// A settlement ended as `outcome`.
    pub fn outcome(&self, outcome: &str) {
        self.settlements.inc(&[outcome]);
    }

    /// A settlement was consumed (whatever its outcome: Finance is sending), booked at
    /// `settled_at`.
    pub fn settlement_seen(&self, settled_at: i64) {
        let mut last = self.last_settlement_ms.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last).max(settled_at);
    }

    /// The Finance feed as this instance last saw it (its partitions' allocations in
    /// `pending_finance`, the newest settlement consumed), for the `finance` readiness check.
    pub fn feed_view(&self) -> FeedView<'static> {
        let parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let pf = AllocationState::ALL.iter().position(|s| *s == AllocationState::PendingFinance);
        let waiting = pf.map_or(0, |i| parts.values().map(|p| p.counts[i]).sum());
        let oldest_ms = parts.values().filter_map(|p| p.oldest_pending_finance).min();
        let last_seen_ms = *self.last_settlement_ms.lock().unwrap_or_else(|p| p.into_inner());
        FeedView {
            waiting,
            oldest_ms,
            last_seen_ms,
            what: "allocations in pending_finance",
            feed: "settlement",
        }
    }

    /// Replaces `partition`'s snapshot (`None`: revoked) and republishes, ages against `now_ms`.
    pub fn publish(&self, partition: i32, snapshot: Option<Snapshot>, now_ms: i64) {
        let mut parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        match snapshot {
            Some(s) => parts.insert(partition, s),
            None => parts.remove(&partition),
        };
        for (i, s) in AllocationState::ALL.iter().enumerate() {
            self.allocations.set(&[s.as_str()], parts.values().map(|p| p.counts[i]).sum());
        }
        let oldest = parts.values().filter_map(|p| p.oldest_pending_finance).min();
        self.oldest.set(oldest.map_or(0, |t| ((now_ms - t) / 1000).max(0)));
        self.frozen.set(i64::from(parts.values().any(|p| p.frozen)));
    }
}
