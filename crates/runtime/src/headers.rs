//! Record header names: the contract between the runtime, operators and downstream consumers.
//!
//! DLQ headers follow the conventions of Kafka Connect (`__connect.errors.*`) and Kafka Streams'
//! KIP-1034 (`__streams.errors.*`), under our own `__evalstream.errors.` prefix so that a record
//! that passed through several systems keeps every system's story. All values are UTF-8 text.
//! Topic names in headers are physical names (with any configured `topic_prefix`): what an
//! operator finds in the cluster.

use crate::error::ErrorClass;

/// DLQ: topic the failed record was read from.
pub const ERR_TOPIC: &str = "__evalstream.errors.topic";
/// DLQ: partition the failed record was read from (decimal).
pub const ERR_PARTITION: &str = "__evalstream.errors.partition";
/// DLQ: offset of the failed record (decimal).
pub const ERR_OFFSET: &str = "__evalstream.errors.offset";
/// DLQ: the failed record's timestamp in ms since the epoch (decimal), when it had one.
pub const ERR_TIMESTAMP: &str = "__evalstream.errors.timestamp";
/// DLQ: name of the processor that gave up on the record.
pub const ERR_PROCESSOR: &str = "__evalstream.errors.processor";
/// DLQ: error class, one of [`crate::error::ErrorClass`] (`deserialization`, `validation`, ...).
pub const ERR_CLASS: &str = "__evalstream.errors.class";
/// DLQ: human-readable reason.
pub const ERR_MESSAGE: &str = "__evalstream.errors.message";
/// DLQ and retry: how many processing attempts were made (decimal).
pub const ERR_ATTEMPTS: &str = "__evalstream.errors.attempts";
/// DLQ: present when the record is written without its value because the DLQ topic refused it
/// with the value (the original is still at `errors.topic`/`partition`/`offset`).
pub const ERR_VALUE_DROPPED: &str = "__evalstream.errors.value_dropped";

/// Retry topic: the topic the record must be processed as (its original topic).
pub const RETRY_TOPIC: &str = "__evalstream.retry.topic";
/// Retry topic: partition on the original topic (decimal).
pub const RETRY_PARTITION: &str = "__evalstream.retry.partition";
/// Retry topic: offset on the original topic (decimal).
pub const RETRY_OFFSET: &str = "__evalstream.retry.offset";
/// Retry topic: attempt number of the *next* try, starting at 2 (decimal).
pub const RETRY_ATTEMPT: &str = "__evalstream.retry.attempt";
/// Retry topic: earliest time, ms since the epoch, at which the next try may run (decimal).
pub const RETRY_NOT_BEFORE: &str = "__evalstream.retry.not_before_ms";

/// Requeued records: `<dlq topic>/<partition>/<offset>` of the DLQ record they came from.
pub const REQUEUED_FROM: &str = "__evalstream.requeued.from";

/// Every output: `<topic>/<partition>/<offset>` of the input record it was derived from.
/// This is "progress in the outputs": a replay reproduces the same value, so a consumer can
/// recognise duplicates, and a verifier can map every output back to its input.
pub const SOURCE: &str = "evalstream.source";
/// Every output: the id of the transaction that wrote it, `<instance>-<nonce>-<seq>`.
/// Together with the progress markers in the changelog this lets a verifier reconstruct
/// `read_committed` on brokers that expose aborted records (see docs/exactly-once.md).
pub const TXN: &str = "evalstream.txn";
/// Every output: index of this output among those derived from the same input (decimal, from 0).
pub const OUTPUT_INDEX: &str = "evalstream.output_index";
/// Every record the runtime writes in a transaction (outputs, dead letters, retry records,
/// state entries): `<changelog topic>/<partition>/<commit sequence>`, the progress marker that
/// commits it (see [`crate::progress`]). A reader on a broker that shows aborted records counts
/// the record as committed iff the first marker with that sequence in that changelog partition
/// belongs to the record's [`TXN`].
pub const PROGRESS: &str = "evalstream.progress";

/// The DLQ headers of a dead-lettered record: where it came from and why. The engine builds one
/// for every record it dead-letters ([`DeadLetterHeaders::to_headers`]); `evalstream dlq` parses
/// it back ([`DeadLetterHeaders::parse`]). Parsing is lenient: a DLQ is where malformed things
/// end up, so a missing or malformed header becomes `None`, never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterHeaders {
    /// Topic the record was read from (physical name). Required: without it a record is not a
    /// dead letter of ours.
    pub topic: String,
    /// Its partition there.
    pub partition: Option<i32>,
    /// Its offset there.
    pub offset: Option<i64>,
    /// Its timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
    /// The processor that gave up on it.
    pub processor: Option<String>,
    /// Why ([`ERR_CLASS`]); `None` also for a class this version does not know.
    pub class: Option<ErrorClass>,
    /// Human-readable reason.
    pub message: Option<String>,
    /// Processing attempts made.
    pub attempts: Option<u32>,
}

impl DeadLetterHeaders {
    /// Every header name of the contract (what `dlq requeue` strips).
    pub const NAMES: [&'static str; 9] = [
        ERR_VALUE_DROPPED,
        ERR_TOPIC,
        ERR_PARTITION,
        ERR_OFFSET,
        ERR_TIMESTAMP,
        ERR_PROCESSOR,
        ERR_CLASS,
        ERR_MESSAGE,
        ERR_ATTEMPTS,
    ];

    /// The headers, name and UTF-8 text, in a fixed order; absent fields are left out.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![(ERR_TOPIC, self.topic.clone())];
        let mut push = |name, value: Option<String>| {
            if let Some(v) = value {
                h.push((name, v));
            }
        };
        push(ERR_PARTITION, self.partition.map(|p| p.to_string()));
        push(ERR_OFFSET, self.offset.map(|o| o.to_string()));
        push(ERR_PROCESSOR, self.processor.clone());
        push(ERR_CLASS, self.class.map(|c| c.as_str().to_string()));
        push(ERR_MESSAGE, self.message.clone());
        push(ERR_ATTEMPTS, self.attempts.map(|a| a.to_string()));
        push(ERR_TIMESTAMP, self.timestamp.map(|t| t.to_string()));
        h
    }

    /// Parses the headers of a DLQ record (`None` without an [`ERR_TOPIC`] header). Negative
    /// partitions and offsets count as malformed.
    pub fn parse(headers: &[(&str, Option<&[u8]>)]) -> Option<Self> {
        let text = |name: &str| header_text(headers, name);
        let topic = text(ERR_TOPIC).filter(|t| !t.is_empty())?;
        Some(DeadLetterHeaders {
            topic,
            partition: text(ERR_PARTITION).and_then(|p| p.parse().ok()).filter(|p| *p >= 0),
            offset: text(ERR_OFFSET).and_then(|o| o.parse().ok()).filter(|o| *o >= 0),
            timestamp: text(ERR_TIMESTAMP).and_then(|t| t.parse().ok()),
            processor: text(ERR_PROCESSOR),
            class: text(ERR_CLASS).and_then(|c| c.parse().ok()),
            message: text(ERR_MESSAGE),
            attempts: text(ERR_ATTEMPTS).and_then(|a| a.parse().ok()),
        })
    }
}

/// The headers of a record on a retry topic: the original coordinates (the record is processed
/// *as* that record) and when the next attempt may run. Written by the engine when a record is
/// not ready, read by the engine when the retry copy comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryHeaders {
    /// Original topic (physical name).
    pub topic: String,
    /// Original partition.
    pub partition: i32,
    /// Original offset.
    pub offset: i64,
    /// Attempt number of the next try (2 for the first retry).
    pub attempt: u32,
    /// Earliest time for the next try, ms since the epoch.
    pub not_before_ms: i64,
}

impl RetryHeaders {
    /// Every header name of the contract (what `dlq requeue` strips).
    pub const NAMES: [&'static str; 5] =
        [RETRY_TOPIC, RETRY_PARTITION, RETRY_OFFSET, RETRY_ATTEMPT, RETRY_NOT_BEFORE];

    /// The headers, name and UTF-8 text.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (RETRY_TOPIC, self.topic.clone()),
            (RETRY_PARTITION, self.partition.to_string()),
            (RETRY_OFFSET, self.offset.to_string()),
            (RETRY_ATTEMPT, self.attempt.to_string()),
            (RETRY_NOT_BEFORE, self.not_before_ms.to_string()),
        ]
    }

    /// Parses the headers of a retry-topic record. A missing or malformed header takes its value
    /// from `fallback` (the coordinates of the retry record itself, attempt 2, due now): a retry
    /// record is always processed, never dropped.
    pub fn parse(headers: &[(&str, Option<&[u8]>)], fallback: RetryHeaders) -> Self {
        let text = |name: &str| header_text(headers, name);
        RetryHeaders {
            topic: text(RETRY_TOPIC).filter(|t| !t.is_empty()).unwrap_or(fallback.topic),
            partition: text(RETRY_PARTITION)
                .and_then(|v| v.parse().ok())
                .unwrap_or(fallback.partition),
            offset: text(RETRY_OFFSET).and_then(|v| v.parse().ok()).unwrap_or(fallback.offset),
            attempt: text(RETRY_ATTEMPT).and_then(|v| v.parse().ok()).unwrap_or(fallback.attempt),
            not_before_ms: text(RETRY_NOT_BEFORE)
                .and_then(|v| v.parse().ok())
                .unwrap_or(fallback.not_before_ms),
        }
    }
}

/// The first header called `name` as UTF-8 text.
fn header_text(headers: &[(&str, Option<&[u8]>)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| *v)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

/// Formats a source coordinate the way [`SOURCE`], [`REQUEUED_FROM`] carry it.
pub fn coordinate(topic: &str, partition: i32, offset: i64) -> String {
    // Built by hand: this runs once per record, and `format!` costs several times more.
    let mut s = String::with_capacity(topic.len() + 32);
    s.push_str(topic);
    s.push('/');
    push_decimal(&mut s, i64::from(partition));
    s.push('/');
    push_decimal(&mut s, offset);
    s
}

/// Appends `n` in decimal, as `Display` writes it.
pub(crate) fn push_decimal(out: &mut String, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push('-');
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// Parses a coordinate written by [`coordinate`]. Topic names may not contain `/`, so the last
/// two `/`-separated fields are partition and offset.
pub fn parse_coordinate(s: &str) -> Option<(String, i32, i64)> {
    let (rest, offset) = s.rsplit_once('/')?;
    let (topic, partition) = rest.rsplit_once('/')?;
    if topic.is_empty() {
        return None;
    }
    Some((topic.to_string(), partition.parse().ok()?, offset.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_formatted_as_display_would() {
        for (p, o) in [(0, 0), (3, 12_345), (i32::MAX, i64::MAX), (i32::MIN, i64::MIN), (-1, -10)] {
            assert_eq!(coordinate("t.x", p, o), format!("t.x/{p}/{o}"));
            assert_eq!(parse_coordinate(&coordinate("t.x", p, o)), Some(("t.x".into(), p, o)));
        }
    }

    fn pairs(h: &[(&'static str, String)]) -> Vec<(&'static str, Option<Vec<u8>>)> {
        h.iter().map(|(k, v)| (*k, Some(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn dead_letter_headers_round_trip() {
        let d = DeadLetterHeaders {
            topic: "p.eval.submissions".into(),
            partition: Some(2),
            offset: Some(17),
            timestamp: Some(1_714_557_600_123),
            processor: Some("submissions".into()),
            class: Some(ErrorClass::Encoding),
            message: Some("too large".into()),
            attempts: Some(1),
        };
        let h = pairs(&d.to_headers());
        let borrowed: Vec<(&str, Option<&[u8]>)> =
            h.iter().map(|(k, v)| (*k, v.as_deref())).collect();
        assert_eq!(DeadLetterHeaders::parse(&borrowed), Some(d));
        assert_eq!(DeadLetterHeaders::parse(&[]), None);
    }

    #[test]
    fn retry_headers_round_trip_and_fall_back_per_field() {
        let r = RetryHeaders {
            topic: "t".into(),
            partition: 1,
            offset: 9,
            attempt: 3,
            not_before_ms: 5,
        };
        let h = pairs(&r.to_headers());
        let fallback = RetryHeaders {
            topic: "f".into(),
            partition: 0,
            offset: 0,
            attempt: 2,
            not_before_ms: 0,
        };
        let borrowed: Vec<(&str, Option<&[u8]>)> =
            h.iter().map(|(k, v)| (*k, v.as_deref())).collect();
        assert_eq!(RetryHeaders::parse(&borrowed, fallback.clone()), r);
        let broken = [(RETRY_OFFSET, Some(&b"x"[..])), (RETRY_ATTEMPT, Some(&b"4"[..]))];
        let got = RetryHeaders::parse(&broken, fallback.clone());
        assert_eq!(got, RetryHeaders { attempt: 4, ..fallback });
    }

    #[test]
    fn coordinates_round_trip() {
        let c = coordinate("eval.submissions", 3, 42);
        assert_eq!(c, "eval.submissions/3/42");
        assert_eq!(parse_coordinate(&c), Some(("eval.submissions".into(), 3, 42)));
        assert_eq!(parse_coordinate("x/1"), None);
        assert_eq!(parse_coordinate("/1/2"), None);
        assert_eq!(parse_coordinate("t/a/2"), None);
    }
}
