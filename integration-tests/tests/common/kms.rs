//! AWS KMS on moto for tests that run processors: dummy credentials, key creation, and a
//! loopback forwarder that takes the KMS path down and brings it back.
//!
//! moto keeps keys in memory only (a restart loses them for good), so an outage that KMS
//! recovers from is a forwarder in front of moto, not a stopped moto.
#![allow(dead_code)]

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use evalstream_audit::signer::kms::aws_sdk_kms;

/// The region every test key lives in.
pub const REGION: &str = "us-east-1";

/// moto's address: `MOTO_URL`, default `http://127.0.0.1:5000` (`deploy/local/moto.sh start`).
pub fn moto_url() -> String {
    std::env::var("MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// Environment for a subprocess that talks to moto (dummy credentials; moto accepts any).
pub fn aws_env() -> [(&'static str, &'static str); 3] {
    [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", REGION)]
}

/// Creates an ECC_NIST_P256 signing key on moto and returns its id. Panics with a hint when moto
/// does not answer: a KMS test must fail, not skip, without it.
pub fn create_signing_key(moto: &str) -> String {
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = runtime.enter();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(moto)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    let client = aws_sdk_kms::Client::from_conf(config);
    let out = runtime
        .block_on(
            client
                .create_key()
                .key_spec(KeySpec::EccNistP256)
                .key_usage(KeyUsageType::SignVerify)
                .description("evalstream test key")
                .send(),
        )
        .unwrap_or_else(|e| {
            panic!("CreateKey on moto at {moto} failed ({e}); start it with `deploy/local/moto.sh start`")
        });
    out.key_metadata().expect("key metadata").key_id().to_string()
}

/// A loopback TCP forwarder to `target` that a test can cut (new connections dropped, open ones
/// shut down: the client sees refused / reset connections) and restore.
pub struct Forwarder {
    /// `http://127.0.0.1:<port>`: give this to the client instead of `target`.
    pub url: String,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    /// Starts forwarding to `target` (`http://host:port`); lives until the test process exits.
    pub fn start(target: &str) -> Forwarder {
        let target = target.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let down = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (down_t, open_t) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if down_t.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else { continue };
                let mut open = open_t.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        Forwarder { url, down, open }
    }

    /// Cuts the path: refuses new connections and shuts down pooled ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Restores the path.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}
