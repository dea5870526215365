//! `evalstream audit export`: a range of `audit.chain` to a file for the archive, such that
//! `evalstream audit verify --archive FILE` verifies it without the broker.
//!
//! ```text
//!  per partition:  checkpoint before the range (anchor) ─► records of the range ─► records up to
//!                  the first signed checkpoint covering the range (exactly what `verify` reads)
//!  file:           JSON lines (default) or Avro object container (--format avro), written to a
//!                  temporary file and renamed into place
//! ```
//!
//! The export verifies as it reads (the same checks as `audit verify`) and says so; the file is
//! written in every case, because an archive of a broken range is evidence too. Exit codes: 0
//! written and nothing failed (signatures checked when `--signers` is given); 1 written, but the
//! range does not verify; 3 written, but the range is not covered by a signed checkpoint yet (the
//! archive would not verify on its own); 4 nothing written (broker, file or configuration error).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use evalstream_audit::offline::bounds::OffsetRange;
use evalstream_audit::offline::json::{
    offset_runs, ExportHeader, ExportMetadata, ExportRange, EXPORT_FORMAT,
};
use evalstream_audit::offline::range::RangeStatus;
use evalstream_audit::CHAIN_TOPIC;
use evalstream_runtime::codec::Codec;

use super::archive::{jsonl_to_avro, Format, JsonlWriter};
use super::source::{Broker, Progress};
use super::{RangeArgs, SignersArg, EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK};
use crate::cmd::common::load_config;

/// Arguments of `audit export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    range: RangeArgs,
    /// The file to write (replaced if it exists).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// File format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    #[command(flatten)]
    signers: SignersArg,
}

/// Removes the temporary files of an export that did not finish.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn temp_path(out: &Path, stage: &str) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!(".{name}.{stage}-{}", std::process::id()))
}

/// Runs `audit export`.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<u8> {
    let cfg = load_config(config)?;
    let codec = Codec::from_env().context("loading schemas")?;
    let registry = args.signers.load()?;
    let broker = Broker::new(&cfg, &codec)?;
    let (from, to) = args.range.bounds()?;
    let partitions = broker.partitions(&args.range.partition)?;
    let jsonl = temp_path(&args.out, "jsonl");
    let avro = temp_path(&args.out, "avro");
    let cleanup = Cleanup(vec![jsonl.clone(), avro.clone()]);
    let header = ExportHeader {
        format: EXPORT_FORMAT.to_string(),
        topic: CHAIN_TOPIC.to_string(),
        from: args.range.from.as_ref().map(|b| b.text.clone()),
        to: args.range.to.as_ref().map(|b| b.text.clone()),
        partitions: partitions.clone(),
        created_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    };
    let mut writer = JsonlWriter::create(&jsonl)?;
    writer.header(&header)?;
    let mut ranges = Vec::new();
    let mut code = EXIT_OK;
    for p in partitions {
        let resolved = broker.resolve(p, from, to, args.range.time_basis)?;
        let mut offsets = Vec::new();
        let mut progress =
            Progress::new(format!("audit export partition {p}"), args.range.progress_mode());
        let report = broker.read_range(
            &resolved,
            registry.as_ref(),
            &mut progress,
            &mut |raw, decoded| {
                offsets.push(raw.offset);
                writer.record(raw, decoded)
            },
        )?;
        progress.done();
        let range = ExportRange {
            partition: p,
            records: offsets.len() as u64,
            first_offset: report.read.from_offset,
            last_offset: report.read.to_offset,
            range_from_offset: resolved.range.start,
            range_to_offset: (resolved.range.end != OffsetRange::OPEN)
                .then(|| resolved.range.end - 1),
            from_seq: report.range.from_seq,
            to_seq: report.range.to_seq,
            anchor_offset: report.read.anchor.as_ref().map(|a| a.offset),
            covering_offset: report.read.covered_by.as_ref().map(|c| c.offset),
            offsets: (args.format == Format::Avro).then(|| offset_runs(offsets.iter().copied())),
        };
        let mut line = format!(
            "partition {p}: {} records (offsets {}), {} entries in range (seq {})",
            range.records,
            match (range.first_offset, range.last_offset) {
                (Some(a), Some(b)) => format!("{a}..{b}"),
                _ => "-".into(),
            },
            report.range.entries,
            match (range.from_seq, range.to_seq) {
                (Some(a), Some(b)) => format!("{a}..{b}"),
                _ => "-".into(),
            },
        );
        if report.status == RangeStatus::Failed {
            code = EXIT_FAILED;
            let first = report.earliest_failure.as_ref();
            line.push_str(&format!(
                "; DOES NOT VERIFY: {} at seq {}, event {} ({} failure(s); run `audit verify` for \
                 details)",
                first.map_or("-", |f| f.status.as_str()),
                first.and_then(|f| f.first_failing_seq).map_or("-".into(), |s| s.to_string()),
                first.and_then(|f| f.event_id.as_deref()).unwrap_or("-"),
                report.failures.len()
            ));
        } else if report.range.entries > 0 && report.read.covered_by.is_none() {
            code = code.max(EXIT_INCOMPLETE);
            line.push_str(
                "; not covered by a signed checkpoint yet: the archive will not verify on its own",
            );
        } else if !report.signatures_checked {
            line.push_str("; hashes verified, signatures not checked (no --signers)");
        } else {
            line.push_str("; verified");
        }
        println!("{line}");
        ranges.push(range);
    }
    for r in &ranges {
        writer.range(r)?;
    }
    writer.finish()?;
    match args.format {
        Format::Jsonl => std::fs::rename(&jsonl, &args.out),
        Format::Avro => {
            let metadata = ExportMetadata { header, partitions: ranges.clone() };
            jsonl_to_avro(&codec, &jsonl, &avro, &metadata)?;
            std::fs::rename(&avro, &args.out)
        }
    }
    .with_context(|| format!("moving the export into place at {}", args.out.display()))?;
    drop(cleanup);
    let total: u64 = ranges.iter().map(|r| r.records).sum();
    println!("wrote {} ({}, {total} records)", args.out.display(), args.format.as_str());
    Ok(code)
}
