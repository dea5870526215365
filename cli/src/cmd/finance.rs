//! `evalstream finance ...`: ledger proofs.
//!
//! ```text
//!   finance verify-proof --ledger-entry-id ID [--signers signers.json]
//!       finance.settlements, .retry and .dlq ─► every copy of that ledger entry ─► verify
//!       (format, Finance signature at the signed settled_at, signed fields = record fields)
//!       ─► ok / the reason, per copy; exit 0 only if every copy verifies
//!   finance sign-settlement --key F --kid K ...        DEVELOPMENT STAND-IN for Finance
//!       ─► one JSON line for `evalstream produce finance.settlements --key-field allocation_id`
//! ```
//!
//! `verify-proof` is the runbook's `finance/tools/verify_ledger_proof.sh --proof-id <id>`: the
//! proof id is the ledger entry id. It checks exactly what the settlement processor checks, with
//! the same code (`evalstream_domain::proof`), against the registry file given (which may be newer
//! than the processor's, e.g. after a revocation). Escalate to Finance and Security on a mismatch.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use evalstream_audit::signer::LocalKeySigner;
use evalstream_audit::trust::SignerRegistry;
use evalstream_domain::proof::{sign_settlement, verify_settlement, LedgerProof, ProofError};
use evalstream_domain::records::FinanceSettlement;
use evalstream_runtime::codec::{avro_to_json, Codec};
use evalstream_runtime::record::to_conformed_avro;
use serde_json::json;

use super::common::load_config;
use super::domain_io::read_typed;
use super::signers::parse_time;

/// Topic of the settlements.
pub const SETTLEMENTS: &str = "finance.settlements";

/// `evalstream finance` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Find every copy of a ledger entry's settlement (topic, retry topic, DLQ) and verify its
    /// ledger proof against the Finance keys of the signer registry, saying why not.
    VerifyProof(VerifyArgs),
    /// DEVELOPMENT STAND-IN for Finance (tests, demo): sign a settlement with a local finance key
    /// and print it as a JSON line for `evalstream produce finance.settlements --key-field
    /// allocation_id`. Production settlements come from Finance.
    SignSettlement(SignArgs),
}

/// Arguments of `finance verify-proof`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The ledger entry (the runbook's proof id).
    #[arg(long)]
    pub ledger_entry_id: String,
    /// The signer registry with the Finance keys.
    #[arg(long, env = "SIGNERS_FILE", default_value = "signers.json")]
    pub signers: PathBuf,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Longest wait for the broker to deliver the next record, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// Arguments of `finance sign-settlement`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The finance private key (PKCS#8 PEM), e.g. from `signers add --kind finance --generate`.
    #[arg(long)]
    pub key: PathBuf,
    /// Its kid in the registry.
    #[arg(long)]
    pub kid: String,
    /// Ledger entry id.
    #[arg(long)]
    pub ledger_entry_id: String,
    /// Allocation paid for.
    #[arg(long)]
    pub allocation_id: String,
    /// Amount in minor units.
    #[arg(long)]
    pub amount_minor: i64,
    /// ISO 4217 code.
    #[arg(long)]
    pub currency: String,
    /// Booking time (RFC 3339 or `now`, the default).
    #[arg(long)]
    pub settled_at: Option<String>,
}

/// Runs an `evalstream finance` subcommand.
pub fn run(config: Option<&Path>, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::VerifyProof(a) => verify(config, a),
        Command::SignSettlement(a) => sign(a),
    }
}

fn verify(config: Option<&Path>, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    let codec = Codec::from_env().context("loading schemas")?;
    let registry = SignerRegistry::load(&args.signers)
        .with_context(|| format!("signer registry {}", args.signers.display()))?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut found = Vec::new();
    for logical in
        [SETTLEMENTS.to_string(), format!("{SETTLEMENTS}.retry"), format!("{SETTLEMENTS}.dlq")]
    {
        let topic = cfg.topic(&logical);
        for (raw, s) in read_typed::<FinanceSettlement>(&cfg, &codec, &topic, timeout, true)? {
            if s.ledger_entry_id == args.ledger_entry_id {
                found.push((logical.clone(), raw.partition, raw.offset, s));
            }
        }
    }
    if found.is_empty() {
        bail!(
            "no settlement with ledger entry {} in {SETTLEMENTS}, its retry topic or its DLQ",
            args.ledger_entry_id
        );
    }
    let mut all_ok = true;
    let mut docs = Vec::new();
    for (topic, p, o, s) in &found {
        let verdict = verify_settlement(s, &registry);
        all_ok &= verdict.is_ok();
        let (status, detail) = match &verdict {
            Ok(_) => (
                "ok".to_string(),
                format!(
                    "signed by {} over allocation {} {} {}",
                    s.kid, s.allocation_id, s.amount_minor, s.currency
                ),
            ),
            Err(ProofError::Signature { status, detail }) => (status.to_string(), detail.clone()),
            Err(e) => (e.metric_reason().to_string(), e.to_string()),
        };
        if args.json {
            docs.push(json!({
                "topic": topic, "partition": p, "offset": o, "ledger_entry_id": s.ledger_entry_id,
                "allocation_id": s.allocation_id, "amount_minor": s.amount_minor, "currency": s.currency,
                "kid": s.kid, "settled_at": s.settled_at, "status": status, "detail": detail,
            }));
        } else {
            println!("{topic} {p}/{o}: {status}: {detail}");
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "ledger_entry_id": args.ledger_entry_id, "ok": all_ok, "copies": docs })
            )?
        );
    } else if !all_ok {
        eprintln!("evalstream: the ledger proof does not verify: escalate to Finance and Security (runbook \"ledger proofs fail signature validation\")");
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let signer = LocalKeySigner::from_file(&args.key, Some(args.kid.clone()))?;
    let settled_at = parse_time("settled-at", args.settled_at.as_deref())?;
    let proof = LedgerProof::new(
        &args.ledger_entry_id,
        &args.allocation_id,
        args.amount_minor,
        &args.currency,
        settled_at,
    );
    let s = sign_settlement(&signer, &args.kid, &proof)?;
    // The JSON form `evalstream produce` reads (bytes as {"base64": ...}).
    println!("{}", avro_to_json(&to_conformed_avro(&s)?));
    Ok(ExitCode::SUCCESS)
}
