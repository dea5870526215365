//! `evalstream produce <topic> --file events.jsonl`: encode JSON lines with the topic's schema and
//! produce them. This is how people, scripts and our own tests put events on topics.
//!
//! ```text
//!   lines ─► LineParser (bare | envelope, see jsonl.rs) ─► Codec::encode_json(topic schema)
//!                 │ bad line: "line N: reason" on stderr          │
//!                 ▼                                               ▼
//!   default:  produce every good line as it is read (idempotent producer), exit 1 if any was bad
//!   --atomic: validate + encode the WHOLE input first; any bad line → nothing is produced;
//!             otherwise one transaction holds every record: all of them commit or none does
//! ```
//!
//! Why `--atomic` encodes everything before it begins the transaction (rather than aborting on
//! the first bad line): an abort is only "nothing produced" on a broker that hides aborted records
//! from `read_committed` readers. Our development broker (Tansu) does not, so the only reliable
//! way to produce nothing is never to send. An abort is still the answer to a failed *commit*.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka;
use evalstream_runtime::topology::Topology;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::common::{load_config, owned_headers, partition_ids, send_blocking, HeaderList};
use super::jsonl::{InputRecord, LineError, LineParser};

/// How long to wait for outstanding deliveries, and for each transaction call, before giving up.
/// librdkafka's own `message.timeout.ms` (300 s) is longer; an operator would rather hear about an
/// unreachable broker sooner.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Arguments of `evalstream produce`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Topic to produce to (logical name; the configured `topic_prefix` is added).
    pub topic: String,
    /// JSON-lines input file, or `-` for standard input. Blank lines and `#` comments are skipped.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Record key: this field of each event (dotted path for nested fields, e.g. `subject.id`).
    /// With `--envelope` it applies only to lines that have no `key`.
    #[arg(long)]
    pub key_field: Option<String>,
    /// Each line is `{"key": ..., "value": {...}, "headers": {...}}` instead of a bare event; the
    /// output of `evalstream consume --format json` is accepted as such.
    #[arg(long)]
    pub envelope: bool,
    /// All lines in one transaction, or nothing at all: any bad line means nothing is produced.
    #[arg(long)]
    pub atomic: bool,
    /// Avro schema (full name) to encode with, instead of the topic's schema from the topology.
    #[arg(long)]
    pub schema: Option<String>,
    /// Topology file to look the topic's schema up in (default: the bundled topology).
    #[arg(long)]
    pub topology: Option<PathBuf>,
}

/// Runs `evalstream produce`. Exit code 0 when every line was produced, 1 otherwise.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    let schema = resolve_schema(&args)?;
    let codec = Codec::from_env().context("loading schemas")?;
    if codec.store().schema(&schema).is_none() {
        bail!("unknown schema {schema} (not in schemas/)");
    }
    let topic = cfg.topic(&args.topic);
    let parser = LineParser::new(args.envelope, args.key_field.clone(), schema.clone());
    let input = open_input(&args.file)?;
    let encoder = Encoder { codec: &codec, topic: &topic, schema: &schema, parser: &parser };
    let summary = if args.atomic {
        produce_atomic(&cfg, &topic, input, &encoder)?
    } else {
        produce_streaming(&cfg, &topic, input, &encoder)?
    };
    println!("{summary}");
    Ok(if summary.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `--schema`, else the topology's schema for the topic; raw and unknown topics are refused with
/// the reason, because producing unencoded JSON to an Avro topic would poison its consumers.
fn resolve_schema(args: &Args) -> anyhow::Result<String> {
    if let Some(s) = &args.schema {
        return Ok(s.clone());
    }
    let topology = match &args.topology {
        Some(path) => Topology::load(path)?,
        None => Topology::bundled()?,
    };
    match topology.schema_for_topic(&args.topic) {
        Some(s) => Ok(s.to_string()),
        None if topology.topic(&args.topic).is_some() => bail!(
            "topic {} carries raw bytes (no schema in the topology); produce encodes events with \
             a schema: pass --schema NAME if you really mean to",
            args.topic
        ),
        None => bail!(
            "topic {} is not in the topology; pass --schema NAME (or --topology FILE)",
            args.topic
        ),
    }
}

fn open_input(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(BufReader::new(f)))
}

/// Parsing and encoding of one line: the part of producing that needs no broker.
struct Encoder<'a> {
    codec: &'a Codec,
    topic: &'a str,
    schema: &'a str,
    parser: &'a LineParser,
}

/// A line ready to send.
struct Encoded {
    line: usize,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: HeaderList,
}

impl Encoder<'_> {
    fn encode(&self, line: usize, raw: &[u8]) -> Result<Option<Encoded>, LineError> {
        let Some(InputRecord { key, value, headers }) = self.parser.parse(raw)? else {
            return Ok(None);
        };
        let bytes = self
            .codec
            .encode_json(self.topic, self.schema, &value)
            .map_err(|e| LineError::Encode(e.to_string()))?;
        Ok(Some(Encoded { line, key, value: bytes, headers }))
    }
}

/// Calls `f(line_number, bytes)` for every physical line, without its line terminator.
fn for_each_line(
    mut input: impl BufRead,
    mut f: impl FnMut(usize, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf).context("reading input")? == 0 {
            return Ok(());
        }
        n += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        f(n, line)?;
    }
}

/// What happened, printed as the last line of output.
#[derive(Debug, Default)]
struct Summary {
    topic: String,
    produced: u64,
    rejected: u64,
    failed: u64,
    atomic_aborted: bool,
}

impl Summary {
    fn ok(&self) -> bool {
        self.rejected == 0 && self.failed == 0 && !self.atomic_aborted
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "produced {} record(s) to {}", self.produced, self.topic)?;
        write!(f, ", rejected {} line(s)", self.rejected)?;
        if self.failed > 0 {
            write!(f, ", {} delivery failure(s)", self.failed)?;
        }
        if self.atomic_aborted {
            write!(f, " (--atomic: nothing produced)")?;
        }
        Ok(())
    }
}

/// Counts deliveries and reports failures by line number. Delivery reports arrive on the thread
/// that polls the producer, which is always ours.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: Mutex<Vec<(usize, String)>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, line: usize) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                if let Ok(mut f) = self.failed.lock() {
                    f.push((line, e.to_string()));
                }
            }
        }
    }
}

impl Deliveries {
    /// Prints and drains the failures reported so far; returns how many there were.
    fn report_failures(&self) -> u64 {
        let Ok(mut failed) = self.failed.lock() else { return 0 };
        for (line, e) in failed.iter() {
            eprintln!("line {line}: delivery failed: {e}");
        }
        let n = failed.len() as u64;
        failed.clear();
        n
    }
}

fn create_producer(
    cfg: &RuntimeConfig,
    topic: &str,
    transactional_id: Option<&str>,
) -> anyhow::Result<BaseProducer<Deliveries>> {
    let mut client_config = match transactional_id {
        Some(id) => kafka::transactional_producer(cfg, id),
        None => kafka::plain_producer(cfg),
    };
    // A typo in a topic name must not create a topic with the broker's default partition count
    // (breaking co-partitioning); topics come from `evalstream topology apply`.
    client_config.set("allow.auto.create.topics", "false");
    let producer: BaseProducer<Deliveries> = client_config
        .create_with_context(Deliveries::default())
        .context("creating the producer")?;
    // Fail early and clearly instead of with one delivery timeout per line.
    if partition_ids(producer.client(), topic)?.is_none() {
        bail!("topic {topic} does not exist (create it with `evalstream topology apply`)");
    }
    Ok(producer)
}

/// Enqueues one record. The error is the line's.
fn send(producer: &BaseProducer<Deliveries>, topic: &str, rec: &Encoded) -> Result<(), KafkaError> {
    let mut record = BaseRecord::with_opaque_to(topic, rec.line).payload(&rec.value[..]);
    if let Some(h) = owned_headers(&rec.headers) {
        record = record.headers(h);
    }
    if let Some(k) = &rec.key {
        record = record.key(&k[..]);
    }
    send_blocking(producer, record)
}

/// Default mode: every good line is produced as it is read, so a large input streams through.
fn produce_streaming(
    cfg: &RuntimeConfig,
    topic: &str,
    input: impl BufRead,
    encoder: &Encoder<'_>,
) -> anyhow::Result<Summary> {
    let producer = create_producer(cfg, topic, None)?;
    let mut summary = Summary { topic: topic.to_string(), ..Summary::default() };
    for_each_line(input, |n, raw| {
        match encoder.encode(n, raw) {
            Ok(None) => {}
            Ok(Some(rec)) => {
                if let Err(e) = send(&producer, topic, &rec) {
                    eprintln!("line {n}: {e}");
                    summary.failed += 1;
                }
            }
            Err(e) => {
                eprintln!("line {n}: {e}");
                summary.rejected += 1;
            }
        }
        Ok(())
    })?;
    let flushed = producer.flush(DELIVERY_TIMEOUT);
    summary.failed += producer.context().report_failures();
    summary.produced = producer.context().delivered.load(Ordering::Relaxed);
    if let Err(e) = flushed {
        let pending = producer.in_flight_count();
        eprintln!("evalstream: {pending} record(s) not confirmed by the broker: {e}");
        summary.failed += u64::try_from(pending).unwrap_or(0);
    }
    Ok(summary)
}

/// `--atomic`: encode everything, then one transaction, or nothing.
fn produce_atomic(
    cfg: &RuntimeConfig,
    topic: &str,
    input: impl BufRead,
    encoder: &Encoder<'_>,
) -> anyhow::Result<Summary> {
    let mut records = Vec::new();
    let mut summary = Summary { topic: topic.to_string(), ..Summary::default() };
    for_each_line(input, |n, raw| {
        match encoder.encode(n, raw) {
            Ok(Some(rec)) => records.push(rec),
            Ok(None) => {}
            Err(e) => {
                eprintln!("line {n}: {e}");
                summary.rejected += 1;
            }
        }
        Ok(())
    })?;
    if summary.rejected > 0 {
        summary.atomic_aborted = true;
        return Ok(summary);
    }
    if records.is_empty() {
        return Ok(summary);
    }
    // A fresh transactional id per run: two operators producing files at once must not fence
    // each other, and a run never needs to recover another run's transaction.
    let txn_id = format!("evalstream-produce-{:016x}", rand::random::<u64>());
    let producer = create_producer(cfg, topic, Some(&txn_id))?;
    producer.init_transactions(DELIVERY_TIMEOUT).context("initialising the transaction")?;
    producer.begin_transaction().context("beginning the transaction")?;
    let outcome = records
        .iter()
        .try_for_each(|rec| {
            send(&producer, topic, rec).map_err(|e| anyhow::anyhow!("line {}: {e}", rec.line))
        })
        .and_then(|()| {
            producer.commit_transaction(DELIVERY_TIMEOUT).context("committing the transaction")
        });
    match outcome {
        Ok(()) => {
            summary.produced = records.len() as u64;
            Ok(summary)
        }
        Err(e) => {
            producer.context().report_failures();
            let abort = producer.abort_transaction(DELIVERY_TIMEOUT);
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "evalstream: {e:#}");
            match abort {
                Ok(()) => {
                    let _ = writeln!(err, "evalstream: transaction aborted");
                }
                Err(a) => {
                    let _ = writeln!(err, "evalstream: aborting the transaction failed too: {a}");
                }
            }
            summary.failed = records.len() as u64;
            summary.atomic_aborted = true;
            Ok(summary)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_physically_and_terminators_stripped() {
        let input = b"a\r\n\nb\nc" as &[u8];
        let mut seen = Vec::new();
        for_each_line(input, |n, l| {
            seen.push((n, l.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![(1, b"a".to_vec()), (2, b"".to_vec()), (3, b"b".to_vec()), (4, b"c".to_vec())]
        );
    }

    #[test]
    fn summary_reads_well() {
        let s = Summary { topic: "t".into(), produced: 3, rejected: 1, ..Summary::default() };
        assert_eq!(s.to_string(), "produced 3 record(s) to t, rejected 1 line(s)");
        assert!(!s.ok());
        let s =
            Summary { topic: "t".into(), rejected: 2, atomic_aborted: true, ..Summary::default() };
        assert_eq!(
            s.to_string(),
            "produced 0 record(s) to t, rejected 2 line(s) (--atomic: nothing produced)"
        );
    }

    #[test]
    fn schema_comes_from_the_topology_or_the_flag() {
        let mut args = Args {
            topic: "eval.submissions".into(),
            file: "-".into(),
            key_field: None,
            envelope: false,
            atomic: false,
            schema: None,
            topology: None,
        };
        let s = resolve_schema(&args).unwrap();
        assert!(!s.is_empty());
        args.topic = "eval.submissions.dlq".into();
        assert!(resolve_schema(&args).unwrap_err().to_string().contains("raw bytes"));
        args.topic = "no.such.topic".into();
        assert!(resolve_schema(&args).unwrap_err().to_string().contains("not in the topology"));
        args.schema = Some("x.Y".into());
        assert_eq!(resolve_schema(&args).unwrap(), "x.Y");
    }
}
