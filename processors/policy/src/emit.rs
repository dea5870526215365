//! The outputs of the gate: promotion outcomes, allocation transitions, corrections (best-effort
//! revocations) and audit facts, each keyed so that it stays co-partitioned with its request.

use evalstream_domain::events::{self, Fact};
use evalstream_domain::records::{
    AllocationCorrection, AllocationState, AllocationStateChanged, CauseKind, PolicyDecision,
    PromotionOutcome, PromotionStatus,
};
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::processor::{Context, Output};

use crate::state::{AllocationFacts, PromotionFacts, Request};
use crate::{CORRECTIONS, NAME, PROMOTIONS, STATE};

/// What caused a promotion outcome or allocation transition.
#[derive(Debug, Clone, Copy)]
pub enum Cause<'a> {
    /// The request itself (registration).
    Request,
    /// A real policy decision.
    Decision(&'a PolicyDecision),
    /// Degraded mode, switched on by this command.
    Degraded {
        /// Switch command id.
        command_id: &'a str,
        /// The operator who switched it on.
        actor: &'a str,
    },
}

/// Emits the promotion outcome `status` of `r` at `at`, and its audit fact.
pub fn promotion(
    ctx: &mut Context<'_>,
    r: &Request,
    status: PromotionStatus,
    cause: Cause<'_>,
    at: i64,
) -> Result<(), ProcessError> {
    let facts: &PromotionFacts = r
        .promotion
        .as_ref()
        .ok_or_else(|| ProcessError::Fatal(format!("promotion request {} has no facts", r.id)))?;
    let (reasons, policy_version, decision_id) = match cause {
        Cause::Request => (vec![], None, None),
        Cause::Decision(d) => {
            (d.reasons.clone(), Some(d.policy_version.clone()), Some(d.decision_id.clone()))
        }
        Cause::Degraded { command_id, .. } => {
            (vec![format!("best-effort: degraded mode {command_id}")], None, None)
        }
    };
    let outcome = PromotionOutcome {
        request_id: r.id.clone(),
        submission_id: facts.submission_id.clone(),
        model_id: facts.model_id.clone(),
        model_version: facts.model_version.clone(),
        target_stage: facts.target_stage,
        outcome: status,
        reasons: reasons.clone(),
        policy_version: policy_version.clone(),
        decision_id: decision_id.clone(),
        decided_at: at,
    };
    ctx.emit(Output::record(PROMOTIONS, &r.id, &outcome)?);
    let (event_type, transition) = match status {
        PromotionStatus::PendingPolicy => ("eval.promotion_pending", "pending_policy"),
        PromotionStatus::Promoted => ("eval.promotion_promoted", "promoted"),
        PromotionStatus::Denied => ("eval.promotion_denied", "denied"),
        PromotionStatus::BestEffort => ("eval.promotion_best_effort", "best_effort"),
    };
    let fact = Fact::new(NAME, event_type, transition, &r.id, cause_id(cause, &r.id), at)
        .actor(actor(cause, r))
        .with("model_id", facts.model_id.as_str())
        .with("model_version", facts.model_version.as_str())
        .with("target_stage", serde_json::to_value(facts.target_stage).unwrap_or_default())
        .with("reasons", reasons)
        .with_opt("policy_version", policy_version)
        .with_opt("decision_id", decision_id)
        .with_opt("best_effort", r.best_effort.clone());
    audit(ctx, fact)
}

/// Emits the allocation transition `from → to` of `r` at `at`, and its audit fact.
pub fn allocation(
    ctx: &mut Context<'_>,
    r: &Request,
    from: Option<AllocationState>,
    to: AllocationState,
    cause: Cause<'_>,
    at: i64,
) -> Result<(), ProcessError> {
    let facts: &AllocationFacts = r
        .allocation
        .as_ref()
        .ok_or_else(|| ProcessError::Fatal(format!("allocation {} has no facts", r.id)))?;
    let (cause_kind, reason) = match cause {
        Cause::Request => (CauseKind::AllocationRequest, None),
        Cause::Decision(d) => {
            (CauseKind::PolicyDecision, (!d.reasons.is_empty()).then(|| d.reasons.join("; ")))
        }
        Cause::Degraded { command_id, .. } => {
            (CauseKind::Degraded, Some(format!("best-effort: degraded mode {command_id}")))
        }
    };
    let approved = to == AllocationState::PendingFinance;
    let change = AllocationStateChanged {
        allocation_id: r.id.clone(),
        from_state: from,
        to_state: to,
        reason: reason.clone(),
        ledger_entry_id: None,
        cause_kind,
        cause_id: cause_id(cause, &r.id).to_string(),
        amount_minor: approved.then_some(facts.amount_minor),
        currency: approved.then(|| facts.currency.clone()),
        changed_at: at,
    };
    ctx.emit(Output::record(STATE, &r.id, &change)?);
    let event_type = match to {
        AllocationState::PendingPolicy => "alloc.pending_policy",
        AllocationState::PendingFinance => "alloc.pending_finance",
        AllocationState::Denied => "alloc.denied",
        AllocationState::Settled | AllocationState::SettlementFailed => {
            return Err(ProcessError::Fatal(format!(
                "the policy gate never moves an allocation to {to}"
            )))
        }
    };
    let policy_version = match cause {
        Cause::Decision(d) => Some(d.policy_version.clone()),
        _ => None,
    };
    let fact = Fact::new(NAME, event_type, to.as_str(), &r.id, cause_id(cause, &r.id), at)
        .actor(actor(cause, r))
        .with_opt("from_state", from.map(|s| s.as_str()))
        .with("cause_kind", cause_kind.as_str())
        .with("amount_minor", facts.amount_minor)
        .with("currency", facts.currency.as_str())
        .with_opt("reason", reason)
        .with_opt("policy_version", policy_version);
    audit(ctx, fact)
}

/// A real decision for a best-effort allocation: `allow` confirms it (an audit fact only);
/// `deny` revokes it with a correction `pending_finance → denied` to the settlement processor,
/// which owns the allocation from `pending_finance` on and applies it only if the allocation is
/// still unsettled.
pub fn best_effort_decided(
    ctx: &mut Context<'_>,
    r: &Request,
    d: &PolicyDecision,
) -> Result<(), ProcessError> {
    let deny = d.decision == evalstream_domain::records::Decision::Deny;
    if deny {
        let correction = AllocationCorrection {
            correction_id: format!("{NAME}:revoke:{}:{}", r.id, d.decision_id),
            allocation_id: r.id.clone(),
            expected_state: AllocationState::PendingFinance,
            to_state: AllocationState::Denied,
            cause_kind: CauseKind::PolicyDecision,
            cause_ref: Some(d.decision_id.clone()),
            ledger_entry_id: None,
            reason: format!(
                "best-effort allocation revoked by decision {}: {}",
                d.decision_id,
                d.reasons.join("; ")
            ),
            actor: "sentinelnet".into(),
            issued_at: d.decided_at,
        };
        ctx.emit(Output::record(CORRECTIONS, &r.id, &correction)?);
    }
    let (event_type, transition) = if deny {
        ("alloc.best_effort_revoked", "best_effort_revoked")
    } else {
        ("alloc.best_effort_confirmed", "best_effort_confirmed")
    };
    let fact = Fact::new(NAME, event_type, transition, &r.id, &d.decision_id, d.decided_at)
        .actor("sentinelnet")
        .with("decision", d.decision.as_str())
        .with("policy_version", d.policy_version.as_str())
        .with("reasons", d.reasons.clone())
        .with_opt("best_effort", r.best_effort.clone());
    audit(ctx, fact)
}

/// Emits an audit fact keyed by its subject.
pub fn audit(ctx: &mut Context<'_>, fact: Fact) -> Result<(), ProcessError> {
    let event = fact.build();
    ctx.emit(Output::record(events::TOPIC, &event.subject, &event)?);
    Ok(())
}

fn cause_id<'a>(cause: Cause<'a>, request_id: &'a str) -> &'a str {
    match cause {
        Cause::Request => request_id,
        Cause::Decision(d) => &d.decision_id,
        Cause::Degraded { command_id, .. } => command_id,
    }
}

/// The principal behind a change: the requester, SentinelNet, or the operator who switched
/// degraded mode on.
fn actor<'a>(cause: Cause<'a>, r: &'a Request) -> &'a str {
    match cause {
        Cause::Request => &r.requested_by,
        Cause::Decision(_) => "sentinelnet",
        Cause::Degraded { actor, .. } => actor,
    }
}
