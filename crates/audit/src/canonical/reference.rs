//! The tree-building RFC 8785 canonicalizer that chained every entry up to this change, kept as
//! the reference the streaming one ([`super::canonicalize_str`]) is tested against: parse into a
//! [`Node`] tree (members sorted at parse time), then write the tree. Test-only.

use super::{
    cmp_utf16, unicode_escape, write_number, write_string, CanonicalError, MAX_DEPTH,
    MAX_QUOTED_LITERAL,
};

/// The canonical bytes the tree canonicalizer gives for `text` (the old `canonicalize_str`).
pub(crate) fn canonicalize_str(text: &str) -> Result<Vec<u8>, CanonicalError> {
    let tree = parse(text)?;
    let mut out = Vec::with_capacity(text.len());
    write_node(&mut out, &tree);
    Ok(out)
}

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
                        b'u' => out.push(unicode_escape(self.bytes, &mut self.pos, escape_at)?),
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

/// The differential test: the one-pass canonicalizer gives the bytes and errors of this one.
#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::canonicalize_str as streaming;
    use super::canonicalize_str as tree;

    fn same(text: &str) {
        assert_eq!(streaming(text), tree(text), "{text:?}");
    }

    #[test]
    fn agrees_on_hand_picked_inputs() {
        for text in [
            // Members in order, out of order, nested, duplicated at every level.
            r#"{"a":1,"b":2}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"b":{"d":1,"c":[{"f":1,"e":2}]},"a":{"y":1,"x":2},"c":3}"#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"a":{"x":1,"x":2},"b":1}"#,
            r#"{"b":1,"a":{"x":1,"y":2},"a":2}"#,
            r#"[{"z":1,"a":2},{"a":1,"z":2},{}]"#,
            r#"{"\u0061":1,"a":2}"#,
            r#"{"a\n":1,"a\u0000":2,"a":3,"a\"":4,"\\":5,"\/":6}"#,
            // UTF-16 order differs from UTF-8 order.
            "{\"\u{e000}\":1,\"\u{1f600}\":2,\"\u{ffff}\":3,\"\u{10000}\":4}",
            r#"{"\ue000":1,"\ud83d\ude00":2}"#,
            "{\"é\":1,\"e\":2,\"\u{7f}\":3,\"\u{80}\":4}",
            // Strings.
            r#""\u0000\u0001\b\t\n\u000b\f\r\u001f \" \\ \/ \u007f \u2028 </script>""#,
            r#""\u20AC\uD83D\uDE00\uDBFF\uDFFF""#,
            "\"plain ascii that is longer than eight bytes, and \u{e9}\u{1f600} too\"",
            r#""ends with an escape\n""#,
            r#""\"\"\"\"\"\"\"\"\"""#,
            // Numbers.
            "[1e21,1e20,-0,0,-0.0,5e-324,1.0,1E+2,1.5e-7,0.000001,1e-7,333333333.33333329]",
            "[9007199254740992,9007199254740993,123456789012345678901234567890,-999999999999999]",
            "[1000000000000000,100000000000000,-1000000000000000,1e400,-1e400]",
            "[1500000000000000.25,1e-400,0.1,0.30000000000000004,1.7976931348623157e308]",
            // Whitespace, literals, and what is not JSON.
            " \t\n\r{ \"a\" : [ true , false , null ] } \n",
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "\u{feff}1",
            "\"\t\"",
            "\"\\x\"",
            "\"abc",
            "\"\\u12\"",
            r#""\ud800""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            "01",
            "-",
            "1.",
            "1e",
            "tru",
            "[1 2]",
            "{\"a\" 1}",
            "{\"b\":1,\"a\":2",
            "{\"b\":1,\"a\":2,\"a\":3",
            "{\"b\":1,\"a\":2,\"a\":[}",
        ] {
            same(text);
        }
        let deep = format!("{}{}", "[{\"a\":".repeat(70), "}]".repeat(70));
        same(&deep);
        let deeper = format!("{}{}", "[{\"b\":1,\"a\":".repeat(60), "}]".repeat(60));
        same(&deeper);
    }

    /// Arbitrary JSON text: nested objects (names from a small alphabet so that duplicates and
    /// reordering are frequent), arrays, numbers in every notation, strings with escapes,
    /// surrogate pairs and characters whose UTF-16 and UTF-8 orders differ, and random spacing.
    fn json(depth: u32) -> BoxedStrategy<String> {
        let ws = prop_oneof![Just(""), Just(""), Just(" "), Just("\n\t "), Just("\r")];
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            number(),
            string(),
        ];
        if depth == 0 {
            return leaf.boxed();
        }
        let inner = json(depth - 1);
        prop_oneof![
            2 => leaf,
            1 => (prop::collection::vec((ws.clone(), inner.clone()), 0..5), ws.clone()).prop_map(
                |(items, end)| {
                    let items: Vec<String> =
                        items.into_iter().map(|(w, v)| format!("{w}{v}{w}")).collect();
                    format!("[{}{end}]", items.join(","))
                }
            ),
            1 => (prop::collection::vec((string(), ws, inner), 0..6)).prop_map(|members| {
                let members: Vec<String> =
                    members.into_iter().map(|(k, w, v)| format!("{w}{k}{w}:{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
        .boxed()
    }

    fn string() -> BoxedStrategy<String> {
        let piece = prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("ab".to_string()),
            Just("é".to_string()),
            Just("\u{e000}".to_string()),
            Just("\u{ffff}".to_string()),
            Just("\u{1f600}".to_string()),
            Just("\u{10000}".to_string()),
            Just("\u{7f}".to_string()),
            Just("\u{2028}".to_string()),
            Just("/".to_string()),
            Just(r"\/".to_string()),
            Just(r#"\""#.to_string()),
            Just(r"\\".to_string()),
            Just(r"\n".to_string()),
            Just(r"\b".to_string()),
            Just(r"\u0000".to_string()),
            Just(r"\u001F".to_string()),
            Just(r"\u0061".to_string()),
            Just(r"\u00e9".to_string()),
            Just(r"\uE000".to_string()),
            Just(r"\ud83d\ude00".to_string()),
            Just(r"\uD800\uDC00".to_string()),
            Just("xxxxxxxxxxxxxxxxxxxxxxx".to_string()),
        ];
        // Pieces that make the string invalid, rarely, so that most documents are valid.
        let invalid = prop_oneof![
            Just("\u{1}".to_string()),
            Just(r"\ud800".to_string()),
            Just(r"\udc00".to_string()),
            Just(r"\x".to_string()),
        ];
        let piece = prop_oneof![60 => piece, 1 => invalid];
        prop::collection::vec(piece, 0..6).prop_map(|p| format!("\"{}\"", p.concat())).boxed()
    }

    fn number() -> BoxedStrategy<String> {
        prop_oneof![
            any::<i64>().prop_map(|i| i.to_string()),
            (-1_000_000i64..1_000_000).prop_map(|i| i.to_string()),
            any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(|x| format!("{x:e}")),
            any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(|x| format!("{x}")),
            (any::<u32>(), 0u32..40, any::<bool>()).prop_map(|(m, e, neg)| format!(
                "{}{m}.{m}E{}{e}",
                if neg { "-" } else { "" },
                if neg { "+" } else { "-" }
            )),
            prop_oneof![
                Just("-0"),
                Just("0.0"),
                Just("-0.0"),
                Just("1e21"),
                Just("1e-7"),
                Just("5e-324"),
                Just("1e400"),
                Just("1.0"),
                Just("123456789012345678901234567890"),
                Just("999999999999999"),
                Just("1000000000000000"),
                Just("9007199254740993"),
            ]
            .prop_map(str::to_string),
        ]
        .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn agrees_on_generated_json(text in json(4)) {
            prop_assert_eq!(streaming(&text), tree(&text), "{:?}", text);
        }

        #[test]
        fn agrees_on_generated_valid_json(text in json(4).prop_filter("valid", |t| tree(t).is_ok())) {
            // The same, restricted to text that has a canonical form (most of it).
            prop_assert_eq!(streaming(&text), tree(&text), "{:?}", text);
        }

        #[test]
        fn agrees_on_mutated_json(text in json(3), cut in any::<prop::sample::Index>(), junk in prop_oneof![Just(""), Just(","), Just("}"), Just("]"), Just("\""), Just("\\"), Just(":"), Just("{"), Just("1")]) {
            // Truncated or corrupted text: the same error at the same offset.
            let mut at = cut.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let broken = format!("{}{junk}{}", &text[..at], &text[at..]);
            prop_assert_eq!(streaming(&broken), tree(&broken), "{:?}", broken);
            let truncated = &text[..at];
            prop_assert_eq!(streaming(truncated), tree(truncated), "{:?}", truncated);
        }
    }
}
