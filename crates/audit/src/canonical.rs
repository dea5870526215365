//! RFC 8785 JSON Canonicalization Scheme (JCS): the bytes that the audit chain hashes.
//!
//! ```text
//!  JSON text ──► one pass: strict parser writing canonical bytes as it reads ──► canonical bytes
//!               (I-JSON: duplicate keys, lone     (JCS string escapes, ECMAScript numbers;
//!                surrogates, non-finite numbers    an object whose members arrive out of
//!                are errors)                       UTF-16 order is rewritten in order once
//!                                                  it closes)
//!  serde_json::Value ─────────────────────────────────► serializer ──► canonical bytes
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
    let mut out = Vec::with_capacity(text.len());
    canonicalize_into(&mut out, text)?;
    Ok(out)
}

/// [`canonicalize_str`] appending to `out`, so a caller that embeds the canonical form in a
/// bigger document (the audit chain's event object) writes it in place, without a copy. On an
/// error `out` is left as it was.
pub fn canonicalize_into(out: &mut Vec<u8>, text: &str) -> Result<(), CanonicalError> {
    let start = out.len();
    let mut w = Writer {
        src: text,
        bytes: text.as_bytes(),
        pos: 0,
        out,
        members: Vec::new(),
        scratch: Vec::new(),
    };
    let result = w.document();
    if result.is_err() {
        w.out.truncate(start);
    }
    result
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
// One-pass canonicalizer

/// A member name as objects sort it: its decoded text, borrowed from the input when the name has
/// no escapes (the usual case), else decoded into a string of its own.
enum Name<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Name<'_> {
    fn as_str(&self) -> &str {
        match self {
            Name::Borrowed(s) => s,
            Name::Owned(s) => s,
        }
    }
}

/// One member of an object being written: its name, the output range of its `"name":value`
/// bytes, and the input offset of its name (what a duplicate's error points at).
struct Member<'a> {
    name: Name<'a>,
    start: usize,
    end: usize,
    at: usize,
}

/// Reads JSON text and writes its canonical form in the same pass, without building a tree.
///
/// Every token can be written the moment it is read except member order. Members are written in
/// input order and noted on `members`, a stack shared by all open objects (a nested object pushes
/// above its parent's members and pops them before the parent reads on). When the names arrived
/// in strictly increasing UTF-16 order, which is what most producers emit (serde_json's default
/// map, `json.dumps(sort_keys=True)`, every JCS library, and canonical text itself), the bytes
/// are already canonical and cannot hold a duplicate, so nothing moves. Otherwise the object is
/// sorted when it closes (stable, so of two equal names the later one is reported, as the tree
/// canonicalizer did) and its bytes rewritten in that order through `scratch`. Errors are the
/// same, at the same offsets, as those of the tree canonicalizer this replaced
/// (`canonical/reference.rs`, which the tests compare against).
struct Writer<'a, 'o> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    out: &'o mut Vec<u8>,
    members: Vec<Member<'a>>,
    scratch: Vec<u8>,
}

impl<'a> Writer<'a, '_> {
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

    fn document(&mut self) -> Result<(), CanonicalError> {
        self.skip_ws();
        self.value(0)?;
        self.skip_ws();
        if self.pos != self.bytes.len() {
            return Err(self.syntax("unexpected characters after the JSON value"));
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), CanonicalError> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            self.out.extend_from_slice(word);
            Ok(())
        } else {
            Err(self.syntax("invalid literal (expected null, true or false)"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), CanonicalError> {
        match self.peek() {
            None => Err(self.syntax("unexpected end of input, expected a value")),
            Some(b'n') => self.literal(b"null"),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(0xEF) if self.pos == 0 => Err(self.syntax("byte order mark before the value")),
            Some(_) => Err(self.syntax("unexpected character, expected a value")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(CanonicalError::TooDeep { max: MAX_DEPTH });
        }
        self.pos += 1; // '['
        self.out.push(b'[');
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.out.push(b']');
            return Ok(());
        }
        loop {
            self.skip_ws();
            self.value(depth)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.out.push(b',');
                }
                Some(b']') => {
                    self.pos += 1;
                    self.out.push(b']');
                    return Ok(());
                }
                None => return Err(self.syntax("unexpected end of input in an array")),
                Some(_) => return Err(self.syntax("expected ',' or ']' in an array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(CanonicalError::TooDeep { max: MAX_DEPTH });
        }
        self.pos += 1; // '{'
        let open = self.out.len();
        self.out.push(b'{');
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.out.push(b'}');
            return Ok(());
        }
        let base = self.members.len();
        let mut in_order = true;
        loop {
            self.skip_ws();
            let at = self.pos;
            match self.peek() {
                Some(b'"') => {}
                None => return Err(self.syntax("unexpected end of input in an object")),
                Some(_) => return Err(self.syntax("expected a member name string")),
            }
            if self.members.len() > base {
                self.out.push(b',');
            }
            let start = self.out.len();
            let name = if self.string()? {
                Name::Owned(decode_canonical_string(&self.out[start + 1..self.out.len() - 1]))
            } else {
                let src = self.src;
                Name::Borrowed(&src[at + 1..self.pos - 1])
            };
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.syntax("expected ':' after a member name"));
            }
            self.pos += 1;
            self.out.push(b':');
            self.skip_ws();
            self.value(depth)?;
            if in_order && self.members.len() > base {
                if let Some(previous) = self.members.last() {
                    in_order = cmp_utf16(previous.name.as_str(), name.as_str()) == Ordering::Less;
                }
            }
            self.members.push(Member { name, start, end: self.out.len(), at });
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
        if !in_order {
            self.reorder(base, open)?;
        }
        self.out.push(b'}');
        self.members.truncate(base);
        Ok(())
    }

    /// Puts the members `base..` of the object whose `{` is at output offset `open` in UTF-16
    /// order, or reports the first duplicate name.
    fn reorder(&mut self, base: usize, open: usize) -> Result<(), CanonicalError> {
        let members = &mut self.members[base..];
        members.sort_by(|a, b| cmp_utf16(a.name.as_str(), b.name.as_str()));
        if let Some(pair) = members.windows(2).find(|w| w[0].name.as_str() == w[1].name.as_str()) {
            return Err(CanonicalError::DuplicateKey {
                key: pair[1].name.as_str().to_string(),
                offset: pair[1].at,
            });
        }
        let body = open + 1;
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.out[body..]);
        self.out.truncate(body);
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(&self.scratch[m.start - body..m.end - body]);
        }
        Ok(())
    }

    /// Reads a string starting at its opening quote and writes it canonically; returns whether
    /// it contained escapes.
    fn string(&mut self) -> Result<bool, CanonicalError> {
        self.pos += 1; // '"'
        self.out.push(b'"');
        let mut escaped = false;
        let mut run_start = self.pos;
        loop {
            self.pos = plain_run_end(self.bytes, self.pos);
            let Some(b) = self.peek() else {
                return Err(self.syntax("unterminated string"));
            };
            match b {
                b'"' => {
                    // The input is a &str, so a run between ASCII delimiters is valid UTF-8,
                    // and any byte >= 0x80 needs no escape: copy it as it is.
                    self.out.extend_from_slice(&self.bytes[run_start..self.pos]);
                    self.pos += 1;
                    self.out.push(b'"');
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.out.extend_from_slice(&self.bytes[run_start..self.pos]);
                    let escape_at = self.pos;
                    self.pos += 1;
                    let Some(e) = self.peek() else {
                        return Err(self.syntax("unterminated escape"));
                    };
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => unicode_escape(self.bytes, &mut self.pos, escape_at)?,
                        _ => {
                            self.pos -= 1;
                            return Err(self.syntax("invalid escape character"));
                        }
                    };
                    write_char(self.out, c);
                    run_start = self.pos;
                }
                // plain_run_end stops only at '"', '\' and bytes below 0x20.
                _ => return Err(self.syntax("unescaped control character in a string")),
            }
        }
    }

    /// Reads a number per the RFC 8259 grammar
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` and writes the correctly rounded
    /// double as ECMAScript does. Underflow to zero is accepted, as in JavaScript (`1e-400` is
    /// `0`).
    fn number(&mut self) -> Result<(), CanonicalError> {
        let start = self.pos;
        let mut integer = true;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.syntax("expected a digit in a number")),
        }
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("expected a digit after the decimal point"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
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
        // An integer of at most 15 digits (no leading zeros: the grammar forbids them) is exactly
        // a double below 2^53, which Number::toString writes as those digits: copy it. `-0` is
        // the one such literal whose canonical form differs.
        let digits = literal.len() - usize::from(literal.starts_with('-'));
        if integer && digits <= MAX_EXACT_DIGITS {
            if literal == "-0" {
                self.out.push(b'0');
            } else {
                self.out.extend_from_slice(literal.as_bytes());
            }
            return Ok(());
        }
        let x: f64 = literal
            .parse()
            .map_err(|_| CanonicalError::Syntax { offset: start, reason: "invalid number" })?;
        if !x.is_finite() {
            return Err(CanonicalError::NumberOutOfRange {
                literal: literal.chars().take(MAX_QUOTED_LITERAL).collect(),
                offset: start,
            });
        }
        write_number(self.out, x)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

/// Integer literals with at most this many digits are copied as they are (10^15 < 2^53).
const MAX_EXACT_DIGITS: usize = 15;
/// The four hex digits of a `\uXXXX` escape at `*pos`, as a UTF-16 code unit.
fn hex4(bytes: &[u8], pos: &mut usize) -> Result<u16, CanonicalError> {
    let syntax = |reason| CanonicalError::Syntax { offset: *pos, reason };
    let digits = bytes.get(*pos..*pos + 4).ok_or_else(|| syntax("truncated \\u escape"))?;
    let mut unit = 0u16;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(syntax("invalid hex digit in a \\u escape")),
        };
        unit = (unit << 4) | u16::from(v);
    }
    *pos += 4;
    Ok(unit)
}

/// The character of a `\uXXXX` escape (the `\u` already consumed, `*pos` at its digits),
/// combining a surrogate pair written as two escapes. Shared by the streaming canonicalizer and
/// its test reference, so that both read escapes alike.
fn unicode_escape(bytes: &[u8], pos: &mut usize, escape_at: usize) -> Result<char, CanonicalError> {
    let unit = hex4(bytes, pos)?;
    let lone = CanonicalError::LoneSurrogate { unit, offset: escape_at };
    match unit {
        0xD800..=0xDBFF => {
            if bytes.get(*pos..*pos + 2) != Some(b"\\u") {
                return Err(lone);
            }
            let save = *pos;
            *pos += 2;
            let low = hex4(bytes, pos)?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                *pos = save;
                return Err(lone);
            }
            let c = 0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
            char::from_u32(c).ok_or(lone)
        }
        0xDC00..=0xDFFF => Err(lone),
        _ => char::from_u32(u32::from(unit)).ok_or(lone),
    }
}

/// The end of the run of bytes from `i` on that a JSON string copies unchanged: the index of the
/// first `"`, `\` or byte below 0x20, or `bytes.len()`.
///
/// Eight bytes per step (SWAR): the payload strings are most of an audit event's bytes. For each
/// of the three conditions, `(v - 0x01..) & !v & 0x80..` flags the bytes of `v` that are zero
/// (resp. below 0x20 for `x - 0x20..`); a borrow can also flag bytes *above* a true hit, never
/// below one, so the lowest flagged byte across the three is exactly the first stop byte.
fn plain_run_end(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let stops = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGHS;
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// Writes one character of a string's content with RFC 8785's escapes.
fn write_char(out: &mut Vec<u8>, c: char) {
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\u{8}' => out.extend_from_slice(b"\\b"),
        '\t' => out.extend_from_slice(b"\\t"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\u{c}' => out.extend_from_slice(b"\\f"),
        '\r' => out.extend_from_slice(b"\\r"),
        c if u32::from(c) < 0x20 => write_control_escape(out, c as u8),
        c => {
            let mut utf8 = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
}

/// `\u00xx` (lowercase hex) for a control character without a short escape.
fn write_control_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u00");
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0xF)]);
}

/// The text of a string's content as [`write_char`] wrote it (without the quotes): undoes
/// exactly the escapes RFC 8785 writes. Used for member names that had escapes in the input,
/// which sort by their text, not by their spelling.
fn decode_canonical_string(canonical: &[u8]) -> String {
    let mut text = Vec::with_capacity(canonical.len());
    let mut rest = canonical;
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'\\' {
            text.push(b);
            rest = tail;
            continue;
        }
        let (decoded, skip) = match tail.first() {
            Some(b'b') => (0x08, 1),
            Some(b't') => (0x09, 1),
            Some(b'n') => (0x0A, 1),
            Some(b'f') => (0x0C, 1),
            Some(b'r') => (0x0D, 1),
            // `\u00xx`: only control characters are written this way.
            Some(b'u') => {
                (tail.get(3..5).map_or(0, |h| hex_nibble(h[0]) << 4 | hex_nibble(h[1])), 5)
            }
            // `\"` and `\\`.
            Some(&other) => (other, 1),
            None => (b'\\', 0),
        };
        text.push(decoded);
        rest = tail.get(skip..).unwrap_or_default();
    }
    // Everything between the escapes was copied from a &str, so this is valid UTF-8.
    String::from_utf8(text).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex_nibble(h: u8) -> u8 {
    match h {
        b'0'..=b'9' => h - b'0',
        b'a'..=b'f' => h - b'a' + 10,
        _ => 0,
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
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    loop {
        let stop = plain_run_end(bytes, run_start);
        out.extend_from_slice(&bytes[run_start..stop]);
        match bytes.get(stop) {
            // A stop byte is '"', '\\' or a control character: ASCII, so one char.
            Some(&b) => write_char(out, char::from(b)),
            None => break,
        }
        run_start = stop + 1;
    }
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
mod reference;

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
