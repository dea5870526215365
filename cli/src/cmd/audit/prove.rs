//! `evalstream audit prove` and `evalstream audit check-proof`: RFC 6962 inclusion proofs of one
//! event's entry under a signed checkpoint.
//!
//! ```text
//!  prove:        1. find the entry: scan audit.chain partitions comparing record keys (the
//!                   event id) without decoding
//!                2. read its partition from the start: entry hashes 0, 1, 2, ... (contiguous),
//!                   up to the first SIGNED checkpoint whose tree covers the entry
//!                3. root of those hashes == checkpoint root? audit path ─► proof JSON
//!  check-proof:  proof JSON (+ signers.json) ─► offline::proof::check_proof, no broker
//! ```
//!
//! `prove` exit codes: 0 proof written; 1 the chain contradicts its checkpoint (or is not
//! contiguous) — run `audit verify`; 3 the entry is not covered by a signed checkpoint yet; 4 not
//! found or could not read. `check-proof`: 0 everything holds (the signature included, or
//! `--no-signature`); 1 a check failed (or the document is not a proof); 3 the signature was
//! not checked (no registry); 4 the file or the registry could not be read.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use evalstream_audit::merkle::Hash;
use evalstream_audit::offline::proof::{
    build_proof, check_proof, InclusionProof, ProofError, ProofVerdict,
};
use evalstream_audit::records::{
    ChainEntry, ChainRecord, ChainRecordBody, Checkpoint, CheckpointStatus,
};
use evalstream_runtime::codec::Codec;
use serde::Serialize;

use super::source::{decode, Broker, Progress};
use super::{SignersArg, EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK};
use crate::cmd::common::load_config;

/// Arguments of `audit prove`.
#[derive(Debug, clap::Args)]
pub struct ProveArgs {
    /// The event id (the audit.chain record key of its entry).
    #[arg(long)]
    event_id: String,
    /// Only look in this partition of audit.chain.
    #[arg(long, value_name = "N")]
    partition: Option<u32>,
    /// Write the proof here instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// Arguments of `audit check-proof`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The proof file (`-` or nothing: stdin).
    #[arg(value_name = "FILE|-", default_value = "-")]
    proof: String,
    #[command(flatten)]
    signers: SignersArg,
    /// Accept a proof whose signature cannot be checked (no registry): exit 0 instead of 3.
    #[arg(long)]
    no_signature: bool,
    /// Print the checks as JSON.
    #[arg(long)]
    json: bool,
}

/// Where the event's entry is.
struct Found {
    partition: u32,
    offset: i64,
}

/// Step 1: every record keyed by the event id, without decoding anything else.
fn find(broker: &Broker<'_>, args: &ProveArgs) -> anyhow::Result<Vec<Found>> {
    let wanted: Vec<u32> = args.partition.into_iter().collect();
    let key = args.event_id.as_bytes();
    let mut found = Vec::new();
    for p in broker.partitions(&wanted)? {
        let mut progress =
            Progress::new(format!("audit prove: searching partition {p}"), quiet_mode(args.quiet));
        broker.scan(p, 0, |r| {
            progress.tick(r.offset);
            if r.key.as_deref() == Some(key) {
                let is_it = matches!(
                    decode(broker.codec(), &r),
                    Ok(ChainRecord { body: ChainRecordBody::Entry(e), .. }) if e.event_id == args.event_id
                );
                if is_it {
                    found.push(Found { partition: p, offset: r.offset });
                }
            }
            true
        })?;
        progress.done();
    }
    Ok(found)
}

/// What step 2 found.
enum Collected {
    /// The entry, the hashes 0.. and the covering signed checkpoint.
    Proof {
        entry: Box<ChainEntry>,
        hashes: Vec<Hash>,
        checkpoint: Box<Checkpoint>,
        checkpoint_offset: i64,
    },
    /// The entry is not under a signed checkpoint yet.
    NotSigned { seq: u64, pending: Option<u64> },
    /// The chain is not contiguous before the checkpoint.
    Broken(String),
}

/// Step 2: the partition's entry hashes from the start, up to the covering signed checkpoint.
fn collect(broker: &Broker<'_>, found: &Found, quiet: bool) -> anyhow::Result<Collected> {
    let p = found.partition;
    let mut hashes: Vec<Hash> = Vec::new();
    let mut entry: Option<ChainEntry> = None;
    let mut result: Option<Collected> = None;
    let mut pending: Option<u64> = None;
    let mut progress =
        Progress::new(format!("audit prove: reading partition {p}"), quiet_mode(quiet));
    broker.scan(p, 0, |r| {
        progress.tick(r.offset);
        let record = match decode(broker.codec(), &r) {
            Ok(record) => record,
            Err(e) => {
                result = Some(Collected::Broken(format!(
                    "record at offset {} is not a chain record: {e}",
                    r.offset
                )));
                return false;
            }
        };
        match record.body {
            ChainRecordBody::Entry(e) => {
                if e.seq != hashes.len() as u64 {
                    result = Some(Collected::Broken(format!(
                        "entry at offset {} has seq {} where {} was expected",
                        r.offset,
                        e.seq,
                        hashes.len()
                    )));
                    return false;
                }
                hashes.push(e.entry_hash);
                if r.offset == found.offset {
                    entry = Some(e);
                }
                true
            }
            ChainRecordBody::Checkpoint(c) => {
                let Some(target) = &entry else { return true };
                if c.tree_size <= target.seq {
                    return true;
                }
                if c.status != CheckpointStatus::Signed {
                    pending.get_or_insert(c.tree_size);
                    return true;
                }
                result = Some(Collected::Proof {
                    entry: Box::new(target.clone()),
                    hashes: std::mem::take(&mut hashes),
                    checkpoint: Box::new(c),
                    checkpoint_offset: r.offset,
                });
                false
            }
        }
    })?;
    progress.done();
    Ok(match (result, entry) {
        (Some(r), _) => r,
        (None, Some(e)) => Collected::NotSigned { seq: e.seq, pending },
        (None, None) => {
            bail!("the entry at offset {} of partition {p} was not read back", found.offset)
        }
    })
}

/// Runs `audit prove`.
pub fn prove(config: Option<&Path>, args: ProveArgs) -> anyhow::Result<u8> {
    let cfg = load_config(config)?;
    let codec = Codec::from_env().context("loading schemas")?;
    let broker = Broker::new(&cfg, &codec)?;
    let found = find(&broker, &args)?;
    let Some(first) = found.first() else {
        bail!("event {:?} is not in {}", args.event_id, broker.topic());
    };
    for other in &found[1..] {
        eprintln!(
            "evalstream: note: event {:?} is chained more than once; proving the first (partition \
             {}, offset {}), also at partition {} offset {}",
            args.event_id, first.partition, first.offset, other.partition, other.offset
        );
    }
    let (entry, hashes, checkpoint, checkpoint_offset) = match collect(&broker, first, args.quiet)?
    {
        Collected::Proof { entry, hashes, checkpoint, checkpoint_offset } => {
            (entry, hashes, checkpoint, checkpoint_offset)
        }
        Collected::NotSigned { seq, pending } => {
            eprintln!(
                "evalstream: event {:?} (partition {}, seq {seq}) is not covered by a signed \
                 checkpoint yet{}; try again once the signer has caught up",
                args.event_id,
                first.partition,
                pending
                    .map_or(String::new(), |n| format!(" (checkpoint {n} is pending_signature)"))
            );
            return Ok(EXIT_INCOMPLETE);
        }
        Collected::Broken(why) => {
            eprintln!(
                "evalstream: partition {} of {} is not a contiguous chain: {why}; run `evalstream \
                 audit verify --partition {}`",
                first.partition,
                broker.topic(),
                first.partition
            );
            return Ok(EXIT_FAILED);
        }
    };
    let proof = match build_proof(
        first.partition,
        &entry,
        Some(first.offset),
        &hashes,
        &checkpoint,
        Some(checkpoint_offset),
    ) {
        Ok(p) => p,
        Err(e @ ProofError::RootMismatch { .. }) => {
            eprintln!("evalstream: partition {}: {e}", first.partition);
            return Ok(EXIT_FAILED);
        }
        Err(e) => return Err(e.into()),
    };
    // The proof must check (without the signature, which needs a registry) before it is handed
    // to anyone.
    let report = check_proof(&proof, None);
    if report.verdict == ProofVerdict::Invalid {
        let failed: Vec<_> = report.steps.iter().filter(|s| s.ok == Some(false)).collect();
        eprintln!("evalstream: the proof does not check: {failed:?}");
        return Ok(EXIT_FAILED);
    }
    let mut text = serde_json::to_string_pretty(&proof)?;
    text.push('\n');
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "evalstream: wrote the proof of {:?} (partition {}, seq {}) under signed \
                 checkpoint {} to {}",
                args.event_id,
                proof.partition,
                proof.seq,
                proof.tree_size,
                path.display()
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(EXIT_OK)
}

#[derive(Serialize)]
struct CheckDocument<'a> {
    verdict: ProofVerdict,
    exit_code: u8,
    partition: u32,
    seq: u64,
    event_id: &'a str,
    tree_size: u64,
    steps: &'a [evalstream_audit::offline::proof::ProofStep],
}

/// Runs `audit check-proof`.
pub fn check(args: CheckArgs) -> anyhow::Result<u8> {
    let registry = args.signers.load()?;
    let text = if args.proof == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the proof from stdin")?;
        s
    } else {
        std::fs::read_to_string(&args.proof).with_context(|| format!("reading {}", args.proof))?
    };
    let proof: InclusionProof = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("evalstream: not an inclusion proof document: {e}");
            return Ok(EXIT_FAILED);
        }
    };
    let report = check_proof(&proof, registry.as_ref());
    let code = match report.verdict {
        ProofVerdict::Valid => EXIT_OK,
        ProofVerdict::Invalid => EXIT_FAILED,
        ProofVerdict::SignatureUnchecked if args.no_signature => EXIT_OK,
        ProofVerdict::SignatureUnchecked => EXIT_INCOMPLETE,
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let doc = CheckDocument {
            verdict: report.verdict,
            exit_code: code,
            partition: proof.partition,
            seq: proof.seq,
            event_id: &proof.event_id,
            tree_size: proof.tree_size,
            steps: &report.steps,
        };
        serde_json::to_writer_pretty(&mut out, &doc)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        let mut lines: Vec<String> = report
            .steps
            .iter()
            .map(|s| {
                let mark = match s.ok {
                    Some(true) => "ok  ",
                    Some(false) => "FAIL",
                    None => "--  ",
                };
                format!("{mark} {}: {}", s.check, s.detail)
            })
            .collect();
        lines.push(match report.verdict {
            ProofVerdict::Valid => format!(
                "proof valid: event {} (partition {}, seq {}) is in the chain signed at tree size {}",
                proof.event_id, proof.partition, proof.seq, proof.tree_size
            ),
            ProofVerdict::Invalid => format!(
                "proof INVALID for event {} (partition {}, seq {})",
                proof.event_id, proof.partition, proof.seq
            ),
            ProofVerdict::SignatureUnchecked => format!(
                "proof holds up to the signature, which was NOT checked (pass --signers FILE{})",
                if args.no_signature { "; accepted with --no-signature" } else { "" }
            ),
        });
        lines.iter().try_for_each(|l| writeln!(out, "{l}"))
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(code)
}

/// `--quiet`: no progress; else a bar on a terminal.
fn quiet_mode(quiet: bool) -> crate::progress::ProgressMode {
    if quiet {
        crate::progress::ProgressMode::None
    } else {
        crate::progress::ProgressMode::Auto
    }
}
