//! The processor contract: pure logic over one decoded record and a keyed state view.
//!
//! A processor never talks to Kafka. The runtime hands it an [`Input`] (already decoded and
//! validated against its schema) and a [`Context`] to read/write [`State`] and emit outputs; it
//! returns `Ok(())` or a [`ProcessError`] that says what should happen to the record. Because
//! everything the processor sees is in its arguments, it is unit-testable without a broker
//! ([`crate::testkit`]) and deterministic: the same input and state produce the same outputs,
//! which is what makes replays recognisable (see docs/exactly-once.md).
//!
//! The toolkit around the trait: typed records ([`Input::decode`], [`Output::record`],
//! [`crate::record`]), typed state ([`State`]), one [`Registration`] per processor, and the
//! in-memory runner [`crate::testkit::Runner`]. `docs/writing-a-processor.md` walks through it.

mod finite;
mod registration;
pub(crate) mod state;

use apache_avro::types::Value;

use std::borrow::Cow;

use crate::codec::{Codec, CodecError, Framed};
use crate::error::ProcessError;
use crate::record::{self, Record};
use crate::state::StateView;

pub use registration::{find, BuildError, BuildFn, Registration, Setup};
pub use state::State;

/// One input record as the processor sees it.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// Logical topic (without the configured prefix). For a record coming back from a retry
    /// topic this is the *original* topic.
    pub topic: &'a str,
    /// Partition on that topic.
    pub partition: i32,
    /// Offset on that topic.
    pub offset: i64,
    /// Record timestamp (ms since the epoch), when the broker gave one.
    pub timestamp: Option<i64>,
    /// Record key.
    pub key: Option<&'a [u8]>,
    /// Full name of the Avro schema the value was written with.
    pub schema: &'a str,
    /// Processing attempt, 1 for the first.
    pub attempt: u32,
    /// The value: validated bytes the runtime decodes on demand, or a value built by hand.
    body: Body<'a>,
}

#[derive(Debug, Clone)]
enum Body<'a> {
    /// From the wire (the engine, the testkit): typed records are read straight from the
    /// bytes, the `Value` tree is built only when asked for (see [`crate::codec::Framed`]).
    Framed(&'a Framed<'a>),
    /// A value built by hand (tools, benchmarks, tests).
    Value(&'a Value),
}

impl<'a> Input<'a> {
    /// An input of `schema` holding `value`, at `offset` of `topic`/`partition`, without key or
    /// timestamp, first attempt (tools and tests; the runtime frames records from the wire).
    pub fn new(
        topic: &'a str,
        partition: i32,
        offset: i64,
        schema: &'a str,
        value: &'a Value,
    ) -> Self {
        Self::with_body(topic, partition, offset, schema, Body::Value(value))
    }

    /// An input whose value is the framed record `framed` (its schema is the writer's).
    pub fn framed(topic: &'a str, partition: i32, offset: i64, framed: &'a Framed<'a>) -> Self {
        Self::with_body(topic, partition, offset, framed.schema_name(), Body::Framed(framed))
    }

    fn with_body(
        topic: &'a str,
        partition: i32,
        offset: i64,
        schema: &'a str,
        body: Body<'a>,
    ) -> Self {
        Input { topic, partition, offset, timestamp: None, key: None, schema, attempt: 1, body }
    }

    /// With the record key.
    pub fn with_key(mut self, key: Option<&'a [u8]>) -> Self {
        self.key = key;
        self
    }

    /// With the record timestamp.
    pub fn with_timestamp(mut self, timestamp: Option<i64>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// With the processing attempt (1 for the first).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The decoded value, in the shape of the current schema of its name. Built on first use
    /// for a record from the wire; [`Input::decode`] is cheaper when a typed record will do.
    pub fn value(&self) -> Result<&'a Value, ProcessError> {
        match self.body {
            Body::Value(value) => Ok(value),
            Body::Framed(framed) => {
                framed.value().map_err(|e| ProcessError::Invalid(e.to_string()))
            }
        }
    }

    /// The value as the typed record `T`. A value of another schema, or one that does not fit
    /// `T`, is [`ProcessError::Invalid`] (the record goes to the DLQ with this reason).
    pub fn decode<T: Record>(&self) -> Result<T, ProcessError> {
        match self.body {
            Body::Framed(framed) => framed.decode(),
            Body::Value(value) => record::decode_value(self.schema, value),
        }
        .map_err(|e| ProcessError::Invalid(e.to_string()))
    }

    /// The value as `T` borrowing from the record's bytes (`&'a str` fields: nothing copied),
    /// when the runtime can read it straight from them: a record from the wire in the current
    /// version of its schema. `None` for a value built by hand or an older version; use
    /// [`Input::value`] (or [`Input::decode`]) then. The schema name is not checked.
    pub fn decode_borrowed<T: serde::Deserialize<'a>>(&self) -> Option<Result<T, ProcessError>> {
        match self.body {
            Body::Framed(framed) => framed
                .decode_borrowed()
                .map(|r| r.map_err(|e| ProcessError::Invalid(e.to_string()))),
            Body::Value(_) => None,
        }
    }

    /// Whether the value was written with `T`'s schema (to dispatch a processor with several
    /// inputs).
    pub fn is<T: Record>(&self) -> bool {
        self.schema == T::SCHEMA
    }

    /// The record key as UTF-8 text, when there is a key and it is text.
    pub fn key_str(&self) -> Option<&str> {
        self.key.and_then(|k| std::str::from_utf8(k).ok())
    }
}

/// One record a processor wants written, in the same transaction as its input's offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Logical topic (the runtime adds the prefix).
    pub topic: String,
    /// Record key; also chooses the partition unless `partition` is set.
    pub key: Option<Vec<u8>>,
    /// Explicit partition, e.g. to keep an output co-partitioned with its input.
    pub partition: Option<i32>,
    /// Full name of the Avro schema to encode the value with.
    pub schema: String,
    /// The value.
    payload: Payload,
    /// Extra headers (the runtime adds source and transaction headers itself).
    pub headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Payload {
    /// A value, validated against the schema when encoded.
    Value(Value),
    /// A typed record already written as the Avro body of the bundled current schema of the
    /// output's name, whose fingerprint this is: no `Value` tree was built (codec/ser.rs).
    Written { fingerprint: u64, body: Vec<u8> },
}

impl Output {
    /// An output to `topic` keyed by `key`, encoded with `schema`.
    pub fn new(
        topic: impl Into<String>,
        key: Option<Vec<u8>>,
        schema: impl Into<String>,
        value: Value,
    ) -> Self {
        Output {
            topic: topic.into(),
            key,
            partition: None,
            schema: schema.into(),
            payload: Payload::Value(value),
            headers: Vec::new(),
        }
    }

    /// A typed record to `topic`, keyed by `key` (which also chooses the partition), encoded
    /// with `T::SCHEMA`. Fails only when serde cannot express the value at all (e.g. a map with
    /// non-string keys), as [`ProcessError::Invalid`]; a value that does not match the schema is
    /// found when the runtime encodes it (dead-lettered as `encoding`).
    pub fn record<T: Record>(
        topic: impl Into<String>,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<Self, ProcessError> {
        Self::typed(topic.into(), Some(key.as_ref().to_vec()), value)
    }

    /// A typed record without a key (pin it with [`Output::with_partition`], or let the producer
    /// spread unkeyed records).
    pub fn record_unkeyed<T: Record>(
        topic: impl Into<String>,
        value: &T,
    ) -> Result<Self, ProcessError> {
        Self::typed(topic.into(), None, value)
    }

    fn typed<T: Record>(
        topic: String,
        key: Option<Vec<u8>>,
        value: &T,
    ) -> Result<Self, ProcessError> {
        // Straight to bytes when the serializer can (it declines anything unusual and every
        // mismatch, which the value path below then reports precisely when encoded).
        let payload = match record::write_bundled(value) {
            Some((fingerprint, body)) => Payload::Written { fingerprint, body },
            None => Payload::Value(
                record::to_avro(value)
                    .map_err(|e| ProcessError::Invalid(format!("output to {topic}: {e}")))?,
            ),
        };
        Ok(Output {
            topic,
            key,
            partition: None,
            schema: T::SCHEMA.into(),
            payload,
            headers: Vec::new(),
        })
    }

    /// The value (built from the written bytes for a typed record: for tests and tools).
    pub fn value(&self) -> Result<Cow<'_, Value>, record::RecordError> {
        match &self.payload {
            Payload::Value(value) => Ok(Cow::Borrowed(value)),
            Payload::Written { fingerprint, body } => {
                record::read_bundled(*fingerprint, body).map(Cow::Owned)
            }
        }
    }

    /// The value as the typed record `T` (tests).
    pub fn decode<T: Record>(&self) -> Result<T, record::RecordError> {
        if self.schema != T::SCHEMA {
            return Err(record::RecordError::WrongSchema {
                expected: T::SCHEMA,
                got: self.schema.clone(),
            });
        }
        match &self.payload {
            Payload::Value(value) => record::from_any_avro(value),
            Payload::Written { fingerprint, body } => {
                record::from_bundled_bytes(*fingerprint, body)
            }
        }
    }

    /// The encoded record value for the physical topic `topic` (it names the registry subject):
    /// exactly what the runtime produces for this output.
    pub fn encode(&self, codec: &Codec, topic: &str) -> Result<Vec<u8>, CodecError> {
        match &self.payload {
            Payload::Value(value) => codec.encode(topic, &self.schema, value),
            Payload::Written { fingerprint, body } => {
                match codec.encode_written(topic, &self.schema, *fingerprint, body) {
                    Some(encoded) => encoded,
                    // The codec's current schema of that name is not the bundled one (a
                    // custom store): encode the value, which conforms it to the codec's.
                    None => {
                        let value = record::read_bundled(*fingerprint, body).map_err(|e| {
                            CodecError::Avro { schema: self.schema.clone(), message: e.to_string() }
                        })?;
                        codec.encode(topic, &self.schema, &value)
                    }
                }
            }
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Pins the output to a partition.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// What a processor may do while handling one record.
pub struct Context<'a> {
    state: State<'a>,
    outputs: Vec<Output>,
}

impl<'a> Context<'a> {
    /// A context over `state` (the state of the input's partition). The engine and
    /// [`crate::testkit`] create contexts; a processor only receives them.
    pub fn new(state: &'a mut StateView) -> Self {
        Context { state: State::new(state), outputs: Vec::new() }
    }

    /// A context for unit tests that call [`Processor::process`] directly (the in-memory
    /// [`crate::testkit::Runner`] is usually simpler).
    pub fn for_test(state: &'a mut StateView) -> Self {
        Self::new(state)
    }

    /// The keyed state of the input's partition. Writes become visible to later records at once
    /// and reach the changelog in the same transaction as the input's offset.
    pub fn state(&mut self) -> &mut State<'a> {
        &mut self.state
    }

    /// Emits an output.
    pub fn emit(&mut self, output: Output) {
        self.outputs.push(output);
    }

    /// The outputs emitted so far (for tests and for the runtime).
    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    /// Takes the outputs out of the context.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }
}

/// A stream processor: a small trait implementation with pure logic.
pub trait Processor: Send + 'static {
    /// Stable name: part of the consumer group id, the changelog topic and metric labels.
    fn name(&self) -> &str;

    /// Logical input topics. When there are several they must be co-partitioned (same
    /// partition count, same keying): partition `p` of every input shares state partition `p`.
    fn inputs(&self) -> Vec<String>;

    /// Logical output topics (for topology checks and topic creation).
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    /// Handles one record. On `Err`, nothing the call emitted is written and its state writes
    /// are rolled back; the record goes to the DLQ, the retry topic, or stops the processor
    /// according to [`ProcessError::disposition`].
    fn process(&mut self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError>;

    /// Called when `partition` is assigned, after the runtime restored its state from the
    /// changelog and before any of its records are processed, **and again after every failed
    /// transaction** (the runtime never undoes in memory: it calls [`Processor::on_revoke`] and
    /// rebuilds state and processor memory from the log). A processor whose outputs carry its
    /// progress (the audit chain resumes from the tail of `audit.chain`) reads them here with
    /// `reader` (committed records only, to the true end), rebuilds what it keeps outside
    /// `state` from them alone, and returns where each input should resume.
    fn on_assign(
        &mut self,
        _partition: i32,
        _state: &mut State<'_>,
        _reader: &CommittedReader,
    ) -> Result<ResumeHint, ProcessError> {
        Ok(ResumeHint::new())
    }

    /// Called when `partition` is revoked, and before it is restored after a failed
    /// transaction: drop whatever is kept for it outside `state`.
    fn on_revoke(&mut self, _partition: i32) {}

    /// How often [`Processor::punctuate`] runs; `None` (the default) never.
    fn punctuate_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Periodic work per assigned partition that no input record triggers (e.g. signing
    /// checkpoints left pending by a signer outage). Outputs go into the open transaction.
    fn punctuate(&mut self, _partition: i32, _ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        Ok(())
    }
}

/// A boxed processor is a processor: the binary builds processors from their
/// [`Registration`]s as `Box<dyn Processor>` and the engine stays generic. Every method
/// delegates, the provided ones included (a default here would hide the inner override).
impl<P: Processor + ?Sized> Processor for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn inputs(&self) -> Vec<String> {
        (**self).inputs()
    }

    fn outputs(&self) -> Vec<String> {
        (**self).outputs()
    }

    fn process(&mut self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        (**self).process(input, ctx)
    }

    fn on_assign(
        &mut self,
        partition: i32,
        state: &mut State<'_>,
        reader: &CommittedReader,
    ) -> Result<ResumeHint, ProcessError> {
        (**self).on_assign(partition, state, reader)
    }

    fn on_revoke(&mut self, partition: i32) {
        (**self).on_revoke(partition)
    }

    fn punctuate_interval(&self) -> Option<std::time::Duration> {
        (**self).punctuate_interval()
    }

    fn punctuate(&mut self, partition: i32, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        (**self).punctuate(partition, ctx)
    }
}

/// Where a processor wants a partition to resume, as proven by its own outputs (see
/// [`Processor::on_assign`]): logical input topic → next offset to process. The runtime starts at
/// the larger of this and its progress marker, so a processor can only move the start forward.
pub type ResumeHint = std::collections::BTreeMap<String, i64>;

/// Read access to topics during [`Processor::on_assign`] (e.g. the tail of the processor's own
/// output partition): committed records only, by the runtime's one definition of committed.
pub use crate::reader::CommittedReader;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::test_records::TotalsUpdate as Update;
    use crate::testkit::codec;

    /// A type serde can express but Avro cannot (a map with integer keys): not written straight,
    /// and the value path says why.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Unwritable {
        key: BTreeMap<i32, i32>,
    }

    impl Record for Unwritable {
        const SCHEMA: &'static str = "evalstream.runtime.TotalsUpdate";
    }

    /// A typed output encodes to the bytes the value path gives, reads back as itself, and its
    /// value is the conformed value of the record.
    #[test]
    fn typed_outputs_encode_as_the_value_path() {
        for (key, total) in [("k", 0), ("ключ", i64::MIN), ("", i64::MAX)] {
            let value = Update::of(key, -3, total);
            let out = Output::record("totals.output", key, &value).unwrap();
            assert!(matches!(out.payload, Payload::Written { .. }), "written straight");
            let by_value = codec()
                .encode("p.totals.output", Update::SCHEMA, &record::to_avro(&value).unwrap())
                .unwrap();
            assert_eq!(out.encode(codec(), "p.totals.output").unwrap(), by_value);
            assert_eq!(out.decode::<Update>().unwrap(), value);
            assert_eq!(*out.value().unwrap(), record::to_conformed_avro(&value).unwrap());
        }
    }

    #[test]
    fn values_serde_cannot_write_take_the_value_path() {
        let out = Output::record_unkeyed("o", &Unwritable { key: BTreeMap::from([(1, 2)]) });
        assert!(out.is_err() || matches!(out.unwrap().payload, Payload::Value(_)));
    }
}
