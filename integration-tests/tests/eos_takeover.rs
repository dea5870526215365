//! Takeover by other instances while a dead instance's transaction still dangles.
//!
//! Instance `a` dies (a crash point aborts the process right after its transaction's records
//! are delivered) and never comes back, leaving an open transaction on the changelog and output
//! partitions. `b` (another instance id, so `init_transactions` cannot fence `a`) takes every
//! partition over; then `c` joins and a rebalance moves partitions again, before `a`'s
//! transaction times out. A `read_committed` reader stops at the last stable offset, i.e. before
//! `a`'s dangling transaction: a restore that takes that for the end of the changelog misses
//! what `b` committed after it, resumes from a stale marker and processes committed inputs
//! twice. The verdict comes from a plain `read_committed` consumer.
#![cfg(feature = "broker")]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::eos::{self, Instance};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::headers;

const PARTITIONS: i32 = 4;
/// The group's transaction timeout (every instance uses the same, as a deployment would): long
/// enough that `c` joins well before the broker aborts `a`'s dangling transaction.
const DEAD_TXN_TIMEOUT_MS: u64 = 30_000;

#[test]
fn takeover_before_the_dead_instances_transaction_times_out() {
    let started = Instant::now();
    let prefix = format!("{}.", it::unique_name("takeover"));
    let input = format!("{prefix}totals.input");
    it::create_topic(&input, PARTITIONS);
    it::create_topic(&format!("{prefix}totals.output"), PARTITIONS);
    let codec = Codec::from_env().expect("codec");

    let wave = |range: std::ops::Range<u64>, batch: usize| {
        let (codec, topic) = (codec.clone(), input.clone());
        std::thread::spawn(move || {
            eos::produce_inputs(&codec, &topic, range, batch, Duration::from_millis(100))
        })
    };
    // The first wave trickles (about 8 s), so that `a` commits many small transactions rather
    // than a backlog in two or three large ones (a fast engine drains 8 000 records at once).
    let first_wave = wave(0..8_000, 100);
    // `a` crashes at its 20th commit, after the records are delivered and before the offsets
    // and markers: its transaction stays open on the changelog and output partitions.
    let mut a = Instance::new("totals", &prefix, "a")
        .env("EVALSTREAM_TRANSACTION_TIMEOUT_MS", &DEAD_TXN_TIMEOUT_MS.to_string())
        .env("EVALSTREAM_FAIL_AT", "after_flush:20");
    a.start();
    it::wait_until("instance a to crash at its fail point", Duration::from_secs(60), || {
        !a.running()
    });
    let crashed = Instant::now();
    eprintln!("[{:?}] a crashed inside a transaction", started.elapsed());

    let txn_timeout = DEAD_TXN_TIMEOUT_MS.to_string();
    let mut b = Instance::new("totals", &prefix, "b")
        .env("EVALSTREAM_TRANSACTION_TIMEOUT_MS", &txn_timeout);
    b.start();
    // b takes everything over (after a's session times out) and works; then c joins and the
    // group rebalances, well before a's transaction can time out.
    std::thread::sleep(Duration::from_secs(10));
    let mut c = Instance::new("totals", &prefix, "c")
        .env("EVALSTREAM_TRANSACTION_TIMEOUT_MS", &txn_timeout)
        .with_ops();
    c.start();
    let c_joined_after = crashed.elapsed();
    eprintln!("[{:?}] c started {c_joined_after:?} after a's crash", started.elapsed());
    assert!(
        c_joined_after < Duration::from_millis(DEAD_TXN_TIMEOUT_MS),
        "c must join before a's transaction can time out"
    );
    it::wait_until("c to be assigned partitions", Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(250));
        c.ready_partitions().is_some_and(|n| n > 0)
    });
    eprintln!("[{:?}] c owns partitions", started.elapsed());
    let second_wave = wave(8_000..16_000, 400);
    let mut inputs = first_wave.join().expect("producer");
    inputs.extend(second_wave.join().expect("producer"));
    eos::wait_committed(&prefix, &eos::next_offsets_of(&inputs), Duration::from_secs(240));
    assert!(b.running() && c.running(), "b and c must keep running");
    b.stop();
    c.stop();

    let v = eos::verify_totals(&codec, &prefix, &inputs);
    // Who committed what: every instance must have committed outputs.
    let owners: BTreeSet<String> = it::read_topic(&format!("{prefix}totals.output"))
        .iter()
        .filter_map(|r| r.header_str(headers::TXN).and_then(|t| t.split('-').next()))
        .map(str::to_string)
        .collect();
    eprintln!(
        "[takeover] records={} crashes=1 takeovers=2 committed_by={owners:?} outputs={} lost={} \
         duplicated={} wrong_totals={} elapsed={:?}",
        inputs.len(),
        v.committed_outputs,
        v.missing.len(),
        v.duplicated.len(),
        v.wrong_totals.len(),
        started.elapsed()
    );
    v.assert_exact();
    assert_eq!(v.committed_outputs, inputs.len());
    for who in ["a", "b", "c"] {
        assert!(owners.contains(who), "instance {who} committed nothing: {owners:?}");
    }
}
