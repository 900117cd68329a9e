//! End-to-end test of the operational record: the real gateway in front of
//! an echo upstream, a known mix of calls, then `GET /records` on the admin
//! listener until every call is recorded, each checked field by field.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::*;

fn catalog(echo: &Upstream) -> String {
    format!(
        "entities:
  - {{code: a, name: Entidad A}}
  - {{code: c, name: Consumidora}}
services:
  - entity: a
    code: personas
    version: 1
    name: Personas
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
    tokens:
      - {{environment: pruebas, label: test}}
",
        echo.url()
    )
}

/// What one call should have left in its record.
struct Expected {
    method: &'static str,
    status: u64,
    service: &'static str,
    route: &'static str,
    consumer: (&'static str, &'static str),
    environment: &'static str,
    request_bytes: u64,
    response_bytes: u64,
    upstream: bool,
    error_type: &'static str,
}

/// The request id and body length of an answer.
async fn finish(resp: reqwest::Response, status: u16) -> (String, u64) {
    assert_eq!(resp.status(), status);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = resp.bytes().await.unwrap();
    (id, body.len() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_leaves_an_exact_operational_record() {
    let echo = Upstream::start("a", Behavior::Echo).await;
    let gw = Gateway::start(&catalog(&echo)).await;
    let token = gw.token("test").to_string();
    let operator = gw.admin_token();
    let started_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;

    let mut expected: HashMap<String, Expected> = HashMap::new();
    for _ in 0..2 {
        let (id, len) = finish(gw.get("/a/v1/personas/1234567", &token).await, 200).await;
        expected.insert(
            id,
            Expected {
                method: "GET",
                status: 200,
                service: "a/v1",
                route: "/personas/{id}",
                consumer: ("c", "sys"),
                environment: "pruebas",
                request_bytes: 0,
                response_bytes: len,
                upstream: true,
                error_type: "",
            },
        );
    }
    let posted = gw
        .client
        .post(gw.url("/a/v1/personas?x=1"))
        .bearer_auth(&token)
        .body("0123456789")
        .send()
        .await
        .expect("post");
    let (id, len) = finish(posted, 200).await;
    expected.insert(
        id,
        Expected {
            method: "POST",
            status: 200,
            service: "a/v1",
            route: "/personas",
            consumer: ("c", "sys"),
            environment: "pruebas",
            request_bytes: 10,
            response_bytes: len,
            upstream: true,
            error_type: "",
        },
    );
    let anonymous = gw
        .client
        .get(gw.url("/a/v1/personas/1234567"))
        .send()
        .await
        .expect("anonymous");
    let (id, len) = finish(anonymous, 401).await;
    expected.insert(
        id,
        Expected {
            method: "GET",
            status: 401,
            service: "a/v1",
            route: "/personas/{id}",
            consumer: ("", ""),
            environment: "",
            request_bytes: 0,
            response_bytes: len,
            upstream: false,
            error_type: "token-missing",
        },
    );
    let (id, len) = finish(gw.get("/nadie/v1/personas/42", &token).await, 404).await;
    expected.insert(
        id,
        Expected {
            method: "GET",
            status: 404,
            service: "nadie/v1",
            route: "/personas/{id}",
            consumer: ("", ""),
            environment: "",
            request_bytes: 0,
            response_bytes: len,
            upstream: false,
            error_type: "unknown-service",
        },
    );
    assert_eq!(echo.count(), 3);

    // Operators only.
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
    let forbidden = gw
        .client
        .get(gw.admin_url("/records"))
        .bearer_auth(consumer["token"].as_str().unwrap())
        .send()
        .await
        .expect("records");
    assert_problem(forbidden, 403, "forbidden").await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let list = loop {
        let resp = gw
            .client
            .get(gw.admin_url("/records?limit=100"))
            .bearer_auth(&operator)
            .send()
            .await
            .expect("records");
        assert_eq!(resp.status(), 200);
        let list: serde_json::Value = resp.json().await.unwrap();
        let n = list["items"].as_array().unwrap().len();
        if n >= expected.len() {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} records after 10 s: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(list["dropped"], 0);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), expected.len(), "{list}");
    for r in items {
        let id = r["request_id"].as_str().unwrap();
        let e = expected
            .get(id)
            .unwrap_or_else(|| panic!("unexpected record {r}"));
        assert_eq!(r["method"], e.method, "{r}");
        assert_eq!(r["status"], e.status, "{r}");
        assert_eq!(r["service"], e.service, "{r}");
        assert_eq!(r["route"], e.route, "{r}");
        assert_eq!(r["consumer_entity"], e.consumer.0, "{r}");
        assert_eq!(r["consumer_system"], e.consumer.1, "{r}");
        assert_eq!(r["environment"], e.environment, "{r}");
        assert_eq!(r["request_bytes"], e.request_bytes, "{r}");
        assert_eq!(r["response_bytes"], e.response_bytes, "{r}");
        assert_eq!(r["plugin_outcome"], "", "{r}");
        assert_eq!(r["error_type"], e.error_type, "{r}");
        let trace = r["trace_id"]
            .as_str()
            .expect("a trace id, started when none was sent");
        assert!(
            trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()),
            "{r}"
        );
        let received = r["received_at_us"].as_i64().unwrap();
        let answered = r["answered_at_us"].as_i64().unwrap();
        assert!(received >= started_us - 1_000_000, "{r}");
        assert!(received <= answered, "{r}");
        if e.upstream {
            let sent = r["sent_upstream_at_us"].as_i64().expect("sent upstream");
            let upstream = r["upstream_answered_at_us"]
                .as_i64()
                .expect("upstream answered");
            assert!(
                received <= sent && sent <= upstream && upstream <= answered,
                "{r}"
            );
        } else {
            assert!(r["sent_upstream_at_us"].is_null(), "{r}");
            assert!(r["upstream_answered_at_us"].is_null(), "{r}");
        }
    }

    // Filters.
    let filtered = |query: &'static str| {
        let req = gw
            .client
            .get(gw.admin_url(&format!("/records?{query}")))
            .bearer_auth(&operator);
        async move {
            let resp = req.send().await.expect("records");
            assert_eq!(resp.status(), 200);
            let list: serde_json::Value = resp.json().await.unwrap();
            list["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(filtered("service=a/v1").await, 4);
    assert_eq!(filtered("entity=c").await, 3);
    assert_eq!(filtered("service=a/v1&entity=c&limit=2").await, 2);
    assert_eq!(filtered("since=99999999999999999").await, 0);
    let bad = gw
        .client
        .get(gw.admin_url("/records?limit=0"))
        .bearer_auth(&operator)
        .send()
        .await
        .expect("records");
    assert_eq!(bad.status(), 422);
}
