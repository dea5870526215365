//! `evalstream run <processor>`: one processor instance as a consumer-group member.
//!
//! The exactly-once loop runs on its own OS thread (blocking transaction calls stay off the async
//! workers); the tokio runtime serves `/health`, `/ready` and `/metrics` and turns SIGTERM/SIGINT
//! into a graceful stop: the open transaction is committed and the instance leaves the group.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::engine::{self, EngineOptions, FailPoint};
use evalstream_runtime::metrics::Metrics;
use evalstream_runtime::ops::{self, Health};
use tracing::{error, info};

use crate::registry::{self, Runnable};

/// Arguments of `evalstream run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Processor to run (see `evalstream topology show`).
    pub processor: String,
}

/// Runs the processor until SIGTERM/SIGINT or a stop-class error.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let cfg = RuntimeConfig::load(config)?;
    let codec = Codec::from_env()?;
    let metrics = Metrics::new(&args.processor);
    let runnable = registry::build(&args.processor, &cfg, &metrics)?;
    let health = Health::with_metrics(&args.processor, metrics.clone());
    let shutdown = Arc::new(AtomicBool::new(false));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("evalstream-ops")
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = cfg.ops_listen {
        let (m, h) = (metrics.clone(), health.clone());
        let mut rx = stop_rx.clone();
        rt.spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = ops::serve(addr, m, h, stopped).await {
                error!(error = %e, "ops server failed");
            }
        });
        info!(%addr, "serving /health /ready /metrics");
    }
    {
        let shutdown = shutdown.clone();
        rt.spawn(async move {
            wait_for_signal().await;
            info!("signal received; stopping after the open transaction commits");
            shutdown.store(true, Ordering::SeqCst);
        });
    }

    let opts = EngineOptions {
        config: cfg,
        codec,
        metrics,
        health,
        shutdown,
        fail_point: FailPoint::from_env(),
    };
    let handle = match runnable {
        Runnable::Totals(p) => engine::spawn(p, opts)?,
        Runnable::AuditChain(p, emergency) => {
            if let Some(e) = emergency {
                record_emergency_signer(&opts.config, &opts.codec, &e.detail)?;
            }
            engine::spawn(*p, opts)?
        }
        Runnable::AuditVerifier(p) => engine::spawn(*p, opts)?,
    };
    let result = handle.join().map_err(|_| anyhow::anyhow!("processing thread panicked"))?;
    let _ = stop_tx.send(true);
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            error!(error = %e, "processor stopped");
            Err(e.into())
        }
    }
}

/// Records the switch to the emergency signing proxy as an `audit.emergency_signer` event in
/// every chain (one per `audit.events` partition), before the first checkpoint is signed by it.
fn record_emergency_signer(cfg: &RuntimeConfig, codec: &Codec, detail: &str) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let topic = cfg.topic(evalstream_audit::EVENTS_TOPIC);
    let meta: BaseConsumer = evalstream_runtime::kafka::reader(cfg).create()?;
    let md = meta.fetch_metadata(Some(&topic), std::time::Duration::from_secs(10))?;
    let partitions = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    anyhow::ensure!(partitions > 0, "{topic} does not exist; run `evalstream topology apply`");
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
    producer.flush(std::time::Duration::from_secs(30))?;
    tracing::warn!(detail, partitions, "recorded audit.emergency_signer in every chain");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
