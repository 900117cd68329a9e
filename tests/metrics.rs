//! End-to-end test of the Prometheus scrape endpoint: the real gateway in
//! front of a real upstream, a known mix of calls, then `GET /metrics` on
//! the admin listener, parsed line by line.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;
use tokio::net::TcpListener;

/// The upstream's answer to a found path.
const FOUND: &str = r#"{"found":true}"#;
/// The upstream's answer to a path containing `missing`.
const MISSING: &str = r#"{"found":false,"detail":"no such record"}"#;

/// An upstream that answers 404 for paths containing `missing`, else 200.
async fn status_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let (status, body) = if req.uri().path().contains("missing") {
                        (404, MISSING)
                    } else {
                        (200, FOUND)
                    };
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// One sample of the exposition: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The parsed exposition: samples in order, and the `# TYPE` of each family.
struct Exposition {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
    helps: BTreeSet<String>,
}

impl Exposition {
    /// Parses the text format: `# HELP`/`# TYPE` lines, and every other
    /// non-empty line `name{k="v",...} value` (labels optional).
    fn parse(text: &str) -> Exposition {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        let mut helps = BTreeSet::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "family {name} declared twice"
                );
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                assert!(!help.is_empty(), "{line}");
                helps.insert(name.to_string());
                continue;
            }
            assert!(!line.starts_with('#'), "unknown comment: {line}");
            samples.push(parse_sample(line));
        }
        Exposition {
            samples,
            types,
            helps,
        }
    }

    /// The value of the one sample named `name` whose labels include `with`.
    fn value(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && matches(s, with))
            .collect();
        assert!(found.len() <= 1, "{name} {with:?}: {found:?}");
        found.first().map(|s| s.value)
    }

    /// Samples named `name` whose labels include `with`.
    fn all(&self, name: &str, with: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && matches(s, with))
            .collect()
    }
}

fn matches(s: &Sample, with: &[(&str, &str)]) -> bool {
    with.iter()
        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
}

/// `name{k="v",...} value`, with the exposition's escapes in label values.
fn parse_sample(line: &str) -> Sample {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => panic!("no value: {line}"),
    };
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name: {line}"
    );
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    if chars.peek() == Some(&'{') {
        chars.next();
        loop {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert!(!key.is_empty(), "bad label: {line}");
            assert_eq!(chars.next(), Some('"'), "bad label: {line}");
            let mut value = String::new();
            loop {
                match chars.next().expect("unterminated label value") {
                    '"' => break,
                    '\\' => value.push(match chars.next().expect("escape") {
                        '\\' => '\\',
                        '"' => '"',
                        'n' => '\n',
                        other => panic!("bad escape \\{other}: {line}"),
                    }),
                    c => value.push(c),
                }
            }
            assert!(
                labels.insert(key.clone(), value).is_none(),
                "label {key} repeated: {line}"
            );
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                other => panic!("bad label list ({other:?}): {line}"),
            }
        }
    }
    let value: String = chars.collect();
    let value = value.trim();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?}: {line}")),
    };
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

fn catalog(upstream: SocketAddr, echo: &Upstream) -> String {
    format!(
        "entities:
  - {{code: a, name: Entidad A}}
  - {{code: b, name: Entidad B}}
  - {{code: c, name: Consumidora}}
services:
  - entity: a
    code: registros
    version: 1
    name: Registros
    category: Salud
    environments:
      pruebas:
        upstreams: [\"http://{upstream}\"]
  - entity: b
    code: filtrado
    version: 1
    name: Filtrado
    category: Salud
    environments:
      pruebas:
        upstreams: [\"{}\"]
consumers:
  - entity: c
    code: sys
    name: Sistema
    grants:
      - {{service: a/v1, environments: [pruebas]}}
      - {{service: b/v1, environments: [pruebas]}}
    tokens:
      - {{environment: pruebas, label: test}}
",
        echo.url()
    )
}

async fn scrape(gw: &Gateway, token: Option<&str>) -> reqwest::Response {
    let mut req = gw.client.get(gw.admin_url("/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("scrape")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_mix_of_calls_is_scraped_exactly() {
    let (addr, _task) = status_upstream().await;
    let echo = Upstream::start("b", Behavior::Echo).await;
    let policy = format!(
        "{TEST_POLICY}plugins:
  - name: allowlist
    component: {}
    config: {{header: x-api-client, allow: [portal]}}
    capabilities: [log, metrics]
    isolation: pooled
    failure: fail-closed
    services: [b/v1]
",
        component("plugins/allowlist").display()
    );
    let gw = Gateway::start_with_policy(&catalog(addr, &echo), &policy).await;
    let token = gw.token("test").to_string();
    let operator = gw.admin_token();

    // a/v1: 3 x 200 (one a POST with a 10-byte body), 2 x 404 from the
    // upstream, 1 x 401 without a token (never routed).
    // Bodies are read whole: a client that drops an answer early cancels
    // it, and only the bytes actually sent are counted.
    for _ in 0..2 {
        let found = gw.get("/a/v1/registro/1", &token).await;
        assert_eq!(found.status(), 200);
        assert_eq!(found.text().await.unwrap(), FOUND);
    }
    let posted = gw
        .client
        .post(gw.url("/a/v1/registro"))
        .bearer_auth(&token)
        .body("0123456789")
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 200);
    assert_eq!(posted.text().await.unwrap(), FOUND);
    for _ in 0..2 {
        let missing = gw.get("/a/v1/missing/7", &token).await;
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.text().await.unwrap(), MISSING);
    }
    let anonymous = gw
        .client
        .get(gw.url("/a/v1/registro/1"))
        .send()
        .await
        .expect("anonymous");
    assert_problem(anonymous, 401, "token-missing").await;
    // b/v1: the allowlist plugin refuses one call (403) and passes one.
    let refused = gw.get("/b/v1/x", &token).await;
    assert_eq!(refused.status(), 403);
    let passed = gw
        .client
        .get(gw.url("/b/v1/x"))
        .bearer_auth(&token)
        .header("x-api-client", "portal")
        .send()
        .await
        .expect("passed");
    assert_eq!(passed.status(), 200);

    // Unauthenticated and non-operator scrapes are refused.
    assert_problem(scrape(&gw, None).await, 401, "admin-unauthenticated").await;
    let consumer = gw
        .client
        .post(gw.admin_url("/principals"))
        .bearer_auth(&operator)
        .json(&serde_json::json!({"role": "consumer", "entity": "c", "name": "Mesa C"}))
        .send()
        .await
        .expect("principal");
    assert_eq!(consumer.status(), 201);
    let consumer: serde_json::Value = consumer.json().await.unwrap();
    let consumer_token = consumer["token"].as_str().unwrap().to_string();
    assert_problem(scrape(&gw, Some(&consumer_token)).await, 403, "forbidden").await;

    // The access-log hook runs just after the answer is sent: wait until
    // every call is counted, then check exact values.
    let a = [("service", "a/v1"), ("environment", "pruebas")];
    let b = [("service", "b/v1"), ("environment", "pruebas")];
    let unrouted = [("service", "-"), ("environment", "-")];
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, m) = loop {
        let resp = scrape(&gw, Some(&operator)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = resp.text().await.unwrap();
        let m = Exposition::parse(&text);
        let count = |labels: &[(&str, &str)]| {
            m.value("chasqui_http_request_duration_seconds_count", labels)
                .unwrap_or(0.0)
        };
        let unrouted_4xx = m
            .value(
                "chasqui_http_requests_total",
                &[unrouted[0], unrouted[1], ("class", "4xx")],
            )
            .unwrap_or(0.0);
        let b_4xx = m
            .value(
                "chasqui_http_requests_total",
                &[b[0], b[1], ("class", "4xx")],
            )
            .unwrap_or(0.0);
        // Exchanges' ledger entries are committed with the ledger's next
        // batch (strict durability journals them before the answer).
        let ledger_entries = m
            .value("chasqui_ledger_entries_written_total", &[])
            .unwrap_or(0.0);
        if (count(&a) >= 5.0
            && count(&b) >= 1.0
            && unrouted_4xx + b_4xx >= 2.0
            && ledger_entries >= 5.0)
            || Instant::now() > deadline
        {
            break (text, m);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Every family is declared with HELP and TYPE, and every sample
    // belongs to a declared family.
    for s in &m.samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                s.name
                    .strip_suffix(suffix)
                    .filter(|f| m.types.contains_key(*f))
            })
            .unwrap_or(&s.name);
        assert!(m.types.contains_key(family), "{} undeclared", s.name);
        assert!(m.helps.contains(family), "{} has no HELP", s.name);
    }
    assert_eq!(m.types["chasqui_http_requests_total"], "counter");
    assert_eq!(
        m.types["chasqui_http_request_duration_seconds"],
        "histogram"
    );

    // Exact counts per class for a/v1 in pruebas.
    let class = |labels: &[(&str, &str)], class: &str| {
        let mut with = labels.to_vec();
        with.push(("class", class));
        m.value("chasqui_http_requests_total", &with)
    };
    assert_eq!(class(&a, "2xx"), Some(3.0), "{text}");
    assert_eq!(class(&a, "3xx"), Some(0.0), "{text}");
    assert_eq!(class(&a, "4xx"), Some(2.0), "{text}");
    assert_eq!(class(&a, "5xx"), Some(0.0), "{text}");
    // b/v1: the plugin's refusal and its pass, each once (a request is
    // routed before its plugin chain runs). The call without a token never
    // routed.
    assert_eq!(class(&b, "2xx"), Some(1.0), "{text}");
    assert_eq!(class(&b, "4xx"), Some(1.0), "{text}");
    assert_eq!(class(&unrouted, "4xx"), Some(1.0), "{text}");
    // No per-consumer or per-token label anywhere.
    for s in &m.samples {
        for key in s.labels.keys() {
            assert!(
                ["service", "environment", "class", "le", "reason"].contains(&key.as_str()),
                "unexpected label {key} on {}",
                s.name
            );
        }
        assert!(!s
            .labels
            .values()
            .any(|v| v.contains("c/sys") || v == &token));
    }

    // The histogram: buckets cumulative, +Inf and _count equal the calls.
    let buckets = m.all("chasqui_http_request_duration_seconds_bucket", &a);
    assert_eq!(buckets.len(), 15, "{text}");
    let mut last = (0.0f64, 0.0f64);
    for bucket in &buckets {
        let le = match bucket.labels["le"].as_str() {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap(),
        };
        assert!(le > last.0, "bounds ascend: {text}");
        assert!(bucket.value >= last.1, "buckets are cumulative: {text}");
        last = (le, bucket.value);
    }
    assert_eq!(last, (f64::INFINITY, 5.0));
    assert_eq!(
        m.value("chasqui_http_request_duration_seconds_count", &a),
        Some(5.0)
    );
    let sum = m
        .value("chasqui_http_request_duration_seconds_sum", &a)
        .unwrap();
    assert!(sum > 0.0 && sum < 5.0 * 20.0, "{sum}");

    // Body bytes: the one POST body, and the upstream's answers.
    assert_eq!(
        m.value("chasqui_http_request_body_bytes_total", &a),
        Some(10.0)
    );
    assert_eq!(
        m.value("chasqui_http_response_body_bytes_total", &a),
        Some((3 * FOUND.len() + 2 * MISSING.len()) as f64),
        "{text}"
    );

    // The plugin's own series, the gauges and the start time.
    assert_eq!(
        m.types
            .get("chasqui_plugin_allowlist_denied_total")
            .map(String::as_str),
        Some("counter"),
        "{text}"
    );
    assert_eq!(
        m.value(
            "chasqui_plugin_allowlist_denied_total",
            &[("reason", "missing")]
        ),
        Some(1.0),
        "{text}"
    );
    let inflight = m.value("chasqui_http_requests_in_flight", &[]).unwrap();
    assert!((0.0..=1.0).contains(&inflight), "{inflight}");
    assert_eq!(m.value("chasqui_deferred_backlog", &[]), Some(0.0));
    // Strict durability (the default): every answered exchange's entry was
    // journaled before its answer and committed with a batch: at least one
    // commit, at most one per entry.
    let commits = m.value("chasqui_ledger_commits_total", &[]).unwrap();
    let entries = m
        .value("chasqui_ledger_entries_written_total", &[])
        .unwrap();
    assert!(entries >= 5.0, "the five calls to a/v1 at least: {text}");
    assert!(
        (1.0..=entries).contains(&commits),
        "{commits} commits of {entries}"
    );
    let started = m.value("process_start_time_seconds", &[]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(started <= now && started > now - 600.0, "{started}");
}
