//! A P-256 private key in a PKCS#8 PEM file, for development and tests.
//!
//! Why it exists: developers and CI need signed checkpoints without AWS. Why it is never the
//! production answer: the key sits on disk, so anyone who can read the file can forge
//! checkpoints; `REQUIRE_KMS=true` refuses it. Signatures are deterministic (RFC 6979), so the
//! same checkpoint bytes always get the same signature.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::rand_core::OsRng;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

use super::config::SignerSetupError;
use super::verify::{pem_of, spki_der_of};
use super::{derive_kid, validate_kid, SignError, Signer, SignerKind};

/// Signs with a P-256 private key loaded from a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`).
pub struct LocalKeySigner {
    kid: String,
    origin: String,
    key: SigningKey,
    spki_der: Vec<u8>,
}

impl fmt::Debug for LocalKeySigner {
    // Never print the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeySigner")
            .field("kid", &self.kid)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl LocalKeySigner {
    /// Loads the key in `path`. `kid` overrides the default kid (`local:` + 16 hex digits of the
    /// public key's hash, see [`derive_kid`]).
    pub fn from_file(path: &Path, kid: Option<String>) -> Result<LocalKeySigner, SignerSetupError> {
        let key_error =
            |reason: String| SignerSetupError::KeyFile { path: path.to_path_buf(), reason };
        let pem = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
        let key = parse_private_key(&pem).map_err(key_error)?;
        Self::with_key(key, kid, path.display().to_string())
    }

    /// Builds a signer from PKCS#8 PEM text (tests, keys from a secret store).
    pub fn from_pkcs8_pem(
        pem: &str,
        kid: Option<String>,
    ) -> Result<LocalKeySigner, SignerSetupError> {
        let key = parse_private_key(pem).map_err(|reason| SignerSetupError::KeyFile {
            path: PathBuf::from("<inline PEM>"),
            reason,
        })?;
        Self::with_key(key, kid, "inline PEM".into())
    }

    /// Creates a new random P-256 key, writes it to `path` as PKCS#8 PEM (mode 0600 on Unix)
    /// and returns a signer for it. Refuses to overwrite an existing file: losing a signing key
    /// by accident would leave its checkpoints verifiable only through the registry copy.
    pub fn generate(path: &Path) -> Result<LocalKeySigner, SignerSetupError> {
        let signer = Self::random()?;
        signer.save_private_key(path)?;
        Ok(signer)
    }

    /// A new random P-256 key that exists only in memory until
    /// [`save_private_key`](Self::save_private_key): lets a caller check that the key will be
    /// accepted (e.g. by the registry) before anything is written.
    pub fn random() -> Result<LocalKeySigner, SignerSetupError> {
        Self::with_key(SigningKey::random(&mut OsRng), None, "generated key".into())
    }

    /// Writes the private key to `path` as PKCS#8 PEM, mode 0600 on Unix; refuses to overwrite
    /// an existing file.
    pub fn save_private_key(&self, path: &Path) -> Result<(), SignerSetupError> {
        let key_error =
            |reason: String| SignerSetupError::KeyFile { path: path.to_path_buf(), reason };
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| key_error(format!("encoding PKCS#8: {e}")))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                key_error("file exists; refusing to overwrite a private key".into())
            } else {
                key_error(e.to_string())
            }
        })?;
        if let Err(e) = file.write_all(pem.as_bytes()).and_then(|()| file.sync_all()) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(key_error(e.to_string()));
        }
        Ok(())
    }

    fn with_key(
        key: SigningKey,
        kid: Option<String>,
        origin: String,
    ) -> Result<LocalKeySigner, SignerSetupError> {
        let spki_der = spki_der_of(key.verifying_key()).map_err(|e| SignerSetupError::KeyFile {
            path: PathBuf::from(&origin),
            reason: e.to_string(),
        })?;
        let kid = match kid {
            Some(kid) => {
                validate_kid(&kid).map_err(|reason| SignerSetupError::InvalidSetting {
                    name: "AUDIT_SIGNER_KID",
                    reason,
                })?;
                kid
            }
            None => derive_kid(SignerKind::Local, &spki_der),
        };
        Ok(LocalKeySigner { kid, origin, key, spki_der })
    }

    /// The public key as SPKI DER (what the kid is derived from).
    pub fn public_key_spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The public key as SPKI PEM, the form `signers.json` stores.
    pub fn public_key_pem(&self) -> String {
        // Encoding a valid key cannot fail; fall back to an empty string rather than panic.
        pem_of(self.key.verifying_key()).unwrap_or_default()
    }
}

/// Parses PKCS#8 PEM, with a precise hint for the formats people commonly have instead.
fn parse_private_key(pem: &str) -> Result<SigningKey, String> {
    if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
        return Err("this is a SEC1 key (BEGIN EC PRIVATE KEY); convert it with \
                    `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.p8.pem`"
            .into());
    }
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err("encrypted PKCS#8 keys are not supported; store the key unencrypted with \
                    restrictive permissions (development only)"
            .into());
    }
    SigningKey::from_pkcs8_pem(pem.trim())
        .map_err(|e| format!("not a PKCS#8 PEM P-256 private key (BEGIN PRIVATE KEY): {e}"))
}

impl Signer for LocalKeySigner {
    fn kid(&self) -> &str {
        &self.kid
    }

    fn kind(&self) -> SignerKind {
        SignerKind::Local
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let signature: Signature = self.key.try_sign(message).map_err(|e| SignError::Rejected {
            context: format!("local key {} signing failed", self.origin),
            reason: e.to_string(),
        })?;
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::{verify_signature, ALGORITHM_ECDSA_P256_SHA256};

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("evalstream-signer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn generate_load_sign_verify_round_trip() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("key.pem");
        let generated = LocalKeySigner::generate(&path).unwrap();
        let loaded = LocalKeySigner::from_file(&path, None).unwrap();
        assert_eq!(generated.kid(), loaded.kid());
        assert!(loaded.kid().starts_with("local:"));
        assert_eq!(loaded.algorithm(), ALGORITHM_ECDSA_P256_SHA256);
        let sig = loaded.sign(b"tree_size=3").unwrap();
        verify_signature(
            ALGORITHM_ECDSA_P256_SHA256,
            loaded.public_key_pem().as_bytes(),
            b"tree_size=3",
            &sig,
        )
        .unwrap();
        // Deterministic (RFC 6979): the same bytes get the same signature.
        assert_eq!(generated.sign(b"tree_size=3").unwrap(), sig);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn generate_refuses_to_overwrite() {
        let dir = temp_dir("overwrite");
        let path = dir.join("key.pem");
        std::fs::write(&path, "precious").unwrap();
        let err = LocalKeySigner::generate(&path).unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_key_files_get_clear_errors() {
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let err = LocalKeySigner::from_pkcs8_pem(sec1, None).unwrap_err().to_string();
        assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
        let err = LocalKeySigner::from_pkcs8_pem("garbage", None).unwrap_err().to_string();
        assert!(err.contains("PKCS#8"), "{err}");
        let err = LocalKeySigner::from_file(Path::new("/nonexistent/key.pem"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/key.pem"), "{err}");
    }

    #[test]
    fn a_configured_kid_wins_and_is_validated() {
        let pem = SigningKey::from_slice(&[3u8; 32]).unwrap().to_pkcs8_pem(LineEnding::LF).unwrap();
        let signer = LocalKeySigner::from_pkcs8_pem(&pem, Some("dev-1".into())).unwrap();
        assert_eq!(signer.kid(), "dev-1");
        assert!(LocalKeySigner::from_pkcs8_pem(&pem, Some("bad kid".into())).is_err());
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }
}
