//! The `settlement` processor (Resource Allocator ↔ Finance): settles `pending_finance`
//! allocations against Finance's settlements, only with a ledger proof whose signature verifies
//! against a Finance key in the signer registry; applies reconciliation corrections and
//! best-effort revocations; obeys the freeze.
//!
//! ```text
//!  finance.settlements (+ .retry) ─┐
//!  alloc.state ────────────────────┼─► Ledger (ledger.rs) over state (state.rs) ─► alloc.state
//!  alloc.corrections (+ .retry) ───┤     proof (evalstream_domain::proof)      ─► audit.events
//!  evalstream.switches ────────────┘
//! ```
//!
//! It learns allocations from `alloc.state` (the policy gate's transitions) and writes its own
//! transitions there too, so it reads its own output back: those records carry a tag it
//! remembers and are no-ops by construction. The state machine, the order of checks and the
//! decisions taken where the runbook is silent are in [`ledger`] and `docs/domain.md`.
//!
//! Settings: `[processor] signers_file` (or `SIGNERS_FILE`), the signer registry with the
//! Finance keys (required: a settlement processor that can verify nothing refuses to start);
//! `[processor] finance_stale_after_s` (1800): `/ready` reports the dependency `finance` not ok
//! when an allocation has waited in `pending_finance` longer than this and no settlement has
//! arrived for as long (reported, not gating; docs/operations.md#readiness).
//!
//! Metrics (CONTRACTS.md): `allocator_settlement_failures_total{reason}`,
//! `allocator_settlements_total{outcome}`, `allocator_allocations{state}`,
//! `allocator_pending_finance_oldest_age_seconds`, `allocator_allocations_frozen`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod emit;
pub mod ledger;
pub mod metrics;
pub mod signers;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use evalstream_audit::trust::SignerRegistry;
use evalstream_domain::events;
use evalstream_domain::records::{
    AllocationCorrection, AllocationState, AllocationStateChanged, FinanceSettlement, Switch,
};
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::metrics::Metrics;
use evalstream_runtime::processor::{BuildError, Context, Input, Processor, Registration, Setup};
use evalstream_runtime::readiness::FeedStaleness;

use ledger::Ledger;
use metrics::{SettlementMetrics, Snapshot};
use signers::Signers;
use state::Freeze;

/// Processor name.
pub const NAME: &str = "settlement";
/// Finance settlements.
pub const SETTLEMENTS: &str = "finance.settlements";
/// Allocation transitions (input and output).
pub const STATE: &str = "alloc.state";
/// Corrections.
pub const CORRECTIONS: &str = "alloc.corrections";
/// Operator switches.
pub const SWITCHES: &str = "evalstream.switches";

/// How the binary knows this processor.
pub const REGISTRATION: Registration = Registration {
    name: NAME,
    inputs: &[SETTLEMENTS, STATE, CORRECTIONS, SWITCHES],
    outputs: &[STATE, events::TOPIC],
    build,
};

fn build(setup: &Setup<'_>) -> Result<Box<dyn Processor>, BuildError> {
    let path: PathBuf = match setup.setting_str("signers_file")? {
        Some(p) => p.into(),
        None => std::env::var_os("SIGNERS_FILE").filter(|v| !v.is_empty()).map(PathBuf::from).ok_or(
            "the settlement processor needs the signer registry with the Finance keys: set SIGNERS_FILE or [processor] signers_file",
        )?,
    };
    let registry = SignerRegistry::load(&path)?;
    let signers = Signers::new(registry, Some(path));
    let stale = FeedStaleness {
        stale_after: Duration::from_secs(setup.setting_u64("finance_stale_after_s", 1800)?),
    };
    let settlement = Settlement::new(signers, setup.config.retry.max_attempts, setup.metrics);
    let metrics = Arc::clone(&settlement.metrics);
    let started = now_ms();
    setup.checks.reported("finance", GAUGE_INTERVAL, move || {
        stale.judge(now_ms(), started, &metrics.feed_view())
    });
    Ok(Box::new(settlement))
}

/// How often the gauges are recomputed from state.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// The settlement processor.
pub struct Settlement {
    signers: Signers,
    max_attempts: u32,
    metrics: Arc<SettlementMetrics>,
}

impl Settlement {
    /// A processor verifying with `signers`; `max_attempts` is the runtime's `retry.max_attempts`.
    pub fn new(signers: Signers, max_attempts: u32, metrics: &Metrics) -> Self {
        Settlement { signers, max_attempts, metrics: Arc::new(SettlementMetrics::new(metrics)) }
    }
}

impl Processor for Settlement {
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
        let mut ledger = Ledger {
            signers: &mut self.signers,
            metrics: &self.metrics,
            max_attempts: self.max_attempts,
        };
        let key = input.key_str();
        match input.topic {
            SETTLEMENTS => match input.decode::<FinanceSettlement>() {
                Ok(s) => {
                    self.metrics.settlement_seen(s.settled_at);
                    ledger.settlement(ctx, &s, key, input.attempt)
                }
                Err(e) => {
                    self.metrics.failure("malformed");
                    Err(e)
                }
            },
            STATE => ledger.mirror(ctx, &input.decode::<AllocationStateChanged>()?, key),
            CORRECTIONS => ledger.correction(ctx, &input.decode::<AllocationCorrection>()?, key),
            SWITCHES => ledger.switch(ctx, &input.decode::<Switch>()?, input.partition),
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
        for (i, s) in AllocationState::ALL.iter().enumerate() {
            snapshot.counts[i] = ctx.state().get(state::count_key(*s))?.unwrap_or(0);
        }
        snapshot.oldest_pending_finance =
            ctx.state().scan::<i64>("pf/")?.into_iter().map(|(_, t)| t).min();
        snapshot.frozen = ctx.state().get::<Freeze>(state::FREEZE)?.is_some_and(|f| f.on);
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
