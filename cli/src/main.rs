//! `evalstream`: one binary for running processors and for operating the system.
//!
//! Every subcommand lives in its own file under `cmd/`. Commands that only talk to Kafka run
//! synchronously on the main thread; `run` builds a tokio runtime for the operator endpoints and
//! signal handling and runs the exactly-once loop on a dedicated thread.

mod alloc;
mod cmd;
mod processors;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kafka-native evaluation and allocation pipeline with a tamper-evident audit chain.
#[derive(Debug, Parser)]
#[command(name = "evalstream", version, about)]
struct Cli {
    /// Runtime configuration file (TOML). Environment variables override it; see README.
    #[arg(long, global = true, env = "EVALSTREAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one processor as a member of its consumer group.
    Run(cmd::run::Args),
    /// Encode JSON lines with a topic's schema and produce them.
    Produce(cmd::produce::Args),
    /// Decode records of a topic to JSON lines.
    Consume(cmd::consume::Args),
    /// Create topics from topology/ and show the processor graph.
    #[command(subcommand)]
    Topology(cmd::topology::Command),
    /// Inspect and requeue dead-lettered records.
    #[command(subcommand)]
    Dlq(cmd::dlq::Command),
    /// Throughput benchmark: exactly-once runtime next to a raw pass-through.
    Bench(cmd::bench::Args),
    /// The audit chain: canonicalize, verify, export, prove.
    #[command(subcommand)]
    Audit(cmd::audit::Command),
    /// The signer registry (signers.json): list, add, rotate, revoke; audit and finance keys.
    #[command(subcommand)]
    Signers(cmd::signers::Command),
    /// Operator switches: degraded policy mode, freezing allocations.
    #[command(subcommand)]
    Control(cmd::control::Command),
    /// Allocations by state and age, from the settlement processor's state.
    #[command(subcommand)]
    Alloc(cmd::alloc::Command),
    /// Finance ledger proofs: verify one; sign settlements (development stand-in).
    #[command(subcommand)]
    Finance(cmd::finance::Command),
    /// The policy gate: simulate a decision.
    #[command(subcommand)]
    Policy(cmd::policy::Command),
    /// Compare allocations with settlements and a Finance ledger export; correct with --apply.
    Reconcile(cmd::reconcile::Args),
    /// The monthly DR drill: export the audit archive, restore it into a fresh prefix, verify
    /// it, run the promotions/allocations scenario there, report per step.
    Drill(cmd::drill::Args),
    /// Rebuild a processor's state by replaying its inputs under a fresh prefix; compare it
    /// with the live state (digest and differing keys); --cutover makes the live state equal.
    /// Exit 0 equal, 1 different, 4 could not run.
    Rebuild(cmd::rebuild::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    evalstream_runtime::telemetry::init();
    let result = match cli.command {
        Command::Run(args) => cmd::run::run(cli.config.as_deref(), args),
        Command::Produce(args) => cmd::produce::run(cli.config.as_deref(), args),
        Command::Consume(args) => cmd::consume::run(cli.config.as_deref(), args),
        Command::Topology(c) => cmd::topology::run(cli.config.as_deref(), c),
        Command::Dlq(c) => cmd::dlq::run(cli.config.as_deref(), c),
        Command::Bench(args) => cmd::bench::run(cli.config.as_deref(), args),
        Command::Audit(c) => cmd::audit::run(cli.config.as_deref(), c),
        Command::Signers(c) => cmd::signers::run(cli.config.as_deref(), c),
        Command::Control(c) => cmd::control::run(cli.config.as_deref(), c),
        Command::Alloc(c) => cmd::alloc::run(cli.config.as_deref(), c),
        Command::Finance(c) => cmd::finance::run(cli.config.as_deref(), c),
        Command::Policy(c) => cmd::policy::run(cli.config.as_deref(), c),
        Command::Reconcile(args) => cmd::reconcile::run(cli.config.as_deref(), args),
        Command::Drill(args) => cmd::drill::run(cli.config.as_deref(), args),
        Command::Rebuild(args) => cmd::rebuild::run(cli.config.as_deref(), args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("evalstream: {e:#}");
            ExitCode::FAILURE
        }
    }
}
