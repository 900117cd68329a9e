//! The plugin call that `benches/plugin_call.rs` times and
//! `examples/plugin_call_count.rs` counts: the `allowlist` example, built
//! from source, asked about a request from an allowed client (the common,
//! passing case, answered with a header change). Included by both with
//! `#[path]`, so that the two measure the same call.

use chasqui::plugin::{
    build, Capability, FailureMode, Header, Isolation, Limits, PluginSpec, RequestContext,
    RequestHead,
};
use std::path::{Path, PathBuf};

/// Builds the `allowlist` plugin with `chasqui plugin build`'s toolchain; returns the component.
/// `CHASQUI_BENCH_ALLOWLIST=<component>` measures that component instead (for example one
/// built by an earlier version of the build, to compare the two in one sitting).
pub fn build_allowlist() -> anyhow::Result<PathBuf> {
    if let Some(component) = std::env::var_os("CHASQUI_BENCH_ALLOWLIST") {
        return Ok(PathBuf::from(component));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    build::build(&root.join("plugins/allowlist"), None, None)
}

/// The plugin's policy entry in the given isolation mode.
pub fn spec(component: &Path, isolation: Isolation) -> PluginSpec {
    PluginSpec {
        name: "allowlist".into(),
        component: component.to_path_buf(),
        config: serde_json::json!({ "header": "x-api-client", "allow": ["sin-portal", "segip"] }),
        capabilities: vec![Capability::Log, Capability::Metrics],
        isolation,
        failure: FailureMode::FailClosed,
        limits: Limits::default(),
        durable_kv: false,
    }
}

/// The request's context, as the gateway gives it.
pub fn context() -> RequestContext {
    RequestContext {
        consumer_entity: Some("sin".into()),
        consumer_system: Some("portal".into()),
        service: "segip/v2".into(),
        environment: "pruebas".into(),
        request_id: "0123456789abcdef0123456789abcdef".into(),
        trace_id: None,
    }
}

/// The request head: three fields, one of them the allowed client.
pub fn head() -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: "/segip/v2/personas/1234567".into(),
        headers: [
            ("host", "gateway"),
            ("x-api-client", "sin-portal"),
            ("accept", "application/json"),
        ]
        .into_iter()
        .map(|(name, value)| Header {
            name: name.into(),
            value: value.into(),
        })
        .collect(),
    }
}
