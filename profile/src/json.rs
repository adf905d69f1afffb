//! A strict JSON parser (RFC 8259) into a tree that keeps every object member in source
//! order, duplicates included.
//!
//! `serde_json::Value` keeps only the last of two equal keys, which is exactly the silent
//! behaviour of Go's `encoding/json` that turns `{"defaultAction": "SCMP_ACT_ERRNO", ...,
//! "defaultAction": "SCMP_ACT_ALLOW"}` into an allow-all profile. Validation needs to see
//! both. The parser is our own because it is on the publish path: strings borrow from the
//! input unless they hold escapes, and there is no visitor machinery, which keeps validating
//! Docker's default profile well under 100 µs. A property test checks it against serde_json
//! (same documents accepted, same values). It refuses comments, trailing commas, NaN,
//! leading zeros, control characters in strings, lone surrogates and nesting deeper than 128.

use std::borrow::Cow;

/// A number as it was written: integers keep full 64-bit precision, anything else
/// (fractions, exponents, integers beyond 64 bits) is a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A non-negative integer that fits in `u64`.
    Unsigned(u64),
    /// A negative integer that fits in `i64`.
    Negative(i64),
    /// Anything else: a fraction, an exponent, or an integer too large for 64 bits.
    Float(f64),
}

/// A parsed JSON value. Objects are member lists in source order, so duplicate keys survive.
/// Strings borrow from the input unless they contain escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object, members in source order.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl Json<'_> {
    /// The JSON type name used in diagnostics ("a string", "an array", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// Why bytes are not a JSON document we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Zero bytes, or only whitespace.
    #[error("the file is empty")]
    Empty,
    /// Starts with a UTF-8 byte order mark.
    #[error("the file starts with a UTF-8 byte order mark, which JSON parsers in runtimes reject")]
    Bom,
    /// Not valid UTF-8.
    #[error("the file is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// Not JSON: syntax error, comment, trailing comma, ...
    #[error("not valid JSON at line {line} column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the tokenizer said.
        message: String,
    },
}

/// Nesting deeper than this is refused (as serde_json does), so input cannot exhaust the
/// stack.
const MAX_DEPTH: usize = 128;

/// Parse bytes strictly into a [`Json`] tree.
pub fn parse(bytes: &[u8]) -> Result<Json<'_>, ParseError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(ParseError::Bom);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ParseError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    if text.trim_matches([' ', '\t', '\n', '\r']).is_empty() {
        return Err(ParseError::Empty);
    }
    let mut p = Parser {
        src: text,
        bytes,
        pos: 0,
        depth: 0,
        items: Vec::new(),
        members: Vec::new(),
    };
    let result = p.skip_ws().and_then(|()| p.value()).and_then(|v| {
        p.skip_ws()?;
        if p.pos < p.bytes.len() {
            return Err("trailing characters");
        }
        Ok(v)
    });
    result.map_err(|message| {
        let at = p.pos.min(bytes.len());
        let line_start = bytes[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        ParseError::Syntax {
            line: bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1,
            column: at - line_start + 1,
            message: message.to_owned(),
        }
    })
}

type Step<T> = Result<T, &'static str>;

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    /// Scratch stacks: an array's items (an object's members) are pushed here and moved
    /// into one exactly-sized allocation when it closes, instead of growing a Vec per array.
    items: Vec<Json<'a>>,
    members: Vec<(Cow<'a, str>, Json<'a>)>,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) -> Step<()> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
        Ok(())
    }

    fn expect_literal(&mut self, word: &'static [u8], value: Json<'a>) -> Step<Json<'a>> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err("expected value")
        }
    }

    fn value(&mut self) -> Step<Json<'a>> {
        match self.peek() {
            None => Err("EOF while parsing a value"),
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.expect_literal(b"true", Json::Bool(true)),
            Some(b'f') => self.expect_literal(b"false", Json::Bool(false)),
            Some(b'n') => self.expect_literal(b"null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err("expected value"),
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Step<Json<'a>>) -> Step<Json<'a>> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("recursion limit exceeded");
        }
        let v = f(self)?;
        self.depth -= 1;
        Ok(v)
    }

    fn array(&mut self) -> Step<Json<'a>> {
        self.pos += 1; // [
        self.skip_ws()?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(Vec::new()));
        }
        let base = self.items.len();
        loop {
            self.skip_ws()?;
            if self.peek() == Some(b']') {
                return Err("trailing comma");
            }
            let v = self.value()?;
            self.items.push(v);
            self.skip_ws()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(self.items.drain(base..).collect()));
                }
                None => return Err("EOF while parsing a list"),
                Some(_) => return Err("expected `,` or `]`"),
            }
        }
    }

    fn object(&mut self) -> Step<Json<'a>> {
        self.pos += 1; // {
        self.skip_ws()?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(Vec::new()));
        }
        let base = self.members.len();
        loop {
            self.skip_ws()?;
            match self.peek() {
                Some(b'"') => {}
                Some(b'}') => return Err("trailing comma"),
                None => return Err("EOF while parsing an object"),
                Some(_) => return Err("key must be a string"),
            }
            let key = self.string()?;
            self.skip_ws()?;
            if self.peek() != Some(b':') {
                return Err("expected `:`");
            }
            self.pos += 1;
            self.skip_ws()?;
            let value = self.value()?;
            self.members.push((key, value));
            self.skip_ws()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(self.members.drain(base..).collect()));
                }
                None => return Err("EOF while parsing an object"),
                Some(_) => return Err("expected `,` or `}`"),
            }
        }
    }

    /// A string starting at the opening quote. Borrowed unless it holds escapes.
    fn string(&mut self) -> Step<Cow<'a, str>> {
        self.pos += 1; // "
        let start = self.pos;
        loop {
            match self.peek() {
                None => return Err("EOF while parsing a string"),
                Some(b'"') => {
                    let s = &self.src[start..self.pos];
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(0..=0x1F) => {
                    return Err("control character (\\u0000-\\u001F) found while parsing a string");
                }
                Some(_) => self.pos += 1,
            }
        }
        let mut out = String::from(&self.src[start..self.pos]);
        loop {
            match self.peek() {
                None => return Err("EOF while parsing a string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let c = self.unicode_escape()?;
                            out.push(c);
                            continue;
                        }
                        _ => return Err("invalid escape"),
                    };
                    self.pos += 1;
                    out.push(c);
                }
                Some(0..=0x1F) => {
                    return Err("control character (\\u0000-\\u001F) found while parsing a string");
                }
                Some(_) => {
                    // Copy a run of plain characters at once (never splits a UTF-8 sequence:
                    // the stop bytes are ASCII).
                    let run = self.pos;
                    while let Some(b) = self.peek() {
                        if b == b'"' || b == b'\\' || b < 0x20 {
                            break;
                        }
                        self.pos += 1;
                    }
                    out.push_str(&self.src[run..self.pos]);
                }
            }
        }
    }

    fn hex4(&mut self) -> Step<u16> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or("EOF while parsing a string")?;
        let mut n = 0u16;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or("invalid escape")?;
            n = n * 16 + v as u16;
        }
        self.pos += 4;
        Ok(n)
    }

    /// After `\u`: one code point, joining a surrogate pair.
    fn unicode_escape(&mut self) -> Step<char> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err("lone leading surrogate in hex escape");
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err("lone leading surrogate in hex escape");
                }
                0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(second) - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err("lone trailing surrogate in hex escape"),
            n => u32::from(n),
        };
        char::from_u32(code).ok_or("invalid unicode code point")
    }

    fn number(&mut self) -> Step<Json<'a>> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err("invalid number"),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err("invalid number");
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
                return Err("invalid number");
            }
            self.digits();
        }
        let text = &self.src[start..self.pos];
        if integer {
            if !negative && let Ok(n) = text.parse::<u64>() {
                return Ok(Json::Number(Number::Unsigned(n)));
            }
            if negative && let Ok(n) = text.parse::<i64>() {
                return Ok(Json::Number(if n == 0 {
                    Number::Float(-0.0)
                } else {
                    Number::Negative(n)
                }));
            }
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Json::Number(Number::Float(f))),
            _ => Err("number out of range"),
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

/// Append one reference token to a JSON pointer, escaping `~` and `/` (RFC 6901).
pub fn pointer_push(base: &str, token: &str) -> String {
    let mut out = String::with_capacity(base.len() + token.len() + 1);
    out.push_str(base);
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_duplicate_keys_in_order() {
        let v = parse(br#"{"a": 1, "a": 2}"#).unwrap();
        let Json::Object(m) = v else {
            panic!("not an object")
        };
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].1, Json::Number(Number::Unsigned(2)));
    }

    #[test]
    fn big_integers_become_floats() {
        let v = parse(b"[18446744073709551615, 18446744073709551616, -1]").unwrap();
        let Json::Array(a) = v else { panic!() };
        assert_eq!(a[0], Json::Number(Number::Unsigned(u64::MAX)));
        assert!(matches!(a[1], Json::Number(Number::Float(_))));
        assert_eq!(a[2], Json::Number(Number::Negative(-1)));
    }

    #[test]
    fn rejects_what_runtimes_reject() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b" \n\t"), Err(ParseError::Empty));
        assert_eq!(parse(b"\xEF\xBB\xBF{}"), Err(ParseError::Bom));
        assert!(matches!(
            parse(b"{\"a\":\"\xff\"}"),
            Err(ParseError::NotUtf8 { offset: 6 })
        ));
        for bad in [
            &b"{\"a\": 1,}"[..],
            b"{} // c",
            b"/* c */ {}",
            b"{\"a\": NaN}",
            b"{} {}",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Syntax { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn syntax_errors_carry_position() {
        let Err(ParseError::Syntax { line, column, .. }) = parse(b"{\n  \"a\": 1,\n}") else {
            panic!("expected a syntax error")
        };
        assert_eq!((line, column), (3, 1));
    }

    #[test]
    fn pointer_escapes() {
        assert_eq!(pointer_push("", "a/b~c"), "/a~1b~0c");
        assert_eq!(pointer_push("/x", "0"), "/x/0");
    }

    /// Our tree as serde_json sees it (duplicate keys: the last wins, as in serde_json).
    fn to_value(j: &Json<'_>) -> serde_json::Value {
        use serde_json::Value;
        match j {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(Number::Unsigned(n)) => Value::from(*n),
            Json::Number(Number::Negative(n)) => Value::from(*n),
            Json::Number(Number::Float(f)) => Value::from(*f),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(a) => Value::Array(a.iter().map(to_value).collect()),
            Json::Object(m) => {
                let mut map = serde_json::Map::new();
                for (k, v) in m {
                    map.insert(k.to_string(), to_value(v));
                }
                Value::Object(map)
            }
        }
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC*".prop_map(Value::String),
            "[\\u{0}-\\u{1f}\"\\\\/a\\u{e9}\\u{1F600}]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z\\\\\"]{0,4}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_serde_json_on_valid_documents(v in arb_value(), pretty in proptest::prelude::any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
            let ours = parse(text.as_bytes());
            if text.trim().is_empty() {
                return Ok(());
            }
            let ours = ours.map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e} in {text}")))?;
            proptest::prop_assert_eq!(to_value(&ours), v);
        }

        #[test]
        fn accepts_exactly_what_serde_json_accepts(text in "[ \\[\\]{}:,\"\\\\a-f0-9.eE+\\-nultrsu/\\n\\t\\x01]{0,24}") {
            let ours = parse(text.as_bytes());
            let theirs = serde_json::from_str::<serde_json::Value>(&text);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(&to_value(a), b),
                (Err(ParseError::Empty), Err(_)) => {}
                (Err(ParseError::Syntax { .. }), Err(_)) => {}
                _ => proptest::prop_assert!(false, "{text:?}: ours {ours:?}, serde_json {theirs:?}"),
            }
        }
    }

    #[test]
    fn edge_cases_match_serde_json() {
        for text in [
            "-0",
            "0",
            "-1",
            "01",
            "1.",
            ".5",
            "1e",
            "1e400",
            "-1e400",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1.5e3",
            "\"\\ud83d\\ude00\"",
            "\"\\ud83d\"",
            "\"\\ude00\"",
            "\"\\u00e9\"",
            "\"\\x\"",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "[1 2]",
            "tru",
            "nul",
            "truex",
            "\"a\u{1}b\"",
            "[[[[]]]]",
            "{\"a\":{\"b\":[]}}",
            "\"unterminated",
        ] {
            let ours = parse(text.as_bytes());
            let theirs = serde_json::from_str::<serde_json::Value>(text);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(&to_value(a), b, "{text}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{text:?}: ours {ours:?}, serde_json {theirs:?}"),
            }
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(deep.as_bytes()).is_err());
        assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
    }
}
