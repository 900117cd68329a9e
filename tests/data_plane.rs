//! End-to-end tests of the data plane: the real `chasqui` binary between a
//! real HTTPS client and real upstream servers.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// A catalog with services `a/v1`, `a/v2` and `b/v1` and one consumer.
fn catalog(entries: &[(&str, u32, &str, &str)], grants: &str, extra_tokens: &str) -> String {
    let mut services = String::new();
    for (entity, version, pruebas, produccion) in entries {
        services.push_str(&format!(
            "  - entity: {entity}\n    code: s{version}\n    version: {version}\n    name: Servicio\n    category: Salud\n    environments:\n"
        ));
        if !pruebas.is_empty() {
            services.push_str(&format!("      pruebas:\n        upstreams: [{pruebas}]\n"));
        }
        if !produccion.is_empty() {
            services.push_str(&format!(
                "      produccion:\n        upstreams: [{produccion}]\n"
            ));
        }
    }
    format!(
        "entities:
  - {{code: a, name: Entidad A}}
  - {{code: b, name: Entidad B}}
  - {{code: c, name: Consumidora}}
services:
{services}consumers:
  - entity: c
    code: sys
    name: Sistema
    grants:
{grants}    tokens:
      - {{environment: pruebas, label: test}}
      - {{environment: produccion, label: prod}}
{extra_tokens}"
    )
}

/// The catalog most tests need: service `a/v1` in `pruebas` at `up`, granted.
fn one_service(up: &Upstream) -> String {
    catalog(
        &[("a", 1, &format!("\"{}\"", up.url()), "")],
        "      - {service: a/v1, environments: [pruebas]}\n",
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_entity_and_version_and_rewrites_the_path() {
    let a1 = Upstream::start("a1", Behavior::Echo).await;
    let a2 = Upstream::start("a2", Behavior::Echo).await;
    let b1 = Upstream::start("b1", Behavior::Echo).await;
    let cat = catalog(
        &[
            ("a", 1, &format!("\"{}/base/\"", a1.url()), ""),
            ("a", 2, &format!("\"{}\"", a2.url()), ""),
            ("b", 1, &format!("\"{}/api\"", b1.url()), ""),
        ],
        "      - {service: a/v1, environments: [pruebas]}\n      - {service: a/v2, environments: [pruebas]}\n      - {service: b/v1, environments: [pruebas]}\n",
        "",
    );
    let gw = Gateway::start(&cat).await;
    let t = gw.token("test");
    for (path, upstream, seen_path) in [
        (
            "/a/v1/personas/123?x=1&y=%20",
            &a1,
            "/base/personas/123?x=1&y=%20",
        ),
        ("/a/v2/personas", &a2, "/personas"),
        ("/b/v1/x/y/", &b1, "/api/x/y/"),
    ] {
        let before = upstream.count();
        let resp = gw.get(path, t).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers().get("x-request-id").is_some());
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["upstream"], upstream.name, "{path}");
        assert_eq!(upstream.count(), before + 1);
        assert_eq!(upstream.seen().last().unwrap().path, seen_path);
    }
    let resp = gw.get("/a/v3/x", t).await;
    let body = assert_problem(resp, 404, "unknown-service").await;
    assert!(body["detail"].as_str().unwrap().contains("/a/v3/"));
    assert_problem(gw.get("/", t).await, 404, "not-found").await;
    assert_problem(gw.get("/a", t).await, 404, "not-found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_chooses_the_environment_and_fake_is_the_test_alias() {
    let test_up = Upstream::start("pruebas", Behavior::Echo).await;
    let prod_up = Upstream::start("produccion", Behavior::Echo).await;
    let cat = catalog(
        &[("a", 1, &format!("\"{}\"", test_up.url()), &format!("\"{}\"", prod_up.url()))],
        "      - {service: a/v1, environments: [pruebas, produccion]}\n",
        "  - entity: c\n    code: onlytest\n    name: Solo pruebas\n    grants:\n      - {service: a/v1, environments: [pruebas]}\n    tokens:\n      - {environment: produccion, label: onlytest-prod}\n",
    );
    let gw = Gateway::start(&cat).await;
    let (test, prod) = (gw.token("test"), gw.token("prod"));
    assert!(test.starts_with("chq_test_") && prod.starts_with("chq_prod_"));

    let body: serde_json::Value = gw.get("/a/v1/x", test).await.json().await.unwrap();
    assert_eq!(body["upstream"], "pruebas");
    let body: serde_json::Value = gw.get("/a/v1/x", prod).await.json().await.unwrap();
    assert_eq!(body["upstream"], "produccion");
    let body: serde_json::Value = gw.get("/fake/a/v1/x", test).await.json().await.unwrap();
    assert_eq!(body["upstream"], "pruebas");
    assert_eq!(
        test_up
            .seen()
            .last()
            .unwrap()
            .header("x-chasqui-environment"),
        Some("pruebas")
    );
    assert_eq!(
        prod_up
            .seen()
            .last()
            .unwrap()
            .header("x-chasqui-environment"),
        Some("produccion")
    );
    let prod_before = prod_up.count();

    // A production token on the test alias is refused, and reaches nothing.
    assert_problem(
        gw.get("/fake/a/v1/x", prod).await,
        403,
        "environment-mismatch",
    )
    .await;
    // A consumer granted only the test environment cannot use a production token.
    let body = assert_problem(
        gw.get("/a/v1/x", gw.token("onlytest-prod")).await,
        403,
        "no-grant",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("produccion"));
    assert_eq!(
        prod_up.count(),
        prod_before,
        "production must not be reached"
    );
    assert_eq!(test_up.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_errors_are_problems() {
    let up = Upstream::start("up", Behavior::Echo).await;
    let cat = catalog(
        &[("a", 1, &format!("\"{}\"", up.url()), ""), ("b", 1, &format!("\"{}\"", up.url()), "")],
        "      - {service: a/v1, environments: [pruebas]}\n",
        "      - {environment: pruebas, label: expired, expires_in_days: 0}\n      - {environment: pruebas, label: to-revoke}\n",
    );
    let gw = Gateway::start(&cat).await;

    let resp = gw.client.get(gw.url("/a/v1/x")).send().await.unwrap();
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"chasqui\""
    );
    assert_problem(resp, 401, "token-missing").await;
    let resp = gw
        .client
        .get(gw.url("/a/v1/x"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "token-missing").await;
    assert_problem(gw.get("/a/v1/x", "not-a-token").await, 401, "token-invalid").await;
    // Right shape and check value, but never issued.
    let forged = "chq_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_problem(gw.get("/a/v1/x", forged).await, 401, "token-invalid").await;
    let unknown = {
        // A well-formed token from another store is unknown here.
        let other = tempfile::tempdir().unwrap();
        let file = write(other.path(), "c.yaml", &cat);
        import(other.path(), &file).remove("test").unwrap()
    };
    assert_problem(gw.get("/a/v1/x", &unknown).await, 401, "token-invalid").await;
    assert_problem(
        gw.get("/a/v1/x", gw.token("expired")).await,
        401,
        "token-expired",
    )
    .await;
    assert_problem(gw.get("/b/v1/x", gw.token("test")).await, 403, "no-grant").await;
    assert_eq!(up.count(), 0, "no failed request may reach an upstream");

    // Revocation through the CLI is in force on the running gateway at once.
    let revocable = gw.token("to-revoke").to_string();
    assert_eq!(gw.get("/a/v1/x", &revocable).await.status(), 200);
    let out = gw.cli(&[
        "token",
        "revoke",
        "--consumer",
        "c/sys",
        "--token",
        "to-revoke",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    loop {
        let resp = gw.get("/a/v1/x", &revocable).await;
        if resp.status() == 401 {
            assert_problem(resp, 401, "token-revoked").await;
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "revocation not in force within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("revocation in force after {:?}", started.elapsed());
    assert_eq!(gw.get("/a/v1/x", gw.token("test")).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_reaches_the_upstream_and_the_token_does_not() {
    let up = Upstream::start("up", Behavior::Echo).await;
    let cat = one_service(&up);
    let gw = Gateway::start(&cat).await;
    let resp = gw
        .client
        .post(gw.url("/a/v1/registro"))
        .bearer_auth(gw.token("test"))
        .header("x-chasqui-consumer-entity", "forged")
        .header("x-forwarded-for", "10.9.9.9")
        .header("forwarded", "for=10.9.9.9")
        .header("x-custom", "kept")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body("{\"ci\":\"123\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body.as_ref(), b"{\"ci\":\"123\"}");
    assert!(
        seen.header("authorization").is_none(),
        "the consumer's token must not reach the upstream"
    );
    assert_eq!(seen.headers["x-chasqui-consumer-entity"], vec!["c"]);
    assert_eq!(seen.header("x-chasqui-consumer-system"), Some("sys"));
    assert_eq!(seen.header("x-chasqui-service"), Some("a/v1"));
    assert_eq!(seen.headers["x-forwarded-for"], vec!["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    let forwarded = seen.header("forwarded").unwrap();
    assert!(
        forwarded.starts_with("for=127.0.0.1;proto=https;host=\"localhost:"),
        "{forwarded}"
    );
    assert_eq!(seen.header("host"), Some(up.addr.to_string().as_str()));
    assert_eq!(seen.header("x-custom"), Some("kept"));
    // The caller's trace goes on (same trace id and flags) under the
    // gateway's own upstream span.
    let traceparent = seen.header("traceparent").unwrap();
    assert!(
        traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-")
            && traceparent.ends_with("-01"),
        "{traceparent}"
    );
    let parent = &traceparent[36..52];
    assert!(
        parent != "b7ad6b7169203331" && parent.bytes().all(|b| b.is_ascii_hexdigit()),
        "{traceparent}"
    );
    assert_eq!(seen.header("x-request-id").map(str::len), Some(32));

    // Hop-by-hop fields, including those the client nominates, stay behind.
    let token = gw.token("test").to_string();
    let request = format!(
        "GET /a/v1/hop HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close, x-hop\r\nx-hop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\r\n"
    );
    let (status, _) = gw.raw(request.as_bytes()).await;
    assert_eq!(status, 200);
    let seen = up.seen().pop().unwrap();
    for h in [
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "authorization",
    ] {
        assert!(
            seen.header(h).is_none(),
            "{h} must not be forwarded: {:?}",
            seen.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_reach_another_service() {
    let a = Upstream::start("a", Behavior::Echo).await;
    let b = Upstream::start("b", Behavior::Echo).await;
    let cat = catalog(
        &[("a", 1, &format!("\"{}\"", a.url()), ""), ("b", 1, &format!("\"{}\"", b.url()), "")],
        // Granted both: only path handling stands between them.
        "      - {service: a/v1, environments: [pruebas]}\n      - {service: b/v1, environments: [pruebas]}\n",
        "",
    );
    let gw = Gateway::start(&cat).await;
    let token = gw.token("test").to_string();
    let raw = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
    };
    for path in [
        "/a/v1/../../b/v1/x",
        "/a/v1/%2e%2e/%2e%2e/b/v1/x",
        "/a/v1/%2E%2E/%2E%2E/b/v1/x",
        "/a/v1/x/../../../b/v1/x",
        "/fake/a/v1/../../../b/v1/x",
        "/a/v1/..%2f..%2fb/v1/x",
        "/a/v1/x%2f..%2f..%2fb",
        "/a%2fv1/x",
        "/a/v1/x%5c..%5c..%5cb",
    ] {
        let (status, body) = gw.raw(raw(path).as_bytes()).await;
        assert_eq!(status, 400, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_problem_body(&v, 400, "bad-path");
    }
    assert_eq!(b.count(), 0, "service b must never be reached");
    assert_eq!(a.count(), 0);

    // Inside one service, dot segments and double slashes are resolved.
    for (path, expect) in [
        ("//a//v1//x//y", "/x/y"),
        ("/a/v1/x/../y", "/y"),
        ("/a/v1/x/%2e%2e/z", "/z"),
    ] {
        let (status, _) = gw.raw(raw(path).as_bytes()).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(a.seen().last().unwrap().path, expect, "{path}");
    }
    assert_eq!(b.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_answer_413_and_431() {
    let up = Upstream::start("up", Behavior::Echo).await;
    let cat = one_service(&up);
    let gw = Gateway::start(&cat).await;
    let t = gw.token("test");
    // The test policy allows 1024 bytes of body.
    let ok = gw
        .client
        .post(gw.url("/a/v1/x"))
        .bearer_auth(t)
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let resp = gw
        .client
        .post(gw.url("/a/v1/x"))
        .bearer_auth(t)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_problem(resp, 413, "payload-too-large").await;
    // Chunked, so the gateway only learns the size while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'y'; 512])).collect();
    let resp = gw
        .client
        .post(gw.url("/a/v1/x"))
        .bearer_auth(t)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 413, "payload-too-large").await;

    // 8 KiB of head are allowed.
    let resp = gw
        .client
        .get(gw.url("/a/v1/x"))
        .bearer_auth(t)
        .header("x-big", "z".repeat(9000))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 431, "headers-too-large").await;
    let mut req = gw.client.get(gw.url("/a/v1/x")).bearer_auth(t);
    for i in 0..80 {
        req = req.header(format!("x-h{i}"), "1");
    }
    assert_problem(req.send().await.unwrap(), 431, "headers-too-large").await;
    assert_eq!(
        up.count(),
        1,
        "only the request within limits reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_negotiated() {
    let up = Upstream::start("up", Behavior::Echo).await;
    let cat = one_service(&up);
    let gw = Gateway::start(&cat).await;
    let resp = gw.get("/a/v1/h2", gw.token("test")).await;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_problem(
        gw.get("/b/v9/x", gw.token("test")).await,
        404,
        "unknown-service",
    )
    .await;
    let h1 = gw.https_client(true);
    let resp = h1
        .get(gw.url("/a/v1/h1"))
        .bearer_auth(gw.token("test"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_502_504_and_503() {
    let closed_port = ClosedPort::reserve();
    let closed = format!("\"http://127.0.0.1:{}\"", closed_port.port());
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_secs(3))).await;
    let cat = format!(
        "{}\n",
        catalog(
            &[("a", 1, &closed, ""), ("b", 1, &format!("\"{}\"", slow.url()), "")],
            "      - {service: a/v1, environments: [pruebas]}\n      - {service: b/v1, environments: [pruebas]}\n",
            "",
        )
    )
    .replace(&format!("upstreams: [\"{}\"]", slow.url()), &format!("upstreams: [\"{}\"]\n        read_timeout_ms: 300", slow.url()));
    let gw = Gateway::start(&cat).await;
    let t = gw.token("test");

    // The only upstream refuses connections: 502 first, then (once marked
    // down by the failure or the probe) 503 until it comes back.
    let first = gw.get("/a/v1/x", t).await;
    let status = first.status().as_u16();
    if status == 502 {
        assert_problem(first, 502, "upstream-unreachable").await;
    } else {
        assert_problem(first, 503, "no-healthy-upstream").await;
    }
    assert_problem(gw.get("/a/v1/x", t).await, 503, "no-healthy-upstream").await;

    let started = Instant::now();
    let body = assert_problem(gw.get("/b/v1/slow", t).await, 504, "upstream-timeout").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the 300 ms read timeout applies"
    );
    assert!(body["detail"].as_str().unwrap().contains("b/v1"));
    // GET is idempotent, so the timeout may be retried on another upstream;
    // there is none, so exactly one attempt reached the slow one.
    assert_eq!(slow.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_only_idempotent_requests_after_the_request_was_sent() {
    let dropper = Upstream::start("dropper", Behavior::Drop).await;
    let good = Upstream::start("good", Behavior::Echo).await;
    let cat = catalog(
        &[(
            "a",
            1,
            &format!("\"{}\", \"{}\"", dropper.url(), good.url()),
            "",
        )],
        "      - {service: a/v1, environments: [pruebas]}\n",
        "",
    );
    let gw = Gateway::start(&cat).await;
    let t = gw.token("test");
    for i in 0..6 {
        let resp = gw.get(&format!("/a/v1/get/{i}"), t).await;
        assert_eq!(
            resp.status(),
            200,
            "GET {i} must be retried on the healthy upstream"
        );
    }
    let dropped_gets = dropper.count();
    assert!(
        dropped_gets >= 1,
        "round robin sent some GETs to the dropping upstream"
    );
    assert_eq!(good.seen().iter().filter(|s| s.method == "GET").count(), 6);

    let mut failed = 0;
    for i in 0..6 {
        let resp = gw
            .client
            .post(gw.url(&format!("/a/v1/post/{i}")))
            .bearer_auth(t)
            .body("{}")
            .send()
            .await
            .unwrap();
        if resp.status() != 200 {
            assert_problem(resp, 502, "upstream-error").await;
            failed += 1;
        }
    }
    let dropped_posts = dropper.seen().iter().filter(|s| s.method == "POST").count();
    let good_posts = good.seen().iter().filter(|s| s.method == "POST").count();
    assert!(failed >= 1, "some POSTs went to the dropping upstream");
    assert_eq!(
        dropped_posts, failed,
        "a POST that reached an upstream is never sent again"
    );
    assert_eq!(
        good_posts + dropped_posts,
        6,
        "each POST was sent exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_a_healthy_upstream() {
    let closed_port = ClosedPort::reserve();
    let closed = closed_port.port();
    let good = Upstream::start("good", Behavior::Echo).await;
    let cat = catalog(
        &[(
            "a",
            1,
            &format!("\"http://127.0.0.1:{closed}\", \"{}\"", good.url()),
            "",
        )],
        "      - {service: a/v1, environments: [pruebas]}\n",
        "",
    );
    let gw = Gateway::start(&cat).await;
    let t = gw.token("test");
    for i in 0..6 {
        // Nothing is sent on a refused connection, so POSTs fail over too.
        let resp = gw
            .client
            .post(gw.url(&format!("/a/v1/p/{i}")))
            .bearer_auth(t)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(gw.get(&format!("/a/v1/g/{i}"), t).await.status(), 200);
    }
    assert_eq!(good.count(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_uses_the_configured_ca() {
    let pki = test_pki();
    let secure = Upstream::start_tls("secure", pki.server_config.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let url = format!("https://localhost:{}", secure.addr.port());
    let cat = catalog(
        &[("a", 1, &format!("\"{url}\""), ""), ("b", 1, &format!("\"{url}\""), "")],
        "      - {service: a/v1, environments: [pruebas]}\n      - {service: b/v1, environments: [pruebas]}\n",
        "",
    )
    .replacen(&format!("upstreams: [\"{url}\"]"), &format!("upstreams: [\"{url}\"]\n        ca_file: {}", ca.display()), 1);
    let gw = Gateway::start(&cat).await;
    let resp = gw.get("/a/v1/tls", gw.token("test")).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["upstream"], "secure");
    // The same upstream without its CA is not trusted.
    assert_problem(
        gw.get("/b/v1/tls", gw.token("test")).await,
        502,
        "upstream-unreachable",
    )
    .await;
    assert_eq!(secure.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_changes_reach_the_running_gateway() {
    let old = Upstream::start("old", Behavior::Echo).await;
    let new = Upstream::start("new", Behavior::Echo).await;
    let grants = "      - {service: a/v1, environments: [pruebas]}\n";
    let gw = Gateway::start(&catalog(
        &[("a", 1, &format!("\"{}\"", old.url()), "")],
        grants,
        "",
    ))
    .await;
    let t = gw.token("test").to_string();
    assert_eq!(gw.get("/a/v1/x", &t).await.status(), 200);
    let file = write(
        gw.dir.path(),
        "moved.yaml",
        &catalog(&[("a", 1, &format!("\"{}\"", new.url()), "")], grants, ""),
    );
    let issued = import(gw.dir.path(), &file);
    assert!(
        issued.is_empty(),
        "re-importing keeps the live tokens instead of minting new ones"
    );
    let started = Instant::now();
    while new.count() == 0 {
        assert_eq!(gw.get("/a/v1/x", &t).await.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the new upstream is in force within 1 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_in_flight_request_then_exits() {
    let slow = Upstream::start("slow", Behavior::Delay(Duration::from_millis(1500))).await;
    let cat = one_service(&slow);
    let mut gw = Gateway::start(&cat).await;
    let (client, url, token) = (
        gw.client.clone(),
        gw.url("/a/v1/slow"),
        gw.token("test").to_string(),
    );
    let in_flight = tokio::spawn(async move { client.get(url).bearer_auth(token).send().await });
    slow.wait_for(1).await;
    gw.terminate();
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["upstream"], "slow");
    let status = gw.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "clean exit, got {status}");
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_answer_without_a_token() {
    let gw = Gateway::start(&catalog(&[], "", "")).await;
    let live = gw
        .client
        .get(gw.url("/_chasqui/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready = gw
        .client
        .get(gw.url("/_chasqui/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_problem(
        gw.client
            .get(gw.url("/_chasqui/nope"))
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_answers_429_with_retry_after_and_ratelimit_fields() {
    let up = Upstream::start("up", Behavior::Echo).await;
    let cat = catalog(
        &[("a", 1, &format!("\"{}\"", up.url()), ""), ("b", 1, &format!("\"{}\"", up.url()), "")],
        "      - {service: a/v1, environments: [pruebas]}\n      - {service: b/v1, environments: [pruebas]}\n",
        "",
    );
    let policy = format!("{TEST_POLICY}rate_limit: {{requests_per_second: 1, burst: 3}}\n");
    let gw = Gateway::start_with_policy(&cat, &policy).await;
    let t = gw.token("test");
    for i in 0..3 {
        assert_eq!(
            gw.get(&format!("/a/v1/{i}"), t).await.status(),
            200,
            "within the burst"
        );
    }
    let resp = gw.get("/a/v1/over", t).await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        resp.headers()["ratelimit-policy"],
        "\"consumer-service\";q=1;w=1"
    );
    assert!(resp.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"consumer-service\";r=0;t="));
    assert_problem(resp, 429, "rate-limited").await;
    assert_eq!(
        up.count(),
        3,
        "the refused request never reached the upstream"
    );
    // Each consumer x service pair has its own budget.
    assert_eq!(gw.get("/b/v1/x", t).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_both_tokens_working_for_the_overlap_then_only_the_new_one() {
    let up = Upstream::start("up", Behavior::Echo).await;
    let cat = catalog(
        &[("a", 1, &format!("\"{}\"", up.url()), "")],
        "      - {service: a/v1, environments: [pruebas]}\n",
        "      - {environment: pruebas, label: rot}\n",
    );
    let gw = Gateway::start(&cat).await;
    let old = gw.token("rot").to_string();
    assert_eq!(gw.get("/a/v1/x", &old).await.status(), 200);
    let out = gw.cli(&[
        "token",
        "rotate",
        "--consumer",
        "c/sys",
        "--token",
        "rot",
        "--overlap-secs",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(new.starts_with("chq_test_") && new != old);
    let rotated_at = Instant::now();
    assert_eq!(
        gw.get("/a/v1/x", &new).await.status(),
        200,
        "the new token works at once"
    );
    assert_eq!(
        gw.get("/a/v1/x", &old).await.status(),
        200,
        "the old one works during the overlap"
    );
    loop {
        let resp = gw.get("/a/v1/x", &old).await;
        if resp.status() == 401 {
            assert_problem(resp, 401, "token-expired").await;
            break;
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(5),
            "the old token outlived its overlap"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rotated_at.elapsed() >= Duration::from_millis(900),
        "the overlap was honoured"
    );
    assert_eq!(gw.get("/a/v1/x", &new).await.status(), 200);

    let out = gw.cli(&["token", "list", "--consumer", "c/sys"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(
        listing.lines().filter(|l| l.contains(" rot ")).count(),
        2,
        "{listing}"
    );
    assert!(
        listing.contains("expired") && listing.contains(&new[..15]),
        "{listing}"
    );
    assert!(
        !listing.contains(&new) && !listing.contains(&old),
        "secrets are never listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_use_of_each_token_is_recorded_off_the_request_path() {
    let up = Upstream::start("up", Behavior::Echo).await;
    let gw = Gateway::start(&one_service(&up)).await;
    assert_eq!(gw.get("/a/v1/x", gw.token("test")).await.status(), 200);
    let started = Instant::now();
    loop {
        let out = gw.cli(&["token", "list", "--consumer", "c/sys"]);
        let listing = String::from_utf8_lossy(&out.stdout).to_string();
        let line = |label: &str| {
            listing
                .lines()
                .find(|l| l.contains(&format!(" {label} ")))
                .unwrap_or("")
                .to_string()
        };
        if line("test").contains("last used") {
            assert!(line("prod").contains("never used"), "{listing}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "last use never recorded:\n{listing}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
