//! The settlement processor's outputs: allocation transitions (keeping the [`Allocation`] view,
//! its counters and indexes in step) and audit facts.

use evalstream_domain::events::{self, Fact};
use evalstream_domain::records::{AllocationState, AllocationStateChanged, CauseKind};
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::processor::{Context, Output};

use crate::state::{self, Allocation};
use crate::{NAME, STATE};

/// One transition the settlement processor makes.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    /// Target state.
    pub to: AllocationState,
    /// Cause kind.
    pub cause_kind: CauseKind,
    /// Cause id (ledger entry id or correction id).
    pub cause_id: &'a str,
    /// Ledger entry involved.
    pub ledger_entry_id: Option<&'a str>,
    /// Why, in words.
    pub reason: Option<String>,
    /// Event time.
    pub at: i64,
    /// Principal behind the cause.
    pub actor: &'a str,
}

/// The tag an `alloc.state` record of this transition carries in [`Allocation::history`].
pub fn tag(to: AllocationState, cause_kind: CauseKind, cause_id: &str) -> String {
    format!("{to}:{}:{cause_id}", cause_kind.as_str())
}

/// Moves `a` to `t.to`: emits the `alloc.state` record and the audit fact, and updates the view.
pub fn transition(
    ctx: &mut Context<'_>,
    a: &mut Allocation,
    t: Transition<'_>,
) -> Result<(), ProcessError> {
    let from = a.state;
    let into_pending_finance = t.to == AllocationState::PendingFinance;
    let change = AllocationStateChanged {
        allocation_id: a.allocation_id.clone(),
        from_state: Some(from),
        to_state: t.to,
        reason: t.reason.clone(),
        ledger_entry_id: t.ledger_entry_id.map(str::to_string),
        cause_kind: t.cause_kind,
        cause_id: t.cause_id.to_string(),
        amount_minor: if into_pending_finance { a.amount_minor } else { None },
        currency: if into_pending_finance { a.currency.clone() } else { None },
        changed_at: t.at,
    };
    ctx.emit(Output::record(STATE, &a.allocation_id, &change)?);
    let event_type = match (t.cause_kind, t.to) {
        (CauseKind::Reconciliation, _) => "alloc.reconciled",
        (_, AllocationState::Settled) => "alloc.settled",
        (_, AllocationState::SettlementFailed) => "alloc.settlement_failed",
        (_, AllocationState::Denied) => "alloc.denied",
        (_, AllocationState::PendingFinance) => "alloc.pending_finance",
        (_, AllocationState::PendingPolicy) => "alloc.pending_policy",
    };
    let fact = Fact::new(NAME, event_type, t.to.as_str(), &a.allocation_id, t.cause_id, t.at)
        .actor(t.actor)
        .with("from_state", from.as_str())
        .with("to_state", t.to.as_str())
        .with("cause_kind", t.cause_kind.as_str())
        .with_opt("ledger_entry_id", t.ledger_entry_id)
        .with_opt("amount_minor", a.amount_minor)
        .with_opt("currency", a.currency.clone())
        .with_opt("reason", t.reason.clone());
    audit(ctx, fact)?;
    a.history.push(tag(t.to, t.cause_kind, t.cause_id));
    a.cause = format!("{}:{}", t.cause_kind.as_str(), t.cause_id);
    a.reason = t.reason;
    if let Some(l) = t.ledger_entry_id {
        a.ledger_entry_id = Some(l.to_string());
    }
    set_state(ctx, a, t.to, t.at)
}

/// Sets `a`'s state (and `since`), keeping the `n/<state>` counters and the `pf/` index in step.
/// `a` must be stored by the caller afterwards. A new allocation has no previous state to count
/// down: pass it with [`count_new`].
pub fn set_state(
    ctx: &mut Context<'_>,
    a: &mut Allocation,
    to: AllocationState,
    at: i64,
) -> Result<(), ProcessError> {
    let from = a.state;
    if from != to {
        add(ctx, from, -1)?;
        add(ctx, to, 1)?;
    }
    a.state = to;
    a.since = at;
    let pf = state::pending_finance_key(&a.allocation_id);
    if to == AllocationState::PendingFinance {
        ctx.state().put(&pf, &at)?;
    } else {
        ctx.state().delete(&pf);
    }
    Ok(())
}

/// Counts a newly known allocation in its state.
pub fn count_new(ctx: &mut Context<'_>, a: &Allocation) -> Result<(), ProcessError> {
    add(ctx, a.state, 1)?;
    if a.state == AllocationState::PendingFinance {
        ctx.state().put(state::pending_finance_key(&a.allocation_id), &a.since)?;
    }
    Ok(())
}

fn add(ctx: &mut Context<'_>, s: AllocationState, delta: i64) -> Result<(), ProcessError> {
    let key = state::count_key(s);
    let n: i64 = ctx.state().get(&key)?.unwrap_or(0);
    ctx.state().put(&key, &(n + delta))
}

/// Emits an audit fact keyed by its subject.
pub fn audit(ctx: &mut Context<'_>, fact: Fact) -> Result<(), ProcessError> {
    let event = fact.build();
    ctx.emit(Output::record(events::TOPIC, &event.subject, &event)?);
    Ok(())
}
