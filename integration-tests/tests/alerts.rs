#![cfg(feature = "broker")]
//! The alert rules proven end to end: a real Prometheus scrapes real processors, the runbook's
//! symptoms are caused for real, and the Prometheus API must show the matching alert `firing`,
//! then resolved after recovery. At the end every Grafana panel's query is evaluated against the
//! same Prometheus.
//!
//! ```text
//!   moto ◄── forwarder (cut/restore) ◄── audit-chain ──► audit.chain ──► audit-verifier
//!   totals (prefix A: poison record)        totals (prefix B: SIGSTOP/SIGCONT)
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
//!
//! Alerts on metrics of processors not built yet (policy, settlement) are covered by promtool
//! only (deploy/prometheus/tests); their scenarios are added here as those processors land: a
//! scenario is one function and one line in [`SCENARIOS`].

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::audit;
use common::eos::Instance;
use common::kms::{self, Forwarder};
use common::prometheus::{free_port, Prometheus};
use evalstream_audit::records::{ChainRecord, ChainRecordBody, CHAIN_RECORD_SCHEMA};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;

/// Every `for:` of the production rules becomes this in the copy under test.
const SHORT_FOR: &str = "3s";
/// Bound on waiting for an alert to fire after its symptom was caused (scrape, evaluation and the
/// shortened `for:` take seconds; the signer's backoff adds up to 30 s).
const FIRE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on waiting for resolution: the 2-minute event windows plus scrape and evaluation slack.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(240);
/// Audit events produced before the scenarios, over the 4 partitions of `audit.events`.
const WARM_UP_EVENTS: u64 = 200;
/// The chain partition the forgery scenario tampers with; no other scenario writes to it.
const TAMPER_PARTITION: i32 = 3;

type Scenario = fn(&Stack);

/// Each runs on its own thread, concurrently with the others.
const SCENARIOS: &[(&str, Scenario)] = &[
    ("KMS outage", kms_outage),
    ("tampered chain entry", tampered_chain_entry),
    ("poison record", poison_record),
    ("frozen processor", frozen_processor),
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

/// The processors, the KMS path and Prometheus of one run.
struct Stack {
    prefix: String,
    codec: Codec,
    kms: Forwarder,
    prom: Prometheus,
    /// `127.0.0.1:<port>` of the frozen-processor scenario's instance (its `instance` label).
    frozen_addr: String,
    frozen_pid: u32,
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
        let prefix = format!("{}.", it::unique_name("alerts"));
        let frozen_prefix = format!("{}.", it::unique_name("alerts-frozen"));
        for p in [&prefix, &frozen_prefix] {
            it::run(
                it::evalstream().args(["topology", "apply"]).env("EVALSTREAM_TOPIC_PREFIX", p),
                None,
            )
            .assert_success();
            wait_for_leaders(p);
        }
        let dir = audit::temp_dir("alerts");
        let signers = dir.join("signers.json");
        let mut add = it::evalstream();
        add.args(["signers", "add", "--file", signers.to_str().unwrap(), "--kid", "kms-alerts"])
            .args(["--from-kms", &key_id, "--valid-from", "2000-01-01T00:00:00Z"])
            .env("AWS_ENDPOINT_URL", &moto)
            .envs(kms::aws_env());
        it::run(&mut add, None).assert_success();
        let chain_config = dir.join("chain.toml");
        std::fs::write(&chain_config, "[processor]\ncheckpoint_every = 20\npunctuate_ms = 500\n")
            .unwrap();

        let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
        let ops = |i: usize| format!("127.0.0.1:{}", ports[i]);
        let mut chain = Instance::new("audit-chain", &prefix, "chain-0")
            .env("EVALSTREAM_OPS_LISTEN", &ops(0))
            .env("EVALSTREAM_CONFIG", chain_config.to_str().unwrap())
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
        let mut instances = vec![chain, verifier, totals, frozen];
        for i in &mut instances {
            i.start();
        }
        let frozen_pid = instances[3].pid().unwrap();

        let targets: Vec<String> = (0..4).map(ops).collect();
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
            prefix,
            codec,
            kms: forwarder,
            prom,
            frozen_addr: ops(3),
            frozen_pid,
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

    /// The value of a one-series query (`None` when it returns nothing).
    fn scalar(&self, promql: &str) -> Option<f64> {
        let result = self.prom.query(promql).unwrap_or_else(|e| panic!("{promql}: {e}"));
        result.first().and_then(|s| s["value"][1].as_str()?.parse().ok())
    }

    /// Traffic through every processor; then everything ready, every rule evaluating without
    /// error, and no alert pending or firing: the baseline that makes "it fired" mean something.
    fn warm_up(&self) {
        self.produce_audit(0..WARM_UP_EVENTS, &[0, 1, 2, 3]);
        let p = &self.prom;
        p.wait_for("all 4 processors ready in Prometheus", Duration::from_secs(120), || {
            self.scalar("count(evalstream_ready == 1)") == Some(4.0)
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
/// Prometheus that saw the scenarios, and returns data unless it only reads metrics of
/// processors not built yet.
fn dashboard_queries_evaluate(st: &Stack) {
    const NOT_BUILT_YET: &[&str] = &["eval_engine_", "allocator_"];
    // Panels that may show no data here, and why; `true`: data there means this entry is stale.
    const NO_DATA_EXPECTED: &[(&str, &str, bool)] = &[
        ("Retried /s", "no processor here returns NotReady, so nothing is retried", false),
        ("Transactions aborted /s", "the scenarios abort a transaction only by chance", false),
        // librdkafka's per-partition consumer_lag is computed from the consumer's committed
        // offset, which a transactional consumer (offsets committed through the producer) never
        // has; the engine skips the -1. Remove this line when the engine exports the lag.
        ("Consumer lag", "the engine exports no lag for a transactional consumer yet", true),
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
                    let excused = NOT_BUILT_YET.iter().any(|m| expr.contains(m))
                        || NO_DATA_EXPECTED.iter().any(|(t, _, _)| *t == title);
                    if !excused {
                        problems.push(format!("{title}: {expr}: no data"));
                    }
                }
                Ok(r) => {
                    if NO_DATA_EXPECTED.iter().any(|(t, _, stale)| *t == title && *stale) {
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
        .map(|a| format!("{} {} {:?}", a.name, a.state, a.labels))
        .collect();
    assert!(left.is_empty(), "alerts still active after every recovery: {left:#?}");
}
