//! Unit-testing processors without a broker: typed inputs in one line, and an in-memory
//! [`Runner`] that treats every record the way the engine does.
//!
//! ```text
//!  testkit::record(topic, &T).key(k) ──encode (bundled schemas)──► bytes ──decode──► Input
//!                                                                                  │
//!  Runner::send ─► process(Input, Context{State}) ─┬ Ok ─► encode every output (strict) ─► outputs
//!                                                  │        └ does not match its schema ─► DLQ `encoding`
//!                                                  ├ Invalid ─► DLQ (class of the error)
//!                                                  ├ NotReady ─► waits for redeliver_retries()
//!                                                  │            (input with a retry topic, attempts left)
//!                                                  │            else DLQ `retries_exhausted` / `not_ready`
//!                                                  └ Fatal ─► stopped
//!  commit() ─► changelog entries     abort() ─► state, outputs and positions back to the last commit
//! ```
//!
//! The classification mirrors the engine (`crates/runtime/src/engine/process.rs`, `handle` and
//! `process_one`): a failed record leaves no state writes and no outputs; undecodable bytes are
//! dead-lettered with the codec's class; retry topics and attempt limits come from
//! `topology/topology.toml` as the engine derives them. Inputs and outputs really go through
//! the codec, so a type that disagrees with its schema fails here as it would in production.
//! What needs Kafka (`on_assign` with a topic reader, rebalances, transactions) is tested in
//! `integration-tests/`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;

use crate::codec::{Codec, Decoded, SchemaStore};
use crate::config::RuntimeConfig;
use crate::engine::TopicNames;
use crate::error::{Disposition, ErrorClass, ProcessError};
use crate::processor::{Context, Input, Output, Processor};
use crate::record::{self, Record, RecordError};
use crate::state::StateView;

/// The codec tests use: the bundled schemas, no registry (single-object encoding), built once.
pub fn codec() -> &'static Codec {
    static CODEC: OnceLock<Codec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let store = SchemaStore::bundled().expect("bundled schemas parse (a unit test checks it)");
        Codec::new(store, None).expect("a codec without registry always builds")
    })
}

/// An input record for `topic` holding `value`, encoded and decoded as the engine would see it
/// (partition 0, next offset, no key unless set). Panics if `value` does not encode with
/// `T::SCHEMA`: that is a bug in the test or in `T`, with the codec's message naming the field.
pub fn record<T: Record>(topic: &str, value: &T) -> TestRecord {
    let bytes = codec()
        .encode_record(topic, value)
        .unwrap_or_else(|e| panic!("test input for {topic} does not encode: {e}"));
    TestRecord::raw(topic, bytes)
}

/// Proves that `T` agrees with the current version of `T::SCHEMA` in both directions: the
/// schema's example value (every field set, unions on their non-null branch) reads into `T` and
/// writes back to the same value. Call it in a unit test of every [`Record`] type.
pub fn check_record<T: Record + std::fmt::Debug>() {
    let store = SchemaStore::bundled().expect("bundled schemas");
    let schema =
        store.schema(T::SCHEMA).unwrap_or_else(|| panic!("{} is not a bundled schema", T::SCHEMA));
    let example = store.conform(T::SCHEMA, &crate::codec::example_value(schema)).expect("example");
    let typed: T = record::from_avro(&example)
        .unwrap_or_else(|e| panic!("{} example does not read into the type: {e}", T::SCHEMA));
    let back = record::to_conformed_avro(&typed)
        .unwrap_or_else(|e| panic!("{typed:?} does not write as {}: {e}", T::SCHEMA));
    assert_eq!(back, example, "{} does not round-trip through {typed:?}", T::SCHEMA);
}

/// One input record for a test: built by [`record`] (typed) or [`TestRecord::raw`] (any bytes).
#[derive(Debug, Clone)]
pub struct TestRecord {
    topic: String,
    partition: i32,
    offset: Option<i64>,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    decoded: Option<Decoded>,
    attempt: u32,
}

impl TestRecord {
    /// A record with arbitrary value bytes (garbage, truncated, foreign), to test what the
    /// runtime does with input that does not decode.
    pub fn raw(topic: &str, value: Vec<u8>) -> Self {
        let decoded = codec().decode(&value).ok();
        TestRecord {
            topic: topic.to_string(),
            partition: 0,
            offset: None,
            timestamp: None,
            key: None,
            value,
            decoded,
            attempt: 1,
        }
    }

    /// Sets the record key.
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(key.as_ref().to_vec());
        self
    }

    /// Sets the partition (default 0). Inputs of one processor are co-partitioned: the state of
    /// partition `p` serves partition `p` of every input.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }

    /// Sets the offset (default: the [`Runner`] numbers each topic-partition from 0).
    pub fn offset(mut self, offset: i64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Sets the record timestamp (ms since the epoch).
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Sets the processing attempt (default 1; a record coming back from a retry topic has more).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The [`Input`] a processor would get, for calling [`Processor::process`] directly with a
    /// [`Context::for_test`]. Panics if the bytes do not decode (use the [`Runner`] for those).
    pub fn input(&self) -> Input<'_> {
        let decoded = self.decoded.as_ref().expect("TestRecord::input on bytes that do not decode");
        Input::new(
            &self.topic,
            self.partition,
            self.offset.unwrap_or(0),
            &decoded.schema_name,
            &decoded.value,
        )
        .with_key(self.key.as_deref())
        .with_timestamp(self.timestamp)
        .with_attempt(self.attempt)
    }
}

/// An output record as a consumer of the output topic would read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// Logical output topic.
    pub topic: String,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Partition the processor pinned, if any.
    pub partition: Option<i32>,
    /// Schema full name.
    pub schema: String,
    /// Encoded value bytes (single-object encoding).
    pub bytes: Vec<u8>,
    /// Headers the processor added (the engine adds source and transaction headers).
    pub headers: Vec<(String, Vec<u8>)>,
    /// `(input topic, partition, offset)` the output was derived from; offset -1 for
    /// punctuation.
    pub source: (String, i32, i64),
}

impl Emitted {
    /// The value as a typed record.
    pub fn decode<T: Record>(&self) -> Result<T, RecordError> {
        codec().decode_record(&self.bytes)
    }

    /// The key as UTF-8 text.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
    }
}

/// A dead-lettered input, with the class and reason the engine writes into the DLQ headers.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Original input topic.
    pub topic: String,
    /// Original partition.
    pub partition: i32,
    /// Original offset.
    pub offset: i64,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// The original value bytes.
    pub value: Vec<u8>,
    /// Error class, as the engine would write it to the DLQ header.
    pub class: ErrorClass,
    /// Human-readable reason.
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
}

/// What happened to one input (or one punctuation).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Processed; these outputs were emitted, in order.
    Processed(Vec<Emitted>),
    /// Dead-lettered.
    DeadLettered(DeadLetter),
    /// Not ready: it waits for [`Runner::redeliver_retries`], which delivers it as `attempt`.
    Retrying {
        /// The attempt it will be delivered as.
        attempt: u32,
        /// Why it was not ready.
        reason: String,
    },
    /// A punctuation failed with a non-fatal error: nothing it did is kept; it runs again next
    /// time (as the engine does).
    PunctuationFailed(String),
    /// The processor stopped (fatal error); every later call returns this again.
    Stopped(String),
}

impl Outcome {
    /// The outputs, when processed.
    pub fn outputs(&self) -> Option<&[Emitted]> {
        match self {
            Outcome::Processed(o) => Some(o),
            _ => None,
        }
    }

    /// The dead letter, when dead-lettered.
    pub fn dead_letter(&self) -> Option<&DeadLetter> {
        match self {
            Outcome::DeadLettered(d) => Some(d),
            _ => None,
        }
    }
}

/// One changelog entry written at [`Runner::commit`]: partition, state key, new value (`None`:
/// deleted).
pub type ChangelogEntry = (i32, Vec<u8>, Option<Vec<u8>>);

/// Where a runner's logs stood at the last commit, so that [`Runner::abort`] can cut back.
#[derive(Debug, Clone, Default)]
struct Mark {
    outputs: usize,
    dead_letters: usize,
    next_offsets: HashMap<(String, i32), i64>,
    retries: VecDeque<TestRecord>,
}

/// Runs a processor in memory over inputs and punctuations, collecting outputs, dead letters,
/// retries and state exactly as the engine would decide them.
pub struct Runner<P: Processor> {
    processor: P,
    retry_inputs: BTreeSet<String>,
    max_attempts: u32,
    max_record_bytes: usize,
    states: BTreeMap<i32, StateView>,
    next_offsets: HashMap<(String, i32), i64>,
    outputs: Vec<Emitted>,
    dead_letters: Vec<DeadLetter>,
    retries: VecDeque<TestRecord>,
    changelog: Vec<ChangelogEntry>,
    committed: Mark,
    stopped: Option<String>,
}

impl<P: Processor> Runner<P> {
    /// A runner with the runtime's defaults (retry attempts, record size limit) and the retry
    /// topics the bundled topology gives the processor.
    pub fn new(processor: P) -> Self {
        let defaults = RuntimeConfig::default();
        let retry_inputs = retry_inputs(&processor);
        Runner {
            processor,
            retry_inputs,
            max_attempts: defaults.retry.max_attempts,
            max_record_bytes: defaults.max_record_bytes,
            states: BTreeMap::new(),
            next_offsets: HashMap::new(),
            outputs: Vec::new(),
            dead_letters: Vec::new(),
            retries: VecDeque::new(),
            changelog: Vec::new(),
            committed: Mark::default(),
            stopped: None,
        }
    }

    /// Sets `retry.max_attempts` (attempts before a not-ready record is dead-lettered).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The processor, e.g. to inspect what it keeps outside its state.
    pub fn processor(&self) -> &P {
        &self.processor
    }

    /// Processes one input record.
    pub fn send(&mut self, mut record: TestRecord) -> Outcome {
        if let Some(reason) = &self.stopped {
            return Outcome::Stopped(reason.clone());
        }
        assert!(
            self.processor.inputs().contains(&record.topic),
            "{} is not an input of processor {} (inputs {:?})",
            record.topic,
            self.processor.name(),
            self.processor.inputs()
        );
        let tp = (record.topic.clone(), record.partition);
        let offset = match record.offset {
            Some(o) => o,
            None => self.next_offsets.get(&tp).copied().unwrap_or(0),
        };
        record.offset = Some(offset);
        let next = self.next_offsets.entry(tp).or_insert(0);
        *next = (*next).max(offset + 1);
        self.deliver(record)
    }

    /// Processes every record in order; returns what happened to each.
    pub fn send_all(&mut self, records: impl IntoIterator<Item = TestRecord>) -> Vec<Outcome> {
        records.into_iter().map(|r| self.send(r)).collect()
    }

    /// Delivers every record waiting for a retry once more, as its next attempt (the engine
    /// does so from the retry topic after a backoff). Returns what happened to each.
    pub fn redeliver_retries(&mut self) -> Vec<Outcome> {
        let waiting: Vec<TestRecord> = self.retries.drain(..).collect();
        waiting.into_iter().map(|r| self.deliver(r)).collect()
    }

    /// Number of records waiting for a retry.
    pub fn retrying(&self) -> usize {
        self.retries.len()
    }

    /// Runs [`Processor::punctuate`] for `partition` (the engine does so every
    /// `punctuate_interval` for each assigned partition).
    pub fn punctuate(&mut self, partition: i32) -> Outcome {
        if let Some(reason) = &self.stopped {
            return Outcome::Stopped(reason.clone());
        }
        let state = self.states.entry(partition).or_default();
        state.begin_record();
        let mut ctx = Context::new(state);
        let result = self.processor.punctuate(partition, &mut ctx);
        let outputs = ctx.take_outputs();
        if let Err(e) = result {
            self.rollback(partition);
            return match e.disposition() {
                Disposition::Stop => self.stop(e.to_string()),
                _ => Outcome::PunctuationFailed(e.to_string()),
            };
        }
        let source = (self.processor.inputs().first().cloned().unwrap_or_default(), partition, -1);
        match self.encode_outputs(&outputs, &source) {
            Ok(emitted) => {
                self.outputs.extend(emitted.iter().cloned());
                Outcome::Processed(emitted)
            }
            // The engine stops when a punctuation's output does not encode: there is no input
            // record to dead-letter.
            Err(message) => self.stop(message),
        }
    }

    /// Ends the transaction: the changed state keys (sorted, once each) become changelog
    /// entries, and everything so far survives a later [`Runner::abort`].
    pub fn commit(&mut self) -> Vec<ChangelogEntry> {
        let mut entries = Vec::new();
        for (p, state) in &mut self.states {
            entries.extend(state.take_changes().into_iter().map(|(k, v)| (*p, k, v)));
        }
        self.changelog.extend(entries.iter().cloned());
        self.committed = Mark {
            outputs: self.outputs.len(),
            dead_letters: self.dead_letters.len(),
            next_offsets: self.next_offsets.clone(),
            retries: self.retries.clone(),
        };
        entries
    }

    /// Aborts the transaction, as after a crash or a failed commit: state, outputs, dead letters,
    /// retries and input positions go back to the last commit. Sending the same records again
    /// then replays them, as the engine does after restoring from the log. Like the engine,
    /// state is not undone in memory but rebuilt from the committed changelog.
    pub fn abort(&mut self) {
        let mut states: BTreeMap<i32, StateView> =
            self.states.keys().map(|p| (*p, StateView::new())).collect();
        for (p, k, v) in &self.changelog {
            states.entry(*p).or_default().restore(k.clone(), v.clone());
        }
        self.states = states;
        self.outputs.truncate(self.committed.outputs);
        self.dead_letters.truncate(self.committed.dead_letters);
        self.next_offsets = self.committed.next_offsets.clone();
        self.retries = self.committed.retries.clone();
        self.stopped = None;
    }

    /// Replaces the processor by a fresh instance after an [`abort`](Runner::abort), as a
    /// restarted process would be: what the old instance kept outside its state is gone, the
    /// state is restored from the committed changelog.
    pub fn restart(&mut self, processor: P) {
        self.abort();
        let mut states: BTreeMap<i32, StateView> = BTreeMap::new();
        for (p, k, v) in &self.changelog {
            states.entry(*p).or_default().restore(k.clone(), v.clone());
        }
        self.states = states;
        self.processor = processor;
    }

    /// Every output so far (committed or not), in order.
    pub fn outputs(&self) -> &[Emitted] {
        &self.outputs
    }

    /// The outputs to `topic`, decoded as `T`. Panics when one does not decode as `T`.
    pub fn records<T: Record>(&self, topic: &str) -> Vec<T> {
        self.outputs
            .iter()
            .filter(|o| o.topic == topic)
            .map(|o| o.decode().unwrap_or_else(|e| panic!("output to {topic}: {e}")))
            .collect()
    }

    /// Every dead letter so far, in order.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// Every changelog entry committed so far.
    pub fn changelog(&self) -> &[ChangelogEntry] {
        &self.changelog
    }

    /// The value under `key` in the state of `partition`, decoded as `T` (as
    /// [`crate::processor::State::get`] reads it).
    pub fn get<T: DeserializeOwned>(
        &self,
        partition: i32,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, ProcessError> {
        match self.states.get(&partition) {
            Some(view) => crate::processor::state::read(view, key.as_ref()),
            None => Ok(None),
        }
    }

    /// The raw state of `partition` (all keys, sorted).
    pub fn state_entries(&self, partition: i32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut v: Vec<_> = self
            .states
            .get(&partition)
            .map(|s| s.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Why the processor stopped, if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    fn stop(&mut self, reason: String) -> Outcome {
        self.stopped = Some(reason.clone());
        Outcome::Stopped(reason)
    }

    fn rollback(&mut self, partition: i32) {
        self.states.entry(partition).or_default().rollback_record();
    }

    /// The engine's path for one record (`process_one` and the routing in `handle`).
    fn deliver(&mut self, record: TestRecord) -> Outcome {
        let offset = record.offset.unwrap_or(0);
        let dead = |class: ErrorClass, reason: String, attempts: u32| DeadLetter {
            topic: record.topic.clone(),
            partition: record.partition,
            offset,
            key: record.key.clone(),
            value: record.value.clone(),
            class,
            reason,
            attempts,
        };
        if record.value.len() > self.max_record_bytes {
            let reason = format!(
                "value is {} bytes, limit is {}",
                record.value.len(),
                self.max_record_bytes
            );
            return self.dead_letter(dead(ErrorClass::Oversized, reason, record.attempt));
        }
        let framed = match codec().frame(&record.value) {
            Ok(d) => d,
            Err(e) => {
                return self.dead_letter(dead(
                    ErrorClass::Deserialization,
                    e.to_string(),
                    record.attempt,
                ))
            }
        };
        let partition = record.partition;
        let state = self.states.entry(partition).or_default();
        state.begin_record();
        let input = Input::framed(&record.topic, partition, offset, &framed)
            .with_key(record.key.as_deref())
            .with_timestamp(record.timestamp)
            .with_attempt(record.attempt);
        let mut ctx = Context::new(state);
        let result = self.processor.process(&input, &mut ctx);
        let outputs = ctx.take_outputs();
        match result {
            Ok(()) => {
                let source = (record.topic.clone(), partition, offset);
                match self.encode_outputs(&outputs, &source) {
                    Ok(emitted) => {
                        self.outputs.extend(emitted.iter().cloned());
                        Outcome::Processed(emitted)
                    }
                    Err(message) => {
                        self.rollback(partition);
                        self.dead_letter(dead(ErrorClass::Encoding, message, record.attempt))
                    }
                }
            }
            Err(e) => {
                self.rollback(partition);
                let has_retry = self.retry_inputs.contains(&record.topic);
                match e.disposition() {
                    Disposition::Stop => self.stop(e.to_string()),
                    Disposition::Retry if has_retry && record.attempt < self.max_attempts => {
                        let attempt = record.attempt + 1;
                        self.retries.push_back(record.clone().attempt(attempt));
                        Outcome::Retrying { attempt, reason: e.to_string() }
                    }
                    // Without a retry topic a not-ready record is dead-lettered at once with its
                    // own class; with one, after the last attempt.
                    Disposition::Retry if has_retry => self.dead_letter(dead(
                        ErrorClass::RetriesExhausted,
                        e.to_string(),
                        record.attempt,
                    )),
                    _ => self.dead_letter(dead(e.class(), e.to_string(), record.attempt)),
                }
            }
        }
    }

    fn dead_letter(&mut self, d: DeadLetter) -> Outcome {
        self.dead_letters.push(d.clone());
        Outcome::DeadLettered(d)
    }

    /// Encodes every output strictly, as the engine does before sending any: the first that
    /// does not match its schema fails them all.
    fn encode_outputs(
        &self,
        outputs: &[Output],
        source: &(String, i32, i64),
    ) -> Result<Vec<Emitted>, String> {
        let declared = self.processor.outputs();
        outputs
            .iter()
            .map(|out| {
                assert!(
                    declared.contains(&out.topic),
                    "processor {} emitted to {}, which is not among its outputs {declared:?}",
                    self.processor.name(),
                    out.topic
                );
                let bytes = out.encode(codec(), &out.topic).map_err(|e| {
                    format!("output to {} does not match {}: {e}", out.topic, out.schema)
                })?;
                Ok(Emitted {
                    topic: out.topic.clone(),
                    key: out.key.clone(),
                    partition: out.partition,
                    schema: out.schema.clone(),
                    bytes,
                    headers: out.headers.clone(),
                    source: source.clone(),
                })
            })
            .collect()
    }
}

/// Inputs that have a retry topic: the engine's own topic names ([`TopicNames`], from the bundled
/// topology when it declares the processor with the same inputs in order, derived otherwise).
fn retry_inputs(processor: &dyn Processor) -> BTreeSet<String> {
    let names = TopicNames::new(&RuntimeConfig::default(), processor);
    processor.inputs().into_iter().filter(|i| names.retry(i).is_some()).collect()
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::test_records::TotalsUpdate;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct TotalsInput {
        key: String,
        amount: i64,
    }
    impl Record for TotalsInput {
        const SCHEMA: &'static str = "evalstream.runtime.TotalsInput";
    }

    /// Behaves according to the input's key: `ok`, `invalid`, `later`, `fatal`, `badout`
    /// (emits a value that does not match its schema); counts `ok` records in state.
    struct Scripted {
        name: &'static str,
        input: &'static str,
        output: &'static str,
    }

    const TOTALS: Scripted =
        Scripted { name: "totals", input: "totals.input", output: "totals.output" };

    impl Processor for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        fn inputs(&self) -> Vec<String> {
            vec![self.input.into()]
        }
        fn outputs(&self) -> Vec<String> {
            vec![self.output.into()]
        }
        fn process(
            &mut self,
            input: &Input<'_>,
            ctx: &mut Context<'_>,
        ) -> Result<(), ProcessError> {
            let rec: TotalsInput = input.decode()?;
            let n = ctx.state().get::<i64>("n")?.unwrap_or(0) + 1;
            ctx.state().put("n", &n)?;
            let update = TotalsUpdate {
                key: rec.key.clone(),
                amount: rec.amount,
                total: n,
                source_topic: input.topic.into(),
                source_partition: input.partition,
                source_offset: input.offset,
            };
            ctx.emit(Output::record(self.output, &rec.key, &update)?);
            match rec.key.as_str() {
                "invalid" => Err(ProcessError::Invalid("bad key".into())),
                "later" => Err(ProcessError::NotReady("not yet".into())),
                "fatal" => Err(ProcessError::Fatal("broken".into())),
                "badout" => {
                    ctx.emit(Output::new(self.output, None, TotalsUpdate::SCHEMA, Value::Null));
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        fn punctuate(&mut self, partition: i32, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
            let n = ctx.state().get::<i64>("n")?.unwrap_or(0);
            if n < 0 {
                return Err(ProcessError::Invalid("negative".into()));
            }
            ctx.state().put("punctuated", &partition)?;
            Ok(())
        }
    }

    fn input(key: &str) -> TestRecord {
        record("totals.input", &TotalsInput { key: key.into(), amount: 1 }).key(key)
    }

    #[test]
    fn processed_records_emit_encoded_outputs_and_keep_state() {
        let mut r = Runner::new(TOTALS);
        let out = r.send(input("ok"));
        let emitted = out.outputs().expect("processed");
        assert_eq!(emitted.len(), 1);
        assert_eq!(emitted[0].source, ("totals.input".into(), 0, 0));
        r.send(input("ok").partition(2));
        r.send(input("ok"));
        let totals: Vec<i64> =
            r.records::<TotalsUpdate>("totals.output").iter().map(|u| u.total).collect();
        assert_eq!(totals, [1, 1, 2]);
        assert_eq!(r.records::<TotalsUpdate>("totals.output")[2].source_offset, 1);
        assert_eq!(r.get::<i64>(0, "n").unwrap(), Some(2));
        assert_eq!(r.get::<i64>(2, "n").unwrap(), Some(1));
        assert_eq!(r.get::<i64>(9, "n").unwrap(), None);
    }

    #[test]
    fn failures_are_classified_as_the_engine_does() {
        let mut r = Runner::new(TOTALS);
        let d = r.send(input("invalid")).dead_letter().cloned().expect("dead-lettered");
        assert_eq!(
            (d.class.as_str(), d.reason.as_str()),
            ("validation", "invalid record: bad key")
        );
        // The failed record left neither state nor outputs.
        assert_eq!(r.get::<i64>(0, "n").unwrap(), None);
        assert!(r.outputs().is_empty());

        let d = r.send(input("badout")).dead_letter().cloned().expect("dead-lettered");
        assert_eq!(d.class, ErrorClass::Encoding);
        assert!(
            d.reason.contains("does not match evalstream.runtime.TotalsUpdate"),
            "{}",
            d.reason
        );
        assert!(r.outputs().is_empty());

        let d = r.send(TestRecord::raw("totals.input", vec![1, 2, 3])).dead_letter().cloned();
        assert_eq!(d.expect("dead-lettered").class, ErrorClass::Deserialization);

        // Wrong schema on the input: the typed decode says what it expected.
        let wrong = record("totals.input", &TotalsUpdate::of("k", 1, 1));
        let d = r.send(wrong).dead_letter().cloned().expect("dead-lettered");
        assert!(
            d.reason.contains(
                "expected evalstream.runtime.TotalsInput, got evalstream.runtime.TotalsUpdate"
            ),
            "{}",
            d.reason
        );

        assert_eq!(
            r.send(input("fatal")),
            Outcome::Stopped("fatal processor error: broken".into())
        );
        assert!(matches!(r.send(input("ok")), Outcome::Stopped(_)));
        assert_eq!(r.dead_letters().len(), 4);
    }

    #[test]
    fn not_ready_records_retry_then_exhaust() {
        let mut r = Runner::new(TOTALS).with_max_attempts(3);
        assert_eq!(
            r.send(input("later")),
            Outcome::Retrying { attempt: 2, reason: "not ready: not yet".into() }
        );
        assert_eq!(r.retrying(), 1);
        assert!(matches!(r.redeliver_retries()[..], [Outcome::Retrying { attempt: 3, .. }]));
        let last = r.redeliver_retries();
        let d = last[0].dead_letter().expect("dead-lettered after the last attempt");
        assert_eq!((d.class.as_str(), d.attempts, d.offset), ("retries_exhausted", 3, 0));
        assert_eq!(r.retrying(), 0);

        // An input without a retry topic (audit.chain has none) is dead-lettered at once.
        let mut r = Runner::new(Scripted {
            name: "audit-verifier",
            input: "audit.chain",
            output: "audit.verifications",
        });
        let rec = record("audit.chain", &TotalsInput { key: "later".into(), amount: 1 });
        assert_eq!(r.send(rec).dead_letter().map(|d| d.class.as_str()), Some("not_ready"));
    }

    #[test]
    fn abort_and_restart_go_back_to_the_last_commit() {
        let mut r = Runner::new(TOTALS);
        r.send(input("ok"));
        let changes = r.commit();
        assert_eq!(changes, vec![(0, b"n".to_vec(), Some(b"1".to_vec()))]);
        r.send(input("ok"));
        r.send(input("invalid"));
        assert_eq!(r.get::<i64>(0, "n").unwrap(), Some(2));
        r.abort();
        assert_eq!(r.get::<i64>(0, "n").unwrap(), Some(1));
        assert_eq!((r.outputs().len(), r.dead_letters().len()), (1, 0));
        // Replayed records get the same offsets again.
        let again = r.send(input("ok"));
        assert_eq!(again.outputs().unwrap()[0].source.2, 1);
        r.restart(TOTALS);
        assert_eq!(r.get::<i64>(0, "n").unwrap(), Some(1));
        assert_eq!(r.state_entries(0), vec![(b"n".to_vec(), b"1".to_vec())]);
    }

    #[test]
    fn punctuation_runs_and_failures_leave_no_trace() {
        let mut r = Runner::new(TOTALS);
        assert_eq!(r.punctuate(1), Outcome::Processed(vec![]));
        assert_eq!(r.get::<i32>(1, "punctuated").unwrap(), Some(1));
        r.states.entry(3).or_default().put(b"n", b"-1".to_vec());
        assert_eq!(r.punctuate(3), Outcome::PunctuationFailed("invalid record: negative".into()));
        assert_eq!(r.get::<i32>(3, "punctuated").unwrap(), None);
    }

    #[test]
    fn inputs_are_built_in_one_line() {
        let rec =
            record("totals.input", &TotalsInput { key: "a".into(), amount: -4 }).key("a").offset(7);
        let input = rec.input();
        assert_eq!(
            (input.offset, input.key_str(), input.schema),
            (7, Some("a"), TotalsInput::SCHEMA)
        );
        assert_eq!(input.decode::<TotalsInput>().unwrap().amount, -4);
        check_record::<TotalsUpdate>();
    }
}
