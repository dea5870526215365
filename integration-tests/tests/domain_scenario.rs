//! The end-to-end domain scenario on a real broker: thousands of submissions, requests,
//! decisions and settlements — late, duplicate, conflicting, simulated, invalid and badly signed
//! ones among them — through `submissions`, `policy`, `settlement` and `audit-chain`, with every
//! domain processor SIGKILLed at least twice while it has work, a degraded-mode switch, a freeze
//! with a reconciliation inside it, and a DLQ requeue.
//!
//! The verdict rests on two independent things only:
//! - an independent `read_committed` reader (`common::domain`) that decodes outputs to JSON;
//! - [`Model`]: a small model of the documented rules (docs/domain.md), written here, fed with
//!   the same inputs in a canonical order per phase. The phases are built so that the result
//!   does not depend on how the broker interleaves topics (see "Why the outcome is determined"
//!   below), so the model needs no knowledge of timing.
//!
//! Checked: every promotion's outcome sequence, every allocation's transition sequence and
//! settling ledger entry, each accepted submission and derived request exactly once, every DLQ
//! entry with its expected reason (and nothing else in any DLQ), the audit events of every
//! modelled transition, each `audit.events` id exactly once in the audit chain, `evalstream
//! audit verify`, `evalstream alloc list` against the model, and the kill count.
//!
//! Why the outcome is determined although the broker interleaves topics freely:
//! - within a topic, records of one key keep their order (one producer, one partition);
//! - a decision before its request waits in state; a settlement before its allocation retries;
//!   so within a phase "requests, then decisions, then settlements" is equivalent to any order;
//! - whatever must follow something on another topic (settlements of approved allocations,
//!   kind-mismatched decisions, switches) is produced in a later phase, after the processors
//!   have caught up (`World::wait_quiescent`, a condition on committed offsets, not a sleep);
//! - the only timing-dependent outcome is a *late* settlement (produced just before its
//!   approval, phase A2) running out of retries on a slow machine: it may then be in the DLQ as
//!   `retries_exhausted` (an optional DLQ entry), and the requeue that follows settles it, so its
//!   final state is the same either way;
//! - the kills happen in phase A, which has no settlements, so no record waits on a retry topic
//!   across the rebalances the kills cause (see [`phase_a`]).
#![cfg(feature = "broker")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::domain::{by_key, reason_code, Proof, World, AUDIT_KID, FINANCE_KID};
use common::eos::Instance;
use evalstream_integration_tests as it;
use rand::Rng;
use serde_json::{json, Value};

/// Submissions of phase A (each with a promotion ask, every other one with an allocation ask).
const N: usize = match option_env!("DOMAIN_SCENARIO_N") {
    Some(_) => 400,
    None => 2000,
};
/// Submissions of phase B (during degraded mode).
const NB: usize = 200;
const T0: i64 = 1_763_458_200_000;
/// `[processor] degraded_max_amount_minor` of the policy processor.
const LIMIT: i64 = 2000;
const DOMAIN: [&str; 3] = ["submissions", "policy", "settlement"];
const ALL: [&str; 4] = ["submissions", "policy", "settlement", "audit-chain"];

const SUB: &str = "evalstream.eval.EvalSubmission";
const DEC: &str = "evalstream.policy.PolicyDecision";
const SET: &str = "evalstream.finance.FinanceSettlement";

// ─── Inputs ─────────────────────────────────────────────────────────────────────────────────────

/// How a settlement is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signing {
    /// With the registered finance key.
    Good,
    /// With a key no registry knows.
    Rogue,
    /// With the audit key (registered, but not for finance).
    AuditKey,
    /// Correctly signed, but the record claims another amount than the proof.
    RecordLies,
}

#[derive(Debug, Clone)]
enum In {
    Sub { key: String, value: Value },
    Dec { value: Value },
    Set { proof: Proof, signing: Signing },
}

impl In {
    fn topic(&self) -> &'static str {
        match self {
            In::Sub { .. } => "eval.submissions",
            In::Dec { .. } => "policy.decisions",
            In::Set { .. } => "finance.settlements",
        }
    }
}

fn submission(id: &str, stage: &str, risk: Option<&str>, alloc: Option<(i64, &str)>) -> Value {
    let mut v = json!({
        "submission_id": id, "model_id": format!("model-{id}"), "model_version": "v1",
        "eval_suite": "safety", "submitter": "ci-bot", "metrics": {"accuracy": 0.9, "toxicity": 0.01},
        "artifact_uri": format!("s3://evals/{id}"), "submitted_at": T0,
        "promotion": {"target_stage": stage},
    });
    if let Some(r) = risk {
        v["promotion"]["risk_level_hint"] = json!(r);
    }
    if let Some((amount, currency)) = alloc {
        v["allocation"] = json!({"resource": {"gpu_type": "h100", "gpu_count": 2, "hours": 1.5},
            "amount_minor": amount, "currency": currency, "cost_center": "cc-evals"});
    }
    v
}

fn decision(id: &str, request: &str, kind: &str, verdict: &str, at: i64) -> In {
    In::Dec {
        value: json!({
            "decision_id": id, "request_id": request, "subject_kind": kind, "decision": verdict,
            "reasons": if verdict == "deny" { vec!["toxicity_above_threshold"] } else { vec![] },
            "policy_version": "pv-2025.11", "risk_level": "medium", "decided_at": at,
        }),
    }
}

fn settle(ledger: &str, alloc: &str, amount: i64, currency: &str, signing: Signing) -> In {
    In::Set {
        proof: Proof {
            ledger_entry_id: ledger.into(),
            allocation_id: alloc.into(),
            amount_minor: amount,
            currency: currency.into(),
            settled_at: T0 + 600_000,
        },
        signing,
    }
}

fn pid(i: usize) -> String {
    format!("a{i:05}:promotion")
}
fn aid(i: usize) -> String {
    format!("a{i:05}:allocation")
}
/// Promotion category of submission `i`.
fn q(i: usize) -> usize {
    i % 20
}
/// Allocation category of submission `i` (even `i` only), and its index among those.
fn c(i: usize) -> usize {
    (i / 2) % 20
}
fn k(i: usize) -> usize {
    (i / 2) / 20
}
fn amount(i: usize) -> i64 {
    if c(i) == 1 {
        1500
    } else {
        3000 + ((i / 2) % 7) as i64 * 250
    }
}
fn currency(i: usize) -> &'static str {
    if c(i) == 19 {
        "USD"
    } else {
        "EUR"
    }
}

/// Phase A, in batches of 50 submissions: per batch the early decisions, the submissions (with
/// duplicates, conflicts and invalid ones), then the decisions. No settlement: the processors
/// are killed during this phase, and retries are kept to the phases without kills so that a
/// late settlement's outcome does not depend on how long the rebalances take. (This scenario
/// found an engine defect: a retry partition paused until a due time stayed paused for good after
/// a rebalance. Fixed; `retry::a_retry_pending_across_a_rebalance_is_still_retried` covers it.)
fn phase_a() -> Vec<Vec<In>> {
    let mut batches = Vec::new();
    for start in (0..N).step_by(50) {
        let (mut early, mut subs, mut decs) = (vec![], vec![], vec![]);
        for i in start..(start + 50).min(N) {
            let id = format!("a{i:05}");
            let (stage, risk) = match q(i) {
                0 | 1 => ("canary", Some("low")),
                2 => ("production", Some("low")),
                3 => ("staging", Some("high")),
                _ => (["staging", "canary", "production"][i % 3], Some("medium")),
            };
            let alloc = (i % 2 == 0).then(|| (amount(i), currency(i)));
            let v = submission(&id, stage, risk, alloc);
            subs.push(In::Sub { key: id.clone(), value: v.clone() });
            if i % 20 == 7 {
                subs.push(In::Sub { key: id.clone(), value: v.clone() }); // duplicate
            }
            if i % 50 == 11 {
                let mut changed = v.clone();
                changed["metrics"]["accuracy"] = json!(0.99);
                subs.push(In::Sub { key: id.clone(), value: changed }); // conflicting resubmission
            }
            // Promotion decisions.
            let t = T0 + 60_000;
            match q(i) {
                0..=3 => {}
                4 => early.push(decision(&format!("dp-{i}"), &pid(i), "promotion", "allow", t)),
                5 => early.push(decision(&format!("dp-{i}"), &pid(i), "promotion", "deny", t)),
                6 => {
                    decs.push(decision(&format!("dp-{i}"), &pid(i), "promotion", "allow", t));
                    decs.push(decision(&format!("dp-{i}"), &pid(i), "promotion", "allow", t));
                }
                7 | 17..=19 => {
                    decs.push(decision(&format!("dp-{i}"), &pid(i), "promotion", "deny", t))
                }
                8 => {
                    decs.push(decision(&format!("dp-{i}"), &pid(i), "promotion", "allow", t));
                    decs.push(decision(&format!("dp2-{i}"), &pid(i), "promotion", "deny", t + 1));
                }
                9 => {
                    decs.push(decision(&format!("dp-{i}"), &pid(i), "promotion", "allow", t));
                    let mut sim = decision(&format!("ds-{i}"), &pid(i), "promotion", "deny", t + 2);
                    if let In::Dec { value } = &mut sim {
                        value["simulate"] = json!(true);
                    }
                    decs.push(sim);
                }
                10 => {
                    let mut bad = decision(&format!("dbad-{i}"), &pid(i), "promotion", "allow", t);
                    if let In::Dec { value } = &mut bad {
                        value["policy_version"] = json!("");
                    }
                    decs.push(bad);
                    decs.push(decision(&format!("dp-{i}"), &pid(i), "promotion", "allow", t));
                }
                12 => {
                    decs.push(decision(&format!("dp-{i}"), &pid(i), "promotion", "allow", t));
                    decs.push(decision(&format!("dp-{i}"), &pid(i), "promotion", "deny", t));
                    // same id, other content
                }
                _ => decs.push(decision(&format!("dp-{i}"), &pid(i), "promotion", "allow", t)),
            }
            if i % 2 == 1 {
                continue;
            }
            // Allocation decisions (c 0..=2 stay pending for later phases).
            let da = format!("da-{i}");
            match c(i) {
                0..=2 => {}
                3 | 4 => decs.push(decision(&da, &aid(i), "allocation", "deny", t)),
                5 => early.push(decision(&da, &aid(i), "allocation", "allow", t)),
                6 => {} // decided in phase A2, after its (late) settlement
                16 => {
                    decs.push(decision(&da, &aid(i), "allocation", "allow", t));
                    decs.push(decision(&format!("da2-{i}"), &aid(i), "allocation", "deny", t + 1));
                }
                17 => {
                    decs.push(decision(&da, &aid(i), "allocation", "allow", t));
                    decs.push(decision(&da, &aid(i), "allocation", "allow", t));
                }
                _ => decs.push(decision(&da, &aid(i), "allocation", "allow", t)),
            }
        }
        // Invalid and wrongly keyed submissions ride along in some batches.
        let b = start / 50;
        if b < 10 {
            let mut bad = submission(&format!("bad{b}"), "canary", None, Some((100, "EUR")));
            match b % 3 {
                0 => bad["metrics"]["accuracy"] = json!("NaN"),
                1 => bad["allocation"]["currency"] = json!("eur"),
                _ => bad["submitted_at"] = json!(0),
            }
            subs.push(In::Sub { key: format!("bad{b}"), value: bad });
            let wk = submission(&format!("wk{b}"), "canary", None, None);
            subs.push(In::Sub { key: format!("model-wk{b}"), value: wk });
        }
        batches.push([early, subs, decs].concat());
    }
    batches
}

/// Phase A.4: settlements of the allocations approved in phase A, and the bad ones.
fn phase_a_settlements() -> Vec<In> {
    let mut out = Vec::new();
    for i in (0..N).step_by(2) {
        let (a, m, cur) = (aid(i), amount(i), currency(i));
        let good = |l: &str| settle(&format!("{l}-{i}"), &a, m, cur, Signing::Good);
        match c(i) {
            0 => out.push(good("L0")), // its allocation is still pending_policy: retries, then the DLQ
            3 => out.push(good("LN")), // denied
            5 | 14..=17 | 19 => out.push(good("L")),
            7 => {
                out.push(good("L"));
                out.push(good("L")); // the same settlement again
            }
            8 => {
                out.push(good("L"));
                out.push(good("LD")); // a second payment
            }
            9 => out.push(settle(&format!("LM-{i}"), &a, m + 1, cur, Signing::Good)),
            10 => {
                out.push(settle(&format!("LM-{i}"), &a, m + 1, cur, Signing::Good));
                out.push(good("LF"));
            }
            11 => out.push(settle(&format!("LX-{i}"), &a, m, cur, Signing::Rogue)),
            12 => out.push(settle(&format!("LP-{i}"), &a, m, cur, Signing::RecordLies)),
            _ => {}
        }
        if c(i) == 13 {
            out.push(settle(&format!("LA-{i}"), &a, m, cur, Signing::AuditKey));
        }
    }
    out
}

fn idx(id: &str) -> usize {
    id[1..6].parse().unwrap()
}

// ─── The model ──────────────────────────────────────────────────────────────────────────────────

#[derive(Debug, Clone, Default)]
struct Promo {
    status: String,
    outcomes: Vec<String>,
    decided: Option<String>,
    low_risk: bool,
}

#[derive(Debug, Clone, Default)]
struct Alloc {
    state: String,
    transitions: Vec<(String, String)>,
    amount: i64,
    currency: String,
    decided: Option<String>,
    held_decision: Option<String>,
    best_effort: bool,
    ledger: Option<String>,
    settlements: BTreeMap<String, (i64, String)>,
    held_settlement: Option<(String, String)>,
}

/// The documented rules, applied to the scenario's inputs in a canonical order per phase.
#[derive(Debug, Default)]
struct Model {
    accepted: BTreeMap<String, Value>,
    promos: BTreeMap<String, Promo>,
    allocs: BTreeMap<String, Alloc>,
    early: BTreeMap<(String, String), Value>,
    seen_decisions: BTreeMap<String, Value>,
    degraded: Option<String>,
    frozen: bool,
    held_decisions: Vec<Value>,
    held_settlements: Vec<(String, String)>,
    /// Settlements with a good proof, by ledger entry (what reconcile may settle with).
    signed: BTreeMap<String, (String, i64, String)>,
    dlq: Vec<(&'static str, String, String)>,
    dlq_optional: Vec<(&'static str, String, String)>,
    events: BTreeSet<String>,
}

impl Model {
    fn reject(&mut self, topic: &'static str, key: &str, code: &str) {
        self.dlq.push((topic, key.to_string(), code.to_string()));
    }

    fn submit(&mut self, key: &str, v: &Value) {
        let id = v["submission_id"].as_str().unwrap();
        let finite = v["metrics"].as_object().unwrap().values().all(|m| m.is_f64() || m.is_i64());
        let currency_ok = v.get("allocation").is_none_or(|a| {
            a["currency"].as_str().unwrap().bytes().all(|b| b.is_ascii_uppercase())
        });
        if key != id {
            return self.reject("eval.submissions", key, "key_mismatch");
        }
        if !finite || !currency_ok || v["submitted_at"].as_i64() == Some(0) {
            return self.reject("eval.submissions", key, "invalid_field");
        }
        if let Some(first) = self.accepted.get(id) {
            if first != v {
                self.reject("eval.submissions", key, "conflicting_resubmission");
            }
            return;
        }
        self.accepted.insert(id.to_string(), v.clone());
        self.events.insert(format!("submissions:accepted:{id}:{id}"));
        let p = &v["promotion"];
        let rid = format!("{id}:promotion");
        let low = p["risk_level_hint"] == "low" && p["target_stage"] != "production";
        self.promos.insert(rid.clone(), Promo { low_risk: low, ..Promo::default() });
        self.promo_to(&rid, "pending_policy", &rid);
        if let Some(d) = self.early.remove(&("promotion".into(), rid.clone())) {
            self.apply(&d);
        } else if let Some(cmd) = self.degraded.clone() {
            if low {
                self.promo_to(&rid, "best_effort", &cmd);
            }
        }
        if let Some(a) = v.get("allocation") {
            let aid = format!("{id}:allocation");
            let alloc = Alloc {
                amount: a["amount_minor"].as_i64().unwrap(),
                currency: a["currency"].as_str().unwrap().into(),
                ..Alloc::default()
            };
            self.allocs.insert(aid.clone(), alloc);
            self.alloc_to(&aid, "pending_policy", "allocation_request", "policy", &aid);
            if let Some(d) = self.early.remove(&("allocation".into(), aid.clone())) {
                if self.frozen {
                    self.hold(&d);
                } else {
                    self.apply(&d);
                }
            } else if let Some(cmd) = self.degraded.clone() {
                self.best_effort_alloc(&aid, &cmd);
            }
        }
    }

    fn promo_to(&mut self, rid: &str, status: &str, cause: &str) {
        let p = self.promos.get_mut(rid).unwrap();
        p.status = status.into();
        p.outcomes.push(status.into());
        self.events.insert(format!("policy:{status}:{rid}:{cause}"));
    }

    fn alloc_to(&mut self, id: &str, to: &str, cause_kind: &str, processor: &str, cause: &str) {
        let a = self.allocs.get_mut(id).unwrap();
        a.state = to.into();
        a.transitions.push((to.into(), cause_kind.into()));
        self.events.insert(format!("{processor}:{to}:{id}:{cause}"));
    }

    fn best_effort_alloc(&mut self, id: &str, cmd: &str) {
        let a = &self.allocs[id];
        if a.state == "pending_policy"
            && a.held_decision.is_none()
            && a.amount <= LIMIT
            && !self.frozen
        {
            self.allocs.get_mut(id).unwrap().best_effort = true;
            self.alloc_to(id, "pending_finance", "degraded", "policy", cmd);
        }
    }

    fn decide(&mut self, d: &Value) {
        let (did, rid, kind) = (
            d["decision_id"].as_str().unwrap(),
            d["request_id"].as_str().unwrap(),
            d["subject_kind"].as_str().unwrap(),
        );
        if d["policy_version"] == "" {
            return self.reject("policy.decisions", rid, "invalid_field");
        }
        if let Some(seen) = self.seen_decisions.get(did) {
            if seen != d {
                self.reject("policy.decisions", rid, "conflicting_duplicate");
            }
            return;
        }
        self.seen_decisions.insert(did.into(), d.clone());
        if d["simulate"] == true {
            self.events.insert(format!("policy:simulated:{rid}:{did}"));
            return;
        }
        let known = if kind == "promotion" {
            self.promos.contains_key(rid)
        } else {
            self.allocs.contains_key(rid)
        };
        let other = if kind == "promotion" {
            self.allocs.contains_key(rid)
        } else {
            self.promos.contains_key(rid)
        };
        if !known {
            if other {
                return self.reject("policy.decisions", rid, "subject_kind_mismatch");
            }
            let key = (kind.to_string(), rid.to_string());
            if self.early.contains_key(&key) {
                return self.reject("policy.decisions", rid, "already_decided");
            }
            self.events.insert(format!("policy:early:{rid}:{did}"));
            self.early.insert(key, d.clone());
            return;
        }
        let decided = if kind == "promotion" {
            self.promos[rid].decided.is_some()
        } else {
            self.allocs[rid].decided.is_some() || self.allocs[rid].held_decision.is_some()
        };
        if decided {
            return self.reject("policy.decisions", rid, "already_decided");
        }
        if kind == "allocation" && self.frozen {
            self.hold(d);
        } else {
            self.apply(d);
        }
    }

    fn hold(&mut self, d: &Value) {
        let (did, rid) = (d["decision_id"].as_str().unwrap(), d["request_id"].as_str().unwrap());
        self.allocs.get_mut(rid).unwrap().held_decision = Some(did.into());
        self.held_decisions.push(d.clone());
        self.events.insert(format!("policy:held:{rid}:{did}"));
    }

    fn apply(&mut self, d: &Value) {
        let (did, rid, kind) = (
            d["decision_id"].as_str().unwrap(),
            d["request_id"].as_str().unwrap(),
            d["subject_kind"].as_str().unwrap(),
        );
        let allow = d["decision"] == "allow";
        if kind == "promotion" {
            self.promos.get_mut(rid).unwrap().decided = Some(did.into());
            self.promo_to(rid, if allow { "promoted" } else { "denied" }, did);
            return;
        }
        let a = self.allocs.get_mut(rid).unwrap();
        a.decided = Some(did.into());
        a.held_decision = None;
        if a.best_effort {
            if !allow {
                // A correction pending_finance -> denied, applied by settlement if still unsettled.
                let correction = format!("policy:revoke:{rid}:{did}");
                self.events.insert(format!("policy:best_effort_revoked:{rid}:{did}"));
                if self.allocs[rid].state == "pending_finance" {
                    self.alloc_to(rid, "denied", "policy_decision", "settlement", &correction);
                }
            } else {
                self.events.insert(format!("policy:best_effort_confirmed:{rid}:{did}"));
            }
        } else if allow {
            self.alloc_to(rid, "pending_finance", "policy_decision", "policy", did);
        } else {
            self.alloc_to(rid, "denied", "policy_decision", "policy", did);
        }
    }

    /// A settlement, after the phase's decisions (a settlement retries until its allocation is
    /// approved). `exhausted`: the allocation is never approved in time, so it dead-letters.
    fn settle(&mut self, p: &Proof, signing: Signing) {
        let id = p.allocation_id.as_str();
        let l = p.ledger_entry_id.as_str();
        let content = (p.amount_minor, p.currency.clone());
        let Some(a) = self.allocs.get(id) else { panic!("settlement for unknown {id}") };
        if a.settlements.get(l) == Some(&content) && signing == Signing::Good {
            return; // the same settlement again
        }
        match signing {
            Signing::Rogue | Signing::AuditKey => {
                return self.reject("finance.settlements", id, "bad_proof")
            }
            Signing::RecordLies => return self.reject("finance.settlements", id, "proof_mismatch"),
            Signing::Good => {}
        }
        self.signed.insert(l.into(), (id.into(), p.amount_minor, p.currency.clone()));
        let a = &self.allocs[id];
        match a.state.as_str() {
            "pending_policy" => return self.reject("finance.settlements", id, "retries_exhausted"),
            "denied" => return self.reject("finance.settlements", id, "allocation_denied"),
            "settled" => return self.reject("finance.settlements", id, "already_settled"),
            _ if a.held_settlement.is_some() => {
                return self.reject("finance.settlements", id, "already_settled")
            }
            _ => {}
        }
        let matches = a.amount == p.amount_minor && a.currency == p.currency;
        let state = a.state.clone();
        self.allocs.get_mut(id).unwrap().settlements.insert(l.into(), content);
        if !matches {
            if state == "pending_finance" {
                self.alloc_to(id, "settlement_failed", "finance_settlement", "settlement", l);
                self.allocs.get_mut(id).unwrap().ledger = Some(l.into());
            }
        } else if self.frozen {
            self.allocs.get_mut(id).unwrap().held_settlement = Some((l.into(), state));
            self.held_settlements.push((id.into(), l.into()));
            self.events.insert(format!("settlement:settlement_held:{id}:{l}"));
        } else {
            self.alloc_to(id, "settled", "finance_settlement", "settlement", l);
            self.allocs.get_mut(id).unwrap().ledger = Some(l.into());
        }
    }

    fn degraded(&mut self, cmd: Option<&str>) {
        self.degraded = cmd.map(str::to_string);
        if let Some(cmd) = cmd {
            let pending: Vec<String> = self
                .promos
                .iter()
                .filter(|(_, p)| p.status == "pending_policy" && p.low_risk)
                .map(|(k, _)| k.clone())
                .collect();
            for rid in pending {
                self.promo_to(&rid, "best_effort", cmd);
            }
            let ids: Vec<String> = self.allocs.keys().cloned().collect();
            for id in ids {
                self.best_effort_alloc(&id, cmd);
            }
        }
    }

    fn freeze(&mut self, on: bool) {
        self.frozen = on;
        if on {
            return;
        }
        for d in std::mem::take(&mut self.held_decisions) {
            self.apply(&d);
        }
        for (id, l) in std::mem::take(&mut self.held_settlements) {
            let (held, expected) = self.allocs[&id].held_settlement.clone().unwrap();
            assert_eq!(held, l);
            self.allocs.get_mut(&id).unwrap().held_settlement = None;
            if self.allocs[&id].state == expected {
                self.alloc_to(&id, "settled", "finance_settlement", "settlement", &l);
                self.allocs.get_mut(&id).unwrap().ledger = Some(l);
            } else {
                self.events.insert(format!("settlement:held_settlement_rejected:{id}:{l}"));
            }
        }
    }

    /// Reconciliation against `export` (ledger entry -> allocation, amount, currency): the
    /// corrections it makes, applied.
    fn reconcile(
        &mut self,
        run: &str,
        export: &BTreeMap<String, (String, i64, String)>,
    ) -> BTreeSet<(String, String, String)> {
        let mut corrections = BTreeSet::new();
        let ids: Vec<String> = self.allocs.keys().cloned().collect();
        for id in ids {
            let a = self.allocs[&id].clone();
            let to = match a.state.as_str() {
                "settled" => {
                    let l = a.ledger.clone().unwrap();
                    let agrees =
                        export.get(&l) == Some(&(id.clone(), a.amount, a.currency.clone()));
                    (!agrees).then_some(("settlement_failed", None))
                }
                "pending_finance" | "settlement_failed" => export
                    .iter()
                    .find(|(l, e)| {
                        **e == (id.clone(), a.amount, a.currency.clone())
                            && self.signed.get(*l) == Some(e)
                    })
                    .map(|(l, _)| ("settled", Some(l.clone()))),
                _ => None,
            };
            if let Some((to, ledger)) = to {
                let cid = format!("{run}/{id}");
                corrections.insert((id.clone(), a.state.clone(), to.to_string()));
                self.alloc_to(&id, to, "reconciliation", "settlement", &cid);
                if let Some(l) = ledger {
                    self.allocs.get_mut(&id).unwrap().ledger = Some(l);
                }
            }
        }
        corrections
    }
}

// ─── The run ────────────────────────────────────────────────────────────────────────────────────

struct Procs {
    instances: BTreeMap<&'static str, Instance>,
    kills: BTreeMap<&'static str, u32>,
}

impl Procs {
    fn kill_and_restart(&mut self, name: &'static str, rng: &mut impl Rng) {
        let i = self.instances.get_mut(name).unwrap();
        i.kill();
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..800)));
        i.start();
        *self.kills.entry(name).or_default() += 1;
    }

    fn domain_kills_done(&self) -> bool {
        DOMAIN.iter().all(|p| self.kills.get(p).copied().unwrap_or(0) >= 2)
    }
}

fn produce(w: &World, ins: &[In]) {
    // Consecutive inputs of one topic go out together, in order.
    let mut start = 0;
    while start < ins.len() {
        let topic = ins[start].topic();
        let end =
            ins[start..].iter().position(|x| x.topic() != topic).map_or(ins.len(), |n| start + n);
        let records: Vec<(String, Value)> = ins[start..end]
            .iter()
            .map(|x| match x {
                In::Sub { key, value } => (key.clone(), value.clone()),
                In::Dec { value } => {
                    (value["request_id"].as_str().unwrap().to_string(), value.clone())
                }
                In::Set { proof, signing } => {
                    let v = match signing {
                        Signing::Good => w.good_settlement(proof),
                        Signing::Rogue => w.settlement(&w.rogue_key, "finance-rogue", proof),
                        Signing::AuditKey => w.settlement(&w.audit_key, AUDIT_KID, proof),
                        Signing::RecordLies => {
                            let mut v = w.good_settlement(proof);
                            v["amount_minor"] = json!(proof.amount_minor - 1);
                            v
                        }
                    };
                    (proof.allocation_id.clone(), v)
                }
            })
            .collect();
        let schema = match ins[start] {
            In::Sub { .. } => SUB,
            In::Dec { .. } => DEC,
            In::Set { .. } => SET,
        };
        w.produce(topic, schema, &records);
        start = end;
    }
}

/// Applies a phase's inputs to the model in the canonical order: submissions, decisions,
/// settlements.
fn model_phase(m: &mut Model, ins: &[In]) {
    for x in ins {
        if let In::Sub { key, value } = x {
            m.submit(key, value);
        }
    }
    for x in ins {
        if let In::Dec { value } = x {
            m.decide(value);
        }
    }
    for x in ins {
        if let In::Set { proof, signing } = x {
            m.settle(proof, *signing);
        }
    }
}

/// Prints the elapsed time at a step when `EVALSTREAM_TEST_TIMING` is set.
fn mark(started: &Instant, what: &str) {
    if std::env::var_os("EVALSTREAM_TEST_TIMING").is_some() {
        eprintln!("[{:?}] {what}", started.elapsed());
    }
}

fn command_id(out: &it::CmdOutput) -> String {
    out.assert_success();
    out.stdout
        .split("command ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no command id: {out}"))
        .to_string()
}

#[test]
fn the_domain_stays_exact_through_kills_switches_freeze_and_reconciliation() {
    let started = Instant::now();
    let w = World::new("dscn");
    let policy_config = w.dir.join("policy.toml");
    std::fs::write(&policy_config, format!("[processor]\ndegraded_max_amount_minor = {LIMIT}\n"))
        .unwrap();
    let retry = [("EVALSTREAM_RETRY_MAX_ATTEMPTS", "6"), ("EVALSTREAM_RETRY_BACKOFF_MS", "300")];
    let mut procs = Procs { instances: BTreeMap::new(), kills: BTreeMap::new() };
    procs.instances.insert("submissions", w.instance("submissions", "s0", &[]));
    procs.instances.insert(
        "policy",
        w.instance("policy", "p0", &[("EVALSTREAM_CONFIG", policy_config.to_str().unwrap())]),
    );
    procs.instances.insert("settlement", w.instance("settlement", "t0", &retry));
    procs.instances.insert("audit-chain", w.instance("audit-chain", "c0", &[]));
    for i in procs.instances.values_mut() {
        i.start();
    }
    let mut model = Model::default();
    let mut rng = rand::thread_rng();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut count = |ins: &[In]| {
        for x in ins {
            *counts.entry(x.topic()).or_default() += 1;
        }
    };

    // ── Phase A: the bulk, while processors are killed ──────────────────────────────────────
    let batches = phase_a();
    let flat: Vec<In> = batches.concat();
    count(&flat);
    let producer = {
        let world = w.handle();
        std::thread::spawn(move || {
            for b in &batches {
                produce(&world, b);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let mut mid_stream = Vec::new();
    let mut filler: Vec<In> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    std::thread::sleep(Duration::from_secs(2));
    while !procs.domain_kills_done() || !procs.kills.contains_key("audit-chain") {
        assert!(
            Instant::now() < deadline,
            "could not kill every processor twice mid-stream: {:?}",
            procs.kills
        );
        // The least-killed processor that has work right now (a kill of an idle one proves
        // nothing); audit-chain once.
        let mut candidates: Vec<&'static str> = DOMAIN.to_vec();
        candidates.push("audit-chain");
        candidates
            .sort_by_key(|p| (procs.kills.get(p).copied().unwrap_or(0), rng.gen_range(0..10)));
        let victim = candidates.into_iter().find(|p| {
            let needed = if *p == "audit-chain" { 1 } else { 2 };
            procs.kills.get(p).copied().unwrap_or(0) < needed && !w.caught_up(p)
        });
        match victim {
            Some(v) => {
                procs.kill_and_restart(v, &mut rng);
                mid_stream.push((v, started.elapsed()));
                eprintln!(
                    "[{:?}] SIGKILLed {v} with work pending (kills {:?})",
                    started.elapsed(),
                    procs.kills
                );
                std::thread::sleep(Duration::from_millis(rng.gen_range(1500..3000)));
            }
            None if producer.is_finished() => {
                // Everything caught up before every processor was killed twice: feed it more
                // (submissions whose promotions stay pending; the model takes them too).
                let n = filler.len();
                let more: Vec<In> = (n..n + 50)
                    .map(|f| In::Sub {
                        key: format!("f{f:04}"),
                        value: submission(&format!("f{f:04}"), "staging", Some("medium"), None),
                    })
                    .collect();
                produce(&w, &more);
                filler.extend(more);
            }
            None => std::thread::sleep(Duration::from_millis(300)),
        }
    }
    producer.join().expect("phase A producer");
    count(&filler);
    model_phase(&mut model, &flat);
    model_phase(&mut model, &filler);
    w.wait_quiescent(&ALL, Duration::from_secs(300));
    eprintln!("[{:?}] phase A requests and decisions done", started.elapsed());

    let a4 = phase_a_settlements();
    count(&a4);
    produce(&w, &a4);
    model_phase(&mut model, &a4);
    w.wait_quiescent(&ALL, Duration::from_secs(300));
    eprintln!("[{:?}] phase A settlements done", started.elapsed());

    // ── Phase A2: Finance recovered; approve what was missing and requeue the dead letters. ──
    // c == 6: a settlement that arrives before its allocation's approval waits on the retry
    // topic and settles once the decision is applied.
    let mut a2: Vec<In> = Vec::new();
    for i in (0..N).step_by(2).filter(|i| c(*i) == 6) {
        a2.push(settle(&format!("LL-{i}"), &aid(i), amount(i), currency(i), Signing::Good));
    }
    for i in (0..N).step_by(2).filter(|i| matches!(c(*i), 0 | 6)) {
        a2.push(decision(&format!("dz-{i}"), &aid(i), "allocation", "allow", T0 + 120_000));
    }
    count(&a2);
    produce(&w, &a2);
    model_phase(&mut model, &a2);
    w.wait_quiescent(&ALL, Duration::from_secs(120));
    // The model's dead-lettered settlements of unapproved allocations are settled by the requeue.
    let exhausted: Vec<String> =
        model.dlq.iter().filter(|d| d.2 == "retries_exhausted").map(|d| d.1.clone()).collect();
    for id in &exhausted {
        let i = idx(id);
        model.settle(
            &Proof {
                ledger_entry_id: format!("L0-{i}"),
                allocation_id: id.clone(),
                amount_minor: amount(i),
                currency: currency(i).into(),
                settled_at: T0 + 600_000,
            },
            Signing::Good,
        );
    }
    for i in (0..N).step_by(2).filter(|i| c(*i) == 6) {
        model.dlq_optional.push(("finance.settlements", aid(i), "retries_exhausted".into()));
    }
    let rq = w.cli(&["dlq", "requeue", "finance.settlements", "--class", "retries_exhausted"]);
    rq.assert_success();
    let requeued =
        rq.stdout.lines().filter(|l| l.starts_with("requeued ") && l.contains(" -> ")).count();
    assert!(requeued >= exhausted.len(), "{rq}");
    w.wait_quiescent(&ALL, Duration::from_secs(120));
    let again = w.cli(&["dlq", "requeue", "finance.settlements", "--class", "retries_exhausted"]);
    assert_eq!(
        again.stdout.lines().filter(|l| l.starts_with("skipped ")).count(),
        requeued,
        "exactly once: {again}"
    );
    eprintln!("[{:?}] phase A2 done ({requeued} requeued)", started.elapsed());

    // ── Phase B: degraded mode ──────────────────────────────────────────────────────────────
    let on = w.cli(&[
        "control",
        "degraded",
        "on",
        "--reason",
        "INC-7 SentinelNet unreachable",
        "--actor",
        "sre-alice",
        "--wait",
        "120",
    ]);
    let degraded_cmd = command_id(&on);
    model.degraded(Some(&degraded_cmd));
    let mut b: Vec<In> = Vec::new();
    for j in 0..NB {
        let id = format!("b{j:04}");
        let (stage, risk) =
            if j % 2 == 0 { ("canary", Some("low")) } else { ("staging", Some("medium")) };
        let alloc = match j % 4 {
            0 => Some((1000, "EUR")),
            2 => Some((9000, "EUR")),
            _ => None,
        };
        b.push(In::Sub { key: id.clone(), value: submission(&id, stage, risk, alloc) });
    }
    for i in (0..N).filter(|i| matches!(q(*i), 0..=2)) {
        let verdict = if q(i) == 1 { "deny" } else { "allow" };
        b.push(decision(&format!("db-{i}"), &pid(i), "promotion", verdict, T0 + 180_000));
    }
    for i in (0..N).filter(|i| q(*i) == 11) {
        b.push(decision(&format!("dm-{i}"), &pid(i), "allocation", "allow", T0 + 180_000));
        // wrong kind
    }
    for i in (0..N).step_by(2).filter(|i| c(*i) == 1 && k(*i).is_multiple_of(2)) {
        b.push(settle(&format!("LB-{i}"), &aid(i), amount(i), currency(i), Signing::Good));
    }
    count(&b);
    produce(&w, &b);
    model_phase(&mut model, &b);
    w.wait_quiescent(&ALL, Duration::from_secs(120));
    command_id(&w.cli(&[
        "control",
        "degraded",
        "off",
        "--reason",
        "INC-7 resolved",
        "--actor",
        "sre-alice",
        "--wait",
        "120",
    ]));
    model.degraded(None);
    eprintln!("[{:?}] phase B done", started.elapsed());

    // ── Phase C: freeze, reconcile inside it, unfreeze ──────────────────────────────────────
    command_id(&w.cli(&[
        "control",
        "freeze-allocations",
        "on",
        "--reason",
        "INC-8 suspicious proofs",
        "--wait",
        "120",
    ]));
    model.freeze(true);
    mark(&started, "C freeze on applied");
    let mut cc: Vec<In> = Vec::new();
    for i in (0..N).step_by(2) {
        match c(i) {
            1 if k(i) % 2 == 1 => {
                cc.push(decision(&format!("dr-{i}"), &aid(i), "allocation", "deny", T0 + 240_000))
            }
            2 => {
                cc.push(decision(&format!("dc-{i}"), &aid(i), "allocation", "allow", T0 + 240_000))
            }
            12 => {
                cc.push(settle(&format!("LH-{i}"), &aid(i), amount(i), currency(i), Signing::Good))
            }
            13 => {
                cc.push(settle(&format!("LG-{i}"), &aid(i), amount(i), currency(i), Signing::Good));
                if k(i).is_multiple_of(3) {
                    cc.push(settle(
                        &format!("LG2-{i}"),
                        &aid(i),
                        amount(i),
                        currency(i),
                        Signing::Good,
                    ));
                }
            }
            _ => {}
        }
    }
    // One produce call per topic (stable: each topic keeps its order, which is all that counts).
    cc.sort_by_key(|x| x.topic());
    count(&cc);
    produce(&w, &cc);
    mark(&started, "C produced");
    model_phase(&mut model, &cc);
    w.wait_quiescent(&ALL, Duration::from_secs(120));
    // Finance's ledger export: what it booked, except the c == 14 entries (lost), the c == 15
    // entries at another amount, and nothing of the c == 13 bookings yet.
    let mut export: BTreeMap<String, (String, i64, String)> = BTreeMap::new();
    for (l, (id, amt, cur)) in &model.signed {
        let i = idx(id);
        match c(i) {
            14 => continue,
            13 if l.starts_with("LG") => continue,
            15 => export.insert(l.clone(), (id.clone(), amt + 7, cur.clone())),
            _ => export.insert(l.clone(), (id.clone(), *amt, cur.clone())),
        };
    }
    let export_file = w.dir.join("ledger-export.jsonl");
    let lines: Vec<String> = export
        .iter()
        .map(|(l, (a, m, c))| {
            json!({"ledger_entry_id": l, "allocation_id": a, "amount_minor": m, "currency": c})
                .to_string()
        })
        .collect();
    std::fs::write(&export_file, lines.join("\n")).unwrap();
    let report = w.dir.join("reconcile.json");
    let rec = w.cli(&[
        "reconcile",
        "--ledger-export",
        export_file.to_str().unwrap(),
        "--signers",
        w.signers.to_str().unwrap(),
        "--apply",
        "--report",
        report.to_str().unwrap(),
        "--run-id",
        "rec-scenario",
        "--actor",
        "sre-bob",
    ]);
    rec.assert_success();
    mark(&started, "C reconciled");
    let expected_corrections = model.reconcile("rec-scenario", &export);
    mark(&started, "C modelled reconcile");
    let doc: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let got_corrections: BTreeSet<(String, String, String)> = doc["findings"]["corrections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["allocation_id"].as_str().unwrap().into(),
                c["expected_state"].as_str().unwrap().into(),
                c["to_state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(got_corrections, expected_corrections, "reconciliation corrections");
    assert!(!expected_corrections.is_empty());
    w.wait_quiescent(&ALL, Duration::from_secs(120));
    command_id(&w.cli(&[
        "control",
        "freeze-allocations",
        "off",
        "--reason",
        "INC-8 reconciled",
        "--wait",
        "120",
    ]));
    model.freeze(false);
    mark(&started, "C freeze off modelled");
    w.wait_quiescent(&ALL, Duration::from_secs(120));
    eprintln!("[{:?}] phase C done", started.elapsed());

    // ── Verdict ─────────────────────────────────────────────────────────────────────────────
    for (name, i) in procs.instances.iter_mut() {
        assert!(i.running(), "{name} is not running (a processor must never stop on bad input)");
    }
    verify(&w, &model, &export);
    for i in procs.instances.values_mut() {
        i.stop();
    }
    let dlq_total = model.dlq.len();
    eprintln!(
        "scenario: inputs {counts:?}; kills {:?} (mid-stream: {mid_stream:?}); DLQ entries {dlq_total} (+ up to {} optional); {} modelled audit events; {:?}",
        procs.kills,
        model.dlq_optional.len(),
        model.events.len(),
        started.elapsed()
    );
    for p in DOMAIN {
        assert!(
            procs.kills.get(p).copied().unwrap_or(0) >= 2,
            "{p} was killed {:?} times",
            procs.kills.get(p)
        );
    }
}

fn verify(w: &World, m: &Model, export: &BTreeMap<String, (String, i64, String)>) {
    // Accepted submissions and derived requests: each exactly once.
    let accepted: Vec<String> =
        w.read("eval.submissions.accepted").into_iter().map(|r| r.2).collect();
    let want: Vec<String> = m.accepted.keys().cloned().collect();
    let mut got = accepted.clone();
    got.sort();
    assert_eq!(got, want, "eval.submissions.accepted");
    let mut reqs: Vec<String> =
        w.read("eval.promotion-requests").into_iter().map(|r| r.2).collect();
    reqs.sort();
    assert_eq!(reqs, m.promos.keys().cloned().collect::<Vec<_>>(), "eval.promotion-requests");
    let mut areqs: Vec<String> = w.read("alloc.requests").into_iter().map(|r| r.2).collect();
    areqs.sort();
    assert_eq!(areqs, m.allocs.keys().cloned().collect::<Vec<_>>(), "alloc.requests");

    // Promotion outcome sequences.
    let promotions = by_key(&w.read("eval.promotions"));
    let mut wrong = Vec::new();
    for (rid, p) in &m.promos {
        let got: Vec<String> = promotions
            .get(rid)
            .map(|v| v.iter().map(|o| o["outcome"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        if got != p.outcomes {
            wrong.push(format!("{rid}: got {got:?}, want {:?}", p.outcomes));
        }
    }
    assert_eq!(promotions.len(), m.promos.len());
    assert!(
        wrong.is_empty(),
        "{} promotions differ, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );

    // Allocation transition sequences and settling entries.
    let states = by_key(&w.read("alloc.state"));
    let mut wrong = Vec::new();
    for (id, a) in &m.allocs {
        let got_t: Vec<(String, String)> = states
            .get(id)
            .map(|v| {
                v.iter()
                    .map(|t| {
                        (
                            t["to_state"].as_str().unwrap().to_string(),
                            t["cause_kind"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if got_t != a.transitions {
            wrong.push(format!("{id}: got {got_t:?}, want {:?}", a.transitions));
            continue;
        }
        if a.state == "settled" {
            let last = states[id].last().unwrap();
            if last["ledger_entry_id"].as_str() != a.ledger.as_deref() {
                wrong.push(format!(
                    "{id}: settled by {:?}, want {:?}",
                    last["ledger_entry_id"], a.ledger
                ));
            }
        }
    }
    assert_eq!(states.len(), m.allocs.len());
    assert!(
        wrong.is_empty(),
        "{} allocations differ, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );

    // `evalstream alloc list` agrees with the model.
    let out = w.cli(&["alloc", "list", "--json"]);
    out.assert_success();
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    let listed: BTreeMap<String, String> = listed["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["allocation_id"].as_str().unwrap().into(), a["state"].as_str().unwrap().into()))
        .collect();
    let modelled: BTreeMap<String, String> =
        m.allocs.iter().map(|(k, a)| (k.clone(), a.state.clone())).collect();
    assert_eq!(listed, modelled, "alloc list");

    // Every DLQ entry has its expected reason; mandatory ones all there; nothing else anywhere.
    let mut expected: BTreeMap<(&str, String, String), usize> = BTreeMap::new();
    for (t, k, r) in &m.dlq {
        *expected.entry((t, k.clone(), r.clone())).or_default() += 1;
    }
    let optional: BTreeSet<(&str, String, String)> =
        m.dlq_optional.iter().map(|(t, k, r)| (*t, k.clone(), r.clone())).collect();
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for topic in [
        "eval.submissions",
        "eval.promotion-requests",
        "alloc.requests",
        "policy.decisions",
        "finance.settlements",
        "alloc.state",
        "alloc.corrections",
        "evalstream.switches",
        "audit.events",
        "audit.chain",
    ] {
        let mut got: BTreeMap<(&str, String, String), usize> = BTreeMap::new();
        for (key, class, reason) in w.dlq(topic) {
            let code = reason_code(&class, &reason);
            *by_reason.entry(code.clone()).or_default() += 1;
            *got.entry((topic, key, code)).or_default() += 1;
        }
        for (entry, n) in &got {
            let want = expected.get(entry).copied().unwrap_or(0);
            assert!(
                *n == want || (want == 0 && *n == 1 && optional.contains(entry)),
                "{topic} DLQ: {entry:?} x{n}, expected x{want}"
            );
        }
        for (entry, n) in expected.iter().filter(|(e, _)| e.0 == topic) {
            assert_eq!(got.get(entry), Some(n), "{topic} DLQ is missing {entry:?}");
        }
    }
    eprintln!("DLQ entries by reason: {by_reason:?}");

    // Audit: every modelled event, every audit.events id once, the chain holds each once.
    let events = w.read("audit.events");
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, _, e) in &events {
        *ids.entry(e["event_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let dup: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "audit.events holds duplicates: {:?}", &dup[..dup.len().min(5)]);
    let missing: Vec<&String> = m.events.iter().filter(|e| !ids.contains_key(*e)).collect();
    assert!(
        missing.is_empty(),
        "{} modelled audit events missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(events
        .iter()
        .any(|e| e.3["type"] == "audit.reconciliation" && e.3["subject"] == "rec-scenario"));
    assert!(!export.is_empty());
    let chain = common::audit::read_chain(&w.codec, &w.topic("audit.chain"));
    let mut chained: BTreeMap<String, usize> = BTreeMap::new();
    for records in chain.values() {
        for e in common::audit::entries(records) {
            *chained.entry(e.event_id.clone()).or_default() += 1;
        }
    }
    assert_eq!(chained.len(), ids.len(), "the chain holds every audit event");
    assert!(chained.values().all(|n| *n == 1), "an event is chained twice");
    assert!(chained.keys().eq(ids.keys()), "chain and audit.events hold the same ids");
    // The chain's last entries are covered by the idle checkpoint within a second or two.
    let mut last = None;
    for _ in 0..40 {
        let out = w.cli(&["audit", "verify", "--signers", w.signers.to_str().unwrap()]);
        if out.status.success() {
            last = None;
            break;
        }
        last = Some(out);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(last.is_none(), "evalstream audit verify did not pass: {}", last.unwrap());
    eprintln!(
        "audit: {} events, each chained once; audit verify ok (finance key {FINANCE_KID})",
        ids.len()
    );
}

/// What a previous run's groups had not processed: `DOMAIN_SCENARIO_PREFIX=<prefix> cargo test
/// --features broker --test domain_scenario lagging -- --ignored --nocapture` (the prefix is in
/// the broker's topic names). For diagnosing a failed run; not part of the verdict.
#[test]
#[ignore]
fn lagging_groups_of_a_previous_run() {
    let prefix = std::env::var("DOMAIN_SCENARIO_PREFIX").expect("DOMAIN_SCENARIO_PREFIX");
    let w = World::existing(&prefix);
    for p in ALL {
        eprintln!("{p}: {:?}", w.lagging(p));
    }
}
