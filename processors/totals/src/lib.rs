//! Keyed running totals: the reference processor of the exactly-once runtime.
//!
//! For every [`TotalsInput`] `{key, amount}` on `totals.input` it adds `amount` to the running
//! total of `key` (kept in the runtime's state store, so it survives crashes and rebalances) and
//! emits a [`TotalsUpdate`] `{key, amount, total, source_*}` to `totals.output`, keyed by `key`.
//! It is deliberately small: the crash, rebalance and DLQ tests and the benchmark use it because
//! every lost or duplicated input shows up as a wrong total. `docs/writing-a-processor.md` uses it
//! as the worked example.
//!
//! Validation (records that fail go to `totals.input.dlq`): the key must be non-empty and the
//! running total must not overflow an `i64`. State: the total of each key, as a JSON number under
//! the key.

use evalstream_runtime::error::ProcessError;
use evalstream_runtime::processor::{Context, Input, Output, Processor, Registration};
use evalstream_runtime::record::Record;
use serde::{Deserialize, Serialize};

/// Input topic.
pub const INPUT: &str = "totals.input";
/// Output topic.
pub const OUTPUT: &str = "totals.output";

/// How the binary knows this processor.
pub const REGISTRATION: Registration = Registration {
    name: "totals",
    inputs: &[INPUT],
    outputs: &[OUTPUT],
    build: |_| Ok(Box::new(Totals)),
};

/// `evalstream.runtime.TotalsInput`: an amount to add to a key's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsInput {
    /// Key whose total grows; also the record key.
    pub key: String,
    /// Amount to add; may be negative.
    pub amount: i64,
    /// Padding for benchmarks; ignored.
    #[serde(default)]
    pub payload: String,
}

impl Record for TotalsInput {
    const SCHEMA: &'static str = "evalstream.runtime.TotalsInput";
}

/// What the processor reads of a [`TotalsInput`]: the payload is padding it never looks at, so
/// it is skipped in the bytes instead of copied (fields a type leaves out are ignored when
/// reading; see `evalstream_runtime::record`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Addition {
    key: String,
    amount: i64,
}

impl Record for Addition {
    const SCHEMA: &'static str = TotalsInput::SCHEMA;
}

/// `evalstream.runtime.TotalsUpdate`: a key's total after one input, naming that input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalsUpdate {
    /// Key whose total changed.
    pub key: String,
    /// The input's amount.
    pub amount: i64,
    /// The key's total after adding it.
    pub total: i64,
    /// Input topic.
    pub source_topic: String,
    /// Input partition.
    pub source_partition: i32,
    /// Input offset.
    pub source_offset: i64,
}

impl Record for TotalsUpdate {
    const SCHEMA: &'static str = "evalstream.runtime.TotalsUpdate";
}

/// The keyed-totals processor.
#[derive(Debug, Default)]
pub struct Totals;

impl Processor for Totals {
    fn name(&self) -> &str {
        REGISTRATION.name
    }

    fn inputs(&self) -> Vec<String> {
        REGISTRATION.input_topics()
    }

    fn outputs(&self) -> Vec<String> {
        REGISTRATION.output_topics()
    }

    fn process(&mut self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let Addition { key, amount } = input.decode()?;
        if key.is_empty() {
            return Err(ProcessError::Invalid("key must not be empty".into()));
        }
        let previous: i64 = ctx.state().get(&key)?.unwrap_or(0);
        let total = previous.checked_add(amount).ok_or_else(|| {
            ProcessError::Invalid(format!("total of {key} would overflow ({previous} + {amount})"))
        })?;
        ctx.state().put(&key, &total)?;
        let update = TotalsUpdate {
            key,
            amount,
            total,
            source_topic: input.topic.to_string(),
            source_partition: input.partition,
            source_offset: input.offset,
        };
        ctx.emit(Output::record(OUTPUT, &update.key, &update)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;
    use evalstream_runtime::testkit::{self, Outcome, Runner};
    use evalstream_runtime::topology::Topology;

    use super::*;

    fn add(key: &str, amount: i64) -> testkit::TestRecord {
        testkit::record(INPUT, &TotalsInput { key: key.into(), amount, payload: String::new() })
            .key(key)
    }

    fn totals(r: &Runner<Totals>) -> Vec<(String, i64)> {
        r.records::<TotalsUpdate>(OUTPUT).into_iter().map(|u| (u.key, u.total)).collect()
    }

    #[test]
    fn accumulates_per_key() {
        let mut r = Runner::new(Totals);
        r.send_all([add("a", 5), add("b", 7), add("a", -2)]);
        assert_eq!(totals(&r), [("a".into(), 5), ("b".into(), 7), ("a".into(), 3)]);
        assert_eq!(r.outputs()[2].key_str(), Some("a"));
        assert_eq!(r.records::<TotalsUpdate>(OUTPUT)[2].source_offset, 2);
        assert_eq!(r.get::<i64>(0, "a").unwrap(), Some(3));
    }

    #[test]
    fn rejects_empty_key_and_overflow() {
        let mut r = Runner::new(Totals);
        let empty = r.send(add("", 1));
        assert_eq!(empty.dead_letter().map(|d| d.class.as_str()), Some("validation"));
        r.send(add("k", i64::MAX));
        let overflow = r.send(add("k", 1));
        let reason = overflow.dead_letter().map(|d| d.reason.clone()).unwrap_or_default();
        assert!(reason.contains("would overflow"), "{reason}");
        assert_eq!(r.get::<i64>(0, "k").unwrap(), Some(i64::MAX), "failed record left state");
        assert!(matches!(
            r.send(testkit::TestRecord::raw(INPUT, vec![0xc3])),
            Outcome::DeadLettered(_)
        ));
    }

    #[test]
    fn a_replay_after_abort_gives_the_same_outputs() {
        let mut r = Runner::new(Totals);
        r.send(add("x", 4));
        r.commit();
        let first = r.send(add("x", 5));
        r.abort();
        assert_eq!(r.send(add("x", 5)), first);
        r.restart(Totals);
        assert_eq!(r.send(add("x", 5)), first);
    }

    /// The typed processor writes the same bytes as the hand-built values it replaced.
    #[test]
    fn outputs_keep_their_wire_bytes() {
        let codec = testkit::codec();
        let update = TotalsUpdate {
            key: "k-1".into(),
            amount: -3,
            total: 1 << 40,
            source_topic: INPUT.into(),
            source_partition: 3,
            source_offset: 12_345,
        };
        let by_hand = Value::Record(vec![
            ("key".into(), Value::String("k-1".into())),
            ("amount".into(), Value::Long(-3)),
            ("total".into(), Value::Long(1 << 40)),
            ("source_topic".into(), Value::String(INPUT.into())),
            ("source_partition".into(), Value::Int(3)),
            ("source_offset".into(), Value::Long(12_345)),
        ]);
        assert_eq!(
            codec.encode_record(OUTPUT, &update).unwrap(),
            codec.encode(OUTPUT, TotalsUpdate::SCHEMA, &by_hand).unwrap()
        );
    }

    #[test]
    fn records_match_their_schemas_and_the_topology() {
        testkit::check_record::<TotalsInput>();
        testkit::check_record::<TotalsUpdate>();
        REGISTRATION.check_topology(&Topology::bundled().unwrap()).unwrap();
    }
}
