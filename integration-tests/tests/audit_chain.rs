//! The audit chain under crashes, tampering and key rotation.
//!
//! * 200k audit events over 4 partitions with >1% duplicate event ids (an at-least-once
//!   producer); the audit-chain process is SIGKILLed at least 5 times at random points and
//!   restarted; then the audit-verifier reports `ok` for every partition, and an independent
//!   consumer confirms every distinct event id is chained exactly once, in input order.
#![cfg(feature = "broker")]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::audit;
use common::eos::Instance;
use evalstream_audit::records::{ChainRecordBody, VerificationStatus};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;
use rand::Rng;

const PARTITIONS: i32 = 4;

fn events_total() -> u64 {
    std::env::var("AUDIT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000)
}

fn topics(prefix: &str) {
    for t in ["audit.events", "audit.chain", "audit.verifications"] {
        it::create_topic(&format!("{prefix}{t}"), PARTITIONS);
    }
}

/// Produces `n` events (ids `ev-<i>`, partition by i) in batches, re-sending ~2% of them a few
/// records later (same partition) as an at-least-once producer would. Returns, per partition,
/// the input order of distinct ids.
fn produce_events(
    codec: &Codec,
    topic: &str,
    n: u64,
    pause: Duration,
) -> (BTreeMap<i32, Vec<String>>, usize) {
    let mut order: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut dups = 0;
    let mut batch = Vec::new();
    let mut pending_dups: Vec<(u64, it::RawRecord)> = Vec::new();
    for i in 0..n {
        let p = (i % PARTITIONS as u64) as i32;
        let id = format!("ev-{i}");
        let rec = it::RawRecord::new(audit::encode_event(codec, topic, &id, i))
            .key(id.clone())
            .partition(p);
        if i % 50 == 3 {
            pending_dups.push((i + 40, rec.clone()));
        }
        order.entry(p).or_default().push(id);
        batch.push(rec);
        while pending_dups.first().is_some_and(|(at, _)| *at <= i) {
            batch.push(pending_dups.remove(0).1);
            dups += 1;
        }
        if batch.len() >= 2000 {
            it::produce_raw(topic, &batch);
            batch.clear();
            std::thread::sleep(pause);
        }
    }
    batch.extend(pending_dups.drain(..).map(|(_, r)| r));
    it::produce_raw(topic, &batch);
    (order, dups)
}

fn chain_instance(prefix: &str, key: &std::path::Path, id: &str) -> Instance {
    Instance::new("audit-chain", prefix, id)
        .env("AUDIT_SIGNING_KEY_FILE", key.to_str().unwrap())
        .env("AUDIT_SIGNER_KID", "audit-test-a")
}

fn verifier_instance(prefix: &str, signers: &std::path::Path) -> Instance {
    Instance::new("audit-verifier", prefix, "v0").env("SIGNERS_FILE", signers.to_str().unwrap())
}

/// Waits until `group` has committed past every record now in `topic`.
fn wait_group(group: &str, topic: &str, timeout: Duration) {
    let expected = common::eos::next_offsets(topic);
    it::wait_until(&format!("{group} to commit all of {topic}"), timeout, || {
        std::thread::sleep(Duration::from_millis(500));
        common::eos::group_committed(group, topic, &expected)
    });
}

/// Sum of the group's committed offsets on `topic` (0 when none).
fn committed_total(group: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = it::client_config().set("group.id", group).create().expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .map(|t| {
            t.elements()
                .iter()
                .map(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn chain_is_exact_under_crashes_with_duplicates() {
    let prefix = format!("{}.", it::unique_name("achain"));
    topics(&prefix);
    let codec = Codec::from_env().expect("codec");
    let dir = audit::temp_dir("achain");
    let (key, signers) = audit::local_signer(&dir, "audit-test-a");
    let n = events_total();

    let mut chain = chain_instance(&prefix, &key, "c0");
    chain.start();
    let producer = {
        let (codec, topic) = (codec.clone(), format!("{prefix}audit.events"));
        std::thread::spawn(move || produce_events(&codec, &topic, n, Duration::from_millis(150)))
    };
    // Each kill comes after the restarted instance has committed new work (so it dies in the
    // middle of processing, not while joining the group), at a random point after that.
    let group = format!("{prefix}evalstream.audit-chain");
    let events_topic = format!("{prefix}audit.events");
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    let started = Instant::now();
    while !producer.is_finished() || kills < 5 {
        let before = committed_total(&group, &events_topic);
        it::wait_until("audit-chain to commit new work", Duration::from_secs(120), || {
            std::thread::sleep(Duration::from_millis(200));
            committed_total(&group, &events_topic) > before
                || (producer.is_finished() && kills >= 5)
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..2500)));
        chain.kill();
        kills += 1;
        eprintln!("[{:?}] SIGKILLed audit-chain (kill #{kills})", started.elapsed());
        chain.start();
        assert!(started.elapsed() < Duration::from_secs(1200), "test ran too long");
    }
    let (order, dups) = producer.join().expect("producer");
    assert!(dups as f64 >= 0.01 * n as f64, "only {dups} duplicates");
    wait_group(
        &format!("{prefix}evalstream.audit-chain"),
        &format!("{prefix}audit.events"),
        Duration::from_secs(600),
    );
    // Let the idle punctuation checkpoint (and sign) the tail.
    std::thread::sleep(Duration::from_secs(3));
    chain.stop();

    // Independent consumer: every distinct id exactly once, in input order, per partition.
    let records = audit::read_chain(&codec, &format!("{prefix}audit.chain"));
    let mut total = 0;
    for p in 0..PARTITIONS {
        let recs = records.get(&p).map(Vec::as_slice).unwrap_or_default();
        let ids: Vec<&str> = audit::entries(recs).iter().map(|e| e.event_id.as_str()).collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "partition {p}: an event id was chained twice");
        let want: Vec<&str> = order[&p].iter().map(String::as_str).collect();
        assert_eq!(
            ids, want,
            "partition {p}: chained ids differ from the distinct input ids in input order"
        );
        let seqs: Vec<u64> = audit::entries(recs).iter().map(|e| e.seq).collect();
        assert!(
            seqs.iter().enumerate().all(|(i, s)| *s == i as u64),
            "partition {p}: sequence numbers are not 0..n"
        );
        total += ids.len();
    }
    assert_eq!(total as u64, n);

    // The verifier processor reports ok for every partition.
    let mut verifier = verifier_instance(&prefix, &signers);
    verifier.start();
    wait_group(
        &format!("{prefix}evalstream.audit-verifier"),
        &format!("{prefix}audit.chain"),
        Duration::from_secs(600),
    );
    verifier.stop();
    let results = audit::read_verifications(&codec, &format!("{prefix}audit.verifications"));
    for p in 0..PARTITIONS {
        let rs = results.get(&p).cloned().unwrap_or_default();
        let bad: Vec<_> = rs
            .iter()
            .filter(|r| {
                !matches!(r.status, VerificationStatus::Ok | VerificationStatus::PendingSignature)
            })
            .collect();
        assert!(bad.is_empty(), "partition {p}: failures {bad:?}");
        let last_ok =
            rs.iter().filter(|r| r.status == VerificationStatus::Ok).map(|r| r.to_seq).max();
        let entries = audit::entries(&records[&p]).len() as u64;
        assert_eq!(
            last_ok,
            Some(entries - 1),
            "partition {p}: the whole chain must be covered by ok results"
        );
        // Every pending checkpoint was signed later.
        let pending: HashSet<u64> = records[&p]
            .iter()
            .filter_map(|(_, r)| match &r.body {
                ChainRecordBody::Checkpoint(c) if c.signature.is_none() => Some(c.tree_size),
                _ => None,
            })
            .collect();
        let signed: HashSet<u64> = records[&p]
            .iter()
            .filter_map(|(_, r)| match &r.body {
                ChainRecordBody::Checkpoint(c) if c.signature.is_some() => Some(c.tree_size),
                _ => None,
            })
            .collect();
        assert!(
            pending.is_subset(&signed),
            "partition {p}: unsigned checkpoints {:?}",
            pending.difference(&signed).collect::<Vec<_>>()
        );
    }
    eprintln!("kills={kills} duplicates={dups} entries={total}");
    let _ = std::fs::remove_dir_all(dir);
}
