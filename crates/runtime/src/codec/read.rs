//! The decode fast path: Avro binary to a `Value` over a byte slice, with the named types the
//! store computed once per schema.
//!
//! apache-avro's `GenericDatumReader` resolves the schema's names again for every datum it
//! reads (`ResolvedSchema::new`, about a quarter of a record's decode in the benchmark) and
//! reads byte by byte through `io::Read`. [`read_value`] reads the same encoding from the
//! slice with [`Names`] precomputed by the store.
//!
//! Like [`super::direct`] it is one-sided: it declines (with [`NotDirect`]) anything unusual —
//! logical types other than `timestamp-millis`, truncated or malformed input, lengths beyond
//! apache-avro's allocation limit ([`super::MAX_ALLOCATION_BYTES`]) — and the caller then decodes with apache-avro, which gives
//! the value or the precise error. When it returns `Ok`, the value equals apache-avro's; the
//! tests compare the two over random values of every bundled schema, and over damaged bytes.

use std::collections::HashMap;

use apache_avro::schema::RecordSchema;
use apache_avro::types::Value;
use apache_avro::Schema;

use super::direct::NotDirect;
use super::value::Names;
use super::MAX_ALLOCATION_BYTES;

/// Decodes one datum of `schema` from the front of `body`; returns it and the bytes left.
pub(crate) fn read_value<'b>(
    schema: &Schema,
    names: &Names,
    body: &'b [u8],
) -> Result<(Value, &'b [u8]), NotDirect> {
    // The limit apache-avro applies (installed by `Codec::new`), so that this path never
    // accepts what apache-avro would refuse.
    let limit = apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
    let mut r = Reader { names, rest: body, limit };
    let value = r.value(schema, None)?;
    Ok((value, r.rest))
}

struct Reader<'n, 'b> {
    names: &'n Names,
    rest: &'b [u8],
    /// Largest allocation (bytes) a length prefix may ask for.
    limit: usize,
}

impl Reader<'_, '_> {
    fn value(&mut self, schema: &Schema, ns: Option<&str>) -> Result<Value, NotDirect> {
        Ok(match schema {
            Schema::Ref { name } => {
                let target = self.names.lookup(name, ns).ok_or(NotDirect)?;
                return self.value(target, name.namespace().or(ns));
            }
            Schema::Null => Value::Null,
            Schema::Boolean => match self.take(1)? {
                [0] => Value::Boolean(false),
                [1] => Value::Boolean(true),
                _ => return Err(NotDirect),
            },
            Schema::Int => Value::Int(self.int()?),
            Schema::Long => Value::Long(self.long()?),
            Schema::TimestampMillis => Value::TimestampMillis(self.long()?),
            Schema::Float => Value::Float(f32::from_le_bytes(self.array()?)),
            Schema::Double => Value::Double(f64::from_le_bytes(self.array()?)),
            Schema::Bytes => {
                let n = self.len()?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            Schema::String => {
                let n = self.len()?;
                let text = super::de::utf8_str(self.take(n)?).map_err(|_| NotDirect)?;
                Value::String(text.to_string())
            }
            Schema::Fixed(f) => Value::Fixed(f.size, self.take(f.size)?.to_vec()),
            Schema::Enum(e) => {
                let i = self.int()?;
                let symbol = usize::try_from(i).ok().and_then(|i| e.symbols.get(i));
                Value::Enum(i as u32, symbol.ok_or(NotDirect)?.clone())
            }
            Schema::Union(u) => {
                let i = self.long()?;
                let branch = usize::try_from(i).ok().and_then(|i| u.variants().get(i));
                let inner = self.value(branch.ok_or(NotDirect)?, ns)?;
                Value::Union(i as u32, Box::new(inner))
            }
            Schema::Array(a) => {
                let mut items = Vec::new();
                while let Some(n) = self.block::<Value>(items.len())? {
                    items.reserve(n.min(self.rest.len()));
                    for _ in 0..n {
                        items.push(self.value(&a.items, ns)?);
                    }
                }
                Value::Array(items)
            }
            Schema::Map(m) => {
                let mut entries = HashMap::new();
                while let Some(n) = self.block::<(String, Value)>(entries.len())? {
                    for _ in 0..n {
                        let Value::String(key) = self.value(&Schema::String, ns)? else {
                            return Err(NotDirect);
                        };
                        let item = self.value(&m.types, ns)?;
                        entries.insert(key, item);
                    }
                }
                Value::Map(entries)
            }
            Schema::Record(r) => self.record(r, ns)?,
            _ => return Err(NotDirect),
        })
    }

    fn record(&mut self, r: &RecordSchema, ns: Option<&str>) -> Result<Value, NotDirect> {
        let inner = r.name.namespace().or(ns);
        let mut fields = Vec::with_capacity(r.fields.len());
        for field in &r.fields {
            fields.push((field.name.clone(), self.value(&field.schema, inner)?));
        }
        Ok(Value::Record(fields))
    }

    /// The item count of the next block of an array or map (`None` at the terminating empty
    /// block), bounded like apache-avro bounds it: the whole collection within the allocation
    /// limit.
    fn block<T>(&mut self, so_far: usize) -> Result<Option<usize>, NotDirect> {
        let raw = self.long()?;
        let n = match raw {
            0 => return Ok(None),
            n if n < 0 => {
                let _bytes = self.long()?;
                n.checked_neg().ok_or(NotDirect)?
            }
            n => n,
        };
        let n = usize::try_from(n).map_err(|_| NotDirect)?;
        let total = so_far.checked_add(n).ok_or(NotDirect)?;
        let bytes = total.checked_mul(std::mem::size_of::<T>()).ok_or(NotDirect)?;
        if n > self.limit || bytes > self.limit {
            return Err(NotDirect);
        }
        Ok(Some(n))
    }

    /// A string or bytes length.
    fn len(&mut self) -> Result<usize, NotDirect> {
        let n = usize::try_from(self.long()?).map_err(|_| NotDirect)?;
        if n > self.limit {
            return Err(NotDirect);
        }
        Ok(n)
    }

    fn int(&mut self) -> Result<i32, NotDirect> {
        i32::try_from(self.long()?).map_err(|_| NotDirect)
    }

    /// A zig-zag varint of at most ten bytes, decoded as apache-avro decodes it.
    fn long(&mut self) -> Result<i64, NotDirect> {
        let mut z = 0u64;
        for (j, &b) in self.rest.iter().enumerate().take(10) {
            z |= u64::from(b & 0x7f) << (j * 7);
            if b & 0x80 == 0 {
                self.rest = &self.rest[j + 1..];
                return Ok(if z & 1 == 0 { (z >> 1) as i64 } else { !(z >> 1) as i64 });
            }
        }
        Err(NotDirect)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], NotDirect> {
        let (head, rest) = self.rest.split_at_checked(n).ok_or(NotDirect)?;
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], NotDirect> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::codec::value::conform;
    use crate::codec::writer::write_value;
    use crate::codec::SchemaStore;

    /// apache-avro's reader with the codec's strictness (`super::super::read_datum`).
    fn apache(schema: &Schema, body: &[u8]) -> Option<Value> {
        super::super::read_datum(schema, "test", body).ok()
    }

    fn ours(schema: &Schema, names: &Names, body: &[u8]) -> Option<Value> {
        match read_value(schema, names, body) {
            Ok((v, [])) => Some(v),
            _ => None,
        }
    }

    /// Random values of every bundled schema version, written by the codec's writer, read back
    /// by both readers: equal values (unions, nulls, arrays, maps, enums, negative numbers and
    /// extremes come from the writer tests' generator); then the same bytes damaged (truncated,
    /// a byte flipped, a byte appended): whenever the fast path reads a value, apache-avro
    /// reads the same one.
    #[test]
    fn reads_what_apache_avro_reads() {
        let store = SchemaStore::bundled().unwrap();
        // Installs the process-wide allocation limit before apache-avro first reads it.
        let _codec = crate::codec::Codec::new(store.clone(), None).unwrap();
        let (mut read, mut total) = (0, 0);
        for stored in store.entries() {
            let schema = stored.schema();
            let names = Names::of(schema);
            let mut rng = StdRng::seed_from_u64(stored.fingerprint() ^ 0x5eed);
            for _ in 0..300 {
                let raw = crate::codec::writer::tests::random_value(&mut rng, &names, schema);
                let v = conform(schema, &names, &raw).expect("generated values conform");
                let mut bytes = Vec::new();
                write_value(&mut bytes, &v).unwrap();
                let expected = apache(schema, &bytes);
                assert_eq!(expected.as_ref(), Some(&v), "{}", stored.full_name());
                assert_eq!(ours(schema, &names, &bytes), expected, "{}", stored.full_name());
                read += 1;
                total += 1;
                for _ in 0..4 {
                    let damaged = crate::codec::writer::tests::damage(&mut rng, &bytes);
                    if let Some(got) = ours(schema, &names, &damaged) {
                        assert_eq!(Some(got), apache(schema, &damaged), "{}", stored.full_name());
                    }
                    total += 1;
                }
            }
        }
        assert!(read * 5 >= total, "{read} of {total}");
    }

    #[test]
    fn declines_what_it_cannot_read_safely() {
        let names = Names::default();
        // A count of 200 million nulls: within the bytes, far beyond the allocation limit.
        let nulls = Schema::array(Schema::Null).build();
        let mut body = Vec::new();
        crate::codec::writer::write_long(&mut body, 200_000_000);
        body.push(0);
        assert_eq!(read_value(&nulls, &names, &body).err(), Some(NotDirect));
        // An eleven-byte varint; a string longer than the input; invalid UTF-8.
        assert!(read_value(&Schema::Long, &names, &[0xff; 11]).is_err());
        assert!(read_value(&Schema::String, &names, &[0x08, b'a']).is_err());
        assert!(read_value(&Schema::String, &names, &[0x02, 0xff]).is_err());
    }
}
