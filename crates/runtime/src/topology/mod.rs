//! Topology as data: every topic and every processor of the system, loaded from
//! `topology/topology.toml`, validated, drawn, and applied to a cluster.
//!
//! ```text
//!   topology.toml ──parse (unknown keys rejected)──► Document ──resolve defaults──► Topology
//!                                                                                   │ validate
//!          ┌────────────────────────────┬──────────────────────────┬────────────────┤
//!          ▼                            ▼                          ▼                ▼
//!   lookups for the runtime     render_text / render_mermaid   with_prefix(p) ──► apply(admin)
//!   (schema_for_topic, dlq,     (`evalstream topology show`)                      │ metadata: partitions
//!    retry, changelog, group)                                                     │ CreateTopics: missing
//!                                                                                 │ DescribeConfigs: drift
//!                                                                                 ▼
//!                                                                            ApplyReport
//! ```
//!
//! Why data and not code: operators, the CLI, tests and every processor read the same file, so the
//! partition count a processor assumes, the topic `apply` creates and the graph `show` draws can
//! never disagree. Validation runs on every load, so a topology that would break co-partitioning
//! (state partition `p` serves partition `p` of every input, its retry topic and its changelog)
//! is refused before any client is created.
//!
//! Names in the file are *logical*: the runtime's `topic_prefix` is added when talking to Kafka
//! ([`Topology::with_prefix`]), which is how tests and several copies of the system share one
//! cluster. The file format is documented in `topology/README.md`.

mod apply;
mod render;
mod validate;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::error::KafkaError;
use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;

pub use apply::{ApplyReport, Drift, TopicOutcome, TopicStatus, Unchecked};
pub use render::retention_label;
pub use validate::{topic_name_problem, Role, Violation, MAX_TOPIC_NAME_LEN};

/// The repository's `topology/topology.toml`, compiled in so that the binary works without the
/// source tree (a container image carries only the binary).
const BUNDLED: &str = include_str!("../../../../topology/topology.toml");

/// Where the bundled topology came from, for error messages.
const BUNDLED_ORIGIN: &str = "bundled topology/topology.toml";

/// Schema name that marks a topic whose values are opaque bytes (DLQs, changelogs).
pub const RAW_SCHEMA: &str = "raw";

/// Errors of loading, validating and applying a topology.
///
/// Each variant puts its cause into its own message instead of exposing it as `source()`:
/// callers print errors with their chain (`{:#}`), and librdkafka's errors already repeat their
/// code in their own chain, so a `source()` here would print the same words three times.
#[derive(Debug, Error)]
pub enum TopologyError {
    /// The topology file could not be read.
    #[error("reading topology {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The document is not valid TOML or does not match the format (unknown keys included); the
    /// message names the key and line.
    #[error("parsing {origin}: {error}")]
    Parse {
        /// Where the document came from (a path, or the bundled file).
        origin: String,
        /// The TOML error, with line and column.
        error: toml::de::Error,
    },
    /// The document parsed but breaks one or more rules; every broken rule is listed.
    #[error("{origin}: {} problem(s):{}", violations.len(), list(violations))]
    Invalid {
        /// Where the document came from.
        origin: String,
        /// Every rule the document breaks, each naming the offending topic or processor.
        violations: Vec<Violation>,
    },
    /// A Kafka admin or metadata call failed.
    #[error("kafka {context}: {error}")]
    Kafka {
        /// What `apply` was doing.
        context: &'static str,
        /// The client error.
        error: KafkaError,
    },
    /// A Kafka call did not answer in time (the broker is unreachable or overloaded).
    #[error("kafka {context}: no answer within {after:?}")]
    Timeout {
        /// What `apply` was doing.
        context: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The small runtime that drives the admin client could not be started.
    #[error("starting the admin client runtime: {0}")]
    Runtime(std::io::Error),
}

fn list(violations: &[Violation]) -> String {
    violations.iter().map(|v| format!("\n  - {v}")).collect()
}

/// Kafka's `cleanup.policy` of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    /// Segments older than `retention.ms` are deleted (Kafka's default): event streams.
    Delete,
    /// Only the latest record per key is kept: state changelogs, which restore by reading the
    /// whole topic and must not lose a key however old.
    Compact,
}

impl CleanupPolicy {
    /// The value of the Kafka topic config `cleanup.policy`.
    pub fn as_kafka_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_kafka_str())
    }
}

/// What the values of a topic are: Avro records of one schema, or opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSchema {
    /// Opaque bytes: DLQs keep the original record exactly as it arrived (it may not even
    /// decode), changelogs hold runtime-internal encodings.
    Raw,
    /// Avro records; the full name (`namespace.Name`) of the schema in `schemas/`.
    Avro(String),
}

impl ValueSchema {
    fn parse(text: String) -> Self {
        if text == RAW_SCHEMA {
            ValueSchema::Raw
        } else {
            ValueSchema::Avro(text)
        }
    }

    /// The Avro full name, `None` for raw topics.
    pub fn avro_name(&self) -> Option<&str> {
        match self {
            ValueSchema::Raw => None,
            ValueSchema::Avro(name) => Some(name),
        }
    }
}

impl fmt::Display for ValueSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.avro_name().unwrap_or(RAW_SCHEMA))
    }
}

impl Serialize for ValueSchema {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One topic: what `apply` creates and what the runtime may assume about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicSpec {
    /// Topic name (logical, or prefixed after [`Topology::with_prefix`]).
    pub name: String,
    /// Partition count. Co-partitioned topics must agree (validated).
    pub partitions: i32,
    /// Replication factor at creation time.
    pub replication_factor: i32,
    /// Kafka `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// Kafka `retention.ms`: `-1` keeps records forever; `None` leaves the broker default (and
    /// `apply` does not check it), which is what compacted changelogs want.
    pub retention_ms: Option<i64>,
    /// Schema of the values.
    pub schema: ValueSchema,
    /// What the topic carries and who writes it.
    pub doc: String,
}

/// One input of a processor, with the topics its failures go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputSpec {
    /// The input topic.
    pub topic: String,
    /// Where records that cannot be processed go, in the same transaction (`<topic>.dlq`).
    pub dlq: String,
    /// Where records that cannot be processed *yet* wait with backoff before another attempt;
    /// `None` when this input has no data-fixable failures (they go straight to the DLQ).
    pub retry: Option<String>,
}

/// One processor: a consumer group turning its inputs into its outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessorSpec {
    /// Stable name: `evalstream run <name>`, metric labels, default group and changelog names.
    pub name: String,
    /// What the processor does.
    pub doc: String,
    /// Consumer group id (default `evalstream.<name>`).
    pub group_id: String,
    /// Compacted changelog topic backing the processor's state and progress markers
    /// (default `<group_id>.changelog`); partition `p` holds the state of input partition `p`.
    pub changelog: String,
    /// Input topics, all co-partitioned.
    pub inputs: Vec<InputSpec>,
    /// Topics the processor produces to (DLQ, retry and changelog topics not included).
    pub outputs: Vec<String>,
}

impl ProcessorSpec {
    /// The input spec of `topic`, if the processor consumes it.
    pub fn input(&self, topic: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.topic == topic)
    }

    /// Names of the input topics, in declaration order.
    pub fn input_topics(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().map(|i| i.topic.as_str())
    }
}

/// A validated topology. The only ways to get one are the loaders, which validate, so code
/// holding a `Topology` may rely on every rule in [`Violation`] holding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    topics: Vec<TopicSpec>,
    processors: Vec<ProcessorSpec>,
}

impl Topology {
    /// The topology compiled into this binary from the repository's `topology/topology.toml`.
    /// A unit test validates it, so this fails only on a build from an edited, broken file.
    pub fn bundled() -> Result<Self, TopologyError> {
        Self::parse(BUNDLED, BUNDLED_ORIGIN)
    }

    /// Loads and validates a topology file.
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| TopologyError::Read { path: path.to_path_buf(), error })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, TopologyError> {
        Self::parse(text, "topology document")
    }

    fn parse(text: &str, origin: &str) -> Result<Self, TopologyError> {
        let doc: Document = toml::from_str(text)
            .map_err(|error| TopologyError::Parse { origin: origin.to_string(), error })?;
        let topology = doc.resolve();
        topology.checked(origin)
    }

    fn checked(self, origin: &str) -> Result<Self, TopologyError> {
        let violations = validate::validate(&self);
        if violations.is_empty() {
            Ok(self)
        } else {
            Err(TopologyError::Invalid { origin: origin.to_string(), violations })
        }
    }

    /// Every topic, in file order.
    pub fn topics(&self) -> &[TopicSpec] {
        &self.topics
    }

    /// Every processor, in file order.
    pub fn processors(&self) -> &[ProcessorSpec] {
        &self.processors
    }

    /// The topic called `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The Avro full name of `name`'s values; `None` for raw topics and unknown topics.
    pub fn schema_for_topic(&self, name: &str) -> Option<&str> {
        self.topic(name).and_then(|t| t.schema.avro_name())
    }

    /// The processor called `name`.
    pub fn processor(&self, name: &str) -> Option<&ProcessorSpec> {
        self.processors.iter().find(|p| p.name == name)
    }

    /// The same topology with `prefix` in front of every topic name and consumer group id: the
    /// names the runtime uses on the cluster when `topic_prefix` is set (see
    /// [`crate::config::RuntimeConfig::topic`] and [`crate::config::RuntimeConfig::group_for`]).
    /// Fails when the prefixed names are not valid topic names (bad characters, too long).
    pub fn with_prefix(&self, prefix: &str) -> Result<Self, TopologyError> {
        if prefix.is_empty() {
            return Ok(self.clone());
        }
        let p = |name: &str| format!("{prefix}{name}");
        let topics =
            self.topics.iter().map(|t| TopicSpec { name: p(&t.name), ..t.clone() }).collect();
        let processors = self
            .processors
            .iter()
            .map(|proc| ProcessorSpec {
                group_id: p(&proc.group_id),
                changelog: p(&proc.changelog),
                inputs: proc
                    .inputs
                    .iter()
                    .map(|i| InputSpec {
                        topic: p(&i.topic),
                        dlq: p(&i.dlq),
                        retry: i.retry.as_deref().map(p),
                    })
                    .collect(),
                outputs: proc.outputs.iter().map(|o| p(o)).collect(),
                ..proc.clone()
            })
            .collect();
        Topology { topics, processors }.checked(&format!("topology with topic prefix {prefix:?}"))
    }

    /// Names of all topics, for quick membership tests.
    fn topic_names(&self) -> HashSet<&str> {
        self.topics.iter().map(|t| t.name.as_str()).collect()
    }
}

// ─── The file format (see topology/README.md) ────────────────────────────────────────────────

/// The document as written. Kept apart from [`Topology`] so that defaults are resolved in one
/// place and the rest of the code never sees an `Option` that means "the default".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default, rename = "topic")]
    topics: Vec<TopicDoc>,
    #[serde(default, rename = "processor")]
    processors: Vec<ProcessorDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[serde(default = "kafka_default_partitions")]
    partitions: i32,
    #[serde(default = "kafka_default_replication_factor")]
    replication_factor: i32,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            partitions: kafka_default_partitions(),
            replication_factor: kafka_default_replication_factor(),
        }
    }
}

/// Kafka's broker default `num.partitions`.
fn kafka_default_partitions() -> i32 {
    1
}

/// Kafka's broker default `default.replication.factor`.
fn kafka_default_replication_factor() -> i32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicDoc {
    name: String,
    partitions: Option<i32>,
    replication_factor: Option<i32>,
    /// Kafka's default is `delete`, but we make the choice explicit in the file.
    cleanup_policy: CleanupPolicy,
    retention_ms: Option<i64>,
    schema: String,
    doc: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessorDoc {
    name: String,
    doc: String,
    group_id: Option<String>,
    changelog: Option<String>,
    inputs: Vec<InputDoc>,
    #[serde(default)]
    outputs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputDoc {
    topic: String,
    dlq: Option<String>,
    retry: Option<String>,
}

impl Document {
    fn resolve(self) -> Topology {
        let defaults = self.defaults;
        let topics = self
            .topics
            .into_iter()
            .map(|t| TopicSpec {
                name: t.name,
                partitions: t.partitions.unwrap_or(defaults.partitions),
                replication_factor: t.replication_factor.unwrap_or(defaults.replication_factor),
                cleanup_policy: t.cleanup_policy,
                retention_ms: t.retention_ms,
                schema: ValueSchema::parse(t.schema),
                doc: t.doc,
            })
            .collect();
        let processors = self
            .processors
            .into_iter()
            .map(|p| {
                let group_id = p.group_id.unwrap_or_else(|| format!("evalstream.{}", p.name));
                ProcessorSpec {
                    changelog: p.changelog.unwrap_or_else(|| format!("{group_id}.changelog")),
                    group_id,
                    inputs: p
                        .inputs
                        .into_iter()
                        .map(|i| InputSpec {
                            dlq: i.dlq.unwrap_or_else(|| format!("{}.dlq", i.topic)),
                            topic: i.topic,
                            retry: i.retry,
                        })
                        .collect(),
                    outputs: p.outputs,
                    name: p.name,
                    doc: p.doc,
                }
            })
            .collect();
        Topology { topics, processors }
    }
}

#[cfg(test)]
mod tests;
