//! `allowlist`: lets a request through only if a header names an allowed client.
//!
//! Configuration: `{ "header": "x-api-client", "allow": ["a", "b"], "status": 403 }`
//! (`status` is optional, 403 by default). A request whose header is missing, repeated or
//! not in `allow` is answered with an RFC 9457 problem document, logged and counted in
//! `denied_total{reason}`; any other request goes on with `x-allowlist: passed`.

use chasqui_plugin_sdk::{
    export_plugin, host, Capability, HeaderChanges, HeadersAction, Metadata, Phase, Plugin,
    RequestHead, Response,
};
use serde::Deserialize;

/// The problem type of a denied request.
pub const PROBLEM_TYPE: &str = "https://chasqui.agetic.gob.bo/problems/plugin-denied";

/// The configuration, as policy gives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    header: String,
    allow: Vec<String>,
    #[serde(default = "default_status")]
    status: u16,
}

fn default_status() -> u16 {
    403
}

/// The plugin: the header to read, the allowed values and the status of a denial.
#[derive(Debug)]
pub struct Allowlist {
    header: String,
    allow: Vec<String>,
    status: u16,
}

impl Plugin for Allowlist {
    type Config = Config;

    const METADATA: Metadata = Metadata {
        name: "allowlist",
        version: env!("CARGO_PKG_VERSION"),
        capabilities: &[Capability::Log, Capability::Metrics],
        phases: &[Phase::RequestHeaders],
        config_schema: include_str!("../config.schema.json"),
    };

    fn new(config: Config) -> Result<Self, String> {
        if config.header.is_empty() {
            return Err("`header` must not be empty".into());
        }
        if !(400..=499).contains(&config.status) {
            return Err(format!(
                "`status` must be a 4xx code, not {}",
                config.status
            ));
        }
        Ok(Allowlist {
            header: config.header.to_ascii_lowercase(),
            allow: config.allow,
            status: config.status,
        })
    }

    fn on_request_headers(&mut self, request: &RequestHead) -> HeadersAction {
        let mut values = request.header_values(&self.header);
        let (reason, detail) = match (values.next(), values.next()) {
            (Some(value), None) if self.allow.iter().any(|allowed| allowed == value) => {
                return HeadersAction::Modify(HeaderChanges::new().set("x-allowlist", "passed"));
            }
            (Some(_), None) => (
                "not_allowed",
                format!("the value of header {} is not allowed", self.header),
            ),
            (Some(_), Some(_)) => (
                "repeated",
                format!("header {} appears more than once", self.header),
            ),
            (None, _) => ("missing", format!("header {} is missing", self.header)),
        };
        host::log::info(&format!(
            "denied {} {}: {detail}",
            request.method, request.path
        ));
        host::metrics::counter_add("denied_total", 1, &[("reason", reason)]);
        HeadersAction::Respond(Response::problem(
            self.status,
            PROBLEM_TYPE,
            "Request denied by policy",
            &detail,
        ))
    }
}

export_plugin!(Allowlist);

#[cfg(test)]
mod tests {
    use super::*;
    use chasqui_plugin_sdk::serde_json::{self, json, Value};
    use chasqui_plugin_sdk::testing::{Harness, HarnessError};

    fn allowlist() -> Harness<Allowlist> {
        Harness::new(json!({ "header": "X-Api-Client", "allow": ["a", "b"] })).unwrap()
    }

    fn request(values: &[&str]) -> RequestHead {
        values
            .iter()
            .fold(RequestHead::new("GET", "/v1/personas"), |request, value| {
                request.with_header("x-api-client", *value)
            })
    }

    /// The status and problem document of a denial.
    fn denial(action: HeadersAction) -> (u16, Value) {
        let HeadersAction::Respond(response) = action else {
            panic!("expected a denial, got {action:?}")
        };
        assert_eq!(response.headers[0].name, "content-type");
        assert_eq!(response.headers[0].value, "application/problem+json");
        (
            response.status,
            serde_json::from_slice(&response.body).unwrap(),
        )
    }

    #[test]
    fn allowed_client_passes_with_a_marker_header() {
        let mut harness = allowlist();
        for client in ["a", "b"] {
            let action = harness.request_headers(&request(&[client]));
            assert_eq!(
                action,
                HeadersAction::Modify(HeaderChanges::new().set("x-allowlist", "passed"))
            );
        }
        assert!(harness.logs().is_empty());
        assert!(harness.metrics().is_empty());
    }

    #[test]
    fn other_client_is_denied_logged_and_counted() {
        let mut harness = allowlist();
        let (status, problem) = denial(harness.request_headers(&request(&["c"])));
        assert_eq!(status, 403);
        assert_eq!(
            problem,
            json!({
                "type": PROBLEM_TYPE,
                "title": "Request denied by policy",
                "status": 403,
                "detail": "the value of header x-api-client is not allowed",
            })
        );
        assert_eq!(
            harness.logs()[0].message,
            "denied GET /v1/personas: the value of header x-api-client is not allowed"
        );
        assert_eq!(
            harness.counter("denied_total", &[("reason", "not_allowed")]),
            1
        );
        // Values compare exactly.
        denial(harness.request_headers(&request(&["A"])));
        assert_eq!(
            harness.counter("denied_total", &[("reason", "not_allowed")]),
            2
        );
    }

    #[test]
    fn missing_header_is_denied_with_the_configured_status() {
        let config = json!({ "header": "x-api-client", "allow": ["a"], "status": 401 });
        let mut harness = Harness::<Allowlist>::new(config).unwrap();
        let (status, problem) = denial(harness.request_headers(&RequestHead::new("POST", "/x")));
        assert_eq!(status, 401);
        assert_eq!(problem["status"], 401);
        assert_eq!(problem["detail"], "header x-api-client is missing");
        assert_eq!(harness.counter("denied_total", &[("reason", "missing")]), 1);
    }

    #[test]
    fn repeated_header_is_denied() {
        let mut harness = allowlist();
        let (_, problem) = denial(harness.request_headers(&request(&["a", "b"])));
        assert_eq!(
            problem["detail"],
            "header x-api-client appears more than once"
        );
        assert_eq!(
            harness.counter("denied_total", &[("reason", "repeated")]),
            1
        );
    }

    #[test]
    fn empty_allow_list_denies_everyone() {
        let mut harness =
            Harness::<Allowlist>::new(json!({ "header": "x-api-client", "allow": [] })).unwrap();
        denial(harness.request_headers(&request(&["a"])));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let refused = |config: Value| match Harness::<Allowlist>::new(config) {
            Err(HarnessError::Config(errors)) => errors.join("; "),
            other => panic!("expected a schema violation, got {other:?}"),
        };
        assert_eq!(
            refused(json!({ "allow": ["a"] })),
            "/: missing required property `header`"
        );
        assert_eq!(
            refused(json!({ "header": "x", "allow": "a" })),
            "/allow: expected array"
        );
        assert_eq!(
            refused(json!({ "header": "x y", "allow": [] })),
            "/header: does not match the pattern ^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
        );
        assert_eq!(
            refused(json!({ "header": "x", "allow": ["a", "a"] })),
            "/allow/1: repeats an earlier item"
        );
        assert_eq!(
            refused(json!({ "header": "x", "allow": [], "status": 200 })),
            "/status: less than the minimum 400"
        );
        assert_eq!(
            refused(json!({ "header": "x", "allow": [], "extra": 1 })),
            "/extra: unexpected property"
        );
        assert_eq!(refused(json!(["x"])), "/: expected object");
    }

    #[test]
    fn the_plugin_checks_its_configuration_too() {
        // The gateway validates against the schema first; `new` still refuses what it cannot use.
        let config = |header: &str, status: u16| Config {
            header: header.into(),
            allow: vec![],
            status,
        };
        assert_eq!(
            Allowlist::new(config("", 403)).unwrap_err(),
            "`header` must not be empty"
        );
        assert_eq!(
            Allowlist::new(config("x", 302)).unwrap_err(),
            "`status` must be a 4xx code, not 302"
        );
        let wrong_type = serde_json::from_value::<Config>(
            json!({ "header": "x", "allow": [], "status": "403" }),
        );
        assert!(wrong_type.is_err());
    }
}
