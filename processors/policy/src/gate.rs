//! The gate: the promotion and allocation state machines up to the policy decision.
//!
//! ```text
//!  promotion:  (none) ─request─► pending_policy ─allow─► promoted
//!                                     │   └──────deny──► denied
//!                                     └─degraded, low risk─► best_effort ─allow─► promoted
//!                                                                └──────deny──► denied
//!  allocation: (none) ─request─► pending_policy ─allow─► pending_finance ──► (settlement)
//!                                     │   └──────deny──► denied
//!                                     └─degraded, low risk─► pending_finance (cause degraded)
//!                                            later allow: confirmed (audit only)
//!                                            later deny:  correction pending_finance → denied
//! ```
//!
//! - **Fail closed.** Without a decision a request stays `pending_policy`, for ever if need be.
//! - **Early decisions wait in state.** A real decision whose request is not registered yet is
//!   kept under `early/` and applied when the request arrives: requests and decisions are on
//!   different topics, and one arriving before the other is normal, not an error.
//! - **One real decision per request.** A second real decision with another id, for a request
//!   decided, held or with an early decision waiting, is dead-lettered `already_decided` naming
//!   the first: the first decision stands, and the conflict is visible to operators.
//! - **Simulations change nothing.** A `simulate=true` decision records a `policy.simulated`
//!   audit fact with the request's current status and what the decision would do.
//! - **Degraded mode** (switch `degraded`): low-risk requests without a decision go through as
//!   best effort, new ones on arrival and pending ones when the switch turns on; everything else
//!   stays closed. A later real decision still counts: it confirms or revokes.
//! - **Frozen allocations** (switch `freeze_allocations`): no allocation leaves `pending_policy`;
//!   real allocation decisions are validated and held in arrival order and applied when the
//!   freeze is lifted (then degraded mode, if on, takes the low-risk rest). New allocation
//!   requests are still registered (recording a request moves no money). Promotions are not
//!   affected.

use evalstream_domain::content_digest;
use evalstream_domain::events::Fact;
use evalstream_domain::records::{
    AllocationRequest, AllocationState, Decision, PolicyDecision, PromotionRequest, PromotionStage,
    PromotionStatus, RiskLevel, SubjectKind, Switch, SwitchKind,
};
use evalstream_domain::reject::Rejection;
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::processor::Context;

use crate::emit::{self, Cause};
use crate::metrics::PolicyMetrics;
use crate::state::{self, AllocationFacts, PromotionFacts, Request, Status, SwitchState, Waiting};
use crate::validate;
use crate::NAME;

/// Settings of the gate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// In degraded mode, allocations up to this amount (minor units) count as low risk;
    /// 0 (the default) lets no allocation through.
    pub degraded_max_amount_minor: i64,
}

/// The gate over one partition's state, for one input record.
pub struct Gate<'a> {
    /// Settings.
    pub settings: Settings,
    /// Metrics to count into.
    pub metrics: &'a PolicyMetrics,
}

impl Gate<'_> {
    /// A promotion request arrives.
    pub fn promotion_request(
        &self,
        ctx: &mut Context<'_>,
        p: &PromotionRequest,
        key: Option<&str>,
    ) -> Result<(), ProcessError> {
        validate::promotion(p, key)?;
        let r = Request {
            kind: SubjectKind::Promotion,
            id: p.request_id.clone(),
            digest: digest(p)?,
            status: Status::PendingPolicy,
            requested_at: p.requested_at,
            requested_by: p.requested_by.clone(),
            promotion: Some(PromotionFacts {
                submission_id: p.submission_id.clone(),
                model_id: p.model_id.clone(),
                model_version: p.model_version.clone(),
                target_stage: p.target_stage,
                risk_level_hint: p.risk_level_hint,
            }),
            allocation: None,
            decided_by: None,
            held: None,
            best_effort: None,
        };
        self.register(ctx, r)
    }

    /// An allocation request arrives.
    pub fn allocation_request(
        &self,
        ctx: &mut Context<'_>,
        a: &AllocationRequest,
        key: Option<&str>,
    ) -> Result<(), ProcessError> {
        validate::allocation(a, key)?;
        let r = Request {
            kind: SubjectKind::Allocation,
            id: a.allocation_id.clone(),
            digest: digest(a)?,
            status: Status::PendingPolicy,
            requested_at: a.requested_at,
            requested_by: a.requester.clone(),
            promotion: None,
            allocation: Some(AllocationFacts {
                amount_minor: a.amount_minor,
                currency: a.currency.clone(),
            }),
            decided_by: None,
            held: None,
            best_effort: None,
        };
        self.register(ctx, r)
    }

    /// Registers a new request (or recognises a duplicate / conflict), then applies a decision
    /// that waited for it, or degraded mode.
    fn register(&self, ctx: &mut Context<'_>, mut r: Request) -> Result<(), ProcessError> {
        let key = state::request_key(r.kind, &r.id);
        if let Some(known) = ctx.state().get::<Request>(&key)? {
            if known.digest == r.digest {
                return Ok(());
            }
            return Err(Rejection::new(
                "conflicting_request",
                format!(
                    "{} request {} was registered with content digest {}; this one has {}",
                    r.kind.as_str(),
                    r.id,
                    known.digest,
                    r.digest
                ),
            )
            .into());
        }
        if ctx.state().contains(state::request_key(state::other(r.kind), &r.id)) {
            return Err(Rejection::new(
                "conflicting_request",
                format!(
                    "{} is already registered as a {} request",
                    r.id,
                    state::other(r.kind).as_str()
                ),
            )
            .into());
        }
        match r.kind {
            SubjectKind::Promotion => emit::promotion(
                ctx,
                &r,
                PromotionStatus::PendingPolicy,
                Cause::Request,
                r.requested_at,
            )?,
            SubjectKind::Allocation => emit::allocation(
                ctx,
                &r,
                None,
                AllocationState::PendingPolicy,
                Cause::Request,
                r.requested_at,
            )?,
        }
        let frozen = frozen(ctx)?;
        let early_key = state::early_key(r.kind, &r.id);
        if let Some(early) = ctx.state().get::<Waiting>(&early_key)? {
            ctx.state().delete(&early_key);
            if r.kind == SubjectKind::Allocation && frozen {
                self.hold(ctx, &mut r, &early)?;
            } else {
                self.apply(ctx, &mut r, &early)?;
            }
        } else if let Some(degraded) = switch_state(ctx, state::DEGRADED)?.filter(|s| s.on) {
            if self.eligible(&r, frozen) {
                let at = r.requested_at;
                self.best_effort(ctx, &mut r, &degraded, at)?;
            }
        }
        store(ctx, &r)
    }

    /// A policy decision arrives.
    pub fn decision(
        &self,
        ctx: &mut Context<'_>,
        d: &PolicyDecision,
        key: Option<&str>,
    ) -> Result<(), ProcessError> {
        validate::decision(d, key)?;
        self.metrics.decision(d);
        let seen_key = state::decision_key(&d.decision_id);
        let digest = digest(d)?;
        if let Some(seen) = ctx.state().get::<String>(&seen_key)? {
            if seen == digest {
                return Ok(());
            }
            return Err(Rejection::new(
                "conflicting_duplicate",
                format!(
                    "decision {} was consumed with content digest {seen}; this one has {digest}",
                    d.decision_id
                ),
            )
            .into());
        }
        ctx.state().put(&seen_key, &digest)?;
        if d.simulate {
            return self.simulate(ctx, d);
        }
        let key = state::request_key(d.subject_kind, &d.request_id);
        let Some(mut r) = ctx.state().get::<Request>(&key)? else {
            return self.early(ctx, d);
        };
        if let Some(first) = r.decided_by.as_ref().or(r.held.as_ref()) {
            return Err(Rejection::new(
                "already_decided",
                format!(
                    "{} request {} was already decided by {first}; {} is not applied",
                    d.subject_kind.as_str(),
                    d.request_id,
                    d.decision_id
                ),
            )
            .into());
        }
        if r.kind == SubjectKind::Allocation && frozen(ctx)? {
            self.hold(ctx, &mut r, d)?;
        } else {
            self.apply(ctx, &mut r, d)?;
        }
        store(ctx, &r)
    }

    /// A real decision for a request that is not registered (yet): it waits under `early/`.
    fn early(&self, ctx: &mut Context<'_>, d: &PolicyDecision) -> Result<(), ProcessError> {
        let other = state::other(d.subject_kind);
        if ctx.state().contains(state::request_key(other, &d.request_id)) {
            return Err(Rejection::new(
                "subject_kind_mismatch",
                format!(
                    "decision {} is about a {} but {} is a {} request",
                    d.decision_id,
                    d.subject_kind.as_str(),
                    d.request_id,
                    other.as_str()
                ),
            )
            .into());
        }
        let early_key = state::early_key(d.subject_kind, &d.request_id);
        if let Some(first) = ctx.state().get::<Waiting>(&early_key)? {
            return Err(Rejection::new(
                "already_decided",
                format!(
                    "decision {} already waits for request {}; {} is not applied",
                    first.decision_id, d.request_id, d.decision_id
                ),
            )
            .into());
        }
        ctx.state().put(&early_key, d)?;
        deferred(ctx, d, "early", "the request has not arrived yet; the decision waits for it")
    }

    /// Holds a real allocation decision while allocations are frozen.
    fn hold(
        &self,
        ctx: &mut Context<'_>,
        r: &mut Request,
        d: &PolicyDecision,
    ) -> Result<(), ProcessError> {
        let seq: u64 = ctx.state().get(state::HELD_SEQ)?.unwrap_or(0);
        ctx.state().put(state::held_key(seq), d)?;
        ctx.state().put(state::HELD_SEQ, &(seq + 1))?;
        r.held = Some(d.decision_id.clone());
        deferred(
            ctx,
            d,
            "held",
            "allocations are frozen; the decision is applied when they are unfrozen",
        )
    }

    /// Applies a real decision to a registered request that no real decision decided yet.
    fn apply(
        &self,
        ctx: &mut Context<'_>,
        r: &mut Request,
        d: &PolicyDecision,
    ) -> Result<(), ProcessError> {
        let allow = d.decision == Decision::Allow;
        let cause = Cause::Decision(d);
        match (r.kind, r.status) {
            (SubjectKind::Promotion, Status::PendingPolicy | Status::BestEffort) => {
                let (status, outcome) = if allow {
                    (Status::Promoted, PromotionStatus::Promoted)
                } else {
                    (Status::Denied, PromotionStatus::Denied)
                };
                r.status = status;
                emit::promotion(ctx, r, outcome, cause, d.decided_at)?;
            }
            (SubjectKind::Allocation, Status::PendingPolicy) => {
                let to =
                    if allow { AllocationState::PendingFinance } else { AllocationState::Denied };
                r.status = if allow { Status::PendingFinance } else { Status::Denied };
                emit::allocation(
                    ctx,
                    r,
                    Some(AllocationState::PendingPolicy),
                    to,
                    cause,
                    d.decided_at,
                )?;
            }
            (SubjectKind::Allocation, Status::PendingFinance) if r.best_effort.is_some() => {
                emit::best_effort_decided(ctx, r, d)?;
            }
            (kind, status) => {
                return Err(ProcessError::Fatal(format!(
                    "{} request {} is {} without a deciding decision",
                    kind.as_str(),
                    r.id,
                    status.as_str()
                )))
            }
        }
        r.decided_by = Some(d.decision_id.clone());
        r.held = None;
        if !allow {
            self.metrics.denial(d);
        }
        Ok(())
    }

    /// Whether degraded mode may let `r` through: low risk, no decision pending for it, and for
    /// an allocation, not frozen.
    fn eligible(&self, r: &Request, frozen: bool) -> bool {
        if r.status != Status::PendingPolicy || r.held.is_some() {
            return false;
        }
        match r.kind {
            SubjectKind::Promotion => r.promotion.as_ref().is_some_and(|p| {
                p.risk_level_hint == Some(RiskLevel::Low)
                    && p.target_stage != PromotionStage::Production
            }),
            SubjectKind::Allocation => {
                !frozen
                    && self.settings.degraded_max_amount_minor > 0
                    && r.allocation
                        .as_ref()
                        .is_some_and(|a| a.amount_minor <= self.settings.degraded_max_amount_minor)
            }
        }
    }

    /// Lets a low-risk request through as best effort.
    fn best_effort(
        &self,
        ctx: &mut Context<'_>,
        r: &mut Request,
        degraded: &SwitchState,
        at: i64,
    ) -> Result<(), ProcessError> {
        let cause = Cause::Degraded { command_id: &degraded.command_id, actor: &degraded.actor };
        r.best_effort = Some(degraded.command_id.clone());
        match r.kind {
            SubjectKind::Promotion => {
                r.status = Status::BestEffort;
                emit::promotion(ctx, r, PromotionStatus::BestEffort, cause, at)?;
            }
            SubjectKind::Allocation => {
                r.status = Status::PendingFinance;
                emit::allocation(
                    ctx,
                    r,
                    Some(AllocationState::PendingPolicy),
                    AllocationState::PendingFinance,
                    cause,
                    at,
                )?;
            }
        }
        self.metrics.best_effort(r.kind);
        Ok(())
    }

    /// Records what a simulated decision would do; changes nothing.
    fn simulate(&self, ctx: &mut Context<'_>, d: &PolicyDecision) -> Result<(), ProcessError> {
        let r = ctx.state().get::<Request>(state::request_key(d.subject_kind, &d.request_id))?;
        let frozen = frozen(ctx)?;
        let allow = d.decision == Decision::Allow;
        let (current, would_be) = match &r {
            None => {
                ("unknown", "nothing: no such request (yet); a real decision would wait for it")
            }
            Some(r) if r.decided_by.is_some() => {
                (r.status.as_str(), "nothing: already decided by a real decision")
            }
            Some(r) if r.held.is_some() => {
                (r.status.as_str(), "nothing: a real decision is held for it")
            }
            Some(r) => {
                let would = match (r.kind, r.status, allow) {
                    (SubjectKind::Allocation, Status::PendingPolicy, _) if frozen => {
                        "held until allocations are unfrozen"
                    }
                    (SubjectKind::Promotion, _, true) => "promoted",
                    (SubjectKind::Promotion, _, false) => "denied",
                    (SubjectKind::Allocation, Status::PendingPolicy, true) => "pending_finance",
                    (SubjectKind::Allocation, Status::PendingPolicy, false) => "denied",
                    (SubjectKind::Allocation, _, true) => "best effort confirmed",
                    (SubjectKind::Allocation, _, false) => {
                        "best effort revoked (pending_finance -> denied unless settled)"
                    }
                };
                (r.status.as_str(), would)
            }
        };
        let fact = Fact::new(
            NAME,
            "policy.simulated",
            "simulated",
            &d.request_id,
            &d.decision_id,
            d.decided_at,
        )
        .actor("sentinelnet")
        .with("decision_id", d.decision_id.as_str())
        .with("subject_kind", d.subject_kind.as_str())
        .with("decision", d.decision.as_str())
        .with("policy_version", d.policy_version.as_str())
        .with("reasons", d.reasons.clone())
        .with("current_status", current)
        .with("would_be", would_be);
        emit::audit(ctx, fact)
    }

    /// A switch copy for `partition` arrives.
    pub fn switch(
        &self,
        ctx: &mut Context<'_>,
        s: &Switch,
        partition: i32,
    ) -> Result<(), ProcessError> {
        validate::switch(s)?;
        let cmd_key = state::command_key(&s.command_id);
        if ctx.state().contains(&cmd_key) {
            return Ok(());
        }
        ctx.state().put(&cmd_key, &s.issued_at)?;
        let new =
            SwitchState { on: s.on, command_id: s.command_id.clone(), actor: s.actor.clone() };
        match s.switch {
            SwitchKind::Degraded => {
                ctx.state().put(state::DEGRADED, &new)?;
                if s.on {
                    self.sweep(ctx, &new, s.issued_at)?;
                }
            }
            SwitchKind::FreezeAllocations => {
                ctx.state().put(state::FREEZE, &new)?;
                if !s.on {
                    self.release_held(ctx)?;
                    if let Some(degraded) = switch_state(ctx, state::DEGRADED)?.filter(|d| d.on) {
                        self.sweep(ctx, &degraded, s.issued_at)?;
                    }
                }
            }
        }
        emit::audit(ctx, Fact::switch_applied(NAME, s, partition))
    }

    /// Degraded mode takes every eligible pending request of the partition (in key order, so
    /// the outputs are deterministic).
    fn sweep(
        &self,
        ctx: &mut Context<'_>,
        degraded: &SwitchState,
        at: i64,
    ) -> Result<(), ProcessError> {
        let frozen = frozen(ctx)?;
        for (key, _) in ctx.state().scan::<i64>("pending/")? {
            let Some(rkey) = key.strip_prefix(b"pending/") else { continue };
            let rkey = [b"req/".as_slice(), rkey].concat();
            let Some(mut r) = ctx.state().get::<Request>(&rkey)? else { continue };
            if self.eligible(&r, frozen) {
                self.best_effort(ctx, &mut r, degraded, at)?;
                store(ctx, &r)?;
            }
        }
        Ok(())
    }

    /// Applies the decisions held during a freeze, in arrival order.
    fn release_held(&self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        for (key, d) in ctx.state().scan::<Waiting>("held/")? {
            ctx.state().delete(&key);
            let rkey = state::request_key(d.subject_kind, &d.request_id);
            let mut r = ctx.state().get::<Request>(&rkey)?.ok_or_else(|| {
                ProcessError::Fatal(format!(
                    "held decision {} has no request {}",
                    d.decision_id, d.request_id
                ))
            })?;
            self.apply(ctx, &mut r, &d)?;
            store(ctx, &r)?;
        }
        Ok(())
    }
}

/// Records that a real decision waits (`early` or `held`).
fn deferred(
    ctx: &mut Context<'_>,
    d: &PolicyDecision,
    transition: &'static str,
    why: &str,
) -> Result<(), ProcessError> {
    let fact = Fact::new(
        NAME,
        "policy.decision_deferred",
        transition,
        &d.request_id,
        &d.decision_id,
        d.decided_at,
    )
    .actor("sentinelnet")
    .with("subject_kind", d.subject_kind.as_str())
    .with("decision", d.decision.as_str())
    .with("policy_version", d.policy_version.as_str())
    .with("why", why);
    emit::audit(ctx, fact)
}

/// Stores a request and keeps the `pending/` index in step with its status.
fn store(ctx: &mut Context<'_>, r: &Request) -> Result<(), ProcessError> {
    let pending = state::pending_key(r.kind, &r.id);
    if r.status == Status::PendingPolicy {
        ctx.state().put(&pending, &r.requested_at)?;
    } else {
        ctx.state().delete(&pending);
    }
    ctx.state().put(state::request_key(r.kind, &r.id), r)
}

fn switch_state(ctx: &mut Context<'_>, key: &str) -> Result<Option<SwitchState>, ProcessError> {
    ctx.state().get(key)
}

fn frozen(ctx: &mut Context<'_>) -> Result<bool, ProcessError> {
    Ok(switch_state(ctx, state::FREEZE)?.is_some_and(|s| s.on))
}

fn digest<T: serde::Serialize>(value: &T) -> Result<String, ProcessError> {
    content_digest(value)
        .map_err(|e| ProcessError::Invalid(format!("invalid_field: no canonical form: {e}")))
}
