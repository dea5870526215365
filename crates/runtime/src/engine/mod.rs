//! The exactly-once engine: runs one [`Processor`] as a member of its consumer group.
//!
//! ```text
//!  poll ─► record ─► decode ─► process ─► outputs ─┐      every commit_interval_ms or
//!   ▲                 │ bad        │ Invalid/NotReady │      commit_max_records:
//!   │                 ▼            ▼                  ▼
//!   │              <topic>.dlq   <topic>.dlq|.retry  producer (one open transaction)
//!   │                                                 │
//!   │   commit: changed state keys ─► changelog[p] ───┤  flush (everything delivered)
//!   │           progress markers   ─► changelog[p] ───┤  send_offsets_to_transaction
//!   └──────────────────────────────────────────────── commit_transaction
//! ```
//!
//! Why it is built this way (details in `docs/exactly-once.md`):
//!
//! * **One dedicated thread.** librdkafka's transaction calls block, and the rebalance callback
//!   runs inside `poll`. Owning consumer, producer and state on one named OS thread keeps blocking
//!   calls off the async workers and lets the revoke callback commit the open transaction
//!   synchronously, before any partition moves (eager assignment).
//! * **Progress lives in the outputs.** Each commit writes, for every input partition it touched,
//!   a progress marker (`next_offset`, transaction id) to the processor's changelog partition,
//!   *after* flushing everything else of the transaction. Restore replays the changelog partition
//!   up to its last marker and resumes from that marker, not only from group offsets. On a
//!   correct broker markers and offsets commit atomically and agree; on a broker that exposes
//!   aborted records (our local Tansu) the log itself is what every reader sees, and resuming from
//!   what the log proves keeps outputs, state and position consistent.
//! * **Deterministic outputs.** Output values depend only on input and state; the runtime adds
//!   source and transaction headers, so replays are recognisable and a verifier can reconstruct
//!   `read_committed` from the markers.
//!
//! One file per concern: [`names`] (topic names), `process` (one record through the
//! processor), `routing` (DLQ and retry records), `commit` (transactions, recovery), `rebalance`
//! (assign/revoke), `restore` (changelog restore and start positions), `producer` (the
//! transactional producer), `topics` (internal topic creation), `failpoint` (test crash points).

mod commit;
mod failpoint;
mod names;
mod process;
mod producer;
mod rebalance;
mod restore;
mod routing;
mod topics;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::ThreadedProducer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::codec::Codec;
use crate::config::RuntimeConfig;
use crate::error::{classify_kafka, Disposition, ErrorClass, RuntimeError};
use crate::kafka;
use crate::metrics::Metrics;
use crate::ops::Health;
use crate::processor::Processor;
use crate::state::StateView;

pub use failpoint::FailPoint;
pub use names::TopicNames;
pub use restore::{decode_marker, restore_partition, PROGRESS_MARKER_SCHEMA};
pub use topics::ensure_internal_topics;

use failpoint::FailPoints;
use producer::DeliveryContext;
use rebalance::EngineContext;

/// Everything [`run`] needs besides the processor.
pub struct EngineOptions {
    /// Validated runtime configuration.
    pub config: RuntimeConfig,
    /// Wire codec for inputs, outputs and markers.
    pub codec: Codec,
    /// Metrics sink.
    pub metrics: Arc<Metrics>,
    /// Health/readiness state.
    pub health: Arc<Health>,
    /// Set to request a graceful stop (commit the open transaction, leave the group).
    pub shutdown: Arc<AtomicBool>,
    /// Test-only crash injection (see [`FailPoint`]); `FailPoint::from_env()` in production is
    /// inert unless `EVALSTREAM_FAIL_AT` is set.
    pub fail_point: Option<FailPoint>,
}

/// Where the consumer stands on one physical topic-partition.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Position {
    /// Next offset to process (`None`: start of the log, no offset known yet).
    next: Option<i64>,
}

impl Position {
    fn as_offset(self) -> Offset {
        self.next.map(Offset::Offset).unwrap_or(Offset::Beginning)
    }
}

/// The open transaction.
#[derive(Debug)]
struct OpenTxn {
    id: String,
    started: Instant,
    records: usize,
    /// Physical topic-partitions whose position moved in this transaction.
    touched: BTreeSet<(String, i32)>,
    /// Metrics of this transaction, published only when it commits, so that an aborted and
    /// re-read record is counted once: in = out + dead-lettered (+ retried) holds exactly.
    counts: TxnCounts,
}

/// Per-transaction counters (logical topic names).
#[derive(Debug, Default)]
struct TxnCounts {
    inputs: BTreeMap<String, u64>,
    outputs: BTreeMap<String, u64>,
    dead_lettered: BTreeMap<(String, ErrorClass), u64>,
    retried: BTreeMap<String, u64>,
}

/// Mutable engine state, shared between the poll loop and the rebalance callback (which runs
/// inside `poll` on the same thread; the mutex only satisfies the borrow rules).
struct Core<P: Processor> {
    processor: P,
    cfg: RuntimeConfig,
    names: TopicNames,
    codec: Codec,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    producer: ThreadedProducer<DeliveryContext>,
    transactional_id: String,
    nonce: u32,
    txn_seq: u64,
    txn: Option<OpenTxn>,
    /// State per partition number (all inputs' partition `p` share state partition `p`).
    states: HashMap<i32, StateView>,
    positions: HashMap<(String, i32), Position>,
    committed: HashMap<(String, i32), Position>,
    /// Retry partitions paused until a due time.
    paused: HashMap<(String, i32), Instant>,
    fatal: Option<RuntimeError>,
    fail_points: FailPoints,
    /// Current backoff after dependency failures; reset by a successful commit.
    backoff: Duration,
    last_punctuate: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock would already have ended the loop thread; the state is
    // then discarded, so recovering the guard is safe.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type EngineConsumer<P> = BaseConsumer<EngineContext<P>>;

/// Runs `processor` until `opts.shutdown` is set or a stop-class error occurs. Blocking: call it
/// on a dedicated thread (see [`spawn`]).
pub fn run<P: Processor>(processor: P, opts: EngineOptions) -> Result<(), RuntimeError> {
    let cfg = opts.config.clone();
    let names = TopicNames::new(&cfg, &processor);
    ensure_internal_topics(&cfg, &names)?;
    opts.health.set_kafka(true, "topics checked");
    opts.health.set_mode(cfg.mode.as_str());
    if cfg.mode == crate::config::Mode::ReadOnly {
        warn!("read-only mode: partitions are assigned and held, nothing is consumed");
    }

    let transactional_id = format!("{}-{}", names.group, cfg.instance_id);
    let producer = producer::new_producer(&cfg, &transactional_id)?;
    let core = Arc::new(Mutex::new(Core {
        processor,
        cfg: cfg.clone(),
        names: names.clone(),
        codec: opts.codec,
        metrics: opts.metrics,
        health: opts.health.clone(),
        producer,
        transactional_id,
        nonce: rand::random(),
        txn_seq: 0,
        txn: None,
        states: HashMap::new(),
        positions: HashMap::new(),
        committed: HashMap::new(),
        paused: HashMap::new(),
        fatal: None,
        fail_points: FailPoints::new(opts.fail_point),
        backoff: Duration::ZERO,
        last_punctuate: Instant::now(),
    }));

    let mut ccfg = kafka::eos_consumer(&cfg, &names.group);
    ccfg.set("statistics.interval.ms", "5000");
    let consumer: EngineConsumer<P> = ccfg
        .create_with_context(EngineContext { core: core.clone() })
        .map_err(|e| RuntimeError::kafka("create consumer", e))?;
    let subs = names.subscriptions();
    let subs_ref: Vec<&str> = subs.iter().map(String::as_str).collect();
    consumer.subscribe(&subs_ref).map_err(|e| RuntimeError::kafka("subscribe", e))?;
    info!(group = %names.group, topics = ?subs, "subscribed");

    let interval = Duration::from_millis(cfg.commit_interval_ms);
    let result = loop {
        if opts.shutdown.load(Ordering::SeqCst) {
            info!("shutdown requested: committing and leaving the group");
            let mut c = lock(&core);
            if c.txn.is_some() {
                if let Err(e) = c.commit(&consumer) {
                    warn!(error = %e, "final commit failed; aborting");
                    c.abort_quietly("shutdown");
                }
            }
            break Ok(());
        }
        let wait = {
            let mut c = lock(&core);
            if let Some(e) = c.fatal.take() {
                break Err(e);
            }
            c.resume_due(&consumer);
            match &c.txn {
                Some(t) => interval.saturating_sub(t.started.elapsed()),
                None => interval,
            }
        };
        let polled = consumer.poll(wait.max(Duration::from_millis(1)));
        let mut c = lock(&core);
        if let Some(e) = c.fatal.take() {
            break Err(e);
        }
        match polled {
            Some(Ok(msg)) => {
                if let Err(e) = c.handle(&consumer, &msg) {
                    if let Some(e) = c.recover(&consumer, e) {
                        break Err(e);
                    }
                    continue;
                }
            }
            Some(Err(e)) => {
                warn!(error = %e, "consumer error");
                if classify_kafka(&e) == Disposition::Stop {
                    break Err(RuntimeError::kafka("consume", e));
                }
            }
            None => {}
        }
        if let Err(e) = c.punctuate_if_due() {
            if let Some(e) = c.recover(&consumer, e) {
                break Err(e);
            }
            continue;
        }
        let due = c.txn.as_ref().is_some_and(|t| {
            t.started.elapsed() >= interval || t.records >= c.cfg.commit_max_records
        });
        if due {
            if let Err(e) = c.commit(&consumer) {
                if let Some(e) = c.recover(&consumer, e) {
                    break Err(e);
                }
            }
        }
    };
    if let Err(e) = &result {
        opts.health.set_stopped(&e.to_string());
    } else {
        opts.health.set_stopped("shut down");
    }
    // Dropping the consumer leaves the group; the revoke callback finds no open transaction.
    drop(consumer);
    result
}

/// Spawns [`run`] on a named OS thread.
pub fn spawn<P: Processor>(
    processor: P,
    opts: EngineOptions,
) -> std::io::Result<std::thread::JoinHandle<Result<(), RuntimeError>>> {
    let name = format!("eos-{}", processor.name());
    std::thread::Builder::new().name(name).spawn(move || run(processor, opts))
}

impl<P: Processor> Core<P> {
    /// Resumes retry partitions whose due time has come.
    fn resume_due(&mut self, consumer: &EngineConsumer<P>) {
        let now = Instant::now();
        let due: Vec<(String, i32)> =
            self.paused.iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect();
        for tp in due {
            self.paused.remove(&tp);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&tp.0, tp.1);
            if let Err(e) = consumer.resume(&tpl) {
                warn!(error = %e, topic = %tp.0, "resume failed");
            }
        }
    }
}
