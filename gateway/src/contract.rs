//! Contract validation: JSON request and response bodies checked against the
//! JSON Schemas of the service's OpenAPI document (stored in the catalog).
//!
//! Validators are compiled when a policy or the catalog is loaded, once per
//! service whose policy asks for validation, never per request. A schema's
//! `$ref`s to `#/components/...` resolve within the same document.

use serde_json::{json, Value};
use std::collections::HashMap;

/// A validation failure: the JSON pointer of the first failing place (empty
/// for the document itself) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the body.
    pub pointer: String,
    /// What the schema says.
    pub message: String,
}

/// One operation of the contract.
struct Operation {
    method: String,
    segments: Vec<Segment>,
    request: Option<jsonschema::Validator>,
    request_required: bool,
    /// By status key: `200`, `2XX` or `default`.
    responses: HashMap<String, jsonschema::Validator>,
}

#[derive(Clone)]
enum Segment {
    Literal(String),
    Param,
}

/// The compiled contract of one service.
pub struct Contract {
    operations: Vec<Operation>,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("operations", &self.operations.len())
            .finish()
    }
}

/// The JSON schema of a `content` map, if it has a JSON media type.
fn json_schema(content: Option<&Value>) -> Option<&Value> {
    let content = content?.as_object()?;
    content
        .iter()
        .find(|(media, _)| is_json(media))
        .and_then(|(_, m)| m.get("schema"))
}

/// Whether a media type is JSON (`application/json`, `...+json`).
pub fn is_json(media: &str) -> bool {
    let essence = media.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

fn compile(doc: &Value, schema: &Value) -> Result<jsonschema::Validator, String> {
    // The sub-schema under `$defs`, with the document's components beside
    // it so that `#/components/schemas/...` resolves.
    let mut root = json!({
        "$defs": {"operation": schema},
        "$ref": "#/$defs/operation",
    });
    if let (Some(map), Some(components)) = (root.as_object_mut(), doc.get("components")) {
        map.insert("components".into(), components.clone());
    }
    jsonschema::validator_for(&root).map_err(|e| e.to_string())
}

impl Contract {
    /// Compiles the operations of an OpenAPI 3 document. Operations without
    /// JSON bodies are kept (for path matching) with no validators.
    pub fn compile(doc: &Value) -> Result<Contract, String> {
        let mut operations = Vec::new();
        let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
            return Err("the OpenAPI document has no `paths`".into());
        };
        for (template, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            let segments = template
                .trim_matches('/')
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if s.starts_with('{') && s.ends_with('}') {
                        Segment::Param
                    } else {
                        Segment::Literal(s.to_string())
                    }
                })
                .collect::<Vec<_>>();
            for (method, op) in item {
                if !matches!(
                    method.as_str(),
                    "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
                ) {
                    continue;
                }
                let body = op.get("requestBody");
                let request = json_schema(body.and_then(|b| b.get("content")))
                    .map(|s| compile(doc, s))
                    .transpose()
                    .map_err(|e| format!("{} {template}: request body schema: {e}", method))?;
                let request_required = body
                    .and_then(|b| b.get("required"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let mut responses = HashMap::new();
                if let Some(rs) = op.get("responses").and_then(Value::as_object) {
                    for (status, r) in rs {
                        if let Some(s) = json_schema(r.get("content")) {
                            let v = compile(doc, s).map_err(|e| {
                                format!("{method} {template}: response {status} schema: {e}")
                            })?;
                            responses.insert(status.to_ascii_uppercase(), v);
                        }
                    }
                }
                operations.push(Operation {
                    method: method.to_ascii_uppercase(),
                    segments: segments.clone(),
                    request,
                    request_required,
                    responses,
                });
            }
        }
        // Literal segments before parameters: `/personas/buscar` before
        // `/personas/{ci}`.
        operations.sort_by_key(|o| {
            o.segments
                .iter()
                .map(|s| matches!(s, Segment::Param))
                .collect::<Vec<_>>()
        });
        Ok(Contract { operations })
    }

    fn operation(&self, method: &str, path: &str) -> Option<&Operation> {
        let path = path.split('?').next().unwrap_or("");
        let parts: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        self.operations.iter().find(|o| {
            o.method == method
                && o.segments.len() == parts.len()
                && o.segments.iter().zip(&parts).all(|(s, p)| match s {
                    Segment::Param => true,
                    Segment::Literal(l) => l == p,
                })
        })
    }

    /// Whether the request `method path` has a request body schema.
    pub fn checks_request(&self, method: &str, path: &str) -> bool {
        self.operation(method, path)
            .is_some_and(|o| o.request.is_some())
    }

    /// Whether some answer of `method path` has a schema.
    pub fn checks_response(&self, method: &str, path: &str) -> bool {
        self.operation(method, path)
            .is_some_and(|o| !o.responses.is_empty())
    }

    /// Checks a request body (`None`: empty). Operations the contract does
    /// not describe, or describe without a JSON body, pass.
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<(), Violation> {
        let Some(op) = self.operation(method, path) else {
            return Ok(());
        };
        let Some(validator) = &op.request else {
            return Ok(());
        };
        let body = body.filter(|b| !b.is_empty());
        let Some(body) = body else {
            if op.request_required {
                return Err(Violation {
                    pointer: String::new(),
                    message: "a JSON body is required".into(),
                });
            }
            return Ok(());
        };
        if content_type.is_some_and(|c| !is_json(c)) {
            return Err(Violation {
                pointer: String::new(),
                message: format!(
                    "the body must be JSON (sent as {})",
                    content_type.unwrap_or("")
                ),
            });
        }
        check(validator, body)
    }

    /// Checks an answer of `status` (`None` body: empty). Statuses without a
    /// JSON schema pass.
    pub fn check_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), Violation> {
        let Some(op) = self.operation(method, path) else {
            return Ok(());
        };
        let exact = status.to_string();
        let class = format!("{}XX", status / 100);
        let Some(validator) = op
            .responses
            .get(&exact)
            .or_else(|| op.responses.get(&class))
            .or_else(|| op.responses.get("DEFAULT"))
        else {
            return Ok(());
        };
        if !content_type.is_some_and(is_json) {
            return Err(Violation {
                pointer: String::new(),
                message: format!(
                    "the answer must be JSON (it came as {})",
                    content_type.unwrap_or("no content type")
                ),
            });
        }
        check(validator, body)
    }
}

fn check(validator: &jsonschema::Validator, body: &[u8]) -> Result<(), Violation> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Violation {
        pointer: String::new(),
        message: format!("not valid JSON: {e}"),
    })?;
    let first = validator.iter_errors(&value).next().map(|e| Violation {
        pointer: e.instance_path().to_string(),
        message: e.to_string(),
    });
    match first {
        None => Ok(()),
        Some(v) => Err(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({
            "openapi": "3.0.3",
            "info": {"title": "t", "version": "1"},
            "paths": {
                "/personas/{ci}": {
                    "get": {"responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Persona"}}}}}}
                },
                "/personas": {
                    "post": {
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Persona"}}}},
                        "responses": {"201": {"description": "ok"}}
                    }
                }
            },
            "components": {"schemas": {"Persona": {
                "type": "object",
                "required": ["ci", "nombre"],
                "properties": {"ci": {"type": "string", "pattern": "^[0-9]+$"}, "nombre": {"type": "string"}, "edad": {"type": "integer", "minimum": 0}}
            }}}
        })
    }

    #[test]
    fn names_the_failing_pointer() {
        let c = Contract::compile(&doc()).unwrap();
        assert!(c.checks_request("POST", "/personas"));
        assert!(c
            .check_request(
                "POST",
                "/personas",
                Some("application/json"),
                Some(br#"{"ci":"123","nombre":"Ana"}"#)
            )
            .is_ok());
        let v = c
            .check_request(
                "POST",
                "/personas",
                Some("application/json"),
                Some(br#"{"ci":"12a","nombre":"Ana","edad":-1}"#),
            )
            .unwrap_err();
        assert!(v.pointer == "/ci" || v.pointer == "/edad", "{v:?}");
        let v = c
            .check_request("POST", "/personas", Some("application/json"), None)
            .unwrap_err();
        assert_eq!(v.pointer, "");
        let v = c
            .check_response(
                "GET",
                "/personas/1?x=1",
                200,
                Some("application/json; charset=utf-8"),
                br#"{"ci":"1","nombre":5}"#,
            )
            .unwrap_err();
        assert_eq!(v.pointer, "/nombre");
        assert!(c
            .check_response("GET", "/otra", 200, None, b"not json")
            .is_ok());
    }
}
