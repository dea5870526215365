//! End-to-end latency at a fixed input rate: input record timestamp → output visible to a
//! `read_committed` reader.
//!
//! A fresh, empty input; the system is started and warmed up (one record per partition must come
//! out before the clock matters); then records are produced at `rate` for `--latency-seconds`,
//! each with its send time as the record timestamp. A reader thread consumes the output with
//! `read_committed` and notes when each output became visible; afterwards the input is read back
//! to pair each output's source (partition, offset) with its input's timestamp. The latency thus
//! includes the producer's batching, the broker, the system's processing and its commit (an
//! exactly-once output is invisible until its transaction commits), and the reader's fetch.
//!
//! The raw pass-through is measured the same way at the same rate, as the floor this machine and
//! broker set: it copies each input's timestamp onto its output, which the reader sees as soon as
//! it is written (no transaction), so its latency is the producer, the broker, one consume and one
//! produce, and the reader, with the benchmark's own producer competing for the same cores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::peer::KafkaStreams;
use super::proc::{busy_between, machine_ticks};
use super::report::{quantile, LatencyFigures};
use super::totals::{start, Kind};
use super::verify::Update;
use super::{create_topics, fresh, input_record, Args, Ctx, Input, Topics, TOTALS_KEYS};

/// Output visibility: (source partition, source offset) → (wall-clock ms it became visible, the
/// input timestamp it carries when the system copies it: the raw pass-through). The raw
/// pass-through keys by the output's own (partition, offset), as its outputs name no source.
type Seen = Arc<Mutex<HashMap<(i32, i64), (i64, Option<i64>)>>>;

/// Measures `kind`'s latency at `rate` records/s.
pub(crate) fn run(
    ctx: &Ctx,
    base: &RuntimeConfig,
    codec: &Codec,
    args: &Args,
    kind: Kind,
    peer: Option<&KafkaStreams>,
    rate: f64,
) -> anyhow::Result<LatencyFigures> {
    let cfg = fresh(base);
    let _topics = Topics::under(&cfg);
    let input = cfg.topic(evalstream_totals::INPUT);
    let partitions = args.partitions;
    create_topics(&cfg, &[input.clone(), cfg.topic(evalstream_totals::OUTPUT)], partitions)?;
    let total = (rate * args.latency_seconds).ceil().max(1.0) as u64;
    // The raw pass-through stops after the records it is told of: the warm-up's count too.
    let mut s = start(kind, ctx, &cfg, partitions, total + partitions as u64, "latency", peer)?;

    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (cfg, codec, output, seen, stop) =
            (cfg.clone(), codec.clone(), s.output.clone(), seen.clone(), stop.clone());
        let raw = kind == Kind::Raw;
        std::thread::spawn(move || watch(&cfg, &codec, &output, partitions, raw, &seen, &stop))
    };
    let result = (|| -> anyhow::Result<(i64, Option<f64>, f64)> {
        // librdkafka's default linger (and the runtime's own): with 0 the broker served a produce
        // request for every few records, and this load generator and the broker took CPU the
        // system under test then lacked on this two-core machine.
        let producer: ThreadedProducer<DefaultProducerContext> =
            kafka::plain_producer(&cfg).set("linger.ms", "5").create()?;
        let filler = "x".repeat(args.record_bytes.saturating_sub(40));
        // Record `1000 + sent` is the same as record `1000 + sent % TOTALS_KEYS` (key and amount
        // repeat with that period), so the inputs are encoded once, before the clock starts, and
        // the generator's CPU in the window is sending alone.
        let ring = (0..TOTALS_KEYS)
            .map(|i| input_record(codec, Input::Totals, &input, 1000 + i, &filler))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Warm-up: one record per partition (offset 0 of each), excluded from the figures.
        for p in 0..partitions {
            let (key, bytes) = input_record(codec, Input::Totals, &input, p as u64, &filler)?;
            producer
                .send(BaseRecord::to(&input).key(key.as_bytes()).payload(&bytes).partition(p))
                .map_err(|(e, _)| e)?;
        }
        wait_for(&mut s, &seen, partitions as usize, Duration::from_secs(180))?;

        let started = Instant::now();
        let started_ms = now_ms();
        let (ticks0, cpu0) = (machine_ticks(), s.child.sample().cpu_s);
        let mut sent = 0u64;
        while sent < total {
            let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
            while sent < due {
                let (key, bytes) = &ring[(sent % TOTALS_KEYS) as usize];
                let mut rec = BaseRecord::<[u8], [u8]>::to(&input)
                    .key(key.as_bytes())
                    .payload(bytes)
                    .timestamp(now_ms());
                loop {
                    match producer.send(rec) {
                        Ok(()) => break,
                        Err((_, r)) => {
                            rec = r;
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                }
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        producer.flush(Duration::from_secs(30))?;
        wait_for(&mut s, &seen, partitions as usize + total as usize, Duration::from_secs(120))?;
        let window = started.elapsed().as_secs_f64();
        let busy = busy_between(ticks0, machine_ticks());
        Ok((started_ms, busy, (s.child.sample().cpu_s - cpu0) / window))
    })();
    stop.store(true, Ordering::SeqCst);
    let _ = reader.join();
    s.stop()?;
    let (started_ms, machine_busy, system_cores) = result?;

    // Input timestamps by (partition, offset), read back from the input itself.
    let mut sent_at: HashMap<(i32, i64), i64> = HashMap::new();
    {
        let consumer: BaseConsumer<kafka::ReaderContext> =
            kafka::reader(&cfg).create_with_context(kafka::ReaderContext)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&input, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut eof = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while eof < partitions && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if let Some(ts) = m.timestamp().to_millis() {
                        sent_at.insert((m.partition(), m.offset()), ts);
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
    }
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    // (input timestamp, visible at) of every measured record, in send order: written next to
    // the child logs, so a latency that grows during the run (a backlog) can be told from a
    // steady one. The warm-up records (offset 0 of each input partition, sent before the clock
    // started) are left out.
    let mut pairs: Vec<(i64, i64)> = seen
        .iter()
        .filter_map(|(src, (at, carried))| match carried {
            Some(ts) => (*ts >= started_ms).then_some((*ts, *at)),
            None => (src.1 > 0).then(|| sent_at.get(src).map(|ts| (*ts, *at))).flatten(),
        })
        .collect();
    pairs.sort_unstable();
    let tsv: String = pairs.iter().map(|(ts, at)| format!("{ts}\t{at}\t{}\n", at - ts)).collect();
    let _ = std::fs::write(ctx.log(&format!("latency-{}", kind_name(kind))), tsv);
    let latencies: Vec<f64> = pairs.iter().map(|(ts, at)| (at - ts) as f64).collect();
    anyhow::ensure!(!latencies.is_empty(), "no latency measured");
    Ok(LatencyFigures {
        system: kind_name(kind).into(),
        rate,
        records: latencies.len(),
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        max_ms: quantile(&latencies, 1.0),
        machine_busy,
        system_cores,
    })
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Raw => "raw",
        Kind::Evalstream => "evalstream",
        Kind::KafkaStreams => "kafka-streams",
    }
}

/// Waits until `n` outputs are visible; fails if the system dies or `timeout` passes.
fn wait_for(
    s: &mut super::totals::Started,
    seen: &Seen,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let have = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
        if have >= n {
            return Ok(());
        }
        s.child.ensure_running(&s.log)?;
        anyhow::ensure!(Instant::now() < deadline, "only {have} of {n} outputs after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The reader: notes when each output becomes visible to `read_committed`.
fn watch(
    cfg: &RuntimeConfig,
    codec: &Codec,
    output: &str,
    partitions: i32,
    raw: bool,
    seen: &Seen,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer<kafka::ReaderContext> = kafka::reader(cfg)
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(kafka::ReaderContext)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(output, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    while !stop.load(Ordering::SeqCst) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(10)) {
            let at = now_ms();
            if raw {
                if let Some(ts) = m.timestamp().to_millis() {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((m.partition(), m.offset()), (at, Some(ts)));
                }
            } else if let Some(v) = m.payload() {
                if let Ok(u) = Update::decode(codec, v) {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((u.source_partition, u.source_offset), (at, None));
                }
            }
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
