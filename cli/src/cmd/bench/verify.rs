//! The independent check that a benchmarked system produced the right totals.
//!
//! A speed figure is worth nothing if the outputs are wrong, so after every exactly-once run a
//! plain `read_committed` reader (it knows nothing of either system's internals, only the
//! `TotalsUpdate` schema) reads the run's outputs and checks them against the generated input
//! ([`super::totals_input`]): exactly one output per input (source partition and offset unique,
//! none missing), and per key the amounts in input order with their running totals. Both
//! evalstream and Kafka Streams write the same schema in the same single-object encoding, so one
//! reader checks both.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use evalstream_runtime::codec::Codec;
use evalstream_runtime::config::RuntimeConfig;
use evalstream_runtime::kafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{totals_input, TOTALS_KEYS};

/// One decoded `TotalsUpdate`.
#[derive(Debug, Clone)]
pub(crate) struct Update {
    pub key: String,
    pub amount: i64,
    pub total: i64,
    pub source_partition: i32,
    pub source_offset: i64,
}

impl Update {
    pub(crate) fn decode(codec: &Codec, bytes: &[u8]) -> anyhow::Result<Update> {
        let u: evalstream_totals::TotalsUpdate = codec.decode_record(bytes)?;
        Ok(Update {
            key: u.key,
            amount: u.amount,
            total: u.total,
            source_partition: u.source_partition,
            source_offset: u.source_offset,
        })
    }
}

/// Reads `topic` (`read_committed`) from `start[p]` to its end on every partition and returns
/// the values.
pub(crate) fn read_committed(
    cfg: &RuntimeConfig,
    topic: &str,
    start: &[i64],
) -> anyhow::Result<Vec<Vec<u8>>> {
    let consumer: BaseConsumer<kafka::ReaderContext> =
        kafka::reader(cfg).create_with_context(kafka::ReaderContext)?;
    let mut tpl = TopicPartitionList::new();
    let mut open = HashSet::new();
    for (p, o) in start.iter().enumerate() {
        let (_, high) = consumer.fetch_watermarks(topic, p as i32, Duration::from_secs(10))?;
        if high > *o {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(*o))?;
            open.insert(p as i32);
        }
    }
    let mut values = Vec::new();
    if open.is_empty() {
        return Ok(values);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !open.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "reading {topic} took over 300 s");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => values.push(m.payload().unwrap_or_default().to_vec()),
        }
    }
    Ok(values)
}

/// End offsets of `topic`'s partitions now (where a run's outputs will start).
pub(crate) fn end_offsets(
    cfg: &RuntimeConfig,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<i64>> {
    let consumer: BaseConsumer = kafka::base(cfg).create()?;
    (0..partitions)
        .map(|p| Ok(consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?.1))
        .collect()
}

/// Checks the `TotalsUpdate`s in `topic` from `start` against `records` generated inputs.
pub(crate) fn totals(
    cfg: &RuntimeConfig,
    codec: &Codec,
    topic: &str,
    start: &[i64],
    records: u64,
) -> anyhow::Result<()> {
    let updates: Vec<Update> = read_committed(cfg, topic, start)?
        .iter()
        .map(|v| Update::decode(codec, v))
        .collect::<anyhow::Result<_>>()?;
    check(&updates, records).map_err(|e| anyhow::anyhow!("{topic}: {e}"))
}

/// The check itself (pure, unit-tested).
pub(crate) fn check(updates: &[Update], records: u64) -> Result<(), String> {
    if updates.len() as u64 != records {
        return Err(format!("{} outputs for {records} inputs", updates.len()));
    }
    let mut seen = HashSet::new();
    let mut by_key: HashMap<&str, Vec<&Update>> = HashMap::new();
    for u in updates {
        if !seen.insert((u.source_partition, u.source_offset)) {
            return Err(format!(
                "two outputs for input {}/{}",
                u.source_partition, u.source_offset
            ));
        }
        by_key.entry(u.key.as_str()).or_default().push(u);
    }
    for (k, mut list) in by_key {
        // A key lives in one input partition, so its source offsets give its input order.
        list.sort_by_key(|u| u.source_offset);
        let slot: u64 = k
            .strip_prefix("key-")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("unexpected key {k:?}"))?;
        let mut total = 0i64;
        for (j, u) in list.iter().enumerate() {
            let i = slot + j as u64 * TOTALS_KEYS;
            let (_, amount) = totals_input(i);
            total += amount;
            if u.amount != amount || u.total != total {
                return Err(format!(
                    "key {k}, update {j}: amount {} total {}, expected {amount} and {total}",
                    u.amount, u.total
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn updates(n: u64) -> Vec<Update> {
        let mut totals: HashMap<String, i64> = HashMap::new();
        (0..n)
            .map(|i| {
                let (key, amount) = totals_input(i);
                let t = totals.entry(key.clone()).or_default();
                *t += amount;
                Update { key, amount, total: *t, source_partition: 0, source_offset: i as i64 }
            })
            .collect()
    }

    #[test]
    fn accepts_correct_outputs_in_any_order() {
        let mut u = updates(25_000);
        u.reverse();
        assert_eq!(check(&u, 25_000), Ok(()));
    }

    #[test]
    fn rejects_missing_duplicate_and_wrong_totals() {
        let u = updates(25_000);
        assert!(check(&u[1..], 25_000).is_err());
        let mut dup = u.clone();
        dup[5] = dup[4].clone();
        assert!(check(&dup, 25_000).unwrap_err().contains("two outputs"));
        let mut wrong = u.clone();
        wrong[20_001].total += 1;
        assert!(check(&wrong, 25_000).unwrap_err().contains("expected"));
    }
}
