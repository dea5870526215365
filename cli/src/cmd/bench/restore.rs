//! `--suite restore`: the runtime's state restore of a changelog with `--records` keys
//! (default 1M) next to a raw consume of the same topic.
//!
//! The changelog is written the way the engine writes one: state entries (`0x01` + key, an
//! 8-byte total) in batches of 10 000 per partition, each batch followed by a progress marker,
//! so restore applies every entry. Restore goes through the runtime's own restore code path
//! (`engine::restore_changelog`: one committed reader for all partitions, to the true end, as an
//! assignment or a recovery does); the raw side is one `read_committed` consumer over all
//! partitions counting records, nothing decoded. Runs alternate; the ratio is restore ÷ raw in
//! records/s.

use std::time::{Duration, Instant};

use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::engine;
use evalstream_runtime::kafka;
use evalstream_runtime::progress::{ProgressMarker, ProgressPosition};
use evalstream_runtime::reader::CommittedReader;
use evalstream_runtime::state;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::progress::RunFigures;
use super::report::{Report, SystemFigures};
use super::{create_topics, fresh, Args, Topics};

/// State entries per transaction in the generated changelog (one marker after each).
const BATCH: u64 = 10_000;

/// Runs the suite.
pub(crate) fn run(base: &RuntimeConfig, codec: &Codec, args: &Args) -> anyhow::Result<Report> {
    let mut report = Report::new("restore", args);
    let keys = args.records();
    let cfg = fresh(base);
    let _topics = Topics::under(&cfg);
    let changelog = cfg.topic("bench.restore.changelog");
    create_topics(&cfg, std::slice::from_ref(&changelog), args.partitions)?;
    eprintln!("writing {keys} keys to {changelog}");
    let records = fill(&cfg, codec, &changelog, keys, args.partitions)?;

    let mut raw = SystemFigures::new("raw consume");
    let mut restore = SystemFigures::new("runtime restore");
    for run in 1..=args.runs {
        let started = Instant::now();
        let n = raw_consume(&cfg, &changelog, args.partitions)?;
        anyhow::ensure!(n == records, "raw consume read {n} of {records} records");
        raw.runs.push(figures(n, started));

        let started = Instant::now();
        let reader = CommittedReader::new(&cfg, codec)?;
        let partitions: Vec<i32> = (0..args.partitions).collect();
        let restored: usize = engine::restore_changelog(&reader, &changelog, &partitions)?
            .values()
            .map(|r| r.state.len())
            .sum();
        anyhow::ensure!(restored as u64 == keys, "restore found {restored} of {keys} keys");
        restore.runs.push(figures(records, started));
        eprintln!(
            "run {run}: raw consume {:>9.0} records/s  restore {:>9.0} records/s ({restored} keys)",
            raw.runs[run - 1].rate,
            restore.runs[run - 1].rate
        );
    }
    let ratio = restore.rate() / raw.rate();
    report.ratios.push(("restore ÷ raw consume (records/s)".into(), ratio));
    report.extra.push(("changelog records (entries + markers)".into(), records as f64));
    report.systems = vec![raw, restore];
    report.set_targets(&[("restore_vs_raw", (keys >= 1_000_000).then_some(ratio))]);
    Ok(report)
}

fn figures(n: u64, started: Instant) -> RunFigures {
    RunFigures {
        rate: n as f64 / started.elapsed().as_secs_f64(),
        counted: n,
        ..RunFigures::default()
    }
}

/// Writes `keys` state entries and a marker after every [`BATCH`] entries of a partition;
/// returns the number of records written.
fn fill(
    cfg: &RuntimeConfig,
    codec: &Codec,
    changelog: &str,
    keys: u64,
    partitions: i32,
) -> anyhow::Result<u64> {
    // Compressed as the engine's producer compresses its changelog, so that the restore reads
    // (and decompresses) what a real one reads.
    let producer: ThreadedProducer<DefaultProducerContext> = kafka::plain_producer(cfg)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", cfg.compression.as_str())
        .create()?;
    let input = cfg.topic(evalstream_totals::INPUT);
    let mut written = 0u64;
    let mut per_partition = vec![0u64; partitions as usize];
    let send = |key: &[u8], value: &[u8], p: i32| -> anyhow::Result<()> {
        let mut rec = BaseRecord::<[u8], [u8]>::to(changelog).key(key).payload(value).partition(p);
        loop {
            match producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    };
    let marker = |p: i32, next: i64| -> anyhow::Result<Vec<u8>> {
        let marker = ProgressMarker {
            partition: p,
            txn: format!("bench-{p}-{next}"),
            instance: "bench".into(),
            commit_seq: (next + BATCH as i64 - 1) / BATCH as i64,
            positions: vec![ProgressPosition { topic: input.clone(), next_offset: next }],
        };
        Ok(codec.encode_record(changelog, &marker)?)
    };
    let marker_key = state::marker_changelog_key();
    for i in 0..keys {
        let p = (i % partitions as u64) as i32;
        let key = state::state_changelog_key(format!("key-{i}").as_bytes());
        send(&key, &(i as i64).to_le_bytes(), p)?;
        written += 1;
        let n = &mut per_partition[p as usize];
        *n += 1;
        if n.is_multiple_of(BATCH) {
            send(&marker_key, &marker(p, *n as i64)?, p)?;
            written += 1;
        }
    }
    for (p, n) in per_partition.iter().enumerate() {
        if !n.is_multiple_of(BATCH) {
            send(&marker_key, &marker(p as i32, *n as i64)?, p as i32)?;
            written += 1;
        }
    }
    producer.flush(Duration::from_secs(300))?;
    Ok(written)
}

/// Reads every partition of `topic` to its end with one `read_committed` consumer; returns the
/// number of records.
fn raw_consume(cfg: &RuntimeConfig, topic: &str, partitions: i32) -> anyhow::Result<u64> {
    let consumer: BaseConsumer<kafka::ReaderContext> =
        kafka::reader(cfg).create_with_context(kafka::ReaderContext)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let (mut n, mut eof) = (0u64, 0);
    let deadline = Instant::now() + Duration::from_secs(600);
    while eof < partitions {
        anyhow::ensure!(Instant::now() < deadline, "raw consume of {topic} took over 600 s");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(_)) => n += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
            Some(Err(e)) => return Err(e.into()),
        }
    }
    Ok(n)
}
