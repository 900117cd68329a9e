//! End-to-end test of tracing and structured logs: the real gateway, with a
//! plugin on the service and an OTLP/HTTP receiver inside the test, exports
//! the request span, the plugin spans and the upstream span under one trace
//! id; the upstream receives a `traceparent` of that trace; the JSON access
//! log carries the trace and request ids, and no token ever reaches the log.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::net::TcpListener;

/// An OTLP/HTTP receiver: keeps every span posted to `/v1/traces` (JSON).
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let kept = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let kept = kept.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let json = req
                            .headers()
                            .get("content-type")
                            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
                        let body = req.into_body().collect().await?.to_bytes();
                        let status = if path == "/v1/traces" && json {
                            let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
                                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                                    for span in ss["spans"].as_array().into_iter().flatten() {
                                        kept.lock().unwrap().push(span.clone());
                                    }
                                }
                            }
                            200
                        } else {
                            400
                        };
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), spans)
}

fn catalog(a: &Upstream) -> String {
    format!(
        "entities:
  - {{code: a, name: A}}
  - {{code: c, name: C}}
services:
  - {{entity: a, code: s, version: 1, name: S, category: Salud, environments: {{pruebas: {{upstreams: [\"{}\"]}}}}}}
consumers:
  - entity: c
    code: sys
    name: Sistema
    grants:
      - {{service: a/v1, environments: [pruebas]}}
    tokens:
      - {{environment: pruebas, label: test}}
",
        a.url()
    )
}

fn policy() -> String {
    format!(
        "{TEST_POLICY}plugins:
  - name: misbehave
    component: {}
    config: {{mode: normal}}
    capabilities: [log, ledger]
    isolation: request
    failure: fail-closed
    limits: {{cpu_ms: 50, memory_bytes: 8388608}}
    services: [a/v1]
",
        component("tests/fixtures/misbehave").display()
    )
}

/// The spans of `trace` once at least `n` have arrived.
async fn spans_of(spans: &Mutex<Vec<Value>>, trace: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s["traceId"] == trace)
            .cloned()
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "only {} spans of {trace} after 10 s: {found:?}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_request_exports_request_plugin_and_upstream_spans_and_logs_json() {
    let (endpoint, spans) = otlp_receiver().await;
    let upstream = Upstream::start("a", Behavior::Echo).await;
    let gw = Gateway::start_with_env(
        &catalog(&upstream),
        &policy(),
        &[
            ("CHASQUI_OTLP_ENDPOINT", endpoint.as_str()),
            ("CHASQUI_LOG_FORMAT", "json"),
        ],
    )
    .await;
    let token = gw.token("test").to_string();

    // A caller that sends its own trace context.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let resp = gw
        .client
        .get(gw.url("/a/v1/x/1"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let _ = resp.bytes().await.unwrap();

    let found = spans_of(&spans, trace, 3).await;
    let of_kind = |k: u64| -> Vec<&Value> { found.iter().filter(|s| s["kind"] == k).collect() };
    let server = of_kind(2);
    assert_eq!(server.len(), 1, "one request span: {found:?}");
    let root = server[0];
    assert_eq!(
        root["parentSpanId"], caller_span,
        "continues the caller's span"
    );
    assert_eq!(root["name"], "GET a/v1");
    let attr = |span: &Value, key: &str| -> Option<String> {
        span["attributes"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key)
            .and_then(|a| a["value"]["stringValue"].as_str().map(String::from))
    };
    assert_eq!(
        attr(root, "chasqui.request_id").as_deref(),
        Some(request_id.as_str())
    );
    assert_eq!(
        attr(root, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(root, "http.route").as_deref(), Some("/a/v1/x/{id}"));
    let root_id = root["spanId"].as_str().unwrap();
    let upstream_spans = of_kind(3);
    assert_eq!(upstream_spans.len(), 1, "one upstream span: {found:?}");
    let up = upstream_spans[0];
    assert_eq!(up["parentSpanId"], root_id);
    let plugin_spans = of_kind(1);
    assert!(!plugin_spans.is_empty(), "plugin spans: {found:?}");
    for p in &plugin_spans {
        assert_eq!(p["parentSpanId"], root_id, "{p}");
        assert!(
            p["name"].as_str().unwrap().starts_with("plugin misbehave "),
            "{p}"
        );
    }
    assert!(plugin_spans
        .iter()
        .any(|p| p["name"] == "plugin misbehave request_headers"));
    for s in &found {
        let start: u128 = s["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u128 = s["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(start <= end && start > 1_600_000_000_000_000_000, "{s}");
    }

    // The upstream continues the same trace, under the upstream span.
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(
        seen.header("traceparent"),
        Some(format!("00-{trace}-{}-01", up["spanId"].as_str().unwrap()).as_str())
    );

    // Without a caller's context the gateway starts a trace, and the
    // upstream gets it too.
    let resp = gw.get("/a/v1/x/2", &token).await;
    assert_eq!(resp.status(), 200);
    let _ = resp.bytes().await.unwrap();
    let seen = upstream.seen().pop().unwrap();
    let parent = seen.header("traceparent").expect("a traceparent upstream");
    let parts: Vec<&str> = parent.split('-').collect();
    assert_eq!(parts.len(), 4, "{parent}");
    assert_ne!(parts[1], trace);
    let new_trace = spans_of(&spans, parts[1], 3).await;
    let root = new_trace.iter().find(|s| s["kind"] == 2).unwrap();
    assert!(root.get("parentSpanId").is_none(), "a root span: {root}");

    // A bad token, too, to check it stays out of the log.
    let bogus = "chq_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let resp = gw.get("/a/v1/x/3", bogus).await;
    assert_eq!(resp.status(), 401);

    // JSON logs: the access line of the first request names its trace.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = gw.log();
        let found = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["request_id"] == request_id.as_str());
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no access line for {request_id}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(line["trace_id"], trace, "{line}");
    assert_eq!(line["target"], "chasqui::access", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    let log = gw.log();
    for l in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(l).is_ok(),
            "every log line is JSON: {l}"
        );
    }
    // Secrets never reach the log: not the token, not a rejected one, not
    // even the part after the prefix.
    for secret in [
        token.as_str(),
        bogus,
        &token[token.len() - 16..],
        &gw.admin_token(),
    ] {
        assert!(!log.contains(secret), "a secret is in the log");
    }
}
