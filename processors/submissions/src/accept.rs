//! The submission state machine: unknown → accepted (once per id), and what an accepted
//! submission implies.
//!
//! ```text
//!  submission id unknown ─────────────────────► accepted: digest stored; outputs below
//!  known, same digest (a resubmission) ───────► duplicate: nothing emitted
//!  known, other digest ───────────────────────► DLQ conflicting_resubmission (both digests)
//! ```
//!
//! The digest is SHA-256 over the RFC 8785 canonical JSON of the submission
//! ([`evalstream_domain::content_digest`]), so "same content" means the same fields and values,
//! whatever the producer's encoding or map order.

use evalstream_domain::events::Fact;
use evalstream_domain::records::{AllocationRequest, AuditEvent, EvalSubmission, PromotionRequest};
use evalstream_domain::reject::Rejection;
use evalstream_domain::{allocation_id, promotion_request_id};

/// What a submission leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A new submission: store `digest`, emit everything.
    Accept(Box<Accepted>),
    /// Seen before with the same content: no-op.
    Duplicate,
    /// Seen before with other content.
    Conflict(Rejection),
}

/// The outputs of an accepted submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// Content digest, kept in state under the submission id.
    pub digest: String,
    /// The promotion request it implies (`<submission_id>:promotion`).
    pub promotion: Option<PromotionRequest>,
    /// The allocation request it implies (`<submission_id>:allocation`).
    pub allocation: Option<AllocationRequest>,
    /// `eval.submission_accepted`.
    pub event: AuditEvent,
}

/// Decides on a valid submission `s` with content digest `digest`, given the digest stored for
/// its id (`None`: never seen).
pub fn decide(s: &EvalSubmission, digest: String, stored: Option<&str>) -> Verdict {
    match stored {
        Some(d) if d == digest => Verdict::Duplicate,
        Some(d) => Verdict::Conflict(Rejection::new(
            "conflicting_resubmission",
            format!(
                "submission {} was accepted with content digest {d}; this one has {digest}",
                s.submission_id
            ),
        )),
        None => Verdict::Accept(Box::new(accepted(s, digest))),
    }
}

fn accepted(s: &EvalSubmission, digest: String) -> Accepted {
    let promotion = s.promotion.as_ref().map(|p| PromotionRequest {
        request_id: promotion_request_id(&s.submission_id),
        submission_id: s.submission_id.clone(),
        model_id: s.model_id.clone(),
        model_version: s.model_version.clone(),
        target_stage: p.target_stage,
        requested_by: s.submitter.clone(),
        requested_at: s.submitted_at,
        risk_level_hint: p.risk_level_hint,
        justification: p.justification.clone(),
    });
    let allocation = s.allocation.as_ref().map(|a| AllocationRequest {
        allocation_id: allocation_id(&s.submission_id),
        requester: s.submitter.clone(),
        resource: a.resource.clone(),
        amount_minor: a.amount_minor,
        currency: a.currency.clone(),
        cost_center: a.cost_center.clone(),
        requested_at: s.submitted_at,
        purpose: Some(a.purpose.clone().unwrap_or_else(|| s.submission_id.clone())),
    });
    let event = Fact::new(
        crate::NAME,
        "eval.submission_accepted",
        "accepted",
        &s.submission_id,
        &s.submission_id,
        s.submitted_at,
    )
    .actor(&s.submitter)
    .with("model_id", s.model_id.as_str())
    .with("model_version", s.model_version.as_str())
    .with("eval_suite", s.eval_suite.as_str())
    .with("digest", digest.as_str())
    .with_opt("promotion_request_id", promotion.as_ref().map(|p| p.request_id.clone()))
    .with_opt("allocation_id", allocation.as_ref().map(|a| a.allocation_id.clone()))
    .build();
    Accepted { digest, promotion, allocation, event }
}
