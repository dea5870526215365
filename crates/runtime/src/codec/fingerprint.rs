//! Schema fingerprints: the Avro specification's Parsing Canonical Form and its CRC-64-AVRO
//! (Rabin) fingerprint, the schema identifier of Avro single-object encoding.
//!
//! ```text
//!   schema JSON ──parsing_canonical_form──► PCF text ──crc64_avro──► u64 ──LE──► header bytes 2..10
//! ```
//!
//! Why our own implementation of both: the single-object header is part of our wire contract,
//! and other languages' producers (Java Avro's `SchemaNormalization`, fastavro) compute it from
//! the specification. apache-avro's `canonical_form()` does not: it keeps `{"type":"long"}`
//! (with the `logicalType` stripped but the object kept) where the specification reduces a
//! primitive to `"long"`, so every schema with a logical type got a fingerprint no other library
//! produces. `test/vectors/schema_fingerprints.json` pins what Java Avro and fastavro compute for
//! every schema in `schemas/`, and `tests/schema_fingerprints.rs` checks us against it.
//!
//! Data written before the fix carries the old fingerprint ([`legacy_schema_fingerprint`]); the
//! schema store maps both to the same schema, so it still decodes. We always write the spec's.

use std::collections::HashSet;

use apache_avro::Schema;
use serde_json::Value as Json;

use super::error::CodecError;

/// The specification's `EMPTY` constant: the fingerprint of zero bytes, and the polynomial seed.
pub const CRC64_AVRO_EMPTY: u64 = 0xc15d_213a_a4d7_a795;

/// Byte-wise lookup table, computed at compile time as the specification's `fpTable`.
const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut bit = 0;
        while bit < 8 {
            // Shift right; xor the polynomial when the bit shifted out was 1.
            fp = (fp >> 1) ^ (CRC64_AVRO_EMPTY & (0u64.wrapping_sub(fp & 1)));
            bit += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

/// CRC-64-AVRO of arbitrary bytes. Public so that tools and tests can fingerprint a canonical
/// form without going through a parsed schema.
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    let mut fp = CRC64_AVRO_EMPTY;
    for &b in bytes {
        fp = (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp
}

/// The primitive type names; as a schema, each stands for itself (rule PRIMITIVES).
const PRIMITIVES: [&str; 8] =
    ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// The Avro specification's Parsing Canonical Form of a schema given as JSON (the text of an
/// `.avsc` file or of a registry answer), transformed by the specification's rules:
///
/// - PRIMITIVES: `{"type":"int"}` becomes `"int"`, whatever other attributes (`logicalType`,
///   `precision`, ...) it has;
/// - FULLNAMES: every name of a record, enum or fixed, and every reference to one, is written as
///   its full name (resolved against the enclosing namespace; `""` is the null namespace, as in
///   Java Avro), and `namespace` attributes are dropped;
/// - STRIP: only `type`, `name`, `fields`, `symbols`, `items`, `values` and `size` are kept (no
///   `doc`, `aliases`, `default`, `order`, `logicalType` or custom attributes);
/// - ORDER: attributes in the order name, type, fields, symbols, items, values, size;
/// - STRINGS: string literals with no escapes beyond JSON's mandatory ones (names and symbols are
///   plain ASCII in valid schemas; anything else is written as raw UTF-8);
/// - INTEGERS: a fixed's `size` as a bare integer;
/// - WHITESPACE: none outside string literals.
///
/// A second definition of a name is written as a reference, as Java Avro does. Fails on JSON that
/// is not a schema (a missing name or type, a bad size, an unknown type).
pub fn parsing_canonical_form(schema: &Json) -> Result<String, CodecError> {
    let mut writer = CanonicalWriter { defined: HashSet::new(), out: String::new() };
    writer.schema(schema, None).map_err(|message| CodecError::Schema {
        path: String::new(),
        message: format!("no Parsing Canonical Form: {message}"),
    })?;
    Ok(writer.out)
}

/// Fingerprint of a schema given as JSON: CRC-64-AVRO of its [`parsing_canonical_form`]. This is
/// the 64-bit value written little-endian after `0xC3 0x01` in single-object encoding; docs,
/// defaults, logical types and the order of attributes do not change it; names, types and the
/// order of fields do.
pub fn json_schema_fingerprint(schema: &Json) -> Result<u64, CodecError> {
    parsing_canonical_form(schema).map(|form| crc64_avro(form.as_bytes()))
}

/// [`json_schema_fingerprint`] of a parsed schema (through apache-avro's JSON serialization of
/// it, which names every type by its full name). Prefer the JSON the schema was parsed from when
/// there is one: a type in the null namespace inside a namespaced one does not survive the round
/// trip.
pub fn schema_fingerprint(schema: &Schema) -> Result<u64, CodecError> {
    let json = serde_json::to_value(schema).map_err(|e| CodecError::Schema {
        path: String::new(),
        message: format!("serializing the schema: {e}"),
    })?;
    json_schema_fingerprint(&json)
}

/// The fingerprint evalstream wrote before it followed the specification: CRC-64-AVRO of
/// apache-avro 0.22's `canonical_form()`. It equals the spec's for schemas without logical types
/// and differs for every other. Only for *decoding* records written before the fix; never
/// written. `store::tests` pins its values for the schemas that existed then, so a change of
/// apache-avro that alters it is noticed.
pub fn legacy_schema_fingerprint(schema: &Schema) -> u64 {
    crc64_avro(schema.canonical_form().as_bytes())
}

struct CanonicalWriter {
    /// Full names of the named types written so far.
    defined: HashSet<String>,
    out: String,
}

impl CanonicalWriter {
    fn schema(&mut self, schema: &Json, namespace: Option<&str>) -> Result<(), String> {
        match schema {
            Json::String(name) => self.reference(name, namespace),
            Json::Array(branches) => {
                self.out.push('[');
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.schema(branch, namespace)?;
                }
                self.out.push(']');
                Ok(())
            }
            Json::Object(object) => self.object(object, namespace),
            other => Err(format!("{other} is not a schema")),
        }
    }

    fn object(
        &mut self,
        object: &serde_json::Map<String, Json>,
        namespace: Option<&str>,
    ) -> Result<(), String> {
        let kind = match object.get("type") {
            Some(Json::String(kind)) => kind.as_str(),
            // `{"type": {...}}` or `{"type": [...]}`: the inner schema is the schema.
            Some(inner @ (Json::Object(_) | Json::Array(_))) => {
                return self.schema(inner, namespace)
            }
            Some(other) => return Err(format!("type {other} is not a type name")),
            None => return Err("an object schema without \"type\"".into()),
        };
        match kind {
            _ if PRIMITIVES.contains(&kind) => {
                self.string(kind);
                Ok(())
            }
            "array" => {
                self.out.push_str(r#"{"type":"array","items":"#);
                self.schema(object.get("items").ok_or("an array without \"items\"")?, namespace)?;
                self.out.push('}');
                Ok(())
            }
            "map" => {
                self.out.push_str(r#"{"type":"map","values":"#);
                self.schema(object.get("values").ok_or("a map without \"values\"")?, namespace)?;
                self.out.push('}');
                Ok(())
            }
            "record" | "enum" | "fixed" => self.named(kind, object, namespace),
            // `{"type": "some.Name"}`: a reference to a named type, as Java Avro reads it.
            name => self.reference(name, namespace),
        }
    }

    fn named(
        &mut self,
        kind: &str,
        object: &serde_json::Map<String, Json>,
        enclosing: Option<&str>,
    ) -> Result<(), String> {
        let name = match object.get("name") {
            Some(Json::String(name)) if !name.is_empty() => name.as_str(),
            _ => return Err(format!("a {kind} without a name")),
        };
        let (full_name, namespace) = match name.rsplit_once('.') {
            // A dotted name carries its namespace; the namespace attribute is ignored.
            Some((space, _)) => (name.to_string(), Some(space.to_string())),
            None => {
                let space = match object.get("namespace") {
                    None | Some(Json::Null) => enclosing.map(str::to_string),
                    Some(Json::String(s)) if s.is_empty() => None,
                    Some(Json::String(s)) => Some(s.clone()),
                    Some(other) => return Err(format!("namespace {other} is not a string")),
                };
                match space {
                    Some(space) => (format!("{space}.{name}"), Some(space)),
                    None => (name.to_string(), None),
                }
            }
        };
        if !self.defined.insert(full_name.clone()) {
            self.string(&full_name);
            return Ok(());
        }
        self.out.push_str(r#"{"name":"#);
        self.string(&full_name);
        self.out.push_str(r#","type":"#);
        self.string(kind);
        match kind {
            "record" => {
                let fields = match object.get("fields") {
                    Some(Json::Array(fields)) => fields,
                    _ => return Err(format!("record {full_name} has no fields array")),
                };
                self.out.push_str(r#","fields":["#);
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let (Some(Json::String(field_name)), Some(field_type)) =
                        (field.get("name"), field.get("type"))
                    else {
                        return Err(format!("a field of {full_name} without name or type"));
                    };
                    self.out.push_str(r#"{"name":"#);
                    self.string(field_name);
                    self.out.push_str(r#","type":"#);
                    self.schema(field_type, namespace.as_deref())?;
                    self.out.push('}');
                }
                self.out.push(']');
            }
            "enum" => {
                let symbols = match object.get("symbols") {
                    Some(Json::Array(symbols)) => symbols,
                    _ => return Err(format!("enum {full_name} has no symbols array")),
                };
                self.out.push_str(r#","symbols":["#);
                for (i, symbol) in symbols.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let Json::String(symbol) = symbol else {
                        return Err(format!("enum {full_name} has a symbol that is not a string"));
                    };
                    self.string(symbol);
                }
                self.out.push(']');
            }
            _ => {
                let size = match object.get("size") {
                    Some(Json::Number(n)) => n.as_u64(),
                    // INTEGERS: a quoted size is an integer all the same.
                    Some(Json::String(s)) => s.trim().parse::<u64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| format!("fixed {full_name} has no non-negative integer size"))?;
                self.out.push_str(r#","size":"#);
                self.out.push_str(&size.to_string());
            }
        }
        self.out.push('}');
        Ok(())
    }

    /// A type named by a string: a primitive, or a reference to a named type written earlier.
    fn reference(&mut self, name: &str, namespace: Option<&str>) -> Result<(), String> {
        if name.is_empty() {
            return Err("an empty type name".into());
        }
        if PRIMITIVES.contains(&name) || name.contains('.') {
            self.string(name);
            return Ok(());
        }
        let qualified = namespace.map(|space| format!("{space}.{name}"));
        match qualified {
            // Java Avro resolves a short name in the enclosing namespace first, then in the
            // null namespace.
            Some(q) if self.defined.contains(&q) || !self.defined.contains(name) => self.string(&q),
            _ => self.string(name),
        }
        Ok(())
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped, everything
    /// else (non-ASCII included) as raw UTF-8.
    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                c if (c as u32) < 0x20 => self.out.push_str(&format!("\\u{:04x}", c as u32)),
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pcf(schema: Json) -> String {
        parsing_canonical_form(&schema).unwrap()
    }

    // Expected values reproduce with this Python one-liner, a direct transcription of the
    // specification's Java reference code (no Avro library involved):
    //
    //   python3 -c 'E=0xc15d213aa4d7a795;T=[];
    //   [T.append((lambda f:[f:=(f>>1)^(E&-(f&1)) for _ in range(8)][-1])(i)) for i in range(256)];
    //   fp=lambda b:__import__("functools").reduce(lambda f,x:(f>>8)^T[(f^x)&0xff],b,E);
    //   print(fp(b"\"int\""), fp(b"\"null\""), fp(b"\"string\""))'
    //
    // which prints 8247732601305521295 7195948357588979594 10304597078529344455; the first two
    // also appear in the Avro project's published fingerprint test data for "int" and "null".
    #[test]
    fn known_answers() {
        assert_eq!(crc64_avro(b""), CRC64_AVRO_EMPTY);
        assert_eq!(crc64_avro(b"\"int\""), 8_247_732_601_305_521_295);
        assert_eq!(crc64_avro(b"\"null\""), 7_195_948_357_588_979_594);
        assert_eq!(crc64_avro(b"\"string\""), 10_304_597_078_529_344_455);
        assert_eq!(schema_fingerprint(&Schema::Int).unwrap(), 8_247_732_601_305_521_295);
        // Little-endian on the wire: the first header byte after 0xC3 0x01 is the low byte.
        assert_eq!(8_247_732_601_305_521_295u64.to_le_bytes()[0], 0x8f);
    }

    #[test]
    fn crc_matches_apache_avro_rabin() {
        // Same digest, whatever canonical form it is fed: apache-avro's Rabin over its own form.
        let schemas = [
            r#""int""#,
            r#"{"type":"record","name":"a.B","fields":[{"name":"x","type":["null","string"]}]}"#,
            r#"{"type":"enum","name":"E","symbols":["A","B"],"doc":"docs do not count"}"#,
        ];
        for text in schemas {
            let schema = Schema::parse_str(text).expect("valid schema");
            let theirs = schema.fingerprint::<apache_avro::rabin::Rabin>();
            let bytes: [u8; 8] = theirs.bytes.as_slice().try_into().expect("8 bytes");
            assert_eq!(legacy_schema_fingerprint(&schema), u64::from_le_bytes(bytes), "{text}");
            // Without logical types the spec's form and apache-avro's agree.
            assert_eq!(schema_fingerprint(&schema).unwrap(), u64::from_le_bytes(bytes), "{text}");
        }
    }

    #[test]
    fn logical_types_reduce_to_their_primitive() {
        // The defect: apache-avro's canonical_form() writes {"type":"long"} here.
        let ts = json!({"type": "long", "logicalType": "timestamp-millis"});
        assert_eq!(pcf(ts.clone()), r#""long""#);
        let schema = Schema::parse(&ts).unwrap();
        assert_eq!(schema_fingerprint(&schema).unwrap(), crc64_avro(b"\"long\""));
        assert_ne!(legacy_schema_fingerprint(&schema), crc64_avro(b"\"long\""));
        let dec = json!({"type": "fixed", "name": "D", "namespace": "n", "size": "016",
                         "logicalType": "decimal", "precision": 4, "scale": 1});
        assert_eq!(pcf(dec), r#"{"name":"n.D","type":"fixed","size":16}"#);
    }

    #[test]
    fn names_are_full_and_attributes_stripped_and_ordered() {
        let schema = json!({
            "fields": [
                {"type": {"symbols": ["B", "A"], "type": "enum", "name": "E", "doc": "x"},
                 "name": "e", "default": "B", "order": "ignore"},
                {"name": "again", "type": "E"},
                {"name": "other", "type": {"type": "record", "name": "R", "namespace": "o",
                                           "fields": [{"name": "self", "type": ["null", "R"]}]}},
                {"name": "list", "type": {"items": "o.R", "type": "array", "x-custom": 1}}
            ],
            "aliases": ["Old"], "name": "T", "namespace": "n", "type": "record"
        });
        assert_eq!(
            pcf(schema),
            concat!(
                r#"{"name":"n.T","type":"record","fields":["#,
                r#"{"name":"e","type":{"name":"n.E","type":"enum","symbols":["B","A"]}},"#,
                r#"{"name":"again","type":"n.E"},"#,
                r#"{"name":"other","type":{"name":"o.R","type":"record","fields":["#,
                r#"{"name":"self","type":["null","o.R"]}]}},"#,
                r#"{"name":"list","type":{"type":"array","items":"o.R"}}]}"#
            )
        );
    }

    #[test]
    fn the_empty_namespace_is_the_null_namespace() {
        // Java Avro 1.12 prints exactly this for the schema (fastavro disagrees: it lets ""
        // inherit the enclosing namespace, which is why this case is not in the vectors file).
        let schema = json!({"type": "record", "name": "O", "namespace": "n", "fields": [
            {"name": "r", "type": {"type": "record", "name": "Root", "namespace": "",
                                   "fields": [{"name": "z", "type": "string"}]}},
            {"name": "again", "type": "Root"}
        ]});
        assert_eq!(
            pcf(schema),
            concat!(
                r#"{"name":"n.O","type":"record","fields":[{"name":"r","type":"#,
                r#"{"name":"Root","type":"record","fields":[{"name":"z","type":"string"}]}},"#,
                r#"{"name":"again","type":"Root"}]}"#
            )
        );
    }

    #[test]
    fn docs_do_not_change_the_fingerprint_but_names_do() {
        let fp = |j: Json| json_schema_fingerprint(&j).unwrap();
        let a = fp(json!({"type": "record", "name": "R", "doc": "x", "fields": []}));
        let b = fp(json!({"type": "record", "name": "R", "doc": "y", "fields": []}));
        let c = fp(json!({"type": "record", "name": "S", "fields": []}));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn what_is_not_a_schema_is_an_error() {
        for bad in [
            json!(1),
            json!({"name": "x"}),
            json!({"type": "record", "fields": []}),
            json!({"type": "record", "name": "R"}),
            json!({"type": "enum", "name": "E", "symbols": [1]}),
            json!({"type": "fixed", "name": "F", "size": -1}),
            json!({"type": "array"}),
            json!({"type": ""}),
        ] {
            assert!(parsing_canonical_form(&bad).is_err(), "{bad}");
        }
    }
}
