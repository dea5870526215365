//! Keyed running totals: the reference processor of the exactly-once runtime.
//!
//! For every `evalstream.runtime.TotalsInput {key, amount}` on `totals.input` it adds `amount`
//! to the running total of `key` (kept in the runtime's state store, so it survives crashes and
//! rebalances) and emits `evalstream.runtime.TotalsUpdate {key, amount, total, source_*}` to
//! `totals.output`, keyed by `key`. It is deliberately small: the crash, rebalance and DLQ tests
//! and the benchmark use it because every lost or duplicated input shows up as a wrong total.
//!
//! Validation (records that fail go to `totals.input.dlq`): the key must be non-empty and the
//! running total must not overflow an `i64`.

use apache_avro::types::Value;
use evalstream_runtime::error::ProcessError;
use evalstream_runtime::processor::{Context, Input, Output, Processor};

/// Input topic.
pub const INPUT: &str = "totals.input";
/// Output topic.
pub const OUTPUT: &str = "totals.output";
/// Input schema.
pub const INPUT_SCHEMA: &str = "evalstream.runtime.TotalsInput";
/// Output schema.
pub const OUTPUT_SCHEMA: &str = "evalstream.runtime.TotalsUpdate";

/// The keyed-totals processor.
#[derive(Debug, Default)]
pub struct Totals;

impl Processor for Totals {
    fn name(&self) -> &str {
        "totals"
    }

    fn inputs(&self) -> Vec<String> {
        vec![INPUT.to_string()]
    }

    fn outputs(&self) -> Vec<String> {
        vec![OUTPUT.to_string()]
    }

    fn process(&mut self, input: &Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        if input.schema != INPUT_SCHEMA {
            return Err(ProcessError::Invalid(format!(
                "expected {INPUT_SCHEMA}, got {}",
                input.schema
            )));
        }
        let key = field_str(input.value, "key")?;
        if key.is_empty() {
            return Err(ProcessError::Invalid("key must not be empty".into()));
        }
        let amount = field_long(input.value, "amount")?;
        let previous = match ctx.state().get(key.as_bytes()) {
            None => 0,
            Some(b) => {
                let arr: [u8; 8] = b.try_into().map_err(|_| {
                    ProcessError::Fatal(format!("corrupt state for key {key}: {} bytes", b.len()))
                })?;
                i64::from_le_bytes(arr)
            }
        };
        let total = previous.checked_add(amount).ok_or_else(|| {
            ProcessError::Invalid(format!("total of {key} would overflow ({previous} + {amount})"))
        })?;
        ctx.state().put(key.as_bytes(), total.to_le_bytes().to_vec());
        let update = Value::Record(vec![
            ("key".into(), Value::String(key.clone())),
            ("amount".into(), Value::Long(amount)),
            ("total".into(), Value::Long(total)),
            ("source_topic".into(), Value::String(input.topic.to_string())),
            ("source_partition".into(), Value::Int(input.partition)),
            ("source_offset".into(), Value::Long(input.offset)),
        ]);
        ctx.emit(Output::new(OUTPUT, Some(key.into_bytes()), OUTPUT_SCHEMA, update));
        Ok(())
    }
}

fn field<'a>(value: &'a Value, name: &str) -> Result<&'a Value, ProcessError> {
    match value {
        Value::Record(fields) => fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| ProcessError::Invalid(format!("missing field {name}"))),
        _ => Err(ProcessError::Invalid("value is not a record".into())),
    }
}

fn field_str(value: &Value, name: &str) -> Result<String, ProcessError> {
    match field(value, name)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(ProcessError::Invalid(format!("{name} is not a string: {other:?}"))),
    }
}

fn field_long(value: &Value, name: &str) -> Result<i64, ProcessError> {
    match field(value, name)? {
        Value::Long(v) => Ok(*v),
        Value::Int(v) => Ok(i64::from(*v)),
        other => Err(ProcessError::Invalid(format!("{name} is not a long: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evalstream_runtime::state::StateView;

    fn input_value(key: &str, amount: i64) -> Value {
        Value::Record(vec![
            ("key".into(), Value::String(key.into())),
            ("amount".into(), Value::Long(amount)),
            ("payload".into(), Value::String(String::new())),
        ])
    }

    fn run(
        state: &mut StateView,
        key: &str,
        amount: i64,
        offset: i64,
    ) -> Result<Vec<Output>, ProcessError> {
        let value = input_value(key, amount);
        let input = Input {
            topic: INPUT,
            partition: 0,
            offset,
            timestamp: None,
            key: Some(key.as_bytes()),
            schema: INPUT_SCHEMA,
            value: &value,
            attempt: 1,
        };
        let mut ctx = Context::for_test(state);
        Totals.process(&input, &mut ctx)?;
        Ok(ctx.take_outputs())
    }

    fn total_of(out: &Output) -> i64 {
        match &out.value {
            Value::Record(f) => match f.iter().find(|(n, _)| n == "total") {
                Some((_, Value::Long(t))) => *t,
                _ => panic!("no total"),
            },
            _ => panic!("not a record"),
        }
    }

    #[test]
    fn accumulates_per_key() {
        let mut s = StateView::new();
        assert_eq!(total_of(&run(&mut s, "a", 5, 0).unwrap()[0]), 5);
        assert_eq!(total_of(&run(&mut s, "b", 7, 1).unwrap()[0]), 7);
        let out = run(&mut s, "a", -2, 2).unwrap();
        assert_eq!(total_of(&out[0]), 3);
        assert_eq!(out[0].topic, OUTPUT);
        assert_eq!(out[0].key.as_deref(), Some(&b"a"[..]));
    }

    #[test]
    fn rejects_empty_key_and_overflow() {
        let mut s = StateView::new();
        assert!(matches!(run(&mut s, "", 1, 0), Err(ProcessError::Invalid(_))));
        run(&mut s, "k", i64::MAX, 1).unwrap();
        assert!(matches!(run(&mut s, "k", 1, 2), Err(ProcessError::Invalid(_))));
    }

    #[test]
    fn same_input_and_state_give_the_same_output() {
        let mut s1 = StateView::new();
        let mut s2 = StateView::new();
        let a = run(&mut s1, "x", 4, 9).unwrap();
        let b = run(&mut s2, "x", 4, 9).unwrap();
        assert_eq!(a, b);
    }
}
