//! Creation of the internal topics (changelog, DLQs, retry topics) a processor needs.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{error, info};

use super::names::TopicNames;
use crate::config::RuntimeConfig;
use crate::error::RuntimeError;
use crate::kafka;

/// Creates the changelog, DLQ and retry topics if missing, each with the partition count of
/// the inputs (co-partitioning: input partition `p` ↔ changelog/retry partition `p`).
/// Inputs themselves must exist (created by `evalstream topology apply`).
pub fn ensure_internal_topics(cfg: &RuntimeConfig, names: &TopicNames) -> Result<(), RuntimeError> {
    let meta_client: BaseConsumer = kafka::reader(cfg)
        .create()
        .map_err(|e| RuntimeError::kafka("create metadata client", e))?;
    let mut partitions = None;
    for input in &names.inputs {
        let physical = names.physical(input);
        let md = meta_client
            .fetch_metadata(Some(&physical), Duration::from_secs(10))
            .map_err(|e| RuntimeError::kafka("fetch metadata", e))?;
        let n = md
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if n == 0 {
            return Err(RuntimeError::Config(format!(
                "input topic {physical} does not exist; run `evalstream topology apply` first"
            )));
        }
        match partitions {
            None => partitions = Some(n),
            Some(m) if m != n => {
                return Err(RuntimeError::Config(format!(
                    "inputs must be co-partitioned, but {physical} has {n} partitions and the others {m}"
                )))
            }
            _ => {}
        }
    }
    let partitions = partitions.unwrap_or(1) as i32;
    let wanted = names.internal_topics();
    let admin: AdminClient<DefaultClientContext> =
        kafka::base(cfg).create().map_err(|e| RuntimeError::kafka("create admin client", e))?;
    let retention: Vec<Option<String>> =
        wanted.iter().map(|(_, _, r)| r.map(|ms| ms.to_string())).collect();
    let new_topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .zip(&retention)
        .map(|((name, cleanup, _), retention)| {
            let t = NewTopic::new(name, partitions, TopicReplication::Fixed(-1))
                .set("cleanup.policy", cleanup);
            match retention {
                Some(ms) => t.set("retention.ms", ms),
                None => t,
            }
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RuntimeError::Config(format!("admin runtime: {e}")))?;
    let results = rt
        .block_on(admin.create_topics(&new_topics, &AdminOptions::new()))
        .map_err(|e| RuntimeError::kafka("create topics", e))?;
    for r in results {
        match r {
            Ok(t) => info!(topic = %t, partitions, "created internal topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(RuntimeError::kafka(
                    "create internal topic",
                    KafkaError::AdminOp(code),
                ))
                .inspect_err(|_| error!(topic = %t, "could not create internal topic"));
            }
        }
    }
    Ok(())
}
