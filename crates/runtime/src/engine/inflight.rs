//! The commit in flight: the blocking half of a commit runs on its own thread while the engine
//! processes the next records.
//!
//! ```text
//!  engine thread   … process ─► commit: changelog ─► hand off ─► process process process …
//!                                                      │              (records deferred)
//!  commit thread                                       └► offsets ─► markers ─► flush ─► commit
//!                                                                                          │
//!  engine thread   settle: committed? account for it, begin the next transaction and  ◄────┘
//!                  produce its deferred records │ failed? the next transaction is dropped
//!                  and the failed one recovered like any failed commit
//! ```
//!
//! **Why.** After its records are produced, a commit waits on the broker three times: for the
//! offsets (`send_offsets_to_transaction`), for the delivery of the last records and markers,
//! and for `commit_transaction`. At full speed that was 10-15 ms of every 50-80 ms transaction
//! with the engine thread idle (issue 8, docs/performance.md, phase 5).
//!
//! **Why it stays exactly-once.** One producer holds one transaction at a time, so the records
//! processed meanwhile are not produced: they wait in the next transaction, which the producer
//! begins only once the commit succeeded. Their state changes and positions are the engine's
//! own; if the commit fails, the recovery drops state and positions and restores both from the
//! log (as after any failed commit), so those records are read and processed again: nothing of
//! them reached the broker. The commit thread and the engine never use the producer at the same
//! time, and nothing settles a commit but the engine thread, before it commits again, aborts,
//! recovers, gives up partitions or stops.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::topic_partition_list::TopicPartitionList;
use tracing::debug;

use super::commit::{retry_txn_call, TXN_TIMEOUT};
use super::failpoint::Point;
use super::producer::{deliver_all, produce, DeliveryContext, Faults, Outgoing, Rejections};
use super::{Core, OpenTxn, Position};
use crate::error::{classify_kafka, Disposition, RuntimeError};
use crate::processor::Processor;
use crate::state;

/// `evalstream_transactions_aborted_total{reason}` of a transaction dropped unbegun because the
/// commit before it failed.
const PREVIOUS_COMMIT_FAILED: &str = "previous_commit_failed";

/// One encoded progress marker of the committing transaction.
pub(super) struct Marker {
    pub(super) partition: i32,
    pub(super) bytes: Vec<u8>,
    pub(super) headers: OwnedHeaders,
}

/// What the commit thread needs: the producer (the engine leaves it alone meanwhile), the
/// offsets with the group's metadata, and the markers to write after them.
pub(super) struct Tail {
    pub(super) producer: Arc<ThreadedProducer<DeliveryContext>>,
    pub(super) rejections: Rejections,
    pub(super) faults: Faults,
    /// `committed_view = "markers"`: everything delivered before offsets and markers.
    pub(super) markers_view: bool,
    pub(super) changelog: String,
    pub(super) offsets: TopicPartitionList,
    pub(super) group: Option<ConsumerGroupMetadata>,
    pub(super) markers: Vec<Marker>,
}

/// How long the commit thread waited on each step, for the `committed` debug line.
#[derive(Debug, Default, Clone, Copy)]
struct Waited {
    flush_ms: u64,
    offsets_ms: u64,
    commit_ms: u64,
}

/// A transaction committing on its own thread.
pub(super) struct InFlight {
    txn: OpenTxn,
    /// The positions it commits, recorded as committed once it did.
    positions: Vec<((String, i32), Position)>,
    answer: mpsc::Receiver<Result<Waited, RuntimeError>>,
    handed_off: Instant,
}

impl InFlight {
    /// Starts the commit thread of `txn`.
    pub(super) fn start(
        txn: OpenTxn,
        positions: Vec<((String, i32), Position)>,
        tail: Tail,
    ) -> Result<InFlight, RuntimeError> {
        let (tx, answer) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("eos-commit".into())
            .spawn(move || {
                let _ = tx.send(tail.run());
            })
            .map_err(|e| RuntimeError::Config(format!("cannot start a commit thread: {e}")))?;
        Ok(InFlight { txn, positions, answer, handed_off: Instant::now() })
    }
}

impl Tail {
    /// Steps 2-5 of the commit (see `commit.rs`), on the commit thread.
    fn run(self) -> Result<Waited, RuntimeError> {
        let mut waited = Waited::default();
        let t = Instant::now();
        if self.markers_view {
            deliver_all(&self.producer, &self.rejections, &self.faults)?;
        }
        waited.flush_ms = t.elapsed().as_millis() as u64;
        self.faults.at(Point::AfterFlush);

        let t = Instant::now();
        if self.faults.at(Point::OffsetsError) {
            return Err(RuntimeError::kafka(
                "send_offsets_to_transaction (injected fault)",
                KafkaError::Global(RDKafkaErrorCode::IllegalGeneration),
            ));
        }
        if let Some(group) = &self.group {
            retry_txn_call("send_offsets_to_transaction", || {
                self.producer.send_offsets_to_transaction(&self.offsets, group, TXN_TIMEOUT)
            })?;
        }
        waited.offsets_ms = t.elapsed().as_millis() as u64;
        self.faults.at(Point::AfterOffsets);

        let key = state::marker_changelog_key();
        for m in self.markers {
            let marker = Outgoing::to(&self.changelog, Some(m.partition), m.headers);
            produce(&self.producer, marker.key(Some(&key)).value(Some(m.bytes)))?;
        }
        self.faults.at(Point::AfterMarkers);

        // Everything (markers included) delivered first: a refused record fails the transaction
        // here, and rust-rdkafka's `commit_transaction`, which flushes first with a poll that
        // sleeps 100 ms while anything is in flight, finds nothing left. Retriable failures
        // that outlast the retries leave the outcome unknown.
        let t = Instant::now();
        deliver_all(&self.producer, &self.rejections, &self.faults)?;
        waited.flush_ms += t.elapsed().as_millis() as u64;
        let t = Instant::now();
        if self.faults.at(Point::CommitError) {
            return Err(RuntimeError::kafka(
                "commit_transaction (injected fault)",
                KafkaError::Global(RDKafkaErrorCode::OutOfOrderSequenceNumber),
            ));
        }
        let unknown = self.faults.at(Point::CommitUnknown);
        let mut committed_silently = false;
        let result = retry_txn_call("commit_transaction", || {
            if !unknown {
                return self.producer.commit_transaction(TXN_TIMEOUT);
            }
            // Injected: the commit happens, but every answer the engine gets is a timeout.
            if !committed_silently {
                committed_silently = true;
                self.producer.commit_transaction(TXN_TIMEOUT)?;
            }
            Err(KafkaError::Global(RDKafkaErrorCode::RequestTimedOut))
        });
        match result {
            Ok(()) => {}
            Err(RuntimeError::Kafka { source, .. })
                if classify_kafka(&source) == Disposition::Backoff =>
            {
                return Err(RuntimeError::CommitOutcomeUnknown { source });
            }
            Err(e) => return Err(e),
        }
        waited.commit_ms = t.elapsed().as_millis() as u64;
        Ok(waited)
    }
}

/// The commit thread's channel closed without an answer (it panicked).
fn no_answer() -> RuntimeError {
    RuntimeError::Config("the commit thread ended without an answer".into())
}

impl<P: Processor> Core<P> {
    /// Waits for the commit in flight, if any, and settles it (see [`Core::settle_answer`]).
    pub(super) fn settle(&mut self) -> Result<(), RuntimeError> {
        let Some(inflight) = self.inflight.take() else { return Ok(()) };
        let answer = inflight.answer.recv().unwrap_or_else(|_| Err(no_answer()));
        self.settle_answer(inflight, answer)
    }

    /// Settles the commit in flight if it has answered; does not wait.
    pub(super) fn settle_if_done(&mut self) -> Result<(), RuntimeError> {
        let Some(inflight) = self.inflight.as_ref() else { return Ok(()) };
        let answer = match inflight.answer.try_recv() {
            Ok(answer) => answer,
            Err(mpsc::TryRecvError::Empty) => return Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => Err(no_answer()),
        };
        let Some(inflight) = self.inflight.take() else { return Ok(()) };
        self.settle_answer(inflight, answer)
    }

    /// Committed: the transaction's positions are committed, its counts published, and the
    /// transaction that filled meanwhile is begun with its deferred records. Failed: that
    /// transaction is dropped unbegun (its records are read again after the recovery) and the
    /// failed one becomes the open transaction again, which the caller's recovery aborts.
    fn settle_answer(
        &mut self,
        inflight: InFlight,
        answer: Result<Waited, RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let InFlight { txn, positions, handed_off, .. } = inflight;
        let waited = match answer {
            Ok(waited) => waited,
            Err(e) => {
                // The transaction that filled meanwhile goes with it: counted as aborted, so
                // that a fault test (and an operator) can see commits fail with records waiting.
                if self.txn.take().is_some_and(|next| next.records > 0) {
                    self.metrics.txn_aborted(PREVIOUS_COMMIT_FAILED);
                }
                self.txn = Some(txn);
                return Err(e);
            }
        };
        for (tp, pos) in positions {
            self.committed.insert(tp, pos);
        }
        if let Some(input) = &txn.isolated {
            // Committed alone without a refusal: it was not the poison.
            self.suspects.remove(input);
        }
        for input in &txn.dead_lettered_poison {
            self.poisoned.remove(input);
        }
        self.publish_counts(&txn.counts);
        self.metrics.txn_committed(txn.started.elapsed());
        self.health.set_kafka(true, "transaction committed");
        self.backoff = std::time::Duration::ZERO;
        self.rebuilds_since_commit = 0;
        debug!(
            txn = %txn.id,
            records = txn.records,
            open_ms = txn.started.elapsed().as_millis() as u64,
            in_flight_ms = handed_off.elapsed().as_millis() as u64,
            flush_ms = waited.flush_ms,
            offsets_ms = waited.offsets_ms,
            commit_ms = waited.commit_ms,
            "committed"
        );
        self.faults.at(Point::AfterCommit);
        self.begin_deferred()
    }
}
