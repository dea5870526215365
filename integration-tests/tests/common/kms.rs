//! AWS KMS on moto for tests that run processors: dummy credentials, key creation, and a
//! loopback forwarder that takes the KMS path down and brings it back.
//!
//! moto keeps keys in memory only (a restart loses them for good), so an outage that KMS
//! recovers from is a forwarder in front of moto, not a stopped moto.
#![allow(dead_code)]

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// An SDK client straight at moto, for what the signer does not do (create keys, read them
/// independently of the signer).
fn admin(runtime: &tokio::runtime::Runtime, moto: &str) -> aws_sdk_kms::Client {
    let _guard = runtime.enter();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(moto)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// Creates a key of `spec` and `usage` on moto and returns its id. Panics with a hint when moto
/// does not answer: a KMS test must fail, not skip, without it.
pub fn create_key(moto: &str, spec: KeySpec, usage: KeyUsageType) -> String {
    let runtime = runtime();
    let client = admin(&runtime, moto);
    let out = runtime
        .block_on(
            client.create_key().key_spec(spec).key_usage(usage).description("evalstream test key").send(),
        )
        .unwrap_or_else(|e| {
            panic!("CreateKey on moto at {moto} failed ({e}); start it with `deploy/local/moto.sh start`")
        });
    out.key_metadata().expect("key metadata").key_id().to_string()
}

/// Creates an ECC_NIST_P256 signing key (what the audit chain signs with) and returns its id.
pub fn create_signing_key(moto: &str) -> String {
    create_key(moto, KeySpec::EccNistP256, KeyUsageType::SignVerify)
}

/// The key's public key (SPKI DER) straight from the SDK, independent of the signer.
pub fn public_key(moto: &str, key_id: &str) -> Vec<u8> {
    let runtime = runtime();
    let client = admin(&runtime, moto);
    let out = runtime
        .block_on(client.get_public_key().key_id(key_id).send())
        .expect("GetPublicKey on moto");
    out.public_key().expect("public key").as_ref().to_vec()
}

/// Disables the key (DisableKey), as an operator or an attacker could.
pub fn disable_key(moto: &str, key_id: &str) {
    let runtime = runtime();
    runtime
        .block_on(admin(&runtime, moto).disable_key().key_id(key_id).send())
        .expect("DisableKey");
}

/// A loopback TCP forwarder to `target` that a test can cut (new connections dropped, open ones
/// shut down: the client sees refused / reset connections), hang (new connections accepted and
/// never answered: a service that stalls) and restore.
pub struct Forwarder {
    /// `http://127.0.0.1:<port>`: give this to the client instead of `target`.
    pub url: String,
    mode: Arc<AtomicU8>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

const UP: u8 = 0;
const DOWN: u8 = 1;
const HANG: u8 = 2;

impl Forwarder {
    /// Starts forwarding to `target` (`http://host:port`); lives until the test process exits.
    pub fn start(target: &str) -> Forwarder {
        let target = target.trim_start_matches("http://").trim_end_matches('/');
        let target = target.split('/').next().unwrap_or(target).to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mode = Arc::new(AtomicU8::new(UP));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (mode_t, open_t) = (mode.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                match mode_t.load(Ordering::SeqCst) {
                    DOWN => drop(client),
                    HANG => open_t.lock().unwrap().push(client),
                    _ => {
                        let Ok(server) = TcpStream::connect(&target) else { continue };
                        let mut open = open_t.lock().unwrap();
                        open.push(client.try_clone().unwrap());
                        open.push(server.try_clone().unwrap());
                        pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pump(server, client);
                    }
                }
            }
        });
        Forwarder { url, mode, open }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        if mode != UP {
            // Cut pooled connections too, or the client would keep talking through them.
            for stream in self.open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Cuts the path: refuses new connections and shuts down pooled ones.
    pub fn cut(&self) {
        self.set(DOWN);
    }

    /// Stalls the path: new connections are accepted and never answered.
    pub fn hang(&self) {
        self.set(HANG);
    }

    /// Restores the path.
    pub fn restore(&self) {
        self.set(UP);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}
