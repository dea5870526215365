//! The Confluent wire-format path against a real schema registry: Apicurio Registry's
//! Confluent-compatible API (`deploy/local/registry.sh`), with Apache Kafka.
//!
//! The registry is `EVALSTREAM_TEST_REGISTRY_URL` (default
//! `http://127.0.0.1:8081/apis/ccompat/v7`, what `deploy/local/test.sh` starts); it is handed to
//! the `evalstream` subprocesses as `SCHEMA_REGISTRY_URL`, the variable operators set. Only these
//! tests use it: every other test writes Avro single-object encoding.
//!
//! Every test uses a random topic prefix, so its subjects (`<topic>-value`) are its own, and sets
//! compatibility on its own subjects only (never the global level, which other tests share).
//! What a real registry cannot be made to show (a schema id that is not Avro, a registry that
//! answers garbage) stays in `processors/runtime/tests/codec_registry.rs`, against an HTTP double.
#![cfg(feature = "broker")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use apache_avro::types::Value;
use common::eos::{self, Instance};
use evalstream_integration_tests as it;
use evalstream_runtime::codec::{
    encode_single_object, parsing_canonical_form, Codec, CodecError, DecodeError, SchemaStore,
    WireFormat,
};
use serde_json::{json, Value as Json};

/// Environment variable naming the Confluent-compatible base URL of the test registry.
const REGISTRY_ENV: &str = "EVALSTREAM_TEST_REGISTRY_URL";
const DEFAULT_REGISTRY: &str = "http://127.0.0.1:8081/apis/ccompat/v7";
const TOTALS_INPUT: &str = "evalstream.runtime.TotalsInput";
const TOTALS_UPDATE: &str = "evalstream.runtime.TotalsUpdate";

fn registry_url() -> String {
    let url = std::env::var(REGISTRY_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REGISTRY.to_string());
    let (status, body) = http(&url, "GET", "/subjects", None);
    assert_eq!(
        status, 200,
        "no schema registry at {url} (start deploy/local/registry.sh or set {REGISTRY_ENV}): {body}"
    );
    url
}

/// A minimal HTTP/1.1 client for the registry's REST API (plain http on loopback), so the test
/// checks the registry with code that shares nothing with the codec's registry client.
fn http(base: &str, method: &str, path: &str, body: Option<&Json>) -> (u16, Json) {
    let rest = base.strip_prefix("http://").expect("registry URL is http://");
    let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let target = format!("/{prefix}{path}");
    let payload = body.map(Json::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(authority)
        .unwrap_or_else(|e| panic!("connecting to the registry at {authority}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\n\
         Content-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{payload}",
        payload.len()
    )
    .expect("writing the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reading the response");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, serde_json::from_str(&body).unwrap_or(Json::String(body)))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn registry_codec(url: &str) -> Codec {
    Codec::new(SchemaStore::bundled().unwrap(), Some(url.to_string())).expect("registry codec")
}

fn cli(prefix: &str, url: &str) -> std::process::Command {
    let mut cmd = it::evalstream();
    cmd.env("EVALSTREAM_TOPIC_PREFIX", prefix).env("SCHEMA_REGISTRY_URL", url);
    cmd
}

/// The 4-byte big-endian schema id of a Confluent-framed value (panics on any other framing).
fn confluent_id(value: &[u8]) -> u32 {
    assert!(value.len() > 5 && value[0] == 0x00, "not Confluent wire format: {value:02x?}");
    u32::from_be_bytes(value[1..5].try_into().unwrap())
}

fn subject_versions(url: &str, subject: &str) -> Vec<i64> {
    let (status, body) = http(url, "GET", &format!("/subjects/{subject}/versions"), None);
    assert_eq!(status, 200, "versions of {subject}: {body}");
    body.as_array().expect("a list of versions").iter().map(|v| v.as_i64().unwrap()).collect()
}

fn set_compatibility(url: &str, subject: &str, level: &str) {
    let (status, body) =
        http(url, "PUT", &format!("/config/{subject}"), Some(&json!({"compatibility": level})));
    assert_eq!(status, 200, "setting {level} on {subject}: {body}");
}

fn register(url: &str, subject: &str, schema: &str) -> (u16, Json) {
    http(
        url,
        "POST",
        &format!("/subjects/{subject}/versions"),
        Some(&json!({"schema": schema, "schemaType": "AVRO"})),
    )
}

fn totals_input(key: &str, amount: i64) -> Value {
    Value::Record(vec![
        ("key".into(), Value::String(key.into())),
        ("amount".into(), Value::Long(amount)),
        ("payload".into(), Value::String(String::new())),
    ])
}

#[test]
fn produce_registers_the_subject_and_consume_reads_it_back() {
    let url = registry_url();
    let prefix = format!("{}.", it::unique_name("it-reg"));
    let topic = format!("{prefix}eval.submissions");
    it::create_topic(&topic, 2);
    let events: Vec<Json> = (0..4)
        .map(|i| {
            json!({
                "submission_id": format!("s-{i}"), "model_id": format!("m-{}", i % 2),
                "model_version": "v1", "eval_suite": "safety", "eval_suite_version": null,
                "submitter": "alice", "metrics": {"accuracy": 0.5}, "dataset_id": null,
                "artifact_uri": "s3://r/x.json", "artifact_sha256": null, "labels": {},
                "submitted_at": 1_714_557_600_000_i64, "promotion": null, "allocation": null,
            })
        })
        .collect();
    let file = events.iter().map(Json::to_string).collect::<Vec<_>>().join("\n");
    let out = it::run(
        cli(&prefix, &url)
            .args(["produce", "eval.submissions", "--key-field", "model_id"])
            .args(["--file", it::temp_file("reg-events", &file).to_str().unwrap()]),
        None,
    );
    out.assert_success();

    // On the wire: Confluent framing, one schema id for all records.
    let records = it::read_topic(&topic);
    assert_eq!(records.len(), events.len());
    let ids: std::collections::BTreeSet<u32> =
        records.iter().map(|r| confluent_id(r.value.as_deref().unwrap())).collect();
    assert_eq!(ids.len(), 1, "one schema id: {ids:?}");
    let id = *ids.iter().next().unwrap();

    // In the registry: subject <topic>-value, latest version = that id = our schema.
    let subject = format!("{topic}-value");
    let (status, subjects) = http(&url, "GET", "/subjects", None);
    assert_eq!(status, 200);
    assert!(subjects.as_array().unwrap().iter().any(|s| s == &json!(subject)), "{subjects}");
    let (status, latest) = http(&url, "GET", &format!("/subjects/{subject}/versions/latest"), None);
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["id"].as_u64(), Some(u64::from(id)), "{latest}");
    let (status, by_id) = http(&url, "GET", &format!("/schemas/ids/{id}"), None);
    assert_eq!(status, 200, "{by_id}");
    let registered: Json = serde_json::from_str(by_id["schema"].as_str().unwrap()).unwrap();
    let store = SchemaStore::bundled().unwrap();
    let ours = store.current("evalstream.eval.EvalSubmission").unwrap();
    assert_eq!(parsing_canonical_form(&registered).unwrap(), ours.canonical_form());
    // Docs and defaults are registered too: the registry's compatibility checks need them.
    assert!(by_id["schema"].as_str().unwrap().contains("\"doc\""), "{by_id}");

    // Producing again reuses the registered schema: still one version.
    let again = it::run(
        cli(&prefix, &url)
            .args(["produce", "eval.submissions", "--file", "-"])
            .env("EVALSTREAM_TOPIC_PREFIX", &prefix),
        Some(events[0].to_string().as_bytes()),
    );
    again.assert_success();
    assert_eq!(subject_versions(&url, &subject).len(), 1);

    // consume decodes through the registry, back to the same JSON.
    let out =
        it::run(cli(&prefix, &url).args(["consume", "eval.submissions", "--from-beginning"]), None);
    out.assert_success();
    let lines = out.json_lines();
    assert_eq!(lines.len(), events.len() + 1, "{out}");
    for l in &lines {
        assert!(l.get("error").is_none(), "{l}");
        assert_eq!(l["schema"], json!("evalstream.eval.EvalSubmission"));
        let i: usize = l["value"]["submission_id"].as_str().unwrap()[2..].parse().unwrap();
        assert_eq!(l["value"], events[i]);
    }

    // Without the registry the same bytes are a clear per-record error, not a crash.
    let mut no_registry = it::evalstream();
    no_registry.env("EVALSTREAM_TOPIC_PREFIX", &prefix).env_remove("SCHEMA_REGISTRY_URL");
    let out = it::run(no_registry.args(["consume", "eval.submissions", "--from-beginning"]), None);
    out.assert_success();
    for l in out.json_lines() {
        assert!(l["error"].as_str().is_some_and(|e| e.contains("registry")), "{l}");
    }
}

#[test]
fn totals_processor_reads_and_writes_confluent_records() {
    let url = registry_url();
    let prefix = format!("{}.", it::unique_name("it-regp"));
    let input = format!("{prefix}totals.input");
    let output = format!("{prefix}totals.output");
    it::create_topic(&input, 2);
    it::create_topic(&output, 2);
    let codec = registry_codec(&url);

    let mut instance = Instance::new("totals", &prefix, "reg-0").env("SCHEMA_REGISTRY_URL", &url);
    instance.start();
    let inputs = eos::produce_inputs(&codec, &input, 0..300, 100, Duration::ZERO);
    eos::wait_committed(&prefix, &eos::next_offsets_of(&inputs), Duration::from_secs(120));
    assert!(instance.running(), "the processor must keep running");
    instance.stop();

    // Every output is Confluent-framed with the id registered under <output>-value, and decodes
    // (in a fresh codec, i.e. fetched from the registry) to the right running total.
    let output_subject = format!("{output}-value");
    let (status, latest) =
        http(&url, "GET", &format!("/subjects/{output_subject}/versions/latest"), None);
    assert_eq!(status, 200, "the processor registered {output_subject}: {latest}");
    let output_id = latest["id"].as_u64().unwrap() as u32;
    let reader = registry_codec(&url);
    let outputs = it::read_topic(&output);
    assert_eq!(outputs.len(), inputs.len(), "one output per input");
    let mut sums = std::collections::HashMap::<String, i64>::new();
    let mut expected = std::collections::HashMap::<(i32, i64), i64>::new();
    let mut sorted = inputs.clone();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for r in &sorted {
        let s = sums.entry(r.key.clone()).or_default();
        *s += r.amount;
        expected.insert((r.partition, r.offset), *s);
    }
    for r in &outputs {
        let value = r.value.as_deref().unwrap();
        assert_eq!(confluent_id(value), output_id);
        let d = reader.decode(value).expect("output decodes through the registry");
        assert_eq!(d.schema_name, TOTALS_UPDATE);
        assert_eq!(d.format, WireFormat::Confluent { schema_id: output_id });
        let src = r.header_str(evalstream_runtime::headers::SOURCE).unwrap();
        let (_, p, o) = evalstream_runtime::headers::parse_coordinate(src).unwrap();
        let update: evalstream_totals::TotalsUpdate =
            evalstream_runtime::record::from_avro(&d.value).expect("a TotalsUpdate");
        assert_eq!(update.total, expected[&(p, o)], "output for {src}");
    }
}

#[test]
fn a_backward_compatible_change_registers_and_old_and_new_records_decode() {
    let url = registry_url();
    let prefix = format!("{}.", it::unique_name("it-regc"));
    let topic = format!("{prefix}totals.input");
    it::create_topic(&topic, 1);
    let subject = format!("{topic}-value");
    set_compatibility(&url, &subject, "BACKWARD");

    // An older producer registered TotalsInput v1 (no `payload`) and wrote a record with it.
    let store = SchemaStore::bundled().unwrap();
    let v1 = store.version(TOTALS_INPUT, 1).unwrap();
    let (status, reply) = register(&url, &subject, v1.compact_json());
    assert_eq!(status, 200, "{reply}");
    let v1_id = reply["id"].as_u64().unwrap() as u32;
    let old = Value::Record(vec![
        ("key".into(), Value::String("old".into())),
        ("amount".into(), Value::Long(5)),
    ]);
    let mut old_bytes = vec![0x00];
    old_bytes.extend_from_slice(&v1_id.to_be_bytes());
    old_bytes.extend_from_slice(&encode_single_object(v1, &old).unwrap()[10..]);

    // We write with v2, which adds `payload` with a default: BACKWARD compatible, so the
    // registry accepts it as version 2 of the subject.
    let new_bytes =
        registry_codec(&url).encode(&topic, TOTALS_INPUT, &totals_input("new", 7)).unwrap();
    let v2_id = confluent_id(&new_bytes);
    assert_ne!(v1_id, v2_id);
    assert_eq!(subject_versions(&url, &subject), [1, 2]);
    it::produce_raw(&topic, &[it::RawRecord::new(old_bytes), it::RawRecord::new(new_bytes)]);

    // A consumer that knows neither id yet reads both, the old one in the current shape.
    let out =
        it::run(cli(&prefix, &url).args(["consume", "totals.input", "--from-beginning"]), None);
    out.assert_success();
    let values: Vec<Json> = out.json_lines().iter().map(|l| l["value"].clone()).collect();
    assert_eq!(
        values,
        [
            json!({"key": "old", "amount": 5, "payload": ""}),
            json!({"key": "new", "amount": 7, "payload": ""}),
        ],
        "{out}"
    );
}

#[test]
fn an_incompatible_change_is_refused_with_a_clear_error() {
    let url = registry_url();
    let prefix = format!("{}.", it::unique_name("it-regx"));
    let topic = format!("{prefix}totals.input");
    it::create_topic(&topic, 1);
    let subject = format!("{topic}-value");
    set_compatibility(&url, &subject, "BACKWARD");

    // Someone registered a TotalsInput whose amount is a string. Our schema (amount: long)
    // cannot read that data, so BACKWARD refuses it as the next version.
    let theirs = json!({"type": "record", "name": "TotalsInput", "namespace": "evalstream.runtime",
        "fields": [{"name": "key", "type": "string"}, {"name": "amount", "type": "string"}]});
    let (status, reply) = register(&url, &subject, &theirs.to_string());
    assert_eq!(status, 200, "{reply}");

    // Through the codec: a typed, non-transient registry error naming the subject.
    let err = registry_codec(&url)
        .encode(&topic, TOTALS_INPUT, &totals_input("k", 1))
        .expect_err("the registry must refuse an incompatible schema");
    match &err {
        CodecError::Registry { subject: s, message, transient } => {
            assert_eq!(s, &subject);
            assert!(!transient, "an incompatible schema does not heal by retrying: {err}");
            assert!(message.contains("409") && message.contains("ncompatible"), "{err}");
        }
        other => panic!("expected a registry error, got {other:?}"),
    }

    // Through the CLI: the operator sees the subject and the reason, and nothing is produced.
    let line = json!({"key": "k", "amount": 1}).to_string();
    let out = it::run(
        cli(&prefix, &url).args(["produce", "totals.input", "--file", "-"]),
        Some(line.as_bytes()),
    );
    out.assert_failure();
    assert!(out.stderr.contains(&subject) && out.stderr.contains("ncompatible"), "{out}");
    assert_eq!(subject_versions(&url, &subject), [1], "nothing was registered");
    assert!(it::read_topic(&topic).is_empty(), "nothing was produced");
}

// The codec alone against the real registry (no broker involved).

#[test]
fn a_registry_codec_reads_single_object_data_too() {
    let url = registry_url();
    let offline = Codec::new(SchemaStore::bundled().unwrap(), None).unwrap();
    let bytes = offline.encode("t", TOTALS_INPUT, &totals_input("k", 5)).unwrap();
    let decoded = registry_codec(&url).decode(&bytes).unwrap();
    assert!(matches!(decoded.format, WireFormat::SingleObject { .. }));
    assert_eq!(decoded.value, totals_input("k", 5));
}

#[test]
fn unknown_and_non_avro_schema_ids_are_typed_decode_errors() {
    let url = registry_url();
    let codec = registry_codec(&url);
    // An id the registry never issued.
    let unknown = [0x00, 0x7f, 0xff, 0xff, 0xf0, 0x02, b'k', 0x06, 0x00];
    assert_eq!(
        codec.decode(&unknown),
        Err(DecodeError::UnknownSchemaId { schema_id: 0x7fff_fff0 })
    );
    assert!(!codec.decode(&unknown).unwrap_err().is_transient());

    // An id that names a JSON Schema, not an Avro schema.
    let subject = format!("{}-value", it::unique_name("it-regj"));
    let (status, reply) = http(
        &url,
        "POST",
        &format!("/subjects/{subject}/versions"),
        Some(&json!({
            "schema": json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"k": {"type": "string"}}
            })
            .to_string(),
            "schemaType": "JSON"
        })),
    );
    assert_eq!(status, 200, "{reply}");
    let id = reply["id"].as_u64().unwrap() as u32;
    let mut bytes = vec![0x00];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.push(0x00);
    let err = codec.decode(&bytes).unwrap_err();
    assert!(matches!(err, DecodeError::Registry { schema_id, .. } if schema_id == id), "{err:?}");
}

#[test]
fn truncated_and_trailing_confluent_records_are_typed_errors() {
    let url = registry_url();
    let codec = registry_codec(&url);
    let topic = it::unique_name("it-regt");
    let bytes = codec.encode(&topic, TOTALS_INPUT, &totals_input("key", 7)).unwrap();
    for len in 0..bytes.len() {
        let err = codec.decode(&bytes[..len]).unwrap_err();
        match (len, &err) {
            (0, DecodeError::Empty) | (1..=4, DecodeError::TruncatedHeader { .. }) => {}
            (5.., DecodeError::InvalidBody { .. }) => {}
            _ => panic!("prefix of {len} bytes gave {err:?}"),
        }
    }
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"xx");
    assert!(matches!(codec.decode(&trailing), Err(DecodeError::TrailingBytes { count: 2, .. })));
}

#[test]
fn the_codec_is_safe_to_call_from_inside_a_tokio_runtime() {
    // reqwest's blocking client panics on a runtime thread; the codec moves registry calls off it.
    let url = registry_url();
    let topic = it::unique_name("it-regr");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (producer, consumer) = (registry_codec(&url), registry_codec(&url));
    let decoded = runtime.block_on(async move {
        let bytes = producer.encode(&topic, TOTALS_INPUT, &totals_input("k", 3)).unwrap();
        consumer.decode(&bytes)
    });
    assert_eq!(decoded.unwrap().value, totals_input("k", 3));
}
