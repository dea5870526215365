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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tracing::{debug, error, info, warn};

use crate::codec::Codec;
use crate::config::RuntimeConfig;
use crate::error::{classify_kafka, Disposition, RuntimeError};
use crate::headers;
use crate::kafka;
use crate::metrics::Metrics;
use crate::ops::Health;
use crate::processor::{Context, Input, Output, Processor};
use crate::state::{self, ChangelogKey, StateView};

/// Avro schema of progress-marker values in a changelog topic.
pub const PROGRESS_MARKER_SCHEMA: &str = "evalstream.runtime.ProgressMarker";

/// Timeout for blocking transaction calls.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounded retries of a retriable transaction call before the transaction is aborted.
const MAX_TXN_RETRIES: u32 = 8;

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

/// A crash point for tests: abort the process (as SIGKILL would) at the `nth` time `point` is
/// reached. Points: `after_outputs` (outputs produced, no markers), `after_markers` (markers
/// produced, not committed), `after_commit` (committed, before the next poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailPoint {
    /// Which point.
    pub point: String,
    /// Crash on this (1-based) hit.
    pub nth: u64,
}

impl FailPoint {
    /// Parses `EVALSTREAM_FAIL_AT=<point>:<nth>`.
    pub fn from_env() -> Option<FailPoint> {
        let v = std::env::var("EVALSTREAM_FAIL_AT").ok()?;
        let (point, nth) = v.split_once(':')?;
        Some(FailPoint { point: point.to_string(), nth: nth.parse().ok()? })
    }
}

/// Names of the topics one processor instance uses, with the configured prefix applied.
///
/// They come from the bundled topology (`topology/topology.toml`) when it declares the
/// processor, so the runtime and `evalstream topology apply` agree on every name; a processor the
/// topology does not know (tests, experiments) gets the derived defaults: `<input>.dlq`,
/// `<input>.retry` and `<group>.changelog`.
#[derive(Debug, Clone)]
pub struct TopicNames {
    prefix: String,
    /// Logical input topics.
    pub inputs: Vec<String>,
    /// Logical input → logical DLQ topic.
    dlqs: BTreeMap<String, String>,
    /// Logical input → logical retry topic (only inputs that have one).
    retries: BTreeMap<String, String>,
    /// Changelog topic (physical; state entries and progress markers).
    pub changelog: String,
    /// Consumer group id.
    pub group: String,
    /// Topic specs of the internal topics, by logical name, when the topology declares them.
    specs: BTreeMap<String, crate::topology::TopicSpec>,
}

impl TopicNames {
    /// Derives the names for `processor` under `cfg`.
    pub fn new(cfg: &RuntimeConfig, processor: &dyn Processor) -> Self {
        let topology = crate::topology::Topology::bundled().ok();
        let spec = topology.as_ref().and_then(|t| t.processor(processor.name())).filter(|spec| {
            spec.input_topics().map(str::to_string).collect::<Vec<_>>() == processor.inputs()
        });
        let inputs = processor.inputs();
        let mut names = TopicNames {
            prefix: cfg.topic_prefix.clone(),
            dlqs: BTreeMap::new(),
            retries: BTreeMap::new(),
            changelog: String::new(),
            group: cfg.group_for(processor.name()),
            specs: BTreeMap::new(),
            inputs,
        };
        match spec {
            Some(spec) => {
                if cfg.group_id.is_none() {
                    names.group = format!("{}{}", cfg.topic_prefix, spec.group_id);
                    names.changelog = format!("{}{}", cfg.topic_prefix, spec.changelog);
                } else {
                    names.changelog = format!("{}.changelog", names.group);
                }
                for i in &spec.inputs {
                    names.dlqs.insert(i.topic.clone(), i.dlq.clone());
                    if let Some(r) = &i.retry {
                        names.retries.insert(i.topic.clone(), r.clone());
                    }
                }
                let topology = topology.as_ref().expect("spec came from it");
                for t in names.dlqs.values().chain(names.retries.values()).chain([&spec.changelog])
                {
                    if let Some(ts) = topology.topic(t) {
                        names.specs.insert(t.clone(), ts.clone());
                    }
                }
            }
            None => {
                names.changelog = format!("{}.changelog", names.group);
                for i in &names.inputs {
                    names.dlqs.insert(i.clone(), format!("{i}.dlq"));
                    names.retries.insert(i.clone(), format!("{i}.retry"));
                }
            }
        }
        names
    }

    /// Physical name of a logical topic.
    pub fn physical(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// Logical name of a physical topic.
    pub fn logical<'a>(&self, physical: &'a str) -> &'a str {
        physical.strip_prefix(self.prefix.as_str()).unwrap_or(physical)
    }

    /// DLQ topic (physical) of a logical input.
    pub fn dlq(&self, logical: &str) -> String {
        match self.dlqs.get(logical) {
            Some(d) => self.physical(d),
            None => self.physical(&format!("{logical}.dlq")),
        }
    }

    /// Retry topic (physical) of a logical input, if it has one.
    pub fn retry(&self, logical: &str) -> Option<String> {
        self.retries.get(logical).map(|r| self.physical(r))
    }

    /// The logical input a logical retry topic belongs to.
    pub fn input_of_retry(&self, logical_retry: &str) -> Option<&str> {
        self.retries.iter().find(|(_, r)| *r == logical_retry).map(|(i, _)| i.as_str())
    }

    /// Every physical topic the consumer subscribes to: inputs and their retry topics.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inputs.iter().map(|t| self.physical(t)).collect();
        v.extend(self.inputs.iter().filter_map(|t| self.retry(t)));
        v
    }

    /// Physical internal topics with their cleanup policy and retention.
    fn internal_topics(&self) -> Vec<(String, &'static str, Option<i64>)> {
        let spec = |logical: &str, default: &'static str| match self.specs.get(logical) {
            Some(s) => (self.physical(logical), s.cleanup_policy.as_kafka_str(), s.retention_ms),
            None => (self.physical(logical), default, None),
        };
        let logical_changelog = self.logical(&self.changelog).to_string();
        let mut v = vec![spec(&logical_changelog, "compact")];
        v.extend(self.dlqs.values().map(|d| spec(d, "delete")));
        v.extend(self.retries.values().map(|r| spec(r, "delete")));
        v
    }
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
    dead_lettered: BTreeMap<(String, &'static str), u64>,
    retried: BTreeMap<String, u64>,
}

/// An encoded output: physical topic and value bytes.
type Encoded = (String, Vec<u8>);

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
    fail_point: Option<FailPoint>,
    fail_hits: u64,
    /// Current backoff after dependency failures; reset by a successful commit.
    backoff: Duration,
    last_punctuate: Instant,
}

/// Producer context: logs delivery failures (the transaction commit then fails and is aborted).
struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            warn!(topic = m.topic(), partition = m.partition(), error = %e, "delivery failed");
        }
    }
}

/// Consumer context: rebalance handling and statistics.
struct EngineContext<P: Processor> {
    core: Arc<Mutex<Core<P>>>,
}

impl<P: Processor> ClientContext for EngineContext<P> {
    fn stats(&self, stats: Statistics) {
        let core = lock(&self.core);
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    core.metrics.set_lag(core.names.logical(topic), *p, part.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let core = lock(&self.core);
        if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::AllBrokersDown)) {
            core.health.set_kafka(false, reason);
        }
        warn!(%error, reason, "kafka client error");
    }
}

impl<P: Processor> ConsumerContext for EngineContext<P> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut core = lock(&self.core);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                core.metrics.rebalance(if lost { "lost" } else { "revoke" });
                if core.txn.is_some() {
                    // Finish the open transaction before the partitions move: the next owner
                    // then resumes exactly after what we committed. A lost assignment means we
                    // were fenced already; aborting is the only safe option.
                    let result = if lost { Err(None) } else { core.commit(consumer).map_err(Some) };
                    if let Err(e) = result {
                        if let Some(e) = e {
                            warn!(error = %e, "commit before revoke failed; aborting");
                        }
                        core.abort_quietly("revoke");
                    }
                }
                core.drop_partitions();
                if let Err(e) = consumer.unassign() {
                    warn!(error = %e, "unassign failed");
                }
                core.health.clear_assignment();
                core.metrics.clear_lag();
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                core.metrics.rebalance("assign");
                core.health.set_restoring(true);
                let started = Instant::now();
                match core.restore_assignment(consumer, tpl) {
                    Ok(()) => {
                        if let Err(e) = consumer.assign(tpl) {
                            core.fatal = Some(RuntimeError::kafka("assign", e));
                        } else if core.cfg.mode == crate::config::Mode::ReadOnly {
                            // Read-only: hold every partition; lag grows, nothing is dropped.
                            if let Err(e) = consumer.pause(tpl) {
                                core.fatal = Some(RuntimeError::kafka("pause (read-only)", e));
                            }
                        }
                        info!(
                            partitions = tpl.count(),
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "partitions assigned and state restored"
                        );
                        core.health.set_assignment(tpl.count());
                    }
                    Err(e) => {
                        error!(error = %e, "restore failed; stopping");
                        core.fatal = Some(e);
                    }
                }
                core.health.set_restoring(false);
            }
            other => {
                warn!(?other, "rebalance error; unassigning");
                core.abort_quietly("rebalance_error");
                core.drop_partitions();
                let _ = consumer.unassign();
            }
        }
    }
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
    let producer = new_producer(&cfg, &transactional_id)?;
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
        fail_point: opts.fail_point,
        fail_hits: 0,
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

fn new_producer(
    cfg: &RuntimeConfig,
    transactional_id: &str,
) -> Result<ThreadedProducer<DeliveryContext>, RuntimeError> {
    let producer: ThreadedProducer<DeliveryContext> =
        kafka::transactional_producer(cfg, transactional_id)
            .create_with_context(DeliveryContext)
            .map_err(|e| RuntimeError::kafka("create producer", e))?;
    // init_transactions fences any previous producer with the same transactional.id and aborts
    // its open transaction (KIP-98 zombie fencing).
    retry_txn_call("init_transactions", || producer.init_transactions(TXN_TIMEOUT))?;
    Ok(producer)
}

/// Calls a transaction API, retrying only errors librdkafka marks retriable, with backoff.
fn retry_txn_call(
    what: &'static str,
    mut f: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), RuntimeError> {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=MAX_TXN_RETRIES {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if classify_kafka(&e) == Disposition::Backoff && attempt < MAX_TXN_RETRIES => {
                warn!(what, attempt, error = %e, "retriable transaction error; backing off");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(RuntimeError::kafka(what, e)),
        }
    }
    unreachable!("the last attempt returns")
}

/// Creates the changelog, DLQ and retry topics if missing, each with the partition count of
/// the inputs (co-partitioning: input partition `p` ↔ changelog/retry partition `p`).
/// Inputs themselves must exist (created by `evalstream topology apply`).
pub fn ensure_internal_topics(cfg: &RuntimeConfig, names: &TopicNames) -> Result<(), RuntimeError> {
    let meta_client: BaseConsumer = kafka::reader(cfg)
        .create()
        .map_err(|e| RuntimeError::kafka("create metadata client", e))?;
    let mut partitions = None;
    for input in &names.inputs {
        let physical = names.physical(input);
        let md = meta_client
            .fetch_metadata(Some(&physical), Duration::from_secs(10))
            .map_err(|e| RuntimeError::kafka("fetch metadata", e))?;
        let n = md
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if n == 0 {
            return Err(RuntimeError::Config(format!(
                "input topic {physical} does not exist; run `evalstream topology apply` first"
            )));
        }
        match partitions {
            None => partitions = Some(n),
            Some(m) if m != n => {
                return Err(RuntimeError::Config(format!(
                    "inputs must be co-partitioned, but {physical} has {n} partitions and the others {m}"
                )))
            }
            _ => {}
        }
    }
    let partitions = partitions.unwrap_or(1) as i32;
    let wanted = names.internal_topics();
    let admin: AdminClient<DefaultClientContext> =
        kafka::base(cfg).create().map_err(|e| RuntimeError::kafka("create admin client", e))?;
    let retention: Vec<Option<String>> =
        wanted.iter().map(|(_, _, r)| r.map(|ms| ms.to_string())).collect();
    let new_topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .zip(&retention)
        .map(|((name, cleanup, _), retention)| {
            let t = NewTopic::new(name, partitions, TopicReplication::Fixed(-1))
                .set("cleanup.policy", cleanup);
            match retention {
                Some(ms) => t.set("retention.ms", ms),
                None => t,
            }
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RuntimeError::Config(format!("admin runtime: {e}")))?;
    let results = rt
        .block_on(admin.create_topics(&new_topics, &AdminOptions::new()))
        .map_err(|e| RuntimeError::kafka("create topics", e))?;
    for r in results {
        match r {
            Ok(t) => info!(topic = %t, partitions, "created internal topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(RuntimeError::kafka(
                    "create internal topic",
                    KafkaError::AdminOp(code),
                ))
                .inspect_err(|_| error!(topic = %t, "could not create internal topic"));
            }
        }
    }
    Ok(())
}

impl<P: Processor> Core<P> {
    /// Handles one polled record inside the open transaction.
    fn handle(
        &mut self,
        consumer: &EngineConsumer<P>,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), RuntimeError> {
        let physical = msg.topic().to_string();
        let partition = msg.partition();
        let offset = msg.offset();
        let tp = (physical.clone(), partition);
        match self.positions.get(&tp) {
            Some(pos) if pos.next.is_some_and(|n| offset < n) => {
                // Already processed (a record fetched before a rewind/seek took effect).
                return Ok(());
            }
            None => {
                debug!(topic = %physical, partition, "record from an unassigned partition; skipping");
                return Ok(());
            }
            _ => {}
        }

        // Retry-topic records carry their original coordinates and a due time.
        let logical_consumed = self.names.logical(&physical).to_string();
        let retry = RetryInfo::from_message(msg, &self.names, &logical_consumed);
        if let Some(r) = &retry {
            let now = now_ms();
            if r.not_before_ms > now {
                let wait = Duration::from_millis((r.not_before_ms - now) as u64);
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&physical, partition, Offset::Offset(offset))
                    .map_err(|e| RuntimeError::kafka("pause", e))?;
                consumer
                    .seek(&physical, partition, Offset::Offset(offset), Duration::from_secs(5))
                    .map_err(|e| RuntimeError::kafka("seek retry", e))?;
                consumer.pause(&tpl).map_err(|e| RuntimeError::kafka("pause", e))?;
                self.paused.insert(tp, Instant::now() + wait);
                return Ok(());
            }
        }

        self.begin_if_needed()?;
        // Headers name physical topics (what exists in Kafka); processors see logical names.
        let original_topic = retry
            .as_ref()
            .map(|r| self.names.logical(&r.topic).to_string())
            .unwrap_or_else(|| logical_consumed.clone());
        let attempt = retry.as_ref().map(|r| r.attempt).unwrap_or(1);
        if let Some(t) = self.txn.as_mut() {
            *t.counts.inputs.entry(original_topic.clone()).or_default() += 1;
        }

        let source = match &retry {
            Some(r) => headers::coordinate(&r.topic, r.partition, r.offset),
            None => headers::coordinate(&physical, partition, offset),
        };
        let failure =
            self.process_one(msg, &original_topic, partition, offset, attempt, &source)?;
        if let Some((class, message, disposition)) = failure {
            let (src_partition, src_offset) =
                retry.as_ref().map(|r| (r.partition, r.offset)).unwrap_or((partition, offset));
            let max = self.cfg.retry.max_attempts;
            let has_retry = self.names.retry(&original_topic).is_some();
            if disposition == Disposition::Retry && attempt < max && has_retry {
                self.send_retry(
                    msg,
                    &original_topic,
                    src_partition,
                    src_offset,
                    attempt + 1,
                    &source,
                )?;
            } else {
                // Without a retry topic a not-ready record is dead-lettered at once, as
                // `not_ready`; with one, only after the last attempt.
                let class = if disposition == Disposition::Retry && has_retry {
                    "retries_exhausted"
                } else {
                    class
                };
                self.send_dlq(
                    msg,
                    &original_topic,
                    src_partition,
                    src_offset,
                    class,
                    &message,
                    attempt,
                    &source,
                )?;
            }
        }

        self.positions.insert(tp.clone(), Position { next: Some(offset + 1) });
        if let Some(txn) = self.txn.as_mut() {
            txn.records += 1;
            txn.touched.insert(tp);
        }
        Ok(())
    }

    /// Decodes and processes one record. `Ok(Some(..))` = the record failed and must be
    /// dead-lettered or retried; `Err` = stop-class failure.
    #[allow(clippy::type_complexity)]
    fn process_one(
        &mut self,
        msg: &BorrowedMessage<'_>,
        topic: &str,
        partition: i32,
        offset: i64,
        attempt: u32,
        source: &str,
    ) -> Result<Option<(&'static str, String, Disposition)>, RuntimeError> {
        let payload = match msg.payload() {
            None => {
                return Ok(Some((
                    "deserialization",
                    "record has no value".into(),
                    Disposition::DeadLetter,
                )))
            }
            Some(p) => p,
        };
        if payload.len() > self.cfg.max_record_bytes {
            return Ok(Some((
                "oversized",
                format!("value is {} bytes, limit is {}", payload.len(), self.cfg.max_record_bytes),
                Disposition::DeadLetter,
            )));
        }
        let decoded = match self.codec.decode(payload) {
            Ok(d) => d,
            Err(e) if e.is_transient() => return Err(RuntimeError::Unavailable(e.to_string())),
            Err(e) => return Ok(Some((e.class(), e.to_string(), Disposition::DeadLetter))),
        };
        let state = self.states.entry(partition).or_default();
        state.begin_record();
        let input = Input {
            topic,
            partition,
            offset,
            timestamp: msg.timestamp().to_millis(),
            key: msg.key(),
            schema: &decoded.schema_name,
            value: &decoded.value,
            attempt,
        };
        let mut ctx = Context::new(state);
        let result = self.processor.process(&input, &mut ctx);
        let outputs = ctx.take_outputs();
        match result {
            Ok(()) => {
                // Encode everything first so that a bad output leaves no partial trace.
                let encoded = match self.encode_outputs(&outputs) {
                    Ok(encoded) => encoded,
                    Err((out, e)) => {
                        self.states.entry(partition).or_default().rollback_record();
                        error!(topic = %out.topic, error = %e, "processor emitted a value that does not match its schema");
                        return Ok(Some((
                            "encoding",
                            format!("output to {} does not match {}: {e}", out.topic, out.schema),
                            Disposition::DeadLetter,
                        )));
                    }
                };
                self.send_outputs(&outputs, encoded, source)?;
                Ok(None)
            }
            Err(e) => {
                self.states.entry(partition).or_default().rollback_record();
                match e.disposition() {
                    Disposition::Stop => Err(RuntimeError::Processor(e)),
                    d => Ok(Some((e.class(), e.to_string(), d))),
                }
            }
        }
    }

    /// Runs [`Processor::punctuate`] for every assigned partition when its interval is due.
    /// Outputs go into the open transaction; the partition's first input is marked touched so
    /// the commit writes its progress marker (a transaction never carries outputs without one).
    fn punctuate_if_due(&mut self) -> Result<(), RuntimeError> {
        let Some(interval) = self.processor.punctuate_interval() else { return Ok(()) };
        if self.cfg.mode == crate::config::Mode::ReadOnly {
            return Ok(());
        }
        if self.last_punctuate.elapsed() < interval {
            return Ok(());
        }
        self.last_punctuate = Instant::now();
        let partitions: Vec<i32> = self.states.keys().copied().collect();
        for p in partitions {
            let state = self.states.entry(p).or_default();
            state.begin_record();
            let mut ctx = Context::new(state);
            let result = self.processor.punctuate(p, &mut ctx);
            let outputs = ctx.take_outputs();
            if let Err(e) = result {
                self.states.entry(p).or_default().rollback_record();
                match e.disposition() {
                    Disposition::Stop => return Err(RuntimeError::Processor(e)),
                    _ => {
                        warn!(partition = p, error = %e, "punctuation failed; will try again");
                        continue;
                    }
                }
            }
            if outputs.is_empty() {
                continue;
            }
            self.begin_if_needed()?;
            let first_input = self.names.physical(&self.names.inputs[0]);
            let source = headers::coordinate(&first_input, p, -1);
            let encoded = self.encode_outputs(&outputs).map_err(|(out, e)| {
                RuntimeError::Encode { topic: out.topic.clone(), message: e.to_string() }
            })?;
            self.send_outputs(&outputs, encoded, &source)?;
            let tp = (first_input, p);
            if self.positions.get(&tp).is_some_and(|pos| pos.next.is_some()) {
                if let Some(t) = self.txn.as_mut() {
                    t.touched.insert(tp);
                }
            }
        }
        Ok(())
    }

    /// Encodes every output (physical topic, bytes), or names the first that does not match its
    /// schema.
    fn encode_outputs<'o>(
        &self,
        outputs: &'o [Output],
    ) -> Result<Vec<Encoded>, (&'o Output, crate::codec::CodecError)> {
        outputs
            .iter()
            .map(|out| {
                let physical = self.names.physical(&out.topic);
                match self.codec.encode(&physical, &out.schema, &out.value) {
                    Ok(bytes) => Ok((physical, bytes)),
                    Err(e) => Err((out, e)),
                }
            })
            .collect()
    }

    /// Produces encoded outputs in the open transaction with the source, transaction and index
    /// headers, and counts them for the commit's metrics.
    fn send_outputs(
        &mut self,
        outputs: &[Output],
        encoded: Vec<Encoded>,
        source: &str,
    ) -> Result<(), RuntimeError> {
        let txn_id = self.txn.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        for (index, (out, (physical, bytes))) in outputs.iter().zip(encoded).enumerate() {
            let hdrs = output_headers(out, source, &txn_id, index);
            self.send(&physical, out.partition, out.key.as_deref(), Some(&bytes), hdrs)?;
            if let Some(t) = self.txn.as_mut() {
                *t.counts.outputs.entry(out.topic.clone()).or_default() += 1;
            }
        }
        Ok(())
    }

    fn begin_if_needed(&mut self) -> Result<(), RuntimeError> {
        if self.txn.is_none() {
            retry_txn_call("begin_transaction", || self.producer.begin_transaction())?;
            self.txn_seq += 1;
            self.txn = Some(OpenTxn {
                id: format!("{}-{:08x}-{}", self.cfg.instance_id, self.nonce, self.txn_seq),
                started: Instant::now(),
                records: 0,
                touched: BTreeSet::new(),
                counts: TxnCounts::default(),
            });
        }
        Ok(())
    }

    /// Produces one record in the open transaction, waiting while the local queue is full.
    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        hdrs: OwnedHeaders,
    ) -> Result<(), RuntimeError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(hdrs);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(RuntimeError::kafka("produce", e)),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_dlq(
        &mut self,
        msg: &BorrowedMessage<'_>,
        topic: &str,
        partition: i32,
        offset: i64,
        class: &str,
        message: &str,
        attempts: u32,
        source: &str,
    ) -> Result<(), RuntimeError> {
        let txn_id = self.txn.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        let mut h = original_headers(msg);
        h = h
            .insert(text(headers::ERR_TOPIC, &self.names.physical(topic)))
            .insert(text(headers::ERR_PARTITION, &partition.to_string()))
            .insert(text(headers::ERR_OFFSET, &offset.to_string()))
            .insert(text(headers::ERR_PROCESSOR, self.processor.name()))
            .insert(text(headers::ERR_CLASS, class))
            .insert(text(headers::ERR_MESSAGE, message))
            .insert(text(headers::ERR_ATTEMPTS, &attempts.to_string()))
            .insert(text(headers::SOURCE, source))
            .insert(text(headers::TXN, &txn_id));
        if let Some(ts) = msg.timestamp().to_millis() {
            h = h.insert(text(headers::ERR_TIMESTAMP, &ts.to_string()));
        }
        let dlq = self.names.dlq(topic);
        // Same partition number as the input keeps per-partition order within the DLQ.
        self.send(&dlq, Some(msg.partition()), msg.key(), msg.payload(), h)?;
        warn!(topic, partition, offset, class, message, "record dead-lettered");
        if let Some(t) = self.txn.as_mut() {
            *t.counts.dead_lettered.entry((topic.to_string(), class_label(class))).or_default() +=
                1;
        }
        Ok(())
    }

    fn send_retry(
        &mut self,
        msg: &BorrowedMessage<'_>,
        topic: &str,
        partition: i32,
        offset: i64,
        next_attempt: u32,
        source: &str,
    ) -> Result<(), RuntimeError> {
        let txn_id = self.txn.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        let due = now_ms() + self.cfg.retry.backoff_ms(next_attempt) as i64;
        let h = original_headers(msg)
            .insert(text(headers::RETRY_TOPIC, &self.names.physical(topic)))
            .insert(text(headers::RETRY_PARTITION, &partition.to_string()))
            .insert(text(headers::RETRY_OFFSET, &offset.to_string()))
            .insert(text(headers::RETRY_ATTEMPT, &next_attempt.to_string()))
            .insert(text(headers::RETRY_NOT_BEFORE, &due.to_string()))
            .insert(text(headers::SOURCE, source))
            .insert(text(headers::TXN, &txn_id));
        let retry = self.names.retry(topic).ok_or_else(|| {
            RuntimeError::Config(format!("{topic} has no retry topic in the topology"))
        })?;
        self.send(&retry, Some(msg.partition()), msg.key(), msg.payload(), h)?;
        if let Some(t) = self.txn.as_mut() {
            *t.counts.retried.entry(topic.to_string()).or_default() += 1;
        }
        Ok(())
    }

    fn fail_point(&mut self, point: &str) {
        if let Some(fp) = &self.fail_point {
            if fp.point == point {
                self.fail_hits += 1;
                if self.fail_hits == fp.nth {
                    eprintln!("fail point {point} hit #{}: aborting the process", fp.nth);
                    std::process::abort();
                }
            }
        }
    }

    /// Commits the open transaction: state changes and progress markers to the changelog,
    /// flush, offsets, commit.
    fn commit(&mut self, consumer: &EngineConsumer<P>) -> Result<(), RuntimeError> {
        let Some(txn) = self.txn.as_ref() else { return Ok(()) };
        let started = Instant::now();
        let txn_id = txn.id.clone();
        let touched: Vec<(String, i32)> = txn.touched.iter().cloned().collect();
        let state_partitions: BTreeSet<i32> = touched.iter().map(|(_, p)| *p).collect();
        let changelog = self.names.changelog.clone();

        for p in &state_partitions {
            let changes = self.states.get_mut(p).map(StateView::take_changes).unwrap_or_default();
            for (key, value) in changes {
                let k = state::state_changelog_key(&key);
                let h = OwnedHeaders::new().insert(text(headers::TXN, &txn_id));
                self.send(&changelog, Some(*p), Some(&k), value.as_deref(), h)?;
            }
        }
        self.fail_point("after_outputs");
        // Everything of this transaction is delivered before any marker exists: a marker
        // proves its transaction's outputs are in the log (what matters on brokers that
        // expose aborted records).
        let t_flush = Instant::now();
        self.flush()?;
        let flush_ms = t_flush.elapsed().as_millis() as u64;

        let mut offsets = TopicPartitionList::new();
        for tp in &touched {
            let Some(next) = self.positions.get(tp).and_then(|p| p.next) else { continue };
            let marker = Value::Record(vec![
                ("topic".into(), Value::String(tp.0.clone())),
                ("partition".into(), Value::Int(tp.1)),
                ("next_offset".into(), Value::Long(next)),
                ("txn".into(), Value::String(txn_id.clone())),
                ("instance".into(), Value::String(self.cfg.instance_id.clone())),
            ]);
            let bytes =
                self.codec.encode(&changelog, PROGRESS_MARKER_SCHEMA, &marker).map_err(|e| {
                    RuntimeError::Encode { topic: changelog.clone(), message: e.to_string() }
                })?;
            let k = state::marker_changelog_key(&tp.0);
            let h = OwnedHeaders::new().insert(text(headers::TXN, &txn_id));
            self.send(&changelog, Some(tp.1), Some(&k), Some(&bytes), h)?;
            offsets
                .add_partition_offset(&tp.0, tp.1, Offset::Offset(next))
                .map_err(|e| RuntimeError::kafka("offsets", e))?;
        }
        self.fail_point("after_markers");

        let group = consumer
            .group_metadata()
            .ok_or_else(|| RuntimeError::Config("consumer has no group metadata".into()))?;
        let t_offsets = Instant::now();
        retry_txn_call("send_offsets_to_transaction", || {
            self.producer.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)
        })?;
        let offsets_ms = t_offsets.elapsed().as_millis() as u64;
        let t_commit = Instant::now();
        retry_txn_call("commit_transaction", || self.producer.commit_transaction(TXN_TIMEOUT))?;
        let commit_ms = t_commit.elapsed().as_millis() as u64;

        let txn = self.txn.take().expect("checked above");
        for tp in &touched {
            if let Some(pos) = self.positions.get(tp) {
                self.committed.insert(tp.clone(), *pos);
            }
        }
        for (topic, n) in &txn.counts.inputs {
            self.metrics.records_in_n(topic, *n);
        }
        for (topic, n) in &txn.counts.outputs {
            self.metrics.records_out(topic, *n);
        }
        for ((topic, class), n) in &txn.counts.dead_lettered {
            for _ in 0..*n {
                self.metrics.dead_lettered(topic, class);
            }
        }
        for (topic, n) in &txn.counts.retried {
            for _ in 0..*n {
                self.metrics.retried(topic);
            }
        }
        self.metrics.txn_committed(started.elapsed());
        self.health.set_kafka(true, "transaction committed");
        self.backoff = Duration::ZERO;
        debug!(
            txn = %txn_id,
            records = txn.records,
            open_ms = txn.started.elapsed().as_millis() as u64,
            flush_ms,
            offsets_ms,
            commit_ms,
            "committed"
        );
        self.fail_point("after_commit");
        Ok(())
    }

    /// Waits until every produced record is acknowledged. rust-rdkafka's `flush` on a
    /// `ThreadedProducer` sleeps in 100 ms steps (its poll competes with the polling thread), which
    /// would add up to 100 ms to every commit; watching the out-queue length directly does not.
    fn flush(&self) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + TXN_TIMEOUT;
        let mut pause = Duration::from_micros(200);
        while self.producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                return Err(RuntimeError::kafka(
                    "flush",
                    KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Aborts the open transaction (if any) and rolls state back, without seeking.
    fn abort_quietly(&mut self, reason: &str) {
        if self.txn.take().is_some() {
            if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
                warn!(error = %e, "abort_transaction failed");
            }
            self.metrics.txn_aborted(reason);
        }
        for s in self.states.values_mut() {
            s.abort();
        }
        self.positions = self.committed.clone();
    }

    /// Applies the error classification after a failure in `handle` or `commit`. Returns the
    /// error when the processor must stop.
    fn recover(&mut self, consumer: &EngineConsumer<P>, err: RuntimeError) -> Option<RuntimeError> {
        let disposition = err.disposition();
        warn!(error = %err, ?disposition, "transaction failed");
        match disposition {
            Disposition::Stop | Disposition::DeadLetter | Disposition::Retry => {
                self.abort_quietly("stop");
                Some(err)
            }
            Disposition::AbortAndRewind | Disposition::Backoff => {
                self.abort_quietly("error");
                if disposition == Disposition::Backoff {
                    // Consecutive failures back off exponentially (capped); a commit resets it.
                    self.backoff = (self.backoff * 2)
                        .clamp(Duration::from_millis(100), Duration::from_secs(30));
                    std::thread::sleep(self.backoff);
                }
                self.rewind(consumer).err()
            }
            Disposition::RebuildProducer => {
                self.txn = None;
                self.metrics.txn_aborted("producer_rebuilt");
                for s in self.states.values_mut() {
                    s.abort();
                }
                self.positions = self.committed.clone();
                match new_producer(&self.cfg, &self.transactional_id) {
                    Ok(p) => {
                        self.producer = p;
                        self.nonce = rand::random();
                        self.rewind(consumer).err()
                    }
                    Err(e) => Some(e),
                }
            }
        }
    }

    /// Seeks every assigned partition back to its last committed position.
    fn rewind(&mut self, consumer: &EngineConsumer<P>) -> Result<(), RuntimeError> {
        for ((topic, partition), pos) in &self.committed {
            consumer
                .seek(topic, *partition, pos.as_offset(), Duration::from_secs(10))
                .map_err(|e| RuntimeError::kafka("seek", e))?;
        }
        Ok(())
    }

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

    fn drop_partitions(&mut self) {
        for p in self.states.keys() {
            self.processor.on_revoke(*p);
        }
        self.states.clear();
        self.positions.clear();
        self.committed.clear();
        self.paused.clear();
    }

    /// Restores state for every partition in `tpl` from the changelog and sets each
    /// topic-partition's start offset to what the changelog's last progress marker proves
    /// (falling back to the group's committed offset, then to the log start).
    fn restore_assignment(
        &mut self,
        consumer: &EngineConsumer<P>,
        tpl: &mut TopicPartitionList,
    ) -> Result<(), RuntimeError> {
        self.drop_partitions();
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
            .map_err(|e| RuntimeError::kafka("committed offsets", e))?;
        let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let mut markers: HashMap<(String, i32), i64> = HashMap::new();
        let mut hints: HashMap<(String, i32), i64> = HashMap::new();
        for p in partitions {
            let (mut state, m) =
                restore_partition(&self.cfg, &self.codec, &self.names.changelog, p)?;
            for (topic, next) in m {
                markers.insert((topic, p), next);
            }
            let reader = crate::reader::TopicReader::new(&self.cfg, &self.codec);
            let hint = self.processor.on_assign(p, &mut state, &reader).map_err(|e| {
                RuntimeError::Restore {
                    topic: self.names.changelog.clone(),
                    partition: p,
                    message: format!("processor restore: {e}"),
                }
            })?;
            for (logical, next) in hint {
                hints.insert((self.names.physical(&logical), p), next);
            }
            self.states.insert(p, state);
        }
        let elems: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        for (topic, partition) in elems {
            let from_marker = markers.get(&(topic.clone(), partition)).copied();
            let from_group =
                committed.find_partition(&topic, partition).and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            // Markers win: on a correct broker they equal the group offsets; on a broker that
            // exposes aborted transactions they are what the visible log proves.
            // A processor whose outputs prove more progress (its on_assign hint) moves the start
            // forward, never back.
            let from_outputs = hints.get(&(topic.clone(), partition)).copied();
            let next = match (from_marker.or(from_group), from_outputs) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let pos = Position { next };
            tpl.set_partition_offset(&topic, partition, pos.as_offset())
                .map_err(|e| RuntimeError::kafka("set start offset", e))?;
            debug!(%topic, partition, ?from_marker, ?from_group, ?from_outputs, "start position");
            self.positions.insert((topic.clone(), partition), pos);
            self.committed.insert((topic, partition), pos);
        }
        Ok(())
    }
}

/// Reads changelog partition `p` to its end and rebuilds the state it proves: state entries are
/// applied when a progress marker follows them; entries after the last marker belong to a
/// transaction that never committed and are dropped. Returns the state and, per input topic,
/// the next offset to process.
pub fn restore_partition(
    cfg: &RuntimeConfig,
    codec: &Codec,
    changelog: &str,
    partition: i32,
) -> Result<(StateView, HashMap<String, i64>), RuntimeError> {
    let restore_err = |message: String| RuntimeError::Restore {
        topic: changelog.to_string(),
        partition,
        message,
    };
    let reader: BaseConsumer<kafka::ReaderContext> = kafka::reader(cfg)
        .create_with_context(kafka::ReaderContext)
        .map_err(|e| RuntimeError::kafka("create restore reader", e))?;
    let (low, high) = reader
        .fetch_watermarks(changelog, partition, Duration::from_secs(10))
        .map_err(|e| RuntimeError::kafka("changelog watermarks", e))?;
    let mut state = StateView::new();
    let mut markers = HashMap::new();
    if high <= low {
        return Ok((state, markers));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(changelog, partition, Offset::Beginning)
        .map_err(|e| RuntimeError::kafka("restore assign", e))?;
    reader.assign(&tpl).map_err(|e| RuntimeError::kafka("restore assign", e))?;
    let mut pending: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut records = 0u64;
    loop {
        if Instant::now() > deadline {
            return Err(restore_err(format!("did not reach the end ({high}) within 120 s")));
        }
        match reader.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(RuntimeError::kafka("restore poll", e)),
            Some(Ok(m)) => {
                records += 1;
                let Some(key) = m.key() else { continue };
                match state::parse_changelog_key(key) {
                    Some(ChangelogKey::State(k)) => {
                        pending.push((k.to_vec(), m.payload().map(<[u8]>::to_vec)))
                    }
                    Some(ChangelogKey::Marker(topic)) => {
                        let payload = m.payload().unwrap_or_default();
                        let next = decode_marker(codec, payload).map_err(|e| {
                            restore_err(format!("marker at offset {}: {e}", m.offset()))
                        })?;
                        markers.insert(topic.to_string(), next);
                        for (k, v) in pending.drain(..) {
                            state.restore(k, v);
                        }
                    }
                    None => {
                        warn!(offset = m.offset(), "changelog record with a foreign key; ignored")
                    }
                }
            }
        }
    }
    if !pending.is_empty() {
        info!(
            changelog,
            partition,
            dropped = pending.len(),
            "dropped state entries of an uncommitted transaction"
        );
    }
    debug!(changelog, partition, records, keys = state.len(), "restored");
    Ok((state, markers))
}

/// Decodes a progress marker value and returns its `next_offset`.
pub fn decode_marker(codec: &Codec, payload: &[u8]) -> Result<i64, String> {
    let decoded = codec.decode(payload).map_err(|e| e.to_string())?;
    if decoded.schema_name != PROGRESS_MARKER_SCHEMA {
        return Err(format!("expected {PROGRESS_MARKER_SCHEMA}, got {}", decoded.schema_name));
    }
    match decoded.value {
        Value::Record(fields) => fields
            .into_iter()
            .find_map(|(n, v)| match (n.as_str(), v) {
                ("next_offset", Value::Long(o)) => Some(o),
                _ => None,
            })
            .ok_or_else(|| "marker has no next_offset".to_string()),
        other => Err(format!("marker is not a record: {other:?}")),
    }
}

/// Coordinates carried by a retry-topic record.
struct RetryInfo {
    topic: String,
    partition: i32,
    offset: i64,
    attempt: u32,
    not_before_ms: i64,
}

impl RetryInfo {
    fn from_message(msg: &BorrowedMessage<'_>, names: &TopicNames, logical: &str) -> Option<Self> {
        let base = names.input_of_retry(logical)?;
        let h = msg.headers()?;
        let get = |name: &str| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        };
        Some(RetryInfo {
            topic: get(headers::RETRY_TOPIC).unwrap_or_else(|| base.to_string()),
            partition: get(headers::RETRY_PARTITION)
                .and_then(|v| v.parse().ok())
                .unwrap_or(msg.partition()),
            offset: get(headers::RETRY_OFFSET).and_then(|v| v.parse().ok()).unwrap_or(msg.offset()),
            attempt: get(headers::RETRY_ATTEMPT).and_then(|v| v.parse().ok()).unwrap_or(2),
            not_before_ms: get(headers::RETRY_NOT_BEFORE).and_then(|v| v.parse().ok()).unwrap_or(0),
        })
    }
}

/// Maps a dynamic class string onto the fixed label set of the DLQ metric.
fn class_label(class: &str) -> &'static str {
    match class {
        "deserialization" => "deserialization",
        "validation" => "validation",
        "oversized" => "oversized",
        "encoding" => "encoding",
        "retries_exhausted" => "retries_exhausted",
        "not_ready" => "not_ready",
        _ => "other",
    }
}

fn text<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a [u8]> {
    Header { key, value: Some(value.as_bytes()) }
}

/// The input's headers minus the runtime's own (error/retry/source/txn headers are rewritten,
/// never accumulated).
fn original_headers(msg: &BorrowedMessage<'_>) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        for x in h.iter() {
            if x.key.starts_with("__evalstream.")
                || x.key == headers::SOURCE
                || x.key == headers::TXN
            {
                continue;
            }
            out = out.insert(Header { key: x.key, value: x.value });
        }
    }
    out
}

fn output_headers(out: &Output, source: &str, txn: &str, index: usize) -> OwnedHeaders {
    let mut h = OwnedHeaders::new()
        .insert(text(headers::SOURCE, source))
        .insert(text(headers::TXN, txn))
        .insert(text(headers::OUTPUT_INDEX, &index.to_string()));
    for (k, v) in &out.headers {
        h = h.insert(Header { key: k, value: Some(v.as_slice()) });
    }
    h
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProcessError;

    struct Nop;
    impl Processor for Nop {
        fn name(&self) -> &str {
            "nop"
        }
        fn inputs(&self) -> Vec<String> {
            vec!["a".into(), "b".into()]
        }
        fn process(&mut self, _: &Input<'_>, _: &mut Context<'_>) -> Result<(), ProcessError> {
            Ok(())
        }
    }

    #[test]
    fn topic_names_apply_prefix_and_derive_internal_topics() {
        let cfg = RuntimeConfig { topic_prefix: "t1.".into(), ..RuntimeConfig::default() };
        let n = TopicNames::new(&cfg, &Nop);
        assert_eq!(n.group, "t1.evalstream.nop");
        assert_eq!(n.changelog, "t1.evalstream.nop.changelog");
        assert_eq!(n.dlq("a"), "t1.a.dlq");
        assert_eq!(n.retry("a").as_deref(), Some("t1.a.retry"));
        assert_eq!(n.input_of_retry("b.retry"), Some("b"));
        assert_eq!(n.subscriptions(), vec!["t1.a", "t1.b", "t1.a.retry", "t1.b.retry"]);
        assert_eq!(n.logical("t1.a.retry"), "a.retry");
    }

    struct Named(&'static str, &'static str);
    impl Processor for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn inputs(&self) -> Vec<String> {
            vec![self.1.into()]
        }
        fn process(&mut self, _: &Input<'_>, _: &mut Context<'_>) -> Result<(), ProcessError> {
            Ok(())
        }
    }

    #[test]
    fn names_of_a_declared_processor_come_from_the_topology() {
        let cfg = RuntimeConfig { topic_prefix: "p.".into(), ..RuntimeConfig::default() };
        let n = TopicNames::new(&cfg, &Named("totals", "totals.input"));
        assert_eq!(n.group, "p.evalstream.totals");
        assert_eq!(n.changelog, "p.evalstream.totals.changelog");
        assert_eq!(n.retry("totals.input").as_deref(), Some("p.totals.input.retry"));
        // audit-chain declares no retry topic: none is subscribed or created.
        let a = TopicNames::new(&cfg, &Named("audit-chain", "audit.events"));
        assert_eq!(a.retry("audit.events"), None);
        assert_eq!(a.subscriptions(), vec!["p.audit.events"]);
        assert!(a.internal_topics().iter().all(|(t, _, _)| !t.ends_with(".retry")));
    }

    #[test]
    fn fail_point_parses() {
        std::env::set_var("EVALSTREAM_FAIL_AT", "after_markers:3");
        assert_eq!(
            FailPoint::from_env(),
            Some(FailPoint { point: "after_markers".into(), nth: 3 })
        );
        std::env::remove_var("EVALSTREAM_FAIL_AT");
    }
}
