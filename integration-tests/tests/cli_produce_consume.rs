#![cfg(feature = "broker")]
//! `evalstream produce` and `evalstream consume` against a real broker, driven as a subprocess
//! exactly as an operator or script would.
//!
//! Each test uses a random `EVALSTREAM_TOPIC_PREFIX`, so the logical topic `eval.submissions`
//! (whose schema comes from the bundled topology) is a fresh topic per test.

use std::time::Duration;

use evalstream_integration_tests::{
    create_topic, evalstream, produce_raw, read_topic, read_topic_with, run, temp_file,
    unique_name, Isolation, RawRecord,
};
use serde_json::{json, Value};

const TOPIC: &str = "eval.submissions";
const SCHEMA: &str = "evalstream.eval.EvalSubmission";

/// A random prefix and the prefixed `eval.submissions`, created with `partitions` partitions.
fn fresh(partitions: i32) -> (String, String) {
    let prefix = format!("{}.", unique_name("it-cli"));
    let topic = format!("{prefix}{TOPIC}");
    create_topic(&topic, partitions);
    (prefix, topic)
}

fn submission(id: &str, model: &str) -> Value {
    json!({
        "submission_id": id,
        "model_id": model,
        "model_version": "v1",
        "eval_suite": "safety",
        "eval_suite_version": null,
        "submitter": "alice",
        "metrics": {"accuracy": 0.875},
        "dataset_id": null,
        "artifact_uri": "s3://reports/x.json",
        "artifact_sha256": null,
        "labels": {"team": "eval"},
        "submitted_at": 1_714_557_600_000_i64,
        "promotion": null,
        "allocation": null,
    })
}

fn cli(prefix: &str) -> std::process::Command {
    let mut cmd = evalstream();
    cmd.env("EVALSTREAM_TOPIC_PREFIX", prefix);
    cmd
}

#[test]
fn bad_lines_are_reported_by_number_and_good_lines_are_produced() {
    let (prefix, topic) = fresh(2);
    let mut bad_schema = submission("s-x", "m-x");
    bad_schema.as_object_mut().unwrap().remove("submitter");
    let file = [
        "# three good events, two bad lines, a blank line",
        &submission("s-1", "m-1").to_string(),
        "{not json",
        "",
        &submission("s-2", "m-2").to_string(),
        &bad_schema.to_string(),
        &submission("s-3", "m-1").to_string(),
    ]
    .join("\n");
    let path = temp_file("events", &file);
    let out = run(
        cli(&prefix).args(["produce", TOPIC, "--key-field", "model_id", "--file"]).arg(&path),
        None,
    );
    out.assert_failure();
    assert!(out.stderr.contains("line 3: not valid JSON"), "{out}");
    assert!(out.stderr.contains("line 6:"), "{out}");
    assert!(out.stderr.contains("submitter"), "the schema error names the field: {out}");
    assert!(!out.stderr.contains("line 2:") && !out.stderr.contains("line 5:"), "{out}");
    assert!(out.stdout.contains("produced 3 record(s)"), "{out}");
    assert!(out.stdout.contains("rejected 2 line(s)"), "{out}");

    let records = read_topic(&topic);
    assert_eq!(records.len(), 3);
    let mut keys: Vec<_> = records.iter().map(|r| r.key_str().unwrap().to_string()).collect();
    keys.sort();
    assert_eq!(keys, ["m-1", "m-1", "m-2"]);

    let out = run(cli(&prefix).args(["consume", TOPIC, "--from-beginning"]), None);
    out.assert_success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 3, "{out}");
    let mut ids: Vec<_> = lines.iter().map(|l| l["value"]["submission_id"].clone()).collect();
    ids.sort_by_key(|v| v.to_string());
    assert_eq!(ids, [json!("s-1"), json!("s-2"), json!("s-3")]);
    for l in &lines {
        assert_eq!(l["topic"], json!(topic));
        assert_eq!(l["schema"], json!(SCHEMA));
        assert!(l.get("error").is_none(), "{l}");
        let id = l["value"]["submission_id"].as_str().unwrap();
        let model = l["value"]["model_id"].as_str().unwrap();
        assert_eq!(l["value"], submission(id, model), "JSON → Avro → JSON is a fixed point");
        assert_eq!(l["key"], json!(model));
    }
}

#[test]
fn atomic_with_one_bad_line_produces_nothing() {
    let (prefix, topic) = fresh(1);
    let file =
        [submission("s-1", "m").to_string(), "[1]".into(), submission("s-2", "m").to_string()]
            .join("\n");
    let path = temp_file("events", &file);
    let out = run(cli(&prefix).args(["produce", TOPIC, "--atomic", "--file"]).arg(&path), None);
    out.assert_failure();
    assert!(out.stderr.contains("line 2: expected a JSON object"), "{out}");
    assert!(out.stdout.contains("nothing produced"), "{out}");
    // Even aborted records would show here: the atomic path must never have sent anything.
    assert!(read_topic_with(&topic, Isolation::ReadUncommitted).is_empty());
}

#[test]
fn atomic_good_file_commits_every_record_in_one_transaction() {
    let (prefix, topic) = fresh(2);
    let file: Vec<String> = (0..20)
        .map(|i| submission(&format!("s-{i}"), &format!("m-{}", i % 3)).to_string())
        .collect();
    let out = run(
        cli(&prefix).args(["produce", TOPIC, "--atomic", "--key-field", "model_id", "--file", "-"]),
        Some(file.join("\n").as_bytes()),
    );
    out.assert_success();
    assert!(out.stdout.contains("produced 20 record(s)"), "{out}");
    assert_eq!(read_topic(&topic).len(), 20);
}

#[test]
fn envelope_lines_carry_key_and_headers_and_consume_output_reads_back() {
    let (prefix, topic) = fresh(1);
    let line = json!({
        "key": "k-1",
        "value": submission("s-1", "m-1"),
        "headers": {"trace": "t-1", "bin": {"base64": "/wA="}},
    });
    let out = run(
        cli(&prefix).args(["produce", TOPIC, "--envelope", "--file", "-"]),
        Some(line.to_string().as_bytes()),
    );
    out.assert_success();
    let records = read_topic(&topic);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key_str(), Some("k-1"));
    assert_eq!(records[0].header("trace"), Some(&b"t-1"[..]));
    assert_eq!(records[0].header("bin"), Some(&[0xff, 0x00][..]));

    // consume → produce --envelope copies the record, key and headers included.
    let consumed = run(cli(&prefix).args(["consume", TOPIC, "--from-beginning"]), None);
    consumed.assert_success();
    let lines = consumed.json_lines();
    assert_eq!(lines[0]["headers"], json!({"trace": "t-1", "bin": {"base64": "/wA="}}));
    let out = run(
        cli(&prefix).args(["produce", TOPIC, "--envelope", "--file", "-"]),
        Some(consumed.stdout.as_bytes()),
    );
    out.assert_success();
    let records = read_topic(&topic);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].key, records[0].key);
    assert_eq!(records[1].value, records[0].value);
    assert_eq!(records[1].headers, records[0].headers);
}

#[test]
fn consume_shape_max_partition_offset_and_undecodable_values() {
    let (prefix, topic) = fresh(2);
    // Raw bytes: no codec involved, so this part holds whatever the codec does.
    let raw: Vec<RawRecord> = (0..5)
        .map(|i| RawRecord::new(vec![0x00, 0x01, i]).key(format!("k{i}")).partition(0))
        .chain([RawRecord::new(b"garbage".to_vec()).header("h", "v").partition(1)])
        .collect();
    produce_raw(&topic, &raw);

    let out = run(cli(&prefix).args(["consume", TOPIC, "--from-beginning", "--max", "3"]), None);
    out.assert_success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 3, "{out}");
    for l in &lines {
        let obj = l.as_object().unwrap();
        for field in
            ["topic", "partition", "offset", "timestamp", "key", "headers", "schema", "value"]
        {
            assert!(obj.contains_key(field), "missing {field}: {l}");
        }
        assert_eq!(l["schema"], Value::Null);
        assert!(l["value"]["base64"].is_string(), "{l}");
        assert!(l["error"].is_string(), "undecodable values say why: {l}");
    }

    let out = run(cli(&prefix).args(["consume", TOPIC, "--partition", "0", "--offset", "3"]), None);
    out.assert_success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["offset"], json!(3));
    assert_eq!(lines[0]["key"], json!("k3"));
    assert_eq!(lines[0]["value"], json!({"base64": "AAED"}));

    let out = run(cli(&prefix).args(["consume", TOPIC, "--partition", "1", "--offset", "0"]), None);
    out.assert_success();
    let lines = out.json_lines();
    assert_eq!(lines[0]["headers"], json!({"h": "v"}));
    assert_eq!(lines[0]["value"], json!({"base64": "Z2FyYmFnZQ=="}));

    let out = run(cli(&prefix).args(["consume", TOPIC, "--raw", "--from-beginning"]), None);
    out.assert_success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 6);
    assert!(lines.iter().all(|l| l.get("error").is_none()), "--raw does not try to decode");

    let out = run(
        cli(&prefix).args(["consume", TOPIC, "--from-beginning", "--format", "text", "--max", "1"]),
        None,
    );
    out.assert_success();
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    assert!(out.stdout.contains("key="), "{out}");

    // Default start is the end: nothing printed, and a hint says why.
    let out = run(cli(&prefix).args(["consume", TOPIC]), None);
    out.assert_success();
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.contains("--from-beginning"), "{out}");
}

#[test]
fn consume_follow_sees_records_produced_later() {
    let (prefix, topic) = fresh(1);
    let child = cli(&prefix)
        .args(["consume", TOPIC, "--raw", "--follow", "--max", "2", "--timeout-ms", "20000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Give the reader time to fix its start (the end) before producing.
    std::thread::sleep(Duration::from_secs(2));
    produce_raw(&topic, &[RawRecord::new("a"), RawRecord::new("b")]);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn consume_with_a_group_resumes_where_it_stopped() {
    let (prefix, topic) = fresh(2);
    produce_raw(&topic, &(0..4).map(|i| RawRecord::new(vec![i])).collect::<Vec<_>>());
    let group = unique_name("it-cli-group");
    let consume = |extra: &[&str]| {
        let mut cmd = cli(&prefix);
        cmd.env("EVALSTREAM_SESSION_TIMEOUT_MS", "6000")
            .args(["consume", TOPIC, "--raw", "--group", &group, "--timeout-ms", "15000"])
            .args(extra);
        run(&mut cmd, None)
    };
    let first = consume(&["--from-beginning", "--max", "3"]);
    first.assert_success();
    assert_eq!(first.json_lines().len(), 3, "{first}");
    let second = consume(&["--from-beginning"]);
    second.assert_success();
    let mut seen: Vec<_> = first
        .json_lines()
        .into_iter()
        .chain(second.json_lines())
        .map(|l| (l["partition"].as_i64().unwrap(), l["offset"].as_i64().unwrap()))
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 4, "{first}\n{second}");
    seen.dedup();
    assert_eq!(seen.len(), 4, "every record exactly once across both runs: {first}\n{second}");
}

#[test]
fn operator_errors_are_clear_and_do_not_crash() {
    let prefix = format!("{}.", unique_name("it-cli-missing"));
    let out = run(cli(&prefix).args(["consume", TOPIC, "--from-beginning"]), None);
    out.assert_failure();
    assert!(out.stderr.contains("does not exist"), "{out}");

    let path = temp_file("events", &submission("s", "m").to_string());
    let out = run(cli(&prefix).args(["produce", TOPIC, "--file"]).arg(&path), None);
    out.assert_failure();
    assert!(out.stderr.contains("does not exist"), "{out}");

    let out = run(cli(&prefix).args(["produce", "no.such.topic", "--file"]).arg(&path), None);
    out.assert_failure();
    assert!(out.stderr.contains("--schema"), "{out}");

    let out = run(cli(&prefix).args(["produce", TOPIC, "--file", "/nonexistent/x.jsonl"]), None);
    out.assert_failure();
    assert!(out.stderr.contains("/nonexistent/x.jsonl"), "{out}");

    let (prefix, _topic) = fresh(1);
    let out = run(cli(&prefix).args(["consume", TOPIC, "--partition", "7"]), None);
    out.assert_failure();
    assert!(out.stderr.contains("no partition 7"), "{out}");
}
