//! The input format of `evalstream produce`: one JSON document per line.
//!
//! Two line shapes, chosen by a flag rather than guessed, because an event may itself have fields
//! called `key` or `value` and a guess would then silently produce the wrong record:
//!
//! * **bare** (default): the line is the event. Its key is the field named by `--key-field`
//!   (a dotted path such as `subject.id`; a string, or a number or boolean written as text), or
//!   no key.
//! * **envelope** (`--envelope`): `{"key": ..., "value": {...}, "headers": {...}}`. `value` is the
//!   event; `key` is a string, `null` or `{"base64": "..."}` (when absent, `--key-field` applies to
//!   the value); `headers` maps a name to a string, `null`, `{"base64": "..."}` or an array of
//!   those for a repeated name. The fields `evalstream consume --format json` adds (`topic`,
//!   `partition`, `offset`, `timestamp`, `schema`) are accepted and ignored, except that a `schema`
//!   different from the one being produced is an error, so `consume | produce --envelope` copies
//!   records between topics.
//!
//! Blank lines and lines whose first non-blank character is `#` are skipped. Line numbers count
//! every physical line from 1, so they match what an editor shows.

use serde_json::{Map, Value};
use thiserror::Error;

use evalstream_runtime::b64::{self, Base64Error};

use super::common::HeaderList;

/// One record to produce, before encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRecord {
    /// Record key bytes.
    pub key: Option<Vec<u8>>,
    /// The event, to be encoded with the topic's schema.
    pub value: Value,
    /// Headers in order; repeated names allowed.
    pub headers: HeaderList,
}

/// Why a line was rejected. The message is what the operator sees after `line N:`.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum LineError {
    /// Not UTF-8 text.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// Not JSON.
    #[error("not valid JSON: {0}")]
    Json(String),
    /// JSON, but not an object.
    #[error("expected a JSON object, found {0}")]
    NotAnObject(&'static str),
    /// An envelope field we do not know (a typo must not be dropped silently).
    #[error(
        "envelope has unknown field `{0}` (allowed: key, value, headers; ignored: topic, \
         partition, offset, timestamp, schema)"
    )]
    UnknownEnvelopeField(String),
    /// An envelope without `value`.
    #[error("envelope has no `value`")]
    MissingValue,
    /// The envelope names another schema than the one being produced.
    #[error("envelope says schema `{found}` but the records are encoded as `{expected}`")]
    SchemaMismatch {
        /// Schema being produced.
        expected: String,
        /// Schema named by the line.
        found: String,
    },
    /// The `--key-field` path does not exist in the event.
    #[error("key field `{0}` is missing or null")]
    MissingKeyField(String),
    /// The `--key-field` value is not a scalar.
    #[error("key field `{field}` must be a string, number or boolean, found {found}")]
    KeyFieldType {
        /// The path.
        field: String,
        /// JSON type found.
        found: &'static str,
    },
    /// The envelope `key` has an unusable shape.
    #[error("envelope `key` must be a string, null or {{\"base64\": \"...\"}}, found {0}")]
    KeyShape(&'static str),
    /// The envelope `headers` is not an object.
    #[error("envelope `headers` must be an object, found {0}")]
    HeadersShape(&'static str),
    /// A header value has an unusable shape.
    #[error("header `{0}` must be a string, null, {{\"base64\": \"...\"}} or an array of those")]
    HeaderShape(String),
    /// A `{"base64": ...}` value does not decode.
    #[error("{what}: {source}")]
    Base64 {
        /// Which key or header.
        what: String,
        /// Why.
        source: Base64Error,
    },
    /// The event does not fit the schema (the codec's reason).
    #[error("{0}")]
    Encode(String),
}

/// Parses lines into [`InputRecord`]s. Pure: no I/O, so every rule above is unit-tested.
#[derive(Debug, Clone)]
pub struct LineParser {
    envelope: bool,
    key_field: Option<String>,
    schema: String,
}

/// Envelope fields written by `consume --format json` that carry no information for producing.
const IGNORED_ENVELOPE_FIELDS: &[&str] = &["topic", "partition", "offset", "timestamp"];

impl LineParser {
    /// A parser for `schema` records; `envelope` selects the line shape (see the module docs).
    pub fn new(envelope: bool, key_field: Option<String>, schema: impl Into<String>) -> Self {
        LineParser { envelope, key_field, schema: schema.into() }
    }

    /// Parses one physical line (without its newline). `Ok(None)`: blank or comment.
    pub fn parse(&self, raw: &[u8]) -> Result<Option<InputRecord>, LineError> {
        let text = std::str::from_utf8(raw).map_err(|_| LineError::NotUtf8)?;
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            return Ok(None);
        }
        let doc: Value = serde_json::from_str(text).map_err(|e| LineError::Json(e.to_string()))?;
        let Value::Object(obj) = doc else {
            return Err(LineError::NotAnObject(json_type(&doc)));
        };
        if self.envelope {
            self.envelope_record(obj).map(Some)
        } else {
            let value = Value::Object(obj);
            let key = self.key_from_field(&value)?;
            Ok(Some(InputRecord { key, value, headers: Vec::new() }))
        }
    }

    fn envelope_record(&self, mut obj: Map<String, Value>) -> Result<InputRecord, LineError> {
        if let Some(unknown) = obj.keys().find(|k| {
            !matches!(k.as_str(), "key" | "value" | "headers" | "schema")
                && !IGNORED_ENVELOPE_FIELDS.contains(&k.as_str())
        }) {
            return Err(LineError::UnknownEnvelopeField(unknown.clone()));
        }
        match obj.get("schema") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if *s == self.schema => {}
            Some(other) => {
                return Err(LineError::SchemaMismatch {
                    expected: self.schema.clone(),
                    found: other.as_str().map(str::to_string).unwrap_or_else(|| other.to_string()),
                })
            }
        }
        let value = obj.remove("value").ok_or(LineError::MissingValue)?;
        let key = match obj.remove("key") {
            None => self.key_from_field(&value)?,
            Some(k) => bytes_from_json(&k, "key").map_err(|e| match e {
                BytesShape::Shape(found) => LineError::KeyShape(found),
                BytesShape::Base64(what, source) => LineError::Base64 { what, source },
            })?,
        };
        let headers = match obj.remove("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(h)) => parse_headers(h)?,
            Some(other) => return Err(LineError::HeadersShape(json_type(&other))),
        };
        Ok(InputRecord { key, value, headers })
    }

    fn key_from_field(&self, value: &Value) -> Result<Option<Vec<u8>>, LineError> {
        let Some(path) = &self.key_field else {
            return Ok(None);
        };
        let mut cur = value;
        for part in path.split('.') {
            cur = match cur.get(part) {
                Some(v) => v,
                None => return Err(LineError::MissingKeyField(path.clone())),
            };
        }
        match cur {
            Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
            Value::Number(n) => Ok(Some(n.to_string().into_bytes())),
            Value::Bool(b) => Ok(Some(b.to_string().into_bytes())),
            Value::Null => Err(LineError::MissingKeyField(path.clone())),
            other => Err(LineError::KeyFieldType { field: path.clone(), found: json_type(other) }),
        }
    }
}

enum BytesShape {
    Shape(&'static str),
    Base64(String, Base64Error),
}

/// The inverse of [`super::common::bytes_json`].
fn bytes_from_json(v: &Value, what: &str) -> Result<Option<Vec<u8>>, BytesShape> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
        Value::Object(o) if o.len() == 1 => match o.get("base64") {
            Some(Value::String(b)) => {
                b64::decode(b).map(Some).map_err(|e| BytesShape::Base64(what.to_string(), e))
            }
            _ => Err(BytesShape::Shape("an object")),
        },
        other => Err(BytesShape::Shape(json_type(other))),
    }
}

fn parse_headers(h: Map<String, Value>) -> Result<HeaderList, LineError> {
    let mut out = Vec::new();
    for (name, v) in h {
        let values = match v {
            Value::Array(items) => items,
            single => vec![single],
        };
        for item in values {
            let bytes =
                bytes_from_json(&item, &format!("header `{name}`")).map_err(|e| match e {
                    BytesShape::Shape(_) => LineError::HeaderShape(name.clone()),
                    BytesShape::Base64(what, source) => LineError::Base64 { what, source },
                })?;
            out.push((name.clone(), bytes));
        }
    }
    Ok(out)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bare(key_field: Option<&str>) -> LineParser {
        LineParser::new(false, key_field.map(str::to_string), "eval.Submission")
    }
    fn env() -> LineParser {
        LineParser::new(true, None, "eval.Submission")
    }

    #[test]
    fn blank_and_comment_lines_are_skipped() {
        for line in ["", "   ", "\t", "# a comment", "   # indented comment", "\r"] {
            assert_eq!(bare(None).parse(line.as_bytes()), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn bare_event_without_key() {
        let r = bare(None).parse(br#"{"id": "a", "n": 1}"#).unwrap().unwrap();
        assert_eq!(r, InputRecord { key: None, value: json!({"id":"a","n":1}), headers: vec![] });
    }

    #[test]
    fn key_field_takes_scalars_by_dotted_path() {
        let p = bare(Some("subject.id"));
        let r = p.parse(br#"{"subject": {"id": "m-7"}}"#).unwrap().unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"m-7"[..]));
        let r = p.parse(br#"{"subject": {"id": 42}}"#).unwrap().unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"42"[..]));
        assert_eq!(
            p.parse(br#"{"subject": {}}"#),
            Err(LineError::MissingKeyField("subject.id".into()))
        );
        assert_eq!(
            p.parse(br#"{"subject": {"id": null}}"#),
            Err(LineError::MissingKeyField("subject.id".into()))
        );
        assert_eq!(
            p.parse(br#"{"subject": {"id": [1]}}"#),
            Err(LineError::KeyFieldType { field: "subject.id".into(), found: "an array" })
        );
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(matches!(bare(None).parse(b"{not json"), Err(LineError::Json(_))));
        assert_eq!(bare(None).parse(b"[1,2]"), Err(LineError::NotAnObject("an array")));
        assert_eq!(bare(None).parse(b"\"x\""), Err(LineError::NotAnObject("a string")));
        assert_eq!(bare(None).parse(&[0xff, b'{', b'}']), Err(LineError::NotUtf8));
        let e = bare(None).parse(b"{\"a\":").unwrap_err();
        assert!(e.to_string().starts_with("not valid JSON"), "{e}");
    }

    #[test]
    fn envelope_carries_key_and_headers() {
        let r = env()
            .parse(
                br#"{"key":"k1","value":{"id":"a"},"headers":{"trace":"t-1","bin":{"base64":"/wA="},"rep":["a","b"],"none":null}}"#,
            )
            .unwrap()
            .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r.value, json!({"id":"a"}));
        assert_eq!(
            r.headers,
            vec![
                ("bin".to_string(), Some(vec![0xff, 0x00])),
                ("none".to_string(), None),
                ("rep".to_string(), Some(b"a".to_vec())),
                ("rep".to_string(), Some(b"b".to_vec())),
                ("trace".to_string(), Some(b"t-1".to_vec())),
            ]
        );
    }

    #[test]
    fn envelope_key_shapes() {
        let r = env().parse(br#"{"key":{"base64":"AAE="},"value":{}}"#).unwrap().unwrap();
        assert_eq!(r.key, Some(vec![0, 1]));
        let r = env().parse(br#"{"key":null,"value":{}}"#).unwrap().unwrap();
        assert_eq!(r.key, None);
        assert_eq!(env().parse(br#"{"key":5,"value":{}}"#), Err(LineError::KeyShape("a number")));
        assert!(matches!(
            env().parse(br#"{"key":{"base64":"!!"},"value":{}}"#),
            Err(LineError::Base64 { .. })
        ));
        // No envelope key: --key-field applies to the value.
        let p = LineParser::new(true, Some("id".into()), "eval.Submission");
        let r = p.parse(br#"{"value":{"id":"x"}}"#).unwrap().unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn envelope_rejects_typos_and_accepts_consume_output() {
        assert_eq!(
            env().parse(br#"{"valeu":{}}"#),
            Err(LineError::UnknownEnvelopeField("valeu".into()))
        );
        assert_eq!(env().parse(br#"{"key":"k"}"#), Err(LineError::MissingValue));
        assert_eq!(
            env().parse(br#"{"value":{},"headers":[1]}"#),
            Err(LineError::HeadersShape("an array"))
        );
        assert_eq!(
            env().parse(br#"{"value":{},"headers":{"h":1}}"#),
            Err(LineError::HeaderShape("h".into()))
        );
        let consumed = br#"{"topic":"t","partition":0,"offset":3,"timestamp":1,"key":"k","headers":{},"schema":"eval.Submission","value":{"id":"a"}}"#;
        let r = env().parse(consumed).unwrap().unwrap();
        assert_eq!(r.value, json!({"id":"a"}));
        let other = br#"{"schema":"audit.Event","value":{}}"#;
        assert_eq!(
            env().parse(other),
            Err(LineError::SchemaMismatch {
                expected: "eval.Submission".into(),
                found: "audit.Event".into()
            })
        );
    }

    #[test]
    fn bare_mode_keeps_fields_named_key_and_value() {
        let r = bare(None).parse(br#"{"key":"k","value":1}"#).unwrap().unwrap();
        assert_eq!(r.key, None);
        assert_eq!(r.value, json!({"key":"k","value":1}));
    }
}
