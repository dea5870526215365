//! Avro binary straight into a typed serde value: a schema-driven [`serde::Deserializer`] over
//! the record body.
//!
//! Why: a processor's input used to travel bytes → [`Value`] tree ([`super::read`]) →
//! `apache_avro::from_value` → `T`. Building that tree (a `String` per field name and string, a
//! `Vec` per record, a `Box` per union, a `HashMap` per map) and dropping it again is a large
//! share of the per-record CPU. [`from_slice`] reads the same bytes with the writer schema and
//! hands every datum to `T`'s visitors directly: no `Value`, no allocation beyond what `T`
//! itself needs; strings and bytes are handed out borrowed from the body (`&'de str` and
//! `&'de [u8]` fields are zero-copy).
//!
//! Contract (the tests below prove it over random values of every bundled schema):
//!
//! * **Same result as the `Value` path.** For a body that apache-avro decodes into `v` (the
//!   codec's strict reading: nothing read past the end, nothing left over), `from_slice::<T>` is
//!   `Ok(t)` exactly when `apache_avro::from_value::<T>(&v)` is `Ok(t')`, and then `t == t'`. The
//!   mapping per Avro type and per `deserialize_*` hint mirrors apache-avro 0.22's `Value`
//!   deserializer (records → structs and maps with unknown fields ignored, `["null", X]` →
//!   `Option` and look-through for scalar hints, enums → unit variants by symbol, bytes and
//!   fixed → bytes, maps, arrays, every int/long logical type → `i32`/`i64`, …). Known,
//!   deliberate differences, all in the direction of accepting more: names and keys reach
//!   visitors through `visit_str`/`visit_borrowed_str` where apache-avro uses `visit_string`,
//!   and bytes through `visit_borrowed_bytes` where it uses `visit_bytes`, so `&'de str` map keys
//!   and `&'de [u8]` fields work here and not there (no visitor in std, serde, serde_json or
//!   serde's derive tells the two apart otherwise). Enum symbols come from the schema, not the
//!   body, so they are `visit_str` (a `&'de str` cannot hold one, as with apache-avro it can).
//! * **Validation.** The whole body is parsed and checked as apache-avro checks it (varints of at
//!   most ten bytes, `int` range, lengths, UTF-8, booleans 0/1, enum and union indexes, the
//!   allocation limit [`super::MAX_ALLOCATION_BYTES`] exactly as apache-avro applies it, no bytes
//!   left over), also the parts `T` ignores: `from_slice::<serde::de::IgnoredAny>` is the
//!   validator. A body apache-avro refuses is [`DeError::Malformed`], whatever `T` is.
//! * **[`DeError::Unsupported`]**: the datum uses something this module does not read (the
//!   logical types `decimal`, `big-decimal`, `uuid`, `duration`; a record read as a serde enum;
//!   a map with a repeated key, which the `Value` path collapses; a map beyond the allocation
//!   limit counted with repeats; nesting deeper than [`MAX_DEPTH`]). The caller then takes the
//!   `Value` path, which gives the answer.
//! * Never panics; a `T` whose `Deserialize` swallows errors (e.g. a default on error) still sees
//!   the reader positioned after the datum it failed on.

use std::collections::HashSet;
use std::fmt;

use apache_avro::schema::{EnumSchema, RecordField, RecordSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use serde::de::{self, DeserializeSeed, Deserializer as _, Visitor};
use serde::forward_to_deserialize_any;

use super::value::Names;
use super::MAX_ALLOCATION_BYTES;

/// Why a body could not be deserialized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum DeError {
    /// The bytes are not a valid encoding of the schema (truncated, bad varint, invalid UTF-8, a
    /// boolean byte other than 0/1, a union index out of range, a length beyond the allocation
    /// limit, bytes left over after the datum).
    #[error("malformed Avro: {0}")]
    Malformed(String),
    /// The bytes are valid but do not fit the Rust type (serde's message, after the field path
    /// when there is one, e.g. `resource.gpu_count: invalid type: …`).
    #[error("{0}")]
    Shape(String),
    /// The body uses something this deserializer does not read (see the module doc); decode it
    /// into a `Value` and use `apache_avro::from_value` instead, which gives the answer.
    #[error("not supported by the direct deserializer: {0}")]
    Unsupported(String),
}

/// Deepest nesting of datums (records, unions, arrays, maps and their items) read; deeper
/// bodies (only a recursive schema allows them) are [`DeError::Unsupported`], not a stack
/// overflow.
pub(crate) const MAX_DEPTH: u32 = 256;

/// Deserializes one `T` from `body`, which must hold exactly one datum of `schema` (no bytes
/// left over). `names` resolves `Schema::Ref`s.
pub(crate) fn from_slice<'de, T: serde::Deserialize<'de>>(
    schema: &Schema,
    names: &Names,
    body: &'de [u8],
) -> Result<T, DeError> {
    read(schema, names, body, Reader::new(body))
}

/// [`from_slice`] of a body known to be valid (`from_slice::<IgnoredAny>` accepted it, or the
/// codec wrote it): values `T` ignores are skipped by their lengths, without checking their
/// UTF-8 again (a 1 KiB payload the processor never reads cost ~600 instructions per record).
/// Everything handed to `T` is checked as in [`from_slice`]; on a body that is not in fact
/// valid the result may differ from [`from_slice`]'s, but is still never unsound.
pub(crate) fn from_validated_slice<'de, T: serde::Deserialize<'de>>(
    schema: &Schema,
    names: &Names,
    body: &'de [u8],
) -> Result<T, DeError> {
    let mut r = Reader::new(body);
    r.validated = true;
    read(schema, names, body, r)
}

fn read<'de, T: serde::Deserialize<'de>>(
    schema: &Schema,
    names: &Names,
    body: &'de [u8],
    mut r: Reader<'de>,
) -> Result<T, DeError> {
    let out = Datum { r: &mut r, schema, names, ns: None }.hand(|d| T::deserialize(d));
    // A fatal failure counts even when `T` swallowed it: the body is bad (or unsupported)
    // whatever `T` made of it.
    let failure = match (r.fatal.take(), out) {
        (Some(fatal), _) => fatal,
        (None, Ok(t)) if r.rest.is_empty() => return Ok(t),
        (None, Ok(_)) => return Err(DeError::Malformed(left_over(r.rest.len()))),
        (None, Err(e)) => e,
    };
    if failure.kind() == Kind::Malformed {
        return Err(failure.into_de());
    }
    // Reading may have stopped early (a shape error, something unsupported): the validity of
    // the whole body decides whether that is the answer or the body is malformed.
    let mut check = Reader::new(body);
    match skip(&mut check, names, schema, None) {
        Err(f) if f.kind() == Kind::Malformed => Err(f.into_de()),
        Ok(()) if !check.rest.is_empty() => Err(DeError::Malformed(left_over(check.rest.len()))),
        _ => Err(failure.into_de()),
    }
}

fn left_over(n: usize) -> String {
    format!("{n} bytes left over after the datum")
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Malformed,
    Shape,
    Unsupported,
}

#[derive(Debug, Clone)]
enum Seg {
    Field(String),
    Index(usize),
    Key(String),
}

/// The deserializer's error: boxed so that results stay small on the success path.
#[derive(Debug, Clone)]
struct Failure(Box<FailureInner>);

#[derive(Debug, Clone)]
struct FailureInner {
    kind: Kind,
    message: String,
    /// Innermost segment first.
    path: Vec<Seg>,
}

impl Failure {
    fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure(Box::new(FailureInner { kind, message: message.into(), path: Vec::new() }))
    }

    fn kind(&self) -> Kind {
        self.0.kind
    }

    fn at(mut self, seg: Seg) -> Failure {
        self.0.path.push(seg);
        self
    }

    fn path(&self) -> String {
        let mut out = String::new();
        for seg in self.0.path.iter().rev() {
            match seg {
                Seg::Field(name) if out.is_empty() => out.push_str(name),
                Seg::Field(name) => {
                    out.push('.');
                    out.push_str(name);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
                Seg::Key(k) => out.push_str(&format!("[{k:?}]")),
            }
        }
        out
    }

    fn into_de(self) -> DeError {
        let path = self.path();
        let FailureInner { kind, message, .. } = *self.0;
        match kind {
            Kind::Shape if path.is_empty() => DeError::Shape(message),
            Kind::Shape => DeError::Shape(format!("{path}: {message}")),
            Kind::Malformed if path.is_empty() => DeError::Malformed(message),
            Kind::Malformed => DeError::Malformed(format!("{message} (at {path})")),
            Kind::Unsupported if path.is_empty() => DeError::Unsupported(message),
            Kind::Unsupported => DeError::Unsupported(format!("{message} (at {path})")),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.clone().into_de(), f)
    }
}

impl std::error::Error for Failure {}

impl de::Error for Failure {
    fn custom<M: fmt::Display>(msg: M) -> Failure {
        Failure::new(Kind::Shape, msg.to_string())
    }
}

fn shape(message: impl Into<String>) -> Failure {
    Failure::new(Kind::Shape, message)
}

// ---------------------------------------------------------------------------------------------
// Reading the encoding

const VALUE_SIZE: usize = std::mem::size_of::<Value>();
const MAP_ENTRY_SIZE: usize = std::mem::size_of::<(String, Value)>();

struct Reader<'de> {
    rest: &'de [u8],
    /// Largest allocation (bytes) a length prefix may ask for, as apache-avro's.
    limit: usize,
    /// Datums entered so far: tells whether a deserializer handed to foreign code was used.
    entered: u64,
    depth: u32,
    /// The first malformed/unsupported failure, kept even if `T` swallows it.
    fatal: Option<Failure>,
    /// The body was validated before: skipped strings are not UTF-8-checked again.
    validated: bool,
}

impl<'de> Reader<'de> {
    fn new(body: &'de [u8]) -> Reader<'de> {
        // The limit apache-avro applies (installed by `Codec::new`), so that nothing it refuses
        // is accepted here.
        let limit = apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        Reader { rest: body, limit, entered: 0, depth: 0, fatal: None, validated: false }
    }

    fn fail(&mut self, kind: Kind, message: impl Into<String>) -> Failure {
        let f = Failure::new(kind, message);
        if self.fatal.is_none() {
            self.fatal = Some(f.clone());
        }
        f
    }

    fn malformed(&mut self, message: impl Into<String>) -> Failure {
        self.fail(Kind::Malformed, message)
    }

    fn unsupported(&mut self, message: impl Into<String>) -> Failure {
        self.fail(Kind::Unsupported, message)
    }

    fn enter(&mut self) -> Result<(), Failure> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.unsupported(format!("nesting deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// A zig-zag varint of at most ten bytes, decoded as apache-avro decodes it.
    fn long(&mut self) -> Result<i64, Failure> {
        let mut z = 0u64;
        for (j, &b) in self.rest.iter().enumerate().take(10) {
            z |= u64::from(b & 0x7f) << (j * 7);
            if b & 0x80 == 0 {
                self.rest = &self.rest[j + 1..];
                return Ok(if z & 1 == 0 { (z >> 1) as i64 } else { !(z >> 1) as i64 });
            }
        }
        Err(if self.rest.len() < 10 {
            self.malformed("unexpected end of data in a varint")
        } else {
            self.malformed("varint longer than ten bytes")
        })
    }

    fn int(&mut self) -> Result<i32, Failure> {
        let n = self.long()?;
        i32::try_from(n).map_err(|_| self.malformed(format!("int out of range: {n}")))
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8], Failure> {
        match self.rest.split_at_checked(n) {
            Some((head, rest)) => {
                self.rest = rest;
                Ok(head)
            }
            None => Err(self.malformed(format!(
                "unexpected end of data: {n} bytes needed, {} left",
                self.rest.len()
            ))),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Failure> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn boolean(&mut self) -> Result<bool, Failure> {
        match self.take(1)?.first() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            b => Err(self.malformed(format!("invalid boolean byte {b:?}"))),
        }
    }

    /// A string or bytes length.
    fn len(&mut self) -> Result<usize, Failure> {
        let n = self.long()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.limit => Ok(n),
            Ok(n) => Err(self.malformed(format!(
                "length {n} beyond the allocation limit of {} bytes",
                self.limit
            ))),
            Err(_) => Err(self.malformed(format!("negative length {n}"))),
        }
    }

    fn bytes(&mut self) -> Result<&'de [u8], Failure> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'de str, Failure> {
        let b = self.bytes()?;
        utf8_str(b).map_err(|e| self.malformed(format!("invalid UTF-8: {e}")))
    }

    fn symbol<'s>(&mut self, e: &'s EnumSchema) -> Result<&'s str, Failure> {
        let i = self.int()?;
        match usize::try_from(i).ok().and_then(|i| e.symbols.get(i)) {
            Some(symbol) => Ok(symbol),
            None => Err(self
                .malformed(format!("enum index {i} out of range ({} symbols)", e.symbols.len()))),
        }
    }

    fn branch<'s>(&mut self, u: &'s UnionSchema) -> Result<(usize, &'s Schema), Failure> {
        let i = self.long()?;
        match usize::try_from(i).ok().and_then(|j| Some((j, u.variants().get(j)?))) {
            Some(found) => Ok(found),
            None => Err(self.malformed(format!(
                "union index {i} out of range ({} branches)",
                u.variants().len()
            ))),
        }
    }

    /// The item count of the next block of an array or map (`None` at the terminating empty
    /// block), bounded like apache-avro bounds it: the block within the allocation limit, and the
    /// collection's items so far times `item_size` too. apache-avro counts the distinct keys of a
    /// map; `exact` says `so_far` is that count (else exceeding the limit is unsupported, since
    /// repeated keys could bring the distinct count under it).
    fn block(
        &mut self,
        so_far: usize,
        item_size: usize,
        exact: bool,
    ) -> Result<Option<usize>, Failure> {
        let raw = self.long()?;
        let n = match raw {
            0 => return Ok(None),
            n if n < 0 => {
                let _bytes = self.long()?;
                match n.checked_neg() {
                    Some(n) => n,
                    None => return Err(self.malformed("block count overflows")),
                }
            }
            n => n,
        };
        let n = usize::try_from(n).map_err(|_| self.malformed("block count overflows"))?;
        if n > self.limit {
            return Err(self.malformed(format!(
                "block of {n} items beyond the allocation limit of {} bytes",
                self.limit
            )));
        }
        let within = so_far.checked_add(n).and_then(|t| t.checked_mul(item_size));
        match within {
            Some(bytes) if bytes <= self.limit => Ok(Some(n)),
            _ if exact => Err(self.malformed(format!(
                "{} items beyond the allocation limit of {} bytes",
                so_far.saturating_add(n),
                self.limit
            ))),
            _ => {
                Err(self
                    .unsupported("map entries beyond the allocation limit, counted with repeats"))
            }
        }
    }
}

/// `schema` with `Schema::Ref`s followed, and its enclosing namespace.
fn resolve<'s>(
    r: &mut Reader<'_>,
    names: &'s Names,
    mut schema: &'s Schema,
    mut ns: Option<&'s str>,
) -> Result<(&'s Schema, Option<&'s str>), Failure> {
    while let Schema::Ref { name } = schema {
        schema = match names.lookup(name, ns) {
            Some(target) => target,
            None => return Err(r.unsupported(format!("unknown named type {}", name.fullname(ns)))),
        };
        ns = name.namespace().or(ns);
    }
    Ok((schema, ns))
}

/// Reads one datum of `schema` without building anything, checking all of it.
fn skip(
    r: &mut Reader<'_>,
    names: &Names,
    schema: &Schema,
    ns: Option<&str>,
) -> Result<(), Failure> {
    match schema {
        Schema::Ref { .. } => {
            let (target, ns) = resolve(r, names, schema, ns)?;
            skip(r, names, target, ns)
        }
        Schema::Null => Ok(()),
        Schema::Boolean => r.boolean().map(drop),
        Schema::Int | Schema::Date | Schema::TimeMillis => r.int().map(drop),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => r.long().map(drop),
        Schema::Float => r.take(4).map(drop),
        Schema::Double => r.take(8).map(drop),
        Schema::Bytes => r.bytes().map(drop),
        Schema::String if r.validated => r.bytes().map(drop),
        Schema::String => r.str().map(drop),
        Schema::Fixed(f) => r.take(f.size).map(drop),
        Schema::Enum(e) => r.symbol(e).map(drop),
        Schema::Union(u) => {
            let (_, branch) = r.branch(u)?;
            r.enter()?;
            skip(r, names, branch, ns)?;
            r.leave();
            Ok(())
        }
        Schema::Array(a) => {
            r.enter()?;
            let mut total = 0;
            while let Some(n) = r.block(total, VALUE_SIZE, true)? {
                total += n;
                for _ in 0..n {
                    skip(r, names, &a.items, ns)?;
                }
            }
            r.leave();
            Ok(())
        }
        Schema::Map(m) => {
            r.enter()?;
            let mut total = 0;
            while let Some(n) = r.block(total, MAP_ENTRY_SIZE, total == 0)? {
                total += n;
                for _ in 0..n {
                    r.str()?;
                    skip(r, names, &m.types, ns)?;
                }
            }
            r.leave();
            Ok(())
        }
        Schema::Record(rec) => {
            r.enter()?;
            let inner = rec.name.namespace().or(ns);
            for field in &rec.fields {
                skip(r, names, &field.schema, inner)?;
            }
            r.leave();
            Ok(())
        }
        other => Err(unsupported_schema(r, other)),
    }
}

fn unsupported_schema(r: &mut Reader<'_>, schema: &Schema) -> Failure {
    let what = match schema {
        Schema::Decimal(_) => "decimal",
        Schema::BigDecimal => "big-decimal",
        Schema::Uuid(_) => "uuid",
        Schema::Duration(_) => "duration",
        _ => "this schema",
    };
    r.unsupported(format!("{what} values"))
}

// ---------------------------------------------------------------------------------------------
// The deserializer

/// One datum of `schema` at the reader's position.
struct Datum<'a, 's, 'de> {
    r: &'a mut Reader<'de>,
    schema: &'s Schema,
    names: &'s Names,
    ns: Option<&'s str>,
}

/// A scalar read from the body (containers and unions are not).
enum Scalar<'s, 'de> {
    Null,
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Bytes(&'de [u8]),
    Fixed(&'de [u8]),
    Str(&'de str),
    Symbol(&'s str),
    /// A union, array, map or record (nothing read).
    Composite,
}

impl<'a, 's, 'de> Datum<'a, 's, 'de> {
    /// Runs `f` on this datum with `Ref`s resolved. Whatever `f` does, on success or on a shape
    /// error the reader ends up right after the datum (on a shape error by reading it again from
    /// its start), so that a `T` that recovers from an error reads on from the right place.
    fn run<T>(
        self,
        f: impl for<'b> FnOnce(Datum<'b, 's, 'de>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let Datum { r, schema, names, ns } = self;
        r.entered += 1;
        r.enter()?;
        let start = r.rest;
        let (schema, ns) = resolve(r, names, schema, ns)?;
        match f(Datum { r: &mut *r, schema, names, ns }) {
            Ok(v) => {
                r.leave();
                Ok(v)
            }
            Err(e) if e.kind() == Kind::Shape => {
                r.rest = start;
                skip(r, names, schema, ns)?;
                r.leave();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn sub(&mut self, schema: &'s Schema, ns: Option<&'s str>) -> Datum<'_, 's, 'de> {
        Datum { r: &mut *self.r, schema, names: self.names, ns }
    }

    /// Reads a scalar of the (resolved) schema; `Composite` for the others, unread.
    fn scalar(&mut self) -> Result<Scalar<'s, 'de>, Failure> {
        let r = &mut *self.r;
        Ok(match self.schema {
            Schema::Null => Scalar::Null,
            Schema::Boolean => Scalar::Boolean(r.boolean()?),
            Schema::Int | Schema::Date | Schema::TimeMillis => Scalar::Int(r.int()?),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Scalar::Long(r.long()?),
            Schema::Float => Scalar::Float(f32::from_le_bytes(r.array()?)),
            Schema::Double => Scalar::Double(f64::from_le_bytes(r.array()?)),
            Schema::Bytes => Scalar::Bytes(r.bytes()?),
            Schema::Fixed(f) => Scalar::Fixed(r.take(f.size)?),
            Schema::String => Scalar::Str(r.str()?),
            Schema::Enum(e) => Scalar::Symbol(r.symbol(e)?),
            Schema::Union(_) | Schema::Array(_) | Schema::Map(_) | Schema::Record(_) => {
                Scalar::Composite
            }
            other => return Err(unsupported_schema(r, other)),
        })
    }

    /// The chosen branch of a union (the schema must be one), index read.
    fn branch(self, u: &'s UnionSchema) -> Result<Datum<'a, 's, 'de>, Failure> {
        let (_, branch) = self.r.branch(u)?;
        Ok(Datum { r: self.r, schema: branch, names: self.names, ns: self.ns })
    }

    /// Hands `self` to foreign code; if it did not read the datum, skips it.
    fn hand<T>(
        self,
        f: impl for<'b> FnOnce(Datum<'b, 's, 'de>) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let Datum { r, schema, names, ns } = self;
        let before = r.entered;
        let out = f(Datum { r: &mut *r, schema, names, ns })?;
        if r.entered == before {
            skip(r, names, schema, ns)?;
        }
        Ok(out)
    }

    fn any<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, Failure> {
        match self.schema {
            Schema::Union(u) => self.branch(u)?.deserialize_any(v),
            Schema::Array(a) => self.visit_array(&a.items, v),
            Schema::Map(m) => self.visit_map(&m.types, v),
            Schema::Record(rec) => self.visit_record(rec, v),
            _ => match self.scalar()? {
                Scalar::Null => v.visit_unit(),
                Scalar::Boolean(b) => v.visit_bool(b),
                Scalar::Int(i) => v.visit_i32(i),
                Scalar::Long(i) => v.visit_i64(i),
                Scalar::Float(x) => v.visit_f32(x),
                Scalar::Double(x) => v.visit_f64(x),
                Scalar::Bytes(b) | Scalar::Fixed(b) => v.visit_borrowed_bytes(b),
                Scalar::Str(s) => v.visit_borrowed_str(s),
                Scalar::Symbol(s) => v.visit_str(s),
                Scalar::Composite => Err(shape("a composite read as a scalar")),
            },
        }
    }

    fn visit_array<V: Visitor<'de>>(self, items: &'s Schema, v: V) -> Result<V::Value, Failure> {
        let mut access = ArrayAccess::new(self.r, items, self.names, self.ns)?;
        let out = v.visit_seq(&mut access)?;
        access.finish()?;
        Ok(out)
    }

    fn visit_map<V: Visitor<'de>>(self, values: &'s Schema, v: V) -> Result<V::Value, Failure> {
        let mut access = MapAccess {
            r: self.r,
            values,
            names: self.names,
            ns: self.ns,
            left: 0,
            total: 0,
            done: false,
            pending: None,
            seen: Seen::Few([""; SEEN_FEW], 0),
        };
        let out = v.visit_map(&mut access)?;
        access.finish()?;
        Ok(out)
    }

    fn visit_record<V: Visitor<'de>>(
        self,
        rec: &'s RecordSchema,
        v: V,
    ) -> Result<V::Value, Failure> {
        let mut access = RecordAccess {
            r: self.r,
            fields: &rec.fields,
            names: self.names,
            ns: rec.name.namespace().or(self.ns),
            next: 0,
            pending: false,
        };
        let out = v.visit_map(&mut access)?;
        access.finish()?;
        Ok(out)
    }

    fn wide<V: Visitor<'de>>(mut self, wide: Wide, v: V) -> Result<V::Value, Failure> {
        if let Schema::Union(u) = self.schema {
            let inner = self.branch(u)?;
            return match wide {
                Wide::U64 => de::Deserializer::deserialize_u64(inner, v),
                Wide::I128 => de::Deserializer::deserialize_i128(inner, v),
                Wide::U128 => de::Deserializer::deserialize_u128(inner, v),
            };
        }
        let scalar = self.scalar()?;
        let int = match scalar {
            Scalar::Int(i) => i64::from(i),
            Scalar::Long(i) => i,
            Scalar::Fixed(b) => {
                return match (wide, b.len()) {
                    (Wide::U64, 8) => v.visit_u64(u64::from_le_bytes(b.try_into().unwrap())),
                    (Wide::I128, 16) => v.visit_i128(i128::from_le_bytes(b.try_into().unwrap())),
                    (Wide::U128, 16) => v.visit_u128(u128::from_le_bytes(b.try_into().unwrap())),
                    _ => Err(shape("expected an int, a long or a fixed of the integer's size")),
                }
            }
            _ => return Err(shape("expected an int, a long or a fixed of the integer's size")),
        };
        match wide {
            Wide::U64 => v.visit_u64(
                u64::try_from(int).map_err(|_| shape(format!("{int} does not fit a u64")))?,
            ),
            Wide::I128 => v.visit_i128(i128::from(int)),
            Wide::U128 => v.visit_u128(
                u128::try_from(int).map_err(|_| shape(format!("{int} does not fit a u128")))?,
            ),
        }
    }
}

#[derive(Clone, Copy)]
enum Wide {
    U64,
    I128,
    U128,
}

fn one_char(s: &str) -> Result<char, Failure> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(shape(format!("expected exactly one character, got {} bytes", s.len()))),
    }
}

fn utf8(b: &[u8]) -> Result<&str, Failure> {
    utf8_str(b).map_err(|e| shape(e.to_string()))
}

/// `std::str::from_utf8`, with the valid case checked by SIMD: every string of a record is
/// checked when it is framed and again when it is read, and std's check of a 1 KiB string was
/// ~7 % of the audit chain's engine thread (docs/performance.md). An invalid string is checked
/// again by std, for its error (the position in the message).
pub(crate) fn utf8_str(b: &[u8]) -> Result<&str, std::str::Utf8Error> {
    match simdutf8::basic::from_utf8(b) {
        Ok(s) => Ok(s),
        Err(_) => std::str::from_utf8(b),
    }
}

impl<'de> de::Deserializer<'de> for Datum<'_, '_, 'de> {
    type Error = Failure;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|d| d.any(v))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 u8 u16 u32 f32 f64
    }

    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|d| d.wide(Wide::U64, v))
    }

    fn deserialize_i128<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|d| d.wide(Wide::I128, v))
    }

    fn deserialize_u128<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|d| d.wide(Wide::U128, v))
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|mut d| match d.schema {
            Schema::Union(u) => d.branch(u)?.deserialize_char(v),
            _ => match d.scalar()? {
                Scalar::Str(s) => v.visit_char(one_char(s)?),
                Scalar::Bytes(b) => v.visit_char(one_char(utf8(b)?)?),
                Scalar::Fixed(b) if b.len() == 4 => {
                    let code = u32::from_le_bytes(b.try_into().unwrap());
                    v.visit_char(char::from_u32(code).ok_or_else(|| shape("invalid char"))?)
                }
                _ => Err(shape("expected a string, bytes or a fixed(4) for a char")),
            },
        })
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|mut d| match d.schema {
            Schema::Union(u) => d.branch(u)?.deserialize_str(v),
            _ => match d.scalar()? {
                Scalar::Str(s) => v.visit_borrowed_str(s),
                Scalar::Bytes(b) | Scalar::Fixed(b) => v.visit_borrowed_str(utf8(b)?),
                _ => Err(shape("expected a string, bytes or a fixed")),
            },
        })
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|mut d| match d.schema {
            Schema::Union(u) => d.branch(u)?.deserialize_string(v),
            _ => match d.scalar()? {
                Scalar::Str(s) => v.visit_borrowed_str(s),
                Scalar::Symbol(s) => v.visit_str(s),
                Scalar::Bytes(b) | Scalar::Fixed(b) => v.visit_borrowed_str(utf8(b)?),
                _ => Err(shape("expected a string, an enum, bytes or a fixed")),
            },
        })
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|mut d| match d.scalar()? {
            Scalar::Str(s) => v.visit_bytes(s.as_bytes()),
            Scalar::Bytes(b) | Scalar::Fixed(b) => v.visit_borrowed_bytes(b),
            _ => Err(shape("expected bytes, a fixed or a string")),
        })
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|mut d| match d.scalar()? {
            Scalar::Str(s) => v.visit_byte_buf(s.as_bytes().to_vec()),
            Scalar::Bytes(b) | Scalar::Fixed(b) => v.visit_byte_buf(b.to_vec()),
            _ => Err(shape("expected bytes, a fixed or a string")),
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|d| match d.schema {
            Schema::Union(u) => {
                let inner = d.branch(u)?;
                let (branch, _) = resolve(inner.r, inner.names, inner.schema, inner.ns)?;
                if matches!(branch, Schema::Null) {
                    v.visit_none()
                } else {
                    inner.hand(|d| v.visit_some(d))
                }
            }
            _ => Err(shape("expected a union for an Option")),
        })
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|d| match d.schema {
            Schema::Null => v.visit_unit(),
            Schema::Union(u) => d.branch(u)?.deserialize_unit(v),
            _ => Err(shape("expected null")),
        })
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Failure> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Failure> {
        self.hand(|d| v.visit_newtype_struct(d))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|d| match d.schema {
            Schema::Array(a) => d.visit_array(&a.items, v),
            Schema::Union(u) => {
                let mut inner = d.branch(u)?;
                let (branch, ns) = resolve(inner.r, inner.names, inner.schema, inner.ns)?;
                match branch {
                    Schema::Array(a) => inner.sub(branch, ns).visit_array(&a.items, v),
                    Schema::Null => v.visit_seq(NoFields),
                    _ => Err(shape("expected an array or null")),
                }
            }
            _ => Err(shape("expected an array or a union")),
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, Failure> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, Failure> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|d| match d.schema {
            Schema::Map(m) => d.visit_map(&m.types, v),
            Schema::Record(rec) => d.visit_record(rec, v),
            _ => Err(shape("expected a record or a map")),
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Failure> {
        self.run(|d| match d.schema {
            Schema::Record(rec) => d.visit_record(rec, v),
            Schema::Union(u) => {
                let mut inner = d.branch(u)?;
                let (branch, ns) = resolve(inner.r, inner.names, inner.schema, inner.ns)?;
                match branch {
                    Schema::Record(rec) => inner.sub(branch, ns).visit_record(rec, v),
                    Schema::Null => v.visit_map(NoFields),
                    _ => Err(shape("expected a record or null")),
                }
            }
            _ => Err(shape("expected a record or a union")),
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Failure> {
        self.run(|mut d| match d.schema {
            Schema::Record(_) => Err(d.r.unsupported("a record read as an enum")),
            Schema::Union(u) => {
                let (i, schema) = d.r.branch(u)?;
                let Some(&name) = variants.get(i) else {
                    return Err(shape(format!(
                        "union branch {i} has no variant ({} variants)",
                        variants.len()
                    )));
                };
                let (r, names, ns) = (d.r, d.names, d.ns);
                let before = r.entered;
                let out = v.visit_enum(UnionVariant {
                    name,
                    datum: Datum { r: &mut *r, schema, names, ns },
                })?;
                if r.entered == before {
                    skip(r, names, schema, ns)?;
                }
                Ok(out)
            }
            _ => match d.scalar()? {
                Scalar::Str(s) => v.visit_enum(UnitVariant(s)),
                Scalar::Symbol(s) => v.visit_enum(UnitVariant(s)),
                _ => Err(shape("expected an enum, a string or a union")),
            },
        })
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.deserialize_str(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        self.run(|d| {
            skip(d.r, d.names, d.schema, d.ns)?;
            v.visit_unit()
        })
    }

    fn is_human_readable(&self) -> bool {
        // apache-avro's setting (settled on first use, false unless a program set it).
        apache_avro::util::set_serde_human_readable(apache_avro::util::DEFAULT_SERDE_HUMAN_READABLE)
    }
}

// ---------------------------------------------------------------------------------------------
// Accesses

/// A name or key: every hint is `visit_str` (`visit_borrowed_str` for keys from the body).
struct Name<'x, const BORROWED: bool>(&'x str);

impl<'de> de::Deserializer<'de> for Name<'_, false> {
    type Error = Failure;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        v.visit_str(self.0)
    }

    forward_to_deserialize_any! {
        bool u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 char str string unit option
        seq bytes byte_buf map unit_struct newtype_struct
        tuple_struct struct tuple enum identifier ignored_any
    }
}

impl<'de> de::Deserializer<'de> for Name<'de, true> {
    type Error = Failure;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Failure> {
        v.visit_borrowed_str(self.0)
    }

    forward_to_deserialize_any! {
        bool u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 char str string unit option
        seq bytes byte_buf map unit_struct newtype_struct
        tuple_struct struct tuple enum identifier ignored_any
    }
}

struct RecordAccess<'a, 's, 'de> {
    r: &'a mut Reader<'de>,
    fields: &'s [RecordField],
    names: &'s Names,
    ns: Option<&'s str>,
    next: usize,
    /// The key of `fields[next - 1]` was handed out, its value not yet.
    pending: bool,
}

impl<'s> RecordAccess<'_, 's, '_> {
    fn skip_pending(&mut self) -> Result<(), Failure> {
        if std::mem::take(&mut self.pending) {
            let field = &self.fields[self.next - 1];
            skip(self.r, self.names, &field.schema, self.ns)
                .map_err(|e| e.at(Seg::Field(field.name.clone())))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Failure> {
        self.skip_pending()?;
        while self.next < self.fields.len() {
            self.next += 1;
            self.pending = true;
            self.skip_pending()?;
        }
        Ok(())
    }
}

impl<'de> de::MapAccess<'de> for RecordAccess<'_, '_, 'de> {
    type Error = Failure;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Failure> {
        self.skip_pending()?;
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        self.pending = true;
        seed.deserialize(Name::<false>(&field.name)).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Failure> {
        if !std::mem::take(&mut self.pending) {
            return Err(shape("a record value asked for before its field name"));
        }
        let field = &self.fields[self.next - 1];
        let datum =
            Datum { r: &mut *self.r, schema: &field.schema, names: self.names, ns: self.ns };
        datum.hand(|d| seed.deserialize(d)).map_err(|e| e.at(Seg::Field(field.name.clone())))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len() - self.next)
    }
}

/// The fields of the null branch of a union read as a struct, or its items read as a sequence:
/// none.
struct NoFields;

impl<'de> de::SeqAccess<'de> for NoFields {
    type Error = Failure;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        _: S,
    ) -> Result<Option<S::Value>, Failure> {
        Ok(None)
    }
}

impl<'de> de::MapAccess<'de> for NoFields {
    type Error = Failure;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        _: K,
    ) -> Result<Option<K::Value>, Failure> {
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, _: S) -> Result<S::Value, Failure> {
        Err(shape("a value asked for from an empty record"))
    }
}

struct ArrayAccess<'a, 's, 'de> {
    r: &'a mut Reader<'de>,
    items: &'s Schema,
    names: &'s Names,
    ns: Option<&'s str>,
    /// Items left in the current block.
    left: usize,
    /// Items in the blocks read so far.
    total: usize,
    done: bool,
}

impl<'a, 's, 'de> ArrayAccess<'a, 's, 'de> {
    fn new(
        r: &'a mut Reader<'de>,
        items: &'s Schema,
        names: &'s Names,
        ns: Option<&'s str>,
    ) -> Result<Self, Failure> {
        let mut access = ArrayAccess { r, items, names, ns, left: 0, total: 0, done: false };
        access.refill()?;
        Ok(access)
    }

    /// Reads block headers until an item or the end: `false` at the end.
    fn refill(&mut self) -> Result<bool, Failure> {
        if self.left == 0 && !self.done {
            match self.r.block(self.total, VALUE_SIZE, true)? {
                Some(n) => {
                    self.left = n;
                    self.total += n;
                }
                None => self.done = true,
            }
        }
        Ok(self.left > 0)
    }

    fn finish(&mut self) -> Result<(), Failure> {
        while self.refill()? {
            let index = self.total - self.left;
            self.left -= 1;
            skip(self.r, self.names, self.items, self.ns).map_err(|e| e.at(Seg::Index(index)))?;
        }
        Ok(())
    }
}

impl<'de> de::SeqAccess<'de> for ArrayAccess<'_, '_, 'de> {
    type Error = Failure;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Failure> {
        if !self.refill()? {
            return Ok(None);
        }
        let index = self.total - self.left;
        self.left -= 1;
        let datum = Datum { r: &mut *self.r, schema: self.items, names: self.names, ns: self.ns };
        datum.hand(|d| seed.deserialize(d)).map(Some).map_err(|e| e.at(Seg::Index(index)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

const SEEN_FEW: usize = 8;

/// The keys of a map read so far (on the stack for small maps).
enum Seen<'de> {
    Few([&'de str; SEEN_FEW], usize),
    Many(HashSet<&'de str>),
}

impl<'de> Seen<'de> {
    /// `false` when `key` was seen before.
    fn insert(&mut self, key: &'de str) -> bool {
        match self {
            Seen::Few(keys, n) => {
                if keys[..*n].contains(&key) {
                    return false;
                }
                if *n < SEEN_FEW {
                    keys[*n] = key;
                    *n += 1;
                } else {
                    let mut set: HashSet<&'de str> = keys.iter().copied().collect();
                    set.insert(key);
                    *self = Seen::Many(set);
                }
                true
            }
            Seen::Many(set) => set.insert(key),
        }
    }
}

struct MapAccess<'a, 's, 'de> {
    r: &'a mut Reader<'de>,
    values: &'s Schema,
    names: &'s Names,
    ns: Option<&'s str>,
    left: usize,
    total: usize,
    done: bool,
    /// The key whose value was not handed out yet.
    pending: Option<&'de str>,
    seen: Seen<'de>,
}

impl<'de> MapAccess<'_, '_, 'de> {
    fn skip_pending(&mut self) -> Result<(), Failure> {
        if let Some(key) = self.pending.take() {
            skip(self.r, self.names, self.values, self.ns)
                .map_err(|e| e.at(Seg::Key(key.to_string())))?;
        }
        Ok(())
    }

    /// The next key, or `None` at the end. Keys are distinct until then (else unsupported), so
    /// the item count is apache-avro's distinct-key count.
    fn key(&mut self, check_repeats: bool) -> Result<Option<&'de str>, Failure> {
        self.skip_pending()?;
        if self.left == 0 {
            if self.done {
                return Ok(None);
            }
            match self.r.block(self.total, MAP_ENTRY_SIZE, check_repeats || self.total == 0)? {
                Some(n) => {
                    self.left = n;
                    self.total += n;
                }
                None => {
                    self.done = true;
                    return Ok(None);
                }
            }
        }
        self.left -= 1;
        let key = self.r.str()?;
        if check_repeats && !self.seen.insert(key) {
            return Err(self.r.unsupported(format!("map key {key:?} repeated")));
        }
        self.pending = Some(key);
        Ok(Some(key))
    }

    fn finish(&mut self) -> Result<(), Failure> {
        while self.key(false)?.is_some() {}
        self.skip_pending()
    }
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_, 'de> {
    type Error = Failure;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Failure> {
        match self.key(true)? {
            Some(key) => seed.deserialize(Name::<true>(key)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Failure> {
        let Some(key) = self.pending.take() else {
            return Err(shape("a map value asked for before its key"));
        };
        let datum = Datum { r: &mut *self.r, schema: self.values, names: self.names, ns: self.ns };
        datum.hand(|d| seed.deserialize(d)).map_err(|e| e.at(Seg::Key(key.to_string())))
    }
}

/// An Avro enum symbol or a string read as a serde enum: unit variants only.
struct UnitVariant<'x>(&'x str);

impl<'de> de::EnumAccess<'de> for UnitVariant<'_> {
    type Error = Failure;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Failure> {
        Ok((seed.deserialize(Name::<false>(self.0))?, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant<'_> {
    type Error = Failure;

    fn unit_variant(self) -> Result<(), Failure> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, _: S) -> Result<S::Value, Failure> {
        Err(shape("unexpected newtype variant"))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Failure> {
        Err(shape("unexpected tuple variant"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Failure> {
        Err(shape("unexpected struct variant"))
    }
}

/// A union read as a serde enum: the variant at the branch index, its data the branch's datum.
struct UnionVariant<'a, 's, 'de> {
    name: &'static str,
    datum: Datum<'a, 's, 'de>,
}

impl<'de> de::EnumAccess<'de> for UnionVariant<'_, '_, 'de> {
    type Error = Failure;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Failure> {
        Ok((seed.deserialize(Name::<false>(self.name))?, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnionVariant<'_, '_, 'de> {
    type Error = Failure;

    fn unit_variant(self) -> Result<(), Failure> {
        let Datum { r, schema, names, ns } = self.datum;
        let (schema, _) = resolve(r, names, schema, ns)?;
        r.entered += 1;
        match schema {
            Schema::Null => Ok(()),
            _ => Err(shape("expected null for a unit variant")),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Failure> {
        seed.deserialize(self.datum)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Failure> {
        de::Deserializer::deserialize_tuple(self.datum, len, v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Failure> {
        de::Deserializer::deserialize_struct(self.datum, "", fields, v)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::fmt::Debug;

    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde::de::IgnoredAny;
    use serde::{Deserialize, Deserializer};

    use super::*;
    use crate::codec::value::conform;
    use crate::codec::writer::tests::random_value;
    use crate::codec::writer::{write_long, write_value};
    use crate::codec::{Codec, SchemaStore};

    /// Installs the process-wide allocation limit before apache-avro first reads it.
    fn init() -> SchemaStore {
        let store = SchemaStore::bundled().unwrap();
        let _codec = Codec::new(store.clone(), None).unwrap();
        store
    }

    /// The codec's strict apache-avro decoding (nothing read past the end, nothing left over).
    fn apache(schema: &Schema, body: &[u8]) -> Option<Value> {
        super::super::read_datum(schema, "test", body).ok()
    }

    fn encode(schema: &Schema, names: &Names, raw: &Value) -> (Value, Vec<u8>) {
        let v = conform(schema, names, raw).expect("generated values conform");
        let mut bytes = Vec::new();
        write_value(&mut bytes, &v).unwrap();
        (v, bytes)
    }

    /// `from_slice::<T>` against `apache_avro::from_value::<T>` of apache-avro's value: both
    /// `Ok` and equal, or both errors (ours a shape error). Returns whether they were `Ok`.
    macro_rules! same {
        ($t:ty, $schema:expr, $names:expr, $body:expr, $value:expr) => {{
            let ours = from_slice::<$t>($schema, $names, $body);
            let theirs = apache_avro::from_value::<$t>($value);
            match (ours, theirs) {
                (Ok(a), Ok(b)) => {
                    // Debug forms where `==` cannot tell (NaN).
                    if a != b {
                        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{}", stringify!($t));
                    }
                    true
                }
                (Err(DeError::Shape(_)), Err(_)) => false,
                (ours, theirs) => panic!(
                    "{}: ours {ours:?}, apache-avro's {theirs:?}, value {:?}",
                    stringify!($t),
                    $value
                ),
            }
        }};
    }

    use crate::codec::writer::tests::damage;

    /// Every bundled schema version, random values: into `serde_json::Value` (deserialize_any
    /// everywhere) the same as through apache-avro's `Value`; `IgnoredAny` accepts them.
    #[test]
    fn every_bundled_schema_reads_like_from_value() {
        let store = init();
        let mut checked = 0;
        for stored in store.entries() {
            let (schema, names) = (stored.schema(), &stored.names);
            let mut rng = StdRng::seed_from_u64(stored.fingerprint() ^ 0xde);
            let has_bytes = format!("{schema:?}").contains("Bytes");
            for _ in 0..300 {
                let (v, bytes) = encode(schema, names, &random_value(&mut rng, names, schema));
                assert_eq!(apache(schema, &bytes).as_ref(), Some(&v), "{}", stored.full_name());
                let fits = same!(serde_json::Value, schema, names, &bytes, &v);
                // serde_json has no bytes; every other value fits.
                assert!(fits || has_bytes, "{}", stored.full_name());
                assert_eq!(from_slice::<IgnoredAny>(schema, names, &bytes), Ok(IgnoredAny));
                checked += 1;
            }
        }
        assert!(checked >= 300 * 14, "{checked}");
    }

    /// Damaged bodies of every bundled schema: `IgnoredAny` errs (as malformed) exactly when
    /// apache-avro's decoding does; `serde_json::Value` likewise, and agrees when both read.
    #[test]
    fn validates_exactly_like_apache_avro() {
        let store = init();
        let (mut bad, mut total) = (0, 0);
        for stored in store.entries() {
            let (schema, names) = (stored.schema(), &stored.names);
            let mut rng = StdRng::seed_from_u64(stored.fingerprint() ^ 0xbad);
            for _ in 0..300 {
                let (_, bytes) = encode(schema, names, &random_value(&mut rng, names, schema));
                for _ in 0..6 {
                    let damaged = damage(&mut rng, &bytes);
                    let expected = apache(schema, &damaged);
                    let ignored = from_slice::<IgnoredAny>(schema, names, &damaged);
                    let json = from_slice::<serde_json::Value>(schema, names, &damaged);
                    total += 1;
                    match &expected {
                        None => {
                            bad += 1;
                            assert!(
                                matches!(ignored, Err(DeError::Malformed(_))),
                                "{}: {ignored:?} {damaged:?}",
                                stored.full_name()
                            );
                            assert!(matches!(json, Err(DeError::Malformed(_))), "{json:?}");
                        }
                        Some(v) => {
                            assert_eq!(
                                ignored,
                                Ok(IgnoredAny),
                                "{} {damaged:?}",
                                stored.full_name()
                            );
                            match json {
                                // A flipped bit can repeat a map key: the Value path decides.
                                Err(DeError::Unsupported(_)) => {}
                                _ => {
                                    same!(serde_json::Value, schema, names, &damaged, v);
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(bad * 4 >= total && bad < total, "{bad} of {total}");
    }

    const EVERYTHING: &str = r#"{"type": "record", "name": "Everything", "namespace": "t", "fields": [
        {"name": "s", "type": "string"},
        {"name": "l", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "d", "type": "double"},
        {"name": "f", "type": "float"},
        {"name": "b", "type": "boolean"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "raw", "type": "bytes"},
        {"name": "opt_raw", "type": ["null", "bytes"]},
        {"name": "opt_s", "type": ["null", "string"]},
        {"name": "opt_inner", "type": ["null", {"type": "record", "name": "Inner", "fields": [
            {"name": "n", "type": "int"}, {"name": "tag", "type": "string"}]}]},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["red", "dark_blue"]}},
        {"name": "colors", "type": {"type": "array", "items": "Color"}},
        {"name": "counts", "type": {"type": "map", "values": "long"}},
        {"name": "inners", "type": {"type": "array", "items": "Inner"}},
        {"name": "extra", "type": {"type": "map", "values": {"type": "array", "items": "string"}}},
        {"name": "fx", "type": {"type": "fixed", "name": "F8", "size": 8}},
        {"name": "either", "type": ["null", "long", "string"]},
        {"name": "nothing", "type": "null"}
    ]}"#;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Color {
        Red,
        DarkBlue,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner {
        n: i32,
        tag: String,
    }

    /// Every field, in the mapping of `crate::record`.
    #[derive(Debug, PartialEq, Deserialize)]
    struct Full {
        s: String,
        l: i64,
        i: i32,
        d: f64,
        f: f32,
        b: bool,
        ts: i64,
        #[serde(with = "apache_avro::serde::bytes")]
        raw: Vec<u8>,
        #[serde(with = "apache_avro::serde::bytes_opt")]
        opt_raw: Option<Vec<u8>>,
        opt_s: Option<String>,
        opt_inner: Option<Inner>,
        color: Color,
        colors: Vec<Color>,
        counts: BTreeMap<String, i64>,
        inners: Vec<Inner>,
        extra: BTreeMap<String, Vec<String>>,
        fx: u64,
        either: serde_json::Value,
        nothing: (),
    }

    /// A few fields, unknown ones ignored, defaults for fields the schema lacks, borrowed text.
    #[derive(Debug, PartialEq, Deserialize)]
    struct Partial<'a> {
        #[serde(borrow)]
        s: &'a str,
        #[serde(borrow)]
        opt_s: Option<&'a str>,
        color: String,
        #[serde(default)]
        absent: i64,
        absent_opt: Option<i64>,
        inners: Vec<serde_json::Value>,
        i: i64,
        l: i128,
        f: f64,
        opt_inner: serde_json::Value,
        counts: IgnoredAnyEq,
    }

    #[derive(Debug, Deserialize)]
    struct IgnoredAnyEq(#[allow(dead_code)] IgnoredAny);

    impl PartialEq for IgnoredAnyEq {
        fn eq(&self, _: &Self) -> bool {
            true
        }
    }

    /// Mismatches of every kind (some fail only for some values).
    #[derive(Debug, PartialEq, Deserialize)]
    struct WrongText {
        s: i64,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct NotAUnion {
        l: Option<i64>,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct UnionLookThrough {
        opt_s: String,
        either: Option<i64>,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct BytesAsSeq {
        raw: Vec<u8>,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct EnumAsStr<'a> {
        #[serde(borrow)]
        color: &'a str,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct MissingField {
        no_such_field: String,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct NarrowInt {
        i: i8,
        l: u64,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct UnionAsEnum {
        either: Either,
        opt_inner: Option<Inner>,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    enum Either {
        Nothing,
        Long(i64),
        Text(i64),
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct MapAsStruct {
        counts: Inner,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct StructOfNull {
        opt_inner: InnerDefaults,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct InnerDefaults {
        #[serde(default)]
        n: i32,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct SeqOfUnion {
        opt_raw: Vec<u8>,
        colors: (Color, Color),
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct Lenient {
        #[serde(deserialize_with = "zero_on_error")]
        s: i64,
        #[serde(deserialize_with = "zero_on_error")]
        inners: i64,
        l: i64,
        fx: u64,
        nothing: (),
    }

    fn zero_on_error<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        Ok(i64::deserialize(d).unwrap_or(0))
    }

    /// Everything the processors' types use, and what they get wrong, against `from_value` over
    /// random values of a schema with every kind of field.
    #[test]
    fn typed_structs_read_like_from_value() {
        init();
        let schema = Schema::parse_str(EVERYTHING).unwrap();
        let names = Names::of(&schema);
        let mut rng = StdRng::seed_from_u64(42);
        let mut ok: HashMap<&str, usize> = HashMap::new();
        for _ in 0..400 {
            let (v, bytes) = encode(&schema, &names, &random_value(&mut rng, &names, &schema));
            let mut count = |name: &'static str, was_ok: bool| {
                *ok.entry(name).or_default() += usize::from(was_ok)
            };
            count("Full", same!(Full, &schema, &names, &bytes, &v));
            count("Partial", same!(Partial, &schema, &names, &bytes, &v));
            count("json", same!(serde_json::Value, &schema, &names, &bytes, &v));
            count("WrongText", same!(WrongText, &schema, &names, &bytes, &v));
            count("NotAUnion", same!(NotAUnion, &schema, &names, &bytes, &v));
            count("UnionLookThrough", same!(UnionLookThrough, &schema, &names, &bytes, &v));
            count("BytesAsSeq", same!(BytesAsSeq, &schema, &names, &bytes, &v));
            count("EnumAsStr", same!(EnumAsStr, &schema, &names, &bytes, &v));
            count("MissingField", same!(MissingField, &schema, &names, &bytes, &v));
            count("NarrowInt", same!(NarrowInt, &schema, &names, &bytes, &v));
            count("UnionAsEnum", same!(UnionAsEnum, &schema, &names, &bytes, &v));
            count("MapAsStruct", same!(MapAsStruct, &schema, &names, &bytes, &v));
            count("StructOfNull", same!(StructOfNull, &schema, &names, &bytes, &v));
            count("SeqOfUnion", same!(SeqOfUnion, &schema, &names, &bytes, &v));
            count("Lenient", same!(Lenient, &schema, &names, &bytes, &v));
            count("map", same!(HashMap<String, serde_json::Value>, &schema, &names, &bytes, &v));
            count("tuple", same!((String, i64), &schema, &names, &bytes, &v));
            count("string", same!(String, &schema, &names, &bytes, &v));
            count("ignored", same!(IgnoredAnyEq, &schema, &names, &bytes, &v));
            for _ in 0..4 {
                let damaged = damage(&mut rng, &bytes);
                let full = from_slice::<Full>(&schema, &names, &damaged);
                let ignored = from_slice::<IgnoredAny>(&schema, &names, &damaged);
                match apache(&schema, &damaged) {
                    None => {
                        assert!(matches!(full, Err(DeError::Malformed(_))), "{full:?}");
                        assert!(matches!(ignored, Err(DeError::Malformed(_))), "{ignored:?}");
                    }
                    Some(v) => {
                        assert_eq!(ignored, Ok(IgnoredAny));
                        if !matches!(full, Err(DeError::Unsupported(_))) {
                            same!(Full, &schema, &names, &damaged, &v);
                            same!(Partial, &schema, &names, &damaged, &v);
                            same!(Lenient, &schema, &names, &damaged, &v);
                        }
                    }
                }
            }
        }
        // Values that fit, and mismatches that fail always or only for some values.
        let always = ["Full", "Partial", "StructOfNull", "Lenient", "ignored"];
        for name in always {
            assert_eq!(ok[name], 400, "{name}: {ok:?}");
        }
        for name in ["UnionLookThrough", "NarrowInt", "UnionAsEnum", "SeqOfUnion"] {
            assert!(ok[name] > 0 && ok[name] < 400, "{name}: {ok:?}");
        }
        let never = ["WrongText", "NotAUnion", "BytesAsSeq", "EnumAsStr", "MissingField"];
        // serde_json has no bytes: `raw` fails the two whole-record JSON reads.
        for name in never.into_iter().chain(["MapAsStruct", "tuple", "string", "json", "map"]) {
            assert_eq!(ok[name], 0, "{name}: {ok:?}");
        }
    }

    /// The error names the field path.
    #[test]
    fn shape_errors_name_the_field_path() {
        init();
        let schema = Schema::parse_str(EVERYTHING).unwrap();
        let names = Names::of(&schema);
        let mut rng = StdRng::seed_from_u64(3);
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct BadInner {
            inners: Vec<WrongTag>,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct WrongTag {
            tag: i64,
        }
        loop {
            let (_, bytes) = encode(&schema, &names, &random_value(&mut rng, &names, &schema));
            match from_slice::<BadInner>(&schema, &names, &bytes) {
                Ok(_) => continue,
                Err(DeError::Shape(m)) => {
                    assert!(m.starts_with("inners[0].tag: invalid type"), "{m}");
                    break;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    /// The reference processor's input type against every version of its schema.
    #[derive(Debug, PartialEq, Deserialize)]
    struct TotalsInput {
        key: String,
        amount: i64,
        #[serde(default)]
        payload: String,
    }

    #[test]
    fn totals_input_reads_every_version() {
        let store = init();
        let mut versions = 0;
        for stored in store.entries().filter(|s| s.full_name() == "evalstream.runtime.TotalsInput")
        {
            let (schema, names) = (stored.schema(), &stored.names);
            let mut rng = StdRng::seed_from_u64(stored.fingerprint());
            for _ in 0..100 {
                let (v, bytes) = encode(schema, names, &random_value(&mut rng, names, schema));
                assert!(same!(TotalsInput, schema, names, &bytes, &v));
            }
            versions += 1;
        }
        assert!(versions >= 2, "{versions}");
        // And a known record, borrowed.
        let stored = store.current("evalstream.runtime.TotalsInput").unwrap();
        let mut body = Vec::new();
        crate::codec::writer::write_bytes(&mut body, b"k1");
        write_long(&mut body, -5);
        crate::codec::writer::write_bytes(&mut body, b"pad");
        #[derive(Debug, PartialEq, Deserialize)]
        struct Borrowed<'a> {
            key: &'a str,
            payload: &'a str,
        }
        let got: Borrowed = from_slice(stored.schema(), &stored.names, &body).unwrap();
        assert_eq!(got, Borrowed { key: "k1", payload: "pad" });
        assert!(std::ptr::eq(got.key.as_ptr(), body[1..].as_ptr()), "zero-copy");
        let typed: TotalsInput = from_slice(stored.schema(), &stored.names, &body).unwrap();
        assert_eq!(typed, TotalsInput { key: "k1".into(), amount: -5, payload: "pad".into() });
    }

    /// Each kind of malformed body, next to apache-avro's verdict.
    #[test]
    fn refuses_what_apache_avro_refuses() {
        init();
        let names = Names::default();
        let mut huge = Vec::new();
        write_long(&mut huge, 200_000_000);
        huge.push(0);
        let union = Schema::parse_str(r#"["null", "long"]"#).unwrap();
        let color =
            Schema::parse_str(r#"{"type": "enum", "name": "C", "symbols": ["a"]}"#).unwrap();
        let nulls = Schema::array(Schema::Null).build();
        let strings = Schema::map(Schema::String).build();
        let cases: Vec<(&Schema, Vec<u8>)> = vec![
            (&nulls, huge.clone()),
            (&strings, huge),
            (&Schema::Long, vec![0xff; 11]),
            (&Schema::Long, vec![0xff; 3]),
            (&Schema::Int, vec![0xfe, 0xff, 0xff, 0xff, 0x1f]),
            (&Schema::String, vec![0x08, b'a']),
            (&Schema::String, vec![0x02, 0xff]),
            (&Schema::String, vec![0x01]),
            (&Schema::Boolean, vec![2]),
            (&Schema::Boolean, vec![]),
            (&union, vec![4, 0]),
            (&union, vec![1]),
            (&union, vec![]),
            (&color, vec![2]),
            (&color, vec![1]),
            (&Schema::Null, vec![0]),
            (&Schema::Double, vec![0; 7]),
            (&nulls, vec![1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 0]),
        ];
        for (schema, body) in cases {
            assert_eq!(apache(schema, &body), None, "{schema:?} {body:?}");
            let got = from_slice::<IgnoredAny>(schema, &names, &body);
            assert!(matches!(got, Err(DeError::Malformed(_))), "{schema:?} {body:?}: {got:?}");
            let got = from_slice::<serde_json::Value>(schema, &names, &body);
            assert!(matches!(got, Err(DeError::Malformed(_))), "{schema:?} {body:?}: {got:?}");
        }
        // A body that is fine but has a byte left over.
        assert_eq!(
            from_slice::<i64>(&Schema::Long, &names, &[2, 0]),
            Err(DeError::Malformed(left_over(1)))
        );
        assert_eq!(from_slice::<i64>(&Schema::Long, &names, &[3]), Ok(-2));
        // Negative block counts carry a byte size.
        let ints = Schema::array(Schema::Int).build();
        assert_eq!(from_slice::<Vec<i32>>(&ints, &names, &[3, 4, 2, 4, 0]), Ok(vec![1, 2]));
        // A shape error on a malformed body is reported as malformed.
        assert!(matches!(
            from_slice::<String>(&Schema::Long, &names, &[0xff]),
            Err(DeError::Malformed(_))
        ));
        assert!(matches!(
            from_slice::<String>(&Schema::Long, &names, &[2]),
            Err(DeError::Shape(_))
        ));
    }

    #[test]
    fn declines_what_it_does_not_read() {
        init();
        let names = Names::default();
        let uuid = Schema::parse_str(r#"{"type": "string", "logicalType": "uuid"}"#).unwrap();
        let mut body = Vec::new();
        crate::codec::writer::write_bytes(&mut body, b"00000000-0000-0000-0000-000000000000");
        assert!(apache(&uuid, &body).is_some());
        assert!(matches!(
            from_slice::<IgnoredAny>(&uuid, &names, &body),
            Err(DeError::Unsupported(_))
        ));
        // A map with a repeated key: valid, collapsed by the Value path, declined here except
        // when only validating.
        let longs = Schema::map(Schema::Long).build();
        let mut body = Vec::new();
        write_long(&mut body, 2);
        crate::codec::writer::write_bytes(&mut body, b"k");
        write_long(&mut body, 1);
        crate::codec::writer::write_bytes(&mut body, b"k");
        write_long(&mut body, 2);
        body.push(0);
        let v = apache(&longs, &body).unwrap();
        assert_eq!(v, Value::Map(HashMap::from([("k".to_string(), Value::Long(2))])));
        assert_eq!(from_slice::<IgnoredAny>(&longs, &names, &body), Ok(IgnoredAny));
        assert!(matches!(
            from_slice::<HashMap<String, i64>>(&longs, &names, &body),
            Err(DeError::Unsupported(_))
        ));
        // A record read as a serde enum.
        let rec = Schema::parse_str(
            r#"{"type": "record", "name": "R", "fields": [{"name": "type", "type": "string"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            from_slice::<Either>(&rec, &names, &[2, b'x']),
            Err(DeError::Unsupported(_))
        ));
    }

    /// A recursive schema nested far deeper than any record: declined, not a stack overflow;
    /// at a modest depth, read like apache-avro.
    #[test]
    fn deep_nesting_is_declined() {
        init();
        let list = Schema::parse_str(
            r#"{"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}]}"#,
        )
        .unwrap();
        let names = Names::of(&list);
        let body = [vec![2u8; 10], vec![0]].concat();
        let v = apache(&list, &body).unwrap();
        same!(serde_json::Value, &list, &names, &body, &v);
        let deep = [vec![2u8; 100_000], vec![0]].concat();
        assert!(matches!(
            from_slice::<IgnoredAny>(&list, &names, &deep),
            Err(DeError::Unsupported(_))
        ));
        assert!(matches!(
            from_slice::<serde_json::Value>(&list, &names, &deep),
            Err(DeError::Unsupported(_))
        ));
    }
}
