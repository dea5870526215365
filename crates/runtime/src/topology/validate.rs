//! The rules a topology must satisfy. Every rule is a [`Violation`] variant whose message names
//! the offending topic or processor, and validation reports *all* violations at once, so fixing
//! a file is one round trip, not one per mistake.
//!
//! Why these rules: the runtime keeps state partition `p` for partition `p` of every input (and
//! of the input's retry topic) and writes it to changelog partition `p`. If any of these counts
//! differ, records with the same key meet different state, silently. Names and roles are checked
//! because a typo would otherwise surface only when a processor starts on a live cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use thiserror::Error;

use super::{CleanupPolicy, Topology, ValueSchema};

/// Longest legal Kafka topic name (Kafka's `Topic.MAX_NAME_LENGTH`).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// How a processor uses a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The processor consumes it.
    Input,
    /// The processor produces to it.
    Output,
    /// Dead letters of one input go there.
    Dlq,
    /// Records of one input wait there before another attempt.
    Retry,
    /// The processor's state changelog.
    Changelog,
}

impl Role {
    /// DLQ, retry and changelog topics belong to the runtime, not to the data flow: they must
    /// not double as anything else.
    fn is_internal(self) -> bool {
        matches!(self, Role::Dlq | Role::Retry | Role::Changelog)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Input => "input",
            Role::Output => "output",
            Role::Dlq => "DLQ",
            Role::Retry => "retry",
            Role::Changelog => "changelog",
        })
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Violation {
    /// A topic name Kafka would refuse (or reserves).
    #[error("topic {topic:?}: {reason}")]
    TopicName {
        /// The topic.
        topic: String,
        /// Which naming rule it breaks.
        reason: &'static str,
    },
    /// The same topic declared twice.
    #[error("topic {0:?} is declared twice")]
    DuplicateTopic(String),
    /// Two names that differ only in `.` versus `_`: Kafka refuses the second, because both map
    /// to the same metric names.
    #[error(
        "topics {first:?} and {second:?} collide: Kafka treats '.' and '_' alike in metric names"
    )]
    TopicCollision {
        /// The name declared first.
        first: String,
        /// The name declared later.
        second: String,
    },
    /// A partition count below 1.
    #[error("topic {topic:?}: partitions must be at least 1, not {partitions}")]
    Partitions {
        /// The topic.
        topic: String,
        /// The declared count.
        partitions: i32,
    },
    /// A replication factor Kafka cannot represent (it is a 16-bit number, at least 1).
    #[error("topic {topic:?}: replication_factor must be in 1..=32767, not {replication_factor}")]
    ReplicationFactor {
        /// The topic.
        topic: String,
        /// The declared factor.
        replication_factor: i32,
    },
    /// A retention that is neither "forever" (-1) nor a positive number of milliseconds.
    #[error(
        "topic {topic:?}: retention_ms must be -1 (keep forever) or positive, not {retention_ms}"
    )]
    Retention {
        /// The topic.
        topic: String,
        /// The declared retention.
        retention_ms: i64,
    },
    /// A schema that is neither `raw` nor an Avro full name with a namespace.
    #[error("topic {topic:?}: schema {schema:?} is neither `raw` nor an Avro full name like `evalstream.eval.EvalSubmission`")]
    SchemaName {
        /// The topic.
        topic: String,
        /// The declared schema.
        schema: String,
    },
    /// An entry without a doc string: every topic and processor says what it is for.
    #[error("{kind} {name:?}: doc must not be empty")]
    MissingDoc {
        /// `topic` or `processor`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The same processor declared twice.
    #[error("processor {0:?} is declared twice")]
    DuplicateProcessor(String),
    /// A processor name that cannot name a group, a changelog and a metric label.
    #[error("processor {processor:?}: name must match [a-z][a-z0-9-]* (it names the consumer group, the changelog and metric labels)")]
    ProcessorName {
        /// The processor.
        processor: String,
    },
    /// An empty or blank consumer group id.
    #[error("processor {processor:?}: group_id {group_id:?} must be non-empty without whitespace")]
    GroupId {
        /// The processor.
        processor: String,
        /// The declared group id.
        group_id: String,
    },
    /// Two processors in one consumer group would steal each other's partitions.
    #[error("processors {first:?} and {second:?} share consumer group {group_id:?}")]
    SharedGroup {
        /// The processor declared first.
        first: String,
        /// The processor declared later.
        second: String,
        /// The group.
        group_id: String,
    },
    /// A processor without inputs has nothing to do.
    #[error("processor {processor:?} has no inputs")]
    NoInputs {
        /// The processor.
        processor: String,
    },
    /// The same input listed twice.
    #[error("processor {processor:?}: input {topic:?} is listed twice")]
    DuplicateInput {
        /// The processor.
        processor: String,
        /// The topic.
        topic: String,
    },
    /// A processor refers to a topic that is not declared.
    #[error("processor {processor:?}: {role} topic {topic:?} is not declared as a [[topic]]")]
    UnknownTopic {
        /// The processor.
        processor: String,
        /// How it uses the topic.
        role: Role,
        /// The undeclared topic.
        topic: String,
    },
    /// A topic that must be co-partitioned with the processor's inputs has another count.
    #[error("processor {processor:?}: {role} topic {topic:?} has {partitions} partition(s) but input {reference:?} has {expected}; state partition p serves partition p of every input, retry topic and the changelog, so the counts must be equal")]
    Partitioning {
        /// The processor.
        processor: String,
        /// How it uses the topic.
        role: Role,
        /// The topic with the odd count.
        topic: String,
        /// Its count.
        partitions: i32,
        /// The input the count is compared with (the first declared one).
        reference: String,
        /// That input's count.
        expected: i32,
    },
    /// A topic with the wrong cleanup policy for its role.
    #[error("processor {processor:?}: {role} topic {topic:?} must have cleanup_policy {expected}, not {actual} (restoring state reads the latest value of every key, however old)")]
    Cleanup {
        /// The processor.
        processor: String,
        /// How it uses the topic.
        role: Role,
        /// The topic.
        topic: String,
        /// The policy the role needs.
        expected: CleanupPolicy,
        /// The declared policy.
        actual: CleanupPolicy,
    },
    /// A topic with the wrong value schema for its role.
    #[error("processor {processor:?}: {role} topic {topic:?} must have schema {expected}, not {actual} ({})", schema_reason(*role))]
    Schema {
        /// The processor.
        processor: String,
        /// How it uses the topic.
        role: Role,
        /// The topic.
        topic: String,
        /// The schema the role needs.
        expected: ValueSchema,
        /// The declared schema.
        actual: ValueSchema,
    },
    /// A DLQ, retry or changelog topic that is also used in another role.
    #[error("topic {topic:?} is the {role} topic of processor {processor:?} and also the {other_role} topic of processor {other_processor:?}; DLQ, retry and changelog topics must not double as anything else")]
    RoleConflict {
        /// The topic.
        topic: String,
        /// The internal role.
        role: Role,
        /// The processor using it in that role.
        processor: String,
        /// The other role.
        other_role: Role,
        /// The processor using it in the other role.
        other_processor: String,
    },
    /// A retry or changelog topic used twice: its records would be read by the wrong consumer.
    #[error("{role} topic {topic:?} is used twice (processors {first:?} and {second:?}); each input needs its own")]
    SharedTopic {
        /// The role.
        role: Role,
        /// The topic.
        topic: String,
        /// The first user.
        first: String,
        /// The second user.
        second: String,
    },
}

fn schema_reason(role: Role) -> &'static str {
    match role {
        Role::Dlq => "a DLQ keeps the original bytes, which may not even decode",
        Role::Retry => "a retry topic holds its input's records unchanged",
        Role::Changelog => "a changelog holds the runtime's own state encoding",
        Role::Input | Role::Output => "",
    }
}

/// Why `name` is not a usable Kafka topic name, if it is not.
pub fn topic_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("a topic name must not be empty")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not topic names")
    } else if name.len() > MAX_TOPIC_NAME_LEN {
        Some("a topic name must not be longer than 249 characters")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        Some("a topic name may use only [A-Za-z0-9._-]")
    } else if name.starts_with("__") {
        Some("names starting with `__` are reserved for Kafka's internal topics")
    } else {
        None
    }
}

fn is_avro_full_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            let mut chars = p.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn is_processor_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Checks every rule and returns every violation, in file order.
pub(super) fn validate(t: &Topology) -> Vec<Violation> {
    let mut out = Vec::new();
    check_topics(t, &mut out);
    check_processors(t, &mut out);
    check_roles(t, &mut out);
    out
}

fn check_topics(t: &Topology, out: &mut Vec<Violation>) {
    let mut seen = HashSet::new();
    let mut metric_names: HashMap<String, &str> = HashMap::new();
    for topic in &t.topics {
        let name = &topic.name;
        if let Some(reason) = topic_name_problem(name) {
            out.push(Violation::TopicName { topic: name.clone(), reason });
        }
        if !seen.insert(name.as_str()) {
            out.push(Violation::DuplicateTopic(name.clone()));
        } else if let Some(first) = metric_names.insert(name.replace('.', "_"), name) {
            out.push(Violation::TopicCollision { first: first.to_string(), second: name.clone() });
        }
        if topic.partitions < 1 {
            out.push(Violation::Partitions { topic: name.clone(), partitions: topic.partitions });
        }
        if !(1..=i32::from(i16::MAX)).contains(&topic.replication_factor) {
            out.push(Violation::ReplicationFactor {
                topic: name.clone(),
                replication_factor: topic.replication_factor,
            });
        }
        if let Some(r) = topic.retention_ms {
            if r != -1 && r <= 0 {
                out.push(Violation::Retention { topic: name.clone(), retention_ms: r });
            }
        }
        if let ValueSchema::Avro(schema) = &topic.schema {
            if !is_avro_full_name(schema) {
                out.push(Violation::SchemaName { topic: name.clone(), schema: schema.clone() });
            }
        }
        if topic.doc.trim().is_empty() {
            out.push(Violation::MissingDoc { kind: "topic", name: name.clone() });
        }
    }
}

fn check_processors(t: &Topology, out: &mut Vec<Violation>) {
    let declared = t.topic_names();
    let mut names = HashSet::new();
    let mut groups: HashMap<&str, &str> = HashMap::new();
    for p in &t.processors {
        let processor = || p.name.clone();
        if !names.insert(p.name.as_str()) {
            out.push(Violation::DuplicateProcessor(processor()));
        }
        if !is_processor_name(&p.name) {
            out.push(Violation::ProcessorName { processor: processor() });
        }
        if p.doc.trim().is_empty() {
            out.push(Violation::MissingDoc { kind: "processor", name: processor() });
        }
        if p.group_id.is_empty() || p.group_id.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            out.push(Violation::GroupId { processor: processor(), group_id: p.group_id.clone() });
        } else if let Some(first) = groups.insert(&p.group_id, &p.name) {
            out.push(Violation::SharedGroup {
                first: first.to_string(),
                second: processor(),
                group_id: p.group_id.clone(),
            });
        }
        if p.inputs.is_empty() {
            out.push(Violation::NoInputs { processor: processor() });
        }
        let mut inputs = HashSet::new();
        for i in &p.inputs {
            if !inputs.insert(i.topic.as_str()) {
                out.push(Violation::DuplicateInput {
                    processor: processor(),
                    topic: i.topic.clone(),
                });
            }
        }

        // Every reference must name a declared topic; the partition and schema rules below only
        // look at declared ones, so one typo yields one message.
        let mut refs: Vec<(Role, &str)> = Vec::new();
        for i in &p.inputs {
            refs.push((Role::Input, &i.topic));
            refs.push((Role::Dlq, &i.dlq));
            if let Some(r) = &i.retry {
                refs.push((Role::Retry, r));
            }
        }
        refs.extend(p.outputs.iter().map(|o| (Role::Output, o.as_str())));
        refs.push((Role::Changelog, &p.changelog));
        for (role, topic) in refs {
            if !declared.contains(topic) {
                out.push(Violation::UnknownTopic {
                    processor: processor(),
                    role,
                    topic: topic.into(),
                });
            }
        }

        // Co-partitioning: every input, retry topic and the changelog match the first input.
        let Some(reference) = p.inputs.iter().find_map(|i| t.topic(&i.topic)) else {
            continue;
        };
        let mut same_partitions = |role: Role, name: &str| {
            if let Some(topic) = t.topic(name) {
                if topic.partitions != reference.partitions {
                    out.push(Violation::Partitioning {
                        processor: processor(),
                        role,
                        topic: name.to_string(),
                        partitions: topic.partitions,
                        reference: reference.name.clone(),
                        expected: reference.partitions,
                    });
                }
            }
        };
        for i in &p.inputs {
            same_partitions(Role::Input, &i.topic);
            if let Some(r) = &i.retry {
                same_partitions(Role::Retry, r);
            }
        }
        same_partitions(Role::Changelog, &p.changelog);

        let mut expect_schema = |role: Role, name: &str, expected: &ValueSchema| {
            if let Some(topic) = t.topic(name) {
                if &topic.schema != expected {
                    out.push(Violation::Schema {
                        processor: processor(),
                        role,
                        topic: name.to_string(),
                        expected: expected.clone(),
                        actual: topic.schema.clone(),
                    });
                }
            }
        };
        for i in &p.inputs {
            expect_schema(Role::Dlq, &i.dlq, &ValueSchema::Raw);
            if let (Some(retry), Some(input)) = (&i.retry, t.topic(&i.topic)) {
                expect_schema(Role::Retry, retry, &input.schema);
            }
        }
        expect_schema(Role::Changelog, &p.changelog, &ValueSchema::Raw);
        if let Some(changelog) = t.topic(&p.changelog) {
            if changelog.cleanup_policy != CleanupPolicy::Compact {
                out.push(Violation::Cleanup {
                    processor: processor(),
                    role: Role::Changelog,
                    topic: changelog.name.clone(),
                    expected: CleanupPolicy::Compact,
                    actual: changelog.cleanup_policy,
                });
            }
        }
    }
}

/// DLQ, retry and changelog topics are private to their role; retry and changelog topics are
/// also private to one user.
fn check_roles(t: &Topology, out: &mut Vec<Violation>) {
    // topic → every (role, processor) use, in file order. BTreeMap keeps reports stable.
    let mut uses: BTreeMap<&str, Vec<(Role, &str)>> = BTreeMap::new();
    for p in &t.processors {
        for i in &p.inputs {
            uses.entry(&i.topic).or_default().push((Role::Input, &p.name));
            uses.entry(&i.dlq).or_default().push((Role::Dlq, &p.name));
            if let Some(r) = &i.retry {
                uses.entry(r).or_default().push((Role::Retry, &p.name));
            }
        }
        for o in &p.outputs {
            uses.entry(o).or_default().push((Role::Output, &p.name));
        }
        uses.entry(&p.changelog).or_default().push((Role::Changelog, &p.name));
    }
    for (topic, list) in uses {
        let Some(&(role, processor)) = list.iter().find(|(r, _)| r.is_internal()) else {
            continue;
        };
        if let Some(&(other_role, other)) = list.iter().find(|(r, _)| *r != role) {
            out.push(Violation::RoleConflict {
                topic: topic.to_string(),
                role,
                processor: processor.to_string(),
                other_role,
                other_processor: other.to_string(),
            });
        } else if role != Role::Dlq && list.len() > 1 {
            // A shared DLQ is fine: its headers name each record's origin, and requeue reads them.
            out.push(Violation::SharedTopic {
                role,
                topic: topic.to_string(),
                first: processor.to_string(),
                second: list[1].1.to_string(),
            });
        }
    }
}
