//! Harness for the end-to-end tests: the real `chasqui` binary, real
//! upstream servers (hyper, raw TCP, TLS) and real HTTPS clients.
#![allow(dead_code)]

pub mod agetic;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Path of the binary under test.
pub const CHASQUI: &str = env!("CARGO_BIN_EXE_chasqui");

/// A port where nothing listens (connections are refused) and that no other
/// test takes while this is held: the socket is bound but not listening,
/// which keeps the kernel from handing the port out. A port merely freed
/// (`free_port`) was once given to a concurrent test's upstream, and a
/// "down" upstream then answered as another service.
pub struct ClosedPort {
    socket: Option<tokio::net::TcpSocket>,
    port: u16,
}

impl ClosedPort {
    /// Reserves a port on 127.0.0.1.
    pub fn reserve() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let port = socket.local_addr().expect("local address").port();
        ClosedPort {
            socket: Some(socket),
            port,
        }
    }

    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Gives the port up, for a server about to listen on it; returns it.
    pub fn open(&mut self) -> u16 {
        self.socket = None;
        self.port
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One request as an upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, Vec<String>>,
    pub body: Bytes,
    /// When the request arrived.
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// How a test upstream behaves.
#[derive(Clone)]
pub enum Behavior {
    /// Answer 200 with a JSON naming the upstream, method and path.
    Echo,
    /// Echo after a delay.
    Delay(Duration),
    /// Read the request, then close the connection without answering.
    Drop,
}

/// A running test upstream.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts a plain-HTTP upstream.
    pub async fn start(name: &str, behavior: Behavior) -> Upstream {
        Self::start_inner(name, behavior, None, 0).await
    }

    /// Starts a plain-HTTP upstream on a given loopback port (to bring one
    /// back where it was).
    pub async fn start_at(name: &str, behavior: Behavior, port: u16) -> Upstream {
        Self::start_inner(name, behavior, None, port).await
    }

    /// Starts an HTTPS upstream with the given server config.
    pub async fn start_tls(name: &str, config: Arc<rustls::ServerConfig>) -> Upstream {
        Self::start_inner(
            name,
            Behavior::Echo,
            Some(tokio_rustls::TlsAcceptor::from(config)),
            0,
        )
        .await
    }

    async fn start_inner(
        name: &str,
        behavior: Behavior,
        tls: Option<tokio_rustls::TlsAcceptor>,
        port: u16,
    ) -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (seen2, arrived2, name2) = (seen.clone(), arrived.clone(), name.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, arrived, name, behavior, tls) = (
                    seen2.clone(),
                    arrived2.clone(),
                    name2.clone(),
                    behavior.clone(),
                    tls.clone(),
                );
                tokio::spawn(async move {
                    match behavior {
                        Behavior::Drop => drop_after_request(stream, seen, arrived).await,
                        _ => {
                            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                                let (seen, arrived, name, behavior) = (
                                    seen.clone(),
                                    arrived.clone(),
                                    name.clone(),
                                    behavior.clone(),
                                );
                                async move { echo(req, seen, arrived, name, behavior).await }
                            });
                            match tls {
                                Some(acceptor) => {
                                    if let Ok(s) = acceptor.accept(stream).await {
                                        let _ = hyper::server::conn::http1::Builder::new()
                                            .serve_connection(TokioIo::new(s), service)
                                            .await;
                                    }
                                }
                                None => {
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                }
                            }
                        }
                    }
                });
            }
        });
        Upstream {
            name: name.to_string(),
            addr,
            seen,
            arrived,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until at least `n` requests have arrived (bounded).
    pub async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "upstream {} never saw {n} requests",
                self.name
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), self.arrived.notified()).await;
        }
    }
}

async fn echo(
    req: Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    arrived: Arc<Notify>,
    name: String,
    behavior: Behavior,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(v.to_str().unwrap_or("<binary>").to_string());
    }
    let body = req.into_body().collect().await?.to_bytes();
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        headers,
        body,
        at: Instant::now(),
    });
    arrived.notify_waiters();
    if let Behavior::Delay(d) = behavior {
        tokio::time::sleep(d).await;
    }
    let json = serde_json::json!({ "upstream": name, "method": method, "path": path });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap())
}

async fn drop_after_request(
    mut stream: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    arrived: Arc<Notify>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut lines = head.lines();
            let mut first = lines.next().unwrap_or("").split(' ');
            let method = first.next().unwrap_or("").to_string();
            let path = first.next().unwrap_or("").to_string();
            let mut headers: HashMap<String, Vec<String>> = HashMap::new();
            for l in lines {
                if let Some((k, v)) = l.split_once(':') {
                    headers
                        .entry(k.trim().to_ascii_lowercase())
                        .or_default()
                        .push(v.trim().to_string());
                }
            }
            let want: usize = headers
                .get("content-length")
                .and_then(|v| v[0].parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + want {
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            seen.lock().unwrap().push(Seen {
                method,
                path,
                headers,
                body: Bytes::new(),
                at: Instant::now(),
            });
            arrived.notify_waiters();
            let _ = stream.shutdown().await;
            return; // dropping the stream closes it without an answer
        }
    }
}

/// A fresh PostgreSQL database for one test, created on the server named by
/// `CHASQUI_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
/// and dropped when the value is dropped. An unreachable server fails the
/// test: `./dev.sh test` makes sure one runs.
pub struct PgDb {
    /// The URL of the new database.
    pub url: String,
    name: String,
}

/// The PostgreSQL server the tests create their databases on.
pub fn pg_base_url() -> String {
    std::env::var("CHASQUI_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl PgDb {
    /// Creates `chasqui_t_<random>` on the test server.
    pub async fn create() -> Arc<PgDb> {
        use sqlx::{Connection, Executor};
        let base = pg_base_url();
        let name = format!(
            "chasqui_t_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let mut admin = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not reachable at {base} ({e}); start it (`./dev.sh test` does) \
                 or set CHASQUI_TEST_PG_URL"
                )
            });
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let (without_query, query) = match base.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (base.as_str(), String::new()),
        };
        let server = without_query
            .rsplit_once('/')
            .map_or(without_query, |(server, _)| server);
        Arc::new(PgDb {
            url: format!("{server}/{name}{query}"),
            name,
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime: use a thread of our own.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::{Connection, Executor};
                if let Ok(mut admin) = sqlx::PgConnection::connect(&pg_base_url()).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Which database a test gateway runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// The embedded default: `chasqui.db` in the data directory.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// A running gateway process with its data directory.
pub struct Gateway {
    pub port: u16,
    /// Port of the admin API's HTTPS listener.
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    /// Tokens issued by the import, by label.
    pub tokens: HashMap<String, String>,
    child: Option<Child>,
    pub client: reqwest::Client,
    /// Started on the embedded default (compiled-in policy, demo catalog),
    /// with the plugin components found in this directory.
    embedded: Option<PathBuf>,
    /// Environment variables given to the process (settings under test).
    pub env: Vec<(String, String)>,
    /// The PostgreSQL database the catalog is in (None: SQLite in `dir`).
    pub pg: Option<Arc<PgDb>>,
    /// `--catalog-poll-ms`: how often the node polls the catalog for changes.
    catalog_poll_ms: u64,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The policy the tests run with: small limits and fast health checks.
pub const TEST_POLICY: &str = "version: 1
limits:
  max_request_body_bytes: 1024
  max_request_header_bytes: 8192
  max_request_headers: 60
upstream:
  connect_timeout_ms: 1000
  read_timeout_ms: 5000
  retries: 2
  health_check:
    interval_ms: 200
    timeout_ms: 200
    healthy_after: 1
    unhealthy_after: 1
";

impl Gateway {
    /// Imports `catalog` into a new data directory and starts `chasqui serve`.
    pub async fn start(catalog: &str) -> Gateway {
        Self::start_with_policy(catalog, TEST_POLICY).await
    }

    /// Like [`Gateway::start`] with a policy of the test's own.
    pub async fn start_with_policy(catalog: &str, policy_text: &str) -> Gateway {
        Self::start_with_env(catalog, policy_text, &[]).await
    }

    /// Like [`Gateway::start_with_policy`], the process started with these
    /// environment variables (they stay for later restarts).
    pub async fn start_with_env(catalog: &str, policy_text: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_full(catalog, policy_text, None, env).await
    }

    /// Like [`Gateway::start`], on the given database.
    pub async fn start_on(catalog: &str, db: Db) -> Gateway {
        let pg = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(PgDb::create().await),
        };
        Self::start_full(catalog, TEST_POLICY, pg, &[]).await
    }

    /// Imports `catalog` (into `pg`, or the data directory's SQLite file)
    /// and starts a node.
    pub async fn start_on_pg(catalog: &str, policy_text: &str, pg: Option<Arc<PgDb>>) -> Gateway {
        Self::start_full(catalog, policy_text, pg, &[]).await
    }

    /// Imports `catalog` (into `pg`, or the data directory's SQLite file)
    /// and starts a node with these environment variables.
    pub async fn start_full(
        catalog: &str,
        policy_text: &str,
        pg: Option<Arc<PgDb>>,
        env: &[(&str, &str)],
    ) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("catalog.yaml");
        std::fs::write(&file, catalog).unwrap();
        let tokens = import_into(dir.path(), pg.as_ref().map(|p| p.url.as_str()), &file);
        Self::node(dir, tokens, policy_text, pg, 50, env).await
    }

    /// Starts a node of a cluster on `pg`, with a data directory
    /// (certificate, ledger, plugin cache) of its own, importing `catalog`
    /// first if given, and polling the catalog only every `poll_ms`.
    pub async fn cluster_node(catalog: Option<&str>, pg: &Arc<PgDb>, poll_ms: u64) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = match catalog {
            Some(catalog) => {
                let file = dir.path().join("catalog.yaml");
                std::fs::write(&file, catalog).unwrap();
                import_into(dir.path(), Some(&pg.url), &file)
            }
            None => HashMap::new(),
        };
        Self::node(dir, tokens, TEST_POLICY, Some(pg.clone()), poll_ms, &[]).await
    }

    async fn node(
        dir: tempfile::TempDir,
        tokens: HashMap<String, String>,
        policy_text: &str,
        pg: Option<Arc<PgDb>>,
        catalog_poll_ms: u64,
        env: &[(&str, &str)],
    ) -> Gateway {
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, policy_text).unwrap();
        let mut gw = Gateway {
            port: 0,
            admin_port: 0,
            dir,
            tokens,
            child: None,
            client: reqwest::Client::new(),
            embedded: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pg,
            catalog_poll_ms,
        };
        gw.spawn().await;
        gw
    }

    /// The SQLite file that holds this node's audit ledger.
    pub fn ledger_db(&self) -> PathBuf {
        match self.pg {
            Some(_) => self.dir.path().join("ledger.db"),
            None => self.dir.path().join("chasqui.db"),
        }
    }

    /// Starts `chasqui serve` on the embedded default: no policy file (the
    /// compiled-in default, which loads the four AGETIC plugins from
    /// `plugin_dir`) and the demo catalog, with the demo upstream on a free
    /// port (the demo catalog's production upstreams are then unreachable).
    pub async fn start_embedded(plugin_dir: &Path) -> Gateway {
        let mut gw = Gateway {
            port: 0,
            admin_port: 0,
            dir: tempfile::tempdir().expect("tempdir"),
            tokens: HashMap::new(),
            child: None,
            client: reqwest::Client::new(),
            embedded: Some(plugin_dir.to_path_buf()),
            env: Vec::new(),
            pg: None,
            catalog_poll_ms: 50,
        };
        gw.spawn().await;
        gw
    }

    /// Starts the process on a fresh port and waits until it is ready.
    pub async fn spawn(&mut self) {
        let port = free_port();
        let admin_port = free_port();
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).unwrap();
        let mut command = Command::new(CHASQUI);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"));
        if let Some(pg) = &self.pg {
            command.arg("--database-url").arg(&pg.url);
        }
        match &self.embedded {
            Some(plugin_dir) => command
                .arg("--demo-listen")
                .arg(format!("127.0.0.1:{}", free_port()))
                .env("CHASQUI_PLUGIN_DIR", plugin_dir),
            None => command
                .arg("--policy")
                .arg(self.dir.path().join("policy.yaml"))
                .arg("--no-demo"),
        };
        let child = command
            .args(["--threads", "2", "--drain-timeout-secs", "10"])
            .arg("--catalog-poll-ms")
            .arg(self.catalog_poll_ms.to_string())
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start chasqui");
        self.port = port;
        self.admin_port = admin_port;
        self.child = Some(child);
        self.client = self.https_client(false);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self
                .client
                .get(self.url("/_chasqui/health/ready"))
                .send()
                .await;
            if matches!(&ready, Ok(r) if r.status() == 200) {
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("chasqui exited at start ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "chasqui not ready in 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An HTTPS client that trusts the gateway's generated certificate.
    pub fn https_client(&self, http1_only: bool) -> reqwest::Client {
        let cert = wait_for_file(&self.dir.path().join("tls/cert.pem"));
        let cert = reqwest::Certificate::from_pem(&cert).expect("gateway cert");
        let builder = reqwest::Client::builder()
            .add_root_certificate(cert)
            .use_rustls_tls()
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(4);
        let builder = if http1_only {
            builder.http1_only()
        } else {
            builder
        };
        builder.build().expect("client")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// A URL on the admin API's listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.admin_port)
    }

    /// The bootstrap operator's admin token, written at first start.
    pub fn admin_token(&self) -> String {
        let token = wait_for_file(&self.dir.path().join("admin-token"));
        String::from_utf8(token).unwrap().trim().to_string()
    }

    pub fn token(&self, label: &str) -> &str {
        self.tokens
            .get(label)
            .unwrap_or_else(|| panic!("no token labelled {label}"))
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Runs a `chasqui` subcommand against this gateway's data directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(CHASQUI);
        command.args(args).arg("--data-dir").arg(self.dir.path());
        if let Some(pg) = &self.pg {
            command.arg("--database-url").arg(&pg.url);
        }
        command.output().expect("run chasqui")
    }

    /// Replaces the policy file and sends SIGHUP.
    pub fn reload(&self, policy_text: &str) {
        let path = self.dir.path().join("policy.yaml");
        let tmp = self.dir.path().join("policy.yaml.new");
        std::fs::write(&tmp, policy_text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "chasqui did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A TLS connection to the data plane (no ALPN: HTTP/1.1), trusting
    /// the gateway's generated certificate.
    pub async fn tls_connection(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let cert = std::fs::read(self.dir.path().join("tls/cert.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut cert.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.unwrap()
    }

    /// Sends raw bytes over TLS (HTTP/1.1) and returns the status and body.
    pub async fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut tls = self.tls_connection().await;
        tls.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

fn wait_for_file(path: &Path) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(data) = std::fs::read(path) {
            if !data.is_empty() {
                return data;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `chasqui catalog import` and returns the issued tokens by label.
pub fn import(data_dir: &Path, file: &Path) -> HashMap<String, String> {
    import_into(data_dir, None, file)
}

/// Like [`import`], into the database at `database_url` when given.
pub fn import_into(
    data_dir: &Path,
    database_url: Option<&str>,
    file: &Path,
) -> HashMap<String, String> {
    let mut command = Command::new(CHASQUI);
    command
        .args(["catalog", "import"])
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir);
    if let Some(url) = database_url {
        command.arg("--database-url").arg(url);
    }
    let out = command.output().expect("run import");
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("token"))
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts[2].to_string(), parts[3].to_string())
        })
        .collect()
}

/// Asserts a problem+json answer with the given status and type slug.
pub async fn assert_problem(resp: reqwest::Response, status: u16, slug: &str) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(ct.as_deref(), Some("application/problem+json"));
    let body: serde_json::Value = resp.json().await.expect("problem json");
    assert_problem_body(&body, status, slug);
    body
}

/// Asserts the body of a problem.
pub fn assert_problem_body(body: &serde_json::Value, status: u16, slug: &str) {
    assert_eq!(
        body["type"],
        format!("https://chasqui.agetic.gob.bo/problems/{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["request_id"].as_str().is_some_and(|t| t.len() == 32));
}

/// A CA and a server certificate it signs for `localhost`/127.0.0.1.
pub struct TestPki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Chasqui test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
    )
    .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(config),
    }
}

/// Writes a file in a directory and returns its path.
pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// Builds a plugin crate of this repository (once per test process) and
/// returns the component's path.
pub fn component(crate_dir: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<Mutex<HashMap<String, PathBuf>>> = std::sync::OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = built.get(crate_dir) {
        return p.clone();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(CHASQUI)
        .args(["plugin", "build"])
        .arg(root.join(crate_dir))
        .output()
        .expect("plugin build");
    assert!(
        out.status.success(),
        "plugin build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    built.insert(crate_dir.to_string(), path.clone());
    path
}
