#![cfg(feature = "broker")]
//! The alert rules proven end to end: a real Prometheus scrapes real processors, the runbook's
//! symptoms are caused for real, and the Prometheus API must show the matching alert `firing`,
//! then resolved after recovery. At the end every Grafana panel's query is evaluated against the
//! same Prometheus.
//!
//! ```text
//!   moto ◄── forwarder (cut/restore) ◄── audit-chain ──► audit.chain ──► audit-verifier
//!   policy ──► settlement ──► audit.events (prefix A: the domain scenarios)
//!   totals (prefix A: poison record)        totals (prefix B: SIGSTOP/SIGCONT)
//!   Apicurio ◄── forwarder (cut/restore) ◄── submissions (prefix B: registry outage)
//!        └──────────── /metrics ◄── Prometheus (1 s scrape and evaluation) ──► /api/v1/alerts
//! ```
//!
//! **The rules under test are deploy/prometheus/alerts.yml itself, with only the `for:`
//! durations shortened** (to [`SHORT_FOR`]) so that the test takes minutes, not hours;
//! [`rules_under_test`] asserts that nothing else differs. Expressions, windows and thresholds are
//! the production ones, so an event alert resolves 2 minutes after its last event: the scenarios
//! run concurrently to pay that wait once.
//!
//! Scenarios (each: cause → alerts firing → recover → alerts resolved):
//! * KMS outage (the signer's path to moto is cut, then restored): `AuditSigningFailures`,
//!   `AuditCheckpointsPendingSignature`, `AuditCheckpointsUnsignedForAnHour`.
//! * A forged entry produced to `audit.chain`: `AuditVerificationFailure`.
//! * A poison record on `totals.input`: `EvalstreamDeadLetters`.
//! * A processor frozen (SIGSTOP) past its session timeout, then resumed: `EvalstreamTargetDown`,
//!   then `EvalstreamRebalanceLost`.
//! * SentinelNet (one scenario, its steps in order, because they share the policy gate's feed):
//!   a request waiting 20 minutes with no decision for as long: `PolicyRequestWaitingTooLong`,
//!   `PolicyFeedStale` and `/ready`'s `policy_feed` not ok (the instance stays ready), resolved by
//!   a decision; a burst of denials: `PolicyDenialSpike`; degraded mode switched on and off with
//!   `evalstream control degraded`, a low-risk request passing as best effort:
//!   `PolicyDegradedMode`.
//! * Finance (one scenario, in order): a settlement whose proof is signed by a key no registry
//!   knows: `LedgerProofRejected`; a settlement for an allocation that never comes, dead-lettered
//!   after its retries: `SettlementFailures`; an allocation approved an hour ago (event time) and
//!   never settled: `AllocationsStuckPendingFinance` and `/ready`'s `finance` not ok, resolved by
//!   its settlement; allocations frozen and unfrozen: `AllocationsFrozen`.
//! * The schema registry unreachable for a processor that uses it: `/ready` 503 with
//!   `schema_registry` in `reasons`, `EvalstreamInstanceNotReady` and `EvalstreamProcessorNotReady`.
//!
//! Domain inputs are the wire contract's JSON and settlements are signed as the ledger-proof
//! format specifies (`common::domain`), with event times chosen to cause the symptom: an
//! allocation whose approval happened an hour ago *is* an allocation stuck for an hour, so the
//! production thresholds (30 minutes, 15 minutes, 5 minutes) hold unchanged.
//!
//! `PolicyDenialSpike` is asserted firing only: its rule looks at the last 10 minutes, so it
//! resolves 10 minutes after the burst, longer than this test should take; promtool tests its
//! resolution (deploy/prometheus/tests/policy.yml).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::audit;
use common::domain::{Proof, World, FINANCE_KID};
use common::eos::Instance;
use common::kms::{self, Forwarder};
use common::prometheus::{free_port, Prometheus};
use evalstream_audit::records::{ChainRecord, ChainRecordBody, CHAIN_RECORD_SCHEMA};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;
use serde_json::{json, Value};

/// Every `for:` of the production rules becomes this in the copy under test.
const SHORT_FOR: &str = "3s";
/// Bound on waiting for an alert to fire after its symptom was caused (scrape, evaluation and the
/// shortened `for:` take seconds; the signer's backoff adds up to 30 s).
const FIRE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on waiting for resolution: the 2-minute event windows plus scrape and evaluation slack.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(240);
/// Audit events produced before the scenarios, over the 4 partitions of `audit.events`.
const WARM_UP_EVENTS: u64 = 200;
/// The chain partition the forgery scenario tampers with.
const TAMPER_PARTITION: i32 = 3;
/// `[processor] feed_stale_after_s` and `finance_stale_after_s` of the test's policy and
/// settlement instances: how long work waits before `/ready` calls the feed stale.
const FEED_STALE_S: u64 = 20;
/// The registry for the registry-outage scenario (what `deploy/local/test.sh` starts).
const REGISTRY_ENV: &str = "EVALSTREAM_TEST_REGISTRY_URL";
const DEFAULT_REGISTRY: &str = "http://127.0.0.1:8081/apis/ccompat/v7";
/// Alerts whose resolution this test does not wait for, and why.
const NOT_AWAITED: &[(&str, &str)] =
    &[("PolicyDenialSpike", "its 10-minute window outlasts the test; promtool tests it")];

type Scenario = fn(&Stack);

/// Each runs on its own thread, concurrently with the others.
const SCENARIOS: &[(&str, Scenario)] = &[
    ("KMS outage", kms_outage),
    ("tampered chain entry", tampered_chain_entry),
    ("poison record", poison_record),
    ("frozen processor", frozen_processor),
    ("SentinelNet", sentinelnet),
    ("Finance", finance),
    ("registry outage", registry_outage),
];

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// deploy/prometheus/alerts.yml with every `for:` set to [`SHORT_FOR`], and nothing else changed.
fn rules_under_test() -> String {
    let real = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap();
    let mut shortened = 0;
    let copy: Vec<String> = real
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if let Some(duration) = trimmed.strip_prefix("for: ") {
                assert!(!duration.contains(' '), "unexpected `for:` line: {line}");
                shortened += 1;
                format!("{}for: {SHORT_FOR}", &line[..line.len() - trimmed.len()])
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(shortened > 0, "no `for:` found in alerts.yml");
    for (a, b) in real.lines().zip(&copy) {
        assert!(a == b || a.trim_start().starts_with("for: "), "only `for:` may differ: {a}");
    }
    copy.join("\n") + "\n"
}

/// The processors, the KMS and registry paths and Prometheus of one run.
struct Stack {
    /// Prefix A: topology, keys and signer registry of the main processors.
    world: World,
    prefix: String,
    /// Prefix B: the frozen processor and the registry user.
    prefix_b: String,
    codec: Codec,
    kms: Forwarder,
    registry: Forwarder,
    prom: Prometheus,
    /// `127.0.0.1:<port>` of the frozen-processor scenario's instance (its `instance` label).
    frozen_addr: String,
    frozen_pid: u32,
    /// Ops addresses of the policy, settlement and registry-using submissions instances.
    policy_addr: String,
    settlement_addr: String,
    submissions_addr: String,
    _instances: Vec<Instance>,
    _dir: PathBuf,
}

impl Stack {
    fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn start() -> Stack {
        let moto = kms::moto_url();
        let key_id = kms::create_signing_key(&moto);
        let forwarder = Forwarder::start(&moto);
        let registry_url = std::env::var(REGISTRY_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_REGISTRY.into());
        let registry = Forwarder::start(&registry_url);
        let registry_path = registry_url
            .trim_start_matches("http://")
            .split_once('/')
            .map_or(String::new(), |(_, path)| format!("/{path}"));
        // Prefix A with its topology, a local audit key, a finance key and a rogue key.
        let world = World::new("alerts");
        let prefix = world.prefix.clone();
        let frozen_prefix = format!("{}.", it::unique_name("alerts-frozen"));
        it::run(
            it::evalstream()
                .args(["topology", "apply"])
                .env("EVALSTREAM_TOPIC_PREFIX", &frozen_prefix),
            None,
        )
        .assert_success();
        wait_for_leaders(&frozen_prefix);
        let dir = audit::temp_dir("alerts");
        // The chain signs with KMS: its key joins the world's registry.
        let signers = world.signers.clone();
        let mut add = it::evalstream();
        add.args(["signers", "add", "--file", signers.to_str().unwrap(), "--kid", "kms-alerts"])
            .args(["--from-kms", &key_id, "--valid-from", "2000-01-01T00:00:00Z"])
            .env("AWS_ENDPOINT_URL", &moto)
            .envs(kms::aws_env());
        it::run(&mut add, None).assert_success();
        let config = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_string()
        };
        let chain_config =
            config("chain.toml", "[processor]\ncheckpoint_every = 20\npunctuate_ms = 500\n");
        let policy_config =
            config("policy.toml", &format!("[processor]\nfeed_stale_after_s = {FEED_STALE_S}\n"));
        let settlement_config = config(
            "settlement.toml",
            &format!("[processor]\nfinance_stale_after_s = {FEED_STALE_S}\n"),
        );

        let ports: Vec<u16> = (0..7).map(|_| free_port()).collect();
        let ops = |i: usize| format!("127.0.0.1:{}", ports[i]);
        let mut chain = Instance::new("audit-chain", &prefix, "chain-0")
            .env("EVALSTREAM_OPS_LISTEN", &ops(0))
            .env("EVALSTREAM_CONFIG", &chain_config)
            .env("REQUIRE_KMS", "true")
            .env("AUDIT_SIGNING_KMS_KEY_ID", &key_id)
            .env("AUDIT_SIGNER_KID", "kms-alerts")
            .env("AWS_ENDPOINT_URL", &forwarder.url)
            .env("AUDIT_SIGNING_TIMEOUT_MS", "1000")
            .env("AUDIT_SIGNING_MAX_ATTEMPTS", "1");
        for (k, v) in kms::aws_env() {
            chain = chain.env(k, v);
        }
        let verifier = Instance::new("audit-verifier", &prefix, "verifier-0")
            .env("EVALSTREAM_OPS_LISTEN", &ops(1))
            .env("SIGNERS_FILE", signers.to_str().unwrap());
        let totals =
            Instance::new("totals", &prefix, "totals-0").env("EVALSTREAM_OPS_LISTEN", &ops(2));
        let frozen = Instance::new("totals", &frozen_prefix, "frozen-0")
            .env("EVALSTREAM_OPS_LISTEN", &ops(3));
        let policy = world.instance(
            "policy",
            "policy-0",
            &[("EVALSTREAM_OPS_LISTEN", &ops(4)), ("EVALSTREAM_CONFIG", &policy_config)],
        );
        let settlement = world.instance(
            "settlement",
            "settlement-0",
            &[
                ("EVALSTREAM_OPS_LISTEN", &ops(5)),
                ("EVALSTREAM_CONFIG", &settlement_config),
                ("EVALSTREAM_RETRY_MAX_ATTEMPTS", "3"),
                ("EVALSTREAM_RETRY_BACKOFF_MS", "500"),
            ],
        );
        let submissions = Instance::new("submissions", &frozen_prefix, "submissions-0")
            .env("EVALSTREAM_OPS_LISTEN", &ops(6))
            .env("SCHEMA_REGISTRY_URL", &format!("{}{registry_path}", registry.url));
        let mut instances = vec![chain, verifier, totals, frozen, policy, settlement, submissions];
        for i in &mut instances {
            i.start();
        }
        let frozen_pid = instances[3].pid().unwrap();

        let targets: Vec<String> = (0..7).map(ops).collect();
        let prom = Prometheus::start(&rules_under_test(), &targets);
        let codec = Codec::from_env().unwrap();
        // Some input for each totals instance, so every runtime series exists.
        for (p, n) in [(&prefix, 20), (&frozen_prefix, 5)] {
            let topic = format!("{p}totals.input");
            let recs: Vec<it::RawRecord> = (0..n)
                .map(|i| {
                    let key = format!("k{i}");
                    it::RawRecord::new(common::eos::encode_input(&codec, &topic, &key, 1, ""))
                        .key(key)
                })
                .collect();
            it::produce_raw(&topic, &recs);
        }
        Stack {
            world,
            prefix,
            prefix_b: frozen_prefix,
            codec,
            kms: forwarder,
            registry,
            prom,
            frozen_addr: ops(3),
            frozen_pid,
            policy_addr: ops(4),
            settlement_addr: ops(5),
            submissions_addr: ops(6),
            _instances: instances,
            _dir: dir,
        }
    }

    /// Produces audit events `range`, event `i` to partition `partitions[i % len]`.
    fn produce_audit(&self, range: std::ops::Range<u64>, partitions: &[i32]) {
        let topic = self.topic("audit.events");
        let recs: Vec<it::RawRecord> = range
            .map(|i| {
                let id = format!("ev-{i}");
                let p = partitions[(i % partitions.len() as u64) as usize];
                it::RawRecord::new(audit::encode_event(&self.codec, &topic, &id, i))
                    .key(id)
                    .partition(p)
            })
            .collect();
        it::produce_raw(&topic, &recs);
    }

    /// Produces `(key, JSON value)` records to the physical `topic`, encoded with `schema`.
    fn produce_json(&self, topic: &str, schema: &str, records: &[(String, Value)]) {
        let recs: Vec<it::RawRecord> = records
            .iter()
            .map(|(k, v)| {
                let bytes = self
                    .codec
                    .encode_json(topic, schema, v)
                    .unwrap_or_else(|e| panic!("{schema}: {e}: {v}"));
                it::RawRecord::new(bytes).key(k.as_bytes().to_vec())
            })
            .collect();
        it::produce_raw(topic, &recs);
    }

    /// `evalstream <args>` under prefix A; must succeed.
    fn cli(&self, args: &[&str]) {
        self.world.cli(args).assert_success();
    }

    /// Waits until the `/ready` body of the instance at `addr` satisfies `cond`; returns it.
    fn wait_ready(&self, addr: &str, what: &str, mut cond: impl FnMut(&Value) -> bool) -> Value {
        let mut body = Value::Null;
        self.prom.wait_for(what, FIRE_TIMEOUT, || {
            body = get_json(addr, "/ready");
            cond(&body)
        });
        eprintln!("alerts: {what}: {}", body["dependencies"]);
        body
    }

    /// The value of a one-series query (`None` when it returns nothing).
    fn scalar(&self, promql: &str) -> Option<f64> {
        let result = self.prom.query(promql).unwrap_or_else(|e| panic!("{promql}: {e}"));
        result.first().and_then(|s| s["value"][1].as_str()?.parse().ok())
    }

    /// Traffic through every processor; then everything ready, every rule evaluating without
    /// error, and no alert pending or firing: the baseline that makes "it fired" mean something.
    fn warm_up(&self) {
        self.produce_audit(0..WARM_UP_EVENTS, &[0, 1, 2, 3]);
        // Submissions through the registry-using instance (prefix B), while the registry is up.
        let subs: Vec<(String, Value)> = (0..3)
            .map(|i| {
                let id = format!("warm-{i}");
                let v = json!({
                    "submission_id": id, "model_id": "m-1", "model_version": "v1",
                    "eval_suite": "safety", "submitter": "ci", "metrics": {"accuracy": 0.9},
                    "artifact_uri": "s3://evals/x", "submitted_at": now_ms(),
                });
                (id, v)
            })
            .collect();
        self.produce_json(&format!("{}eval.submissions", self.prefix_b), SUBMISSION, &subs);
        let p = &self.prom;
        p.wait_for("all 7 processors ready in Prometheus", Duration::from_secs(120), || {
            self.scalar("count(evalstream_ready == 1)") == Some(7.0)
        });
        p.wait_for("the warm-up submissions accepted", Duration::from_secs(60), || {
            self.scalar(r#"sum(eval_engine_eval_submissions_total{outcome="accepted"})"#)
                == Some(3.0)
        });
        p.wait_for("the warm-up events verified", Duration::from_secs(120), || {
            self.scalar("sum(audit_entries_verified_total)") == Some(WARM_UP_EVENTS as f64)
        });
        p.wait_for("every chain partition to end with a signed checkpoint", Duration::from_secs(60), || {
            let chain = audit::read_chain(&self.codec, &self.topic("audit.chain"));
            chain.len() == 4
                && chain.values().all(|recs| {
                    matches!(recs.last(), Some((_, r)) if matches!(&r.body, ChainRecordBody::Checkpoint(c) if c.signature.is_some()))
                })
        });
        let rules = p.api("/api/v1/rules?type=alert").unwrap();
        let rules: Vec<&serde_json::Value> = rules["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        let expected = rules_under_test().matches("- alert: ").count();
        assert_eq!(rules.len(), expected, "Prometheus loaded {} of {expected} alerts", rules.len());
        p.wait_for("every rule evaluated without error", Duration::from_secs(30), || {
            let data = p.api("/api/v1/rules?type=alert").unwrap();
            data["groups"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g["rules"].as_array().unwrap())
                .all(|r| r["health"] == "ok" && r["lastError"].as_str().unwrap_or("").is_empty())
        });
        p.wait_for(
            "no alert pending or firing before the scenarios",
            Duration::from_secs(60),
            || p.alerts().is_empty(),
        );
    }

    /// Waits until each alert in `names` with `labels` is firing.
    fn expect_firing(&self, scenario: &str, names: &[&str], labels: &[(&str, &str)]) {
        for name in names {
            self.prom.wait_for(
                &format!("{scenario}: {name} {labels:?} firing"),
                FIRE_TIMEOUT,
                || self.prom.firing(name, labels),
            );
            eprintln!("alerts: {scenario}: {name} firing");
        }
    }

    /// Waits until none of `names` with `labels` is pending or firing.
    fn expect_resolved(&self, scenario: &str, names: &[&str], labels: &[(&str, &str)]) {
        self.prom.wait_for(
            &format!("{scenario}: {names:?} {labels:?} resolved"),
            RESOLVE_TIMEOUT,
            || !self.prom.alerts().iter().any(|a| names.iter().any(|n| a.matches(n, labels))),
        );
        eprintln!("alerts: {scenario}: {names:?} resolved");
    }
}

/// The signer's path to KMS is cut while events arrive: checkpoints wait for a signature and
/// signing fails; when the path is back they are signed and the alerts resolve.
fn kms_outage(st: &Stack) {
    let alerts = [
        "AuditSigningFailures",
        "AuditCheckpointsPendingSignature",
        "AuditCheckpointsUnsignedForAnHour",
    ];
    let labels = [("processor", "audit-chain")];
    st.kms.cut();
    st.produce_audit(WARM_UP_EVENTS..WARM_UP_EVENTS + 60, &[0, 1]);
    st.expect_firing("KMS outage", &alerts, &labels);
    st.kms.restore();
    st.expect_resolved("KMS outage", &alerts, &labels);
}

/// A forged entry (another payload under the last entry's links) is produced straight to
/// `audit.chain`: the continuous verifier reports it. It is reported once, so the alert resolves
/// when its window has passed (the operator's recovery is a reconciliation event, not a fix).
fn tampered_chain_entry(st: &Stack) {
    let chain = audit::read_chain(&st.codec, &st.topic("audit.chain"));
    let last =
        *audit::entries(&chain[&TAMPER_PARTITION]).last().expect("entries on the tamper partition");
    let mut forged = last.clone();
    forged.seq = last.seq + 1;
    forged.prev_hash = last.entry_hash;
    forged.source_offset = last.source_offset + 1;
    forged.event_id = "forged".into();
    forged.canonical = br#"{"actor":"mallory","event_id":"forged","occurred_at":1790000009999,"payload":{"n":1},"subject":"model-1","type":"eval.promotion_approved"}"#.to_vec();
    let record =
        ChainRecord { partition: TAMPER_PARTITION as u32, body: ChainRecordBody::Entry(forged) };
    let topic = st.topic("audit.chain");
    let bytes = st.codec.encode(&topic, CHAIN_RECORD_SCHEMA, &record.to_avro().unwrap()).unwrap();
    it::produce_raw(&topic, &[it::RawRecord::new(bytes).partition(TAMPER_PARTITION)]);
    let labels = [("processor", "audit-verifier")];
    st.expect_firing("tampered chain entry", &["AuditVerificationFailure"], &labels);
    st.expect_resolved("tampered chain entry", &["AuditVerificationFailure"], &labels);
}

/// Bytes that are no Avro record at all, on `totals.input`: dead-lettered, the stream moves on.
fn poison_record(st: &Stack) {
    let topic = st.topic("totals.input");
    it::produce_raw(&topic, &[it::RawRecord::new(b"\x00not avro".to_vec()).key("poison")]);
    let labels = [("processor", "totals"), ("topic", "totals.input")];
    st.expect_firing("poison record", &["EvalstreamDeadLetters"], &labels);
    st.expect_resolved("poison record", &["EvalstreamDeadLetters"], &labels);
}

/// A processor frozen (SIGSTOP) cannot be scraped; kept frozen past its session timeout (6 s in
/// tests), it has lost its partitions when it resumes.
fn frozen_processor(st: &Stack) {
    let labels = [("instance", st.frozen_addr.as_str())];
    signal(st.frozen_pid, libc::SIGSTOP);
    st.expect_firing("frozen processor", &["EvalstreamTargetDown"], &labels);
    // Part of the fault, not a verdict: frozen well past session.timeout.ms.
    std::thread::sleep(Duration::from_secs(10));
    signal(st.frozen_pid, libc::SIGCONT);
    st.expect_firing("frozen processor", &["EvalstreamRebalanceLost"], &labels);
    st.expect_resolved(
        "frozen processor",
        &["EvalstreamTargetDown", "EvalstreamRebalanceLost"],
        &labels,
    );
}

const SUBMISSION: &str = "evalstream.eval.EvalSubmission";
const PROMOTION_REQUEST: &str = "evalstream.eval.PromotionRequest";
const ALLOCATION_REQUEST: &str = "evalstream.alloc.AllocationRequest";
const DECISION: &str = "evalstream.policy.PolicyDecision";
const SETTLEMENT: &str = "evalstream.finance.FinanceSettlement";
const MINUTE_MS: i64 = 60_000;

/// A promotion request (the wire contract's JSON) made at `requested_at`.
fn promotion_request(id: &str, requested_at: i64, risk: &str) -> (String, Value) {
    let v = json!({
        "request_id": id, "submission_id": id.trim_end_matches(":promotion"), "model_id": "m-1",
        "model_version": "v1", "target_stage": "canary", "requested_by": "ci",
        "requested_at": requested_at, "risk_level_hint": risk,
    });
    (id.to_string(), v)
}

/// A real SentinelNet decision about `request` made at `decided_at`.
fn decision(
    id: &str,
    request: &str,
    kind: &str,
    verdict: &str,
    decided_at: i64,
) -> (String, Value) {
    let v = json!({
        "decision_id": id, "request_id": request, "subject_kind": kind, "decision": verdict,
        "reasons": if verdict == "deny" { vec!["toxicity_above_threshold"] } else { vec![] },
        "policy_version": "pv-alerts", "risk_level": "medium", "decided_at": decided_at,
    });
    (request.to_string(), v)
}

/// SentinelNet's symptoms, in order: a silent feed, a denial spike, degraded mode.
fn sentinelnet(st: &Stack) {
    let now = now_ms();
    let labels = [("processor", "policy"), ("subject_kind", "promotion")];
    let requests = st.topic("eval.promotion-requests");
    let decisions = st.topic("policy.decisions");

    // A request that has waited 20 minutes, and no decision for as long (event times).
    st.produce_json(
        &requests,
        PROMOTION_REQUEST,
        &[promotion_request("stale-1:promotion", now - 20 * MINUTE_MS, "medium")],
    );
    st.expect_firing("SentinelNet", &["PolicyRequestWaitingTooLong"], &labels);
    st.expect_firing("SentinelNet", &["PolicyFeedStale"], &[("processor", "policy")]);
    let body = st.wait_ready(&st.policy_addr, "policy /ready: policy_feed not ok", |b| {
        b["dependencies"]["policy_feed"]["ok"] == false
    });
    assert_eq!(body["ready"], true, "a silent SentinelNet must not make policy not ready: {body}");
    let detail = body["dependencies"]["policy_feed"]["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("stale: 1 requests waiting"), "{body}");
    // SentinelNet answers.
    st.produce_json(
        &decisions,
        DECISION,
        &[decision("d-stale-1", "stale-1:promotion", "promotion", "allow", now_ms())],
    );
    st.expect_resolved(
        "SentinelNet",
        &["PolicyRequestWaitingTooLong", "PolicyFeedStale"],
        &[("processor", "policy")],
    );
    st.wait_ready(&st.policy_addr, "policy /ready: policy_feed ok again", |b| {
        b["dependencies"]["policy_feed"]["ok"] == true
    });

    // A burst of denials with no baseline before it.
    let ids: Vec<String> = (0..12).map(|i| format!("spike-{i}:promotion")).collect();
    let at = now_ms();
    let reqs: Vec<(String, Value)> =
        ids.iter().map(|id| promotion_request(id, at, "medium")).collect();
    st.produce_json(&requests, PROMOTION_REQUEST, &reqs);
    let denials: Vec<(String, Value)> =
        ids.iter().map(|id| decision(&format!("d-{id}"), id, "promotion", "deny", at)).collect();
    st.produce_json(&decisions, DECISION, &denials);
    st.expect_firing("SentinelNet", &["PolicyDenialSpike"], &labels);

    // Degraded mode (runbook option A): on, a low-risk request passes as best effort, off.
    st.cli(&[
        "control",
        "degraded",
        "on",
        "--reason",
        "INC-1 SentinelNet down",
        "--actor",
        "alerts-test",
    ]);
    st.expect_firing("SentinelNet", &["PolicyDegradedMode"], &[("processor", "policy")]);
    st.produce_json(
        &requests,
        PROMOTION_REQUEST,
        &[promotion_request("low-1:promotion", now_ms(), "low")],
    );
    st.prom.wait_for("a best-effort pass counted", FIRE_TIMEOUT, || {
        st.scalar("sum(eval_engine_policy_best_effort_total)").is_some_and(|v| v >= 1.0)
    });
    st.cli(&[
        "control",
        "degraded",
        "off",
        "--reason",
        "INC-1 SentinelNet back",
        "--actor",
        "alerts-test",
    ]);
    // SentinelNet confirms the best-effort pass, so nothing is left waiting.
    st.produce_json(
        &decisions,
        DECISION,
        &[decision("d-low-1", "low-1:promotion", "promotion", "allow", now_ms())],
    );
    st.expect_resolved("SentinelNet", &["PolicyDegradedMode"], &[("processor", "policy")]);
}

/// A settlement as Finance sends it, for `allocation` of `amount` EUR, its proof signed with
/// `key` as `kid`.
fn settlement(
    st: &Stack,
    key: &std::path::Path,
    kid: &str,
    ledger: &str,
    allocation: &str,
    amount: i64,
    settled_at: i64,
) -> (String, Value) {
    let proof = Proof {
        ledger_entry_id: ledger.into(),
        allocation_id: allocation.into(),
        amount_minor: amount,
        currency: "EUR".into(),
        settled_at,
    };
    (allocation.to_string(), st.world.settlement(key, kid, &proof))
}

/// Finance's symptoms, in order: a bad ledger proof, a settlement that can never apply, an
/// allocation stuck in pending_finance, a freeze.
fn finance(st: &Stack) {
    let settlements = st.topic("finance.settlements");
    let settlement_labels = [("processor", "settlement")];
    // Booked two hours ago: these settlements say nothing about Finance sending now.
    let old = now_ms() - 120 * MINUTE_MS;

    // A proof signed by a key no registry knows.
    let forged = settlement(
        st,
        &st.world.rogue_key,
        "finance-rogue",
        "led-forged",
        "forged-1:allocation",
        500,
        old,
    );
    st.produce_json(&settlements, SETTLEMENT, &[forged]);
    st.expect_firing(
        "Finance",
        &["LedgerProofRejected"],
        &[("processor", "settlement"), ("reason", "unknown_signer")],
    );

    // A settlement for an allocation that never comes: retried, then dead-lettered.
    let ghost = settlement(
        st,
        &st.world.finance_key,
        FINANCE_KID,
        "led-ghost",
        "ghost-1:allocation",
        500,
        old,
    );
    st.produce_json(&settlements, SETTLEMENT, &[ghost]);
    st.expect_firing(
        "Finance",
        &["SettlementFailures"],
        &[("processor", "settlement"), ("reason", "retries_exhausted")],
    );

    // An allocation approved an hour ago and never settled.
    let hour_ago = now_ms() - 60 * MINUTE_MS;
    let request = json!({
        "allocation_id": "stuck-1:allocation", "requester": "ci",
        "resource": {"gpu_type": "h100", "gpu_count": 1, "hours": 1.0},
        "amount_minor": 500, "currency": "EUR", "cost_center": "cc-1", "requested_at": hour_ago - MINUTE_MS,
    });
    st.produce_json(
        &st.topic("alloc.requests"),
        ALLOCATION_REQUEST,
        &[("stuck-1:allocation".into(), request)],
    );
    st.produce_json(
        &st.topic("policy.decisions"),
        DECISION,
        &[decision("d-stuck-1", "stuck-1:allocation", "allocation", "allow", hour_ago)],
    );
    st.expect_firing("Finance", &["AllocationsStuckPendingFinance"], &settlement_labels);
    let body = st.wait_ready(&st.settlement_addr, "settlement /ready: finance not ok", |b| {
        b["dependencies"]["finance"]["ok"] == false
    });
    assert_eq!(body["ready"], true, "a silent Finance must not make settlement not ready: {body}");
    // Finance settles it.
    let paid = settlement(
        st,
        &st.world.finance_key,
        FINANCE_KID,
        "led-stuck-1",
        "stuck-1:allocation",
        500,
        now_ms(),
    );
    st.produce_json(&settlements, SETTLEMENT, &[paid]);
    st.expect_resolved("Finance", &["AllocationsStuckPendingFinance"], &settlement_labels);
    st.wait_ready(&st.settlement_addr, "settlement /ready: finance ok again", |b| {
        b["dependencies"]["finance"]["ok"] == true
    });

    // Freeze and unfreeze (runbook: "freeze allocations and run reconciliation").
    st.cli(&[
        "control",
        "freeze-allocations",
        "on",
        "--reason",
        "INC-2 bad proofs",
        "--actor",
        "alerts-test",
    ]);
    st.expect_firing("Finance", &["AllocationsFrozen"], &settlement_labels);
    st.cli(&[
        "control",
        "freeze-allocations",
        "off",
        "--reason",
        "INC-2 reconciled",
        "--actor",
        "alerts-test",
    ]);
    st.expect_resolved("Finance", &["AllocationsFrozen"], &settlement_labels);

    st.expect_resolved(
        "Finance",
        &["LedgerProofRejected", "SettlementFailures"],
        &settlement_labels,
    );
}

/// The schema registry becomes unreachable for a processor that encodes through it: it cannot
/// process, so it is not ready (the one instance of its processor: both readiness alerts).
fn registry_outage(st: &Stack) {
    let alerts = ["EvalstreamInstanceNotReady", "EvalstreamProcessorNotReady"];
    let labels = [("processor", "submissions")];
    st.registry.cut();
    let body =
        st.wait_ready(&st.submissions_addr, "submissions /ready: schema registry down", |b| {
            b["ready"] == false
        });
    assert_eq!(body["dependencies"]["schema_registry"]["ok"], false, "{body}");
    assert!(
        body["reasons"][0].as_str().unwrap_or_default().starts_with("schema_registry unavailable"),
        "{body}"
    );
    st.expect_firing("registry outage", &alerts, &labels);
    st.registry.restore();
    st.wait_ready(&st.submissions_addr, "submissions /ready again", |b| b["ready"] == true);
    st.expect_resolved("registry outage", &alerts, &labels);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// GETs a JSON body from an ops endpoint (any status); `Null` when it cannot be read.
fn get_json(addr: &str, path: &str) -> Value {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return Value::Null };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null)
}

/// Waits until every partition of every topic named `<prefix>…` has a leader. `topology apply`
/// returns once the topics are created; a processor started before their leaders are elected
/// stops at start-up (its restore treats NotLeaderForPartition as fatal), which is not what this
/// test is about.
fn wait_for_leaders(prefix: &str) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = it::client_config().create().unwrap();
    it::wait_until(
        &format!("leaders for every {prefix}* partition"),
        Duration::from_secs(60),
        || {
            let Ok(md) = client.fetch_metadata(None, Duration::from_secs(5)) else { return false };
            let topics: Vec<_> =
                md.topics().iter().filter(|t| t.name().starts_with(prefix)).collect();
            !topics.is_empty()
                && topics.iter().all(|t| {
                    t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none())
                })
        },
    );
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this test spawned and still owns (not yet reaped).
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed: {}", std::io::Error::last_os_error());
}

/// Every panel query of deploy/grafana/evalstream.json evaluates without error against the
/// Prometheus that saw the scenarios, and returns data.
fn dashboard_queries_evaluate(st: &Stack) {
    // Panel queries (title, a part of the expression) that may show no data here, and why;
    // `true`: data there means this entry is stale.
    const NO_DATA_EXPECTED: &[(&str, &str, &str, bool)] = &[
        ("Transactions aborted /s", "", "the scenarios abort a transaction only by chance", false),
        // The baseline line: the hour that ended 10 minutes ago, older than this test.
        ("Policy denials /s", "offset 10m", "the test is younger than the baseline window", true),
    ];
    let text = std::fs::read_to_string(repo_file("deploy/grafana/evalstream.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    let mut problems = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else { continue };
            let promql = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "10m")
                .replace("$namespace", ".*")
                .replace("$processor", ".*");
            checked += 1;
            match st.prom.query(&promql) {
                Err(e) => problems.push(format!("{title}: {expr}: {e}")),
                Ok(r) if r.is_empty() => {
                    let excused = NO_DATA_EXPECTED
                        .iter()
                        .any(|(t, part, _, _)| *t == title && expr.contains(part));
                    if !excused {
                        problems.push(format!("{title}: {expr}: no data"));
                    }
                }
                Ok(r) => {
                    if NO_DATA_EXPECTED
                        .iter()
                        .any(|(t, part, _, stale)| *t == title && expr.contains(part) && *stale)
                    {
                        problems.push(format!(
                            "{title}: has data now ({} series): remove it from NO_DATA_EXPECTED",
                            r.len()
                        ));
                    }
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} panel queries found");
    assert!(problems.is_empty(), "dashboard queries:\n{}", problems.join("\n"));
    eprintln!("alerts: {checked} dashboard queries evaluated");
}

#[test]
fn alerts_fire_on_runbook_symptoms_and_resolve_after_recovery() {
    let stack = Stack::start();
    stack.warm_up();
    std::thread::scope(|s| {
        let handles: Vec<_> = SCENARIOS
            .iter()
            .map(|(name, scenario)| {
                let stack = &stack;
                std::thread::Builder::new()
                    .name((*name).to_string())
                    .spawn_scoped(s, move || scenario(stack))
                    .unwrap()
            })
            .collect();
        let failed: Vec<_> = handles.into_iter().filter_map(|h| h.join().err()).collect();
        assert!(failed.is_empty(), "{} scenario(s) failed (see above)", failed.len());
    });
    dashboard_queries_evaluate(&stack);
    let left: Vec<String> = stack
        .prom
        .alerts()
        .iter()
        .filter(|a| !NOT_AWAITED.iter().any(|(n, _)| a.name == *n))
        .map(|a| format!("{} {} {:?}", a.name, a.state, a.labels))
        .collect();
    assert!(left.is_empty(), "alerts still active after every recovery: {left:#?}");
}
