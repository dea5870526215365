//! Kafka client configuration shared by every client the runtime and the CLI create.
//!
//! All clients start from [`base`], which carries the bootstrap servers and the user's security
//! pass-through properties (`security.protocol`, `sasl.*`, `ssl.*`, ...; see
//! [`crate::config::RuntimeConfig::kafka`]), so pointing evalstream at a real cluster is a config
//! change, never a code change.

use rdkafka::ClientConfig;

use crate::config::RuntimeConfig;

/// Bootstrap servers plus pass-through properties.
pub fn base(cfg: &RuntimeConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers);
    for (k, v) in &cfg.kafka {
        c.set(k, v);
    }
    c
}

/// Upper bound of a fetch's wait for data (see [`eos_consumer`]).
pub const FETCH_WAIT_MS: u64 = 50;

/// A consumer in `group` for exactly-once processing: no auto-commit (offsets are committed by
/// the transaction), `read_committed`, and no automatic offset store.
pub fn eos_consumer(cfg: &RuntimeConfig, group: &str) -> ClientConfig {
    let mut c = base(cfg);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        // Eager assignment: every rebalance revokes everything first, so the runtime commits its
        // open transaction exactly once per rebalance, before any partition moves.
        .set("partition.assignment.strategy", "range,roundrobin")
        .set("enable.partition.eof", "false")
        // A fetch waits at most this long for data. Apache Kafka answers as soon as
        // `fetch.min.bytes` (1) are there; some brokers (our local Tansu among them) hold
        // read_committed fetches for the whole wait, which would cap throughput at one fetch
        // per 500 ms (the librdkafka default). One commit interval is the natural bound.
        .set("fetch.wait.max.ms", FETCH_WAIT_MS.to_string())
        // Prefetch at most this much (librdkafka's default, 64 MiB, was most of the process's
        // peak memory). The fetcher refills it as the loop drains it (below); at full speed
        // 8 MiB ran as fast as 16 MiB with 8 MiB less peak memory (issue 8, phase 5 of
        // docs/performance.md).
        .set("queued.max.messages.kbytes", CONSUMER_PREFETCH_KBYTES.to_string())
        // A partition whose queue is full fetches again after this long (librdkafka's default,
        // 1 s, left the loop idle for most of a second each time the smaller queue filled).
        .set("fetch.queue.backoff.ms", "10");
    c
}

/// Upper bound of the exactly-once consumer's prefetch queue, in KiB.
pub const CONSUMER_PREFETCH_KBYTES: u32 = 8 * 1024;

/// A transactional producer with the given `transactional.id`.
pub fn transactional_producer(cfg: &RuntimeConfig, transactional_id: &str) -> ClientConfig {
    let mut c = base(cfg);
    c.set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .set("transaction.timeout.ms", cfg.transaction_timeout_ms.to_string())
        .set("linger.ms", "5")
        .set("compression.type", cfg.compression.as_str())
        .set("message.max.bytes", (cfg.max_record_bytes + 64 * 1024).to_string());
    c
}

/// A consumer without a group, for reading a partition range (restore, verification, CLI).
/// `read_committed` so that on a correct broker aborted records are never seen.
pub fn reader(cfg: &RuntimeConfig) -> ClientConfig {
    let mut c = base(cfg);
    c.set("group.id", format!("evalstream-reader-{}", rand::random::<u64>()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true");
    c
}

/// A plain (non-transactional, idempotent) producer, for operator commands that produce.
pub fn plain_producer(cfg: &RuntimeConfig) -> ClientConfig {
    let mut c = base(cfg);
    c.set("enable.idempotence", "true").set("linger.ms", "5");
    c
}

/// Client context for [`reader`] clients: end-of-partition is how a reader knows it is done, not
/// an error, so it is not logged; everything else is logged as a warning.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if !matches!(error, rdkafka::error::KafkaError::PartitionEOF(_))
            && error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            tracing::warn!(%error, reason, "kafka reader error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

#[cfg(test)]
mod tests {
    use rdkafka::producer::BaseProducer;

    use super::*;
    use crate::config::Compression;

    /// Every compression the config accepts is one the linked librdkafka was built with
    /// (zstd, for one, is not): creating a producer checks the codec without a broker.
    #[test]
    fn every_accepted_compression_is_supported_by_the_linked_librdkafka() {
        for compression in Compression::ALL {
            let cfg = RuntimeConfig { compression, ..RuntimeConfig::default() };
            let created =
                transactional_producer(&cfg, "compression-check").create::<BaseProducer>();
            assert!(created.is_ok(), "{}: {:?}", compression.as_str(), created.err());
        }
    }
}
