//! Timing a system under test from outside, the same way for every system.
//!
//! An observer polls a progress count every 20 ms: for an exactly-once system the group's
//! committed offsets on the input (what a restart would resume from: processed *and*
//! committed), for the raw pass-through the output's end offsets (what it has delivered). The
//! clock starts at the first poll that shows progress and stops at the poll that shows every
//! record, so start-up (JVM start, group join, first fetch) and the first transaction are
//! outside the window for every system alike: the rate is steady-state streaming.

use std::path::Path;
use std::time::{Duration, Instant};

use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::proc::{Measured, Usage};

/// How progress is observed.
pub(crate) enum Probe {
    /// Sum of `group`'s committed offsets on the input partitions.
    Committed { consumer: BaseConsumer, tpl: TopicPartitionList },
    /// Sum of the high watermarks of `topic`'s partitions, minus `base`.
    EndOffsets { consumer: BaseConsumer, topic: String, partitions: i32, base: i64 },
}

impl Probe {
    /// Committed offsets of `group` on `input`'s `partitions`.
    pub(crate) fn committed(
        cfg: &RuntimeConfig,
        group: &str,
        input: &str,
        partitions: i32,
    ) -> anyhow::Result<Probe> {
        // read_uncommitted: librdkafka's default (read_committed) asks the broker for stable
        // offsets only (KIP-447), and while a transaction's offsets are pending the broker
        // answers UNSTABLE_OFFSET_COMMIT and librdkafka retries. Under a system that commits
        // every few tens of milliseconds, that can hold a poll back long enough to miss the
        // whole run. What has committed is all the probe counts either way.
        let consumer: BaseConsumer = kafka::base(cfg)
            .set("group.id", group)
            .set("isolation.level", "read_uncommitted")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(input, p);
        }
        Ok(Probe::Committed { consumer, tpl })
    }

    /// End offsets of `topic` (records delivered since the probe was made).
    pub(crate) fn end_offsets(
        cfg: &RuntimeConfig,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<Probe> {
        let consumer: BaseConsumer = kafka::base(cfg).create()?;
        let mut probe =
            Probe::EndOffsets { consumer, topic: topic.to_string(), partitions, base: 0 };
        let base = probe.progress_retrying(Duration::from_secs(30))? as i64;
        if let Probe::EndOffsets { base: b, .. } = &mut probe {
            *b = base;
        }
        Ok(probe)
    }

    /// [`Probe::progress`], retrying transient errors (a leader moving, a coordinator
    /// loading) for up to `within`.
    pub(crate) fn progress_retrying(&self, within: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + within;
        loop {
            match self.progress() {
                Ok(n) => return Ok(n),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("progress probe: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Records done so far.
    pub(crate) fn progress(&self) -> anyhow::Result<u64> {
        let t = Duration::from_secs(10);
        Ok(match self {
            Probe::Committed { consumer, tpl } => {
                let committed = consumer.committed_offsets(tpl.clone(), t)?;
                committed
                    .elements()
                    .iter()
                    .map(|e| match e.offset() {
                        Offset::Offset(o) => o.max(0) as u64,
                        _ => 0,
                    })
                    .sum()
            }
            Probe::EndOffsets { consumer, topic, partitions, base } => {
                let mut sum = 0i64;
                for p in 0..*partitions {
                    sum += consumer.fetch_watermarks(topic, p, t)?.1;
                }
                (sum - base).max(0) as u64
            }
        })
    }
}

/// One timed run of one system.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct RunFigures {
    /// Records per second over the window.
    pub rate: f64,
    /// Records inside the window.
    pub counted: u64,
    /// Seconds from process start to the first visible progress (start-up, join, first commit).
    pub startup_s: f64,
    /// Peak RSS of the process (MiB) when the last record was done.
    pub peak_rss_mib: f64,
    /// CPU seconds of the process from its start until the last record was done.
    pub cpu_s: f64,
    /// CPU microseconds per record inside the window.
    pub cpu_us_per_record: f64,
}

/// Watches `child` until `probe` shows `records` done; at most `timeout`.
pub(crate) fn measure(
    child: &mut Measured,
    log: &Path,
    probe: &Probe,
    records: u64,
    timeout: Duration,
) -> anyhow::Result<RunFigures> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut first: Option<(Instant, u64, Usage)> = None;
    loop {
        child.ensure_running(log)?;
        let done = probe.progress_retrying(Duration::from_secs(30))?;
        let now = Instant::now();
        if done > 0 && first.is_none() {
            first = Some((now, done, child.sample()));
        }
        if done >= records {
            let usage = child.sample();
            let (t0, n0, u0) = first.expect("set above: done > 0");
            let counted = done - n0;
            anyhow::ensure!(
                counted > 0,
                "every record was done at the first observation; use more --records"
            );
            let window = now.duration_since(t0).as_secs_f64();
            return Ok(RunFigures {
                rate: counted as f64 / window,
                counted,
                startup_s: t0.duration_since(started).as_secs_f64(),
                peak_rss_mib: usage.peak_rss_mib,
                cpu_s: usage.cpu_s,
                cpu_us_per_record: (usage.cpu_s - u0.cpu_s) * 1e6 / counted as f64,
            });
        }
        anyhow::ensure!(
            now < deadline,
            "only {done} of {records} records done after {timeout:?}; log: {}",
            log.display()
        );
        // Keep the peak RSS current (VmHWM is gone once the process has exited).
        child.sample();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Watches `child` until `probe` shows `records` done (at most `timeout`) without measuring
/// anything: a set-up step such as building the chain that `--suite audit-verify` then reads,
/// which may well finish before the first observation (the measured runs refuse that).
pub(crate) fn wait_done(
    child: &mut Measured,
    log: &Path,
    probe: &Probe,
    records: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        child.ensure_running(log)?;
        let done = probe.progress_retrying(Duration::from_secs(30))?;
        if done >= records {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {records} records done after {timeout:?}; log: {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
