//! `evalstream dlq list|requeue <topic>`: see what was dead-lettered and why, and put records
//! back on their original topic exactly once.
//!
//! A DLQ record (written by the runtime, see `evalstream_runtime::headers`) is the original key
//! and value bytes, the original headers, and `__evalstream.errors.*` headers saying where it came
//! from and why. `<topic>` may be given as `T` or `T.dlq`; the DLQ of `T` is `T.dlq`.
//!
//! ## Requeue, exactly once
//!
//! ```text
//!   init_transactions(id = "evalstream-dlq-requeue-<dlq topic>")   fences any other requeue run
//!        │                                                         of this DLQ, and settles its
//!        ▼                                                         open transaction first
//!   read ledger <dlq topic>.requeued (compacted, key = "<dlq topic>/<p>/<o>")  → already done
//!   read <dlq topic>, select (--offset / --class / --all), drop what the ledger has
//!        │
//!        ▼  per batch, ONE transaction:
//!   original topic ◄── key, value, original headers − error headers + __evalstream.requeued.from
//!   ledger         ◄── "<dlq topic>/<p>/<o>" → {"topic": ..., "partition": ...}
//!   commit
//! ```
//!
//! Why a ledger and not, say, consumer-group offsets: requeues are selective (by offset or class),
//! so "how far did we get" is a set, not a position. Why the record and its ledger entry share a
//! transaction: on a correct broker both become visible or neither does, so a re-run skips exactly
//! what was requeued. Our development broker (Tansu) shows aborted records to `read_committed`
//! readers; there an aborted requeue's record *and* its ledger entry are both visible, so the
//! ledger still agrees with the topic and nothing is requeued twice. Why a fixed transactional id:
//! two concurrent runs of the same DLQ fence each other (the older one's commit fails), instead of
//! both reading the same ledger and both requeuing. Deleting a ledger key (a tombstone) lets an
//! operator requeue that record again on purpose.
//!
//! The requeued record gets a new timestamp: it is a new event on the topic, and its
//! `__evalstream.requeued.from` header links it to the DLQ record (which keeps the original
//! timestamp in `__evalstream.errors.timestamp`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::error::ErrorClass;
use evalstream_runtime::headers::{self as h, coordinate, DeadLetterHeaders, RetryHeaders};
use evalstream_runtime::kafka::{self, ReaderContext};
use evalstream_runtime::time::format_rfc3339_ms_aligned;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{json, Value};
use thiserror::Error;

use crate::progress::{Progress, ProgressArg};

use super::common::{
    bytes_json, emit, ensure_compacted_topic, header_pairs, load_config, owned_headers,
    partition_ids, send_blocking, HeaderList, ReadError, ReadOptions, TopicReader,
};

/// Records per requeue transaction: small enough that a failure loses little work, large enough
/// that a big requeue is not dominated by commit round trips.
const REQUEUE_BATCH: usize = 500;

/// How long transaction calls may take before the run gives up.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a header describes a record's failure rather than the record itself: the dead-letter
/// and retry contract of `evalstream_runtime::headers` and `requeued.from`. Requeue removes them
/// (the requeued record is a fresh first attempt) and sets a new `requeued.from`.
fn stripped_on_requeue(name: &str) -> bool {
    DeadLetterHeaders::NAMES.contains(&name)
        || RetryHeaders::NAMES.contains(&name)
        || name == h::REQUEUED_FROM
}

/// `evalstream dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show the records of a DLQ: where each came from, why it failed, and whether it was
    /// requeued; then counts by error class.
    List(ListArgs),
    /// Put DLQ records back on their original topic with their key, value and original headers,
    /// exactly once: a record already requeued is skipped, however often the command runs.
    Requeue(RequeueArgs),
}

/// Arguments of `evalstream dlq list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The topic whose DLQ to read (`T` or `T.dlq`; logical name, the `topic_prefix` is added).
    pub topic: String,
    /// Show at most this many records (the counts then cover those shown).
    #[arg(long)]
    pub max: Option<u64>,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Longest wait for the broker to deliver the next record, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
}

/// Arguments of `evalstream dlq requeue`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("selection").required(true).multiple(true).args(["offset", "class", "all"])))]
pub struct RequeueArgs {
    /// The topic whose DLQ to requeue from (`T` or `T.dlq`).
    pub topic: String,
    /// A DLQ record as `PARTITION:OFFSET` (repeat for several). Every one must exist.
    #[arg(long, value_parser = parse_dlq_offset)]
    pub offset: Vec<(i32, i64)>,
    /// Only records of this error class (`deserialization`, `oversized`, `validation`,
    /// `encoding`, `not_ready`, `retries_exhausted`). With `--offset`, both
    /// must match.
    #[arg(long)]
    pub class: Option<ErrorClass>,
    /// Every record of the DLQ.
    #[arg(long, conflicts_with_all = ["offset", "class"])]
    pub all: bool,
    /// Show what would be requeued; produce nothing and create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Longest wait for the broker to deliver the next record, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub progress: ProgressArg,
}

/// Why a `--offset` value was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OffsetArgError {
    /// Not `P:O` with two non-negative integers.
    #[error("expected PARTITION:OFFSET with non-negative integers, e.g. 0:42, got {0:?}")]
    Shape(String),
}

fn parse_dlq_offset(s: &str) -> Result<(i32, i64), OffsetArgError> {
    let bad = || OffsetArgError::Shape(s.to_string());
    let (p, o) = s.split_once(':').ok_or_else(bad)?;
    let p: i32 = p.trim().parse().map_err(|_| bad())?;
    let o: i64 = o.trim().parse().map_err(|_| bad())?;
    if p < 0 || o < 0 {
        return Err(bad());
    }
    Ok((p, o))
}

/// Runs an `evalstream dlq` subcommand.
pub fn run(config: Option<&Path>, cmd: Command) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    match cmd {
        Command::List(args) => list(&cfg, &args),
        Command::Requeue(args) => requeue(&cfg, &args),
    }
}

/// The DLQ and ledger topic names on the cluster for a `T` or `T.dlq` argument.
fn topic_names(cfg: &RuntimeConfig, arg: &str) -> (String, String) {
    let logical = if arg.ends_with(".dlq") { arg.to_string() } else { format!("{arg}.dlq") };
    let dlq = cfg.topic(&logical);
    let ledger = format!("{dlq}.requeued");
    (dlq, ledger)
}

/// One DLQ record, with its error headers parsed. Headers that are missing or malformed become
/// `None`, never an error: a DLQ is where malformed things end up, and listing it must not fail.
#[derive(Debug, Clone, PartialEq)]
pub struct DlqEntry {
    /// Partition in the DLQ topic.
    pub dlq_partition: i32,
    /// Offset in the DLQ topic.
    pub dlq_offset: i64,
    /// Where it came from and why (`None` without an `errors.topic` header): the runtime's
    /// dead-letter header contract.
    pub error: Option<DeadLetterHeaders>,
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original value.
    pub value: Option<Vec<u8>>,
    /// All headers of the DLQ record, in order.
    pub headers: HeaderList,
}

impl DlqEntry {
    /// Parses the error headers of a DLQ record.
    pub fn new(
        dlq_partition: i32,
        dlq_offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: HeaderList,
    ) -> Self {
        let borrowed: Vec<(&str, Option<&[u8]>)> =
            headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        let error = DeadLetterHeaders::parse(&borrowed);
        DlqEntry { dlq_partition, dlq_offset, error, key, value, headers }
    }

    /// The error class, when the headers name a known one.
    pub fn class(&self) -> Option<ErrorClass> {
        self.error.as_ref().and_then(|e| e.class)
    }

    fn from_message<M: Message>(m: &M) -> Self {
        DlqEntry::new(
            m.partition(),
            m.offset(),
            m.key().map(<[u8]>::to_vec),
            m.payload().map(<[u8]>::to_vec),
            header_pairs(m.headers()),
        )
    }

    /// The ledger key and `requeued.from` value of this record.
    fn coordinate(&self, dlq_topic: &str) -> String {
        coordinate(dlq_topic, self.dlq_partition, self.dlq_offset)
    }

    /// The headers the requeued record carries: the original ones, without the failure
    /// description, plus where it was requeued from.
    pub fn requeue_headers(&self, dlq_topic: &str) -> HeaderList {
        let mut out: Vec<_> =
            self.headers.iter().filter(|(k, _)| !stripped_on_requeue(k)).cloned().collect();
        out.push((h::REQUEUED_FROM.to_string(), Some(self.coordinate(dlq_topic).into_bytes())));
        out
    }
}

/// Which DLQ records a requeue is about.
#[derive(Debug, Clone, Default)]
struct Selection {
    offsets: BTreeSet<(i32, i64)>,
    class: Option<ErrorClass>,
}

impl Selection {
    fn matches(&self, e: &DlqEntry) -> bool {
        (self.offsets.is_empty() || self.offsets.contains(&(e.dlq_partition, e.dlq_offset)))
            && self.class.is_none_or(|c| e.class() == Some(c))
    }
}

/// What requeue does with one selected record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Produce it to `topic` (at `partition`, else by key) with its ledger entry.
    Requeue { topic: String, partition: Option<i32> },
    /// Leave it: the ledger says it was requeued already.
    AlreadyRequeued,
    /// Leave it: it cannot be requeued, for this reason.
    Unrequeuable(String),
}

/// Decides per record. `partitions` has the partition ids of every existing origin topic. The
/// original partition is kept when the topic still has it (so per-key order across a requeue is
/// as before); otherwise the partitioner places the record by key.
fn plan(
    entry: &DlqEntry,
    dlq_topic: &str,
    ledger: &BTreeSet<String>,
    partitions: &BTreeMap<String, Vec<i32>>,
) -> Action {
    if ledger.contains(&entry.coordinate(dlq_topic)) {
        return Action::AlreadyRequeued;
    }
    let Some(origin) = &entry.error else {
        return Action::Unrequeuable(format!("no {} header", h::ERR_TOPIC));
    };
    let Some(ids) = partitions.get(&origin.topic) else {
        return Action::Unrequeuable(format!("original topic {} does not exist", origin.topic));
    };
    let partition = origin.partition.filter(|p| ids.contains(p));
    Action::Requeue { topic: origin.topic.clone(), partition }
}

/// Reads the requeue ledger: the DLQ coordinates already requeued. A missing ledger means none.
fn read_ledger(
    cfg: &RuntimeConfig,
    ledger: &str,
    timeout: Duration,
) -> anyhow::Result<BTreeSet<String>> {
    let mut done = BTreeSet::new();
    let mut reader = match TopicReader::open(cfg, ledger, &ReadOptions::whole_topic(timeout)) {
        Ok(r) => r,
        Err(ReadError::TopicNotFound(_)) => return Ok(done),
        Err(e) => return Err(e).with_context(|| format!("reading the requeue ledger {ledger}")),
    };
    while let Some(m) = reader.next().with_context(|| format!("reading {ledger}"))? {
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else { continue };
        if m.payload().is_some() {
            done.insert(key.to_string());
        } else {
            done.remove(key);
        }
    }
    Ok(done)
}

/// Reads the whole DLQ (as it is now), keeping the records `keep` accepts.
fn read_dlq(
    cfg: &RuntimeConfig,
    dlq: &str,
    timeout: Duration,
    max: Option<u64>,
    mut keep: impl FnMut(&DlqEntry) -> bool,
) -> anyhow::Result<Vec<DlqEntry>> {
    let mut reader = match TopicReader::open(cfg, dlq, &ReadOptions::whole_topic(timeout)) {
        Err(ReadError::TopicNotFound(t)) => bail!("DLQ topic {t} does not exist"),
        other => other?,
    };
    let mut out = Vec::new();
    while max.is_none_or(|m| (out.len() as u64) < m) {
        let Some(m) = reader.next().with_context(|| format!("reading {dlq}"))? else { break };
        let entry = DlqEntry::from_message(&m);
        if keep(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// `evalstream dlq list`.
fn list(cfg: &RuntimeConfig, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let (dlq, ledger) = topic_names(cfg, &args.topic);
    let timeout = Duration::from_millis(args.timeout_ms);
    let entries = read_dlq(cfg, &dlq, timeout, args.max, |_| true)?;
    // Listing still works when the ledger cannot be read; the requeued column is then unknown.
    let requeued = match read_ledger(cfg, &ledger, timeout) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("evalstream: warning: requeue status unknown: {e:#}");
            None
        }
    };
    let is_requeued = |e: &DlqEntry| requeued.as_ref().map(|r| r.contains(&e.coordinate(&dlq)));
    let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
    for e in &entries {
        let class = e.class().map_or("(none)", ErrorClass::as_str);
        *by_class.entry(class.to_string()).or_default() += 1;
    }
    let n_requeued = entries.iter().filter(|e| is_requeued(e) == Some(true)).count();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        let records: Vec<Value> = entries
            .iter()
            .map(|e| {
                let err = e.error.as_ref();
                json!({
                    "dlq_partition": e.dlq_partition,
                    "dlq_offset": e.dlq_offset,
                    "topic": err.map(|o| &o.topic),
                    "partition": err.and_then(|o| o.partition),
                    "offset": err.and_then(|o| o.offset),
                    "timestamp": err.and_then(|o| o.timestamp),
                    "processor": err.and_then(|o| o.processor.as_ref()),
                    "class": e.class().map(ErrorClass::as_str),
                    "message": err.and_then(|o| o.message.as_ref()),
                    "attempts": err.and_then(|o| o.attempts),
                    "key": bytes_json(e.key.as_deref()),
                    "value_bytes": e.value.as_ref().map(Vec::len),
                    "requeued": is_requeued(e),
                })
            })
            .collect();
        let doc = json!({
            "topic": dlq,
            "records": records,
            "counts": {
                "total": entries.len(),
                "requeued": requeued.as_ref().map(|_| n_requeued),
                "by_class": by_class,
            },
        });
        emit(&mut out, &serde_json::to_string_pretty(&doc)?)?;
    } else {
        for e in &entries {
            let mut line = format!("{dlq} {}/{}", e.dlq_partition, e.dlq_offset);
            let err = e.error.as_ref();
            match err {
                Some(o) => {
                    let p = o.partition.map_or("?".to_string(), |p| p.to_string());
                    let off = o.offset.map_or("?".to_string(), |o| o.to_string());
                    line.push_str(&format!("  from {}/{p}/{off}", o.topic));
                }
                None => line.push_str("  from ?"),
            }
            if let Some(ts) = err.and_then(|o| o.timestamp) {
                line.push_str(&format!("  at {}", format_rfc3339_ms_aligned(ts)));
            }
            line.push_str(&format!(
                "  processor={} class={} attempts={}",
                err.and_then(|o| o.processor.as_deref()).unwrap_or("?"),
                e.class().map_or("?", ErrorClass::as_str),
                err.and_then(|o| o.attempts).map_or("?".to_string(), |a| a.to_string()),
            ));
            if is_requeued(e) == Some(true) {
                line.push_str("  [requeued]");
            }
            let reason = err.and_then(|o| o.message.as_deref()).unwrap_or("?");
            line.push_str(&format!("\n    reason: {reason}"));
            if !emit(&mut out, &line)? {
                return Ok(ExitCode::SUCCESS);
            }
        }
        let classes: Vec<String> = by_class.iter().map(|(c, n)| format!("{c}={n}")).collect();
        let mut summary = format!("{} record(s) in {dlq}", entries.len());
        if !classes.is_empty() {
            summary.push_str(&format!(": {}", classes.join(" ")));
        }
        if requeued.is_some() {
            summary.push_str(&format!("; {n_requeued} requeued"));
        }
        emit(&mut out, &summary)?;
    }
    let _ = out.flush();
    Ok(ExitCode::SUCCESS)
}

/// `evalstream dlq requeue`.
fn requeue(cfg: &RuntimeConfig, args: &RequeueArgs) -> anyhow::Result<ExitCode> {
    let (dlq, ledger) = topic_names(cfg, &args.topic);
    let timeout = Duration::from_millis(args.timeout_ms);
    let selection = Selection { offsets: args.offset.iter().copied().collect(), class: args.class };

    // Checked first so that a mistyped topic does not leave a ledger topic behind.
    let meta: BaseConsumer<ReaderContext> = kafka::reader(cfg)
        .create_with_context(ReaderContext)
        .context("creating a metadata client")?;
    if partition_ids(meta.client(), &dlq)?.is_none() {
        bail!("DLQ topic {dlq} does not exist");
    }

    // Fence other runs and settle their open transaction before reading the ledger, so that the
    // ledger we read is final for everything requeued before us.
    let producer: Option<BaseProducer> = if args.dry_run {
        None
    } else {
        ensure_compacted_topic(cfg, &ledger)
            .with_context(|| format!("creating the requeue ledger {ledger}"))?;
        let txn_id = format!("evalstream-dlq-requeue-{dlq}");
        let p: BaseProducer = kafka::transactional_producer(cfg, &txn_id)
            .create()
            .context("creating the transactional producer")?;
        p.init_transactions(TXN_TIMEOUT).context("initialising transactions")?;
        Some(p)
    };
    let done = read_ledger(cfg, &ledger, timeout)?;
    let mut seen = BTreeSet::new();
    let mut reading = Progress::new(args.progress.progress, format!("reading {dlq}"), "records");
    let selected = read_dlq(cfg, &dlq, timeout, None, |e| {
        seen.insert((e.dlq_partition, e.dlq_offset));
        reading.inc(1);
        selection.matches(e)
    })?;
    reading.finish();
    let missing: Vec<String> =
        selection.offsets.difference(&seen).map(|(p, o)| format!("{p}:{o}")).collect();
    if !missing.is_empty() {
        bail!("no record in {dlq} at {} (nothing was requeued)", missing.join(", "));
    }

    // Partition ids of every origin topic that exists.
    let mut partitions = BTreeMap::new();
    for topic in selected.iter().filter_map(|e| e.error.as_ref()).map(|o| &o.topic) {
        if !partitions.contains_key(topic) {
            if let Some(ids) = partition_ids(meta.client(), topic)? {
                partitions.insert(topic.clone(), ids);
            }
        }
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut todo = Vec::new();
    let (mut skipped, mut failed) = (0u64, 0u64);
    for e in &selected {
        let at = format!("{}:{}", e.dlq_partition, e.dlq_offset);
        match plan(e, &dlq, &done, &partitions) {
            Action::AlreadyRequeued => {
                skipped += 1;
                writeln!(out, "skipped {at}: already requeued")?;
            }
            Action::Unrequeuable(why) => {
                failed += 1;
                eprintln!("evalstream: cannot requeue {dlq} {at}: {why}");
            }
            Action::Requeue { topic, partition } => todo.push((e, topic, partition)),
        }
    }
    let verb = if args.dry_run { "would requeue" } else { "requeued" };
    let describe = |(e, topic, partition): &(&DlqEntry, String, Option<i32>)| {
        let p = partition.map_or("by key".to_string(), |p| format!("partition {p}"));
        let class = e.class().map_or("?", ErrorClass::as_str);
        format!("{verb} {}:{} -> {topic} ({p}; class {class})", e.dlq_partition, e.dlq_offset)
    };

    let mut requeued = 0u64;
    let mut progress = Progress::new(args.progress.progress, format!("requeue {dlq}"), "records")
        .with_total(todo.len() as u64);
    if let Some(producer) = &producer {
        for batch in todo.chunks(REQUEUE_BATCH) {
            match requeue_batch(producer, &dlq, &ledger, batch) {
                Ok(()) => {
                    requeued += batch.len() as u64;
                    progress.clear();
                    for item in batch {
                        writeln!(out, "{}", describe(item))?;
                    }
                    progress.set(requeued);
                }
                Err(e) => {
                    writeln!(
                        out,
                        "requeued {requeued}, skipped {skipped} (already requeued), failed {}",
                        failed + (todo.len() as u64 - requeued)
                    )?;
                    if is_fenced(&e) {
                        // The newer run owns the transactional id now; aborting is its business.
                        return Err(e.context(format!(
                            "another `evalstream dlq requeue` of {dlq} started and fenced this \
                             one after {requeued} record(s); once it has finished, re-run to \
                             requeue anything it did not select"
                        )));
                    }
                    if let Err(a) = producer.abort_transaction(TXN_TIMEOUT) {
                        eprintln!("evalstream: aborting the transaction failed too: {a}");
                    }
                    return Err(e.context(format!(
                        "requeue stopped after {requeued} record(s) (listed above); re-run to \
                         requeue the rest"
                    )));
                }
            }
        }
    } else {
        for item in &todo {
            writeln!(out, "{}", describe(item))?;
        }
    }
    progress.finish();
    let summary = if args.dry_run {
        format!(
            "would requeue {}, skipped {skipped} (already requeued), failed {failed}",
            todo.len()
        )
    } else {
        format!("requeued {requeued}, skipped {skipped} (already requeued), failed {failed}")
    };
    writeln!(out, "{summary}")?;
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Whether `e` says a newer producer with our transactional id took over.
fn is_fenced(e: &anyhow::Error) -> bool {
    e.chain().filter_map(|c| c.downcast_ref::<KafkaError>()).any(|k| {
        matches!(
            k.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        )
    })
}

/// One transaction: every record of the batch and its ledger entry, or none of them.
fn requeue_batch(
    producer: &BaseProducer,
    dlq: &str,
    ledger: &str,
    batch: &[(&DlqEntry, String, Option<i32>)],
) -> anyhow::Result<()> {
    producer.begin_transaction().context("beginning a transaction")?;
    for (e, topic, partition) in batch {
        let coord = e.coordinate(dlq);
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(k) = &e.key {
            record = record.key(&k[..]);
        }
        if let Some(v) = &e.value {
            record = record.payload(&v[..]);
        }
        if let Some(p) = partition {
            record = record.partition(*p);
        }
        if let Some(hs) = owned_headers(&e.requeue_headers(dlq)) {
            record = record.headers(hs);
        }
        send_blocking(producer, record).with_context(|| format!("producing {coord} to {topic}"))?;
        let entry = json!({ "topic": topic, "partition": partition }).to_string();
        send_blocking(producer, BaseRecord::to(ledger).key(coord.as_str()).payload(entry.as_str()))
            .with_context(|| format!("writing the ledger entry of {coord}"))?;
    }
    producer.commit_transaction(TXN_TIMEOUT).context("committing the requeue transaction")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(k: &str, v: &str) -> (String, Option<Vec<u8>>) {
        (k.to_string(), Some(v.as_bytes().to_vec()))
    }

    /// The dead-letter headers the engine writes for a record of eval.submissions 2/17.
    fn dead_letter(class: ErrorClass) -> DeadLetterHeaders {
        DeadLetterHeaders {
            topic: "eval.submissions".into(),
            partition: Some(2),
            offset: Some(17),
            timestamp: Some(1_714_557_600_123),
            processor: Some("submissions".into()),
            class: Some(class),
            message: Some("bad magic byte".into()),
            attempts: Some(1),
        }
    }

    fn entry(offset: i64, class: ErrorClass) -> DlqEntry {
        let mut headers = vec![hdr("trace", "t-1")];
        headers.extend(dead_letter(class).to_headers().iter().map(|(k, v)| hdr(k, v)));
        headers.push(hdr(h::REQUEUED_FROM, "old.dlq/0/1"));
        headers.push(hdr("trace", "t-2"));
        DlqEntry::new(0, offset, Some(b"k".to_vec()), Some(vec![1, 2, 3]), headers)
    }

    #[test]
    fn error_headers_written_by_the_engine_are_parsed() {
        let e = entry(5, ErrorClass::Deserialization);
        assert_eq!(e.error, Some(dead_letter(ErrorClass::Deserialization)));
        assert_eq!(e.class(), Some(ErrorClass::Deserialization));
    }

    #[test]
    fn malformed_headers_become_unknown_not_errors() {
        let e = DlqEntry::new(
            1,
            2,
            None,
            None,
            vec![
                hdr(h::ERR_TOPIC, "t"),
                hdr(h::ERR_PARTITION, "-3"),
                hdr(h::ERR_OFFSET, "x"),
                (h::ERR_CLASS.to_string(), Some(vec![0xff])),
                (h::ERR_MESSAGE.to_string(), None),
            ],
        );
        let err = e.error.expect("errors.topic is there");
        assert_eq!((err.topic.as_str(), err.partition, err.offset), ("t", None, None));
        assert_eq!(err.class, None);
        assert_eq!(err.message, None);
        assert_eq!(DlqEntry::new(0, 0, None, None, vec![]).error, None);
    }

    #[test]
    fn requeue_keeps_original_headers_and_marks_the_source() {
        let e = entry(5, ErrorClass::Validation);
        assert_eq!(
            e.requeue_headers("eval.submissions.dlq"),
            vec![
                hdr("trace", "t-1"),
                hdr("trace", "t-2"),
                hdr(h::REQUEUED_FROM, "eval.submissions.dlq/0/5"),
            ]
        );
    }

    #[test]
    fn plan_skips_ledger_entries_and_keeps_valid_partitions() {
        let dlq = "eval.submissions.dlq";
        let mut parts = BTreeMap::new();
        parts.insert("eval.submissions".to_string(), vec![0, 1, 2, 3]);
        let ledger: BTreeSet<String> = ["eval.submissions.dlq/0/6".to_string()].into();
        assert_eq!(
            plan(&entry(5, ErrorClass::Validation), dlq, &ledger, &parts),
            Action::Requeue { topic: "eval.submissions".into(), partition: Some(2) }
        );
        assert_eq!(
            plan(&entry(6, ErrorClass::Validation), dlq, &ledger, &parts),
            Action::AlreadyRequeued
        );
        parts.insert("eval.submissions".to_string(), vec![0, 1]);
        assert_eq!(
            plan(&entry(5, ErrorClass::Validation), dlq, &ledger, &parts),
            Action::Requeue { topic: "eval.submissions".into(), partition: None }
        );
        parts.clear();
        assert!(matches!(
            plan(&entry(5, ErrorClass::Validation), dlq, &ledger, &parts),
            Action::Unrequeuable(_)
        ));
        let orphan = DlqEntry::new(0, 9, None, None, vec![]);
        assert!(matches!(plan(&orphan, dlq, &ledger, &parts), Action::Unrequeuable(_)));
    }

    #[test]
    fn selection_by_offset_and_class() {
        let all = Selection::default();
        assert!(all.matches(&entry(1, ErrorClass::Validation)));
        let (a, b) = (ErrorClass::Validation, ErrorClass::Encoding);
        let by_class = Selection { class: Some(a), ..Selection::default() };
        assert!(by_class.matches(&entry(1, a)));
        assert!(!by_class.matches(&entry(1, b)));
        let both = Selection { offsets: [(0, 1)].into(), class: Some(a) };
        assert!(both.matches(&entry(1, a)));
        assert!(!both.matches(&entry(2, a)));
        assert!(!both.matches(&entry(1, b)));
    }

    #[test]
    fn offset_arguments() {
        assert_eq!(parse_dlq_offset("0:42"), Ok((0, 42)));
        assert_eq!(parse_dlq_offset(" 3 : 7 "), Ok((3, 7)));
        for bad in ["42", "a:1", "1:b", "-1:2", "1:-2", "1:2:3", ""] {
            assert!(parse_dlq_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_argument_may_name_the_dlq_or_its_topic() {
        let cfg = RuntimeConfig { topic_prefix: "x-".into(), ..RuntimeConfig::default() };
        let want = ("x-a.b.dlq".to_string(), "x-a.b.dlq.requeued".to_string());
        assert_eq!(topic_names(&cfg, "a.b"), want);
        assert_eq!(topic_names(&cfg, "a.b.dlq"), want);
    }

    #[test]
    fn requeue_needs_a_selection() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: Command,
        }
        assert!(Cli::try_parse_from(["x", "requeue", "t"]).is_err());
        assert!(Cli::try_parse_from(["x", "requeue", "t", "--all"]).is_ok());
        assert!(
            Cli::try_parse_from(["x", "requeue", "t", "--all", "--class", "oversized"]).is_err()
        );
        assert!(Cli::try_parse_from([
            "x",
            "requeue",
            "t",
            "--offset",
            "0:1",
            "--class",
            "oversized"
        ])
        .is_ok());
        assert!(Cli::try_parse_from(["x", "requeue", "t", "--class", "no_such_class"]).is_err());
        assert!(Cli::try_parse_from(["x", "requeue", "t", "--offset", "zero"]).is_err());
    }
}
