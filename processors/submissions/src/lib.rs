//! The `submissions` processor (Eval Engine): `eval.submissions` → validated, deduplicated
//! submissions on `eval.submissions.accepted`, the promotion and allocation requests they imply,
//! and an `eval.submission_accepted` audit event.
//!
//! ```text
//!  eval.submissions ─► decode ─► validate (validate.rs) ── fails ─► eval.submissions.dlq
//!                                  │                                 invalid_field | key_mismatch
//!                                  ▼
//!                      digest vs state[sub/<id>] (accept.rs)
//!                        ├ same ─► duplicate: nothing
//!                        ├ other ─► DLQ conflicting_resubmission
//!                        └ new ─► state[sub/<id>] = digest
//!                                 eval.submissions.accepted   <id>
//!                                 eval.promotion-requests     <id>:promotion   (if asked)
//!                                 alloc.requests              <id>:allocation  (if asked)
//!                                 audit.events                eval.submission_accepted
//! ```
//!
//! Decisions (see also `docs/domain.md`):
//! - **Records must be keyed by `submission_id`.** State is per partition, so a submission keyed
//!   by anything else could land beside another copy of itself unseen; it is dead-lettered
//!   (`key_mismatch`) rather than accepted with an unreliable duplicate check.
//! - **Same id, same content is a no-op; same id, other content is refused**, naming both
//!   digests, and the first accepted version stays: a submission is evidence and is never
//!   silently replaced.
//! - **Derived ids are deterministic** (`<submission_id>:promotion`, `<submission_id>:allocation`),
//!   so a request can be traced back to its submission without a lookup, and replays reproduce
//!   them.
//! - Requests carry the submission's time (`requested_at = submitted_at`) and its submitter as
//!   requester: outputs never depend on the processor's clock.
//!
//! Metric: `eval_engine_eval_submissions_total{outcome="accepted|duplicate|rejected"}` (counted
//! when processed; a record re-processed after an aborted transaction counts again).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accept;
pub mod validate;

use evalstream_domain::records::EvalSubmission;
use evalstream_domain::{content_digest, events};
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::metrics::{CounterVec, Metrics};
use evalstream_runtime::processor::{Context, Input, Output, Processor, Registration};

use accept::Verdict;

/// Processor name.
pub const NAME: &str = "submissions";
/// Input topic.
pub const INPUT: &str = "eval.submissions";
/// Validated, deduplicated submissions.
pub const ACCEPTED: &str = "eval.submissions.accepted";
/// Promotion requests.
pub const PROMOTION_REQUESTS: &str = "eval.promotion-requests";
/// Allocation requests.
pub const ALLOCATION_REQUESTS: &str = "alloc.requests";

/// How the binary knows this processor. No settings.
pub const REGISTRATION: Registration = Registration {
    name: NAME,
    inputs: &[INPUT],
    outputs: &[ACCEPTED, PROMOTION_REQUESTS, ALLOCATION_REQUESTS, events::TOPIC],
    build: |setup| Ok(Box::new(Submissions::new(setup.metrics))),
};

/// The submissions processor.
pub struct Submissions {
    submissions: CounterVec,
}

impl Submissions {
    /// A processor counting into `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let submissions = metrics.counter_vec(
            "eval_engine.eval_submissions_total",
            "Submissions processed, by outcome: accepted, duplicate (same id and content), rejected (invalid or conflicting)",
            &["outcome"],
        );
        Submissions { submissions }
    }

    fn handle(&self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let s: EvalSubmission = input.decode()?;
        validate::submission(&s, input.key_str())?;
        let digest = content_digest(&s).map_err(|e| {
            ProcessError::Invalid(format!("invalid_field: submission has no canonical form: {e}"))
        })?;
        let key = format!("sub/{}", s.submission_id);
        let stored: Option<String> = ctx.state().get(&key)?;
        match accept::decide(&s, digest, stored.as_deref()) {
            Verdict::Duplicate => {
                self.submissions.inc(&["duplicate"]);
                Ok(())
            }
            Verdict::Conflict(r) => Err(r.into()),
            Verdict::Accept(a) => {
                ctx.state().put(&key, &a.digest)?;
                ctx.emit(Output::record(ACCEPTED, &s.submission_id, &s)?);
                if let Some(p) = &a.promotion {
                    ctx.emit(Output::record(PROMOTION_REQUESTS, &p.request_id, p)?);
                }
                if let Some(r) = &a.allocation {
                    ctx.emit(Output::record(ALLOCATION_REQUESTS, &r.allocation_id, r)?);
                }
                ctx.emit(Output::record(events::TOPIC, &a.event.subject, &a.event)?);
                self.submissions.inc(&["accepted"]);
                Ok(())
            }
        }
    }
}

impl Processor for Submissions {
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
        let result = self.handle(input, ctx);
        if result.is_err() {
            self.submissions.inc(&["rejected"]);
        }
        result
    }
}

#[cfg(test)]
mod tests;
