#![cfg(feature = "broker")]
//! The AWS KMS signer against moto's server, a real implementation of the KMS API.
//!
//! `deploy/local/test.sh` starts moto (`deploy/local/moto.sh start`); `MOTO_URL` (default
//! `http://127.0.0.1:5000`) points at it. An unreachable moto FAILS these tests instead of
//! skipping them: a silently skipped signer test would hide a broken KMS path.
//!
//! Every test creates its own key, so tests never share state and moto needs no reset. moto
//! wants credentials and a region but accepts any: the tests set dummy ones (`testing`) once,
//! before any thread makes a request, and never send real credentials to it.

mod common;

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Once;
use std::time::{Duration, Instant};

use common::kms::{create_key, moto_url, public_key, Forwarder, REGION};
use evalstream_audit::signer::kms::aws_sdk_kms;
use evalstream_audit::signer::{
    build_signer, verify_signature, KmsConfig, KmsSigner, SignError, Signer, SignerConfig,
    SignerKind, SignerSetupError, ALGORITHM_ECDSA_P256_SHA256,
};
use evalstream_audit::trust::{SignerEntry, SignerRegistry};

use aws_sdk_kms::types::{KeySpec, KeyUsageType};

/// Dummy credentials for the SDK's default chain (environment first), set exactly once before
/// any test touches the network, and a check that moto answers.
fn setup() -> String {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::remove_var("AWS_SESSION_TOKEN");
        std::env::set_var("AWS_REGION", REGION);
    });
    let url = moto_url();
    let address = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let socket = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut all| all.next())
        .unwrap_or_else(|| panic!("MOTO_URL {url:?} is not http://host:port"));
    if let Err(e) = TcpStream::connect_timeout(&socket, Duration::from_secs(2)) {
        panic!("moto is not reachable at {url} ({e}); start it with `deploy/local/moto.sh start`");
    }
    url
}

fn kms_config(url: &str, key_id: &str) -> KmsConfig {
    let mut config = KmsConfig::new(key_id);
    config.region = Some(REGION.into());
    config.endpoint_url = Some(url.into());
    config
}

/// A loopback port with nothing listening: connections are refused at once.
fn dead_endpoint() -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

#[test]
fn sign_with_kms_and_verify_with_the_public_key() {
    let url = setup();
    let key_id = create_key(&url, KeySpec::EccNistP256, KeyUsageType::SignVerify);
    let signer = KmsSigner::new(kms_config(&url, &key_id)).unwrap();
    signer.check().unwrap();
    assert_eq!(signer.kind(), SignerKind::Kms);
    assert_eq!(signer.algorithm(), ALGORITHM_ECDSA_P256_SHA256);
    let der = public_key(&url, &key_id);
    assert_eq!(signer.public_key_spki_der().unwrap(), der);
    assert_eq!(signer.kid(), evalstream_audit::signer::derive_kid(SignerKind::Kms, &der));

    let message = b"evalstream checkpoint\npartition 3\ntree_size 1000\n";
    let signature = signer.sign(message).unwrap();
    verify_signature(ALGORITHM_ECDSA_P256_SHA256, &der, message, &signature).unwrap();
    assert!(verify_signature(ALGORITHM_ECDSA_P256_SHA256, &der, b"forged", &signature).is_err());

    // The registry verifies it too, inside the key's window.
    let mut registry = SignerRegistry::new();
    registry.add(SignerEntry::new(signer.kid(), SignerKind::Kms, &der, 0).unwrap()).unwrap();
    registry.verify(signer.kid(), ALGORITHM_ECDSA_P256_SHA256, 1, message, &signature).unwrap();
}

#[test]
fn build_signer_with_require_kms_accepts_a_reachable_key() {
    let url = setup();
    let key_id = create_key(&url, KeySpec::EccNistP256, KeyUsageType::SignVerify);
    let config = SignerConfig {
        require_kms: true,
        kms_key_id: Some(key_id.clone()),
        kms_region: Some(REGION.into()),
        kms_endpoint_url: Some(url.clone()),
        kid: Some("kms:audit-2025".into()),
        ..SignerConfig::default()
    };
    let choice = build_signer(&config).unwrap();
    assert!(!choice.emergency);
    assert_eq!(choice.signer.kid(), "kms:audit-2025");
    assert!(choice.detail.contains(&key_id), "{}", choice.detail);
    let signature = choice.signer.sign(b"m").unwrap();
    verify_signature(ALGORITHM_ECDSA_P256_SHA256, &public_key(&url, &key_id), b"m", &signature)
        .unwrap();
}

#[test]
fn require_kms_with_an_unreachable_endpoint_refuses_to_start() {
    setup();
    let config = SignerConfig {
        require_kms: true,
        kms_key_id: Some("alias/evalstream-audit".into()),
        kms_region: Some(REGION.into()),
        kms_endpoint_url: Some(dead_endpoint()),
        ..SignerConfig::default()
    };
    let started = Instant::now();
    let err = build_signer(&config).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(matches!(err, SignerSetupError::KmsUnavailable { .. }), "{err}");
    let text = err.to_string();
    for expected in ["alias/evalstream-audit", "not reachable", "refusing to start", "unreachable"]
    {
        assert!(text.contains(expected), "{expected:?} missing in: {text}");
    }
    // The same with a configured kid (no GetPublicKey at construction): check() refuses.
    let err = build_signer(&SignerConfig { kid: Some("kms:x".into()), ..config }).unwrap_err();
    assert!(matches!(err, SignerSetupError::KmsUnavailable { .. }), "{err}");
}

#[test]
fn without_require_kms_an_unreachable_kms_with_a_known_kid_still_starts() {
    setup();
    let config = SignerConfig {
        require_kms: false,
        kms_key_id: Some("alias/evalstream-audit".into()),
        kms_region: Some(REGION.into()),
        kms_endpoint_url: Some(dead_endpoint()),
        kid: Some("kms:audit".into()),
        ..SignerConfig::default()
    };
    let choice = build_signer(&config).unwrap();
    assert!(choice.signer.sign(b"m").unwrap_err().is_transient());
    // Without a kid there is nothing to write next to a signature: refuse, and say why.
    let err = build_signer(&SignerConfig { kid: None, ..config }).unwrap_err().to_string();
    assert!(err.contains("AUDIT_SIGNER_KID"), "{err}");
}

#[test]
fn a_dead_endpoint_is_a_quick_transient_failure() {
    setup();
    let mut config = kms_config(&dead_endpoint(), "alias/evalstream-audit");
    config.kid = Some("kms:audit".into());
    let signer = KmsSigner::new(config).unwrap();
    let started = Instant::now();
    let err = signer.sign(b"checkpoint").unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, SignError::Unavailable { .. }), "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("KMS Sign failed for key alias/evalstream-audit"), "{err}");
    assert!(elapsed < Duration::from_secs(5), "a dead KMS must fail fast, took {elapsed:?}");
    let err = signer.check().unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[test]
fn keys_that_cannot_sign_checkpoints_are_refused_even_without_require_kms() {
    let url = setup();
    let wrong = [
        create_key(&url, KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt),
        create_key(&url, KeySpec::EccNistP384, KeyUsageType::SignVerify),
        "00000000-0000-0000-0000-000000000000".to_string(),
    ];
    for key_id in wrong {
        let config = SignerConfig {
            require_kms: false,
            kms_key_id: Some(key_id.clone()),
            kms_region: Some(REGION.into()),
            kms_endpoint_url: Some(url.clone()),
            kid: Some("kms:x".into()),
            ..SignerConfig::default()
        };
        let err = build_signer(&config).unwrap_err();
        assert!(matches!(err, SignerSetupError::KmsKey { .. }), "{key_id}: {err}");
        assert!(err.to_string().contains(&key_id), "{err}");
    }
}

#[test]
fn a_disabled_key_is_a_permanent_failure() {
    let url = setup();
    let key_id = create_key(&url, KeySpec::EccNistP256, KeyUsageType::SignVerify);
    let mut config = kms_config(&url, &key_id);
    config.kid = Some("kms:disabled".into());
    let signer = KmsSigner::new(config).unwrap();
    signer.sign(b"before").unwrap();
    common::kms::disable_key(&url, &key_id);
    // DescribeKey reports the state; readiness and start-up use it. (moto still signs with a
    // disabled key, where AWS answers DisabledException, a permanent failure: see the unit
    // tests of the classification in the signer.)
    let err = signer.check().unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("Disabled"), "{err}");
    let config = SignerConfig {
        require_kms: false,
        kms_key_id: Some(key_id.clone()),
        kms_region: Some(REGION.into()),
        kms_endpoint_url: Some(url.clone()),
        kid: Some("kms:disabled".into()),
        ..SignerConfig::default()
    };
    assert!(matches!(build_signer(&config), Err(SignerSetupError::KmsKey { .. })));
}

#[test]
fn signs_when_called_from_inside_a_tokio_runtime() {
    let url = setup();
    let key_id = create_key(&url, KeySpec::EccNistP256, KeyUsageType::SignVerify);
    let der = public_key(&url, &key_id);
    let outer = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    outer.block_on(async move {
        // Built, used and dropped on a runtime worker: the signer must hop to a helper thread.
        let signer = KmsSigner::new(kms_config(&url, &key_id)).unwrap();
        let signature = signer.sign(b"async caller").unwrap();
        verify_signature(ALGORITHM_ECDSA_P256_SHA256, &der, b"async caller", &signature).unwrap();
        drop(signer);
    });
}

#[test]
fn an_outage_is_transient_and_the_same_signer_signs_again_afterwards() {
    let moto = setup();
    let key_id = create_key(&moto, KeySpec::EccNistP256, KeyUsageType::SignVerify);
    let der = public_key(&moto, &key_id);
    // This test's KMS path only: moto keeps its keys and the other tests run on.
    let outage = Forwarder::start(&moto);
    let config = SignerConfig {
        require_kms: true,
        kms_key_id: Some(key_id.clone()),
        kms_region: Some(REGION.into()),
        kms_endpoint_url: Some(outage.url.clone()),
        timeout: Duration::from_secs(1),
        max_attempts: 2,
        ..SignerConfig::default()
    };
    let signer = build_signer(&config).unwrap().signer;
    signer.sign(b"checkpoint 1").unwrap();

    for what in ["refused", "hanging"] {
        if what == "refused" {
            outage.cut();
        } else {
            outage.hang();
        }
        let started = Instant::now();
        let err = signer.sign(b"checkpoint 2").unwrap_err();
        let elapsed = started.elapsed();
        assert!(err.is_transient(), "{what}: {err}");
        assert!(elapsed < Duration::from_secs(6), "{what}: took {elapsed:?}");
        assert!(signer.check().unwrap_err().is_transient(), "{what}");
    }

    // KMS is back: the checkpoint that waited as pending_signature is signed now.
    outage.restore();
    let signature = signer.sign(b"checkpoint 2").unwrap();
    verify_signature(ALGORITHM_ECDSA_P256_SHA256, &der, b"checkpoint 2", &signature).unwrap();
    signer.check().unwrap();
}

#[test]
fn one_signer_serves_several_threads_at_once() {
    let url = setup();
    let key_id = create_key(&url, KeySpec::EccNistP256, KeyUsageType::SignVerify);
    let der = public_key(&url, &key_id);
    let signer = KmsSigner::new(kms_config(&url, &key_id)).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (signer, der) = (&signer, &der);
            s.spawn(move || {
                for i in 0..5 {
                    let message = format!("thread {t} checkpoint {i}");
                    let signature = signer.sign(message.as_bytes()).unwrap();
                    verify_signature(
                        ALGORITHM_ECDSA_P256_SHA256,
                        der,
                        message.as_bytes(),
                        &signature,
                    )
                    .unwrap();
                }
            });
        }
    });
}

/// The audit chain end to end with AWS KMS (moto): checkpoints signed by KMS; during an outage
/// (the KMS path goes down mid-stream) hashing goes on and checkpoints wait as
/// `pending_signature`, counted as signing failures; when KMS is back they are signed in order,
/// and the final verification of every partition is `ok`.
///
/// moto keeps keys only in memory (a restart would lose the key for good), so the outage is a
/// forwarder in front of moto taken down and brought back: to the signer, KMS stopped answering
/// and came back.
#[test]
fn audit_chain_signs_with_kms_and_signs_pending_checkpoints_after_an_outage() {
    use common::audit;
    use common::eos::Instance;
    use evalstream_audit::records::{ChainRecordBody, VerificationStatus};
    use evalstream_integration_tests as it;

    let moto = setup();
    let key_id = create_key(&moto, KeySpec::EccNistP256, KeyUsageType::SignVerify);
    let outage = Forwarder::start(&moto);
    let prefix = format!("{}.", it::unique_name("akms"));
    for t in ["audit.events", "audit.chain", "audit.verifications"] {
        it::create_topic(&format!("{prefix}{t}"), 2);
    }
    let codec = evalstream_runtime::codec::Codec::from_env().unwrap();
    let dir = audit::temp_dir("akms");
    let signers = dir.join("signers.json");
    it::run(
        it::evalstream()
            .args(["signers", "add", "--file", signers.to_str().unwrap(), "--kid", "kms-audit"])
            .args(["--from-kms", &key_id, "--valid-from", "2000-01-01T00:00:00Z"])
            .env("AWS_ENDPOINT_URL", &moto),
        None,
    )
    .assert_success();
    let config = dir.join("chain.toml");
    std::fs::write(&config, "[processor]\ncheckpoint_every = 100\npunctuate_ms = 500\n").unwrap();
    let ops = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut chain = Instance::new("audit-chain", &prefix, "k0")
        .env("EVALSTREAM_CONFIG", config.to_str().unwrap())
        .env("EVALSTREAM_OPS_LISTEN", &format!("127.0.0.1:{ops}"))
        .env("REQUIRE_KMS", "true")
        .env("AUDIT_SIGNING_KMS_KEY_ID", &key_id)
        .env("AUDIT_SIGNER_KID", "kms-audit")
        .env("AWS_ENDPOINT_URL", &outage.url)
        .env("AUDIT_SIGNING_TIMEOUT_MS", "1000")
        .env("AUDIT_SIGNING_MAX_ATTEMPTS", "1");
    chain.start();

    let topic = format!("{prefix}audit.events");
    let produce = |range: std::ops::Range<u64>| {
        let recs: Vec<it::RawRecord> = range
            .map(|i| {
                let id = format!("ev-{i}");
                it::RawRecord::new(audit::encode_event(&codec, &topic, &id, i))
                    .key(id)
                    .partition((i % 2) as i32)
            })
            .collect();
        it::produce_raw(&topic, &recs);
        let expected = common::eos::next_offsets(&topic);
        it::wait_until("audit-chain to commit", Duration::from_secs(180), || {
            std::thread::sleep(Duration::from_millis(300));
            common::eos::group_committed(
                &format!("{prefix}evalstream.audit-chain"),
                &topic,
                &expected,
            )
        });
    };
    produce(0..600);
    outage.cut();
    produce(600..1200);
    std::thread::sleep(Duration::from_secs(2));
    let during = audit::read_chain(&codec, &format!("{prefix}audit.chain"));
    let pending_during = during
        .values()
        .flatten()
        .filter(|(_, r)| matches!(&r.body, ChainRecordBody::Checkpoint(c) if c.signature.is_none()))
        .count();
    assert!(pending_during > 0, "the outage left no pending_signature checkpoint");
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", ops)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
    };
    // /ready reports the signer as not ok, and stays ready: the chain keeps hashing.
    let mut ready = serde_json::Value::Null;
    it::wait_until("/ready to report the signer outage", Duration::from_secs(30), || {
        ready = serde_json::from_str(&get("/ready")).unwrap_or_default();
        ready["dependencies"]["signer"]["ok"] == false
    });
    assert_eq!(
        ready["ready"], true,
        "a signer outage must not make audit-chain not ready: {ready}"
    );
    assert_eq!(ready["dependencies"]["signer"]["affects_readiness"], false, "{ready}");
    assert!(
        ready["warnings"][0].as_str().unwrap().starts_with("signer not ok: kid kms-audit"),
        "{ready}"
    );
    let metrics = get("/metrics");
    let failures: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("audit_signing_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failures >= 1.0, "signing failures not counted:\n{metrics}");
    outage.restore();
    produce(1200..1500);
    std::thread::sleep(Duration::from_secs(4)); // punctuation signs what is still pending
    chain.stop();

    let records = audit::read_chain(&codec, &format!("{prefix}audit.chain"));
    for (p, recs) in &records {
        let pending: std::collections::HashSet<u64> = recs
            .iter()
            .filter_map(|(_, r)| match &r.body {
                ChainRecordBody::Checkpoint(c) if c.signature.is_none() => Some(c.tree_size),
                _ => None,
            })
            .collect();
        let signed: std::collections::HashSet<u64> = recs
            .iter()
            .filter_map(|(_, r)| match &r.body {
                ChainRecordBody::Checkpoint(c) if c.signature.is_some() => {
                    assert_eq!(c.kid.as_deref(), Some("kms-audit"));
                    assert_eq!(c.signer_kind.as_deref(), Some("kms"));
                    Some(c.tree_size)
                }
                _ => None,
            })
            .collect();
        assert!(
            pending.is_subset(&signed),
            "partition {p}: never signed: {:?}",
            pending.difference(&signed).collect::<Vec<_>>()
        );
    }

    let mut verifier = Instance::new("audit-verifier", &prefix, "v0")
        .env("SIGNERS_FILE", signers.to_str().unwrap());
    verifier.start();
    let chain_topic = format!("{prefix}audit.chain");
    let expected = common::eos::next_offsets(&chain_topic);
    it::wait_until("audit-verifier to commit", Duration::from_secs(180), || {
        std::thread::sleep(Duration::from_millis(300));
        common::eos::group_committed(
            &format!("{prefix}evalstream.audit-verifier"),
            &chain_topic,
            &expected,
        )
    });
    verifier.stop();
    let results = audit::read_verifications(&codec, &format!("{prefix}audit.verifications"));
    for (p, recs) in &records {
        let rs = &results[p];
        assert!(
            rs.iter().all(|r| matches!(
                r.status,
                VerificationStatus::Ok | VerificationStatus::PendingSignature
            )),
            "partition {p}: {rs:?}"
        );
        let entries = audit::entries(recs).len() as u64;
        let last_ok =
            rs.iter().filter(|r| r.status == VerificationStatus::Ok).map(|r| r.to_seq).max();
        assert_eq!(last_ok, Some(entries - 1), "partition {p}: not verified to the end");
    }
    let _ = std::fs::remove_dir_all(dir);
}
