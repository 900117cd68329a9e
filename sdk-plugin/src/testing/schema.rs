//! A small JSON Schema checker for plugin configurations, in the tests only.
//!
//! It implements the keywords that configuration schemas use: `type`, `enum`, `const`,
//! `properties`, `required`, `additionalProperties`, `minProperties`, `maxProperties`,
//! `items` (one schema), `minItems`, `maxItems`, `uniqueItems`, `minLength`, `maxLength`,
//! `pattern`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`; and it ignores
//! annotations (`$schema`, `$id`, `$comment`, `title`, `description`, `default`,
//! `examples`, `deprecated`, `readOnly`, `writeOnly`, `format`). Any other keyword (`$ref`,
//! `allOf`, `oneOf`, ..., or a misspelling) is refused, so a test never passes on a check
//! that was not made. The gateway validates configurations with a complete validator.

use regex::Regex;
use serde_json::{Map, Value};

/// The configuration schema cannot be used by the native checker.
///
/// The checker implements `type`, `enum`, `const`, `properties`, `required`,
/// `additionalProperties`, `minProperties`, `maxProperties`, `items` (one schema),
/// `minItems`, `maxItems`, `uniqueItems`, `minLength`, `maxLength`, `pattern`, `minimum`,
/// `maximum`, `exclusiveMinimum` and `exclusiveMaximum`, and ignores annotations (`title`,
/// `description`, `default`, `format`, ...). Any other keyword is
/// [`SchemaError::Unsupported`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The schema is not JSON.
    #[error("the configuration schema is not JSON: {0}")]
    NotJson(String),
    /// A keyword has a value of the wrong form.
    #[error("the configuration schema is invalid at {path}: {message}")]
    Invalid {
        /// Where, as a JSON pointer into the schema.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A keyword outside the checker's subset.
    #[error(
        "the configuration schema uses `{keyword}` at {path}, which the native checker does not implement"
    )]
    Unsupported {
        /// The keyword.
        keyword: String,
        /// Where, as a JSON pointer into the schema.
        path: String,
    },
}

const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
];
const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

/// Parses a schema and checks that the checker understands all of it.
pub fn parse(schema: &str) -> Result<Value, SchemaError> {
    let schema: Value =
        serde_json::from_str(schema).map_err(|err| SchemaError::NotJson(err.to_string()))?;
    check(&schema, "")?;
    Ok(schema)
}

fn invalid(path: &str, message: impl Into<String>) -> SchemaError {
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    };
    SchemaError::Invalid {
        path,
        message: message.into(),
    }
}

/// Checks one (sub)schema and everything under it.
fn check(schema: &Value, path: &str) -> Result<(), SchemaError> {
    let map = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(map) => map,
        _ => return Err(invalid(path, "a schema is an object or a boolean")),
    };
    for (keyword, value) in map {
        let at = format!("{path}/{keyword}");
        match keyword.as_str() {
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(items) => items.iter().collect(),
                    other => vec![other],
                };
                if !names
                    .iter()
                    .all(|name| name.as_str().is_some_and(|name| TYPES.contains(&name)))
                {
                    return Err(invalid(&at, "unknown type name"));
                }
            }
            "enum" if !value.is_array() => return Err(invalid(&at, "must be an array")),
            "enum" | "const" => {}
            "properties" => {
                let properties = value
                    .as_object()
                    .ok_or_else(|| invalid(&at, "must be an object"))?;
                for (name, subschema) in properties {
                    check(subschema, &format!("{at}/{name}"))?;
                }
            }
            "additionalProperties" => check(value, &at)?,
            "items" if value.is_array() => {
                return Err(SchemaError::Unsupported {
                    keyword: "items (array form)".into(),
                    path: at,
                })
            }
            "items" => check(value, &at)?,
            "required" => {
                if !value
                    .as_array()
                    .is_some_and(|names| names.iter().all(Value::is_string))
                {
                    return Err(invalid(&at, "must be an array of strings"));
                }
            }
            "minProperties" | "maxProperties" | "minItems" | "maxItems" | "minLength"
            | "maxLength" => {
                if value.as_u64().is_none() {
                    return Err(invalid(&at, "must be a non-negative integer"));
                }
            }
            "uniqueItems" if !value.is_boolean() => return Err(invalid(&at, "must be a boolean")),
            "uniqueItems" => {}
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum"
                if !value.is_number() =>
            {
                return Err(invalid(&at, "must be a number"))
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {}
            "pattern" => {
                let pattern = value
                    .as_str()
                    .ok_or_else(|| invalid(&at, "must be a string"))?;
                Regex::new(pattern).map_err(|err| invalid(&at, err.to_string()))?;
            }
            other if ANNOTATIONS.contains(&other) => {}
            other => {
                return Err(SchemaError::Unsupported {
                    keyword: other.to_string(),
                    path: at,
                })
            }
        }
    }
    Ok(())
}

/// Validates `instance` against a schema that [`parse`] accepted; returns every violation,
/// each prefixed with the JSON pointer of the offending value.
pub fn validate(schema: &Value, instance: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    validate_at(schema, instance, "", &mut errors);
    errors
}

fn validate_at(schema: &Value, instance: &Value, path: &str, errors: &mut Vec<String>) {
    let map = match schema {
        Value::Object(map) => map,
        Value::Bool(false) => {
            return errors.push(format!("{}: no value is allowed here", pointer(path)))
        }
        _ => return,
    };
    let mut fail = |message: String| errors.push(format!("{}: {message}", pointer(path)));
    if let Some(types) = map.get("type") {
        let names: Vec<&str> = match types {
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            other => other.as_str().into_iter().collect(),
        };
        if !names.iter().any(|name| has_type(instance, name)) {
            return fail(format!("expected {}", names.join(" or ")));
        }
    }
    if let Some(Value::Array(options)) = map.get("enum") {
        if !options.iter().any(|option| same(option, instance)) {
            fail(format!("must be one of {}", Value::Array(options.clone())));
        }
    }
    if let Some(expected) = map.get("const") {
        if !same(expected, instance) {
            fail(format!("must be {expected}"));
        }
    }
    match instance {
        Value::Object(object) => validate_object(map, object, path, errors),
        Value::Array(items) => validate_array(map, items, path, errors),
        Value::String(text) => validate_string(map, text, &mut fail),
        Value::Number(number) => {
            validate_number(map, number.as_f64().unwrap_or(f64::NAN), &mut fail)
        }
        _ => {}
    }
}

fn validate_object(
    schema: &Map<String, Value>,
    object: &Map<String, Value>,
    path: &str,
    errors: &mut Vec<String>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                errors.push(format!(
                    "{}: missing required property `{name}`",
                    pointer(path)
                ));
            }
        }
    }
    for (name, value) in object {
        let at = format!("{path}/{name}");
        match (
            properties.and_then(|properties| properties.get(name)),
            schema.get("additionalProperties"),
        ) {
            (Some(subschema), _) => validate_at(subschema, value, &at, errors),
            (None, Some(Value::Bool(false))) => {
                errors.push(format!("{}: unexpected property", pointer(&at)))
            }
            (None, Some(subschema)) => validate_at(subschema, value, &at, errors),
            (None, None) => {}
        }
    }
    check_bounds(
        schema,
        "minProperties",
        "maxProperties",
        object.len(),
        "properties",
        path,
        errors,
    );
}

fn validate_array(
    schema: &Map<String, Value>,
    items: &[Value],
    path: &str,
    errors: &mut Vec<String>,
) {
    if let Some(subschema) = schema.get("items") {
        for (index, item) in items.iter().enumerate() {
            validate_at(subschema, item, &format!("{path}/{index}"), errors);
        }
    }
    check_bounds(
        schema,
        "minItems",
        "maxItems",
        items.len(),
        "items",
        path,
        errors,
    );
    if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
        for (index, item) in items.iter().enumerate() {
            if items[..index].iter().any(|earlier| same(earlier, item)) {
                errors.push(format!(
                    "{}: repeats an earlier item",
                    pointer(&format!("{path}/{index}"))
                ));
            }
        }
    }
}

fn validate_string(schema: &Map<String, Value>, text: &str, fail: &mut impl FnMut(String)) {
    let length = text.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if length < min {
            fail(format!("shorter than {min} characters"));
        }
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if length > max {
            fail(format!("longer than {max} characters"));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if Regex::new(pattern).is_ok_and(|regex| !regex.is_match(text)) {
            fail(format!("does not match the pattern {pattern}"));
        }
    }
}

fn validate_number(schema: &Map<String, Value>, number: f64, fail: &mut impl FnMut(String)) {
    let bound = |keyword: &str| schema.get(keyword).and_then(Value::as_f64);
    if let Some(min) = bound("minimum").filter(|min| number < *min) {
        fail(format!("less than the minimum {min}"));
    }
    if let Some(max) = bound("maximum").filter(|max| number > *max) {
        fail(format!("greater than the maximum {max}"));
    }
    if let Some(min) = bound("exclusiveMinimum").filter(|min| number <= *min) {
        fail(format!("not greater than {min}"));
    }
    if let Some(max) = bound("exclusiveMaximum").filter(|max| number >= *max) {
        fail(format!("not less than {max}"));
    }
}

fn check_bounds(
    schema: &Map<String, Value>,
    min_keyword: &str,
    max_keyword: &str,
    count: usize,
    what: &str,
    path: &str,
    errors: &mut Vec<String>,
) {
    let count = count as u64;
    if let Some(min) = schema
        .get(min_keyword)
        .and_then(Value::as_u64)
        .filter(|min| count < *min)
    {
        errors.push(format!("{}: fewer than {min} {what}", pointer(path)));
    }
    if let Some(max) = schema
        .get(max_keyword)
        .and_then(Value::as_u64)
        .filter(|max| count > *max)
    {
        errors.push(format!("{}: more than {max} {what}", pointer(path)));
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.as_f64().is_some_and(|number| number.fract() == 0.0),
        _ => false,
    }
}

/// JSON Schema equality: numbers compare by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, value)| y.get(key).is_some_and(|other| same(value, other)))
        }
        _ => a == b,
    }
}

fn pointer(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: &str = r#"{
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "name": { "type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$" },
            "tags": { "type": "array", "items": { "type": "string" }, "minItems": 1, "uniqueItems": true },
            "limit": { "type": "integer", "minimum": 1, "exclusiveMaximum": 100 },
            "mode": { "enum": ["a", "b"] },
            "extra": { "type": "object", "additionalProperties": { "type": "number" }, "maxProperties": 1 }
        },
        "required": ["name"],
        "additionalProperties": false
    }"#;

    fn errors(instance: Value) -> Vec<String> {
        let schema = parse(SCHEMA).unwrap();
        validate(&schema, &instance)
    }

    #[test]
    fn accepts_a_valid_instance() {
        let valid = json!({"name": "abc", "tags": ["x", "y"], "limit": 99.0, "mode": "b", "extra": {"k": 1.5}});
        assert_eq!(errors(valid), Vec::<String>::new());
    }

    #[test]
    fn reports_each_violation_with_its_pointer() {
        let found = errors(json!({
            "tags": ["x", "x"], "limit": 100, "mode": "c", "extra": {"k": "1", "l": 2}, "other": true
        }));
        let expected = [
            "/: missing required property `name`",
            "/tags/1: repeats an earlier item",
            "/limit: not less than 100",
            "/mode: must be one of [\"a\",\"b\"]",
            "/extra/k: expected number",
            "/extra: more than 1 properties",
            "/other: unexpected property",
        ];
        for message in expected {
            assert!(
                found.iter().any(|error| error == message),
                "{message} not in {found:?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:?}");
    }

    #[test]
    fn checks_strings_and_integers() {
        assert_eq!(
            errors(json!({"name": ""})),
            [
                "/name: shorter than 1 characters",
                "/name: does not match the pattern ^[a-z]+$"
            ]
        );
        assert_eq!(
            errors(json!({"name": "toolong"})),
            ["/name: longer than 5 characters"]
        );
        assert_eq!(
            errors(json!({"name": "ABC"})),
            ["/name: does not match the pattern ^[a-z]+$"]
        );
        assert_eq!(
            errors(json!({"name": "a", "limit": 1.5})),
            ["/limit: expected integer"]
        );
        assert_eq!(
            errors(json!({"name": "a", "limit": 0})),
            ["/limit: less than the minimum 1"]
        );
        assert_eq!(errors(json!([1])), ["/: expected object"]);
    }

    #[test]
    fn refuses_keywords_it_does_not_implement() {
        let err = parse(r#"{"properties": {"a": {"oneOf": []}}}"#).unwrap_err();
        assert_eq!(
            err,
            SchemaError::Unsupported {
                keyword: "oneOf".into(),
                path: "/properties/a/oneOf".into()
            }
        );
        assert!(matches!(
            parse(r#"{"requried": []}"#),
            Err(SchemaError::Unsupported { .. })
        ));
        assert!(matches!(
            parse(r#"{"type": "text"}"#),
            Err(SchemaError::Invalid { .. })
        ));
        assert!(matches!(
            parse(r#"{"pattern": "("}"#),
            Err(SchemaError::Invalid { .. })
        ));
        assert!(matches!(parse("{"), Err(SchemaError::NotJson(_))));
        assert!(parse("true").is_ok());
    }
}
