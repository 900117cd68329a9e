//! What the plugin knows about the request in flight.

use crate::text;
use chasqui_plugin_sdk::host::context::Context;

/// The longest path kept for evidence.
const MAX_EVIDENCE_PATH: usize = 256;
/// The longest identity part used in a key-value key.
const MAX_KEY_PART: usize = 128;

/// The request, as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// Who calls: `entity/system`, or `address:<ip>` on a service without consumer
    /// authentication, or `anonymous`.
    pub consumer: String,
    /// The service code (`segip/v2`).
    pub service: String,
    /// `pruebas` or `produccion`.
    pub environment: String,
    /// The gateway's request id.
    pub request_id: String,
    /// The client's address, as the gateway gives it.
    pub client_address: Option<String>,
    /// The method.
    pub method: String,
    /// The path without the query, escaped and cut for evidence.
    pub path: String,
    /// The route after the service's version segment (`/transaccion/deuda`), for volume
    /// rules.
    pub route: String,
}

impl RequestInfo {
    /// Gathers the request's context.
    pub fn new(
        context: Context,
        client_address: Option<String>,
        method: &str,
        target: &str,
    ) -> Self {
        let consumer = match (&context.consumer_entity, &context.consumer_system) {
            (Some(entity), Some(system)) => format!("{entity}/{system}"),
            (Some(entity), None) => entity.clone(),
            _ => match &client_address {
                Some(address) => format!("address:{address}"),
                None => "anonymous".to_string(),
            },
        };
        let (path, _) = text::split_target(target);
        RequestInfo {
            consumer,
            service: context.service,
            environment: context.environment,
            request_id: context.request_id,
            client_address,
            method: text::escape(&text::truncate(method, 16)),
            path: text::escape(&text::truncate(path, MAX_EVIDENCE_PATH)),
            route: route(path).to_string(),
        }
    }

    /// `prefix/<service>/<consumer>` as a key-value key, each part bounded so the key stays
    /// under the store's limit.
    pub fn key(&self, prefix: &str, scope: &str) -> String {
        format!(
            "{prefix}/{}/{}",
            text::truncate(scope, MAX_KEY_PART),
            text::truncate(&self.consumer, MAX_KEY_PART)
        )
    }
}

/// The route after the first `v<digits>` segment (`/fake/ppe/v1/transaccion/deuda` is
/// `/transaccion/deuda`); the whole path when there is none.
pub fn route(path: &str) -> &str {
    let mut offset = 0;
    for segment in path.split('/') {
        offset += segment.len() + 1;
        let is_version = segment.len() > 1
            && segment.starts_with('v')
            && segment[1..].bytes().all(|b| b.is_ascii_digit());
        if is_version {
            let rest = path.get(offset - 1..).unwrap_or_default();
            return if rest.is_empty() { "/" } else { rest };
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_after_the_version_segment() {
        assert_eq!(route("/ppe/v1/transaccion/deuda"), "/transaccion/deuda");
        assert_eq!(
            route("/fake/ppe/v1/transaccion/deuda"),
            "/transaccion/deuda"
        );
        assert_eq!(route("/segip/v2/personas/123"), "/personas/123");
        assert_eq!(route("/segip/v2"), "/");
        assert_eq!(route("/segip/v2/"), "/");
        assert_eq!(route("/sin/version"), "/sin/version");
        assert_eq!(route("/a/v/b"), "/a/v/b");
        assert_eq!(route("/a/vx1/b"), "/a/vx1/b");
    }

    #[test]
    fn consumers_are_named_by_entity_and_system_or_by_address() {
        let context = |entity: Option<&str>, system: Option<&str>| Context {
            consumer_entity: entity.map(str::to_string),
            consumer_system: system.map(str::to_string),
            service: "segip/v2".into(),
            environment: "produccion".into(),
            request_id: "r1".into(),
            trace_id: None,
        };
        let info = RequestInfo::new(
            context(Some("sin"), Some("facturacion")),
            None,
            "GET",
            "/x?q=1",
        );
        assert_eq!(info.consumer, "sin/facturacion");
        assert_eq!(info.path, "/x");
        assert_eq!(info.key("vol", "segip/v2"), "vol/segip/v2/sin/facturacion");
        let info = RequestInfo::new(context(None, None), Some("203.0.113.7".into()), "GET", "/x");
        assert_eq!(info.consumer, "address:203.0.113.7");
        let info = RequestInfo::new(context(None, None), None, "GET", "/<x>");
        assert_eq!(info.consumer, "anonymous");
        assert_eq!(info.path, "/\\x3cx\\x3e");
    }
}
