//! The plugin call of `benches/plugin_call.rs`, repeated a given number of
//! times, for instruction counts that a noisy machine does not blur:
//!
//! ```sh
//! cargo build --release -p chasqui-bench --example plugin_call_count
//! B=$CARGO_TARGET_DIR/release/examples/plugin_call_count
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.0 $B pooled 0 /tmp/pc-cache
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.1 $B pooled 2000 /tmp/pc-cache
//! ```
//!
//! The difference of the two totals over 2000 is the instructions of one
//! call (check out, request-headers phase, give back). The third argument
//! keeps the compiled plugin between runs, so that only the first compiles.

use chasqui::plugin::{
    build, Capability, FailureMode, Header, Isolation, Limits, PluginEngine, PluginSpec,
    RequestContext, RequestHead,
};
use std::path::{Path, PathBuf};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let isolation = match args.next().as_deref() {
        Some("request") => Isolation::Request,
        _ => Isolation::Pooled,
    };
    let calls: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let cache = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/tmp/plugin-call-cache".into()),
    );
    std::fs::create_dir_all(&cache)?;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let component = build::build(&root.join("plugins/allowlist"), None, None)?;
    let engine = PluginEngine::new(&cache, None)?;
    let plugin = engine.load(PluginSpec {
        name: "allowlist".into(),
        component,
        config: serde_json::json!({ "header": "x-api-client", "allow": ["sin-portal", "segip"] }),
        capabilities: vec![Capability::Log, Capability::Metrics],
        isolation,
        failure: FailureMode::FailClosed,
        limits: Limits::default(),
        durable_kv: false,
    })?;
    let head = RequestHead {
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
    };
    let mut passed = 0;
    for _ in 0..calls {
        let mut call = plugin.check_out(RequestContext {
            consumer_entity: Some("sin".into()),
            consumer_system: Some("portal".into()),
            service: "segip/v2".into(),
            environment: "pruebas".into(),
            request_id: "0123456789abcdef0123456789abcdef".into(),
            trace_id: None,
        })?;
        if matches!(
            call.on_request_headers(&head)?,
            chasqui::plugin::HeadersAction::Modify(_)
        ) {
            passed += 1;
        }
    }
    println!("{passed} of {calls} calls passed");
    Ok(())
}
