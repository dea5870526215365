//! The `audit-verifier` processor: `audit.chain` → `audit.verifications`.
//!
//! Runs [`ChainVerifier`] over every record of each chain as it arrives and emits its results as
//! `evalstream.audit.VerificationResult` events (one per checkpoint, one per distinct failure) to
//! `audit.verifications`, same partition as the chain. The verifier's state lives in the
//! runtime's changelog-backed state, written with every record, so a restart continues exactly
//! where the committed results end. It keeps going after failures; each is reported once. A
//! record that is not a chain record is itself a finding (reported, not dead-lettered): on the
//! audit trail, what cannot be read is evidence.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use evalstream_runtime::error::ProcessError;
use evalstream_runtime::processor::{
    BuildError, Context, Input, Output, Processor, Registration, Setup,
};
use tracing::{error, warn};

use evalstream_audit::records::{
    ChainRecord, VerificationResult, VerificationStatus, CHAIN_RECORD_SCHEMA,
    VERIFICATION_RESULT_SCHEMA,
};
use evalstream_audit::trust::SignerRegistry;
use evalstream_audit::verify::ChainVerifier;

/// Input topic.
pub const INPUT: &str = evalstream_audit::CHAIN_TOPIC;
/// Output topic.
pub const OUTPUT: &str = evalstream_audit::VERIFICATIONS_TOPIC;
/// State key of the partition's [`ChainVerifier`].
const STATE_KEY: &str = "verifier";

/// How the binary knows this processor. Settings: `[processor] signers_file` (or `SIGNERS_FILE`),
/// the signer registry; without it every signed checkpoint is reported `unknown_signer`.
pub const REGISTRATION: Registration =
    Registration { name: "audit-verifier", inputs: &[INPUT], outputs: &[OUTPUT], build };

fn build(setup: &Setup<'_>) -> Result<Box<dyn Processor>, BuildError> {
    let path: Option<PathBuf> = match setup.setting_str("signers_file")? {
        Some(p) => Some(p.into()),
        None => std::env::var_os("SIGNERS_FILE").filter(|v| !v.is_empty()).map(Into::into),
    };
    let registry = match &path {
        Some(p) => Some(SignerRegistry::load(p)?),
        None => {
            warn!("no SIGNERS_FILE / processor.signers_file: signed checkpoints will be reported unknown_signer");
            None
        }
    };
    let verified = setup.metrics.counter(
        "audit_entries_verified_total",
        "Audit chain entries whose hash and link were verified",
    );
    let failed = setup.metrics.counter(
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
    Ok(Box::new(AuditVerifier::new(registry, path, hooks)))
}

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
    registry: Option<SignerRegistry>,
    registry_path: Option<PathBuf>,
    hooks: VerifierHooks,
}

impl AuditVerifier {
    /// A verifier checking signatures against `registry` (`None`: every signed checkpoint is
    /// `unknown_signer`). `registry_path` is reloaded when a kid is unknown, so a rotation
    /// published to the file is picked up without a restart.
    pub fn new(
        registry: Option<SignerRegistry>,
        registry_path: Option<PathBuf>,
        hooks: VerifierHooks,
    ) -> Self {
        AuditVerifier { registry, registry_path, hooks }
    }

    /// Feeds one record to `verifier`; when a signer is unknown and the registry file changed,
    /// verifies it again from `before` with the reloaded registry.
    fn verify(
        &mut self,
        verifier: &mut ChainVerifier,
        before: &ChainVerifier,
        offset: i64,
        record: &ChainRecord,
    ) -> Vec<VerificationResult> {
        let results = verifier.feed(offset, record, self.registry.as_ref());
        let unknown = results.iter().any(|r| r.status == VerificationStatus::UnknownSigner);
        let Some(path) = self.registry_path.as_ref().filter(|_| unknown) else { return results };
        match SignerRegistry::load(path) {
            Ok(registry) => {
                warn!(path = %path.display(), "signer registry changed; re-checking");
                self.registry = Some(registry);
                *verifier = before.clone();
                verifier.feed(offset, record, self.registry.as_ref())
            }
            Err(e) => {
                error!(error = %e, "reloading the signer registry failed");
                results
            }
        }
    }
}

impl Processor for AuditVerifier {
    fn name(&self) -> &str {
        REGISTRATION.name
    }

    fn inputs(&self) -> Vec<String> {
        REGISTRATION.input_topics()
    }

    fn outputs(&self) -> Vec<String> {
        REGISTRATION.output_topics()
    }

    fn process(&mut self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let partition = input.partition;
        let before: ChainVerifier =
            ctx.state().get(STATE_KEY)?.unwrap_or_else(|| ChainVerifier::new(partition as u32));
        let mut verifier = before.clone();
        let results = if input.schema != CHAIN_RECORD_SCHEMA {
            verifier.feed_undecodable(input.offset, &format!("schema {}", input.schema))
        } else {
            match input
                .value()
                .map_err(|e| e.to_string())
                .and_then(|v| ChainRecord::from_avro(v).map_err(|e| e.to_string()))
            {
                Ok(record) => self.verify(&mut verifier, &before, input.offset, &record),
                Err(e) => verifier.feed_undecodable(input.offset, &e),
            }
        };
        if let Some(hook) = &self.hooks.on_verified {
            hook(verifier.entries_verified - before.entries_verified);
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
        ctx.state().put(STATE_KEY, &verifier)
    }
}

#[cfg(test)]
mod tests {
    use evalstream_audit::chain::{AuditEventJson, ChainHead};
    use evalstream_audit::merkle::CompactRange;
    use evalstream_audit::records::{ChainEntry, ChainRecordBody, Checkpoint};
    use evalstream_runtime::testkit::{self, Runner, TestRecord};
    use evalstream_runtime::topology::Topology;

    use super::*;

    /// `n` chained entries of partition 1 followed by a pending checkpoint over them.
    fn chain(n: u64) -> Vec<ChainRecord> {
        let mut head = ChainHead::genesis(1);
        let mut range = CompactRange::new();
        let mut out = Vec::new();
        for i in 0..n {
            let event = AuditEventJson {
                event_id: format!("e-{i}"),
                event_type: "eval.submission_accepted".into(),
                actor: "submissions".into(),
                subject: "m".into(),
                occurred_at: 1_790_000_000_000 + i as i64,
                payload: format!(r#"{{"n":{i}}}"#),
            };
            let canonical = event.canonical_bytes().unwrap();
            let appended = head.append(&canonical).unwrap();
            range.append(&appended.entry_hash).unwrap();
            let entry = ChainEntry::new(&appended, &event, canonical, 1, i as i64);
            out.push(ChainRecord { partition: 1, body: ChainRecordBody::Entry(entry) });
        }
        let cp = Checkpoint::pending(&range, head.head_hash, 1_790_000_000_000 + n as i64 - 1);
        out.push(ChainRecord { partition: 1, body: ChainRecordBody::Checkpoint(cp) });
        out
    }

    fn input(r: &ChainRecord) -> TestRecord {
        let bytes =
            testkit::codec().encode(INPUT, CHAIN_RECORD_SCHEMA, &r.to_avro().unwrap()).unwrap();
        TestRecord::raw(INPUT, bytes).partition(1)
    }

    fn verifier() -> AuditVerifier {
        AuditVerifier::new(None, None, VerifierHooks::default())
    }

    fn results(r: &Runner<AuditVerifier>) -> Vec<VerificationResult> {
        r.outputs()
            .iter()
            .map(|o| {
                assert_eq!(o.partition, Some(1), "results stay on the chain's partition");
                let decoded = testkit::codec().decode(&o.bytes).unwrap();
                VerificationResult::from_avro(&decoded.value).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_good_chain_verifies_up_to_its_pending_checkpoint() {
        let mut r = Runner::new(verifier());
        r.send_all(chain(3).iter().map(input));
        let res = results(&r);
        assert_eq!(res.len(), 1, "{res:?}");
        assert_eq!(res[0].status, VerificationStatus::PendingSignature);
        assert_eq!((res[0].from_seq, res[0].to_seq, res[0].to_offset), (0, 2, 3));
    }

    #[test]
    fn tampering_is_reported_once_and_verification_goes_on_after_a_restart() {
        let mut records = chain(4);
        if let ChainRecordBody::Entry(e) = &mut records[1].body {
            e.canonical[10] ^= 1;
        }
        let mut r = Runner::new(verifier());
        r.send_all(records[..2].iter().map(input));
        r.commit();
        r.restart(verifier());
        r.send_all(records[2..].iter().map(input));
        let res = results(&r);
        let failures: Vec<_> =
            res.iter().filter(|x| x.status == VerificationStatus::HashMismatch).collect();
        assert_eq!(failures.len(), 1, "{res:?}");
        assert_eq!(failures[0].first_failing_seq, Some(1));
        assert_eq!(failures[0].event_id.as_deref(), Some("e-1"));
        assert!(r.dead_letters().is_empty());
    }

    #[test]
    fn what_is_not_a_chain_record_is_a_finding_and_garbage_a_dead_letter() {
        let mut r = Runner::new(verifier());
        let foreign = testkit::codec()
            .encode_json(
                INPUT,
                "evalstream.runtime.TotalsInput",
                &serde_json::json!({"key": "k", "amount": 1}),
            )
            .unwrap();
        r.send(TestRecord::raw(INPUT, foreign).partition(1));
        let res = results(&r);
        assert_eq!(res[0].status, VerificationStatus::HashMismatch);
        assert!(
            res[0].detail.contains("schema evalstream.runtime.TotalsInput"),
            "{}",
            res[0].detail
        );
        let garbage = r.send(TestRecord::raw(INPUT, b"not avro".to_vec()).partition(1));
        assert_eq!(garbage.dead_letter().map(|d| d.class.as_str()), Some("deserialization"));
    }

    #[test]
    fn registration_matches_the_topology() {
        REGISTRATION.check_topology(&Topology::bundled().unwrap()).unwrap();
    }
}
