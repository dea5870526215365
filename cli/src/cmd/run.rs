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
use evalstream_runtime::processor::Setup;
use evalstream_runtime::readiness::{self, Checks, RUNTIME_CHECK_INTERVAL};
use evalstream_runtime::topology::Topology;
use tracing::{error, info};

use crate::processors;

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
    let registration = processors::find(&args.processor)?;
    // A processor whose inputs disagree with the topology would silently run under derived
    // topic names (see `Registration::check_topology`): refuse to start instead.
    registration.check_topology(&Topology::bundled()?).map_err(anyhow::Error::msg)?;
    let metrics = Metrics::new(&args.processor);
    // The runtime's own dependencies first; the processor adds its own in `build`.
    let checks = Checks::new();
    checks
        .kafka(RUNTIME_CHECK_INTERVAL, readiness::broker_probe(&cfg).map_err(anyhow::Error::msg)?);
    if let Some(probe) = readiness::schema_registry_probe(&codec) {
        checks.gating("schema_registry", RUNTIME_CHECK_INTERVAL, probe);
    }
    let setup = Setup { config: &cfg, codec: &codec, metrics: &metrics, checks: &checks };
    let processor = registration.instantiate(&setup).map_err(|e| anyhow::anyhow!(e))?;
    let health = Health::with_metrics(&args.processor, metrics.clone());
    let shutdown = Arc::new(AtomicBool::new(false));
    info!(dependencies = ?checks.describe(), "readiness checks (name, gates readiness)");
    // Detached: each check ends within its own timeout once `shutdown` is set, and the process
    // exits right after the engine anyway.
    drop(checks.start(&health, &shutdown));

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
    let handle = engine::spawn(processor, opts)?;
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
