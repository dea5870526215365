//! Which signer a processor uses, from the environment, and the `REQUIRE_KMS` policy.
//!
//! ```text
//!   SIGNING_PROXY_URL set? ── yes ─► REQUIRE_KMS=true? ── yes ─► refuse (ProxyForbidden)
//!        │                                  └─ no ──► ProxySigner, emergency = true
//!        no
//!        ▼
//!   AUDIT_SIGNING_KMS_KEY_ID set? ── yes ─► KmsSigner + check()
//!        │                                    ok ─────────────────────────► KMS signer
//!        │                                    permanent failure ──────────► refuse (KmsKey)
//!        │                                    unreachable, REQUIRE_KMS=true ► refuse (KmsUnavailable)
//!        │                                    unreachable, REQUIRE_KMS=false and kid known
//!        │                                         ► KMS signer; checkpoints wait as pending_signature
//!        no
//!        ▼
//!   REQUIRE_KMS=true? ── yes ─► refuse (KmsRequired)
//!        no
//!        ▼
//!   AUDIT_SIGNING_KEY_FILE set? ── yes ─► LocalKeySigner     no ─► refuse (NotConfigured)
//! ```
//!
//! Why the proxy wins over a configured KMS key: the runbook's emergency procedure is to *add*
//! `SIGNING_PROXY_URL` to a deployment that has a KMS key whose KMS is down; requiring operators
//! to also remove the key id would make the switch back error-prone. Why `REQUIRE_KMS` defaults
//! to false: a developer's machine has no KMS; production manifests set it to true, and then
//! neither a local key nor the proxy can be used by accident.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::kms::{KmsConfig, KmsSigner};
use super::local::LocalKeySigner;
use super::proxy::{ProxyConfig, ProxySigner};
use super::{validate_kid, SignError, Signer};

/// Environment variable: `true` requires a usable AWS KMS key and forbids the local key file and
/// the emergency proxy (default `false`).
pub const ENV_REQUIRE_KMS: &str = "REQUIRE_KMS";
/// Environment variable: the KMS key (id, ARN, alias name or alias ARN) that signs checkpoints.
pub const ENV_KMS_KEY_ID: &str = "AUDIT_SIGNING_KMS_KEY_ID";
/// Environment variable: the kid written next to signatures (KMS and local signers); default is
/// derived from the public key.
pub const ENV_SIGNER_KID: &str = "AUDIT_SIGNER_KID";
/// Environment variable: a PKCS#8 PEM P-256 private key file, for development.
pub const ENV_KEY_FILE: &str = "AUDIT_SIGNING_KEY_FILE";
/// Environment variable: the runbook's emergency signing proxy base URL.
pub const ENV_PROXY_URL: &str = "SIGNING_PROXY_URL";
/// Environment variable: bearer token sent to the signing proxy (optional).
pub const ENV_PROXY_TOKEN: &str = "SIGNING_PROXY_TOKEN";
/// Environment variable: the proxy key's kid; default is asked from the proxy (`GET /key`).
pub const ENV_PROXY_KID: &str = "SIGNING_PROXY_KID";
/// Environment variable: timeout of one signer call attempt in milliseconds (default 5000); the
/// connect timeout is the smaller of this and 2000.
pub const ENV_TIMEOUT_MS: &str = "AUDIT_SIGNING_TIMEOUT_MS";
/// Environment variable: attempts per KMS call, the first included (default 3). The proxy is
/// called once per `sign`; the processor's own retry of pending checkpoints covers both.
pub const ENV_MAX_ATTEMPTS: &str = "AUDIT_SIGNING_MAX_ATTEMPTS";

/// Why no signer could be set up. The messages are written for the operator reading the
/// start-up log: they name the setting, the key and the underlying error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SignerSetupError {
    /// No signer is configured at all.
    #[error(
        "no audit signer configured: set {ENV_KMS_KEY_ID} (AWS KMS), or {ENV_KEY_FILE} \
         (development key file), or in an emergency {ENV_PROXY_URL} with {ENV_REQUIRE_KMS}=false"
    )]
    NotConfigured,
    /// `REQUIRE_KMS=true` but no KMS key is configured.
    #[error("{ENV_REQUIRE_KMS}=true but {ENV_KMS_KEY_ID} is not set{hint}; refusing to start")]
    KmsRequired {
        /// What else was configured, if anything.
        hint: String,
    },
    /// `SIGNING_PROXY_URL` is set while `REQUIRE_KMS=true`.
    #[error(
        "{ENV_PROXY_URL}={url} is set but {ENV_REQUIRE_KMS}=true: the emergency signing proxy is \
         only allowed with {ENV_REQUIRE_KMS}=false, under explicit authorization (runbook: \
         KMS / Signing failures); refusing to start"
    )]
    ProxyForbidden {
        /// The configured proxy URL.
        url: String,
    },
    /// `REQUIRE_KMS=true` (or no kid is known) and the KMS key cannot be reached.
    #[error("KMS signing key {key_id} is not reachable: {error}; refusing to start{hint}")]
    KmsUnavailable {
        /// The configured key id.
        key_id: String,
        /// The failed KMS call (in the message, so not also a `source()`).
        error: SignError,
        /// What the operator can do.
        hint: String,
    },
    /// The KMS key exists but cannot sign checkpoints (wrong spec or usage, disabled, access
    /// denied, not found).
    #[error("KMS signing key {key_id} is not usable: {reason}; refusing to start")]
    KmsKey {
        /// The configured key id.
        key_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The local key file cannot be read or is not a PKCS#8 P-256 key.
    #[error("signing key file {path}: {reason}", path = path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The signing proxy is misconfigured or its key cannot be fetched.
    #[error("signing proxy {url}: {reason}")]
    Proxy {
        /// The proxy URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting has an invalid value.
    #[error("{name}: {reason}")]
    InvalidSetting {
        /// The setting (environment variable) name.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// Building the signer's private runtime or HTTP client failed.
    #[error("signer set-up failed: {0}")]
    Internal(String),
}

/// Which signer to build and how, from environment variables (see the `ENV_*` constants) or
/// set programmatically. [`SignerConfig::validate`] checks it without any network call.
#[derive(Clone)]
pub struct SignerConfig {
    /// `REQUIRE_KMS`: only a reachable KMS key may sign.
    pub require_kms: bool,
    /// `AUDIT_SIGNING_KMS_KEY_ID`: the KMS key that signs.
    pub kms_key_id: Option<String>,
    /// AWS region of the KMS key; `None` uses the SDK's chain (`AWS_REGION`, profile, IMDS).
    pub kms_region: Option<String>,
    /// KMS endpoint; `None` uses the SDK's chain (`AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL`,
    /// the profile's endpoint, then AWS's own).
    pub kms_endpoint_url: Option<String>,
    /// `AUDIT_SIGNER_KID`: kid of the KMS or local signer (default derived from the public key).
    pub kid: Option<String>,
    /// `AUDIT_SIGNING_KEY_FILE`: development key file.
    pub key_file: Option<PathBuf>,
    /// `SIGNING_PROXY_URL`: emergency signing proxy.
    pub proxy_url: Option<String>,
    /// `SIGNING_PROXY_TOKEN`: bearer token for the proxy.
    pub proxy_token: Option<String>,
    /// `SIGNING_PROXY_KID`: the proxy key's kid (default asked from the proxy).
    pub proxy_kid: Option<String>,
    /// `AUDIT_SIGNING_TIMEOUT_MS`: timeout of one call attempt (KMS and proxy).
    pub timeout: Duration,
    /// `AUDIT_SIGNING_MAX_ATTEMPTS`: attempts per KMS call, the first included.
    pub max_attempts: u32,
}

impl Default for SignerConfig {
    /// Nothing configured, `REQUIRE_KMS=false`, 5 s per attempt, 3 KMS attempts.
    fn default() -> SignerConfig {
        SignerConfig {
            require_kms: false,
            kms_key_id: None,
            kms_region: None,
            kms_endpoint_url: None,
            kid: None,
            key_file: None,
            proxy_url: None,
            proxy_token: None,
            proxy_kid: None,
            timeout: DEFAULT_CALL_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl std::fmt::Debug for SignerConfig {
    // The proxy token is a secret: show only whether it is set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerConfig")
            .field("require_kms", &self.require_kms)
            .field("kms_key_id", &self.kms_key_id)
            .field("kms_region", &self.kms_region)
            .field("kms_endpoint_url", &self.kms_endpoint_url)
            .field("kid", &self.kid)
            .field("key_file", &self.key_file)
            .field("proxy_url", &self.proxy_url)
            .field("proxy_token", &self.proxy_token.as_ref().map(|_| "<redacted>"))
            .field("proxy_kid", &self.proxy_kid)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// Parses a positive integer setting bounded by `max` (a typo must not become 0 or forever).
fn parse_count(name: &'static str, value: &str, max: u64) -> Result<u64, SignerSetupError> {
    match value.trim().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(SignerSetupError::InvalidSetting {
            name,
            reason: format!("{value:?} is not a whole number from 1 to {max}"),
        }),
    }
}

/// Parses a boolean setting the way operators write them; anything else is an error rather than
/// a silent `false` (a typo in `REQUIRE_KMS` must not weaken the policy).
fn parse_bool(name: &'static str, value: &str) -> Result<bool, SignerSetupError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(SignerSetupError::InvalidSetting {
            name,
            reason: format!("{other:?} is not a boolean (use true or false)"),
        }),
    }
}

impl SignerConfig {
    /// Reads the process environment. Empty values count as unset (`kubectl set env X=`).
    pub fn from_env() -> Result<SignerConfig, SignerSetupError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, a config map, a test's table), then
    /// [`validate`](Self::validate)s them.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<SignerConfig, SignerSetupError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let require_kms = match get(ENV_REQUIRE_KMS) {
            Some(v) => parse_bool(ENV_REQUIRE_KMS, &v)?,
            None => false,
        };
        let config = SignerConfig {
            require_kms,
            kms_key_id: get(ENV_KMS_KEY_ID),
            kms_region: get("AWS_REGION"),
            kms_endpoint_url: get("AWS_ENDPOINT_URL_KMS").or_else(|| get("AWS_ENDPOINT_URL")),
            kid: get(ENV_SIGNER_KID),
            key_file: get(ENV_KEY_FILE).map(PathBuf::from),
            proxy_url: get(ENV_PROXY_URL),
            proxy_token: get(ENV_PROXY_TOKEN),
            proxy_kid: get(ENV_PROXY_KID),
            timeout: match get(ENV_TIMEOUT_MS) {
                Some(v) => Duration::from_millis(parse_count(ENV_TIMEOUT_MS, &v, 600_000)?),
                None => DEFAULT_CALL_TIMEOUT,
            },
            max_attempts: match get(ENV_MAX_ATTEMPTS) {
                // Bounded by 10, so the u64 → u32 conversion cannot fail.
                Some(v) => u32::try_from(parse_count(ENV_MAX_ATTEMPTS, &v, 10)?).unwrap_or(1),
                None => DEFAULT_MAX_ATTEMPTS,
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// The policy checks that need no network: `REQUIRE_KMS` against the proxy and the key
    /// file, conflicting settings, and the shape of kids and URLs.
    pub fn validate(&self) -> Result<(), SignerSetupError> {
        for (name, kid) in [(ENV_SIGNER_KID, &self.kid), (ENV_PROXY_KID, &self.proxy_kid)] {
            if let Some(kid) = kid {
                validate_kid(kid)
                    .map_err(|reason| SignerSetupError::InvalidSetting { name, reason })?;
            }
        }
        if let Some(url) = &self.proxy_url {
            if self.require_kms {
                return Err(SignerSetupError::ProxyForbidden { url: url.clone() });
            }
            return Ok(());
        }
        if self.kms_key_id.is_some() {
            if let Some(file) = &self.key_file {
                return Err(SignerSetupError::InvalidSetting {
                    name: ENV_KEY_FILE,
                    reason: format!(
                        "both {ENV_KMS_KEY_ID} and {ENV_KEY_FILE}={} are set; choose one signer",
                        file.display()
                    ),
                });
            }
            return Ok(());
        }
        if self.require_kms {
            let hint = match &self.key_file {
                Some(file) => {
                    format!(" ({ENV_KEY_FILE}={} is not allowed with it)", file.display())
                }
                None => String::new(),
            };
            return Err(SignerSetupError::KmsRequired { hint });
        }
        if self.key_file.is_none() {
            return Err(SignerSetupError::NotConfigured);
        }
        Ok(())
    }
}

/// The signer a processor should use, and whether it is the emergency proxy.
#[derive(Debug, Clone)]
pub struct SignerChoice {
    /// The signer; shared between the processor's thread and its readiness check.
    pub signer: Arc<dyn Signer>,
    /// True when the emergency signing proxy was chosen: the audit-chain processor records an
    /// `audit.emergency_signer` event before the first checkpoint it signs.
    pub emergency: bool,
    /// One line for the start-up log and the emergency event, e.g.
    /// `AWS KMS key alias/audit (kid kms:3f2a...)`.
    pub detail: String,
}

/// How long a KMS or proxy call may take by default: long enough for a healthy service under
/// load, short enough that an outage shows up within seconds and checkpoints go pending instead
/// of stalling a transaction.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// See [`DEFAULT_CONNECT_TIMEOUT`].
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default attempts per KMS call (the first one plus retries): enough to ride out one dropped
/// connection, few enough that an outage is reported within seconds.
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 3;

impl SignerConfig {
    fn connect_timeout(&self) -> Duration {
        self.timeout.min(DEFAULT_CONNECT_TIMEOUT)
    }
}

/// Builds the signer `config` asks for, applying the policy in this module's doc. KMS keys are
/// checked (DescribeKey + GetPublicKey) before they are accepted.
pub fn build_signer(config: &SignerConfig) -> Result<SignerChoice, SignerSetupError> {
    config.validate()?;
    if let Some(url) = &config.proxy_url {
        let signer = ProxySigner::connect(ProxyConfig {
            url: url.clone(),
            kid: config.proxy_kid.clone(),
            token: config.proxy_token.clone(),
            connect_timeout: config.connect_timeout(),
            timeout: config.timeout,
        })?;
        let detail = format!("emergency signing proxy {} (kid {})", signer.url(), signer.kid());
        tracing::warn!(signer = %detail, "audit checkpoints are signed by the EMERGENCY signing proxy");
        return Ok(SignerChoice { signer: Arc::new(signer), emergency: true, detail });
    }
    if let Some(key_id) = &config.kms_key_id {
        let mut kms = KmsConfig::new(key_id.clone());
        kms.region = config.kms_region.clone();
        kms.endpoint_url = config.kms_endpoint_url.clone();
        kms.kid = config.kid.clone();
        kms.connect_timeout = config.connect_timeout();
        kms.attempt_timeout = config.timeout;
        kms.max_attempts = config.max_attempts;
        let signer = KmsSigner::new(kms).map_err(|e| match e {
            SignerSetupError::KmsUnavailable { key_id, error, hint } if config.require_kms => {
                SignerSetupError::KmsUnavailable { key_id, error, hint }
            }
            SignerSetupError::KmsUnavailable { key_id, error, .. } => {
                SignerSetupError::KmsUnavailable {
                    key_id,
                    error,
                    hint: format!(
                        " (set {ENV_SIGNER_KID} to start without KMS; checkpoints then wait as \
                     pending_signature until it is back)"
                    ),
                }
            }
            other => other,
        })?;
        match signer.check() {
            Ok(()) => {}
            Err(source) if !source.is_transient() => {
                return Err(SignerSetupError::KmsKey {
                    key_id: key_id.clone(),
                    reason: source.to_string(),
                });
            }
            Err(source) if config.require_kms => {
                return Err(SignerSetupError::KmsUnavailable {
                    key_id: key_id.clone(),
                    error: source,
                    hint: String::new(),
                });
            }
            Err(source) => {
                tracing::warn!(key_id = %key_id, error = %source,
                    "KMS is not reachable; starting anyway (REQUIRE_KMS=false), checkpoints wait as pending_signature");
            }
        }
        let detail = format!("AWS KMS key {key_id} (kid {})", signer.kid());
        return Ok(SignerChoice { signer: Arc::new(signer), emergency: false, detail });
    }
    if let Some(path) = &config.key_file {
        let signer = LocalKeySigner::from_file(path, config.kid.clone())?;
        let detail = format!("local development key {} (kid {})", path.display(), signer.kid());
        tracing::warn!(signer = %detail, "audit checkpoints are signed by a local key file (development only)");
        return Ok(SignerChoice { signer: Arc::new(signer), emergency: false, detail });
    }
    Err(SignerSetupError::NotConfigured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<SignerConfig, SignerSetupError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        SignerConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn require_kms_defaults_to_false_and_is_parsed_strictly() {
        let c = config(&[(ENV_KEY_FILE, "dev.pem")]).unwrap();
        assert!(!c.require_kms);
        let c = config(&[(ENV_REQUIRE_KMS, "TRUE"), (ENV_KMS_KEY_ID, "alias/audit")]).unwrap();
        assert!(c.require_kms);
        let err = config(&[(ENV_REQUIRE_KMS, "ture"), (ENV_KEY_FILE, "dev.pem")]).unwrap_err();
        assert!(err.to_string().contains("REQUIRE_KMS"), "{err}");
    }

    #[test]
    fn the_proxy_is_forbidden_when_kms_is_required() {
        let err = config(&[
            (ENV_REQUIRE_KMS, "true"),
            (ENV_KMS_KEY_ID, "k"),
            (ENV_PROXY_URL, "https://p"),
        ])
        .unwrap_err();
        assert!(matches!(err, SignerSetupError::ProxyForbidden { .. }));
        assert!(err.to_string().contains("REQUIRE_KMS=false"), "{err}");
        let ok = config(&[(ENV_KMS_KEY_ID, "k"), (ENV_PROXY_URL, "https://p")]).unwrap();
        assert_eq!(ok.proxy_url.as_deref(), Some("https://p"));
    }

    #[test]
    fn require_kms_refuses_a_key_file_and_an_empty_setup() {
        let err = config(&[(ENV_REQUIRE_KMS, "true"), (ENV_KEY_FILE, "dev.pem")]).unwrap_err();
        assert!(matches!(err, SignerSetupError::KmsRequired { .. }));
        assert!(err.to_string().contains("AUDIT_SIGNING_KMS_KEY_ID is not set"), "{err}");
        assert!(err.to_string().contains("dev.pem"), "{err}");
        let err = config(&[(ENV_REQUIRE_KMS, "true")]).unwrap_err();
        assert!(matches!(err, SignerSetupError::KmsRequired { .. }));
        assert!(matches!(config(&[]).unwrap_err(), SignerSetupError::NotConfigured));
        // Empty values are unset.
        assert!(matches!(
            config(&[(ENV_KEY_FILE, " ")]).unwrap_err(),
            SignerSetupError::NotConfigured
        ));
    }

    #[test]
    fn kms_and_key_file_together_conflict() {
        let err = config(&[(ENV_KMS_KEY_ID, "k"), (ENV_KEY_FILE, "dev.pem")]).unwrap_err();
        assert!(err.to_string().contains("choose one signer"), "{err}");
    }

    #[test]
    fn kids_and_endpoints_come_from_the_environment() {
        let c = config(&[
            (ENV_KMS_KEY_ID, "alias/audit"),
            (ENV_SIGNER_KID, "kms:2025"),
            ("AWS_ENDPOINT_URL", "http://generic"),
            ("AWS_ENDPOINT_URL_KMS", "http://kms"),
            ("AWS_REGION", "eu-west-1"),
        ])
        .unwrap();
        assert_eq!(c.kid.as_deref(), Some("kms:2025"));
        assert_eq!(c.kms_endpoint_url.as_deref(), Some("http://kms"));
        assert_eq!(c.kms_region.as_deref(), Some("eu-west-1"));
        assert!(config(&[(ENV_KMS_KEY_ID, "k"), (ENV_SIGNER_KID, "a b")]).is_err());
        assert_eq!((c.timeout, c.max_attempts), (DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_ATTEMPTS));
    }

    #[test]
    fn timeouts_and_attempts_are_bounded() {
        let c = config(&[(ENV_KEY_FILE, "k"), (ENV_TIMEOUT_MS, "800"), (ENV_MAX_ATTEMPTS, "1")])
            .unwrap();
        assert_eq!((c.timeout, c.max_attempts), (Duration::from_millis(800), 1));
        assert_eq!(c.connect_timeout(), Duration::from_millis(800));
        for (name, value) in
            [(ENV_TIMEOUT_MS, "0"), (ENV_TIMEOUT_MS, "5s"), (ENV_MAX_ATTEMPTS, "11")]
        {
            let err = config(&[(ENV_KEY_FILE, "k"), (name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn the_token_is_not_printed() {
        let c = config(&[(ENV_PROXY_URL, "https://p"), (ENV_PROXY_TOKEN, "s3cret")]).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn a_local_key_file_builds_a_non_emergency_signer() {
        let dir =
            std::env::temp_dir().join(format!("evalstream-build-signer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dev.pem");
        LocalKeySigner::generate(&path).unwrap();
        let choice =
            build_signer(&config(&[(ENV_KEY_FILE, path.to_str().unwrap())]).unwrap()).unwrap();
        assert!(!choice.emergency);
        assert_eq!(choice.signer.kind(), super::super::SignerKind::Local);
        assert!(choice.detail.contains("dev.pem"), "{}", choice.detail);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
