//! Rebalance: a second instance joining mid-stream takes partitions over without loss or
//! duplication (the first instance commits its open transaction before the revoke completes, the
//! second restores state from the changelog before processing).
#![cfg(feature = "broker")]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::eos::{self, Instance};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::headers;

#[test]
fn joining_instance_takes_partitions_without_loss_or_duplication() {
    let prefix = format!("{}.", it::unique_name("rebal"));
    it::create_topic(&format!("{prefix}totals.input"), 4);
    it::create_topic(&format!("{prefix}totals.output"), 4);
    let codec = Codec::from_env().expect("codec");

    let mut first = Instance::new("totals", &prefix, "first");
    first.start();
    let producer = {
        let (codec, topic) = (codec.clone(), format!("{prefix}totals.input"));
        std::thread::spawn(move || {
            eos::produce_inputs(&codec, &topic, 0..20_000, 500, Duration::from_millis(300))
        })
    };
    // Let the first instance commit work alone, then add a second one mid-stream.
    it::wait_until("the first instance to commit work", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(200));
        eos::committed_sum(&format!("{prefix}evalstream.totals"), &format!("{prefix}totals.input"))
            > 0
    });
    assert!(
        !producer.is_finished(),
        "input should still be flowing when the second instance joins"
    );
    let mut second = Instance::new("totals", &prefix, "second");
    second.start();

    let inputs = producer.join().expect("producer");
    eos::wait_committed(&prefix, &eos::next_offsets_of(&inputs), Duration::from_secs(180));
    assert!(first.running() && second.running(), "no instance may exit during a rebalance");
    first.stop();
    second.stop();

    let v = eos::verify_totals(&codec, &prefix, &inputs);
    v.assert_exact();
    assert_eq!(v.committed_outputs, inputs.len());

    // Both instances must have committed work: the join really moved partitions.
    let committed = eos::committed_filter(&codec, &format!("{prefix}evalstream.totals.changelog"));
    let outputs: Vec<_> = it::read_topic_stable(&format!("{prefix}totals.output"))
        .into_iter()
        .filter(|r| committed(r))
        .collect();
    let instances: HashSet<&str> = outputs
        .iter()
        .filter_map(|r| r.header_str(headers::TXN).and_then(|t| t.split('-').next()))
        .collect();
    assert!(
        instances.contains("first") && instances.contains("second"),
        "instances that committed: {instances:?}"
    );
    // At least one input partition's outputs changed owner.
    let mut last_owner: std::collections::HashMap<i32, String> = Default::default();
    let mut switches = 0;
    for r in &outputs {
        let src = headers::parse_coordinate(r.header_str(headers::SOURCE).unwrap()).unwrap();
        let owner = r.header_str(headers::TXN).unwrap().split('-').next().unwrap().to_string();
        if let Some(prev) = last_owner.insert(src.1, owner.clone()) {
            if prev != owner {
                switches += 1;
            }
        }
    }
    assert!(switches >= 1, "no partition changed owner");
}

/// The runbook's read-only mode (`MODE=read-only`): the instance joins and holds its partitions
/// but consumes nothing, so nothing is produced or dropped and lag grows; back in normal mode it
/// continues exactly where it stopped.
#[test]
fn read_only_mode_consumes_nothing_and_loses_nothing() {
    let prefix = format!("{}.", it::unique_name("ro"));
    it::create_topic(&format!("{prefix}totals.input"), 2);
    it::create_topic(&format!("{prefix}totals.output"), 2);
    let codec = Codec::from_env().expect("codec");
    let first =
        eos::produce_inputs(&codec, &format!("{prefix}totals.input"), 0..500, 500, Duration::ZERO);
    let mut normal = Instance::new("totals", &prefix, "ro");
    normal.start();
    eos::wait_committed(&prefix, &eos::next_offsets_of(&first), Duration::from_secs(120));
    normal.stop();

    let mut ro = Instance::new("totals", &prefix, "ro").env("MODE", "read-only").with_ops();
    ro.start();
    let second = eos::produce_inputs(
        &codec,
        &format!("{prefix}totals.input"),
        500..1000,
        500,
        Duration::ZERO,
    );
    // Ready (joined, assigned, restored) and reporting the new records as lag: it has seen them
    // and holds them.
    it::wait_until("the read-only instance to be ready", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(200));
        ro.ready_partitions().is_some_and(|p| p > 0)
    });
    it::wait_until("the read-only instance to report its lag", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        ro.metric("evalstream_consumer_lag", &[]) >= second.len() as f64
    });
    assert!(ro.running(), "read-only instance must keep running");
    assert_eq!(
        it::read_topic(&format!("{prefix}totals.output")).len(),
        500,
        "read-only produced output"
    );
    assert!(!eos::group_committed(
        &format!("{prefix}evalstream.totals"),
        &format!("{prefix}totals.input"),
        &eos::next_offsets_of(&second)
    ));
    ro.stop();

    let mut back = Instance::new("totals", &prefix, "ro");
    back.start();
    let all: Vec<_> = first.iter().chain(second.iter()).cloned().collect();
    eos::wait_committed(&prefix, &eos::next_offsets_of(&all), Duration::from_secs(120));
    back.stop();
    let v = eos::verify_totals(&codec, &prefix, &all);
    v.assert_exact();
    assert_eq!(v.committed_outputs, 1000);
}
