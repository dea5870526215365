//! The processors this binary can run, by name.
//!
//! Each entry builds a processor from the runtime config's `[processor]` table. New processors
//! are added here and in `topology/topology.toml`.

use evalstream_runtime::config::RuntimeConfig;

/// Names accepted by `evalstream run`.
pub const PROCESSORS: &[&str] = &["totals"];

/// A processor ready to run. An enum rather than a trait object: the engine is generic over the
/// processor type, so each arm monomorphises its own loop.
pub enum Runnable {
    /// Keyed running totals (reference processor).
    Totals(evalstream_totals::Totals),
}

/// Builds the processor called `name`.
pub fn build(name: &str, _cfg: &RuntimeConfig) -> anyhow::Result<Runnable> {
    match name {
        "totals" => Ok(Runnable::Totals(evalstream_totals::Totals)),
        other => anyhow::bail!("unknown processor {other:?}; known: {}", PROCESSORS.join(", ")),
    }
}
