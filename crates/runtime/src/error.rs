//! Error taxonomy of the runtime.
//!
//! Every failure is mapped to exactly one [`Disposition`]: the runtime never retries blindly and
//! never panics on broker or data errors. The mapping follows Arroyo's split between user data,
//! external systems and internal bugs:
//!
//! | source                               | disposition                                   |
//! |--------------------------------------|-----------------------------------------------|
//! | undecodable bytes, invalid record    | [`Disposition::DeadLetter`] (same transaction) |
//! | data that a later record may fix     | [`Disposition::Retry`] (retry topic, backoff)  |
//! | abortable transaction error          | [`Disposition::AbortAndRewind`]                |
//! | retriable broker error               | [`Disposition::Backoff`]                       |
//! | fenced / fatal producer error        | [`Disposition::RebuildProducer`] or [`Disposition::Stop`] |
//! | processor bug, bad configuration     | [`Disposition::Stop`]                          |

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

/// What the runtime does with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Write the record to `<topic>.dlq` with its reason, in the same transaction, and move on.
    DeadLetter,
    /// Write the record to `<topic>.retry` with a later due time; dead-letter it after the last attempt.
    Retry,
    /// Abort the open transaction, rewind consumers to the last committed positions and restore state.
    AbortAndRewind,
    /// Wait with exponential backoff and try the same call again (bounded).
    Backoff,
    /// The producer is unusable (fenced or fatal): abort, rewind, and create a new producer.
    RebuildProducer,
    /// Stop the processor: continuing could lose or corrupt data.
    Stop,
}

/// A processor's verdict on one record. Processors return this from
/// [`crate::processor::Processor::process`]; the runtime maps it to a [`Disposition`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProcessError {
    /// The record can never be processed (fails validation, bad signature, unknown reference):
    /// it goes to the DLQ.
    #[error("invalid record: {0}")]
    Invalid(String),
    /// The record cannot be processed *yet* (e.g. a settlement that arrived before its
    /// allocation): it goes through the retry topic, then the DLQ when attempts run out.
    #[error("not ready: {0}")]
    NotReady(String),
    /// The processor cannot continue safely (a bug or broken invariant): the runtime stops.
    #[error("fatal processor error: {0}")]
    Fatal(String),
}

impl ProcessError {
    /// The runtime's reaction to this error.
    pub fn disposition(&self) -> Disposition {
        match self {
            ProcessError::Invalid(_) => Disposition::DeadLetter,
            ProcessError::NotReady(_) => Disposition::Retry,
            ProcessError::Fatal(_) => Disposition::Stop,
        }
    }

    /// The error class written to the DLQ `__evalstream.errors.class` header.
    pub fn class(&self) -> &'static str {
        match self {
            ProcessError::Invalid(_) => "validation",
            ProcessError::NotReady(_) => "not_ready",
            ProcessError::Fatal(_) => "fatal",
        }
    }
}

/// Errors of the runtime itself (start-up, transactions, restore).
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// Configuration is invalid; the message names the field.
    #[error("configuration: {0}")]
    Config(String),
    /// A Kafka client call failed.
    #[error("kafka {context}: {source}")]
    Kafka {
        /// What the runtime was doing.
        context: &'static str,
        /// The client error.
        #[source]
        source: KafkaError,
    },
    /// Encoding an output failed: a processor produced a value that does not match its schema.
    #[error("encoding output for {topic}: {message}")]
    Encode {
        /// Output topic.
        topic: String,
        /// Why.
        message: String,
    },
    /// Restoring state from a changelog failed.
    #[error("restoring {topic}[{partition}]: {message}")]
    Restore {
        /// Changelog topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Why.
        message: String,
    },
    /// The processor asked to stop.
    #[error(transparent)]
    Processor(#[from] ProcessError),
    /// Serving the operator endpoints failed.
    #[error("ops server: {0}")]
    Ops(String),
    /// A dependency the records need is unreachable (e.g. the schema registry): nothing is
    /// wrong with the data, so the transaction is aborted and retried after a backoff instead
    /// of dead-lettering good records.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
}

impl RuntimeError {
    /// Wraps a Kafka error with what the runtime was doing.
    pub fn kafka(context: &'static str, source: KafkaError) -> Self {
        RuntimeError::Kafka { context, source }
    }

    /// The runtime's reaction to this error.
    pub fn disposition(&self) -> Disposition {
        match self {
            RuntimeError::Kafka { source, .. } => classify_kafka(source),
            RuntimeError::Unavailable(_) => Disposition::Backoff,
            RuntimeError::Encode { .. }
            | RuntimeError::Config(_)
            | RuntimeError::Restore { .. }
            | RuntimeError::Processor(_)
            | RuntimeError::Ops(_) => Disposition::Stop,
        }
    }
}

/// Classifies a Kafka client error using the questions exactly-once needs (`is_fatal`,
/// `txn_requires_abort`, `is_retriable`), in that order of precedence: a fatal error wins over an
/// abortable one because a fatal producer cannot even abort.
pub fn classify_kafka(err: &KafkaError) -> Disposition {
    if let KafkaError::Transaction(e) = err {
        if e.is_fatal() {
            return Disposition::RebuildProducer;
        }
        if e.txn_requires_abort() {
            return Disposition::AbortAndRewind;
        }
        if e.is_retriable() {
            return Disposition::Backoff;
        }
        return Disposition::AbortAndRewind;
    }
    match err.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        ) => Disposition::RebuildProducer,
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed,
        ) => Disposition::Stop,
        Some(
            RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::ConcurrentTransactions,
        ) => Disposition::Backoff,
        // Anything else inside a transaction: abort and rewind is always safe (the transaction's
        // outputs vanish and the inputs are read again), a blind retry is not.
        _ => Disposition::AbortAndRewind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_errors_map_to_dlq_retry_stop() {
        assert_eq!(ProcessError::Invalid("x".into()).disposition(), Disposition::DeadLetter);
        assert_eq!(ProcessError::NotReady("x".into()).disposition(), Disposition::Retry);
        assert_eq!(ProcessError::Fatal("x".into()).disposition(), Disposition::Stop);
        assert_eq!(ProcessError::Invalid("x".into()).class(), "validation");
    }

    #[test]
    fn fenced_producer_is_rebuilt_not_retried() {
        let e = KafkaError::Global(RDKafkaErrorCode::ProducerFenced);
        assert_eq!(classify_kafka(&e), Disposition::RebuildProducer);
        let e = KafkaError::Global(RDKafkaErrorCode::InvalidProducerEpoch);
        assert_eq!(classify_kafka(&e), Disposition::RebuildProducer);
    }

    #[test]
    fn transient_broker_errors_back_off() {
        for code in [
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::CoordinatorLoadInProgress,
        ] {
            assert_eq!(classify_kafka(&KafkaError::Global(code)), Disposition::Backoff, "{code:?}");
        }
    }

    #[test]
    fn authorization_failures_stop() {
        let e = KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(classify_kafka(&e), Disposition::Stop);
        let r = RuntimeError::Config("bad".into());
        assert_eq!(r.disposition(), Disposition::Stop);
    }
}
