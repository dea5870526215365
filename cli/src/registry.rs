//! The processors this binary can run, by name.
//!
//! Each entry builds a processor from the runtime config's `[processor]` table and the
//! environment. New processors are added here and in `topology/topology.toml`.

use std::sync::Arc;
use std::time::Duration;

use evalstream_audit::registry::Registry;
use evalstream_audit::signer::{build_signer, SignerConfig};
use evalstream_audit_chain::{AuditChain, ChainSettings};
use evalstream_audit_verifier::{AuditVerifier, VerifierHooks};
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::metrics::Metrics;
use tracing::{info, warn};

use crate::audit_gauges::PendingSignatures;

/// Names accepted by `evalstream run`.
pub const PROCESSORS: &[&str] = &["totals", "audit-chain", "audit-verifier"];

/// A processor ready to run. An enum rather than a trait object: the engine is generic over the
/// processor type, so each arm monomorphises its own loop.
pub enum Runnable {
    /// Keyed running totals (reference processor).
    Totals(evalstream_totals::Totals),
    /// The audit hash chain (with its pending-signature gauge).
    AuditChain(Box<PendingSignatures<AuditChain>>, Option<EmergencySigner>),
    /// The audit chain verifier.
    AuditVerifier(Box<AuditVerifier>),
}

/// The emergency signing proxy was chosen: `run` records an `audit.emergency_signer` event in
/// every chain before processing starts.
pub struct EmergencySigner {
    /// What was chosen (for the event payload).
    pub detail: String,
}

fn setting_u64(cfg: &RuntimeConfig, key: &str, default: u64) -> anyhow::Result<u64> {
    match cfg.processor.get(key) {
        None => Ok(default),
        Some(toml::Value::Integer(i)) if *i > 0 => Ok(*i as u64),
        Some(other) => anyhow::bail!("processor.{key} must be a positive integer, got {other}"),
    }
}

fn signers_file(cfg: &RuntimeConfig) -> Option<std::path::PathBuf> {
    match cfg.processor.get("signers_file") {
        Some(toml::Value::String(s)) => Some(s.into()),
        _ => std::env::var_os("SIGNERS_FILE").filter(|v| !v.is_empty()).map(Into::into),
    }
}

/// Builds the processor called `name`.
pub fn build(name: &str, cfg: &RuntimeConfig, metrics: &Metrics) -> anyhow::Result<Runnable> {
    match name {
        "totals" => Ok(Runnable::Totals(evalstream_totals::Totals)),
        "audit-chain" => {
            let settings = ChainSettings {
                checkpoint_every: setting_u64(cfg, "checkpoint_every", 1000)?,
                dedup_window: setting_u64(cfg, "dedup_window", 10_000)? as usize,
                punctuate_every: Duration::from_millis(setting_u64(cfg, "punctuate_ms", 1000)?),
            };
            let signer_cfg = SignerConfig::from_env()?;
            // REQUIRE_KMS=true without a reachable KMS key fails here, before anything runs.
            let choice = build_signer(&signer_cfg)?;
            info!(signer = %choice.detail, "audit checkpoints will be signed");
            let failures = metrics.counter(
                "audit_signing_failures_total",
                "Checkpoint signing attempts that failed (the runbook's SIGNING_FAILURE)",
            );
            let hook: evalstream_audit_chain::FailureHook = Arc::new(move |_e| {
                failures.inc();
            });
            metrics
                .gauge(
                    "audit_emergency_signer_active",
                    "1 when checkpoints are signed by the emergency signing proxy, else 0",
                )
                .set(i64::from(choice.emergency));
            let emergency =
                choice.emergency.then(|| EmergencySigner { detail: choice.detail.clone() });
            let chain = AuditChain::new(settings, Some(choice.signer), Some(hook));
            Ok(Runnable::AuditChain(
                Box::new(PendingSignatures::new(chain, evalstream_audit_chain::OUTPUT, metrics)),
                emergency,
            ))
        }
        "audit-verifier" => {
            let path = signers_file(cfg);
            let registry = match &path {
                Some(p) => Some(Registry::load(p)?),
                None => {
                    warn!("no SIGNERS_FILE / processor.signers_file: signed checkpoints will be reported unknown_signer");
                    None
                }
            };
            let verified = metrics.counter(
                "audit_entries_verified_total",
                "Audit chain entries whose hash and link were verified",
            );
            let failed = metrics.counter(
                "audit_verification_failures_total",
                "Audit verification failures found (hash mismatch, gap, bad or unknown signature)",
            );
            let hooks = VerifierHooks {
                on_verified: Some(Arc::new(move |n| {
                    verified.inc_by(n);
                })),
                on_failure: Some(Arc::new(move |_r| {
                    failed.inc();
                })),
            };
            Ok(Runnable::AuditVerifier(Box::new(AuditVerifier::new(registry, path, hooks))))
        }
        other => anyhow::bail!("unknown processor {other:?}; known: {}", PROCESSORS.join(", ")),
    }
}
