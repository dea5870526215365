//! The Confluent wire-format path of the codec, against an HTTP double of the schema registry.
//!
//! No Confluent-compatible schema registry (Confluent Schema Registry, Karapace, Apicurio,
//! Redpanda's) can be installed on our development and CI machines, so this double stands in.
//! It implements the documented REST endpoints that `schema_registry_converter` calls, with the
//! documented response shapes and error codes:
//!
//! - `POST /subjects/{subject}/versions` `{"schema": "...", "schemaType": "AVRO"}` → `{"id": N}`
//!   (the same schema text gets the same id, across subjects, as in the real registry);
//! - `POST /subjects/{subject}` (look up a schema under a subject) → the version, or 404 / 40403;
//! - `GET /schemas/ids/{id}` → `{"schema": "..."}` (plus `schemaType` when not Avro), or
//!   404 / 40403 "Schema not found";
//! - `GET /subjects/{subject}/versions/latest` → the latest version, or 404 / 40401;
//! - `GET /subjects` → the subject names.
//!
//! Each test starts its own double on an ephemeral port, so tests run in parallel.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use apache_avro::types::Value;
use apache_avro::Schema;
use evalstream_runtime::codec::{
    encode_single_object, Codec, CodecError, DecodeError, SchemaStore, WireFormat,
};
use serde_json::{json, Value as Json};

#[derive(Default)]
struct State {
    /// Schema texts by id - 1, with their schema type.
    schemas: Vec<(String, String)>,
    /// Subject → ids of its versions, oldest first.
    subjects: BTreeMap<String, Vec<u32>>,
    /// "METHOD path" of every request, for assertions about caching.
    log: Vec<String>,
}

struct RegistryDouble {
    url: String,
    state: Arc<Mutex<State>>,
}

impl RegistryDouble {
    fn start() -> RegistryDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        RegistryDouble { url, state }
    }

    /// Registers a schema directly, as another producer would have.
    fn register(&self, subject: &str, schema: &str, schema_type: &str) -> u32 {
        let mut s = self.state.lock().unwrap();
        register(&mut s, subject, schema, schema_type)
    }

    fn requests(&self, prefix: &str) -> usize {
        self.state.lock().unwrap().log.iter().filter(|l| l.starts_with(prefix)).count()
    }

    fn codec(&self) -> Codec {
        Codec::new(SchemaStore::bundled().unwrap(), Some(self.url.clone())).unwrap()
    }
}

fn register(s: &mut State, subject: &str, schema: &str, schema_type: &str) -> u32 {
    let id = match s.schemas.iter().position(|(text, _)| text == schema) {
        Some(i) => i as u32 + 1,
        None => {
            s.schemas.push((schema.to_string(), schema_type.to_string()));
            s.schemas.len() as u32
        }
    };
    let versions = s.subjects.entry(subject.to_string()).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    id
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let not_found =
        |code: u32, message: &str| (404, json!({"error_code": code, "message": message}));

    let (status, reply) = {
        let mut s = state.lock().unwrap();
        s.log.push(format!("{method} {path}"));
        match (method, segments.as_slice()) {
            ("POST", ["subjects", subject, "versions"]) => {
                let req: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
                match req["schema"].as_str() {
                    Some(schema) if Schema::parse_str(schema).is_ok() => {
                        let kind = req["schemaType"].as_str().unwrap_or("AVRO").to_string();
                        (200, json!({"id": register(&mut s, subject, schema, &kind)}))
                    }
                    _ => (422, json!({"error_code": 42201, "message": "Invalid schema"})),
                }
            }
            ("POST", ["subjects", subject]) => {
                let req: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
                let schema = req["schema"].as_str().unwrap_or("");
                let found = s.subjects.get(*subject).and_then(|ids| {
                    ids.iter().enumerate().find(|(_, id)| s.schemas[**id as usize - 1].0 == schema)
                });
                match found {
                    Some((v, id)) => (
                        200,
                        json!({"subject": subject, "version": v + 1, "id": id, "schema": schema}),
                    ),
                    None => not_found(40403, "Schema not found"),
                }
            }
            ("GET", ["schemas", "ids", id]) => {
                match id.parse::<usize>().ok().and_then(|i| s.schemas.get(i.wrapping_sub(1))) {
                    Some((schema, kind)) if kind == "AVRO" => (200, json!({"schema": schema})),
                    Some((schema, kind)) => (200, json!({"schema": schema, "schemaType": kind})),
                    None => not_found(40403, "Schema not found"),
                }
            }
            ("GET", ["subjects", subject, "versions", "latest"]) => {
                match s.subjects.get(*subject).and_then(|ids| ids.last().map(|id| (ids.len(), *id)))
                {
                    Some((version, id)) => (
                        200,
                        json!({"subject": subject, "version": version, "id": id,
                               "schema": s.schemas[id as usize - 1].0}),
                    ),
                    None => not_found(40401, "Subject not found"),
                }
            }
            ("GET", ["subjects"]) => (200, json!(s.subjects.keys().collect::<Vec<_>>())),
            _ => not_found(404, "no such endpoint in the double"),
        }
    };
    let reply = reply.to_string();
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Unprocessable Entity",
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    stream.flush()
}

const TOTALS_INPUT: &str = "evalstream.runtime.TotalsInput";

fn totals_input(key: &str, amount: i64, payload: &str) -> Value {
    Value::Record(vec![
        ("key".into(), Value::String(key.into())),
        ("amount".into(), Value::Long(amount)),
        ("payload".into(), Value::String(payload.into())),
    ])
}

#[test]
fn encode_registers_under_topic_value_and_another_process_decodes() {
    let registry = RegistryDouble::start();
    let producer = registry.codec();
    let value = totals_input("k", 42, "x");
    let bytes = producer.encode("totals.input", TOTALS_INPUT, &value).unwrap();

    // Confluent framing: magic 0, big-endian id, then the Avro datum.
    assert_eq!(bytes[0], 0x00);
    let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    assert_eq!(registry.requests("POST /subjects/totals.input-value/versions"), 1);
    {
        let s = registry.state.lock().unwrap();
        assert_eq!(s.subjects["totals.input-value"], vec![id]);
        let registered = Schema::parse_str(&s.schemas[id as usize - 1].0).unwrap();
        let bundled = producer.store().schema(TOTALS_INPUT).unwrap();
        assert_eq!(registered.canonical_form(), bundled.canonical_form());
        // Docs and defaults are registered too: the registry's compatibility checks need them.
        assert!(s.schemas[id as usize - 1].0.contains("\"default\":\"\""));
    }

    // Cached: a second record does not talk to the registry.
    producer.encode("totals.input", TOTALS_INPUT, &totals_input("k", 1, "")).unwrap();
    assert_eq!(registry.requests("POST"), 1);

    // A fresh codec (another process) fetches the schema by id, once.
    let consumer = registry.codec();
    for _ in 0..3 {
        let decoded = consumer.decode(&bytes).unwrap();
        assert_eq!(decoded.schema_name, TOTALS_INPUT);
        assert_eq!(decoded.value, value);
        assert_eq!(decoded.format, WireFormat::Confluent { schema_id: id });
    }
    assert_eq!(registry.requests(&format!("GET /schemas/ids/{id}")), 1);
    assert!(consumer.check_registry().is_ok());
}

#[test]
fn a_registry_codec_still_reads_single_object_data() {
    let registry = RegistryDouble::start();
    let offline = Codec::new(SchemaStore::bundled().unwrap(), None).unwrap();
    let bytes = offline.encode("totals.input", TOTALS_INPUT, &totals_input("k", 5, "")).unwrap();
    let decoded = registry.codec().decode(&bytes).unwrap();
    assert!(matches!(decoded.format, WireFormat::SingleObject { .. }));
    assert_eq!(registry.requests(""), 0);
}

#[test]
fn unknown_schema_id_is_a_typed_error_and_is_not_refetched_at_once() {
    let registry = RegistryDouble::start();
    let codec = registry.codec();
    let bytes = [0x00, 0, 0, 0x30, 0x39, 0x02, b'k', 0x06, 0x00];
    for _ in 0..3 {
        assert_eq!(codec.decode(&bytes), Err(DecodeError::UnknownSchemaId { schema_id: 12345 }));
    }
    assert_eq!(registry.requests("GET /schemas/ids/12345"), 1);
    assert!(!codec.decode(&bytes).unwrap_err().is_transient());
}

#[test]
fn data_from_an_older_producer_decodes_into_the_current_shape() {
    // A producer still on TotalsInput v1 registered that version under the subject.
    let registry = RegistryDouble::start();
    let store = SchemaStore::bundled().unwrap();
    let v1 = store.version(TOTALS_INPUT, 1).unwrap();
    let id = registry.register("totals.input-value", v1.compact_json(), "AVRO");
    let old = Value::Record(vec![
        ("key".into(), Value::String("k".into())),
        ("amount".into(), Value::Long(9)),
    ]);
    let single = encode_single_object(v1, &old).unwrap();
    let mut bytes = vec![0x00];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&single[10..]);

    let decoded = registry.codec().decode(&bytes).unwrap();
    assert_eq!(decoded.schema_name, TOTALS_INPUT);
    assert_eq!(decoded.value, totals_input("k", 9, ""));
}

#[test]
fn a_non_avro_schema_id_is_a_typed_registry_error() {
    let registry = RegistryDouble::start();
    let id = registry.register("x-value", r#""string""#, "PROTOBUF");
    let mut bytes = vec![0x00];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.push(0x00);
    let err = registry.codec().decode(&bytes).unwrap_err();
    assert!(matches!(err, DecodeError::Registry { schema_id, .. } if schema_id == id), "{err:?}");
}

#[test]
fn truncated_and_trailing_confluent_records_are_typed_errors() {
    let registry = RegistryDouble::start();
    let codec = registry.codec();
    let bytes = codec.encode("totals.input", TOTALS_INPUT, &totals_input("key", 7, "pad")).unwrap();
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
fn registry_rejection_is_a_typed_encode_error() {
    // The double answers 422 to anything that is not a parsable Avro schema; make the POST fail
    // by pointing at an endpoint that does not exist.
    let registry = RegistryDouble::start();
    let codec = Codec::new(
        SchemaStore::bundled().unwrap(),
        Some(format!("{}/no-such-prefix", registry.url)),
    )
    .unwrap();
    let err = codec.encode("t", TOTALS_INPUT, &totals_input("k", 1, "")).unwrap_err();
    assert!(
        matches!(err, CodecError::Registry { ref subject, transient: false, .. } if subject == "t-value"),
        "{err:?}"
    );
}

#[test]
fn the_codec_is_safe_to_call_from_inside_a_tokio_runtime() {
    // reqwest's blocking client panics on a runtime thread; the codec moves registry calls off it.
    let registry = RegistryDouble::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (producer, consumer) = (registry.codec(), registry.codec());
    let decoded = runtime.block_on(async move {
        let bytes =
            producer.encode("totals.input", TOTALS_INPUT, &totals_input("k", 3, "")).unwrap();
        consumer.decode(&bytes)
    });
    assert_eq!(decoded.unwrap().value, totals_input("k", 3, ""));
    assert_eq!(registry.requests("GET /schemas/ids/"), 1);
}
