//! Policy versions end to end: the admin API applies a policy (after a dry
//! run that shows the changes), lists and compares versions and rolls back;
//! the watched policy file applies itself and a broken one is refused; ten
//! changes through the admin API under load fail no request. Every change
//! is shown by the gateway's behaviour, not by reading the store.

mod support;

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{assert_problem, Behavior, Gateway, Upstream, TEST_POLICY};

fn catalog(up: &Upstream) -> String {
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
        up.url()
    )
}

/// The test policy with another request body limit.
fn with_body_limit(bytes: u32) -> String {
    TEST_POLICY.replace(
        "max_request_body_bytes: 1024",
        &format!("max_request_body_bytes: {bytes}"),
    )
}

/// Status of a POST with a 500-byte body: 200 under the test policy's
/// 1024-byte limit, 413 under a 100-byte one.
async fn post_500(gw: &Gateway) -> u16 {
    gw.client
        .post(gw.url("/a/v1/things"))
        .bearer_auth(gw.token("test"))
        .header("content-type", "application/json")
        .body(format!("{{\"x\":\"{}\"}}", "y".repeat(492)))
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

/// Polls `f` until it returns true or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn admin(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = gw
        .client
        .request(method, gw.admin_url(path))
        .bearer_auth(gw.admin_token());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin call");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_apply_compare_and_roll_back_policies_that_survive_restarts() {
    let up = Upstream::start("up", Behavior::Echo).await;
    let mut gw = Gateway::start(&catalog(&up)).await;

    let (status, current) = admin(&gw, reqwest::Method::GET, "/policies/current", None).await;
    assert_eq!(status, 200, "{current}");
    let v1 = current["version"]["id"].as_i64().expect("a first version");
    assert_eq!(current["version"]["source"], "file");
    assert_eq!(current["applied_here"], v1);
    assert!(current["last_error"].is_null());
    assert_eq!(current["version"]["body"], TEST_POLICY);
    assert_eq!(post_500(&gw).await, 200);

    // A dry run says what would change and changes nothing.
    let (status, dry) = admin(
        &gw,
        reqwest::Method::PUT,
        "/policies/current",
        Some(json!({"policy": with_body_limit(100), "comment": "smaller bodies", "dry_run": true})),
    )
    .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert!(dry["version"].is_null());
    let for_service = dry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "a/v1")
        .expect("a/v1 changes");
    assert_eq!(
        for_service["changes"],
        json!([{"path": "/limits/max_request_body_bytes", "before": 1024, "after": 100}])
    );
    assert_eq!(post_500(&gw).await, 200, "a dry run must not apply");

    // Refusals: no comment, a broken policy (with its line), a consumer.
    let (status, body) = admin(
        &gw,
        reqwest::Method::PUT,
        "/policies/current",
        Some(json!({"policy": with_body_limit(100), "comment": " "})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let broken = TEST_POLICY.replace("max_request_body_bytes: 1024", "max_request_body_bytes: -5");
    let (status, body) = admin(
        &gw,
        reqwest::Method::PUT,
        "/policies/current",
        Some(json!({"policy": broken, "comment": "broken"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["type"],
        "https://chasqui.agetic.gob.bo/problems/validation"
    );
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("max_request_body_bytes") && detail.contains("line 3"),
        "{detail}"
    );
    assert_eq!(post_500(&gw).await, 200, "a refused policy changes nothing");
    let resp = gw
        .client
        .get(gw.admin_url("/policies"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "admin-unauthenticated").await;
    let (status, consumer) = admin(
        &gw,
        reqwest::Method::POST,
        "/principals",
        Some(json!({"role": "consumer", "entity": "c", "name": "C"})),
    )
    .await;
    assert_eq!(status, 201, "{consumer}");
    let resp = gw
        .client
        .put(gw.admin_url("/policies/current"))
        .bearer_auth(consumer["token"].as_str().unwrap())
        .json(&json!({"policy": with_body_limit(100), "comment": "mine"}))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 403, "forbidden").await;

    // Applied: in force at once on this node.
    let (status, applied) = admin(
        &gw,
        reqwest::Method::PUT,
        "/policies/current",
        Some(json!({"policy": with_body_limit(100), "comment": "smaller bodies"})),
    )
    .await;
    assert_eq!(status, 200, "{applied}");
    let v2 = applied["version"]["id"].as_i64().unwrap();
    assert!(v2 > v1);
    assert_eq!(applied["recorded"], true);
    assert_eq!(post_500(&gw).await, 413);

    let (_, list) = admin(&gw, reqwest::Method::GET, "/policies", None).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(items[0]["id"], v2);
    assert_eq!(items[0]["current"], true);
    assert_eq!(items[0]["source"], "admin");
    assert_eq!(items[0]["comment"], "smaller bodies");
    assert!(items[0]["author"]
        .as_str()
        .unwrap()
        .starts_with("operator:"));
    assert_eq!(items[1]["current"], false);

    let (status, diff) = admin(
        &gw,
        reqwest::Method::GET,
        &format!("/policies/diff?from={v1}&to={v2}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{diff}");
    assert!(diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["service"] == "a/v1"
            && c["changes"][0]["path"] == "/limits/max_request_body_bytes"));

    // The admin's version survives a restart (the file did not change).
    gw.terminate();
    gw.wait_exit(Duration::from_secs(15));
    gw.spawn().await;
    assert_eq!(
        post_500(&gw).await,
        413,
        "the applied version survives a restart"
    );

    // Rollback restores the first version's behaviour.
    let (status, rolled) = admin(
        &gw,
        reqwest::Method::POST,
        &format!("/policies/{v1}/rollback"),
        Some(json!({"comment": "too small"})),
    )
    .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["version"]["restores"], v1);
    assert_eq!(rolled["version"]["source"], "rollback");
    assert_eq!(post_500(&gw).await, 200);
    let (status, _) = admin(
        &gw,
        reqwest::Method::POST,
        "/policies/999999/rollback",
        Some(json!({"comment": "nothing"})),
    )
    .await;
    assert_eq!(status, 404);

    // Every change reaches the audit ledger (written in its next batch).
    let recorded = eventually(Duration::from_secs(5), || async {
        let (_, audit) = admin(&gw, reqwest::Method::GET, "/audit?kind=admin.policy", None).await;
        let kinds: Vec<String> = audit["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|e| e["kind"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        kinds.iter().any(|k| k == "admin.policy.apply")
            && kinds.iter().any(|k| k == "admin.policy.rollback")
    })
    .await;
    assert!(recorded, "policy changes missing from the audit ledger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watched_policy_file_applies_itself_and_a_broken_one_is_refused() {
    let up = Upstream::start("up", Behavior::Echo).await;
    let gw = Gateway::start(&catalog(&up)).await;
    let file = gw.dir.path().join("policy.yaml");
    let write = |text: &str| {
        // As editors do: a new file renamed over the old one.
        let tmp = gw.dir.path().join(".policy.yaml.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    assert_eq!(post_500(&gw).await, 200);

    write(&with_body_limit(100));
    assert!(
        eventually(Duration::from_secs(5), || async {
            post_500(&gw).await == 413
        })
        .await,
        "the changed file was not applied"
    );
    // A policy is put in force first and recorded as a version right after
    // (the store's write can wait behind another writer of the file).
    let recorded = eventually(Duration::from_secs(5), || async {
        let (_, list) = admin(&gw, reqwest::Method::GET, "/policies", None).await;
        list["items"][0]["source"] == "file"
    })
    .await;
    assert!(recorded, "the changed file was not recorded as a version");
    let (_, list) = admin(&gw, reqwest::Method::GET, "/policies", None).await;
    assert_eq!(list["items"][0]["comment"], "the policy file changed");

    write("version: 1\nlimits:\n  max_request_body_bytes: -5\n");
    let reported = eventually(Duration::from_secs(5), || async {
        let (_, current) = admin(&gw, reqwest::Method::GET, "/policies/current", None).await;
        current["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_request_body_bytes") && m.contains("line 3"))
    })
    .await;
    assert!(reported, "the broken file was not reported");
    assert_eq!(
        post_500(&gw).await,
        413,
        "the previous policy stays in force"
    );

    write(TEST_POLICY);
    assert!(
        eventually(Duration::from_secs(5), || async {
            post_500(&gw).await == 200
        })
        .await,
        "the fixed file was not applied"
    );
    // In force first, recorded (and the error cleared) right after.
    let cleared = eventually(Duration::from_secs(5), || async {
        let (_, current) = admin(&gw, reqwest::Method::GET, "/policies/current", None).await;
        current["last_error"].is_null()
    })
    .await;
    let (_, current) = admin(&gw, reqwest::Method::GET, "/policies/current", None).await;
    assert!(cleared, "{current}");
    assert_eq!(current["version"]["body"], TEST_POLICY, "{current}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_policy_changes_under_load_fail_no_request() {
    let up = Upstream::start("up", Behavior::Echo).await;
    let gw = Arc::new(Gateway::start(&catalog(&up)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (gw, stop, served, failed) = (gw.clone(), stop.clone(), served.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let resp = gw.get("/a/v1/load", gw.token("test")).await;
                if resp.status() == 200 {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut versions = Vec::new();
    for i in 0..10 {
        let limit = if i % 2 == 0 { 2048 } else { 1024 };
        let (status, applied) = admin(
            &gw,
            reqwest::Method::PUT,
            "/policies/current",
            Some(json!({"policy": with_body_limit(limit), "comment": format!("change {i}")})),
        )
        .await;
        assert_eq!(status, 200, "{applied}");
        versions.push(applied["version"]["id"].as_i64().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (served, failed) = (
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!("10 policy changes under load: {served} requests served, {failed} failed");
    assert_eq!(failed, 0);
    assert!(served > 100, "too little load to mean anything: {served}");
    versions.dedup();
    assert_eq!(versions.len(), 10, "each change is a version: {versions:?}");
}
