//! The plugin's own successful answers (test environment): JSON documents.

use chasqui_plugin_sdk::Response;
use serde_json::Value;

/// A JSON answer with this status.
pub fn json(status: u16, body: &Value) -> Response {
    Response::new(status)
        .with_header("content-type", "application/json")
        .with_header("cache-control", "no-store")
        .with_body(serde_json::to_vec(body).unwrap_or_default())
}

/// A 201 answer for a record created at `location`.
pub fn created(location: String, body: &Value) -> Response {
    json(201, body).with_header("location", location)
}
