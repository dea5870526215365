//! The runbook's emergency signing proxy (`SIGNING_PROXY_URL`), over a small HTTP contract.
//!
//! ```text
//!   GET  {url}/key   → 200 {"kid": K, "algorithm": "ECDSA_P256_SHA256", "public_key": PEM SPKI}
//!   POST {url}/sign  {"kid": K, "algorithm": "ECDSA_P256_SHA256", "message_b64": base64(message)}
//!                    → 200 {"kid": K, "signature_b64": base64(DER ECDSA over SHA-256(message))}
//!   optional header  Authorization: Bearer $SIGNING_PROXY_TOKEN
//!   errors           429 → throttled; 408, 5xx, no answer → unavailable; other 4xx → refused;
//!                    an error body {"error": "..."} is quoted in the log
//! ```
//!
//! Why the signer fetches the proxy's public key and verifies every signature: the proxy is an
//! emergency service, less trusted than KMS; a wrong signature accepted now would surface only
//! when the verifier reports `signature_invalid`. Why base64 in JSON: the message is binary and
//! the contract must be easy to implement in any language in an emergency. The full contract is in
//! `docs/signing.md`.

use std::fmt;
use std::sync::RwLock;
use std::time::Duration;

use evalstream_runtime::b64;
use p256::ecdsa::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::blocking::{in_async_runtime, off_async_runtime};
use super::config::SignerSetupError;
use super::verify::{parse_public_key, verify_with};
use super::{validate_kid, SignError, Signer, SignerKind, ALGORITHM_ECDSA_P256_SHA256};

/// Longest error body quoted in a log line: enough for a message, not a whole HTML error page.
const MAX_QUOTED_BODY: usize = 200;

/// How to reach the signing proxy.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Base URL (`https://signer-emergency.internal`); `/key` and `/sign` are appended.
    pub url: String,
    /// The proxy key's kid; `None` asks the proxy (`GET /key`) at start-up.
    pub kid: Option<String>,
    /// Bearer token, if the proxy requires one.
    pub token: Option<String>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of a whole request.
    pub timeout: Duration,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("url", &self.url)
            .field("kid", &self.kid)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What `GET {url}/key` answers: the proxy's signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyKey {
    /// The key id the proxy signs with.
    pub kid: String,
    /// Must be [`ALGORITHM_ECDSA_P256_SHA256`].
    pub algorithm: String,
    /// The public key, SPKI PEM.
    pub public_key: String,
}

/// Body of `POST {url}/sign`.
#[derive(Serialize)]
struct SignRequest<'a> {
    kid: &'a str,
    algorithm: &'a str,
    message_b64: String,
}

/// Answer of `POST {url}/sign`.
#[derive(Deserialize)]
struct SignResponse {
    kid: String,
    signature_b64: String,
}

/// Signs through the emergency signing proxy.
pub struct ProxySigner {
    url: String,
    kid: String,
    token: Option<String>,
    /// `Option` only so that `Drop` can move it off an async thread.
    client: Option<reqwest::blocking::Client>,
    public_key: RwLock<Option<VerifyingKey>>,
}

impl fmt::Debug for ProxySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySigner")
            .field("url", &self.url)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Drop for ProxySigner {
    fn drop(&mut self) {
        // reqwest's blocking client owns a runtime thread; drop it off any async thread.
        if let Some(client) = self.client.take() {
            if in_async_runtime() {
                std::thread::spawn(move || drop(client));
            }
        }
    }
}

/// One HTTP exchange's outcome: the status and body, or a transport error already classified.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl ProxySigner {
    /// Validates the URL, builds the HTTP client and, when no kid is configured, asks the proxy
    /// for its key (`GET /key`), so the proxy must answer at start-up in that case.
    pub fn connect(config: ProxyConfig) -> Result<ProxySigner, SignerSetupError> {
        let url = config.url.trim().trim_end_matches('/').to_string();
        let setup = |reason: String| SignerSetupError::Proxy { url: url.clone(), reason };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(setup("the URL must start with http:// or https://".into()));
        }
        if let Some(kid) = &config.kid {
            validate_kid(kid).map_err(setup)?;
        }
        let (connect_timeout, timeout) = (config.connect_timeout, config.timeout);
        let client = off_async_runtime(move || {
            reqwest::blocking::Client::builder()
                .connect_timeout(connect_timeout)
                .timeout(timeout)
                .build()
        })
        .ok_or_else(|| setup("building the HTTP client panicked".into()))?
        .map_err(|e| setup(format!("building the HTTP client: {e}")))?;
        let mut signer = ProxySigner {
            url: url.clone(),
            kid: config.kid.clone().unwrap_or_default(),
            token: config.token,
            client: Some(client),
            public_key: RwLock::new(None),
        };
        if config.kid.is_none() {
            let key = signer.fetch_key().map_err(|e| setup(e.to_string()))?;
            signer.kid = key.kid;
        }
        Ok(signer)
    }

    /// The proxy's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET {url}/key`: the proxy's kid, algorithm and public key; remembers the key for
    /// verifying signatures. Fails when the algorithm is not ours, the key is not P-256, or (with
    /// a kid already known) the proxy now signs with a different kid.
    pub fn fetch_key(&self) -> Result<ProxyKey, SignError> {
        let context = || format!("signing proxy GET {}/key failed", self.url);
        let answer = self.exchange(context(), |c| c.get(format!("{}/key", self.url)))?;
        let key: ProxyKey =
            serde_json::from_slice(&answer.body).map_err(|e| SignError::BadResponse {
                context: context(),
                reason: format!("not a key document: {e}"),
            })?;
        let bad = |reason: String| SignError::BadResponse { context: context(), reason };
        if key.algorithm != ALGORITHM_ECDSA_P256_SHA256 {
            return Err(bad(format!(
                "algorithm {:?}, expected {ALGORITHM_ECDSA_P256_SHA256}",
                key.algorithm
            )));
        }
        validate_kid(&key.kid).map_err(bad)?;
        if !self.kid.is_empty() && key.kid != self.kid {
            return Err(bad(format!(
                "the proxy signs with kid {:?}, configured {:?}",
                key.kid, self.kid
            )));
        }
        let parsed = parse_public_key(key.public_key.as_bytes()).map_err(|e| bad(e.to_string()))?;
        if let Ok(mut cached) = self.public_key.write() {
            *cached = Some(parsed);
        }
        Ok(key)
    }

    /// Sends one request (built by `request`) and returns a 2xx answer; everything else is
    /// classified into a [`SignError`].
    fn exchange(
        &self,
        context: String,
        request: impl FnOnce(&reqwest::blocking::Client) -> reqwest::blocking::RequestBuilder + Send,
    ) -> Result<Answer, SignError> {
        let client = self.client.as_ref().ok_or_else(|| SignError::Unavailable {
            context: context.clone(),
            reason: "the signer is shutting down".into(),
        })?;
        let token = self.token.as_deref();
        let result = off_async_runtime(|| {
            let mut builder = request(client);
            if let Some(token) = token {
                builder = builder.bearer_auth(token);
            }
            let response = builder.send()?;
            let status = response.status().as_u16();
            let body = response.bytes()?.to_vec();
            Ok::<_, reqwest::Error>(Answer { status, body })
        })
        .ok_or_else(|| SignError::Unavailable {
            context: context.clone(),
            reason: "HTTP call panicked".into(),
        })?;
        let answer = match result {
            Ok(answer) => answer,
            Err(e) if e.is_builder() => {
                return Err(SignError::Rejected { context, reason: e.to_string() })
            }
            Err(e) => return Err(SignError::Unavailable { context, reason: describe(&e) }),
        };
        if (200..300).contains(&answer.status) {
            return Ok(answer);
        }
        let reason = format!("HTTP {}{}", answer.status, quote_error(&answer.body));
        Err(match answer.status {
            429 => SignError::Throttled { context, reason },
            408 | 500..=599 => SignError::Unavailable { context, reason },
            _ => SignError::Rejected { context, reason },
        })
    }

    fn cached_public_key(&self) -> Option<VerifyingKey> {
        self.public_key.read().ok().and_then(|k| *k)
    }
}

/// A reqwest error with its causes (a bare "error sending request" does not help an operator).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `: <error>` from an error body, JSON `{"error": ...}` or text, shortened for a log line.
fn quote_error(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed.error,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    if text.is_empty() {
        return String::new();
    }
    let short: String = text.chars().take(MAX_QUOTED_BODY).collect();
    let ellipsis = if short.len() < text.len() { "…" } else { "" };
    format!(": {short}{ellipsis}")
}

impl Signer for ProxySigner {
    fn kid(&self) -> &str {
        &self.kid
    }

    fn kind(&self) -> SignerKind {
        SignerKind::Proxy
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let context = || format!("signing proxy POST {}/sign failed", self.url);
        let key = match self.cached_public_key() {
            Some(key) => key,
            None => {
                self.fetch_key()?;
                self.cached_public_key().ok_or_else(|| SignError::BadResponse {
                    context: context(),
                    reason: "public key unavailable for verification".into(),
                })?
            }
        };
        let body = serde_json::to_vec(&SignRequest {
            kid: &self.kid,
            algorithm: ALGORITHM_ECDSA_P256_SHA256,
            message_b64: b64::encode(message),
        })
        .map_err(|e| SignError::Rejected { context: context(), reason: e.to_string() })?;
        let url = format!("{}/sign", self.url);
        let answer = self.exchange(context(), move |c| {
            c.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body)
        })?;
        let bad = |reason: String| SignError::BadResponse { context: context(), reason };
        let response: SignResponse = serde_json::from_slice(&answer.body)
            .map_err(|e| bad(format!("not a signature document: {e}")))?;
        if response.kid != self.kid {
            return Err(bad(format!(
                "signed with kid {:?}, asked for {:?}",
                response.kid, self.kid
            )));
        }
        let signature = b64::decode_canonical(response.signature_b64.trim())
            .map_err(|e| bad(format!("signature_b64 is not base64: {e}")))?;
        verify_with(&key, message, &signature).map_err(|e| {
            bad(format!("the signature does not verify against the proxy's public key: {e}"))
        })?;
        Ok(signature)
    }

    /// `GET /key`: the proxy answers and still signs with our kid.
    fn check(&self) -> Result<(), SignError> {
        self.fetch_key().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> ProxyConfig {
        ProxyConfig {
            url: url.into(),
            kid: Some("proxy:test".into()),
            token: Some("t".into()),
            connect_timeout: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn urls_are_validated_and_normalized() {
        let err = ProxySigner::connect(config("signer.internal")).unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
        let signer = ProxySigner::connect(config("http://127.0.0.1:9/")).unwrap();
        assert_eq!(signer.url(), "http://127.0.0.1:9");
        assert_eq!(signer.kid(), "proxy:test");
        assert!(!format!("{:?}", config("http://x")).contains("\"t\""));
    }

    #[test]
    fn error_bodies_are_quoted_briefly() {
        assert_eq!(quote_error(br#"{"error":"key disabled"}"#), ": key disabled");
        assert_eq!(quote_error(b""), "");
        let long = quote_error(&[b'x'; 500]);
        assert!(long.ends_with('…') && long.chars().count() < 210, "{long}");
    }
}
