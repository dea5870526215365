#![cfg(feature = "broker")]
//! The DR drill (`evalstream drill`, the runbook's monthly drill) on Apache Kafka: a live system
//! with a signed audit chain; the drill exports it, restores it into a fresh prefix, verifies it
//! there and runs the promotions/allocations scenario on the restored system.
//!
//! The verdict does not rest on the drill's own report alone:
//! - the restored `audit.chain` is compared with the live one by an independent reader, record
//!   by record, key and value bytes;
//! - the scenario's outcomes are counted from the restored system's output topics against the
//!   scenario's documented rule (promotion `i` denied when `i % 3 == 0`, allocation `i` denied
//!   when `i % 4 == 0`, every other allocation settled);
//! - a tampered archive makes the drill fail at `import` and writes nothing into the restored
//!   chain.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::audit;
use common::domain::World;
use evalstream_integration_tests as it;
use serde_json::Value;

/// Audit events of the live system.
const EVENTS: u64 = 400;
/// Submissions of the drill's scenario.
const SUBMISSIONS: usize = 12;

/// The drill's report, parsed, and its exit code.
fn drill(w: &World, extra: &[&str]) -> (Option<i32>, Value, it::CmdOutput) {
    let report = w.dir.join(it::unique_name("drill-report"));
    let report = report.with_extension("json");
    let mut args = vec![
        "drill",
        "--signers",
        w.signers.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--submissions",
        "12",
        "--timeout",
        "120",
    ];
    args.extend_from_slice(extra);
    let out = w.cli(&args);
    let doc: Value = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("no report written: {out}"));
    assert!(report.with_extension("txt").exists(), "no text report");
    (out.status.code(), doc, out)
}

fn statuses(doc: &Value) -> Vec<(String, String)> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().into(), s["status"].as_str().unwrap().into()))
        .collect()
}

/// (key, value) of every record of `topic`, per partition in order.
type Records = BTreeMap<i32, Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>>;
fn records(topic: &str) -> Records {
    let mut out: Records = BTreeMap::new();
    for r in it::read_topic(topic) {
        out.entry(r.partition).or_default().push((r.key, r.value));
    }
    out
}

#[test]
fn the_drill_restores_the_audit_archive_verifies_it_and_runs_the_scenario() {
    let started = Instant::now();
    let w = World::new("drill");
    let mut chain = w.instance("audit-chain", "chain-0", &[]);
    chain.start();
    let codec = w.codec.clone();
    let events = w.topic("audit.events");
    let recs: Vec<it::RawRecord> = (0..EVENTS)
        .map(|i| {
            let id = format!("live-{i}");
            it::RawRecord::new(audit::encode_event(&codec, &events, &id, i)).key(id)
        })
        .collect();
    it::produce_raw(&events, &recs);
    it::wait_until(
        "the live chain to hold every event under a signed checkpoint",
        Duration::from_secs(120),
        || {
            let chain = audit::read_chain(&codec, &w.topic("audit.chain"));
            let entries: usize = chain.values().map(|r| audit::entries(r).len()).sum();
            entries as u64 == EVENTS
            && chain.values().all(|recs| {
                matches!(recs.last(), Some((_, r)) if matches!(&r.body,
                    evalstream_audit::records::ChainRecordBody::Checkpoint(c) if c.signature.is_some()))
            })
        },
    );
    chain.stop();

    // The drill, keeping the restored topics so that this test can look at them.
    let target = format!("{}restored.", w.prefix);
    let (code, doc, out) = drill(&w, &["--target-prefix", &target, "--keep"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(doc["result"], "pass", "{doc:#}");
    let expected: Vec<(String, String)> =
        ["export", "restore", "import", "verify", "start", "scenario", "cleanup"]
            .iter()
            .map(|s| (s.to_string(), "pass".to_string()))
            .collect();
    assert_eq!(statuses(&doc), expected, "{doc:#}");
    for s in doc["steps"].as_array().unwrap() {
        assert!(s["duration_s"].as_f64().unwrap() >= 0.0);
    }

    // The restored chain is the live chain, record by record, byte for byte.
    let live = records(&w.topic("audit.chain"));
    let restored = records(&format!("{target}audit.chain"));
    assert!(live.values().map(Vec::len).sum::<usize>() as u64 > EVENTS);
    assert_eq!(restored, live, "the restored chain differs from the live one");

    // The scenario's outcomes, from the restored system's topics.
    let restored_world = World::existing(&target);
    let mut promotions: BTreeMap<String, String> = BTreeMap::new();
    for (_, _, key, v) in restored_world.read("eval.promotions") {
        promotions.insert(key, v["outcome"].as_str().unwrap().to_string());
    }
    let mut allocations: BTreeMap<String, String> = BTreeMap::new();
    for (_, _, key, v) in restored_world.read("alloc.state") {
        allocations.insert(key, v["to_state"].as_str().unwrap().to_string());
    }
    assert_eq!(promotions.len(), SUBMISSIONS);
    assert_eq!(allocations.len(), SUBMISSIONS);
    let mut by_index: Vec<(usize, &str, &str)> = Vec::new();
    for (i, ((pk, p), (ak, a))) in promotions.iter().zip(&allocations).enumerate() {
        assert!(pk.ends_with(&format!("-{i:03}:promotion")), "{pk}");
        assert!(ak.ends_with(&format!("-{i:03}:allocation")), "{ak}");
        by_index.push((i, p, a));
    }
    for (i, p, a) in by_index {
        assert_eq!(p, if i % 3 == 0 { "denied" } else { "promoted" }, "promotion {i}");
        assert_eq!(a, if i % 4 == 0 { "denied" } else { "settled" }, "allocation {i}");
    }
    it::delete_topics_under(&target);

    // A tampered archive: the drill fails at import and nothing reaches the restored chain.
    let archive = w.dir.join("archive.jsonl");
    w.cli(&[
        "audit",
        "export",
        "--out",
        archive.to_str().unwrap(),
        "--signers",
        w.signers.to_str().unwrap(),
    ])
    .assert_success();
    let text = std::fs::read_to_string(&archive).unwrap();
    let mut tampered = String::new();
    let mut done = false;
    for line in text.lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        if !done && v["type"] == "record" && v["record"]["kind"] == "entry" {
            let c = v["record"]["entry"]["canonical"].as_str().unwrap().replace("svc-", "mallory-");
            v["record"]["entry"]["canonical"] = Value::String(c);
            done = true;
        }
        tampered.push_str(&v.to_string());
        tampered.push('\n');
    }
    assert!(done);
    let bad = w.dir.join("tampered.jsonl");
    std::fs::write(&bad, tampered).unwrap();
    let target = format!("{}tampered.", w.prefix);
    let (code, doc, out) =
        drill(&w, &["--archive", bad.to_str().unwrap(), "--target-prefix", &target, "--keep"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(doc["result"], "fail");
    let s: BTreeMap<String, String> = statuses(&doc).into_iter().collect();
    assert_eq!(s["export"], "skipped");
    assert_eq!(s["import"], "fail", "{doc:#}");
    for later in ["verify", "start", "scenario"] {
        assert_eq!(s[later], "skipped", "{later}: {doc:#}");
    }
    assert!(
        it::read_topic(&format!("{target}audit.chain")).is_empty(),
        "a tampered archive was imported"
    );
    it::delete_topics_under(&target);
    eprintln!("drill test took {:?}", started.elapsed());
}
