//! The Avro binary encoding of a value already conformed to its schema, with map entries in
//! key order.
//!
//! Why not apache-avro's writer: it writes a map in the iteration order of the `HashMap` inside
//! `Value::Map`, which is seeded randomly per map. The same record then encodes to different
//! bytes in different processes (and for different map instances in one process), which breaks
//! what the runtime promises: output bytes are a pure function of input and state, so a replay
//! reproduces them and a duplicate is recognisable by its bytes. Everything else is the Avro
//! specification's binary encoding, which needs no schema once [`super::value::conform`] has
//! chosen union branches, enum indexes, int versus long and field order; the module's tests
//! prove the bytes equal apache-avro's wherever order cannot differ.

use apache_avro::types::Value;

/// Appends the binary encoding of `value` to `out`. `value` must come from `conform` (fields in
/// schema order, union and enum indexes set). Errors only for logical types whose encoding
/// depends on the schema and that no schema of ours uses (`decimal`, `big-decimal`, `uuid`).
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), String> {
    match value {
        Value::Null => {}
        Value::Boolean(b) => out.push(u8::from(*b)),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => write_long(out, i64::from(*i)),
        Value::Long(l)
        | Value::TimeMicros(l)
        | Value::TimestampMillis(l)
        | Value::TimestampMicros(l)
        | Value::TimestampNanos(l)
        | Value::LocalTimestampMillis(l)
        | Value::LocalTimestampMicros(l)
        | Value::LocalTimestampNanos(l) => write_long(out, *l),
        Value::Float(f) => out.extend_from_slice(&f.to_le_bytes()),
        Value::Double(d) => out.extend_from_slice(&d.to_le_bytes()),
        Value::Bytes(b) => write_bytes(out, b),
        Value::String(s) => write_bytes(out, s.as_bytes()),
        Value::Fixed(_, b) => out.extend_from_slice(b),
        Value::Enum(i, _) => write_long(out, i64::from(*i)),
        Value::Union(i, inner) => {
            write_long(out, i64::from(*i));
            write_value(out, inner)?;
        }
        Value::Array(items) => {
            if !items.is_empty() {
                write_long(out, items.len() as i64);
                for item in items {
                    write_value(out, item)?;
                }
            }
            out.push(0);
        }
        Value::Map(entries) => {
            if !entries.is_empty() {
                write_long(out, entries.len() as i64);
                for (key, item) in sorted_entries(entries) {
                    write_bytes(out, key.as_bytes());
                    write_value(out, item)?;
                }
            }
            out.push(0);
        }
        Value::Record(fields) => {
            for (_, field) in fields {
                write_value(out, field)?;
            }
        }
        Value::Duration(d) => out.extend_from_slice(&<[u8; 12]>::from(*d)),
        Value::Decimal(_) | Value::BigDecimal(_) | Value::Uuid(_) => {
            return Err(format!(
                "{value:?}: this logical type is not supported by the codec's writer"
            ))
        }
    }
    Ok(())
}

/// A map's entries in key order: both writers write maps sorted, so that equal maps give equal
/// bytes whatever the `HashMap`'s iteration order (fingerprints and digests depend on it).
pub(super) fn sorted_entries(
    entries: &std::collections::HashMap<String, Value>,
) -> Vec<(&String, &Value)> {
    let mut sorted: Vec<(&String, &Value)> = entries.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    sorted
}

/// Zig-zag varint (`int` and `long` alike).
pub(super) fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        out.push((z & 0x7f) as u8 | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub(super) fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

#[cfg(test)]
pub(crate) mod tests {
    /// Damages `bytes` for the readers' tests: truncated, a bit flipped, or a byte appended.
    pub(crate) fn damage(rng: &mut rand::rngs::StdRng, bytes: &[u8]) -> Vec<u8> {
        use rand::Rng;
        let mut damaged = bytes.to_vec();
        match rng.gen_range(0..3) {
            0 => damaged.truncate(rng.gen_range(0..bytes.len().max(1))),
            1 if !damaged.is_empty() => {
                let i = rng.gen_range(0..damaged.len());
                damaged[i] ^= 1 << rng.gen_range(0..8);
            }
            _ => damaged.push(rng.gen()),
        }
        damaged
    }

    use std::collections::HashMap;

    use apache_avro::schema::{Name, RecordSchema};
    use apache_avro::writer::datum::GenericDatumWriter;
    use apache_avro::Schema;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::codec::value::{conform, Names};
    use crate::codec::SchemaStore;

    fn apache(schema: &Schema, v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        GenericDatumWriter::builder(schema).build().unwrap().write_value_ref(&mut out, v).unwrap();
        out
    }

    fn ours(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, v).unwrap();
        out
    }

    /// A random value of `schema`; maps get at most `max_map` entries.
    struct Gen<'a> {
        rng: StdRng,
        names: &'a Names,
        max_map: usize,
    }

    impl Gen<'_> {
        fn value(&mut self, schema: &Schema, ns: Option<&str>, depth: usize) -> Value {
            match schema {
                Schema::Ref { name } => {
                    let target = self.names_lookup(name, ns);
                    self.value(&target, name.namespace().or(ns), depth)
                }
                Schema::Null => Value::Null,
                Schema::Boolean => Value::Boolean(self.rng.gen()),
                Schema::Int => Value::Int(self.number() as i32),
                Schema::Long | Schema::TimestampMillis => Value::Long(self.number()),
                Schema::Float => Value::Float(self.rng.gen::<f32>() * 1e6 - 5e5),
                Schema::Double => Value::Double(f64::from_bits(self.rng.gen())),
                Schema::Bytes => {
                    Value::Bytes((0..self.rng.gen_range(0..40)).map(|_| self.rng.gen()).collect())
                }
                Schema::String => Value::String(self.text()),
                Schema::Fixed(f) => Value::Fixed(f.size, vec![7; f.size]),
                Schema::Enum(e) => {
                    let i = self.rng.gen_range(0..e.symbols.len());
                    Value::Enum(i as u32, e.symbols[i].clone())
                }
                Schema::Array(a) => {
                    let n = if depth > 3 { 0 } else { self.rng.gen_range(0..4) };
                    Value::Array((0..n).map(|_| self.value(&a.items, ns, depth + 1)).collect())
                }
                Schema::Map(m) => {
                    let n = if depth > 3 { 0 } else { self.rng.gen_range(0..=self.max_map) };
                    let mut map = HashMap::new();
                    for i in 0..n {
                        map.insert(
                            format!("{}-{i}", self.text()),
                            self.value(&m.types, ns, depth + 1),
                        );
                    }
                    Value::Map(map)
                }
                Schema::Union(u) => {
                    let i = self.rng.gen_range(0..u.variants().len());
                    Value::Union(i as u32, Box::new(self.value(&u.variants()[i], ns, depth + 1)))
                }
                Schema::Record(RecordSchema { name, fields, .. }) => {
                    let inner = name.namespace().or(ns);
                    Value::Record(
                        fields
                            .iter()
                            .map(|f| (f.name.clone(), self.value(&f.schema, inner, depth + 1)))
                            .collect(),
                    )
                }
                other => panic!("no generator for {other:?}"),
            }
        }

        fn names_lookup(&self, name: &Name, ns: Option<&str>) -> Schema {
            self.names.lookup(name, ns).expect("named type").clone()
        }

        fn number(&mut self) -> i64 {
            match self.rng.gen_range(0..4) {
                0 => self.rng.gen_range(-70..70),
                1 => i64::from(self.rng.gen::<i32>()),
                2 => self.rng.gen(),
                _ => [i64::MIN, i64::MAX, 0, -1][self.rng.gen_range(0..4)],
            }
        }

        fn text(&mut self) -> String {
            let n = self.rng.gen_range(0..12);
            (0..n).map(|_| ['a', 'é', '∑', '0', ' ', '😀'][self.rng.gen_range(0..6)]).collect()
        }
    }

    /// A random value of `schema` (maps of up to three entries), for other modules' tests.
    pub(crate) fn random_value(rng: &mut StdRng, names: &Names, schema: &Schema) -> Value {
        let mut g = Gen { rng: StdRng::seed_from_u64(rng.gen()), names, max_map: 3 };
        g.value(schema, None, 0)
    }

    /// Every schema version we ship, random values: identical bytes to apache-avro's writer
    /// where map order cannot differ (maps of at most one entry).
    #[test]
    fn bytes_equal_apache_avros_for_every_schema() {
        let store = SchemaStore::bundled().unwrap();
        let mut checked = 0;
        for stored in store.entries() {
            let names = Names::of(stored.schema());
            let mut g =
                Gen { rng: StdRng::seed_from_u64(stored.fingerprint()), names: &names, max_map: 1 };
            for _ in 0..300 {
                let raw = g.value(stored.schema(), None, 0);
                let v = conform(stored.schema(), &names, &raw).expect("generated values conform");
                assert_eq!(ours(&v), apache(stored.schema(), &v), "{} {v:?}", stored.full_name());
                checked += 1;
            }
        }
        assert!(checked >= 300 * 14, "{checked}");
    }

    #[test]
    fn maps_encode_in_key_order_whatever_the_hash_order() {
        let store = SchemaStore::bundled().unwrap();
        let stored = store.current("evalstream.eval.EvalSubmission").unwrap();
        let names = Names::of(stored.schema());
        let mut g = Gen { rng: StdRng::seed_from_u64(7), names: &names, max_map: 12 };
        let raw = g.value(stored.schema(), None, 0);
        let v = conform(stored.schema(), &names, &raw).unwrap();
        let first = ours(&v);
        // Rebuilding the maps gives new random iteration orders; the bytes must not change.
        let mut orders = std::collections::HashSet::new();
        for _ in 0..50 {
            let rebuilt = rebuild_maps(&v);
            orders.insert(apache(stored.schema(), &rebuilt));
            assert_eq!(ours(&rebuilt), first);
        }
        assert!(orders.len() > 1, "the test needs maps whose hash order varies");
        // And the reader gets the same map back.
        let decoded = apache_avro::reader::datum::GenericDatumReader::builder(stored.schema())
            .build()
            .unwrap()
            .read_value(&mut &first[..])
            .unwrap();
        assert_eq!(decoded, v);
    }

    fn rebuild_maps(v: &Value) -> Value {
        match v {
            Value::Map(m) => {
                Value::Map(m.iter().map(|(k, x)| (k.clone(), rebuild_maps(x))).collect())
            }
            Value::Record(f) => {
                Value::Record(f.iter().map(|(k, x)| (k.clone(), rebuild_maps(x))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(rebuild_maps).collect()),
            Value::Union(i, x) => Value::Union(*i, Box::new(rebuild_maps(x))),
            other => other.clone(),
        }
    }

    #[test]
    fn varints_match_the_specification() {
        // Avro spec examples: 0 → 00, -1 → 01, 1 → 02, -2 → 03, 2 → 04, -64 → 7f, 64 → 80 01.
        for (n, bytes) in [
            (0i64, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-2, vec![0x03]),
            (2, vec![0x04]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            write_long(&mut out, n);
            assert_eq!(out, bytes, "{n}");
        }
        let mut out = Vec::new();
        assert!(write_value(&mut out, &Value::Uuid(apache_avro::Uuid::nil())).is_err());
    }
}
