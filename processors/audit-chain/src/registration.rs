//! Registration of the `audit-chain` processor: its settings, its signer (with the `/ready`
//! check of it and the emergency-signer event), and the gauge wrapper it runs in.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{AuditChain, ChainSettings, INPUT, OUTPUT};
use evalstream_audit::signer::{build_signer, SignError, Signer, SignerConfig};
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::processor::{BuildError, Processor, Registration, Setup};
use tracing::info;

use crate::gauges::PendingSignatures;

/// `audit-chain`. Settings: `[processor] checkpoint_every` (1000), `dedup_window` (10000),
/// `punctuate_ms` (1000); the signer from the environment (docs/signing.md). `/ready` reports the
/// dependency `signer` (see [`SignerHealth`]); reported, not gating: a chain that cannot sign
/// keeps hashing and leaves checkpoints pending (docs/operations.md#readiness).
pub const REGISTRATION: Registration =
    Registration { name: "audit-chain", inputs: &[INPUT], outputs: &[OUTPUT], build };

fn build(setup: &Setup<'_>) -> Result<Box<dyn Processor>, BuildError> {
    let settings = ChainSettings {
        checkpoint_every: setup.setting_u64("checkpoint_every", 1000)?,
        dedup_window: setup.setting_u64("dedup_window", 10_000)? as usize,
        punctuate_every: Duration::from_millis(setup.setting_u64("punctuate_ms", 1000)?),
    };
    // REQUIRE_KMS=true without a reachable KMS key fails here, before anything runs.
    let choice = build_signer(&SignerConfig::from_env()?)?;
    info!(signer = %choice.detail, "audit checkpoints will be signed");
    if choice.emergency {
        record_emergency_signer(setup.config, setup.codec, &choice.detail)?;
    }
    let failures = setup.metrics.counter(
        "audit_signing_failures_total",
        "Checkpoint signing attempts that failed (the runbook's SIGNING_FAILURE)",
    );
    let signer_health = Arc::new(SignerHealth::new(Arc::clone(&choice.signer), &choice.detail));
    let seen = Arc::clone(&signer_health);
    let hook: crate::FailureHook = Arc::new(move |e| {
        failures.inc();
        seen.signing_failed(e);
    });
    setup.checks.reported("signer", SIGNER_REPORT_INTERVAL, move || signer_health.check());
    setup
        .metrics
        .gauge(
            "audit_emergency_signer_active",
            "1 when checkpoints are signed by the emergency signing proxy, else 0",
        )
        .set(i64::from(choice.emergency));
    let chain = AuditChain::new(settings, Some(choice.signer), Some(hook));
    Ok(Box::new(PendingSignatures::new(chain, setup.metrics)))
}

/// How often `/ready`'s signer check asks the signer whether it could sign (KMS: DescribeKey and
/// GetPublicKey, two cheap calls; never a Sign).
const SIGNER_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// How often the signer dependency is re-evaluated from the last check and the last signing
/// attempt (no call to the signer unless [`SIGNER_CHECK_INTERVAL`] has passed), so that a failed
/// Sign shows in `/ready` within seconds.
const SIGNER_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// The signer as `/ready` reports it: whether the key is usable now ([`Signer::check`]) and
/// whether the last signing attempt failed recently. Both matter: DescribeKey can succeed while
/// Sign is throttled or denied, and Sign is only attempted when there is something to sign, so
/// an idle chain learns of an outage only from the check.
pub struct SignerHealth {
    signer: Arc<dyn Signer>,
    detail: String,
    /// When signing last failed, and why.
    last_failure: Mutex<Option<(Instant, String)>>,
    /// When the signer was last asked, and its answer.
    last_check: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl SignerHealth {
    /// How long a signing failure keeps the dependency not ok after it happened (the chain
    /// retries within 30 s, so a live outage keeps refreshing it).
    const FAILURE_MEMORY: Duration = Duration::from_secs(60);

    fn new(signer: Arc<dyn Signer>, detail: &str) -> Self {
        SignerHealth {
            signer,
            detail: detail.to_owned(),
            last_failure: Mutex::new(None),
            last_check: Mutex::new(None),
        }
    }

    fn signing_failed(&self, e: &SignError) {
        *self.last_failure.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), e.to_string()));
    }

    fn check(&self) -> evalstream_runtime::readiness::CheckResult {
        let kid = self.signer.kid();
        let checked = {
            let mut last = self.last_check.lock().unwrap_or_else(PoisonError::into_inner);
            match &*last {
                Some((at, result)) if at.elapsed() < SIGNER_CHECK_INTERVAL => result.clone(),
                _ => {
                    let result = self.signer.check().map_err(|e| e.to_string());
                    *last = Some((Instant::now(), result.clone()));
                    result
                }
            }
        };
        if let Err(e) = checked {
            return Err(format!("kid {kid} ({}): {e}", self.detail));
        }
        let failure = self.last_failure.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match failure {
            Some((at, why)) if at.elapsed() < Self::FAILURE_MEMORY => Err(format!(
                "kid {kid} ({}): key usable, but signing failed {} s ago: {why}",
                self.detail,
                at.elapsed().as_secs()
            )),
            _ => Ok(format!("kid {kid} ({}): key usable", self.detail)),
        }
    }
}

/// Records the switch to the emergency signing proxy as an `audit.emergency_signer` event in
/// every chain (one per `audit.events` partition), before the first checkpoint is signed by it.
fn record_emergency_signer(
    cfg: &RuntimeConfig,
    codec: &Codec,
    detail: &str,
) -> Result<(), BuildError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let topic = cfg.topic(evalstream_audit::EVENTS_TOPIC);
    let meta: BaseConsumer = evalstream_runtime::kafka::reader(cfg).create()?;
    let md = meta.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let partitions = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    if partitions == 0 {
        return Err(format!("{topic} does not exist; run `evalstream topology apply`").into());
    }
    let producer: BaseProducer = evalstream_runtime::kafka::plain_producer(cfg).create()?;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    for p in 0..partitions as i32 {
        let id = format!("emergency-signer-{}-{now}-{p}", cfg.instance_id);
        let value = crate::emergency_signer_event(&id, &cfg.instance_id, detail, now);
        let bytes = codec.encode(&topic, evalstream_audit::chain::AUDIT_EVENT_SCHEMA, &value)?;
        producer
            .send(BaseRecord::<str, [u8]>::to(&topic).key(&id).payload(&bytes).partition(p))
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    tracing::warn!(detail, partitions, "recorded audit.emergency_signer in every chain");
    Ok(())
}
