//! The cost of the AGETIC plugin chain on one proxied request, in process:
//! the same request as the `plugins` scenario of `run.sh` (`GET
//! /segip/v2/personas/1234567` with a consumer token and a Ciudadanía
//! citizen JWT), run through the gateway's own plugin stage
//! ([`chasqui::stage::PluginRun`]) exactly as the proxy runs it: check out
//! every plugin of the chain, request headers, response headers, the
//! response body (one chunk, then the end of the stream), give back.
//!
//! Each plugin alone and the four chained are measured, so that whether the
//! chain costs more than the sum of its parts shows here without sockets,
//! TLS or a load generator in the way.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use chasqui::plugin::chain::Chain;
use chasqui::plugin::{
    build, CallContext, Capability, FailureMode, Isolation, Limits, LoadedPlugin, PluginEngine,
    PluginSpec, RequestContext,
};
use chasqui::stage::{Outcome, PluginRun};
use criterion::{criterion_group, criterion_main, Criterion};
use pingora_http::{RequestHeader, ResponseHeader};
use std::path::Path;
use std::sync::Arc;

/// The upstream's answer in `run.sh`.
const BODY: &str = r#"{"ci":"1234567","nombres":"JUAN CARLOS","apellido_paterno":"MAMANI","apellido_materno":"QUISPE","nacimiento":"1985-04-12"}"#;

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A citizen JWT signed with the test key of `plugins/ciudadania`, as
/// `run.sh` makes it.
fn citizen_jwt() -> String {
    let key = std::fs::read(root().join("plugins/ciudadania/tests/fixtures/rsa-2048.pk8"))
        .expect("the test key");
    let key = ring::signature::RsaKeyPair::from_pkcs8(&key).expect("an RSA key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"test-rsa-1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"iss":"https://bench.ciudadania.example","aud":"bench","sub":"5f0c2a8e-1b7d-4c3e-9a61-000000000001","iat":{now},"exp":{},"scope":"openid profile"}}"#,
        now + 86_400
    ));
    let input = format!("{header}.{payload}");
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The four plugins as `bench/scenarios/plugins.sh` binds them.
fn specs(dir: &Path) -> Vec<PluginSpec> {
    let jwk: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("plugins/ciudadania/tests/fixtures/rsa-2048.jwk.json"))
            .expect("the test JWK"),
    )
    .expect("JSON");
    let spec = |name: &str, config: serde_json::Value, caps: &[Capability]| PluginSpec {
        name: name.into(),
        component: dir.join(format!("chasqui-plugin-{name}.wasm")),
        config,
        capabilities: caps.to_vec(),
        isolation: Isolation::Pooled,
        failure: FailureMode::FailClosed,
        limits: Limits::default(),
        durable_kv: false,
    };
    use Capability::*;
    vec![
        spec(
            "cgii",
            serde_json::json!({"mode": "block", "sensitivity": "medium"}),
            &[Log, Kv, Metrics, Context, Incident],
        ),
        spec(
            "ciudadania",
            serde_json::json!({"issuers": {"produccion": {
                "issuer": "https://bench.ciudadania.example",
                "audiences": ["bench"],
                "jwks": {"keys": [jwk]}
            }}}),
            &[Log, Kv, Clock, Crypto, Metrics, Ledger, Context],
        ),
        spec(
            "ppe",
            serde_json::json!({}),
            &[Log, Kv, Clock, Crypto, Metrics, Ledger, Context, Metering],
        ),
        spec(
            "sefe",
            serde_json::json!({}),
            &[Log, Kv, Clock, Crypto, Metrics, Ledger, Context],
        ),
    ]
}

/// The request of `run.sh`, with the citizen JWT when there is one.
fn request(jwt: Option<&str>) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/segip/v2/personas/1234567", None).expect("head");
    for (name, value) in [
        ("host", "127.0.0.1:18103"),
        ("user-agent", "wrk"),
        (
            "authorization",
            "Bearer chq_live_0123456789abcdef0123456789abcdef",
        ),
    ] {
        req.insert_header(name, value).expect("header");
    }
    if let Some(jwt) = jwt {
        req.insert_header("x-ciudadania-token", jwt)
            .expect("header");
    }
    req
}

fn response() -> ResponseHeader {
    let mut resp = ResponseHeader::build(200, None).expect("head");
    for (name, value) in [
        ("server", "nginx"),
        ("date", "Thu, 26 Nov 2026 16:00:00 GMT"),
        ("content-type", "application/json"),
        ("content-length", "117"),
        ("connection", "keep-alive"),
    ] {
        resp.insert_header(name, value).expect("header");
    }
    resp
}

fn context() -> CallContext {
    CallContext {
        request: RequestContext {
            consumer_entity: Some("bench".into()),
            consumer_system: Some("load".into()),
            service: "segip/v2".into(),
            environment: "produccion".into(),
            request_id: "0123456789abcdef0123456789abcdef".into(),
            trace_id: None,
        },
        client_address: Some("127.0.0.1".into()),
    }
}

/// One request through the chain, as the proxy runs it.
fn one_request(chain: &Chain, template: &RequestHeader) {
    let mut run = match PluginRun::start(chain, &std::sync::Arc::new(context())) {
        Ok(run) => run,
        Err((_, detail)) => panic!("check out: {detail}"),
    };
    let mut req = template.clone();
    assert!(matches!(run.request_headers(&mut req), Outcome::Continue));
    let mut resp = response();
    assert!(matches!(run.response_headers(&mut resp), Outcome::Continue));
    let mut body = Some(Bytes::from_static(BODY.as_bytes()));
    assert!(matches!(
        run.response_body(&mut body, false),
        Outcome::Continue
    ));
    let mut end = None;
    assert!(matches!(
        run.response_body(&mut end, true),
        Outcome::Continue
    ));
    drop(run);
}

fn plugin_chain(c: &mut Criterion) {
    let mut dir = None;
    for name in ["cgii", "ciudadania", "ppe", "sefe"] {
        let built = build::build(&root().join("plugins").join(name), None, None)
            .unwrap_or_else(|e| panic!("build plugins/{name}: {e:#}"));
        dir = built.parent().map(Path::to_path_buf);
    }
    let dir = dir.expect("a component folder");
    let cache = tempfile::tempdir().expect("tempdir");
    let engine = PluginEngine::new(cache.path(), None).expect("engine");
    let plugins: Vec<Arc<LoadedPlugin>> = specs(&dir)
        .into_iter()
        .map(|spec| engine.load(spec).expect("load"))
        .collect();
    let jwt = citizen_jwt();
    let with_jwt = request(Some(&jwt));
    let without = request(None);
    let mut group = c.benchmark_group("plugin_chain");
    // Each plugin alone, on the request `run.sh` sends it (the JWT only
    // where Ciudadanía runs).
    for plugin in &plugins {
        let chain: Chain = vec![plugin.clone()].into();
        let req = if plugin.name() == "ciudadania" {
            &with_jwt
        } else {
            &without
        };
        group.bench_function(plugin.name(), |b| b.iter(|| one_request(&chain, req)));
    }
    // CGII on the chained request: it also sees the citizen JWT.
    let cgii: Chain = vec![plugins[0].clone()].into();
    group.bench_function("cgii_with_jwt", |b| {
        b.iter(|| one_request(&cgii, &with_jwt))
    });
    let all: Chain = plugins.clone().into();
    group.bench_function("all", |b| b.iter(|| one_request(&all, &with_jwt)));
    group.finish();
}

criterion_group!(benches, plugin_chain);
criterion_main!(benches);
