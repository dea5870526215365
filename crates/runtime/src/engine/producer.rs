//! The instance's transactional producer: creation (fencing its predecessor), sending one record
//! into the open transaction, and noticing records the broker refuses for what they are.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tracing::{debug, warn};

use super::commit::{retry_txn_call, TXN_TIMEOUT};
use super::{lock, Core};
use crate::config::RuntimeConfig;
use crate::error::{is_record_specific, RuntimeError};
use crate::headers;
use crate::kafka;
use crate::processor::Processor;

/// A record the broker refused for what it is (its size, its format), from a delivery report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rejected {
    /// Topic that refused it.
    pub(super) topic: String,
    /// Its `evalstream.source` header: the input it was derived from.
    pub(super) input: Option<String>,
    /// The error.
    pub(super) message: String,
}

/// Records refused since they were last taken, shared with the producer's delivery callback
/// (which runs on the producer's polling thread).
#[derive(Debug, Clone, Default)]
pub(super) struct Rejections(Arc<Mutex<Vec<Rejected>>>);

impl Rejections {
    fn push(&self, r: Rejected) {
        lock(&self.0).push(r);
    }

    /// The first refused record, if any.
    pub(super) fn first(&self) -> Option<Rejected> {
        lock(&self.0).first().cloned()
    }

    /// Takes every refused record.
    pub(super) fn take(&self) -> Vec<Rejected> {
        std::mem::take(&mut *lock(&self.0))
    }
}

/// Producer context: remembers records refused for what they are (a poison output must be
/// dead-lettered, not retried forever) and logs other delivery failures (the transaction then
/// fails at commit and is aborted).
pub(super) struct DeliveryContext {
    rejections: Rejections,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        let Err((e, m)) = result else { return };
        if is_record_specific(e) {
            let input = m.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == headers::SOURCE)
                    .and_then(|x| x.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_string)
            });
            warn!(topic = m.topic(), partition = m.partition(), ?input, error = %e, "the broker refused a record");
            self.rejections.push(Rejected {
                topic: m.topic().to_string(),
                input,
                message: e.to_string(),
            });
        } else if matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
        ) {
            // Purged by an abort: expected, the transaction is being discarded.
            debug!(topic = m.topic(), error = %e, "delivery purged by an abort");
        } else {
            warn!(topic = m.topic(), partition = m.partition(), error = %e, "delivery failed");
        }
    }
}

/// Creates the transactional producer and initialises transactions. `init_transactions` fences
/// any previous producer with the same `transactional.id` and completes or aborts its pending
/// transaction (KIP-98): after it returns, the log says how that transaction ended.
pub(super) fn new_producer(
    cfg: &RuntimeConfig,
    transactional_id: &str,
    rejections: &Rejections,
) -> Result<ThreadedProducer<DeliveryContext>, RuntimeError> {
    let producer: ThreadedProducer<DeliveryContext> =
        kafka::transactional_producer(cfg, transactional_id)
            .create_with_context(DeliveryContext { rejections: rejections.clone() })
            .map_err(|e| RuntimeError::kafka("create producer", e))?;
    retry_txn_call("init_transactions", || producer.init_transactions(TXN_TIMEOUT))?;
    Ok(producer)
}

impl<P: Processor> Core<P> {
    /// Produces one record in the open transaction, waiting while the local queue is full.
    /// `input` is the `evalstream.source` of the input the record derives from (`None` for
    /// changelog records): a record the local producer refuses for what it is becomes
    /// [`RuntimeError::OutputRejected`] naming it.
    pub(super) fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        hdrs: OwnedHeaders,
        input: Option<&str>,
    ) -> Result<(), RuntimeError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(hdrs);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) if is_record_specific(&e) => {
                    return Err(RuntimeError::OutputRejected {
                        topic: topic.to_string(),
                        input: input.map(str::to_string),
                        message: e.to_string(),
                        local: true,
                    })
                }
                Err((e, _)) => return Err(RuntimeError::kafka("produce", e)),
            }
        }
    }
}
