//! Records that leave the normal path: dead letters (`<input>.dlq`) and retries
//! (`<input>.retry`), with the header contract of [`crate::headers`].

use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use tracing::warn;

use super::names::TopicNames;
use super::Core;
use crate::error::{ErrorClass, RuntimeError};
use crate::headers::{self, DeadLetterHeaders, RetryHeaders};
use crate::processor::{Output, Processor};

impl<P: Processor> Core<P> {
    /// Writes `msg` (original key, value and headers) to the DLQ of `topic` in the open
    /// transaction, with the dead-letter headers saying where it came from and why.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_dlq(
        &mut self,
        msg: &BorrowedMessage<'_>,
        topic: &str,
        partition: i32,
        offset: i64,
        class: ErrorClass,
        message: &str,
        attempts: u32,
        source: &str,
    ) -> Result<(), RuntimeError> {
        let txn_id = self.txn.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        let dead = DeadLetterHeaders {
            topic: self.names.physical(topic),
            partition: Some(partition),
            offset: Some(offset),
            timestamp: msg.timestamp().to_millis(),
            processor: Some(self.processor.name().to_string()),
            class: Some(class),
            message: Some(message.to_string()),
            attempts: Some(attempts),
        };
        let mut h = original_headers(msg);
        for (k, v) in dead.to_headers() {
            h = h.insert(text(k, &v));
        }
        h = h.insert(text(headers::SOURCE, source)).insert(text(headers::TXN, &txn_id));
        let dlq = self.names.dlq(topic);
        // Same partition number as the input keeps per-partition order within the DLQ.
        self.send(&dlq, Some(msg.partition()), msg.key(), msg.payload(), h)?;
        warn!(topic, partition, offset, class = class.as_str(), message, "record dead-lettered");
        if let Some(t) = self.txn.as_mut() {
            *t.counts.dead_lettered.entry((topic.to_string(), class)).or_default() += 1;
        }
        Ok(())
    }

    /// Writes `msg` to the retry topic of `topic` in the open transaction, due after the
    /// configured backoff for `next_attempt`.
    pub(super) fn send_retry(
        &mut self,
        msg: &BorrowedMessage<'_>,
        topic: &str,
        partition: i32,
        offset: i64,
        next_attempt: u32,
        source: &str,
    ) -> Result<(), RuntimeError> {
        let txn_id = self.txn.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        let due = now_ms() + self.cfg.retry.backoff_ms(next_attempt) as i64;
        let retry_headers = RetryHeaders {
            topic: self.names.physical(topic),
            partition,
            offset,
            attempt: next_attempt,
            not_before_ms: due,
        };
        let mut h = original_headers(msg);
        for (k, v) in retry_headers.to_headers() {
            h = h.insert(text(k, &v));
        }
        h = h.insert(text(headers::SOURCE, source)).insert(text(headers::TXN, &txn_id));
        let retry = self.names.retry(topic).ok_or_else(|| {
            RuntimeError::Config(format!("{topic} has no retry topic in the topology"))
        })?;
        self.send(&retry, Some(msg.partition()), msg.key(), msg.payload(), h)?;
        if let Some(t) = self.txn.as_mut() {
            *t.counts.retried.entry(topic.to_string()).or_default() += 1;
        }
        Ok(())
    }
}

/// The retry headers of a record read from a retry topic (`None` for a record of an input
/// topic). `logical` is the logical name of the topic it was read from.
pub(super) fn retry_info(
    msg: &BorrowedMessage<'_>,
    names: &TopicNames,
    logical: &str,
) -> Option<RetryHeaders> {
    let base = names.input_of_retry(logical)?;
    let fallback = RetryHeaders {
        topic: base.to_string(),
        partition: msg.partition(),
        offset: msg.offset(),
        attempt: 2,
        not_before_ms: 0,
    };
    let h = msg.headers()?;
    let pairs: Vec<(&str, Option<&[u8]>)> = h.iter().map(|x| (x.key, x.value)).collect();
    Some(RetryHeaders::parse(&pairs, fallback))
}

pub(super) fn text<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a [u8]> {
    Header { key, value: Some(value.as_bytes()) }
}

/// The input's headers minus the runtime's own (error/retry/source/txn headers are rewritten,
/// never accumulated).
fn original_headers(msg: &BorrowedMessage<'_>) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        for x in h.iter() {
            if x.key.starts_with("__evalstream.")
                || x.key == headers::SOURCE
                || x.key == headers::TXN
            {
                continue;
            }
            out = out.insert(Header { key: x.key, value: x.value });
        }
    }
    out
}

/// The headers of an output record: source, transaction, index, then the processor's own.
pub(super) fn output_headers(out: &Output, source: &str, txn: &str, index: usize) -> OwnedHeaders {
    let mut h = OwnedHeaders::new()
        .insert(text(headers::SOURCE, source))
        .insert(text(headers::TXN, txn))
        .insert(text(headers::OUTPUT_INDEX, &index.to_string()));
    for (k, v) in &out.headers {
        h = h.insert(Header { key: k, value: Some(v.as_slice()) });
    }
    h
}

/// Wall-clock milliseconds since the epoch (retry due times only; never in an output value).
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
