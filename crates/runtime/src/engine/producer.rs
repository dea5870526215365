//! The instance's transactional producer: creation (fencing its predecessor) and sending one
//! record into the open transaction.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tracing::warn;

use super::commit::{retry_txn_call, TXN_TIMEOUT};
use super::Core;
use crate::config::RuntimeConfig;
use crate::error::RuntimeError;
use crate::kafka;
use crate::processor::Processor;

/// Producer context: logs delivery failures (the transaction commit then fails and is aborted).
pub(super) struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            warn!(topic = m.topic(), partition = m.partition(), error = %e, "delivery failed");
        }
    }
}

/// Creates the transactional producer and initialises transactions.
pub(super) fn new_producer(
    cfg: &RuntimeConfig,
    transactional_id: &str,
) -> Result<ThreadedProducer<DeliveryContext>, RuntimeError> {
    let producer: ThreadedProducer<DeliveryContext> =
        kafka::transactional_producer(cfg, transactional_id)
            .create_with_context(DeliveryContext)
            .map_err(|e| RuntimeError::kafka("create producer", e))?;
    // init_transactions fences any previous producer with the same transactional.id and aborts
    // its open transaction (KIP-98 zombie fencing).
    retry_txn_call("init_transactions", || producer.init_transactions(TXN_TIMEOUT))?;
    Ok(producer)
}

impl<P: Processor> Core<P> {
    /// Produces one record in the open transaction, waiting while the local queue is full.
    pub(super) fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        hdrs: OwnedHeaders,
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
                Err((e, _)) => return Err(RuntimeError::kafka("produce", e)),
            }
        }
    }
}
