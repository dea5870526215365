//! `evalstream signers list|add|rotate|revoke`: maintain the signer registry (`signers.json`).
//!
//! ```text
//!   --file F | $SIGNERS_FILE | ./signers.json
//!        │ SignerRegistry::load (validated: unique kids, one active key per kind, parseable keys)
//!        ├─► list     table, or the JSON document (--json)
//!        ├─► add      public key from --public-key FILE | --from-kms KEY_ID | --generate KEY_OUT
//!        ├─► rotate   same key sources; old active key of the kind → retired at --at, new → active
//!        └─► revoke   the key is compromised: it verifies nothing any more
//!        ▼
//!   SignerRegistry::save (temporary file + rename: readers never see half a file)
//! ```
//!
//! Finance's ledger-proof keys live here too, as kind `finance` (`signers add --kind finance
//! --public-key finance.pem`): same windows, rotation and revocation, but they verify only
//! settlement proofs and audit keys only checkpoints (`evalstream_audit::registry`).
//!
//! The runbook's planned rotation maps to `rotate` (dual mode: the old key keeps verifying the
//! checkpoints it signed before `--at`); `revoke` is for a compromised key only, because a revoked
//! key stops verifying everything it ever signed (see `docs/signing.md`). The registry is a plain
//! file edited by one operator at a time; concurrent edits are not merged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use evalstream_audit::signer::{
    derive_kid, public_key_spki_der, KmsConfig, KmsSigner, LocalKeySigner, SignerKind,
};
use evalstream_audit::trust::{SignerEntry, SignerRegistry};
use evalstream_runtime::time::{format_rfc3339_ms, parse_rfc3339_ms};

use super::common::emit;

/// `evalstream signers` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show every registered key: kid, kind, status, validity window, note.
    List(ListArgs),
    /// Register a key as the active key of its kind (the kind must not have one yet).
    Add(AddArgs),
    /// Rotate in dual mode: the kind's active key is retired at --at (it still verifies what it
    /// signed before), and the new key is active from --at.
    Rotate(RotateArgs),
    /// Revoke a compromised key: from now on it verifies no checkpoint, whatever its time.
    Revoke(RevokeArgs),
}

/// Which registry file to use.
#[derive(Debug, clap::Args)]
pub struct FileArg {
    /// The signer registry.
    #[arg(long, value_name = "PATH", env = "SIGNERS_FILE", default_value = "signers.json")]
    pub file: PathBuf,
}

/// Arguments of `signers list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    registry: FileArg,
    /// Print the registry document (the file's JSON, normalized) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Where the new key's public key comes from (exactly one).
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct KeySource {
    /// A public key file: SPKI PEM (`-----BEGIN PUBLIC KEY-----`) or DER.
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// Fetch the public key of this AWS KMS key (GetPublicKey; region, endpoint and credentials
    /// from the usual AWS environment).
    #[arg(long, value_name = "KEY_ID")]
    from_kms: Option<String>,
    /// Generate a new local development key, write its private key (PKCS#8 PEM, mode 0600) here,
    /// and register its public key. Refuses to overwrite an existing file.
    #[arg(long, value_name = "PRIVATE_KEY_OUT")]
    generate: Option<PathBuf>,
}

/// The new key, shared by `add` and `rotate`.
#[derive(Debug, clap::Args)]
pub struct NewKey {
    /// The key id; default `<kind>:` + 16 hex digits of SHA-256 of the public key (SPKI DER),
    /// the same kid the signer derives when AUDIT_SIGNER_KID is not set.
    #[arg(long)]
    kid: Option<String>,
    #[command(flatten)]
    source: KeySource,
    /// kms, local or proxy (audit checkpoint signers), or finance (Finance's ledger-proof key,
    /// which verifies settlements and never a checkpoint); default kms for --from-kms, local for
    /// --generate. Required with --public-key.
    #[arg(long)]
    kind: Option<SignerKind>,
    /// Free text stored with the key (ticket, KMS key ARN, who approved it).
    #[arg(long)]
    note: Option<String>,
}

/// Arguments of `signers add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    registry: FileArg,
    #[command(flatten)]
    key: NewKey,
    /// Start of the key's validity (RFC 3339, or `now`); default now.
    #[arg(long, value_name = "TIME")]
    valid_from: Option<String>,
}

/// Arguments of `signers rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    registry: FileArg,
    #[command(flatten)]
    key: NewKey,
    /// The switch-over time (RFC 3339, or `now`); default now. Checkpoints before it verify with
    /// the old key, from it on with the new one.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Let both keys verify during [at - overlap, at + overlap): checkpoint times are event
    /// times, so around a switch-over old-key checkpoints can carry later times and new-key
    /// checkpoints (that waited as pending_signature) earlier ones. E.g. 30m, 2h, 1d; default 0.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    overlap: Option<i64>,
}

/// `90s`, `30m`, `2h`, `1d` or plain milliseconds, into milliseconds.
pub(crate) fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30m"))?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: unit must be ms, s, m, h or d")),
    };
    number.checked_mul(scale).ok_or_else(|| format!("{text:?} is too long"))
}

/// Arguments of `signers revoke`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    registry: FileArg,
    /// The compromised key.
    #[arg(long)]
    kid: String,
    /// When it was revoked (RFC 3339, or `now`); recorded for the incident timeline. Default now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

/// Runs a `signers` command. `config` (the runtime configuration) is not needed: the registry is
/// a file, and KMS look-ups use the AWS environment.
pub fn run(_config: Option<&Path>, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::List(args) => list(args),
        Command::Add(args) => add(args),
        Command::Rotate(args) => rotate(args),
        Command::Revoke(args) => revoke(args),
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `now` or an RFC 3339 time; `None` is now.
pub(crate) fn parse_time(flag: &str, value: Option<&str>) -> anyhow::Result<i64> {
    match value {
        None | Some("now") => Ok(now_ms()),
        Some(text) => parse_rfc3339_ms(text).with_context(|| format!("--{flag}")),
    }
}

fn load(path: &Path) -> anyhow::Result<SignerRegistry> {
    SignerRegistry::load(path).map_err(|e| anyhow::anyhow!(e)).with_context(|| {
        format!(
            "cannot use signer registry {} (create one with `evalstream signers add`)",
            path.display()
        )
    })
}

/// Loads the registry, or starts an empty one when the file does not exist yet (first `add`).
fn load_or_new(path: &Path) -> anyhow::Result<SignerRegistry> {
    if path.exists() {
        load(path)
    } else {
        Ok(SignerRegistry::new())
    }
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let registry = load(&args.registry.file)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        out.write_all(registry.to_json().as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 6]> = registry
        .entries()
        .iter()
        .map(|e| {
            let status = match e.revoked_at_ms() {
                Some(at) => format!("revoked {}", format_rfc3339_ms(at)),
                None => e.status().to_string(),
            };
            [
                e.kid().to_string(),
                e.kind().to_string(),
                status,
                format_rfc3339_ms(e.valid_from_ms()),
                e.valid_to_ms().map(format_rfc3339_ms).unwrap_or_else(|| "-".into()),
                e.note().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let header = ["KID", "KIND", "STATUS", "VALID FROM", "VALID TO", "NOTE"].map(String::from);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> =
            row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        if !emit(&mut out, line.join("  ").trim_end())? {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A generated private key that is written only once the registry accepted its public key, so
/// a refused `add` or `rotate` leaves no orphan key file behind.
struct PendingKey {
    signer: LocalKeySigner,
    path: PathBuf,
    /// The kid it is registered under (the signer's own is derived as a local key's).
    kid: String,
}

impl PendingKey {
    fn write(self) -> anyhow::Result<()> {
        self.signer.save_private_key(&self.path)?;
        eprintln!(
            "wrote a new private key to {} (kid {}); keep it out of version control",
            self.path.display(),
            self.kid
        );
        Ok(())
    }
}

/// Resolves the key source into an entry (not yet in the registry), valid from `from_ms`.
fn new_entry(key: NewKey, from_ms: i64) -> anyhow::Result<(SignerEntry, Option<PendingKey>)> {
    let NewKey { kid, source, kind, note } = key;
    let mut pending = None;
    let (spki_der, default_kind) = match (source.public_key, source.from_kms, source.generate) {
        (Some(path), None, None) => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let der = public_key_spki_der(&bytes)
                .with_context(|| format!("public key {}", path.display()))?;
            (der, None)
        }
        (None, Some(key_id), None) => {
            let mut config = KmsConfig::new(key_id.clone());
            // A placeholder kid: the signer needs none to fetch the public key.
            config.kid = Some("kms:lookup".into());
            let signer = KmsSigner::new(config)?;
            let der = signer
                .public_key_spki_der()
                .with_context(|| format!("fetching the public key of KMS key {key_id}"))?;
            (der, Some(SignerKind::Kms))
        }
        (None, None, Some(path)) => {
            if path.exists() {
                bail!("{} exists; refusing to overwrite a private key", path.display());
            }
            let signer = LocalKeySigner::random()?;
            let der = signer.public_key_spki_der().to_vec();
            pending = Some(PendingKey { signer, path, kid: String::new() });
            (der, Some(SignerKind::Local))
        }
        _ => bail!("give exactly one of --public-key, --from-kms, --generate"),
    };
    let Some(kind) = kind.or(default_kind) else {
        bail!("--kind is required with --public-key (kms, local, proxy or finance)");
    };
    let kid = kid.unwrap_or_else(|| derive_kid(kind, &spki_der));
    if let Some(p) = pending.as_mut() {
        p.kid = kid.clone();
    }
    let entry = SignerEntry::new(kid, kind, &spki_der, from_ms)?;
    let entry = match note {
        Some(note) => entry.with_note(note),
        None => entry,
    };
    Ok((entry, pending))
}

/// Writes the generated private key (if any), then the registry.
fn commit(
    registry: &SignerRegistry,
    path: &Path,
    pending: Option<PendingKey>,
) -> anyhow::Result<()> {
    if let Some(pending) = pending {
        pending.write()?;
    }
    registry.save(path)?;
    Ok(())
}

fn add(args: AddArgs) -> anyhow::Result<ExitCode> {
    let path = &args.registry.file;
    let mut registry = load_or_new(path)?;
    let from = parse_time("valid-from", args.valid_from.as_deref())?;
    let (entry, pending) = new_entry(args.key, from)?;
    let (kid, kind) = (entry.kid().to_string(), entry.kind());
    registry.add(entry)?;
    commit(&registry, path, pending)?;
    eprintln!(
        "added {kind} key {kid}, active from {} ({})",
        format_rfc3339_ms(from),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn rotate(args: RotateArgs) -> anyhow::Result<ExitCode> {
    let path = &args.registry.file;
    let mut registry = load(path)?;
    let at = parse_time("at", args.at.as_deref())?;
    let (entry, pending) = new_entry(args.key, at)?;
    let (kid, kind) = (entry.kid().to_string(), entry.kind());
    let overlap = args.overlap.unwrap_or(0).min(i64::MAX / 4);
    let retired = registry.rotate_with_overlap(entry, at, overlap)?;
    commit(&registry, path, pending)?;
    let (old_end, new_start) = (format_rfc3339_ms(at + overlap), format_rfc3339_ms(at - overlap));
    let what = kind.purpose().describe();
    match retired {
        Some(old) if kind == SignerKind::Finance => eprintln!(
            "rotated finance keys: {old} retired (verifies {what} made before {old_end}), \
             {kid} active from {new_start}; Finance signs new settlements with {kid}"
        ),
        Some(old) => eprintln!(
            "rotated {kind} keys: {old} retired (verifies {what} before {old_end}), \
             {kid} active from {new_start}; deploy with AUDIT_SIGNER_KID={kid}"
        ),
        None => eprintln!("no active {kind} key to retire; {kid} active from {new_start}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let path = &args.registry.file;
    let mut registry = load(path)?;
    let at = parse_time("at", args.at.as_deref())?;
    registry.revoke(&args.kid, at)?;
    registry.save(path)?;
    eprintln!(
        "revoked {} at {}: its checkpoints now report signature_invalid ({})",
        args.kid,
        format_rfc3339_ms(at),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Command,
    }

    fn run_args(args: &[&str]) -> anyhow::Result<ExitCode> {
        let cli = Cli::try_parse_from(std::iter::once("signers").chain(args.iter().copied()))?;
        run(None, cli.cmd)
    }

    #[test]
    fn generate_add_rotate_revoke_through_the_cli() {
        let dir =
            std::env::temp_dir().join(format!("evalstream-cli-signers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("signers.json");
        let f = file.to_str().unwrap();
        let (a, b) = (dir.join("a.pem"), dir.join("b.pem"));
        run_args(&[
            "add",
            "--file",
            f,
            "--kid",
            "dev-a",
            "--generate",
            a.to_str().unwrap(),
            "--valid-from",
            "2025-11-18T09:30:00Z",
        ])
        .unwrap();
        let err = run_args(&["add", "--file", f, "--generate", b.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("rotate"), "{err:#}");
        assert!(!b.exists(), "a refused add must not leave a private key behind");
        run_args(&[
            "rotate",
            "--file",
            f,
            "--kid",
            "dev-b",
            "--public-key",
            a.to_str().unwrap(),
            "--kind",
            "local",
            "--at",
            "2025-11-19T00:00:00Z",
        ])
        .unwrap_err(); // a private key is not a public key
        let pub_b = dir.join("b.pub.pem");
        let signer = LocalKeySigner::generate(&b).unwrap();
        std::fs::write(&pub_b, signer.public_key_pem()).unwrap();
        run_args(&[
            "rotate",
            "--file",
            f,
            "--kid",
            "dev-b",
            "--public-key",
            pub_b.to_str().unwrap(),
            "--kind",
            "local",
            "--at",
            "2025-11-19T00:00:00Z",
        ])
        .unwrap();
        run_args(&["revoke", "--file", f, "--kid", "dev-a", "--at", "2025-11-20T00:00:00Z"])
            .unwrap();
        let registry = SignerRegistry::load(&file).unwrap();
        let kids: Vec<_> =
            registry.entries().iter().map(|e| (e.kid(), e.status().as_str())).collect();
        assert_eq!(kids, vec![("dev-a", "revoked"), ("dev-b", "active")]);
        assert_eq!(registry.get("dev-a").unwrap().valid_to_ms(), Some(1_763_510_400_000));
        run_args(&["list", "--file", f]).unwrap();
        run_args(&["list", "--file", f, "--json"]).unwrap();
        let err =
            run_args(&["list", "--file", dir.join("none.json").to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("none.json"), "{err:#}");
        let err =
            run_args(&["add", "--file", f, "--public-key", pub_b.to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("--kind is required"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn finance_keys_are_added_and_rotated_beside_audit_keys() {
        let dir =
            std::env::temp_dir().join(format!("evalstream-cli-finance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("signers.json");
        let f = file.to_str().unwrap();
        let key = |n: &str| dir.join(n).to_str().unwrap().to_string();
        let t = "2025-11-18T09:30:00Z";
        run_args(&["add", "--file", f, "--generate", &key("audit.pem"), "--valid-from", t])
            .unwrap();
        let (fa, fb) = (key("fin-a.pem"), key("fin-b.pem"));
        run_args(&["add", "--file", f, "--kind", "finance", "--generate", &fa, "--valid-from", t])
            .unwrap();
        run_args(&[
            "rotate",
            "--file",
            f,
            "--kind",
            "finance",
            "--kid",
            "fin-b",
            "--generate",
            &fb,
        ])
        .unwrap();
        let registry = SignerRegistry::load(&file).unwrap();
        let rows: Vec<_> =
            registry.entries().iter().map(|e| (e.kind().as_str(), e.status().as_str())).collect();
        assert_eq!(rows, [("local", "active"), ("finance", "retired"), ("finance", "active")]);
        assert!(registry.entries()[1].kid().starts_with("finance:"), "derived finance kid");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("30m"), Ok(1_800_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("1500"), Ok(1500));
        assert!(parse_duration_ms("1 h").is_err());
        assert!(parse_duration_ms("h").is_err());
        assert!(parse_duration_ms("-5m").is_err());
    }

    #[test]
    fn exactly_one_key_source_is_accepted() {
        assert!(Cli::try_parse_from(["signers", "add"]).is_err());
        assert!(Cli::try_parse_from(["signers", "add", "--public-key", "p", "--from-kms", "k"])
            .is_err());
        assert!(Cli::try_parse_from(["signers", "add", "--from-kms", "alias/audit"]).is_ok());
    }
}
