//! Reading request bodies as JSON without losing the text of numbers.
//!
//! `serde_json::Value` turns `0.1` into an `f64`, which cannot check amounts to the centavo.
//! Here serde_json parses and validates the document, but each value is kept as its raw
//! text ([`RawValue`]) and only looked into on demand: numbers keep their literal, objects
//! keep every member in order (so duplicated keys are seen, not silently merged).

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// One JSON value, one level deep: containers hold their members as raw text.
#[derive(Debug)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as its literal text.
    Number(&'a str),
    /// A string, unescaped.
    String(String),
    /// An array's items.
    Array(Vec<&'a RawValue>),
    /// An object's members in document order, duplicates included.
    Object(Vec<(String, &'a RawValue)>),
}

impl Node<'_> {
    /// The JSON type's name in Spanish and in English, for error messages.
    pub fn type_name(&self) -> (&'static str, &'static str) {
        match self {
            Node::Null => ("null", "null"),
            Node::Bool(_) => ("booleano", "boolean"),
            Node::Number(_) => ("número", "number"),
            Node::String(_) => ("texto", "string"),
            Node::Array(_) => ("arreglo", "array"),
            Node::Object(_) => ("objeto", "object"),
        }
    }
}

/// An object's members in order, keeping duplicates.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

/// Parses a whole document; `Err` carries serde_json's message (with line and column).
pub fn parse_document(bytes: &[u8]) -> Result<&RawValue, String> {
    serde_json::from_slice::<&RawValue>(bytes).map_err(|err| err.to_string())
}

/// Looks one level into a raw value.
///
/// The text was validated when the document was parsed, so this fails only on a value
/// that serde_json itself would refuse (it never should); callers still handle it.
pub fn node(raw: &RawValue) -> Result<Node<'_>, String> {
    let text = raw.get().trim();
    let error = |err: serde_json::Error| err.to_string();
    match text.as_bytes().first() {
        Some(b'{') => serde_json::from_str::<Members>(text)
            .map(|members| Node::Object(members.0))
            .map_err(error),
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(text)
            .map(Node::Array)
            .map_err(error),
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(Node::String)
            .map_err(error),
        Some(b't') | Some(b'f') => serde_json::from_str::<bool>(text)
            .map(Node::Bool)
            .map_err(error),
        Some(b'n') => serde_json::from_str::<()>(text)
            .map(|()| Node::Null)
            .map_err(error),
        Some(b'-' | b'0'..=b'9') => Ok(Node::Number(text)),
        _ => Err(format!("unexpected JSON value `{text}`")),
    }
}

/// Escapes one reference token of a JSON pointer (RFC 6901: `~` is `~0`, `/` is `~1`).
pub fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_literal_text() {
        let document = parse_document(br#"{"a": 0.10, "b": [1, 2.50]}"#).unwrap();
        let Node::Object(members) = node(document).unwrap() else {
            panic!("object expected")
        };
        assert_eq!(members[0].0, "a");
        assert!(matches!(node(members[0].1).unwrap(), Node::Number("0.10")));
        let Node::Array(items) = node(members[1].1).unwrap() else {
            panic!("array expected")
        };
        assert!(matches!(node(items[1]).unwrap(), Node::Number("2.50")));
    }

    #[test]
    fn duplicate_keys_are_kept_in_order() {
        let document = parse_document(br#"{"k": 1, "k": 2}"#).unwrap();
        let Node::Object(members) = node(document).unwrap() else {
            panic!("object expected")
        };
        assert_eq!(members.len(), 2);
        assert!(matches!(node(members[1].1).unwrap(), Node::Number("2")));
    }

    #[test]
    fn every_type_is_recognised() {
        let document =
            parse_document(br#" [null, true, false, "t\u00e9\n", -3, {}, []] "#).unwrap();
        let Node::Array(items) = node(document).unwrap() else {
            panic!("array expected")
        };
        let kinds: Vec<&str> = items
            .iter()
            .map(|raw| node(raw).unwrap().type_name().1)
            .collect();
        assert_eq!(
            kinds,
            ["null", "boolean", "boolean", "string", "number", "object", "array"]
        );
        assert!(matches!(node(items[3]).unwrap(), Node::String(s) if s == "té\n"));
    }

    #[test]
    fn malformed_documents_are_refused_with_a_position() {
        let error = parse_document(b"{\"a\": 1,}").unwrap_err();
        assert!(error.contains("line 1"), "{error}");
        assert!(parse_document(b"{} trailing").is_err());
        assert!(parse_document(b"").is_err());
        assert!(parse_document(b"\xff").is_err());
        assert!(parse_document(b"{\"a\": \"\xff\"}").is_err());
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(pointer_token("a/b~c"), "a~1b~0c");
    }
}
