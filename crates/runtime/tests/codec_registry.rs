//! What a real schema registry cannot be made to show, against an HTTP double.
//!
//! The Confluent wire-format path is tested against a real registry (Apicurio Registry's
//! Confluent-compatible API) in `integration-tests/tests/registry.rs`: registration, decoding,
//! compatible and incompatible schema changes, unknown and non-Avro ids, truncated records. What
//! stays here needs to observe the codec's requests, which a real registry does not expose: a
//! burst of records with an unknown schema id must not become a burst of HTTP requests (the
//! negative cache).
//!
//! The double answers `GET /schemas/ids/{id}` with the registry's documented "not found"
//! (HTTP 404, error code 40403) and records every request line.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use evalstream_runtime::codec::{Codec, DecodeError, SchemaStore};

struct RegistryDouble {
    url: String,
    /// "METHOD path" of every request.
    log: Arc<Mutex<Vec<String>>>,
}

impl RegistryDouble {
    fn start() -> RegistryDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = shared.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &log);
                });
            }
        });
        RegistryDouble { url, log }
    }

    fn requests(&self, prefix: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.starts_with(prefix)).count()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim_end().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    log.lock().unwrap().push(format!("{method} {path}"));
    let reply = r#"{"error_code":40403,"message":"Schema not found"}"#;
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    stream.flush()
}

#[test]
fn unknown_schema_id_is_a_typed_error_and_is_not_refetched_at_once() {
    let registry = RegistryDouble::start();
    let codec = Codec::new(SchemaStore::bundled().unwrap(), Some(registry.url.clone())).unwrap();
    let bytes = [0x00, 0, 0, 0x30, 0x39, 0x02, b'k', 0x06, 0x00];
    for _ in 0..3 {
        assert_eq!(codec.decode(&bytes), Err(DecodeError::UnknownSchemaId { schema_id: 12345 }));
    }
    assert_eq!(registry.requests("GET /schemas/ids/12345"), 1);
    assert!(!codec.decode(&bytes).unwrap_err().is_transient());
}
