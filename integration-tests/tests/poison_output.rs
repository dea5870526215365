//! A poison output: an input whose output the broker (or the local producer) refuses, e.g. as
//! too large for the output topic. Aborting and replaying cannot help, so the engine must
//! dead-letter that input with class `output_rejected` and keep going, exactly once.
//!
//! Both ways a record-specific produce error shows up are covered: the broker rejecting the
//! record in its delivery report (the output topic's `max.message.bytes` is small), and the
//! local producer refusing it at `send` (larger than the producer's `message.max.bytes`).
//! The engine runs in-process with a small test processor.
#![cfg(feature = "broker")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::engine::{self, EngineOptions};
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::headers;
use evalstream_runtime::metrics::Metrics;
use evalstream_runtime::ops::Health;
use evalstream_runtime::processor::{Context, Input, Output, Processor};

/// Echoes `payload` repeated `amount` times into the output's `key` field.
struct Echo;

impl Processor for Echo {
    fn name(&self) -> &str {
        "poison-test"
    }
    fn inputs(&self) -> Vec<String> {
        vec!["po.input".into()]
    }
    fn process(&mut self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let Value::Record(fields) = input.value()? else {
            return Err(ProcessError::Invalid("not a record".into()));
        };
        let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let (Some(Value::Long(amount)), Some(Value::String(payload))) =
            (field("amount"), field("payload"))
        else {
            return Err(ProcessError::Invalid("fields".into()));
        };
        let v = Value::Record(vec![
            ("key".into(), Value::String(payload.repeat(*amount as usize))),
            ("amount".into(), Value::Long(*amount)),
            ("total".into(), Value::Long(0)),
            ("source_topic".into(), Value::String(input.topic.into())),
            ("source_partition".into(), Value::Int(input.partition)),
            ("source_offset".into(), Value::Long(input.offset)),
        ]);
        ctx.emit(Output::new("po.output", None, "evalstream.runtime.TotalsUpdate", v));
        Ok(())
    }
}

fn rec(codec: &Codec, topic: &str, key: &str, payload: &str, amount: i64) -> it::RawRecord {
    let v = Value::Record(vec![
        ("key".into(), Value::String(key.into())),
        ("amount".into(), Value::Long(amount)),
        ("payload".into(), Value::String(payload.into())),
    ]);
    it::RawRecord::new(codec.encode(topic, "evalstream.runtime.TotalsInput", &v).unwrap())
        .key(key)
        .partition(0)
}

/// `len` random ASCII letters and digits: no run or repeat long enough for a codec to shrink.
fn incompressible(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len).map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char).collect()
}

#[test]
fn poison_outputs_dead_letter_their_input_and_the_stream_moves_on() {
    evalstream_runtime::telemetry::init();
    let started = Instant::now();
    let prefix = format!("{}.", it::unique_name("poison"));
    let input = format!("{prefix}po.input");
    let output = format!("{prefix}po.output");
    it::create_topic(&input, 1);
    // The broker refuses any output record larger than 4 KiB.
    it::create_topic_with_config(&output, 1, &[("max.message.bytes", "4096")]);
    let codec = Codec::from_env().unwrap();

    // The broker's limit applies to the batch as written, compressed (lz4 by default), so
    // this output must not compress: random letters and digits, 6 KB however it is encoded.
    let big_remote = incompressible(6_000); // output 6 KB: rejected by the broker
    let big_local = "l".repeat(400_000); // output 1.2 MB: refused by the local producer
    let records = vec![
        rec(&codec, &input, "good-0", "a", 1),
        rec(&codec, &input, "poison-remote", &big_remote, 1),
        rec(&codec, &input, "good-1", "b", 1),
        rec(&codec, &input, "poison-local", &big_local, 3),
        rec(&codec, &input, "good-2", "c", 1),
    ];
    let coords = it::produce_raw(&input, &records);

    let mut cfg = RuntimeConfig::load_with(
        None,
        &[("KAFKA_BOOTSTRAP_SERVERS".into(), it::bootstrap_servers())],
    )
    .unwrap();
    cfg.topic_prefix = prefix.clone();
    cfg.instance_id = "po0".into();
    cfg.session_timeout_ms = 6000;
    cfg.ops_listen = None;
    if it::broker_leaks_aborted() {
        cfg.committed_view = evalstream_runtime::config::CommittedView::Markers;
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::new("poison-test");
    let handle = engine::spawn(
        Echo,
        EngineOptions {
            config: cfg,
            codec: codec.clone(),
            metrics: metrics.clone(),
            health: Health::new("poison-test"),
            shutdown: shutdown.clone(),
            fail_points: engine::FailPoints::none(),
        },
    )
    .unwrap();

    let dlq_topic = format!("{prefix}po.input.dlq");
    let result = std::panic::catch_unwind(|| {
        it::wait_until("both poison inputs to be dead-lettered", Duration::from_secs(90), || {
            std::thread::sleep(Duration::from_millis(300));
            it::partition_count(&dlq_topic) > 0 && it::read_topic(&dlq_topic).len() >= 2
        });
        it::wait_until("all three good inputs to be processed", Duration::from_secs(60), || {
            std::thread::sleep(Duration::from_millis(300));
            it::read_topic(&output).len() >= 3
        });
    });
    shutdown.store(true, Ordering::SeqCst);
    let stopped = handle.join().expect("engine thread");
    if let Err(panic) = result {
        let m = metrics.encode();
        eprintln!(
            "[poison output] FAILED after {:?}: aborted_txns={} committed_txns={}",
            started.elapsed(),
            it::metric_sum(&m, "evalstream_transactions_aborted_total", &[]),
            it::metric_sum(&m, "evalstream_transactions_committed_total", &[])
        );
        std::panic::resume_unwind(panic);
    }
    stopped.expect("the engine stops cleanly");

    // Exactly the good inputs produced outputs, once each.
    let outputs = it::read_topic(&output);
    let mut sources: Vec<String> = outputs
        .iter()
        .map(|r| r.header_str(headers::SOURCE).expect("source").to_string())
        .collect();
    sources.sort();
    let want: Vec<String> = [0usize, 2, 4]
        .iter()
        .map(|i| headers::coordinate(&input, coords[*i].0, coords[*i].1))
        .collect();
    assert_eq!(sources, want, "one output per good input");

    // Exactly the poison inputs were dead-lettered, once each, as output_rejected.
    let dlq = it::read_topic(&dlq_topic);
    let mut dead: Vec<(i64, String)> = dlq
        .iter()
        .map(|r| {
            let h: Vec<(&str, Option<&[u8]>)> =
                r.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            let d = headers::DeadLetterHeaders::parse(&h).expect("dead-letter headers");
            assert!(d.message.as_deref().is_some_and(|m| !m.is_empty()));
            (d.offset.expect("offset"), d.class.map(|c| c.to_string()).unwrap_or_default())
        })
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        vec![
            (coords[1].1, "output_rejected".to_string()),
            (coords[3].1, "output_rejected".to_string())
        ]
    );
    let m = metrics.encode();
    eprintln!(
        "[poison output] records={} dead_lettered={} outputs={} aborted_txns={} elapsed={:?}",
        records.len(),
        dlq.len(),
        outputs.len(),
        it::metric_sum(&m, "evalstream_transactions_aborted_total", &[]),
        started.elapsed()
    );
}
