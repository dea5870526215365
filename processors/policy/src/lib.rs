//! The `policy` processor (SentinelNet gate): joins `policy.decisions` with promotion and
//! allocation requests (co-partitioned by request id) and the operator switches, and emits
//! promotion outcomes, allocation transitions up to `pending_finance`, best-effort revocations
//! and audit events.
//!
//! ```text
//!  policy.decisions ──────┐
//!  eval.promotion-requests├─► Gate (gate.rs) over state (state.rs) ─► eval.promotions
//!  alloc.requests ────────┤        fail closed · early decisions wait  ─► alloc.state
//!  evalstream.switches ───┘        degraded · freeze · simulate         ─► alloc.corrections
//!                                                                        ─► audit.events
//! ```
//!
//! The state machines and every decision taken where the runbook is silent are documented in
//! [`gate`] and `docs/domain.md`. Settings: `[processor] degraded_max_amount_minor` (allocations
//! up to this amount are low risk in degraded mode; default none); `[processor]
//! feed_stale_after_s` (300): `/ready` reports the dependency `policy_feed` not ok when requests
//! have waited longer than this and no real decision has arrived for as long (reported, not
//! gating: an instance that fails closed is doing its job; docs/operations.md#readiness).
//!
//! Metrics (CONTRACTS.md): `eval_engine_promotion_policy_denials_total{subject_kind,
//! policy_version,reason}`, `eval_engine_policy_decisions_total{subject_kind,decision,simulate}`,
//! `eval_engine_policy_pending_requests{subject_kind}`,
//! `eval_engine_policy_oldest_pending_age_seconds{subject_kind}`,
//! `eval_engine_policy_last_decision_timestamp_seconds`, `eval_engine_policy_degraded_mode`,
//! `eval_engine_policy_best_effort_total{subject_kind}`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod emit;
pub mod gate;
pub mod metrics;
pub mod state;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use evalstream_domain::events;
use evalstream_domain::records::{
    AllocationRequest, PolicyDecision, PromotionRequest, SubjectKind, Switch,
};
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::metrics::Metrics;
use evalstream_runtime::processor::{BuildError, Context, Input, Processor, Registration, Setup};
use evalstream_runtime::readiness::FeedStaleness;

use gate::{Gate, Settings};
use metrics::{PolicyMetrics, Snapshot};
use state::SwitchState;

/// Processor name.
pub const NAME: &str = "policy";
/// SentinelNet decisions.
pub const DECISIONS: &str = "policy.decisions";
/// Promotion requests.
pub const PROMOTION_REQUESTS: &str = "eval.promotion-requests";
/// Allocation requests.
pub const ALLOCATION_REQUESTS: &str = "alloc.requests";
/// Operator switches.
pub const SWITCHES: &str = "evalstream.switches";
/// Promotion outcomes.
pub const PROMOTIONS: &str = "eval.promotions";
/// Allocation transitions.
pub const STATE: &str = "alloc.state";
/// Corrections (best-effort revocations) for the settlement processor.
pub const CORRECTIONS: &str = "alloc.corrections";

/// How the binary knows this processor.
pub const REGISTRATION: Registration = Registration {
    name: NAME,
    inputs: &[DECISIONS, PROMOTION_REQUESTS, ALLOCATION_REQUESTS, SWITCHES],
    outputs: &[PROMOTIONS, STATE, CORRECTIONS, events::TOPIC],
    build,
};

fn build(setup: &Setup<'_>) -> Result<Box<dyn Processor>, BuildError> {
    let limit = setup.setting_u64("degraded_max_amount_minor", 0)?;
    let settings = Settings { degraded_max_amount_minor: i64::try_from(limit)? };
    let stale = FeedStaleness {
        stale_after: Duration::from_secs(setup.setting_u64("feed_stale_after_s", 300)?),
    };
    let policy = Policy::new(settings, setup.metrics);
    let metrics = Arc::clone(&policy.metrics);
    let started = now_ms();
    setup.checks.reported("policy_feed", GAUGE_INTERVAL, move || {
        stale.judge(now_ms(), started, &metrics.feed_view())
    });
    Ok(Box::new(policy))
}

/// How often the gauges are recomputed from state.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// The policy processor.
pub struct Policy {
    settings: Settings,
    metrics: Arc<PolicyMetrics>,
}

impl Policy {
    /// A processor with `settings`, counting into `metrics`.
    pub fn new(settings: Settings, metrics: &Metrics) -> Self {
        Policy { settings, metrics: Arc::new(PolicyMetrics::new(metrics)) }
    }
}

impl Processor for Policy {
    fn name(&self) -> &str {
        NAME
    }

    fn inputs(&self) -> Vec<String> {
        REGISTRATION.input_topics()
    }

    fn outputs(&self) -> Vec<String> {
        REGISTRATION.output_topics()
    }

    fn process(&mut self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let gate = Gate { settings: self.settings, metrics: &self.metrics };
        let key = input.key_str();
        match input.topic {
            DECISIONS => gate.decision(ctx, &input.decode::<PolicyDecision>()?, key),
            PROMOTION_REQUESTS => {
                gate.promotion_request(ctx, &input.decode::<PromotionRequest>()?, key)
            }
            ALLOCATION_REQUESTS => {
                gate.allocation_request(ctx, &input.decode::<AllocationRequest>()?, key)
            }
            SWITCHES => gate.switch(ctx, &input.decode::<Switch>()?, input.partition),
            other => Err(ProcessError::Fatal(format!("{other} is not an input of {NAME}"))),
        }
    }

    fn on_revoke(&mut self, partition: i32) {
        self.metrics.publish(partition, None, now_ms());
    }

    fn punctuate_interval(&self) -> Option<Duration> {
        Some(GAUGE_INTERVAL)
    }

    /// Recomputes this partition's gauges from state (metrics only: never an output).
    fn punctuate(&mut self, partition: i32, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let mut snapshot = Snapshot::default();
        for (key, requested_at) in ctx.state().scan::<i64>("pending/")? {
            let kind = if key.starts_with(b"pending/promotion/") {
                SubjectKind::Promotion
            } else {
                SubjectKind::Allocation
            };
            metrics::note_pending(&mut snapshot, kind, requested_at);
        }
        snapshot.degraded = ctx.state().get::<SwitchState>(state::DEGRADED)?.is_some_and(|s| s.on);
        self.metrics.publish(partition, Some(snapshot), now_ms());
        Ok(())
    }
}

/// Wall clock for gauges only (outputs never use it).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
