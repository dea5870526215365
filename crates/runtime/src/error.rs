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
    pub fn class(&self) -> ErrorClass {
        match self {
            ProcessError::Invalid(_) => ErrorClass::Validation,
            ProcessError::NotReady(_) => ErrorClass::NotReady,
            ProcessError::Fatal(_) => ErrorClass::Fatal,
        }
    }
}

/// Why a record was dead-lettered: the value of the DLQ `__evalstream.errors.class` header and
/// the `class` label of `evalstream_records_dead_lettered_total`. A closed set, so that an alert
/// or a `dlq requeue --class` filter can name every value, and a metric label cannot explode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// The value could not be decoded: no value, truncated, wrong magic byte, unknown schema.
    Deserialization,
    /// The value is larger than `max_record_bytes`.
    Oversized,
    /// The processor rejected the record ([`ProcessError::Invalid`]).
    Validation,
    /// The processor emitted a value that does not match the output's schema.
    Encoding,
    /// The record was not ready and its topic has no retry topic ([`ProcessError::NotReady`]).
    NotReady,
    /// The record was not ready on its last allowed attempt (`retry.max_attempts`).
    RetriesExhausted,
    /// The processor declared the record fatal ([`ProcessError::Fatal`]). The runtime stops
    /// instead of dead-lettering; the class exists for logs and for completeness.
    Fatal,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::Deserialization,
        ErrorClass::Oversized,
        ErrorClass::Validation,
        ErrorClass::Encoding,
        ErrorClass::NotReady,
        ErrorClass::RetriesExhausted,
        ErrorClass::Fatal,
    ];

    /// The header value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Deserialization => "deserialization",
            ErrorClass::Oversized => "oversized",
            ErrorClass::Validation => "validation",
            ErrorClass::Encoding => "encoding",
            ErrorClass::NotReady => "not_ready",
            ErrorClass::RetriesExhausted => "retries_exhausted",
            ErrorClass::Fatal => "fatal",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not an [`ErrorClass`] name.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("unknown error class {0:?} (known: deserialization, oversized, validation, encoding, not_ready, retries_exhausted, fatal)")]
pub struct UnknownErrorClass(pub String);

impl std::str::FromStr for ErrorClass {
    type Err = UnknownErrorClass;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownErrorClass(s.to_string()))
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
        assert_eq!(ProcessError::Invalid("x".into()).class(), ErrorClass::Validation);
    }

    #[test]
    fn error_classes_round_trip_through_their_names() {
        for c in ErrorClass::ALL {
            assert_eq!(c.as_str().parse::<ErrorClass>(), Ok(c));
        }
        assert!("nonsense".parse::<ErrorClass>().is_err());
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
