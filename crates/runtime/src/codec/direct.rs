//! Conform and write in one pass: the encode fast path.
//!
//! [`super::Codec::encode`] used to build the conformed copy of every value
//! ([`super::value::conform`]: field names, strings and containers cloned) and then write that
//! copy ([`super::writer::write_value`]). Per record of the benchmark that was 14 % of the
//! engine thread's instructions, mostly allocations. [`write_conformed`] walks the schema and
//! the value together and writes the bytes of the conformed value directly.
//!
//! It handles the shapes our records produce (records in schema order, strings, numbers, maps,
//! arrays, enums, `["null", X]` unions, `timestamp-millis`) and gives up, with
//! [`NotDirect`], on anything else **and on every mismatch**. The caller then runs the
//! two-step path, which produces the same bytes or the precise error naming the field path. So
//! the contract is one-sided and simple: when this returns `Ok`, the bytes equal
//! `write_value(conform(value))` — the module's tests check exactly that over random values of
//! every bundled schema.

use apache_avro::schema::{RecordSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::Schema;

use super::value::Names;
use super::writer::{sorted_entries, write_bytes, write_long};

/// The value is not handled here (an unusual shape, or a mismatch): use the two-step path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotDirect;

/// Appends the Avro encoding of `value` conformed to `schema`, or [`NotDirect`] (then `out`
/// holds a partial write that the caller discards).
pub(crate) fn write_conformed(
    schema: &Schema,
    names: &Names,
    value: &Value,
    out: &mut Vec<u8>,
) -> Result<(), NotDirect> {
    Direct { names }.write(schema, None, value, out)
}

struct Direct<'n> {
    names: &'n Names,
}

impl Direct<'_> {
    fn write(
        &self,
        schema: &Schema,
        ns: Option<&str>,
        v: &Value,
        out: &mut Vec<u8>,
    ) -> Result<(), NotDirect> {
        // As `conform`: a union value handed to a non-union schema is looked through.
        if let (Value::Union(_, inner), false) = (v, matches!(schema, Schema::Union(_))) {
            return self.write(schema, ns, inner, out);
        }
        match (schema, v) {
            (Schema::Ref { name }, _) => {
                let target = self.names.lookup(name, ns).ok_or(NotDirect)?;
                self.write(target, name.namespace().or(ns), v, out)?;
            }
            (Schema::Null, Value::Null) => {}
            (Schema::Boolean, Value::Boolean(b)) => out.push(u8::from(*b)),
            (Schema::Int, Value::Int(i)) => write_long(out, i64::from(*i)),
            (Schema::Int, Value::Long(l)) => {
                write_long(out, i64::from(i32::try_from(*l).map_err(|_| NotDirect)?))
            }
            (Schema::Long, Value::Int(i)) => write_long(out, i64::from(*i)),
            (Schema::Long, Value::Long(l)) => write_long(out, *l),
            (Schema::Float, Value::Int(i)) => out.extend_from_slice(&(*i as f32).to_le_bytes()),
            (Schema::Float, Value::Long(l)) => out.extend_from_slice(&(*l as f32).to_le_bytes()),
            (Schema::Float, Value::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
            (Schema::Double, Value::Int(i)) => out.extend_from_slice(&f64::from(*i).to_le_bytes()),
            (Schema::Double, Value::Long(l)) => out.extend_from_slice(&(*l as f64).to_le_bytes()),
            (Schema::Double, Value::Float(f)) => {
                out.extend_from_slice(&f64::from(*f).to_le_bytes())
            }
            (Schema::Double, Value::Double(d)) => out.extend_from_slice(&d.to_le_bytes()),
            (Schema::Bytes, Value::Bytes(b)) => write_bytes(out, b),
            (Schema::Bytes, Value::String(s)) => write_bytes(out, s.as_bytes()),
            (Schema::String, Value::String(s)) => write_bytes(out, s.as_bytes()),
            (Schema::Fixed(f), Value::Fixed(_, b) | Value::Bytes(b)) if b.len() == f.size => {
                out.extend_from_slice(b)
            }
            (Schema::Enum(e), Value::Enum(_, s) | Value::String(s)) => {
                let i = e.symbols.iter().position(|x| x == s).ok_or(NotDirect)?;
                write_long(out, i as i64);
            }
            (Schema::TimestampMillis, Value::TimestampMillis(t) | Value::Long(t)) => {
                write_long(out, *t)
            }
            (Schema::TimestampMicros, Value::TimestampMicros(t) | Value::Long(t)) => {
                write_long(out, *t)
            }
            (Schema::Array(a), Value::Array(items)) => {
                if !items.is_empty() {
                    write_long(out, items.len() as i64);
                    for item in items {
                        self.write(&a.items, ns, item, out)?;
                    }
                }
                out.push(0);
            }
            (Schema::Map(m), Value::Map(entries)) => {
                // Key order, as the two-step writer does (see `writer`).
                if !entries.is_empty() {
                    write_long(out, entries.len() as i64);
                    for (key, item) in sorted_entries(entries) {
                        write_bytes(out, key.as_bytes());
                        self.write(&m.types, ns, item, out)?;
                    }
                }
                out.push(0);
            }
            (Schema::Union(u), _) => self.union(u, ns, v, out)?,
            (Schema::Record(r), Value::Record(fields)) => self.record(r, ns, fields, out)?,
            _ => return Err(NotDirect),
        }
        Ok(())
    }

    /// A record whose fields are given in schema order (what serde produces for a struct that
    /// names every field); anything else (missing fields to default, another order, unknown
    /// fields) is left to the two-step path.
    fn record(
        &self,
        r: &RecordSchema,
        ns: Option<&str>,
        fields: &[(String, Value)],
        out: &mut Vec<u8>,
    ) -> Result<(), NotDirect> {
        if fields.len() != r.fields.len() {
            return Err(NotDirect);
        }
        let inner = r.name.namespace().or(ns);
        for (field, (name, value)) in r.fields.iter().zip(fields) {
            if field.name != *name {
                return Err(NotDirect);
            }
            self.write(&field.schema, inner, value, out)?;
        }
        Ok(())
    }

    /// `conform` takes the first branch that the value conforms to. Here: an explicit branch
    /// index, or the first candidate (null for a null value, else the first non-null branch);
    /// if that one does not take the value, the two-step path decides.
    fn union(
        &self,
        u: &UnionSchema,
        ns: Option<&str>,
        v: &Value,
        out: &mut Vec<u8>,
    ) -> Result<(), NotDirect> {
        if let Value::Union(i, inner) = v {
            let branch = u.variants().get(*i as usize).ok_or(NotDirect)?;
            write_long(out, i64::from(*i));
            return self.write(branch, ns, inner, out);
        }
        let is_null = matches!(v, Value::Null);
        let (i, branch) = u
            .variants()
            .iter()
            .enumerate()
            .find(|(_, s)| matches!(s, Schema::Null) == is_null)
            .ok_or(NotDirect)?;
        write_long(out, i as i64);
        self.write(branch, ns, v, out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::codec::value::conform;
    use crate::codec::writer::write_value;
    use crate::codec::SchemaStore;
    use crate::record;

    /// The two-step path: `Some(bytes)` or `None` when it fails.
    fn two_step(schema: &Schema, names: &Names, v: &Value) -> Option<Vec<u8>> {
        let conformed = conform(schema, names, v).ok()?;
        let mut out = Vec::new();
        write_value(&mut out, &conformed).ok()?;
        Some(out)
    }

    fn direct(schema: &Schema, names: &Names, v: &Value) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        write_conformed(schema, names, v, &mut out).ok()?;
        Some(out)
    }

    /// A value shaped as `to_avro` shapes it (no union wrappers), random within `schema`.
    fn random(
        rng: &mut StdRng,
        names: &Names,
        schema: &Schema,
        ns: Option<&str>,
        d: usize,
    ) -> Value {
        match schema {
            Schema::Ref { name } => {
                let target = names.lookup(name, ns).expect("named type").clone();
                random(rng, names, &target, name.namespace().or(ns), d)
            }
            Schema::Null => Value::Null,
            Schema::Boolean => Value::Boolean(rng.gen()),
            // Ints and longs from serde arrive as either width; negative, zero and extremes.
            Schema::Int => match rng.gen_range(0..3) {
                0 => Value::Int(rng.gen()),
                1 => Value::Long(i64::from(rng.gen::<i32>())),
                _ => Value::Int([i32::MIN, -1, 0, 1, i32::MAX][rng.gen_range(0..5)]),
            },
            Schema::Long | Schema::TimestampMillis => match rng.gen_range(0..3) {
                0 => Value::Long(rng.gen()),
                1 => Value::Int(rng.gen()),
                _ => Value::Long([i64::MIN, -64, -1, 0, 64, i64::MAX][rng.gen_range(0..6)]),
            },
            Schema::Float => Value::Float(rng.gen::<f32>() - 0.5),
            Schema::Double => match rng.gen_range(0..3) {
                0 => Value::Double(rng.gen::<f64>() * -1e9),
                1 => Value::Long(rng.gen_range(-1000..1000)),
                _ => Value::Double(f64::from_bits(rng.gen())),
            },
            Schema::Bytes => Value::Bytes((0..rng.gen_range(0..9)).map(|_| rng.gen()).collect()),
            Schema::String => Value::String(
                (0..rng.gen_range(0..9))
                    .map(|_| ['a', 'é', '😀', ' '][rng.gen_range(0..4)])
                    .collect(),
            ),
            Schema::Fixed(f) => Value::Bytes(vec![3; f.size]),
            Schema::Enum(e) => Value::String(e.symbols[rng.gen_range(0..e.symbols.len())].clone()),
            Schema::Array(a) => {
                let n = if d > 3 { 0 } else { rng.gen_range(0..4) };
                Value::Array((0..n).map(|_| random(rng, names, &a.items, ns, d + 1)).collect())
            }
            Schema::Map(m) => {
                let n = if d > 3 { 0 } else { rng.gen_range(0..5) };
                let map: HashMap<String, Value> = (0..n)
                    .map(|i| (format!("k{}", i * 7 % 5), random(rng, names, &m.types, ns, d + 1)))
                    .collect();
                Value::Map(map)
            }
            Schema::Union(u) => {
                let i = rng.gen_range(0..u.variants().len());
                random(rng, names, &u.variants()[i], ns, d + 1)
            }
            Schema::Record(r) => {
                let inner = r.name.namespace().or(ns);
                Value::Record(
                    r.fields
                        .iter()
                        .map(|f| (f.name.clone(), random(rng, names, &f.schema, inner, d + 1)))
                        .collect(),
                )
            }
            other => panic!("no generator for {other:?}"),
        }
    }

    /// Small damage that `conform` may or may not accept: the fast path must then either give
    /// up or agree with it.
    fn damage(rng: &mut StdRng, v: &mut Value) {
        match v {
            Value::Record(fields) if !fields.is_empty() => {
                let i = rng.gen_range(0..fields.len());
                match rng.gen_range(0..5) {
                    0 => {
                        fields.remove(i);
                    }
                    1 => fields.swap(i, 0),
                    2 => fields.push(("no_such_field".into(), Value::Null)),
                    3 => fields[i].1 = Value::String("not a number".into()),
                    _ => damage(rng, &mut fields[i].1),
                }
            }
            Value::Array(items) if !items.is_empty() => {
                let i = rng.gen_range(0..items.len());
                damage(rng, &mut items[i]);
            }
            Value::String(_) => *v = Value::Long(rng.gen()),
            Value::Long(_) => *v = Value::Long(i64::MAX),
            Value::Int(_) | Value::Null => *v = Value::Boolean(true),
            _ => *v = Value::Null,
        }
    }

    /// Every bundled schema version, random values (unions, nulls, arrays, maps, negative and
    /// extreme numbers, ints for longs and longs for ints), and the same values damaged: when the
    /// fast path writes, its bytes equal the two-step path's; when the two-step path fails, the
    /// fast path gives up too. Most values must take the fast path, or it would pay nothing.
    #[test]
    fn writes_what_the_two_step_path_writes() {
        let store = SchemaStore::bundled().unwrap();
        let (mut fast, mut total) = (0, 0);
        for stored in store.entries() {
            let names = Names::of(stored.schema());
            let mut rng = StdRng::seed_from_u64(stored.fingerprint());
            for round in 0..400 {
                let mut v = random(&mut rng, &names, stored.schema(), None, 0);
                if round % 2 == 1 {
                    damage(&mut rng, &mut v);
                }
                let expected = two_step(stored.schema(), &names, &v);
                let got = direct(stored.schema(), &names, &v);
                if let Some(bytes) = &got {
                    assert_eq!(Some(bytes), expected.as_ref(), "{} {v:?}", stored.full_name());
                    fast += 1;
                }
                total += 1;
            }
        }
        assert!(fast * 3 >= total, "only {fast} of {total} values took the fast path");
    }

    /// What the typed records of the processors produce (`record::to_avro`) takes the fast path.
    #[test]
    fn typed_records_take_the_fast_path() {
        use crate::test_records::TotalsUpdate;
        let store = SchemaStore::bundled().unwrap();
        let stored = store.current("evalstream.runtime.TotalsUpdate").unwrap();
        let names = Names::of(stored.schema());
        for (amount, total) in [(-3, 1 << 40), (0, 0), (i64::MIN, i64::MAX), (7, -7)] {
            let v = record::to_avro(&TotalsUpdate::of("k-1", amount, total)).unwrap();
            let got = direct(stored.schema(), &names, &v);
            assert!(got.is_some(), "{v:?}");
            assert_eq!(got, two_step(stored.schema(), &names, &v));
        }
    }
}
