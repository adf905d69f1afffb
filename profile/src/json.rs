//! A strict JSON tree that keeps every object member in source order, duplicates included.
//!
//! `serde_json::Value` keeps only the last of two equal keys, which is exactly the silent
//! behaviour of Go's `encoding/json` that turns `{"defaultAction": "SCMP_ACT_ERRNO", ...,
//! "defaultAction": "SCMP_ACT_ALLOW"}` into an allow-all profile. Validation needs to see both,
//! so the tree is built with our own visitor on top of serde_json's strict tokenizer (which
//! already refuses comments, trailing commas, NaN and non-UTF-8 strings).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

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
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, members in source order.
    Object(Vec<(String, Json)>),
}

impl Json {
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

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(Number::Unsigned(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(if v >= 0 {
            Number::Unsigned(v.unsigned_abs())
        } else {
            Number::Negative(v)
        }))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(Number::Float(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value()?;
            members.push((key, value));
        }
        Ok(Json::Object(members))
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

/// Parse bytes strictly into a [`Json`] tree.
pub fn parse(bytes: &[u8]) -> Result<Json, ParseError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(ParseError::Bom);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ParseError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    // Profiles are shallow; the default recursion limit (128) guards against stack abuse.
    let value = Json::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    value.map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; keep the sentence, report the place apart.
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        ParseError::Syntax {
            line: e.line(),
            column: e.column(),
            message,
        }
    })
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
}
