//! What makes a submission acceptable. Each failure names the field (DLQ `invalid_field`).

use evalstream_domain::check;
use evalstream_domain::records::{EvalSubmission, PromotionStage};
use evalstream_domain::reject::Rejection;

/// Checks `s`, read with record key `key`.
pub fn submission(s: &EvalSubmission, key: Option<&str>) -> Result<(), Rejection> {
    check::non_empty("submission_id", &s.submission_id)?;
    // Deduplication is per partition: a submission keyed otherwise could land in another
    // partition than its resubmission and escape duplicate detection.
    check::key_is(key, "submission_id", &s.submission_id)?;
    for (field, value) in [
        ("model_id", &s.model_id),
        ("model_version", &s.model_version),
        ("eval_suite", &s.eval_suite),
        ("submitter", &s.submitter),
        ("artifact_uri", &s.artifact_uri),
    ] {
        check::non_empty(field, value)?;
    }
    for (name, value) in &s.metrics {
        if !value.is_finite() {
            return Err(Rejection::field(
                &format!("metrics[{name:?}]"),
                format!("{value} is not a finite number"),
            ));
        }
    }
    if let Some(sha) = &s.artifact_sha256 {
        let hex = sha.len() == 64
            && sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(Rejection::field(
                "artifact_sha256",
                format!("{sha:?} is not 64 lower-case hex digits"),
            ));
        }
    }
    check::event_time("submitted_at", s.submitted_at)?;
    if let Some(p) = &s.promotion {
        if p.target_stage == PromotionStage::Unknown {
            return Err(Rejection::field("promotion.target_stage", "unknown stage"));
        }
    }
    if let Some(a) = &s.allocation {
        check::non_empty("allocation.resource.gpu_type", &a.resource.gpu_type)?;
        if a.resource.gpu_count <= 0 {
            return Err(Rejection::field(
                "allocation.resource.gpu_count",
                format!("{} is not positive", a.resource.gpu_count),
            ));
        }
        if !(a.resource.hours.is_finite() && a.resource.hours > 0.0) {
            return Err(Rejection::field(
                "allocation.resource.hours",
                format!("{} is not a positive number", a.resource.hours),
            ));
        }
        check::amount("allocation.amount_minor", a.amount_minor)?;
        check::currency("allocation.currency", &a.currency)?;
        check::non_empty("allocation.cost_center", &a.cost_center)?;
    }
    Ok(())
}
