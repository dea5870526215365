//! The emergency signing proxy signer against an in-test HTTP double of the contract in
//! `docs/signing.md` (`GET /key`, `POST /sign`), including every failure class.
//!
//! The double is a few lines of `std::net` HTTP/1.1 (one request per connection, `Connection:
//! close`), so these tests need no network beyond loopback and no other process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evalstream_audit::signer::{
    build_signer, verify_signature, ProxyConfig, ProxySigner, SignError, Signer, SignerConfig,
    SignerKind, SignerSetupError, ALGORITHM_ECDSA_P256_SHA256,
};
use evalstream_runtime::b64;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{json, Value};

/// How the double answers `POST /sign`.
#[derive(Clone, Debug)]
enum Mode {
    /// Signs correctly.
    Good,
    /// Answers with this status and body.
    Status(u16, &'static str),
    /// Signs correctly but claims another kid.
    WrongKid,
    /// Signs other bytes than it was given.
    WrongMessage,
    /// Answers 200 with a body that is not the contract's JSON.
    Garbage,
    /// Waits this long before answering.
    Slow(Duration),
}

/// What the double saw of the last request.
#[derive(Default, Debug, Clone)]
struct Seen {
    authorization: Option<String>,
    sign_body: Option<Value>,
    requests: usize,
}

struct Double {
    url: String,
    kid: String,
    public_pem: String,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
}

impl Double {
    fn start(kid: &str) -> Double {
        let key = SigningKey::from_slice(&[42u8; 32]).unwrap();
        let public_pem = key.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mode = Arc::new(Mutex::new(Mode::Good));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (kid_s, pem_s, mode_s, seen_s) =
            (kid.to_string(), public_pem.clone(), mode.clone(), seen.clone());
        // Lives until the test process exits; each test binds its own port.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &key, &kid_s, &pem_s, &mode_s, &seen_s);
            }
        });
        Double { url, kid: kid.to_string(), public_pem, mode, seen }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    fn config(&self, kid: Option<&str>) -> ProxyConfig {
        ProxyConfig {
            url: format!("{}/", self.url),
            kid: kid.map(String::from),
            token: Some("emergency-token".into()),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        }
    }
}

fn serve(
    stream: TcpStream,
    key: &SigningKey,
    kid: &str,
    public_pem: &str,
    mode: &Mutex<Mode>,
    seen: &Mutex<Seen>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let mode = mode.lock().unwrap().clone();
    {
        let mut seen = seen.lock().unwrap();
        seen.requests += 1;
        seen.authorization = authorization;
    }
    let (status, answer) = if request_line.starts_with("GET /key ") {
        (
            200,
            json!({"kid": kid, "algorithm": ALGORITHM_ECDSA_P256_SHA256, "public_key": public_pem})
                .to_string(),
        )
    } else if request_line.starts_with("POST /sign ") {
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        seen.lock().unwrap().sign_body = Some(request.clone());
        let message =
            b64::decode(request["message_b64"].as_str().unwrap_or("")).unwrap_or_default();
        let sign = |bytes: &[u8]| {
            let signature: Signature = key.sign(bytes);
            b64::encode(signature.to_der().as_bytes())
        };
        match mode {
            Mode::Good => (200, json!({"kid": kid, "signature_b64": sign(&message)}).to_string()),
            Mode::Status(code, text) => (code, text.to_string()),
            Mode::WrongKid => {
                (200, json!({"kid": "someone-else", "signature_b64": sign(&message)}).to_string())
            }
            Mode::WrongMessage => {
                (200, json!({"kid": kid, "signature_b64": sign(b"other")}).to_string())
            }
            Mode::Garbage => (200, "<html>gateway</html>".to_string()),
            Mode::Slow(delay) => {
                std::thread::sleep(delay);
                (200, json!({"kid": kid, "signature_b64": sign(&message)}).to_string())
            }
        }
    } else {
        (404, json!({"error": "no such endpoint"}).to_string())
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    stream.flush()
}

#[test]
fn signs_through_the_contract_and_the_signature_verifies() {
    let double = Double::start("proxy:emergency-1");
    let signer = ProxySigner::connect(double.config(None)).unwrap();
    assert_eq!(signer.kid(), "proxy:emergency-1", "kid asked from GET /key");
    assert_eq!(signer.kind(), SignerKind::Proxy);
    assert_eq!(signer.url(), double.url, "trailing slash removed");
    let message = b"evalstream checkpoint v1\npartition 0\ntree_size 42\n";
    let signature = signer.sign(message).unwrap();
    verify_signature(
        ALGORITHM_ECDSA_P256_SHA256,
        double.public_pem.as_bytes(),
        message,
        &signature,
    )
    .unwrap();
    let seen = double.seen();
    assert_eq!(seen.authorization.as_deref(), Some("Bearer emergency-token"));
    let body = seen.sign_body.unwrap();
    assert_eq!(body["kid"], double.kid);
    assert_eq!(body["algorithm"], ALGORITHM_ECDSA_P256_SHA256);
    assert_eq!(b64::decode(body["message_b64"].as_str().unwrap()).unwrap(), message);
    signer.check().unwrap();
}

#[test]
fn failures_are_classified() {
    let double = Double::start("proxy:classify");
    let signer = ProxySigner::connect(double.config(None)).unwrap();
    let cases: Vec<(Mode, &str, bool)> = vec![
        (Mode::Status(503, r#"{"error":"hsm offline"}"#), "unavailable", true),
        (Mode::Status(502, ""), "unavailable", true),
        (Mode::Status(429, "slow down"), "throttled", true),
        (Mode::Status(403, r#"{"error":"kid not allowed"}"#), "rejected", false),
        (Mode::WrongKid, "bad_response", false),
        (Mode::WrongMessage, "bad_response", false),
        (Mode::Garbage, "bad_response", false),
    ];
    for (mode, class, transient) in cases {
        double.set(mode.clone());
        let err = signer.sign(b"m").unwrap_err();
        assert_eq!((err.class(), err.is_transient()), (class, transient), "{mode:?}: {err}");
        assert!(err.to_string().contains("signing proxy POST"), "{err}");
    }
    double.set(Mode::Status(503, r#"{"error":"hsm offline"}"#));
    assert!(signer.sign(b"m").unwrap_err().to_string().contains("HTTP 503: hsm offline"));
    double.set(Mode::WrongMessage);
    let err = signer.sign(b"m").unwrap_err().to_string();
    assert!(err.contains("does not verify"), "{err}");
    double.set(Mode::Good);
    signer.sign(b"m").unwrap();
}

#[test]
fn a_dead_or_slow_proxy_is_a_quick_transient_failure() {
    // A port nobody listens on: bind, learn the port, close.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = ProxyConfig {
        url: format!("http://{dead}"),
        kid: Some("proxy:dead".into()),
        token: None,
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
    };
    let signer = ProxySigner::connect(config.clone()).unwrap();
    let started = Instant::now();
    let err = signer.sign(b"m").unwrap_err();
    assert!(matches!(err, SignError::Unavailable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // Without a configured kid the proxy must answer at start-up.
    let err = ProxySigner::connect(ProxyConfig { kid: None, ..config }).unwrap_err();
    assert!(matches!(err, SignerSetupError::Proxy { .. }), "{err}");

    let double = Double::start("proxy:slow");
    let signer = ProxySigner::connect(double.config(None)).unwrap();
    double.set(Mode::Slow(Duration::from_secs(3)));
    let started = Instant::now();
    let err = signer.sign(b"m").unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
}

#[test]
fn a_configured_kid_must_match_the_proxy_key() {
    let double = Double::start("proxy:actual");
    let signer = ProxySigner::connect(double.config(Some("proxy:expected"))).unwrap();
    assert_eq!(signer.kid(), "proxy:expected");
    let err = signer.sign(b"m").unwrap_err();
    assert!(matches!(err, SignError::BadResponse { .. }), "{err}");
    assert!(err.to_string().contains("proxy:actual"), "{err}");
    assert!(signer.check().is_err());
}

#[test]
fn build_signer_marks_the_proxy_as_emergency_and_require_kms_forbids_it() {
    let double = Double::start("proxy:policy");
    let env = |require_kms: &'static str| {
        let url = double.url.clone();
        move |name: &str| match name {
            "SIGNING_PROXY_URL" => Some(url.clone()),
            "AUDIT_SIGNING_KMS_KEY_ID" => Some("alias/audit".into()),
            "REQUIRE_KMS" => Some(require_kms.into()),
            _ => None,
        }
    };
    let choice = build_signer(&SignerConfig::from_lookup(env("false")).unwrap()).unwrap();
    assert!(choice.emergency);
    assert_eq!(choice.signer.kid(), "proxy:policy");
    assert!(choice.detail.contains(&double.url), "{}", choice.detail);
    let signature = choice.signer.sign(b"m").unwrap();
    verify_signature(ALGORITHM_ECDSA_P256_SHA256, double.public_pem.as_bytes(), b"m", &signature)
        .unwrap();

    let err = SignerConfig::from_lookup(env("true")).unwrap_err();
    assert!(matches!(err, SignerSetupError::ProxyForbidden { .. }), "{err}");
    // Also when the config was assembled by hand and validation skipped.
    let mut config = SignerConfig::from_lookup(env("false")).unwrap();
    config.require_kms = true;
    assert!(matches!(build_signer(&config), Err(SignerSetupError::ProxyForbidden { .. })));
}

#[test]
fn works_and_drops_from_inside_a_tokio_runtime() {
    let double = Double::start("proxy:async");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    let config = double.config(None);
    let pem = double.public_pem.clone();
    runtime.block_on(async move {
        // reqwest's blocking client would panic here if the signer did not hop threads.
        let signer = ProxySigner::connect(config).unwrap();
        let signature = signer.sign(b"async caller").unwrap();
        verify_signature(ALGORITHM_ECDSA_P256_SHA256, pem.as_bytes(), b"async caller", &signature)
            .unwrap();
        drop(signer);
    });
    assert!(double.seen().requests >= 2);
}
