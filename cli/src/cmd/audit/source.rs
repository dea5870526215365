//! Reading `audit.chain` from the broker for `verify`, `export` and `prove`.
//!
//! ```text
//!  resolve(p, --from, --to)
//!    offsets: as given (clamped to the log start)
//!    times:   offsets_for_times ──hint──► offline::search::locate_time ◄── BrokerProbe (one record)
//!  read_range(p, range)
//!    window before the start ──► offline::range::anchor_candidates ──► RangeCheck::from_anchor
//!    (1024, 4096, ... records back until a usable checkpoint, else the chain's genesis)
//!    scan from the anchor ──► RangeCheck::feed ... Flow::Done at the covering checkpoint
//!                         └─► sink (export writes every record read, anchor first)
//! ```
//!
//! Reads go through the runtime's `CommittedReader`: group-less, committed records only by the
//! runtime's one definition of committed (`read_committed` on Kafka; with `committed_view =
//! "markers"`, only records whose progress marker commits them), and to the true end of the
//! log (past the last stable offset once open transactions end). Nothing is committed anywhere,
//! so verifying never disturbs the processors. Progress goes to stderr about once a second on
//! long reads.

use evalstream_runtime::time::format_rfc3339_ms_aligned;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use evalstream_audit::offline::bounds::{Bound, OffsetRange};
use evalstream_audit::offline::range::{anchor_candidates, PartitionReport, RangeCheck};
use evalstream_audit::offline::search::{locate_time, OffsetProbe, Probe};
use evalstream_audit::records::{ChainRecord, ChainRecordBody, VerificationResult};
use evalstream_audit::trust::SignerRegistry;
use evalstream_audit::CHAIN_TOPIC;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka::{self, ReaderContext};
use evalstream_runtime::reader::{CommittedReader, ReadRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::TimeBasis;
use crate::cmd::common::{partition_ids, METADATA_TIMEOUT};

/// First look-back when searching for the checkpoint before a range, in records; grows 4× per
/// attempt. Checkpoints come every `checkpoint_every` entries (1000 by default) or sooner.
const FIRST_WINDOW: i64 = 1024;

/// Longest wait for a single probed record before the broker is declared unresponsive.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// A decoded `audit.chain` record, or why it did not decode.
pub type Decoded = Result<ChainRecord, String>;

/// What a sink is given for every record read: the raw record and its decoding.
pub type Sink<'s> = dyn FnMut(&ReadRecord, &Decoded) -> anyhow::Result<()> + 's;

/// Decodes one `audit.chain` record.
pub fn decode(codec: &Codec, r: &ReadRecord) -> Decoded {
    match &r.value {
        None => Err("record has no value (tombstone)".into()),
        Some(v) => ChainRecord::decode(codec, v),
    }
}

/// Progress of a read of the chain: records read, with rate and ETA once the total is known
/// (crate::progress: a bar on a terminal, JSON lines with `--progress json`, else nothing).
pub struct Progress {
    inner: crate::progress::Progress,
}

impl Progress {
    /// A progress reporter for `label`, shown as `mode` says.
    pub fn new(label: impl Into<String>, mode: crate::progress::ProgressMode) -> Self {
        Progress { inner: crate::progress::Progress::new(mode, label, "records") }
    }

    /// Sets the number of records the read is expected to cover (for the ETA).
    pub fn expect(&mut self, total: u64) {
        self.inner.set_total(total);
    }

    /// Counts one record read (at `offset`).
    pub fn tick(&mut self, _offset: i64) {
        self.inner.inc(1);
    }

    /// Ends the read: a final bar state or JSON line.
    pub fn done(&mut self) {
        self.inner.finish();
    }
}

/// How a time bound was turned into an offset (reported in `--json`, and the proof that the
/// broker's answer was checked).
#[derive(Debug, Clone, Serialize)]
pub struct LocatedBound {
    /// `from` or `to`.
    pub bound: &'static str,
    /// The time, ms since the Unix epoch.
    pub time_ms: i64,
    /// The time as RFC 3339.
    pub time: String,
    /// `event` or `log`.
    pub basis: &'static str,
    /// Offset of the first record at or after the time (`None`: none).
    pub offset: Option<i64>,
    /// What offsets-for-times answered.
    pub broker_hint: Option<i64>,
    /// Whether that answer was right.
    pub hint_correct: bool,
    /// Records read to check or correct it.
    pub probes: usize,
}

/// A partition's range in offsets, with how it was found.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The chain.
    pub partition: u32,
    /// The offsets.
    pub range: OffsetRange,
    /// Time bounds and how they were located.
    pub located: Vec<LocatedBound>,
    /// Remarks for the report.
    pub notes: Vec<String>,
}

/// `audit.chain` on the broker.
pub struct Broker<'a> {
    cfg: &'a RuntimeConfig,
    codec: &'a Codec,
    reader: CommittedReader,
}

impl<'a> Broker<'a> {
    /// Access to `cfg`'s cluster and topic prefix.
    pub fn new(cfg: &'a RuntimeConfig, codec: &'a Codec) -> anyhow::Result<Self> {
        let reader = CommittedReader::new(cfg, codec).context("creating a reader")?;
        Ok(Broker { cfg, codec, reader })
    }

    /// The codec.
    pub fn codec(&self) -> &Codec {
        self.codec
    }

    /// Physical name of `audit.chain`.
    pub fn topic(&self) -> String {
        self.cfg.topic(CHAIN_TOPIC)
    }

    fn consumer(&self) -> anyhow::Result<BaseConsumer<ReaderContext>> {
        kafka::reader(self.cfg)
            .set("auto.offset.reset", "error")
            // A probe wants one record now; some brokers hold every fetch for the maximum wait.
            .set("fetch.wait.max.ms", "10")
            .create_with_context(ReaderContext)
            .context("creating a reader")
    }

    /// The partitions to read: `wanted`, checked against the topic, or all of them.
    pub fn partitions(&self, wanted: &[u32]) -> anyhow::Result<Vec<u32>> {
        let topic = self.topic();
        let consumer = self.consumer()?;
        let all = partition_ids(consumer.client(), &topic)?
            .with_context(|| format!("topic {topic} does not exist"))?;
        let all: Vec<u32> = all.into_iter().filter_map(|p| u32::try_from(p).ok()).collect();
        if wanted.is_empty() {
            return Ok(all);
        }
        let mut out: Vec<u32> = wanted.to_vec();
        out.sort_unstable();
        out.dedup();
        if let Some(p) = out.iter().find(|p| !all.contains(p)) {
            bail!("topic {topic} has no partition {p} (it has {})", all.len());
        }
        Ok(out)
    }

    fn watermarks(&self, p: u32) -> anyhow::Result<(i64, i64)> {
        self.reader.watermarks(CHAIN_TOPIC, p as i32).context("reading watermarks")
    }

    /// Calls `f` for each record of partition `p` from `from` until it returns false or the
    /// end of the partition.
    pub fn scan(&self, p: u32, from: i64, f: impl FnMut(ReadRecord) -> bool) -> anyhow::Result<()> {
        self.reader
            .scan(CHAIN_TOPIC, p as i32, from, f)
            .with_context(|| format!("reading {} partition {p}", self.topic()))
    }

    /// The broker's offsets-for-times answer, as a hint (`None` when it has none or fails).
    fn offsets_for_times(&self, p: u32, time_ms: i64) -> Option<i64> {
        let consumer = self.consumer().ok()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic(), p as i32, Offset::Offset(time_ms)).ok()?;
        let answer = consumer.offsets_for_times(tpl, METADATA_TIMEOUT).ok()?;
        let element = answer.elements_for_topic(&self.topic()).into_iter().next()?;
        match element.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        }
    }

    /// The offset after the last readable record of partition `p`, established by reading from
    /// just before the high watermark (exact on Kafka; on our local broker it is the base offset
    /// of the last batch + 1, and a read past the true end would wait forever).
    fn log_end(&self, p: u32, (low, high): (i64, i64)) -> anyhow::Result<i64> {
        let mut last = None;
        if high > low {
            self.scan(p, (high - 1).max(low), |r| {
                last = Some(r.offset);
                true
            })?;
        }
        Ok(last.map_or(high.max(low), |o| (o + 1).max(high)))
    }

    fn locate(
        &self,
        p: u32,
        bound: &'static str,
        time_ms: i64,
        basis: TimeBasis,
        (low, end): (i64, i64),
    ) -> anyhow::Result<LocatedBound> {
        let hint = self.offsets_for_times(p, time_ms);
        let mut probe = BrokerProbe {
            consumer: self.consumer()?,
            topic: self.topic(),
            partition: p as i32,
            codec: self.codec,
            basis,
        };
        let located = locate_time(&mut probe, time_ms, low, end, hint).with_context(|| {
            format!("locating {} in partition {p}", format_rfc3339_ms_aligned(time_ms))
        })?;
        Ok(LocatedBound {
            bound,
            time_ms,
            time: format_rfc3339_ms_aligned(time_ms),
            basis: match basis {
                TimeBasis::Event => "event",
                TimeBasis::Log => "log",
            },
            offset: located.offset,
            broker_hint: located.hint,
            hint_correct: located.hint_correct,
            probes: located.probes,
        })
    }

    /// Turns `--from` / `--to` into offsets of partition `p`, checking every time against the
    /// records themselves.
    pub fn resolve(
        &self,
        p: u32,
        from: Option<Bound>,
        to: Option<Bound>,
        basis: TimeBasis,
    ) -> anyhow::Result<Resolved> {
        let marks = self.watermarks(p)?;
        let (low, _) = marks;
        let span = if matches!(from, Some(Bound::Time(_))) || matches!(to, Some(Bound::Time(_))) {
            (low, self.log_end(p, marks)?)
        } else {
            marks
        };
        let mut located = Vec::new();
        let mut notes = Vec::new();
        let start = match from {
            None => low,
            Some(Bound::Offset(o)) => {
                if o < low {
                    notes.push(format!("--from offset {o} is before the log start {low}"));
                }
                o.max(low)
            }
            Some(Bound::Time(t)) => {
                let l = self.locate(p, "from", t, basis, span)?;
                let start = l.offset.unwrap_or(OffsetRange::OPEN);
                if l.offset.is_none() {
                    notes.push(format!("no record at or after --from {}", l.time));
                }
                located.push(l);
                start
            }
        };
        let end = match to {
            None => OffsetRange::OPEN,
            Some(Bound::Offset(o)) => o.saturating_add(1),
            Some(Bound::Time(t)) => {
                let l = self.locate(p, "to", t, basis, span)?;
                let end = l.offset.unwrap_or(OffsetRange::OPEN);
                located.push(l);
                end
            }
        };
        Ok(Resolved { partition: p, range: OffsetRange { start, end }, located, notes })
    }

    /// Verifies the resolved range of one partition, calling `sink` with every record read
    /// (the anchor checkpoint first). Stops at the first signed checkpoint that covers the
    /// range, or at the end of the partition.
    pub fn read_range(
        &self,
        resolved: &Resolved,
        registry: Option<&SignerRegistry>,
        progress: &mut Progress,
        sink: &mut Sink<'_>,
    ) -> anyhow::Result<PartitionReport> {
        let p = resolved.partition;
        let range = resolved.range;
        if range.is_empty() {
            let mut check = RangeCheck::from_genesis(p, range, registry.is_some());
            for n in &resolved.notes {
                check.add_note(n.clone());
            }
            return Ok(check.finish());
        }
        let (mut check, from) = self.anchor(p, range, registry, sink)?;
        // The end the read heads for: the range's end, else the partition's end now (a read
        // may stop earlier, at the first covering checkpoint; the final line says how many).
        let high = self.watermarks(p)?.1;
        let end = if range.end == OffsetRange::OPEN { high } else { range.end.min(high) };
        progress.expect(end.saturating_sub(from).max(0) as u64);
        for n in &resolved.notes {
            check.add_note(n.clone());
        }
        let mut failed: Option<anyhow::Error> = None;
        self.scan(p, from, |r| {
            progress.tick(r.offset);
            let decoded = decode(self.codec, &r);
            if let Err(e) = sink(&r, &decoded) {
                failed = Some(e);
                return false;
            }
            let flow = check.feed(r.offset, decoded.as_ref().map_err(String::as_str), registry);
            flow == evalstream_audit::offline::range::Flow::Continue
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(check.finish())
    }

    /// Finds the checkpoint to resume from (see `offline::range`), hands it to `sink`, and
    /// returns the check started from it and the offset to read on from.
    fn anchor(
        &self,
        p: u32,
        range: OffsetRange,
        registry: Option<&SignerRegistry>,
        sink: &mut Sink<'_>,
    ) -> anyhow::Result<(RangeCheck, i64)> {
        let (low, high) = self.watermarks(p)?;
        let mut span = FIRST_WINDOW;
        let mut rejected: HashSet<i64> = HashSet::new();
        let mut findings: Vec<VerificationResult> = Vec::new();
        loop {
            // Never start past the (hinted) end: an offset beyond the log would rewind.
            let x = range.start.saturating_sub(span).clamp(low, high.max(low));
            let mut window: Vec<(ReadRecord, Decoded)> = Vec::new();
            self.scan(p, x, |r| {
                let decoded = decode(self.codec, &r);
                let entry_after_start = r.offset >= range.start
                    && matches!(&decoded, Ok(ChainRecord { body: ChainRecordBody::Entry(_), .. }));
                window.push((r, decoded));
                !entry_after_start
            })?;
            let view: Vec<(i64, Option<ChainRecord>)> =
                window.iter().map(|(r, d)| (r.offset, d.as_ref().ok().cloned())).collect();
            for i in anchor_candidates(&view, range.start, x <= low) {
                let (raw, decoded) = &window[i];
                let Ok(ChainRecord { body: ChainRecordBody::Checkpoint(cp), .. }) = decoded else {
                    continue;
                };
                if !rejected.insert(raw.offset) {
                    continue;
                }
                match RangeCheck::from_anchor(p, range, raw.offset, cp, registry) {
                    Ok(mut check) => {
                        for f in &findings {
                            check.add_failure(f);
                        }
                        sink(raw, decoded)?;
                        return Ok((check, raw.offset + 1));
                    }
                    Err(finding) => findings.push(*finding),
                }
            }
            if x <= low {
                let mut check = RangeCheck::from_genesis(p, range, registry.is_some());
                for f in &findings {
                    check.add_failure(f);
                }
                if low > 0 {
                    check.add_note(format!(
                        "no checkpoint before the range; verifying from the log start (offset \
                         {low}), which must be the chain's first entry"
                    ));
                }
                return Ok((check, low));
            }
            span = span.saturating_mul(4);
        }
    }
}

/// Reads single records of one partition for the time search.
struct BrokerProbe<'c> {
    consumer: BaseConsumer<ReaderContext>,
    topic: String,
    partition: i32,
    codec: &'c Codec,
    basis: TimeBasis,
}

fn out_of_range(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
    )
}

impl OffsetProbe for BrokerProbe<'_> {
    type Error = anyhow::Error;

    fn probe(&mut self, offset: i64) -> anyhow::Result<Option<Probe>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset))?;
        // A fresh assignment: librdkafka drops whatever was fetched for the previous probe.
        self.consumer.assign(&tpl).context("assigning the partition")?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Ok(m)) => {
                    if m.partition() != self.partition || m.offset() < offset {
                        continue;
                    }
                    let time = match self.basis {
                        TimeBasis::Log => m.timestamp().to_millis(),
                        TimeBasis::Event => {
                            match m.payload().map(|v| ChainRecord::decode(self.codec, v)) {
                                Some(Ok(ChainRecord {
                                    body: ChainRecordBody::Entry(e), ..
                                })) => Some(e.occurred_at),
                                _ => None,
                            }
                        }
                    };
                    if let Some(time_ms) = time {
                        return Ok(Some(Probe { offset: m.offset(), time_ms }));
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) if p == self.partition => return Ok(None),
                Some(Err(e)) if out_of_range(&e) => return Ok(None),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "probe read error (retrying)");
                }
            }
        }
        bail!(
            "no record or end of partition within {} s reading {}[{}] at offset {offset}",
            PROBE_TIMEOUT.as_secs(),
            self.topic,
            self.partition
        )
    }
}
