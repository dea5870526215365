//! The exactly-once engine: runs one [`Processor`] as a member of its consumer group.
//!
//! ```text
//!  poll ─► record ─► decode ─► process ─► outputs ─┐    every commit_interval_ms or
//!   ▲                 │ bad        │ Invalid/NotReady │    commit_max_records:
//!   │                 ▼            ▼                  ▼
//!   │              <topic>.dlq   <topic>.dlq|.retry  producer (one open transaction)
//!   │                                                 │  1 changed state keys ─► changelog[p]
//!   │                                                 │  2 flush (everything delivered)
//!   │                                                 │  3 send_offsets_to_transaction
//!   │                                                 │  4 one progress marker per partition
//!   └──────────────────────────────────────────────── 5 commit_transaction
//!                 any failure ─► abort (or rebuild the producer) ─► restore from the log
//! ```
//!
//! Why it is built this way (details in `docs/exactly-once.md`):
//!
//! * **One dedicated thread.** librdkafka's transaction calls block, and the rebalance callback
//!   runs inside `poll`. Owning consumer, producer and state on one named OS thread keeps blocking
//!   calls off the async workers and lets the revoke callback commit the open transaction
//!   synchronously, before any partition moves (eager assignment). The one exception is the
//!   blocking half of a commit, which a short-lived commit thread runs while the loop processes
//!   the next transaction's records without producing them ([`inflight`]); the loop settles it
//!   before anything else touches the producer.
//! * **Memory equals what the log proves.** After an abort, or a commit whose outcome is unknown,
//!   the engine does not undo in memory: it drops every partition's state and the processor's
//!   memory and restores them from the changelog (and the processor's `on_assign`), the same path
//!   as a new assignment, then seeks to the restored positions.
//! * **Progress lives in the outputs.** Each commit writes one progress marker per changelog
//!   partition it touched: the positions of every input topic of the partition and the
//!   partition's commit sequence, after the offsets were sent (a zombie of an old group
//!   generation fails there, before any marker exists). Every record of the transaction names
//!   its marker in `evalstream.progress`, so a reader on a broker that shows aborted records can
//!   tell committed from aborted ([`crate::progress`]).
//! * **Deterministic outputs.** Output values depend only on input and state; the runtime adds
//!   source and transaction headers, so replays are recognisable.
//!
//! One file per concern: [`names`] (topic names), `process` (one record through the
//! processor), `routing` (DLQ and retry records), `commit` (transactions, recovery), `rebalance`
//! (assign/revoke), `inflight` (the commit that runs while the next transaction fills), `restore`
//! (changelog restore and start positions), `producer` (the transactional producer), `topics`
//! (internal topic creation), `failpoint` (fault injection).

mod commit;
mod failpoint;
mod gate;
mod inflight;
mod names;
mod process;
mod producer;
mod rebalance;
mod restore;
mod routing;
mod topics;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::ThreadedProducer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::codec::Codec;
use crate::config::RuntimeConfig;
use crate::control::{ControlFollower, EffectiveMode, ModeControl};
use crate::error::{classify_kafka, Disposition, ErrorClass, RuntimeError};
use crate::kafka;
use crate::metrics::Metrics;
use crate::ops::Health;
use crate::processor::Processor;
use crate::reader::CommittedReader;
use crate::state::StateView;

pub use failpoint::{FailPoint, FailPoints};
pub use names::TopicNames;
pub use restore::{restore_changelog, start_position, Restored, PROGRESS_MARKER_SCHEMA};
pub use topics::ensure_internal_topics;

use producer::{DeliveryContext, Rejections};
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
    /// Test-only fault injection (see [`FailPoints`]); `FailPoints::from_env()` is inert unless
    /// `EVALSTREAM_FAIL_AT` is set.
    pub fail_points: FailPoints,
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
    /// Partitions this transaction wrote anything for: each gets a progress marker.
    partitions: BTreeSet<i32>,
    /// The input processed alone because an earlier transaction holding it was refused (see
    /// `Core::suspects`): this transaction commits right after it.
    isolated: Option<String>,
    /// Poisoned inputs dead-lettered by this transaction (forgotten once it commits).
    dead_lettered_poison: Vec<String>,
    /// Metrics of this transaction, published only when it commits, so that an aborted and
    /// re-read record is counted once: in = out + dead-lettered (+ retried) holds exactly.
    counts: TxnCounts,
    /// Whether the producer has begun it. A transaction opened while the previous one is still
    /// committing (see [`inflight`]) is not: its records wait in `deferred` until that commit
    /// succeeded, then go out in order.
    begun: bool,
    /// Records of a transaction not begun yet, in the order they were produced.
    deferred: Vec<producer::Deferred>,
}

/// Per-transaction counters (logical topic names).
#[derive(Debug, Default)]
struct TxnCounts {
    inputs: BTreeMap<String, u64>,
    outputs: BTreeMap<String, u64>,
    dead_lettered: BTreeMap<(String, ErrorClass), u64>,
    retried: BTreeMap<String, u64>,
}

/// An input whose output the broker refused for what it is: replays dead-letter it.
#[derive(Debug, Clone)]
struct Poison {
    /// Why (the producer's error).
    message: String,
    /// The dead letter itself was refused too: write it without the value.
    drop_value: bool,
}

/// Recovery still to do after a failure (retried from the loop while the broker is away).
#[derive(Debug, Clone, Copy, Default)]
struct Recovery {
    /// The producer is unusable or the last commit's outcome is unknown: create a new one
    /// (`init_transactions` settles the pending transaction).
    rebuild_producer: bool,
    /// Drop state and processor memory and restore them from the log, then seek.
    reset: bool,
    /// Attempts so far.
    attempts: u32,
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
    /// Shared with the commit thread of the transaction in flight (never used by both at once:
    /// while a commit is in flight the engine defers its records).
    producer: Arc<ThreadedProducer<DeliveryContext>>,
    /// Records the broker refused for what they are (filled by the delivery callback).
    rejections: Rejections,
    transactional_id: String,
    nonce: u32,
    txn_seq: u64,
    txn: Option<OpenTxn>,
    /// The previous transaction, committing on its own thread while `txn` fills.
    inflight: Option<inflight::InFlight>,
    /// Reads changelogs and the processors' own outputs to their committed end.
    reader: CommittedReader,
    /// Every assigned topic-partition.
    assigned: BTreeSet<(String, i32)>,
    /// State per partition number (all inputs' partition `p` share state partition `p`).
    states: HashMap<i32, StateView>,
    positions: HashMap<(String, i32), Position>,
    committed: HashMap<(String, i32), Position>,
    /// Last committed commit sequence per partition (see [`crate::progress`]).
    commit_seq: HashMap<i32, i64>,
    /// The `evalstream.progress` header value per partition with the commit sequence it was
    /// formatted for (see `Core::progress_header`).
    progress_headers: HashMap<i32, (i64, Arc<str>)>,
    /// Retry partitions paused until a due time.
    paused: HashMap<(String, i32), Instant>,
    /// Inputs (`evalstream.source`) whose outputs were refused in a transaction with other
    /// records: replayed alone, to tell which record the broker refuses.
    suspects: HashSet<String>,
    /// Inputs whose outputs the broker refuses for what they are: dead-lettered on replay.
    poisoned: HashMap<String, Poison>,
    /// Recovery not finished yet; no record is processed until it is.
    recovery: Option<Recovery>,
    /// Markers view only: holds back inputs until the marker that commits them is seen.
    gate: Option<gate::InputGate>,
    /// Producers created since the last commit: a bound on fencing ping-pong.
    rebuilds_since_commit: u32,
    fatal: Option<RuntimeError>,
    faults: producer::Faults,
    /// Current backoff after dependency failures; reset by a successful commit.
    backoff: Duration,
    last_punctuate: Instant,
    /// Read-only mode: when the lag of the held partitions was last measured (`None`: measure
    /// at once).
    last_lag_report: Option<Instant>,
    /// The mode the operator wants (configured default, or the control topic).
    control: Arc<ModeControl>,
    /// The mode last applied (and reported on `/health`); `None` before the first.
    applied: Option<EffectiveMode>,
    /// Read-only is in force: every assigned partition is paused, nothing is processed,
    /// punctuated or produced.
    held: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock would already have ended the loop thread; the state is
    // then discarded, so recovering the guard is safe.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type EngineConsumer<P> = BaseConsumer<EngineContext<P>>;

/// Longest poll while a commit is in flight: its answer is taken up within this long.
const INFLIGHT_CHECK: Duration = Duration::from_millis(5);

/// Runs `processor` until `opts.shutdown` is set or a stop-class error occurs. Blocking: call it
/// on a dedicated thread (see [`spawn`]).
pub fn run<P: Processor>(processor: P, opts: EngineOptions) -> Result<(), RuntimeError> {
    let cfg = opts.config.clone();
    let names = TopicNames::new(&cfg, &processor);
    ensure_internal_topics(&cfg, &names)?;
    opts.health.set_kafka(true, "topics checked");
    // The mode to start in: the control topic's last command for this processor, else the
    // configured MODE. Read before subscribing, so a restarted instance never consumes in a
    // mode the operator switched off.
    let control = ModeControl::new(processor.name(), cfg.mode);
    let _follower = ControlFollower::start(&cfg, control.clone(), Duration::from_secs(10))?;

    let transactional_id = format!("{}-{}", names.group, cfg.instance_id);
    let rejections = Rejections::default();
    let producer = producer::new_producer(&cfg, &transactional_id, &rejections)?;
    let reader = CommittedReader::new(&cfg, &opts.codec)?;
    let gate = match cfg.committed_view {
        crate::config::CommittedView::Markers => Some(gate::InputGate::new(&cfg, &opts.codec)?),
        crate::config::CommittedView::Broker => None,
    };
    let core = Arc::new(Mutex::new(Core {
        processor,
        cfg: cfg.clone(),
        names: names.clone(),
        codec: opts.codec,
        metrics: opts.metrics.clone(),
        health: opts.health.clone(),
        producer: Arc::new(producer),
        rejections,
        transactional_id,
        nonce: rand::random(),
        txn_seq: 0,
        txn: None,
        inflight: None,
        reader,
        assigned: BTreeSet::new(),
        states: HashMap::new(),
        positions: HashMap::new(),
        committed: HashMap::new(),
        commit_seq: HashMap::new(),
        progress_headers: HashMap::new(),
        paused: HashMap::new(),
        suspects: HashSet::new(),
        poisoned: HashMap::new(),
        recovery: None,
        gate,
        rebuilds_since_commit: 0,
        fatal: None,
        faults: producer::Faults::new(opts.fail_points, opts.metrics.clone()),
        backoff: Duration::ZERO,
        last_punctuate: Instant::now(),
        last_lag_report: None,
        control,
        applied: None,
        held: false,
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
            if (c.txn.is_some() || c.inflight.is_some()) && c.recovery.is_none() {
                if let Err(e) = c.commit(&consumer) {
                    warn!(error = %e, "final commit failed; aborting");
                    c.abort_txn("shutdown");
                }
            }
            break Ok(());
        }
        let wait = {
            let mut c = lock(&core);
            if let Some(e) = c.fatal.take() {
                break Err(e);
            }
            // The commit in flight answered: account for it, and begin the transaction that
            // filled meanwhile.
            if let Err(e) = c.settle_if_done() {
                if let Some(e) = c.recover(&consumer, e) {
                    break Err(e);
                }
                continue;
            }
            if c.recovery.is_some() {
                match c.continue_recovery(&consumer) {
                    Ok(true) => {}
                    // Still failing (the broker is away): serve callbacks, drop what is polled
                    // (the reset seeks everything back), try again after a pause.
                    Ok(false) => {
                        drop(c);
                        let _ = consumer.poll(Duration::from_millis(200));
                        continue;
                    }
                    Err(e) => break Err(e),
                }
            }
            if let Err(e) = c.apply_mode(&consumer) {
                if let Some(e) = c.recover(&consumer, e) {
                    break Err(e);
                }
                continue;
            }
            c.resume_due(&consumer);
            c.report_held_lag();
            let wait = match &c.txn {
                Some(t) => interval.saturating_sub(t.started.elapsed()),
                None => interval,
            };
            // A commit in flight is looked after soon even when no record arrives.
            if c.inflight.is_some() {
                wait.min(INFLIGHT_CHECK)
            } else {
                wait
            }
        };
        let polled = consumer.poll(wait.max(Duration::from_millis(1)));
        let mut c = lock(&core);
        if let Some(e) = c.fatal.take() {
            break Err(e);
        }
        if c.recovery.is_some() {
            continue;
        }
        match polled {
            // Read-only: a record fetched before the pause took effect is not processed; the
            // position stays before it and the resume seeks back there.
            Some(Ok(_)) if c.held => {}
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
        if c.held {
            continue;
        }
        if let Err(e) = c.punctuate_if_due() {
            if let Some(e) = c.recover(&consumer, e) {
                break Err(e);
            }
            continue;
        }
        let due = c.txn.as_ref().is_some_and(|t| {
            t.isolated.is_some()
                || t.started.elapsed() >= interval
                || t.records >= c.cfg.commit_max_records
        });
        if due {
            // Handed to a commit thread; the next records fill the next transaction meanwhile.
            if let Err(e) = c.commit_pipelined(&consumer) {
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
    /// Applies the mode the operator wants, if it is not the one in force: entering read-only
    /// commits the open transaction and pauses every assigned partition; leaving it resumes
    /// them and seeks each to the engine's own position, so processing continues exactly after
    /// the last record processed (whatever librdkafka had fetched meanwhile). Retry and input
    /// gate holds are dropped on resume: their records are read again and held again if still
    /// not due, as after a reset.
    fn apply_mode(&mut self, consumer: &EngineConsumer<P>) -> Result<(), RuntimeError> {
        let want = self.control.current();
        if self.applied.as_ref() == Some(&want) {
            return Ok(());
        }
        let read_only = want.mode == crate::config::Mode::ReadOnly;
        if read_only && !self.held {
            if self.txn.is_some() || self.inflight.is_some() {
                self.commit(consumer)?;
            }
            let tpl = self.assigned_tpl();
            consumer.pause(&tpl).map_err(|e| RuntimeError::kafka("pause (read-only)", e))?;
            self.held = true;
            self.last_lag_report = None;
            warn!(
                partitions = tpl.count(),
                source = %want.source_json(),
                "read-only: partitions held, nothing is consumed or produced"
            );
        } else if !read_only && self.held {
            self.release(consumer)?;
            self.held = false;
            info!(source = %want.source_json(), "normal mode: partitions resumed where they stopped");
        }
        self.health.set_mode_from(want.mode.as_str(), want.source_json());
        self.applied = Some(want);
        Ok(())
    }

    /// Every assigned partition, as a list.
    fn assigned_tpl(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &self.assigned {
            tpl.add_partition(topic, *partition);
        }
        tpl
    }

    /// Leaves read-only: resumes every assigned partition at the engine's position.
    fn release(&mut self, consumer: &EngineConsumer<P>) -> Result<(), RuntimeError> {
        self.paused.clear();
        if let Some(gate) = self.gate.as_mut() {
            gate.take_waiting();
        }
        let tpl = self.assigned_tpl();
        consumer.resume(&tpl).map_err(|e| RuntimeError::kafka("resume (read-only off)", e))?;
        for tp in &self.assigned {
            let pos = self.positions.get(tp).copied().unwrap_or(Position { next: None });
            consumer
                .seek(&tp.0, tp.1, pos.as_offset(), Duration::from_secs(10))
                .map_err(|e| RuntimeError::kafka("seek (read-only off)", e))?;
        }
        Ok(())
    }

    /// Read-only mode: the held partitions are never fetched, so librdkafka's statistics know
    /// no lag for them; measure it (high watermark − committed position) every 5 s, so that
    /// `evalstream_consumer_lag` shows the safe mode's backlog growing.
    fn report_held_lag(&mut self) {
        if !self.held || self.last_lag_report.is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        self.last_lag_report = Some(Instant::now());
        for (topic, partition) in &self.assigned {
            let Ok((low, high)) = self.reader.watermarks_physical(topic, *partition) else {
                continue;
            };
            let next = self.committed.get(&(topic.clone(), *partition)).and_then(|p| p.next);
            let lag = (high - next.unwrap_or(low)).max(0);
            self.metrics.set_lag(self.names.logical(topic), *partition, lag);
        }
    }

    /// Resumes retry partitions whose due time has come, and partitions the input gate held
    /// back whose marker has been seen.
    fn resume_due(&mut self, consumer: &EngineConsumer<P>) {
        if self.held {
            return;
        }
        let now = Instant::now();
        let mut due: Vec<(String, i32)> =
            self.paused.iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect();
        if let Some(gate) = self.gate.as_mut() {
            due.extend(gate.ready());
        }
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
