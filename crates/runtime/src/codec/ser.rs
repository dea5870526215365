//! Avro binary straight from a typed record: a serde `Serializer` that walks the schema while
//! serde walks the Rust value, and appends the bytes.
//!
//! Why: a processor's output (`Output::record`) is a serde struct. The general path turns it
//! into an Avro `Value` tree ([`crate::record::to_avro`]) and writes that tree
//! ([`super::direct::write_conformed`], or `conform` + `write_value`). Building and dropping
//! the tree (field names, strings, boxes) is a large share of the CPU spent per record;
//! [`write_serialized`] writes the same bytes without it.
//!
//! The contract is one-sided, like `direct`'s: when [`write_serialized`] returns `Ok`, the bytes
//! it appended equal `write_value(conform(to_avro(value)))` — equivalently what
//! `write_conformed(schema, names, &to_avro(value)?, out)` appends. Whenever that path fails
//! (`to_avro` or `conform` errs) this declines with [`NotDirect`], and it also declines on
//! anything unusual: the caller then runs the general path, which gives the same bytes or the
//! precise error. Declined: enum variants with data, maps serialized against records
//! (`#[serde(flatten)]`), duplicate fields or map keys, a field named by an alias, a union whose
//! first candidate branch does not take the value, `uuid`/`decimal`/`duration`, and every
//! mismatch. Fields in schema order stream straight into `out`; a field out of order or
//! missing moves the later fields into a scratch buffer, assembled in schema order at the end
//! (missing ones get their default, computed by `conform` itself). The module's tests compare
//! both paths over random typed values of real and edge-case schemas.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use apache_avro::schema::{Name, RecordSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use serde::ser::{self, Impossible, Serialize};

use super::direct::NotDirect;
use super::value::{conform, Names};
use super::writer::{write_bytes, write_long, write_value};

/// Appends the Avro encoding of `value` conformed to `schema`, or declines with NotDirect (then
/// `out` holds a partial write the caller truncates/discards).
// Unused until `Output::record` calls it (integrated separately).
pub(crate) fn write_serialized<T: Serialize + ?Sized>(
    schema: &Schema,
    names: &Names,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), NotDirect> {
    let cx = Cx { names, human: probe_human_readable() };
    value.serialize(Ser { cx, schema, ns: None, out }).map_err(|_| NotDirect)
}

/// The serializer's error: "use the general path".
#[derive(Debug)]
struct Decline;

impl fmt::Display for Decline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not written directly")
    }
}

impl std::error::Error for Decline {}

impl ser::Error for Decline {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Decline
    }
}

/// What apache-avro's serializer tells types about `is_human_readable` (a process-wide
/// setting inside apache-avro), asked of it so that types that depend on it serialize alike.
fn probe_human_readable() -> bool {
    struct Probe;
    impl Serialize for Probe {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let human = s.is_human_readable();
            s.serialize_bool(human)
        }
    }
    matches!(apache_avro::to_value(Probe), Ok(Value::Boolean(true)))
}

/// Whether apache-avro would turn `serialize_bytes` into `fixed` right now (inside
/// `apache_avro::serde::fixed`) rather than `bytes`: a thread-local of apache-avro's, asked of it.
fn probe_bytes_are_fixed() -> bool {
    struct Probe;
    impl Serialize for Probe {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&[])
        }
    }
    matches!(apache_avro::to_value(Probe), Ok(Value::Fixed(..)))
}

/// What is shared by the whole walk.
#[derive(Clone, Copy)]
struct Cx<'s> {
    names: &'s Names,
    human: bool,
}

impl<'s> Cx<'s> {
    /// Follows `Schema::Ref`s (as `conform` does, with the namespace of the name).
    fn deref(
        self,
        mut schema: &'s Schema,
        mut ns: Option<&'s str>,
    ) -> Result<(&'s Schema, Option<&'s str>), Decline> {
        for _ in 0..32 {
            match schema {
                Schema::Ref { name } => {
                    schema = self.names.lookup(name, ns).ok_or(Decline)?;
                    ns = name.namespace().or(ns);
                }
                _ => return Ok((schema, ns)),
            }
        }
        Err(Decline)
    }
}

/// A scalar as `apache_avro::to_value` would make it (the `Value` variant it would produce).
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Null,
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    String(&'a str),
    Bytes(&'a [u8]),
    Fixed(&'a [u8]),
}

/// Serializes one value against `schema` into `out`.
struct Ser<'s, 'o> {
    cx: Cx<'s>,
    schema: &'s Schema,
    ns: Option<&'s str>,
    out: &'o mut Vec<u8>,
}

impl<'s> Ser<'s, '_> {
    /// The concrete schema the value is written with: references followed, and for a union
    /// the branch `conform` tries first (its index written). `conform` takes the first branch
    /// that takes the value; when that is this first candidate, our `Ok` proves it, and when
    /// writing with it fails we decline, so the choice always agrees.
    fn target(&mut self, null: bool) -> Result<(&'s Schema, Option<&'s str>), Decline> {
        let (schema, ns) = self.cx.deref(self.schema, self.ns)?;
        let Schema::Union(u) = schema else { return Ok((schema, ns)) };
        let (i, branch) = u
            .variants()
            .iter()
            .enumerate()
            .find(|(_, s)| matches!(s, Schema::Null) == null)
            .ok_or(Decline)?;
        write_long(self.out, i as i64);
        let (branch, ns) = self.cx.deref(branch, ns)?;
        if matches!(branch, Schema::Union(_)) {
            return Err(Decline);
        }
        Ok((branch, ns))
    }

    /// `conform`'s rules for scalars, then `write_value`'s bytes.
    fn scalar(mut self, v: Scalar<'_>) -> Result<(), Decline> {
        let (schema, _) = self.target(matches!(v, Scalar::Null))?;
        let out = self.out;
        match (schema, v) {
            (Schema::Null, Scalar::Null) => {}
            (Schema::Boolean, Scalar::Boolean(b)) => out.push(u8::from(b)),
            (Schema::Int | Schema::Long | Schema::Date | Schema::TimeMillis, Scalar::Int(i)) => {
                write_long(out, i64::from(i))
            }
            (Schema::Int, Scalar::Long(l)) => {
                write_long(out, i64::from(i32::try_from(l).map_err(|_| Decline)?))
            }
            (
                Schema::Long
                | Schema::TimeMicros
                | Schema::TimestampMillis
                | Schema::TimestampMicros
                | Schema::TimestampNanos
                | Schema::LocalTimestampMillis
                | Schema::LocalTimestampMicros
                | Schema::LocalTimestampNanos,
                Scalar::Long(l),
            ) => write_long(out, l),
            (Schema::Float, Scalar::Int(i)) => out.extend_from_slice(&(i as f32).to_le_bytes()),
            (Schema::Float, Scalar::Long(l)) => out.extend_from_slice(&(l as f32).to_le_bytes()),
            (Schema::Float, Scalar::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
            (Schema::Double, Scalar::Int(i)) => out.extend_from_slice(&f64::from(i).to_le_bytes()),
            (Schema::Double, Scalar::Long(l)) => out.extend_from_slice(&(l as f64).to_le_bytes()),
            (Schema::Double, Scalar::Float(f)) => {
                out.extend_from_slice(&f64::from(f).to_le_bytes())
            }
            (Schema::Double, Scalar::Double(d)) => out.extend_from_slice(&d.to_le_bytes()),
            (Schema::Bytes, Scalar::Bytes(b)) => write_bytes(out, b),
            (Schema::Bytes | Schema::String, Scalar::String(s)) => write_bytes(out, s.as_bytes()),
            (Schema::String, Scalar::Bytes(b)) => {
                super::de::utf8_str(b).map_err(|_| Decline)?;
                write_bytes(out, b)
            }
            (Schema::Fixed(f), Scalar::Fixed(b) | Scalar::Bytes(b)) if b.len() == f.size => {
                out.extend_from_slice(b)
            }
            (Schema::Enum(e), Scalar::String(s)) => {
                let i = e.symbols.iter().position(|x| x == s).ok_or(Decline)?;
                write_long(out, i as i64);
            }
            _ => return Err(Decline),
        }
        Ok(())
    }
}

impl<'s, 'o> ser::Serializer for Ser<'s, 'o> {
    type Ok = ();
    type Error = Decline;
    type SerializeSeq = SeqSer<'s, 'o>;
    type SerializeTuple = SeqSer<'s, 'o>;
    type SerializeTupleStruct = SeqSer<'s, 'o>;
    type SerializeTupleVariant = Impossible<(), Decline>;
    type SerializeMap = MapSer<'s, 'o>;
    type SerializeStruct = StructSer<'s, 'o>;
    type SerializeStructVariant = Impossible<(), Decline>;

    fn is_human_readable(&self) -> bool {
        self.cx.human
    }

    fn serialize_bool(self, v: bool) -> Result<(), Decline> {
        self.scalar(Scalar::Boolean(v))
    }
    fn serialize_i8(self, v: i8) -> Result<(), Decline> {
        self.scalar(Scalar::Int(i32::from(v)))
    }
    fn serialize_i16(self, v: i16) -> Result<(), Decline> {
        self.scalar(Scalar::Int(i32::from(v)))
    }
    fn serialize_i32(self, v: i32) -> Result<(), Decline> {
        self.scalar(Scalar::Int(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), Decline> {
        self.scalar(Scalar::Long(v))
    }
    fn serialize_u8(self, v: u8) -> Result<(), Decline> {
        self.scalar(Scalar::Int(i32::from(v)))
    }
    fn serialize_u16(self, v: u16) -> Result<(), Decline> {
        self.scalar(Scalar::Int(i32::from(v)))
    }
    fn serialize_u32(self, v: u32) -> Result<(), Decline> {
        // apache-avro: an int when it fits, else a long.
        match i32::try_from(v) {
            Ok(i) => self.scalar(Scalar::Int(i)),
            Err(_) => self.scalar(Scalar::Long(i64::from(v))),
        }
    }
    fn serialize_u64(self, v: u64) -> Result<(), Decline> {
        // apache-avro: an 8-byte fixed, little-endian.
        self.scalar(Scalar::Fixed(&v.to_le_bytes()))
    }
    fn serialize_i128(self, v: i128) -> Result<(), Decline> {
        self.scalar(Scalar::Fixed(&v.to_le_bytes()))
    }
    fn serialize_u128(self, v: u128) -> Result<(), Decline> {
        self.scalar(Scalar::Fixed(&v.to_le_bytes()))
    }
    fn serialize_f32(self, v: f32) -> Result<(), Decline> {
        self.scalar(Scalar::Float(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Decline> {
        self.scalar(Scalar::Double(v))
    }
    fn serialize_char(self, v: char) -> Result<(), Decline> {
        self.scalar(Scalar::String(v.encode_utf8(&mut [0; 4])))
    }
    fn serialize_str(self, v: &str) -> Result<(), Decline> {
        self.scalar(Scalar::String(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Decline> {
        if probe_bytes_are_fixed() {
            self.scalar(Scalar::Fixed(v))
        } else {
            self.scalar(Scalar::Bytes(v))
        }
    }
    fn serialize_none(self) -> Result<(), Decline> {
        self.scalar(Scalar::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Decline> {
        // `to_avro` drops the union wrapper: `Some(x)` is `x`.
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Decline> {
        self.scalar(Scalar::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Decline> {
        self.scalar(Scalar::Null)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Decline> {
        // apache-avro: the variant name as a string (an enum symbol when the schema says enum).
        self.scalar(Scalar::String(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Decline> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Decline> {
        Err(Decline)
    }
    fn serialize_seq(mut self, len: Option<usize>) -> Result<SeqSer<'s, 'o>, Decline> {
        let (schema, ns) = self.target(false)?;
        let Schema::Array(a) = schema else { return Err(Decline) };
        let spill = match len {
            Some(n) => {
                // Announced length: the block count goes first and items stream after it.
                if n > 0 {
                    write_long(self.out, i64::try_from(n).map_err(|_| Decline)?);
                }
                None
            }
            None => Some(Vec::new()),
        };
        Ok(SeqSer { cx: self.cx, items: &a.items, ns, out: self.out, len, count: 0, spill })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer<'s, 'o>, Decline> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<SeqSer<'s, 'o>, Decline> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Impossible<(), Decline>, Decline> {
        Err(Decline)
    }
    fn serialize_map(mut self, _: Option<usize>) -> Result<MapSer<'s, 'o>, Decline> {
        // A map against a record schema (`#[serde(flatten)]`) is declined.
        let (schema, ns) = self.target(false)?;
        let Schema::Map(m) = schema else { return Err(Decline) };
        Ok(MapSer {
            cx: self.cx,
            values: &m.types,
            ns,
            out: self.out,
            keys: Vec::new(),
            encoded: Vec::new(),
            entries: Vec::new(),
            key: None,
        })
    }
    fn serialize_struct(mut self, _: &'static str, _: usize) -> Result<StructSer<'s, 'o>, Decline> {
        let (schema, ns) = self.target(false)?;
        let Schema::Record(r) = schema else { return Err(Decline) };
        Ok(StructSer {
            cx: self.cx,
            record: r,
            outer_ns: ns,
            ns: r.name.namespace().or(ns),
            out: self.out,
            next: 0,
            spill: None,
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Impossible<(), Decline>, Decline> {
        Err(Decline)
    }
}

/// An array: one block (count, items) and the terminating 0, as `write_value` writes it.
struct SeqSer<'s, 'o> {
    cx: Cx<'s>,
    items: &'s Schema,
    ns: Option<&'s str>,
    out: &'o mut Vec<u8>,
    /// The announced length (its count is already written), or `None`: items go to `spill`.
    len: Option<usize>,
    count: usize,
    spill: Option<Vec<u8>>,
}

impl SeqSer<'_, '_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Decline> {
        let out = match &mut self.spill {
            Some(spill) => spill,
            None => &mut *self.out,
        };
        value.serialize(Ser { cx: self.cx, schema: self.items, ns: self.ns, out })?;
        self.count += 1;
        Ok(())
    }

    fn finish(self) -> Result<(), Decline> {
        match (self.len, self.spill) {
            (Some(n), _) if n != self.count => return Err(Decline),
            (Some(_), _) => {}
            (None, Some(spill)) => {
                if self.count > 0 {
                    write_long(self.out, i64::try_from(self.count).map_err(|_| Decline)?);
                    self.out.extend_from_slice(&spill);
                }
            }
            (None, None) => return Err(Decline),
        }
        self.out.push(0);
        Ok(())
    }
}

/// Sequences, tuples and tuple structs are all Avro arrays to apache-avro: one implementation,
/// under the three serde traits (which differ only in the name of the element method).
macro_rules! array_serializer {
    ($($trait:ident :: $element:ident),*) => {$(
        impl ser::$trait for SeqSer<'_, '_> {
            type Ok = ();
            type Error = Decline;
            fn $element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Decline> {
                self.element(value)
            }
            fn end(self) -> Result<(), Decline> {
                self.finish()
            }
        }
    )*};
}

array_serializer!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field
);

/// A map: entries encoded aside, then written in key order (`writer::sorted_entries`).
struct MapSer<'s, 'o> {
    cx: Cx<'s>,
    values: &'s Schema,
    ns: Option<&'s str>,
    out: &'o mut Vec<u8>,
    /// Every key's UTF-8, back to back.
    keys: Vec<u8>,
    /// Every value's encoding, back to back.
    encoded: Vec<u8>,
    /// (key, value) ranges into `keys` and `encoded`.
    entries: Vec<(Range<usize>, Range<usize>)>,
    /// The key waiting for its value.
    key: Option<Range<usize>>,
}

impl ser::SerializeMap for MapSer<'_, '_> {
    type Ok = ();
    type Error = Decline;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Decline> {
        if self.key.is_some() {
            return Err(Decline);
        }
        let start = self.keys.len();
        key.serialize(KeySer { human: self.cx.human, out: &mut self.keys })?;
        self.key = Some(start..self.keys.len());
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Decline> {
        let key = self.key.take().ok_or(Decline)?;
        let start = self.encoded.len();
        value.serialize(Ser {
            cx: self.cx,
            schema: self.values,
            ns: self.ns,
            out: &mut self.encoded,
        })?;
        self.entries.push((key, start..self.encoded.len()));
        Ok(())
    }

    fn end(mut self) -> Result<(), Decline> {
        if self.key.is_some() {
            return Err(Decline);
        }
        let keys = &self.keys;
        let key = |r: &Range<usize>| keys.get(r.clone()).ok_or(Decline);
        // Byte order of UTF-8 is `String`'s order, which `sorted_entries` sorts by.
        self.entries.sort_unstable_by(|a, b| keys.get(a.0.clone()).cmp(&keys.get(b.0.clone())));
        if !self.entries.is_empty() {
            write_long(self.out, i64::try_from(self.entries.len()).map_err(|_| Decline)?);
        }
        let mut previous: Option<&[u8]> = None;
        for (k, v) in &self.entries {
            let k = key(k)?;
            if previous == Some(k) {
                // A duplicate key (only a hand-written `Serialize` can produce one).
                return Err(Decline);
            }
            previous = Some(k);
            write_bytes(self.out, k);
            self.out.extend_from_slice(self.encoded.get(v.clone()).ok_or(Decline)?);
        }
        self.out.push(0);
        Ok(())
    }
}

/// A record: fields in schema order stream into `out`; from the first one out of place on,
/// fields are encoded into `spill` and assembled in schema order at the end.
struct StructSer<'s, 'o> {
    cx: Cx<'s>,
    record: &'s RecordSchema,
    /// Namespace around the record (for its default values' names).
    outer_ns: Option<&'s str>,
    /// Namespace inside the record.
    ns: Option<&'s str>,
    out: &'o mut Vec<u8>,
    /// Fields `0..next` are in `out`.
    next: usize,
    spill: Option<Spill>,
}

struct Spill {
    encoded: Vec<u8>,
    /// By schema field index: the range of its encoding in `encoded`.
    at: Vec<Option<Range<usize>>>,
}

impl ser::SerializeStruct for StructSer<'_, '_> {
    type Ok = ();
    type Error = Decline;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Decline> {
        let fields = &self.record.fields;
        if self.spill.is_none() {
            if let Some(field) = fields.get(self.next).filter(|f| f.name == key) {
                value.serialize(Ser {
                    cx: self.cx,
                    schema: &field.schema,
                    ns: self.ns,
                    out: &mut *self.out,
                })?;
                self.next += 1;
                return Ok(());
            }
        }
        let spill = self
            .spill
            .get_or_insert_with(|| Spill { encoded: Vec::new(), at: vec![None; fields.len()] });
        // Unknown fields fail `conform`; a field named by an alias passes its check but is not
        // read (its default is); a duplicate is ignored by it. All declined.
        let &i = self.record.lookup.get(key).ok_or(Decline)?;
        let field = fields.get(i).filter(|f| f.name == key).ok_or(Decline)?;
        if i < self.next || spill.at.get(i).is_none_or(Option::is_some) {
            return Err(Decline);
        }
        let start = spill.encoded.len();
        value.serialize(Ser {
            cx: self.cx,
            schema: &field.schema,
            ns: self.ns,
            out: &mut spill.encoded,
        })?;
        spill.at[i] = Some(start..spill.encoded.len());
        Ok(())
    }

    fn end(self) -> Result<(), Decline> {
        for i in self.next..self.record.fields.len() {
            let given = self.spill.as_ref().and_then(|s| Some((s, s.at.get(i)?.clone()?)));
            match given {
                Some((spill, range)) => {
                    self.out.extend_from_slice(spill.encoded.get(range).ok_or(Decline)?)
                }
                None => write_default(self.cx, self.record, self.outer_ns, i, self.out)?,
            }
        }
        Ok(())
    }
}

/// Writes the value `conform` fills in for missing field `i` of `record` (its default; no
/// default fails `conform`, so declines), by asking `conform` itself: a record of that one
/// field, with the record's full name so that names inside resolve alike, conformed from no
/// fields at all.
fn write_default(
    cx: Cx<'_>,
    record: &RecordSchema,
    outer_ns: Option<&str>,
    i: usize,
    out: &mut Vec<u8>,
) -> Result<(), Decline> {
    let field = record.fields.get(i).ok_or(Decline)?;
    field.default.as_ref().ok_or(Decline)?;
    let single = Schema::Record(RecordSchema {
        name: Name::new(record.name.fullname(outer_ns)).map_err(|_| Decline)?,
        aliases: None,
        doc: None,
        fields: vec![field.clone()],
        lookup: BTreeMap::new(),
        attributes: BTreeMap::new(),
    });
    let Ok(Value::Record(filled)) = conform(&single, cx.names, &Value::Record(Vec::new())) else {
        return Err(Decline);
    };
    let [(_, value)] = filled.as_slice() else { return Err(Decline) };
    write_value(out, value).map_err(|_| Decline)
}

/// A map key: apache-avro accepts exactly the keys that serialize to a string.
struct KeySer<'o> {
    human: bool,
    out: &'o mut Vec<u8>,
}

/// Serializer methods of one argument that a map key cannot be: they decline.
macro_rules! decline {
    ($($method:ident($ty:ty)),*) => {$(
        fn $method(self, _: $ty) -> Result<(), Decline> {
            Err(Decline)
        }
    )*};
}

impl ser::Serializer for KeySer<'_> {
    type Ok = ();
    type Error = Decline;
    type SerializeSeq = Impossible<(), Decline>;
    type SerializeTuple = Impossible<(), Decline>;
    type SerializeTupleStruct = Impossible<(), Decline>;
    type SerializeTupleVariant = Impossible<(), Decline>;
    type SerializeMap = Impossible<(), Decline>;
    type SerializeStruct = Impossible<(), Decline>;
    type SerializeStructVariant = Impossible<(), Decline>;

    fn is_human_readable(&self) -> bool {
        self.human
    }

    fn serialize_str(self, v: &str) -> Result<(), Decline> {
        self.out.extend_from_slice(v.as_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Decline> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Decline> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Decline> {
        value.serialize(self)
    }

    decline!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_bytes(&[u8])
    );
    fn serialize_none(self) -> Result<(), Decline> {
        Err(Decline)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Decline> {
        Err(Decline)
    }
    fn serialize_unit(self) -> Result<(), Decline> {
        Err(Decline)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Decline> {
        Err(Decline)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Decline> {
        Err(Decline)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Decline> {
        Err(Decline)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Decline> {
        Err(Decline)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Decline> {
        Err(Decline)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Decline> {
        Err(Decline)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Decline> {
        Err(Decline)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Decline> {
        Err(Decline)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Decline> {
        Err(Decline)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde::{Serialize, Serializer};

    use super::*;
    use crate::codec::direct::write_conformed;
    use crate::codec::SchemaStore;
    use crate::record;

    /// The general path: `to_avro`, `conform`, `write_value` (`Some(bytes)`, or `None` when it
    /// fails). Where the one-pass `write_conformed` writes, it must agree.
    fn general<T: Serialize + ?Sized>(schema: &Schema, names: &Names, v: &T) -> Option<Vec<u8>> {
        let value = record::to_avro(v).ok()?;
        let conformed = conform(schema, names, &value).ok()?;
        let mut out = Vec::new();
        write_value(&mut out, &conformed).ok()?;
        let mut direct = Vec::new();
        if write_conformed(schema, names, &value, &mut direct).is_ok() {
            assert_eq!(direct, out);
        }
        Some(out)
    }

    /// Whether `write_serialized` wrote; when it did, its bytes (appended after a prefix) equal
    /// the general path's, which then must not fail.
    fn check<T: Serialize + std::fmt::Debug + ?Sized>(
        schema: &Schema,
        names: &Names,
        v: &T,
    ) -> bool {
        let expected = general(schema, names, v);
        let mut out = vec![0xAA];
        match write_serialized(schema, names, v, &mut out) {
            Ok(()) => {
                assert_eq!(Some(&out[1..]), expected.as_deref(), "{v:?}");
                true
            }
            Err(NotDirect) => false,
        }
    }

    /// `(fast, general)`: whether `write_serialized` wrote (bytes checked) and whether the
    /// general path succeeds, for `v` against an inline schema.
    fn edge<T: Serialize + std::fmt::Debug + ?Sized>(schema: &str, v: &T) -> (bool, bool) {
        let schema = Schema::parse_str(schema).unwrap();
        let names = Names::of(&schema);
        (check(&schema, &names, v), general(&schema, &names, v).is_some())
    }

    fn text(rng: &mut StdRng) -> String {
        (0..rng.gen_range(0..8))
            .map(|_| ['a', 'b', 'é', '😀', ' ', 'Z'][rng.gen_range(0..6)])
            .collect()
    }

    fn long(rng: &mut StdRng) -> i64 {
        match rng.gen_range(0..4) {
            0 => rng.gen_range(-70..70),
            1 => i64::from(rng.gen::<i32>()),
            2 => rng.gen(),
            _ => [i64::MIN, i64::MAX, 0, -1][rng.gen_range(0..4)],
        }
    }

    fn bytes(rng: &mut StdRng) -> Vec<u8> {
        (0..rng.gen_range(0..12)).map(|_| rng.gen()).collect()
    }

    // ---- An inline schema with every type the typed records use. ----

    const KITCHEN: &str = r#"{"type": "record", "name": "Kitchen", "namespace": "t", "fields": [
        {"name": "s", "type": "string"},
        {"name": "l", "type": "long"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "i", "type": "int"},
        {"name": "d", "type": "double"},
        {"name": "f", "type": "float"},
        {"name": "b", "type": "boolean"},
        {"name": "raw", "type": "bytes"},
        {"name": "raw_opt", "type": ["null", "bytes"]},
        {"name": "opt_l", "type": ["null", "long"]},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["deep_red", "green"]}},
        {"name": "colors", "type": {"type": "array", "items": "Color"}},
        {"name": "list", "type": {"type": "array", "items": "long"}},
        {"name": "by_name", "type": {"type": "map", "values": "double"}},
        {"name": "tree", "type": {"type": "map", "values": {"type": "record", "name": "Inner",
            "fields": [{"name": "x", "type": "int"},
                       {"name": "note", "type": ["null", "string"], "default": null}]}}},
        {"name": "inner_opt", "type": ["null", "Inner"], "default": null},
        {"name": "with_default", "type": "string", "default": "dflt"},
        {"name": "raw_default", "type": "bytes", "default": "\u00ff\u0001"},
        {"name": "n_default", "type": "int", "default": 42},
        {"name": "color_default", "type": "Color", "default": "green"},
        {"name": "list_default", "type": {"type": "array", "items": "long"}, "default": [1, -2]},
        {"name": "inners_default", "type": {"type": "map", "values": "Inner"},
            "default": {"k": {"x": 3}}}
    ]}"#;

    #[derive(Serialize, Debug, Clone, Copy)]
    #[serde(rename_all = "snake_case")]
    enum Color {
        DeepRed,
        Green,
        /// Not a symbol of the schema.
        Ultraviolet,
    }

    #[derive(Serialize, Debug, Clone)]
    struct Inner {
        x: i32,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    }

    /// Fields in schema order; the ones with defaults after `with_default` left out.
    #[derive(Serialize, Debug, Clone)]
    struct Kitchen {
        s: String,
        l: i64,
        ts: i64,
        i: i32,
        d: f64,
        f: f32,
        b: bool,
        #[serde(with = "apache_avro::serde::bytes")]
        raw: Vec<u8>,
        #[serde(with = "apache_avro::serde::bytes_opt")]
        raw_opt: Option<Vec<u8>>,
        opt_l: Option<i64>,
        color: Color,
        colors: Vec<Color>,
        list: Vec<i64>,
        by_name: HashMap<String, f64>,
        tree: BTreeMap<String, Inner>,
        #[serde(skip_serializing_if = "Option::is_none")]
        inner_opt: Option<Inner>,
        #[serde(skip_serializing_if = "Option::is_none")]
        with_default: Option<String>,
    }

    /// The same fields out of schema order, some defaulted ones given.
    #[derive(Serialize, Debug, Clone)]
    struct KitchenShuffled {
        n_default: u8,
        tree: BTreeMap<String, Inner>,
        s: String,
        i: i32,
        l: i64,
        ts: i64,
        d: f64,
        f: f32,
        b: bool,
        #[serde(with = "apache_avro::serde::bytes")]
        raw: Vec<u8>,
        #[serde(with = "apache_avro::serde::bytes_opt")]
        raw_opt: Option<Vec<u8>>,
        opt_l: Option<i64>,
        by_name: HashMap<String, f64>,
        color: Color,
        colors: Vec<Color>,
        list: Vec<i64>,
        color_default: Color,
        #[serde(skip_serializing_if = "Option::is_none")]
        inner_opt: Option<Inner>,
    }

    /// A field the schema does not have: always declined.
    #[derive(Serialize, Debug, Clone)]
    struct KitchenExtra {
        #[serde(flatten)]
        kitchen: Kitchen,
        extra: i64,
    }

    fn color(rng: &mut StdRng) -> Color {
        match rng.gen_range(0..20) {
            0 => Color::Ultraviolet,
            1..=9 => Color::DeepRed,
            _ => Color::Green,
        }
    }

    fn inner(rng: &mut StdRng) -> Inner {
        Inner { x: rng.gen(), note: rng.gen_bool(0.5).then(|| text(rng)) }
    }

    fn kitchen(rng: &mut StdRng) -> Kitchen {
        Kitchen {
            s: text(rng),
            l: long(rng),
            ts: long(rng),
            i: rng.gen(),
            d: if rng.gen_bool(0.2) { f64::from_bits(rng.gen()) } else { rng.gen::<f64>() * -1e9 },
            f: if rng.gen_bool(0.2) { f32::from_bits(rng.gen()) } else { rng.gen::<f32>() - 0.5 },
            b: rng.gen(),
            raw: bytes(rng),
            raw_opt: rng.gen_bool(0.5).then(|| bytes(rng)),
            opt_l: rng.gen_bool(0.5).then(|| long(rng)),
            color: color(rng),
            colors: (0..rng.gen_range(0..4)).map(|_| color(rng)).collect(),
            list: (0..rng.gen_range(0..5)).map(|_| long(rng)).collect(),
            by_name: (0..rng.gen_range(0..9)).map(|_| (text(rng), rng.gen())).collect(),
            tree: (0..rng.gen_range(0..5)).map(|_| (text(rng), inner(rng))).collect(),
            inner_opt: rng.gen_bool(0.5).then(|| inner(rng)),
            with_default: rng.gen_bool(0.5).then(|| text(rng)),
        }
    }

    fn shuffled(rng: &mut StdRng, k: Kitchen) -> KitchenShuffled {
        KitchenShuffled {
            n_default: rng.gen(),
            tree: k.tree,
            s: k.s,
            i: k.i,
            l: k.l,
            ts: k.ts,
            d: k.d,
            f: k.f,
            b: k.b,
            raw: k.raw,
            raw_opt: k.raw_opt,
            opt_l: k.opt_l,
            by_name: k.by_name,
            color: k.color,
            colors: k.colors,
            list: k.list,
            color_default: color(rng),
            inner_opt: k.inner_opt,
        }
    }

    fn has_ultraviolet(k: &Kitchen) -> bool {
        matches!(k.color, Color::Ultraviolet)
            || k.colors.iter().any(|c| matches!(c, Color::Ultraviolet))
    }

    /// Random typed values in schema order, out of order, with missing defaulted fields and
    /// with an extra field: every write equals the general path's bytes; every value the
    /// general path takes is written (nothing in this schema is unusual); extra fields and
    /// unknown symbols are declined.
    #[test]
    fn random_kitchen_values_write_what_the_general_path_writes() {
        let schema = Schema::parse_str(KITCHEN).unwrap();
        let names = Names::of(&schema);
        let mut rng = StdRng::seed_from_u64(11);
        let mut written = 0;
        for _ in 0..3000 {
            let k = kitchen(&mut rng);
            let valid = !has_ultraviolet(&k);
            assert_eq!(check(&schema, &names, &k), valid, "{k:?}");
            assert_eq!(general(&schema, &names, &k).is_some(), valid);
            assert!(!check(&schema, &names, &KitchenExtra { kitchen: k.clone(), extra: 1 }));
            let s = shuffled(&mut rng, k);
            let valid = valid && !matches!(s.color_default, Color::Ultraviolet);
            assert_eq!(check(&schema, &names, &s), valid, "{s:?}");
            written += usize::from(valid);
        }
        assert!(written > 2000, "{written}");
    }

    // ---- The bundled schemas, with typed records like the processors'. ----

    #[derive(Serialize, Debug, Clone)]
    struct Submission {
        submission_id: String,
        model_id: String,
        model_version: String,
        eval_suite: String,
        eval_suite_version: Option<String>,
        submitter: String,
        metrics: HashMap<String, f64>,
        dataset_id: Option<String>,
        artifact_uri: String,
        artifact_sha256: Option<String>,
        labels: BTreeMap<String, String>,
        submitted_at: i64,
        promotion: Option<PromotionAsk>,
        allocation: Option<AllocationAsk>,
    }

    #[derive(Serialize, Debug, Clone)]
    struct PromotionAsk {
        target_stage: Stage,
        justification: Option<String>,
        risk_level_hint: Option<Risk>,
    }

    #[derive(Serialize, Debug, Clone, Copy, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Stage {
        Staging,
        Canary,
        Production,
        Unknown,
        Retired,
    }

    #[derive(Serialize, Debug, Clone, Copy)]
    #[serde(rename_all = "snake_case")]
    enum Risk {
        Low,
        Medium,
        High,
        Critical,
    }

    #[derive(Serialize, Debug, Clone)]
    struct AllocationAsk {
        resource: ComputeResource,
        amount_minor: i64,
        currency: String,
        cost_center: String,
        purpose: Option<String>,
    }

    #[derive(Serialize, Debug, Clone)]
    struct ComputeResource {
        gpu_type: String,
        gpu_count: i32,
        hours: f64,
    }

    /// A version 1 producer's shape: optional fields skipped when empty, some fields moved.
    #[derive(Serialize, Debug, Clone)]
    struct SubmissionSparse {
        model_id: String,
        submission_id: String,
        model_version: String,
        eval_suite: String,
        submitter: String,
        metrics: BTreeMap<String, f64>,
        artifact_uri: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        artifact_sha256: Option<String>,
        #[serde(skip_serializing_if = "HashMap::is_empty")]
        labels: HashMap<String, String>,
        submitted_at: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        dataset_id: Option<String>,
    }

    /// `submitter` (required, no default) left out: always declined.
    #[derive(Serialize, Debug, Clone)]
    struct SubmissionMissing {
        submission_id: String,
        model_id: String,
        model_version: String,
        eval_suite: String,
        metrics: HashMap<String, f64>,
        artifact_uri: String,
        submitted_at: i64,
    }

    fn submission(rng: &mut StdRng) -> Submission {
        let stage =
            [Stage::Staging, Stage::Canary, Stage::Production, Stage::Unknown, Stage::Retired];
        let risk = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical];
        Submission {
            submission_id: text(rng),
            model_id: text(rng),
            model_version: text(rng),
            eval_suite: text(rng),
            eval_suite_version: rng.gen_bool(0.5).then(|| text(rng)),
            submitter: text(rng),
            metrics: (0..rng.gen_range(0..6)).map(|_| (text(rng), rng.gen())).collect(),
            dataset_id: rng.gen_bool(0.5).then(|| text(rng)),
            artifact_uri: text(rng),
            artifact_sha256: rng.gen_bool(0.5).then(|| text(rng)),
            labels: (0..rng.gen_range(0..6)).map(|_| (text(rng), text(rng))).collect(),
            submitted_at: long(rng),
            promotion: rng.gen_bool(0.5).then(|| PromotionAsk {
                target_stage: stage[rng.gen_range(0..stage.len())],
                justification: rng.gen_bool(0.5).then(|| text(rng)),
                risk_level_hint: rng.gen_bool(0.5).then(|| risk[rng.gen_range(0..4)]),
            }),
            allocation: rng.gen_bool(0.5).then(|| AllocationAsk {
                resource: ComputeResource {
                    gpu_type: text(rng),
                    gpu_count: rng.gen(),
                    hours: rng.gen(),
                },
                amount_minor: long(rng),
                currency: text(rng),
                cost_center: text(rng),
                purpose: rng.gen_bool(0.5).then(|| text(rng)),
            }),
        }
    }

    #[test]
    fn random_submissions_write_what_the_general_path_writes() {
        let store = SchemaStore::bundled().unwrap();
        let stored = store.current("evalstream.eval.EvalSubmission").unwrap();
        let (schema, names) = (stored.schema(), &stored.names);
        let mut rng = StdRng::seed_from_u64(5);
        let mut written = 0;
        for _ in 0..2000 {
            let s = submission(&mut rng);
            let valid = s.promotion.as_ref().is_none_or(|p| p.target_stage != Stage::Retired);
            assert_eq!(check(schema, names, &s), valid, "{s:?}");
            assert_eq!(general(schema, names, &s).is_some(), valid);
            written += usize::from(valid);
            let sparse = SubmissionSparse {
                model_id: s.model_id.clone(),
                submission_id: s.submission_id.clone(),
                model_version: s.model_version.clone(),
                eval_suite: s.eval_suite.clone(),
                submitter: s.submitter.clone(),
                metrics: s.metrics.clone().into_iter().collect(),
                artifact_uri: s.artifact_uri.clone(),
                artifact_sha256: s.artifact_sha256.clone(),
                labels: s.labels.clone().into_iter().collect(),
                submitted_at: s.submitted_at,
                dataset_id: s.dataset_id.clone(),
            };
            assert!(check(schema, names, &sparse), "{sparse:?}");
            let missing = SubmissionMissing {
                submission_id: s.submission_id,
                model_id: s.model_id,
                model_version: s.model_version,
                eval_suite: s.eval_suite,
                metrics: s.metrics,
                artifact_uri: s.artifact_uri,
                submitted_at: s.submitted_at,
            };
            assert!(!check(schema, names, &missing));
            assert!(general(schema, names, &missing).is_none());
        }
        assert!(written > 1000, "{written}");
    }

    #[derive(Serialize, Debug, Clone)]
    struct ChainRecord {
        partition: i32,
        kind: ChainRecordKind,
        entry: Option<ChainEntry>,
        checkpoint: Option<Checkpoint>,
    }

    #[derive(Serialize, Debug, Clone, Copy)]
    #[serde(rename_all = "snake_case")]
    enum ChainRecordKind {
        Entry,
        Checkpoint,
    }

    #[derive(Serialize, Debug, Clone)]
    struct ChainEntry {
        seq: i64,
        event_id: String,
        event_type: String,
        occurred_at: i64,
        #[serde(with = "apache_avro::serde::bytes")]
        prev_hash: Vec<u8>,
        #[serde(with = "apache_avro::serde::bytes")]
        entry_hash: Vec<u8>,
        #[serde(with = "apache_avro::serde::bytes")]
        canonical: Vec<u8>,
        source_partition: i32,
        source_offset: i64,
    }

    /// `frontier` as a list of byte strings.
    #[derive(Serialize, Debug, Clone)]
    struct Hash(#[serde(with = "apache_avro::serde::bytes")] Vec<u8>);

    #[derive(Serialize, Debug, Clone)]
    struct Checkpoint {
        tree_size: i64,
        #[serde(with = "apache_avro::serde::bytes")]
        root: Vec<u8>,
        #[serde(with = "apache_avro::serde::bytes")]
        head_hash: Vec<u8>,
        time_ms: i64,
        frontier: Vec<Hash>,
        status: CheckpointStatus,
        kid: Option<String>,
        #[serde(with = "apache_avro::serde::bytes_opt")]
        signature: Option<Vec<u8>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signer_kind: Option<String>,
    }

    #[derive(Serialize, Debug, Clone, Copy)]
    #[serde(rename_all = "snake_case")]
    enum CheckpointStatus {
        Signed,
        PendingSignature,
    }

    #[test]
    fn random_chain_records_write_what_the_general_path_writes() {
        let store = SchemaStore::bundled().unwrap();
        let stored = store.current("evalstream.audit.ChainRecord").unwrap();
        let (schema, names) = (stored.schema(), &stored.names);
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..2000 {
            let c = ChainRecord {
                partition: rng.gen(),
                kind: if rng.gen() { ChainRecordKind::Entry } else { ChainRecordKind::Checkpoint },
                entry: rng.gen_bool(0.5).then(|| ChainEntry {
                    seq: long(&mut rng),
                    event_id: text(&mut rng),
                    event_type: text(&mut rng),
                    occurred_at: long(&mut rng),
                    prev_hash: bytes(&mut rng),
                    entry_hash: bytes(&mut rng),
                    canonical: bytes(&mut rng),
                    source_partition: rng.gen(),
                    source_offset: long(&mut rng),
                }),
                checkpoint: rng.gen_bool(0.5).then(|| Checkpoint {
                    tree_size: long(&mut rng),
                    root: bytes(&mut rng),
                    head_hash: bytes(&mut rng),
                    time_ms: long(&mut rng),
                    frontier: (0..rng.gen_range(0..4)).map(|_| Hash(bytes(&mut rng))).collect(),
                    status: if rng.gen() {
                        CheckpointStatus::Signed
                    } else {
                        CheckpointStatus::PendingSignature
                    },
                    kid: rng.gen_bool(0.5).then(|| text(&mut rng)),
                    signature: rng.gen_bool(0.5).then(|| bytes(&mut rng)),
                    signer_kind: rng.gen_bool(0.5).then(|| text(&mut rng)),
                }),
            };
            assert!(check(schema, names, &c), "{c:?}");
        }
    }

    /// The hot record of the benchmark (a copy of `processors/totals`' output type) streams
    /// through the fast path.
    #[test]
    fn totals_update_takes_the_fast_path() {
        use crate::test_records::TotalsUpdate;
        let store = SchemaStore::bundled().unwrap();
        let stored = store.current("evalstream.runtime.TotalsUpdate").unwrap();
        for (amount, total) in [(-3, 1 << 40), (0, 0), (i64::MIN, i64::MAX), (7, -7)] {
            let v = TotalsUpdate::of("k-1", amount, total);
            assert!(check(stored.schema(), &stored.names, &v), "{v:?}");
        }
    }

    // ---- Edge cases against small schemas: (written, general path succeeds). ----

    #[test]
    fn numbers_follow_apache_avros_serde_mapping() {
        assert_eq!(edge(r#""int""#, &5u32), (true, true));
        assert_eq!(edge(r#""int""#, &u32::MAX), (false, false));
        assert_eq!(edge(r#""long""#, &u32::MAX), (true, true));
        assert_eq!(edge(r#""int""#, &-5i8), (true, true));
        assert_eq!(edge(r#""int""#, &200u8), (true, true));
        assert_eq!(edge(r#""int""#, &-300i16), (true, true));
        assert_eq!(edge(r#""int""#, &60_000u16), (true, true));
        assert_eq!(edge(r#""int""#, &7i64), (true, true));
        assert_eq!(edge(r#""int""#, &(1i64 << 40)), (false, false));
        assert_eq!(edge(r#""long""#, &-7i32), (true, true));
        // u64 is an 8-byte fixed to apache-avro, i128 and u128 16 bytes.
        assert_eq!(edge(r#""long""#, &7u64), (false, false));
        assert_eq!(edge(r#"{"type": "fixed", "name": "F", "size": 8}"#, &7u64), (true, true));
        assert_eq!(edge(r#"{"type": "fixed", "name": "F", "size": 16}"#, &-7i128), (true, true));
        assert_eq!(edge(r#"{"type": "fixed", "name": "F", "size": 16}"#, &7u128), (true, true));
        assert_eq!(edge(r#"{"type": "fixed", "name": "F", "size": 4}"#, &7u64), (false, false));
        let ts = r#"{"type": "long", "logicalType": "timestamp-millis"}"#;
        assert_eq!(edge(ts, &-1i64), (true, true));
        assert_eq!(edge(ts, &-1i32), (false, false));
        let date = r#"{"type": "int", "logicalType": "date"}"#;
        assert_eq!(edge(date, &19_000i32), (true, true));
        assert_eq!(edge(date, &19_000i64), (false, false));
        assert_eq!(edge(r#""float""#, &1.5f64), (false, false));
        assert_eq!(edge(r#""float""#, &(1i64 << 60)), (true, true));
        assert_eq!(edge(r#""float""#, &-3i32), (true, true));
        assert_eq!(edge(r#""double""#, &1.1f32), (true, true));
        assert_eq!(edge(r#""double""#, &i64::MAX), (true, true));
        assert_eq!(edge(r#""double""#, &f64::NAN), (true, true));
        assert_eq!(edge(r#""boolean""#, &true), (true, true));
        assert_eq!(edge(r#""boolean""#, &1i32), (false, false));
        assert_eq!(edge(r#""string""#, &1i32), (false, false));
    }

    #[derive(Serialize, Debug)]
    struct Fixed4 {
        #[serde(with = "apache_avro::serde::fixed")]
        v: [u8; 4],
    }

    #[derive(Serialize, Debug)]
    struct Bytes {
        #[serde(with = "apache_avro::serde::bytes")]
        v: Vec<u8>,
    }

    #[derive(Serialize, Debug)]
    struct Text {
        v: String,
    }

    fn record_of(field_type: &str) -> String {
        format!(
            r#"{{"type": "record", "name": "R", "fields": [{{"name": "v", "type": {field_type}}}]}}"#
        )
    }

    #[test]
    fn strings_bytes_and_fixed_convert_as_conform_does() {
        assert_eq!(edge(r#""string""#, &'é'), (true, true));
        assert_eq!(edge(r#""string""#, "text"), (true, true));
        assert_eq!(edge(r#""bytes""#, "text"), (true, true));
        let bytes = |v: &[u8]| Bytes { v: v.to_vec() };
        assert_eq!(edge(&record_of(r#""bytes""#), &bytes(&[0, 255])), (true, true));
        assert_eq!(edge(&record_of(r#""string""#), &bytes(b"ok")), (true, true));
        assert_eq!(edge(&record_of(r#""string""#), &bytes(&[0xff])), (false, false));
        let fixed3 = r#"{"type": "fixed", "name": "F", "size": 3}"#;
        assert_eq!(edge(&record_of(fixed3), &bytes(&[1, 2, 3])), (true, true));
        assert_eq!(edge(&record_of(fixed3), &bytes(&[1, 2])), (false, false));
        let fixed4 = r#"{"type": "fixed", "name": "F", "size": 4}"#;
        let fixed = Fixed4 { v: [1, 2, 3, 4] };
        assert_eq!(edge(&record_of(fixed4), &fixed), (true, true));
        // apache_avro::serde::fixed makes a `fixed`, which `bytes` and `string` do not take.
        assert_eq!(edge(&record_of(r#""bytes""#), &fixed), (false, false));
        assert_eq!(edge(&record_of(r#""string""#), &fixed), (false, false));
        // Without `with`, a Vec<u8> is an array of ints.
        assert_eq!(edge(r#"{"type": "array", "items": "int"}"#, &vec![1u8, 2]), (true, true));
        assert_eq!(edge(r#""bytes""#, &vec![1u8, 2]), (false, false));
        // Strings into a fixed or an enum: only symbols.
        assert_eq!(edge(fixed3, "abc"), (false, false));
        let e = r#"{"type": "enum", "name": "E", "symbols": ["a", "deep_red"]}"#;
        assert_eq!(edge(e, "deep_red"), (true, true));
        assert_eq!(edge(e, &Color::DeepRed), (true, true));
        assert_eq!(edge(e, &Color::Green), (false, false));
        assert_eq!(edge(r#""string""#, &Color::Green), (true, true));
        assert_eq!(edge(&record_of(e), &Text { v: "a".into() }), (true, true));
    }

    #[derive(Serialize, Debug)]
    struct Meters(i64);

    #[derive(Serialize, Debug)]
    enum WithData {
        Number(i64),
        Pair(i64, i64),
        Named { v: i64 },
    }

    /// A sequence whose length serde does not announce (`collect_seq` of a filter).
    #[derive(Debug)]
    struct Evens(Vec<i64>);

    impl Serialize for Evens {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().filter(|x| *x % 2 == 0))
        }
    }

    /// A map with a key twice (only a hand-written impl can do that).
    #[derive(Debug)]
    struct Twice;

    impl Serialize for Twice {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("k", &1i64)?;
            m.serialize_entry("k", &2i64)?;
            m.end()
        }
    }

    #[test]
    fn unions_containers_and_unusual_shapes() {
        let opt = r#"["null", "long"]"#;
        assert_eq!(edge(opt, &None::<i64>), (true, true));
        assert_eq!(edge(opt, &Some(3i64)), (true, true));
        assert_eq!(edge(opt, &Some(None::<i64>)), (true, true));
        assert_eq!(edge(opt, &()), (true, true));
        assert_eq!(edge(opt, &Some("x")), (false, false));
        assert_eq!(edge(r#"["long", "null"]"#, &None::<i64>), (true, true));
        assert_eq!(edge(r#"["long", "null"]"#, &Some(-1i64)), (true, true));
        assert_eq!(edge(r#""long""#, &None::<i64>), (false, false));
        assert_eq!(edge(r#""long""#, &Some(1i64)), (true, true));
        assert_eq!(edge(r#""null""#, &()), (true, true));
        // Several candidate branches: the first must take the value, else declined.
        let multi = r#"["null", "string", "long"]"#;
        assert_eq!(edge(multi, "x"), (true, true));
        assert_eq!(edge(multi, &4i64), (false, true));
        assert_eq!(edge(r#"["int", "long"]"#, &(1i64 << 40)), (false, true));
        assert_eq!(edge(r#"["int", "long"]"#, &1i64), (true, true));
        // Newtypes are looked through; variants with data are declined.
        assert_eq!(edge(r#""long""#, &Meters(-9)), (true, true));
        for v in [WithData::Number(1), WithData::Pair(1, 2), WithData::Named { v: 1 }] {
            assert!(!edge(r#""long""#, &v).0);
        }
        // Arrays: one block or just the end marker; tuples are arrays; unknown lengths too.
        let longs = r#"{"type": "array", "items": "long"}"#;
        assert_eq!(edge(longs, &Vec::<i64>::new()), (true, true));
        assert_eq!(edge(longs, &(1i64, -2i64)), (true, true));
        assert_eq!(edge(longs, &Evens(vec![1, 2, 3, 4])), (true, true));
        assert_eq!(edge(longs, &Evens(vec![1])), (true, true));
        assert_eq!(edge(longs, &vec![Some(1i64)]), (true, true));
        assert_eq!(edge(longs, &vec![None::<i64>]), (false, false));
        // Maps: key order, string-like keys only, duplicate keys declined.
        let map = r#"{"type": "map", "values": "long"}"#;
        let by_color: BTreeMap<&str, i64> = [("green", 1), ("deep_red", 2)].into();
        assert_eq!(edge(map, &by_color), (true, true));
        let enum_keys: HashMap<String, i64> =
            (0..40).map(|i| (format!("k{}", i * 7 % 40), i)).collect();
        assert_eq!(edge(map, &enum_keys), (true, true));
        assert_eq!(edge(map, &HashMap::<String, i64>::new()), (true, true));
        assert_eq!(edge(map, &BTreeMap::from([('c', 1i64)])), (true, true));
        assert_eq!(edge(map, &BTreeMap::from([(1i32, 1i64)])), (false, false));
        assert!(!edge(map, &Twice).0);
        // A struct is not a map, and a map (here: flatten) against a record is declined.
        assert_eq!(edge(map, &Meters(1)), (false, false));
        assert_eq!(edge(map, &Text { v: "x".into() }), (false, false));
        #[derive(Serialize, Debug)]
        struct Flat {
            #[serde(flatten)]
            text: Text,
        }
        assert!(!edge(&record_of(r#""string""#), &Flat { text: Text { v: "x".into() } }).0);
    }

    #[test]
    fn records_fields_defaults_and_names() {
        #[derive(Serialize, Debug)]
        struct A {
            a: i64,
        }
        #[derive(Serialize, Debug)]
        struct Empty {}
        #[derive(Serialize, Debug)]
        struct Ba {
            b: String,
            a: i64,
        }
        #[derive(Serialize, Debug)]
        struct AOld {
            a: i64,
            old: String,
        }
        let ab = r#"{"type": "record", "name": "R", "namespace": "n", "fields": [
            {"name": "a", "type": "long"},
            {"name": "b", "type": "string", "default": "x", "aliases": ["old"]},
            {"name": "c", "type": {"type": "enum", "name": "E", "symbols": ["p", "q"]}, "default": "q"},
            {"name": "d", "type": ["null", {"type": "record", "name": "D", "fields": [
                {"name": "e", "type": "E"}]}], "default": null},
            {"name": "f", "type": {"type": "map", "values": "n.E"}, "default": {"z": "p", "a": "q"}},
            {"name": "g", "type": ["string", "null"], "default": "s"},
            {"name": "h", "type": "float", "default": 1.5}
        ]}"#;
        assert_eq!(edge(ab, &A { a: 1 }), (true, true));
        assert_eq!(edge(ab, &Ba { b: "y".into(), a: 1 }), (true, true));
        assert_eq!(edge(ab, &Empty {}), (false, false));
        // A field named by an alias is not read by conform (it takes the default): declined.
        assert!(!edge(ab, &AOld { a: 1, old: "y".into() }).0);
        // A record inside a namespace-less record inherits the namespace for its references.
        let nested = r#"{"type": "record", "name": "Outer", "namespace": "o", "fields": [
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["p", "q"]}},
            {"name": "r", "type": {"type": "record", "name": "In", "fields": [
                {"name": "e1", "type": "E"},
                {"name": "e2", "type": "o.E", "default": "q"}]}}
        ]}"#;
        #[derive(Serialize, Debug)]
        struct Outer {
            e: &'static str,
            r: In,
        }
        #[derive(Serialize, Debug)]
        struct In {
            e1: &'static str,
        }
        assert_eq!(edge(nested, &Outer { e: "p", r: In { e1: "q" } }), (true, true));
        assert_eq!(edge(nested, &Outer { e: "p", r: In { e1: "r" } }), (false, false));
    }
}
