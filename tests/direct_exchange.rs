//! End-to-end tests of the direct exchange (bodiless calls proxied by the
//! gateway's own loop on pingora's HTTP/1 client), each run against both
//! paths (`CHASQUI_DIRECT_EXCHANGE` on and
//! off): the answers a client gets must not depend on which path carried
//! them.
//!
//! The upstream here is scripted at the byte level, so that the framings a
//! real upstream may choose (length, chunked, close-delimited HTTP/1.0, no
//! body) and its hop-by-hop fields are exactly what the gateway receives.
//! The client is hyper's HTTP/1 connection over TLS: one connection for a
//! whole sequence of calls, so a framing the gateway got wrong shows up as
//! a broken or closed connection.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The raw request heads the scripted upstream received, and how many
/// connections it accepted.
#[derive(Clone, Default)]
struct Received {
    heads: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
}

impl Received {
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// What the scripted upstream answers to a path (`None`: it closes the
/// connection without answering), and whether it closes the connection
/// after the answer. `nth` counts the requests of the connection from 0.
fn script(method: &str, path: &str, nth: usize) -> (Option<Vec<u8>>, bool) {
    let (answer, close) = answer(method, path);
    if path == "/once-per-connection" && nth > 0 {
        return (None, true);
    }
    (Some(answer), close)
}

fn answer(method: &str, path: &str) -> (Vec<u8>, bool) {
    let body_for_get = |body: &[u8]| {
        if method == "HEAD" {
            Vec::new()
        } else {
            body.to_vec()
        }
    };
    match path {
        "/length" => {
            let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n".to_vec();
            out.extend(body_for_get(b"hello"));
            (out, false)
        }
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nchunk-\r\n3\r\nend\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        // HTTP/1.0 without a length: the body ends when the connection does.
        "/close" => (
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(),
            true,
        ),
        "/empty" => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false),
        // An informational answer before the final one.
        "/early-hints" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints".to_vec(),
            false,
        ),
        "/hop" => (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Upstream-Hop\r\nKeep-Alive: timeout=5\r\nX-Upstream-Hop: secret\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        // A keep-alive answer; the next request on the connection finds it
        // closed (see `script`), as when the upstream's idle timeout ended it
        // while it sat in the gateway's pool.
        "/once-per-connection" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone".to_vec(),
            false,
        ),
        _ => (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            false,
        ),
    }
}

/// Starts the scripted upstream: per connection, reads request heads
/// (bodiless calls only) and writes the scripted answers.
async fn scripted_upstream() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let shared = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_script(stream, shared.clone()));
        }
    });
    (addr, received)
}

async fn serve_script(mut stream: TcpStream, received: Received) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for nth in 0.. {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end + 4);
        let mut first = head.lines().next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("").to_string();
        received.heads.lock().unwrap().push(head);
        let (answer, close) = script(&method, &path, nth);
        let Some(answer) = answer else {
            return; // dropped: closed without an answer
        };
        if stream.write_all(&answer).await.is_err() || close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Service `a/v1` in `pruebas` at the scripted upstream, granted.
fn catalog(upstream: SocketAddr) -> String {
    format!(
        "entities:
  - {{code: a, name: Entidad A}}
  - {{code: c, name: Consumidora}}
services:
  - entity: a
    code: s1
    version: 1
    name: Servicio
    category: Salud
    environments:
      pruebas:
        upstreams: [\"http://{upstream}\"]
consumers:
  - entity: c
    code: sys
    name: Sistema
    grants:
      - {{service: a/v1, environments: [pruebas]}}
    tokens:
      - {{environment: pruebas, label: test}}
"
    )
}

/// One HTTP/1.1 connection to the gateway over TLS.
async fn connect(gw: &Gateway) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tls = gw.tls_connection().await;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// What the client got: status, fields, body.
struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn call(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    gw: &Gateway,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Got {
    sender
        .ready()
        .await
        .unwrap_or_else(|e| panic!("the connection did not survive until {method} {path}: {e}"));
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("localhost:{}", gw.port))
        .header("authorization", format!("Bearer {}", gw.token("test")));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::new()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body,
    }
}

async fn gateway(upstream: SocketAddr, direct: bool) -> Gateway {
    Gateway::start_with_env(
        &catalog(upstream),
        TEST_POLICY,
        &[(
            "CHASQUI_DIRECT_EXCHANGE",
            if direct { "true" } else { "false" },
        )],
    )
    .await
}

/// Every framing an upstream may choose reaches the client whole, on one
/// client connection that stays open through all of them.
async fn framings_on_one_connection(direct: bool) {
    let (addr, received) = scripted_upstream().await;
    let gw = gateway(addr, direct).await;
    let mut conn = connect(&gw).await;

    let got = call(&mut conn, &gw, "GET", "/a/v1/length", &[]).await;
    assert_eq!((got.status, &got.body[..]), (200, &b"hello"[..]));
    assert_eq!(got.headers["content-length"], "5");
    assert_eq!(got.headers["content-type"], "text/plain");
    assert_eq!(got.headers["x-request-id"].len(), 32);

    let got = call(&mut conn, &gw, "GET", "/a/v1/chunked", &[]).await;
    assert_eq!((got.status, &got.body[..]), (200, &b"chunk-end"[..]));

    // Close-delimited upstream, but the client's connection goes on.
    let got = call(&mut conn, &gw, "GET", "/a/v1/close", &[]).await;
    assert_eq!((got.status, &got.body[..]), (200, &b"until the end"[..]));

    let got = call(&mut conn, &gw, "HEAD", "/a/v1/length", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["content-length"], "5", "HEAD keeps the length");
    assert!(got.body.is_empty(), "HEAD answers carry no body");

    let got = call(&mut conn, &gw, "GET", "/a/v1/empty", &[]).await;
    assert_eq!((got.status, got.body.len()), (204, 0));

    let got = call(&mut conn, &gw, "GET", "/a/v1/early-hints", &[]).await;
    assert_eq!(
        (got.status, &got.body[..]),
        (200, &b"hints"[..]),
        "an informational answer does not stand for the final one"
    );

    let got = call(&mut conn, &gw, "GET", "/a/v1/unknown", &[]).await;
    assert_eq!(got.status, 404, "the upstream's own 404 is passed on");

    let got = call(&mut conn, &gw, "GET", "/a/v1/length", &[]).await;
    assert_eq!((got.status, &got.body[..]), (200, &b"hello"[..]));

    let heads = received.heads();
    assert_eq!(heads.len(), 8, "one upstream request per call: {heads:?}");
    assert!(
        heads[3].starts_with("HEAD /length HTTP/1.1"),
        "{}",
        heads[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framings_reach_the_client_whole_direct() {
    framings_on_one_connection(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framings_reach_the_client_whole_general() {
    framings_on_one_connection(false).await;
}

/// Fields that concern one hop stay on it, both ways.
async fn hop_by_hop(direct: bool) {
    let (addr, received) = scripted_upstream().await;
    let gw = gateway(addr, direct).await;
    let mut conn = connect(&gw).await;
    let got = call(
        &mut conn,
        &gw,
        "GET",
        "/a/v1/hop",
        &[
            ("connection", "keep-alive, x-client-hop"),
            ("x-client-hop", "secret"),
            ("x-client-kept", "yes"),
        ],
    )
    .await;
    assert_eq!((got.status, &got.body[..]), (200, &b"ok"[..]));
    assert!(
        got.headers.get("x-upstream-hop").is_none(),
        "{:?}",
        got.headers
    );
    assert!(got.headers.get("keep-alive").is_none(), "{:?}", got.headers);
    assert_eq!(got.headers["x-kept"], "yes");

    let heads = received.heads();
    // Each field line ends with CRLF, the last one too.
    let head = format!("{}\r\n", heads[0].to_ascii_lowercase());
    assert!(!head.contains("x-client-hop"), "{head}");
    assert!(!head.contains("authorization"), "{head}");
    assert!(head.contains("x-client-kept: yes"), "{head}");
    assert!(head.contains("x-chasqui-consumer-system: sys"), "{head}");
    assert!(head.contains("x-forwarded-proto: https"), "{head}");
    // The gateway's fields, alike on both paths: each once.
    for field in [
        "\r\nhost: ",
        "\r\nx-forwarded-for: 127.0.0.1\r\n",
        "\r\nx-forwarded-host: ",
        "\r\nforwarded: for=127.0.0.1;proto=https;host=\"",
        "\r\nx-chasqui-consumer-entity: ",
        "\r\nx-chasqui-environment: pruebas\r\n",
        "\r\nx-chasqui-service: ",
        "\r\nx-request-id: ",
    ] {
        assert_eq!(head.matches(field).count(), 1, "{field:?} in {head}");
    }
    assert!(head.starts_with("get /hop http/1.1\r\n"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_stay_on_their_hop_direct() {
    hop_by_hop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_stay_on_their_hop_general() {
    hop_by_hop(false).await;
}

/// An upstream that ends each keep-alive connection after one answer,
/// without saying so: every pooled connection the gateway reuses is dead
/// (it learns so when the resent request gets no answer), which is no
/// failure of the upstream, whose only address must not be given up on.
/// Every call is answered.
async fn closed_pooled_connections(direct: bool) {
    let (addr, received) = scripted_upstream().await;
    let gw = gateway(addr, direct).await;
    let mut conn = connect(&gw).await;
    for i in 0..20 {
        let got = call(&mut conn, &gw, "GET", "/a/v1/once-per-connection", &[]).await;
        let body = String::from_utf8_lossy(&got.body);
        assert_eq!((got.status, body.as_ref()), (200, "done"), "call {i}");
    }
    let answered = received
        .heads()
        .iter()
        .filter(|h| h.starts_with("GET /once-per-connection"))
        .count();
    assert!(
        answered >= 20,
        "every call reached the upstream: {answered}"
    );
    assert!(
        received.connections.load(Ordering::SeqCst) >= 20,
        "one upstream connection per call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_upstream_closed_are_not_failures_direct() {
    closed_pooled_connections(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_upstream_closed_are_not_failures_general() {
    closed_pooled_connections(false).await;
}
