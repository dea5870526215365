//! The audit benchmarks of `evalstream bench`.
//!
//! * `--suite audit-chain`: `evalstream run audit-chain` (a child process) next to the raw
//!   pass-through worker over the same pre-filled `audit.events` (fresh topics per round). With
//!   `--kms-endpoint` (moto, `deploy/local/moto.sh`) every run signs with its own KMS key and the
//!   Sign calls for that key are counted from moto's request recorder, an observer outside
//!   evalstream, against the signed checkpoints found in the run's `audit.chain` output.
//! * `--suite audit-verify`: offline chain verification next to a raw consume of the same range.
//! * `--suite audit-hash`: in-process ns/event of canonicalize + hash + Merkle + encode.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use evalstream_audit::chain::{AuditEventJson, ChainHead};
use evalstream_audit::merkle::CompactRange;
use evalstream_audit::records::{
    ChainEntry, ChainRecord, ChainRecordBody, CheckpointStatus, CHAIN_RECORD_SCHEMA,
};
use evalstream_audit::signer::LocalKeySigner;
use evalstream_audit::verify::ChainVerifier;
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::reader::CommittedReader;

use super::proc::Measured;
use super::progress::{self, Probe};
use super::report::{Report, SystemFigures};
use super::{create_topics, fmt_rates, median, prepare, verify, Args, Ctx, Input, Topics};

/// Audit event `i` with a JSON payload carrying `filler` (so records are about `--record-bytes`).
pub(super) fn event(i: u64, filler: &str) -> AuditEventJson {
    let payload = serde_json::json!({ "n": i, "score": (i % 1000) as f64 / 8.0, "note": filler });
    AuditEventJson {
        event_id: format!("bench-{i}"),
        event_type: "eval.submission_accepted".into(),
        actor: format!("svc-{}", i % 7),
        subject: format!("model-{}", i % 50),
        occurred_at: 1_790_000_000_000 + i as i64,
        payload: payload.to_string(),
    }
}

/// How the chain processor signs in one run.
enum Signing {
    /// A KMS key on moto at `endpoint`.
    Kms { endpoint: String, key_id: String },
    /// A throw-away local key file.
    Local(std::path::PathBuf),
}

/// One `evalstream run audit-chain` child with its signer.
fn start_chain(
    ctx: &Ctx,
    cfg: &RuntimeConfig,
    args: &Args,
    label: &str,
) -> anyhow::Result<(Measured, std::path::PathBuf, Probe, String, Vec<i64>, Signing)> {
    let group = format!("{}evalstream.audit-chain.{label}", cfg.topic_prefix);
    let output = cfg.topic("audit.chain");
    let start = verify::end_offsets(cfg, &output, args.partitions)?;
    let probe = Probe::committed(cfg, &group, &cfg.topic("audit.events"), args.partitions)?;
    let chain = evalstream_audit_chain::AuditChain::new(Default::default(), None, None);
    ctx.ensure_internal_topics(&chain, cfg, &group, args.partitions)?;
    let mut cmd = ctx.processor_command("audit-chain", cfg, &group);
    let signing = match &args.kms_endpoint {
        Some(endpoint) => {
            let key_id = kms::create_key(endpoint)?;
            cmd.env("AUDIT_SIGNING_KMS_KEY_ID", &key_id)
                .env("AWS_ENDPOINT_URL_KMS", endpoint)
                .env("AWS_REGION", kms::REGION)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env_remove("AUDIT_SIGNING_KEY_FILE");
            Signing::Kms { endpoint: endpoint.clone(), key_id }
        }
        None => {
            let key = ctx.log_dir.join(format!("chain-key-{label}.pem"));
            LocalKeySigner::generate(&key)?;
            cmd.env("AUDIT_SIGNING_KEY_FILE", &key).env_remove("AUDIT_SIGNING_KMS_KEY_ID");
            Signing::Local(key)
        }
    };
    cmd.env("REQUIRE_KMS", if args.kms_endpoint.is_some() { "true" } else { "false" })
        .env_remove("SIGNING_PROXY_URL");
    let log = ctx.log(&format!("audit-chain-{label}"));
    let child = Measured::spawn("audit-chain", cmd, &log)?;
    Ok((child, log, probe, output, start, signing))
}

/// Signed checkpoints among the `audit.chain` records from `start`.
fn signed_checkpoints(
    cfg: &RuntimeConfig,
    codec: &Codec,
    output: &str,
    start: &[i64],
) -> anyhow::Result<u64> {
    let mut n = 0;
    for v in verify::read_committed(cfg, output, start)? {
        let rec = ChainRecord::decode(codec, &v).map_err(anyhow::Error::msg)?;
        if let ChainRecordBody::Checkpoint(c) = rec.body {
            if c.status == CheckpointStatus::Signed {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// `--suite audit-chain`.
pub(super) fn chain(
    ctx: &Ctx,
    base: &RuntimeConfig,
    codec: &Codec,
    args: &Args,
) -> anyhow::Result<Report> {
    let mut report = Report::new("audit-chain", args);
    let records = args.records();
    if let Some(endpoint) = &args.kms_endpoint {
        kms::start_recording(endpoint)?;
    }
    let mut raw = SystemFigures::new("raw pass-through");
    let mut chain = SystemFigures::new("audit-chain exactly-once");
    let (mut calls, mut checkpoints) = (0u64, 0u64);
    for run in 1..=args.runs {
        // A fresh input and audit.chain per round: the chain processor resumes from what its
        // outputs prove, so a second run on the same audit.chain would find everything chained
        // already and process nothing. Raw pass-through reads the same input as the chain.
        eprintln!("run {run}: filling audit.events with {records} records");
        let cfg = prepare(base, codec, args, Input::Audit)?;
        let _topics = Topics::under(&cfg);
        let input = cfg.topic("audit.events");
        let label = format!("{run}");
        let out = cfg.topic(&format!("raw.{label}.output"));
        create_topics(&cfg, std::slice::from_ref(&out), args.partitions)?;
        let probe = Probe::end_offsets(&cfg, &out, args.partitions)?;
        let log = ctx.log(&format!("raw-{label}"));
        let mut child =
            Measured::spawn("raw", ctx.passthrough_command(&cfg, &input, &out, records), &log)?;
        let f = progress::measure(&mut child, &log, &probe, records, Duration::from_secs(900))?;
        child.stop(Duration::from_secs(30))?;
        eprintln!("run {run}: raw pass-through  {:>9.0} records/s", f.rate);
        raw.runs.push(f);

        let (mut child, log, probe, output, start, signing) = start_chain(ctx, &cfg, args, &label)?;
        let f = progress::measure(&mut child, &log, &probe, records, Duration::from_secs(900))?;
        child.stop(Duration::from_secs(60))?;
        let signed = signed_checkpoints(&cfg, codec, &output, &start)?;
        let sign_calls = match &signing {
            Signing::Kms { endpoint, key_id } => Some(kms::sign_calls(endpoint, key_id)?),
            Signing::Local(key) => {
                let _ = std::fs::remove_file(key);
                None
            }
        };
        eprintln!(
            "run {run}: audit-chain       {:>9.0} records/s  {signed} signed checkpoints{}",
            f.rate,
            sign_calls.map(|c| format!(", {c} KMS Sign calls")).unwrap_or_default()
        );
        if let Some(c) = sign_calls {
            calls += c;
            checkpoints += signed;
        }
        chain.runs.push(f);
    }
    if let Some(endpoint) = &args.kms_endpoint {
        kms::stop_recording(endpoint)?;
    }
    let ratio = chain.rate() / raw.rate();
    report.ratios.push(("audit-chain ÷ raw (records/s)".into(), ratio));
    let per_checkpoint =
        (args.kms_endpoint.is_some() && checkpoints > 0).then(|| calls as f64 / checkpoints as f64);
    if args.kms_endpoint.is_some() {
        report.extra.push(("KMS Sign calls (all runs, moto's recorder)".into(), calls as f64));
        report
            .extra
            .push(("signed checkpoints (all runs, audit.chain)".into(), checkpoints as f64));
    }
    report.systems = vec![raw, chain];
    report.set_targets(&[("chain_vs_raw", Some(ratio)), ("kms_per_checkpoint", per_checkpoint)]);
    Ok(report)
}

/// `--suite audit-verify`: (raw consume, audit verify) records/s over the same `audit.chain`
/// range, built first by running the audit-chain processor (not timed).
pub(super) fn verify(
    ctx: &Ctx,
    base: &RuntimeConfig,
    codec: &Codec,
    args: &Args,
) -> anyhow::Result<Report> {
    let mut report = Report::new("audit-verify", args);
    let records = args.records();
    let cfg = prepare(base, codec, args, Input::Audit)?;
    let _topics = Topics::under(&cfg);
    let no_kms = Args { kms_endpoint: None, ..args.clone() };
    let (mut child, log, probe, _, _, signing) = start_chain(ctx, &cfg, &no_kms, "build")?;
    progress::wait_done(&mut child, &log, &probe, records, Duration::from_secs(900))?;
    child.stop(Duration::from_secs(60))?;
    if let Signing::Local(key) = signing {
        let _ = std::fs::remove_file(key);
    }
    let reader = CommittedReader::new(&cfg, codec)?;
    let mut raw_rates = Vec::new();
    let mut verify_rates = Vec::new();
    for run in 1..=args.runs {
        let started = Instant::now();
        let mut raw = 0u64;
        for p in 0..args.partitions {
            reader.scan("audit.chain", p, 0, |_| {
                raw += 1;
                true
            })?;
        }
        let raw_rate = raw as f64 / started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut verified = 0u64;
        let mut failures = 0usize;
        for p in 0..args.partitions {
            let mut v = ChainVerifier::new(p as u32);
            reader.scan("audit.chain", p, 0, |r| {
                verified += 1;
                let results = match r.value.as_deref().map(|b| ChainRecord::decode(codec, b)) {
                    Some(Ok(rec)) => v.feed(r.offset, &rec, None),
                    Some(Err(e)) => v.feed_undecodable(r.offset, &e),
                    None => v.feed_undecodable(r.offset, "no value"),
                };
                // Without a registry every signed checkpoint is unknown_signer; count only chain
                // failures here (signature checks are part of the rate all the same).
                failures += results
                    .iter()
                    .filter(|x| x.status.as_str() == "hash_mismatch" || x.status.as_str() == "gap")
                    .count();
                true
            })?;
        }
        let verify_rate = verified as f64 / started.elapsed().as_secs_f64();
        anyhow::ensure!(failures == 0, "the benchmark chain did not verify ({failures} failures)");
        anyhow::ensure!(raw == verified, "raw read {raw} records, verify {verified}");
        eprintln!(
            "run {run}: raw consume {raw_rate:>9.0}  audit verify {verify_rate:>9.0} records/s"
        );
        raw_rates.push(raw_rate);
        verify_rates.push(verify_rate);
    }
    let ratio = median(&verify_rates) / median(&raw_rates);
    report.extra.push(("raw consume records/s (runs)".into(), median(&raw_rates)));
    report.extra.push(("audit verify records/s (runs)".into(), median(&verify_rates)));
    eprintln!(
        "raw consume runs: {}; audit verify runs: {}",
        fmt_rates(&raw_rates),
        fmt_rates(&verify_rates)
    );
    report.ratios.push(("audit verify ÷ raw consume (target >= 0.8)".into(), ratio));
    report.set_targets(&[]);
    Ok(report)
}

/// ns/event of canonicalize + entry hash + Merkle append + ChainRecord encode, in process.
pub(super) fn hash_cost(codec: &Codec, args: &Args) -> anyhow::Result<ExitCode> {
    let filler = "x".repeat(args.record_bytes.saturating_sub(300));
    let events: Vec<AuditEventJson> =
        (0..args.records().min(200_000)).map(|i| event(i, &filler)).collect();
    let mut per_event = Vec::new();
    for run in 0..args.runs {
        let mut head = ChainHead::genesis(0);
        let mut range = CompactRange::new();
        let mut bytes_out = 0usize;
        let started = Instant::now();
        for (i, e) in events.iter().enumerate() {
            let canonical = e.canonical_bytes()?;
            let appended = head.append(&canonical)?;
            range.append(&appended.entry_hash)?;
            let entry = ChainEntry::new(&appended, e, canonical, 0, i as i64);
            let record = ChainRecord { partition: 0, body: ChainRecordBody::Entry(entry) };
            bytes_out +=
                codec.encode("audit.chain", CHAIN_RECORD_SCHEMA, &record.to_avro()?)?.len();
        }
        let ns = started.elapsed().as_nanos() as f64 / events.len() as f64;
        eprintln!(
            "run {}: {ns:.0} ns/event ({} events, {} bytes out)",
            run + 1,
            events.len(),
            bytes_out
        );
        per_event.push(ns);
    }
    println!(
        "canonicalize + hash + merkle + encode: median {:.0} ns/event over {} runs of {} events",
        median(&per_event),
        args.runs,
        events.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// KMS on moto: keys for the benchmark and an outside count of Sign calls.
mod kms {
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};

    /// Region of the keys (moto accepts any).
    pub(super) const REGION: &str = "us-east-1";

    /// Creates an ECC P-256 signing key on `endpoint` and returns its id.
    pub(super) fn create_key(endpoint: &str) -> anyhow::Result<String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let _guard = rt.enter();
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
            .build();
        let client = aws_sdk_kms::Client::from_conf(config);
        let out = rt.block_on(
            client
                .create_key()
                .key_spec(KeySpec::EccNistP256)
                .key_usage(KeyUsageType::SignVerify)
                .description("evalstream bench")
                .send(),
        )?;
        let id = out.key_metadata().map(|m| m.key_id().to_string());
        id.ok_or_else(|| anyhow::anyhow!("CreateKey returned no key metadata"))
    }

    /// Turns on moto's request recorder (every request to the server is appended to its
    /// recording from now on).
    pub(super) fn start_recording(endpoint: &str) -> anyhow::Result<()> {
        let url = format!("{}/moto-api/recorder/start-recording", endpoint.trim_end_matches('/'));
        let r = reqwest::blocking::Client::new().post(&url).send()?;
        anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
        Ok(())
    }

    /// Turns the recorder off again (the recording stays on the server's disk).
    pub(super) fn stop_recording(endpoint: &str) -> anyhow::Result<()> {
        let url = format!("{}/moto-api/recorder/stop-recording", endpoint.trim_end_matches('/'));
        let r = reqwest::blocking::Client::new().post(&url).send()?;
        anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
        Ok(())
    }

    /// Sign requests for `key_id` in moto's recording.
    pub(super) fn sign_calls(endpoint: &str, key_id: &str) -> anyhow::Result<u64> {
        let url =
            format!("{}/moto-api/recorder/download-recording", endpoint.trim_end_matches('/'));
        let text = reqwest::blocking::get(&url)?.error_for_status()?.text()?;
        Ok(count_sign_calls(&text, key_id))
    }

    /// Counts the recording's lines that are a KMS Sign request naming `key_id`.
    pub(super) fn count_sign_calls(recording: &str, key_id: &str) -> u64 {
        recording
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| {
                let target = e["headers"]
                    .as_object()
                    .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target")))
                    .and_then(|(_, v)| v.as_str())
                    .unwrap_or_default();
                if target != "TrentService.Sign" {
                    return false;
                }
                let body = e["body"].as_str().unwrap_or_default();
                let body = if e["body_encoded"].as_bool() == Some(true) {
                    evalstream_runtime::b64::decode(body)
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .unwrap_or_default()
                } else {
                    body.to_string()
                };
                serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|b| b["KeyId"].as_str().map(|k| k == key_id))
                    .unwrap_or(false)
            })
            .count() as u64
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn counts_only_sign_calls_of_the_key() {
            let b64 = |s: &str| evalstream_runtime::b64::encode(s.as_bytes());
            let line = |target: &str, key: &str| {
                serde_json::json!({
                    "headers": {"X-Amz-Target": target},
                    "method": "POST", "url": "/",
                    "body": b64(&format!(r#"{{"KeyId":"{key}","Message":"eA=="}}"#)),
                    "body_encoded": true,
                })
                .to_string()
            };
            let rec = [
                line("TrentService.Sign", "k1"),
                line("TrentService.Sign", "k2"),
                line("TrentService.GetPublicKey", "k1"),
                line("TrentService.Sign", "k1"),
            ]
            .join("\n");
            assert_eq!(count_sign_calls(&rec, "k1"), 2);
            assert_eq!(count_sign_calls(&rec, "k3"), 0);
        }
    }
}
