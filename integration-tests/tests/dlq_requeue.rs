#![cfg(feature = "broker")]
//! `evalstream dlq list` and `evalstream dlq requeue` against a real broker.
//!
//! The DLQ records are hand-made (raw bytes plus the runtime's error headers), so these tests
//! check the operator commands on their own, independently of the engine and the codec.

use evalstream_integration_tests::{
    create_topic, evalstream, produce_raw, read_topic, read_topic_with, run, unique_name,
    Isolation, RawRecord, Record,
};
use evalstream_runtime::headers as h;
use serde_json::json;

/// A topic `T` with 3 partitions and its DLQ `T.dlq` (1 partition), freshly named.
fn fresh() -> (String, String) {
    let topic = unique_name("it-dlq");
    let dlq = format!("{topic}.dlq");
    create_topic(&topic, 3);
    create_topic(&dlq, 1);
    (topic, dlq)
}

/// A DLQ record as the runtime writes it: original key, value and headers, plus error headers.
fn dead_letter(topic: &str, partition: i32, offset: i64, class: &str, why: &str) -> RawRecord {
    RawRecord::new(format!("value-{partition}-{offset}").into_bytes())
        .key(format!("key-{offset}"))
        .header("trace-id", format!("trace-{offset}"))
        .header(h::ERR_TOPIC, topic)
        .header(h::ERR_PARTITION, partition.to_string())
        .header(h::ERR_OFFSET, offset.to_string())
        .header(h::ERR_TIMESTAMP, "1714557600123")
        .header(h::ERR_PROCESSOR, "submissions")
        .header(h::ERR_CLASS, class)
        .header(h::ERR_MESSAGE, why)
        .header(h::ERR_ATTEMPTS, "1")
}

fn seed(topic: &str, dlq: &str) {
    produce_raw(
        dlq,
        &[
            dead_letter(topic, 0, 10, "deserialization", "wrong magic byte 0x07"),
            dead_letter(topic, 2, 11, "validation", "metrics must not be empty"),
            dead_letter(topic, 1, 12, "deserialization", "truncated record (3 bytes)"),
        ],
    );
}

fn assert_requeued(r: &Record, dlq: &str, dlq_offset: i64, partition: i32, offset: i64) {
    assert_eq!(r.partition, partition, "original partition kept: {r:?}");
    assert_eq!(r.key_str(), Some(format!("key-{offset}").as_str()));
    assert_eq!(r.value.as_deref(), Some(format!("value-{partition}-{offset}").as_bytes()));
    assert_eq!(
        r.headers,
        vec![
            ("trace-id".to_string(), Some(format!("trace-{offset}").into_bytes())),
            (h::REQUEUED_FROM.to_string(), Some(format!("{dlq}/0/{dlq_offset}").into_bytes())),
        ],
        "original headers kept, error headers stripped, source marked"
    );
}

#[test]
fn list_shows_where_records_came_from_and_why() {
    let (topic, dlq) = fresh();
    seed(&topic, &dlq);

    for arg in [&topic, &dlq] {
        let out = run(evalstream().args(["dlq", "list", arg]), None);
        out.assert_success();
        assert!(out.stdout.contains(&format!("from {topic}/0/10")), "{out}");
        assert!(out.stdout.contains("wrong magic byte 0x07"), "{out}");
        assert!(out.stdout.contains("metrics must not be empty"), "{out}");
        assert!(out.stdout.contains("processor=submissions class=validation"), "{out}");
        assert!(out.stdout.contains("2024-05-01T10:00:00.123Z"), "{out}");
        assert!(out.stdout.contains("3 record(s)"), "{out}");
        assert!(out.stdout.contains("deserialization=2 validation=1"), "{out}");
    }

    let out = run(evalstream().args(["dlq", "list", &topic, "--json"]), None);
    out.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(doc["topic"], json!(dlq));
    assert_eq!(doc["counts"]["total"], json!(3));
    assert_eq!(doc["counts"]["by_class"], json!({"deserialization": 2, "validation": 1}));
    let first = &doc["records"][0];
    assert_eq!(first["dlq_partition"], json!(0));
    assert_eq!(first["dlq_offset"], json!(0));
    assert_eq!(first["topic"], json!(topic));
    assert_eq!(first["partition"], json!(0));
    assert_eq!(first["offset"], json!(10));
    assert_eq!(first["timestamp"], json!(1_714_557_600_123_i64));
    assert_eq!(first["class"], json!("deserialization"));
    assert_eq!(first["message"], json!("wrong magic byte 0x07"));
    assert_eq!(first["attempts"], json!(1));
    assert_eq!(first["requeued"], json!(false));

    let out = run(evalstream().args(["dlq", "list", &topic, "--max", "1", "--json"]), None);
    out.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["records"].as_array().unwrap().len(), 1);
}

#[test]
fn requeue_moves_records_back_exactly_once() {
    let (topic, dlq) = fresh();
    seed(&topic, &dlq);

    let dry = run(evalstream().args(["dlq", "requeue", &topic, "--all", "--dry-run"]), None);
    dry.assert_success();
    assert!(dry.stdout.contains("would requeue 3"), "{dry}");
    assert!(read_topic_with(&topic, Isolation::ReadUncommitted).is_empty(), "dry run produced");

    let out = run(evalstream().args(["dlq", "requeue", &topic, "--all"]), None);
    out.assert_success();
    assert!(out.stdout.contains("requeued 3, skipped 0"), "{out}");
    let records = read_topic(&topic);
    assert_eq!(records.len(), 3, "{records:?}");
    let by_offset = |o: i64| {
        records.iter().find(|r| r.key_str() == Some(&format!("key-{o}"))).expect("requeued")
    };
    assert_requeued(by_offset(10), &dlq, 0, 0, 10);
    assert_requeued(by_offset(11), &dlq, 1, 2, 11);
    assert_requeued(by_offset(12), &dlq, 2, 1, 12);

    // A second run requeues nothing: the ledger remembers.
    let again = run(evalstream().args(["dlq", "requeue", &topic, "--all"]), None);
    again.assert_success();
    assert!(again.stdout.contains("requeued 0, skipped 3"), "{again}");
    assert_eq!(read_topic(&topic).len(), 3);

    // The ledger is a compacted topic keyed by DLQ coordinate.
    let ledger = read_topic(&format!("{dlq}.requeued"));
    let mut keys: Vec<_> = ledger.iter().map(|r| r.key_str().unwrap().to_string()).collect();
    keys.sort();
    assert_eq!(keys, [format!("{dlq}/0/0"), format!("{dlq}/0/1"), format!("{dlq}/0/2")]);

    let list = run(evalstream().args(["dlq", "list", &dlq]), None);
    list.assert_success();
    assert_eq!(list.stdout.matches("[requeued]").count(), 3, "{list}");
    assert!(list.stdout.contains("3 requeued"), "{list}");
}

#[test]
fn requeue_by_offset_and_class() {
    let (topic, dlq) = fresh();
    seed(&topic, &dlq);

    let out = run(evalstream().args(["dlq", "requeue", &dlq, "--offset", "0:1"]), None);
    out.assert_success();
    assert!(out.stdout.contains("requeued 1,"), "{out}");
    let records = read_topic(&topic);
    assert_eq!(records.len(), 1);
    assert_requeued(&records[0], &dlq, 1, 2, 11);

    // Class selection skips what --offset already requeued.
    let out = run(evalstream().args(["dlq", "requeue", &topic, "--class", "validation"]), None);
    out.assert_success();
    assert!(out.stdout.contains("requeued 0, skipped 1"), "{out}");
    let out =
        run(evalstream().args(["dlq", "requeue", &topic, "--class", "deserialization"]), None);
    out.assert_success();
    assert!(out.stdout.contains("requeued 2, skipped 0"), "{out}");
    assert_eq!(read_topic(&topic).len(), 3);

    // An offset that is not in the DLQ is an error, and nothing else is requeued with it.
    let out = run(evalstream().args(["dlq", "requeue", &topic, "--offset", "0:99"]), None);
    out.assert_failure();
    assert!(out.stderr.contains("no record in") && out.stderr.contains("0:99"), "{out}");
}

#[test]
fn requeue_refuses_records_it_cannot_place_and_keeps_going() {
    let (topic, dlq) = fresh();
    produce_raw(
        &dlq,
        &[
            RawRecord::new("orphan").key("k"),
            dead_letter(&topic, 7, 3, "validation", "partition no longer exists"),
            dead_letter("it-dlq-gone-topic", 0, 1, "validation", "topic deleted"),
        ],
    );
    let out = run(evalstream().args(["dlq", "requeue", &topic, "--all"]), None);
    out.assert_failure();
    assert!(out.stderr.contains(&format!("no {}", h::ERR_TOPIC)), "{out}");
    assert!(out.stderr.contains("it-dlq-gone-topic does not exist"), "{out}");
    assert!(out.stdout.contains("requeued 1, skipped 0 (already requeued), failed 2"), "{out}");
    // The record whose partition is gone was placed by key instead.
    let records = read_topic(&topic);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key_str(), Some("key-3"));

    let list = run(evalstream().args(["dlq", "list", &topic]), None);
    list.assert_success();
    assert!(list.stdout.contains("from ?"), "records without headers are listed too: {list}");
}

#[test]
fn dlq_commands_report_a_missing_dlq() {
    let topic = unique_name("it-dlq-none");
    for args in [vec!["dlq", "list", &topic], vec!["dlq", "requeue", &topic, "--all"]] {
        let out = run(evalstream().args(&args), None);
        out.assert_failure();
        assert!(out.stderr.contains("does not exist"), "{out}");
    }
    let out = run(evalstream().args(["dlq", "requeue", &topic]), None);
    out.assert_failure();
    assert!(out.stderr.contains("--offset") || out.stderr.contains("--all"), "{out}");
}

#[test]
fn concurrent_requeues_fence_each_other_and_requeue_each_record_once() {
    let (topic, dlq) = fresh();
    let records: Vec<RawRecord> =
        (0..300).map(|i| dead_letter(&topic, i % 3, i64::from(i), "validation", "x")).collect();
    produce_raw(&dlq, &records);
    let runs: Vec<_> = (0..2)
        .map(|_| {
            evalstream()
                .args(["dlq", "requeue", &topic, "--all"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawning evalstream")
        })
        .collect();
    let mut succeeded = 0;
    for run in runs {
        let out = run.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            succeeded += 1;
        } else {
            assert!(stderr.contains("fenced"), "a run may only fail by being fenced: {stderr}");
        }
    }
    assert!(succeeded >= 1);
    let requeued = read_topic(&topic);
    let unique: std::collections::BTreeSet<_> = requeued.iter().map(|r| r.key.clone()).collect();
    assert_eq!(requeued.len(), 300, "every DLQ record requeued exactly once");
    assert_eq!(unique.len(), 300);
    // Whatever the interleaving, a further run finds nothing left to do.
    let again = run(evalstream().args(["dlq", "requeue", &topic, "--all"]), None);
    again.assert_success();
    assert!(again.stdout.contains("requeued 0, skipped 300"), "{again}");
}
