//! `evalstream reconcile`: compare allocation states with Finance's settlements and a Finance
//! ledger export, write a run report, and (with `--apply`) correct the allocator and record the
//! run in the signed audit chain. The runbook's "reconcile allocations and ledger entries;
//! produce reconciler run report" and "freeze allocations and run reconciliation; create
//! `audit.reconciliation` event".
//!
//! ```text
//!   evalstream.settlement.changelog ─► allocations (state, approved amount, settling entry)
//!   finance.settlements ─────────────► signed settlements by ledger entry (proofs re-verified
//!                                      with --signers: e.g. against a key revoked since)
//!   --ledger-export FILE (JSON lines) ► Finance's ledger: {ledger_entry_id, allocation_id,
//!                                      amount_minor, currency[, settled_at]}
//!        │ compare (plan(): pure, unit-tested)
//!        ▼
//!   report (text on stdout, JSON with --report FILE): matched, missing_in_ledger,
//!   missing_in_allocator, amount_mismatches, bad_proofs, double_payments, awaiting_finance,
//!   corrections
//!        │ --apply: ONE transaction
//!        ▼
//!   alloc.corrections ◄── one correction per allocation to change, naming the state it expects
//!                         (the settlement processor applies it exactly once, or records it stale)
//!   audit.events      ◄── audit.reconciliation {run id, counts, report SHA-256, export SHA-256}
//! ```
//!
//! What is corrected, and why only that:
//! - **settled → settlement_failed** when the settling entry is missing from the ledger export,
//!   is booked there for another allocation or another amount/currency, or its proof no longer
//!   verifies (a key revoked since: the runbook's "erroneous ledger proofs accepted earlier");
//! - **pending_finance | settlement_failed → settled** when the export books a matching entry
//!   *and* a settlement for it with a verifying proof is on `finance.settlements` (it was held,
//!   dead-lettered or lost in an incident). Without a signed proof the allocator never settles:
//!   the export is an operator-supplied file, not Finance's signature.
//! - Everything else (a payment for an unknown, denied or already otherwise settled allocation) is
//!   reported for Finance, not corrected: the allocator cannot undo a payment.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use evalstream_audit::trust::SignerRegistry;
use evalstream_domain::events::{self, Fact};
use evalstream_domain::proof::verify_settlement;
use evalstream_domain::records::{
    AllocationCorrection, AllocationState, CauseKind, FinanceSettlement,
};
use evalstream_runtime::codec::Codec;
use evalstream_settlement::state::Allocation;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use evalstream_runtime::time::format_rfc3339_ms as format_millis;

use super::common::load_config;
use super::domain_io::{
    actor, command_id, read_allocations, read_typed, Outgoing, SETTLEMENT_CHANGELOG,
};
use super::signers::now_ms;

/// Topic of the corrections.
pub const CORRECTIONS: &str = "alloc.corrections";

/// Arguments of `evalstream reconcile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Finance's ledger export: JSON lines {"ledger_entry_id", "allocation_id", "amount_minor",
    /// "currency"[, "settled_at"]}; blank lines and `#` comments are skipped.
    #[arg(long)]
    pub ledger_export: PathBuf,
    /// Re-verify the settling proofs against this signer registry (recommended after a key
    /// revocation).
    #[arg(long, env = "SIGNERS_FILE")]
    pub signers: Option<PathBuf>,
    /// Produce the corrections and the audit.reconciliation event (default: report only).
    #[arg(long)]
    pub apply: bool,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Who runs it; default $USER.
    #[arg(long)]
    pub actor: Option<String>,
    /// Run id (default rec-<ms>-<random>); corrections are <run id>/<allocation id>.
    #[arg(long)]
    pub run_id: Option<String>,
    /// The settlement processor's changelog (logical name).
    #[arg(long, default_value = SETTLEMENT_CHANGELOG)]
    pub changelog: String,
    /// Longest wait for the broker to deliver the next record, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// One line of the ledger export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerLine {
    /// Ledger entry id.
    pub ledger_entry_id: String,
    /// Allocation paid for.
    pub allocation_id: String,
    /// Amount booked.
    pub amount_minor: i64,
    /// Currency booked.
    pub currency: String,
    /// Booking time, if exported.
    #[serde(default)]
    pub settled_at: Option<i64>,
}

/// One finding of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The allocation.
    pub allocation_id: String,
    /// Its state in the allocator (`unknown` when the allocator does not know it).
    pub state: String,
    /// The ledger entry concerned.
    pub ledger_entry_id: Option<String>,
    /// What was found.
    pub detail: String,
}

/// A correction the run makes (or would make).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedCorrection {
    /// The allocation.
    pub allocation_id: String,
    /// The state it must still be in.
    pub expected_state: AllocationState,
    /// The state to move it to.
    pub to_state: AllocationState,
    /// Ledger entry (to settled).
    pub ledger_entry_id: Option<String>,
    /// Why.
    pub reason: String,
}

/// What the comparison found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Settled, and the ledger agrees.
    pub matched: Vec<Finding>,
    /// Settled by an entry the ledger does not have.
    pub missing_in_ledger: Vec<Finding>,
    /// The ledger books an entry the allocator does not show as settling the allocation.
    pub missing_in_allocator: Vec<Finding>,
    /// Ledger and allocator disagree on amount, currency or allocation.
    pub amount_mismatches: Vec<Finding>,
    /// The settling proof does not verify (any more).
    pub bad_proofs: Vec<Finding>,
    /// The ledger books a second entry for an allocation settled by another.
    pub double_payments: Vec<Finding>,
    /// In pending_finance with no ledger entry.
    pub awaiting_finance: Vec<Finding>,
    /// Corrections to make.
    pub corrections: Vec<PlannedCorrection>,
}

impl Plan {
    /// Counts per category.
    pub fn summary(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("matched", self.matched.len()),
            ("missing_in_ledger", self.missing_in_ledger.len()),
            ("missing_in_allocator", self.missing_in_allocator.len()),
            ("amount_mismatches", self.amount_mismatches.len()),
            ("bad_proofs", self.bad_proofs.len()),
            ("double_payments", self.double_payments.len()),
            ("awaiting_finance", self.awaiting_finance.len()),
            ("corrections", self.corrections.len()),
        ])
    }
}

fn finding(
    a: Option<&Allocation>,
    allocation_id: &str,
    ledger: Option<&str>,
    detail: String,
) -> Finding {
    Finding {
        allocation_id: allocation_id.to_string(),
        state: a.map_or("unknown".into(), |a| a.state.to_string()),
        ledger_entry_id: ledger.map(str::to_string),
        detail,
    }
}

/// Compares allocations, settlements (by ledger entry) and the ledger export. `registry`: when
/// given, proofs are verified.
pub fn plan(
    allocations: &[Allocation],
    settlements: &BTreeMap<String, Vec<FinanceSettlement>>,
    ledger: &[LedgerLine],
    registry: Option<&SignerRegistry>,
) -> Plan {
    let mut p = Plan::default();
    let by_entry: BTreeMap<&str, &LedgerLine> =
        ledger.iter().map(|l| (l.ledger_entry_id.as_str(), l)).collect();
    let mut by_alloc: BTreeMap<&str, Vec<&LedgerLine>> = BTreeMap::new();
    for l in ledger {
        by_alloc.entry(l.allocation_id.as_str()).or_default().push(l);
    }
    let known: BTreeMap<&str, &Allocation> =
        allocations.iter().map(|a| (a.allocation_id.as_str(), a)).collect();
    let proof_ok = |l: &str| -> Result<(), String> {
        let Some(copies) = settlements.get(l) else {
            return Err("no signed settlement on finance.settlements".into());
        };
        match registry {
            None => Ok(()),
            Some(r) => copies
                .iter()
                .try_for_each(|s| verify_settlement(s, r).map(|_| ()).map_err(|e| e.to_string())),
        }
    };
    for a in allocations {
        let id = a.allocation_id.as_str();
        let approved = (a.amount_minor, a.currency.as_deref());
        match a.state {
            AllocationState::Settled => {
                let l = a.ledger_entry_id.as_deref().unwrap_or("");
                let mut problems = Vec::new();
                match by_entry.get(l) {
                    None => {
                        p.missing_in_ledger.push(finding(
                            Some(a),
                            id,
                            Some(l),
                            format!("settled by {l}, which the ledger export does not have"),
                        ));
                        problems
                            .push(format!("ledger entry {l} is not in the Finance ledger export"));
                    }
                    Some(e) if e.allocation_id != id => {
                        let d = format!(
                            "ledger entry {l} is booked for allocation {}",
                            e.allocation_id
                        );
                        p.amount_mismatches.push(finding(Some(a), id, Some(l), d.clone()));
                        problems.push(d);
                    }
                    Some(e) if approved != (Some(e.amount_minor), Some(e.currency.as_str())) => {
                        let d = format!(
                            "ledger books {} {}, the allocation was approved for {:?} {:?}",
                            e.amount_minor, e.currency, a.amount_minor, a.currency
                        );
                        p.amount_mismatches.push(finding(Some(a), id, Some(l), d.clone()));
                        problems.push(d);
                    }
                    Some(_) => {}
                }
                if registry.is_some() && settlements.contains_key(l) {
                    if let Err(why) = proof_ok(l) {
                        p.bad_proofs.push(finding(Some(a), id, Some(l), why.clone()));
                        problems.push(format!("the proof of {l} does not verify: {why}"));
                    }
                }
                if problems.is_empty() {
                    p.matched.push(finding(
                        Some(a),
                        id,
                        Some(l),
                        "settled; the ledger agrees".into(),
                    ));
                } else {
                    p.corrections.push(PlannedCorrection {
                        allocation_id: id.into(),
                        expected_state: AllocationState::Settled,
                        to_state: AllocationState::SettlementFailed,
                        ledger_entry_id: Some(l.into()),
                        reason: format!("reconciliation: {}", problems.join("; ")),
                    });
                }
                for other in
                    by_alloc.get(id).into_iter().flatten().filter(|e| e.ledger_entry_id != l)
                {
                    p.double_payments.push(finding(
                        Some(a),
                        id,
                        Some(&other.ledger_entry_id),
                        format!(
                            "the ledger also books {} for it (settled by {l})",
                            other.ledger_entry_id
                        ),
                    ));
                }
            }
            AllocationState::PendingFinance | AllocationState::SettlementFailed => {
                let entries = by_alloc.get(id).cloned().unwrap_or_default();
                if entries.is_empty() && a.state == AllocationState::PendingFinance {
                    p.awaiting_finance.push(finding(
                        Some(a),
                        id,
                        None,
                        "no ledger entry yet".into(),
                    ));
                }
                let mut corrected = false;
                for e in entries {
                    let l = e.ledger_entry_id.as_str();
                    let matches = approved == (Some(e.amount_minor), Some(e.currency.as_str()));
                    let signed = proof_ok(l);
                    let detail = match (&signed, matches, corrected) {
                        (Ok(()), true, false) => {
                            corrected = true;
                            p.corrections.push(PlannedCorrection {
                                allocation_id: id.into(),
                                expected_state: a.state,
                                to_state: AllocationState::Settled,
                                ledger_entry_id: Some(l.into()),
                                reason: format!("reconciliation: the ledger books {l} with a verified settlement proof"),
                            });
                            "booked and signed; corrected to settled".to_string()
                        }
                        (Ok(()), true, true) => {
                            "a further matching entry: reported, not applied".into()
                        }
                        (Ok(()), false, _) => format!(
                            "booked {} {}, approved {:?} {:?}: not corrected",
                            e.amount_minor, e.currency, a.amount_minor, a.currency
                        ),
                        (Err(why), _, _) => format!("booked, but {why}: not corrected"),
                    };
                    p.missing_in_allocator.push(finding(Some(a), id, Some(l), detail));
                }
            }
            AllocationState::PendingPolicy | AllocationState::Denied => {
                for e in by_alloc.get(id).into_iter().flatten() {
                    p.missing_in_allocator.push(finding(
                        Some(a),
                        id,
                        Some(&e.ledger_entry_id),
                        format!("paid while the allocation is {}: for Finance", a.state),
                    ));
                }
            }
        }
    }
    for l in ledger.iter().filter(|l| !known.contains_key(l.allocation_id.as_str())) {
        p.missing_in_allocator.push(finding(
            None,
            &l.allocation_id,
            Some(&l.ledger_entry_id),
            "the allocator does not know this allocation".into(),
        ));
    }
    p
}

/// Reads the ledger export.
pub fn read_ledger_export(path: &Path) -> anyhow::Result<(Vec<LedgerLine>, String)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let digest = hex(&Sha256::digest(&bytes));
    let mut out = Vec::new();
    for (i, line) in bytes.lines().enumerate() {
        let line = line?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let l: LedgerLine = serde_json::from_str(t)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        out.push(l);
    }
    Ok((out, digest))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `evalstream reconcile`.
pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    let codec = Codec::from_env().context("loading schemas")?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let registry =
        args.signers.as_deref().map(SignerRegistry::load).transpose().context("signer registry")?;
    let (ledger, export_sha256) = read_ledger_export(&args.ledger_export)?;
    let allocations = read_allocations(&cfg, &args.changelog, timeout)?;
    let mut settlements: BTreeMap<String, Vec<FinanceSettlement>> = BTreeMap::new();
    for (_, s) in read_typed::<FinanceSettlement>(
        &cfg,
        &codec,
        &cfg.topic("finance.settlements"),
        timeout,
        false,
    )? {
        settlements.entry(s.ledger_entry_id.clone()).or_default().push(s);
    }
    let plan = plan(&allocations, &settlements, &ledger, registry.as_ref());
    let now = now_ms();
    let run_id = args.run_id.clone().unwrap_or_else(|| command_id("rec", now));
    let actor = actor(args.actor.clone());
    let report = serde_json::json!({
        "run_id": run_id,
        "generated_at": format_millis(now),
        "actor": actor,
        "applied": args.apply,
        "inputs": {
            "ledger_export": args.ledger_export.display().to_string(),
            "ledger_export_sha256": export_sha256,
            "ledger_entries": ledger.len(),
            "allocations": allocations.len(),
            "settlements": settlements.values().map(Vec::len).sum::<usize>(),
            "proofs_verified": registry.is_some(),
        },
        "summary": plan.summary(),
        "findings": plan,
    });
    let report_bytes = serde_json::to_vec_pretty(&report)?;
    let report_sha256 = hex(&Sha256::digest(&report_bytes));
    if let Some(path) = &args.report {
        std::fs::write(path, &report_bytes)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print_text(&run_id, &plan, registry.is_some());
    if !args.apply {
        println!("dry run: nothing produced (--apply makes {} correction(s) and records audit.reconciliation)", plan.corrections.len());
        return Ok(ExitCode::SUCCESS);
    }
    let corrections_topic = cfg.topic(CORRECTIONS);
    let mut records = Vec::new();
    for c in &plan.corrections {
        let correction = AllocationCorrection {
            correction_id: format!("{run_id}/{}", c.allocation_id),
            allocation_id: c.allocation_id.clone(),
            expected_state: c.expected_state,
            to_state: c.to_state,
            cause_kind: CauseKind::Reconciliation,
            cause_ref: Some(run_id.clone()),
            ledger_entry_id: c.ledger_entry_id.clone(),
            reason: c.reason.clone(),
            actor: actor.clone(),
            issued_at: now,
        };
        let value = codec.encode_record(&corrections_topic, &correction)?;
        records.push(Outgoing {
            topic: corrections_topic.clone(),
            partition: None,
            key: c.allocation_id.clone(),
            value,
        });
    }
    let summary = serde_json::to_value(plan.summary())?;
    let event =
        Fact::new("reconcile", "audit.reconciliation", "reconciliation", &run_id, &run_id, now)
            .actor(&actor)
            .with("summary", summary)
            .with("report_sha256", report_sha256.as_str())
            .with("ledger_export_sha256", export_sha256.as_str())
            .with("proofs_verified", registry.is_some())
            .with(
                "corrections",
                plan.corrections
                    .iter()
                    .map(|c| format!("{run_id}/{}", c.allocation_id))
                    .collect::<Vec<_>>(),
            )
            .build();
    let audit_topic = cfg.topic(events::TOPIC);
    records.push(Outgoing {
        topic: audit_topic.clone(),
        partition: None,
        key: event.subject.clone(),
        value: codec.encode_record(&audit_topic, &event)?,
    });
    super::domain_io::produce_atomically(&cfg, "reconcile", &records)?;
    println!(
        "applied: {} correction(s) to {CORRECTIONS} and audit event {} (report sha256 {report_sha256}) in one transaction",
        plan.corrections.len(),
        event.event_id
    );
    if plan.corrections.is_empty() && ledger.is_empty() && allocations.is_empty() {
        bail!("nothing to reconcile: no allocations and an empty ledger export");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(run_id: &str, plan: &Plan, verified: bool) {
    println!(
        "reconciliation {run_id}{}",
        if verified { " (proofs re-verified)" } else { " (proofs not re-verified: no --signers)" }
    );
    for (name, n) in plan.summary() {
        println!("  {name:<21} {n}");
    }
    let sections: [(&str, &Vec<Finding>); 6] = [
        ("missing in ledger", &plan.missing_in_ledger),
        ("missing in allocator", &plan.missing_in_allocator),
        ("amount mismatches", &plan.amount_mismatches),
        ("bad proofs", &plan.bad_proofs),
        ("double payments", &plan.double_payments),
        ("awaiting finance", &plan.awaiting_finance),
    ];
    for (title, list) in sections {
        for f in list {
            println!(
                "  [{title}] {} ({}) {}: {}",
                f.allocation_id,
                f.state,
                f.ledger_entry_id.as_deref().unwrap_or("-"),
                f.detail
            );
        }
    }
    for c in &plan.corrections {
        println!(
            "  [correction] {}: {} -> {} ({})",
            c.allocation_id, c.expected_state, c.to_state, c.reason
        );
    }
}

#[cfg(test)]
mod tests {
    use evalstream_audit::signer::{LocalKeySigner, SignerKind};
    use evalstream_audit::trust::SignerEntry;
    use evalstream_domain::proof::{sign_settlement, LedgerProof};

    use super::*;

    fn alloc(id: &str, state: AllocationState, ledger: Option<&str>) -> Allocation {
        let mut a = Allocation::new(id, state, 1);
        a.amount_minor = Some(100);
        a.currency = Some("EUR".into());
        a.ledger_entry_id = ledger.map(Into::into);
        a
    }

    fn line(l: &str, a: &str, amount: i64) -> LedgerLine {
        LedgerLine {
            ledger_entry_id: l.into(),
            allocation_id: a.into(),
            amount_minor: amount,
            currency: "EUR".into(),
            settled_at: None,
        }
    }

    #[test]
    fn every_category_and_only_safe_corrections() {
        let key = LocalKeySigner::random().unwrap();
        let revoked = LocalKeySigner::random().unwrap();
        let mut registry = SignerRegistry::new();
        registry
            .add(
                SignerEntry::new("fin", SignerKind::Finance, key.public_key_spki_der(), 0).unwrap(),
            )
            .unwrap();
        registry
            .add(
                SignerEntry::new("old", SignerKind::Local, revoked.public_key_spki_der(), 0)
                    .unwrap(),
            )
            .unwrap();
        let sign = |k: &LocalKeySigner, kid: &str, l: &str, a: &str| {
            sign_settlement(k, kid, &LedgerProof::new(l, a, 100, "EUR", 5)).unwrap()
        };
        let mut settlements: BTreeMap<String, Vec<FinanceSettlement>> = BTreeMap::new();
        for (l, a, k, kid) in
            [("L1", "ok", &key, "fin"), ("L4", "bad", &revoked, "old"), ("L6", "held", &key, "fin")]
        {
            settlements.insert(l.into(), vec![sign(k, kid, l, a)]);
        }
        let allocations = vec![
            alloc("ok", AllocationState::Settled, Some("L1")),
            alloc("gone", AllocationState::Settled, Some("L2")),
            alloc("amount", AllocationState::Settled, Some("L3")),
            alloc("bad", AllocationState::Settled, Some("L4")),
            alloc("waiting", AllocationState::PendingFinance, None),
            alloc("held", AllocationState::PendingFinance, None),
            alloc("unsigned", AllocationState::PendingFinance, None),
            alloc("denied", AllocationState::Denied, None),
        ];
        let ledger = vec![
            line("L1", "ok", 100),
            line("L3", "amount", 90),
            line("L4", "bad", 100),
            line("L6", "held", 100),
            line("L7", "unsigned", 100),
            line("L8", "denied", 100),
            line("L9", "nobody", 100),
            line("L10", "ok", 100),
        ];
        let p = plan(&allocations, &settlements, &ledger, Some(&registry));
        let ids = |v: &Vec<Finding>| v.iter().map(|f| f.allocation_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&p.matched), ["ok"]);
        assert_eq!(ids(&p.missing_in_ledger), ["gone"]);
        assert_eq!(ids(&p.amount_mismatches), ["amount"]);
        assert_eq!(ids(&p.bad_proofs), ["bad"]);
        assert_eq!(ids(&p.awaiting_finance), ["waiting"]);
        assert_eq!(ids(&p.double_payments), ["ok"]);
        assert_eq!(ids(&p.missing_in_allocator), ["held", "unsigned", "denied", "nobody"]);
        let corr: Vec<_> = p
            .corrections
            .iter()
            .map(|c| (c.allocation_id.as_str(), c.expected_state, c.to_state))
            .collect();
        use AllocationState::*;
        assert_eq!(
            corr,
            [
                ("gone", Settled, SettlementFailed),
                ("amount", Settled, SettlementFailed),
                ("bad", Settled, SettlementFailed),
                ("held", PendingFinance, Settled)
            ]
        );
        assert!(p.corrections[2].reason.contains("does not verify"), "{}", p.corrections[2].reason);
        // Without a registry, proofs are not re-checked (but a signed record is still required
        // to settle).
        let p = plan(&allocations, &settlements, &ledger, None);
        assert_eq!(p.bad_proofs.len(), 0);
        assert_eq!(p.corrections.len(), 3);
    }

    #[test]
    fn the_export_is_strict_json_lines() {
        let dir = std::env::temp_dir().join(format!("evalstream-reconcile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("export.jsonl");
        std::fs::write(&f, "# Finance export\n{\"ledger_entry_id\":\"L1\",\"allocation_id\":\"a\",\"amount_minor\":1,\"currency\":\"EUR\"}\n\n").unwrap();
        let (lines, digest) = read_ledger_export(&f).unwrap();
        assert_eq!((lines.len(), digest.len()), (1, 64));
        std::fs::write(&f, "{\"ledger_entry_id\":\"L1\",\"allocation\":\"a\"}\n").unwrap();
        assert!(format!("{:#}", read_ledger_export(&f).unwrap_err()).contains("line 1"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
