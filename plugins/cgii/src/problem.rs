//! The problem documents (RFC 9457) the plugin answers with.

use chasqui_plugin_sdk::serde_json::{self, Map, Value};
use chasqui_plugin_sdk::Response;

/// An attack payload was found and the policy blocks it (403).
pub const ATTACK_DETECTED: &str = "https://chasqui.agetic.gob.bo/problems/cgii/attack-detected";
/// The client address is on the blocklist (403).
pub const ADDRESS_BLOCKED: &str = "https://chasqui.agetic.gob.bo/problems/cgii/address-blocked";
/// The bearer token starts with a leaked prefix (403).
pub const TOKEN_BLOCKED: &str = "https://chasqui.agetic.gob.bo/problems/cgii/token-blocked";
/// The consumer went over its volume threshold and the policy blocks it (429 or 403).
pub const UNUSUAL_VOLUME: &str = "https://chasqui.agetic.gob.bo/problems/cgii/unusual-volume";
/// The body is longer than the inspection limit and the policy refuses those (413).
pub const BODY_TOO_LARGE: &str = "https://chasqui.agetic.gob.bo/problems/cgii/body-too-large";

/// A problem document with `type`, `title`, `status`, `detail` and extension members
/// (`incident`, `request_id`, ...). `extensions` must be an object; other values are ignored.
pub fn problem(
    status: u16,
    problem_type: &str,
    title: &str,
    detail: &str,
    extensions: Value,
) -> Response {
    let mut body = Map::new();
    body.insert("type".into(), problem_type.into());
    body.insert("title".into(), title.into());
    body.insert("status".into(), status.into());
    body.insert("detail".into(), detail.into());
    if let Value::Object(extensions) = extensions {
        for (name, value) in extensions {
            body.entry(name).or_insert(value);
        }
    }
    Response::new(status)
        .with_header("content-type", "application/problem+json")
        .with_body(serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chasqui_plugin_sdk::serde_json::json;

    #[test]
    fn problems_carry_the_standard_members_and_extensions() {
        let response = problem(
            403,
            ATTACK_DETECTED,
            "T",
            "D",
            json!({ "incident": "inc-1", "type": "x" }),
        );
        assert_eq!(response.status, 403);
        assert_eq!(response.headers[0].value, "application/problem+json");
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            body,
            json!({ "type": ATTACK_DETECTED, "title": "T", "status": 403, "detail": "D", "incident": "inc-1" })
        );
    }
}
