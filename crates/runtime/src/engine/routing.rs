//! Records that leave the normal path: dead letters (`<input>.dlq`) and retries
//! (`<input>.retry`), with the header contract of [`crate::headers`].

use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use tracing::warn;

use super::names::TopicNames;
use super::producer::Outgoing;
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
        let progress = self.progress_ref(msg.partition());
        h = h
            .insert(text(headers::SOURCE, source))
            .insert(text(headers::TXN, &txn_id))
            .insert(text(headers::PROGRESS, &progress));
        let dlq = self.names.dlq(topic);
        // A dead letter the DLQ topic itself refused (too large) is written without its value;
        // the headers still say where the record is.
        let drop_value = self.poisoned.get(source).is_some_and(|p| p.drop_value);
        let value = if drop_value { None } else { msg.payload() };
        if drop_value {
            h = h.insert(text(
                headers::ERR_VALUE_DROPPED,
                "the DLQ topic refused the record with its value",
            ));
        }
        // Same partition number as the input keeps per-partition order within the DLQ.
        self.send(
            Outgoing::to(dlq, Some(msg.partition()), h).key(msg.key()).value(value).input(source),
        )?;
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
        let progress = self.progress_ref(msg.partition());
        h = h
            .insert(text(headers::SOURCE, source))
            .insert(text(headers::TXN, &txn_id))
            .insert(text(headers::PROGRESS, &progress));
        let retry = self.names.retry(topic).ok_or_else(|| {
            RuntimeError::Config(format!("{topic} has no retry topic in the topology"))
        })?;
        let record =
            Outgoing::to(retry, Some(msg.partition()), h).key(msg.key()).value(msg.payload());
        self.send(record.input(source))?;
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

/// The input's headers minus the runtime's own (error/retry/source/txn/progress headers are
/// rewritten, never accumulated).
fn original_headers(msg: &BorrowedMessage<'_>) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        for x in h.iter() {
            if x.key.starts_with("__evalstream.")
                || x.key == headers::SOURCE
                || x.key == headers::TXN
                || x.key == headers::PROGRESS
            {
                continue;
            }
            out = out.insert(Header { key: x.key, value: x.value });
        }
    }
    out
}

/// The headers of an output record: source, transaction, progress, index, then the processor's
/// own.
pub(super) fn output_headers(
    out: &Output,
    source: &str,
    txn: &str,
    progress: &str,
    index: usize,
) -> OwnedHeaders {
    let mut h = OwnedHeaders::new()
        .insert(text(headers::SOURCE, source))
        .insert(text(headers::TXN, txn))
        .insert(text(headers::PROGRESS, progress))
        .insert(text(headers::OUTPUT_INDEX, &output_index(index)));
    for (k, v) in &out.headers {
        h = h.insert(Header { key: k, value: Some(v.as_slice()) });
    }
    h
}

/// The `evalstream.output-index` value: almost always a single digit, which needs no
/// allocation.
fn output_index(index: usize) -> std::borrow::Cow<'static, str> {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match DIGITS.get(index) {
        Some(d) => std::borrow::Cow::Borrowed(d),
        None => std::borrow::Cow::Owned(index.to_string()),
    }
}

/// Wall-clock milliseconds since the epoch (retry due times only; never in an output value).
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
