//! `apply`: make a cluster match the topology without ever destroying anything.
//!
//! ```text
//!   Metadata (all topics) ──► missing? ──► CreateTopics (partitions, replication, cleanup.policy,
//!        │                       │          retention.ms); TopicAlreadyExists = someone was faster,
//!        │                       │          so the topic is checked like an existing one
//!        ▼                       ▼
//!   existing ──► partition count and replication factor from Metadata
//!            └─► cleanup.policy and retention.ms from DescribeConfigs
//!                 (a broker that cannot answer leaves them "not checked", never a failure)
//! ```
//!
//! Drift is reported, never repaired: shrinking partitions is impossible and growing them moves
//! keys to other partitions, which breaks co-partitioned state; changing retention or cleanup
//! can delete data. Those are operator decisions, so `apply` only says what differs.
//!
//! Partition counts come from the metadata API (every broker has it); configs from
//! DescribeConfigs, which young Kafka-compatible brokers may lack.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::ClientConfig;
use serde::Serialize;

use super::render::retention_label;
use super::{TopicSpec, Topology, TopologyError};

/// How long one admin request may take on the broker (CreateTopics waits for the controller).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Our own bound around each admin future, a little above the request timeout, so an
/// unresponsive broker yields [`TopologyError::Timeout`] instead of a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(35);
/// Bound of one metadata request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for created topics to show up in metadata. Kafka propagates metadata
/// asynchronously; waiting here means a processor started right after `apply` finds its topics,
/// and a second `apply` right after the first sees them as existing.
const VISIBLE_WAIT: Duration = Duration::from_secs(15);

type Admin = AdminClient<DefaultClientContext>;

/// What `apply` did, or would do, per topic, in topology order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// The topic prefix that was applied.
    pub prefix: String,
    /// True when nothing was created (`--dry-run`).
    pub dry_run: bool,
    /// One entry per topic of the topology.
    pub topics: Vec<TopicOutcome>,
}

/// The result for one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicOutcome {
    /// The topic as the topology wants it (name with prefix).
    pub spec: TopicSpec,
    /// What happened.
    pub status: TopicStatus,
    /// Settings that differ from the topology (status [`TopicStatus::Drift`]).
    pub drift: Vec<Drift>,
    /// Settings that could not be read, and why; they are neither ok nor drift.
    pub unchecked: Vec<Unchecked>,
    /// Why creation failed (status [`TopicStatus::Failed`]).
    pub error: Option<String>,
}

/// The verdict for one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicStatus {
    /// It was missing and has been created.
    Created,
    /// It is missing and would be created (dry run).
    WouldCreate,
    /// It exists and every setting that could be read matches.
    Ok,
    /// It exists and at least one setting differs; nothing was changed.
    Drift,
    /// It was missing and the broker refused to create it.
    Failed,
}

impl TopicStatus {
    fn label(self) -> &'static str {
        match self {
            TopicStatus::Created => "created",
            TopicStatus::WouldCreate => "would create",
            TopicStatus::Ok => "ok",
            TopicStatus::Drift => "drift",
            TopicStatus::Failed => "failed",
        }
    }
}

/// One setting that differs between the topology and the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// `partitions`, `replication.factor`, `cleanup.policy` or `retention.ms`.
    pub setting: String,
    /// What the topology says.
    pub expected: String,
    /// What the cluster has.
    pub actual: String,
}

/// One setting `apply` could not read, e.g. because the broker does not support DescribeConfigs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unchecked {
    /// The setting.
    pub setting: String,
    /// Why it could not be read.
    pub reason: String,
}

impl ApplyReport {
    /// True when an existing topic differs from the topology (`evalstream topology apply` exits 3).
    pub fn has_drift(&self) -> bool {
        self.topics.iter().any(|t| t.status == TopicStatus::Drift)
    }

    /// True when a topic could not be created.
    pub fn has_failures(&self) -> bool {
        self.topics.iter().any(|t| t.status == TopicStatus::Failed)
    }

    /// How many topics ended with `status`.
    pub fn count(&self, status: TopicStatus) -> usize {
        self.topics.iter().filter(|t| t.status == status).count()
    }

    /// The outcome for `topic` (name with prefix).
    pub fn outcome(&self, topic: &str) -> Option<&TopicOutcome> {
        self.topics.iter().find(|t| t.spec.name == topic)
    }

    /// A report for terminals: one line per topic, drift details under it, reasons for unchecked
    /// settings once at the end, and a summary line.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let width = self.topics.iter().map(|t| t.spec.name.len()).max().unwrap_or(0);
        let mut reasons: Vec<&str> = Vec::new();
        for t in &self.topics {
            let _ = write!(s, "{:12}  {:width$}", t.status.label(), t.spec.name);
            match t.status {
                TopicStatus::Created | TopicStatus::WouldCreate => {
                    let _ = write!(
                        s,
                        "  ({} partitions, rf {}, {}, retention {})",
                        t.spec.partitions,
                        t.spec.replication_factor,
                        t.spec.cleanup_policy,
                        retention_label(t.spec.retention_ms)
                    );
                }
                TopicStatus::Failed => {
                    let _ = write!(s, "  {}", t.error.as_deref().unwrap_or("unknown error"));
                }
                TopicStatus::Ok | TopicStatus::Drift => {}
            }
            if !t.unchecked.is_empty() {
                let names: Vec<&str> = t.unchecked.iter().map(|u| u.setting.as_str()).collect();
                let _ = write!(s, "  (not checked: {})", names.join(", "));
                for u in &t.unchecked {
                    if !reasons.contains(&u.reason.as_str()) {
                        reasons.push(&u.reason);
                    }
                }
            }
            // The name is padded for the columns after it; lines without them end at the name.
            let trimmed = s.trim_end_matches(' ').len();
            s.truncate(trimmed);
            s.push('\n');
            for d in &t.drift {
                let _ = writeln!(
                    s,
                    "{:12}    {}: expected {}, actual {}",
                    "", d.setting, d.expected, d.actual
                );
            }
        }
        for r in reasons {
            let _ = writeln!(s, "note: not checked because {r}");
        }
        let _ = writeln!(
            s,
            "summary{}: {} created, {} would create, {} ok, {} drift, {} failed",
            if self.dry_run { " (dry run)" } else { "" },
            self.count(TopicStatus::Created),
            self.count(TopicStatus::WouldCreate),
            self.count(TopicStatus::Ok),
            self.count(TopicStatus::Drift),
            self.count(TopicStatus::Failed),
        );
        s
    }
}

impl Topology {
    /// Creates the topics of this topology (names prefixed with `prefix`) that are missing on
    /// the cluster reached with `admin` (from [`crate::kafka::base`]), and checks the existing
    /// ones for drift without changing them. With `dry_run` nothing is created. Safe to run any
    /// number of times, also concurrently: a topic someone else creates first is checked, not
    /// recreated.
    ///
    /// Blocking. It drives the admin client on a small current-thread runtime of its own; when
    /// called from inside a tokio runtime it does so on a scoped thread, because a runtime cannot
    /// be started inside another.
    ///
    /// Errors are for the whole run (unreachable broker, metadata failure); a topic the broker
    /// refuses to create is reported as [`TopicStatus::Failed`] in the report.
    pub fn apply(
        &self,
        admin: &ClientConfig,
        prefix: &str,
        dry_run: bool,
    ) -> Result<ApplyReport, TopologyError> {
        let target = self.with_prefix(prefix)?;
        let run = || apply_blocking(&target, admin, prefix, dry_run);
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(run).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        } else {
            run()
        }
    }
}

/// What the metadata API says about one topic.
#[derive(Debug, Clone)]
struct Observed {
    /// Partition count, or why the broker could not give it.
    partitions: Result<i32, String>,
    /// Replica count of the widest partition; `None` when the broker lists no replicas.
    replication_factor: Option<i32>,
}

fn apply_blocking(
    target: &Topology,
    admin_cfg: &ClientConfig,
    prefix: &str,
    dry_run: bool,
) -> Result<ApplyReport, TopologyError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(TopologyError::Runtime)?;
    let admin: Admin = admin_cfg
        .create()
        .map_err(|error| TopologyError::Kafka { context: "creating the admin client", error })?;
    let opts = AdminOptions::new()
        .request_timeout(Some(REQUEST_TIMEOUT))
        .operation_timeout(Some(REQUEST_TIMEOUT));

    let mut observed = fetch_metadata(&admin)?;
    let mut outcomes: HashMap<String, TopicOutcome> = HashMap::new();
    let outcome = |spec: &TopicSpec, status| TopicOutcome {
        spec: spec.clone(),
        status,
        drift: Vec::new(),
        unchecked: Vec::new(),
        error: None,
    };

    let missing: Vec<&TopicSpec> =
        target.topics.iter().filter(|t| !observed.contains_key(&t.name)).collect();
    let mut existing: Vec<&TopicSpec> =
        target.topics.iter().filter(|t| observed.contains_key(&t.name)).collect();

    if dry_run {
        for t in &missing {
            outcomes.insert(t.name.clone(), outcome(t, TopicStatus::WouldCreate));
        }
    } else if !missing.is_empty() {
        let retention: Vec<Option<String>> =
            missing.iter().map(|t| t.retention_ms.map(|r| r.to_string())).collect();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&retention)
            .map(|(t, retention)| {
                let topic = NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(t.replication_factor),
                )
                .set("cleanup.policy", t.cleanup_policy.as_kafka_str());
                match retention {
                    Some(r) => topic.set("retention.ms", r),
                    None => topic,
                }
            })
            .collect();
        let results =
            rt.block_on(bounded("creating topics", admin.create_topics(&new_topics, &opts)))?;
        let by_name: HashMap<&str, &TopicSpec> =
            missing.iter().map(|t| (t.name.as_str(), *t)).collect();
        let mut appeared = Vec::new();
        for result in results {
            let (name, code) = match result {
                Ok(name) => (name, None),
                Err((name, code)) => (name, Some(code)),
            };
            let Some(spec) = by_name.get(name.as_str()).copied() else {
                continue; // the broker answered for a topic we did not ask about
            };
            match code {
                None => {
                    outcomes.insert(name.clone(), outcome(spec, TopicStatus::Created));
                    appeared.push(name);
                }
                // Created concurrently by someone else: check it like any existing topic.
                Some(RDKafkaErrorCode::TopicAlreadyExists) => {
                    existing.push(spec);
                    appeared.push(name);
                }
                Some(code) => {
                    let mut o = outcome(spec, TopicStatus::Failed);
                    o.error = Some(code.to_string());
                    outcomes.insert(name, o);
                }
            }
        }
        // A topic the broker never answered for is a failure, not a silent omission.
        for t in &missing {
            if !outcomes.contains_key(&t.name) && !existing.iter().any(|e| e.name == t.name) {
                let mut o = outcome(t, TopicStatus::Failed);
                o.error = Some("the broker did not answer for this topic".to_string());
                outcomes.insert(t.name.clone(), o);
            }
        }
        if !appeared.is_empty() {
            observed = wait_visible(&admin, &appeared, observed)?;
        }
    }

    let configs = if existing.is_empty() {
        HashMap::new()
    } else {
        describe_configs(&rt, &admin, &existing, &opts)
    };
    for spec in existing {
        let mut o = outcome(spec, TopicStatus::Ok);
        check_metadata(spec, observed.get(&spec.name), &mut o);
        match configs.get(&spec.name) {
            Some(Ok(values)) => check_configs(spec, values, &mut o),
            Some(Err(reason)) => unchecked_configs(spec, reason, &mut o),
            None => unchecked_configs(spec, "the broker returned no configs", &mut o),
        }
        if !o.drift.is_empty() {
            o.status = TopicStatus::Drift;
        }
        outcomes.insert(spec.name.clone(), o);
    }

    let topics = target.topics.iter().filter_map(|t| outcomes.remove(&t.name)).collect();
    Ok(ApplyReport { prefix: prefix.to_string(), dry_run, topics })
}

/// Runs an admin future with our own deadline.
async fn bounded<T>(
    context: &'static str,
    call: impl Future<Output = KafkaResult<T>>,
) -> Result<T, TopologyError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(error)) => Err(TopologyError::Kafka { context, error }),
        Err(_) => Err(TopologyError::Timeout { context, after: CALL_TIMEOUT }),
    }
}

/// All topics of the cluster. Asking for all (rather than for ours by name) also avoids
/// auto-creating topics on brokers with `auto.create.topics.enable`.
fn fetch_metadata(admin: &Admin) -> Result<HashMap<String, Observed>, TopologyError> {
    let metadata = admin
        .inner()
        .fetch_metadata(None, METADATA_TIMEOUT)
        .map_err(|error| TopologyError::Kafka { context: "reading cluster metadata", error })?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| {
            let partitions = match t.error() {
                Some(e) => Err(format!("metadata error: {}", RDKafkaErrorCode::from(e))),
                None => Ok(t.partitions().len() as i32),
            };
            let replication_factor =
                t.partitions().iter().map(|p| p.replicas().len() as i32).max().filter(|&n| n > 0);
            (t.name().to_string(), Observed { partitions, replication_factor })
        })
        .collect())
}

/// Polls metadata until every topic in `names` is listed, or [`VISIBLE_WAIT`] passes (then the
/// latest view is returned as it is; the report will say what could not be checked).
fn wait_visible(
    admin: &Admin,
    names: &[String],
    mut observed: HashMap<String, Observed>,
) -> Result<HashMap<String, Observed>, TopologyError> {
    let deadline = Instant::now() + VISIBLE_WAIT;
    loop {
        let visible = names
            .iter()
            .all(|n| observed.get(n).is_some_and(|o| matches!(o.partitions, Ok(p) if p > 0)));
        if visible || Instant::now() >= deadline {
            return Ok(observed);
        }
        std::thread::sleep(Duration::from_millis(200));
        observed = fetch_metadata(admin)?;
    }
}

/// Topic configs by topic name: the values the broker reported, or why they could not be read.
type Configs = HashMap<String, Result<HashMap<String, Option<String>>, String>>;

fn describe_configs(
    rt: &tokio::runtime::Runtime,
    admin: &Admin,
    topics: &[&TopicSpec],
    opts: &AdminOptions,
) -> Configs {
    let resources: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(&t.name)).collect();
    let results = match rt
        .block_on(bounded("describing topic configs", admin.describe_configs(&resources, opts)))
    {
        Ok(results) => results,
        // Not supported, not authorized, timed out: report "not checked", never fail the run.
        Err(e) => {
            let reason = format!("DescribeConfigs failed: {e}");
            return topics.iter().map(|t| (t.name.clone(), Err(reason.clone()))).collect();
        }
    };
    // Results come in request order; an error result does not name its topic, so pair by index.
    topics
        .iter()
        .zip(results.into_iter().map(Some).chain(std::iter::repeat_with(|| None)))
        .map(|(t, result)| {
            let value = match result {
                Some(Ok(resource)) => Ok(resource
                    .entries
                    .into_iter()
                    .map(|e| (e.name, e.value))
                    .collect::<HashMap<_, _>>()),
                Some(Err(code)) => Err(format!("DescribeConfigs failed for the topic: {code}")),
                None => Err("DescribeConfigs returned fewer results than asked".to_string()),
            };
            (t.name.clone(), value)
        })
        .collect()
}

fn check_metadata(spec: &TopicSpec, observed: Option<&Observed>, o: &mut TopicOutcome) {
    let Some(observed) = observed else {
        for setting in ["partitions", "replication.factor"] {
            o.unchecked.push(Unchecked {
                setting: setting.to_string(),
                reason: "the topic exists but is not in the cluster metadata yet".to_string(),
            });
        }
        return;
    };
    match &observed.partitions {
        Ok(actual) if *actual != spec.partitions => o.drift.push(Drift {
            setting: "partitions".to_string(),
            expected: spec.partitions.to_string(),
            actual: actual.to_string(),
        }),
        Ok(_) => {}
        Err(reason) => o
            .unchecked
            .push(Unchecked { setting: "partitions".to_string(), reason: reason.clone() }),
    }
    match observed.replication_factor {
        Some(actual) if actual != spec.replication_factor => o.drift.push(Drift {
            setting: "replication.factor".to_string(),
            expected: spec.replication_factor.to_string(),
            actual: actual.to_string(),
        }),
        Some(_) => {}
        None => o.unchecked.push(Unchecked {
            setting: "replication.factor".to_string(),
            reason: "the broker lists no replicas in its metadata".to_string(),
        }),
    }
}

/// The settings `apply` reads with DescribeConfigs for `spec`, with their expected values.
fn expected_configs(spec: &TopicSpec) -> Vec<(&'static str, String)> {
    let mut v = vec![("cleanup.policy", spec.cleanup_policy.as_kafka_str().to_string())];
    if let Some(r) = spec.retention_ms {
        v.push(("retention.ms", r.to_string()));
    }
    v
}

fn check_configs(spec: &TopicSpec, values: &HashMap<String, Option<String>>, o: &mut TopicOutcome) {
    for (setting, expected) in expected_configs(spec) {
        match values.get(setting) {
            Some(Some(actual)) => {
                if !same_config(setting, &expected, actual) {
                    o.drift.push(Drift {
                        setting: setting.to_string(),
                        expected,
                        actual: actual.clone(),
                    });
                }
            }
            _ => o.unchecked.push(Unchecked {
                setting: setting.to_string(),
                // Kafka reports every config, defaults included; some compatible brokers (Tansu)
                // report only those set explicitly, so absence cannot be read as a default.
                reason: format!(
                    "the broker did not report {setting} (some brokers report only settings given at creation)"
                ),
            }),
        }
    }
}

fn unchecked_configs(spec: &TopicSpec, reason: &str, o: &mut TopicOutcome) {
    for (setting, _) in expected_configs(spec) {
        o.unchecked.push(Unchecked { setting: setting.to_string(), reason: reason.to_string() });
    }
}

/// Compares a config value as Kafka means it: `cleanup.policy` is a list (`compact,delete` and
/// `delete,compact` are the same), numbers may carry whitespace.
fn same_config(setting: &str, expected: &str, actual: &str) -> bool {
    if setting == "cleanup.policy" {
        let set = |s: &str| -> HashSet<String> {
            s.split(',').map(|p| p.trim().to_ascii_lowercase()).filter(|p| !p.is_empty()).collect()
        };
        set(expected) == set(actual)
    } else {
        expected.trim() == actual.trim()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CleanupPolicy, ValueSchema};
    use super::*;

    fn spec() -> TopicSpec {
        TopicSpec {
            name: "p.a".into(),
            partitions: 4,
            replication_factor: 1,
            cleanup_policy: CleanupPolicy::Delete,
            retention_ms: Some(-1),
            schema: ValueSchema::Raw,
            doc: "d".into(),
        }
    }

    fn blank(spec: &TopicSpec) -> TopicOutcome {
        TopicOutcome {
            spec: spec.clone(),
            status: TopicStatus::Ok,
            drift: vec![],
            unchecked: vec![],
            error: None,
        }
    }

    #[test]
    fn partition_and_config_drift_name_expected_and_actual() {
        let s = spec();
        let mut o = blank(&s);
        let observed = Observed { partitions: Ok(2), replication_factor: Some(1) };
        check_metadata(&s, Some(&observed), &mut o);
        let values = HashMap::from([
            ("cleanup.policy".to_string(), Some("compact".to_string())),
            ("retention.ms".to_string(), Some("-1".to_string())),
        ]);
        check_configs(&s, &values, &mut o);
        let settings: Vec<(&str, &str, &str)> = o
            .drift
            .iter()
            .map(|d| (d.setting.as_str(), d.expected.as_str(), d.actual.as_str()))
            .collect();
        assert_eq!(settings, [("partitions", "4", "2"), ("cleanup.policy", "delete", "compact")]);
        assert!(o.unchecked.is_empty());
    }

    #[test]
    fn unreadable_configs_are_unchecked_not_drift() {
        let s = spec();
        let mut o = blank(&s);
        unchecked_configs(&s, "DescribeConfigs failed: unsupported", &mut o);
        assert!(o.drift.is_empty());
        let names: Vec<&str> = o.unchecked.iter().map(|u| u.setting.as_str()).collect();
        assert_eq!(names, ["cleanup.policy", "retention.ms"]);
        let mut o = blank(&s);
        check_configs(&s, &HashMap::new(), &mut o);
        assert_eq!(o.unchecked.len(), 2);
        assert!(o.drift.is_empty());
    }

    #[test]
    fn cleanup_policy_compares_as_a_set() {
        assert!(same_config("cleanup.policy", "compact,delete", "delete, compact"));
        assert!(!same_config("cleanup.policy", "compact", "compact,delete"));
        assert!(same_config("retention.ms", "-1", " -1"));
    }

    #[test]
    fn report_text_and_exit_signals() {
        let s = spec();
        let mut drift = blank(&s);
        drift.status = TopicStatus::Drift;
        drift.drift.push(Drift {
            setting: "partitions".into(),
            expected: "4".into(),
            actual: "2".into(),
        });
        let mut created = blank(&TopicSpec { name: "p.b".into(), ..s.clone() });
        created.status = TopicStatus::Created;
        let report =
            ApplyReport { prefix: "p.".into(), dry_run: false, topics: vec![drift, created] };
        assert!(report.has_drift());
        assert!(!report.has_failures());
        let text = report.render_text();
        assert!(text.contains("drift         p.a"), "{text}");
        assert!(text.contains("partitions: expected 4, actual 2"), "{text}");
        assert!(text.contains("created       p.b  (4 partitions, rf 1, delete, retention forever)"));
        assert!(text.contains("1 created, 0 would create, 0 ok, 1 drift, 0 failed"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["topics"][0]["status"], "drift");
        assert_eq!(json["topics"][1]["spec"]["schema"], "raw");
    }
}
