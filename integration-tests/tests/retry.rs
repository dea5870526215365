//! Retry topic: a record that cannot be processed *yet* (a settlement before its allocation)
//! goes through `<topic>.retry` with backoff and is processed once its dependency arrives; one
//! whose dependency never arrives is dead-lettered as `retries_exhausted` after the last attempt.
//! The engine runs in-process here with a small test processor (pure logic, like any processor).
#![cfg(feature = "broker")]

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::engine::{self, EngineOptions};
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::headers;
use evalstream_runtime::metrics::Metrics;
use evalstream_runtime::ops::Health;
use evalstream_runtime::processor::{Context, Input, Output, Processor};
use evalstream_totals::{TotalsInput, TotalsUpdate};

/// `A:<id>` declares an allocation; `S:<id>` settles it and needs the declaration first.
struct Settle;

impl Processor for Settle {
    fn name(&self) -> &str {
        "retry-test"
    }
    fn inputs(&self) -> Vec<String> {
        vec!["rt.input".into()]
    }
    fn process(&mut self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let TotalsInput { key, .. } = input.decode()?;
        let (kind, id) = key.split_once(':').ok_or_else(|| ProcessError::Invalid(key.clone()))?;
        match kind {
            "A" => ctx.state().put(id, &"declared")?,
            "S" if ctx.state().contains(id) => {
                let settled = TotalsUpdate {
                    key: key.clone(),
                    amount: input.attempt as i64,
                    total: 0,
                    source_topic: input.topic.into(),
                    source_partition: input.partition,
                    source_offset: input.offset,
                };
                ctx.emit(Output::record("rt.output", &key, &settled)?);
            }
            "S" => return Err(ProcessError::NotReady(format!("allocation {id} not known yet"))),
            _ => return Err(ProcessError::Invalid(key)),
        }
        Ok(())
    }
}

fn config(prefix: &str, instance: &str) -> RuntimeConfig {
    let mut cfg = RuntimeConfig::load_with(
        None,
        &[("KAFKA_BOOTSTRAP_SERVERS".into(), it::bootstrap_servers())],
    )
    .unwrap();
    cfg.topic_prefix = prefix.to_string();
    cfg.instance_id = instance.into();
    cfg.session_timeout_ms = 6000;
    cfg.ops_listen = None;
    if it::broker_leaks_aborted() {
        cfg.committed_view = evalstream_runtime::config::CommittedView::Markers;
    }
    cfg
}

/// The test processor on the engine, in this process.
fn spawn(
    cfg: RuntimeConfig,
    codec: &Codec,
    metrics: &Arc<Metrics>,
    shutdown: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<(), evalstream_runtime::error::RuntimeError>> {
    engine::spawn(
        Settle,
        EngineOptions {
            config: cfg,
            codec: codec.clone(),
            metrics: metrics.clone(),
            health: Health::new("retry-test"),
            shutdown: shutdown.clone(),
            fail_points: engine::FailPoints::none(),
        },
    )
    .unwrap()
}

fn rec(codec: &Codec, topic: &str, key: &str) -> it::RawRecord {
    let input = TotalsInput { key: key.into(), amount: 1, payload: String::new() };
    it::RawRecord::new(codec.encode_record(topic, &input).unwrap()).partition(0)
}

#[test]
fn not_ready_records_are_retried_with_backoff_then_dead_lettered() {
    evalstream_runtime::telemetry::init();
    let prefix = format!("{}.", it::unique_name("retry"));
    let input = format!("{prefix}rt.input");
    it::create_topic(&input, 1);
    it::create_topic(&format!("{prefix}rt.output"), 1);
    let codec = Codec::from_env().unwrap();
    let mut cfg = config(&prefix, "rt0");
    cfg.retry.max_attempts = 3;
    // Attempts at +1 s and +3 s: the allocation (produced once S:1 is seen on the retry topic)
    // is there before S:1's last attempt.
    cfg.retry.initial_backoff_ms = 1000;
    let shutdown = Arc::new(AtomicBool::new(false));
    let handle = spawn(cfg, &codec, &Metrics::new("retry-test"), &shutdown);

    // The settlement of 1 arrives before its allocation; 2 is never allocated.
    let coords = it::produce_raw(&input, &[rec(&codec, &input, "S:1"), rec(&codec, &input, "S:2")]);
    // The allocation comes only once S:1 has been sent to the retry topic.
    let retry_topic = format!("{prefix}rt.input.retry");
    let s1 = coords[0].1.to_string();
    it::wait_until("S:1 to go to the retry topic", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(200));
        it::partition_count(&retry_topic) > 0
            && it::read_topic(&retry_topic)
                .iter()
                .any(|r| r.header_str(headers::RETRY_OFFSET) == Some(s1.as_str()))
    });
    it::produce_raw(&input, &[rec(&codec, &input, "A:1")]);

    it::wait_until("S:2 to be dead-lettered and S:1 settled", Duration::from_secs(90), || {
        std::thread::sleep(Duration::from_millis(300));
        !it::read_topic(&format!("{prefix}rt.input.dlq")).is_empty()
            && !it::read_topic(&format!("{prefix}rt.output")).is_empty()
    });
    shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
    handle.join().unwrap().unwrap();

    let outputs = it::read_topic(&format!("{prefix}rt.output"));
    assert_eq!(outputs.len(), 1, "S:1 settled exactly once");
    let o = &outputs[0];
    assert_eq!(o.key_str(), Some("S:1"));
    // Its source is the original record, not the retry copy.
    assert_eq!(
        o.header_str(headers::SOURCE),
        Some(headers::coordinate(&input, coords[0].0, coords[0].1).as_str())
    );
    let settled: TotalsUpdate = codec.decode_record(o.value.as_deref().unwrap()).unwrap();
    assert!(settled.amount >= 2, "settled on a retry attempt: {}", settled.amount);

    let dlq = it::read_topic(&format!("{prefix}rt.input.dlq"));
    assert_eq!(dlq.len(), 1);
    let d = &dlq[0];
    assert_eq!(d.header_str(headers::ERR_CLASS), Some("retries_exhausted"));
    assert_eq!(d.header_str(headers::ERR_ATTEMPTS), Some("3"));
    assert_eq!(d.header_str(headers::ERR_TOPIC), Some(input.as_str()));
    assert_eq!(d.header_str(headers::ERR_OFFSET), Some(coords[1].1.to_string().as_str()));

    // The retry topic saw S:2 twice (attempts 2 and 3) with growing due times, and S:1 at least once.
    let retries = it::read_topic(&format!("{prefix}rt.input.retry"));
    let s2: Vec<_> = retries
        .iter()
        .filter(|r| r.header_str(headers::RETRY_OFFSET) == Some(coords[1].1.to_string().as_str()))
        .collect();
    let attempts: Vec<&str> =
        s2.iter().filter_map(|r| r.header_str(headers::RETRY_ATTEMPT)).collect();
    assert_eq!(attempts, vec!["2", "3"]);
}

/// A retry partition paused until its record is due, then revoked and assigned back to the same
/// instance by a rebalance before that time: the record is still retried. (librdkafka keeps the
/// pause flag across re-assignment while the engine forgets why it paused; before the fix the
/// partition stayed paused for good and the record never came back.)
#[test]
fn a_retry_pending_across_a_rebalance_is_still_retried() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    evalstream_runtime::telemetry::init();
    let prefix = format!("{}.", it::unique_name("retry-rebalance"));
    let group = it::unique_name("retry-rebalance-group");
    let input = format!("{prefix}rt.input");
    let other = format!("{prefix}unrelated");
    it::create_topic(&input, 1);
    it::create_topic(&format!("{prefix}rt.output"), 1);
    it::create_topic(&other, 1);
    let codec = Codec::from_env().unwrap();
    let mut cfg = config(&prefix, "rt0");
    cfg.group_id = Some(group.clone());
    cfg.retry.max_attempts = 2;
    // Long enough for the rebalance below to happen while the retry is pending.
    cfg.retry.initial_backoff_ms = 15_000;
    let metrics = Metrics::new("retry-test");
    let shutdown = Arc::new(AtomicBool::new(false));
    let handle = spawn(cfg, &codec, &metrics, &shutdown);
    let assigns = |m: &Metrics| {
        m.encode()
            .lines()
            .filter(|l| {
                l.starts_with("evalstream_rebalances_total") && l.contains(r#"kind="assign""#)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    it::wait_until("the instance to own its partitions", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(100));
        assigns(&metrics) >= 1.0
    });

    // S:1 before its allocation: it goes to the retry topic, due 15 s later.
    it::produce_raw(&input, &[rec(&codec, &input, "S:1")]);
    let retry_topic = format!("{prefix}rt.input.retry");
    let mut due_ms = 0i64;
    it::wait_until("S:1 to go to the retry topic", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(200));
        if it::partition_count(&retry_topic) == 0 {
            return false;
        }
        let retries = it::read_topic(&retry_topic);
        match retries.first().and_then(|r| r.header_str(headers::RETRY_NOT_BEFORE)) {
            Some(t) => {
                due_ms = t.parse().unwrap();
                true
            }
            None => false,
        }
    });
    it::produce_raw(&input, &[rec(&codec, &input, "A:1")]);

    // A member that subscribes to another topic joins the group: the instance's partitions
    // (the eager protocol: all of them) are revoked and assigned back to it.
    let before = assigns(&metrics);
    let joiner: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", it::bootstrap_servers())
        .set("group.id", &group)
        .set("partition.assignment.strategy", "range,roundrobin")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    joiner.subscribe(&[other.as_str()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while assigns(&metrics) <= before || joiner.assignment().unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "no rebalance within 60 s");
        let _ = joiner.poll(Duration::from_millis(100));
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    // The fault happened: the partitions moved while S:1's retry was still waiting.
    assert!(now_ms < due_ms, "the rebalance ended {} ms after S:1 was due", now_ms - due_ms);

    it::wait_until("S:1 to be settled after its due time", Duration::from_secs(90), || {
        let _ = joiner.poll(Duration::from_millis(200));
        !it::read_topic(&format!("{prefix}rt.output")).is_empty()
    });
    shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
    handle.join().unwrap().unwrap();
    drop(joiner);

    let outputs = it::read_topic(&format!("{prefix}rt.output"));
    assert_eq!(outputs.len(), 1, "S:1 settled exactly once");
    assert_eq!(outputs[0].key_str(), Some("S:1"));
    assert!(it::read_topic(&format!("{prefix}rt.input.dlq")).is_empty(), "nothing dead-lettered");
}
