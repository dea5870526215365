//! Restore: rebuild a partition's state from the changelog, and find where each input resumes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::codec::Codec;
use crate::config::RuntimeConfig;
use crate::error::RuntimeError;
use crate::kafka;
use crate::state::{self, ChangelogKey, StateView};

/// Avro schema of progress-marker values in a changelog topic.
pub const PROGRESS_MARKER_SCHEMA: &str = "evalstream.runtime.ProgressMarker";

/// Reads changelog partition `p` to its end and rebuilds the state it proves: state entries are
/// applied when a progress marker follows them; entries after the last marker belong to a
/// transaction that never committed and are dropped. Returns the state and, per input topic,
/// the next offset to process.
pub fn restore_partition(
    cfg: &RuntimeConfig,
    codec: &Codec,
    changelog: &str,
    partition: i32,
) -> Result<(StateView, HashMap<String, i64>), RuntimeError> {
    let restore_err = |message: String| RuntimeError::Restore {
        topic: changelog.to_string(),
        partition,
        message,
    };
    let reader: BaseConsumer<kafka::ReaderContext> = kafka::reader(cfg)
        .create_with_context(kafka::ReaderContext)
        .map_err(|e| RuntimeError::kafka("create restore reader", e))?;
    let (low, high) = reader
        .fetch_watermarks(changelog, partition, Duration::from_secs(10))
        .map_err(|e| RuntimeError::kafka("changelog watermarks", e))?;
    let mut fold = RestoreFold::default();
    if high <= low {
        return Ok(fold.finish(changelog, partition));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(changelog, partition, Offset::Beginning)
        .map_err(|e| RuntimeError::kafka("restore assign", e))?;
    reader.assign(&tpl).map_err(|e| RuntimeError::kafka("restore assign", e))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if Instant::now() > deadline {
            return Err(restore_err(format!("did not reach the end ({high}) within 120 s")));
        }
        match reader.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(RuntimeError::kafka("restore poll", e)),
            Some(Ok(m)) => {
                fold.records += 1;
                let Some(key) = m.key() else { continue };
                match state::parse_changelog_key(key) {
                    Some(ChangelogKey::State(k)) => fold.state_entry(k, m.payload()),
                    Some(ChangelogKey::Marker(topic)) => {
                        let payload = m.payload().unwrap_or_default();
                        let next = decode_marker(codec, payload).map_err(|e| {
                            restore_err(format!("marker at offset {}: {e}", m.offset()))
                        })?;
                        fold.marker(topic, next);
                    }
                    None => {
                        warn!(offset = m.offset(), "changelog record with a foreign key; ignored")
                    }
                }
            }
        }
    }
    Ok(fold.finish(changelog, partition))
}

/// What a changelog partition proves, built record by record in log order.
#[derive(Debug, Default)]
struct RestoreFold {
    state: StateView,
    markers: HashMap<String, i64>,
    pending: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    records: u64,
}

impl RestoreFold {
    /// A state entry: held until a marker proves its transaction committed.
    fn state_entry(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.pending.push((key.to_vec(), value.map(<[u8]>::to_vec)));
    }

    /// A progress marker of `topic`: applies the entries before it.
    fn marker(&mut self, topic: &str, next: i64) {
        self.markers.insert(topic.to_string(), next);
        for (k, v) in self.pending.drain(..) {
            self.state.restore(k, v);
        }
    }

    fn finish(self, changelog: &str, partition: i32) -> (StateView, HashMap<String, i64>) {
        if !self.pending.is_empty() {
            info!(
                changelog,
                partition,
                dropped = self.pending.len(),
                "dropped state entries of an uncommitted transaction"
            );
        }
        debug!(changelog, partition, records = self.records, keys = self.state.len(), "restored");
        (self.state, self.markers)
    }
}

/// Decodes a progress marker value and returns its `next_offset`.
pub fn decode_marker(codec: &Codec, payload: &[u8]) -> Result<i64, String> {
    let decoded = codec.decode(payload).map_err(|e| e.to_string())?;
    if decoded.schema_name != PROGRESS_MARKER_SCHEMA {
        return Err(format!("expected {PROGRESS_MARKER_SCHEMA}, got {}", decoded.schema_name));
    }
    match decoded.value {
        Value::Record(fields) => fields
            .into_iter()
            .find_map(|(n, v)| match (n.as_str(), v) {
                ("next_offset", Value::Long(o)) => Some(o),
                _ => None,
            })
            .ok_or_else(|| "marker has no next_offset".to_string()),
        other => Err(format!("marker is not a record: {other:?}")),
    }
}
