//! `evalstream topology`: validate, show and apply the topology in `topology/topology.toml`.
//!
//! ```text
//!   --file PATH, or the topology compiled into the binary
//!        │ Topology::load / Topology::bundled (validated)
//!        ├─► validate   prints a one-line summary, or every broken rule (exit 1)
//!        ├─► show       text | mermaid | json
//!        └─► apply      + runtime config (bootstrap servers, security, topic_prefix)
//!                       creates missing topics, reports drift; exit 0 / 3 / 1
//! ```
//!
//! The topology compiled into the binary is the default so that a container image needs no
//! source tree; `--file` applies an edited or environment-specific copy (e.g. replication 3).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka;
use evalstream_runtime::topology::Topology;

/// Exit code of `apply` when an existing topic differs from the topology. Distinct from 1
/// (error) so scripts and CI can tell "the cluster needs an operator" from "apply broke".
pub const EXIT_DRIFT: u8 = 3;

/// `evalstream topology` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the missing topics on the cluster and report drift of existing ones.
    ///
    /// Never changes or deletes an existing topic. Topic names get the configured
    /// `topic_prefix`. Exit code: 0 when every topic exists as specified (or was created),
    /// 3 when at least one existing topic differs (drift), 1 on errors, including a topic the
    /// broker refused to create.
    Apply(ApplyArgs),
    /// Print the topology: processors with their topics, and every topic's settings.
    Show(ShowArgs),
    /// Check the topology file against every rule; exit 1 and list the problems if any.
    Validate(FileArg),
}

/// Which topology to use.
#[derive(Debug, clap::Args)]
pub struct FileArg {
    /// Topology file; defaults to the topology compiled into this binary (the repository's
    /// topology/topology.toml).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// Arguments of `topology apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    topology: FileArg,
    /// Report what would be created and any drift, but create nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON (one document) instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `topology show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    topology: FileArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Output formats of `topology show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Processors and a topic table, for terminals.
    Text,
    /// A Mermaid flowchart (paste into a ```mermaid block).
    Mermaid,
    /// The resolved model (defaults filled in), for tools.
    Json,
}

/// Runs a `topology` subcommand.
pub fn run(config: Option<&Path>, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Validate(file) => {
            let (topology, origin) = load(&file)?;
            println!(
                "{origin}: valid ({} topics, {} processors)",
                topology.topics().len(),
                topology.processors().len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Show(args) => {
            let (topology, _) = load(&args.topology)?;
            match args.format {
                Format::Text => print!("{}", topology.render_text()),
                Format::Mermaid => print!("{}", topology.render_mermaid()),
                Format::Json => println!("{}", serde_json::to_string_pretty(&topology)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(args) => {
            let cfg = RuntimeConfig::load(config).context("loading the runtime configuration")?;
            let (topology, origin) = load(&args.topology)?;
            let report = topology
                .apply(&kafka::base(&cfg), &cfg.topic_prefix, args.dry_run)
                .with_context(|| format!("applying {origin} to {}", cfg.bootstrap_servers))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render_text());
            }
            Ok(if report.has_failures() {
                ExitCode::FAILURE
            } else if report.has_drift() {
                ExitCode::from(EXIT_DRIFT)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Loads `--file` or the bundled topology, and says which one for messages.
fn load(file: &FileArg) -> anyhow::Result<(Topology, String)> {
    match &file.file {
        Some(path) => Ok((Topology::load(path)?, path.display().to_string())),
        None => Ok((Topology::bundled()?, "bundled topology".to_string())),
    }
}
