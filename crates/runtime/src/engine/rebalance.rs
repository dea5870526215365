//! Rebalances: the consumer context that finishes the open transaction before partitions are
//! revoked and restores state for newly assigned partitions before they are consumed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tracing::{debug, error, info, warn};

use super::restore::restore_partition;
use super::{lock, Core, EngineConsumer, Position};
use crate::error::RuntimeError;
use crate::processor::{Processor, State};

/// Consumer context: rebalance handling and statistics.
pub(super) struct EngineContext<P: Processor> {
    pub(super) core: Arc<Mutex<Core<P>>>,
}

impl<P: Processor> ClientContext for EngineContext<P> {
    fn stats(&self, stats: Statistics) {
        let core = lock(&self.core);
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    core.metrics.set_lag(core.names.logical(topic), *p, part.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let core = lock(&self.core);
        if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::AllBrokersDown)) {
            core.health.set_kafka(false, reason);
        }
        warn!(%error, reason, "kafka client error");
    }
}

impl<P: Processor> ConsumerContext for EngineContext<P> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut core = lock(&self.core);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                core.metrics.rebalance(if lost { "lost" } else { "revoke" });
                if core.txn.is_some() {
                    // Finish the open transaction before the partitions move: the next owner
                    // then resumes exactly after what we committed. A lost assignment means we
                    // were fenced already; aborting is the only safe option.
                    let result = if lost { Err(None) } else { core.commit(consumer).map_err(Some) };
                    if let Err(e) = result {
                        if let Some(e) = e {
                            warn!(error = %e, "commit before revoke failed; aborting");
                        }
                        core.abort_quietly("revoke");
                    }
                }
                core.drop_partitions();
                if let Err(e) = consumer.unassign() {
                    warn!(error = %e, "unassign failed");
                }
                core.health.clear_assignment();
                core.metrics.clear_lag();
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                core.metrics.rebalance("assign");
                core.health.set_restoring(true);
                let started = Instant::now();
                match core.restore_assignment(consumer, tpl) {
                    Ok(()) => {
                        if let Err(e) = consumer.assign(tpl) {
                            core.fatal = Some(RuntimeError::kafka("assign", e));
                        } else if core.cfg.mode == crate::config::Mode::ReadOnly {
                            // Read-only: hold every partition; lag grows, nothing is dropped.
                            if let Err(e) = consumer.pause(tpl) {
                                core.fatal = Some(RuntimeError::kafka("pause (read-only)", e));
                            }
                        }
                        info!(
                            partitions = tpl.count(),
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "partitions assigned and state restored"
                        );
                        core.health.set_assignment(tpl.count());
                    }
                    Err(e) => {
                        error!(error = %e, "restore failed; stopping");
                        core.fatal = Some(e);
                    }
                }
                core.health.set_restoring(false);
            }
            other => {
                warn!(?other, "rebalance error; unassigning");
                core.abort_quietly("rebalance_error");
                core.drop_partitions();
                let _ = consumer.unassign();
            }
        }
    }
}

impl<P: Processor> Core<P> {
    /// Forgets every partition: state, positions, paused retries, and the processor's memory.
    fn drop_partitions(&mut self) {
        for p in self.states.keys() {
            self.processor.on_revoke(*p);
        }
        self.states.clear();
        self.positions.clear();
        self.committed.clear();
        self.paused.clear();
    }

    /// Restores state for every partition in `tpl` from the changelog and sets each
    /// topic-partition's start offset to what the changelog's last progress marker proves
    /// (falling back to the group's committed offset, then to the log start).
    fn restore_assignment(
        &mut self,
        consumer: &EngineConsumer<P>,
        tpl: &mut TopicPartitionList,
    ) -> Result<(), RuntimeError> {
        self.drop_partitions();
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
            .map_err(|e| RuntimeError::kafka("committed offsets", e))?;
        let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let mut markers: HashMap<(String, i32), i64> = HashMap::new();
        let mut hints: HashMap<(String, i32), i64> = HashMap::new();
        for p in partitions {
            let (mut state, m) =
                restore_partition(&self.cfg, &self.codec, &self.names.changelog, p)?;
            for (topic, next) in m {
                markers.insert((topic, p), next);
            }
            let reader = crate::reader::TopicReader::new(&self.cfg, &self.codec);
            let hint =
                self.processor.on_assign(p, &mut State::new(&mut state), &reader).map_err(|e| {
                    RuntimeError::Restore {
                        topic: self.names.changelog.clone(),
                        partition: p,
                        message: format!("processor restore: {e}"),
                    }
                })?;
            for (logical, next) in hint {
                hints.insert((self.names.physical(&logical), p), next);
            }
            self.states.insert(p, state);
        }
        let elems: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        for (topic, partition) in elems {
            let from_marker = markers.get(&(topic.clone(), partition)).copied();
            let from_group =
                committed.find_partition(&topic, partition).and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            // Markers win: on a correct broker they equal the group offsets; on a broker that
            // exposes aborted transactions they are what the visible log proves.
            // A processor whose outputs prove more progress (its on_assign hint) moves the start
            // forward, never back.
            let from_outputs = hints.get(&(topic.clone(), partition)).copied();
            let next = match (from_marker.or(from_group), from_outputs) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let pos = Position { next };
            tpl.set_partition_offset(&topic, partition, pos.as_offset())
                .map_err(|e| RuntimeError::kafka("set start offset", e))?;
            debug!(%topic, partition, ?from_marker, ?from_group, ?from_outputs, "start position");
            self.positions.insert((topic.clone(), partition), pos);
            self.committed.insert((topic, partition), pos);
        }
        Ok(())
    }
}
