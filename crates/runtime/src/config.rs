//! Runtime configuration: a TOML file plus environment overrides, validated at start-up.
//!
//! Precedence (later wins): built-in defaults → the file (`--config FILE` or `EVALSTREAM_CONFIG`)
//! → environment variables. Unknown keys in the file are errors (a typo must not silently fall
//! back to a default), and every value is validated before any client is created.
//!
//! | environment variable                 | field                    |
//! |--------------------------------------|--------------------------|
//! | `KAFKA_BOOTSTRAP_SERVERS`            | `bootstrap_servers`      |
//! | `EVALSTREAM_BOOTSTRAP_SERVERS`       | `bootstrap_servers` (wins over the above) |
//! | `EVALSTREAM_INSTANCE_ID`             | `instance_id`            |
//! | `EVALSTREAM_GROUP_ID`                | `group_id`               |
//! | `EVALSTREAM_TOPIC_PREFIX`            | `topic_prefix`           |
//! | `EVALSTREAM_COMMIT_INTERVAL_MS`      | `commit_interval_ms`     |
//! | `EVALSTREAM_COMMIT_MAX_RECORDS`      | `commit_max_records`     |
//! | `EVALSTREAM_SESSION_TIMEOUT_MS`      | `session_timeout_ms`     |
//! | `EVALSTREAM_TRANSACTION_TIMEOUT_MS`  | `transaction_timeout_ms` |
//! | `EVALSTREAM_MAX_RECORD_BYTES`        | `max_record_bytes`       |
//! | `EVALSTREAM_RETRY_MAX_ATTEMPTS`      | `retry.max_attempts`     |
//! | `EVALSTREAM_RETRY_BACKOFF_MS`        | `retry.initial_backoff_ms` |
//! | `EVALSTREAM_OPS_LISTEN`              | `ops_listen`             |
//! | `EVALSTREAM_COMMITTED_VIEW`          | `committed_view`         |
//! | `EVALSTREAM_COMPRESSION`             | `compression`            |
//! | `EVALSTREAM_KAFKA_<NAME>`            | `kafka.<name>` with `_` → `.` (e.g. `EVALSTREAM_KAFKA_SASL_MECHANISM`) |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::error::RuntimeError;

/// Configuration of one processor instance.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    /// Identity of this instance within its consumer group. It names the transactional id
    /// (`<group_id>-<instance_id>`), so a restarted instance with the same id fences its
    /// predecessor's open transaction (KIP-98 zombie fencing). Must be stable across restarts
    /// and unique among live instances. Default: the host name, or `0`.
    #[serde(default = "default_instance_id")]
    pub instance_id: String,
    /// Consumer group id. Default: `evalstream.<processor>`. Overridden per processor only when
    /// two deployments of the same processor must not share progress.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Prefix prepended to every topic name (`""` by default). Lets several isolated copies of
    /// the system share one cluster, and lets tests use random topic names.
    #[serde(default)]
    pub topic_prefix: String,
    /// Commit the open transaction after this many milliseconds (Kafka Streams' exactly-once
    /// default is 100 ms). Lower means lower end-to-end latency and more transactions.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// Commit early once a transaction holds this many input records.
    #[serde(default = "default_commit_max_records")]
    pub commit_max_records: usize,
    /// Consumer group session timeout (librdkafka `session.timeout.ms`, default 45000). A
    /// crashed instance's partitions move after this long.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Producer `transaction.timeout.ms`: the broker aborts a transaction left open longer
    /// than this. Default 10000, Kafka Streams' exactly-once default (librdkafka's is 60000). It
    /// bounds how long a crashed instance that never returns blocks its partitions: the next
    /// owner's restore must read to the end of the changelog, and a `read_committed` reader
    /// cannot pass the dead instance's open transaction until the broker aborts it (within this
    /// timeout plus the broker's abort check interval, 10 s by default). A transaction of this
    /// runtime lives `commit_interval_ms` (100 ms), so 10 s leaves ample room for slow commits;
    /// librdkafka lowers `message.timeout.ms` and `socket.timeout.ms` to fit inside it.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Records whose value is larger than this many bytes are dead-lettered with class
    /// `oversized` instead of being processed.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Retry topic behaviour for [`crate::error::ProcessError::NotReady`].
    #[serde(default)]
    pub retry: RetryConfig,
    /// Address of the `/health`, `/ready` and `/metrics` server; `None` disables it.
    #[serde(default = "default_ops_listen")]
    pub ops_listen: Option<SocketAddr>,
    /// Extra librdkafka properties for real clusters, passed to every client. Only security
    /// and identity properties are accepted: `security.protocol`, `sasl.*`, `ssl.*`,
    /// `client.id`, `client.rack`, `socket.*`, `broker.address.family`. Properties the
    /// runtime owns (`enable.auto.commit`, `isolation.level`, `transactional.id`, ...) are rejected.
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    /// `normal`, or `read-only`: the runbook's safe mode. A read-only instance joins its group
    /// and restores state but pauses every assigned partition: nothing is consumed, produced or
    /// dropped, lag grows, and switching back to `normal` resumes exactly where it stopped.
    #[serde(default)]
    pub mode: Mode,
    /// What "committed" means for every reader the runtime ships (state restore, a
    /// processor's `on_assign`, processors consuming another processor's outputs, and the audit
    /// commands): `broker` (default) trusts the broker's `read_committed`, as Apache Kafka,
    /// Redpanda, MSK and Confluent Cloud implement it; `markers` joins every record written by
    /// our runtime against the progress marker that commits it, for a broker that shows aborted
    /// transactional records to `read_committed` readers (the local Tansu broker). See
    /// docs/exactly-once.md, "One definition of committed".
    #[serde(default)]
    pub committed_view: CommittedView,
    /// Compression of the batches the runtime's transactional producers write (outputs, state
    /// changelog, progress markers, dead letters): `lz4` (default), `snappy`, `gzip` or `none`.
    /// Why lz4 by default: Apache Kafka validates an uncompressed batch by parsing every
    /// record in it into objects, headers included, and every record the runtime writes
    /// carries two to four text headers; the records of a compressed batch are validated by
    /// skipping over their keys, values and headers. In the `totals` benchmark that about
    /// halved the broker's CPU per record and left more of a shared machine to the processor
    /// (docs/performance.md, phase 7). Consumers decompress transparently; every Kafka client
    /// reads all four.
    #[serde(default)]
    pub compression: Compression,
    /// Settings of the processor itself (free-form, validated by the processor).
    #[serde(default)]
    pub processor: BTreeMap<String, toml::Value>,
}

/// What "committed" means for the readers the runtime ships (see
/// [`RuntimeConfig::committed_view`]).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CommittedView {
    /// The broker's `read_committed` is exact (Apache Kafka and compatible brokers).
    #[default]
    Broker,
    /// The broker leaks aborted records: a record written by the runtime is committed iff the
    /// progress marker its `evalstream.progress` header names exists and belongs to its
    /// transaction.
    Markers,
}

impl CommittedView {
    /// The name used in config and env.
    pub fn as_str(self) -> &'static str {
        match self {
            CommittedView::Broker => "broker",
            CommittedView::Markers => "markers",
        }
    }
}

/// Batch compression of the runtime's producers (see [`RuntimeConfig::compression`]).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Uncompressed batches.
    None,
    /// gzip (zlib): the smallest batches of the four, the most CPU.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4: cheap to compress and to read back.
    #[default]
    Lz4,
}

impl Compression {
    /// The name used in config and env, which is also librdkafka's `compression.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }

    /// Every value, for validation messages and tests.
    pub const ALL: [Compression; 4] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4];
}

/// Processing mode.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Consume and process.
    #[default]
    Normal,
    /// Pause every partition (see [`RuntimeConfig::mode`]).
    ReadOnly,
}

impl Mode {
    /// The name used in config, env and `/ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::ReadOnly => "read-only",
        }
    }
}

/// Retry-topic settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Total processing attempts, the first included, before the record is dead-lettered.
    #[serde(default = "default_retry_attempts")]
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles with each further attempt.
    #[serde(default = "default_retry_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Upper bound of the delay between attempts.
    #[serde(default = "default_retry_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_retry_attempts(),
            initial_backoff_ms: default_retry_backoff_ms(),
            max_backoff_ms: default_retry_max_backoff_ms(),
        }
    }
}

impl RetryConfig {
    /// Delay before attempt `attempt` (2 = first retry): exponential, capped.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(2).min(30);
        self.initial_backoff_ms.saturating_mul(1u64 << exp).min(self.max_backoff_ms)
    }
}

fn default_bootstrap() -> String {
    "127.0.0.1:9092".to_string()
}
fn default_instance_id() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "0".to_string())
}
/// Kafka Streams' `commit.interval.ms` under exactly-once.
fn default_commit_interval_ms() -> u64 {
    100
}
fn default_commit_max_records() -> usize {
    10_000
}
/// librdkafka's `session.timeout.ms` default.
fn default_session_timeout_ms() -> u64 {
    45_000
}
/// Kafka Streams' `transaction.timeout.ms` under exactly-once (see the field's doc).
fn default_transaction_timeout_ms() -> u64 {
    10_000
}
/// Kafka's default `max.message.bytes` is 1 MiB; we keep headroom for headers.
fn default_max_record_bytes() -> usize {
    900 * 1024
}
fn default_retry_attempts() -> u32 {
    5
}
fn default_retry_backoff_ms() -> u64 {
    1_000
}
fn default_retry_max_backoff_ms() -> u64 {
    60_000
}
fn default_ops_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([0, 0, 0, 0], 8080)))
}

/// librdkafka properties a user may pass through (prefix match when ending in `.`).
const PASSTHROUGH: &[&str] = &[
    "security.protocol",
    "sasl.",
    "ssl.",
    "client.id",
    "client.rack",
    "socket.",
    "broker.address.family",
];

impl Default for RuntimeConfig {
    fn default() -> Self {
        // An empty document takes every default; this cannot fail.
        toml::from_str("").expect("defaults deserialize")
    }
}

impl RuntimeConfig {
    /// Loads the file (if any), applies environment overrides, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, RuntimeError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with(file, &vars)
    }

    /// As [`RuntimeConfig::load`] with an explicit environment (for tests).
    pub fn load_with(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, RuntimeError> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    RuntimeError::Config(format!("reading {}: {e}", path.display()))
                })?;
                Self::from_toml(&text)
                    .map_err(|e| RuntimeError::Config(format!("{}: {e}", path.display())))?
            }
            None => Self::default(),
        };
        cfg.apply_env(env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML document (no environment, no validation).
    pub fn from_toml(text: &str) -> Result<Self, RuntimeError> {
        toml::from_str(text).map_err(|e| RuntimeError::Config(e.to_string()))
    }

    fn apply_env(&mut self, env: &[(String, String)]) -> Result<(), RuntimeError> {
        fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, RuntimeError> {
            v.parse().map_err(|_| RuntimeError::Config(format!("{k}={v:?} is not a valid number")))
        }
        // KAFKA_BOOTSTRAP_SERVERS and MODE first so that the EVALSTREAM_ variables win.
        let mut sorted: Vec<&(String, String)> = env.iter().collect();
        sorted.sort_by_key(|(k, _)| k != "KAFKA_BOOTSTRAP_SERVERS" && k != "MODE");
        for (k, v) in sorted {
            match k.as_str() {
                "KAFKA_BOOTSTRAP_SERVERS" | "EVALSTREAM_BOOTSTRAP_SERVERS" => {
                    self.bootstrap_servers = v.clone()
                }
                "EVALSTREAM_INSTANCE_ID" => self.instance_id = v.clone(),
                // `MODE` is the runbook's config-map key; EVALSTREAM_MODE wins when both are set.
                "MODE" | "EVALSTREAM_MODE" => {
                    self.mode = match v.as_str() {
                        "normal" => Mode::Normal,
                        "read-only" => Mode::ReadOnly,
                        _ => {
                            return Err(RuntimeError::Config(format!(
                                "{k}={v:?} must be `normal` or `read-only`"
                            )))
                        }
                    }
                }
                "EVALSTREAM_GROUP_ID" => self.group_id = Some(v.clone()),
                "EVALSTREAM_COMMITTED_VIEW" => {
                    self.committed_view = match v.as_str() {
                        "broker" => CommittedView::Broker,
                        "markers" => CommittedView::Markers,
                        _ => {
                            return Err(RuntimeError::Config(format!(
                                "{k}={v:?} must be `broker` or `markers`"
                            )))
                        }
                    }
                }
                "EVALSTREAM_COMPRESSION" => {
                    self.compression = Compression::ALL
                        .into_iter()
                        .find(|c| c.as_str() == v.as_str())
                        .ok_or_else(|| {
                            let names = Compression::ALL.map(Compression::as_str).join(", ");
                            RuntimeError::Config(format!("{k}={v:?} must be one of {names}"))
                        })?
                }
                "EVALSTREAM_TOPIC_PREFIX" => self.topic_prefix = v.clone(),
                "EVALSTREAM_COMMIT_INTERVAL_MS" => self.commit_interval_ms = num(k, v)?,
                "EVALSTREAM_COMMIT_MAX_RECORDS" => self.commit_max_records = num(k, v)?,
                "EVALSTREAM_SESSION_TIMEOUT_MS" => self.session_timeout_ms = num(k, v)?,
                "EVALSTREAM_TRANSACTION_TIMEOUT_MS" => self.transaction_timeout_ms = num(k, v)?,
                "EVALSTREAM_MAX_RECORD_BYTES" => self.max_record_bytes = num(k, v)?,
                "EVALSTREAM_RETRY_MAX_ATTEMPTS" => self.retry.max_attempts = num(k, v)?,
                "EVALSTREAM_RETRY_BACKOFF_MS" => self.retry.initial_backoff_ms = num(k, v)?,
                "EVALSTREAM_OPS_LISTEN" => {
                    self.ops_listen = if v.is_empty() || v == "off" {
                        None
                    } else {
                        Some(v.parse().map_err(|_| {
                            RuntimeError::Config(format!("{k}={v:?} is not host:port or `off`"))
                        })?)
                    }
                }
                _ => {
                    if let Some(prop) = k.strip_prefix("EVALSTREAM_KAFKA_") {
                        self.kafka.insert(prop.to_ascii_lowercase().replace('_', "."), v.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks every field; the error names the field and the rule.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let err = |m: String| Err(RuntimeError::Config(m));
        if self.bootstrap_servers.trim().is_empty() {
            return err("bootstrap_servers must not be empty".into());
        }
        for server in self.bootstrap_servers.split(',') {
            let server = server.trim();
            let port = server.rsplit_once(':').map(|(_, p)| p);
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return err(format!("bootstrap_servers entry {server:?} is not host:port"));
            }
        }
        if self.instance_id.is_empty()
            || !self.instance_id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return err(format!(
                "instance_id {:?} must be non-empty and use only [A-Za-z0-9._-]",
                self.instance_id
            ));
        }
        if let Some(g) = &self.group_id {
            if g.is_empty() {
                return err("group_id must not be empty when set".into());
            }
        }
        if !self.topic_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return err(format!(
                "topic_prefix {:?} may use only [A-Za-z0-9._-]",
                self.topic_prefix
            ));
        }
        if !(1..=60_000).contains(&self.commit_interval_ms) {
            return err(format!(
                "commit_interval_ms {} must be in 1..=60000",
                self.commit_interval_ms
            ));
        }
        if self.commit_max_records == 0 {
            return err("commit_max_records must be at least 1".into());
        }
        if !(1_000..=3_600_000).contains(&self.session_timeout_ms) {
            return err(format!(
                "session_timeout_ms {} must be in 1000..=3600000",
                self.session_timeout_ms
            ));
        }
        if self.transaction_timeout_ms < 1000 {
            return err(format!(
                "transaction_timeout_ms {} must be at least 1000 (librdkafka's minimum)",
                self.transaction_timeout_ms
            ));
        }
        if self.transaction_timeout_ms <= self.commit_interval_ms {
            return err(format!(
                "transaction_timeout_ms {} must exceed commit_interval_ms {}",
                self.transaction_timeout_ms, self.commit_interval_ms
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_record_bytes) {
            return err(format!(
                "max_record_bytes {} must be in 1024..=67108864",
                self.max_record_bytes
            ));
        }
        if self.retry.max_attempts == 0 {
            return err("retry.max_attempts must be at least 1 (1 = no retries)".into());
        }
        if self.retry.initial_backoff_ms > self.retry.max_backoff_ms {
            return err("retry.initial_backoff_ms must not exceed retry.max_backoff_ms".into());
        }
        for key in self.kafka.keys() {
            let allowed = PASSTHROUGH.iter().any(|p| {
                if p.ends_with('.') {
                    key.starts_with(p)
                } else {
                    key == p
                }
            });
            if !allowed {
                return err(format!(
                    "kafka.{key} is not a pass-through property (allowed: security.protocol, sasl.*, ssl.*, client.id, client.rack, socket.*, broker.address.family)"
                ));
            }
        }
        Ok(())
    }

    /// The consumer group id for `processor`.
    pub fn group_for(&self, processor: &str) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("{}evalstream.{processor}", self.topic_prefix))
    }

    /// A logical topic name with the configured prefix.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = RuntimeConfig::load_with(None, &[]).unwrap();
        assert_eq!(c.commit_interval_ms, 100);
        assert_eq!(c.group_for("policy"), "evalstream.policy");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = RuntimeConfig::from_toml("commit_interval = 5").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = RuntimeConfig::from_toml("[retry]\nmax = 3").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn env_overrides_file_and_evalstream_wins_over_kafka_var() {
        let dir = std::env::temp_dir().join(format!("es-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "commit_interval_ms = 250\nbootstrap_servers = \"a:1\"\n").unwrap();
        let c = RuntimeConfig::load_with(
            Some(&f),
            &env(&[
                ("EVALSTREAM_BOOTSTRAP_SERVERS", "c:3"),
                ("KAFKA_BOOTSTRAP_SERVERS", "b:2"),
                ("EVALSTREAM_COMMIT_MAX_RECORDS", "7"),
                ("EVALSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ]),
        )
        .unwrap();
        assert_eq!(c.commit_interval_ms, 250);
        assert_eq!(c.bootstrap_servers, "c:3");
        assert_eq!(c.commit_max_records, 7);
        assert_eq!(c.kafka.get("sasl.mechanism").map(String::as_str), Some("SCRAM-SHA-512"));
    }

    #[test]
    fn invalid_values_name_the_field() {
        for (toml, field) in [
            ("commit_interval_ms = 0", "commit_interval_ms"),
            ("bootstrap_servers = \"nohost\"", "bootstrap_servers"),
            ("instance_id = \"a b\"", "instance_id"),
            ("max_record_bytes = 10", "max_record_bytes"),
            ("transaction_timeout_ms = 500\ncommit_interval_ms = 100", "transaction_timeout_ms"),
            ("transaction_timeout_ms = 2000\ncommit_interval_ms = 3000", "transaction_timeout_ms"),
            ("[retry]\nmax_attempts = 0", "retry.max_attempts"),
            ("[kafka]\n\"enable.auto.commit\" = \"true\"", "kafka.enable.auto.commit"),
        ] {
            let e = RuntimeConfig::from_toml(toml).and_then(|c| c.validate()).unwrap_err();
            assert!(e.to_string().contains(field), "{toml}: {e}");
        }
        let e = RuntimeConfig::load_with(None, &env(&[("EVALSTREAM_COMMIT_INTERVAL_MS", "soon")]))
            .unwrap_err();
        assert!(e.to_string().contains("EVALSTREAM_COMMIT_INTERVAL_MS"), "{e}");
    }

    #[test]
    fn read_only_mode_from_the_runbook_key_or_ours() {
        let c = RuntimeConfig::load_with(None, &env(&[("MODE", "read-only")])).unwrap();
        assert_eq!(c.mode, Mode::ReadOnly);
        let c = RuntimeConfig::load_with(
            None,
            &env(&[("MODE", "read-only"), ("EVALSTREAM_MODE", "normal")]),
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Normal);
        assert!(RuntimeConfig::load_with(None, &env(&[("MODE", "readonly")])).is_err());
        assert_eq!(RuntimeConfig::from_toml("mode = \"read-only\"").unwrap().mode, Mode::ReadOnly);
    }

    #[test]
    fn committed_view_from_file_or_env() {
        assert_eq!(RuntimeConfig::default().committed_view, CommittedView::Broker);
        let c = RuntimeConfig::load_with(None, &env(&[("EVALSTREAM_COMMITTED_VIEW", "markers")]))
            .unwrap();
        assert_eq!(c.committed_view, CommittedView::Markers);
        let c = RuntimeConfig::from_toml("committed_view = \"markers\"").unwrap();
        assert_eq!(c.committed_view, CommittedView::Markers);
        assert!(RuntimeConfig::load_with(None, &env(&[("EVALSTREAM_COMMITTED_VIEW", "tansu")]))
            .is_err());
    }

    #[test]
    fn compression_defaults_to_lz4_and_is_set_from_file_or_env() {
        assert_eq!(RuntimeConfig::default().compression, Compression::Lz4);
        let c =
            RuntimeConfig::load_with(None, &env(&[("EVALSTREAM_COMPRESSION", "none")])).unwrap();
        assert_eq!(c.compression, Compression::None);
        let c = RuntimeConfig::from_toml("compression = \"snappy\"").unwrap();
        assert_eq!(c.compression, Compression::Snappy);
        for c in Compression::ALL {
            let from_env =
                RuntimeConfig::load_with(None, &env(&[("EVALSTREAM_COMPRESSION", c.as_str())]))
                    .unwrap();
            assert_eq!(from_env.compression, c);
        }
        let e = RuntimeConfig::load_with(None, &env(&[("EVALSTREAM_COMPRESSION", "zstd")]))
            .unwrap_err();
        assert!(e.to_string().contains("none, gzip, snappy, lz4"), "{e}");
        assert!(RuntimeConfig::from_toml("compression = \"LZ4\"").is_err());
    }

    #[test]
    fn security_properties_pass_through() {
        let c = RuntimeConfig::from_toml(
            "[kafka]\n\"security.protocol\" = \"SASL_SSL\"\n\"ssl.ca.location\" = \"/ca.pem\"",
        )
        .unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let r = RetryConfig { max_attempts: 9, initial_backoff_ms: 100, max_backoff_ms: 1000 };
        assert_eq!(r.backoff_ms(2), 100);
        assert_eq!(r.backoff_ms(3), 200);
        assert_eq!(r.backoff_ms(6), 1000);
    }
}
