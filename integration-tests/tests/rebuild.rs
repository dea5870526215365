#![cfg(feature = "broker")]
//! `evalstream rebuild` (rebuild by replay) on Apache Kafka with the totals processor.
//!
//! The verdict does not rest on the command's own report alone: the expected state (the total
//! of each key, as the JSON number the processor stores, in the partition its inputs went to) is
//! computed here from the inputs as produced, and its SHA-256 over the documented canonical form
//! is compared with both digests the command reports; after a cutover an independent
//! `read_committed` reader checks the live processor's next output for the repaired key.
//!
//! Steps: (1) live running, inputs arriving after the rebuild's first copy (its finished copy
//! progress line says 3000, the report says 3500 replayed: the copy was extended) → equal, exit
//! 0; (2) live stopped, one key's total overwritten in the live changelog in a transaction →
//! exactly that key differs, exit 1, in JSON and text; (3) `--cutover` → live state repaired,
//! the restarted live processor's next total for the key is right; `--cutover` while the live
//! processor runs is refused. About 70 s on Apache Kafka.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::domain::World;
use common::eos::produce_inputs;
use evalstream_integration_tests as it;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Inputs of the live system (1000 keys, three inputs each).
const INPUTS: u64 = 3000;
/// Inputs produced while the rebuild runs, after its first copy.
const LATE: u64 = 500;
/// Byte that starts a state entry's key in a changelog (docs/exactly-once.md, "Changelog").
const STATE_KEY_PREFIX: u8 = 0x01;

/// `evalstream rebuild totals --json` under `w`: exit code and report.
fn rebuild(w: &World, extra: &[&str]) -> (Option<i32>, Value, it::CmdOutput) {
    let mut args = vec!["rebuild", "totals", "--json", "--progress", "json", "--timeout", "120"];
    args.extend_from_slice(extra);
    let out = w.cli(&args);
    let report: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {out}"));
    (out.status.code(), report, out)
}

/// SHA-256 over (partition i32 BE, key len u32 BE, key, value len u32 BE, value), sorted.
fn expected_digest(state: &BTreeMap<(i32, String), i64>) -> String {
    let mut h = Sha256::new();
    for ((p, k), total) in state {
        let v = total.to_string();
        h.update(p.to_be_bytes());
        h.update((k.len() as u32).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u32).to_be_bytes());
        h.update(v.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Topics that exist under `prefix`.
fn topics_under(prefix: &str) -> usize {
    let meta: BaseConsumer = it::client_config().create().unwrap();
    let md = meta.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    md.topics().iter().filter(|t| t.name().starts_with(prefix)).count()
}

#[test]
fn rebuild_matches_the_live_state_finds_a_tampered_key_and_cuts_over() {
    let started = Instant::now();
    let w = World::new("rebuild");
    let mut live = w.instance("totals", "live-0", &[]);
    live.start();
    let input = w.topic("totals.input");
    let produced = produce_inputs(&w.codec, &input, 0..INPUTS, 500, Duration::ZERO);
    let mut expected: BTreeMap<(i32, String), i64> = BTreeMap::new();
    for r in &produced {
        *expected.entry((r.partition, r.key.clone())).or_default() += r.amount;
    }
    assert_eq!(expected.len(), 1000);
    w.wait_quiescent(&["totals"], Duration::from_secs(120));

    // 1. The live processor keeps running, and more inputs arrive once the rebuild has copied
    // its snapshot: the live state moves past the copy, the rebuild copies the rest and still
    // compares like with like. The extra inputs are produced when the copy's finished progress
    // line appears, so that they are certainly not in the first copy.
    let mut child = it::evalstream()
        .env("EVALSTREAM_TOPIC_PREFIX", &w.prefix)
        .args(["rebuild", "totals", "--json", "--progress", "json", "--timeout", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut progress: Vec<Value> = Vec::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            let copy_done = v["finished"] == true
                && v["label"].as_str().is_some_and(|l| l.ends_with("copy inputs"));
            progress.push(v);
            if copy_done {
                break;
            }
        }
        line.clear();
    }
    let copied_first = progress.last().map(|p| p["done"].clone());
    assert_eq!(copied_first, Some(Value::from(INPUTS)), "{progress:?}");
    let late = produce_inputs(&w.codec, &input, INPUTS..INPUTS + LATE, 100, Duration::ZERO);
    for r in &late {
        *expected.entry((r.partition, r.key.clone())).or_default() += r.amount;
    }
    let digest = expected_digest(&expected);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{rest}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["equal"], true, "{report:#}");
    assert_eq!(report["live"]["keys"], 1000);
    assert_eq!(report["live"]["sha256"], digest.as_str(), "{report:#}");
    assert_eq!(report["rebuilt"]["sha256"], digest.as_str(), "{report:#}");
    let replayed: u64 =
        report["inputs"].as_array().unwrap().iter().map(|i| i["records"].as_u64().unwrap()).sum();
    assert_eq!(replayed, INPUTS + LATE, "{report:#}");
    assert!(rest.contains("\"finished\":true"), "no finished replay progress: {rest}");
    let prefix = report["rebuilt_prefix"].as_str().unwrap().to_string();
    assert!(prefix.starts_with(&format!("{}rebuild-", w.prefix)), "{prefix}");
    assert_eq!(topics_under(&prefix), 0, "the rebuilt topics were not deleted");

    // 2. Tamper with the live state: one wrong total for one key, committed in a transaction.
    assert!(live.stop().is_some_and(|s| s.success()));
    let (victim_partition, victim) = (produced[5].partition, produced[5].key.clone());
    let producer: BaseProducer =
        it::client_config().set("transactional.id", it::unique_name("tamper")).create().unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    let mut key = vec![STATE_KEY_PREFIX];
    key.extend_from_slice(victim.as_bytes());
    producer
        .send(
            BaseRecord::<[u8], [u8]>::to(&w.topic("evalstream.totals.changelog"))
                .partition(victim_partition)
                .key(&key)
                .payload(b"999999".as_slice()),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.commit_transaction(Duration::from_secs(30)).unwrap();

    let (code, report, out) = rebuild(&w, &["--keep"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(report["equal"], false);
    let d = &report["differences"];
    assert_eq!(d["differing"]["count"], 1, "{report:#}");
    assert_eq!(d["differing"]["first"][0]["key"], victim.as_str());
    assert_eq!(d["differing"]["first"][0]["partition"], victim_partition);
    assert_eq!(d["only_live"]["count"], 0);
    assert_eq!(d["only_rebuilt"]["count"], 0);
    assert_eq!(report["rebuilt"]["sha256"], digest.as_str());
    assert_ne!(report["live"]["sha256"], digest.as_str());
    let kept = report["rebuilt_prefix"].as_str().unwrap().to_string();
    assert!(topics_under(&kept) > 0, "--keep kept nothing");
    // The text report names the key.
    let text = w.cli(&["rebuild", "totals", "--timeout", "120"]);
    assert_eq!(text.status.code(), Some(1), "{text}");
    assert!(
        text.stdout.contains(&format!("1 keys whose values differ: p{victim_partition}/{victim}")),
        "{text}"
    );

    // 3. Cutover (the live processor is stopped): the live state becomes the rebuilt one.
    let (code, report, out) = rebuild(&w, &["--cutover"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(report["cutover"]["written"], 1, "{report:#}");
    assert_eq!(report["cutover"]["live_sha256_after"], digest.as_str());
    // The live processor restores the repaired total: its next output for the key says so.
    live.start();
    let before = w.read("totals.output").len();
    let extra = it::RawRecord::new(common::eos::encode_input(&w.codec, &input, &victim, 1, ""))
        .key(victim.clone());
    it::produce_raw(&input, &[extra]);
    let want = expected[&(victim_partition, victim.clone())] + 1;
    it::wait_until("the next output for the repaired key", Duration::from_secs(60), || {
        w.read("totals.output").len() > before
    });
    let last = w.read("totals.output").into_iter().rev().find(|(_, _, k, _)| *k == victim).unwrap();
    assert_eq!(last.3["total"], want, "{last:?}");
    // A cutover while the live processor runs is refused.
    let out = w.cli(&["rebuild", "totals", "--cutover", "--timeout", "120"]);
    assert_eq!(out.status.code(), Some(4), "{out}");
    assert!(out.stderr.contains("member"), "{out}");
    live.stop();
    it::delete_topics_under(&kept);
    eprintln!("rebuild test took {:?}", started.elapsed());
}

/// A domain processor: the submissions processor's state (accepted submissions, for duplicate
/// and conflict detection) is rebuilt exactly from `eval.submissions`, conflicts included.
#[test]
fn rebuild_reproduces_the_submissions_state() {
    let w = World::new("rebuild-subs");
    let mut live = w.instance("submissions", "live-0", &[]);
    live.start();
    let subs: Vec<(String, Value)> = (0..60)
        .map(|i| {
            // Every tenth submission reuses an earlier id with other content (a conflict).
            let id = format!("s{}", i - i % 10 * usize::from(i % 10 == 9));
            let v = serde_json::json!({
                "submission_id": id, "model_id": format!("m-{i}"), "model_version": "v1",
                "eval_suite": "safety", "submitter": "ci", "metrics": {"accuracy": 0.9},
                "artifact_uri": "s3://evals/x", "submitted_at": 1_763_458_200_000i64 + i as i64,
            });
            (id, v)
        })
        .collect();
    w.produce("eval.submissions", "evalstream.eval.EvalSubmission", &subs);
    w.wait_quiescent(&["submissions"], Duration::from_secs(120));
    let out = w.cli(&["rebuild", "submissions", "--json", "--timeout", "120"]);
    assert_eq!(out.status.code(), Some(0), "{out}");
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(report["equal"], true, "{report:#}");
    assert!(report["live"]["keys"].as_u64().unwrap() > 0, "{report:#}");
    live.stop();
}
