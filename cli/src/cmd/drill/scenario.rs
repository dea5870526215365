//! The drill's acceptance scenario (the runbook's "acceptance E2E (promotions/allocations)"),
//! run against the restored system.
//!
//! ```text
//!  phase 1  N submissions (each asks for a promotion and an allocation)  ─► eval.submissions
//!           a SentinelNet decision per request (allow, or deny every 3rd / 4th) ─► policy.decisions
//!           wait: every promotion promoted|denied, every allocation pending_finance|denied
//!  phase 2  a Finance settlement for each pending_finance allocation ─► finance.settlements
//!           wait: every such allocation settled
//!  check    outcomes as decided, nothing dead-lettered, the transitions' audit events written
//! ```
//!
//! The verdict comes from reading the output topics (`read_committed`, decoded to JSON by field
//! name), not from the processors' state. Settlements are signed with a Finance key made for the
//! drill and registered only in the drill's own signer registry: the restored system is a test
//! system, and Finance's real key never leaves Finance.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use evalstream_audit::signer::LocalKeySigner;
use evalstream_domain::proof::{sign_settlement, LedgerProof};
use evalstream_domain::records::{
    AllocationAsk, ComputeResource, Decision, EvalSubmission, PolicyDecision, PromotionAsk,
    PromotionStage, RiskLevel, SubjectKind,
};
use evalstream_runtime::codec::{avro_to_json, Codec};
use evalstream_runtime::config::RuntimeConfig;
use serde_json::Value;

use crate::cmd::domain_io::{produce_atomically, read_all, Outgoing};
use crate::progress::{Progress, ProgressMode};

/// How often outputs are read while waiting.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait for the next record when reading a topic.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The scenario's inputs and what they must lead to.
pub struct Scenario {
    run: String,
    n: usize,
    now: i64,
}

/// What the scenario saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Lines for the report.
    pub detail: Vec<String>,
    /// Problems (empty: passed).
    pub problems: Vec<String>,
}

impl Scenario {
    /// `n` submissions under the run id `run`.
    pub fn new(run: &str, n: usize) -> Scenario {
        Scenario { run: run.into(), n, now: evalstream_runtime::readiness::wall_clock_ms() }
    }

    fn submission_id(&self, i: usize) -> String {
        format!("drill-{}-{i:03}", self.run)
    }

    /// Promotion `i` is allowed unless `i` is a multiple of 3.
    fn promotion_allowed(i: usize) -> bool {
        !i.is_multiple_of(3)
    }

    /// Allocation `i` is allowed unless `i` is a multiple of 4.
    fn allocation_allowed(i: usize) -> bool {
        !i.is_multiple_of(4)
    }

    fn amount(i: usize) -> i64 {
        1000 + i as i64
    }

    /// Runs both phases and checks the outputs. `finance` signs the settlements as `kid`.
    pub fn run(
        &self,
        cfg: &RuntimeConfig,
        codec: &Codec,
        finance: &LocalKeySigner,
        kid: &str,
        timeout: Duration,
        mode: ProgressMode,
    ) -> anyhow::Result<Outcome> {
        let mut out = Outcome::default();
        self.phase1(cfg, codec)?;
        let expected = self.n * 2;
        let mut progress =
            Progress::new(mode, "drill: outcomes", "requests").with_total(expected as u64);
        let decided = wait(cfg, codec, timeout, &mut progress, |s| {
            let done = (0..self.n)
                .filter(|&i| {
                    let sid = self.submission_id(i);
                    s.promotions.contains_key(&format!("{sid}:promotion"))
                        && matches!(
                            s.allocations.get(&format!("{sid}:allocation")).map(String::as_str),
                            Some("pending_finance" | "denied")
                        )
                })
                .count();
            (done * 2, done == self.n)
        })
        .context("phase 1 (submissions and decisions)")?;
        let pending: Vec<usize> = (0..self.n).filter(|&i| Self::allocation_allowed(i)).collect();
        out.detail.push(format!(
            "phase 1: {} submissions accepted and decided ({} promotions, {} allocations)",
            self.n, self.n, self.n
        ));
        self.phase2(cfg, codec, finance, kid, &pending)?;
        let settled_target = pending.len();
        let mut progress = Progress::new(mode, "drill: settlements", "allocations")
            .with_total(settled_target as u64);
        let seen = wait(cfg, codec, timeout, &mut progress, |s| {
            let settled = pending
                .iter()
                .filter(|&&i| {
                    s.allocations
                        .get(&format!("{}:allocation", self.submission_id(i)))
                        .map(String::as_str)
                        == Some("settled")
                })
                .count();
            (settled, settled == settled_target)
        })
        .context("phase 2 (settlements)")?;
        out.detail.push(format!("phase 2: {settled_target} allocations settled by Finance"));
        let _ = decided;

        // Outcomes as decided.
        for i in 0..self.n {
            let sid = self.submission_id(i);
            let want_p = if Self::promotion_allowed(i) { "promoted" } else { "denied" };
            let got_p = seen.promotions.get(&format!("{sid}:promotion")).map(String::as_str);
            if got_p != Some(want_p) {
                out.problems.push(format!("{sid}:promotion is {got_p:?}, expected {want_p}"));
            }
            let want_a = if Self::allocation_allowed(i) { "settled" } else { "denied" };
            let got_a = seen.allocations.get(&format!("{sid}:allocation")).map(String::as_str);
            if got_a != Some(want_a) {
                out.problems.push(format!("{sid}:allocation is {got_a:?}, expected {want_a}"));
            }
        }
        // Nothing dead-lettered.
        for dlq in [
            "eval.submissions.dlq",
            "policy.decisions.dlq",
            "eval.promotion-requests.dlq",
            "alloc.requests.dlq",
            "finance.settlements.dlq",
            "alloc.state.dlq",
        ] {
            let n = read_all(cfg, &cfg.topic(dlq), READ_TIMEOUT, true)?.len();
            if n > 0 {
                out.problems.push(format!("{n} record(s) in {dlq}"));
            }
        }
        // The transitions left their audit events.
        let events = read_all(cfg, &cfg.topic("audit.events"), READ_TIMEOUT, true)?;
        let ours: BTreeSet<String> = events
            .iter()
            .filter_map(|r| codec.decode(r.value.as_deref()?).ok())
            .map(|d| avro_to_json(&d.value))
            .filter_map(|v| v["event_id"].as_str().map(str::to_string))
            .filter(|id| id.contains(&format!("drill-{}-", self.run)))
            .collect();
        // At least, per submission: accepted; promotion pending_policy and its outcome;
        // allocation pending_policy and its decision's transition; and each settlement.
        let minimum = self.n * 5 + pending.len();
        if ours.len() < minimum {
            out.problems.push(format!(
                "{} audit events of this run in audit.events, expected at least {minimum}",
                ours.len()
            ));
        }
        out.detail.push(format!(
            "checked: {} promotion outcomes, {} allocation states, 6 DLQs empty, {} audit events",
            self.n,
            self.n,
            ours.len()
        ));
        Ok(out)
    }

    fn phase1(&self, cfg: &RuntimeConfig, codec: &Codec) -> anyhow::Result<()> {
        let mut records = Vec::new();
        for i in 0..self.n {
            let sid = self.submission_id(i);
            let s = EvalSubmission {
                submission_id: sid.clone(),
                model_id: format!("drill-model-{i}"),
                model_version: "v1".into(),
                eval_suite: "drill-acceptance".into(),
                eval_suite_version: None,
                submitter: "evalstream-drill".into(),
                metrics: BTreeMap::from([("accuracy".to_string(), 0.9)]),
                dataset_id: None,
                artifact_uri: format!("s3://drill/{sid}"),
                artifact_sha256: None,
                labels: BTreeMap::new(),
                submitted_at: self.now,
                promotion: Some(PromotionAsk {
                    target_stage: PromotionStage::Staging,
                    justification: None,
                    risk_level_hint: Some(RiskLevel::Medium),
                }),
                allocation: Some(AllocationAsk {
                    resource: ComputeResource { gpu_type: "h100".into(), gpu_count: 1, hours: 1.0 },
                    amount_minor: Self::amount(i),
                    currency: "EUR".into(),
                    cost_center: "drill".into(),
                    purpose: None,
                }),
            };
            let topic = cfg.topic("eval.submissions");
            records.push(Outgoing {
                topic: topic.clone(),
                partition: None,
                key: sid.clone(),
                value: codec.encode_record(&topic, &s)?,
            });
            for (kind, allowed) in [
                (SubjectKind::Promotion, Self::promotion_allowed(i)),
                (SubjectKind::Allocation, Self::allocation_allowed(i)),
            ] {
                let request = format!("{sid}:{}", kind.as_str());
                let d = PolicyDecision {
                    decision_id: format!("drill-decision-{request}"),
                    request_id: request.clone(),
                    subject_kind: kind,
                    decision: if allowed { Decision::Allow } else { Decision::Deny },
                    reasons: if allowed { vec![] } else { vec!["drill_denied".into()] },
                    policy_version: "drill".into(),
                    risk_level: RiskLevel::Medium,
                    simulate: false,
                    decided_at: self.now,
                };
                let topic = cfg.topic("policy.decisions");
                records.push(Outgoing {
                    topic: topic.clone(),
                    partition: None,
                    key: request,
                    value: codec.encode_record(&topic, &d)?,
                });
            }
        }
        produce_atomically(cfg, "drill", &records)
    }

    fn phase2(
        &self,
        cfg: &RuntimeConfig,
        codec: &Codec,
        finance: &LocalKeySigner,
        kid: &str,
        pending: &[usize],
    ) -> anyhow::Result<()> {
        let topic = cfg.topic("finance.settlements");
        let mut records = Vec::new();
        for &i in pending {
            let allocation = format!("{}:allocation", self.submission_id(i));
            let proof = LedgerProof::new(
                &format!("drill-ledger-{}-{i:03}", self.run),
                &allocation,
                Self::amount(i),
                "EUR",
                self.now,
            );
            let s = sign_settlement(finance, kid, &proof)?;
            records.push(Outgoing {
                topic: topic.clone(),
                partition: None,
                key: allocation,
                value: codec.encode_record(&topic, &s)?,
            });
        }
        produce_atomically(cfg, "drill", &records)
    }
}

/// The latest promotion outcome and allocation state per key, as the output topics say.
#[derive(Debug, Default)]
struct Seen {
    promotions: BTreeMap<String, String>,
    allocations: BTreeMap<String, String>,
}

fn read_outputs(cfg: &RuntimeConfig, codec: &Codec) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let json = |r: &crate::cmd::domain_io::Raw| -> Option<Value> {
        Some(avro_to_json(&codec.decode(r.value.as_deref()?).ok()?.value))
    };
    for r in read_all(cfg, &cfg.topic("eval.promotions"), READ_TIMEOUT, false)? {
        if let Some(v) = json(&r) {
            if let (Some(id), Some(o)) = (v["request_id"].as_str(), v["outcome"].as_str()) {
                if o != "pending_policy" {
                    seen.promotions.insert(id.into(), o.into());
                }
            }
        }
    }
    for r in read_all(cfg, &cfg.topic("alloc.state"), READ_TIMEOUT, false)? {
        if let Some(v) = json(&r) {
            if let (Some(id), Some(s)) = (v["allocation_id"].as_str(), v["to_state"].as_str()) {
                seen.allocations.insert(id.into(), s.into());
            }
        }
    }
    Ok(seen)
}

/// Reads the outputs every [`POLL`] until `done` says so (it returns (progress, done)).
fn wait(
    cfg: &RuntimeConfig,
    codec: &Codec,
    timeout: Duration,
    progress: &mut Progress,
    mut done: impl FnMut(&Seen) -> (usize, bool),
) -> anyhow::Result<Seen> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = read_outputs(cfg, codec)?;
        let (n, finished) = done(&seen);
        progress.set(n as u64);
        if finished {
            progress.finish();
            return Ok(seen);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not done after {} s ({n} done)",
            timeout.as_secs()
        );
        std::thread::sleep(POLL);
    }
}
