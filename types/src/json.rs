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
    /// Parses `text` once to check it is one valid JSON document.
    pub fn parse(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<&RawValue>(&text)?;
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
    fn rejects_invalid_json() {
        assert!(JsonText::parse("{nope").is_err());
        assert!(JsonText::parse("").is_err());
    }
}
