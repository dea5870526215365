//! Transactions: begin, commit (state → changelog, flush, markers, offsets, commit), abort, and
//! recovery after a failure.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::producer::new_producer;
use super::restore::PROGRESS_MARKER_SCHEMA;
use super::routing::text;
use super::{Core, EngineConsumer, OpenTxn, TxnCounts};
use crate::error::{classify_kafka, Disposition, RuntimeError};
use crate::headers;
use crate::processor::Processor;
use crate::state::{self, StateView};

/// Timeout for blocking transaction calls.
pub(super) const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounded retries of a retriable transaction call before the transaction is aborted.
const MAX_TXN_RETRIES: u32 = 8;

/// Calls a transaction API, retrying only errors librdkafka marks retriable, with backoff.
pub(super) fn retry_txn_call(
    what: &'static str,
    mut f: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), RuntimeError> {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=MAX_TXN_RETRIES {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if classify_kafka(&e) == Disposition::Backoff && attempt < MAX_TXN_RETRIES => {
                warn!(what, attempt, error = %e, "retriable transaction error; backing off");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(RuntimeError::kafka(what, e)),
        }
    }
    unreachable!("the last attempt returns")
}

impl<P: Processor> Core<P> {
    /// Opens a transaction unless one is open.
    pub(super) fn begin_if_needed(&mut self) -> Result<(), RuntimeError> {
        if self.txn.is_none() {
            retry_txn_call("begin_transaction", || self.producer.begin_transaction())?;
            self.txn_seq += 1;
            self.txn = Some(OpenTxn {
                id: format!("{}-{:08x}-{}", self.cfg.instance_id, self.nonce, self.txn_seq),
                started: Instant::now(),
                records: 0,
                touched: BTreeSet::new(),
                counts: TxnCounts::default(),
            });
        }
        Ok(())
    }

    /// Commits the open transaction: state changes and progress markers to the changelog,
    /// flush, offsets, commit.
    pub(super) fn commit(&mut self, consumer: &EngineConsumer<P>) -> Result<(), RuntimeError> {
        let Some(txn) = self.txn.as_ref() else { return Ok(()) };
        let started = Instant::now();
        let txn_id = txn.id.clone();
        let touched: Vec<(String, i32)> = txn.touched.iter().cloned().collect();
        let state_partitions: BTreeSet<i32> = touched.iter().map(|(_, p)| *p).collect();
        let changelog = self.names.changelog.clone();

        for p in &state_partitions {
            let changes = self.states.get_mut(p).map(StateView::take_changes).unwrap_or_default();
            for (key, value) in changes {
                let k = state::state_changelog_key(&key);
                let h = OwnedHeaders::new().insert(text(headers::TXN, &txn_id));
                self.send(&changelog, Some(*p), Some(&k), value.as_deref(), h)?;
            }
        }
        self.fail_points.reach("after_outputs");
        // Everything of this transaction is delivered before any marker exists: a marker
        // proves its transaction's outputs are in the log (what matters on brokers that
        // expose aborted records).
        let t_flush = Instant::now();
        self.flush()?;
        let flush_ms = t_flush.elapsed().as_millis() as u64;

        let mut offsets = TopicPartitionList::new();
        for tp in &touched {
            let Some(next) = self.positions.get(tp).and_then(|p| p.next) else { continue };
            let marker = Value::Record(vec![
                ("topic".into(), Value::String(tp.0.clone())),
                ("partition".into(), Value::Int(tp.1)),
                ("next_offset".into(), Value::Long(next)),
                ("txn".into(), Value::String(txn_id.clone())),
                ("instance".into(), Value::String(self.cfg.instance_id.clone())),
            ]);
            let bytes =
                self.codec.encode(&changelog, PROGRESS_MARKER_SCHEMA, &marker).map_err(|e| {
                    RuntimeError::Encode { topic: changelog.clone(), message: e.to_string() }
                })?;
            let k = state::marker_changelog_key(&tp.0);
            let h = OwnedHeaders::new().insert(text(headers::TXN, &txn_id));
            self.send(&changelog, Some(tp.1), Some(&k), Some(&bytes), h)?;
            offsets
                .add_partition_offset(&tp.0, tp.1, Offset::Offset(next))
                .map_err(|e| RuntimeError::kafka("offsets", e))?;
        }
        self.fail_points.reach("after_markers");

        let group = consumer
            .group_metadata()
            .ok_or_else(|| RuntimeError::Config("consumer has no group metadata".into()))?;
        let t_offsets = Instant::now();
        retry_txn_call("send_offsets_to_transaction", || {
            self.producer.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)
        })?;
        let offsets_ms = t_offsets.elapsed().as_millis() as u64;
        let t_commit = Instant::now();
        retry_txn_call("commit_transaction", || self.producer.commit_transaction(TXN_TIMEOUT))?;
        let commit_ms = t_commit.elapsed().as_millis() as u64;

        let Some(txn) = self.txn.take() else { return Ok(()) };
        for tp in &touched {
            if let Some(pos) = self.positions.get(tp) {
                self.committed.insert(tp.clone(), *pos);
            }
        }
        for (topic, n) in &txn.counts.inputs {
            self.metrics.records_in_n(topic, *n);
        }
        for (topic, n) in &txn.counts.outputs {
            self.metrics.records_out(topic, *n);
        }
        for ((topic, class), n) in &txn.counts.dead_lettered {
            for _ in 0..*n {
                self.metrics.dead_lettered(topic, class.as_str());
            }
        }
        for (topic, n) in &txn.counts.retried {
            for _ in 0..*n {
                self.metrics.retried(topic);
            }
        }
        self.metrics.txn_committed(started.elapsed());
        self.health.set_kafka(true, "transaction committed");
        self.backoff = Duration::ZERO;
        debug!(
            txn = %txn_id,
            records = txn.records,
            open_ms = txn.started.elapsed().as_millis() as u64,
            flush_ms,
            offsets_ms,
            commit_ms,
            "committed"
        );
        self.fail_points.reach("after_commit");
        Ok(())
    }

    /// Waits until every produced record is acknowledged. rust-rdkafka's `flush` on a
    /// `ThreadedProducer` sleeps in 100 ms steps (its poll competes with the polling thread), which
    /// would add up to 100 ms to every commit; watching the out-queue length directly does not.
    fn flush(&self) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + TXN_TIMEOUT;
        let mut pause = Duration::from_micros(200);
        while self.producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                return Err(RuntimeError::kafka(
                    "flush",
                    KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Aborts the open transaction (if any) and rolls state back, without seeking.
    pub(super) fn abort_quietly(&mut self, reason: &str) {
        if self.txn.take().is_some() {
            if let Err(e) = self.producer.abort_transaction(TXN_TIMEOUT) {
                warn!(error = %e, "abort_transaction failed");
            }
            self.metrics.txn_aborted(reason);
        }
        for s in self.states.values_mut() {
            s.abort();
        }
        self.positions = self.committed.clone();
    }

    /// Applies the error classification after a failure in `handle` or `commit`. Returns the
    /// error when the processor must stop.
    pub(super) fn recover(
        &mut self,
        consumer: &EngineConsumer<P>,
        err: RuntimeError,
    ) -> Option<RuntimeError> {
        let disposition = err.disposition();
        warn!(error = %err, ?disposition, "transaction failed");
        match disposition {
            Disposition::Stop | Disposition::DeadLetter | Disposition::Retry => {
                self.abort_quietly("stop");
                Some(err)
            }
            Disposition::AbortAndRewind | Disposition::Backoff => {
                self.abort_quietly("error");
                if disposition == Disposition::Backoff {
                    // Consecutive failures back off exponentially (capped); a commit resets it.
                    self.backoff = (self.backoff * 2)
                        .clamp(Duration::from_millis(100), Duration::from_secs(30));
                    std::thread::sleep(self.backoff);
                }
                self.rewind(consumer).err()
            }
            Disposition::RebuildProducer => {
                self.txn = None;
                self.metrics.txn_aborted("producer_rebuilt");
                for s in self.states.values_mut() {
                    s.abort();
                }
                self.positions = self.committed.clone();
                match new_producer(&self.cfg, &self.transactional_id) {
                    Ok(p) => {
                        self.producer = p;
                        self.nonce = rand::random();
                        self.rewind(consumer).err()
                    }
                    Err(e) => Some(e),
                }
            }
        }
    }

    /// Seeks every assigned partition back to its last committed position.
    fn rewind(&mut self, consumer: &EngineConsumer<P>) -> Result<(), RuntimeError> {
        for ((topic, partition), pos) in &self.committed {
            consumer
                .seek(topic, *partition, pos.as_offset(), Duration::from_secs(10))
                .map_err(|e| RuntimeError::kafka("seek", e))?;
        }
        Ok(())
    }
}
