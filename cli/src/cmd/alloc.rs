//! `evalstream alloc list`: allocations by state with their age, read from the settlement
//! processor's state — the runbook's `psql ... where status = 'pending_finance'`.
//!
//! ```text
//!   evalstream.settlement.changelog (compacted; committed records; folded as a restore does)
//!        │ alloc/<id> → Allocation { state, since, amount, ledger entry, held, reason, ... }
//!        ▼ --state S (repeatable)  --older-than 1h
//!   table, oldest first (or --json)
//! ```
//!
//! Why the changelog and not a replay of `alloc.state`: the changelog *is* the processor's state
//! (what it decides with), kept compact by Kafka; reading it is a bounded read of one value per
//! allocation, and it needs no knowledge of how transitions combine.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use evalstream_domain::records::AllocationState;
use serde_json::json;

use evalstream_runtime::time::format_rfc3339_ms_aligned as format_millis;

use super::common::{emit, load_config};
use super::domain_io::{read_allocations, SETTLEMENT_CHANGELOG};
use super::signers::{now_ms, parse_duration_ms};

/// `evalstream alloc` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Allocations with their state, age (time in that state), approved amount, ledger entry and
    /// reason, oldest first.
    List(ListArgs),
}

/// Arguments of `alloc list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only allocations in this state (repeatable): pending_policy, pending_finance, settled,
    /// denied, settlement_failed.
    #[arg(long, value_parser = |s: &str| s.parse::<AllocationState>())]
    pub state: Vec<AllocationState>,
    /// Only allocations in their state for longer than this (e.g. 30m, 1h, 2d).
    #[arg(long, value_parser = parse_duration_ms)]
    pub older_than: Option<i64>,
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The settlement processor's changelog (logical name), if its group id is not the default.
    #[arg(long, default_value = SETTLEMENT_CHANGELOG)]
    pub changelog: String,
    /// Longest wait for the broker to deliver the next record, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// Runs an `evalstream alloc` subcommand.
pub fn run(config: Option<&Path>, cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::List(args) = cmd;
    let cfg = load_config(config)?;
    let now = now_ms();
    let mut rows: Vec<_> =
        read_allocations(&cfg, &args.changelog, Duration::from_millis(args.timeout_ms))?
            .into_iter()
            .filter(|a| args.state.is_empty() || args.state.contains(&a.state))
            .filter(|a| args.older_than.is_none_or(|d| now - a.since > d))
            .collect();
    rows.sort_by(|a, b| (a.since, &a.allocation_id).cmp(&(b.since, &b.allocation_id)));
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|a| {
                json!({
                    "allocation_id": a.allocation_id,
                    "state": a.state.as_str(),
                    "since": a.since,
                    "age_seconds": (now - a.since) / 1000,
                    "amount_minor": a.amount_minor,
                    "currency": a.currency,
                    "ledger_entry_id": a.ledger_entry_id,
                    "held_settlement": a.held,
                    "reason": a.reason,
                    "cause": a.cause,
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({ "allocations": list, "count": rows.len() }))?
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let header =
        ["ALLOCATION", "STATE", "AGE", "SINCE", "AMOUNT", "LEDGER ENTRY", "NOTE"].map(String::from);
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|a| {
            let amount = match (a.amount_minor, &a.currency) {
                (Some(m), Some(c)) => format!("{m} {c}"),
                _ => "-".into(),
            };
            let note = match (&a.held, &a.reason) {
                (Some(h), _) => format!("settlement {h} held (allocations frozen)"),
                (None, Some(r)) => r.clone(),
                (None, None) => String::new(),
            };
            [
                a.allocation_id.clone(),
                a.state.to_string(),
                age(now - a.since),
                format_millis(a.since),
                amount,
                a.ledger_entry_id.clone().unwrap_or_else(|| "-".into()),
                note,
            ]
        })
        .collect();
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header).chain(&table) {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&table) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        if !emit(&mut out, line.join("  ").trim_end())? {
            return Ok(ExitCode::SUCCESS);
        }
    }
    emit(&mut out, &format!("{} allocation(s)", rows.len()))?;
    Ok(ExitCode::SUCCESS)
}

/// `3d4h`, `2h05m`, `12m30s`, `45s`.
fn age(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(age(45_000), "45s");
        assert_eq!(age(750_000), "12m30s");
        assert_eq!(age(7_500_000), "2h05m");
        assert_eq!(age(273_600_000), "3d4h");
        assert_eq!(age(-5), "0s");
    }
}
