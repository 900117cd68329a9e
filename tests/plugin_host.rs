//! Tests of the plugin host with real components built from source by
//! `chasqui plugin build`: phases and actions, capability and configuration
//! refusal at load, CPU and memory limits, traps, the breaker, isolation
//! modes and the artifact cache.

use chasqui::plugin::{
    BodyAction, BodyChunk, Capability, FailureMode, Header, HeadersAction, Isolation, Limits,
    PluginEngine, PluginError, PluginSpec, RequestContext, RequestHead, ResponseHead,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::component;

fn engine() -> (Arc<PluginEngine>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (
        PluginEngine::new(&dir.path().join("cache"), None).unwrap(),
        dir,
    )
}

fn misbehave(mode: &str, isolation: Isolation, limits: Limits) -> PluginSpec {
    PluginSpec {
        name: "misbehave".into(),
        component: component("tests/fixtures/misbehave"),
        config: serde_json::json!({ "mode": mode }),
        capabilities: vec![Capability::Log, Capability::Ledger],
        isolation,
        failure: FailureMode::FailClosed,
        limits,
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

fn get(path: &str) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: path.into(),
        headers: vec![Header {
            name: "x-drop".into(),
            value: "1".into(),
        }],
    }
}

fn header<'a>(set: &'a [Header], name: &str) -> Option<&'a str> {
    set.iter()
        .find(|h| h.name == name)
        .map(|h| h.value.as_str())
}

#[test]
fn every_phase_and_action() {
    let (engine, _dir) = engine();
    let plugin = engine
        .load(misbehave("normal", Isolation::Request, Limits::default()))
        .unwrap();
    let meta = plugin.metadata().unwrap();
    assert_eq!(meta.name, "misbehave");
    assert_eq!(meta.phases.len(), 4);

    let mut call = plugin.check_out(context()).unwrap();
    match call.on_request_headers(&get("/x/modify")).unwrap() {
        HeadersAction::Modify(changes) => {
            assert_eq!(header(&changes.set, "x-plugin"), Some("modified"));
            assert_eq!(changes.remove, vec!["x-drop".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    match call
        .on_request_body(&BodyChunk {
            data: b"hola".to_vec(),
            end_of_stream: true,
        })
        .unwrap()
    {
        BodyAction::Replace(data) => assert_eq!(data, b"HOLA"),
        other => panic!("{other:?}"),
    }
    match call
        .on_response_headers(&ResponseHead {
            status: 201,
            headers: vec![],
        })
        .unwrap()
    {
        HeadersAction::Modify(changes) => {
            assert_eq!(header(&changes.set, "x-plugin-response"), Some("201"))
        }
        other => panic!("{other:?}"),
    }
    match call
        .on_response_body(&BodyChunk {
            data: b"{}".to_vec(),
            end_of_stream: true,
        })
        .unwrap()
    {
        BodyAction::Replace(data) => assert_eq!(data, b"{} [seen by misbehave]"),
        other => panic!("{other:?}"),
    }
    drop(call);

    let mut call = plugin.check_out(context()).unwrap();
    match call.on_request_headers(&get("/x/respond")).unwrap() {
        HeadersAction::Respond(r) => {
            assert_eq!(r.status, 200);
            assert_eq!(r.body, b"answered by plugin");
        }
        other => panic!("{other:?}"),
    }
    drop(call);
    let mut call = plugin.check_out(context()).unwrap();
    call.on_request_headers(&get("/x/teapot")).unwrap();
    match call
        .on_response_headers(&ResponseHead {
            status: 200,
            headers: vec![],
        })
        .unwrap()
    {
        HeadersAction::Respond(r) => assert_eq!(r.status, 418),
        other => panic!("{other:?}"),
    }
}

#[test]
fn capabilities_beyond_the_grant_are_refused_at_load() {
    let (engine, _dir) = engine();
    let spec = PluginSpec {
        name: "allowlist".into(),
        component: component("plugins/allowlist"),
        config: serde_json::json!({ "header": "x-api-client", "allow": ["a"] }),
        capabilities: vec![Capability::Log],
        isolation: Isolation::Pooled,
        failure: FailureMode::FailClosed,
        limits: Limits::default(),
        durable_kv: false,
    };
    let err = engine.load(spec.clone()).unwrap_err();
    assert!(
        matches!(&err, PluginError::CapabilityNotGranted { capability, .. } if capability == "metrics"),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("allowlist") && message.contains("metrics") && message.contains("log"),
        "{message}"
    );

    let mut none = misbehave("normal", Isolation::Request, Limits::default());
    none.capabilities.clear();
    let err = engine.load(none).unwrap_err();
    assert!(
        matches!(err, PluginError::CapabilityNotGranted { ref capability, .. } if capability == "log"),
        "{err}"
    );

    let granted = PluginSpec {
        capabilities: vec![Capability::Log, Capability::Metrics],
        ..spec
    };
    let plugin = engine.load(granted).unwrap();
    let mut call = plugin.check_out(context()).unwrap();
    let mut req = get("/x");
    req.headers.push(Header {
        name: "x-api-client".into(),
        value: "b".into(),
    });
    match call.on_request_headers(&req).unwrap() {
        HeadersAction::Respond(r) => {
            assert_eq!(r.status, 403);
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(
                body["type"],
                "https://chasqui.agetic.gob.bo/problems/plugin-denied"
            );
        }
        other => panic!("{other:?}"),
    }
    drop(call);
    assert!(plugin
        .shared()
        .metric("denied_total{reason=\"not_allowed\"}")
        .is_some_and(|v| v >= 1.0));
}

#[test]
fn bad_configurations_are_refused_at_load() {
    let (engine, _dir) = engine();
    let err = engine
        .load(misbehave("other", Isolation::Request, Limits::default()))
        .unwrap_err();
    assert!(matches!(err, PluginError::Config { .. }), "{err}");
    assert!(err.to_string().contains("mode"), "{err}");
    let err = engine
        .load(misbehave(
            "refuse-init",
            Isolation::Request,
            Limits::default(),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("refused by init"), "{err}");
    let spec = PluginSpec {
        name: "allowlist".into(),
        component: component("plugins/allowlist"),
        config: serde_json::json!({ "header": "x-api-client" }),
        capabilities: vec![Capability::Log, Capability::Metrics],
        isolation: Isolation::Request,
        failure: FailureMode::FailClosed,
        limits: Limits::default(),
        durable_kv: false,
    };
    let err = engine.load(spec).unwrap_err();
    assert!(err.to_string().contains("allow"), "{err}");
    let mut wrong_name = misbehave("normal", Isolation::Request, Limits::default());
    wrong_name.name = "other".into();
    assert!(engine
        .load(wrong_name)
        .unwrap_err()
        .to_string()
        .contains("declares the name"));
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline_while_others_are_served() {
    let (engine, _dir) = engine();
    let limits = Limits {
        cpu_ms: 20,
        ..Limits::default()
    };
    let plugin = engine
        .load(misbehave("normal", Isolation::Pooled, limits))
        .unwrap();
    let busy = {
        let plugin = plugin.clone();
        std::thread::spawn(move || {
            let mut served = 0;
            for _ in 0..200 {
                let mut call = plugin.check_out(context()).unwrap();
                if call.on_request_headers(&get("/x/fine")).is_ok() {
                    served += 1;
                }
            }
            served
        })
    };
    let started = Instant::now();
    let mut call = plugin.check_out(context()).unwrap();
    let err = call.on_request_headers(&get("/x/loop")).unwrap_err();
    let took = started.elapsed();
    drop(call);
    assert!(err.to_string().contains("CPU limit"), "{err}");
    assert!(took < Duration::from_millis(500), "stopped after {took:?}");
    assert_eq!(
        busy.join().unwrap(),
        200,
        "other requests kept being served"
    );
    println!("infinite loop stopped after {took:?} (limit 20 ms)");
}

#[test]
fn a_memory_bomb_is_stopped_at_its_limit() {
    let (engine, _dir) = engine();
    let limits = Limits {
        memory_bytes: 8 << 20,
        ..Limits::default()
    };
    let plugin = engine
        .load(misbehave("normal", Isolation::Pooled, limits))
        .unwrap();
    let mut call = plugin.check_out(context()).unwrap();
    let err = call.on_request_headers(&get("/x/bomb")).unwrap_err();
    drop(call);
    assert!(matches!(err, PluginError::Call { .. }), "{err}");
    let mut call = plugin.check_out(context()).unwrap();
    assert!(
        call.on_request_headers(&get("/x/after")).is_ok(),
        "a fresh instance replaces the failed one"
    );
}

#[test]
fn a_stack_overflow_traps_and_fails_only_that_call() {
    let (engine, _dir) = engine();
    // 1 MiB of memory in all: less than rustc's default wasm stack alone,
    // enough with the 256 KiB one `chasqui plugin build` links.
    let limits = Limits {
        memory_bytes: 1 << 20,
        ..Limits::default()
    };
    let plugin = engine
        .load(misbehave("normal", Isolation::Request, limits))
        .unwrap();
    let mut call = plugin.check_out(context()).unwrap();
    let err = call.on_request_headers(&get("/x/deep")).unwrap_err();
    drop(call);
    assert!(err.to_string().contains("trapped"), "{err}");
    let mut call = plugin.check_out(context()).unwrap();
    assert!(
        call.on_request_headers(&get("/x/after")).is_ok(),
        "the next request gets a sound instance"
    );
}

#[test]
fn a_trap_or_a_broken_contract_fails_only_that_call() {
    let (engine, _dir) = engine();
    let plugin = engine
        .load(misbehave("normal", Isolation::Pooled, Limits::default()))
        .unwrap();
    let mut call = plugin.check_out(context()).unwrap();
    let err = call.on_request_headers(&get("/x/trap")).unwrap_err();
    assert!(err.to_string().contains("trapped"), "{err}");
    drop(call);
    let mut call = plugin.check_out(context()).unwrap();
    let err = call.on_request_headers(&get("/x/bad-status")).unwrap_err();
    assert!(err.to_string().contains("broke the contract"), "{err}");
    drop(call);
    let mut call = plugin.check_out(context()).unwrap();
    assert!(call.on_request_headers(&get("/x/fine")).is_ok());
}

#[test]
fn the_breaker_opens_after_repeated_failures_and_closes_on_its_own() {
    let (engine, _dir) = engine();
    let limits = Limits {
        breaker_threshold: 3,
        breaker_cool_down_ms: 200,
        ..Limits::default()
    };
    let plugin = engine
        .load(misbehave("normal", Isolation::Request, limits))
        .unwrap();
    // The checkouts are held, as a request's context holds its checkout
    // until after its answer was sent: each failure counts when the call
    // fails, so a client's next request already finds the breaker open.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut call = plugin.check_out(context()).unwrap();
        assert!(call.on_request_headers(&get("/x/trap")).is_err());
        held.push(call);
    }
    assert!(plugin.breaker_open());
    drop(held);
    assert!(plugin.breaker_open(), "counted once, not again at the drop");
    assert!(matches!(
        plugin.check_out(context()),
        Err(PluginError::BreakerOpen { .. })
    ));
    std::thread::sleep(Duration::from_millis(250));
    let mut probe = plugin.check_out(context()).expect("half-open: one probe");
    assert!(
        matches!(
            plugin.check_out(context()),
            Err(PluginError::BreakerOpen { .. })
        ),
        "one probe at a time"
    );
    assert!(probe.on_request_headers(&get("/x/fine")).is_ok());
    drop(probe);
    assert!(!plugin.breaker_open());
    assert!(plugin.check_out(context()).is_ok());
}

/// The `x-seen` and `x-ended` values of four requests in a row.
fn seen_values(isolation: Isolation) -> (Vec<String>, Vec<String>) {
    let (engine, _dir) = engine();
    let plugin = engine
        .load(misbehave("remember", isolation, Limits::default()))
        .unwrap();
    (0..4)
        .map(|_| {
            let mut call = plugin.check_out(context()).unwrap();
            match call.on_request_headers(&get("/x/r")).unwrap() {
                HeadersAction::Modify(c) => (
                    header(&c.set, "x-seen").unwrap().to_string(),
                    header(&c.set, "x-ended").unwrap().to_string(),
                ),
                other => panic!("{other:?}"),
            }
        })
        .unzip()
}

#[test]
fn request_mode_never_carries_data_between_requests() {
    let (seen, _) = seen_values(Isolation::Request);
    assert_eq!(seen, vec!["0", "0", "0", "0"]);
    // In pooled mode the same warm instance (and its globals) serves again,
    // and it had `on-request-end` after each earlier request.
    let (seen, ended) = seen_values(Isolation::Pooled);
    assert_eq!(seen, vec!["0", "1", "2", "3"]);
    assert_eq!(ended, vec!["0", "1", "2", "3"]);
}

#[test]
fn request_end_stops_only_for_a_plugin_that_keeps_nothing_per_request() {
    let (engine, _dir) = engine();
    // `misbehave` clears its request data in `on_request_end`: it keeps getting it.
    let keeps = engine
        .load(misbehave("normal", Isolation::Pooled, Limits::default()))
        .unwrap();
    // `allowlist` keeps the SDK's default `on_request_end`: the first call says so.
    let stateless = engine
        .load(PluginSpec {
            name: "allowlist".into(),
            component: component("plugins/allowlist"),
            config: serde_json::json!({ "header": "x-api-client", "allow": ["sin-portal"] }),
            capabilities: vec![Capability::Log, Capability::Metrics],
            isolation: Isolation::Pooled,
            failure: FailureMode::FailClosed,
            limits: Limits::default(),
            durable_kv: false,
        })
        .unwrap();
    for plugin in [&keeps, &stateless] {
        assert!(plugin.calls_request_end(), "asked until the plugin answers");
        for _ in 0..3 {
            let mut call = plugin.check_out(context()).unwrap();
            call.on_request_headers(&get("/x/fine")).unwrap();
        }
    }
    assert!(keeps.calls_request_end());
    assert!(!stateless.calls_request_end());
}

#[test]
fn compiled_artifacts_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let engine = PluginEngine::new(&cache, None).unwrap();
    let started = Instant::now();
    engine
        .load(misbehave("normal", Isolation::Request, Limits::default()))
        .unwrap();
    let cold = started.elapsed();
    let artifacts: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(artifacts.len(), 1, "one precompiled artifact");
    let engine = PluginEngine::new(&cache, None).unwrap();
    let started = Instant::now();
    engine
        .load(misbehave("normal", Isolation::Request, Limits::default()))
        .unwrap();
    let warm = started.elapsed();
    println!("load: compiled {cold:?}, from cache {warm:?}");
    assert!(
        warm < cold,
        "loading from the cache is faster ({warm:?} vs {cold:?})"
    );
}
