//! The cost of one plugin call on the request path, in both isolation modes:
//! check out an instance, run the request-headers phase, give it back.
//!
//! The call is the one of `shared/allowlist_call.rs`: the `allowlist`
//! example built from source with `chasqui plugin build`, asked about an
//! allowed client, so that it answers with a header change (the common,
//! passing case).

#[path = "../shared/allowlist_call.rs"]
mod allowlist_call;

use allowlist_call::{build_allowlist, context, head, spec};
use chasqui::plugin::{Isolation, PluginEngine};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn plugin_call(c: &mut Criterion) {
    let component = build_allowlist().expect("build the allowlist plugin");
    let cache = tempfile::tempdir().expect("tempdir");
    let engine = PluginEngine::new(cache.path(), None).expect("engine");
    let head = head();
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
