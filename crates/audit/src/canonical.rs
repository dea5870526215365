//! RFC 8785 JSON Canonicalization Scheme (JCS): the bytes that the audit chain hashes.
//!
//! ```text
//!  JSON text ──► strict parser ──────────────► tree ──► serializer ──► canonical bytes
//!               (I-JSON: duplicate keys,       (keys sorted by       (JCS string escapes,
//!                lone surrogates, non-finite    UTF-16 code units)    ECMAScript numbers)
//!                numbers are errors)
//!  serde_json::Value ────────────────────────────────► serializer ──► canonical bytes
//! ```
//!
//! Why our own implementation: the hash chain is only as good as the agreement between us and
//! every other team's verifier about these bytes, so the rules must be exactly RFC 8785's.
//! `serde_jcs` sorts keys by UTF-8 bytes, which differs from the required UTF-16 code-unit order
//! for keys that mix characters above U+E000 with characters outside the Basic Multilingual
//! Plane (e.g. `"\u{e000}"` sorts *after* `"\u{1f600}"` in UTF-16 but before it in UTF-8), and
//! `serde_json`'s default float parser is "best effort" (it may round a long decimal literal one
//! unit in the last place off), so [`canonicalize_str`] parses the text itself with Rust's
//! correctly rounded `f64::from_str` and also rejects duplicate keys, which `serde_json::Value`
//! would silently collapse to the last one (a classic way to make two parties hash different
//! documents that "look" the same).
//!
//! The rules (RFC 8785 section 3.2), all implemented here:
//! - no whitespace between tokens;
//! - object members sorted by the UTF-16 code units of their names (not locale, not UTF-8);
//! - strings: `"` and `\` escaped as `\"` and `\\`; U+0008, U+0009, U+000A, U+000C, U+000D as
//!   `\b`, `\t`, `\n`, `\f`, `\r`; every other character below U+0020 as `\u00xx` (lowercase
//!   hex); everything else, including `/`, U+007F and U+2028, written as itself in UTF-8;
//! - numbers: IEEE-754 doubles written as ECMAScript's `Number.prototype.toString` does
//!   ([`format_number`]): shortest round-trip digits (closest to the value, ties to even),
//!   plain notation for magnitudes in
//!   `[1e-6, 1e21)`, otherwise `d.ddde±x`; `-0` is written `0`. Consequently integers beyond
//!   2^53 lose precision exactly as they do in JavaScript (`9007199254740993` canonicalizes to
//!   `9007199254740992`): put large identifiers in strings.
//! - literals `null`, `true`, `false` as themselves.

use std::cmp::Ordering;

use thiserror::Error;

/// Deepest nesting of arrays and objects accepted. The parser and serializer recurse once per
/// level, so an unbounded depth would let a hostile payload such as `[[[[...` overflow the
/// stack; 128 is what `serde_json` allows by default and far above any real audit payload.
pub const MAX_DEPTH: usize = 128;

/// Longest prefix of an offending number literal quoted in an error message (a 1 MiB digit
/// string should not become a 1 MiB log line).
const MAX_QUOTED_LITERAL: usize = 40;

/// Why a JSON document has no canonical form. Every variant is a property of the input (never
/// of the environment), so a processor dead-letters the record rather than retrying it.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CanonicalError {
    /// The text is not JSON (RFC 8259) at all.
    #[error("invalid JSON at byte {offset}: {reason}")]
    Syntax {
        /// Byte offset in the input where the problem was found.
        offset: usize,
        /// What was expected or found.
        reason: &'static str,
    },
    /// An object names the same member twice, which I-JSON (RFC 7493) forbids and RFC 8785
    /// relies on: parsers disagree about which duplicate wins.
    #[error("duplicate object member name {key:?} at byte {offset}")]
    DuplicateKey {
        /// The repeated member name.
        key: String,
        /// Byte offset of the second occurrence.
        offset: usize,
    },
    /// A number literal overflows an IEEE-754 double (e.g. `1e400`); JSON has no Infinity.
    #[error("number {literal} at byte {offset} overflows an IEEE-754 double")]
    NumberOutOfRange {
        /// The literal (truncated to its first 40 characters).
        literal: String,
        /// Byte offset where the literal starts.
        offset: usize,
    },
    /// A `\uD800`-`\uDFFF` escape that is not part of a valid surrogate pair; it names no
    /// Unicode character, so the string has no UTF-8 form.
    #[error("lone UTF-16 surrogate \\u{unit:04x} at byte {offset}")]
    LoneSurrogate {
        /// The surrogate code unit.
        unit: u16,
        /// Byte offset of the escape.
        offset: usize,
    },
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    #[error("JSON nests deeper than {max} levels")]
    TooDeep {
        /// The limit, [`MAX_DEPTH`].
        max: usize,
    },
    /// A NaN or infinite number in a `serde_json::Value` (or handed to [`format_number`]):
    /// RFC 8785 section 3.2.2.3 requires an error.
    #[error("number {0} is not finite; JSON and RFC 8785 have no NaN or Infinity")]
    NonFinite(f64),
}

/// Canonical RFC 8785 bytes of an already parsed JSON value.
///
/// Every number is taken as the IEEE-754 double `serde_json::Number::as_f64` gives (integers are
/// rounded to the nearest double, as JavaScript would). Note that a `Value` produced by
/// `serde_json`'s parser has already lost duplicate members and, without serde_json's
/// `float_roundtrip` feature, may hold a float one unit in the last place away from the correctly
/// rounded value of its literal: when you have the JSON *text*, use [`canonicalize_str`].
pub fn canonicalize(value: &serde_json::Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::new();
    write_serde(&mut out, value, 0)?;
    Ok(out)
}

/// Parses JSON text strictly (RFC 8259 grammar plus I-JSON: no duplicate member names, no lone
/// surrogates, no numbers beyond the double range) and returns its canonical RFC 8785 bytes.
///
/// This is the entry point for anything that hashes: it sees the literal text, so numbers are
/// rounded correctly and duplicates are caught. Whitespace around the value is allowed; a byte
/// order mark is not (RFC 8259 section 8.1).
pub fn canonicalize_str(text: &str) -> Result<Vec<u8>, CanonicalError> {
    let tree = parse(text)?;
    let mut out = Vec::with_capacity(text.len());
    write_node(&mut out, &tree);
    Ok(out)
}

/// Formats a double as ECMAScript's `Number.prototype.toString()` (ECMA-262, Number::toString
/// with radix 10), which RFC 8785 section 3.2.2.3 adopts for every JSON number.
///
/// Examples: `1e21` → `1e+21`, `1e20` → `100000000000000000000`, `1e-7` → `1e-7`,
/// `0.000001` → `0.000001`, `-0.0` → `0`, `5e-324` → `5e-324`, `4.5` → `4.5`.
pub fn format_number(x: f64) -> Result<String, CanonicalError> {
    let mut out = Vec::with_capacity(24);
    write_number(&mut out, x)?;
    // Only ASCII digits, '.', '-', '+' and 'e' are ever written.
    Ok(out.into_iter().map(char::from).collect())
}

/// Orders two strings by their UTF-16 code units, the member order RFC 8785 section 3.2.3
/// prescribes. It equals Unicode code point order except that characters U+E000..U+FFFF sort
/// after supplementary characters (which UTF-16 writes as surrogates D800..DFFF).
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    // Fast path: identical prefixes contribute nothing; compare from the first differing char.
    let mut ca = a.chars();
    let mut cb = b.chars();
    loop {
        match (ca.next(), cb.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x == y => continue,
            (Some(x), Some(y)) => return utf16_key(x).cmp(&utf16_key(y)),
        }
    }
}

/// The UTF-16 code units of one character as a comparable pair: (first unit, second unit or 0).
/// Two different characters never compare equal, and the order is UTF-16's.
fn utf16_key(c: char) -> (u16, u16) {
    let mut units = [0u16; 2];
    let encoded = c.encode_utf16(&mut units);
    (encoded[0], encoded.get(1).copied().unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// Parsed tree

/// A parsed JSON value whose numbers are already doubles and whose object members are already
/// in canonical order (sorting happens once, at parse time, where duplicates are detected).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// Parses JSON text into a [`Node`] tree (see [`canonicalize_str`] for the rules).
pub(crate) fn parse(text: &str) -> Result<Node, CanonicalError> {
    let mut p = Parser { src: text, bytes: text.as_bytes(), pos: 0 };
    p.skip_ws();
    let node = p.value(0)?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.syntax("unexpected characters after the JSON value"));
    }
    Ok(node)
}

/// Writes a [`Node`] tree canonically. Infallible: parsing already rejected everything that
/// has no canonical form.
pub(crate) fn write_node(out: &mut Vec<u8>, node: &Node) {
    match node {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Bool(true) => out.extend_from_slice(b"true"),
        Node::Bool(false) => out.extend_from_slice(b"false"),
        Node::Number(x) => {
            // The parser only produces finite doubles; a non-finite one cannot get here.
            if write_number(out, *x).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        Node::String(s) => write_string(out, s),
        Node::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_node(out, item);
            }
            out.push(b']');
        }
        Node::Object(members) => {
            out.push(b'{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_node(out, item);
            }
            out.push(b'}');
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn syntax(&self, reason: &'static str) -> CanonicalError {
        CanonicalError::Syntax { offset: self.pos, reason }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// RFC 8259 whitespace: space, tab, line feed, carriage return. Nothing else (no BOM, no
    /// U+00A0).
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &'static [u8], node: Node) -> Result<Node, CanonicalError> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(node)
        } else {
            Err(self.syntax("invalid literal (expected null, true or false)"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, CanonicalError> {
        match self.peek() {
            None => Err(self.syntax("unexpected end of input, expected a value")),
            Some(b'n') => self.literal(b"null", Node::Null),
            Some(b't') => self.literal(b"true", Node::Bool(true)),
            Some(b'f') => self.literal(b"false", Node::Bool(false)),
            Some(b'"') => Ok(Node::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(0xEF) if self.pos == 0 => Err(self.syntax("byte order mark before the value")),
            Some(_) => Err(self.syntax("unexpected character, expected a value")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Node, CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(CanonicalError::TooDeep { max: MAX_DEPTH });
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Node::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Node::Array(items));
                }
                None => return Err(self.syntax("unexpected end of input in an array")),
                Some(_) => return Err(self.syntax("expected ',' or ']' in an array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Node, CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(CanonicalError::TooDeep { max: MAX_DEPTH });
        }
        self.pos += 1; // '{'
                       // (name, value, offset of the name) in input order.
        let mut members: Vec<(String, Node, usize)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Node::Object(Vec::new()));
        }
        loop {
            self.skip_ws();
            let at = self.pos;
            match self.peek() {
                Some(b'"') => {}
                None => return Err(self.syntax("unexpected end of input in an object")),
                Some(_) => return Err(self.syntax("expected a member name string")),
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.syntax("expected ':' after a member name"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((key, value, at));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                None => return Err(self.syntax("unexpected end of input in an object")),
                Some(_) => return Err(self.syntax("expected ',' or '}' in an object")),
            }
        }
        // A stable sort keeps duplicates in input order, so the second of two equal neighbours
        // is the later occurrence, which is the one the error should point at.
        members.sort_by(|a, b| cmp_utf16(&a.0, &b.0));
        if let Some(pair) = members.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(CanonicalError::DuplicateKey { key: pair[1].0.clone(), offset: pair[1].2 });
        }
        Ok(Node::Object(members.into_iter().map(|(k, v, _)| (k, v)).collect()))
    }

    fn hex4(&mut self) -> Result<u16, CanonicalError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.syntax("truncated \\u escape"))?;
        let mut unit = 0u16;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.syntax("invalid hex digit in a \\u escape")),
            };
            unit = (unit << 4) | u16::from(v);
        }
        self.pos += 4;
        Ok(unit)
    }

    /// Parses a string starting at the opening quote.
    fn string(&mut self) -> Result<String, CanonicalError> {
        self.pos += 1; // '"'
        let mut out = String::new();
        let mut run_start = self.pos;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.syntax("unterminated string"));
            };
            match b {
                b'"' => {
                    out.push_str(&self.src[run_start..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    out.push_str(&self.src[run_start..self.pos]);
                    let escape_at = self.pos;
                    self.pos += 1;
                    let Some(e) = self.peek() else {
                        return Err(self.syntax("unterminated escape"));
                    };
                    self.pos += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape(escape_at)?),
                        _ => {
                            self.pos -= 1;
                            return Err(self.syntax("invalid escape character"));
                        }
                    }
                    run_start = self.pos;
                }
                0x00..=0x1F => {
                    return Err(self.syntax("unescaped control character in a string"));
                }
                // Any other byte, including the bytes of multi-byte UTF-8 sequences (all >= 0x80,
                // so never mistaken for '"' or '\'), belongs to the current run. The input is a
                // &str, so runs are valid UTF-8 and slicing at these ASCII positions is exact.
                _ => self.pos += 1,
            }
        }
    }

    /// The character of a `\uXXXX` escape (the `\u` already consumed), combining a surrogate
    /// pair written as two escapes.
    fn unicode_escape(&mut self, escape_at: usize) -> Result<char, CanonicalError> {
        let unit = self.hex4()?;
        let lone = CanonicalError::LoneSurrogate { unit, offset: escape_at };
        match unit {
            0xD800..=0xDBFF => {
                if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(lone);
                }
                let save = self.pos;
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    self.pos = save;
                    return Err(lone);
                }
                let c = 0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
                char::from_u32(c).ok_or(lone)
            }
            0xDC00..=0xDFFF => Err(lone),
            _ => char::from_u32(u32::from(unit)).ok_or(lone),
        }
    }

    /// Parses a number per the RFC 8259 grammar
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` into the correctly rounded
    /// double. Underflow to zero is accepted, as in JavaScript (`1e-400` is `0`).
    fn number(&mut self) -> Result<Node, CanonicalError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.syntax("expected a digit in a number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("expected a digit after the decimal point"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("expected a digit in an exponent"));
            }
            self.digits();
        }
        let literal = &self.src[start..self.pos];
        let x: f64 = literal
            .parse()
            .map_err(|_| CanonicalError::Syntax { offset: start, reason: "invalid number" })?;
        if !x.is_finite() {
            return Err(CanonicalError::NumberOutOfRange {
                literal: literal.chars().take(MAX_QUOTED_LITERAL).collect(),
                offset: start,
            });
        }
        Ok(Node::Number(x))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serializer

fn write_serde(
    out: &mut Vec<u8>,
    value: &serde_json::Value,
    depth: usize,
) -> Result<(), CanonicalError> {
    use serde_json::Value as J;
    match value {
        J::Null => out.extend_from_slice(b"null"),
        J::Bool(true) => out.extend_from_slice(b"true"),
        J::Bool(false) => out.extend_from_slice(b"false"),
        J::Number(n) => {
            let x = n.as_f64().ok_or(CanonicalError::NonFinite(f64::NAN))?;
            write_number(out, x)?;
        }
        J::String(s) => write_string(out, s),
        J::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(CanonicalError::TooDeep { max: MAX_DEPTH });
            }
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_serde(out, item, depth + 1)?;
            }
            out.push(b']');
        }
        J::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(CanonicalError::TooDeep { max: MAX_DEPTH });
            }
            // serde_json's map order (UTF-8 bytes, or insertion order with `preserve_order`) is
            // not the canonical one: sort by UTF-16 code units.
            let mut members: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            members.sort_by(|a, b| cmp_utf16(a.0, b.0));
            out.push(b'{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_serde(out, item, depth + 1)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Writes a JSON string with exactly the escapes RFC 8785 section 3.2.2.2 requires.
pub(crate) fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0A => b"\\n",
            0x0C => b"\\f",
            0x0D => b"\\r",
            0x00..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xF)]);
        } else {
            out.extend_from_slice(escape);
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// Writes `x` as ECMAScript `Number::toString(x)` (see [`format_number`]).
///
/// The digits and layout come from `ryu_js`, a Ryu-based implementation of exactly this
/// algorithm. Why not Rust's own shortest formatting (`{:e}`): it breaks exact ties between two
/// shortest candidates upwards, while ECMA-262 (the recommended step 5 that V8 and the RFC 8785
/// reference implementations follow) picks the closest candidate and, on a tie, the even one:
/// `1500000000000000.25` must be written `1500000000000000.2`, not `...0.3`. The tests compare
/// against an independent reference built on exact decimal expansion.
fn write_number(out: &mut Vec<u8>, x: f64) -> Result<(), CanonicalError> {
    if !x.is_finite() {
        return Err(CanonicalError::NonFinite(x));
    }
    if x == 0.0 {
        out.push(b'0'); // both +0 and -0
        return Ok(());
    }
    out.extend_from_slice(ryu_js::Buffer::new().format_finite(x).as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        String::from_utf8(canonicalize_str(text).unwrap()).unwrap()
    }

    #[test]
    fn utf16_order_differs_from_utf8_order() {
        // U+E000 is one code unit E000; U+1F600 is the surrogate pair D83D DE00. UTF-16 puts
        // the emoji first, UTF-8 (EE 80 80 vs F0 9F 98 80) and code point order put it last.
        assert_eq!(cmp_utf16("\u{e000}", "\u{1f600}"), Ordering::Greater);
        assert!("\u{e000}".as_bytes() < "\u{1f600}".as_bytes());
        assert_eq!(canon("{\"\u{e000}\":1,\"\u{1f600}\":2}"), "{\"\u{1f600}\":2,\"\u{e000}\":1}");
        assert_eq!(
            canonicalize(&serde_json::json!({"\u{e000}": 1, "\u{1f600}": 2})).unwrap(),
            "{\"\u{1f600}\":2,\"\u{e000}\":1}".as_bytes()
        );
        // Within the BMP below the surrogates, UTF-16 order is code point order.
        assert_eq!(
            canon(r#"{"b":1,"a":2,"B":3,"é":4,"e":5}"#),
            r#"{"B":3,"a":2,"b":1,"e":5,"é":4}"#
        );
        // A prefix sorts first.
        assert_eq!(canon(r#"{"ab":1,"a":2}"#), r#"{"a":2,"ab":1}"#);
        // Two supplementary characters with the same high surrogate order by the low one.
        assert_eq!(cmp_utf16("\u{1f601}", "\u{1f600}"), Ordering::Greater);
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            canon(r#""\u0000\u0001\b\t\n\u000b\f\r\u001f \" \\ \/ \u007f \u2028 </script>""#),
            "\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f \\\" \\\\ / \u{7f} \u{2028} </script>\""
        );
        assert_eq!(canon(r#""\u20AC\uD83D\uDE00""#), "\"€😀\"");
    }

    #[test]
    fn numbers_follow_ecmascript() {
        // Inputs as decimal text (parsed correctly rounded); expected outputs checked against
        // node: `node -e 'console.log(String(1e21))'`.
        let cases: &[(&str, &str)] = &[
            ("0", "0"),
            ("-0", "0"),
            ("1", "1"),
            ("-1", "-1"),
            ("4.5", "4.5"),
            ("0.002", "0.002"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("123456789012345680000", "123456789012345680000"),
            ("1e-7", "1e-7"),
            ("1e-6", "0.000001"),
            ("1.5e-7", "1.5e-7"),
            ("5e-324", "5e-324"),
            ("-5e-324", "-5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("2.2250738585072014e-308", "2.2250738585072014e-308"),
            ("333333333.33333329", "333333333.3333333"),
            ("1e30", "1e+30"),
            ("9007199254740992", "9007199254740992"),
            ("9007199254740993", "9007199254740992"),
            ("1152921504606846976", "1152921504606847000"),
            ("0.1", "0.1"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("1.7976931348623157e300", "1.7976931348623156e+300"),
            ("123e-20", "1.23e-18"),
            ("-1234.5678", "-1234.5678"),
            // An exact tie between two shortest candidates goes to the even one.
            ("1500000000000000.25", "1500000000000000.2"),
            ("1500000000000000.75", "1500000000000000.8"),
            ("1e-5", "0.00001"),
        ];
        for &(input, want) in cases {
            let x: f64 = input.parse().unwrap();
            assert_eq!(format_number(x).unwrap(), want, "{input}");
        }
        assert!(matches!(format_number(f64::NAN), Err(CanonicalError::NonFinite(_))));
        assert!(matches!(format_number(f64::INFINITY), Err(CanonicalError::NonFinite(_))));
        assert_eq!(
            canon("[-0, 1E+2, 1.0e-7, 0.0000010, 9007199254740993]"),
            "[0,100,1e-7,0.000001,9007199254740992]"
        );
    }

    #[test]
    fn strict_parsing_rejects_what_has_no_canonical_form() {
        let dup = canonicalize_str(r#"{"a":1,"b":2,"a":3}"#).unwrap_err();
        assert_eq!(dup, CanonicalError::DuplicateKey { key: "a".into(), offset: 13 });
        // Nested duplicates, and duplicates written with different escapes, are caught too.
        assert!(matches!(
            canonicalize_str(r#"[{"x":{"\u0061":1,"a":2}}]"#),
            Err(CanonicalError::DuplicateKey { .. })
        ));
        assert!(matches!(
            canonicalize_str("[1e400]"),
            Err(CanonicalError::NumberOutOfRange { offset: 1, .. })
        ));
        assert!(matches!(
            canonicalize_str(r#""\ud800""#),
            Err(CanonicalError::LoneSurrogate { unit: 0xd800, offset: 1 })
        ));
        assert!(matches!(
            canonicalize_str(r#""\udc00\ud800""#),
            Err(CanonicalError::LoneSurrogate { unit: 0xdc00, .. })
        ));
        assert!(matches!(
            canonicalize_str(r#""\ud800\u0041""#),
            Err(CanonicalError::LoneSurrogate { unit: 0xd800, .. })
        ));
        for bad in [
            "",
            " ",
            "nul",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "NaN",
            "Infinity",
            "[1 2]",
            "\"\t\"",
            "\"\\x\"",
            "\"abc",
            "\u{feff}1",
            "1 2",
            "[\"\\u12\"]",
            "{\"a\" 1}",
            "'a'",
            "tru",
            "[",
            "{",
        ] {
            assert!(
                matches!(canonicalize_str(bad), Err(CanonicalError::Syntax { .. })),
                "{bad:?} should be a syntax error"
            );
        }
        assert_eq!(canonicalize_str("1e-400").unwrap(), b"0");
    }

    #[test]
    fn depth_is_limited_without_overflowing_the_stack() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(canonicalize_str(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(canonicalize_str(&deep), Err(CanonicalError::TooDeep { max: MAX_DEPTH }));
        let hostile = "[{\"a\":".repeat(100_000);
        assert!(matches!(canonicalize_str(&hostile), Err(CanonicalError::TooDeep { .. })));

        let mut v = serde_json::Value::Null;
        for _ in 0..MAX_DEPTH + 1 {
            v = serde_json::Value::Array(vec![v]);
        }
        assert_eq!(canonicalize(&v), Err(CanonicalError::TooDeep { max: MAX_DEPTH }));
    }

    #[test]
    fn value_and_text_paths_agree() {
        let text = r#"{"z":[1,2.5,-0.0,"x\u0001"],"a":{"\u00e9":null,"e":true},"m":1e21}"#;
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(canonicalize(&v).unwrap(), canonicalize_str(text).unwrap());
        assert_eq!(
            canon(text),
            "{\"a\":{\"e\":true,\"é\":null},\"m\":1e+21,\"z\":[1,2.5,0,\"x\\u0001\"]}"
        );
    }

    #[test]
    fn canonical_output_is_a_fixed_point() {
        let text = r#"{"b":[{"y":1,"x":[0.5,1e-9,"\n"]}],"a":"\u2028"}"#;
        let once = canonicalize_str(text).unwrap();
        let twice = canonicalize_str(std::str::from_utf8(&once).unwrap()).unwrap();
        assert_eq!(once, twice);
    }
}
