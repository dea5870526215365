//! The gate's state machines through the in-memory runner: in order, early, duplicate,
//! conflicting, simulated, invalid, mismatched, degraded, frozen, and replays.

use evalstream_domain::records::{
    AllocationCorrection, AllocationRequest, AllocationState, AllocationStateChanged, AuditEvent,
    CauseKind, ComputeResource, Decision, PolicyDecision, PromotionOutcome, PromotionRequest,
    PromotionStage, PromotionStatus, RiskLevel, SubjectKind, Switch, SwitchKind,
};
use evalstream_domain::reject::code_of;
use evalstream_runtime::metrics::Metrics;
use evalstream_runtime::testkit::{self, Outcome, Runner, TestRecord};
use evalstream_runtime::topology::Topology;
use serde_json::Value;

use super::*;

const T: i64 = 1_763_458_200_000;

fn promotion(id: &str, stage: PromotionStage, risk: Option<RiskLevel>) -> TestRecord {
    let r = PromotionRequest {
        request_id: id.into(),
        submission_id: id.trim_end_matches(":promotion").into(),
        model_id: "m-1".into(),
        model_version: "v3".into(),
        target_stage: stage,
        requested_by: "ci-bot".into(),
        requested_at: T,
        risk_level_hint: risk,
        justification: None,
    };
    testkit::record(PROMOTION_REQUESTS, &r).key(id)
}

fn low(id: &str) -> TestRecord {
    promotion(id, PromotionStage::Canary, Some(RiskLevel::Low))
}

fn allocation(id: &str, amount: i64) -> TestRecord {
    let a = AllocationRequest {
        allocation_id: id.into(),
        requester: "ci-bot".into(),
        resource: ComputeResource { gpu_type: "h100".into(), gpu_count: 8, hours: 2.0 },
        amount_minor: amount,
        currency: "EUR".into(),
        cost_center: "cc-1".into(),
        requested_at: T,
        purpose: None,
    };
    testkit::record(ALLOCATION_REQUESTS, &a).key(id)
}

fn decision_of(id: &str, request: &str, kind: SubjectKind, verdict: Decision) -> PolicyDecision {
    PolicyDecision {
        decision_id: id.into(),
        request_id: request.into(),
        subject_kind: kind,
        decision: verdict,
        reasons: if verdict == Decision::Deny {
            vec!["toxicity_above_threshold".into()]
        } else {
            vec![]
        },
        policy_version: "pv-7".into(),
        risk_level: RiskLevel::Medium,
        simulate: false,
        decided_at: T + 1000,
    }
}

fn decide(id: &str, request: &str, kind: SubjectKind, verdict: Decision) -> TestRecord {
    testkit::record(DECISIONS, &decision_of(id, request, kind, verdict)).key(request)
}

fn switch(id: &str, kind: SwitchKind, on: bool, partition: i32) -> TestRecord {
    let s = Switch {
        command_id: id.into(),
        switch: kind,
        on,
        reason: "INC-1".into(),
        actor: "alice".into(),
        issued_at: T + 500,
    };
    testkit::record(SWITCHES, &s).key(id).partition(partition)
}

fn runner_with(limit: i64) -> (Runner<Policy>, std::sync::Arc<Metrics>) {
    let metrics = Metrics::new(NAME);
    (Runner::new(Policy::new(Settings { degraded_max_amount_minor: limit }, &metrics)), metrics)
}

fn runner() -> Runner<Policy> {
    runner_with(5_000).0
}

fn outcomes(r: &Runner<Policy>) -> Vec<(String, PromotionStatus)> {
    r.records::<PromotionOutcome>(PROMOTIONS)
        .into_iter()
        .map(|o| (o.request_id, o.outcome))
        .collect()
}

fn transitions(
    r: &Runner<Policy>,
) -> Vec<(String, Option<AllocationState>, AllocationState, CauseKind)> {
    r.records::<AllocationStateChanged>(STATE)
        .into_iter()
        .map(|t| (t.allocation_id, t.from_state, t.to_state, t.cause_kind))
        .collect()
}

fn events(r: &Runner<Policy>) -> Vec<AuditEvent> {
    r.records::<AuditEvent>("audit.events")
}

fn event_types(r: &Runner<Policy>) -> Vec<String> {
    events(r).into_iter().map(|e| e.event_type).collect()
}

fn dlq_code(o: &Outcome) -> String {
    let d = o.dead_letter().unwrap_or_else(|| panic!("not dead-lettered: {o:?}"));
    code_of(&d.reason).unwrap_or(&d.reason).to_string()
}

fn metric(m: &Metrics, series: &str) -> Option<f64> {
    m.encode().lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

use PromotionStatus::{BestEffort, Denied, PendingPolicy, Promoted};

#[test]
fn a_request_waits_fail_closed_until_its_decision() {
    let (mut r, m) = runner_with(0);
    r.send(low("s1:promotion"));
    r.send(promotion("s2:promotion", PromotionStage::Production, None));
    assert_eq!(
        outcomes(&r),
        [("s1:promotion".into(), PendingPolicy), ("s2:promotion".into(), PendingPolicy)]
    );
    r.punctuate(0);
    assert_eq!(
        metric(
            &m,
            r#"eval_engine_policy_pending_requests{processor="policy",subject_kind="promotion"}"#
        ),
        Some(2.0)
    );
    assert!(metric(&m, r#"eval_engine_policy_oldest_pending_age_seconds{processor="policy",subject_kind="promotion"}"#).unwrap() > 0.0);

    r.send(decide("d1", "s1:promotion", SubjectKind::Promotion, Decision::Allow));
    r.send(decide("d2", "s2:promotion", SubjectKind::Promotion, Decision::Deny));
    assert_eq!(
        &outcomes(&r)[2..],
        [("s1:promotion".into(), Promoted), ("s2:promotion".into(), Denied)]
    );
    let denied = r.records::<PromotionOutcome>(PROMOTIONS).pop().unwrap();
    assert_eq!(
        (denied.decision_id.as_deref(), denied.policy_version.as_deref()),
        (Some("d2"), Some("pv-7"))
    );
    assert_eq!(denied.reasons, ["toxicity_above_threshold"]);
    assert_eq!(denied.decided_at, T + 1000, "the decision's time, not a clock");
    // The denial spike is traceable to its policy version.
    assert_eq!(
        metric(
            &m,
            r#"eval_engine_promotion_policy_denials_total{processor="policy",subject_kind="promotion",policy_version="pv-7",reason="toxicity_above_threshold"}"#
        ),
        Some(1.0)
    );
    r.punctuate(0);
    assert_eq!(
        metric(
            &m,
            r#"eval_engine_policy_pending_requests{processor="policy",subject_kind="promotion"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, r#"eval_engine_policy_last_decision_timestamp_seconds{processor="policy"}"#),
        Some(((T + 1000) / 1000) as f64)
    );
    let ids: Vec<String> = events(&r).into_iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids,
        [
            "policy:pending_policy:s1:promotion:s1:promotion",
            "policy:pending_policy:s2:promotion:s2:promotion",
            "policy:promoted:s1:promotion:d1",
            "policy:denied:s2:promotion:d2"
        ]
    );
}

#[test]
fn a_decision_before_its_request_waits_in_state_not_in_a_retry_loop() {
    let mut r = runner();
    let early = r.send(decide("d1", "s1:promotion", SubjectKind::Promotion, Decision::Allow));
    assert!(early.outputs().is_some(), "{early:?}");
    assert_eq!(r.retrying(), 0);
    assert!(outcomes(&r).is_empty());
    assert_eq!(event_types(&r), ["policy.decision_deferred"]);
    r.send(low("s1:promotion"));
    assert_eq!(
        outcomes(&r),
        [("s1:promotion".into(), PendingPolicy), ("s1:promotion".into(), Promoted)]
    );
    assert!(
        r.get::<PolicyDecision>(0, "early/promotion/s1:promotion").unwrap().is_none(),
        "consumed"
    );
    // An early allocation decision likewise.
    r.send(decide("d2", "s2:allocation", SubjectKind::Allocation, Decision::Deny));
    r.send(allocation("s2:allocation", 100));
    let t = transitions(&r);
    assert_eq!(t[1].2, AllocationState::Denied);
    assert!(r.dead_letters().is_empty());
}

#[test]
fn duplicates_are_no_ops_and_conflicts_are_refused() {
    let mut r = runner();
    r.send(low("s1:promotion"));
    r.send(decide("d1", "s1:promotion", SubjectKind::Promotion, Decision::Allow));
    let before = r.outputs().len();
    // Same request, same decision again (an at-least-once upstream): nothing.
    assert_eq!(r.send(low("s1:promotion")).outputs(), Some(&[][..]));
    assert_eq!(
        r.send(decide("d1", "s1:promotion", SubjectKind::Promotion, Decision::Allow)).outputs(),
        Some(&[][..])
    );
    assert_eq!(r.outputs().len(), before);
    // Same decision id, other content.
    assert_eq!(
        dlq_code(&r.send(decide("d1", "s1:promotion", SubjectKind::Promotion, Decision::Deny))),
        "conflicting_duplicate"
    );
    // Another real decision for a decided request: the first stands.
    let o = r.send(decide("d9", "s1:promotion", SubjectKind::Promotion, Decision::Deny));
    assert_eq!(dlq_code(&o), "already_decided");
    assert!(o.dead_letter().unwrap().reason.contains("already decided by d1"));
    // Same request id, other content.
    assert_eq!(
        dlq_code(&r.send(promotion("s1:promotion", PromotionStage::Production, None))),
        "conflicting_request"
    );
    // Two early decisions for the same request: the second is refused at once.
    r.send(decide("e1", "s5:promotion", SubjectKind::Promotion, Decision::Allow));
    assert_eq!(
        dlq_code(&r.send(decide("e2", "s5:promotion", SubjectKind::Promotion, Decision::Deny))),
        "already_decided"
    );
    r.send(low("s5:promotion"));
    assert_eq!(outcomes(&r).last(), Some(&("s5:promotion".into(), Promoted)));
    assert_eq!(outcomes(&r).iter().filter(|o| o.0 == "s1:promotion").count(), 2);
}

#[test]
fn a_simulated_decision_changes_nothing_and_records_what_would_happen() {
    let (mut r, m) = runner_with(0);
    r.send(low("s1:promotion"));
    let mut sim = decision_of("sim-1", "s1:promotion", SubjectKind::Promotion, Decision::Deny);
    sim.simulate = true;
    let state_before = r.state_entries(0);
    r.send(testkit::record(DECISIONS, &sim).key("s1:promotion"));
    assert_eq!(outcomes(&r), [("s1:promotion".into(), PendingPolicy)], "no outcome");
    let e = events(&r).pop().unwrap();
    assert_eq!(
        (e.event_type.as_str(), e.event_id.as_str()),
        ("policy.simulated", "policy:simulated:s1:promotion:sim-1")
    );
    let p: Value = serde_json::from_str(&e.payload).unwrap();
    assert_eq!(
        (p["current_status"].as_str(), p["would_be"].as_str()),
        (Some("pending_policy"), Some("denied"))
    );
    // Only the decision's dedup entry was added; the request is untouched.
    let after = r.state_entries(0);
    assert_eq!(after.len(), state_before.len() + 1);
    assert!(after.iter().any(|(k, _)| k == b"dec/sim-1"));
    assert_eq!(
        r.get::<state::Request>(0, "req/promotion/s1:promotion").unwrap().unwrap().status,
        state::Status::PendingPolicy
    );
    // For an unknown request too; a simulated denial is not a denial.
    sim.decision_id = "sim-2".into();
    sim.request_id = "nope".into();
    r.send(testkit::record(DECISIONS, &sim).key("nope"));
    let p: Value = serde_json::from_str(&events(&r).pop().unwrap().payload).unwrap();
    assert_eq!(p["current_status"], "unknown");
    assert!(
        r.get::<PolicyDecision>(0, "early/promotion/nope").unwrap().is_none(),
        "a simulation never waits"
    );
    assert!(m
        .encode()
        .lines()
        .all(|l| !l.starts_with("eval_engine_promotion_policy_denials_total{")));
    assert_eq!(
        metric(
            &m,
            r#"eval_engine_policy_decisions_total{processor="policy",subject_kind="promotion",decision="deny",simulate="true"}"#
        ),
        Some(2.0)
    );
    // A real decision afterwards still decides.
    r.send(decide("d1", "s1:promotion", SubjectKind::Promotion, Decision::Allow));
    assert_eq!(outcomes(&r).last(), Some(&("s1:promotion".into(), Promoted)));
}

#[test]
fn invalid_and_mismatched_records_go_to_the_dlq_with_their_reason() {
    let mut r = runner();
    r.send(low("s1:promotion"));
    assert_eq!(
        dlq_code(&r.send(decide("d1", "s1:promotion", SubjectKind::Allocation, Decision::Allow))),
        "subject_kind_mismatch"
    );
    let mut bad = decision_of("d2", "s1:promotion", SubjectKind::Promotion, Decision::Allow);
    bad.policy_version = String::new();
    assert_eq!(
        dlq_code(&r.send(testkit::record(DECISIONS, &bad).key("s1:promotion"))),
        "invalid_field"
    );
    assert_eq!(dlq_code(&r.send(testkit::record(DECISIONS, &bad).key("other"))), "key_mismatch");
    assert_eq!(
        dlq_code(&r.send(promotion("s3:promotion", PromotionStage::Unknown, None))),
        "invalid_field"
    );
    assert_eq!(dlq_code(&r.send(allocation("s4:allocation", 0))), "invalid_field");
    assert_eq!(dlq_code(&r.send(low("s4:promotion").key("x"))), "key_mismatch");
    let garbage = r.send(TestRecord::raw(DECISIONS, vec![0xc3, 0x01, 1]).key("s1:promotion"));
    assert_eq!(garbage.dead_letter().unwrap().class.as_str(), "deserialization");
    // A promotion decision arriving on the wrong topic's schema is refused, not misread.
    let wrong = testkit::record(
        DECISIONS,
        &Switch {
            command_id: "c".into(),
            switch: SwitchKind::Degraded,
            on: true,
            reason: "r".into(),
            actor: "a".into(),
            issued_at: T,
        },
    );
    assert!(r
        .send(wrong)
        .dead_letter()
        .unwrap()
        .reason
        .contains("expected evalstream.policy.PolicyDecision"));
    assert_eq!(outcomes(&r), [("s1:promotion".into(), PendingPolicy)], "nothing decided");
}

#[test]
fn allocations_go_to_pending_finance_with_the_approved_amount_or_are_denied() {
    let (mut r, m) = runner_with(0);
    r.send(allocation("s1:allocation", 12_000));
    r.send(allocation("s2:allocation", 500));
    r.send(decide("d1", "s1:allocation", SubjectKind::Allocation, Decision::Allow));
    r.send(decide("d2", "s2:allocation", SubjectKind::Allocation, Decision::Deny));
    use AllocationState::*;
    assert_eq!(
        transitions(&r),
        [
            ("s1:allocation".into(), None, PendingPolicy, CauseKind::AllocationRequest),
            ("s2:allocation".into(), None, PendingPolicy, CauseKind::AllocationRequest),
            (
                "s1:allocation".into(),
                Some(PendingPolicy),
                PendingFinance,
                CauseKind::PolicyDecision
            ),
            ("s2:allocation".into(), Some(PendingPolicy), Denied, CauseKind::PolicyDecision),
        ]
    );
    let approved = &r.records::<AllocationStateChanged>(STATE)[2];
    assert_eq!(
        (approved.amount_minor, approved.currency.as_deref(), approved.cause_id.as_str()),
        (Some(12_000), Some("EUR"), "d1")
    );
    assert_eq!(r.records::<AllocationStateChanged>(STATE)[3].amount_minor, None);
    assert_eq!(
        metric(
            &m,
            r#"eval_engine_promotion_policy_denials_total{processor="policy",subject_kind="allocation",policy_version="pv-7",reason="toxicity_above_threshold"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        event_types(&r),
        ["alloc.pending_policy", "alloc.pending_policy", "alloc.pending_finance", "alloc.denied"]
    );
}

#[test]
fn degraded_mode_lets_low_risk_requests_through_as_best_effort_and_keeps_the_rest_closed() {
    let (mut r, m) = runner_with(5_000);
    r.send(low("a:promotion"));
    r.send(promotion("b:promotion", PromotionStage::Production, Some(RiskLevel::Low)));
    r.send(promotion("c:promotion", PromotionStage::Staging, Some(RiskLevel::High)));
    r.send(allocation("d:allocation", 4_000));
    r.send(allocation("e:allocation", 9_000));
    r.send(switch("cmd-on", SwitchKind::Degraded, true, 0));
    // Pending low-risk ones, when the switch turns on (time: the switch's).
    assert_eq!(outcomes(&r)[3..], [("a:promotion".into(), BestEffort)]);
    let be = r.records::<PromotionOutcome>(PROMOTIONS).pop().unwrap();
    assert_eq!(
        (be.decided_at, be.reasons[0].as_str(), be.decision_id),
        (T + 500, "best-effort: degraded mode cmd-on", None)
    );
    let t = transitions(&r);
    assert_eq!(
        t.last().unwrap(),
        &(
            "d:allocation".into(),
            Some(AllocationState::PendingPolicy),
            AllocationState::PendingFinance,
            CauseKind::Degraded
        )
    );
    assert_eq!(r.records::<AllocationStateChanged>(STATE).pop().unwrap().cause_id, "cmd-on");
    // New ones on arrival.
    r.send(low("f:promotion"));
    assert_eq!(
        outcomes(&r)[4..],
        [("f:promotion".into(), PendingPolicy), ("f:promotion".into(), BestEffort)]
    );
    r.punctuate(0);
    assert_eq!(metric(&m, r#"eval_engine_policy_degraded_mode{processor="policy"}"#), Some(1.0));
    assert_eq!(
        metric(
            &m,
            r#"eval_engine_policy_best_effort_total{processor="policy",subject_kind="promotion"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"eval_engine_policy_pending_requests{processor="policy",subject_kind="promotion"}"#
        ),
        Some(2.0)
    );
    let switch_event =
        events(&r).into_iter().find(|e| e.event_type == "ops.switch_applied").unwrap();
    assert_eq!(
        (switch_event.actor.as_str(), switch_event.event_id.as_str()),
        ("alice", "policy:switch_applied:cmd-on:p0")
    );

    // Later real decisions still count: confirm or revoke.
    r.send(decide("d-a", "a:promotion", SubjectKind::Promotion, Decision::Allow));
    r.send(decide("d-f", "f:promotion", SubjectKind::Promotion, Decision::Deny));
    assert_eq!(
        outcomes(&r)[6..],
        [("a:promotion".into(), Promoted), ("f:promotion".into(), Denied)]
    );
    r.send(decide("d-d", "d:allocation", SubjectKind::Allocation, Decision::Deny));
    let revoke = r.records::<AllocationCorrection>(CORRECTIONS);
    assert_eq!(revoke.len(), 1);
    assert_eq!(
        (
            revoke[0].expected_state,
            revoke[0].to_state,
            revoke[0].cause_kind,
            revoke[0].cause_ref.as_deref()
        ),
        (
            AllocationState::PendingFinance,
            AllocationState::Denied,
            CauseKind::PolicyDecision,
            Some("d-d")
        )
    );
    assert_eq!(
        r.outputs()
            .iter()
            .filter(|o| o.topic == CORRECTIONS)
            .map(|o| o.key_str().unwrap())
            .collect::<Vec<_>>(),
        ["d:allocation"]
    );
    assert_eq!(transitions(&r).len(), 3, "policy never writes pending_finance -> denied itself");
    // Switching off leaves best-effort requests as they are; new low-risk ones stay closed.
    r.send(switch("cmd-off", SwitchKind::Degraded, false, 0));
    r.send(low("g:promotion"));
    assert_eq!(outcomes(&r).last(), Some(&("g:promotion".into(), PendingPolicy)));
    // A duplicate switch copy is a no-op.
    let n = r.outputs().len();
    r.send(switch("cmd-on", SwitchKind::Degraded, true, 0));
    assert_eq!(r.outputs().len(), n);
}

#[test]
fn frozen_allocations_hold_decisions_and_release_them_in_order() {
    let mut r = runner();
    r.send(allocation("a:allocation", 100_000));
    r.send(allocation("b:allocation", 100_000));
    r.send(switch("freeze", SwitchKind::FreezeAllocations, true, 0));
    r.send(decide("d-b", "b:allocation", SubjectKind::Allocation, Decision::Allow));
    r.send(decide("d-a", "a:allocation", SubjectKind::Allocation, Decision::Deny));
    // An early decision for a request that arrives during the freeze is held too.
    r.send(decide("d-c", "c:allocation", SubjectKind::Allocation, Decision::Allow));
    r.send(allocation("c:allocation", 100_000));
    // Promotions are not affected; new requests are still registered.
    r.send(low("p:promotion"));
    r.send(decide("d-p", "p:promotion", SubjectKind::Promotion, Decision::Allow));
    assert_eq!(outcomes(&r).last(), Some(&("p:promotion".into(), Promoted)));
    assert!(
        transitions(&r).iter().all(|t| t.2 == AllocationState::PendingPolicy),
        "nothing left pending_policy"
    );
    // A second decision for a held one is refused, as for a decided one.
    assert_eq!(
        dlq_code(&r.send(decide("d-b2", "b:allocation", SubjectKind::Allocation, Decision::Deny))),
        "already_decided"
    );
    let held_events = event_types(&r).iter().filter(|t| *t == "policy.decision_deferred").count();
    assert_eq!(held_events, 4, "3 held + 1 early");

    r.send(switch("unfreeze", SwitchKind::FreezeAllocations, false, 0));
    let released: Vec<(String, AllocationState)> =
        transitions(&r)[3..].iter().map(|t| (t.0.clone(), t.2)).collect();
    assert_eq!(
        released,
        [
            ("b:allocation".into(), AllocationState::PendingFinance),
            ("a:allocation".into(), AllocationState::Denied),
            ("c:allocation".into(), AllocationState::PendingFinance),
        ],
        "arrival order"
    );
    assert!(r.state_entries(0).iter().all(|(k, _)| !k.starts_with(b"held/")));
}

#[test]
fn degraded_mode_waits_for_a_freeze_to_end_before_letting_allocations_through() {
    let mut r = runner();
    r.send(switch("freeze", SwitchKind::FreezeAllocations, true, 0));
    r.send(switch("on", SwitchKind::Degraded, true, 0));
    r.send(allocation("a:allocation", 100));
    assert_eq!(transitions(&r).len(), 1);
    r.send(switch("unfreeze", SwitchKind::FreezeAllocations, false, 0));
    assert_eq!(transitions(&r)[1].3, CauseKind::Degraded);
}

#[test]
fn switches_apply_per_partition_and_replays_reproduce_every_output() {
    let mut r = runner();
    r.send(low("a:promotion").partition(1));
    r.send(switch("on", SwitchKind::Degraded, true, 0));
    assert_eq!(outcomes(&r).len(), 1, "partition 0's copy does not touch partition 1");
    r.commit();
    let first = r.send(switch("on", SwitchKind::Degraded, true, 1));
    assert_eq!(outcomes(&r).last(), Some(&("a:promotion".into(), BestEffort)));
    r.abort();
    assert_eq!(r.send(switch("on", SwitchKind::Degraded, true, 1)), first);
    r.commit();
    r.restart(Policy::new(Settings { degraded_max_amount_minor: 5_000 }, &Metrics::new(NAME)));
    assert_eq!(
        r.send(switch("on", SwitchKind::Degraded, true, 1)).outputs(),
        Some(&[][..]),
        "applied once"
    );
    r.send(low("b:promotion").partition(1));
    assert_eq!(
        outcomes(&r).last(),
        Some(&("b:promotion".into(), BestEffort)),
        "state survived the restart"
    );
}

#[test]
fn registration_matches_the_topology() {
    REGISTRATION.check_topology(&Topology::bundled().unwrap()).unwrap();
}

#[test]
fn the_feed_view_counts_pending_requests_and_the_newest_real_decision() {
    let mut r = runner();
    r.send(low("s1:promotion"));
    r.send(allocation("s2:allocation", 100));
    r.punctuate(0);
    let view = r.processor().metrics.feed_view();
    assert_eq!((view.waiting, view.oldest_ms, view.last_seen_ms), (2, Some(T), 0));
    // A simulation is no sign of a live feed; a real decision is.
    let mut sim = decision_of("d0", "s1:promotion", SubjectKind::Promotion, Decision::Deny);
    sim.simulate = true;
    r.send(testkit::record(DECISIONS, &sim).key("s1:promotion"));
    assert_eq!(r.processor().metrics.feed_view().last_seen_ms, 0);
    r.send(decide("d1", "s1:promotion", SubjectKind::Promotion, Decision::Allow));
    r.punctuate(0);
    let view = r.processor().metrics.feed_view();
    assert_eq!((view.waiting, view.last_seen_ms), (1, T + 1000));
    let stale = evalstream_runtime::readiness::FeedStaleness {
        stale_after: std::time::Duration::from_secs(300),
    };
    assert!(stale.judge(T + 600_000, T, &view).is_err(), "10 min waiting, 10 min silent");
    assert!(stale.judge(T + 200_000, T, &view).is_ok());
}
