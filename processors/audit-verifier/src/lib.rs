//! The `audit-verifier` processor: `audit.chain` → `audit.verifications`.
//!
//! Runs [`ChainVerifier`] over every record of each chain as it arrives and emits its results as
//! `evalstream.audit.VerificationResult` events (one per checkpoint, one per distinct failure) to
//! `audit.verifications`, same partition as the chain. The verifier's state lives in the
//! runtime's changelog-backed state, written with every record, so a restart continues exactly
//! where the committed results end. It keeps going after failures; each is reported once.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use evalstream_runtime::error::ProcessError;
use evalstream_runtime::processor::{Context, Input, Output, Processor};
use tracing::{error, warn};

use evalstream_audit::records::{
    ChainRecord, VerificationResult, VerificationStatus, CHAIN_RECORD_SCHEMA,
    VERIFICATION_RESULT_SCHEMA,
};
use evalstream_audit::registry::Registry;
use evalstream_audit::verify::ChainVerifier;

/// Input topic.
pub const INPUT: &str = evalstream_audit::CHAIN_TOPIC;
/// Output topic.
pub const OUTPUT: &str = evalstream_audit::VERIFICATIONS_TOPIC;
const STATE_KEY: &[u8] = b"verifier";

/// Called with each failure result.
pub type FailureCallback = Arc<dyn Fn(&VerificationResult) + Send + Sync>;
/// Called with a count of verified entries.
pub type CountCallback = Arc<dyn Fn(u64) + Send + Sync>;

/// Metric hooks: entries verified, failures found.
#[derive(Clone, Default)]
pub struct VerifierHooks {
    /// Called with the number of entries verified by one record (0 or 1).
    pub on_verified: Option<CountCallback>,
    /// Called for every failure result emitted.
    pub on_failure: Option<FailureCallback>,
}

/// The audit-verifier processor.
pub struct AuditVerifier {
    registry: Option<Registry>,
    registry_path: Option<PathBuf>,
    hooks: VerifierHooks,
}

impl AuditVerifier {
    /// A verifier checking signatures against `registry` (`None`: every signed checkpoint is
    /// `unknown_signer`). `registry_path` is reloaded when a kid is unknown, so a rotation
    /// published to the file is picked up without a restart.
    pub fn new(
        registry: Option<Registry>,
        registry_path: Option<PathBuf>,
        hooks: VerifierHooks,
    ) -> Self {
        AuditVerifier { registry, registry_path, hooks }
    }
}

impl Processor for AuditVerifier {
    fn name(&self) -> &str {
        "audit-verifier"
    }

    fn inputs(&self) -> Vec<String> {
        vec![INPUT.to_string()]
    }

    fn outputs(&self) -> Vec<String> {
        vec![OUTPUT.to_string()]
    }

    fn process(&mut self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let partition = input.partition;
        let mut verifier = match ctx.state().get(STATE_KEY) {
            Some(bytes) => serde_json::from_slice(bytes).map_err(|e| {
                ProcessError::Fatal(format!("verifier state of partition {partition}: {e}"))
            })?,
            None => ChainVerifier::new(partition as u32),
        };
        let before = verifier.entries_verified;
        let results = if input.schema != CHAIN_RECORD_SCHEMA {
            verifier.feed_undecodable(input.offset, &format!("schema {}", input.schema))
        } else {
            match ChainRecord::from_avro(input.value) {
                Ok(record) => {
                    let mut results = verifier.feed(input.offset, &record, self.registry.as_ref());
                    let unknown =
                        results.iter().any(|r| r.status == VerificationStatus::UnknownSigner);
                    if unknown {
                        if let Some(path) = &self.registry_path {
                            match Registry::load(path) {
                                Ok(reg) => {
                                    // Re-verify with the updated registry: the state is restored
                                    // from before this record.
                                    warn!(path = %path.display(), "signer registry changed; re-checking");
                                    self.registry = Some(reg);
                                    verifier = match ctx.state().get(STATE_KEY) {
                                        Some(b) => serde_json::from_slice(b)
                                            .map_err(|e| ProcessError::Fatal(e.to_string()))?,
                                        None => ChainVerifier::new(partition as u32),
                                    };
                                    results = verifier.feed(
                                        input.offset,
                                        &record,
                                        self.registry.as_ref(),
                                    );
                                }
                                Err(e) => {
                                    error!(error = %e, "reloading the signer registry failed")
                                }
                            }
                        }
                    }
                    results
                }
                Err(e) => verifier.feed_undecodable(input.offset, &e.to_string()),
            }
        };
        if let Some(hook) = &self.hooks.on_verified {
            hook(verifier.entries_verified - before);
        }
        for r in &results {
            if !matches!(r.status, VerificationStatus::Ok | VerificationStatus::PendingSignature) {
                error!(partition, status = r.status.as_str(), seq = ?r.first_failing_seq, event_id = ?r.event_id, offset = ?r.offset, detail = %r.detail, "audit verification failure");
                if let Some(hook) = &self.hooks.on_failure {
                    hook(r);
                }
            }
            let value = r
                .to_avro()
                .map_err(|e| ProcessError::Fatal(format!("verification result: {e}")))?;
            ctx.emit(
                Output::new(OUTPUT, None, VERIFICATION_RESULT_SCHEMA, value)
                    .with_partition(partition),
            );
        }
        let bytes =
            serde_json::to_vec(&verifier).map_err(|e| ProcessError::Fatal(e.to_string()))?;
        ctx.state().put(STATE_KEY, bytes);
        Ok(())
    }
}
