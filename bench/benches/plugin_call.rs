//! The cost of one plugin call on the request path, in both isolation modes:
//! check out an instance, run the request-headers phase, give it back.
//!
//! The plugin is the `allowlist` example built from source with
//! `chasqui plugin build`; the request carries an allowed client, so the
//! plugin answers with a header change (the common, passing case).

use chasqui::plugin::{
    build, Capability, FailureMode, Header, Isolation, Limits, PluginEngine, PluginSpec,
    RequestContext, RequestHead,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::path::Path;

fn spec(component: &Path, isolation: Isolation) -> PluginSpec {
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

fn context() -> RequestContext {
    RequestContext {
        consumer_entity: Some("sin".into()),
        consumer_system: Some("portal".into()),
        service: "segip/v2".into(),
        environment: "pruebas".into(),
        request_id: "0123456789abcdef0123456789abcdef".into(),
        trace_id: None,
    }
}

fn plugin_call(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let component = build::build(&root.join("plugins/allowlist"), None, None)
        .expect("build the allowlist plugin");
    let cache = tempfile::tempdir().expect("tempdir");
    let engine = PluginEngine::new(cache.path(), None).expect("engine");
    let head = RequestHead {
        method: "GET".into(),
        path: "/segip/v2/personas/1234567".into(),
        headers: vec![
            Header {
                name: "host".into(),
                value: "gateway".into(),
            },
            Header {
                name: "x-api-client".into(),
                value: "sin-portal".into(),
            },
            Header {
                name: "accept".into(),
                value: "application/json".into(),
            },
        ],
    };
    let mut group = c.benchmark_group("plugin_call");
    // One phase call on an instance already checked out (pooled mode).
    let warm = engine
        .load(spec(&component, Isolation::Pooled))
        .expect("load");
    let mut call = warm.check_out(context()).expect("check out");
    group.bench_function("phase_only", |b| {
        b.iter(|| call.on_request_headers(&head).expect("call"))
    });
    drop(call);
    for (label, isolation) in [
        ("pooled", Isolation::Pooled),
        ("request", Isolation::Request),
    ] {
        let plugin = engine.load(spec(&component, isolation)).expect("load");
        group.bench_function(label, |b| {
            b.iter_batched(
                context,
                |ctx| {
                    let mut call = plugin.check_out(ctx).expect("check out");
                    let action = call.on_request_headers(&head).expect("call");
                    drop(call);
                    action
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, plugin_call);
criterion_main!(benches);
