//! Avro values: strict conformance to a schema, the friendly JSON form, and example values.
//!
//! Why our own walker instead of `Value::resolve`: resolution is made for *reading* old data
//! (an unknown enum symbol silently becomes the enum's default, extra record fields are
//! dropped). For *writing* that would hide bugs and typos, so [`conform`] is strict: unknown
//! fields and symbols are errors, and every error names the field path (`resource.gpu_count`,
//! `reasons[2]`, `labels["team"]`) so a bad line of an events file can be fixed at once.
//!
//! The JSON form (see `schemas/README.md`) is plain JSON: unions take the plain value (or the
//! Avro-JSON `{"type": value}` wrapper), enums are symbol strings, bytes are
//! `{"base64": "..."}` (or a UTF-8 string on input), timestamps are integers (or RFC 3339
//! strings on input). [`avro_to_json`] always produces the canonical shape, so
//! JSON → Avro → JSON is a fixed point.

use std::collections::HashMap;
use std::fmt;

use apache_avro::schema::{Name, RecordSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::Value as Json;

use super::error::CodecError;
use crate::time;

/// Named types (records, enums, fixed) of a schema by full name, so that a `Schema::Ref` (the
/// second use of a named type inside one schema, e.g. `AllocationState` in `from_state` and
/// `to_state`) can be followed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Names(HashMap<String, Schema>);

impl Names {
    /// Collects every named type defined anywhere inside `schema`.
    pub(crate) fn of(schema: &Schema) -> Names {
        let mut names = Names::default();
        names.collect(schema, None);
        names
    }

    fn collect(&mut self, schema: &Schema, ns: Option<&str>) {
        match schema {
            Schema::Record(r) => {
                self.0.insert(r.name.fullname(ns), schema.clone());
                let inner = r.name.namespace().or(ns);
                for field in &r.fields {
                    self.collect(&field.schema, inner);
                }
            }
            Schema::Enum(e) => {
                self.0.insert(e.name.fullname(ns), schema.clone());
            }
            Schema::Fixed(f) | Schema::Duration(f) => {
                self.0.insert(f.name.fullname(ns), schema.clone());
            }
            Schema::Array(a) => self.collect(&a.items, ns),
            Schema::Map(m) => self.collect(&m.types, ns),
            Schema::Union(u) => {
                for variant in u.variants() {
                    self.collect(variant, ns);
                }
            }
            _ => {}
        }
    }

    pub(crate) fn lookup(&self, name: &Name, ns: Option<&str>) -> Option<&Schema> {
        self.0.get(&name.fullname(ns))
    }
}

/// Where in a value we are, built on the stack so that the success path allocates nothing.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a str),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => write!(f, "{name}"),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Path::Key(parent, key) => write!(f, "{parent}[{key:?}]"),
        }
    }
}

/// A mismatch at a path; turned into [`CodecError::Value`] by the caller, who knows the schema.
#[derive(Debug)]
pub(crate) struct Mismatch {
    path: String,
    message: String,
}

impl Mismatch {
    fn new(path: &Path<'_>, message: impl Into<String>) -> Mismatch {
        let path = path.to_string();
        let path = if path.is_empty() { "<root>".to_string() } else { path };
        Mismatch { path, message: message.into() }
    }

    /// Attaches the schema name.
    pub(crate) fn into_error(self, schema: &str) -> CodecError {
        CodecError::Value { schema: schema.to_string(), path: self.path, message: self.message }
    }
}

/// How JSON is read: the friendly form of events files, or the Avro specification's encoding of
/// field defaults inside a schema (bytes as ISO-8859-1 strings, unions by their first branch).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Friendly,
    Default,
}

/// Display name of a schema for error messages and the Avro-JSON union wrapper key.
fn type_name(schema: &Schema, ns: Option<&str>) -> String {
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int | Schema::Date | Schema::TimeMillis => "int".into(),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes | Schema::BigDecimal | Schema::Decimal(_) => "bytes".into(),
        Schema::String | Schema::Uuid(_) => "string".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Union(_) => "union".into(),
        Schema::Record(r) => r.name.fullname(ns),
        Schema::Enum(e) => e.name.fullname(ns),
        Schema::Fixed(f) | Schema::Duration(f) => f.name.fullname(ns),
        Schema::Ref { name } => name.fullname(ns),
    }
}

fn union_names(u: &UnionSchema, ns: Option<&str>) -> String {
    let names: Vec<String> = u.variants().iter().map(|s| type_name(s, ns)).collect();
    format!("[{}]", names.join(", "))
}

fn avro_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int(_) => "int",
        Value::Long(_) => "long",
        Value::Float(_) => "float",
        Value::Double(_) => "double",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "string",
        Value::Fixed(..) => "fixed",
        Value::Enum(..) => "enum",
        Value::Union(..) => "union",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Record(_) => "record",
        Value::Date(_) => "date",
        Value::Decimal(_) => "decimal",
        Value::BigDecimal(_) => "big-decimal",
        Value::TimeMillis(_) => "time-millis",
        Value::TimeMicros(_) => "time-micros",
        Value::TimestampMillis(_) => "timestamp-millis",
        Value::TimestampMicros(_) => "timestamp-micros",
        Value::TimestampNanos(_) => "timestamp-nanos",
        Value::LocalTimestampMillis(_) => "local-timestamp-millis",
        Value::LocalTimestampMicros(_) => "local-timestamp-micros",
        Value::LocalTimestampNanos(_) => "local-timestamp-nanos",
        Value::Duration(_) => "duration",
        Value::Uuid(_) => "uuid",
    }
}

fn json_kind(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// Checks `value` against `schema` and returns it in the exact shape the Avro writer needs
/// (union branches chosen, enum indexes set, defaults filled, ints widened, plain longs turned
/// into timestamps). Strict: unknown record fields and enum symbols are errors.
pub(crate) fn conform(schema: &Schema, names: &Names, value: &Value) -> Result<Value, Mismatch> {
    Conformer { names }.value(schema, None, value, &Path::Root)
}

struct Conformer<'n> {
    names: &'n Names,
}

impl Conformer<'_> {
    fn value(
        &self,
        schema: &Schema,
        ns: Option<&str>,
        v: &Value,
        path: &Path<'_>,
    ) -> Result<Value, Mismatch> {
        let wrong = || {
            Mismatch::new(path, format!("expected {}, got {}", type_name(schema, ns), avro_kind(v)))
        };
        // A union value handed to a non-union schema: look through it (Avro resolution does too).
        if let (Value::Union(_, inner), false) = (v, matches!(schema, Schema::Union(_))) {
            return self.value(schema, ns, inner, path);
        }
        Ok(match (schema, v) {
            (Schema::Ref { name }, _) => {
                let target = self
                    .names
                    .lookup(name, ns)
                    .ok_or_else(|| Mismatch::new(path, format!("unresolved type {name:?}")))?;
                return self.value(target, name.namespace().or(ns), v, path);
            }
            (Schema::Null, Value::Null) => Value::Null,
            (Schema::Boolean, Value::Boolean(b)) => Value::Boolean(*b),
            (Schema::Int, Value::Int(i)) => Value::Int(*i),
            (Schema::Int, Value::Long(l)) => Value::Int(
                i32::try_from(*l)
                    .map_err(|_| Mismatch::new(path, format!("{l} does not fit in an int")))?,
            ),
            (Schema::Long, Value::Int(i)) => Value::Long(i64::from(*i)),
            (Schema::Long, Value::Long(l)) => Value::Long(*l),
            (Schema::Float, Value::Int(i)) => Value::Float(*i as f32),
            (Schema::Float, Value::Long(l)) => Value::Float(*l as f32),
            (Schema::Float, Value::Float(f)) => Value::Float(*f),
            (Schema::Double, Value::Int(i)) => Value::Double(f64::from(*i)),
            (Schema::Double, Value::Long(l)) => Value::Double(*l as f64),
            (Schema::Double, Value::Float(f)) => Value::Double(f64::from(*f)),
            (Schema::Double, Value::Double(d)) => Value::Double(*d),
            (Schema::Bytes, Value::Bytes(b)) => Value::Bytes(b.clone()),
            (Schema::Bytes, Value::String(s)) => Value::Bytes(s.as_bytes().to_vec()),
            (Schema::String, Value::String(s)) => Value::String(s.clone()),
            (Schema::String, Value::Bytes(b)) => Value::String(
                String::from_utf8(b.clone())
                    .map_err(|_| Mismatch::new(path, "bytes are not valid UTF-8"))?,
            ),
            (Schema::Fixed(f), Value::Fixed(_, b) | Value::Bytes(b)) => {
                if b.len() != f.size {
                    return Err(Mismatch::new(
                        path,
                        format!("expected {} bytes, got {}", f.size, b.len()),
                    ));
                }
                Value::Fixed(f.size, b.clone())
            }
            (Schema::Enum(e), Value::Enum(_, s) | Value::String(s)) => {
                match e.symbols.iter().position(|x| x == s) {
                    Some(i) => Value::Enum(i as u32, s.clone()),
                    None => {
                        return Err(Mismatch::new(
                            path,
                            format!("unknown symbol {s:?}, expected one of {:?}", e.symbols),
                        ))
                    }
                }
            }
            (Schema::Array(a), Value::Array(items)) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.value(&a.items, ns, item, &Path::Index(path, i)))
                    .collect::<Result<_, _>>()?,
            ),
            (Schema::Map(m), Value::Map(entries)) => Value::Map(
                entries
                    .iter()
                    .map(|(k, item)| {
                        Ok((k.clone(), self.value(&m.types, ns, item, &Path::Key(path, k))?))
                    })
                    .collect::<Result<_, Mismatch>>()?,
            ),
            (Schema::Union(u), _) => return self.union(u, ns, v, path),
            (Schema::Record(r), Value::Record(fields)) => {
                let inner = r.name.namespace().or(ns);
                let find = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
                for (name, _) in fields {
                    if !r.lookup.contains_key(name) {
                        return Err(Mismatch::new(
                            &Path::Field(path, name),
                            format!("unknown field of {}", r.name.fullname(ns)),
                        ));
                    }
                }
                self.record(r, inner, path, find)?
            }
            (Schema::Record(r), Value::Map(fields)) => {
                let inner = r.name.namespace().or(ns);
                for name in fields.keys() {
                    if !r.lookup.contains_key(name) {
                        return Err(Mismatch::new(
                            &Path::Field(path, name),
                            format!("unknown field of {}", r.name.fullname(ns)),
                        ));
                    }
                }
                self.record(r, inner, path, |name| fields.get(name))?
            }
            (Schema::Date, Value::Date(d) | Value::Int(d)) => Value::Date(*d),
            (Schema::TimeMillis, Value::TimeMillis(t) | Value::Int(t)) => Value::TimeMillis(*t),
            (Schema::TimeMicros, Value::TimeMicros(t) | Value::Long(t)) => Value::TimeMicros(*t),
            (Schema::TimestampMillis, Value::TimestampMillis(t) | Value::Long(t)) => {
                Value::TimestampMillis(*t)
            }
            (Schema::TimestampMicros, Value::TimestampMicros(t) | Value::Long(t)) => {
                Value::TimestampMicros(*t)
            }
            (Schema::TimestampNanos, Value::TimestampNanos(t) | Value::Long(t)) => {
                Value::TimestampNanos(*t)
            }
            (Schema::LocalTimestampMillis, Value::LocalTimestampMillis(t) | Value::Long(t)) => {
                Value::LocalTimestampMillis(*t)
            }
            (Schema::LocalTimestampMicros, Value::LocalTimestampMicros(t) | Value::Long(t)) => {
                Value::LocalTimestampMicros(*t)
            }
            (Schema::LocalTimestampNanos, Value::LocalTimestampNanos(t) | Value::Long(t)) => {
                Value::LocalTimestampNanos(*t)
            }
            (Schema::Uuid(_), Value::Uuid(u)) => Value::Uuid(*u),
            (Schema::Uuid(_), Value::String(s)) => Value::Uuid(
                apache_avro::Uuid::parse_str(s)
                    .map_err(|e| Mismatch::new(path, format!("invalid uuid: {e}")))?,
            ),
            (Schema::Decimal(_), Value::Decimal(d)) => Value::Decimal(d.clone()),
            (Schema::BigDecimal, Value::BigDecimal(d)) => Value::BigDecimal(d.clone()),
            (Schema::Duration(_), Value::Duration(d)) => Value::Duration(*d),
            _ => return Err(wrong()),
        })
    }

    fn record<'v>(
        &self,
        r: &RecordSchema,
        ns: Option<&str>,
        path: &Path<'_>,
        find: impl Fn(&str) -> Option<&'v Value>,
    ) -> Result<Value, Mismatch> {
        let mut out = Vec::with_capacity(r.fields.len());
        for field in &r.fields {
            let here = Path::Field(path, &field.name);
            let value = match (find(&field.name), &field.default) {
                (Some(v), _) => self.value(&field.schema, ns, v, &here)?,
                (None, Some(default)) => JsonReader { names: self.names, mode: Mode::Default }
                    .value(&field.schema, ns, default, &here)?,
                (None, None) => return Err(Mismatch::new(&here, "missing required field")),
            };
            out.push((field.name.clone(), value));
        }
        Ok(Value::Record(out))
    }

    fn union(
        &self,
        u: &UnionSchema,
        ns: Option<&str>,
        v: &Value,
        path: &Path<'_>,
    ) -> Result<Value, Mismatch> {
        if let Value::Union(i, inner) = v {
            let branch = u.variants().get(*i as usize).ok_or_else(|| {
                Mismatch::new(path, format!("union branch {i} out of range {}", union_names(u, ns)))
            })?;
            return Ok(Value::Union(*i, Box::new(self.value(branch, ns, inner, path)?)));
        }
        let mut only_error = None;
        let candidates = u.variants().iter().filter(|s| !matches!(s, Schema::Null)).count();
        for (i, branch) in u.variants().iter().enumerate() {
            if matches!(branch, Schema::Null) != matches!(v, Value::Null) {
                continue;
            }
            match self.value(branch, ns, v, path) {
                Ok(ok) => return Ok(Value::Union(i as u32, Box::new(ok))),
                Err(e) if candidates == 1 => only_error = Some(e),
                Err(_) => {}
            }
        }
        Err(only_error.unwrap_or_else(|| {
            Mismatch::new(
                path,
                format!("{} matches no branch of union {}", avro_kind(v), union_names(u, ns)),
            )
        }))
    }
}

/// Converts friendly JSON to an Avro value of `schema`; see the module documentation for the
/// accepted forms. Errors name the field path.
pub fn json_to_avro(schema: &Schema, json: &Json) -> Result<Value, CodecError> {
    json_to_avro_with(schema, &Names::of(schema), json)
        .map_err(|m| m.into_error(&root_name(schema)))
}

/// [`json_to_avro`] with precomputed names (the codec keeps them per stored schema).
pub(crate) fn json_to_avro_with(
    schema: &Schema,
    names: &Names,
    json: &Json,
) -> Result<Value, Mismatch> {
    JsonReader { names, mode: Mode::Friendly }.value(schema, None, json, &Path::Root)
}

/// Full name of a named schema, or its type name: the `schema` part of error messages.
pub(crate) fn root_name(schema: &Schema) -> String {
    type_name(schema, None)
}

struct JsonReader<'n> {
    names: &'n Names,
    mode: Mode,
}

impl JsonReader<'_> {
    fn value(
        &self,
        schema: &Schema,
        ns: Option<&str>,
        j: &Json,
        path: &Path<'_>,
    ) -> Result<Value, Mismatch> {
        let wrong = || {
            Mismatch::new(path, format!("expected {}, got {}", type_name(schema, ns), json_kind(j)))
        };
        Ok(match schema {
            Schema::Ref { name } => {
                let target = self
                    .names
                    .lookup(name, ns)
                    .ok_or_else(|| Mismatch::new(path, format!("unresolved type {name:?}")))?;
                return self.value(target, name.namespace().or(ns), j, path);
            }
            Schema::Null => match j {
                Json::Null => Value::Null,
                _ => return Err(wrong()),
            },
            Schema::Boolean => Value::Boolean(j.as_bool().ok_or_else(wrong)?),
            Schema::Int => Value::Int(self.int(j, path).ok_or_else(wrong)??),
            Schema::Long => Value::Long(self.long(j, path).ok_or_else(wrong)?),
            Schema::Float => Value::Float(self.double(j).ok_or_else(wrong)? as f32),
            Schema::Double => Value::Double(self.double(j).ok_or_else(wrong)?),
            Schema::Bytes => Value::Bytes(self.bytes(j, path).ok_or_else(wrong)??),
            Schema::String => Value::String(j.as_str().ok_or_else(wrong)?.to_string()),
            Schema::Fixed(f) => {
                let b = self.bytes(j, path).ok_or_else(wrong)??;
                if b.len() != f.size {
                    return Err(Mismatch::new(
                        path,
                        format!("expected {} bytes, got {}", f.size, b.len()),
                    ));
                }
                Value::Fixed(f.size, b)
            }
            Schema::Enum(e) => {
                let s = j.as_str().ok_or_else(wrong)?;
                match e.symbols.iter().position(|x| x == s) {
                    Some(i) => Value::Enum(i as u32, s.to_string()),
                    None => {
                        return Err(Mismatch::new(
                            path,
                            format!("unknown symbol {s:?}, expected one of {:?}", e.symbols),
                        ))
                    }
                }
            }
            Schema::Array(a) => Value::Array(
                j.as_array()
                    .ok_or_else(wrong)?
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.value(&a.items, ns, item, &Path::Index(path, i)))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Map(m) => Value::Map(
                j.as_object()
                    .ok_or_else(wrong)?
                    .iter()
                    .map(|(k, item)| {
                        Ok((k.clone(), self.value(&m.types, ns, item, &Path::Key(path, k))?))
                    })
                    .collect::<Result<_, Mismatch>>()?,
            ),
            Schema::Union(u) => return self.union(u, ns, j, path),
            Schema::Record(r) => {
                let object = j.as_object().ok_or_else(wrong)?;
                let inner = r.name.namespace().or(ns);
                for key in object.keys() {
                    if !r.lookup.contains_key(key) {
                        return Err(Mismatch::new(
                            &Path::Field(path, key),
                            format!("unknown field of {}", r.name.fullname(ns)),
                        ));
                    }
                }
                let mut out = Vec::with_capacity(r.fields.len());
                for field in &r.fields {
                    let here = Path::Field(path, &field.name);
                    let value = match (object.get(&field.name), &field.default) {
                        (Some(v), _) => self.value(&field.schema, inner, v, &here)?,
                        (None, Some(default)) => {
                            JsonReader { names: self.names, mode: Mode::Default }.value(
                                &field.schema,
                                inner,
                                default,
                                &here,
                            )?
                        }
                        (None, None) => return Err(Mismatch::new(&here, "missing required field")),
                    };
                    out.push((field.name.clone(), value));
                }
                Value::Record(out)
            }
            Schema::Date => Value::Date(match j {
                Json::String(s) => time::parse_date(s)
                    .ok()
                    .and_then(|d| i32::try_from(d).ok())
                    .ok_or_else(|| Mismatch::new(path, format!("invalid date {s:?}")))?,
                _ => self.int(j, path).ok_or_else(wrong)??,
            }),
            Schema::TimeMillis => Value::TimeMillis(self.int(j, path).ok_or_else(wrong)??),
            Schema::TimeMicros => Value::TimeMicros(self.long(j, path).ok_or_else(wrong)?),
            Schema::TimestampMillis => Value::TimestampMillis(self.instant(j, path, 3)?),
            Schema::TimestampMicros => Value::TimestampMicros(self.instant(j, path, 6)?),
            Schema::TimestampNanos => Value::TimestampNanos(self.instant(j, path, 9)?),
            Schema::LocalTimestampMillis => Value::LocalTimestampMillis(self.instant(j, path, 3)?),
            Schema::LocalTimestampMicros => Value::LocalTimestampMicros(self.instant(j, path, 6)?),
            Schema::LocalTimestampNanos => Value::LocalTimestampNanos(self.instant(j, path, 9)?),
            Schema::Uuid(_) => Value::Uuid(
                apache_avro::Uuid::parse_str(j.as_str().ok_or_else(wrong)?)
                    .map_err(|e| Mismatch::new(path, format!("invalid uuid: {e}")))?,
            ),
            Schema::Decimal(_) | Schema::BigDecimal | Schema::Duration(_) => {
                return Err(Mismatch::new(
                    path,
                    format!("{} is not supported by the JSON form", type_name(schema, ns)),
                ))
            }
        })
    }

    fn int(&self, j: &Json, path: &Path<'_>) -> Option<Result<i32, Mismatch>> {
        let l = j.as_i64()?;
        Some(
            i32::try_from(l)
                .map_err(|_| Mismatch::new(path, format!("{l} does not fit in an int"))),
        )
    }

    fn long(&self, j: &Json, _path: &Path<'_>) -> Option<i64> {
        j.as_i64()
    }

    fn double(&self, j: &Json) -> Option<f64> {
        match j {
            Json::Number(n) => n.as_f64(),
            Json::String(s) => match s.as_str() {
                "NaN" => Some(f64::NAN),
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                _ => None,
            },
            _ => None,
        }
    }

    fn bytes(&self, j: &Json, path: &Path<'_>) -> Option<Result<Vec<u8>, Mismatch>> {
        match (j, self.mode) {
            // The Avro specification encodes bytes defaults as strings of code points 0-255.
            (Json::String(s), Mode::Default) => Some(
                s.chars()
                    .map(|c| u8::try_from(u32::from(c)).ok())
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| Mismatch::new(path, "bytes default has a code point above 255")),
            ),
            (Json::String(s), Mode::Friendly) => Some(Ok(s.as_bytes().to_vec())),
            (Json::Object(o), _) if o.len() == 1 => {
                let b64 = o.get("base64")?.as_str()?;
                Some(crate::b64::decode(b64).map_err(|e| Mismatch::new(path, e.to_string())))
            }
            _ => None,
        }
    }

    /// An instant as an integer count of 10^-`digits` seconds, from an integer or RFC 3339.
    fn instant(&self, j: &Json, path: &Path<'_>, digits: u32) -> Result<i64, Mismatch> {
        match j {
            Json::Number(n) => n.as_i64().ok_or_else(|| {
                Mismatch::new(path, format!("timestamp {n} is not an integer in range"))
            }),
            Json::String(s) => {
                let (secs, nanos) = time::parse_rfc3339(s).map_err(|e| {
                    Mismatch::new(path, format!("invalid RFC 3339 timestamp {s:?}: {}", e.reason))
                })?;
                let scale = 10i64.pow(digits);
                secs.checked_mul(scale)
                    .and_then(|v| v.checked_add(i64::from(nanos) / 10i64.pow(9 - digits)))
                    .ok_or_else(|| Mismatch::new(path, format!("timestamp {s:?} out of range")))
            }
            _ => Err(Mismatch::new(
                path,
                format!("expected an integer or RFC 3339 timestamp, got {}", json_kind(j)),
            )),
        }
    }

    fn union(
        &self,
        u: &UnionSchema,
        ns: Option<&str>,
        j: &Json,
        path: &Path<'_>,
    ) -> Result<Value, Mismatch> {
        let variants = u.variants();
        if j.is_null() {
            return match variants.iter().position(|s| matches!(s, Schema::Null)) {
                Some(i) => Ok(Value::Union(i as u32, Box::new(Value::Null))),
                None => Err(Mismatch::new(
                    path,
                    format!("null matches no branch of union {}", union_names(u, ns)),
                )),
            };
        }
        let mut wrapper_error = None;
        if self.mode == Mode::Friendly {
            // Avro-JSON `{"<branch type name>": value}`.
            if let Some((key, inner)) =
                j.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next())
            {
                let short = |s: &Schema| match s.name() {
                    Some(n) => n.name() == key.as_str(),
                    None => false,
                };
                if let Some(i) = variants.iter().position(|s| type_name(s, ns) == *key || short(s))
                {
                    match self.value(&variants[i], ns, inner, path) {
                        Ok(v) => return Ok(Value::Union(i as u32, Box::new(v))),
                        Err(e) => wrapper_error = Some(e),
                    }
                }
            }
        }
        let candidates: Vec<usize> =
            (0..variants.len()).filter(|&i| !matches!(variants[i], Schema::Null)).collect();
        let mut only_error = None;
        for &i in &candidates {
            match self.value(&variants[i], ns, j, path) {
                Ok(v) => return Ok(Value::Union(i as u32, Box::new(v))),
                Err(e) if candidates.len() == 1 => only_error = Some(e),
                Err(_) => {}
            }
        }
        Err(wrapper_error.or(only_error).unwrap_or_else(|| {
            Mismatch::new(
                path,
                format!("{} matches no branch of union {}", json_kind(j), union_names(u, ns)),
            )
        }))
    }
}

/// The friendly JSON form of an Avro value: unions unwrapped, enums as symbol strings, bytes and
/// fixed as `{"base64": "..."}`, timestamps and dates as integers, non-finite floats as the
/// strings `NaN`, `Infinity`, `-Infinity`. Total: every value has a JSON form.
pub fn avro_to_json(value: &Value) -> Json {
    let b64 = |b: &[u8]| {
        let mut o = serde_json::Map::new();
        o.insert("base64".into(), Json::String(crate::b64::encode(b)));
        Json::Object(o)
    };
    let float = |f: f64| {
        if f.is_nan() {
            Json::String("NaN".into())
        } else if f.is_infinite() {
            Json::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
        } else {
            serde_json::Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null)
        }
    };
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Json::from(*i),
        Value::Long(l)
        | Value::TimeMicros(l)
        | Value::TimestampMillis(l)
        | Value::TimestampMicros(l)
        | Value::TimestampNanos(l)
        | Value::LocalTimestampMillis(l)
        | Value::LocalTimestampMicros(l)
        | Value::LocalTimestampNanos(l) => Json::from(*l),
        Value::Float(f) => float(f64::from(*f)),
        Value::Double(d) => float(*d),
        Value::Bytes(b) | Value::Fixed(_, b) => b64(b),
        Value::String(s) | Value::Enum(_, s) => Json::String(s.clone()),
        Value::Union(_, inner) => avro_to_json(inner),
        Value::Array(items) => Json::Array(items.iter().map(avro_to_json).collect()),
        Value::Map(entries) => {
            let mut keys: Vec<&String> = entries.keys().collect();
            keys.sort();
            Json::Object(keys.into_iter().map(|k| (k.clone(), avro_to_json(&entries[k]))).collect())
        }
        Value::Record(fields) => {
            Json::Object(fields.iter().map(|(k, v)| (k.clone(), avro_to_json(v))).collect())
        }
        Value::Decimal(d) => match <Vec<u8>>::try_from(d) {
            Ok(b) => b64(&b),
            Err(_) => Json::Null,
        },
        Value::BigDecimal(d) => Json::String(d.to_string()),
        Value::Duration(d) => serde_json::json!({
            "months": u32::from(d.months()),
            "days": u32::from(d.days()),
            "millis": u32::from(d.millis()),
        }),
        Value::Uuid(u) => Json::String(u.to_string()),
    }
}

/// A deterministic, schema-valid example value: strings `"example"`, numbers 1, the first enum
/// symbol, the first non-null union branch, one-element arrays and maps, timestamps at
/// 2023-11-14T22:13:20Z. Used by tests (every schema gets round-tripped) and to show operators
/// what a topic expects.
pub fn example_value(schema: &Schema) -> Value {
    Examples { names: Names::of(schema), depth: 0 }.value(schema, None)
}

struct Examples {
    names: Names,
    depth: usize,
}

impl Examples {
    fn value(&mut self, schema: &Schema, ns: Option<&str>) -> Value {
        // Recursive schemas (a record containing itself through a union) stop at null.
        self.depth += 1;
        let v = if self.depth > 32 { Value::Null } else { self.inner(schema, ns) };
        self.depth -= 1;
        v
    }

    fn inner(&mut self, schema: &Schema, ns: Option<&str>) -> Value {
        match schema {
            Schema::Ref { name } => match self.names.lookup(name, ns).cloned() {
                Some(target) => self.value(&target, name.namespace().or(ns)),
                None => Value::Null,
            },
            Schema::Null => Value::Null,
            Schema::Boolean => Value::Boolean(true),
            Schema::Int => Value::Int(1),
            Schema::Long => Value::Long(1),
            Schema::Float => Value::Float(1.5),
            Schema::Double => Value::Double(1.5),
            Schema::Bytes => Value::Bytes(b"example".to_vec()),
            Schema::String => Value::String("example".into()),
            Schema::Fixed(f) => Value::Fixed(f.size, vec![0; f.size]),
            Schema::Enum(e) => Value::Enum(0, e.symbols.first().cloned().unwrap_or_default()),
            Schema::Array(a) => Value::Array(vec![self.value(&a.items, ns)]),
            Schema::Map(m) => {
                Value::Map([("key".to_string(), self.value(&m.types, ns))].into_iter().collect())
            }
            Schema::Union(u) => {
                let variants = u.variants();
                let i = variants.iter().position(|s| !matches!(s, Schema::Null)).unwrap_or(0);
                match variants.get(i) {
                    Some(branch) => Value::Union(i as u32, Box::new(self.value(branch, ns))),
                    None => Value::Null,
                }
            }
            Schema::Record(r) => {
                let inner = r.name.namespace().or(ns);
                Value::Record(
                    r.fields
                        .iter()
                        .map(|f| (f.name.clone(), self.value(&f.schema, inner)))
                        .collect(),
                )
            }
            Schema::Date => Value::Date(19_675),
            Schema::TimeMillis => Value::TimeMillis(1_000),
            Schema::TimeMicros => Value::TimeMicros(1_000_000),
            Schema::TimestampMillis => Value::TimestampMillis(1_700_000_000_000),
            Schema::TimestampMicros => Value::TimestampMicros(1_700_000_000_000_000),
            Schema::TimestampNanos => Value::TimestampNanos(1_700_000_000_000_000_000),
            Schema::LocalTimestampMillis => Value::LocalTimestampMillis(1_700_000_000_000),
            Schema::LocalTimestampMicros => Value::LocalTimestampMicros(1_700_000_000_000_000),
            Schema::LocalTimestampNanos => Value::LocalTimestampNanos(1_700_000_000_000_000_000),
            Schema::Uuid(_) => Value::Uuid(apache_avro::Uuid::nil()),
            Schema::Decimal(_) => Value::Decimal(apache_avro::Decimal::from(vec![1u8])),
            Schema::BigDecimal => Value::Null,
            Schema::Duration(_) => Value::Duration(apache_avro::Duration::new(
                apache_avro::Months::new(0),
                apache_avro::Days::new(1),
                apache_avro::Millis::new(0),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(text: &str) -> Schema {
        Schema::parse_str(text).expect("test schema parses")
    }

    fn err_path(r: Result<Value, CodecError>) -> (String, String) {
        match r {
            Err(CodecError::Value { path, message, .. }) => (path, message),
            other => panic!("expected a value error, got {other:?}"),
        }
    }

    const ALLOC: &str = r#"{"type":"record","name":"A","namespace":"t","fields":[
        {"name":"id","type":"string"},
        {"name":"resource","type":{"type":"record","name":"R","fields":[
            {"name":"gpu_count","type":"int"}]}},
        {"name":"reasons","type":{"type":"array","items":"string"},"default":[]},
        {"name":"state","type":{"type":"enum","name":"S","symbols":["a","b"]}},
        {"name":"prev","type":["null","t.S"],"default":null},
        {"name":"note","type":["null","string","long"],"default":null},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"blob","type":"bytes","default":"\u00ff"},
        {"name":"labels","type":{"type":"map","values":"string"},"default":{}}
    ]}"#;

    #[test]
    fn json_fills_defaults_and_picks_union_branches() {
        let s = schema(ALLOC);
        let v = json_to_avro(
            &s,
            &json!({"id":"a1","resource":{"gpu_count":2},"state":"b","note":7,
                    "at":"1970-01-01T00:00:01.234Z"}),
        )
        .unwrap();
        let Value::Record(fields) = &v else { panic!("record") };
        let get = |n: &str| &fields.iter().find(|(k, _)| k == n).unwrap().1;
        assert_eq!(get("state"), &Value::Enum(1, "b".into()));
        assert_eq!(get("prev"), &Value::Union(0, Box::new(Value::Null)));
        assert_eq!(get("note"), &Value::Union(2, Box::new(Value::Long(7))));
        assert_eq!(get("at"), &Value::TimestampMillis(1234));
        assert_eq!(get("blob"), &Value::Bytes(vec![0xff]));
        assert_eq!(get("reasons"), &Value::Array(vec![]));
        assert!(v.validate(&s));
    }

    #[test]
    fn json_accepts_avro_json_union_wrappers_and_base64() {
        let s = schema(ALLOC);
        let v = json_to_avro(
            &s,
            &json!({"id":"a1","resource":{"gpu_count":2},"state":"a","prev":{"t.S":"a"},
                    "note":{"string":"hi"},"at":5,"blob":{"base64":"AAE="}}),
        )
        .unwrap();
        let j = avro_to_json(&v);
        assert_eq!(j["prev"], json!("a"));
        assert_eq!(j["note"], json!("hi"));
        assert_eq!(j["blob"], json!({"base64":"AAE="}));
        // Round trip is a fixed point.
        let again = json_to_avro(&s, &j).unwrap();
        assert_eq!(again, v);
        assert_eq!(avro_to_json(&again), j);
    }

    #[test]
    fn json_errors_name_the_field_path() {
        let s = schema(ALLOC);
        let base = json!({"id":"a1","resource":{"gpu_count":2},"state":"a","at":1});
        let mut bad = base.clone();
        bad["resource"]["gpu_count"] = json!("two");
        assert_eq!(err_path(json_to_avro(&s, &bad)).0, "resource.gpu_count");
        let mut bad = base.clone();
        bad["reasons"] = json!(["x", "y", 3]);
        assert_eq!(err_path(json_to_avro(&s, &bad)).0, "reasons[2]");
        let mut bad = base.clone();
        bad["labels"] = json!({"team": 1});
        assert_eq!(err_path(json_to_avro(&s, &bad)).0, "labels[\"team\"]");
        let mut bad = base.clone();
        bad["stat"] = json!("a");
        let (path, message) = err_path(json_to_avro(&s, &bad));
        assert_eq!(path, "stat");
        assert!(message.contains("unknown field"), "{message}");
        let mut bad = base.clone();
        bad["state"] = json!("c");
        assert!(err_path(json_to_avro(&s, &bad)).1.contains("unknown symbol"));
        let mut bad = base.clone();
        bad.as_object_mut().unwrap().remove("id");
        assert_eq!(
            err_path(json_to_avro(&s, &bad)),
            ("id".into(), "missing required field".into())
        );
        let mut bad = base.clone();
        bad["at"] = json!("yesterday");
        assert_eq!(err_path(json_to_avro(&s, &bad)).0, "at");
        let mut bad = base.clone();
        bad["note"] = json!(true);
        assert!(err_path(json_to_avro(&s, &bad)).1.contains("no branch of union"));
        let mut bad = base;
        bad["blob"] = json!({"base64": "!!"});
        assert!(err_path(json_to_avro(&s, &bad)).1.contains("base64"));
        assert_eq!(err_path(json_to_avro(&s, &json!([1]))).0, "<root>");
    }

    #[test]
    fn conform_is_strict_but_widens_and_picks_branches() {
        let s = schema(ALLOC);
        let names = Names::of(&s);
        let v = Value::Record(vec![
            ("id".into(), Value::String("a".into())),
            ("resource".into(), Value::Record(vec![("gpu_count".into(), Value::Long(3))])),
            ("state".into(), Value::String("b".into())),
            ("prev".into(), Value::Enum(0, "a".into())),
            ("at".into(), Value::Long(9)),
        ]);
        let out = conform(&s, &names, &v).unwrap();
        assert!(out.validate(&s));
        let j = avro_to_json(&out);
        assert_eq!(j["resource"]["gpu_count"], json!(3));
        assert_eq!(j["prev"], json!("a"));

        let mut typo = v.clone();
        if let Value::Record(f) = &mut typo {
            f[2].1 = Value::Enum(0, "bb".into());
        }
        let e = conform(&s, &names, &typo).unwrap_err().into_error("t.A");
        assert!(matches!(&e, CodecError::Value { path, .. } if path == "state"), "{e}");

        let mut extra = v.clone();
        if let Value::Record(f) = &mut extra {
            f.push(("zzz".into(), Value::Null));
        }
        assert!(conform(&s, &names, &extra).is_err());

        let mut overflow = v;
        if let Value::Record(f) = &mut overflow {
            f[1].1 = Value::Record(vec![("gpu_count".into(), Value::Long(1 << 40))]);
        }
        let e = conform(&s, &names, &overflow).unwrap_err();
        assert_eq!(e.path, "resource.gpu_count");
    }

    #[test]
    fn non_finite_doubles_round_trip_as_strings() {
        let s = schema(r#"{"type":"array","items":"double"}"#);
        let v = json_to_avro(&s, &json!(["NaN", "Infinity", "-Infinity", 2.5, 3])).unwrap();
        let j = avro_to_json(&v);
        assert_eq!(j, json!(["NaN", "Infinity", "-Infinity", 2.5, 3.0]));
    }

    #[test]
    fn examples_validate() {
        let s = schema(ALLOC);
        assert!(example_value(&s).validate(&s));
    }
}
