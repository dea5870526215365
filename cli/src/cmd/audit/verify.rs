//! `evalstream audit verify`: verify a range of `audit.chain`, or an exported archive, offline.
//!
//! ```text
//!  broker:   for each partition: resolve --from/--to ─► read from the checkpoint before the
//!            range to the signed checkpoint after it ─► PartitionReport
//!  archive:  records in file order, per partition: the first checkpoint is the anchor, every
//!            entry must end up under a signed checkpoint; the archive's own range lines (or
//!            Avro metadata) must agree with what it holds
//!  output:   one line per partition + the earliest failing event (or --json: one document)
//! ```
//!
//! Exit codes: see the `audit` module (0 verified, 1 failed, 3 not fully signed / signatures not
//! checked, 4 could not verify).

use evalstream_runtime::time::format_rfc3339_ms_aligned;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use evalstream_audit::offline::bounds::OffsetRange;
use evalstream_audit::offline::json::{ExportHeader, ExportRange, ResultJson};
use evalstream_audit::offline::range::{PartitionReport, RangeCheck, RangeStatus};
use evalstream_audit::records::{
    ChainRecord, ChainRecordBody, VerificationResult, VerificationStatus,
};
use evalstream_audit::trust::SignerRegistry;
use evalstream_runtime::codec::Codec;
use serde::Serialize;

use super::archive::{self, Event};
use super::source::{Broker, LocatedBound, Progress};
use super::{RangeArgs, SignersArg, EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK};
use crate::cmd::common::load_config;
use crate::progress::ProgressMode;

/// Arguments of `audit verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    range: RangeArgs,
    #[command(flatten)]
    signers: SignersArg,
    /// Verify an archive written by `evalstream audit export` (JSON lines or Avro, detected by
    /// content) instead of reading the broker.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from", "to", "partition"])]
    archive: Option<PathBuf>,
    /// Print one JSON document with the per-partition results instead of text.
    #[arg(long)]
    json: bool,
}

/// Where the verified records came from.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    /// The broker.
    Topic {
        /// Logical name.
        topic: &'static str,
        /// Physical name (with the configured prefix).
        physical_topic: String,
    },
    /// An archive file.
    Archive {
        /// Its path.
        path: String,
        /// `jsonl` or `avro`.
        format: &'static str,
        /// The export header it carries.
        header: Option<ExportHeader>,
    },
}

/// One partition in the JSON document.
#[derive(Debug, Serialize)]
struct PartitionJson {
    #[serde(flatten)]
    report: PartitionReport,
    /// How time bounds were turned into offsets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    located: Vec<LocatedBound>,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Document {
    /// `ok`, `failed` or `pending_signature`.
    status: &'static str,
    /// The exit code.
    exit_code: u8,
    source: Source,
    from: Option<String>,
    to: Option<String>,
    partitions: Vec<PartitionJson>,
    /// The earliest failure of every failing partition.
    earliest_failures: Vec<ResultJson>,
    /// Set when an archive is damaged beyond single records.
    #[serde(skip_serializing_if = "Option::is_none")]
    archive_error: Option<String>,
    notes: Vec<String>,
}

/// Runs `audit verify`.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<u8> {
    let registry = args.signers.load()?;
    let doc = match &args.archive {
        Some(path) => verify_archive(path, registry.as_ref(), args.range.progress_mode())?,
        None => verify_broker(config, &args, registry.as_ref())?,
    };
    print(&doc, args.json)?;
    Ok(doc.exit_code)
}

fn overall(partitions: &[PartitionJson], archive_error: bool) -> (&'static str, u8) {
    let any = |s: RangeStatus| partitions.iter().any(|p| p.report.status == s);
    if archive_error || any(RangeStatus::Failed) {
        ("failed", EXIT_FAILED)
    } else if any(RangeStatus::PendingSignature) {
        ("pending_signature", EXIT_INCOMPLETE)
    } else {
        ("ok", EXIT_OK)
    }
}

fn document(
    source: Source,
    range: &RangeArgs,
    partitions: Vec<PartitionJson>,
    archive_error: Option<String>,
    notes: Vec<String>,
) -> Document {
    let (status, exit_code) = overall(&partitions, archive_error.is_some());
    let earliest_failures =
        partitions.iter().filter_map(|p| p.report.earliest_failure.clone()).collect();
    Document {
        status,
        exit_code,
        source,
        from: range.from.as_ref().map(|b| b.text.clone()),
        to: range.to.as_ref().map(|b| b.text.clone()),
        partitions,
        earliest_failures,
        archive_error,
        notes,
    }
}

fn verify_broker(
    config: Option<&Path>,
    args: &Args,
    registry: Option<&SignerRegistry>,
) -> anyhow::Result<Document> {
    let cfg = load_config(config)?;
    let codec = Codec::from_env().context("loading schemas")?;
    let broker = Broker::new(&cfg, &codec)?;
    let (from, to) = args.range.bounds()?;
    let mut partitions = Vec::new();
    for p in broker.partitions(&args.range.partition)? {
        let resolved = broker.resolve(p, from, to, args.range.time_basis)?;
        let mut progress =
            Progress::new(format!("audit verify partition {p}"), args.range.progress_mode());
        let report = broker.read_range(&resolved, registry, &mut progress, &mut |_, _| Ok(()))?;
        progress.done();
        partitions.push(PartitionJson { report, located: resolved.located });
    }
    let source =
        Source::Topic { topic: evalstream_audit::CHAIN_TOPIC, physical_topic: broker.topic() };
    Ok(document(source, &args.range, partitions, None, Vec::new()))
}

/// A finding about the archive as a whole for one partition (records missing that its own
/// summary declares).
/// `seq` is the first missing sequence number when it is known.
fn archive_finding(partition: u32, seq: Option<u64>, detail: String) -> VerificationResult {
    VerificationResult {
        partition,
        from_seq: seq.unwrap_or(0),
        to_seq: seq.unwrap_or(0),
        from_offset: -1,
        to_offset: -1,
        status: VerificationStatus::Gap,
        first_failing_seq: seq,
        event_id: None,
        offset: None,
        detail,
    }
}

/// The exit code and the human-readable lines of `audit verify --archive PATH` (for `audit
/// import`, which verifies an archive before restoring it).
pub(super) fn archive_verdict(
    path: &Path,
    registry: Option<&SignerRegistry>,
    mode: ProgressMode,
) -> anyhow::Result<(u8, Vec<String>)> {
    let doc = verify_archive(path, registry, mode)?;
    Ok((doc.exit_code, human(&doc)))
}

fn verify_archive(
    path: &Path,
    registry: Option<&SignerRegistry>,
    mode: ProgressMode,
) -> anyhow::Result<Document> {
    let mut checks: BTreeMap<u32, RangeCheck> = BTreeMap::new();
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    let mut declared: Vec<ExportRange> = Vec::new();
    let mut header = None;
    let mut progress = Progress::new(format!("audit verify {}", path.display()), mode);
    let outcome = archive::read(path, &mut |event| match event {
        Event::Header(h) => header = Some(h),
        Event::Range(r) => declared.push(r),
        Event::Record { partition, offset, record } => {
            progress.tick(offset);
            *counts.entry(partition).or_default() += 1;
            if let Some(check) = checks.get_mut(&partition) {
                check.feed(offset, record.as_ref().map_err(String::as_str), registry);
                return;
            }
            // The first record of a partition: a checkpoint anchors it, else it must start the
            // chain.
            let check = match &record {
                Ok(ChainRecord { body: ChainRecordBody::Checkpoint(cp), .. }) => {
                    match RangeCheck::from_anchor(partition, OffsetRange::ALL, offset, cp, registry)
                    {
                        Ok(c) => c,
                        Err(finding) => {
                            let mut c = RangeCheck::from_genesis(
                                partition,
                                OffsetRange::ALL,
                                registry.is_some(),
                            );
                            c.add_failure(&finding);
                            c
                        }
                    }
                }
                _ => {
                    let mut c =
                        RangeCheck::from_genesis(partition, OffsetRange::ALL, registry.is_some());
                    c.feed(offset, record.as_ref().map_err(String::as_str), registry);
                    c
                }
            };
            checks.insert(partition, check);
        }
    })?;
    progress.done();
    for d in &declared {
        let check = checks.entry(d.partition).or_insert_with(|| {
            RangeCheck::from_genesis(d.partition, OffsetRange::ALL, registry.is_some())
        });
        let held = counts.get(&d.partition).copied().unwrap_or(0);
        if held != d.records {
            check.add_failure(&archive_finding(
                d.partition,
                None,
                format!(
                    "the archive declares {} records for partition {} but holds {held}",
                    d.records, d.partition
                ),
            ));
        }
    }
    let mut partitions: Vec<PartitionJson> = checks
        .into_values()
        .map(|c| PartitionJson { report: c.finish(), located: Vec::new() })
        .collect();
    for d in &declared {
        let Some(p) = partitions.iter_mut().find(|p| p.report.partition == d.partition) else {
            continue;
        };
        let held = (p.report.range.from_seq, p.report.range.to_seq);
        // The first declared sequence number the archive does not hold.
        let missing = match (d.from_seq, d.to_seq, held) {
            (Some(a), Some(_), (Some(x), Some(_))) if a < x => Some(a),
            (Some(_), Some(b), (Some(_), Some(y))) if b > y => Some(y.saturating_add(1)),
            (Some(a), Some(_), (None, _) | (_, None)) => Some(a),
            _ => None,
        };
        if let Some(first_missing) = missing {
            let finding = ResultJson::of(&archive_finding(
                d.partition,
                Some(first_missing),
                format!(
                    "the archive declares entries {}..{} of partition {} but holds {}",
                    d.from_seq.unwrap_or(0),
                    d.to_seq.unwrap_or(0),
                    d.partition,
                    match held {
                        (Some(x), Some(y)) => format!("{x}..{y}"),
                        _ => "none".into(),
                    }
                ),
            ));
            p.report.status = RangeStatus::Failed;
            p.report.failures.push(finding.clone());
            if p.report.earliest_failure.as_ref().is_none_or(|e| {
                e.first_failing_seq.unwrap_or(u64::MAX) > finding.first_failing_seq.unwrap_or(0)
            }) {
                p.report.earliest_failure = Some(finding);
            }
        }
    }
    let mut corrupt = outcome.corrupt;
    if corrupt.is_none() && counts.values().all(|&n| n == 0) {
        corrupt = Some("the archive holds no records".into());
    }
    let source = Source::Archive {
        path: path.display().to_string(),
        format: outcome.format.as_str(),
        header,
    };
    let range = RangeArgs {
        from: None,
        to: None,
        partition: Vec::new(),
        time_basis: super::TimeBasis::Event,
        quiet: mode == ProgressMode::None,
        progress: crate::progress::ProgressArg { progress: mode },
    };
    Ok(document(source, &range, partitions, corrupt, outcome.notes))
}

fn span<T: std::fmt::Display>(a: Option<T>, b: Option<T>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{a}..{b}"),
        _ => "-".into(),
    }
}

fn describe_failure(f: &ResultJson) -> String {
    let mut s = match f.first_failing_seq {
        Some(seq) => format!("{} at seq {seq}", f.status),
        None => f.status.clone(),
    };
    if let Some(id) = &f.event_id {
        s.push_str(&format!(", event {id}"));
    }
    if let Some(o) = f.event_offset {
        s.push_str(&format!(", entry offset {o}"));
    }
    if let Some(o) = f.offset {
        s.push_str(&format!(", detected at offset {o}"));
    }
    format!("{s}: {}", f.detail)
}

fn human(doc: &Document) -> Vec<String> {
    let mut lines = Vec::new();
    if let Source::Archive { path, format, .. } = &doc.source {
        lines.push(format!("archive {path} ({format})"));
    }
    for p in &doc.partitions {
        let r = &p.report;
        let range = &r.range;
        let what = format!(
            "{} entries, seq {}, offsets {}, occurred {}",
            range.entries,
            span(range.from_seq, range.to_seq),
            span(range.from_offset, range.to_offset),
            span(
                range.from_time_ms.map(format_rfc3339_ms_aligned),
                range.to_time_ms.map(format_rfc3339_ms_aligned)
            ),
        );
        let head = match r.status {
            RangeStatus::Ok => {
                let covered = match &r.read.covered_by {
                    Some(c) => format!(
                        "; covered by signed checkpoint {} (kid {}, offset {})",
                        c.tree_size,
                        c.kid.as_deref().unwrap_or("-"),
                        c.offset
                    ),
                    None => String::new(),
                };
                format!("partition {}: ok: {what}{covered}", r.partition)
            }
            RangeStatus::Failed => format!(
                "partition {}: FAILED: {} failure(s) in {what}",
                r.partition,
                r.failures.len()
            ),
            RangeStatus::PendingSignature => {
                format!("partition {}: NOT FULLY VERIFIED (pending_signature): {what}", r.partition)
            }
        };
        lines.push(head);
        match &r.read.anchor {
            Some(a) => lines.push(format!(
                "    resumed after {} checkpoint {} at offset {}; {} records read, {} entries and \
                 {} checkpoints verified",
                a.status,
                a.tree_size,
                a.offset,
                r.read.records,
                r.entries_verified,
                r.checkpoints_ok
            )),
            None if r.read.records > 0 => lines.push(format!(
                "    verified from the chain's genesis; {} records read, {} entries and {} \
                 checkpoints verified",
                r.read.records, r.entries_verified, r.checkpoints_ok
            )),
            None => {}
        }
        for l in &p.located {
            let check = if l.hint_correct {
                "the broker's offsets-for-times answer checked".to_string()
            } else {
                format!(
                    "the broker answered {}; corrected by reading",
                    l.broker_hint.map_or("nothing".into(), |h| h.to_string())
                )
            };
            lines.push(format!(
                "    --{} {} ({} time) is offset {} ({check}, {} records read)",
                l.bound,
                l.time,
                l.basis,
                l.offset.map_or("past the end".into(), |o| o.to_string()),
                l.probes
            ));
        }
        for f in &r.failures {
            lines.push(format!("    {}", describe_failure(f)));
        }
        for f in &r.pending {
            lines.push(format!(
                "    pending_signature: seq {}..{} (offsets {}..{}): {}",
                f.from_seq, f.to_seq, f.from_offset, f.to_offset, f.detail
            ));
        }
        for n in &r.notes {
            lines.push(format!("    note: {n}"));
        }
    }
    if let Some(e) = &doc.archive_error {
        lines.push(format!("archive damaged: {e}"));
    }
    for n in &doc.notes {
        lines.push(format!("note: {n}"));
    }
    lines.push(match doc.status {
        "ok" => format!("audit verify: ok ({} partition(s))", doc.partitions.len()),
        "failed" => {
            let mut s = "audit verify: FAILED".to_string();
            for f in &doc.earliest_failures {
                s.push_str(&format!(
                    "; earliest failing event in partition {}: seq {}, event {}, offset {}, {}",
                    f.partition,
                    f.first_failing_seq.map_or("-".into(), |x| x.to_string()),
                    f.event_id.as_deref().unwrap_or("-"),
                    f.event_offset.or(f.offset).map_or("-".into(), |x| x.to_string()),
                    f.status
                ));
            }
            s
        }
        _ => "audit verify: not fully verified: entries without a checked signature (see \
              above); nothing failed"
            .to_string(),
    });
    lines
}

fn print(doc: &Document, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, doc)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        human(doc).iter().try_for_each(|l| writeln!(out, "{l}"))
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
