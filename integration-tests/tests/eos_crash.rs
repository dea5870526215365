//! Exactly-once under crashes: 100k records over 4 partitions, two `evalstream run totals`
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

const RECORDS: u64 = match option_env!("EOS_RECORDS") { Some(_) => 10_000, None => 100_000 };

#[test]
fn totals_stay_exact_when_instances_are_killed() {
    let prefix = format!("{}.", it::unique_name("eos"));
    it::create_topic(&format!("{prefix}totals.input"), 4);
    it::create_topic(&format!("{prefix}totals.output"), 4);
    let codec = Codec::from_env().expect("codec");

    let mut instances = [Instance::new("totals", &prefix, "i0"), Instance::new("totals", &prefix, "i1")];
    for i in instances.iter_mut() {
        i.start();
    }

    // Inputs arrive while the instances run and die: 100 batches of 1000.
    let producer = {
        let (codec, topic) = (codec.clone(), format!("{prefix}totals.input"));
        std::thread::spawn(move || {
            eos::produce_inputs(&codec, &topic, 0..RECORDS, 1000, Duration::from_millis(250))
        })
    };

    let mut rng = rand::thread_rng();
    let mut kills = 0;
    let started = Instant::now();
    while !producer.is_finished() || kills < 3 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(1500..4500)));
        let victim = rng.gen_range(0..instances.len());
        instances[victim].kill();
        kills += 1;
        eprintln!("[{:?}] SIGKILLed instance {victim} (kill #{kills})", started.elapsed());
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1500)));
        instances[victim].start();
        assert!(started.elapsed() < Duration::from_secs(600), "test ran too long");
    }
    let inputs = producer.join().expect("producer thread");
    assert_eq!(inputs.len() as u64, RECORDS);

    eos::wait_caught_up(&prefix, Duration::from_secs(300));
    for i in instances.iter_mut() {
        i.stop();
    }
    let v = eos::verify_totals(&codec, &prefix, &inputs);
    eprintln!(
        "kills={kills} committed_outputs={} aborted_visible={} dead_lettered={}",
        v.committed_outputs, v.aborted_visible, v.dead_lettered
    );
    v.assert_exact();
    assert_eq!(v.committed_outputs as u64, RECORDS);
    assert_eq!(v.dead_lettered, 0);
    assert!(kills >= 3);
}
