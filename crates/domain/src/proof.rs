//! Finance ledger proofs: what Finance signs for a settlement, how it is verified, and the
//! development stand-in that signs settlements for tests and the demo.
//!
//! ```text
//!  FinanceSettlement { ledger_entry_id, allocation_id, amount_minor, currency, settled_at,
//!                      proof, kid, signature }
//!        │
//!        ├─ proof bytes ── LedgerProof::parse ── not RFC 8785 JSON of the format below ─► malformed
//!        ├─ signature over the proof bytes, key `kid` of kind finance in signers.json, valid at
//!        │  the proof's settled_at ── unknown kid / outside window ─► bad_proof (unknown_signer)
//!        │                          └─ revoked, audit key, no match ─► bad_proof (signature_invalid)
//!        └─ every signed field equals the record's field ── differs ─► proof_mismatch
//! ```
//!
//! **The format.** `proof` is the RFC 8785 canonical JSON of
//! `{"format": "evalstream.finance.ledger_proof.v1", "ledger_entry_id", "allocation_id",
//! "amount_minor", "currency", "settled_at"}` (integers; `settled_at` in ms since the epoch), and
//! nothing else. The signature is DER ECDSA P-256 over SHA-256 of exactly those bytes (the same
//! algorithm as audit checkpoints, so `openssl dgst -sha256 -verify` checks it too). Why these
//! choices:
//!
//! - the signed content binds ledger entry, allocation, amount and currency (and the booking
//!   time that selects the key), so a valid proof cannot be replayed for another allocation or
//!   amount;
//! - the `format` member separates proofs from every other signed byte string (a checkpoint body
//!   can never parse as a proof);
//! - requiring the canonical form gives each proof exactly one byte representation, so a proof
//!   can be compared, stored and re-verified byte for byte, and any JSON library can produce it
//!   (RFC 8785 has implementations in most languages);
//! - the key's window is checked at the *signed* `settled_at`, not the record's unsigned one.

use evalstream_audit::canonical::canonicalize_str;
use evalstream_audit::signer::{
    KeyPurpose, LocalKeySigner, SignError, Signer, ALGORITHM_ECDSA_P256_SHA256,
};
use evalstream_audit::trust::{SignatureCheckError, SignerRegistry};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::records::FinanceSettlement;
use crate::reject::Rejection;

/// The `format` member of every ledger proof of this version.
pub const PROOF_FORMAT: &str = "evalstream.finance.ledger_proof.v1";

/// The signed content of a ledger proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerProof {
    /// Always [`PROOF_FORMAT`].
    pub format: String,
    /// The ledger entry.
    pub ledger_entry_id: String,
    /// The allocation paid for.
    pub allocation_id: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Booking time, ms since the epoch; selects the Finance key by its validity window.
    pub settled_at: i64,
}

impl LedgerProof {
    /// The proof of a settlement with these fields.
    pub fn new(
        ledger_entry_id: &str,
        allocation_id: &str,
        amount_minor: i64,
        currency: &str,
        settled_at: i64,
    ) -> Self {
        LedgerProof {
            format: PROOF_FORMAT.to_string(),
            ledger_entry_id: ledger_entry_id.to_string(),
            allocation_id: allocation_id.to_string(),
            amount_minor,
            currency: currency.to_string(),
            settled_at,
        }
    }

    /// The bytes Finance signs: RFC 8785 canonical JSON.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ProofError> {
        let text = serde_json::to_string(self).map_err(|e| ProofError::Malformed(e.to_string()))?;
        canonicalize_str(&text).map_err(|e| ProofError::Malformed(e.to_string()))
    }

    /// Parses proof bytes: a JSON object of exactly this format's members, in canonical form.
    pub fn parse(bytes: &[u8]) -> Result<LedgerProof, ProofError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ProofError::Malformed("proof is not UTF-8 text".into()))?;
        let canonical = canonicalize_str(text)
            .map_err(|e| ProofError::Malformed(format!("proof is not JSON: {e}")))?;
        let proof: LedgerProof = serde_json::from_str(text)
            .map_err(|e| ProofError::Malformed(format!("proof is not a ledger proof: {e}")))?;
        if proof.format != PROOF_FORMAT {
            return Err(ProofError::Malformed(format!(
                "proof format {:?} is not {PROOF_FORMAT:?}",
                proof.format
            )));
        }
        if canonical != bytes {
            return Err(ProofError::Malformed(
                "proof is not in RFC 8785 canonical form (whitespace, member order or number \
                 format differ)"
                    .into(),
            ));
        }
        Ok(proof)
    }
}

/// Why a settlement's proof was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProofError {
    /// Not a ledger proof of this format.
    #[error("{0}")]
    Malformed(String),
    /// The signature does not verify; `status` is `unknown_signer` or `signature_invalid`.
    #[error("{status}: {detail}")]
    Signature {
        /// `unknown_signer` (no finance key for the kid at the proof's time) or
        /// `signature_invalid` (revoked, not a finance key, or no match).
        status: &'static str,
        /// The registry's explanation.
        detail: String,
    },
    /// A signed field differs from the settlement record's.
    #[error("the proof signs {field} = {signed}, the settlement record says {record}")]
    Mismatch {
        /// The field.
        field: &'static str,
        /// Its signed value.
        signed: String,
        /// The record's value.
        record: String,
    },
}

impl ProofError {
    /// The `allocator_settlement_failures_total` reason.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            ProofError::Malformed(_) => "malformed",
            ProofError::Signature { status, .. } => status,
            ProofError::Mismatch { .. } => "proof_mismatch",
        }
    }

    /// The DLQ rejection (`malformed`, `bad_proof` or `proof_mismatch`).
    pub fn rejection(&self) -> Rejection {
        let code = match self {
            ProofError::Malformed(_) => "malformed",
            ProofError::Signature { .. } => "bad_proof",
            ProofError::Mismatch { .. } => "proof_mismatch",
        };
        Rejection::new(code, self.to_string())
    }
}

/// Verifies a settlement's proof against the finance keys of `registry` (see the module doc);
/// returns the signed content.
pub fn verify_settlement(
    s: &FinanceSettlement,
    registry: &SignerRegistry,
) -> Result<LedgerProof, ProofError> {
    let proof = LedgerProof::parse(&s.proof)?;
    registry
        .verify_for(
            KeyPurpose::Finance,
            &s.kid,
            ALGORITHM_ECDSA_P256_SHA256,
            proof.settled_at,
            &s.proof,
            &s.signature,
        )
        .map_err(|e: SignatureCheckError| ProofError::Signature {
            status: e.status(),
            detail: e.to_string(),
        })?;
    let mismatch =
        |field, signed: String, record: String| Err(ProofError::Mismatch { field, signed, record });
    if proof.ledger_entry_id != s.ledger_entry_id {
        return mismatch("ledger_entry_id", proof.ledger_entry_id, s.ledger_entry_id.clone());
    }
    if proof.allocation_id != s.allocation_id {
        return mismatch("allocation_id", proof.allocation_id, s.allocation_id.clone());
    }
    if proof.amount_minor != s.amount_minor {
        return mismatch(
            "amount_minor",
            proof.amount_minor.to_string(),
            s.amount_minor.to_string(),
        );
    }
    if proof.currency != s.currency {
        return mismatch("currency", proof.currency, s.currency.clone());
    }
    if proof.settled_at != s.settled_at {
        return mismatch("settled_at", proof.settled_at.to_string(), s.settled_at.to_string());
    }
    Ok(proof)
}

/// **Development stand-in for Finance** (tests and the demo; never used by the processors): a
/// settlement for `proof`'s fields, signed with a local finance key as Finance would.
pub fn sign_settlement(
    signer: &LocalKeySigner,
    kid: &str,
    proof: &LedgerProof,
) -> Result<FinanceSettlement, SignError> {
    let bytes = proof.to_bytes().map_err(|e| SignError::Rejected {
        context: "ledger proof".into(),
        reason: e.to_string(),
    })?;
    let signature = signer.sign(&bytes)?;
    Ok(FinanceSettlement {
        ledger_entry_id: proof.ledger_entry_id.clone(),
        allocation_id: proof.allocation_id.clone(),
        amount_minor: proof.amount_minor,
        currency: proof.currency.clone(),
        proof: bytes,
        kid: kid.to_string(),
        signature,
        settled_at: proof.settled_at,
    })
}

#[cfg(test)]
mod tests {
    use evalstream_audit::signer::SignerKind;
    use evalstream_audit::trust::SignerEntry;

    use super::*;

    const T0: i64 = 1_763_458_200_000;

    fn key() -> LocalKeySigner {
        LocalKeySigner::random().unwrap()
    }

    fn registry(finance: &LocalKeySigner, audit: &LocalKeySigner) -> SignerRegistry {
        let mut r = SignerRegistry::new();
        r.add(
            SignerEntry::new("fin-1", SignerKind::Finance, finance.public_key_spki_der(), T0)
                .unwrap(),
        )
        .unwrap();
        r.add(
            SignerEntry::new("audit-1", SignerKind::Local, audit.public_key_spki_der(), T0)
                .unwrap(),
        )
        .unwrap();
        r
    }

    fn proof() -> LedgerProof {
        LedgerProof::new("le-1", "s1:allocation", 12_000, "EUR", T0 + 5)
    }

    #[test]
    fn the_proof_format_is_canonical_json_with_a_format_member() {
        let bytes = proof().to_bytes().unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"allocation_id":"s1:allocation","amount_minor":12000,"currency":"EUR","format":"evalstream.finance.ledger_proof.v1","ledger_entry_id":"le-1","settled_at":1763458200005}"#
        );
        assert_eq!(LedgerProof::parse(&bytes).unwrap(), proof());
        let spaced = br#"{"allocation_id": "s1:allocation","amount_minor":12000,"currency":"EUR","format":"evalstream.finance.ledger_proof.v1","ledger_entry_id":"le-1","settled_at":1763458200005}"#;
        assert!(LedgerProof::parse(spaced).unwrap_err().to_string().contains("canonical"));
        let other = br#"{"format":"x"}"#;
        assert!(matches!(LedgerProof::parse(other), Err(ProofError::Malformed(_))));
        let extra = br#"{"allocation_id":"a","amount_minor":1,"currency":"EUR","extra":1,"format":"evalstream.finance.ledger_proof.v1","ledger_entry_id":"l","settled_at":1}"#;
        assert!(LedgerProof::parse(extra).unwrap_err().to_string().contains("unknown field"));
        assert!(matches!(LedgerProof::parse(b"\xff"), Err(ProofError::Malformed(_))));
    }

    #[test]
    fn a_signed_settlement_verifies_and_every_tampering_is_named() {
        let (finance, audit) = (key(), key());
        let registry = registry(&finance, &audit);
        let good = sign_settlement(&finance, "fin-1", &proof()).unwrap();
        assert_eq!(verify_settlement(&good, &registry).unwrap(), proof());

        // The record says something else than what was signed.
        let mut more = good.clone();
        more.amount_minor += 1;
        let e = verify_settlement(&more, &registry).unwrap_err();
        assert_eq!((e.metric_reason(), e.rejection().code), ("proof_mismatch", "proof_mismatch"));
        assert!(e.to_string().contains("amount_minor = 12000"), "{e}");
        let mut other = good.clone();
        other.allocation_id = "s2:allocation".into();
        assert_eq!(
            verify_settlement(&other, &registry).unwrap_err().metric_reason(),
            "proof_mismatch"
        );

        // The proof was changed after signing.
        let mut forged = good.clone();
        forged.proof =
            LedgerProof::new("le-1", "s1:allocation", 1, "EUR", T0 + 5).to_bytes().unwrap();
        forged.amount_minor = 1;
        let e = verify_settlement(&forged, &registry).unwrap_err();
        assert_eq!((e.metric_reason(), e.rejection().code), ("signature_invalid", "bad_proof"));

        // Unknown kid, an audit key, a key outside its window.
        let mut unknown = good.clone();
        unknown.kid = "fin-9".into();
        assert_eq!(
            verify_settlement(&unknown, &registry).unwrap_err().metric_reason(),
            "unknown_signer"
        );
        let by_audit = sign_settlement(&audit, "audit-1", &proof()).unwrap();
        let e = verify_settlement(&by_audit, &registry).unwrap_err();
        assert_eq!(e.metric_reason(), "signature_invalid");
        assert!(e.to_string().contains("does not verify finance ledger proofs"), "{e}");
        let early =
            sign_settlement(&finance, "fin-1", &LedgerProof::new("le-0", "a", 1, "EUR", T0 - 1))
                .unwrap();
        assert_eq!(
            verify_settlement(&early, &registry).unwrap_err().metric_reason(),
            "unknown_signer"
        );

        // Garbage proof bytes.
        let mut garbage = good;
        garbage.proof = b"not json".to_vec();
        let e = verify_settlement(&garbage, &registry).unwrap_err();
        assert_eq!((e.metric_reason(), e.rejection().code), ("malformed", "malformed"));
    }
}
