//! Exactly-once when transaction calls fail inside a living process.
//!
//! The fail points of `EVALSTREAM_FAIL_AT` make the flush, `send_offsets_to_transaction` and
//! `commit_transaction` return errors many times per run (and, for `commit_unknown`, commit and
//! then report a timeout, so the engine cannot know the outcome). The process never exits: it
//! must recover in place. The verdict comes from a plain `read_committed` consumer on Kafka
//! (every input exactly one output, every running total a prefix sum), and the test asserts from
//! the process's `/metrics` that every kind of fault was injected and that transactions really
//! aborted, so it cannot pass vacuously.
#![cfg(feature = "broker")]

mod common;

use std::time::{Duration, Instant};

use common::eos::{self, Instance};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;

const PARTITIONS: i32 = 4;

/// Runs one totals instance with `faults` while `records` inputs stream in, waits until they are
/// committed, and checks the outputs. Returns (faults injected per point, aborted transactions,
/// transactions dropped because the commit before them failed).
fn run_totals_with_faults(
    name: &str,
    faults: &str,
    records: u64,
) -> (Vec<(String, f64)>, f64, f64) {
    let started = Instant::now();
    let prefix = format!("{}.", it::unique_name(name));
    let input = format!("{prefix}totals.input");
    it::create_topic(&input, PARTITIONS);
    it::create_topic(&format!("{prefix}totals.output"), PARTITIONS);
    let codec = Codec::from_env().expect("codec");

    let mut inst = Instance::new("totals", &prefix, "f0")
        .env("EVALSTREAM_FAIL_AT", faults)
        // Small transactions: many commits, so many faults per run.
        .env("EVALSTREAM_COMMIT_MAX_RECORDS", "200")
        .with_ops();
    inst.start();
    let producer = {
        let (codec, topic) = (codec.clone(), input.clone());
        std::thread::spawn(move || {
            eos::produce_inputs(&codec, &topic, 0..records, 1000, Duration::from_millis(100))
        })
    };
    let inputs = producer.join().expect("producer thread");
    eos::wait_committed(&prefix, &eos::next_offsets_of(&inputs), Duration::from_secs(300));
    assert!(inst.running(), "the process must recover from failed transaction calls in place");

    let metrics = inst.metrics();
    let injected: Vec<(String, f64)> = faults
        .split(',')
        .map(|rule| rule.split(':').next().unwrap_or_default().to_string())
        .map(|point| {
            let n = it::metric_sum(
                &metrics,
                "evalstream_faults_injected_total",
                &[&format!("point=\"{point}\"")],
            );
            (point, n)
        })
        .collect();
    let aborted = it::metric_sum(&metrics, "evalstream_transactions_aborted_total", &[]);
    // Transactions that had filled while the failing commit was in flight (inflight.rs): their
    // records were processed but never produced, and must come out exactly once after all.
    let behind_failed = it::metric_sum(
        &metrics,
        "evalstream_transactions_aborted_total",
        &["reason=\"previous_commit_failed\""],
    );
    inst.stop();

    let v = eos::verify_totals(&codec, &prefix, &inputs);
    eprintln!(
        "[{name}] records={records} faults={injected:?} aborted_txns={aborted} \
         behind_failed_commits={behind_failed} outputs={} lost={} duplicated={} wrong_totals={} \
         aborted_visible={} elapsed={:?}",
        v.committed_outputs,
        v.missing.len(),
        v.duplicated.len(),
        v.wrong_totals.len(),
        v.aborted_visible,
        started.elapsed()
    );
    for (point, n) in &injected {
        assert!(*n >= 2.0, "fault {point} injected {n} times; the test proves nothing");
    }
    v.assert_exact();
    assert_eq!(v.committed_outputs as u64, records);
    (injected, aborted, behind_failed)
}

#[test]
fn totals_stay_exact_when_flush_offsets_and_commit_fail() {
    let (injected, aborted, behind_failed) = run_totals_with_faults(
        "fault-err",
        "flush_error:every=5,offsets_error:every=7,commit_error:every=11",
        20_000,
    );
    let total: f64 = injected.iter().map(|(_, n)| n).sum();
    assert!(aborted >= total, "{total} faults injected but only {aborted} transactions aborted");
    assert!(
        behind_failed >= 1.0,
        "no fault hit a commit while the next transaction held records; the pipelined commit's \
         failure path went untested"
    );
}

#[test]
fn totals_stay_exact_when_the_commit_outcome_is_unknown() {
    run_totals_with_faults("fault-unknown", "commit_unknown:every=15", 6_000);
}
