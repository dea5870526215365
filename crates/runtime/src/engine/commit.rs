//! Transactions: begin, commit, abort, and recovery after a failure.
//!
//! ```text
//!  commit:  1 changed state keys ─► changelog[p]      (evalstream.txn, evalstream.progress)
//!           ── handed to a commit thread (inflight.rs); the engine goes on with the next records,
//!              whose transaction the producer begins once this one committed ──
//!           2 markers view only: flush, everything of the transaction delivered
//!           3 send_offsets_to_transaction(positions of every partition written, group metadata)
//!             └─ a zombie of an older group generation fails here, before any marker exists
//!           4 one progress marker per partition written: positions of all its input topics
//!           5 flush (fails fast on a refused record), then
//!             commit_transaction ── retriable failures exhausted ─► outcome unknown
//!  failure: abort (records in flight drained first) or, when the producer is unusable or the
//!           outcome unknown, a new producer (init_transactions settles what is pending);
//!           then every partition is restored from the log, exactly as on assignment, and the
//!           records of the transaction that filled meanwhile are read again
//! ```

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{error, info, warn};

use super::failpoint::Point;
use super::inflight::{InFlight, Marker, Tail};
use super::producer::{new_producer, Outgoing};
use super::routing::text;
use super::{Core, EngineConsumer, OpenTxn, Poison, Recovery, TxnCounts};
use crate::config::CommittedView;
use crate::error::{classify_kafka, Disposition, RuntimeError};
use crate::headers;
use crate::processor::Processor;
use crate::progress::{ProgressMarker, ProgressPosition, ProgressRef};
use crate::state;

/// Timeout for blocking transaction calls.
pub(super) const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounded retries of a retriable transaction call.
const MAX_TXN_RETRIES: u32 = 6;
/// How long an abort waits for records in flight to be acknowledged first. Aborting while the
/// transaction's first records are in flight can make the broker refuse the abort with
/// INVALID_TXN_STATE and librdkafka treat that as fatal (librdkafka issue #4849); a drained
/// transaction aborts cleanly. If the records cannot be delivered (the broker is away), the
/// abort goes ahead and a failure rebuilds the producer instead.
const ABORT_DRAIN: Duration = Duration::from_secs(5);
/// Producers created without a commit in between before the engine stops: another live
/// instance with the same `instance_id` fences ours every time we fence it.
const MAX_REBUILDS_WITHOUT_COMMIT: u32 = 8;
/// Recovery attempts (about half a second apart) before the engine gives up and stops; the
/// supervisor then restarts it with a fresh client.
const MAX_RECOVERY_ATTEMPTS: u32 = 240;

/// Calls a transaction API, retrying only errors librdkafka marks retriable, with backoff.
pub(super) fn retry_txn_call(
    what: &'static str,
    mut f: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), RuntimeError> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if classify_kafka(&e) == Disposition::Backoff && attempt < MAX_TXN_RETRIES => {
                warn!(what, attempt, error = %e, "retriable transaction error; backing off");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            Err(e) => return Err(RuntimeError::kafka(what, e)),
        }
    }
}

impl<P: Processor> Core<P> {
    /// Opens a transaction unless one is open. While the previous transaction is still
    /// committing, the producer cannot begin another: the new one starts as not begun and its
    /// records are deferred until that commit succeeded ([`Core::begin_deferred`]).
    pub(super) fn begin_if_needed(&mut self) -> Result<(), RuntimeError> {
        if self.txn.is_none() {
            let begun = self.inflight.is_none();
            if begun {
                retry_txn_call("begin_transaction", || self.producer.begin_transaction())?;
            }
            self.txn_seq += 1;
            self.txn = Some(OpenTxn {
                id: format!("{}-{:08x}-{}", self.cfg.instance_id, self.nonce, self.txn_seq),
                started: Instant::now(),
                records: 0,
                touched: BTreeSet::new(),
                partitions: BTreeSet::new(),
                isolated: None,
                dead_lettered_poison: Vec::new(),
                counts: TxnCounts::default(),
                begun,
                deferred: Vec::new(),
            });
        }
        Ok(())
    }

    /// The `evalstream.progress` value of records written for `partition` in the open
    /// transaction: the marker that will commit them.
    pub(super) fn progress_ref(&self, partition: i32) -> String {
        ProgressRef {
            changelog: self.names.changelog.clone(),
            partition,
            commit_seq: self.commit_seq.get(&partition).copied().unwrap_or(0) + 1,
        }
        .header_value()
    }

    /// Commits the open transaction and waits for the outcome (a revoke, a shutdown, a switch
    /// to read-only, an input to be processed alone): the transaction in flight first, then
    /// the open one.
    pub(super) fn commit(&mut self, consumer: &EngineConsumer<P>) -> Result<(), RuntimeError> {
        self.commit_pipelined(consumer)?;
        self.settle()
    }

    /// Commits the open transaction without waiting for the outcome: after step 1 of the
    /// module doc the rest runs on a commit thread ([`InFlight`]) while the engine processes
    /// the next records. A transaction still in flight is settled first: one commit at a time.
    ///
    /// [`InFlight`]: super::inflight::InFlight
    pub(super) fn commit_pipelined(
        &mut self,
        consumer: &EngineConsumer<P>,
    ) -> Result<(), RuntimeError> {
        self.settle()?;
        let Some(txn) = self.txn.as_ref() else { return Ok(()) };
        let txn_id = txn.id.clone();
        let touched: Vec<(String, i32)> = txn.touched.iter().cloned().collect();
        let mut partitions = txn.partitions.clone();
        partitions.extend(touched.iter().map(|(_, p)| *p));
        let changelog = self.names.changelog.clone();

        // 1. State changes of every partition written.
        for p in &partitions {
            let changes = self.states.get_mut(p).map(|s| s.take_changes()).unwrap_or_default();
            if changes.is_empty() {
                continue;
            }
            let progress = self.progress_ref(*p);
            for (key, value) in changes {
                let k = state::state_changelog_key(&key);
                let h = OwnedHeaders::new()
                    .insert(text(headers::TXN, &txn_id))
                    .insert(text(headers::PROGRESS, &progress));
                self.send(Outgoing::to(&changelog, Some(*p), h).key(Some(k)).value(value))?;
            }
        }
        self.faults.at(Point::AfterOutputs);

        // 3. Offsets: the position of every input topic of every partition written (not only
        //    the ones that moved), so that even a transaction of punctuation outputs alone goes
        //    through the group's generation check.
        let positions = self.marker_positions(&partitions);
        let mut offsets = TopicPartitionList::new();
        for (p, tps) in &positions {
            for (topic, next) in tps {
                offsets
                    .add_partition_offset(topic, *p, Offset::Offset(*next))
                    .map_err(|e| RuntimeError::kafka("offsets", e))?;
            }
        }
        let group = if offsets.count() > 0 {
            Some(
                consumer
                    .group_metadata()
                    .ok_or_else(|| RuntimeError::Config("consumer has no group metadata".into()))?,
            )
        } else {
            None
        };

        // 4. One marker per partition written, covering all its input topics: atomic on any
        //    broker, and the latest marker alone says where the partition resumes. Encoded
        //    here, produced by the commit thread after the offsets.
        let mut markers = Vec::with_capacity(partitions.len());
        for p in &partitions {
            let marker = ProgressMarker {
                partition: *p,
                txn: txn_id.clone(),
                instance: self.cfg.instance_id.clone(),
                commit_seq: self.commit_seq.get(p).copied().unwrap_or(0) + 1,
                positions: positions
                    .get(p)
                    .into_iter()
                    .flatten()
                    .map(|(topic, next)| ProgressPosition {
                        topic: topic.clone(),
                        next_offset: *next,
                    })
                    .collect(),
            };
            let bytes = self.codec.encode_record(&changelog, &marker).map_err(|e| {
                RuntimeError::Encode { topic: changelog.clone(), message: e.to_string() }
            })?;
            let h = OwnedHeaders::new()
                .insert(text(headers::TXN, &txn_id))
                .insert(text(headers::PROGRESS, &self.progress_ref(*p)));
            markers.push(Marker { partition: *p, bytes, headers: h });
        }

        // The records of the next transaction name the marker after these.
        for p in &partitions {
            *self.commit_seq.entry(*p).or_default() += 1;
        }
        let committing: Vec<((String, i32), super::Position)> = touched
            .iter()
            .filter_map(|tp| self.positions.get(tp).map(|pos| (tp.clone(), *pos)))
            .collect();
        let Some(txn) = self.txn.take() else { return Ok(()) };
        let tail = Tail {
            producer: self.producer.clone(),
            rejections: self.rejections.clone(),
            faults: self.faults.clone(),
            markers_view: self.cfg.committed_view == CommittedView::Markers,
            changelog,
            offsets,
            group,
            markers,
        };
        self.inflight = Some(InFlight::start(txn, committing, tail)?);
        Ok(())
    }

    /// Per partition written, the next offset of every assigned input topic whose position is
    /// known (physical topic names, sorted).
    fn marker_positions(
        &self,
        partitions: &BTreeSet<i32>,
    ) -> std::collections::BTreeMap<i32, Vec<(String, i64)>> {
        let mut out: std::collections::BTreeMap<i32, Vec<(String, i64)>> = Default::default();
        for (topic, p) in &self.assigned {
            if !partitions.contains(p) {
                continue;
            }
            if let Some(next) = self.positions.get(&(topic.clone(), *p)).and_then(|pos| pos.next) {
                out.entry(*p).or_default().push((topic.clone(), next));
            }
        }
        out
    }

    pub(super) fn publish_counts(&self, counts: &TxnCounts) {
        for (topic, n) in &counts.inputs {
            self.metrics.records_in_n(topic, *n);
        }
        for (topic, n) in &counts.outputs {
            self.metrics.records_out(topic, *n);
        }
        for ((topic, class), n) in &counts.dead_lettered {
            for _ in 0..*n {
                self.metrics.dead_lettered(topic, class.as_str());
            }
        }
        for (topic, n) in &counts.retried {
            for _ in 0..*n {
                self.metrics.retried(topic);
            }
        }
    }

    /// Aborts the open transaction, if any. Returns false when the abort failed (the producer
    /// must then be rebuilt before the next transaction).
    pub(super) fn abort_txn(&mut self, reason: &str) -> bool {
        if self.inflight.is_some() {
            // Whatever the commit in flight answers, what is open afterwards is aborted: the
            // failed transaction itself, or the one that filled meanwhile.
            let _ = self.settle();
        }
        let Some(txn) = self.txn.take() else { return true };
        self.metrics.txn_aborted(reason);
        if !txn.begun {
            // The producer never began it: its deferred records are simply dropped.
            return true;
        }
        let deadline = Instant::now() + ABORT_DRAIN;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        match self.producer.abort_transaction(TXN_TIMEOUT) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "abort_transaction failed; the producer will be rebuilt");
                false
            }
        }
    }

    /// Applies the error classification after a failure in `handle`, `punctuate` or `commit`:
    /// the open transaction is aborted (or the producer rebuilt), and every assigned partition
    /// is restored from the log. Returns the error when the processor must stop.
    pub(super) fn recover(
        &mut self,
        consumer: &EngineConsumer<P>,
        err: RuntimeError,
    ) -> Option<RuntimeError> {
        let mut err = err;
        if self.inflight.is_some() {
            // The commit in flight is settled first. If it failed too, its failure decides the
            // recovery (a rebuilt producer, say), unless this one stops the processor anyway.
            if let Err(commit_err) = self.settle() {
                if !matches!(
                    err.disposition(),
                    Disposition::Stop | Disposition::DeadLetter | Disposition::Retry
                ) {
                    warn!(error = %err, "failure while the previous transaction was committing");
                    err = commit_err;
                }
            }
        }
        let disposition = err.disposition();
        warn!(error = %err, ?disposition, "transaction failed");
        if matches!(disposition, Disposition::Stop | Disposition::DeadLetter | Disposition::Retry) {
            self.abort_txn("stop");
            return Some(err);
        }
        let isolated = self.txn.as_ref().and_then(|t| t.isolated.clone());
        let reason = match &err {
            RuntimeError::CommitOutcomeUnknown { .. } => "commit_unknown",
            RuntimeError::OutputRejected { .. } => "output_rejected",
            _ if disposition == Disposition::RebuildProducer => "producer_rebuilt",
            _ => "error",
        };
        if disposition == Disposition::Backoff {
            // Consecutive failures back off exponentially (capped); a commit resets it.
            self.backoff =
                (self.backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
            std::thread::sleep(self.backoff);
        }
        let rebuild = match disposition {
            Disposition::RebuildProducer => {
                // The producer is unusable, or the commit may have happened: no abort. The new
                // producer's init_transactions completes or aborts the pending transaction.
                if self.txn.take().is_some() {
                    self.metrics.txn_aborted(reason);
                }
                true
            }
            _ => !self.abort_txn(reason),
        };
        // After the abort drained what was in flight: every refusal of the failed transaction
        // has been reported.
        if let Err(stop) = self.note_refusals(&err, isolated) {
            return Some(stop);
        }
        self.recovery = Some(Recovery { rebuild_producer: rebuild, reset: true, attempts: 0 });
        self.continue_recovery(consumer).err()
    }

    /// Turns refused records into suspects (refused in a transaction with other records: replay
    /// each alone) or poison (refused alone, or by the local producer: dead-letter on replay).
    /// A refused record that is not derived from an input cannot be dead-lettered: stop.
    fn note_refusals(
        &mut self,
        err: &RuntimeError,
        isolated: Option<String>,
    ) -> Result<(), RuntimeError> {
        let mut refused: Vec<(String, Option<String>, String, bool)> = self
            .rejections
            .take()
            .into_iter()
            .map(|r| (r.topic, r.input, r.message, false))
            .collect();
        if let RuntimeError::OutputRejected { topic, input, message, local: true } = err {
            // Refused by the local producer at send: this record alone, certainly.
            refused.push((topic.clone(), input.clone(), message.clone(), true));
        }
        for (topic, input, message, certain) in refused {
            let input = input.filter(|i| {
                crate::headers::parse_coordinate(i).is_some_and(|(_, _, offset)| offset >= 0)
            });
            let Some(input) = input else {
                return Err(RuntimeError::Config(format!(
                    "{topic} refused a record that is not derived from an input (a changelog \
                     entry, a marker or a punctuation output): {message}; it cannot be \
                     dead-lettered, so the processor stops. Raise the topic's max.message.bytes \
                     or make the record smaller."
                )));
            };
            let to_dlq = self.names.logical(&topic).ends_with(".dlq");
            if certain || isolated.as_deref() == Some(input.as_str()) || to_dlq {
                let drop_value = to_dlq;
                if drop_value && self.poisoned.get(&input).is_some_and(|p| p.drop_value) {
                    return Err(RuntimeError::Config(format!(
                        "{topic} refused the dead letter of {input} even without its value: \
                         {message}"
                    )));
                }
                error!(%input, %topic, %message, "output refused; the input will be dead-lettered as output_rejected");
                self.suspects.remove(&input);
                self.poisoned.insert(input, Poison { message, drop_value });
            } else {
                info!(%input, %topic, %message, "output refused in a transaction with other records; replaying that input alone");
                self.suspects.insert(input);
            }
        }
        Ok(())
    }

    /// Does what is left of the recovery. `Ok(true)`: done; `Ok(false)`: a transient failure,
    /// try again later; `Err`: stop.
    pub(super) fn continue_recovery(
        &mut self,
        consumer: &EngineConsumer<P>,
    ) -> Result<bool, RuntimeError> {
        let Some(mut rec) = self.recovery else { return Ok(true) };
        self.health.set_restoring(true);
        rec.attempts += 1;
        self.recovery = Some(rec);
        if rec.attempts > MAX_RECOVERY_ATTEMPTS {
            return Err(RuntimeError::Config(format!(
                "could not recover from a failed transaction after {MAX_RECOVERY_ATTEMPTS} attempts; \
                 stopping (see the errors above)"
            )));
        }
        if rec.rebuild_producer {
            self.rebuilds_since_commit += 1;
            if self.rebuilds_since_commit > MAX_REBUILDS_WITHOUT_COMMIT {
                return Err(RuntimeError::Config(format!(
                    "created {MAX_REBUILDS_WITHOUT_COMMIT} producers for transactional id {} \
                     without committing; is another live instance using instance_id {}?",
                    self.transactional_id, self.cfg.instance_id
                )));
            }
            match new_producer(&self.cfg, &self.transactional_id, &self.rejections) {
                Ok(p) => {
                    self.producer = std::sync::Arc::new(p);
                    self.nonce = rand::random();
                    self.rejections.take();
                    rec.rebuild_producer = false;
                    self.recovery = Some(rec);
                    info!("producer rebuilt");
                }
                Err(e) if e.disposition() != Disposition::Stop => {
                    warn!(error = %e, "creating a new producer failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        if rec.reset {
            match self.reset_from_log(consumer) {
                Ok(()) => {}
                Err(e @ (RuntimeError::Kafka { .. } | RuntimeError::Processor(_)))
                    if e.disposition() != Disposition::Stop =>
                {
                    warn!(error = %e, "restoring from the log failed; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        self.recovery = None;
        self.health.set_restoring(false);
        Ok(true)
    }

    /// Drops state, positions and the processor's memory of every assigned partition, restores
    /// them from the log (the same path as an assignment) and seeks there.
    fn reset_from_log(&mut self, consumer: &EngineConsumer<P>) -> Result<(), RuntimeError> {
        let tps: Vec<(String, i32)> = self.assigned.iter().cloned().collect();
        if tps.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.restore(consumer, &tps)?;
        // Retry partitions paused until a due time, and partitions the input gate held back,
        // are read again from their restored position (and paused again if still not due).
        let mut held: Vec<(String, i32)> = std::mem::take(&mut self.paused).into_keys().collect();
        if let Some(gate) = self.gate.as_mut() {
            held.extend(gate.take_waiting());
        }
        for (topic, partition) in held {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            if let Err(e) = consumer.resume(&tpl) {
                warn!(error = %e, %topic, "resume failed");
            }
        }
        for tp in &tps {
            let pos = self.positions.get(tp).copied().unwrap_or(super::Position { next: None });
            consumer
                .seek(&tp.0, tp.1, pos.as_offset(), Duration::from_secs(10))
                .map_err(|e| RuntimeError::kafka("seek", e))?;
        }
        if self.held {
            // Read-only: the resumes above must not let anything be fetched.
            consumer
                .pause(&self.assigned_tpl())
                .map_err(|e| RuntimeError::kafka("pause (read-only)", e))?;
        }
        self.metrics.restored("abort");
        info!(
            partitions = tps.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "state restored from the log after a failed transaction"
        );
        Ok(())
    }
}
