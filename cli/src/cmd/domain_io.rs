//! Plumbing shared by the domain's operator commands (`alloc`, `finance`, `policy`, `control`,
//! `reconcile`): reading whole topics as typed records, reading the settlement processor's state
//! from its changelog, producing records in one transaction, and following `audit.events` for
//! the event a processor writes in answer to a command.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use evalstream_domain::records::AuditEvent;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka::{self, ReaderContext};
use evalstream_runtime::record::Record;
use evalstream_runtime::state::{parse_changelog_key, ChangelogKey};
use evalstream_settlement::state::{decode_allocation, Allocation};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::common::{
    partition_ids, send_blocking, ReadError, ReadOptions, TopicReader, METADATA_TIMEOUT,
};

/// How long transaction calls may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// The changelog of the settlement processor, where every allocation's state is.
pub const SETTLEMENT_CHANGELOG: &str = "evalstream.settlement.changelog";

/// One record of a topic, owned.
#[derive(Debug, Clone)]
pub struct Raw {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
}

/// Every committed record of `topic` (physical name) now, in partition/offset order; a topic that
/// does not exist reads as empty when `missing_ok`.
pub fn read_all(
    cfg: &RuntimeConfig,
    topic: &str,
    timeout: Duration,
    missing_ok: bool,
) -> anyhow::Result<Vec<Raw>> {
    let mut reader = match TopicReader::open(cfg, topic, &ReadOptions::whole_topic(timeout)) {
        Err(ReadError::TopicNotFound(_)) if missing_ok => return Ok(Vec::new()),
        other => other.with_context(|| format!("reading {topic}"))?,
    };
    let mut out = Vec::new();
    while let Some(m) = reader.next().with_context(|| format!("reading {topic}"))? {
        out.push(Raw {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
        });
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

/// The records of `topic` that decode as `T` (others are skipped: a DLQ holds anything).
pub fn read_typed<T: Record>(
    cfg: &RuntimeConfig,
    codec: &Codec,
    topic: &str,
    timeout: Duration,
    missing_ok: bool,
) -> anyhow::Result<Vec<(Raw, T)>> {
    Ok(read_all(cfg, topic, timeout, missing_ok)?
        .into_iter()
        .filter_map(|r| {
            let v = codec.decode_record::<T>(r.value.as_deref()?).ok()?;
            Some((r, v))
        })
        .collect())
}

/// Every allocation the settlement processor knows, from its changelog (committed records
/// only), as it would restore them: state entries count once a progress marker of the same
/// partition follows them, so a transaction that did not commit is never shown even on a
/// broker that exposes aborted records. Sorted by allocation id.
pub fn read_allocations(
    cfg: &RuntimeConfig,
    changelog: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Allocation>> {
    let topic = cfg.topic(changelog);
    let records = read_all(cfg, &topic, timeout, false).with_context(|| {
        format!("the settlement processor's state ({topic}); is the topology applied?")
    })?;
    type Entries = Vec<(Vec<u8>, Option<Vec<u8>>)>;
    let mut pending: HashMap<i32, Entries> = HashMap::new();
    let mut state: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for r in records {
        let Some(key) = r.key.as_deref() else { continue };
        match parse_changelog_key(key) {
            Some(ChangelogKey::State(k)) => {
                pending.entry(r.partition).or_default().push((k.to_vec(), r.value))
            }
            Some(ChangelogKey::Marker(_)) => {
                for (k, v) in pending.remove(&r.partition).unwrap_or_default() {
                    match v {
                        Some(v) => state.insert(k, v),
                        None => state.remove(&k),
                    };
                }
            }
            None => {}
        }
    }
    let mut out = Vec::new();
    for (k, v) in state {
        if let Some(a) = decode_allocation(&k, &v) {
            out.push(a.with_context(|| {
                format!("allocation state {} does not read", String::from_utf8_lossy(&k))
            })?);
        }
    }
    Ok(out)
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Physical topic.
    pub topic: String,
    /// Explicit partition, else by key.
    pub partition: Option<i32>,
    /// Key.
    pub key: String,
    /// Encoded value.
    pub value: Vec<u8>,
}

/// Produces `records` in one transaction (all or nothing) with a fresh transactional id
/// `<purpose>-<random>`: operator commands are one-shot and must not fence each other.
pub fn produce_atomically(
    cfg: &RuntimeConfig,
    purpose: &str,
    records: &[Outgoing],
) -> anyhow::Result<()> {
    let id = format!("evalstream-{purpose}-{:016x}", rand::random::<u64>());
    let producer: BaseProducer = kafka::transactional_producer(cfg, &id)
        .create()
        .context("creating a transactional producer")?;
    producer.init_transactions(TXN_TIMEOUT).context("initialising transactions")?;
    producer.begin_transaction().context("beginning the transaction")?;
    let sent = (|| -> Result<(), KafkaError> {
        for r in records {
            let mut rec = BaseRecord::to(&r.topic).key(r.key.as_bytes()).payload(&r.value);
            if let Some(p) = r.partition {
                rec = rec.partition(p);
            }
            send_blocking(&producer, rec)?;
        }
        producer.flush(TXN_TIMEOUT)?;
        producer.commit_transaction(TXN_TIMEOUT)
    })();
    if let Err(e) = sent {
        let _ = producer.abort_transaction(TXN_TIMEOUT);
        return Err(anyhow::Error::new(e)
            .context("producing (the transaction was aborted: nothing was written)"));
    }
    Ok(())
}

/// The partitions of `topic` (physical), or an error naming it.
pub fn partitions(cfg: &RuntimeConfig, topic: &str) -> anyhow::Result<Vec<i32>> {
    let meta: BaseConsumer<ReaderContext> =
        kafka::reader(cfg).create_with_context(ReaderContext)?;
    match partition_ids(meta.client(), topic)? {
        Some(ids) => Ok(ids),
        None => bail!("topic {topic} does not exist; run `evalstream topology apply`"),
    }
}

/// Follows `audit.events` from the end it had when [`AuditFollower::start`] was called: what a
/// command waits on for the processors' answer.
pub struct AuditFollower {
    consumer: BaseConsumer<ReaderContext>,
    codec: Codec,
}

impl AuditFollower {
    /// Pins the current end of every partition of `audit.events`; later calls see everything
    /// committed after it.
    pub fn start(cfg: &RuntimeConfig, codec: &Codec) -> anyhow::Result<Self> {
        let topic = cfg.topic(evalstream_domain::events::TOPIC);
        let consumer: BaseConsumer<ReaderContext> =
            kafka::reader(cfg).create_with_context(ReaderContext)?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions(cfg, &topic)? {
            let (_, high) = consumer
                .fetch_watermarks(&topic, p, METADATA_TIMEOUT)
                .context("audit.events watermarks")?;
            tpl.add_partition_offset(&topic, p, Offset::Offset(high))?;
        }
        consumer.assign(&tpl)?;
        Ok(AuditFollower { consumer, codec: codec.clone() })
    }

    /// Reads events until `done` (given each event) returns true, or `timeout` passes (an error
    /// saying what was waited for).
    pub fn until(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&AuditEvent) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let Some(v) = m.payload() else { continue };
                    if let Ok(e) = self.codec.decode_record::<AuditEvent>(v) {
                        if done(&e) {
                            return Ok(());
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => tracing::debug!(error = %e, "following audit.events"),
            }
        }
        bail!("no answer within {} s: waited for {what}", timeout.as_secs())
    }
}

/// The operator's name for audit events: `--actor`, else `$USER`, else `operator`.
pub fn actor(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "operator".into())
}

/// A fresh command id: `<what>-<ms>-<8 hex digits>`.
pub fn command_id(what: &str, now_ms: i64) -> String {
    format!("{what}-{now_ms}-{:08x}", rand::random::<u32>())
}
