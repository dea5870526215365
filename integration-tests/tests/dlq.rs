//! DLQ: a stream mixing good records with truncated bytes, a wrong magic byte, an unknown
//! fingerprint, a record failing validation and an oversized record. Every bad record lands in
//! `totals.input.dlq` with correct headers, every good one is processed, the processor never
//! restarts, and counts reconcile (in = out + dead-lettered) both in the topics and in
//! `/metrics`. After the fix (a larger size limit), `dlq requeue` puts the oversized record back
//! and it is processed exactly once; a second requeue does nothing.
#![cfg(feature = "broker")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::eos::{self, Instance};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::headers;

#[test]
fn bad_records_are_dead_lettered_with_reasons_and_requeue_round_trips() {
    let prefix = format!("{}.", it::unique_name("dlq"));
    let input = format!("{prefix}totals.input");
    it::create_topic(&input, 2);
    it::create_topic(&format!("{prefix}totals.output"), 2);
    let codec = Codec::from_env().expect("codec");

    let good = |i: u64| {
        let (k, a) = eos::input_for(i);
        it::RawRecord::new(eos::encode_input(&codec, &input, &k, a, ""))
            .key(k)
            .partition((i % 2) as i32)
    };
    let valid = eos::encode_input(&codec, &input, "k-bad", 1, "");
    let mut unknown_fp = valid.clone();
    for b in &mut unknown_fp[2..10] {
        *b ^= 0x5a;
    }
    let mut wrong_magic = valid.clone();
    wrong_magic[0] = 0x07;
    let oversized = eos::encode_input(&codec, &input, "k-big", 5, &"x".repeat(8 * 1024));
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("deserialization", valid[..valid.len() - 3].to_vec()), // truncated body
        ("deserialization", valid[..5].to_vec()),               // truncated header
        ("deserialization", wrong_magic),
        ("deserialization", unknown_fp),
        ("validation", eos::encode_input(&codec, &input, "", 3, "")), // empty key
        ("oversized", oversized),
    ];

    let mut records = Vec::new();
    let mut expected_class = Vec::new();
    for i in 0..200u64 {
        records.push(good(i));
        expected_class.push(None);
        if i % 30 == 7 {
            let (class, bytes) = &bad[(i / 30) as usize % bad.len()];
            records.push(
                it::RawRecord::new(bytes.clone())
                    .key(format!("bad{i}"))
                    .partition((i % 2) as i32)
                    .header("trace-id", format!("t{i}")),
            );
            expected_class.push(Some(*class));
        }
    }
    for (class, bytes) in &bad {
        if !expected_class.contains(&Some(class))
            || bad.iter().filter(|(c, _)| c == class).count() > 1
        {
            records.push(it::RawRecord::new(bytes.clone()).key("bad-extra").partition(0));
            expected_class.push(Some(*class));
        }
    }
    let coords = it::produce_raw(&input, &records);
    let bad_coords: BTreeMap<(i32, i64), &str> = coords
        .iter()
        .zip(&expected_class)
        .filter_map(|(c, class)| class.map(|cl| (*c, cl)))
        .collect();
    let good_coords: Vec<(i32, i64)> =
        coords.iter().zip(&expected_class).filter(|(_, c)| c.is_none()).map(|(c, _)| *c).collect();
    assert!(bad_coords.len() >= 6);

    let port = it::free_port();
    let mut inst = Instance::new("totals", &prefix, "d0")
        .env("EVALSTREAM_MAX_RECORD_BYTES", "4096")
        .env("EVALSTREAM_OPS_LISTEN", &format!("127.0.0.1:{port}"));
    inst.start();
    eos::wait_caught_up(&prefix, Duration::from_secs(120));
    assert!(inst.running(), "the processor must not exit on bad input");

    // Every bad record is in the DLQ, once, with its coordinates and reason.
    let dlq = it::read_topic(&format!("{prefix}totals.input.dlq"));
    let mut found: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for r in &dlq {
        assert_eq!(r.header_str(headers::ERR_TOPIC), Some(input.as_str()));
        assert_eq!(r.header_str(headers::ERR_PROCESSOR), Some("totals"));
        assert!(r.header_str(headers::ERR_MESSAGE).is_some_and(|m| !m.is_empty()));
        assert!(r.header_str(headers::ERR_TIMESTAMP).is_some());
        let p: i32 = r.header_str(headers::ERR_PARTITION).unwrap().parse().unwrap();
        let o: i64 = r.header_str(headers::ERR_OFFSET).unwrap().parse().unwrap();
        let class = r.header_str(headers::ERR_CLASS).unwrap().to_string();
        assert!(found.insert((p, o), class).is_none(), "({p},{o}) dead-lettered twice");
        // Original key, value and headers are kept.
        let original = &records[coords.iter().position(|c| *c == (p, o)).unwrap()];
        assert_eq!(r.value, original.value);
        assert_eq!(r.key, original.key);
        for (name, value) in &original.headers {
            assert_eq!(r.header(name), value.as_deref(), "original header {name} kept");
        }
    }
    let expected: BTreeMap<(i32, i64), String> =
        bad_coords.iter().map(|(c, cl)| (*c, cl.to_string())).collect();
    assert_eq!(found, expected, "DLQ contents differ from the bad records");

    // Every good record produced exactly one output.
    let outputs = it::read_topic(&format!("{prefix}totals.output"));
    let mut sources: Vec<(i32, i64)> = outputs
        .iter()
        .map(|r| {
            let (_, p, o) =
                headers::parse_coordinate(r.header_str(headers::SOURCE).unwrap()).unwrap();
            (p, o)
        })
        .collect();
    sources.sort();
    let mut want = good_coords.clone();
    want.sort();
    assert_eq!(sources, want, "outputs must map one-to-one onto the good inputs");
    assert_eq!(outputs.len() + dlq.len(), records.len(), "in = out + dead-lettered");

    // The same reconciliation from the processor's own metrics.
    let m = it::http_get(port, "/metrics").expect("metrics");
    let rin = it::metric_sum(&m, "evalstream_records_in_total", &[]);
    let rout = it::metric_sum(&m, "evalstream_records_out_total", &["totals.output"]);
    let rdlq = it::metric_sum(&m, "evalstream_records_dead_lettered_total", &[]);
    assert_eq!(rin as usize, records.len(), "records_in_total\n{m}");
    assert_eq!(rin, rout + rdlq, "in = out + dead-lettered in /metrics\n{m}");
    let ready = it::http_get(port, "/ready").expect("ready");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    // The fix: a larger record limit. Then requeue the oversized record, exactly once.
    inst.stop();
    let mut fixed =
        Instance::new("totals", &prefix, "d0").env("EVALSTREAM_MAX_RECORD_BYTES", "65536");
    fixed.start();
    let out = it::run(
        it::evalstream()
            .args(["dlq", "requeue", "totals.input", "--class", "oversized"])
            .env("EVALSTREAM_TOPIC_PREFIX", &prefix),
        None,
    );
    out.assert_success();
    let again = it::run(
        it::evalstream()
            .args(["dlq", "requeue", "totals.input", "--class", "oversized"])
            .env("EVALSTREAM_TOPIC_PREFIX", &prefix),
        None,
    );
    again.assert_success();
    let oversized_count = bad_coords.values().filter(|c| **c == "oversized").count();
    eos::wait_caught_up(&prefix, Duration::from_secs(120));
    let requeued: Vec<_> = it::read_topic(&input)
        .into_iter()
        .filter(|r| r.header_str(headers::REQUEUED_FROM).is_some())
        .collect();
    assert_eq!(requeued.len(), oversized_count, "each oversized record requeued exactly once");
    let outputs = it::read_topic(&format!("{prefix}totals.output"));
    for r in &requeued {
        // The original headers travel with the requeued record; the error headers do not.
        assert!(
            r.header_str("trace-id").is_some_and(|t| t.starts_with('t'))
                || r.key.as_deref() == Some(&b"bad-extra"[..])
        );
        assert!(r.header(headers::ERR_CLASS).is_none());
        let src = headers::coordinate(&input, r.partition, r.offset);
        let n =
            outputs.iter().filter(|o| o.header_str(headers::SOURCE) == Some(src.as_str())).count();
        assert_eq!(n, 1, "requeued record {src} processed exactly once");
    }
    assert!(fixed.running());
    fixed.stop();
}
