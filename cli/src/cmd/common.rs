//! Plumbing shared by the operator commands that read and write topics (`produce`, `consume`,
//! `dlq`): a bounded topic reader, the JSON form of record bytes and headers, and small admin
//! helpers.
//!
//! ```text
//!   TopicReader::open ── metadata + watermarks (only to skip empty partitions)
//!        │
//!        ▼  assign partitions at explicit offsets (no group, nothing committed)
//!   next() ─► record ─► ... ─► end-of-partition event in every partition ─► None
//! ```
//!
//! Why the end is the end-of-partition event and not a high-watermark snapshot: librdkafka
//! derives that event from fetch responses, which are right on every broker we meet, while our
//! development broker (Tansu) answers ListOffsets(latest) with the *base* offset of the last
//! record batch + 1, so a snapshot would silently cut a multi-record batch short. The event also
//! lands correctly when the last offsets are transaction markers that no consumer ever sees, and
//! at the last stable offset under `read_committed`. The price: a reader stops once it has caught
//! up, so on a topic written faster than we read it only `--max` or the caller ends the read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use evalstream_runtime::b64;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka::{self, ReaderContext};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use thiserror::Error;

/// How long metadata and watermark look-ups may take: long enough for a slow broker, short enough
/// that an unreachable cluster is reported instead of hanging an operator's terminal.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(15);

/// Loads and validates the runtime configuration, with the file named in the error.
pub fn load_config(config: Option<&Path>) -> anyhow::Result<RuntimeConfig> {
    RuntimeConfig::load(config).map_err(anyhow::Error::from)
}

/// Where a [`TopicReader`] starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The log start offset (the oldest record still retained).
    Beginning,
    /// The high watermark at open time: only records written afterwards (with `follow`).
    End,
    /// An absolute offset, the same in every selected partition.
    Offset(i64),
}

/// What a [`TopicReader`] reads and when it stops.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Partitions to read; `None` reads all of them.
    pub partitions: Option<Vec<i32>>,
    /// Start position in every selected partition.
    pub start: StartAt,
    /// Keep reading after reaching the end (until the idle timeout).
    pub follow: bool,
    /// Longest wait without any record or end-of-partition event. Without `follow` it elapsing is
    /// an error (the broker is not delivering); with `follow` it ends the read.
    pub idle_timeout: Duration,
}

impl ReadOptions {
    /// Everything that is in the topic now, in every partition: what `dlq` and tests need.
    pub fn whole_topic(idle_timeout: Duration) -> Self {
        ReadOptions { partitions: None, start: StartAt::Beginning, follow: false, idle_timeout }
    }
}

/// Why reading a topic failed. Each variant says what the operator can do about it.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The topic is not in the cluster metadata.
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    /// A requested partition is not one of the topic's partitions.
    #[error("topic {topic} has no partition {partition} (it has {count})")]
    NoSuchPartition {
        /// Topic.
        topic: String,
        /// The requested partition.
        partition: i32,
        /// How many partitions the topic has.
        count: usize,
    },
    /// A requested start offset is not in the partition (beyond its end, or already deleted).
    #[error("start offset is out of range in {topic}: {source}")]
    OffsetOutOfRange {
        /// Topic.
        topic: String,
        /// The client's report, naming the partition and offset.
        #[source]
        source: KafkaError,
    },
    /// A Kafka call failed.
    #[error("kafka {context}: {source}")]
    Kafka {
        /// What the reader was doing.
        context: &'static str,
        /// The client error.
        #[source]
        source: KafkaError,
    },
    /// The broker stopped delivering before the end was reached.
    #[error(
        "timed out after {waited_ms} ms without records from {topic}; partitions not read to \
         their end: {pending:?}"
    )]
    Timeout {
        /// Topic.
        topic: String,
        /// How long the reader waited.
        waited_ms: u128,
        /// Partitions that had not reached their end.
        pending: Vec<i32>,
    },
}

fn kafka_err(context: &'static str) -> impl FnOnce(KafkaError) -> ReadError {
    move |source| ReadError::Kafka { context, source }
}

/// A group-less, read-committed reader of one topic that stops when every partition has reached
/// its end (unless following). It commits nothing and joins no group, so operator commands and
/// tests can read any topic without disturbing the processors' progress.
pub struct TopicReader {
    consumer: BaseConsumer<ReaderContext>,
    topic: String,
    /// Assigned partitions that have not reached their end yet.
    pending: BTreeSet<i32>,
    follow: bool,
    idle_timeout: Duration,
    last_progress: Instant,
    warned: BTreeSet<String>,
}

impl TopicReader {
    /// Looks up the topic and assigns the selected partitions at their start offsets.
    pub fn open(cfg: &RuntimeConfig, topic: &str, opts: &ReadOptions) -> Result<Self, ReadError> {
        // An offset beyond the end must be an error, not a silent rewind to the beginning.
        let consumer: BaseConsumer<ReaderContext> = kafka::reader(cfg)
            .set("auto.offset.reset", "error")
            .create_with_context(ReaderContext)
            .map_err(kafka_err("creating a reader"))?;
        let all = partition_ids(consumer.client(), topic)?
            .ok_or_else(|| ReadError::TopicNotFound(topic.to_string()))?;
        let selected = match &opts.partitions {
            None => all.clone(),
            Some(wanted) => {
                for &p in wanted {
                    if !all.contains(&p) {
                        return Err(ReadError::NoSuchPartition {
                            topic: topic.to_string(),
                            partition: p,
                            count: all.len(),
                        });
                    }
                }
                wanted.iter().copied().collect::<BTreeSet<_>>().into_iter().collect()
            }
        };
        let mut pending = BTreeSet::new();
        let mut tpl = TopicPartitionList::new();
        for p in selected {
            if opts.start == StartAt::End {
                if !opts.follow {
                    continue;
                }
                tpl.add_partition_offset(topic, p, Offset::End)
                    .map_err(kafka_err("building the assignment"))?;
                pending.insert(p);
                continue;
            }
            // The high watermark only tells empty from non-empty (see the module docs); the low
            // one is exact and keeps a start below it (records removed by retention) in range.
            let (low, high) = consumer
                .fetch_watermarks(topic, p, METADATA_TIMEOUT)
                .map_err(kafka_err("reading watermarks"))?;
            let start = match opts.start {
                StartAt::Beginning if high <= low && !opts.follow => continue,
                StartAt::Offset(o) => Offset::Offset(o.max(low)),
                StartAt::Beginning | StartAt::End => Offset::Offset(low),
            };
            tpl.add_partition_offset(topic, p, start)
                .map_err(kafka_err("building the assignment"))?;
            pending.insert(p);
        }
        if tpl.count() > 0 {
            consumer.assign(&tpl).map_err(kafka_err("assigning partitions"))?;
        }
        Ok(TopicReader {
            consumer,
            topic: topic.to_string(),
            pending,
            follow: opts.follow,
            idle_timeout: opts.idle_timeout,
            last_progress: Instant::now(),
            warned: BTreeSet::new(),
        })
    }

    /// The next record, or `None` at the end (or, when following, after the idle timeout).
    pub fn next(&mut self) -> Result<Option<BorrowedMessage<'_>>, ReadError> {
        let consumer = &self.consumer;
        loop {
            if !self.follow && self.pending.is_empty() {
                return Ok(None);
            }
            let waited = self.last_progress.elapsed();
            if waited >= self.idle_timeout {
                if self.follow {
                    return Ok(None);
                }
                return Err(ReadError::Timeout {
                    topic: self.topic.clone(),
                    waited_ms: waited.as_millis(),
                    pending: self.pending.iter().copied().collect(),
                });
            }
            let slice = (self.idle_timeout - waited).min(Duration::from_millis(200));
            match consumer.poll(slice) {
                None => {}
                Some(Ok(m)) => {
                    self.last_progress = Instant::now();
                    return Ok(Some(m));
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.last_progress = Instant::now();
                    self.pending.remove(&p);
                }
                Some(Err(e)) if is_offset_out_of_range(&e) => {
                    return Err(ReadError::OffsetOutOfRange {
                        topic: self.topic.clone(),
                        source: e,
                    });
                }
                Some(Err(e)) if is_fatal_read_error(&e) => {
                    return Err(ReadError::Kafka { context: "reading", source: e });
                }
                Some(Err(e)) => {
                    // Transient (a broker connection dropped, a leader moved): librdkafka
                    // retries by itself; the idle timeout bounds how long we let it.
                    let text = e.to_string();
                    if self.warned.insert(text.clone()) {
                        eprintln!("evalstream: warning: reading {}: {text}", self.topic);
                    }
                }
            }
        }
    }
}

fn is_offset_out_of_range(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
    )
}

fn is_fatal_read_error(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
        )
    )
}

/// The sorted partition ids of `topic`, or `None` when the topic does not exist.
pub fn partition_ids<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
) -> Result<Option<Vec<i32>>, ReadError> {
    let md = client
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(kafka_err("reading metadata"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if let Some(e) = t.error() {
        let code = RDKafkaErrorCode::from(e);
        if matches!(
            code,
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
        ) {
            return Ok(None);
        }
        return Err(ReadError::Kafka {
            context: "reading metadata",
            source: KafkaError::MetadataFetch(code),
        });
    }
    if t.partitions().is_empty() {
        return Ok(None);
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(Some(ids))
}

/// Creates `topic` as a compacted topic with one partition unless it exists. Replication uses the
/// broker default (KIP-464), so the same call is right on a one-node dev broker and a cluster.
pub fn ensure_compacted_topic(cfg: &RuntimeConfig, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka::base(cfg).create()?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = rt.block_on(admin.create_topics([&new], &opts))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Enqueues `record`, waiting (and serving delivery reports) while librdkafka's local queue is
/// full, which is back-pressure rather than failure. Any other error is returned.
pub fn send_blocking<'a, C, K, P>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
) -> Result<(), KafkaError>
where
    C: ProducerContext,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Record headers as plain data, in order, repeated names kept (Kafka allows them); `None` is a
/// header without a value.
pub type HeaderList = Vec<(String, Option<Vec<u8>>)>;

/// Builds librdkafka headers from `(name, value)` pairs; `None` when there are none, so a record
/// without headers is sent without a header block.
pub fn owned_headers(headers: &[(String, Option<Vec<u8>>)]) -> Option<OwnedHeaders> {
    if headers.is_empty() {
        return None;
    }
    let mut out = OwnedHeaders::new_with_capacity(headers.len());
    for (name, value) in headers {
        out = out.insert(Header { key: name.as_str(), value: value.as_deref() });
    }
    Some(out)
}

/// Copies a record's headers out of librdkafka, in order, repeated names kept.
pub fn header_pairs<H: Headers>(headers: Option<&H>) -> HeaderList {
    headers
        .map(|h| h.iter().map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec))).collect())
        .unwrap_or_default()
}

/// JSON form of bytes that are usually text (keys, header values): the text itself when it is
/// UTF-8, otherwise `{"base64": "..."}`, so nothing is lost and text stays readable.
pub fn bytes_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => json!({ "base64": b64::encode(b) }),
        },
    }
}

/// Headers as a JSON object: name → [`bytes_json`] value; a name that occurs several times maps
/// to an array of its values in order (Kafka allows repeated names, and requeue relies on them).
pub fn headers_json<H: Headers>(headers: Option<&H>) -> Value {
    let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    if let Some(h) = headers {
        for header in h.iter() {
            map.entry(header.key.to_string()).or_default().push(bytes_json(header.value));
        }
    }
    Value::Object(
        map.into_iter()
            .map(|(k, mut v)| (k, if v.len() == 1 { v.remove(0) } else { Value::Array(v) }))
            .collect(),
    )
}

/// Writes one line to stdout. `Ok(false)` means the reader went away (`| head`): the command
/// should stop quietly, as Unix tools do, instead of failing.
pub fn emit(out: &mut impl Write, line: &str) -> std::io::Result<bool> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes every topic under `cfg`'s prefix; returns how many.
pub fn delete_prefixed(cfg: &RuntimeConfig) -> anyhow::Result<usize> {
    anyhow::ensure!(!cfg.topic_prefix.is_empty(), "refusing to delete topics without a prefix");
    let meta: BaseConsumer = kafka::base(cfg).create()?;
    let md = meta.fetch_metadata(None, Duration::from_secs(10))?;
    let names: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| n.starts_with(&cfg.topic_prefix))
        .collect();
    if names.is_empty() {
        return Ok(0);
    }
    let admin: AdminClient<DefaultClientContext> = kafka::base(cfg).create()?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for r in rt.block_on(admin.delete_topics(&refs, &AdminOptions::new()))? {
        if let Err((t, e)) = r {
            anyhow::bail!("deleting {t}: {e}");
        }
    }
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_text_when_they_can_be() {
        assert_eq!(bytes_json(Some(b"abc")), json!("abc"));
        assert_eq!(bytes_json(Some(&[0xff, 0x00])), json!({"base64": "/wA="}));
        assert_eq!(bytes_json(None), Value::Null);
    }
}
