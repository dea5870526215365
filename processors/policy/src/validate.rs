//! What makes a request, decision or switch acceptable (DLQ `invalid_field` / `key_mismatch`).

use evalstream_domain::check;
use evalstream_domain::records::{
    AllocationRequest, PolicyDecision, PromotionRequest, PromotionStage, Switch,
};
use evalstream_domain::reject::Rejection;

/// A promotion request read with record key `key`.
pub fn promotion(r: &PromotionRequest, key: Option<&str>) -> Result<(), Rejection> {
    check::non_empty("request_id", &r.request_id)?;
    check::key_is(key, "request_id", &r.request_id)?;
    for (f, v) in [
        ("submission_id", &r.submission_id),
        ("model_id", &r.model_id),
        ("model_version", &r.model_version),
        ("requested_by", &r.requested_by),
    ] {
        check::non_empty(f, v)?;
    }
    if r.target_stage == PromotionStage::Unknown {
        return Err(Rejection::field("target_stage", "unknown stage"));
    }
    check::event_time("requested_at", r.requested_at)
}

/// An allocation request read with record key `key`.
pub fn allocation(r: &AllocationRequest, key: Option<&str>) -> Result<(), Rejection> {
    check::non_empty("allocation_id", &r.allocation_id)?;
    check::key_is(key, "allocation_id", &r.allocation_id)?;
    check::non_empty("requester", &r.requester)?;
    check::non_empty("resource.gpu_type", &r.resource.gpu_type)?;
    if r.resource.gpu_count <= 0 {
        return Err(Rejection::field(
            "resource.gpu_count",
            format!("{} is not positive", r.resource.gpu_count),
        ));
    }
    if !(r.resource.hours.is_finite() && r.resource.hours > 0.0) {
        return Err(Rejection::field(
            "resource.hours",
            format!("{} is not a positive number", r.resource.hours),
        ));
    }
    check::amount("amount_minor", r.amount_minor)?;
    check::currency("currency", &r.currency)?;
    check::non_empty("cost_center", &r.cost_center)?;
    check::event_time("requested_at", r.requested_at)
}

/// A decision read with record key `key`.
pub fn decision(d: &PolicyDecision, key: Option<&str>) -> Result<(), Rejection> {
    check::non_empty("decision_id", &d.decision_id)?;
    check::non_empty("request_id", &d.request_id)?;
    check::key_is(key, "request_id", &d.request_id)?;
    check::non_empty("policy_version", &d.policy_version)?;
    check::event_time("decided_at", d.decided_at)
}

/// A switch record.
pub fn switch(s: &Switch) -> Result<(), Rejection> {
    check::non_empty("command_id", &s.command_id)?;
    check::non_empty("reason", &s.reason)?;
    check::non_empty("actor", &s.actor)?;
    check::event_time("issued_at", s.issued_at)
}
