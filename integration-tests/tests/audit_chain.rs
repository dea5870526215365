//! The audit chain under crashes and failing transaction calls.
//!
//! * Audit events over 4 partitions with >1% duplicate event ids (an at-least-once producer);
//!   the audit-chain process is SIGKILLed at least 5 times at random points and restarted.
//! * The same input with the flush, `send_offsets_to_transaction` and `commit_transaction`
//!   failing inside a living process (the chain's memory must be rebuilt from the log after
//!   every abort, or the chain gets gaps).
//!
//! Verdicts: a plain `read_committed` consumer (on Kafka) confirms every distinct event id is
//! chained exactly once, in input order, with sequence numbers 0..n linked by their hashes;
//! `evalstream audit verify` exits 0; and the audit-verifier processor reports only `ok`.
#![cfg(feature = "broker")]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::audit;
use common::eos::Instance;
use evalstream_audit::records::{ChainRecordBody, VerificationStatus};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;
use rand::Rng;

const PARTITIONS: i32 = 4;

fn events_total() -> u64 {
    std::env::var("AUDIT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000)
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
    batch_size: usize,
    pause: Duration,
    stop: &AtomicBool,
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
        if batch.len() >= batch_size {
            it::produce_raw(topic, &batch);
            batch.clear();
            if stop.load(Ordering::SeqCst) {
                break;
            }
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

/// The independent check of `audit.chain`: per partition, the distinct ids in input order, each
/// exactly once, sequence numbers 0..n, every entry linking to the previous entry's hash.
/// Returns the number of entries.
fn check_chain_exact(codec: &Codec, prefix: &str, order: &BTreeMap<i32, Vec<String>>) -> usize {
    let records = audit::read_chain(codec, &format!("{prefix}audit.chain"));
    let mut total = 0;
    for p in 0..PARTITIONS {
        let recs = records.get(&p).map(Vec::as_slice).unwrap_or_default();
        let entries = audit::entries(recs);
        let ids: Vec<&str> = entries.iter().map(|e| e.event_id.as_str()).collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "partition {p}: an event id was chained twice");
        let want: Vec<&str> = order[&p].iter().map(String::as_str).collect();
        assert_eq!(
            ids, want,
            "partition {p}: chained ids differ from the distinct input ids in input order"
        );
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.seq, i as u64, "partition {p}: sequence numbers are not 0..n");
            if i > 0 {
                assert_eq!(e.prev_hash, entries[i - 1].entry_hash, "partition {p}: fork at {i}");
            }
        }
        total += ids.len();
    }
    total
}

/// `evalstream audit verify` over everything: must exit 0 (every entry verified and signed).
fn audit_verify_ok(prefix: &str, signers: &std::path::Path) {
    let out = it::run(
        it::evalstream()
            .args(["audit", "verify", "--signers", signers.to_str().unwrap(), "--json"])
            .env("EVALSTREAM_TOPIC_PREFIX", prefix),
        None,
    );
    assert!(out.status.success(), "audit verify failed: {out}");
}

/// Runs the audit-verifier processor over the whole chain; every result must be ok (or pending)
/// and the ok results must cover every entry.
fn verifier_reports_ok(codec: &Codec, prefix: &str, signers: &std::path::Path) {
    let mut verifier = verifier_instance(prefix, signers);
    verifier.start();
    wait_group(
        &format!("{prefix}evalstream.audit-verifier"),
        &format!("{prefix}audit.chain"),
        Duration::from_secs(600),
    );
    verifier.stop();
    let records = audit::read_chain(codec, &format!("{prefix}audit.chain"));
    let results = audit::read_verifications(codec, &format!("{prefix}audit.verifications"));
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
}

#[test]
fn chain_is_exact_under_crashes_with_duplicates() {
    let started = Instant::now();
    let prefix = format!("{}.", it::unique_name("achain"));
    topics(&prefix);
    let codec = Codec::from_env().expect("codec");
    let dir = audit::temp_dir("achain");
    let (key, signers) = audit::local_signer(&dir, "audit-test-a");
    let n = events_total();

    // The first incarnation crashes inside its third transaction, right after its records were
    // delivered (a crash that certainly leaves an open transaction behind); then random kills.
    let mut chain = chain_instance(&prefix, &key, "c0").env("EVALSTREAM_FAIL_AT", "after_flush:3");
    chain.start();
    let producer = {
        let (codec, topic) = (codec.clone(), format!("{prefix}audit.events"));
        // About 40 s of input: every kill below lands while events are flowing.
        let pause = Duration::from_millis(2000 * 40_000 / n.max(1));
        std::thread::spawn(move || {
            produce_events(&codec, &topic, n, 2000, pause, &AtomicBool::new(false))
        })
    };
    // Each kill comes after the restarted instance has committed new work (so it dies in the
    // middle of processing, not while joining the group), at a random point after that.
    let group = format!("{prefix}evalstream.audit-chain");
    let events_topic = format!("{prefix}audit.events");
    let mut rng = rand::thread_rng();
    it::wait_until("the crash inside a transaction", Duration::from_secs(60), || !chain.running());
    let mut kills = 1;
    let mut kills_while_flowing = 1;
    chain = chain_instance(&prefix, &key, "c0");
    chain.start();
    while !producer.is_finished() || kills < 5 {
        let before = committed_total(&group, &events_topic);
        it::wait_until("audit-chain to commit new work", Duration::from_secs(120), || {
            std::thread::sleep(Duration::from_millis(200));
            committed_total(&group, &events_topic) > before || producer.is_finished()
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..2500)));
        if !producer.is_finished() {
            kills_while_flowing += 1;
        }
        chain.kill();
        kills += 1;
        eprintln!("[{:?}] SIGKILLed audit-chain (kill #{kills})", started.elapsed());
        chain.start();
        assert!(started.elapsed() < Duration::from_secs(1200), "test ran too long");
    }
    let (order, dups) = producer.join().expect("producer");
    assert!(dups as f64 >= 0.01 * n as f64, "only {dups} duplicates");
    wait_group(&group, &events_topic, Duration::from_secs(600));
    audit::wait_tail_signed(&codec, &prefix, PARTITIONS);
    chain.stop();

    let total = check_chain_exact(&codec, &prefix, &order);
    assert_eq!(total as u64, n);
    audit_verify_ok(&prefix, &signers);
    verifier_reports_ok(&codec, &prefix, &signers);
    assert!(kills >= 5, "only {kills} kills");
    assert!(kills_while_flowing >= 3, "only {kills_while_flowing} kills while events flowed");
    eprintln!(
        "[audit chain kills] events={n} duplicates={dups} kills={kills} \
         (while flowing: {kills_while_flowing}) entries={total} lost=0 duplicated=0 elapsed={:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The chain's memory (heads, Merkle ranges, dedup window) lives outside the runtime's state
/// store; after every aborted transaction it must equal what the log proves again, or replayed
/// events are "seen" and skipped and the chain gets gaps.
#[test]
fn chain_is_exact_when_transaction_calls_fail() {
    let started = Instant::now();
    let prefix = format!("{}.", it::unique_name("achain-fault"));
    topics(&prefix);
    let codec = Codec::from_env().expect("codec");
    let dir = audit::temp_dir("achain-fault");
    let (key, signers) = audit::local_signer(&dir, "audit-test-a");
    let n = 8_000;
    let faults = "flush_error:every=5,offsets_error:every=7,commit_error:every=11";
    let mut chain = chain_instance(&prefix, &key, "c0")
        .env("EVALSTREAM_FAIL_AT", faults)
        .env("EVALSTREAM_COMMIT_MAX_RECORDS", "100")
        .with_ops();
    chain.start();
    let (order, dups) = {
        let (codec, topic) = (codec.clone(), format!("{prefix}audit.events"));
        std::thread::spawn(move || {
            produce_events(
                &codec,
                &topic,
                n,
                2000,
                Duration::from_millis(100),
                &AtomicBool::new(false),
            )
        })
        .join()
        .expect("producer")
    };
    let group = format!("{prefix}evalstream.audit-chain");
    wait_group(&group, &format!("{prefix}audit.events"), Duration::from_secs(300));
    audit::wait_tail_signed(&codec, &prefix, PARTITIONS);
    assert!(chain.running(), "the process must recover in place");
    let injected: Vec<f64> = ["flush_error", "offsets_error", "commit_error"]
        .iter()
        .map(|p| chain.metric("evalstream_faults_injected_total", &[&format!("point=\"{p}\"")]))
        .collect();
    let aborted = chain.metric("evalstream_transactions_aborted_total", &[]);
    chain.stop();
    assert!(injected.iter().all(|n| *n >= 2.0), "faults injected: {injected:?}");

    let total = check_chain_exact(&codec, &prefix, &order);
    assert_eq!(total as u64, n);
    audit_verify_ok(&prefix, &signers);
    eprintln!(
        "[audit chain faults] events={n} duplicates={dups} faults={injected:?} aborted_txns={aborted} \
         entries={total} lost=0 duplicated=0 elapsed={:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A zombie: an audit-chain instance frozen (SIGSTOP) while its transaction is open, until the
/// group has moved its partitions to the other instance, then thawed (SIGCONT). It must be
/// fenced (its next `send_offsets_to_transaction` fails on the old group generation), the
/// transaction it had open must never become visible, and the chain must not fork.
#[test]
fn a_zombie_is_fenced_and_the_chain_does_not_fork() {
    let started = Instant::now();
    let prefix = format!("{}.", it::unique_name("zombie"));
    topics(&prefix);
    let codec = Codec::from_env().expect("codec");
    let dir = audit::temp_dir("zombie");
    let (key, signers) = audit::local_signer(&dir, "audit-test-a");
    // Input flows in small batches (800 events/s) until the zombie has been thawed and has
    // rejoined: the instances then have a transaction open (up to one commit interval after each
    // batch) much of the time, so that z can be frozen inside one however long the detection
    // takes on a loaded machine, and y and the thawed z work on live input. (A fixed amount ran
    // out while a loaded CI machine was still trying to freeze z.)
    let stop_input = Arc::new(AtomicBool::new(false));
    let producer = {
        let (codec, topic) = (codec.clone(), format!("{prefix}audit.events"));
        let stop = Arc::clone(&stop_input);
        std::thread::spawn(move || {
            produce_events(&codec, &topic, 1_000_000, 200, Duration::from_millis(250), &stop)
        })
    };
    let group = format!("{prefix}evalstream.audit-chain");
    let events_topic = format!("{prefix}audit.events");
    let mut z = chain_instance(&prefix, &key, "z").with_ops();
    let mut y = chain_instance(&prefix, &key, "y").with_ops();
    z.start();
    y.start();
    it::wait_until("both instances to own partitions", Duration::from_secs(90), || {
        std::thread::sleep(Duration::from_millis(250));
        z.ready_partitions().is_some_and(|p| p > 0) && y.ready_partitions().is_some_and(|p| p > 0)
    });
    let before = common::eos::committed_sum(&group, &events_topic);
    it::wait_until("work to be committed", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(200));
        common::eos::committed_sum(&group, &events_topic) > before
    });

    // Freeze z while it has a transaction open: records of z that a read_uncommitted reader
    // sees and a read_committed reader does not.
    let chain_topic = format!("{prefix}audit.chain");
    let mut zombie_txns = HashSet::new();
    for attempt in 1..=60 {
        z.signal("STOP");
        zombie_txns = open_txns(&chain_topic, "z-");
        if !zombie_txns.is_empty() {
            eprintln!(
                "[{:?}] z frozen (SIGSTOP) inside {zombie_txns:?} at attempt {attempt}",
                started.elapsed()
            );
            break;
        }
        z.signal("CONT");
        assert!(attempt < 60, "z never had a transaction open when frozen");
        std::thread::sleep(Duration::from_millis(137));
    }
    it::wait_until("y to own every partition", Duration::from_secs(90), || {
        std::thread::sleep(Duration::from_millis(250));
        y.ready_partitions() == Some(PARTITIONS as u64)
    });
    let before = common::eos::committed_sum(&group, &events_topic);
    it::wait_until("y to commit work on z's partitions", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(200));
        common::eos::committed_sum(&group, &events_topic) > before
    });
    z.signal("CONT");
    eprintln!("[{:?}] z thawed (SIGCONT)", started.elapsed());
    it::wait_until("z to rejoin and own partitions again", Duration::from_secs(90), || {
        std::thread::sleep(Duration::from_millis(250));
        z.ready_partitions().is_some_and(|p| p > 0)
    });
    let z_metrics = z.metrics();
    let fenced = it::metric_sum(&z_metrics, "evalstream_transactions_aborted_total", &[])
        + it::metric_sum(&z_metrics, "evalstream_rebalances_total", &["kind=\"lost\""]);

    stop_input.store(true, Ordering::SeqCst);
    let (order, dups) = producer.join().expect("producer");
    let n: u64 = order.values().map(|ids| ids.len() as u64).sum();
    wait_group(&group, &events_topic, Duration::from_secs(300));
    audit::wait_tail_signed(&codec, &prefix, PARTITIONS);
    assert!(z.running() && y.running(), "both instances must keep running");
    z.stop();
    y.stop();

    // The transaction z had open when it was frozen never becomes visible.
    let committed: HashSet<String> = it::read_topic_stable(&chain_topic)
        .iter()
        .filter_map(|r| r.header_str(evalstream_runtime::headers::TXN).map(str::to_string))
        .collect();
    eprintln!("zombie transactions: {zombie_txns:?}; fenced signals on z: {fenced}");
    for txn in &zombie_txns {
        assert!(
            !committed.contains(txn),
            "z's transaction {txn}, open when frozen, became visible"
        );
    }
    assert!(fenced > 0.0, "z never noticed that it was fenced");

    let total = check_chain_exact(&codec, &prefix, &order);
    assert_eq!(total as u64, n);
    audit_verify_ok(&prefix, &signers);
    eprintln!(
        "[audit chain zombie] events={n} duplicates={dups} freezes=1 zombie_txn_visible=false \
         entries={total} lost=0 duplicated=0 elapsed={:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Two audit-chain instances while one of them is SIGKILLed again and again; every other time
/// it comes back under a *new* instance id (a takeover: nothing fences the dead instance's open
/// transaction, the survivor takes its partitions and must read past it).
#[test]
fn two_chain_instances_with_kills_and_takeovers() {
    let started = Instant::now();
    let prefix = format!("{}.", it::unique_name("achain2"));
    topics(&prefix);
    let codec = Codec::from_env().expect("codec");
    let dir = audit::temp_dir("achain2");
    let (key, signers) = audit::local_signer(&dir, "audit-test-a");
    let n = 24_000;
    let producer = {
        let (codec, topic) = (codec.clone(), format!("{prefix}audit.events"));
        std::thread::spawn(move || {
            produce_events(
                &codec,
                &topic,
                n,
                2000,
                Duration::from_millis(2500),
                &AtomicBool::new(false),
            )
        })
    };
    let group = format!("{prefix}evalstream.audit-chain");
    let events_topic = format!("{prefix}audit.events");
    let mut slots = [chain_instance(&prefix, &key, "s0-0"), chain_instance(&prefix, &key, "s1-0")];
    for s in slots.iter_mut() {
        s.start();
    }
    let mut rng = rand::thread_rng();
    let (mut kills, mut takeovers) = (0, 0);
    while kills < 4 || !producer.is_finished() {
        let before = common::eos::committed_sum(&group, &events_topic);
        it::wait_until("the chain to commit new work", Duration::from_secs(120), || {
            std::thread::sleep(Duration::from_millis(200));
            common::eos::committed_sum(&group, &events_topic) > before || producer.is_finished()
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..2000)));
        let victim = rng.gen_range(0..slots.len());
        slots[victim].kill();
        kills += 1;
        // Every other kill, the slot comes back as a different instance.
        let id = if kills % 2 == 0 {
            takeovers += 1;
            format!("s{victim}-{kills}")
        } else {
            slots[victim].id.clone()
        };
        eprintln!(
            "[{:?}] SIGKILLed {} (kill #{kills}); back as {id}",
            started.elapsed(),
            slots[victim].id
        );
        slots[victim] = chain_instance(&prefix, &key, &id);
        slots[victim].start();
        assert!(started.elapsed() < Duration::from_secs(600), "test ran too long");
    }
    let (order, dups) = producer.join().expect("producer");
    wait_group(&group, &events_topic, Duration::from_secs(300));
    audit::wait_tail_signed(&codec, &prefix, PARTITIONS);
    for s in slots.iter_mut() {
        s.stop();
    }
    let total = check_chain_exact(&codec, &prefix, &order);
    assert_eq!(total as u64, n);
    audit_verify_ok(&prefix, &signers);
    assert!(kills >= 4 && takeovers >= 2, "kills={kills} takeovers={takeovers}");
    eprintln!(
        "[audit chain two instances] events={n} duplicates={dups} kills={kills} \
         takeovers={takeovers} entries={total} lost=0 duplicated=0 elapsed={:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The transactions of writers whose id starts with `prefix` that are open on `topic` right now.
///
/// The writer is frozen while this runs, and a freeze longer than its session timeout would cost
/// it its partitions (and the test its zombie), so it reads little: per partition, only the
/// records past the last stable offset (where a `read_committed` reader stops), with
/// `read_uncommitted`. Those of `prefix` are open only if the last stable offset does not pass
/// them within a few seconds: a commit already under way when the writer was frozen completes
/// without it (the coordinator writes the markers), and such a transaction is not a zombie's.
fn open_txns(topic: &str, prefix: &str) -> HashSet<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let client = |isolation: &str| -> BaseConsumer {
        it::client_config()
            .set("isolation.level", isolation)
            .set("group.id", it::unique_name("open-txns"))
            .set("enable.partition.eof", "true")
            .create()
            .expect("creating a client")
    };
    let (stable, all) = (client("read_committed"), client("read_uncommitted"));
    let timeout = Duration::from_secs(10);
    let lso = |p: i32| stable.fetch_watermarks(topic, p, timeout).map(|w| w.1).expect("LSO");
    // (partition, offset of its last record of `prefix` past the LSO, transaction).
    let mut open: Vec<(i32, i64, String)> = Vec::new();
    for p in 0..it::partition_count(topic) as i32 {
        let from = lso(p);
        let hw = all.fetch_watermarks(topic, p, timeout).map(|w| w.1).expect("high watermark");
        if from >= hw {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(from)).expect("assignment");
        all.assign(&tpl).expect("assign");
        let started = Instant::now();
        while started.elapsed() < timeout {
            match all.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let txn = m.headers().and_then(|h| {
                        h.iter()
                            .find(|x| x.key == evalstream_runtime::headers::TXN)
                            .and_then(|x| x.value)
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .map(str::to_string)
                    });
                    if let Some(txn) = txn.filter(|t| t.starts_with(prefix)) {
                        open.retain(|(q, _, t)| !(*q == p && *t == txn));
                        open.push((p, m.offset(), txn));
                    }
                    if m.offset() + 1 >= hw {
                        break;
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("reading {topic}[{p}]: {e}"),
                None => {}
            }
        }
    }
    // Open means still open once a commit under way would have completed (bounded: this only
    // picks the moment of the fault; the verdict reads the chain afterwards).
    let settled = Instant::now() + Duration::from_secs(3);
    loop {
        open.retain(|(p, last, _)| lso(*p) <= *last);
        if open.is_empty() || Instant::now() >= settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    open.into_iter().map(|(_, _, txn)| txn).collect()
}
