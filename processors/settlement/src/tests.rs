//! The settlement state machine through the in-memory runner: in order, late, duplicate,
//! conflicting, badly signed, mismatching, denied, double-paid, frozen, corrected, and replays.

use evalstream_audit::signer::{LocalKeySigner, SignerKind};
use evalstream_audit::trust::{SignerEntry, SignerRegistry};
use evalstream_domain::proof::{sign_settlement, LedgerProof};
use evalstream_domain::records::{
    AllocationCorrection, AllocationState, AllocationStateChanged, AuditEvent, CauseKind,
    FinanceSettlement, Switch, SwitchKind,
};
use evalstream_domain::reject::code_of;
use evalstream_runtime::metrics::Metrics;
use evalstream_runtime::testkit::{self, Outcome, Runner, TestRecord};
use evalstream_runtime::topology::Topology;

use super::*;
use AllocationState::{Denied, PendingFinance, PendingPolicy, Settled, SettlementFailed};

const T: i64 = 1_763_458_200_000;

struct Keys {
    finance: LocalKeySigner,
    audit: LocalKeySigner,
    registry: SignerRegistry,
}

fn keys() -> Keys {
    let (finance, audit) = (LocalKeySigner::random().unwrap(), LocalKeySigner::random().unwrap());
    let mut registry = SignerRegistry::new();
    registry
        .add(
            SignerEntry::new("fin-1", SignerKind::Finance, finance.public_key_spki_der(), T - 1000)
                .unwrap(),
        )
        .unwrap();
    registry
        .add(
            SignerEntry::new("audit-1", SignerKind::Local, audit.public_key_spki_der(), T - 1000)
                .unwrap(),
        )
        .unwrap();
    Keys { finance, audit, registry }
}

fn runner(k: &Keys) -> (Runner<Settlement>, std::sync::Arc<Metrics>) {
    let metrics = Metrics::new(NAME);
    let p = Settlement::new(Signers::new(k.registry.clone(), None), 3, &metrics);
    (Runner::new(p).with_max_attempts(3), metrics)
}

fn policy(
    id: &str,
    from: Option<AllocationState>,
    to: AllocationState,
    cause: &str,
    amount: Option<i64>,
) -> TestRecord {
    let t = AllocationStateChanged {
        allocation_id: id.into(),
        from_state: from,
        to_state: to,
        reason: None,
        ledger_entry_id: None,
        cause_kind: if from.is_none() {
            CauseKind::AllocationRequest
        } else {
            CauseKind::PolicyDecision
        },
        cause_id: cause.into(),
        amount_minor: amount,
        currency: amount.map(|_| "EUR".into()),
        changed_at: T,
    };
    testkit::record(STATE, &t).key(id)
}

/// `id` registered and approved for `amount` EUR, as the policy gate writes it.
fn approved(r: &mut Runner<Settlement>, id: &str, amount: i64) {
    r.send(policy(id, None, PendingPolicy, id, None));
    r.send(policy(id, Some(PendingPolicy), PendingFinance, &format!("d-{id}"), Some(amount)));
}

fn signed(k: &Keys, ledger: &str, alloc: &str, amount: i64, currency: &str) -> FinanceSettlement {
    sign_settlement(
        &k.finance,
        "fin-1",
        &LedgerProof::new(ledger, alloc, amount, currency, T + 60_000),
    )
    .unwrap()
}

fn settle(s: &FinanceSettlement) -> TestRecord {
    testkit::record(SETTLEMENTS, s).key(&s.allocation_id)
}

fn state_of(r: &Runner<Settlement>, id: &str) -> state::Allocation {
    r.get(0, state::alloc_key(id)).unwrap().unwrap_or_else(|| panic!("{id} unknown"))
}

fn written(
    r: &Runner<Settlement>,
) -> Vec<(String, Option<AllocationState>, AllocationState, CauseKind)> {
    r.outputs()
        .iter()
        .filter(|o| o.topic == STATE)
        .map(|o| o.decode::<AllocationStateChanged>().unwrap())
        .map(|t| (t.allocation_id, t.from_state, t.to_state, t.cause_kind))
        .collect()
}

fn dlq_code(o: &Outcome) -> String {
    let d = o.dead_letter().unwrap_or_else(|| panic!("not dead-lettered: {o:?}"));
    code_of(&d.reason).unwrap_or(d.class.as_str()).to_string()
}

fn metric(m: &Metrics, series: &str) -> f64 {
    m.encode()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn failures(m: &Metrics, reason: &str) -> f64 {
    metric(
        m,
        &format!(
            r#"allocator_settlement_failures_total{{processor="settlement",reason="{reason}"}}"#
        ),
    )
}

fn outcome(m: &Metrics, o: &str) -> f64 {
    metric(m, &format!(r#"allocator_settlements_total{{processor="settlement",outcome="{o}"}}"#))
}

#[test]
fn a_verified_matching_settlement_settles_and_its_echo_is_a_no_op() {
    let k = keys();
    let (mut r, m) = runner(&k);
    approved(&mut r, "a1", 12_000);
    assert!(r.outputs().is_empty(), "mirroring the gate's transitions emits nothing");
    assert_eq!(state_of(&r, "a1").amount_minor, Some(12_000));
    let out = r.send(settle(&signed(&k, "le-1", "a1", 12_000, "EUR")));
    assert_eq!(out.outputs().unwrap().len(), 2);
    assert_eq!(
        written(&r),
        [("a1".into(), Some(PendingFinance), Settled, CauseKind::FinanceSettlement)]
    );
    let t = r.records::<AllocationStateChanged>(STATE).pop().unwrap();
    assert_eq!(
        (t.ledger_entry_id.as_deref(), t.cause_id.as_str(), t.changed_at),
        (Some("le-1"), "le-1", T + 60_000)
    );
    let e = r.records::<AuditEvent>("audit.events").pop().unwrap();
    assert_eq!(
        (e.event_id.as_str(), e.event_type.as_str(), e.actor.as_str()),
        ("settlement:settled:a1:le-1", "alloc.settled", "finance")
    );
    // Its own transition comes back on alloc.state: recognised, nothing happens.
    let echo = testkit::record(STATE, &t).key("a1");
    assert_eq!(r.send(echo).outputs(), Some(&[][..]));
    let a = state_of(&r, "a1");
    assert_eq!((a.state, a.ledger_entry_id.as_deref()), (Settled, Some("le-1")));
    assert_eq!(outcome(&m, "settled"), 1.0);
    r.punctuate(0);
    assert_eq!(metric(&m, r#"allocator_allocations{processor="settlement",state="settled"}"#), 1.0);
    assert_eq!(
        metric(&m, r#"allocator_allocations{processor="settlement",state="pending_finance"}"#),
        0.0
    );
}

#[test]
fn a_settlement_before_its_allocation_retries_then_settles_or_is_dead_lettered() {
    let k = keys();
    let (mut r, m) = runner(&k);
    let early = signed(&k, "le-1", "a1", 500, "EUR");
    assert!(matches!(r.send(settle(&early)), Outcome::Retrying { attempt: 2, .. }));
    r.send(policy("a1", None, PendingPolicy, "a1", None));
    assert!(
        matches!(r.redeliver_retries()[0], Outcome::Retrying { attempt: 3, .. }),
        "pending_policy is not enough"
    );
    r.send(policy("a1", Some(PendingPolicy), PendingFinance, "d1", Some(500)));
    assert!(r.redeliver_retries()[0].outputs().is_some());
    assert_eq!(state_of(&r, "a1").state, Settled);

    // One whose allocation never comes: DLQ retries_exhausted after the last attempt.
    let lost = signed(&k, "le-2", "a2", 500, "EUR");
    r.send(settle(&lost));
    r.redeliver_retries();
    let last = r.redeliver_retries();
    assert_eq!(last[0].dead_letter().unwrap().class.as_str(), "retries_exhausted");
    assert_eq!(failures(&m, "retries_exhausted"), 1.0);
}

#[test]
fn bad_proofs_go_to_the_dlq_at_once_with_their_reason() {
    let k = keys();
    let (mut r, m) = runner(&k);
    approved(&mut r, "a1", 100);
    let good = signed(&k, "le-1", "a1", 100, "EUR");
    let mut unknown = good.clone();
    unknown.kid = "fin-9".into();
    assert_eq!(dlq_code(&r.send(settle(&unknown))), "bad_proof");
    let mut tampered = good.clone();
    tampered.signature[10] ^= 1;
    assert_eq!(dlq_code(&r.send(settle(&tampered))), "bad_proof");
    let by_audit_key =
        sign_settlement(&k.audit, "audit-1", &LedgerProof::new("le-2", "a1", 100, "EUR", T))
            .unwrap();
    let o = r.send(settle(&by_audit_key));
    assert_eq!(dlq_code(&o), "bad_proof");
    assert!(o.dead_letter().unwrap().reason.contains("does not verify finance ledger proofs"));
    let mut lying = good.clone();
    lying.amount_minor = 99;
    assert_eq!(dlq_code(&r.send(settle(&lying))), "proof_mismatch");
    let mut garbage = good.clone();
    garbage.proof = b"{}".to_vec();
    assert_eq!(dlq_code(&r.send(settle(&garbage))), "malformed");
    // A bad proof for an allocation that does not exist yet is not retried.
    let mut early_bad = signed(&k, "le-3", "zz", 100, "EUR");
    early_bad.kid = "nobody".into();
    assert_eq!(dlq_code(&r.send(settle(&early_bad))), "bad_proof");
    assert_eq!(r.retrying(), 0);
    assert_eq!((failures(&m, "unknown_signer"), failures(&m, "signature_invalid")), (2.0, 2.0));
    assert_eq!((failures(&m, "proof_mismatch"), failures(&m, "malformed")), (1.0, 1.0));
    assert_eq!(state_of(&r, "a1").state, PendingFinance, "nothing settled");
    // The good one still settles.
    r.send(settle(&good));
    assert_eq!(state_of(&r, "a1").state, Settled);
}

#[test]
fn a_mismatch_fails_the_settlement_and_a_matching_entry_later_settles_it() {
    let k = keys();
    let (mut r, m) = runner(&k);
    approved(&mut r, "a1", 100);
    r.send(settle(&signed(&k, "le-1", "a1", 90, "EUR")));
    let a = state_of(&r, "a1");
    assert_eq!(a.state, SettlementFailed);
    assert!(
        a.reason.as_deref().unwrap().starts_with("amount_mismatch: settled 90 EUR, approved 100"),
        "{:?}",
        a.reason
    );
    r.send(settle(&signed(&k, "le-2", "a1", 100, "USD")));
    assert_eq!(
        state_of(&r, "a1").state,
        SettlementFailed,
        "a repeat mismatch is recorded, no transition"
    );
    assert_eq!(
        r.records::<AuditEvent>("audit.events").pop().unwrap().event_type,
        "alloc.settlement_rejected"
    );
    r.send(settle(&signed(&k, "le-3", "a1", 100, "EUR")));
    assert_eq!(
        written(&r),
        [
            ("a1".into(), Some(PendingFinance), SettlementFailed, CauseKind::FinanceSettlement),
            ("a1".into(), Some(SettlementFailed), Settled, CauseKind::FinanceSettlement),
        ]
    );
    assert_eq!((failures(&m, "amount_mismatch"), failures(&m, "currency_mismatch")), (1.0, 1.0));
    assert!(r.dead_letters().is_empty());
}

#[test]
fn duplicates_double_payments_and_denied_allocations() {
    let k = keys();
    let (mut r, m) = runner(&k);
    approved(&mut r, "a1", 100);
    let s = signed(&k, "le-1", "a1", 100, "EUR");
    r.send(settle(&s));
    assert_eq!(r.send(settle(&s)).outputs(), Some(&[][..]), "same ledger entry again: no-op");
    assert_eq!(outcome(&m, "duplicate"), 1.0);
    let mut other_content = signed(&k, "le-1", "a1", 100, "EUR");
    other_content.settled_at += 1;
    other_content = sign_settlement(
        &k.finance,
        "fin-1",
        &LedgerProof::new("le-1", "a1", 100, "EUR", other_content.settled_at),
    )
    .unwrap();
    assert_eq!(dlq_code(&r.send(settle(&other_content))), "conflicting_duplicate");
    assert_eq!(dlq_code(&r.send(settle(&signed(&k, "le-2", "a1", 100, "EUR")))), "already_settled");
    assert_eq!(failures(&m, "already_settled"), 1.0);

    r.send(policy("a2", None, PendingPolicy, "a2", None));
    r.send(policy("a2", Some(PendingPolicy), Denied, "d2", None));
    assert_eq!(
        dlq_code(&r.send(settle(&signed(&k, "le-3", "a2", 100, "EUR")))),
        "allocation_denied"
    );
    assert_eq!(failures(&m, "allocation_denied"), 1.0);
    assert_eq!(dlq_code(&r.send(settle(&s).key("wrong"))), "key_mismatch");
}

#[test]
fn frozen_settlements_are_held_and_released_in_order_and_corrections_still_apply() {
    let k = keys();
    let (mut r, m) = runner(&k);
    for id in ["a1", "a2", "a3"] {
        approved(&mut r, id, 100);
    }
    let sw = |id: &str, on: bool| {
        let s = Switch {
            command_id: id.into(),
            switch: SwitchKind::FreezeAllocations,
            on,
            reason: "INC-9".into(),
            actor: "bob".into(),
            issued_at: T + 10,
        };
        testkit::record(SWITCHES, &s).key(id)
    };
    r.send(sw("freeze", true));
    r.send(settle(&signed(&k, "le-2", "a2", 100, "EUR")));
    r.send(settle(&signed(&k, "le-1", "a1", 100, "EUR")));
    r.send(settle(&signed(&k, "le-3", "a3", 100, "EUR")));
    assert!(written(&r).is_empty(), "nothing applied while frozen");
    assert_eq!(outcome(&m, "held"), 3.0);
    r.punctuate(0);
    assert_eq!(metric(&m, r#"allocator_allocations_frozen{processor="settlement"}"#), 1.0);
    // A second payment for a held allocation is refused at once.
    assert_eq!(dlq_code(&r.send(settle(&signed(&k, "le-9", "a1", 100, "EUR")))), "already_settled");
    // A correction applies while frozen (that is what freezing is for).
    let c = AllocationCorrection {
        correction_id: "rec-1/a3".into(),
        allocation_id: "a3".into(),
        expected_state: PendingFinance,
        to_state: SettlementFailed,
        cause_kind: CauseKind::Reconciliation,
        cause_ref: Some("rec-1".into()),
        ledger_entry_id: None,
        reason: "not in the Finance ledger export".into(),
        actor: "carol".into(),
        issued_at: T + 20,
    };
    r.send(testkit::record(CORRECTIONS, &c).key("a3"));
    assert_eq!(
        written(&r),
        [("a3".into(), Some(PendingFinance), SettlementFailed, CauseKind::Reconciliation)]
    );
    r.send(sw("unfreeze", false));
    let released: Vec<_> = written(&r)[1..].iter().map(|t| (t.0.clone(), t.2)).collect();
    assert_eq!(released, [("a2".into(), Settled), ("a1".into(), Settled)], "arrival order");
    // a3 was corrected during the freeze: the correction wins over its held settlement.
    assert_eq!(state_of(&r, "a3").state, SettlementFailed);
    r.punctuate(0);
    assert_eq!(metric(&m, r#"allocator_allocations_frozen{processor="settlement"}"#), 0.0);
    let types: Vec<String> =
        r.records::<AuditEvent>("audit.events").into_iter().map(|e| e.event_type).collect();
    assert_eq!(types.iter().filter(|t| *t == "ops.switch_applied").count(), 2);
    assert_eq!(types.iter().filter(|t| *t == "alloc.reconciled").count(), 1);
    assert_eq!(types.iter().filter(|t| *t == "alloc.held_settlement_rejected").count(), 1);
}

#[test]
fn corrections_apply_once_wait_for_their_state_or_are_recorded_stale() {
    let k = keys();
    let (mut r, _) = runner(&k);
    let correction = |id: &str, alloc: &str, from, to, ledger: Option<&str>| {
        let c = AllocationCorrection {
            correction_id: id.into(),
            allocation_id: alloc.into(),
            expected_state: from,
            to_state: to,
            cause_kind: CauseKind::Reconciliation,
            cause_ref: Some("run-1".into()),
            ledger_entry_id: ledger.map(Into::into),
            reason: "reconciliation".into(),
            actor: "carol".into(),
            issued_at: T + 99,
        };
        testkit::record(CORRECTIONS, &c).key(alloc)
    };
    // Before its allocation reached the expected state: retried.
    assert!(matches!(
        r.send(correction("c1", "a1", PendingFinance, Denied, None)),
        Outcome::Retrying { .. }
    ));
    approved(&mut r, "a1", 100);
    assert!(r.redeliver_retries()[0].outputs().is_some());
    assert_eq!(state_of(&r, "a1").state, Denied);
    // Again (requeued): no-op.
    assert_eq!(
        r.send(correction("c1", "a1", PendingFinance, Denied, None)).outputs(),
        Some(&[][..])
    );
    // Stale: the allocation is elsewhere already.
    let stale = r.send(correction("c2", "a1", PendingFinance, Settled, Some("le-1")));
    let e = stale.outputs().unwrap()[0].decode::<AuditEvent>().unwrap();
    assert_eq!(e.event_type, "alloc.correction_stale");
    assert_eq!(state_of(&r, "a1").state, Denied);
    // Not allowed at all.
    assert_eq!(
        dlq_code(&r.send(correction("c3", "a1", Denied, Settled, Some("x")))),
        "invalid_correction"
    );
    assert_eq!(
        dlq_code(&r.send(correction("c4", "a1", PendingFinance, Settled, None))),
        "invalid_correction"
    );
    // settled -> settlement_failed (an erroneous proof accepted earlier), then back by a correction to settled.
    approved(&mut r, "a2", 100);
    r.send(settle(&signed(&k, "le-2", "a2", 100, "EUR")));
    r.send(correction("c5", "a2", Settled, SettlementFailed, None));
    r.send(correction("c6", "a2", SettlementFailed, Settled, Some("le-7")));
    let a2 = state_of(&r, "a2");
    assert_eq!((a2.state, a2.ledger_entry_id.as_deref()), (Settled, Some("le-7")));
}

#[test]
fn transitions_that_contradict_the_known_state_are_refused() {
    let k = keys();
    let (mut r, _) = runner(&k);
    approved(&mut r, "a1", 100);
    r.send(settle(&signed(&k, "le-1", "a1", 100, "EUR")));
    // A late or foreign "pending_finance" for a settled allocation.
    assert_eq!(
        dlq_code(&r.send(policy("a1", Some(PendingPolicy), PendingFinance, "d-other", Some(100)))),
        "inconsistent_transition"
    );
    // The same policy transition again (an at-least-once writer): recognised, no-op.
    assert_eq!(
        r.send(policy("a1", Some(PendingPolicy), PendingFinance, "d-a1", Some(100))).outputs(),
        Some(&[][..])
    );
    assert_eq!(state_of(&r, "a1").state, Settled);
}

#[test]
fn a_replay_after_an_abort_or_restart_reproduces_the_same_outputs() {
    let k = keys();
    let (mut r, _) = runner(&k);
    approved(&mut r, "a1", 100);
    r.commit();
    let s = signed(&k, "le-1", "a1", 100, "EUR");
    let first = r.send(settle(&s));
    r.abort();
    assert_eq!(r.send(settle(&s)), first);
    r.commit();
    r.restart(Settlement::new(Signers::new(k.registry.clone(), None), 3, &Metrics::new(NAME)));
    assert_eq!(r.send(settle(&s)).outputs(), Some(&[][..]));
}

#[test]
fn registration_matches_the_topology() {
    REGISTRATION.check_topology(&Topology::bundled().unwrap()).unwrap();
}

#[test]
fn the_finance_feed_view_counts_pending_finance_and_the_newest_settlement() {
    let k = keys();
    let (mut r, _) = runner(&k);
    approved(&mut r, "al-1", 500);
    approved(&mut r, "al-2", 700);
    r.punctuate(0);
    let view = r.processor().metrics.feed_view();
    assert_eq!((view.waiting, view.oldest_ms, view.last_seen_ms), (2, Some(T), 0));
    r.send(settle(&signed(&k, "led-1", "al-1", 500, "EUR")));
    r.punctuate(0);
    let view = r.processor().metrics.feed_view();
    assert_eq!((view.waiting, view.last_seen_ms), (1, T + 60_000));
    // The judgement: waiting since T, nothing from Finance since T + 60 s, limit 30 min.
    let stale = evalstream_runtime::readiness::FeedStaleness {
        stale_after: std::time::Duration::from_secs(1800),
    };
    assert!(stale.judge(T + 3_600_000, T, &view).is_err());
    assert!(stale.judge(T + 600_000, T, &view).is_ok());
}
