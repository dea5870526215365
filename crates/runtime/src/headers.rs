//! Record header names: the contract between the runtime, operators and downstream consumers.
//!
//! DLQ headers follow the conventions of Kafka Connect (`__connect.errors.*`) and Kafka Streams'
//! KIP-1034 (`__streams.errors.*`), under our own `__evalstream.errors.` prefix so that a record
//! that passed through several systems keeps every system's story. All values are UTF-8 text.
//! Topic names in headers are physical names (with any configured `topic_prefix`): what an
//! operator finds in the cluster.

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
/// DLQ: error class: `deserialization`, `validation`, `not_ready`, `oversized`, `encoding`.
pub const ERR_CLASS: &str = "__evalstream.errors.class";
/// DLQ: human-readable reason.
pub const ERR_MESSAGE: &str = "__evalstream.errors.message";
/// DLQ and retry: how many processing attempts were made (decimal).
pub const ERR_ATTEMPTS: &str = "__evalstream.errors.attempts";

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

/// Formats a source coordinate the way [`SOURCE`], [`REQUEUED_FROM`] carry it.
pub fn coordinate(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
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
    fn coordinates_round_trip() {
        let c = coordinate("eval.submissions", 3, 42);
        assert_eq!(c, "eval.submissions/3/42");
        assert_eq!(parse_coordinate(&c), Some(("eval.submissions".into(), 3, 42)));
        assert_eq!(parse_coordinate("x/1"), None);
        assert_eq!(parse_coordinate("/1/2"), None);
        assert_eq!(parse_coordinate("t/a/2"), None);
    }
}
