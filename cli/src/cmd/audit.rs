//! `evalstream audit canonicalize | verify | export | prove | check-proof`: the operator side of
//! the tamper-evident audit chain (runbook: "Audit verification failures", "Audit verify").
//!
//! ```text
//!   canonicalize   stdin JSON ──► RFC 8785 bytes on stdout          (other teams' parity checks)
//!   verify         audit.chain[p] ──┐
//!                  --archive FILE ──┴► offline::range::RangeCheck ──► report, earliest failure
//!   export         audit.chain[p] ──► the range + its anchor and covering checkpoints
//!                                     ──► JSON lines | Avro object container file
//!   import         archive ──► verify ──► audit.chain of this prefix (empty) ──► read back
//!   prove          audit.chain[p] ──► entry + RFC 6962 audit path + signed checkpoint (JSON)
//!   check-proof    proof JSON (+ signers.json) ──► checked without the broker
//! ```
//!
//! The decisions (range planning, time → offset correction, coverage, proof checks) live in
//! `evalstream_audit::offline` with unit tests; this module reads the broker and files, shows
//! progress and prints.
//!
//! **Exit codes** (`verify`, `export`, `prove`, `check-proof`), so that a nightly job can tell
//! "the log was altered" from "the job could not run":
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | everything verified (every entry of the range under a valid signature; a proof fully checked) |
//! | 1 | verification failed: a hash, link, sequence, root or signature does not hold — the runbook's P0/P1 |
//! | 2 | usage error (from the argument parser) |
//! | 3 | nothing failed, but not everything is proven yet: entries not covered by a signed checkpoint (`pending_signature`), or signatures not checked because no signer registry was given |
//! | 4 | could not verify: broker, file or configuration error, event not found |
//!
//! `canonicalize` exits 0, or 1 on invalid input (not UTF-8, not JSON, duplicate keys, ...).

mod archive;
mod canonicalize;
mod export;
pub mod import;
mod prove;
mod source;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use evalstream_audit::offline::bounds::{self, Bound};
use evalstream_audit::trust::SignerRegistry;

/// Exit code: everything verified.
pub const EXIT_OK: u8 = 0;
/// Exit code: something does not verify (evidence of tampering or corruption).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: nothing failed, but not everything is proven (pending signatures, no registry).
pub const EXIT_INCOMPLETE: u8 = 3;
/// Exit code: the check could not be made (broker, file, configuration, not found).
pub const EXIT_ERROR: u8 = 4;

/// `evalstream audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Read JSON on stdin and write its RFC 8785 (JCS) canonical bytes to stdout, without a
    /// trailing newline: the bytes the chain hashes, for parity checks by other teams.
    Canonicalize,
    /// Verify a range of audit.chain (or an exported archive) offline: hashes, links, sequence
    /// numbers, Merkle roots and checkpoint signatures. Exit 0 verified, 1 failed, 3 not fully
    /// signed yet, 4 could not verify.
    Verify(verify::Args),
    /// Write a range of audit.chain, with the checkpoints that make it verifiable on its own,
    /// to a file for the archive (JSON lines or an Avro object container file).
    Export(export::Args),
    /// Restore an archive written by `audit export` into audit.chain of this topic prefix
    /// (empty; a fresh cluster or prefix): verified first, read back byte for byte after. Exit
    /// 0 imported, 1 the archive does not verify (nothing written), 3 not fully signed, 4 error.
    Import(import::Args),
    /// Print an RFC 6962 inclusion proof of one event's entry under a signed checkpoint.
    Prove(prove::ProveArgs),
    /// Check an inclusion proof without the broker (entry hash, audit path, checkpoint body,
    /// signature against the signer registry).
    CheckProof(prove::CheckArgs),
}

/// Runs an `audit` subcommand.
pub fn run(config: Option<&Path>, cmd: Command) -> anyhow::Result<ExitCode> {
    let code = match cmd {
        Command::Canonicalize => return canonicalize::run(),
        Command::Verify(args) => guarded(|| verify::run(config, args)),
        Command::Export(args) => guarded(|| export::run(config, args)),
        Command::Import(args) => guarded(|| import::run(config, args)),
        Command::Prove(args) => guarded(|| prove::prove(config, args)),
        Command::CheckProof(args) => guarded(|| prove::check(args)),
    };
    Ok(ExitCode::from(code))
}

/// Runs a checking command, turning "could not check" into [`EXIT_ERROR`] with the reason on
/// stderr (instead of the generic exit 1, which here means "the log does not verify").
fn guarded(f: impl FnOnce() -> anyhow::Result<u8>) -> u8 {
    match f() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("evalstream: could not verify: {e:#}");
            EXIT_ERROR
        }
    }
}

/// A `--from` / `--to` value: the text as given (for reports and archive headers) and its
/// meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundArg {
    /// As given on the command line.
    pub text: String,
    /// What it means.
    pub bound: Bound,
}

fn parse_from_arg(text: &str) -> Result<BoundArg, String> {
    bounds::parse_from(text)
        .map(|bound| BoundArg { text: text.to_string(), bound })
        .map_err(|e| e.to_string())
}

fn parse_to_arg(text: &str) -> Result<BoundArg, String> {
    bounds::parse_to(text)
        .map(|bound| BoundArg { text: text.to_string(), bound })
        .map_err(|e| e.to_string())
}

/// Which time a `--from` / `--to` time is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeBasis {
    /// The event's `occurred_at` (what the audit trail records; checkpoints carry the same
    /// time, so the range means "events that happened then").
    Event,
    /// The Kafka record timestamp of the audit.chain record (when it was chained).
    Log,
}

/// The range options shared by `verify` and `export`.
#[derive(Debug, Clone, clap::Args)]
pub struct RangeArgs {
    /// Start of the range: an audit.chain offset (digits, inclusive), a date (2025-11-18: from
    /// its start, UTC) or an RFC 3339 time (inclusive). Default: the start of the partition.
    #[arg(long, value_name = "TIME|OFFSET", value_parser = parse_from_arg)]
    pub from: Option<BoundArg>,
    /// End of the range: an audit.chain offset (inclusive), a date (through the end of that
    /// day, UTC) or an RFC 3339 time (exclusive). Default: the end of the partition.
    #[arg(long, value_name = "TIME|OFFSET", value_parser = parse_to_arg)]
    pub to: Option<BoundArg>,
    /// Only this partition of audit.chain (repeat for several). Default: all partitions.
    #[arg(long, value_name = "N")]
    pub partition: Vec<u32>,
    /// What a time in --from/--to is compared with.
    #[arg(long, value_enum, default_value_t = TimeBasis::Event)]
    pub time_basis: TimeBasis,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub progress: crate::progress::ProgressArg,
}

impl RangeArgs {
    /// How progress is shown: `--quiet` is `--progress none`.
    pub fn progress_mode(&self) -> crate::progress::ProgressMode {
        if self.quiet {
            crate::progress::ProgressMode::None
        } else {
            self.progress.progress
        }
    }
}

impl RangeArgs {
    fn bounds(&self) -> anyhow::Result<(Option<Bound>, Option<Bound>)> {
        let from = self.from.as_ref().map(|b| b.bound);
        let to = self.to.as_ref().map(|b| b.bound);
        bounds::check_order(from, to).map_err(anyhow::Error::msg)?;
        Ok((from, to))
    }
}

/// The signer registry option shared by `verify` and `check-proof`.
#[derive(Debug, Clone, clap::Args)]
pub struct SignersArg {
    /// The signer registry (signers.json) to check checkpoint signatures with. Without it
    /// signatures are not checked and the best possible result is exit 3.
    #[arg(long, value_name = "FILE", env = "SIGNERS_FILE")]
    pub signers: Option<PathBuf>,
}

impl SignersArg {
    fn load(&self) -> anyhow::Result<Option<SignerRegistry>> {
        self.signers.as_deref().map(SignerRegistry::load).transpose().map_err(anyhow::Error::from)
    }
}
