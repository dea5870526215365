//! `evalstream bench` (STUB — being implemented).
use std::path::Path;
use std::process::ExitCode;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub fn run(_config: Option<&Path>, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
