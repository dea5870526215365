//! Registration of the `audit-chain` processor.
//!
//! It belongs in `processors/audit-chain` next to the processor, like every other registration;
//! it lives here only until that crate's rewrite (restore from the chain tail) has landed, and
//! uses nothing but the crate's public API so that it moves as is.

use std::sync::Arc;
use std::time::Duration;

use evalstream_audit::signer::{build_signer, SignerConfig};
use evalstream_audit_chain::{AuditChain, ChainSettings, INPUT, OUTPUT};
use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::processor::{BuildError, Processor, Registration, Setup};
use tracing::info;

use crate::audit_gauges::PendingSignatures;

/// `audit-chain`. Settings: `[processor] checkpoint_every` (1000), `dedup_window` (10000),
/// `punctuate_ms` (1000); the signer from the environment (docs/signing.md).
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
    let hook: evalstream_audit_chain::FailureHook = Arc::new(move |_e| {
        failures.inc();
    });
    setup
        .metrics
        .gauge(
            "audit_emergency_signer_active",
            "1 when checkpoints are signed by the emergency signing proxy, else 0",
        )
        .set(i64::from(choice.emergency));
    let chain = AuditChain::new(settings, Some(choice.signer), Some(hook));
    Ok(Box::new(PendingSignatures::new(chain, OUTPUT, setup.metrics)))
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
        let value =
            evalstream_audit_chain::emergency_signer_event(&id, &cfg.instance_id, detail, now);
        let bytes = codec.encode(&topic, evalstream_audit::chain::AUDIT_EVENT_SCHEMA, &value)?;
        producer
            .send(BaseRecord::<str, [u8]>::to(&topic).key(&id).payload(&bytes).partition(p))
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    tracing::warn!(detail, partitions, "recorded audit.emergency_signer in every chain");
    Ok(())
}
