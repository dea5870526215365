//! Bounded reads of one topic-partition with an independent, group-less consumer.
//!
//! Used where the runtime or a processor must look at what is *in* a topic rather than consume
//! it as a group member: restoring from outputs, operator commands that verify a range. Reads are
//! `read_committed` and end at librdkafka's end-of-partition signal, not at the high watermark
//! (which our local broker reports wrongly for multi-record batches, and which points past the
//! commit marker of a transaction).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::codec::Codec;
use crate::config::RuntimeConfig;
use crate::error::RuntimeError;
use crate::kafka;

/// One record as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp, ms since the epoch.
    pub timestamp: Option<i64>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers with a value, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ReadRecord {
    /// First header called `name`, as text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Reads logical topics under the configured prefix.
pub struct TopicReader<'a> {
    cfg: &'a RuntimeConfig,
    codec: &'a Codec,
}

impl<'a> TopicReader<'a> {
    /// A reader for `cfg`'s cluster and prefix.
    pub fn new(cfg: &'a RuntimeConfig, codec: &'a Codec) -> Self {
        TopicReader { cfg, codec }
    }

    /// The codec, to decode what was read.
    pub fn codec(&self) -> &Codec {
        self.codec
    }

    /// The physical name of a logical topic.
    pub fn physical(&self, logical: &str) -> String {
        self.cfg.topic(logical)
    }

    fn consumer(&self) -> Result<BaseConsumer<kafka::ReaderContext>, RuntimeError> {
        kafka::reader(self.cfg)
            .create_with_context(kafka::ReaderContext)
            .map_err(|e| RuntimeError::kafka("create reader", e))
    }

    /// `(low, high)` watermarks of a partition. The high watermark is a hint only (see the
    /// module doc).
    pub fn watermarks(&self, logical: &str, partition: i32) -> Result<(i64, i64), RuntimeError> {
        self.consumer()?
            .fetch_watermarks(&self.physical(logical), partition, Duration::from_secs(10))
            .map_err(|e| RuntimeError::kafka("watermarks", e))
    }

    /// Every record of `partition` from offset `from` (clamped to the log start) to the end.
    pub fn read_from(
        &self,
        logical: &str,
        partition: i32,
        from: i64,
    ) -> Result<Vec<ReadRecord>, RuntimeError> {
        let mut out = Vec::new();
        self.scan(logical, partition, from, |r| {
            out.push(r);
            true
        })?;
        Ok(out)
    }

    /// Calls `f` for each record from `from` to the end (or until `f` returns false).
    pub fn scan(
        &self,
        logical: &str,
        partition: i32,
        from: i64,
        mut f: impl FnMut(ReadRecord) -> bool,
    ) -> Result<(), RuntimeError> {
        let physical = self.physical(logical);
        let c = self.consumer()?;
        let (low, high) = c
            .fetch_watermarks(&physical, partition, Duration::from_secs(10))
            .map_err(|e| RuntimeError::kafka("watermarks", e))?;
        if high <= low {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&physical, partition, Offset::Offset(from.max(low)))
            .map_err(|e| RuntimeError::kafka("assign", e))?;
        c.assign(&tpl).map_err(|e| RuntimeError::kafka("assign", e))?;
        let mut idle_since = Instant::now();
        loop {
            match c.poll(Duration::from_millis(200)) {
                None => {
                    // No EOF within a while: the partition is behind a pending transaction
                    // (read_committed stops at it) or the broker is gone.
                    if idle_since.elapsed() > Duration::from_secs(60) {
                        return Err(RuntimeError::Restore {
                            topic: physical,
                            partition,
                            message: "no end of partition within 60 s".into(),
                        });
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
                Some(Err(e)) => return Err(RuntimeError::kafka("read", e)),
                Some(Ok(m)) => {
                    idle_since = Instant::now();
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .filter_map(|x| x.value.map(|v| (x.key.to_string(), v.to_vec())))
                                .collect()
                        })
                        .unwrap_or_default();
                    let rec = ReadRecord {
                        partition,
                        offset: m.offset(),
                        timestamp: m.timestamp().to_millis(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                    };
                    if !f(rec) {
                        return Ok(());
                    }
                }
            }
        }
    }
}
