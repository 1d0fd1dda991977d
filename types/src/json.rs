//! `JsonText`: a JSON document kept as its text.
//!
//! Payloads (workflow inputs, step outputs) are stored and forwarded as text so the engine
//! never re-parses them on the hot path. On the wire (a human-readable serializer such as
//! serde_json) it is written as embedded JSON; in the store (bincode, not human-readable)
//! as a plain string. Construction always validates, so a `JsonText` is always valid JSON.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonText(String);

impl JsonText {
    /// Parses `text` once to check it is one valid JSON document, nested no deeper than
    /// [`MAX_JSON_DEPTH`] and free of lone surrogate escapes (see [`check_text`]).
    pub fn parse(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<&RawValue>(&text)?;
        check_depth(&text)?;
        Ok(JsonText(text))
    }

    pub fn from_value(value: &serde_json::Value) -> Self {
        JsonText(value.to_string())
    }

    pub fn null() -> Self {
        JsonText("null".to_owned())
    }

    /// A JSON object of `entries`, built without re-parsing: each value is already valid
    /// JSON and each key is escaped here, so the result is valid by construction.
    pub fn object<'a>(entries: impl IntoIterator<Item = (&'a str, &'a JsonText)>) -> Self {
        let mut text = String::from("{");
        for (i, (key, value)) in entries.into_iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&serde_json::Value::from(key).to_string());
            text.push(':');
            text.push_str(&value.0);
        }
        text.push('}');
        JsonText(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_value(&self) -> serde_json::Value {
        // A JsonText is validated at construction, so this parse cannot fail; fall back to
        // null rather than panic should that promise ever be broken by a corrupt record.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    pub fn deserialize_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

/// How deep a payload may nest. Payloads are kept as text and parsed by workers written in
/// any language; a bound here means no consumer meets a document its parser cannot take.
pub const MAX_JSON_DEPTH: usize = 64;

/// Why a syntactically valid JSON text is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonTextError {
    #[error("JSON nests deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    /// A `\uD800`-`\uDFFF` escape that is not half of a surrogate pair: it names no
    /// character, so UTF-8 cannot hold it and strict parsers (ours among them) refuse it.
    #[error("lone UTF-16 surrogate escape at byte {0}: it is not a character")]
    LoneSurrogate(usize),
}

/// Checks what a JSON syntax check lets through: nesting deeper than [`MAX_JSON_DEPTH`] and
/// lone surrogate escapes. One pass over the bytes, no allocation; `text` need not be valid
/// JSON (the syntax is the parser's business), so this can run before parsing.
pub fn check_text(text: &[u8]) -> Result<(), JsonTextError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < text.len() {
        let byte = text[i];
        if in_string {
            match byte {
                b'"' => in_string = false,
                b'\\' if text.get(i + 1) == Some(&b'u') => {
                    let Some(unit) = hex4(text, i + 2) else {
                        // Not four hex digits: a syntax error the parser reports.
                        i += 2;
                        continue;
                    };
                    match unit {
                        0xD800..=0xDBFF => {
                            let low = (text.get(i + 6..i + 8) == Some(b"\\u")).then(|| hex4(text, i + 8)).flatten();
                            if !low.is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) {
                                return Err(JsonTextError::LoneSurrogate(i));
                            }
                            i += 12;
                            continue;
                        }
                        0xDC00..=0xDFFF => return Err(JsonTextError::LoneSurrogate(i)),
                        _ => {
                            i += 6;
                            continue;
                        }
                    }
                }
                // Any other escape is two bytes; skipping both keeps `\"` inside the string.
                b'\\' => i += 1,
                _ => {}
            }
            i += 1;
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(JsonTextError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The UTF-16 code unit spelled by the four hex digits at `at`, if there are four.
fn hex4(text: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(text.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

fn check_depth(text: &str) -> Result<(), serde_json::Error> {
    check_text(text.as_bytes()).map_err(serde::de::Error::custom)
}

impl std::fmt::Debug for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
            raw.serialize(serializer)
        } else {
            serializer.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let raw = Box::<RawValue>::deserialize(deserializer)?;
            check_depth(raw.get()).map_err(serde::de::Error::custom)?;
            Ok(JsonText(raw.get().to_owned()))
        } else {
            let text = String::deserialize(deserializer)?;
            JsonText::parse(text).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_as_json_on_the_wire() {
        let text = JsonText::parse(r#"{"a":1}"#).expect("valid");
        let wire = serde_json::to_string(&vec![text.clone()]).expect("serializes");
        assert_eq!(wire, r#"[{"a":1}]"#);
        let back: Vec<JsonText> = serde_json::from_str(&wire).expect("parses");
        assert_eq!(back[0], text);
    }

    #[test]
    fn objects_are_built_valid() {
        let a = JsonText::parse("[1,2]").expect("valid");
        let b = JsonText::parse(r#"{"x":"y"}"#).expect("valid");
        let object = JsonText::object([("a", &a), ("quote\"d", &b)]);
        assert!(JsonText::parse(object.as_str()).is_ok(), "{object}");
        assert_eq!(object.to_value()["a"][1], 2);
        assert_eq!(JsonText::object([]).as_str(), "{}");
    }

    #[test]
    fn depth_is_bounded_at_the_limit() {
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert!(JsonText::parse(nested(MAX_JSON_DEPTH)).is_ok());
        assert!(JsonText::parse(nested(MAX_JSON_DEPTH + 1)).is_err());
        // Brackets inside strings are text, not nesting.
        assert!(JsonText::parse(format!("[\"{}\"]", "[".repeat(500))).is_ok());
        let wire = format!("{{\"a\":{}}}", nested(MAX_JSON_DEPTH + 1));
        assert!(serde_json::from_str::<std::collections::HashMap<String, JsonText>>(&wire).is_err());
    }

    #[test]
    fn lone_surrogates_are_refused_and_pairs_accepted() {
        assert!(JsonText::parse(r#"["\ud83d\ude00"]"#).is_ok(), "a pair is one character");
        assert!(JsonText::parse(r#"["\u00e9 \\ud800"]"#).is_ok(), "an escaped backslash, then text");
        for lone in [r#""\ud800""#, r#""\udc00""#, r#""\ud800\u0041""#, r#""x\uD800""#, r#"{"a":"\ud800"}"#] {
            assert!(JsonText::parse(lone).is_err(), "{lone}");
        }
        assert_eq!(check_text(br#""\ud800""#), Err(JsonTextError::LoneSurrogate(1)));
        let wire = r#"{"a":"\udfff"}"#;
        assert!(serde_json::from_str::<std::collections::HashMap<String, JsonText>>(wire).is_err());
    }

    #[test]
    fn rejects_invalid_json() {
        assert!(JsonText::parse("{nope").is_err());
        assert!(JsonText::parse("").is_err());
    }
}
