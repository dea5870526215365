//! Cluster-wide read-only mode through `evalstream control read-only` (the runbook's "mark
//! service read-only") on Apache Kafka: two processors (totals and submissions) run as OS
//! processes with input flowing into totals.
//!
//! * `--processor submissions on` holds submissions only: totals keeps committing output.
//! * `--all on` holds both: a plain `read_committed` reader sees the output count stop while input
//!   keeps arriving, `evalstream_consumer_lag` grows, `/ready` shows the mode and who set it why.
//! * A restarted totals instance comes back read-only (the compacted control topic, read from the
//!   beginning) and commits nothing either.
//! * `--all off`: every held input is processed exactly once (each input exactly one output, the
//!   independent verifier of the exactly-once tests).
//! * Each command left its `ops.read_only` audit event on audit.events.
#![cfg(feature = "broker")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::domain::World;
use common::eos::{self, InputRec, Instance};
use evalstream_integration_tests as it;

/// Committed records on totals.output, counted by a plain read_committed reader.
fn outputs(w: &World) -> usize {
    it::read_topic(&w.topic("totals.output")).len()
}

/// Total exported lag of totals.input (its retry topic excluded).
fn lag(i: &Instance) -> f64 {
    lag_series(&i.metrics(), "totals.input").iter().sum()
}

/// `/ready` says `mode` and, for a control command, names it with reason and actor.
fn assert_mode(i: &Instance, mode: &str, reason: Option<&str>) {
    let body = i.ready_body().expect("/ready answers");
    assert_eq!(body["mode"], mode, "{body}");
    match reason {
        Some(r) => {
            assert_eq!(body["mode_source"]["from"], "control", "{body}");
            assert_eq!(body["mode_source"]["reason"], r, "{body}");
            assert_eq!(body["mode_source"]["actor"], "sre-alice", "{body}");
        }
        None => assert_eq!(body["mode_source"]["from"], "config", "{body}"),
    }
}

fn control(w: &World, args: &[&str], ops: &[&Instance]) -> String {
    let addrs: Vec<String> = ops.iter().map(|i| i.ops_addr()).collect();
    let mut all: Vec<&str> = vec!["control", "read-only"];
    all.extend_from_slice(args);
    all.extend(["--actor", "sre-alice", "--wait", "30"]);
    for a in &addrs {
        all.extend(["--ops", a.as_str()]);
    }
    let out = w.cli(&all);
    out.assert_success();
    out.stdout.clone()
}

#[test]
fn read_only_switch_holds_every_processor_and_resumes_exactly_once() {
    let w = World::new("roctl");
    let mut totals = w.instance("totals", "t1", &[]).with_ops();
    let mut subs = w.instance("submissions", "s1", &[]).with_ops();
    totals.start();
    subs.start();

    // Input flows into totals.input for the whole test: 40 records every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (codec, topic, stop) = (w.codec.clone(), w.topic("totals.input"), stop.clone());
        std::thread::spawn(move || {
            let mut all: Vec<InputRec> = Vec::new();
            let mut next = 0u64;
            while !stop.load(Ordering::SeqCst) {
                all.extend(eos::produce_inputs(
                    &codec,
                    &topic,
                    next..next + 40,
                    40,
                    Duration::from_millis(100),
                ));
                next += 40;
            }
            all
        })
    };
    let produced = || eos::next_offsets(&w.topic("totals.input")).values().sum::<i64>();

    it::wait_until("both instances ready", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(200));
        totals.ready() && subs.ready()
    });
    it::wait_until("totals to commit output", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(200));
        outputs(&w) > 0
    });
    assert_mode(&totals, "normal", None);
    // The lag is exported in normal mode too (librdkafka's own consumer_lag is -1 here).
    it::wait_until("evalstream_consumer_lag exported", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        totals.metrics().contains("evalstream_consumer_lag{")
    });

    // --processor: only submissions is held; totals keeps committing.
    let said = control(
        &w,
        &["on", "--processor", "submissions", "--reason", "INC-41 one processor"],
        &[&totals, &subs],
    );
    assert!(said.contains("runs totals, not addressed"), "{said}");
    assert_mode(&subs, "read-only", Some("INC-41 one processor"));
    assert_mode(&totals, "normal", None);
    let before = outputs(&w);
    it::wait_until("totals to keep committing", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(300));
        outputs(&w) > before
    });

    // --all: both held. The command returns once both instances report it.
    control(&w, &["on", "--all", "--reason", "INC-42 KMS outage"], &[&totals, &subs]);
    assert_mode(&totals, "read-only", Some("INC-42 KMS outage"));
    assert_mode(&subs, "read-only", Some("INC-42 KMS outage"));
    assert_eq!(
        totals.metric("evalstream_mode", &["read-only"]),
        1.0,
        "evalstream_mode{{mode=\"read-only\"}}"
    );
    let held = outputs(&w);
    // The held lag is measured every 5 s: wait for the first measurement (everything produced
    // so far minus what was processed), then for input to keep arriving and the lag to follow.
    let input_then = produced();
    it::wait_until("the held lag to be measured", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        lag(&totals) >= (input_then - held as i64) as f64
    });
    let lag_then = lag(&totals);
    it::wait_until("input to keep flowing", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(300));
        produced() >= input_then + 200
    });
    it::wait_until("the lag to grow while held", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        lag(&totals) >= lag_then + 200.0
    });
    eprintln!(
        "held: outputs {held}, input {input_then} -> {}, lag {lag_then} -> {}",
        produced(),
        lag(&totals)
    );
    assert_eq!(outputs(&w), held, "read-only committed output");
    assert!(totals.running() && subs.running());

    // A restarted instance comes back read-only from the control topic.
    totals.stop();
    totals.start();
    it::wait_until("the restarted instance to be ready", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(200));
        totals.ready_partitions().is_some_and(|p| p > 0)
    });
    assert_mode(&totals, "read-only", Some("INC-42 KMS outage"));
    let input_then = produced();
    it::wait_until("the restarted instance to report its lag", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        lag(&totals) >= (input_then - held as i64) as f64
    });
    assert_eq!(outputs(&w), held, "the restarted read-only instance committed output");

    // Off: everything held is processed, exactly once.
    control(&w, &["off", "--all", "--reason", "INC-42 resolved"], &[&totals, &subs]);
    assert_mode(&totals, "normal", Some("INC-42 resolved"));
    assert_mode(&subs, "normal", Some("INC-42 resolved"));
    stop.store(true, Ordering::SeqCst);
    let inputs = producer.join().expect("producer");
    eos::wait_committed(&w.prefix, &eos::next_offsets_of(&inputs), Duration::from_secs(120));
    assert!(totals.running() && subs.running(), "no instance may exit");
    // Caught up, the exported lag falls back to 0 (it counts what is unprocessed, nothing else).
    it::wait_until("the totals lag to fall to 0", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        let text = totals.metrics();
        let series = lag_series(&text, "totals.input");
        series.len() == 4 && series.iter().all(|v| *v == 0.0)
    });
    totals.stop();
    subs.stop();
    let v = eos::verify_totals(&w.codec, &w.prefix, &inputs);
    v.assert_exact();
    assert_eq!(v.committed_outputs, inputs.len());
    assert!(inputs.len() > held, "input arrived while held: {} vs {held}", inputs.len());

    // Every command is on the audit log: who, why, what.
    let events: Vec<serde_json::Value> = w
        .read("audit.events")
        .into_iter()
        .map(|(_, _, _, v)| v)
        .filter(|v| v["type"] == "ops.read_only")
        .collect();
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let payload: serde_json::Value =
                serde_json::from_str(e["payload"].as_str().expect("payload")).expect("json");
            assert_eq!(e["actor"], "sre-alice", "{e}");
            (
                e["subject"].as_str().unwrap().to_owned(),
                payload["mode"].as_str().unwrap().to_owned(),
                payload["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("read-only/submissions", "read-only", "INC-41 one processor"),
        ("read-only/*", "read-only", "INC-42 KMS outage"),
        ("read-only/*", "normal", "INC-42 resolved"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    let mut sorted = summary.clone();
    sorted.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(sorted, want, "ops.read_only audit events");

    // An input written by transactions (audit.events: each event above is followed by its commit
    // marker) shows no lag once consumed: the marker after the last record is not counted.
    let mut chain = w.instance("audit-chain", "c0", &[]).with_ops();
    chain.start();
    it::wait_until(
        "audit-chain to export a lag of 0 on audit.events",
        Duration::from_secs(60),
        || {
            std::thread::sleep(Duration::from_millis(500));
            let series = lag_series(&chain.metrics(), "audit.events");
            series.len() == 4 && series.iter().all(|v| *v == 0.0)
        },
    );
    chain.stop();
}

/// The `evalstream_consumer_lag` samples of `topic`, one per exported partition.
fn lag_series(metrics: &str, topic: &str) -> Vec<f64> {
    let label = format!("topic=\"{topic}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("evalstream_consumer_lag{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}
