//! End-to-end tests of store-and-forward (contingency): requests accepted
//! while the upstream is down survive a SIGKILL of the gateway and reach the
//! upstream exactly once, in order, when it comes back.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// Service `f/v1` in production at `127.0.0.1:{port}`, granted to `c/sys`.
fn catalog(port: u16) -> String {
    format!(
        "entities:
  - {{code: f, name: Facturacion}}
  - {{code: c, name: Consumidora}}
services:
  - entity: f
    code: facturas
    version: 1
    name: Facturas
    category: Impuestos
    environments:
      produccion:
        upstreams: [\"http://127.0.0.1:{port}\"]
consumers:
  - entity: c
    code: sys
    name: Sistema
    grants:
      - {{service: f/v1, environments: [produccion]}}
    tokens:
      - {{environment: produccion, label: prod}}
"
    )
}

fn policy() -> String {
    format!(
        "{TEST_POLICY}store_and_forward: {{services: [f/v1], retry_initial_ms: 50, retry_max_ms: 200, max_body_bytes: 512}}\n"
    )
}

async fn post(gw: &Gateway, body: &str) -> reqwest::Response {
    gw.https_client(false)
        .post(gw.url("/f/v1/facturas"))
        .bearer_auth(gw.token("prod"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("post")
}

async fn state(gw: &Gateway, id: &str) -> serde_json::Value {
    let resp = gw
        .get(&format!("/_chasqui/deferred/{id}"), gw.token("prod"))
        .await;
    assert_eq!(resp.status(), 200, "state of {id}");
    resp.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_requests_survive_a_crash_and_arrive_once_in_order() {
    let mut closed = ClosedPort::reserve();
    let port = closed.port();
    let mut gw = Gateway::start_with_policy(&catalog(port), &policy()).await;

    // The upstream is down: each request is kept and acknowledged with 202.
    let mut ids = Vec::new();
    for n in 0..6 {
        let resp = post(&gw, &format!("{{\"n\":{n}}}")).await;
        assert_eq!(resp.status(), 202, "request {n}");
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .expect("location");
        let body: serde_json::Value = resp.json().await.unwrap();
        let id = body["id"].as_str().expect("tracking id").to_string();
        assert_eq!(location, format!("/_chasqui/deferred/{id}"));
        assert_eq!(body["state"], "queued");
        ids.push(id);
    }
    assert_eq!(state(&gw, &ids[0]).await["state"], "queued");

    // A body over the contingency bound is refused, not half kept.
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(600));
    assert_problem(post(&gw, &big).await, 413, "payload-too-large").await;

    // Crash, restart on the same data directory, then bring the upstream back.
    gw.kill();
    gw.spawn().await;
    let upstream = Upstream::start_at("f", Behavior::Echo, closed.open()).await;

    let began = Instant::now();
    for id in &ids {
        loop {
            let doc = state(&gw, id).await;
            if doc["state"] == "delivered" {
                assert_eq!(doc["upstream_status"], 200);
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "{id} not delivered: {doc}\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "6 deferred requests delivered {} ms after the upstream came back",
        began.elapsed().as_millis()
    );

    // Exactly once, in order, with the tracking id and the gateway's identity
    // headers, and without the client's token.
    let seen = upstream.seen();
    assert_eq!(seen.len(), 6, "each accepted request arrives exactly once");
    for (n, (request, id)) in seen.iter().zip(&ids).enumerate() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/facturas");
        assert_eq!(request.body, format!("{{\"n\":{n}}}").as_bytes(), "order");
        assert_eq!(request.header("idempotency-key"), Some(id.as_str()));
        assert_eq!(request.header("x-chasqui-consumer-entity"), Some("c"));
        assert_eq!(request.header("x-chasqui-service"), Some("f/v1"));
        assert!(request.header("authorization").is_none());
    }

    // With the queue empty and the upstream up, requests go straight through
    // with their body intact.
    let resp = post(&gw, "{\"n\":99}").await;
    assert_eq!(resp.status(), 200);
    upstream.wait_for(7).await;
    assert_eq!(upstream.seen()[6].body, b"{\"n\":99}".as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_of_a_deferred_request_is_private_to_its_sender() {
    let closed = ClosedPort::reserve();
    let gw = Gateway::start_with_policy(&catalog(closed.port()), &policy()).await;
    let resp = post(&gw, "{\"n\":1}").await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/_chasqui/deferred/{id}");
    // No token: 401; an unknown id: 404.
    let anonymous = gw
        .https_client(false)
        .get(gw.url(&path))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, 401, "token-missing").await;
    let unknown = gw
        .get(
            "/_chasqui/deferred/dfr_00000000000000000000000000000000",
            gw.token("prod"),
        )
        .await;
    assert_problem(unknown, 404, "not-found").await;
    // GET is not deferred: it fails at once as unreachable.
    let get = gw.get("/f/v1/facturas/1", gw.token("prod")).await;
    assert!(
        matches!(get.status().as_u16(), 502 | 503),
        "a GET is not deferred: {}",
        get.status()
    );
}
