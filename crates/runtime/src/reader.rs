//! Reading what is committed in a topic, to its end: the one definition of "committed" that the
//! runtime's restore, a processor's `on_assign` (the audit chain's tail), and the operator
//! commands (`evalstream audit verify|export|prove`) share.
//!
//! ```text
//!  target = high watermark (a read_uncommitted ListOffsets: the end of the log, open
//!           transactions included)
//!  read_committed consumer ── records ──► [markers view: keep a record of ours only if the first
//!        │                                 marker with its commit sequence is its transaction's]
//!        └── end of partition (librdkafka: at the last stable offset) ── position >= target? done
//!                                                                      └ no: an open transaction
//!                                                                        blocks; keep reading
//! ```
//!
//! **Why not stop at the first end-of-partition.** A `read_committed` reader's end of partition
//! is the last stable offset (LSO): librdkafka takes the fetch response's `LastStableOffset` as the
//! partition's end and emits `PARTITION_EOF` when the fetch position reaches it
//! (`rdkafka_fetcher.c`). An instance that died inside a transaction leaves the LSO stuck before
//! that transaction until the broker aborts it (`transaction.timeout.ms`, checked every
//! `transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s by default) or its
//! transactional id is fenced; everything committed *after* it is then invisible. A restore that
//! took that for the end would resume from a stale marker and process committed inputs twice. So
//! the end is the high watermark taken when the read starts, from a `read_uncommitted` client
//! (librdkafka's watermark query uses the client's own isolation level: a `read_committed`
//! client would be told the LSO), and a partition is done when an end of partition arrives with
//! the consumer's position at or past it. librdkafka advances the position past control records
//! (commit and abort markers) as they are polled, so the position reaches the high watermark
//! exactly when nothing is open. The wait is bounded by the transaction timeout plus a margin;
//! meanwhile the caller is not ready (`/ready` false), and past it the read fails and says which
//! partition is blocked where.
//!
//! **The markers view.** On a broker that shows aborted transactional records to
//! `read_committed` readers (`committed_view = "markers"`), a record written by our runtime
//! carries `evalstream.txn` and `evalstream.progress` (the marker that commits it); it is read
//! only if that changelog partition's first marker with its commit sequence belongs to its
//! transaction ([`crate::progress`]). Records without those headers were not written in one of
//! our transactions and are read as they are. The changelog's markers are read first, to its
//! end, so a record whose transaction commits while we read is treated as not yet committed.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::codec::Codec;
use crate::config::{CommittedView, RuntimeConfig};
use crate::error::RuntimeError;
use crate::headers;
use crate::kafka;
use crate::progress::{MarkerIndex, ProgressMarker, ProgressRef};
use crate::state::{self, ChangelogKey};

/// How long past the transaction timeout a read waits for an open transaction to end: the
/// broker's abort check runs every 10 s by default, plus slack for a slow broker.
pub const OPEN_TRANSACTION_MARGIN: Duration = Duration::from_secs(20);

/// Timeout of one metadata or watermark request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One record as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers with a value, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ReadRecord {
    /// First header called `name`, as text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|h| {
                h.iter().filter_map(|x| x.value.map(|v| (x.key.to_string(), v.to_vec()))).collect()
            })
            .unwrap_or_default();
        ReadRecord {
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// What to read of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRead {
    /// Partition.
    pub partition: i32,
    /// First offset to deliver (clamped to the log start).
    pub from: i64,
    /// Stop before this offset; `None`: to the end as of the start of the read.
    pub until: Option<i64>,
}

/// Reads committed records of topics under the configured prefix (see the module doc). One
/// instance owns two long-lived clients and is reused for every read, so a restore or a
/// verification does not pay for client creation per partition.
pub struct CommittedReader {
    cfg: RuntimeConfig,
    codec: Codec,
    consumer: BaseConsumer<kafka::ReaderContext>,
    uncommitted: BaseConsumer<kafka::ReaderContext>,
    /// Markers view: marker indexes of changelogs, built on first use and refreshed when a
    /// record names a marker the index has not seen.
    markers: RefCell<HashMap<String, MarkerIndex>>,
    /// Markers view: the client that reads changelogs for the index, while `consumer` is in
    /// the middle of the read that needs it.
    marker_consumer: RefCell<Option<BaseConsumer<kafka::ReaderContext>>>,
}

impl std::fmt::Debug for CommittedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommittedReader").field("view", &self.cfg.committed_view).finish()
    }
}

impl CommittedReader {
    /// A reader for `cfg`'s cluster, prefix and committed view.
    pub fn new(cfg: &RuntimeConfig, codec: &Codec) -> Result<Self, RuntimeError> {
        let consumer = kafka::reader(cfg)
            // The end of a partition is noticed on an empty fetch; do not let the broker hold
            // that fetch for the default 500 ms (every restore reads to the end).
            .set("fetch.wait.max.ms", "10")
            .create_with_context(kafka::ReaderContext)
            .map_err(|e| RuntimeError::kafka("create reader", e))?;
        let uncommitted = kafka::reader(cfg)
            .set("isolation.level", "read_uncommitted")
            .create_with_context(kafka::ReaderContext)
            .map_err(|e| RuntimeError::kafka("create watermark client", e))?;
        Ok(CommittedReader {
            cfg: cfg.clone(),
            codec: codec.clone(),
            consumer,
            uncommitted,
            markers: RefCell::new(HashMap::new()),
            marker_consumer: RefCell::new(None),
        })
    }

    /// The codec, to decode what was read.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// What "committed" means for this reader.
    pub fn view(&self) -> CommittedView {
        self.cfg.committed_view
    }

    /// The physical name of a logical topic.
    pub fn physical(&self, logical: &str) -> String {
        self.cfg.topic(logical)
    }

    /// How long a read waits for open transactions to end before it fails.
    pub fn wait_limit(&self) -> Duration {
        Duration::from_millis(self.cfg.transaction_timeout_ms) + OPEN_TRANSACTION_MARGIN
    }

    /// `(log start, high watermark)` of a partition of a logical topic. The high watermark
    /// counts open transactions and control records: it is where a complete read ends.
    pub fn watermarks(&self, logical: &str, partition: i32) -> Result<(i64, i64), RuntimeError> {
        self.watermarks_physical(&self.physical(logical), partition)
    }

    /// `(log start, high watermark)` of a partition of a physical topic.
    pub fn watermarks_physical(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(i64, i64), RuntimeError> {
        self.uncommitted
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| RuntimeError::kafka("watermarks", e))
    }

    /// Every committed record of `partition` of a logical topic from `from` (clamped to the log
    /// start) to the end, in offset order.
    pub fn read_from(
        &self,
        logical: &str,
        partition: i32,
        from: i64,
    ) -> Result<Vec<ReadRecord>, RuntimeError> {
        let mut out = Vec::new();
        self.scan(logical, partition, from, |r| {
            out.push(r);
            true
        })?;
        Ok(out)
    }

    /// Calls `f` for each committed record of `partition` from `from` to the end (or until `f`
    /// returns false).
    pub fn scan(
        &self,
        logical: &str,
        partition: i32,
        from: i64,
        f: impl FnMut(ReadRecord) -> bool,
    ) -> Result<(), RuntimeError> {
        self.scan_range(logical, PartitionRead { partition, from, until: None }, f)
    }

    /// Calls `f` for each committed record of `read.partition` in `[read.from, read.until)`
    /// (`until` `None`: to the end), until `f` returns false.
    pub fn scan_range(
        &self,
        logical: &str,
        read: PartitionRead,
        mut f: impl FnMut(ReadRecord) -> bool,
    ) -> Result<(), RuntimeError> {
        let topic = self.physical(logical);
        let mut refreshed = false;
        self.read_raw(&topic, &[read], |m| {
            if self.cfg.committed_view == CommittedView::Markers
                && !self.committed_by_markers(m, &mut refreshed)?
            {
                return Ok(true);
            }
            Ok(f(ReadRecord::from_message(m)))
        })
    }

    /// Markers view: whether `m` is committed (see the module doc). A record naming a marker the
    /// index has not seen makes the index re-read its changelog once per read.
    fn committed_by_markers(
        &self,
        m: &BorrowedMessage<'_>,
        refreshed: &mut bool,
    ) -> Result<bool, RuntimeError> {
        let Some(h) = m.headers() else { return Ok(true) };
        let text = |name: &str| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        let (Some(txn), Some(progress)) = (text(headers::TXN), text(headers::PROGRESS)) else {
            return Ok(true);
        };
        let Some(r) = ProgressRef::parse(progress) else { return Ok(true) };
        if !self.markers.borrow().contains_key(&r.changelog) {
            let index = self.marker_index(&r.changelog)?;
            self.markers.borrow_mut().insert(r.changelog.clone(), index);
        }
        let decided = self.markers.borrow()[&r.changelog].decide(r.partition, r.commit_seq, txn);
        match decided {
            Some(d) => Ok(d),
            None if !*refreshed => {
                *refreshed = true;
                let index = self.marker_index(&r.changelog)?;
                let d = index.decide(r.partition, r.commit_seq, txn);
                self.markers.borrow_mut().insert(r.changelog.clone(), index);
                Ok(d.unwrap_or(false))
            }
            None => Ok(false),
        }
    }

    /// Reads every marker of a changelog (all partitions) to its end.
    fn marker_index(&self, changelog: &str) -> Result<MarkerIndex, RuntimeError> {
        let partitions = self.partitions(changelog)?;
        let reads: Vec<PartitionRead> = partitions
            .iter()
            .map(|p| PartitionRead { partition: *p, from: 0, until: None })
            .collect();
        // A client of its own: this runs in the middle of another read of `consumer`.
        let mut slot = self.marker_consumer.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                kafka::reader(&self.cfg)
                    .set("fetch.wait.max.ms", "10")
                    .create_with_context(kafka::ReaderContext)
                    .map_err(|e| RuntimeError::kafka("create marker reader", e))?,
            );
        }
        let Some(consumer) = slot.as_ref() else { unreachable!("just created") };
        let mut index = MarkerIndex::new();
        self.read_with(consumer, changelog, &reads, |m| {
            if let Some(ChangelogKey::Marker(_)) = m.key().and_then(state::parse_changelog_key) {
                match ProgressMarker::decode(&self.codec, m.payload().unwrap_or_default()) {
                    Ok(marker) => {
                        index.observe(m.partition(), &marker);
                    }
                    Err(e) => {
                        warn!(changelog, offset = m.offset(), error = %e, "undecodable marker")
                    }
                }
            }
            Ok(true)
        })?;
        Ok(index)
    }

    /// Partition ids of a physical topic.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, RuntimeError> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| RuntimeError::kafka("metadata", e))?;
        let t = md.topics().iter().find(|t| t.name() == topic);
        match t {
            Some(t) if t.error().is_none() => Ok(t.partitions().iter().map(|p| p.id()).collect()),
            _ => Err(RuntimeError::Config(format!("topic {topic} does not exist"))),
        }
    }

    /// The engine of every read: delivers the records of `reads` of physical `topic` as the
    /// broker's `read_committed` shows them (no markers view), interleaved across partitions and
    /// in offset order within one, to the end as defined in the module doc. `f` returns
    /// `Ok(false)` to stop delivering a partition. Transient broker errors are retried until the
    /// wait limit.
    pub fn read_raw(
        &self,
        topic: &str,
        reads: &[PartitionRead],
        f: impl FnMut(&BorrowedMessage<'_>) -> Result<bool, RuntimeError>,
    ) -> Result<(), RuntimeError> {
        self.read_with(&self.consumer, topic, reads, f)
    }

    fn read_with(
        &self,
        consumer: &BaseConsumer<kafka::ReaderContext>,
        topic: &str,
        reads: &[PartitionRead],
        mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<bool, RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + self.wait_limit();
        let mut pending: BTreeMap<i32, Pending> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for r in reads {
            let (low, high) = self.retry_transient(deadline, "watermarks", || {
                self.watermarks_physical(topic, r.partition)
            })?;
            let target = r.until.map_or(high, |u| u.min(high));
            if high <= low || r.from.max(low) >= target && r.until.is_some() {
                continue; // nothing to read
            }
            // Never start past the high watermark: an offset beyond the log would be reset to
            // its start. (Some brokers understate the high watermark; records before `from`
            // are skipped below.)
            let start = r.from.clamp(low, high);
            tpl.add_partition_offset(topic, r.partition, Offset::Offset(start))
                .map_err(|e| RuntimeError::kafka("assign", e))?;
            pending.insert(
                r.partition,
                Pending { from: r.from, until: r.until, target, blocked_at: None },
            );
        }
        if pending.is_empty() {
            return Ok(());
        }
        consumer.assign(&tpl).map_err(|e| RuntimeError::kafka("assign", e))?;
        let started = Instant::now();
        let mut warned = false;
        let result = loop {
            if pending.is_empty() {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err(self.blocked_error(topic, &pending));
            }
            if !warned && started.elapsed() > Duration::from_secs(2) {
                if let Some((p, at)) =
                    pending.iter().find_map(|(p, s)| s.blocked_at.map(|at| (*p, at)))
                {
                    warned = true;
                    info!(
                        topic,
                        partition = p,
                        last_stable_offset = at,
                        high_watermark = pending[&p].target,
                        wait_limit_s = self.wait_limit().as_secs(),
                        "waiting for an open transaction to end before the read is complete"
                    );
                }
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => {
                    let p = m.partition();
                    let Some(state) = pending.get(&p) else { continue };
                    let offset = m.offset();
                    if state.until.is_some_and(|u| offset >= u) {
                        pending.remove(&p);
                        continue;
                    }
                    if offset < state.from {
                        continue;
                    }
                    let more = f(&m)?;
                    if !more || state.until.is_some_and(|u| offset + 1 >= u) {
                        pending.remove(&p);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    let Some(state) = pending.get_mut(&p) else { continue };
                    let position = position(consumer, topic, p)?;
                    if position >= state.target {
                        pending.remove(&p);
                    } else {
                        debug!(topic, partition = p, position, target = state.target, "blocked");
                        state.blocked_at = Some(position);
                    }
                }
                Some(Err(e)) if is_transient(&e) => {
                    debug!(topic, error = %e, "transient read error; retrying");
                }
                Some(Err(e)) => break Err(RuntimeError::kafka("read", e)),
            }
        };
        let _ = consumer.unassign();
        result
    }

    fn blocked_error(&self, topic: &str, pending: &BTreeMap<i32, Pending>) -> RuntimeError {
        let (partition, state) = pending.iter().next().map(|(p, s)| (*p, *s)).unwrap_or_default();
        let message = match state.blocked_at {
            Some(at) => format!(
                "the end of the log is offset {} but read_committed readers are blocked at {at} by a \
                 transaction that neither committed nor aborted within {} s (transaction_timeout_ms \
                 + {} s); an instance that died inside a transaction keeps it open until the broker \
                 aborts it: check the broker's transaction.max.timeout.ms and its transaction state",
                state.target,
                self.wait_limit().as_secs(),
                OPEN_TRANSACTION_MARGIN.as_secs()
            ),
            None => format!(
                "did not reach the end of the log (offset {}) within {} s",
                state.target,
                self.wait_limit().as_secs()
            ),
        };
        RuntimeError::Restore { topic: topic.to_string(), partition, message }
    }

    /// Runs `op` until it succeeds, fails with a non-transient error, or `deadline` passes.
    pub(crate) fn retry_transient<T>(
        &self,
        deadline: Instant,
        what: &'static str,
        mut op: impl FnMut() -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let mut delay = Duration::from_millis(100);
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(RuntimeError::Kafka { source, .. })
                    if is_transient(&source) && Instant::now() + delay < deadline =>
                {
                    debug!(what, error = %source, "transient error; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The consumer's position (next offset to return) in a partition; -1 when unknown.
fn position(
    consumer: &BaseConsumer<kafka::ReaderContext>,
    topic: &str,
    partition: i32,
) -> Result<i64, RuntimeError> {
    let positions = consumer.position().map_err(|e| RuntimeError::kafka("position", e))?;
    Ok(match positions.find_partition(topic, partition).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o,
        _ => -1,
    })
}

/// Where a partition's read stands.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    from: i64,
    until: Option<i64>,
    /// Done when the position reaches this (the high watermark, or `until`).
    target: i64,
    /// The position at the last end of partition that fell short of the target.
    blocked_at: Option<i64>,
}

/// Errors that go away by themselves: leadership moving, a broker restarting, a timeout, and a
/// topic created a moment ago whose partitions this client's metadata does not know yet (the
/// local `UnknownPartition`; the engine creates its changelog and restores it right away, and a
/// partition the group assigned exists on the broker).
pub(crate) fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::FencedLeaderEpoch
                | RDKafkaErrorCode::UnknownLeaderEpoch
                | RDKafkaErrorCode::OffsetNotAvailable
                | RDKafkaErrorCode::UnstableOffsetCommit
                | RDKafkaErrorCode::KafkaStorageError
        )
    )
}
