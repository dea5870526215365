//! Signature verification and public-key encodings, shared by the signers (which verify what
//! they return), the registry and the verifier.
//!
//! Public keys travel as SubjectPublicKeyInfo (SPKI): DER from KMS `GetPublicKey`, PEM
//! (`-----BEGIN PUBLIC KEY-----`) in `signers.json`, so `openssl` can check any signature:
//! `openssl dgst -sha256 -verify key.pem -signature sig.der message`.

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use thiserror::Error;

use super::ALGORITHM_ECDSA_P256_SHA256;

/// Why a signature did not verify. Every variant means "do not trust this signature"; they differ
/// in what an operator should look at.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The algorithm is not [`ALGORITHM_ECDSA_P256_SHA256`].
    #[error(
        "unsupported signature algorithm {0:?} (only {ALGORITHM_ECDSA_P256_SHA256} is accepted)"
    )]
    UnsupportedAlgorithm(String),
    /// The public key is not a P-256 SPKI key in DER or PEM.
    #[error("unusable public key: {0}")]
    PublicKey(String),
    /// The signature bytes are not a DER-encoded ECDSA signature.
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// Well-formed, but the signature does not match the message and key.
    #[error("signature does not match the message and public key")]
    Mismatch,
}

/// Parses a P-256 public key from SPKI DER or PEM (detected by the PEM header).
pub(crate) fn parse_public_key(public_key: &[u8]) -> Result<VerifyingKey, VerifyError> {
    let trimmed = trim_ascii_start(public_key);
    if trimmed.starts_with(b"-----BEGIN") {
        let pem = std::str::from_utf8(trimmed)
            .map_err(|_| VerifyError::PublicKey("PEM is not valid UTF-8".into()))?;
        if pem.contains("PRIVATE KEY-----") {
            return Err(VerifyError::PublicKey(
                "this is a private key; give its public key (`openssl pkey -in key.pem -pubout`)"
                    .into(),
            ));
        }
        if pem.contains("-----BEGIN EC PUBLIC KEY") || pem.contains("-----BEGIN CERTIFICATE") {
            return Err(VerifyError::PublicKey(
                "expected a SubjectPublicKeyInfo PEM (-----BEGIN PUBLIC KEY-----); \
                 convert with `openssl pkey -pubout`"
                    .into(),
            ));
        }
        VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| VerifyError::PublicKey(format!("not a P-256 public key PEM: {e}")))
    } else {
        VerifyingKey::from_public_key_der(public_key)
            .map_err(|e| VerifyError::PublicKey(format!("not a P-256 SPKI DER key: {e}")))
    }
}

fn trim_ascii_start(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    &bytes[start..]
}

/// The SPKI DER of a P-256 public key given as DER or PEM: the bytes a kid is derived from.
pub fn public_key_spki_der(public_key: &[u8]) -> Result<Vec<u8>, VerifyError> {
    spki_der_of(&parse_public_key(public_key)?)
}

/// The canonical PEM (`-----BEGIN PUBLIC KEY-----`, LF line endings) of a P-256 public key
/// given as DER or PEM: the form stored in `signers.json`.
pub fn public_key_pem(public_key: &[u8]) -> Result<String, VerifyError> {
    pem_of(&parse_public_key(public_key)?)
}

pub(crate) fn spki_der_of(key: &VerifyingKey) -> Result<Vec<u8>, VerifyError> {
    key.to_public_key_der()
        .map(|doc| doc.as_bytes().to_vec())
        .map_err(|e| VerifyError::PublicKey(format!("encoding SPKI DER: {e}")))
}

pub(crate) fn pem_of(key: &VerifyingKey) -> Result<String, VerifyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| VerifyError::PublicKey(format!("encoding SPKI PEM: {e}")))
}

/// Verifies a DER-encoded ECDSA signature over SHA-256(`message`) with a parsed key.
pub(crate) fn verify_with(
    key: &VerifyingKey,
    message: &[u8],
    der_signature: &[u8],
) -> Result<(), VerifyError> {
    let signature = Signature::from_der(der_signature)
        .map_err(|e| VerifyError::MalformedSignature(e.to_string()))?;
    key.verify(message, &signature).map_err(|_| VerifyError::Mismatch)
}

/// Verifies `der_signature` over `message` with `public_key` (SPKI DER or PEM) under
/// `algorithm`, which must be [`ALGORITHM_ECDSA_P256_SHA256`]. Both high-S and low-S forms of
/// a signature verify, as KMS may return either.
pub fn verify_signature(
    algorithm: &str,
    public_key: &[u8],
    message: &[u8],
    der_signature: &[u8],
) -> Result<(), VerifyError> {
    if algorithm != ALGORITHM_ECDSA_P256_SHA256 {
        return Err(VerifyError::UnsupportedAlgorithm(algorithm.to_string()));
    }
    verify_with(&parse_public_key(public_key)?, message, der_signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::SigningKey;

    /// A fixed key: tests must not depend on randomness to be reproducible.
    fn key() -> SigningKey {
        SigningKey::from_slice(&[7u8; 32]).unwrap()
    }

    fn sign(message: &[u8]) -> Vec<u8> {
        let sig: Signature = key().sign(message);
        sig.to_der().as_bytes().to_vec()
    }

    #[test]
    fn verifies_with_der_and_pem_keys() {
        let der = spki_der_of(key().verifying_key()).unwrap();
        let pem = public_key_pem(&der).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let sig = sign(b"checkpoint");
        verify_signature(ALGORITHM_ECDSA_P256_SHA256, &der, b"checkpoint", &sig).unwrap();
        verify_signature(ALGORITHM_ECDSA_P256_SHA256, pem.as_bytes(), b"checkpoint", &sig).unwrap();
        assert_eq!(public_key_spki_der(pem.as_bytes()).unwrap(), der);
    }

    #[test]
    fn rejects_other_messages_keys_algorithms_and_garbage() {
        let der = spki_der_of(key().verifying_key()).unwrap();
        let sig = sign(b"checkpoint");
        let alg = ALGORITHM_ECDSA_P256_SHA256;
        assert_eq!(verify_signature(alg, &der, b"checkpoinT", &sig), Err(VerifyError::Mismatch));
        let other = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let other_der = spki_der_of(other.verifying_key()).unwrap();
        assert_eq!(
            verify_signature(alg, &other_der, b"checkpoint", &sig),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify_signature("ECDSA_P384_SHA384", &der, b"checkpoint", &sig),
            Err(VerifyError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            verify_signature(alg, &der, b"checkpoint", &sig[..sig.len() - 1]),
            Err(VerifyError::MalformedSignature(_))
        ));
        assert!(matches!(
            verify_signature(alg, b"not a key", b"checkpoint", &sig),
            Err(VerifyError::PublicKey(_))
        ));
        assert!(matches!(
            verify_signature(
                alg,
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                b"m",
                &sig
            ),
            Err(VerifyError::PublicKey(_))
        ));
    }

    #[test]
    fn a_high_s_signature_still_verifies() {
        // KMS does not normalize S; the registry must accept what KMS produced.
        let sig: Signature = key().sign(b"checkpoint");
        let (r, s) = (sig.r(), sig.s());
        let high = Signature::from_scalars(r.to_bytes(), (-*s.as_ref()).to_bytes()).unwrap();
        let der = spki_der_of(key().verifying_key()).unwrap();
        let flipped = high.to_der().as_bytes().to_vec();
        verify_signature(ALGORITHM_ECDSA_P256_SHA256, &der, b"checkpoint", &flipped).unwrap();
    }
}
