//! The submission state machine through the in-memory runner: valid, duplicate, conflicting,
//! invalid, wrongly keyed, and a replay after an abort.

use std::collections::BTreeMap;

use evalstream_domain::records::{
    AllocationAsk, AllocationRequest, AuditEvent, ComputeResource, EvalSubmission, PromotionAsk,
    PromotionRequest, PromotionStage, RiskLevel,
};
use evalstream_domain::reject::code_of;
use evalstream_runtime::metrics::Metrics;
use evalstream_runtime::testkit::{self, Runner, TestRecord};
use evalstream_runtime::topology::Topology;

use super::*;

fn submission(id: &str) -> EvalSubmission {
    EvalSubmission {
        submission_id: id.into(),
        model_id: "m-1".into(),
        model_version: "v3".into(),
        eval_suite: "safety".into(),
        eval_suite_version: None,
        submitter: "ci-bot".into(),
        metrics: BTreeMap::from([("accuracy".into(), 0.91), ("toxicity".into(), 0.002)]),
        dataset_id: None,
        artifact_uri: "s3://evals/1".into(),
        artifact_sha256: Some("ab".repeat(32)),
        labels: BTreeMap::new(),
        submitted_at: 1_763_458_200_000,
        promotion: Some(PromotionAsk {
            target_stage: PromotionStage::Canary,
            justification: Some("better".into()),
            risk_level_hint: Some(RiskLevel::Low),
        }),
        allocation: Some(AllocationAsk {
            resource: ComputeResource { gpu_type: "h100".into(), gpu_count: 8, hours: 2.5 },
            amount_minor: 12_000,
            currency: "EUR".into(),
            cost_center: "cc-7".into(),
            purpose: None,
        }),
    }
}

fn send(s: &EvalSubmission) -> TestRecord {
    testkit::record(INPUT, s).key(&s.submission_id)
}

fn runner() -> (Runner<Submissions>, std::sync::Arc<Metrics>) {
    let metrics = Metrics::new(NAME);
    (Runner::new(Submissions::new(&metrics)), metrics)
}

fn count(metrics: &Metrics, outcome: &str) -> u64 {
    let needle = format!(
        r#"eval_engine_eval_submissions_total{{processor="submissions",outcome="{outcome}"}} "#
    );
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|v| v.parse().unwrap()))
        .unwrap_or(0)
}

#[test]
fn a_submission_becomes_an_accepted_copy_two_requests_and_an_audit_event() {
    let (mut r, metrics) = runner();
    let s = submission("s-1");
    let out = r.send(send(&s));
    let topics: Vec<&str> = out.outputs().unwrap().iter().map(|o| o.topic.as_str()).collect();
    assert_eq!(topics, [ACCEPTED, PROMOTION_REQUESTS, ALLOCATION_REQUESTS, "audit.events"]);
    assert_eq!(r.records::<EvalSubmission>(ACCEPTED), std::slice::from_ref(&s));
    let p = &r.records::<PromotionRequest>(PROMOTION_REQUESTS)[0];
    assert_eq!((p.request_id.as_str(), p.requested_by.as_str()), ("s-1:promotion", "ci-bot"));
    assert_eq!(
        (p.target_stage, p.risk_level_hint, p.requested_at),
        (PromotionStage::Canary, Some(RiskLevel::Low), s.submitted_at)
    );
    let a = &r.records::<AllocationRequest>(ALLOCATION_REQUESTS)[0];
    assert_eq!(
        (a.allocation_id.as_str(), a.amount_minor, a.currency.as_str()),
        ("s-1:allocation", 12_000, "EUR")
    );
    assert_eq!(a.purpose.as_deref(), Some("s-1"), "the submission id is the default purpose");
    let e = &r.records::<AuditEvent>("audit.events")[0];
    assert_eq!(
        (e.event_id.as_str(), e.event_type.as_str(), e.actor.as_str(), e.occurred_at),
        ("submissions:accepted:s-1:s-1", "eval.submission_accepted", "ci-bot", s.submitted_at)
    );
    // Keys co-partition what policy joins.
    let keys: Vec<_> = r.outputs().iter().map(|o| o.key_str().unwrap().to_string()).collect();
    assert_eq!(keys, ["s-1", "s-1:promotion", "s-1:allocation", "s-1"]);
    assert_eq!(count(&metrics, "accepted"), 1);
}

#[test]
fn asks_are_optional() {
    let (mut r, _) = runner();
    let mut s = submission("s-2");
    s.promotion = None;
    s.allocation = None;
    let out = r.send(send(&s));
    let topics: Vec<&str> = out.outputs().unwrap().iter().map(|o| o.topic.as_str()).collect();
    assert_eq!(topics, [ACCEPTED, "audit.events"]);
}

#[test]
fn the_same_submission_twice_is_a_no_op() {
    let (mut r, metrics) = runner();
    let s = submission("s-1");
    r.send(send(&s));
    let again = r.send(send(&s));
    assert_eq!(again.outputs(), Some(&[][..]), "duplicate emits nothing");
    // Map order and encoding do not matter: the digest is over canonical JSON.
    let mut reordered = s.clone();
    reordered.metrics = s.metrics.iter().rev().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(r.send(send(&reordered)).outputs(), Some(&[][..]));
    assert_eq!((count(&metrics, "accepted"), count(&metrics, "duplicate")), (1, 2));
}

#[test]
fn the_same_id_with_other_content_is_refused_and_the_first_stays() {
    let (mut r, metrics) = runner();
    let s = submission("s-1");
    r.send(send(&s));
    let mut changed = s.clone();
    changed.metrics.insert("accuracy".into(), 0.99);
    let d = r.send(send(&changed)).dead_letter().cloned().expect("dead-lettered");
    assert_eq!(code_of(&d.reason), Some("conflicting_resubmission"), "{}", d.reason);
    let stored: String = r.get(0, "sub/s-1").unwrap().unwrap();
    assert!(d.reason.contains(&stored), "names the accepted digest: {}", d.reason);
    assert_eq!(r.records::<EvalSubmission>(ACCEPTED), [s]);
    assert_eq!(count(&metrics, "rejected"), 1);
}

#[test]
fn invalid_submissions_go_to_the_dlq_naming_the_field() {
    type Breaker = Box<dyn Fn(&mut EvalSubmission)>;
    let cases: Vec<(Breaker, &str)> = vec![
        (Box::new(|s| s.model_id = " ".into()), "model_id"),
        (
            Box::new(|s| {
                s.metrics.insert("acc".into(), f64::NAN);
            }),
            "metrics[\"acc\"]",
        ),
        (
            Box::new(|s| {
                s.metrics.insert("acc".into(), f64::INFINITY);
            }),
            "metrics[\"acc\"]",
        ),
        (Box::new(|s| s.artifact_sha256 = Some("AB".repeat(32))), "artifact_sha256"),
        (Box::new(|s| s.artifact_sha256 = Some("ab".into())), "artifact_sha256"),
        (Box::new(|s| s.submitted_at = 0), "submitted_at"),
        (
            Box::new(|s| s.promotion.as_mut().unwrap().target_stage = PromotionStage::Unknown),
            "promotion.target_stage",
        ),
        (Box::new(|s| s.allocation.as_mut().unwrap().amount_minor = -5), "allocation.amount_minor"),
        (
            Box::new(|s| s.allocation.as_mut().unwrap().currency = "eur".into()),
            "allocation.currency",
        ),
        (
            Box::new(|s| s.allocation.as_mut().unwrap().resource.gpu_count = 0),
            "allocation.resource.gpu_count",
        ),
        (
            Box::new(|s| s.allocation.as_mut().unwrap().resource.hours = f64::NAN),
            "allocation.resource.hours",
        ),
    ];
    for (i, (break_it, field)) in cases.into_iter().enumerate() {
        let (mut r, _) = runner();
        let mut s = submission(&format!("bad-{i}"));
        break_it(&mut s);
        let d =
            r.send(send(&s)).dead_letter().cloned().unwrap_or_else(|| panic!("{field} accepted"));
        assert_eq!(d.class.as_str(), "validation");
        assert_eq!(code_of(&d.reason), Some("invalid_field"), "{}", d.reason);
        assert!(d.reason.contains(field), "{field} not in {}", d.reason);
        assert!(r.outputs().is_empty() && r.state_entries(0).is_empty(), "nothing kept");
    }
}

#[test]
fn a_submission_keyed_otherwise_is_refused() {
    let (mut r, _) = runner();
    let s = submission("s-1");
    let d = r.send(testkit::record(INPUT, &s).key("m-1")).dead_letter().cloned().unwrap();
    assert_eq!(code_of(&d.reason), Some("key_mismatch"), "{}", d.reason);
    let d = r.send(testkit::record(INPUT, &s)).dead_letter().cloned().unwrap();
    assert_eq!(code_of(&d.reason), Some("key_mismatch"));
    let d = r
        .send(TestRecord::raw(INPUT, b"garbage".to_vec()).key("s-1"))
        .dead_letter()
        .cloned()
        .unwrap();
    assert_eq!(d.class.as_str(), "deserialization");
}

#[test]
fn a_replay_after_an_abort_or_restart_reproduces_the_same_outputs() {
    let (mut r, _) = runner();
    r.send(send(&submission("s-0")));
    r.commit();
    let first = r.send(send(&submission("s-1")));
    r.abort();
    assert_eq!(r.send(send(&submission("s-1"))), first);
    r.commit();
    r.restart(Submissions::new(&Metrics::new(NAME)));
    assert_eq!(r.send(send(&submission("s-1"))).outputs(), Some(&[][..]), "state survived");
}

#[test]
fn registration_matches_the_topology() {
    REGISTRATION.check_topology(&Topology::bundled().unwrap()).unwrap();
}
