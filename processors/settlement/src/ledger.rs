//! The allocation state machine from `pending_finance` on, fed by Finance settlements, the
//! allocation transitions on `alloc.state`, corrections and the freeze switch.
//!
//! ```text
//!  pending_finance ─settlement, proof ok, amount+currency match─► settled
//!        │        └─settlement, proof ok, mismatch──────────────► settlement_failed
//!        │                                                          │ a later matching
//!        │                                                          └─settlement─► settled
//!        └─(frozen) settlement held ─unfreeze, state unchanged─► settled
//!  corrections (reconciliation, best-effort revocation): expected_state → to_state, exactly once
//! ```
//!
//! A settlement is checked in this order, cheapest certainty first:
//!
//! 1. the record itself (key = allocation id, fields) → DLQ `invalid_field` / `key_mismatch`;
//! 2. a ledger entry already consumed for the allocation: same content → duplicate (no-op),
//!    other content → DLQ `conflicting_duplicate`;
//! 3. the proof (format, Finance signature, signed fields = record fields) → DLQ `malformed`,
//!    `bad_proof`, `proof_mismatch`; a bad proof never waits for its allocation;
//! 4. the allocation: unknown or `pending_policy` → not ready (retry topic, then DLQ
//!    `retries_exhausted`; `evalstream dlq requeue finance.settlements` replays it once);
//!    `denied` → DLQ `allocation_denied`; settled by (or held for) another ledger entry → DLQ
//!    `already_settled` (a double payment Finance must hear about);
//! 5. amount and currency against what the allocation was approved for: a mismatch is a
//!    business failure, `pending_finance → settlement_failed` with the reason (Finance fixes it
//!    by booking a matching entry, which then settles it); a match settles it, or while frozen
//!    holds it.
//!
//! Why a mismatch is a transition and not a dead letter: the proof is genuine, so Finance did
//! book that entry; the allocation must show that its payment went wrong, and operators find it
//! with `evalstream alloc list --state settlement_failed`. Why a bad proof is a dead letter and
//! not a transition: nobody trustworthy said anything about the allocation.

use evalstream_domain::check;
use evalstream_domain::content_digest;
use evalstream_domain::events::Fact;
use evalstream_domain::records::{
    AllocationCorrection, AllocationState, AllocationStateChanged, CauseKind, FinanceSettlement,
    Switch, SwitchKind,
};
use evalstream_domain::reject::Rejection;
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::processor::Context;

use crate::emit::{self, Transition};
use crate::metrics::SettlementMetrics;
use crate::signers::Signers;
use crate::state::{self, Allocation, Freeze, HeldSettlement};
use crate::NAME;

use AllocationState::{Denied, PendingFinance, PendingPolicy, Settled, SettlementFailed};

/// The state machine over one partition's state, for one input record.
pub struct Ledger<'a> {
    /// Finance keys.
    pub signers: &'a mut Signers,
    /// Metrics.
    pub metrics: &'a SettlementMetrics,
    /// `retry.max_attempts`: on the last attempt a not-ready settlement is counted as
    /// `retries_exhausted`.
    pub max_attempts: u32,
}

impl Ledger<'_> {
    /// A Finance settlement arrives (from `finance.settlements` or its retry topic).
    pub fn settlement(
        &mut self,
        ctx: &mut Context<'_>,
        s: &FinanceSettlement,
        key: Option<&str>,
        attempt: u32,
    ) -> Result<(), ProcessError> {
        let result = self.settle(ctx, s, key, attempt);
        if let Err(e) = &result {
            let reason = match e {
                ProcessError::NotReady(_) if attempt >= self.max_attempts => {
                    Some("retries_exhausted")
                }
                ProcessError::NotReady(_) | ProcessError::Fatal(_) => None,
                ProcessError::Invalid(m) => Some(failure_reason(m)),
            };
            if let Some(reason) = reason {
                self.metrics.failure(reason);
            }
        }
        result
    }

    fn settle(
        &mut self,
        ctx: &mut Context<'_>,
        s: &FinanceSettlement,
        key: Option<&str>,
        attempt: u32,
    ) -> Result<(), ProcessError> {
        check::non_empty("ledger_entry_id", &s.ledger_entry_id)?;
        check::non_empty("allocation_id", &s.allocation_id)?;
        check::key_is(key, "allocation_id", &s.allocation_id)?;
        check::non_empty("kid", &s.kid)?;
        check::amount("amount_minor", s.amount_minor)?;
        check::currency("currency", &s.currency)?;
        check::event_time("settled_at", s.settled_at)?;
        let digest = content_digest(s).map_err(|e| Rejection::field("settlement", e))?;
        let akey = state::alloc_key(&s.allocation_id);
        let mut a: Option<Allocation> = ctx.state().get(&akey)?;
        if let Some(seen) = a.as_ref().and_then(|a| a.settlements.get(&s.ledger_entry_id)) {
            if *seen == digest {
                self.metrics.outcome("duplicate");
                return Ok(());
            }
            return Err(Rejection::new(
                "conflicting_duplicate",
                format!("ledger entry {} was consumed with content digest {seen}; this one has {digest}", s.ledger_entry_id),
            )
            .into());
        }
        self.signers.verify(s).map_err(|e| e.rejection())?;
        let Some(a) = a.as_mut().filter(|a| a.state != PendingPolicy) else {
            let now = a.as_ref().map_or("unknown", |a| a.state.as_str());
            return Err(ProcessError::NotReady(format!(
                "allocation {} is {now}, not pending_finance yet (attempt {attempt} of {})",
                s.allocation_id, self.max_attempts
            )));
        };
        match (a.state, &a.held) {
            (Denied, _) => {
                return Err(Rejection::new("allocation_denied", format!("allocation {} was denied; ledger entry {} pays for nothing", s.allocation_id, s.ledger_entry_id)).into())
            }
            (Settled, _) => {
                return Err(Rejection::new(
                    "already_settled",
                    format!(
                        "allocation {} was settled by ledger entry {}; {} would be a second payment",
                        s.allocation_id,
                        a.ledger_entry_id.as_deref().unwrap_or("?"),
                        s.ledger_entry_id
                    ),
                )
                .into())
            }
            (_, Some(held)) => {
                return Err(Rejection::new(
                    "already_settled",
                    format!("ledger entry {held} for allocation {} is held (allocations frozen); {} would be a second payment", s.allocation_id, s.ledger_entry_id),
                )
                .into())
            }
            _ => {}
        }
        a.settlements.insert(s.ledger_entry_id.clone(), digest);
        if let Some((reason, why)) = mismatch(a, s) {
            self.metrics.failure(reason);
            self.metrics.outcome("failed");
            if a.state == PendingFinance {
                let t = Transition {
                    to: SettlementFailed,
                    cause_kind: CauseKind::FinanceSettlement,
                    cause_id: &s.ledger_entry_id,
                    ledger_entry_id: Some(&s.ledger_entry_id),
                    reason: Some(format!("{reason}: {why}")),
                    at: s.settled_at,
                    actor: "finance",
                };
                emit::transition(ctx, a, t)?;
            } else {
                let fact = Fact::new(
                    NAME,
                    "alloc.settlement_rejected",
                    "settlement_rejected",
                    &s.allocation_id,
                    &s.ledger_entry_id,
                    s.settled_at,
                )
                .actor("finance")
                .with("reason", reason)
                .with("detail", why);
                emit::audit(ctx, fact)?;
            }
        } else if frozen(ctx)? {
            self.hold(ctx, a, s)?;
        } else {
            self.metrics.outcome("settled");
            emit::transition(ctx, a, settled(&s.ledger_entry_id, s.settled_at))?;
        }
        ctx.state().put(&akey, a)
    }

    fn hold(
        &mut self,
        ctx: &mut Context<'_>,
        a: &mut Allocation,
        s: &FinanceSettlement,
    ) -> Result<(), ProcessError> {
        let seq: u64 = ctx.state().get(state::HELD_SEQ)?.unwrap_or(0);
        let held = HeldSettlement {
            allocation_id: s.allocation_id.clone(),
            ledger_entry_id: s.ledger_entry_id.clone(),
            settled_at: s.settled_at,
            expected: a.state,
        };
        ctx.state().put(state::held_key(seq), &held)?;
        ctx.state().put(state::HELD_SEQ, &(seq + 1))?;
        a.held = Some(s.ledger_entry_id.clone());
        self.metrics.outcome("held");
        let fact = Fact::new(
            NAME,
            "alloc.settlement_held",
            "settlement_held",
            &s.allocation_id,
            &s.ledger_entry_id,
            s.settled_at,
        )
        .actor("finance")
        .with(
            "why",
            "allocations are frozen; the verified settlement is applied when they are unfrozen",
        );
        emit::audit(ctx, fact)
    }

    /// A transition on `alloc.state`: the policy gate's (mirrored into the view) or this
    /// processor's own coming back (recognised by its tag: a no-op).
    pub fn mirror(
        &mut self,
        ctx: &mut Context<'_>,
        t: &AllocationStateChanged,
        key: Option<&str>,
    ) -> Result<(), ProcessError> {
        check::non_empty("allocation_id", &t.allocation_id)?;
        check::key_is(key, "allocation_id", &t.allocation_id)?;
        let akey = state::alloc_key(&t.allocation_id);
        let known: Option<Allocation> = ctx.state().get(&akey)?;
        let tag = emit::tag(t.to_state, t.cause_kind, &t.cause_id);
        if known.as_ref().is_some_and(|a| a.history.contains(&tag)) {
            return Ok(());
        }
        let from_policy = matches!(
            t.cause_kind,
            CauseKind::AllocationRequest | CauseKind::PolicyDecision | CauseKind::Degraded
        );
        let fits = matches!(
            (known.as_ref().map(|a| a.state), t.to_state),
            (None, PendingPolicy | PendingFinance | Denied)
                | (Some(PendingPolicy), PendingFinance | Denied)
        );
        if !(from_policy && fits) {
            return Err(Rejection::new(
                "inconsistent_transition",
                format!(
                    "allocation {} is {}; the transition to {} by {} {} does not follow from it",
                    t.allocation_id,
                    known.as_ref().map_or("unknown", |a| a.state.as_str()),
                    t.to_state,
                    t.cause_kind.as_str(),
                    t.cause_id
                ),
            )
            .into());
        }
        let mut a = match known {
            Some(a) => a,
            None => {
                let a = Allocation::new(&t.allocation_id, t.to_state, t.changed_at);
                emit::count_new(ctx, &a)?;
                a
            }
        };
        if t.to_state == PendingFinance {
            a.amount_minor = t.amount_minor;
            a.currency = t.currency.clone();
        }
        a.history.push(tag);
        a.cause = format!("{}:{}", t.cause_kind.as_str(), t.cause_id);
        a.reason = t.reason.clone();
        emit::set_state(ctx, &mut a, t.to_state, t.changed_at)?;
        ctx.state().put(&akey, &a)
    }

    /// A correction: applied once if the allocation is in the expected state, retried while the
    /// allocation has not got there yet, recorded as stale when it is already elsewhere.
    pub fn correction(
        &mut self,
        ctx: &mut Context<'_>,
        c: &AllocationCorrection,
        key: Option<&str>,
    ) -> Result<(), ProcessError> {
        check::non_empty("correction_id", &c.correction_id)?;
        check::non_empty("allocation_id", &c.allocation_id)?;
        check::key_is(key, "allocation_id", &c.allocation_id)?;
        check::non_empty("reason", &c.reason)?;
        check::non_empty("actor", &c.actor)?;
        check::event_time("issued_at", c.issued_at)?;
        allowed(c)?;
        let akey = state::alloc_key(&c.allocation_id);
        let Some(mut a) = ctx.state().get::<Allocation>(&akey)? else {
            return Err(ProcessError::NotReady(format!(
                "allocation {} is unknown, expected {}",
                c.allocation_id, c.expected_state
            )));
        };
        if a.corrections.contains(&c.correction_id) {
            return Ok(());
        }
        if a.state.stage() < c.expected_state.stage() {
            return Err(ProcessError::NotReady(format!(
                "allocation {} is {}, expected {}",
                c.allocation_id, a.state, c.expected_state
            )));
        }
        if a.state == c.expected_state {
            let ledger = c.ledger_entry_id.clone().or_else(|| a.ledger_entry_id.clone());
            let t = Transition {
                to: c.to_state,
                cause_kind: c.cause_kind,
                cause_id: &c.correction_id,
                ledger_entry_id: ledger.as_deref(),
                reason: Some(c.reason.clone()),
                at: c.issued_at,
                actor: &c.actor,
            };
            emit::transition(ctx, &mut a, t)?;
        } else {
            let fact = Fact::new(
                NAME,
                "alloc.correction_stale",
                "correction_stale",
                &c.allocation_id,
                &c.correction_id,
                c.issued_at,
            )
            .actor(&c.actor)
            .with("expected_state", c.expected_state.as_str())
            .with("actual_state", a.state.as_str())
            .with("to_state", c.to_state.as_str())
            .with_opt("cause_ref", c.cause_ref.clone());
            emit::audit(ctx, fact)?;
        }
        a.corrections.push(c.correction_id.clone());
        ctx.state().put(&akey, &a)
    }

    /// A switch copy for `partition`. Only `freeze_allocations` concerns settlement.
    pub fn switch(
        &mut self,
        ctx: &mut Context<'_>,
        s: &Switch,
        partition: i32,
    ) -> Result<(), ProcessError> {
        for (f, v) in [("command_id", &s.command_id), ("reason", &s.reason), ("actor", &s.actor)] {
            check::non_empty(f, v)?;
        }
        check::event_time("issued_at", s.issued_at)?;
        let cmd = state::command_key(&s.command_id);
        if s.switch != SwitchKind::FreezeAllocations || ctx.state().contains(&cmd) {
            return Ok(());
        }
        ctx.state().put(&cmd, &s.issued_at)?;
        ctx.state().put(state::FREEZE, &Freeze { on: s.on, command_id: s.command_id.clone() })?;
        if !s.on {
            self.release(ctx)?;
        }
        emit::audit(ctx, Fact::switch_applied(NAME, s, partition))
    }

    /// Applies the settlements held during the freeze, in arrival order. One whose allocation
    /// moved meanwhile (a correction applied during the freeze: the reason to freeze) is recorded
    /// as rejected instead: the operator's correction wins over a settlement that waited.
    fn release(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        for (key, h) in ctx.state().scan::<HeldSettlement>("held/")? {
            ctx.state().delete(&key);
            let akey = state::alloc_key(&h.allocation_id);
            let Some(mut a) = ctx.state().get::<Allocation>(&akey)? else { continue };
            let still =
                a.held.as_deref() == Some(h.ledger_entry_id.as_str()) && a.state == h.expected;
            a.held = None;
            if still {
                self.metrics.outcome("settled");
                emit::transition(ctx, &mut a, settled(&h.ledger_entry_id, h.settled_at))?;
            } else {
                let fact = Fact::new(
                    NAME,
                    "alloc.held_settlement_rejected",
                    "held_settlement_rejected",
                    &h.allocation_id,
                    &h.ledger_entry_id,
                    h.settled_at,
                )
                .actor("finance")
                .with("actual_state", a.state.as_str());
                emit::audit(ctx, fact)?;
            }
            ctx.state().put(&akey, &a)?;
        }
        Ok(())
    }
}

fn settled(ledger_entry_id: &str, at: i64) -> Transition<'_> {
    Transition {
        to: Settled,
        cause_kind: CauseKind::FinanceSettlement,
        cause_id: ledger_entry_id,
        ledger_entry_id: Some(ledger_entry_id),
        reason: None,
        at,
        actor: "finance",
    }
}

/// Amount or currency differ from what the allocation was approved for.
fn mismatch(a: &Allocation, s: &FinanceSettlement) -> Option<(&'static str, String)> {
    match (a.amount_minor, a.currency.as_deref()) {
        (Some(_), Some(c)) if c != s.currency => {
            Some(("currency_mismatch", format!("settled in {}, approved in {c}", s.currency)))
        }
        (Some(amount), Some(_)) if amount != s.amount_minor => Some((
            "amount_mismatch",
            format!("settled {} {}, approved {amount} {}", s.amount_minor, s.currency, s.currency),
        )),
        (Some(_), Some(_)) => None,
        _ => Some((
            "amount_mismatch",
            "the allocation has no approved amount to compare with".into(),
        )),
    }
}

/// The transitions a correction may ask for.
fn allowed(c: &AllocationCorrection) -> Result<(), Rejection> {
    let ok = matches!(
        (c.expected_state, c.to_state),
        (PendingFinance, Settled | SettlementFailed | Denied)
            | (Settled, SettlementFailed | PendingFinance)
            | (SettlementFailed, Settled | PendingFinance)
    );
    if !ok {
        return Err(Rejection::new(
            "invalid_correction",
            format!(
                "no correction moves an allocation from {} to {}",
                c.expected_state, c.to_state
            ),
        ));
    }
    if !matches!(c.cause_kind, CauseKind::Reconciliation | CauseKind::PolicyDecision) {
        return Err(Rejection::new(
            "invalid_correction",
            format!(
                "cause_kind {} is not reconciliation or policy_decision",
                c.cause_kind.as_str()
            ),
        ));
    }
    if c.to_state == Settled && c.ledger_entry_id.is_none() {
        return Err(Rejection::new(
            "invalid_correction",
            "a correction to settled must name its ledger entry",
        ));
    }
    Ok(())
}

fn frozen(ctx: &mut Context<'_>) -> Result<bool, ProcessError> {
    Ok(ctx.state().get::<Freeze>(state::FREEZE)?.is_some_and(|f| f.on))
}

/// The `allocator_settlement_failures_total` reason of a dead-lettered settlement.
fn failure_reason(message: &str) -> &'static str {
    match evalstream_domain::reject::code_of(message) {
        Some("bad_proof") if message.contains("unknown_signer") => "unknown_signer",
        Some("bad_proof") => "signature_invalid",
        Some("proof_mismatch") => "proof_mismatch",
        Some("allocation_denied") => "allocation_denied",
        Some("already_settled") => "already_settled",
        _ => "malformed",
    }
}
