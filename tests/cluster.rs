//! A cluster on PostgreSQL: two `chasqui serve` processes share one
//! database. A token revoked, a grant withdrawn and an upstream moved
//! through node A's admin API are in force on node B within one second,
//! with node B's catalog poll set to a minute so that only PostgreSQL's
//! LISTEN/NOTIFY can explain it. Run with `--nocapture` to see the
//! measured latencies.

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;

/// Node B's catalog poll: far longer than the one second promised.
const SLOW_POLL_MS: u64 = 60_000;
/// What "in force on every node" must take at most.
const WITHIN: Duration = Duration::from_secs(1);

/// An admin API client acting with one admin token.
struct Admin {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    fn new(gw: &Gateway, token: &str) -> Admin {
        Admin {
            client: gw.https_client(false),
            base: gw.admin_url(""),
            token: token.to_string(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>, status: u16) -> Value {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request");
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(got, status, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// Calls the data plane of `gw`: the status and which upstream answered.
async fn call(gw: &Gateway, path: &str, token: &str) -> (u16, String) {
    let resp = gw.get(path, token).await;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["upstream"].as_str().unwrap_or("").to_string())
}

/// Polls node `gw` until `done` holds for the answer to `path`, for at most
/// five seconds; returns how long it took from `since`.
async fn until<F>(
    gw: &Gateway,
    path: &str,
    token: &str,
    since: Instant,
    what: &str,
    done: F,
) -> Duration
where
    F: Fn(&(u16, String)) -> bool,
{
    loop {
        let answer = call(gw, path, token).await;
        if done(&answer) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{what}: node B still answers {answer:?} after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SEGIP's person service on `upstream` in `pruebas`, and two SIN systems:
/// `portal` granted with a test token, `caja` with nothing yet.
fn segip_catalog(upstream: &str) -> String {
    format!(
        "entities:
  - {{code: segip, name: SEGIP}}
  - {{code: sin, name: SIN}}
services:
  - entity: segip
    code: personas
    version: 1
    name: Personas
    category: Identificación
    environments:
      pruebas: {{upstreams: [\"{}\"]}}
consumers:
  - entity: sin
    code: portal
    name: Portal
    grants:
      - {{service: segip/v1, environments: [pruebas]}}
    tokens:
      - {{environment: pruebas, label: portal}}
  - entity: sin
    code: caja
    name: Caja
",
        upstream
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_one_node_are_in_force_on_the_other_within_a_second() {
    let first = Upstream::start("primero", Behavior::Echo).await;
    let moved = Upstream::start("nuevo", Behavior::Echo).await;
    let pg = PgDb::create().await;
    let catalog = segip_catalog(&first.url());
    let a = Gateway::cluster_node(Some(&catalog), &pg, SLOW_POLL_MS).await;
    let b = Gateway::cluster_node(None, &pg, SLOW_POLL_MS).await;
    // Different processes, data directories and certificates; one catalog.
    assert_ne!(a.pid(), b.pid());
    assert!(
        b.dir.path().join("ledger.db").exists(),
        "node B keeps its own ledger"
    );
    let op = Admin::new(&a, &a.admin_token());
    // Node B's admin API serves the same catalog with the same principals.
    let op_b = Admin::new(&b, &a.admin_token());
    assert_eq!(
        op_b.call(Method::GET, "/me", None, 200).await["role"],
        "operator"
    );

    let path = "/segip/v1/personas/1";
    let token = a.token("portal").to_string();
    // Both nodes serve the token (node B now has it in its cache).
    assert_eq!(call(&a, path, &token).await, (200, "primero".into()));
    assert_eq!(call(&b, path, &token).await, (200, "primero".into()));

    // 1. An upstream moved through node A.
    let services = op.call(Method::GET, "/services", None, 200).await;
    let service_id = services["items"][0]["id"].as_i64().unwrap();
    let since = Instant::now();
    op.call(
        Method::PUT,
        &format!("/services/{service_id}/environments/pruebas"),
        Some(json!({"upstreams": [{"url": moved.url(), "weight": 1}]})),
        200,
    )
    .await;
    let took = until(&b, path, &token, since, "upstream moved", |a| {
        *a == (200, "nuevo".to_string())
    })
    .await;
    println!("cluster: upstream moved through node A, used by node B after {took:?}");
    assert!(took < WITHIN, "upstream move took {took:?} to reach node B");

    // 2. A grant withdrawn through node A: the caja system gets test access
    // by the consume procedure, then AGETIC suspends it.
    let issued = op
        .call(
            Method::POST,
            "/principals",
            Some(json!({"role": "consumer", "entity": "sin", "name": "SIN"})),
            201,
        )
        .await;
    let sin = Admin::new(&a, issued["token"].as_str().unwrap());
    let systems = sin
        .call(Method::GET, "/entities/sin/systems", None, 200)
        .await;
    let system_id = |code: &str| {
        systems
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["code"] == code)
            .unwrap_or_else(|| panic!("no system {code}: {systems}"))["id"]
            .as_i64()
            .unwrap()
    };
    let request = sin
        .call(
            Method::POST,
            "/access-requests",
            Some(json!({"system_id": system_id("caja"), "service_id": service_id})),
            201,
        )
        .await;
    let transitions = format!("/access-requests/{}/transitions", request["id"]);
    let outcome = op
        .call(
            Method::POST,
            &transitions,
            Some(json!({"action": "enable_test"})),
            200,
        )
        .await;
    let caja = outcome["issued_token"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let since = Instant::now();
    let took = until(&b, path, &caja, since, "grant given", |a| a.0 == 200).await;
    println!("cluster: grant given through node A, honoured by node B after {took:?}");
    assert!(took < WITHIN, "a new grant took {took:?} to reach node B");
    let since = Instant::now();
    op.call(
        Method::POST,
        &transitions,
        Some(json!({"action": "suspend"})),
        200,
    )
    .await;
    let took = until(&b, path, &caja, since, "grant withdrawn", |a| a.0 == 403).await;
    println!("cluster: grant withdrawn through node A, refused by node B after {took:?}");
    assert!(
        took < WITHIN,
        "grant withdrawal took {took:?} to reach node B"
    );

    // 3. A token revoked through node A, refused by node B.
    let tokens_path = format!("/systems/{}/tokens", system_id("portal"));
    let tokens = op.call(Method::GET, &tokens_path, None, 200).await;
    let token_id = tokens[0]["id"].as_i64().unwrap();
    assert_eq!(call(&b, path, &token).await.0, 200, "cached on node B");
    let since = Instant::now();
    op.call(
        Method::POST,
        &format!("{tokens_path}/{token_id}/revoke"),
        None,
        204,
    )
    .await;
    let took = until(&b, path, &token, since, "token revoked", |a| a.0 == 401).await;
    println!("cluster: token revoked through node A, refused by node B after {took:?}");
    assert!(took < WITHIN, "revocation took {took:?} to reach node B");
    // And by node A itself.
    assert_eq!(call(&a, path, &token).await.0, 401);
    assert!(
        b.log().contains("listening for catalog changes"),
        "node B listens: {}",
        b.log()
    );
}

/// A node whose LISTEN connection is cut reconnects and still sees changes
/// made while it was cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reconnects_its_listener_and_catches_up() {
    use sqlx::{Connection, Executor};
    let up = Upstream::start("unico", Behavior::Echo).await;
    let pg = PgDb::create().await;
    let catalog = segip_catalog(&up.url());
    let a = Gateway::cluster_node(Some(&catalog), &pg, SLOW_POLL_MS).await;
    let b = Gateway::cluster_node(None, &pg, SLOW_POLL_MS).await;
    let path = "/segip/v1/personas/1";
    let token = a.token("portal").to_string();
    assert_eq!(call(&b, path, &token).await.0, 200);

    // Cut every LISTEN connection on the server (both nodes' listeners).
    let mut admin = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let name = pg
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let cut = admin
        .execute(
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = '{name}' AND query LIKE 'LISTEN%'"
            )
            .as_str(),
        )
        .await
        .unwrap();
    assert!(cut.rows_affected() >= 1, "no listener to cut");
    // Revoke through node A's admin API at once, while B may be reconnecting.
    let op = Admin::new(&a, &a.admin_token());
    let systems = op
        .call(Method::GET, "/entities/sin/systems", None, 200)
        .await;
    let tokens_path = format!("/systems/{}/tokens", systems[0]["id"]);
    let tokens = op.call(Method::GET, &tokens_path, None, 200).await;
    let since = Instant::now();
    op.call(
        Method::POST,
        &format!("{tokens_path}/{}/revoke", tokens[0]["id"]),
        None,
        204,
    )
    .await;
    let took = until(&b, path, &token, since, "revoked after reconnect", |a| {
        a.0 == 401
    })
    .await;
    println!("cluster: revocation reached node B across a listener reconnect after {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let _ = admin.close().await;
    assert!(
        b.log()
            .contains("catalog change listener lost its connection"),
        "{}",
        b.log()
    );
}

/// Status of a POST with a 500-byte body to `gw`: 200 under the test
/// policy's 1024-byte limit, 413 under a 100-byte one.
async fn post_500(gw: &Gateway, token: &str) -> u16 {
    gw.client
        .post(gw.url("/segip/v1/personas"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(format!("{{\"x\":\"{}\"}}", "y".repeat(492)))
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_applied_through_one_node_is_in_force_on_the_other_within_a_second() {
    let up = Upstream::start("up", Behavior::Echo).await;
    let pg = PgDb::create().await;
    let catalog = segip_catalog(&up.url());
    let a = Gateway::cluster_node(Some(&catalog), &pg, SLOW_POLL_MS).await;
    let b = Gateway::cluster_node(None, &pg, SLOW_POLL_MS).await;
    let token = a.token("portal").to_string();
    assert_eq!(post_500(&b, &token).await, 200);
    let op = Admin::new(&a, &a.admin_token());
    let op_b = Admin::new(&b, &a.admin_token());
    let before = op_b.call(Method::GET, "/policies/current", None, 200).await;
    assert_eq!(before["applied_here"], before["version"]["id"], "{before}");

    let smaller = TEST_POLICY.replace(
        "max_request_body_bytes: 1024",
        "max_request_body_bytes: 100",
    );
    let since = Instant::now();
    let applied = op
        .call(
            Method::PUT,
            "/policies/current",
            Some(json!({"policy": smaller, "comment": "smaller bodies"})),
            200,
        )
        .await;
    let took = loop {
        if post_500(&b, &token).await == 413 {
            break since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "node B still takes the old limit after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("cluster: policy applied through node A, in force on node B after {took:?}");
    assert!(took < WITHIN, "the policy took {took:?} to reach node B");
    let after = op_b.call(Method::GET, "/policies/current", None, 200).await;
    assert_eq!(after["applied_here"], applied["version"]["id"], "{after}");

    // A restarted node B keeps the cluster's version, not its own file's.
    let mut b = b;
    b.terminate();
    b.wait_exit(Duration::from_secs(15));
    b.spawn().await;
    assert_eq!(post_500(&b, &token).await, 413);
}
