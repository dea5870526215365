//! Signers for audit-chain checkpoints: AWS KMS, a local key file, and the emergency proxy.
//!
//! ```text
//!   SignerConfig::from_env()            REQUIRE_KMS, AUDIT_SIGNING_KMS_KEY_ID, AUDIT_SIGNING_KEY_FILE,
//!        │                              SIGNING_PROXY_URL, AUDIT_SIGNER_KID, ...
//!        ▼
//!   build_signer(&cfg) ── policy ──►  SignerChoice { signer: Arc<dyn Signer>, emergency, detail }
//!        │                              │
//!        │ REQUIRE_KMS=true and the     │ sign(checkpoint bytes) on the processor's own OS thread
//!        │ KMS key is not usable:       ▼
//!        ▼ refuse to start           DER ECDSA P-256 signature over SHA-256(message), already
//!   SignerSetupError                 verified against the signer's public key
//! ```
//!
//! Why one small synchronous trait: the audit-chain processor signs a checkpoint per commit (not
//! per event) on the dedicated thread that runs its exactly-once loop, so a blocking call is the
//! simplest correct thing; the KMS signer owns a private tokio runtime for the SDK and the proxy
//! signer uses reqwest's blocking client, and both move the call to a helper thread when called
//! from inside a tokio runtime, so they are safe from any context.
//!
//! Why every signature is verified before it is returned: a signature that does not verify
//! would poison the chain silently (the verifier would report `signature_invalid` much later).
//! Checking it against the signer's public key costs one P-256 verification per checkpoint and
//! turns a re-pointed KMS alias or a misbehaving proxy into an immediate, permanent
//! [`SignError`].
//!
//! Why failures are classified: a transient failure ([`SignError::is_transient`]: unreachable,
//! timed out, throttled) leaves checkpoints `pending_signature` to be signed when the signer is
//! back, while a permanent one (key disabled, access denied, bad response) needs an operator;
//! both are counted as the runbook's `SIGNING_FAILURE`. The contract and the policy are written
//! up for operators in `docs/signing.md`.

mod blocking;
pub mod config;
pub mod kms;
mod local;
pub mod proxy;
pub(crate) mod verify;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use config::{build_signer, SignerChoice, SignerConfig, SignerSetupError};
pub use kms::{KmsConfig, KmsSigner};
pub use local::LocalKeySigner;
pub use proxy::{ProxyConfig, ProxyKey, ProxySigner};
pub use verify::{public_key_pem, public_key_spki_der, verify_signature, VerifyError};

/// The one signature algorithm we produce and accept: ECDSA on NIST P-256 over SHA-256 of the
/// message, DER-encoded (what KMS returns for `ECC_NIST_P256` keys with `ECDSA_SHA_256`).
/// The name is the registry's and the checkpoint's `algorithm` field.
pub const ALGORITHM_ECDSA_P256_SHA256: &str = "ECDSA_P256_SHA256";

/// Where a signature comes from. Recorded in the signer registry so that "one active key per
/// kind" can hold while the emergency proxy's key stays registered next to the KMS key.
///
/// `finance` is the odd one out: it is not a signer of ours but Finance's ledger-proof key, kept
/// in the same registry so that it gets the same validity windows, dual-mode rotation and
/// revocation as audit keys. Its [`KeyPurpose`] differs, and the registry never lets a key of one
/// purpose verify a signature of the other (see [`crate::registry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignerKind {
    /// An AWS KMS asymmetric key (production).
    Kms,
    /// A PKCS#8 private key file (development only).
    Local,
    /// The runbook's emergency signing proxy (`SIGNING_PROXY_URL`).
    Proxy,
    /// Finance's key for ledger proofs of settlements (`finance.settlements`); never an audit
    /// checkpoint signer.
    Finance,
}

/// What a registered key is trusted to verify. Derived from its [`SignerKind`]: the three audit
/// signer kinds verify checkpoints, `finance` verifies ledger proofs, and nothing verifies both,
/// so a leaked or misused key of one side cannot vouch for the other side's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// Audit-chain checkpoints.
    Audit,
    /// Finance ledger proofs.
    Finance,
}

impl KeyPurpose {
    /// What the purpose verifies, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            KeyPurpose::Audit => "audit checkpoints",
            KeyPurpose::Finance => "finance ledger proofs",
        }
    }
}

impl SignerKind {
    /// The lowercase name used in `signers.json`, kids and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            SignerKind::Kms => "kms",
            SignerKind::Local => "local",
            SignerKind::Proxy => "proxy",
            SignerKind::Finance => "finance",
        }
    }

    /// What keys of this kind verify.
    pub fn purpose(self) -> KeyPurpose {
        match self {
            SignerKind::Kms | SignerKind::Local | SignerKind::Proxy => KeyPurpose::Audit,
            SignerKind::Finance => KeyPurpose::Finance,
        }
    }
}

impl fmt::Display for SignerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"kms"`, `"local"`, `"proxy"` or `"finance"` was expected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown signer kind {0:?}: expected kms, local, proxy or finance")]
pub struct UnknownSignerKind(pub String);

impl FromStr for SignerKind {
    type Err = UnknownSignerKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kms" => Ok(SignerKind::Kms),
            "local" => Ok(SignerKind::Local),
            "proxy" => Ok(SignerKind::Proxy),
            "finance" => Ok(SignerKind::Finance),
            other => Err(UnknownSignerKind(other.to_string())),
        }
    }
}

/// Signs checkpoint bytes. Implementations are synchronous and may block (network calls): call
/// them from a dedicated OS thread, never from an async task. They are safe to call from inside a
/// tokio runtime (they hop to a helper thread), but that blocks the calling worker meanwhile.
pub trait Signer: Send + Sync + fmt::Debug {
    /// The key id written next to every signature and looked up in `signers.json`.
    fn kid(&self) -> &str;

    /// The signature algorithm, [`ALGORITHM_ECDSA_P256_SHA256`] for every signer we build.
    fn algorithm(&self) -> &str {
        ALGORITHM_ECDSA_P256_SHA256
    }

    /// Which kind of signer this is (KMS, local key, emergency proxy).
    fn kind(&self) -> SignerKind;

    /// A DER-encoded ECDSA P-256 signature over SHA-256(`message`). Remote signers (KMS, proxy)
    /// verify it against the key's public key before returning it; a local key signs correctly
    /// by construction.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;

    /// Whether the signer can sign now (KMS: DescribeKey + GetPublicKey; proxy: its key
    /// endpoint), for start-up and `/ready`. Signers that need nothing external are always ready.
    fn check(&self) -> Result<(), SignError> {
        Ok(())
    }
}

/// Why a signature could not be made. [`SignError::is_transient`] decides between "keep the
/// checkpoint `pending_signature` and retry with backoff" and "an operator must act".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SignError {
    /// The signer could not be reached or did not answer in time (transient).
    #[error("{context}: unreachable: {reason}")]
    Unavailable {
        /// What was attempted, e.g. `KMS Sign failed for key alias/audit`.
        context: String,
        /// The underlying error, for the logs.
        reason: String,
    },
    /// The signer refused because of rate limits (transient).
    #[error("{context}: throttled: {reason}")]
    Throttled {
        /// What was attempted.
        context: String,
        /// The underlying error, for the logs.
        reason: String,
    },
    /// The signer answered and refused: key disabled or missing, access denied, bad request
    /// (permanent until an operator acts).
    #[error("{context}: refused: {reason}")]
    Rejected {
        /// What was attempted.
        context: String,
        /// The signer's answer.
        reason: String,
    },
    /// The signer answered with something unusable: a malformed response, a signature that does
    /// not verify against its public key, a different kid (permanent).
    #[error("{context}: bad response: {reason}")]
    BadResponse {
        /// What was attempted.
        context: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The message is larger than the signer accepts (KMS: 4096 bytes for RAW messages).
    #[error("{context}: message of {len} bytes exceeds the signer's limit of {max} bytes")]
    MessageTooLarge {
        /// What was attempted.
        context: String,
        /// The message length.
        len: usize,
        /// The signer's limit.
        max: usize,
    },
}

impl SignError {
    /// True for failures that go away by themselves (outage, timeout, throttling): the caller
    /// keeps its checkpoints `pending_signature` and retries with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(self, SignError::Unavailable { .. } | SignError::Throttled { .. })
    }

    /// A fixed, low-cardinality label for metrics and logs (`SIGNING_FAILURE{class=...}`).
    pub fn class(&self) -> &'static str {
        match self {
            SignError::Unavailable { .. } => "unavailable",
            SignError::Throttled { .. } => "throttled",
            SignError::Rejected { .. } => "rejected",
            SignError::BadResponse { .. } => "bad_response",
            SignError::MessageTooLarge { .. } => "message_too_large",
        }
    }
}

/// The default kid of a key: `<kind>:` and the first 16 hex digits of SHA-256 over the
/// public key's SPKI DER. Stable for the key's life, the same on every machine, and computable
/// by anyone with the public key (`openssl pkey -pubin -outform DER | sha256sum`).
pub fn derive_kid(kind: SignerKind, spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    format!("{kind}:{}", &hex::encode(digest)[..16])
}

/// Checks a kid given by an operator: non-empty, at most 128 characters, printable ASCII
/// without spaces (it goes into logs, headers, file names and JSON unchanged).
pub fn validate_kid(kid: &str) -> Result<(), String> {
    if kid.is_empty() {
        return Err("a kid must not be empty".into());
    }
    if kid.len() > 128 {
        return Err(format!("kid {kid:?} is longer than 128 characters"));
    }
    if !kid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("kid {kid:?} must be printable ASCII without spaces"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [SignerKind::Kms, SignerKind::Local, SignerKind::Proxy, SignerKind::Finance] {
            assert_eq!(kind.as_str().parse::<SignerKind>(), Ok(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
        assert!("KMS".parse::<SignerKind>().is_err());
        assert_eq!(SignerKind::Finance.purpose(), KeyPurpose::Finance);
        assert_eq!(SignerKind::Proxy.purpose(), KeyPurpose::Audit);
    }

    #[test]
    fn derived_kid_is_kind_and_16_hex_digits_of_the_spki_hash() {
        // printf 'abc' | sha256sum → ba7816bf8f01cfea414140de5dae2223...
        assert_eq!(derive_kid(SignerKind::Kms, b"abc"), "kms:ba7816bf8f01cfea");
        assert_eq!(derive_kid(SignerKind::Local, b"abc"), "local:ba7816bf8f01cfea");
    }

    #[test]
    fn kids_are_validated() {
        assert!(validate_kid("kms:2024-rotation/a").is_ok());
        assert!(validate_kid("").is_err());
        assert!(validate_kid("has space").is_err());
        assert!(validate_kid("tab\t").is_err());
        assert!(validate_kid(&"k".repeat(129)).is_err());
    }

    #[test]
    fn transient_failures_are_the_outage_kinds() {
        let e = |f: fn(String, String) -> SignError| f("c".into(), "r".into());
        assert!(e(|context, reason| SignError::Unavailable { context, reason }).is_transient());
        assert!(e(|context, reason| SignError::Throttled { context, reason }).is_transient());
        assert!(!e(|context, reason| SignError::Rejected { context, reason }).is_transient());
        assert!(!e(|context, reason| SignError::BadResponse { context, reason }).is_transient());
        let big = SignError::MessageTooLarge { context: "c".into(), len: 5000, max: 4096 };
        assert!(!big.is_transient());
        assert_eq!(big.class(), "message_too_large");
    }
}
