//! The input gate of the markers view: on a broker that shows aborted records to
//! `read_committed` readers, an input record written by another processor's transaction is
//! processed only once the progress marker that commits it is seen, and skipped if the marker
//! with its commit sequence belongs to another transaction (an aborted attempt).
//!
//! ```text
//!  input record (evalstream.txn T, evalstream.progress C/p/k)
//!     ├─ first marker with k in C[p] is T's ─► process
//!     ├─ ... is another transaction's       ─► skip (aborted; its redo comes under the same k)
//!     └─ not seen yet ─► seek back, pause the partition; resumed when the tail of C shows it
//! ```
//!
//! The gate tails every changelog its inputs name with one group-less consumer. Records
//! without those headers (written outside our transactions) pass. With `committed_view =
//! "broker"` the gate is off: `read_committed` already shows committed records only.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::codec::Codec;
use crate::config::RuntimeConfig;
use crate::error::RuntimeError;
use crate::headers;
use crate::kafka;
use crate::progress::{MarkerIndex, ProgressMarker, ProgressRef};
use crate::state::{self, ChangelogKey};

/// What the gate says about one input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Committed, or not written by one of our transactions: process it.
    Pass,
    /// Its transaction did not commit: skip it.
    Aborted,
    /// Not known yet: wait for this marker.
    Wait(ProgressRef),
}

/// The tail of the changelogs that commit the inputs (markers view only).
pub(super) struct InputGate {
    codec: Codec,
    consumer: BaseConsumer<kafka::ReaderContext>,
    tailed: HashSet<String>,
    assignment: TopicPartitionList,
    index: HashMap<String, MarkerIndex>,
    /// Paused input partitions and the marker each waits for.
    waiting: HashMap<(String, i32), (ProgressRef, Instant)>,
}

impl InputGate {
    pub(super) fn new(cfg: &RuntimeConfig, codec: &Codec) -> Result<Self, RuntimeError> {
        let consumer = kafka::reader(cfg)
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "10")
            .create_with_context(kafka::ReaderContext)
            .map_err(|e| RuntimeError::kafka("create gate consumer", e))?;
        Ok(InputGate {
            codec: codec.clone(),
            consumer,
            tailed: HashSet::new(),
            assignment: TopicPartitionList::new(),
            index: HashMap::new(),
            waiting: HashMap::new(),
        })
    }

    /// Decides `m` (see the module doc).
    pub(super) fn verdict(&mut self, m: &BorrowedMessage<'_>) -> Result<Verdict, RuntimeError> {
        let Some(h) = m.headers() else { return Ok(Verdict::Pass) };
        let text = |name: &str| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        let (Some(txn), Some(progress)) = (text(headers::TXN), text(headers::PROGRESS)) else {
            return Ok(Verdict::Pass);
        };
        let Some(r) = ProgressRef::parse(progress) else { return Ok(Verdict::Pass) };
        self.tail(&r.changelog)?;
        self.poll();
        let decided =
            self.index.get(&r.changelog).and_then(|i| i.decide(r.partition, r.commit_seq, txn));
        Ok(match decided {
            Some(true) => Verdict::Pass,
            Some(false) => Verdict::Aborted,
            None => Verdict::Wait(r),
        })
    }

    /// Starts tailing `changelog` (every partition, from the start) if not yet.
    fn tail(&mut self, changelog: &str) -> Result<(), RuntimeError> {
        if self.tailed.contains(changelog) {
            return Ok(());
        }
        let md = self
            .consumer
            .fetch_metadata(Some(changelog), Duration::from_secs(10))
            .map_err(|e| RuntimeError::kafka("gate metadata", e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == changelog && t.error().is_none())
        else {
            return Err(RuntimeError::Config(format!(
                "an input names changelog {changelog} in its progress header, but it does not exist"
            )));
        };
        for p in t.partitions() {
            self.assignment
                .add_partition_offset(changelog, p.id(), Offset::Beginning)
                .map_err(|e| RuntimeError::kafka("gate assign", e))?;
        }
        self.consumer
            .assign(&self.assignment)
            .map_err(|e| RuntimeError::kafka("gate assign", e))?;
        // A new assign restarts every tailed changelog from its start: rebuild all indexes.
        self.index.clear();
        self.tailed.insert(changelog.to_string());
        info!(changelog, "tailing a changelog to decide which input records committed");
        Ok(())
    }

    /// Reads what the tailed changelogs have now (bounded work per call).
    pub(super) fn poll(&mut self) {
        for _ in 0..10_000 {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => {
                    let Some(ChangelogKey::Marker(_)) =
                        m.key().and_then(state::parse_changelog_key)
                    else {
                        continue;
                    };
                    match ProgressMarker::decode(&self.codec, m.payload().unwrap_or_default()) {
                        Ok(marker) => {
                            self.index
                                .entry(m.topic().to_string())
                                .or_default()
                                .observe(m.partition(), &marker);
                        }
                        Err(e) => warn!(offset = m.offset(), error = %e, "undecodable marker"),
                    }
                }
                Some(Err(e)) => {
                    warn!(error = %e, "reading a changelog for the input gate");
                    break;
                }
            }
        }
    }

    /// Remembers that `tp` is paused until `r` is seen.
    pub(super) fn wait(&mut self, tp: (String, i32), r: ProgressRef) {
        self.waiting.entry(tp).or_insert((r, Instant::now()));
    }

    /// Paused partitions whose marker has been seen: resume them.
    pub(super) fn ready(&mut self) -> Vec<(String, i32)> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        self.poll();
        let mut out = Vec::new();
        self.waiting.retain(|tp, (r, since)| {
            let seen = self
                .index
                .get(&r.changelog)
                .is_some_and(|i| i.last_seq(r.partition) >= r.commit_seq);
            if seen {
                out.push(tp.clone());
            } else if since.elapsed() > Duration::from_secs(60) {
                warn!(
                    topic = %tp.0,
                    partition = tp.1,
                    marker = %r.header_value(),
                    "input held back for a minute: its transaction has neither committed nor been \
                     redone (is the producing processor running?)"
                );
                *since = Instant::now();
            }
            !seen
        });
        out
    }

    /// Forgets every paused partition (they are being revoked or reset).
    pub(super) fn take_waiting(&mut self) -> Vec<(String, i32)> {
        self.waiting.drain().map(|(tp, _)| tp).collect()
    }
}
