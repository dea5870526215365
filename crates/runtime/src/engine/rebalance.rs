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

use super::restore::{restore_changelog, start_position, Restored};
use super::{lock, Core, EngineConsumer, Position, Recovery};
use crate::error::RuntimeError;
use crate::processor::{Processor, State};

/// Consumer context: rebalance handling and statistics.
pub(super) struct EngineContext<P: Processor> {
    pub(super) core: Arc<Mutex<Core<P>>>,
}

impl<P: Processor> ClientContext for EngineContext<P> {
    /// Exports `evalstream_consumer_lag` per assigned partition from librdkafka's statistics.
    /// librdkafka's own `consumer_lag` stays -1 here: it subtracts the offset *it* committed,
    /// and this consumer never commits (offsets go through the producer's transactions). So the
    /// lag is computed as [`partition_lag`] of the partition's end and the engine's committed
    /// position. Held partitions (read-only) are not fetched, so their statistics are stale:
    /// `report_held_lag` measures those from the watermarks instead.
    fn stats(&self, stats: Statistics) {
        let core = lock(&self.core);
        if core.held {
            return;
        }
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                let tp = (topic.clone(), *p);
                if *p < 0 || !core.assigned.contains(&tp) {
                    continue;
                }
                let committed = core.committed.get(&tp).and_then(|pos| pos.next);
                let lag = partition_lag(
                    part.ls_offset,
                    part.hi_offset,
                    committed,
                    part.app_offset,
                    part.lo_offset,
                );
                if let Some(lag) = lag {
                    core.metrics.set_lag(core.names.logical(topic), *p, lag);
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
                if core.txn.is_some() || core.inflight.is_some() {
                    // Finish the open transaction before the partitions move: the next owner
                    // then resumes exactly after what we committed. A lost assignment means we
                    // were fenced already; aborting is the only safe option. A failed commit
                    // leaves nothing to restore here (the partitions go), but the producer must
                    // be usable for the next transaction.
                    let committed = !lost && core.commit_before_revoke(consumer);
                    if !committed && !core.abort_txn("revoke") {
                        core.recovery = Some(Recovery {
                            rebuild_producer: true,
                            ..core.recovery.unwrap_or_default()
                        });
                    }
                }
                core.drop_partitions();
                core.assigned.clear();
                core.paused.clear();
                if let Some(gate) = core.gate.as_mut() {
                    gate.take_waiting();
                }
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
                let tps: Vec<(String, i32)> =
                    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                core.assigned = tps.iter().cloned().collect();
                core.paused.clear();
                // librdkafka keeps a partition's pause flag across revoke and re-assignment
                // (librdkafka #1849), while the engine forgot on revoke why it paused it (a retry
                // not yet due, the input gate, read-only). Clear the flag before assigning: a
                // partition that must wait is paused again when its record is read. Resuming
                // before `assign`, not after, keeps the assigned start offsets (librdkafka #2190:
                // a pause/resume right after assign can supersede the assign's offset). A
                // partition this client never had has no flag: that error means nothing.
                let _ = consumer.resume(tpl);
                match core.restore_assignment(consumer, tpl, &tps) {
                    Ok(()) => {
                        // A fresh restore: nothing left to reset (a producer rebuild may be).
                        if let Some(rec) = core.recovery.as_mut() {
                            rec.reset = false;
                        }
                        if let Err(e) = consumer.assign(tpl) {
                            core.fatal = Some(RuntimeError::kafka("assign", e));
                        } else if core.held {
                            // Read-only: hold every partition; lag grows, nothing is dropped.
                            if let Err(e) = consumer.pause(tpl) {
                                core.fatal = Some(RuntimeError::kafka("pause (read-only)", e));
                            }
                        }
                        core.metrics.restored("assign");
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
                if core.recovery.is_none() {
                    core.health.set_restoring(false);
                }
            }
            other => {
                warn!(?other, "rebalance error; unassigning");
                if !core.abort_txn("rebalance_error") {
                    core.recovery = Some(Recovery {
                        rebuild_producer: true,
                        ..core.recovery.unwrap_or_default()
                    });
                }
                core.drop_partitions();
                core.assigned.clear();
                core.paused.clear();
                let _ = consumer.unassign();
            }
        }
    }
}

impl<P: Processor> Core<P> {
    /// Commits the open transaction before a revoke; false (and logged) when it failed.
    fn commit_before_revoke(&mut self, consumer: &EngineConsumer<P>) -> bool {
        match self.commit(consumer) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "commit before revoke failed; aborting");
                if matches!(e, RuntimeError::CommitOutcomeUnknown { .. }) {
                    // The outcome is unknown: a new producer settles it before anyone else
                    // can read past it.
                    self.txn = None;
                    self.recovery = Some(Recovery {
                        rebuild_producer: true,
                        ..self.recovery.unwrap_or_default()
                    });
                    return true;
                }
                false
            }
        }
    }

    /// Forgets every partition's state, positions and the processor's memory of it.
    fn drop_partitions(&mut self) {
        for p in self.states.keys() {
            self.processor.on_revoke(*p);
        }
        self.states.clear();
        self.positions.clear();
        self.committed.clear();
        self.commit_seq.clear();
    }

    /// Restores the partitions of a new assignment and sets their start offsets in `tpl`.
    fn restore_assignment(
        &mut self,
        consumer: &EngineConsumer<P>,
        tpl: &mut TopicPartitionList,
        tps: &[(String, i32)],
    ) -> Result<(), RuntimeError> {
        self.restore(consumer, tps)?;
        for (topic, partition) in tps {
            let pos = self.positions.get(&(topic.clone(), *partition)).copied();
            let offset = pos.map_or(Offset::Beginning, Position::as_offset);
            tpl.set_partition_offset(topic, *partition, offset)
                .map_err(|e| RuntimeError::kafka("set start offset", e))?;
        }
        Ok(())
    }

    /// Makes state, positions and the processor's memory of `tps` equal what the log proves:
    /// drops them, restores state from the changelog (all partitions in one read, to the true
    /// end), lets the processor rebuild its memory (`on_assign`), and sets each position to
    /// [`start_position`] of its marker, the group's committed offset and the processor's hint.
    /// Used on assignment and after every failed transaction.
    pub(super) fn restore(
        &mut self,
        consumer: &EngineConsumer<P>,
        tps: &[(String, i32)],
    ) -> Result<(), RuntimeError> {
        self.drop_partitions();
        let deadline = Instant::now() + self.reader.wait_limit();
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in tps {
            tpl.add_partition(topic, *p);
        }
        // The group's offsets. librdkafka asks for stable offsets (require_stable) as a
        // read_committed consumer: a pending transaction's offsets block the answer until it
        // ends, like the changelog read below.
        let group = self.reader.retry_transient(deadline, "committed offsets", || {
            consumer
                .committed_offsets(tpl.clone(), Duration::from_secs(10))
                .map_err(|e| RuntimeError::kafka("committed offsets", e))
        })?;
        let partitions: Vec<i32> =
            tps.iter().map(|(_, p)| *p).collect::<BTreeSet<i32>>().into_iter().collect();
        let mut restored = restore_changelog(&self.reader, &self.names.changelog, &partitions)?;
        let mut hints: HashMap<(String, i32), i64> = HashMap::new();
        let mut markers: HashMap<(String, i32), i64> = HashMap::new();
        for p in &partitions {
            let Restored { mut state, positions, commit_seq } =
                restored.remove(p).unwrap_or_default();
            let hint = self
                .processor
                .on_assign(*p, &mut State::new(&mut state), &self.reader)
                .map_err(|e| RuntimeError::Restore {
                    topic: self.names.changelog.clone(),
                    partition: *p,
                    message: format!("processor restore: {e}"),
                })?;
            for (logical, next) in hint {
                hints.insert((self.names.physical(&logical), *p), next);
            }
            for (topic, next) in positions {
                markers.insert((topic, *p), next);
            }
            self.states.insert(*p, state);
            self.commit_seq.insert(*p, commit_seq);
        }
        for (topic, partition) in tps {
            let from_marker = markers.get(&(topic.clone(), *partition)).copied();
            let from_group =
                group.find_partition(topic, *partition).and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let from_outputs = hints.get(&(topic.clone(), *partition)).copied();
            let next = start_position(from_marker, from_group, from_outputs);
            debug!(%topic, partition, ?from_marker, ?from_group, ?from_outputs, ?next, "start position");
            let pos = Position { next };
            self.positions.insert((topic.clone(), *partition), pos);
            self.committed.insert((topic.clone(), *partition), pos);
        }
        Ok(())
    }
}

/// Consumer lag of one partition from librdkafka statistics: the end a `read_committed`
/// consumer can reach (the last stable offset, else the high watermark when the broker did not
/// report one) minus the next offset to process. That is the engine's committed position, or
/// librdkafka's application position when it is further: librdkafka moves it past transaction
/// markers, which a committed position (the offset after the last *record*) never passes, so an
/// idle input written by transactions would otherwise show a lag of 1 forever. Without either,
/// the log start. `None` while librdkafka knows no end yet (statistics use negative values for
/// "unknown").
pub(super) fn partition_lag(
    ls_offset: i64,
    hi_offset: i64,
    committed: Option<i64>,
    app_offset: i64,
    lo_offset: i64,
) -> Option<i64> {
    let end = [ls_offset, hi_offset].into_iter().find(|o| *o >= 0)?;
    let app = (app_offset >= 0).then_some(app_offset);
    let next = match (committed, app) {
        (Some(c), Some(a)) => Some(c.max(a)),
        (c, a) => c.or(a).or((lo_offset >= 0).then_some(lo_offset)),
    }?;
    Some((end - next).max(0))
}

#[cfg(test)]
mod tests {
    use super::partition_lag;

    #[test]
    fn lag_is_stable_end_minus_committed_position() {
        assert_eq!(partition_lag(120, 130, Some(100), -1001, 0), Some(20));
        assert_eq!(partition_lag(120, 130, Some(100), 90, 0), Some(20));
        // No last stable offset reported: the high watermark.
        assert_eq!(partition_lag(-1, 130, Some(100), -1001, 0), Some(30));
    }

    #[test]
    fn a_trailing_transaction_marker_is_not_lag() {
        // Last record at 9 (committed position 10), its commit marker at 10, end 11: librdkafka's
        // application position moved past the marker.
        assert_eq!(partition_lag(11, 11, Some(10), 11, 0), Some(0));
    }

    #[test]
    fn without_a_committed_position_the_application_position_then_log_start() {
        assert_eq!(partition_lag(50, 50, None, 45, 0), Some(5));
        assert_eq!(partition_lag(50, 50, None, -1001, 10), Some(40));
    }

    #[test]
    fn unknown_end_or_position_exports_nothing_and_lag_is_never_negative() {
        assert_eq!(partition_lag(-1001, -1, Some(3), 3, 0), None);
        assert_eq!(partition_lag(10, 10, None, -1001, -1001), None);
        // A transaction marker after the last record: the position may pass the end.
        assert_eq!(partition_lag(10, 11, Some(11), 11, 0), Some(0));
    }
}
