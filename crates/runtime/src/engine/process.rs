//! One polled record (or one punctuation) through the processor, inside the open transaction.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{debug, error, warn};

use super::gate::Verdict;
use super::producer::Outgoing;
use super::routing::{now_ms, output_headers, retry_info};
use super::{Core, EngineConsumer, Position};
use crate::error::{Disposition, ErrorClass, RuntimeError};
use crate::headers;
use crate::processor::{Context, Input, Output, Processor};

/// An encoded output: physical topic and value bytes.
pub(super) type Encoded = (String, Vec<u8>);

/// Why a record failed: class, message and what to do with it.
pub(super) type Failure = (ErrorClass, String, Disposition);

impl<P: Processor> Core<P> {
    /// Handles one polled record inside the open transaction.
    pub(super) fn handle(
        &mut self,
        consumer: &EngineConsumer<P>,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), RuntimeError> {
        let partition = msg.partition();
        let offset = msg.offset();
        // The one allocation of the topic name per record: `tp` keys the position maps.
        let tp = (msg.topic().to_string(), partition);
        let physical = tp.0.as_str();
        match self.positions.get(&tp) {
            Some(pos) if pos.next.is_some_and(|n| offset < n) => {
                // Already processed (a record fetched before a rewind/seek took effect).
                return Ok(());
            }
            None => {
                debug!(topic = %physical, partition, "record from an unassigned partition; skipping");
                return Ok(());
            }
            _ => {}
        }

        // Markers view: an input written in another transaction is processed only once its
        // marker says it committed.
        if let Some(gate) = self.gate.as_mut() {
            match gate.verdict(msg)? {
                Verdict::Pass => {}
                Verdict::Aborted => {
                    // A leaked record of an aborted transaction: not an input at all.
                    self.positions.insert(tp.clone(), Position { next: Some(offset + 1) });
                    return Ok(());
                }
                Verdict::Wait(r) => {
                    consumer
                        .seek(physical, partition, Offset::Offset(offset), Duration::from_secs(5))
                        .map_err(|e| RuntimeError::kafka("seek (input gate)", e))?;
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(physical, partition);
                    consumer.pause(&tpl).map_err(|e| RuntimeError::kafka("pause", e))?;
                    gate.wait(tp.clone(), r);
                    return Ok(());
                }
            }
        }

        // Retry-topic records carry their original coordinates and a due time.
        let retry = retry_info(msg, &self.names, self.names.logical(physical));
        if let Some(r) = &retry {
            let now = now_ms();
            if r.not_before_ms > now {
                let wait = Duration::from_millis((r.not_before_ms - now) as u64);
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(physical, partition, Offset::Offset(offset))
                    .map_err(|e| RuntimeError::kafka("pause", e))?;
                consumer
                    .seek(physical, partition, Offset::Offset(offset), Duration::from_secs(5))
                    .map_err(|e| RuntimeError::kafka("seek retry", e))?;
                consumer.pause(&tpl).map_err(|e| RuntimeError::kafka("pause", e))?;
                self.paused.insert(tp.clone(), Instant::now() + wait);
                return Ok(());
            }
        }

        let source = match &retry {
            Some(r) => headers::coordinate(&r.topic, r.partition, r.offset),
            None => headers::coordinate(physical, partition, offset),
        };
        // An input whose outputs were refused together with other records is processed in a
        // transaction of its own, so that a second refusal names it alone. (Usually there is no
        // suspect: skip hashing the coordinate then.)
        if !self.suspects.is_empty() && self.suspects.contains(&source) {
            if self.txn.as_ref().is_some_and(|t| t.records > 0) {
                self.commit(consumer)?;
            }
            self.begin_if_needed()?;
            if let Some(t) = self.txn.as_mut() {
                t.isolated = Some(source.clone());
            }
        }
        self.begin_if_needed()?;
        // Headers name physical topics (what exists in Kafka); processors see logical names.
        let original_topic = retry
            .as_ref()
            .map(|r| self.names.logical(&r.topic).to_string())
            .unwrap_or_else(|| self.names.logical(physical).to_string());
        let attempt = retry.as_ref().map(|r| r.attempt).unwrap_or(1);
        if let Some(t) = self.txn.as_mut() {
            count(&mut t.counts.inputs, &original_topic);
            t.partitions.insert(partition);
        }

        let poison = if self.poisoned.is_empty() { None } else { self.poisoned.get(&source) };
        let failure = match poison {
            // Its outputs are refused by the broker for what they are: replaying cannot help.
            Some(poison) => {
                if let Some(t) = self.txn.as_mut() {
                    t.dead_lettered_poison.push(source.clone());
                }
                Some((
                    ErrorClass::OutputRejected,
                    format!("an output was refused: {}", poison.message),
                    Disposition::DeadLetter,
                ))
            }
            None => self.process_one(msg, &original_topic, partition, offset, attempt, &source)?,
        };
        if let Some((class, message, disposition)) = failure {
            let (src_partition, src_offset) =
                retry.as_ref().map(|r| (r.partition, r.offset)).unwrap_or((partition, offset));
            let max = self.cfg.retry.max_attempts;
            let has_retry = self.names.retry(&original_topic).is_some();
            if disposition == Disposition::Retry && attempt < max && has_retry {
                self.send_retry(
                    msg,
                    &original_topic,
                    src_partition,
                    src_offset,
                    attempt + 1,
                    &source,
                )?;
            } else {
                // Without a retry topic a not-ready record is dead-lettered at once, as
                // `not_ready`; with one, only after the last attempt.
                let class = if disposition == Disposition::Retry && has_retry {
                    ErrorClass::RetriesExhausted
                } else {
                    class
                };
                self.send_dlq(
                    msg,
                    &original_topic,
                    src_partition,
                    src_offset,
                    class,
                    &message,
                    attempt,
                    &source,
                )?;
            }
        }

        let next = Position { next: Some(offset + 1) };
        match self.positions.get_mut(&tp) {
            Some(pos) => *pos = next,
            None => {
                self.positions.insert(tp.clone(), next);
            }
        }
        if let Some(txn) = self.txn.as_mut() {
            txn.records += 1;
            if !txn.touched.contains(&tp) {
                txn.touched.insert(tp);
            }
        }
        Ok(())
    }

    /// Decodes and processes one record. `Ok(Some(..))` = the record failed and must be
    /// dead-lettered or retried; `Err` = stop-class failure.
    fn process_one(
        &mut self,
        msg: &BorrowedMessage<'_>,
        topic: &str,
        partition: i32,
        offset: i64,
        attempt: u32,
        source: &str,
    ) -> Result<Option<Failure>, RuntimeError> {
        let payload = match msg.payload() {
            None => {
                return Ok(Some((
                    ErrorClass::Deserialization,
                    "record has no value".into(),
                    Disposition::DeadLetter,
                )))
            }
            Some(p) => p,
        };
        if payload.len() > self.cfg.max_record_bytes {
            return Ok(Some((
                ErrorClass::Oversized,
                format!("value is {} bytes, limit is {}", payload.len(), self.cfg.max_record_bytes),
                Disposition::DeadLetter,
            )));
        }
        // Framed: header parsed and body validated, the value decoded only if the processor
        // asks for the tree (a typed input is read straight from the bytes).
        let framed = match self.codec.frame(payload) {
            Ok(d) => d,
            Err(e) if e.is_transient() => return Err(RuntimeError::Unavailable(e.to_string())),
            Err(e) => {
                return Ok(Some((
                    ErrorClass::Deserialization,
                    e.to_string(),
                    Disposition::DeadLetter,
                )))
            }
        };
        let state = self.states.entry(partition).or_default();
        state.begin_record();
        let input = Input::framed(topic, partition, offset, &framed)
            .with_key(msg.key())
            .with_timestamp(msg.timestamp().to_millis())
            .with_attempt(attempt);
        let mut ctx = Context::new(state);
        let result = self.processor.process(&input, &mut ctx);
        let outputs = ctx.take_outputs();
        match result {
            Ok(()) => {
                // Encode everything first so that a bad output leaves no partial trace.
                let encoded = match self.encode_outputs(&outputs) {
                    Ok(encoded) => encoded,
                    Err((out, e)) => {
                        self.states.entry(partition).or_default().rollback_record();
                        error!(topic = %out.topic, error = %e, "processor emitted a value that does not match its schema");
                        return Ok(Some((
                            ErrorClass::Encoding,
                            format!("output to {} does not match {}: {e}", out.topic, out.schema),
                            Disposition::DeadLetter,
                        )));
                    }
                };
                self.send_outputs(&outputs, encoded, source, partition)?;
                Ok(None)
            }
            Err(e) => {
                self.states.entry(partition).or_default().rollback_record();
                match e.disposition() {
                    Disposition::Stop => Err(RuntimeError::Processor(e)),
                    d => Ok(Some((e.class(), e.to_string(), d))),
                }
            }
        }
    }

    /// Runs [`Processor::punctuate`] for every assigned partition when its interval is due.
    /// Outputs go into the open transaction; the partition's first input is marked touched so
    /// the commit writes its progress marker (a transaction never carries outputs without one).
    pub(super) fn punctuate_if_due(&mut self) -> Result<(), RuntimeError> {
        let Some(interval) = self.processor.punctuate_interval() else { return Ok(()) };
        if self.cfg.mode == crate::config::Mode::ReadOnly {
            return Ok(());
        }
        if self.last_punctuate.elapsed() < interval {
            return Ok(());
        }
        self.last_punctuate = Instant::now();
        let partitions: Vec<i32> = self.states.keys().copied().collect();
        for p in partitions {
            let state = self.states.entry(p).or_default();
            state.begin_record();
            let mut ctx = Context::new(state);
            let result = self.processor.punctuate(p, &mut ctx);
            let outputs = ctx.take_outputs();
            if let Err(e) = result {
                self.states.entry(p).or_default().rollback_record();
                match e.disposition() {
                    Disposition::Stop => return Err(RuntimeError::Processor(e)),
                    _ => {
                        warn!(partition = p, error = %e, "punctuation failed; will try again");
                        continue;
                    }
                }
            }
            if outputs.is_empty() {
                continue;
            }
            self.begin_if_needed()?;
            let first_input = self.names.physical(&self.names.inputs[0]);
            let source = headers::coordinate(&first_input, p, -1);
            let encoded = self.encode_outputs(&outputs).map_err(|(out, e)| {
                RuntimeError::Encode { topic: out.topic.clone(), message: e.to_string() }
            })?;
            self.send_outputs(&outputs, encoded, &source, p)?;
            // The commit writes partition p's marker (and sends its positions as offsets).
            if let Some(t) = self.txn.as_mut() {
                t.partitions.insert(p);
            }
        }
        Ok(())
    }

    /// Encodes every output (physical topic, bytes), or names the first that does not match its
    /// schema.
    fn encode_outputs<'o>(
        &self,
        outputs: &'o [Output],
    ) -> Result<Vec<Encoded>, (&'o Output, crate::codec::CodecError)> {
        outputs
            .iter()
            .map(|out| {
                let physical = self.names.physical(&out.topic);
                match out.encode(&self.codec, &physical) {
                    Ok(bytes) => Ok((physical, bytes)),
                    Err(e) => Err((out, e)),
                }
            })
            .collect()
    }

    /// Produces encoded outputs in the open transaction with the source, transaction, progress
    /// and index headers, and counts them for the commit's metrics.
    fn send_outputs(
        &mut self,
        outputs: &[Output],
        encoded: Vec<Encoded>,
        source: &str,
        partition: i32,
    ) -> Result<(), RuntimeError> {
        let progress = self.progress_header(partition);
        for (index, (out, (physical, bytes))) in outputs.iter().zip(encoded).enumerate() {
            let txn_id = self.txn.as_ref().map(|t| t.id.as_str()).unwrap_or_default();
            let hdrs = output_headers(out, source, txn_id, &progress, index);
            let record = Outgoing::to(physical, out.partition, hdrs)
                .key(out.key.as_deref())
                .value(Some(bytes))
                .input(source);
            self.send(record)?;
            if let Some(t) = self.txn.as_mut() {
                count(&mut t.counts.outputs, &out.topic);
            }
        }
        Ok(())
    }

    /// [`Core::progress_ref`] of `partition`, formatted once per commit sequence rather than
    /// once per record: the value only changes when the partition's commit sequence does.
    fn progress_header(&mut self, partition: i32) -> std::sync::Arc<str> {
        let seq = self.commit_seq.get(&partition).copied().unwrap_or(0);
        if let Some((cached, value)) = self.progress_headers.get(&partition) {
            if *cached == seq {
                return value.clone();
            }
        }
        let value: std::sync::Arc<str> = self.progress_ref(partition).into();
        self.progress_headers.insert(partition, (seq, value.clone()));
        value
    }
}

/// Adds one to `topic`'s counter, allocating the key only the first time it is seen.
fn count(counts: &mut std::collections::BTreeMap<String, u64>, topic: &str) {
    match counts.get_mut(topic) {
        Some(n) => *n += 1,
        None => {
            counts.insert(topic.to_string(), 1);
        }
    }
}
