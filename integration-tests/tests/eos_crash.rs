//! Exactly-once under crashes: 30k records over 4 partitions, two `evalstream run totals`
//! processes in one group, SIGKILLed at random points at least 3 times and restarted; then an
//! independent consumer checks that every input is reflected exactly once and every running
//! total is exact.
#![cfg(feature = "broker")]

mod common;

use std::time::{Duration, Instant};

use common::eos::{self, Instance};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;
use rand::Rng;

const RECORDS: u64 = 30_000;

#[test]
fn totals_stay_exact_when_instances_are_killed() {
    let prefix = format!("{}.", it::unique_name("eos"));
    it::create_topic(&format!("{prefix}totals.input"), 4);
    it::create_topic(&format!("{prefix}totals.output"), 4);
    let codec = Codec::from_env().expect("codec");

    let mut instances =
        [Instance::new("totals", &prefix, "i0"), Instance::new("totals", &prefix, "i1")];
    for i in instances.iter_mut() {
        i.start();
    }

    // Inputs arrive while the instances run and die: 60 batches of 500, about 20 s.
    let producer = {
        let (codec, topic) = (codec.clone(), format!("{prefix}totals.input"));
        std::thread::spawn(move || {
            eos::produce_inputs(&codec, &topic, 0..RECORDS, 500, Duration::from_millis(300))
        })
    };

    let mut rng = rand::thread_rng();
    let mut kills = 0;
    let mut kills_while_flowing = 0;
    let started = Instant::now();
    while !producer.is_finished() || kills < 3 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(1500..4500)));
        let victim = rng.gen_range(0..instances.len());
        if !producer.is_finished() {
            kills_while_flowing += 1;
        }
        instances[victim].kill();
        kills += 1;
        eprintln!("[{:?}] SIGKILLed instance {victim} (kill #{kills})", started.elapsed());
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1500)));
        instances[victim].start();
        assert!(started.elapsed() < Duration::from_secs(600), "test ran too long");
    }
    let inputs = producer.join().expect("producer thread");
    assert_eq!(inputs.len() as u64, RECORDS);

    eos::wait_committed(&prefix, &eos::next_offsets_of(&inputs), Duration::from_secs(300));
    for i in instances.iter_mut() {
        i.stop();
    }
    let v = eos::verify_totals(&codec, &prefix, &inputs);
    eprintln!(
        "[totals kills] records={RECORDS} kills={kills} (while flowing: {kills_while_flowing}) \
         outputs={} lost={} duplicated={} wrong_totals={} aborted_visible={} elapsed={:?}",
        v.committed_outputs,
        v.missing.len(),
        v.duplicated.len(),
        v.wrong_totals.len(),
        v.aborted_visible,
        started.elapsed()
    );
    v.assert_exact();
    assert_eq!(v.committed_outputs as u64, RECORDS);
    assert_eq!(v.dead_lettered, 0);
    assert!(kills >= 3 && kills_while_flowing >= 2, "kills={kills} ({kills_while_flowing})");
}

/// Crashes exactly where it hurts: after the outputs but before the progress markers, after the
/// markers but before `commit_transaction`, and right after a commit. Each crash is an abort of
/// the process (like SIGKILL: no shutdown hook runs); the restarted instance must continue
/// exactly where the committed log says.
#[test]
fn fail_points_between_produce_and_commit_lose_and_duplicate_nothing() {
    let prefix = format!("{}.", it::unique_name("failpt"));
    it::create_topic(&format!("{prefix}totals.input"), 2);
    it::create_topic(&format!("{prefix}totals.output"), 2);
    let codec = Codec::from_env().expect("codec");
    let inputs = eos::produce_inputs(
        &codec,
        &format!("{prefix}totals.input"),
        0..6_000,
        1000,
        Duration::from_millis(0),
    );

    // (crash point, at which hit, commit_max_records). The transaction that crashes after its
    // flush in round 2 is twice as large as the one committed after it in round 3: on a broker
    // that shows aborted records, a restore that applied the crashed transaction's state
    // entries at the next transaction's marker would count records 301..600 twice.
    let rounds = [
        ("after_flush", 2, 300),
        ("after_flush", 1, 600),
        ("after_commit", 1, 300),
        ("after_outputs", 2, 300),
        ("after_offsets", 2, 300),
        ("after_markers", 2, 300),
        ("after_commit", 2, 300),
    ];
    for (round, (point, nth, max)) in rounds.iter().enumerate() {
        let mut inst = Instance::new("totals", &prefix, "fp")
            .env("EVALSTREAM_FAIL_AT", &format!("{point}:{nth}"))
            .env("EVALSTREAM_COMMIT_MAX_RECORDS", &max.to_string());
        inst.start();
        it::wait_until(
            &format!("round {round}: crash at {point}"),
            Duration::from_secs(120),
            || !inst.running(),
        );
    }
    let mut inst = Instance::new("totals", &prefix, "fp");
    inst.start();
    eos::wait_caught_up(&prefix, Duration::from_secs(120));
    inst.stop();

    let v = eos::verify_totals(&codec, &prefix, &inputs);
    eprintln!(
        "[fail point crashes] records={} crashes={} outputs={} lost={} duplicated={} \
         wrong_totals={} aborted_visible={}",
        inputs.len(),
        rounds.len(),
        v.committed_outputs,
        v.missing.len(),
        v.duplicated.len(),
        v.wrong_totals.len(),
        v.aborted_visible
    );
    v.assert_exact();
    assert_eq!(v.committed_outputs, inputs.len());
}
