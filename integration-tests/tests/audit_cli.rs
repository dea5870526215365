//! `evalstream audit verify | export | prove | check-proof` against a real broker.
//!
//! The chain is built with the library (ChainHead, CompactRange, signed Checkpoints from a local
//! P-256 key, a signers.json from the SignerRegistry API) and produced straight into `audit.chain`, so
//! the operator commands are tested on exactly known records without running the processor:
//!
//! ```text
//!  partition 0: 60 entries, one a minute from 2025-11-18T00:00Z; a signed checkpoint every 10,
//!               except checkpoint 20: pending first, signed again after entry 24 (as after a
//!               signer outage)
//!  partition 1: 25 entries, signed checkpoints at 10 and 20; entries 20..24 not covered yet
//! ```
//!
//! Our local broker answers offsets-for-times with offset 0 for mid-log times, so the time-range
//! test also proves that the command checks and corrects that answer.
#![cfg(feature = "broker")]

use std::path::PathBuf;

use evalstream_audit::chain::{AuditEventJson, ChainHead};
use evalstream_audit::merkle::CompactRange;
use evalstream_audit::records::{
    ChainEntry, ChainRecord, ChainRecordBody, Checkpoint, CHAIN_RECORD_SCHEMA,
};
use evalstream_audit::signer::{LocalKeySigner, Signer, SignerKind};
use evalstream_audit::trust::{SignerEntry, SignerRegistry};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::{Codec, SchemaStore};
use serde_json::Value;

/// 2025-11-18T00:00:00Z (`date -u -d 2025-11-18 +%s`).
const BASE_MS: i64 = 1_763_424_000_000;
const MINUTE_MS: i64 = 60_000;

/// One partition's chain as produced: `(offset, record)` in order.
type Produced = Vec<(i64, ChainRecord)>;

struct Fixture {
    prefix: String,
    dir: PathBuf,
    signers: PathBuf,
    chains: Vec<Produced>,
}

impl Fixture {
    fn offset_of_seq(&self, partition: usize, seq: u64) -> i64 {
        self.chains[partition]
            .iter()
            .find(|(_, r)| matches!(&r.body, ChainRecordBody::Entry(e) if e.seq == seq))
            .map(|(o, _)| *o)
            .expect("entry produced")
    }

    fn evalstream(&self, args: &[&str]) -> it::CmdOutput {
        it::run(it::evalstream().args(args).env("EVALSTREAM_TOPIC_PREFIX", &self.prefix), None)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    fn signers(&self) -> &str {
        self.signers.to_str().unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds one partition's records: `entries` entries, a checkpoint after every 10th (pending
/// then late-signed for `late`), and applies `tamper` to each entry before it is produced.
struct Builder<'a> {
    partition: u32,
    signer: &'a LocalKeySigner,
    head: ChainHead,
    range: CompactRange,
    last_time: i64,
    records: Vec<ChainRecord>,
}

impl<'a> Builder<'a> {
    fn new(partition: u32, signer: &'a LocalKeySigner) -> Self {
        Builder {
            partition,
            signer,
            head: ChainHead::genesis(partition),
            range: CompactRange::new(),
            last_time: 0,
            records: Vec::new(),
        }
    }

    fn entry(&mut self, tamper: &dyn Fn(&mut ChainEntry)) {
        let seq = self.head.next_seq;
        let event = AuditEventJson {
            event_id: format!("evt-{}-{seq}", self.partition),
            event_type: "eval.submission_accepted".into(),
            actor: "eval-engine".into(),
            subject: format!("model-{}", seq % 7),
            occurred_at: BASE_MS + seq as i64 * MINUTE_MS,
            payload: format!(r#"{{"n":{seq},"note":"entry-{seq}","score":0.875}}"#),
        };
        let canonical = event.canonical_bytes().unwrap();
        let appended = self.head.append(&canonical).unwrap();
        self.range.append(&appended.entry_hash).unwrap();
        self.last_time = event.occurred_at;
        let mut e = ChainEntry::new(&appended, &event, canonical, self.partition, seq as i64);
        tamper(&mut e);
        self.records
            .push(ChainRecord { partition: self.partition, body: ChainRecordBody::Entry(e) });
    }

    fn pending(&self) -> Checkpoint {
        Checkpoint::pending(&self.range, self.head.head_hash, self.last_time)
    }

    fn sign(&self, cp: &Checkpoint) -> Checkpoint {
        let sig = self.signer.sign(&cp.body(self.partition).unwrap()).unwrap();
        cp.clone().with_signature(self.signer.kid().to_string(), "local".into(), sig)
    }

    fn checkpoint(&mut self, cp: Checkpoint) {
        self.records
            .push(ChainRecord { partition: self.partition, body: ChainRecordBody::Checkpoint(cp) });
    }
}

fn chain(
    partition: u32,
    signer: &LocalKeySigner,
    entries: u64,
    late: Option<u64>,
    tamper: &dyn Fn(&mut ChainEntry),
) -> Vec<ChainRecord> {
    let mut b = Builder::new(partition, signer);
    let mut held = None;
    for i in 1..=entries {
        b.entry(tamper);
        if i % 10 == 0 {
            let cp = b.pending();
            if Some(i) == late {
                b.checkpoint(cp.clone());
                held = Some(cp);
            } else {
                let signed = b.sign(&cp);
                b.checkpoint(signed);
            }
        }
        if late.is_some_and(|l| i == l + 4) {
            let signed = b.sign(held.as_ref().unwrap());
            b.checkpoint(signed);
        }
    }
    b.records
}

/// Creates `audit.chain` under a fresh prefix, produces both partitions' chains (in a few
/// batches, so the broker holds several record batches) and writes signers.json.
fn fixture(name: &str, tamper: &dyn Fn(&mut ChainEntry)) -> Fixture {
    let prefix = format!("{}.", it::unique_name(name));
    let topic = format!("{prefix}audit.chain");
    it::create_topic(&topic, 2);
    let dir = std::env::temp_dir().join(it::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    let signer = LocalKeySigner::random().unwrap();
    let mut registry = SignerRegistry::new();
    registry
        .add(
            SignerEntry::new(
                signer.kid(),
                SignerKind::Local,
                signer.public_key_spki_der(),
                946_684_800_000,
            )
            .unwrap(),
        )
        .unwrap();
    let signers = dir.join("signers.json");
    registry.save(&signers).unwrap();
    let codec = Codec::new(SchemaStore::bundled().unwrap(), None).unwrap();
    let mut chains = Vec::new();
    for (partition, records) in
        [(0u32, chain(0, &signer, 60, Some(20), tamper)), (1, chain(1, &signer, 25, None, tamper))]
    {
        let raw: Vec<it::RawRecord> = records
            .iter()
            .map(|r| {
                let value =
                    codec.encode(&topic, CHAIN_RECORD_SCHEMA, &r.to_avro().unwrap()).unwrap();
                let rec = it::RawRecord::new(value).partition(partition as i32);
                match &r.body {
                    ChainRecordBody::Entry(e) => rec.key(e.event_id.clone()),
                    ChainRecordBody::Checkpoint(_) => rec,
                }
            })
            .collect();
        let mut offsets = Vec::new();
        for batch in raw.chunks(17) {
            offsets.extend(it::produce_raw(&topic, batch).into_iter().map(|(_, o)| o));
        }
        chains.push(offsets.into_iter().zip(records).collect());
    }
    Fixture { prefix, dir, signers, chains }
}

fn json(out: &it::CmdOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The finished `--progress json` lines on stderr whose label starts with `label`.
fn progress_lines(out: &it::CmdOutput, label: &str) -> Vec<Value> {
    out.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "progress" && v["finished"] == true)
        .filter(|v| v["label"].as_str().is_some_and(|l| l.starts_with(label)))
        .collect()
}

fn code(out: &it::CmdOutput) -> i32 {
    out.status.code().expect("exited")
}

fn partition(doc: &Value, p: u64) -> &Value {
    doc["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["partition"] == p)
        .unwrap_or_else(|| panic!("partition {p} in {doc}"))
}

#[test]
fn verify_ranges_by_offset_and_by_time() {
    let f = fixture("audit-cli-verify", &|_| {});

    // Everything: partition 0 verifies, partition 1's newest entries are not signed yet.
    // With `--progress json`: JSON progress lines on stderr, one finished line per partition;
    // stdout stays the report.
    let out = f.evalstream(&[
        "audit",
        "verify",
        "--signers",
        f.signers(),
        "--json",
        "--progress",
        "json",
    ]);
    assert_eq!(code(&out), 3, "{out}");
    let finished = progress_lines(&out, "audit verify partition ");
    assert_eq!(finished.len(), 2, "{out}");
    assert!(finished.iter().all(|l| l["done"].as_u64() > Some(0) && l["total"].is_u64()), "{out}");
    let doc = json(&out);
    assert_eq!(doc["status"], "pending_signature");
    // Not a terminal, no `--progress`: no progress at all.
    let out = f.evalstream(&["audit", "verify", "--signers", f.signers(), "--json"]);
    assert_eq!(code(&out), 3, "{out}");
    assert!(!out.stderr.contains("\"progress\""), "{out}");
    let p0 = partition(&doc, 0);
    assert_eq!(p0["status"], "ok", "{p0}");
    assert_eq!(p0["range"]["entries"], 60);
    assert_eq!(p0["read"]["covered_by"]["tree_size"], 60);
    let p1 = partition(&doc, 1);
    assert_eq!(p1["status"], "pending_signature", "{p1}");
    assert_eq!(p1["pending"][0]["from_seq"], 20);
    assert_eq!(p1["pending"][0]["to_seq"], 24);

    // The covered part of partition 1 verifies; text output names the result.
    let to = f.offset_of_seq(1, 19).to_string();
    let out = f.evalstream(&[
        "audit",
        "verify",
        "--partition",
        "1",
        "--to",
        &to,
        "--signers",
        f.signers(),
    ]);
    assert_eq!(code(&out), 0, "{out}");
    assert!(out.stdout.contains("partition 1: ok"), "{out}");

    // A mid-log time range: starts at entry 20 (00:20), ends before entry 40 (00:40). The
    // anchor is the pending checkpoint 20, the covering one the signed checkpoint 40.
    let out = f.evalstream(&[
        "audit",
        "verify",
        "--partition",
        "0",
        "--from",
        "2025-11-18T00:20:00Z",
        "--to",
        "2025-11-18T00:40:00Z",
        "--signers",
        f.signers(),
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{out}");
    let doc = json(&out);
    let p0 = partition(&doc, 0);
    assert_eq!(p0["range"]["from_seq"], 20, "{p0}");
    assert_eq!(p0["range"]["to_seq"], 39, "{p0}");
    assert_eq!(p0["range"]["from_offset"], f.offset_of_seq(0, 20));
    assert_eq!(p0["read"]["anchor"]["tree_size"], 20, "{p0}");
    assert_eq!(p0["read"]["covered_by"]["tree_size"], 40, "{p0}");
    let located = p0["located"].as_array().unwrap();
    assert_eq!(located[0]["offset"], f.offset_of_seq(0, 20), "{p0}");
    assert_eq!(located[1]["offset"], f.offset_of_seq(0, 40), "{p0}");
    eprintln!("offsets-for-times answers: {located:?}");

    // Offsets, inclusive; a range starting right after the late-signed copy of checkpoint 20.
    let (from, to) = (f.offset_of_seq(0, 25).to_string(), f.offset_of_seq(0, 33).to_string());
    let out = f.evalstream(&[
        "audit",
        "verify",
        "--partition",
        "0",
        "--from",
        &from,
        "--to",
        &to,
        "--signers",
        f.signers(),
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{out}");
    let p0 = partition(&json(&out), 0).clone();
    assert_eq!(
        (p0["range"]["from_seq"].as_u64(), p0["range"]["to_seq"].as_u64()),
        (Some(25), Some(33))
    );

    // Whole days, as the runbook writes them.
    let out = f.evalstream(&[
        "audit",
        "verify",
        "--partition",
        "0",
        "--from",
        "2025-11-18",
        "--to",
        "2025-11-18",
        "--signers",
        f.signers(),
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{out}");
    assert_eq!(partition(&json(&out), 0)["range"]["entries"], 60);

    // Without a registry nothing fails, but nothing is proven either.
    let out = f.evalstream(&["audit", "verify", "--partition", "0"]);
    assert_eq!(code(&out), 3, "{out}");
    assert!(out.stdout.contains("signatures were not checked"), "{out}");
}

#[test]
fn a_changed_entry_on_the_broker_is_named() {
    let f = fixture("audit-cli-tamper", &|e| {
        if e.seq == 17 {
            e.canonical = String::from_utf8(e.canonical.clone())
                .unwrap()
                .replace("entry-17", "entry-71")
                .into_bytes();
        }
    });
    let out = f.evalstream(&["audit", "verify", "--signers", f.signers(), "--json"]);
    assert_eq!(code(&out), 1, "{out}");
    let doc = json(&out);
    assert_eq!(doc["status"], "failed");
    for p in 0..2u64 {
        let first = &partition(&doc, p)["earliest_failure"];
        assert_eq!(first["status"], "hash_mismatch", "{first}");
        assert_eq!(first["first_failing_seq"], 17, "{first}");
        assert_eq!(first["event_id"], format!("evt-{p}-17"), "{first}");
        assert_eq!(first["offset"], f.offset_of_seq(p as usize, 17), "{first}");
    }
    let out = f.evalstream(&["audit", "verify", "--partition", "0", "--signers", f.signers()]);
    assert_eq!(code(&out), 1, "{out}");
    assert!(
        out.stdout.contains("earliest failing event in partition 0: seq 17, event evt-0-17"),
        "{out}"
    );
}

#[test]
fn exports_verify_offline_and_a_changed_archive_fails() {
    let f = fixture("audit-cli-export", &|_| {});
    let (from, to) = (f.offset_of_seq(0, 26).to_string(), f.offset_of_seq(0, 44).to_string());
    for format in ["jsonl", "avro"] {
        let file = f.path(&format!("range.{format}"));
        let out = f.evalstream(&[
            "audit",
            "export",
            "--partition",
            "0",
            "--from",
            &from,
            "--to",
            &to,
            "--out",
            &file,
            "--format",
            format,
            "--signers",
            f.signers(),
            "--progress",
            "json",
        ]);
        assert_eq!(code(&out), 0, "{out}");
        assert_eq!(progress_lines(&out, "audit export partition 0").len(), 1, "{out}");
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(bytes.starts_with(b"Obj\x01"), format == "avro");
        let out = f.evalstream(&[
            "audit",
            "verify",
            "--archive",
            &file,
            "--signers",
            f.signers(),
            "--json",
        ]);
        assert_eq!(code(&out), 0, "{format}: {out}");
        let doc = json(&out);
        let p0 = partition(&doc, 0);
        // The archive starts at the checkpoint before the range and ends at the covering one.
        assert_eq!(p0["read"]["anchor"]["tree_size"], 20, "{p0}");
        assert_eq!(p0["read"]["covered_by"]["tree_size"], 50, "{p0}");
        assert_eq!(p0["range"]["to_seq"], 49, "{p0}");
        assert_eq!(p0["range"]["from_offset"], f.offset_of_seq(0, 20), "{format}: real offsets");
    }

    // Change one event's canonical bytes in the archive: exit 1, naming it.
    let file = f.path("range.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("entry-33"));
    let changed = f.path("changed.jsonl");
    std::fs::write(&changed, text.replace("entry-33", "entry-34")).unwrap();
    let out = f.evalstream(&[
        "audit",
        "verify",
        "--archive",
        &changed,
        "--signers",
        f.signers(),
        "--json",
    ]);
    assert_eq!(code(&out), 1, "{out}");
    let doc = json(&out);
    let first = &doc["earliest_failures"][0];
    assert_eq!(first["first_failing_seq"], 33, "{doc}");
    assert_eq!(first["event_id"], "evt-0-33", "{doc}");
    assert_eq!(first["offset"], f.offset_of_seq(0, 33), "{doc}");

    // The same change in the Avro archive (uncompressed: the canonical bytes are in the clear).
    let avro = std::fs::read(f.path("range.avro")).unwrap();
    let at = avro.windows(8).position(|w| w == b"entry-33").expect("canonical bytes in the file");
    let mut changed_avro = avro.clone();
    changed_avro[at + 7] = b'4';
    let changed = f.path("changed.avro");
    std::fs::write(&changed, changed_avro).unwrap();
    let out = f.evalstream(&["audit", "verify", "--archive", &changed, "--signers", f.signers()]);
    assert_eq!(code(&out), 1, "{out}");
    assert!(
        out.stdout.contains("earliest failing event in partition 0: seq 33, event evt-0-33"),
        "{out}"
    );

    // Drop an entry line: the chain has a gap.
    let dropped: Vec<&str> = text.lines().filter(|l| !l.contains("\"evt-0-35\"")).collect();
    let gap = f.path("gap.jsonl");
    std::fs::write(&gap, dropped.join("\n")).unwrap();
    let out = f.evalstream(&["audit", "verify", "--archive", &gap, "--signers", f.signers()]);
    assert_eq!(code(&out), 1, "{out}");
    assert!(out.stdout.contains("seq 35"), "{out}");
}

#[test]
fn proofs_check_without_the_broker_and_a_changed_proof_fails() {
    let f = fixture("audit-cli-prove", &|_| {});
    let proof = f.path("proof.json");
    let out = f.evalstream(&["audit", "prove", "--event-id", "evt-0-33", "--out", &proof]);
    assert_eq!(code(&out), 0, "{out}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&proof).unwrap()).unwrap();
    assert_eq!(doc["partition"], 0);
    assert_eq!(doc["seq"], 33);
    assert_eq!(doc["tree_size"], 40);
    assert_eq!(doc["checkpoint"]["status"], "signed");
    assert_eq!(doc["offset"], f.offset_of_seq(0, 33));

    // No broker needed from here on: an unreachable one proves it.
    let check = |args: &[&str]| {
        it::run(it::evalstream().args(args).env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"), None)
    };
    let out = check(&["audit", "check-proof", &proof, "--signers", f.signers()]);
    assert_eq!(code(&out), 0, "{out}");
    assert!(out.stdout.contains("proof valid"), "{out}");
    let out = check(&["audit", "check-proof", &proof]);
    assert_eq!(code(&out), 3, "{out}");
    let out = check(&["audit", "check-proof", &proof, "--no-signature"]);
    assert_eq!(code(&out), 0, "{out}");

    // A changed event no longer proves anything.
    let text = std::fs::read_to_string(&proof).unwrap();
    let changed = f.path("changed-proof.json");
    std::fs::write(&changed, text.replace("entry-33", "entry-34")).unwrap();
    let out = check(&["audit", "check-proof", &changed, "--signers", f.signers(), "--json"]);
    assert_eq!(code(&out), 1, "{out}");
    let report = json(&out);
    assert_eq!(report["verdict"], "invalid");
    assert_eq!(report["event_id"], "evt-0-33");
    let failed: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ok"] == false)
        .map(|s| s["check"].as_str().unwrap())
        .collect();
    assert!(failed.contains(&"entry hash"), "{report}");

    // An entry after the last signed checkpoint has no proof yet; an unknown event none at all.
    let out = f.evalstream(&["audit", "prove", "--event-id", "evt-1-22", "--partition", "1"]);
    assert_eq!(code(&out), 3, "{out}");
    let out = f.evalstream(&["audit", "prove", "--event-id", "no-such-event"]);
    assert_eq!(code(&out), 4, "{out}");
}
