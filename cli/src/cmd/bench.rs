//! `evalstream bench`: throughput, latency and resources of the exactly-once runtime next to a
//! raw pass-through and, optionally, Kafka Streams, measured side by side in one invocation.
//!
//! ```text
//!  prepare: fresh topics under a random prefix, input pre-filled once (1 KiB TotalsInput)
//!  runs (alternating: raw, evalstream, peer, raw, evalstream, peer, ...), each a child process
//!    raw pass-through   `evalstream bench --suite passthrough`: consume → produce the same bytes
//!    evalstream         `evalstream run totals` (exactly-once, 100 ms commits, a fresh group)
//!    kafka-streams      `java ... TotalsStreams` (exactly_once_v2, 100 ms commits, cache off)
//!  each run: records/s from an outside observer (committed group offsets, or the output's end
//!    offsets for raw), from the first visible progress to the last record; peak RSS (VmHWM) and
//!    CPU seconds from /proc/<pid>; outputs checked by an independent read_committed reader
//!  latency: a separate run per system, input produced at half its median rate, input timestamp
//!    → output visible to a read_committed reader, p50/p99
//!  report: every run, medians, ratios of medians, and issue 8's targets with pass/fail
//! ```
//!
//! Runs alternate so that machine noise hits every side alike; every figure is a ratio of
//! medians measured in the same invocation. This is a benchmark, not a test: it asserts nothing
//! about speed (it does fail when a system's outputs are wrong). `docs/performance.md` explains
//! the method and holds the latest figures.

mod audit;
mod dispatch;
mod latency;
mod peer;
mod proc;
mod progress;
mod report;
mod restore;
mod totals;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// The `totals` processor (exactly-once runtime) next to a raw pass-through (and `--peer`).
    Totals,
    /// The `audit-chain` processor next to a raw pass-through of the same audit events; counts
    /// KMS Sign calls per checkpoint when a KMS endpoint (moto) is given.
    AuditChain,
    /// Offline chain verification (`audit verify`) next to a raw consume of the same range.
    AuditVerify,
    /// In-process cost per event of canonicalize + hash + Merkle append + encode (ns/event).
    AuditHash,
    /// Restore of a changelog (`--records` keys, default 1M) next to a raw consume of it.
    Restore,
    /// In-process cost per record of the totals processor called directly next to through
    /// `Box<dyn Processor>` (how registered processors run).
    Dispatch,
    /// Internal: the raw pass-through worker the other suites start as a child process.
    #[value(hide = true)]
    Passthrough,
}

/// A peer system to run next to evalstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Kafka Streams 4.4 (bench/peers/kafka-streams), exactly_once_v2.
    KafkaStreams,
}

/// Arguments of `evalstream bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Which benchmark.
    #[arg(long, value_enum, default_value_t = Suite::Totals)]
    pub suite: Suite,
    /// Records per run (default 200000 for totals and audit-chain, 50000 for the others;
    /// restore: keys in the changelog, default 1000000).
    #[arg(long)]
    pub records: Option<u64>,
    /// Approximate size of each record value in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Runs of each mode; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Run this peer too (totals suite).
    #[arg(long, value_enum)]
    pub peer: Option<Peer>,
    /// Length of each latency run in seconds (totals suite; 0 skips the latency runs).
    #[arg(long, default_value_t = 10.0)]
    pub latency_seconds: f64,
    /// Input rate of the latency runs, records/s (default: half of each system's median rate).
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// JVM heap of the Kafka Streams peer (`-Xmx`).
    #[arg(long, default_value = "512m")]
    pub peer_heap: String,
    /// Directory of the Kafka Streams peer (default: bench/peers/kafka-streams of this checkout).
    #[arg(long)]
    pub peer_dir: Option<PathBuf>,
    /// AWS KMS endpoint (moto) for the audit-chain suite: checkpoints are signed by a KMS key
    /// created there and Sign calls are counted from moto's request recorder. Without it a
    /// local key signs and KMS calls are not counted.
    #[arg(long, env = "EVALSTREAM_BENCH_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// Where the child processes' logs go (default: a new directory under the temp dir).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Internal (passthrough worker): input topic.
    #[arg(long, hide = true)]
    pub from_topic: Option<String>,
    /// Internal (passthrough worker): output topic.
    #[arg(long, hide = true)]
    pub to_topic: Option<String>,
}

impl Args {
    /// Records per run for this suite.
    pub(crate) fn records(&self) -> u64 {
        self.records.unwrap_or(match self.suite {
            Suite::Restore => 1_000_000,
            // At 200 000-250 000 records/s, 50 000 records were a window of 0.2-0.25 s: about ten
            // observations of the 20 ms progress probe, a coarse clock for a rate.
            Suite::Totals | Suite::AuditChain => 200_000,
            _ => 50_000,
        })
    }
}

/// Runs the benchmark and prints the report.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.records() > 0 && args.runs > 0, "--records and --runs must be positive");
    let base = RuntimeConfig::load(config)?;
    let codec = Codec::from_env()?;
    let ctx = Ctx::new(config, &args)?;
    let report = match args.suite {
        Suite::Passthrough => return passthrough_worker(&base, &args),
        Suite::AuditHash => return audit::hash_cost(&codec, &args),
        Suite::Dispatch => return dispatch::dispatch_cost(&codec, &args),
        Suite::Totals => totals::run(&ctx, &base, &codec, &args)?,
        Suite::AuditChain => audit::chain(&ctx, &base, &codec, &args)?,
        Suite::AuditVerify => audit::verify(&ctx, &base, &codec, &args)?,
        Suite::Restore => restore::run(&base, &codec, &args)?,
    };
    report.print(&args, &ctx);
    Ok(ExitCode::SUCCESS)
}

/// What every child-process run needs: the binary, the config file, the log directory.
pub(crate) struct Ctx {
    /// This binary (children run `evalstream run <processor>` from it).
    pub exe: PathBuf,
    /// `--config`, passed on to children.
    pub config: Option<PathBuf>,
    /// Where children's stdout/stderr go.
    pub log_dir: PathBuf,
}

impl Ctx {
    fn new(config: Option<&Path>, args: &Args) -> anyhow::Result<Ctx> {
        let log_dir = match &args.log_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("evalstream-bench-{}", std::process::id())),
        };
        if !matches!(args.suite, Suite::Passthrough | Suite::AuditHash | Suite::Dispatch) {
            std::fs::create_dir_all(&log_dir)
                .with_context(|| format!("creating {}", log_dir.display()))?;
        }
        Ok(Ctx {
            exe: std::env::current_exe().context("locating the evalstream binary")?,
            config: config.map(Path::to_path_buf),
            log_dir,
        })
    }

    /// Creates `processor`'s internal topics (changelog, DLQ, retry) for consumer group `group`
    /// the way the engine does, and waits for their partition leaders. The engine would create
    /// them itself, but its restore reads the changelog's watermarks right after creating it
    /// and stops on the NotLeaderForPartition a just-created topic can answer (seen on Apache
    /// Kafka 4.4 under load); creating them here keeps that start-up race out of the benchmark.
    pub(crate) fn ensure_internal_topics<P: evalstream_runtime::processor::Processor>(
        &self,
        processor: &P,
        cfg: &RuntimeConfig,
        group: &str,
        partitions: i32,
    ) -> anyhow::Result<()> {
        let mut cfg = cfg.clone();
        cfg.group_id = Some(group.to_string());
        let names = evalstream_runtime::engine::TopicNames::new(&cfg, processor);
        evalstream_runtime::engine::ensure_internal_topics(&cfg, &names)?;
        wait_for_leaders(&cfg, std::slice::from_ref(&names.changelog), partitions)
    }

    /// `evalstream run <processor>` under `cfg`'s prefix, in consumer group `group`.
    pub(crate) fn processor_command(
        &self,
        processor: &str,
        cfg: &RuntimeConfig,
        group: &str,
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.exe);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(["run", processor])
            .env("KAFKA_BOOTSTRAP_SERVERS", &cfg.bootstrap_servers)
            .env("EVALSTREAM_TOPIC_PREFIX", &cfg.topic_prefix)
            .env("EVALSTREAM_GROUP_ID", group)
            .env("EVALSTREAM_INSTANCE_ID", "bench")
            .env("EVALSTREAM_OPS_LISTEN", "off")
            // A short session timeout keeps the group join (about half of it on some brokers)
            // short; it is outside the measured window anyway.
            .env("EVALSTREAM_SESSION_TIMEOUT_MS", cfg.session_timeout_ms.min(6_000).to_string())
            .env(
                "EVALSTREAM_LOG",
                std::env::var("EVALSTREAM_BENCH_CHILD_LOG").unwrap_or("warn".into()),
            )
            .env("EVALSTREAM_LOG_FORMAT", "text")
            .env_remove("EVALSTREAM_FAIL_AT");
        cmd
    }

    /// The raw pass-through worker from `from` to `to`, stopping after `records`.
    pub(crate) fn passthrough_command(
        &self,
        cfg: &RuntimeConfig,
        from: &str,
        to: &str,
        records: u64,
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.exe);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(["bench", "--suite", "passthrough", "--records", &records.to_string()])
            .args(["--from-topic", from, "--to-topic", to])
            .env("KAFKA_BOOTSTRAP_SERVERS", &cfg.bootstrap_servers)
            .env("EVALSTREAM_LOG", "warn");
        cmd
    }

    /// A log file for one child.
    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }
}

pub(crate) fn fmt_rates(v: &[f64]) -> String {
    v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
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

/// Distinct keys of the generated totals input (`key-0` .. `key-9999`).
pub(crate) const TOTALS_KEYS: u64 = 10_000;

/// Key and amount of generated totals input record `i`.
pub(crate) fn totals_input(i: u64) -> (String, i64) {
    (format!("key-{}", i % TOTALS_KEYS), (i % 100) as i64)
}

/// Deletes every topic under `cfg`'s prefix when dropped: the benchmark's inputs, outputs,
/// changelogs and the peer's internal topics (all named under the prefix). A suite writes
/// hundreds of MiB per invocation; left behind, repeated runs fill the broker's disk.
pub(crate) struct Topics {
    cfg: RuntimeConfig,
}

impl Topics {
    /// Owns the topics under `cfg`'s prefix.
    pub(crate) fn under(cfg: &RuntimeConfig) -> Topics {
        Topics { cfg: cfg.clone() }
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        if let Err(e) = delete_prefixed(&self.cfg) {
            eprintln!("could not delete the benchmark's topics {}*: {e:#}", self.cfg.topic_prefix);
        }
    }
}

fn delete_prefixed(cfg: &RuntimeConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        cfg.topic_prefix.contains("bench-"),
        "refusing to delete outside a bench prefix"
    );
    crate::cmd::common::delete_prefixed(cfg).map(drop)
}

/// A config under a fresh random topic prefix (`bench-<hex>.`).
pub(crate) fn fresh(base: &RuntimeConfig) -> RuntimeConfig {
    let mut cfg = base.clone();
    cfg.topic_prefix = format!("{}bench-{:08x}.", base.topic_prefix, rand::random::<u32>());
    cfg.instance_id = "bench".into();
    cfg.ops_listen = None;
    cfg.session_timeout_ms = cfg.session_timeout_ms.min(6_000);
    cfg
}

/// Creates `topics` (physical names) with `partitions` each and waits until the metadata shows
/// all their partitions, so that the first client does not race the creation.
pub(crate) fn create_topics(
    cfg: &RuntimeConfig,
    topics: &[String],
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka::base(cfg).create()?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(-1))).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for r in rt.block_on(admin.create_topics(&new, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    wait_for_leaders(cfg, topics, partitions)
}

/// Waits until the metadata shows every partition of `topics` with an elected leader.
pub(crate) fn wait_for_leaders(
    cfg: &RuntimeConfig,
    topics: &[String],
    partitions: i32,
) -> anyhow::Result<()> {
    let meta: BaseConsumer = kafka::base(cfg).create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in topics {
        loop {
            let md = meta.fetch_metadata(Some(t), Duration::from_secs(5))?;
            // Every partition listed with an elected leader: before that, fetches and
            // watermark queries answer NotLeaderForPartition.
            let ok = md.topics().first().is_some_and(|x| {
                x.error().is_none()
                    && x.partitions().len() == partitions as usize
                    && x.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0)
            });
            if ok {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "topic {t} did not appear within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Encoded input record `i` of `kind` for topic `input`: (key, value bytes).
pub(crate) fn input_record(
    codec: &Codec,
    kind: Input,
    input: &str,
    i: u64,
    filler: &str,
) -> anyhow::Result<(String, Vec<u8>)> {
    Ok(match kind {
        Input::Totals => {
            let (key, amount) = totals_input(i);
            let value = evalstream_totals::TotalsInput {
                key: key.clone(),
                amount,
                payload: filler.to_string(),
            };
            (key, codec.encode_record(input, &value)?)
        }
        Input::Audit => (
            format!("key-{}", i % TOTALS_KEYS),
            codec.encode_record(input, &audit::event(i, filler))?,
        ),
    })
}

/// Fresh topics under a random prefix: the input (filled with `args.records()` encoded inputs)
/// and the processor's output.
pub(crate) fn prepare(
    base: &RuntimeConfig,
    codec: &Codec,
    args: &Args,
    kind: Input,
) -> anyhow::Result<RuntimeConfig> {
    let cfg = fresh(base);
    let (input, output) = match kind {
        Input::Totals => {
            (cfg.topic(evalstream_totals::INPUT), cfg.topic(evalstream_totals::OUTPUT))
        }
        Input::Audit => (cfg.topic("audit.events"), cfg.topic("audit.chain")),
    };
    create_topics(&cfg, &[input.clone(), output], args.partitions)?;
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka::plain_producer(&cfg).set("linger.ms", "20").set("batch.size", "1000000").create()?;
    let filler = "x".repeat(args.record_bytes.saturating_sub(40));
    for i in 0..args.records() {
        let (key, bytes) = input_record(codec, kind, &input, i, &filler)?;
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

/// The raw pass-through worker (`--suite passthrough`, started by the other suites as a child):
/// consumes `--from-topic` from the beginning and produces the same key and value bytes to
/// `--to-topic`, no transactions, no decoding; after `--records` records it flushes and waits
/// to be stopped. The benchmark times it from outside (the output's end offsets).
fn passthrough_worker(base: &RuntimeConfig, args: &Args) -> anyhow::Result<ExitCode> {
    use rdkafka::message::Message;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let (Some(from), Some(to)) = (&args.from_topic, &args.to_topic) else {
        anyhow::bail!("--suite passthrough needs --from-topic and --to-topic");
    };
    let consumer: BaseConsumer = kafka::base(base)
        .set("group.id", format!("{from}.bench-raw"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let md = consumer.fetch_metadata(Some(from), Duration::from_secs(10))?;
    let partitions = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    anyhow::ensure!(partitions > 0, "{from} does not exist");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(from, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka::plain_producer(base).create()?;
    let mut n = 0u64;
    while n < args.records() {
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            // A just-created topic can be in the metadata before the broker serves fetches for
            // it: transient, poll again.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => continue,
            Some(m) => m?,
        };
        let mut rec = BaseRecord::<[u8], [u8]>::to(to);
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if let Some(v) = m.payload() {
            rec = rec.payload(v);
        }
        // The input's timestamp travels with the copy, as a mirror keeps it: the latency suite
        // measures input timestamp → output visible from it.
        if let Some(ts) = m.timestamp().to_millis() {
            rec = rec.timestamp(ts);
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
    // Stay alive until the benchmark stops us (it reads our resources before it does).
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
