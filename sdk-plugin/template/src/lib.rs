//! A minimal Chasqui plugin: adds a configured header to every request.

use chasqui_plugin_sdk::{
    export_plugin, host, Capability, HeaderChanges, HeadersAction, Metadata, Phase, Plugin,
    RequestHead,
};
use serde::Deserialize;

/// The configuration, as policy gives it (validated against `config.schema.json`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    header: String,
    value: String,
}

/// The plugin's state: built once per instance from its configuration.
#[derive(Debug)]
pub struct Template {
    config: Config,
}

impl Plugin for Template {
    type Config = Config;

    const METADATA: Metadata = Metadata {
        name: "template",
        version: env!("CARGO_PKG_VERSION"),
        capabilities: &[Capability::Log],
        phases: &[Phase::RequestHeaders],
        config_schema: include_str!("../config.schema.json"),
    };

    fn new(config: Config) -> Result<Self, String> {
        host::log::debug(&format!("adding {} to every request", config.header));
        Ok(Template { config })
    }

    fn on_request_headers(&mut self, _request: &RequestHead) -> HeadersAction {
        HeadersAction::Modify(HeaderChanges::new().set(&self.config.header, &self.config.value))
    }
}

export_plugin!(Template);

#[cfg(test)]
mod tests {
    use super::*;
    use chasqui_plugin_sdk::serde_json::json;
    use chasqui_plugin_sdk::testing::{Harness, HarnessError};

    #[test]
    fn adds_the_header() {
        let mut harness =
            Harness::<Template>::new(json!({"header": "x-hello", "value": "world"})).unwrap();
        let action = harness.request_headers(&RequestHead::new("GET", "/"));
        assert_eq!(
            action,
            HeadersAction::Modify(HeaderChanges::new().set("x-hello", "world"))
        );
        assert_eq!(harness.logs()[0].message, "adding x-hello to every request");
    }

    #[test]
    fn refuses_a_bad_configuration() {
        let err = Harness::<Template>::new(json!({"header": "X Hello"})).unwrap_err();
        assert!(matches!(err, HarnessError::Config(_)), "{err}");
    }
}
