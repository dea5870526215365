//! The domain's operator commands against a real broker and running processors:
//! `policy simulate`, `alloc list`, `finance verify-proof`, `control degraded|freeze-allocations`,
//! `dlq requeue finance.settlements` (exactly once), and `reconcile --apply` with its report and
//! `audit.reconciliation` event. Each step asserts what the command printed and what the
//! processors did, read back independently.
#![cfg(feature = "broker")]

mod common;

use std::time::{Duration, Instant};

use common::domain::{reason_code, Proof, World, FINANCE_KID};
use serde_json::{json, Value};

const T: i64 = 1_763_458_200_000;
const ALL: &[&str] = &["submissions", "policy", "settlement"];

fn submission(id: &str, promotion: Option<Value>, allocation: Option<Value>) -> (String, Value) {
    let mut v = json!({
        "submission_id": id, "model_id": format!("m-{id}"), "model_version": "v1", "eval_suite": "safety",
        "submitter": "ci", "metrics": {"accuracy": 0.9}, "artifact_uri": "s3://evals/x", "submitted_at": T,
    });
    if let Some(p) = promotion {
        v["promotion"] = p;
    }
    if let Some(a) = allocation {
        v["allocation"] = a;
    }
    (id.to_string(), v)
}

fn ask(amount: i64) -> Value {
    json!({"resource": {"gpu_type": "h100", "gpu_count": 1, "hours": 1.0}, "amount_minor": amount, "currency": "EUR", "cost_center": "cc"})
}

fn decision(id: &str, request: &str, kind: &str, verdict: &str) -> (String, Value) {
    (
        request.to_string(),
        json!({
            "decision_id": id, "request_id": request, "subject_kind": kind, "decision": verdict,
            "reasons": if verdict == "deny" { vec!["toxicity"] } else { vec![] },
            "policy_version": "pv-1", "risk_level": "medium", "decided_at": T + 1000,
        }),
    )
}

fn proof(ledger: &str, alloc: &str, amount: i64) -> Proof {
    Proof {
        ledger_entry_id: ledger.into(),
        allocation_id: alloc.into(),
        amount_minor: amount,
        currency: "EUR".into(),
        settled_at: T + 5000,
    }
}

fn allocations(w: &World, extra: &[&str]) -> Value {
    let mut args = vec!["alloc", "list", "--json"];
    args.extend_from_slice(extra);
    let out = w.cli(&args);
    out.assert_success();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn state_of(w: &World, id: &str) -> String {
    let all = allocations(w, &[]);
    all["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["allocation_id"] == id)
        .map_or("unknown".into(), |a| a["state"].as_str().unwrap().to_string())
}

#[test]
fn operator_commands_drive_and_inspect_the_domain_processors() {
    let started = Instant::now();
    let w = World::new("domcli");
    let config = w.dir.join("policy.toml");
    std::fs::write(&config, "[processor]\ndegraded_max_amount_minor = 5000\n").unwrap();
    let retry = [("EVALSTREAM_RETRY_MAX_ATTEMPTS", "2"), ("EVALSTREAM_RETRY_BACKOFF_MS", "200")];
    let mut procs = [
        w.instance("submissions", "c0", &[]),
        w.instance("policy", "c0", &[("EVALSTREAM_CONFIG", config.to_str().unwrap())]),
        w.instance("settlement", "c0", &retry),
    ];
    for p in procs.iter_mut() {
        p.start();
    }

    let (s, e) = ("evalstream.eval.EvalSubmission", "evalstream.policy.PolicyDecision");
    w.produce(
        "eval.submissions",
        s,
        &[
            submission(
                "s1",
                Some(json!({"target_stage": "canary", "risk_level_hint": "low"})),
                Some(ask(4000)),
            ),
            submission("s2", Some(json!({"target_stage": "production"})), None),
            submission("s3", None, Some(ask(9000))),
        ],
    );
    w.wait_quiescent(ALL, Duration::from_secs(90));

    // policy simulate: the gate answers, nothing changes.
    let out = w.cli(&[
        "policy",
        "simulate",
        "--request-id",
        "s2:promotion",
        "--subject-kind",
        "promotion",
        "--decision",
        "deny",
        "--policy-version",
        "pv-2",
        "--reason",
        "toxicity",
    ]);
    out.assert_success();
    assert!(
        out.stdout.contains("currently pending_policy")
            && out.stdout.contains("would give: denied"),
        "{out}"
    );

    w.produce(
        "policy.decisions",
        e,
        &[
            decision("d2", "s2:promotion", "promotion", "deny"),
            decision("d3", "s3:allocation", "allocation", "allow"),
        ],
    );
    w.wait_quiescent(ALL, Duration::from_secs(90));
    let st = "evalstream.finance.FinanceSettlement";
    let good = w.good_settlement(&proof("L-good", "s3:allocation", 9000));
    let forged =
        w.settlement(&w.rogue_key, "finance-rogue", &proof("L-bad", "s3:allocation", 9000));
    let early = w.good_settlement(&proof("L-s1", "s1:allocation", 4000));
    w.produce(
        "finance.settlements",
        st,
        &[
            ("s3:allocation".into(), good),
            ("s3:allocation".into(), forged),
            ("s1:allocation".into(), early),
        ],
    );
    w.wait_quiescent(ALL, Duration::from_secs(90));

    // alloc list: state and filters.
    assert_eq!(state_of(&w, "s3:allocation"), "settled");
    assert_eq!(state_of(&w, "s1:allocation"), "pending_policy");
    let pending = allocations(&w, &["--state", "pending_policy"]);
    assert_eq!(pending["count"], 1, "{pending}");
    let text = w.cli(&["alloc", "list", "--state", "settled"]);
    assert!(
        text.stdout.contains("s3:allocation")
            && text.stdout.contains("L-good")
            && !text.stdout.contains("s1:"),
        "{text}"
    );

    // finance verify-proof: ok, and a forged proof with its reason and exit code 1.
    let ok = w.cli(&["finance", "verify-proof", "--ledger-entry-id", "L-good"]);
    ok.assert_success();
    assert!(ok.stdout.contains(": ok: signed by finance-test"), "{ok}");
    let bad = w.cli(&["finance", "verify-proof", "--ledger-entry-id", "L-bad", "--json"]);
    bad.assert_failure();
    let doc: Value = serde_json::from_str(&bad.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    let statuses: Vec<&str> =
        doc["copies"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["unknown_signer", "unknown_signer"],
        "the topic copy and the DLQ copy: {doc}"
    );

    // The DLQ holds the forged settlement (bad_proof) and the early one (retries_exhausted).
    let mut dlq: Vec<(String, String)> = w
        .dlq("finance.settlements")
        .into_iter()
        .map(|(k, c, r)| (k, reason_code(&c, &r)))
        .collect();
    dlq.sort();
    assert_eq!(
        dlq,
        [
            ("s1:allocation".to_string(), "retries_exhausted".to_string()),
            ("s3:allocation".into(), "bad_proof".into())
        ]
    );

    // control degraded on: s1's low-risk promotion and small allocation go through as best effort.
    let on = w.cli(&[
        "control",
        "degraded",
        "on",
        "--reason",
        "INC-1 SentinelNet down",
        "--actor",
        "alice",
        "--wait",
        "60",
    ]);
    on.assert_success();
    assert!(on.stdout.contains("applied by policy in every partition"), "{on}");
    w.wait_quiescent(ALL, Duration::from_secs(90));
    let outcomes: Vec<String> = w
        .read("eval.promotions")
        .into_iter()
        .filter(|r| r.2 == "s1:promotion")
        .map(|r| r.3["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, ["pending_policy", "best_effort"]);
    assert_eq!(state_of(&w, "s1:allocation"), "pending_finance");

    // Finance recovered: the dead-lettered settlement is requeued exactly once, however often.
    let rq = w.cli(&["dlq", "requeue", "finance.settlements", "--class", "retries_exhausted"]);
    rq.assert_success();
    assert!(rq.stdout.contains("requeued"), "{rq}");
    let again = w.cli(&["dlq", "requeue", "finance.settlements", "--class", "retries_exhausted"]);
    assert!(
        again.stdout.contains("skipped") && again.stdout.contains("already requeued"),
        "{again}"
    );
    w.wait_quiescent(ALL, Duration::from_secs(90));
    let settled_s1 = w
        .read("alloc.state")
        .into_iter()
        .filter(|r| r.2 == "s1:allocation" && r.3["to_state"] == "settled")
        .count();
    assert_eq!(settled_s1, 1, "settled exactly once");

    // control freeze-allocations: an allocation decision is held, released on unfreeze.
    w.produce("eval.submissions", s, &[submission("s4", None, Some(ask(100_000)))]);
    w.wait_quiescent(ALL, Duration::from_secs(90));
    w.cli(&["control", "freeze-allocations", "on", "--reason", "INC-2 bad proofs", "--wait", "60"])
        .assert_success();
    w.produce("policy.decisions", e, &[decision("d4", "s4:allocation", "allocation", "allow")]);
    w.wait_quiescent(ALL, Duration::from_secs(90));
    assert_eq!(state_of(&w, "s4:allocation"), "pending_policy", "held while frozen");

    // reconcile during the freeze: Finance's export has L-good but not L-s1.
    let export = w.dir.join("export.jsonl");
    std::fs::write(&export, r#"{"ledger_entry_id":"L-good","allocation_id":"s3:allocation","amount_minor":9000,"currency":"EUR"}"#).unwrap();
    let report = w.dir.join("report.json");
    let rec = w.cli(&[
        "reconcile",
        "--ledger-export",
        export.to_str().unwrap(),
        "--signers",
        w.signers.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--apply",
        "--run-id",
        "rec-cli",
        "--actor",
        "carol",
    ]);
    rec.assert_success();
    assert!(
        rec.stdout.contains("[correction] s1:allocation: settled -> settlement_failed"),
        "{rec}"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(doc["summary"]["matched"], 1, "{doc}");
    assert_eq!(doc["summary"]["missing_in_ledger"], 1);
    assert_eq!(doc["findings"]["corrections"][0]["allocation_id"], "s1:allocation");
    w.wait_quiescent(ALL, Duration::from_secs(90));
    assert_eq!(
        state_of(&w, "s1:allocation"),
        "settlement_failed",
        "the correction applies while frozen"
    );
    let events = w.read("audit.events");
    let rec_event = events
        .iter()
        .find(|r| r.3["type"] == "audit.reconciliation")
        .expect("audit.reconciliation event");
    assert_eq!(
        (rec_event.3["subject"].as_str(), rec_event.3["actor"].as_str()),
        (Some("rec-cli"), Some("carol"))
    );
    let payload: Value = serde_json::from_str(rec_event.3["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["corrections"], json!(["rec-cli/s1:allocation"]));
    assert!(events
        .iter()
        .any(|r| r.3["event_id"]
            == "settlement:settlement_failed:s1:allocation:rec-cli/s1:allocation"));

    w.cli(&["control", "freeze-allocations", "off", "--reason", "INC-2 closed", "--wait", "60"])
        .assert_success();
    w.wait_quiescent(ALL, Duration::from_secs(90));
    assert_eq!(state_of(&w, "s4:allocation"), "pending_finance", "released");
    let switch_events = events.iter().filter(|r| r.3["type"] == "ops.switch").count();
    assert_eq!(switch_events, 2, "control degraded on and freeze on, each audited once");

    for p in procs.iter_mut() {
        assert!(p.running(), "{} stopped", p.id);
        p.stop();
    }
    let help = w.cli(&["control", "--help"]);
    assert!(
        help.stdout.contains("degraded") && help.stdout.contains("freeze-allocations"),
        "{help}"
    );
    eprintln!("domain_cli took {:?} (finance key {FINANCE_KID})", started.elapsed());
}
