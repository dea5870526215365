//! `evalstream bench`: throughput of the exactly-once runtime next to a raw pass-through.
//!
//! In one invocation, against the configured broker, over the same pre-produced records (1 KiB
//! `TotalsInput` values by default):
//!
//! * **raw pass-through** — an rdkafka consumer and a plain producer: consume → produce the same
//!   bytes, no transactions, no decoding, no processing (the ceiling the broker and client allow);
//! * **exactly-once** — the `totals` processor on the runtime: decode, keyed state, encode, DLQ
//!   routing, changelog, progress markers, transactional commit every `commit_interval_ms`.
//!
//! Each run uses fresh topics under a random prefix. Runs alternate (raw, eos, raw, eos, ...) so
//! that machine noise hits both alike; the report gives every run, the medians and the ratio of
//! medians (target: eos ≥ 0.7 × raw). This is a benchmark, not a test: it asserts nothing.

mod audit;
mod dispatch;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::engine::{self, EngineOptions};
use evalstream_runtime::kafka;
use evalstream_runtime::metrics::Metrics;
use evalstream_runtime::ops::Health;
use evalstream_totals::TotalsInput;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// The `totals` processor (exactly-once runtime) next to a raw pass-through.
    Totals,
    /// The `audit-chain` processor next to a raw pass-through of the same audit events.
    AuditChain,
    /// Offline chain verification (`audit verify`) next to a raw consume of the same range.
    AuditVerify,
    /// In-process cost per event of canonicalize + hash + Merkle append + encode (ns/event).
    AuditHash,
    /// In-process cost per record of the totals processor called directly next to through
    /// `Box<dyn Processor>` (how registered processors run).
    Dispatch,
}

/// Arguments of `evalstream bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which benchmark.
    #[arg(long, value_enum, default_value_t = Suite::Totals)]
    pub suite: Suite,
    /// Records per run.
    #[arg(long, default_value_t = 50_000)]
    pub records: u64,
    /// Approximate size of each record value in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Runs of each mode; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints the report.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.records > 0 && args.runs > 0, "--records and --runs must be positive");
    let base = RuntimeConfig::load(config)?;
    let codec = Codec::from_env()?;
    match args.suite {
        Suite::AuditHash => return audit::hash_cost(&codec, &args),
        Suite::Dispatch => return dispatch::dispatch_cost(&codec, &args),
        _ => {}
    }
    let (raw_name, eos_name) = match args.suite {
        Suite::AuditVerify => ("raw consume", "audit verify"),
        _ => ("raw pass-through", "exactly-once"),
    };
    let mut raw_rates = Vec::new();
    let mut eos_rates = Vec::new();
    for run in 0..args.runs {
        let (raw, eos) = match args.suite {
            Suite::Totals => {
                let raw = bench_raw(
                    &prepare(&base, &codec, &args, Input::Totals)?,
                    &args,
                    evalstream_totals::INPUT,
                )
                .context("raw pass-through run")?;
                let cfg = prepare(&base, &codec, &args, Input::Totals)?;
                let eos = bench_eos(
                    &cfg,
                    &codec,
                    &args,
                    evalstream_totals::INPUT,
                    "totals",
                    evalstream_totals::Totals,
                )
                .context("exactly-once run")?;
                (raw, eos)
            }
            Suite::AuditChain => {
                let raw =
                    bench_raw(&prepare(&base, &codec, &args, Input::Audit)?, &args, "audit.events")
                        .context("raw pass-through run")?;
                let cfg = prepare(&base, &codec, &args, Input::Audit)?;
                let eos = bench_eos(
                    &cfg,
                    &codec,
                    &args,
                    "audit.events",
                    "audit-chain",
                    audit::chain_processor(&cfg)?,
                )
                .context("audit-chain run")?;
                (raw, eos)
            }
            Suite::AuditVerify => audit::verify_rates(&base, &codec, &args)?,
            Suite::AuditHash | Suite::Dispatch => unreachable!("handled above"),
        };
        eprintln!("run {}: {raw_name:<17} {raw:>10.0} records/s", run + 1);
        eprintln!("run {}: {eos_name:<17} {eos:>10.0} records/s", run + 1);
        raw_rates.push(raw);
        eos_rates.push(eos);
    }
    let (raw_m, eos_m) = (median(&raw_rates), median(&eos_rates));
    let ratio = eos_m / raw_m;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "records": args.records, "record_bytes": args.record_bytes,
                "partitions": args.partitions, "runs": args.runs,
                "raw_records_per_s": raw_rates, "eos_records_per_s": eos_rates,
                "suite": format!("{:?}", args.suite),
                "raw_median": raw_m, "eos_median": eos_m, "ratio": ratio,
            })
        );
    } else {
        println!("records per run:        {}", args.records);
        println!("record size:            {} bytes", args.record_bytes);
        let target = if args.suite == Suite::AuditVerify { 0.8 } else { 0.7 };
        println!("suite:                  {:?}", args.suite);
        println!("{raw_name} median {raw_m:.0} records/s  (runs: {})", fmt_rates(&raw_rates));
        println!("{eos_name} median {eos_m:.0} records/s  (runs: {})", fmt_rates(&eos_rates));
        println!("ratio                   {ratio:.2}  (target >= {target:.2})");
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_rates(v: &[f64]) -> String {
    v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// What `prepare` fills the input topic with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// `totals.input` records (`TotalsInput` with a padding payload).
    Totals,
    /// `audit.events` records (`AuditEvent` with a JSON payload of about the record size).
    Audit,
}

/// Fresh topics under a random prefix, filled with `args.records` encoded inputs.
pub(crate) fn prepare(
    base: &RuntimeConfig,
    codec: &Codec,
    args: &Args,
    kind: Input,
) -> anyhow::Result<RuntimeConfig> {
    let mut cfg = base.clone();
    cfg.topic_prefix = format!("{}bench-{:08x}.", base.topic_prefix, rand::random::<u32>());
    cfg.instance_id = "bench".into();
    cfg.ops_listen = None;
    // A short session timeout keeps the group join (about half of it on our broker) short.
    cfg.session_timeout_ms = cfg.session_timeout_ms.min(6_000);
    let (input, output) = match kind {
        Input::Totals => {
            (cfg.topic(evalstream_totals::INPUT), cfg.topic(evalstream_totals::OUTPUT))
        }
        Input::Audit => (cfg.topic("audit.events"), cfg.topic("audit.chain")),
    };
    let topics = [input.clone(), output, cfg.topic("bench.passthrough")];
    let admin: AdminClient<DefaultClientContext> = kafka::base(&cfg).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, args.partitions, TopicReplication::Fixed(-1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for r in rt.block_on(admin.create_topics(&new, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    // Wait until every new topic shows all its partitions in the metadata, so the first
    // consumer does not race the creation (UnknownTopicOrPartition).
    let meta: BaseConsumer = kafka::base(&cfg).create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in &topics {
        loop {
            let md = meta.fetch_metadata(Some(t), Duration::from_secs(5))?;
            let ok = md.topics().first().is_some_and(|x| {
                x.error().is_none() && x.partitions().len() == args.partitions as usize
            });
            if ok {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "topic {t} did not appear within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka::plain_producer(&cfg).set("linger.ms", "20").set("batch.size", "1000000").create()?;
    let filler = "x".repeat(args.record_bytes.saturating_sub(40));
    for i in 0..args.records {
        let key = format!("key-{}", i % 10_000);
        let bytes = match kind {
            Input::Totals => codec.encode_record(
                &input,
                &TotalsInput {
                    key: key.clone(),
                    amount: (i % 100) as i64,
                    payload: filler.clone(),
                },
            )?,
            Input::Audit => codec.encode_record(&input, &audit::event(i, &filler))?,
        };
        let mut rec = BaseRecord::<[u8], [u8]>::to(&input).key(key.as_bytes()).payload(&bytes);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(cfg)
}

/// Raw consume → produce of the same bytes; returns records/s.
fn bench_raw(cfg: &RuntimeConfig, args: &Args, input: &str) -> anyhow::Result<f64> {
    let cfg = cfg.clone();
    let input = cfg.topic(input);
    let output = cfg.topic("bench.passthrough");
    let consumer: BaseConsumer = kafka::base(&cfg)
        .set("group.id", format!("{}bench-raw", cfg.topic_prefix))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.partitions {
        tpl.add_partition_offset(&input, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka::plain_producer(&cfg).create()?;
    // The clock starts at the first record, as for the exactly-once run (which excludes its
    // group join): both rates measure steady-state streaming.
    let mut started = None;
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < args.records {
        anyhow::ensure!(Instant::now() < deadline, "raw pass-through did not finish in 600 s");
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            // A just-created topic can be in the metadata before the broker serves fetches
            // for it (seen on our local broker): transient, poll again.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => continue,
            Some(m) => m?,
        };
        started.get_or_insert_with(Instant::now);
        let mut rec = BaseRecord::<[u8], [u8]>::to(&output);
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if let Some(v) = m.payload() {
            rec = rec.payload(v);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        n += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// The totals processor on the exactly-once runtime; returns records/s until every input is
/// committed.
fn bench_eos<P: evalstream_runtime::processor::Processor>(
    cfg: &RuntimeConfig,
    codec: &Codec,
    args: &Args,
    input: &str,
    name: &str,
    processor: P,
) -> anyhow::Result<f64> {
    let input = cfg.topic(input);
    let group = cfg.group_for(name);
    let shutdown = Arc::new(AtomicBool::new(false));
    let opts = EngineOptions {
        config: cfg.clone(),
        codec: codec.clone(),
        metrics: Metrics::new(name),
        health: Health::new(name),
        shutdown: shutdown.clone(),
        fail_point: None,
    };
    let handle = engine::spawn(processor, opts)?;
    let watcher: BaseConsumer = kafka::base(cfg).set("group.id", &group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.partitions {
        tpl.add_partition(&input, p);
    }
    // The clock starts when the first transaction has committed (the group join is excluded,
    // and so are the records of that first transaction, so the rate is steady-state).
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, u64)> = None;
    let (elapsed, counted) = loop {
        anyhow::ensure!(Instant::now() < deadline, "exactly-once run did not finish in 600 s");
        anyhow::ensure!(!handle.is_finished(), "the engine stopped during the benchmark");
        std::thread::sleep(Duration::from_millis(20));
        let committed = watcher.committed_offsets(tpl.clone(), Duration::from_secs(10))?;
        let done: i64 = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        let done = done as u64;
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= args.records {
            let (t0, n0) = first.expect("set above");
            break (t0.elapsed(), done - n0);
        }
    };
    shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
    handle.join().map_err(|_| anyhow::anyhow!("engine thread panicked"))??;
    anyhow::ensure!(
        counted > 0,
        "everything committed in the first transaction; use more --records"
    );
    Ok(counted as f64 / elapsed.as_secs_f64())
}
