//! Strict JSON reading and a canonical JSON form.
//!
//! Strict: a document that repeats a member name is refused. Parsers disagree on which
//! copy wins (first or last), so accepting one would let the plugin validate one amount
//! while PPE charges another.
//!
//! Canonical: members sorted by name at every level, no whitespace; the same content always
//! gives the same bytes, whatever order the client wrote it in. It is what the
//! single-payment fingerprint hashes.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use std::fmt;

/// Parses `text` as JSON, refusing repeated member names anywhere in it.
pub fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Strict>(text).map(|strict| strict.0)
}

/// A JSON value read without repeated member names.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(de::Error::custom(format!(
                    "the member {name:?} appears more than once"
                )));
            }
            let Strict(value) = map.next_value()?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

/// The canonical text of `value`: members sorted by name, no insignificant whitespace.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(members) => {
            // Sorted here rather than relying on serde_json's map order, which a
            // `preserve_order` feature elsewhere in a build could change.
            let mut names: Vec<&String> = members.keys().collect();
            names.sort();
            out.push('{');
            for (i, name) in names.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(name.clone()).to_string());
                out.push(':');
                if let Some(member) = members.get(name) {
                    write_canonical(member, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_parsing_refuses_repeated_members_at_any_depth() {
        assert_eq!(
            parse_strict(r#"{"a":1,"b":[{"c":null}]}"#).unwrap(),
            json!({"a":1,"b":[{"c":null}]})
        );
        let top = parse_strict(r#"{"a":1,"a":2}"#).unwrap_err().to_string();
        assert!(top.contains("\"a\" appears more than once"), "{top}");
        let deep = parse_strict(r#"{"x":{"m":"1","m":"2"}}"#)
            .unwrap_err()
            .to_string();
        assert!(deep.contains("\"m\""), "{deep}");
        // Escapes are decoded before comparing: "\u0061" is "a".
        assert!(parse_strict(r#"{"a":1,"\u0061":2}"#).is_err());
        assert!(parse_strict("[1,2").is_err());
        assert!(parse_strict("{} x").is_err());
    }

    #[test]
    fn canonical_form_ignores_member_order_and_whitespace() {
        let a = parse_strict(r#"{ "b": [1, {"y": 2, "x": 1}], "a": "é\"" }"#).unwrap();
        let b = parse_strict(r#"{"a":"é\"","b":[1,{"x":1,"y":2}]}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), r#"{"a":"é\"","b":[1,{"x":1,"y":2}]}"#);
        // Array order is content.
        let c = parse_strict(r#"{"a":"é\"","b":[{"x":1,"y":2},1]}"#).unwrap();
        assert_ne!(canonical(&a), canonical(&c));
    }
}
