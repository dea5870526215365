//! The signer registry, `signers.json`: which public key verifies which checkpoint (whom the
//! audit trail trusts, hence the module name `trust`; the keys that sign are in `signer`).
//!
//! ```text
//!   checkpoint { kid, time, signature } ──► SignerRegistry::key_for(kid, time)
//!        unknown kid ─────────────────────────────► unknown_signer
//!        revoked (compromised) ───────────────────► signature_invalid
//!        time outside [valid_from, valid_to) ─────► unknown_signer
//!        else verify(signature) ── mismatch ──────► signature_invalid
//!                               └─ ok ────────────► ok
//! ```
//!
//! Rotation runs in dual mode: [`SignerRegistry::rotate`] retires the active key of the new key's kind
//! with `valid_to = at` and makes the new key active from `at`, so checkpoints made before `at`
//! verify with the old key and later ones with the new key. Windows are half-open:
//! `valid_from <= time < valid_to`.
//!
//! Revocation means compromise: whoever holds a revoked key can sign any bytes, including a
//! checkpoint that claims an old time, so a revoked key verifies **nothing**, whatever the
//! checkpoint's time. (A key that is merely no longer used is *retired*, not revoked.) Its
//! checkpoints report `signature_invalid`; the hashes still verify, and the next checkpoint signed
//! with a trusted key covers every entry before it, because a checkpoint's Merkle root commits to
//! the whole chain. The revocation time is recorded for the operators' timeline.
//!
//! **Purposes.** The registry also holds Finance's ledger-proof keys (kind `finance`). A key
//! verifies only signatures of its own [`KeyPurpose`]: [`SignerRegistry::verify`] (checkpoints) refuses
//! a finance key and [`SignerRegistry::verify_for`] with [`KeyPurpose::Finance`] refuses an audit key,
//! both as `signature_invalid` ([`SignerRegistryError::WrongPurpose`]): a signature by a key that is not
//! trusted for that data is as bad as a forged one, and it is not a registry entry to add.
//!
//! The file format, with an example, is in `docs/signing.md`.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use p256::ecdsa::VerifyingKey;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::signer::{
    validate_kid, KeyPurpose, SignerKind, VerifyError, ALGORITHM_ECDSA_P256_SHA256,
};
use evalstream_runtime::time::{format_rfc3339_ms, parse_rfc3339_ms};

/// The `version` this code reads and writes. A file with another version is refused rather than
/// half-understood.
pub const REGISTRY_VERSION: u32 = 1;

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignerStatus {
    /// The current key of its kind; verifies from `valid_from` on (until `valid_to` if set).
    Active,
    /// Replaced by a newer key; still verifies checkpoints inside its window.
    Retired,
    /// Compromised; verifies nothing.
    Revoked,
}

impl SignerStatus {
    /// The name used in `signers.json` and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            SignerStatus::Active => "active",
            SignerStatus::Retired => "retired",
            SignerStatus::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for SignerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with a registry file, an edit, or a key lookup.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SignerRegistryError {
    /// The file could not be read or written.
    #[error("{path}: {error}", path = path.display())]
    Io {
        /// The registry file.
        path: PathBuf,
        /// The I/O error (in the message, so not also a `source()`).
        error: std::io::Error,
    },
    /// The file is not a valid registry; `path` names it when it came from a file.
    #[error("{}{reason}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Invalid {
        /// The registry file, if any.
        path: Option<PathBuf>,
        /// What is wrong, naming the kid where there is one.
        reason: String,
    },
    /// No key with this kid is registered (verifier status `unknown_signer`).
    #[error("unknown signer kid {0:?}: not in the signer registry")]
    UnknownKid(String),
    /// The key was revoked: it verifies nothing (verifier status `signature_invalid`).
    #[error("signer {kid:?} was revoked at {}: its signatures are not trusted", format_rfc3339_ms(*revoked_at_ms))]
    Revoked {
        /// The revoked kid.
        kid: String,
        /// When it was revoked.
        revoked_at_ms: i64,
    },
    /// The time is outside the key's validity window (verifier status `unknown_signer`: no key
    /// is registered for this kid at that time).
    #[error(
        "signer {kid:?} is not valid at {}: its window is [{}, {})",
        format_rfc3339_ms(*at_ms),
        format_rfc3339_ms(*valid_from_ms),
        valid_to_ms.map(format_rfc3339_ms).unwrap_or_else(|| "open".into())
    )]
    OutsideValidity {
        /// The kid.
        kid: String,
        /// The checkpoint's time.
        at_ms: i64,
        /// Start of the window (inclusive).
        valid_from_ms: i64,
        /// End of the window (exclusive), if any.
        valid_to_ms: Option<i64>,
    },
    /// The key is registered for another purpose: a finance key offered for an audit checkpoint
    /// or an audit key for a ledger proof (verifier status `signature_invalid`).
    #[error("signer {kid:?} is a {kind} key: it does not verify {}", wanted.describe())]
    WrongPurpose {
        /// The kid.
        kid: String,
        /// The key's kind (which says what it is for).
        kind: SignerKind,
        /// What the signature was offered for.
        wanted: KeyPurpose,
    },
    /// An edit that the registry's rules forbid (duplicate kid, second active key, ...).
    #[error("{0}")]
    Rejected(String),
}

impl SignerRegistryError {
    fn invalid(reason: impl Into<String>) -> SignerRegistryError {
        SignerRegistryError::Invalid { path: None, reason: reason.into() }
    }

    fn in_file(self, file: &Path) -> SignerRegistryError {
        match self {
            SignerRegistryError::Invalid { path: None, reason } => {
                SignerRegistryError::Invalid { path: Some(file.to_path_buf()), reason }
            }
            other => other,
        }
    }
}

/// Why a checkpoint signature was not accepted, with the verifier status it maps to.
#[derive(Debug, Error)]
pub enum SignatureCheckError {
    /// No usable key: unknown, revoked, or outside its window.
    #[error(transparent)]
    Key(SignerRegistryError),
    /// The key is fine and the signature does not verify with it.
    #[error("signature by {kid:?} does not verify: {error}")]
    Signature {
        /// The kid.
        kid: String,
        /// Why (in the message, so not also a `source()`).
        error: VerifyError,
    },
}

impl SignatureCheckError {
    /// The `audit.verifications` status (docs/audit-chain.md §7): `unknown_signer` when the
    /// registry has no key for this kid at the checkpoint's time (unknown kid, or outside the
    /// key's window: usually a registry to fix, e.g. a key added with a too-late `valid_from`),
    /// `signature_invalid` when trust was withdrawn (revoked), the key is registered for another
    /// purpose (a finance key on a checkpoint, an audit key on a ledger proof), or the signature
    /// does not verify.
    pub fn status(&self) -> &'static str {
        match self {
            SignatureCheckError::Key(
                SignerRegistryError::UnknownKid(_) | SignerRegistryError::OutsideValidity { .. },
            ) => "unknown_signer",
            _ => "signature_invalid",
        }
    }
}

/// One key in the registry. Built with [`SignerEntry::new`]; the registry changes status and
/// windows through [`SignerRegistry::rotate`] and [`SignerRegistry::revoke`].
#[derive(Debug, Clone)]
pub struct SignerEntry {
    kid: String,
    algorithm: String,
    public_key_pem: String,
    valid_from_ms: i64,
    valid_to_ms: Option<i64>,
    status: SignerStatus,
    kind: SignerKind,
    note: Option<String>,
    revoked_at_ms: Option<i64>,
    key: VerifyingKey,
}

impl SignerEntry {
    /// A new active entry for a P-256 public key (SPKI DER or PEM), valid from `valid_from_ms`
    /// with an open end. The key is stored as canonical PEM.
    pub fn new(
        kid: impl Into<String>,
        kind: SignerKind,
        public_key: &[u8],
        valid_from_ms: i64,
    ) -> Result<SignerEntry, SignerRegistryError> {
        let kid = kid.into();
        validate_kid(&kid).map_err(SignerRegistryError::invalid)?;
        let key = crate::signer::verify::parse_public_key(public_key)
            .map_err(|e| SignerRegistryError::invalid(format!("signer {kid:?}: {e}")))?;
        let public_key_pem = crate::signer::verify::pem_of(&key)
            .map_err(|e| SignerRegistryError::invalid(format!("signer {kid:?}: {e}")))?;
        Ok(SignerEntry {
            kid,
            algorithm: ALGORITHM_ECDSA_P256_SHA256.to_string(),
            public_key_pem,
            valid_from_ms,
            valid_to_ms: None,
            status: SignerStatus::Active,
            kind,
            note: None,
            revoked_at_ms: None,
            key,
        })
    }

    /// Attaches a free-text note (who added the key, the ticket, the KMS key ARN).
    pub fn with_note(mut self, note: impl Into<String>) -> SignerEntry {
        self.note = Some(note.into());
        self
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }
    /// The signature algorithm ([`ALGORITHM_ECDSA_P256_SHA256`]).
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }
    /// The public key, SPKI PEM.
    pub fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }
    /// Start of the validity window (inclusive), ms since the epoch.
    pub fn valid_from_ms(&self) -> i64 {
        self.valid_from_ms
    }
    /// End of the validity window (exclusive), if any.
    pub fn valid_to_ms(&self) -> Option<i64> {
        self.valid_to_ms
    }
    /// Active, retired or revoked.
    pub fn status(&self) -> SignerStatus {
        self.status
    }
    /// KMS, local key or proxy.
    pub fn kind(&self) -> SignerKind {
        self.kind
    }
    /// The free-text note.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }
    /// When the key was revoked, for revoked keys.
    pub fn revoked_at_ms(&self) -> Option<i64> {
        self.revoked_at_ms
    }

    /// Whether `at_ms` is inside `[valid_from, valid_to)`.
    pub fn covers(&self, at_ms: i64) -> bool {
        at_ms >= self.valid_from_ms && self.valid_to_ms.is_none_or(|to| at_ms < to)
    }

    /// Verifies a DER ECDSA signature over SHA-256(`message`) with this key (no status or window
    /// check: use [`SignerRegistry::verify`] for checkpoints).
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> Result<(), VerifyError> {
        crate::signer::verify::verify_with(&self.key, message, der_signature)
    }

    fn to_file(&self) -> EntryFile {
        EntryFile {
            kid: self.kid.clone(),
            algorithm: self.algorithm.clone(),
            public_key: self.public_key_pem.clone(),
            valid_from: format_rfc3339_ms(self.valid_from_ms),
            valid_to: self.valid_to_ms.map(format_rfc3339_ms),
            status: self.status,
            kind: self.kind,
            note: self.note.clone(),
            revoked_at: self.revoked_at_ms.map(format_rfc3339_ms),
        }
    }

    fn from_file(file: EntryFile) -> Result<SignerEntry, SignerRegistryError> {
        let kid = file.kid;
        let at = |field: &str, text: &str| {
            parse_rfc3339_ms(text)
                .map_err(|e| SignerRegistryError::invalid(format!("signer {kid:?}: {field}: {e}")))
        };
        if file.algorithm != ALGORITHM_ECDSA_P256_SHA256 {
            return Err(SignerRegistryError::invalid(format!(
                "signer {kid:?}: algorithm {:?} is not supported (expected {ALGORITHM_ECDSA_P256_SHA256})",
                file.algorithm
            )));
        }
        let valid_from_ms = at("valid_from", &file.valid_from)?;
        let valid_to_ms = file.valid_to.as_deref().map(|t| at("valid_to", t)).transpose()?;
        let revoked_at_ms = file.revoked_at.as_deref().map(|t| at("revoked_at", t)).transpose()?;
        let mut entry =
            SignerEntry::new(kid.clone(), file.kind, file.public_key.as_bytes(), valid_from_ms)?;
        entry.valid_to_ms = valid_to_ms;
        entry.status = file.status;
        entry.note = file.note;
        entry.revoked_at_ms = revoked_at_ms;
        entry.check()?;
        Ok(entry)
    }

    /// The rules every entry obeys on load and after every edit.
    fn check(&self) -> Result<(), SignerRegistryError> {
        let kid = &self.kid;
        if let Some(to) = self.valid_to_ms {
            if to <= self.valid_from_ms {
                return Err(SignerRegistryError::invalid(format!(
                    "signer {kid:?}: valid_to {} is not after valid_from {}",
                    format_rfc3339_ms(to),
                    format_rfc3339_ms(self.valid_from_ms)
                )));
            }
        }
        match (self.status, self.revoked_at_ms) {
            (SignerStatus::Revoked, None) => Err(SignerRegistryError::invalid(format!(
                "signer {kid:?}: revoked without revoked_at"
            ))),
            (SignerStatus::Active | SignerStatus::Retired, Some(_)) => {
                Err(SignerRegistryError::invalid(format!(
                    "signer {kid:?}: revoked_at is set but the status is {}",
                    self.status
                )))
            }
            (SignerStatus::Retired, _) if self.valid_to_ms.is_none() => {
                Err(SignerRegistryError::invalid(format!(
                    "signer {kid:?}: a retired key needs valid_to (the end of its use)"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The on-disk form of an entry.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    kid: String,
    algorithm: String,
    public_key: String,
    valid_from: String,
    valid_to: Option<String>,
    status: SignerStatus,
    kind: SignerKind,
    #[serde(default)]
    note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
}

/// The on-disk form of the registry.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    version: u32,
    signers: Vec<EntryFile>,
}

/// The signer registry: every key that ever signed checkpoints, with its window and status.
#[derive(Debug, Clone, Default)]
pub struct SignerRegistry {
    entries: Vec<SignerEntry>,
}

impl SignerRegistry {
    /// An empty registry.
    pub fn new() -> SignerRegistry {
        SignerRegistry::default()
    }

    /// Reads and validates `path`; errors name the file and the offending kid.
    pub fn load(path: &Path) -> Result<SignerRegistry, SignerRegistryError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| SignerRegistryError::Io { path: path.to_path_buf(), error })?;
        SignerRegistry::from_json(&text).map_err(|e| e.in_file(path))
    }

    /// Parses and validates a registry document.
    pub fn from_json(text: &str) -> Result<SignerRegistry, SignerRegistryError> {
        let file: RegistryFile = serde_json::from_str(text)
            .map_err(|e| SignerRegistryError::invalid(format!("not a signer registry: {e}")))?;
        if file.version != REGISTRY_VERSION {
            return Err(SignerRegistryError::invalid(format!(
                "registry version {} is not supported (this build reads version {REGISTRY_VERSION})",
                file.version
            )));
        }
        let entries =
            file.signers.into_iter().map(SignerEntry::from_file).collect::<Result<Vec<_>, _>>()?;
        let registry = SignerRegistry { entries };
        registry.check()?;
        Ok(registry)
    }

    /// SignerRegistry-wide rules: unique kids, at most one active key per kind.
    fn check(&self) -> Result<(), SignerRegistryError> {
        let mut kids = HashSet::new();
        let mut active = std::collections::HashMap::new();
        for entry in &self.entries {
            if !kids.insert(entry.kid.as_str()) {
                return Err(SignerRegistryError::invalid(format!("duplicate kid {:?}", entry.kid)));
            }
            if entry.status == SignerStatus::Active {
                if let Some(other) = active.insert(entry.kind, entry.kid.as_str()) {
                    return Err(SignerRegistryError::invalid(format!(
                        "two active {} keys, {other:?} and {:?}: at most one key per kind is active \
                         (retire one with `evalstream signers rotate`)",
                        entry.kind, entry.kid
                    )));
                }
            }
        }
        Ok(())
    }

    /// The document as pretty JSON with a trailing newline, entries in registry order.
    pub fn to_json(&self) -> String {
        let file = RegistryFile {
            version: REGISTRY_VERSION,
            signers: self.entries.iter().map(SignerEntry::to_file).collect(),
        };
        // Serializing plain strings and enums cannot fail.
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Writes the registry to `path` atomically: a temporary file in the same directory, flushed
    /// to disk, then renamed over `path`, so readers see the old or the new file, never half.
    pub fn save(&self, path: &Path) -> Result<(), SignerRegistryError> {
        let io = |error| SignerRegistryError::Io { path: path.to_path_buf(), error };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "signers.json".into());
        let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(self.to_json().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)?;
            // Make the rename durable; not every platform can open a directory, so best effort.
            if let Ok(dir) = std::fs::File::open(&dir) {
                let _ = dir.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            io(e)
        })
    }

    /// Every entry, in registry order.
    pub fn entries(&self) -> &[SignerEntry] {
        &self.entries
    }

    /// The entry with this kid, whatever its status.
    pub fn get(&self, kid: &str) -> Option<&SignerEntry> {
        self.entries.iter().find(|e| e.kid == kid)
    }

    /// The active key of `kind`, if any.
    pub fn active(&self, kind: SignerKind) -> Option<&SignerEntry> {
        self.entries.iter().find(|e| e.kind == kind && e.status == SignerStatus::Active)
    }

    /// The key that verifies a checkpoint signed by `kid` at `at_ms`: known, an audit key, not
    /// revoked, and valid at that time.
    pub fn key_for(&self, kid: &str, at_ms: i64) -> Result<&SignerEntry, SignerRegistryError> {
        self.key_for_purpose(kid, KeyPurpose::Audit, at_ms)
    }

    /// The key that verifies a signature of `purpose` by `kid` made at `at_ms`: known, of that
    /// purpose, not revoked, and valid at that time.
    pub fn key_for_purpose(
        &self,
        kid: &str,
        purpose: KeyPurpose,
        at_ms: i64,
    ) -> Result<&SignerEntry, SignerRegistryError> {
        let entry =
            self.get(kid).ok_or_else(|| SignerRegistryError::UnknownKid(kid.to_string()))?;
        if entry.kind.purpose() != purpose {
            return Err(SignerRegistryError::WrongPurpose {
                kid: kid.to_string(),
                kind: entry.kind,
                wanted: purpose,
            });
        }
        if entry.status == SignerStatus::Revoked {
            return Err(SignerRegistryError::Revoked {
                kid: kid.to_string(),
                revoked_at_ms: entry.revoked_at_ms.unwrap_or(entry.valid_from_ms),
            });
        }
        if !entry.covers(at_ms) {
            return Err(SignerRegistryError::OutsideValidity {
                kid: kid.to_string(),
                at_ms,
                valid_from_ms: entry.valid_from_ms,
                valid_to_ms: entry.valid_to_ms,
            });
        }
        Ok(entry)
    }

    /// Checks a checkpoint signature: [`key_for`](Self::key_for), then the signature.
    /// `algorithm` is the one the checkpoint names; it must match the key's.
    pub fn verify(
        &self,
        kid: &str,
        algorithm: &str,
        at_ms: i64,
        message: &[u8],
        der_signature: &[u8],
    ) -> Result<&SignerEntry, SignatureCheckError> {
        self.verify_for(KeyPurpose::Audit, kid, algorithm, at_ms, message, der_signature)
    }

    /// Checks a signature of `purpose` (e.g. a Finance ledger proof):
    /// [`key_for_purpose`](Self::key_for_purpose), then the signature.
    pub fn verify_for(
        &self,
        purpose: KeyPurpose,
        kid: &str,
        algorithm: &str,
        at_ms: i64,
        message: &[u8],
        der_signature: &[u8],
    ) -> Result<&SignerEntry, SignatureCheckError> {
        let entry = self.key_for_purpose(kid, purpose, at_ms).map_err(SignatureCheckError::Key)?;
        if algorithm != entry.algorithm {
            return Err(SignatureCheckError::Signature {
                kid: kid.to_string(),
                error: VerifyError::UnsupportedAlgorithm(algorithm.to_string()),
            });
        }
        entry
            .verify(message, der_signature)
            .map_err(|error| SignatureCheckError::Signature { kid: kid.to_string(), error })?;
        Ok(entry)
    }

    fn insert(&mut self, entry: SignerEntry) -> Result<(), SignerRegistryError> {
        entry.check().map_err(|e| SignerRegistryError::Rejected(e.to_string()))?;
        if self.get(&entry.kid).is_some() {
            return Err(SignerRegistryError::Rejected(format!(
                "kid {:?} is already registered",
                entry.kid
            )));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Adds a key. An active key is refused when its kind already has one (use
    /// [`rotate`](Self::rotate)); a retired entry (a historical key) is always accepted.
    pub fn add(&mut self, entry: SignerEntry) -> Result<(), SignerRegistryError> {
        if entry.status == SignerStatus::Active {
            if let Some(current) = self.active(entry.kind) {
                return Err(SignerRegistryError::Rejected(format!(
                    "{} key {:?} is already active; use `evalstream signers rotate` to replace it",
                    entry.kind, current.kid
                )));
            }
        }
        self.insert(entry)
    }

    /// Dual-mode rotation at `at_ms`: the active key of `new`'s kind (if any) becomes retired with
    /// `valid_to = at_ms`, and `new` becomes active from `at_ms`. Returns the retired kid.
    pub fn rotate(
        &mut self,
        new: SignerEntry,
        at_ms: i64,
    ) -> Result<Option<String>, SignerRegistryError> {
        self.rotate_with_overlap(new, at_ms, 0)
    }

    /// [`rotate`](Self::rotate) with both keys valid during `[at − overlap, at + overlap)`: the
    /// old key until `at + overlap`, the new one from `at − overlap`. Why: a checkpoint's time is
    /// the time of its last event, not the wall clock, so around a switch-over the old key can
    /// still sign checkpoints with times after `at` (events in flight) and the new key can sign
    /// ones with times before it (checkpoints that waited as `pending_signature`). The kid in
    /// each checkpoint still selects exactly one key.
    pub fn rotate_with_overlap(
        &mut self,
        new: SignerEntry,
        at_ms: i64,
        overlap_ms: i64,
    ) -> Result<Option<String>, SignerRegistryError> {
        if overlap_ms < 0 {
            return Err(SignerRegistryError::Rejected("the overlap must not be negative".into()));
        }
        let (old_end, new_start) =
            (at_ms.saturating_add(overlap_ms), at_ms.saturating_sub(overlap_ms));
        let mut new = new;
        new.status = SignerStatus::Active;
        new.valid_from_ms = new_start;
        new.valid_to_ms = None;
        new.revoked_at_ms = None;
        if self.get(&new.kid).is_some() {
            return Err(SignerRegistryError::Rejected(format!(
                "kid {:?} is already registered",
                new.kid
            )));
        }
        let old = self
            .entries
            .iter()
            .position(|e| e.kind == new.kind && e.status == SignerStatus::Active);
        if let Some(index) = old {
            let current = &self.entries[index];
            if at_ms <= current.valid_from_ms {
                return Err(SignerRegistryError::Rejected(format!(
                    "rotation time {} is not after the start of {:?} ({})",
                    format_rfc3339_ms(at_ms),
                    current.kid,
                    format_rfc3339_ms(current.valid_from_ms)
                )));
            }
            if let Some(end) = current.valid_to_ms.filter(|&end| end < at_ms) {
                return Err(SignerRegistryError::Rejected(format!(
                    "{:?} already ended at {}; rotating at {} would leave a gap",
                    current.kid,
                    format_rfc3339_ms(end),
                    format_rfc3339_ms(at_ms)
                )));
            }
        }
        let before = old.map(|index| (index, self.entries[index].clone()));
        let retired = old.map(|index| {
            let current = &mut self.entries[index];
            current.status = SignerStatus::Retired;
            current.valid_to_ms = Some(old_end);
            current.kid.clone()
        });
        if let Err(e) = self.insert(new) {
            // Undo the retirement: an edit either happens whole or not at all.
            if let Some((index, entry)) = before {
                self.entries[index] = entry;
            }
            return Err(e);
        }
        Ok(retired)
    }

    /// Revokes `kid` at `at_ms` (the key is compromised): from now on it verifies nothing, for
    /// any checkpoint time. Revoking twice is refused so the recorded time stays the first one.
    pub fn revoke(&mut self, kid: &str, at_ms: i64) -> Result<(), SignerRegistryError> {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.kid == kid)
            .ok_or_else(|| SignerRegistryError::UnknownKid(kid.to_string()))?;
        if entry.status == SignerStatus::Revoked {
            return Err(SignerRegistryError::Rejected(format!(
                "{kid:?} is already revoked (at {})",
                format_rfc3339_ms(entry.revoked_at_ms.unwrap_or_default())
            )));
        }
        entry.status = SignerStatus::Revoked;
        entry.revoked_at_ms = Some(at_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    const T0: i64 = 1_763_458_200_000; // 2025-11-18T09:30:00Z
    const HOUR: i64 = 3_600_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn pem(seed: u8) -> String {
        key(seed).verifying_key().to_public_key_pem(LineEnding::LF).unwrap()
    }

    fn entry(kid: &str, seed: u8, from: i64) -> SignerEntry {
        SignerEntry::new(kid, SignerKind::Kms, pem(seed).as_bytes(), from).unwrap()
    }

    fn sig(seed: u8, message: &[u8]) -> Vec<u8> {
        let s: Signature = key(seed).sign(message);
        s.to_der().as_bytes().to_vec()
    }

    const ALG: &str = ALGORITHM_ECDSA_P256_SHA256;

    #[test]
    fn windows_are_half_open() {
        let mut registry = SignerRegistry::new();
        registry.add(entry("a", 1, T0)).unwrap();
        registry.rotate(entry("b", 2, 0), T0 + HOUR).unwrap();
        assert!(matches!(
            registry.key_for("a", T0 - 1),
            Err(SignerRegistryError::OutsideValidity { .. })
        ));
        assert_eq!(registry.key_for("a", T0).unwrap().kid(), "a");
        assert_eq!(registry.key_for("a", T0 + HOUR - 1).unwrap().kid(), "a");
        assert!(matches!(
            registry.key_for("a", T0 + HOUR),
            Err(SignerRegistryError::OutsideValidity { .. })
        ));
        assert_eq!(registry.key_for("b", T0 + HOUR).unwrap().kid(), "b");
        assert_eq!(registry.key_for("b", i64::MAX).unwrap().kid(), "b");
        assert!(matches!(registry.key_for("nobody", T0), Err(SignerRegistryError::UnknownKid(_))));
    }

    #[test]
    fn rotation_runs_in_dual_mode() {
        let mut registry = SignerRegistry::new();
        registry.add(entry("a", 1, T0)).unwrap();
        let at = T0 + 10 * HOUR;
        assert_eq!(registry.rotate(entry("b", 2, 0), at).unwrap().as_deref(), Some("a"));
        let a = registry.get("a").unwrap();
        assert_eq!((a.status(), a.valid_to_ms()), (SignerStatus::Retired, Some(at)));
        let b = registry.get("b").unwrap();
        assert_eq!(
            (b.status(), b.valid_from_ms(), b.valid_to_ms()),
            (SignerStatus::Active, at, None)
        );
        // Old checkpoints verify with A, new ones with B; each key only inside its window.
        registry.verify("a", ALG, at - 1, b"old", &sig(1, b"old")).unwrap();
        registry.verify("b", ALG, at, b"new", &sig(2, b"new")).unwrap();
        let late_a = registry.verify("a", ALG, at, b"late", &sig(1, b"late")).unwrap_err();
        assert_eq!(late_a.status(), "unknown_signer");
        let wrong_key = registry.verify("b", ALG, at, b"new", &sig(1, b"new")).unwrap_err();
        assert_eq!(wrong_key.status(), "signature_invalid");
        // With A removed from the registry its checkpoints are unknown_signer.
        let mut without_a = SignerRegistry::new();
        without_a.add(registry.get("b").unwrap().clone()).unwrap();
        let err = without_a.verify("a", ALG, at - 1, b"old", &sig(1, b"old")).unwrap_err();
        assert_eq!(err.status(), "unknown_signer");
        // The rotated registry survives a save/load round trip unchanged.
        let again = SignerRegistry::from_json(&registry.to_json()).unwrap();
        assert_eq!(again.to_json(), registry.to_json());
        again.verify("a", ALG, at - 1, b"old", &sig(1, b"old")).unwrap();
    }

    #[test]
    fn rotation_with_overlap_lets_both_keys_verify_around_the_switch() {
        let mut registry = SignerRegistry::new();
        registry.add(entry("a", 1, T0)).unwrap();
        let at = T0 + 10 * HOUR;
        registry.rotate_with_overlap(entry("b", 2, 0), at, HOUR).unwrap();
        assert_eq!(registry.get("a").unwrap().valid_to_ms(), Some(at + HOUR));
        assert_eq!(registry.get("b").unwrap().valid_from_ms(), at - HOUR);
        // A late old-key checkpoint and an early new-key checkpoint both verify.
        registry.verify("a", ALG, at + HOUR - 1, b"late", &sig(1, b"late")).unwrap();
        registry.verify("b", ALG, at - HOUR, b"early", &sig(2, b"early")).unwrap();
        let too_late = registry.verify("a", ALG, at + HOUR, b"x", &sig(1, b"x")).unwrap_err();
        assert_eq!(too_late.status(), "unknown_signer");
        assert!(registry.rotate_with_overlap(entry("c", 3, 0), at + 2 * HOUR, -1).is_err());
    }

    #[test]
    fn rotation_is_refused_when_it_would_break_the_timeline() {
        let mut registry = SignerRegistry::new();
        registry.add(entry("a", 1, T0)).unwrap();
        let err = registry.rotate(entry("b", 2, 0), T0).unwrap_err().to_string();
        assert!(err.contains("not after the start"), "{err}");
        let err = registry.rotate(entry("a", 2, 0), T0 + HOUR).unwrap_err().to_string();
        assert!(err.contains("already registered"), "{err}");
        // Nothing changed.
        assert_eq!(registry.active(SignerKind::Kms).unwrap().kid(), "a");
        assert_eq!(registry.entries().len(), 1);
        // A first key of a kind can be "rotated in" without an old one.
        let mut empty = SignerRegistry::new();
        assert_eq!(empty.rotate(entry("first", 1, 0), T0).unwrap(), None);
    }

    #[test]
    fn only_one_active_key_per_kind() {
        let mut registry = SignerRegistry::new();
        registry.add(entry("kms-a", 1, T0)).unwrap();
        let err = registry.add(entry("kms-b", 2, T0)).unwrap_err().to_string();
        assert!(err.contains("rotate"), "{err}");
        let proxy = SignerEntry::new("proxy-a", SignerKind::Proxy, pem(3).as_bytes(), T0).unwrap();
        registry.add(proxy).unwrap();
        assert_eq!(registry.active(SignerKind::Proxy).unwrap().kid(), "proxy-a");
    }

    #[test]
    fn a_revoked_key_verifies_nothing_at_any_time() {
        let mut registry = SignerRegistry::new();
        registry.add(entry("a", 1, T0)).unwrap();
        registry.rotate(entry("b", 2, 0), T0 + HOUR).unwrap();
        registry.revoke("a", T0 + 2 * HOUR).unwrap();
        // Even a checkpoint from before the revocation, inside A's old window.
        let err = registry.verify("a", ALG, T0 + 1, b"old", &sig(1, b"old")).unwrap_err();
        assert!(matches!(err, SignatureCheckError::Key(SignerRegistryError::Revoked { .. })));
        assert_eq!(err.status(), "signature_invalid");
        assert!(err.to_string().contains("revoked at 2025-11-18T11:30:00Z"), "{err}");
        registry.verify("b", ALG, T0 + HOUR, b"new", &sig(2, b"new")).unwrap();
        assert!(registry.revoke("a", T0 + 3 * HOUR).is_err());
        assert!(matches!(registry.revoke("zzz", T0), Err(SignerRegistryError::UnknownKid(_))));
        let reloaded = SignerRegistry::from_json(&registry.to_json()).unwrap();
        assert_eq!(reloaded.get("a").unwrap().revoked_at_ms(), Some(T0 + 2 * HOUR));
        assert!(reloaded.to_json().contains("\"revoked_at\": \"2025-11-18T11:30:00Z\""));
    }

    #[test]
    fn finance_and_audit_keys_never_verify_each_others_signatures() {
        let mut registry = SignerRegistry::new();
        registry.add(entry("audit", 1, T0)).unwrap();
        let finance =
            SignerEntry::new("fin-a", SignerKind::Finance, pem(2).as_bytes(), T0).unwrap();
        registry.add(finance).unwrap();
        // Each verifies its own purpose.
        registry.verify("audit", ALG, T0, b"cp", &sig(1, b"cp")).unwrap();
        registry
            .verify_for(KeyPurpose::Finance, "fin-a", ALG, T0, b"proof", &sig(2, b"proof"))
            .unwrap();
        // A finance key on a checkpoint, an audit key on a proof: refused, signature_invalid,
        // even though the signatures themselves are mathematically valid.
        let err = registry.verify("fin-a", ALG, T0, b"cp", &sig(2, b"cp")).unwrap_err();
        assert!(matches!(err, SignatureCheckError::Key(SignerRegistryError::WrongPurpose { .. })));
        assert_eq!(err.status(), "signature_invalid");
        assert!(err.to_string().contains("does not verify audit checkpoints"), "{err}");
        let err = registry
            .verify_for(KeyPurpose::Finance, "audit", ALG, T0, b"proof", &sig(1, b"proof"))
            .unwrap_err();
        assert_eq!(err.status(), "signature_invalid");
        assert!(err.to_string().contains("does not verify finance ledger proofs"), "{err}");
        // One active key per kind: finance keys rotate in dual mode like audit keys.
        let second = SignerEntry::new("fin-b", SignerKind::Finance, pem(3).as_bytes(), 0).unwrap();
        assert_eq!(registry.rotate(second, T0 + HOUR).unwrap().as_deref(), Some("fin-a"));
        registry
            .verify_for(KeyPurpose::Finance, "fin-a", ALG, T0 + HOUR - 1, b"p", &sig(2, b"p"))
            .unwrap();
        let late = registry
            .verify_for(KeyPurpose::Finance, "fin-a", ALG, T0 + HOUR, b"p", &sig(2, b"p"))
            .unwrap_err();
        assert_eq!(late.status(), "unknown_signer");
        registry
            .verify_for(KeyPurpose::Finance, "fin-b", ALG, T0 + HOUR, b"p", &sig(3, b"p"))
            .unwrap();
        assert_eq!(registry.active(SignerKind::Kms).unwrap().kid(), "audit", "audit key untouched");
        let reloaded = SignerRegistry::from_json(&registry.to_json()).unwrap();
        assert!(reloaded.to_json().contains("\"kind\": \"finance\""));
    }

    #[test]
    fn a_mismatching_algorithm_is_refused() {
        let mut registry = SignerRegistry::new();
        registry.add(entry("a", 1, T0)).unwrap();
        let err = registry.verify("a", "RSASSA_PSS_SHA_256", T0, b"m", &sig(1, b"m")).unwrap_err();
        assert_eq!(err.status(), "signature_invalid");
    }

    fn doc(signers: &str) -> String {
        format!(r#"{{"version": 1, "signers": [{signers}]}}"#)
    }

    fn one(fields: &str) -> String {
        let pem = serde_json::to_string(&pem(1)).unwrap();
        doc(&format!(
            r#"{{"kid": "a", "algorithm": "ECDSA_P256_SHA256", "public_key": {pem}, "kind": "kms", "note": null, {fields}}}"#
        ))
    }

    #[test]
    fn a_hand_written_file_loads() {
        let text =
            one(r#""valid_from": "2025-11-18T09:30:00Z", "valid_to": null, "status": "active""#);
        let registry = SignerRegistry::from_json(&text).unwrap();
        assert_eq!(registry.get("a").unwrap().valid_from_ms(), T0);
    }

    #[test]
    fn bad_files_are_rejected_with_clear_errors() {
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not a signer registry"),
            (r#"{"version": 2, "signers": []}"#.into(), "version 2 is not supported"),
            (r#"{"version": 1, "signers": [], "extra": 1}"#.into(), "unknown field"),
            (
                one(r#""valid_from": "yesterday", "valid_to": null, "status": "active""#),
                "valid_from",
            ),
            (
                one(
                    r#""valid_from": "2025-11-18T09:30:00Z", "valid_to": "2025-11-18T09:30:00Z", "status": "retired""#,
                ),
                "is not after valid_from",
            ),
            (
                one(
                    r#""valid_from": "2025-11-18T09:30:00Z", "valid_to": null, "status": "retired""#,
                ),
                "needs valid_to",
            ),
            (
                one(
                    r#""valid_from": "2025-11-18T09:30:00Z", "valid_to": null, "status": "revoked""#,
                ),
                "revoked_at",
            ),
            (
                one(
                    r#""valid_from": "2025-11-18T09:30:00Z", "valid_to": null, "status": "paused""#,
                ),
                "unknown variant",
            ),
            (
                one(
                    r#""valid_from": "2025-11-18T09:30:00Z", "valid_to": null, "status": "active", "colour": 1"#,
                ),
                "unknown field",
            ),
            (
                doc(
                    r#"{"kid": "a", "algorithm": "ECDSA_P256_SHA256", "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "kind": "kms", "valid_from": "2025-11-18T09:30:00Z", "valid_to": null, "status": "active"}"#,
                ),
                "signer \"a\": unusable public key",
            ),
            (
                one(
                    r#""valid_from": "2025-11-18T09:30:00Z", "valid_to": null, "status": "active", "algorithm": "x""#,
                ),
                "duplicate field",
            ),
        ];
        for (text, expected) in cases {
            let err = SignerRegistry::from_json(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
        let e = |kid: &str, seed: u8, status: &str| {
            let pem = serde_json::to_string(&pem(seed)).unwrap();
            format!(
                r#"{{"kid": "{kid}", "algorithm": "ECDSA_P256_SHA256", "public_key": {pem}, "kind": "kms", "valid_from": "2025-11-18T09:30:00Z", "valid_to": "2025-11-19T09:30:00Z", "status": "{status}"}}"#
            )
        };
        let err = SignerRegistry::from_json(&doc(&format!(
            "{},{}",
            e("a", 1, "retired"),
            e("a", 2, "retired")
        )))
        .unwrap_err()
        .to_string();
        assert!(err.contains("duplicate kid \"a\""), "{err}");
        let err = SignerRegistry::from_json(&doc(&format!(
            "{},{}",
            e("a", 1, "active"),
            e("b", 2, "active")
        )))
        .unwrap_err()
        .to_string();
        assert!(err.contains("two active kms keys"), "{err}");
    }

    #[test]
    fn save_is_atomic_and_load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("evalstream-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("signers.json");
        let mut registry = SignerRegistry::new();
        registry.add(entry("a", 1, T0).with_note("ticket SEC-1")).unwrap();
        registry.save(&path).unwrap();
        let leftovers: Vec<_> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("signers.json")]);
        let loaded = SignerRegistry::load(&path).unwrap();
        assert_eq!(loaded.get("a").unwrap().note(), Some("ticket SEC-1"));
        std::fs::write(&path, "{").unwrap();
        let err = SignerRegistry::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        let err = SignerRegistry::load(&dir.join("missing.json")).unwrap_err().to_string();
        assert!(err.contains("missing.json"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
