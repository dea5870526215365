//! AWS KMS asymmetric signing: key spec `ECC_NIST_P256`, algorithm `ECDSA_SHA_256`, message
//! type `RAW` (KMS hashes the message with SHA-256 itself).
//!
//! ```text
//!   sign(message) ── any thread ──► private current-thread tokio runtime ──► aws-sdk-kms Sign
//!        ▲                           (helper thread if the caller is          │ connect ≤ 2 s,
//!        │                            itself inside a tokio runtime)          │ attempt ≤ 5 s,
//!        └── verified DER signature ◄── verify with the cached GetPublicKey ◄─┘ ≤ 3 attempts
//! ```
//!
//! Why a private runtime: callers are synchronous (the processor's own OS thread), and the SDK
//! is async-only. Why bounded timeouts and attempts: during a KMS outage the processor must learn
//! within seconds that it should leave checkpoints `pending_signature`, not sit in SDK retries.
//! Why RAW and not DIGEST: KMS accepts RAW messages up to 4096 bytes, which a checkpoint never
//! approaches, and RAW behaves identically on AWS and on moto (which ignores DIGEST).
//!
//! Credentials and region come from the SDK's default chain (environment, shared profile with
//! static keys or web identity, ECS and EC2 instance metadata); the endpoint from
//! `AWS_ENDPOINT_URL_KMS` / `AWS_ENDPOINT_URL` or [`KmsConfig::endpoint_url`].
//!
//! The SDK is re-exported as [`aws_sdk_kms`] so that tests and tools use exactly the version the
//! signer is built with (for example to create a key on a test KMS).

use std::fmt;
use std::future::Future;
use std::sync::RwLock;
use std::time::Duration;

pub use aws_sdk_kms;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, MessageType, SigningAlgorithmSpec};
use p256::ecdsa::VerifyingKey;

use super::blocking::{in_async_runtime, off_async_runtime};
use super::config::{
    SignerSetupError, DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ATTEMPTS,
};
use super::verify::{parse_public_key, spki_der_of, verify_with};
use super::{derive_kid, validate_kid, SignError, Signer, SignerKind};

/// The largest message KMS signs with `MessageType::Raw`.
pub const KMS_MAX_RAW_MESSAGE: usize = 4096;

/// First retry backoff; the SDK doubles it with jitter.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);

/// Service error codes that mean "try again later" (everything else the service says is final).
const THROTTLING_CODES: &[&str] =
    &["ThrottlingException", "ThrottledException", "TooManyRequestsException"];
const UNAVAILABLE_CODES: &[&str] = &[
    "KMSInternalException",
    "KMSInternal",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// How to reach a KMS key. [`KmsConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// Key id, key ARN, alias name (`alias/audit`) or alias ARN.
    pub key_id: String,
    /// AWS region; `None` uses the SDK's chain (`AWS_REGION`, profile, instance metadata).
    pub region: Option<String>,
    /// Endpoint URL; `None` uses the SDK's chain (`AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
    /// The kid; `None` derives `kms:<16 hex>` from the key's public key (needs KMS at start-up).
    pub kid: Option<String>,
    /// TCP + TLS connect timeout per attempt.
    pub connect_timeout: Duration,
    /// Timeout of one attempt (request sent to response read).
    pub attempt_timeout: Duration,
    /// Attempts per call, the first one included (at least 1).
    pub max_attempts: u32,
}

impl KmsConfig {
    /// Defaults: connect 2 s, attempt 5 s, 3 attempts, region/endpoint/kid from the environment.
    pub fn new(key_id: impl Into<String>) -> KmsConfig {
        KmsConfig {
            key_id: key_id.into(),
            region: None,
            endpoint_url: None,
            kid: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: DEFAULT_CALL_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// Signs checkpoints with an AWS KMS asymmetric key.
pub struct KmsSigner {
    key_id: String,
    kid: String,
    client: aws_sdk_kms::Client,
    /// `Option` only so that `Drop` can take it (a runtime must not be dropped in async code).
    runtime: Option<tokio::runtime::Runtime>,
    /// The key's public key from the last GetPublicKey, to verify every signature.
    public_key: RwLock<Option<VerifyingKey>>,
}

impl fmt::Debug for KmsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsSigner")
            .field("key_id", &self.key_id)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Drop for KmsSigner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            if in_async_runtime() {
                runtime.shutdown_background();
            } else {
                drop(runtime);
            }
        }
    }
}

/// What went wrong with a KMS call, reduced to what the classification needs.
#[derive(Debug, Clone, Copy)]
enum Failure<'a> {
    /// KMS answered with an error code and HTTP status.
    Service { code: &'a str, status: u16 },
    /// The request was invalid before it was sent (bad endpoint URL, ...).
    UserDispatch,
    /// The request could not be built: credentials or region missing.
    Construction,
    /// No usable answer: connection refused or reset, timeout, truncated response.
    NoAnswer,
}

/// Failure classes, mapped one-to-one onto [`SignError`] variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Throttled,
    Unavailable,
    Rejected,
}

/// No answer or a 5xx-class answer is transient, a throttling answer is transient, any other
/// answer (access denied, key disabled or missing, invalid state, bad request) is final.
fn decide(failure: Failure<'_>) -> Class {
    match failure {
        Failure::Service { code, status } => {
            if THROTTLING_CODES.contains(&code) || status == 429 {
                Class::Throttled
            } else if UNAVAILABLE_CODES.contains(&code) || status >= 500 {
                Class::Unavailable
            } else {
                Class::Rejected
            }
        }
        Failure::UserDispatch | Failure::Construction => Class::Rejected,
        Failure::NoAnswer => Class::Unavailable,
    }
}

/// An error and its causes on one line, without the SDK's debug dump of the raw response (which
/// `DisplayErrorContext` appends): what an operator needs in a log line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // The SDK often repeats a cause's text in its wrapper; skip exact repeats.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Maps an SDK error to a [`SignError`] with the error chain as the reason.
fn classify<E>(
    context: String,
    error: SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
) -> SignError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let failure = match &error {
        SdkError::ServiceError(service) => Failure::Service {
            code: service.err().code().unwrap_or_default(),
            status: service.raw().status().as_u16(),
        },
        SdkError::DispatchFailure(failure) if failure.is_user() => Failure::UserDispatch,
        SdkError::ConstructionFailure(_) => Failure::Construction,
        // Timeouts, connection failures, truncated responses and future variants.
        _ => Failure::NoAnswer,
    };
    let reason = match &error {
        SdkError::ServiceError(service) => {
            format!("{} (HTTP {})", chain(service.err()), service.raw().status().as_u16())
        }
        other => chain(other),
    };
    match decide(failure) {
        Class::Throttled => SignError::Throttled { context, reason },
        Class::Unavailable => SignError::Unavailable { context, reason },
        Class::Rejected => SignError::Rejected { context, reason },
    }
}

impl KmsSigner {
    /// Builds the client (region, endpoint, timeouts, retries, default credential chain). With no
    /// configured kid it fetches the public key (GetPublicKey) to derive one, so KMS must answer.
    pub fn new(config: KmsConfig) -> Result<KmsSigner, SignerSetupError> {
        let KmsConfig {
            key_id,
            region,
            endpoint_url,
            kid,
            connect_timeout,
            attempt_timeout,
            max_attempts,
        } = config;
        if key_id.trim().is_empty() {
            return Err(SignerSetupError::InvalidSetting {
                name: super::config::ENV_KMS_KEY_ID,
                reason: "the KMS key id is empty".into(),
            });
        }
        if let Some(kid) = &kid {
            validate_kid(kid).map_err(|reason| SignerSetupError::InvalidSetting {
                name: super::config::ENV_SIGNER_KID,
                reason,
            })?;
        }
        if let Some(url) = &endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(SignerSetupError::InvalidSetting {
                    name: "AWS_ENDPOINT_URL_KMS",
                    reason: format!("endpoint {url:?} must start with http:// or https://"),
                });
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("evalstream-kms")
            .build()
            .map_err(|e| SignerSetupError::Internal(format!("KMS signer runtime: {e}")))?;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(connect_timeout)
            .operation_attempt_timeout(attempt_timeout)
            .operation_timeout(
                attempt_timeout.saturating_mul(max_attempts.max(1)) + Duration::from_secs(2),
            )
            .build();
        let retries = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(max_attempts.max(1))
            .with_initial_backoff(INITIAL_BACKOFF);
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts)
            .retry_config(retries);
        if let Some(region) = region {
            loader = loader.region(Region::new(region));
        }
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk_config = run_blocking(&runtime, loader.load()).ok_or_else(|| {
            SignerSetupError::Internal("loading the AWS configuration panicked".into())
        })?;
        if sdk_config.region().is_none() {
            return Err(SignerSetupError::InvalidSetting {
                name: "AWS_REGION",
                reason: format!("no AWS region for KMS key {key_id}: set AWS_REGION"),
            });
        }
        let client = aws_sdk_kms::Client::new(&sdk_config);
        let mut signer = KmsSigner {
            key_id: key_id.clone(),
            kid: kid.clone().unwrap_or_default(),
            client,
            runtime: Some(runtime),
            public_key: RwLock::new(None),
        };
        if kid.is_none() {
            let der = signer.public_key_spki_der().map_err(|source| {
                if source.is_transient() {
                    SignerSetupError::KmsUnavailable {
                        key_id: key_id.clone(),
                        error: source,
                        hint: String::new(),
                    }
                } else {
                    SignerSetupError::KmsKey { key_id: key_id.clone(), reason: source.to_string() }
                }
            })?;
            signer.kid = derive_kid(SignerKind::Kms, &der);
        }
        Ok(signer)
    }

    /// The configured key id (id, ARN or alias).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn block_on<F>(&self, future: F, context: impl Fn() -> String) -> Result<F::Output, SignError>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let runtime = self.runtime.as_ref().ok_or_else(|| SignError::Unavailable {
            context: context(),
            reason: "the signer is shutting down".into(),
        })?;
        run_blocking(runtime, future).ok_or_else(|| SignError::Unavailable {
            context: context(),
            reason: "KMS call panicked".into(),
        })
    }

    /// Fetches the key's public key (GetPublicKey) as SPKI DER, checks that it is a P-256 signing
    /// key, and remembers it for verifying signatures.
    pub fn public_key_spki_der(&self) -> Result<Vec<u8>, SignError> {
        let context = || format!("KMS GetPublicKey failed for key {}", self.key_id);
        let call = self.client.get_public_key().key_id(&self.key_id).send();
        let output = self.block_on(call, context)?.map_err(|e| classify(context(), e))?;
        let bad = |reason: String| SignError::Rejected { context: context(), reason };
        if let Some(spec) = output.key_spec() {
            if *spec != KeySpec::EccNistP256 {
                return Err(bad(format!("key spec is {}, expected ECC_NIST_P256", spec.as_str())));
            }
        }
        if let Some(usage) = output.key_usage() {
            if *usage != KeyUsageType::SignVerify {
                return Err(bad(format!("key usage is {}, expected SIGN_VERIFY", usage.as_str())));
            }
        }
        let der = output
            .public_key()
            .ok_or_else(|| SignError::BadResponse {
                context: context(),
                reason: "no public key in the answer".into(),
            })?
            .as_ref();
        let key = parse_public_key(der)
            .map_err(|e| SignError::BadResponse { context: context(), reason: e.to_string() })?;
        let der = spki_der_of(&key)
            .map_err(|e| SignError::BadResponse { context: context(), reason: e.to_string() })?;
        if let Ok(mut cached) = self.public_key.write() {
            *cached = Some(key);
        }
        Ok(der)
    }

    /// DescribeKey: the key must be enabled, `ECC_NIST_P256` and `SIGN_VERIFY`.
    fn describe(&self) -> Result<(), SignError> {
        let context = || format!("KMS DescribeKey failed for key {}", self.key_id);
        let call = self.client.describe_key().key_id(&self.key_id).send();
        let output = self.block_on(call, context)?.map_err(|e| classify(context(), e))?;
        let metadata = output.key_metadata().ok_or_else(|| SignError::BadResponse {
            context: context(),
            reason: "no key metadata".into(),
        })?;
        let bad = |reason: String| SignError::Rejected { context: context(), reason };
        if let Some(state) = metadata.key_state() {
            if *state != KeyState::Enabled {
                return Err(bad(format!("key state is {}, expected Enabled", state.as_str())));
            }
        } else if !metadata.enabled() {
            return Err(bad("key is disabled".into()));
        }
        if let Some(spec) = metadata.key_spec() {
            if *spec != KeySpec::EccNistP256 {
                return Err(bad(format!("key spec is {}, expected ECC_NIST_P256", spec.as_str())));
            }
        }
        if let Some(usage) = metadata.key_usage() {
            if *usage != KeyUsageType::SignVerify {
                return Err(bad(format!("key usage is {}, expected SIGN_VERIFY", usage.as_str())));
            }
        }
        Ok(())
    }

    fn cached_public_key(&self) -> Option<VerifyingKey> {
        self.public_key.read().ok().and_then(|k| *k)
    }
}

/// Runs `future` to completion on `runtime`, from a helper thread when the caller is itself
/// inside a tokio runtime. `None` if it panicked.
fn run_blocking<F>(runtime: &tokio::runtime::Runtime, future: F) -> Option<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    off_async_runtime(|| runtime.block_on(future))
}

impl Signer for KmsSigner {
    fn kid(&self) -> &str {
        &self.kid
    }

    fn kind(&self) -> SignerKind {
        SignerKind::Kms
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let context = || format!("KMS Sign failed for key {}", self.key_id);
        if message.len() > KMS_MAX_RAW_MESSAGE {
            return Err(SignError::MessageTooLarge {
                context: context(),
                len: message.len(),
                max: KMS_MAX_RAW_MESSAGE,
            });
        }
        let call = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send();
        let output = self.block_on(call, context)?.map_err(|e| classify(context(), e))?;
        let signature = output
            .signature()
            .ok_or_else(|| SignError::BadResponse {
                context: context(),
                reason: "no signature in the answer".into(),
            })?
            .as_ref()
            .to_vec();
        let key = match self.cached_public_key() {
            Some(key) => key,
            None => {
                self.public_key_spki_der()?;
                self.cached_public_key().ok_or_else(|| SignError::BadResponse {
                    context: context(),
                    reason: "public key unavailable for verification".into(),
                })?
            }
        };
        verify_with(&key, message, &signature).map_err(|e| SignError::BadResponse {
            context: context(),
            reason: format!("the signature does not verify against the key's public key ({e}); was the alias re-pointed?"),
        })?;
        Ok(signature)
    }

    /// DescribeKey (enabled, P-256, SIGN_VERIFY) and GetPublicKey (refreshes the cached key).
    fn check(&self) -> Result<(), SignError> {
        self.describe()?;
        self.public_key_spki_der().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_answers_are_classified() {
        let service = |code, status| decide(Failure::Service { code, status });
        assert_eq!(service("ThrottlingException", 400), Class::Throttled);
        assert_eq!(service("", 429), Class::Throttled);
        assert_eq!(service("KMSInternalException", 500), Class::Unavailable);
        assert_eq!(service("DependencyTimeoutException", 503), Class::Unavailable);
        assert_eq!(service("KeyUnavailableException", 500), Class::Unavailable);
        assert_eq!(service("", 502), Class::Unavailable);
        assert_eq!(service("DisabledException", 400), Class::Rejected);
        assert_eq!(service("KMSInvalidStateException", 400), Class::Rejected);
        assert_eq!(service("NotFoundException", 400), Class::Rejected);
        assert_eq!(service("AccessDeniedException", 400), Class::Rejected);
        assert_eq!(service("InvalidKeyUsageException", 400), Class::Rejected);
        assert_eq!(decide(Failure::NoAnswer), Class::Unavailable);
        assert_eq!(decide(Failure::Construction), Class::Rejected);
        assert_eq!(decide(Failure::UserDispatch), Class::Rejected);
    }

    #[test]
    fn a_bad_endpoint_or_empty_key_is_a_setup_error_without_network() {
        let mut config = KmsConfig::new("alias/audit");
        config.endpoint_url = Some("localhost:5000".into());
        config.kid = Some("kms:test".into());
        let err = KmsSigner::new(config).unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
        let err = KmsSigner::new(KmsConfig::new(" ")).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn oversized_messages_are_refused_before_any_call() {
        let mut config = KmsConfig::new("alias/audit");
        config.region = Some("us-east-1".into());
        // Port 9 (discard) on loopback: nothing is sent, the size check comes first.
        config.endpoint_url = Some("http://127.0.0.1:9".into());
        config.kid = Some("kms:test".into());
        let signer = KmsSigner::new(config).unwrap();
        assert_eq!(signer.kid(), "kms:test");
        let err = signer.sign(&[0u8; KMS_MAX_RAW_MESSAGE + 1]).unwrap_err();
        assert!(matches!(err, SignError::MessageTooLarge { len: 4097, .. }), "{err}");
        assert!(err.to_string().contains("KMS Sign failed for key alias/audit"), "{err}");
    }

    #[test]
    fn dropping_inside_a_runtime_does_not_panic() {
        let mut config = KmsConfig::new("alias/audit");
        config.region = Some("us-east-1".into());
        config.endpoint_url = Some("http://127.0.0.1:9".into());
        config.kid = Some("kms:test".into());
        let signer = KmsSigner::new(config).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move { drop(signer) });
    }
}
