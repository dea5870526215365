//! `evalstream signers` (STUB — being implemented).
use std::path::Path;
use std::process::ExitCode;

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Placeholder.
    Todo,
}

/// Runs the command.
pub fn run(_config: Option<&Path>, _cmd: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
