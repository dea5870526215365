//! Exactly-once while the broker itself fails, on a broker of the test's own (never the shared
//! one): it is paused with SIGSTOP for longer than the clients' request timeout and resumed,
//! then killed with SIGKILL and restarted from its log directory, while input flows and two
//! instances process it. The instances must recover in place (they never exit), and a plain
//! `read_committed` consumer then finds every input exactly once with exact running totals.
//! The test asserts that the broker really stopped, died and came back (pids, process state) and
//! that the instances observed it (aborted transactions, restores, rebalances in `/metrics`).
#![cfg(feature = "broker")]

mod common;

use std::time::{Duration, Instant};

use common::broker::DedicatedBroker;
use common::eos::{self, Instance};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;

const PARTITIONS: i32 = 4;
const RECORDS: u64 = 12_000;
/// Longer than the clients' request timeout (librdkafka lowers `socket.timeout.ms` to just under
/// `transaction.timeout.ms`, 10 s).
const PAUSE: Duration = Duration::from_secs(15);

/// What the instances noticed of faults so far: aborted transactions, restores after an abort,
/// and revoked or lost assignments.
fn noticed(instances: &[Instance]) -> f64 {
    instances
        .iter()
        .map(|i| {
            let m = i.metrics();
            it::metric_sum(&m, "evalstream_transactions_aborted_total", &[])
                + it::metric_sum(&m, "evalstream_restores_total", &["reason=\"abort\""])
                + it::metric_sum(&m, "evalstream_rebalances_total", &["kind=\"lost\""])
                + it::metric_sum(&m, "evalstream_rebalances_total", &["kind=\"revoke\""])
        })
        .sum()
}

#[test]
fn totals_stay_exact_when_the_broker_is_paused_and_killed() {
    let started = Instant::now();
    let broker = DedicatedBroker::start();
    it::use_bootstrap(&broker.bootstrap());
    eprintln!("[{:?}] dedicated broker on {}", started.elapsed(), broker.bootstrap());
    let prefix = format!("{}.", it::unique_name("brokerfault"));
    let input = format!("{prefix}totals.input");
    it::create_topic(&input, PARTITIONS);
    it::create_topic(&format!("{prefix}totals.output"), PARTITIONS);
    let codec = Codec::from_env().expect("codec");

    let mut instances = [
        Instance::new("totals", &prefix, "bf0").with_ops(),
        Instance::new("totals", &prefix, "bf1").with_ops(),
    ];
    for i in instances.iter_mut() {
        i.start();
    }
    // About 40 s of input, so that both faults land while records flow.
    let producer = {
        let (codec, topic) = (codec.clone(), input.clone());
        std::thread::spawn(move || {
            eos::produce_inputs(&codec, &topic, 0..RECORDS, 300, Duration::from_secs(1))
        })
    };
    let group = format!("{prefix}evalstream.totals");
    let wait_progress = |what: &str, instances: &mut [Instance]| {
        let before = eos::committed_sum(&group, &input);
        it::wait_until(what, Duration::from_secs(120), || {
            std::thread::sleep(Duration::from_millis(300));
            for i in instances.iter_mut() {
                assert!(i.running(), "instance {} exited", i.id);
            }
            eos::committed_sum(&group, &input) > before
        });
    };
    wait_progress("the instances to commit work", &mut instances);

    // Fault 1: the broker freezes for longer than the request timeout.
    let before_pause = noticed(&instances);
    broker.pause();
    eprintln!("[{:?}] broker paused (SIGSTOP)", started.elapsed());
    std::thread::sleep(PAUSE);
    let was_paused = broker.is_paused();
    broker.resume();
    eprintln!("[{:?}] broker resumed (SIGCONT)", started.elapsed());
    assert!(was_paused, "the broker was not stopped for the whole pause");
    wait_progress("the instances to commit work after the pause", &mut instances);
    let after_pause = noticed(&instances);

    // Fault 2: the broker dies and restarts from its log directory.
    let old_pid = broker.kill9();
    eprintln!("[{:?}] broker killed (SIGKILL, pid {old_pid})", started.elapsed());
    broker.restart();
    let new_pid = broker.pid();
    eprintln!("[{:?}] broker restarted from its log dir (pid {new_pid})", started.elapsed());
    assert_ne!(old_pid, new_pid, "the broker did not restart");
    wait_progress("the instances to commit work after the restart", &mut instances);
    let after_kill = noticed(&instances);

    let inputs = producer.join().expect("producer");
    eos::wait_committed(&prefix, &eos::next_offsets_of(&inputs), Duration::from_secs(300));
    for i in instances.iter_mut() {
        assert!(i.running(), "instance {} exited instead of recovering in place", i.id);
    }
    for i in instances.iter_mut() {
        i.stop();
    }
    let v = eos::verify_totals(&codec, &prefix, &inputs);
    let (noticed_pause, noticed_kill) = (after_pause - before_pause, after_kill - after_pause);
    eprintln!(
        "[broker faults] records={RECORDS} pauses=1 ({PAUSE:?}) kills=1 noticed (aborts + \
         restores + lost/revoked assignments): pause={noticed_pause} kill={noticed_kill} \
         outputs={} lost={} duplicated={} wrong_totals={} elapsed={:?}",
        v.committed_outputs,
        v.missing.len(),
        v.duplicated.len(),
        v.wrong_totals.len(),
        started.elapsed()
    );
    assert!(noticed_pause > 0.0, "no instance noticed the pause; the test proves nothing");
    assert!(noticed_kill > 0.0, "no instance noticed the kill; the test proves nothing");
    v.assert_exact();
    assert_eq!(v.committed_outputs as u64, RECORDS);
}
