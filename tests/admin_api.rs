//! End-to-end tests of the admin API: the real `chasqui` binary, its admin
//! listener reached with a real HTTPS client, the data plane in front of real
//! upstreams, and the audit ledger in the store.

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};
use support::*;

/// A client of the admin API acting with one admin token (or none).
struct Admin {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Admin {
    fn new(gw: &Gateway, token: Option<&str>) -> Admin {
        Admin {
            client: gw.https_client(false),
            base: gw.admin_url(""),
            token: token.map(str::to_string),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("admin request")
    }

    /// Sends and expects `status`; returns the JSON body (Null if empty).
    async fn call(&self, method: Method, path: &str, body: Option<Value>, status: u16) -> Value {
        let resp = self.send(method.clone(), path, body).await;
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(got, status, "{method} {path}: {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        }
    }

    async fn get(&self, path: &str) -> Value {
        self.call(Method::GET, path, None, 200).await
    }

    async fn post(&self, path: &str, body: Value, status: u16) -> Value {
        self.call(Method::POST, path, Some(body), status).await
    }

    /// Sends and expects a problem of `status` and `slug`; returns its body.
    async fn problem(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: u16,
        slug: &str,
    ) -> Value {
        assert_problem(self.send(method, path, body).await, status, slug).await
    }

    async fn upload(&self, entity: &str, content: Vec<u8>) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!(
                "{}/documents?entity={entity}&filename=norma-adhesion.pdf",
                self.base
            ))
            .header("content-type", "application/pdf")
            .body(content);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("upload")
    }
}

/// Polls `check` until it holds (bounded): the data plane reloads its catalog
/// snapshot within its poll period after every change.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status a data-plane call gets, and which upstream answered.
async fn call_plane(gw: &Gateway, path: &str, token: &str) -> (u16, Value) {
    let resp = gw.get(path, token).await;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn pdf(text: &str) -> Vec<u8> {
    format!("%PDF-1.7\n% Norma técnica de adhesión: {text}\n%%EOF\n").into_bytes()
}

fn contacts() -> Value {
    json!([{
        "full_name": "Ana Quispe Mamani",
        "role": "Responsable de seguridad",
        "email": "seguridad@entidad.gob.bo",
        "phone": "+591 71234567"
    }])
}

/// A publisher `segip` with service `segip/v1` published in both
/// environments, imported the way the README shows.
fn imported_catalog(test_up: &Upstream, prod_up: &Upstream) -> String {
    format!(
        "entities:
  - {{code: segip, name: Servicio General de Identificación Personal}}
services:
  - entity: segip
    code: personas
    version: 1
    name: Consulta de personas
    description: Datos de personas por cédula de identidad
    category: Identificación
    environments:
      pruebas:
        upstreams: [\"{}\"]
      produccion:
        upstreams: [\"{}\"]
",
        test_up.url(),
        prod_up.url()
    )
}

async fn ledger_kinds(gw: &Gateway) -> Vec<(String, String)> {
    // The ledger is per node: in the catalog's SQLite file, or in the
    // node's own `ledger.db` when the catalog is on PostgreSQL.
    let url = format!("sqlite://{}?mode=ro", gw.ledger_db().display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the store");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, actor FROM ledger_entries WHERE kind LIKE 'admin.%' ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .expect("read the ledger");
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consume_procedure_end_to_end() {
    consume_walk(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consume_procedure_end_to_end_on_postgres() {
    consume_walk(Db::Postgres).await;
}

async fn consume_walk(db: Db) {
    let test_up = Upstream::start("pruebas", Behavior::Echo).await;
    let prod_up = Upstream::start("produccion", Behavior::Echo).await;
    let gw = Gateway::start_on(&imported_catalog(&test_up, &prod_up), db).await;

    // The bootstrap operator's token is in a private file, never in the log.
    let op_token = gw.admin_token();
    assert!(op_token.starts_with("chq_admin_"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(gw.dir.path().join("admin-token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(!gw.log().contains(&op_token), "the token reached the log");
    let op = Admin::new(&gw, Some(&op_token));
    let me = op.get("/me").await;
    assert_eq!(me["role"], "operator");

    // Unauthenticated or with a wrong token: 401.
    let anon = Admin::new(&gw, None);
    anon.problem(Method::GET, "/entities", None, 401, "admin-unauthenticated")
        .await;
    let forged = Admin::new(&gw, Some("chq_admin_not-a-real-token"));
    forged
        .problem(Method::GET, "/me", None, 401, "admin-unauthenticated")
        .await;
    // A consumer token is not an admin token.
    let resp = anon
        .client
        .get(gw.admin_url("/me"))
        .bearer_auth("chq_test_AAAA")
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "admin-unauthenticated").await;

    // AGETIC registers the new consumer entity and gives it an admin token.
    op.post(
        "/entities",
        json!({"code": "sin", "name": "Servicio de Impuestos Nacionales", "kind": "public",
               "contacts": contacts(), "incident_webhook_url": "https://127.0.0.1:9/incidentes"}),
        201,
    )
    .await;
    let issued = op
        .post(
            "/principals",
            json!({"role": "consumer", "entity": "sin", "name": "Mesa de integración SIN"}),
            201,
        )
        .await;
    let sin = Admin::new(&gw, Some(issued["token"].as_str().unwrap()));
    let system = sin
        .post(
            "/entities/sin/systems",
            json!({"code": "portal-tramites", "name": "Portal de trámites"}),
            201,
        )
        .await;
    let system_id = system["id"].as_i64().unwrap();

    // Step 1: it looks the service up in the catalog.
    let found = sin
        .get("/catalog/services?category=identificacion&q=personas")
        .await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    let service_id = found["items"][0]["id"].as_i64().unwrap();
    assert_eq!(found["items"][0]["path"], "/segip/v1/");
    let none = sin.get("/catalog/services?category=Salud").await;
    assert!(none["items"].as_array().unwrap().is_empty());

    // Step 3: it requests the test environment.
    let request = sin
        .post(
            "/access-requests",
            json!({"system_id": system_id, "service_id": service_id,
                   "justification": "Verificar la identidad de contribuyentes"}),
            201,
        )
        .await;
    assert_eq!(request["state"], "requested");
    let rid = request["id"].as_i64().unwrap();
    let transitions = format!("/access-requests/{rid}/transitions");
    // A second live request for the same service is a conflict.
    sin.problem(
        Method::POST,
        "/access-requests",
        Some(json!({"system_id": system_id, "service_id": service_id})),
        409,
        "conflict",
    )
    .await;

    // A consumer cannot approve itself.
    sin.problem(
        Method::POST,
        &transitions,
        Some(json!({"action": "enable_test"})),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        sin.get(&format!("/access-requests/{rid}")).await["state"],
        "requested"
    );
    // Steps out of order are refused with 409, changing nothing.
    op.problem(
        Method::POST,
        &transitions,
        Some(json!({"action": "enable_production"})),
        409,
        "invalid-transition",
    )
    .await;

    // Step 4: AGETIC enables test access; the test token is shown once.
    let outcome = op
        .post(&transitions, json!({"action": "enable_test"}), 200)
        .await;
    assert_eq!(outcome["request"]["state"], "test_enabled");
    let test_token = outcome["issued_token"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(test_token.starts_with("chq_test_"));

    // Step 5: it integrates against the test environment through the data plane.
    eventually("test access", Duration::from_secs(5), || async {
        call_plane(&gw, "/segip/v1/personas/123", &test_token)
            .await
            .0
            == 200
    })
    .await;
    let (_, body) = call_plane(&gw, "/segip/v1/personas/123", &test_token).await;
    assert_eq!(body["upstream"], "pruebas");
    assert_eq!(
        test_up
            .seen()
            .last()
            .unwrap()
            .header("x-chasqui-consumer-entity"),
        Some("sin")
    );
    // ... and is refused in production: no grant there, so no token either.
    sin.problem(
        Method::POST,
        &format!("/systems/{system_id}/tokens"),
        Some(json!({"environment": "produccion", "label": "adelantado"})),
        409,
        "conflict",
    )
    .await;
    // A production token made beside the procedure (the CLI) opens nothing:
    // the data plane refuses it, and production is never reached.
    let out = gw.cli(&[
        "token",
        "issue",
        "--consumer",
        "sin/portal-tramites",
        "--env",
        "produccion",
        "--label",
        "al-margen",
    ]);
    assert!(out.status.success());
    let stray = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let body = assert_problem(
        gw.get("/segip/v1/personas/123", &stray).await,
        403,
        "no-grant",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("produccion"));
    assert_eq!(prod_up.count(), 0);
    // Recording the adhesion before the verification is out of order.
    sin.problem(
        Method::POST,
        &transitions,
        Some(json!({"action": "record_adhesion"})),
        409,
        "invalid-transition",
    )
    .await;

    // Step 6: AGETIC verifies the integration.
    op.post(&transitions, json!({"action": "verify_integration"}), 200)
        .await;

    // Step 7: the adhesion agreement, a PDF; anything else is refused whole.
    let before = sin.get("/documents").await["items"]
        .as_array()
        .unwrap()
        .len();
    let body = assert_problem(
        sin.upload("sin", b"PK\x03\x04 a zip, not a PDF".to_vec())
            .await,
        415,
        "unsupported-document",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("PDF"));
    let mut oversized = pdf("grande");
    oversized.resize(8 * 1024 * 1024 + 1, b' ');
    assert_problem(sin.upload("sin", oversized).await, 413, "payload-too-large").await;
    // Nor may it file a document for another entity.
    assert_problem(sin.upload("segip", pdf("ajena")).await, 403, "forbidden").await;
    assert_eq!(
        sin.get("/documents").await["items"]
            .as_array()
            .unwrap()
            .len(),
        before,
        "a refused upload wrote something"
    );
    let content = pdf("SIN, firmada por la MAE");
    let resp = sin.upload("sin", content.clone()).await;
    assert_eq!(resp.status(), 201);
    let doc: Value = resp.json().await.unwrap();
    let doc_id = doc["id"].as_i64().unwrap();
    use sha2::Digest;
    let expected_sha: String = sha2::Sha256::digest(&content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(doc["sha256"], expected_sha);
    let fetched = sin
        .client
        .get(gw.admin_url(&format!("/documents/{doc_id}/content")))
        .bearer_auth(sin.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.headers()["content-type"], "application/pdf");
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), content.as_slice());
    // The step needs its document.
    let problem = sin
        .problem(
            Method::POST,
            &transitions,
            Some(json!({"action": "record_adhesion"})),
            422,
            "validation",
        )
        .await;
    assert_eq!(problem["field"], "document_id");
    let outcome = sin
        .post(
            &transitions,
            json!({"action": "record_adhesion", "document_id": doc_id}),
            200,
        )
        .await;
    assert_eq!(outcome["request"]["state"], "adhesion_received");
    assert_eq!(outcome["request"]["adhesion_document_id"], doc_id);
    // Still no production access.
    sin.problem(
        Method::POST,
        &transitions,
        Some(json!({"action": "enable_production"})),
        403,
        "forbidden",
    )
    .await;

    // Step 8: AGETIC enables production; the production token is shown once.
    let outcome = op
        .post(&transitions, json!({"action": "enable_production"}), 200)
        .await;
    assert_eq!(outcome["request"]["state"], "production_enabled");
    let prod_token = outcome["issued_token"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(prod_token.starts_with("chq_prod_"));
    eventually("production access", Duration::from_secs(5), || async {
        call_plane(&gw, "/segip/v1/personas/123", &prod_token)
            .await
            .0
            == 200
    })
    .await;
    let (_, body) = call_plane(&gw, "/segip/v1/personas/123", &prod_token).await;
    assert_eq!(body["upstream"], "produccion");
    let callable = sin.get("/catalog/callable").await;
    let envs: BTreeSet<&str> = callable
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["environment"].as_str().unwrap())
        .collect();
    assert_eq!(envs, BTreeSet::from(["produccion", "pruebas"]));

    // Its grants: both environments, active.
    let grants = sin.get(&format!("/grants?system_id={system_id}")).await;
    let states: BTreeSet<(String, String)> = grants["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["environment"].as_str().unwrap().to_string(),
                g["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        BTreeSet::from([
            ("produccion".to_string(), "active".to_string()),
            ("pruebas".to_string(), "active".to_string())
        ])
    );

    // The consumer's own tokens: listed without secrets.
    let tokens_path = format!("/systems/{system_id}/tokens");
    let list = sin.get(&tokens_path).await;
    assert_eq!(list.as_array().unwrap().len(), 3);
    let listed = list.to_string();
    assert!(!listed.contains(&prod_token) && !listed.contains(&test_token));
    let id_of = |list: &Value, label: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["label"] == label)
            .unwrap_or_else(|| panic!("no token labelled {label}: {list}"))["id"]
            .as_i64()
            .unwrap()
    };
    let prod_id = id_of(&list, &format!("solicitud-{rid}-produccion"));
    // The stray token made beside the procedure is revoked.
    let stray_id = id_of(&list, "al-margen");
    sin.call(
        Method::POST,
        &format!("{tokens_path}/{stray_id}/revoke"),
        None,
        204,
    )
    .await;
    sin.problem(
        Method::POST,
        &format!("{tokens_path}/{stray_id}/revoke"),
        None,
        409,
        "conflict",
    )
    .await;
    // Another consumer entity cannot see or touch them.
    op.post(
        "/entities",
        json!({"code": "aduana", "name": "Aduana Nacional", "kind": "public", "contacts": contacts()}),
        201,
    )
    .await;
    let other = op
        .post(
            "/principals",
            json!({"role": "consumer", "entity": "aduana", "name": "Aduana"}),
            201,
        )
        .await;
    let aduana = Admin::new(&gw, Some(other["token"].as_str().unwrap()));
    aduana
        .problem(Method::GET, &tokens_path, None, 403, "forbidden")
        .await;
    aduana
        .problem(
            Method::GET,
            &format!("/access-requests/{rid}"),
            None,
            403,
            "forbidden",
        )
        .await;
    aduana
        .problem(
            Method::GET,
            &format!("/documents/{doc_id}/content"),
            None,
            403,
            "forbidden",
        )
        .await;
    assert!(aduana.get("/grants").await["items"]
        .as_array()
        .unwrap()
        .is_empty());

    // Rotation: both work during the overlap, the old one fails after it.
    let rotated = sin
        .post(
            &format!("{tokens_path}/{prod_id}/rotate"),
            json!({"overlap_secs": 1}),
            201,
        )
        .await;
    let new_token = rotated["token"].as_str().unwrap().to_string();
    assert!(new_token.starts_with("chq_prod_"));
    eventually("the rotated token", Duration::from_secs(5), || async {
        call_plane(&gw, "/segip/v1/x", &new_token).await.0 == 200
    })
    .await;
    assert_eq!(call_plane(&gw, "/segip/v1/x", &prod_token).await.0, 200);
    eventually("the old token's expiry", Duration::from_secs(6), || async {
        call_plane(&gw, "/segip/v1/x", &prod_token).await.0 == 401
    })
    .await;
    assert_problem(
        gw.get("/segip/v1/x", &prod_token).await,
        401,
        "token-expired",
    )
    .await;
    assert_eq!(call_plane(&gw, "/segip/v1/x", &new_token).await.0, 200);

    // Revocation of the new token: refused at once.
    let list = sin.get(&tokens_path).await;
    let new_id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["state"] == "live" && t["environment"] == "produccion")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    sin.call(
        Method::POST,
        &format!("{tokens_path}/{new_id}/revoke"),
        None,
        204,
    )
    .await;
    let took = eventually("the revocation", Duration::from_secs(2), || async {
        call_plane(&gw, "/segip/v1/x", &new_token).await.0 == 401
    })
    .await;
    println!("revoked token refused after {took:?}");
    assert_problem(
        gw.get("/segip/v1/x", &new_token).await,
        401,
        "token-revoked",
    )
    .await;

    // Suspension withdraws the grant at once; reinstatement gives it back.
    op.post(
        &transitions,
        json!({"action": "suspend", "note": "volumen inusual"}),
        200,
    )
    .await;
    eventually("the suspension", Duration::from_secs(2), || async {
        call_plane(&gw, "/segip/v1/x", &test_token).await.0 == 403
    })
    .await;
    assert_problem(gw.get("/segip/v1/x", &test_token).await, 403, "no-grant").await;
    let outcome = op
        .post(&transitions, json!({"action": "reinstate"}), 200)
        .await;
    assert_eq!(outcome["request"]["state"], "production_enabled");
    eventually("the reinstatement", Duration::from_secs(2), || async {
        call_plane(&gw, "/segip/v1/x", &test_token).await.0 == 200
    })
    .await;

    // Revocation of the access: refused at once, and final.
    op.post(&transitions, json!({"action": "revoke"}), 200)
        .await;
    eventually("the access revocation", Duration::from_secs(2), || async {
        call_plane(&gw, "/segip/v1/x", &test_token).await.0 == 403
    })
    .await;
    op.problem(
        Method::POST,
        &transitions,
        Some(json!({"action": "reinstate"})),
        409,
        "invalid-transition",
    )
    .await;
    let revoked = op.get("/grants?status=revoked").await;
    assert_eq!(revoked["items"].as_array().unwrap().len(), 2);

    // The record: each step with who took it and the document it rests on.
    let history = sin.get(&format!("/access-requests/{rid}/history")).await;
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "request",
            "enable_test",
            "verify_integration",
            "record_adhesion",
            "enable_production",
            "suspend",
            "reinstate",
            "revoke"
        ]
    );
    let adhesion = &history[3];
    assert_eq!(adhesion["document_id"], doc_id);
    assert_eq!(adhesion["principal_name"], "Mesa de integración SIN");
    assert_eq!(history[1]["principal_name"], "bootstrap operator");

    // The audit ledger holds every administrative action with its actor.
    let deadline = Instant::now() + Duration::from_secs(5);
    let kinds = loop {
        let kinds = ledger_kinds(&gw).await;
        if kinds
            .iter()
            .any(|(k, _)| k == "admin.access-request.revoke")
        {
            break kinds;
        }
        assert!(
            Instant::now() < deadline,
            "the ledger was not flushed: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (kind, actor_role) in [
        ("admin.entity.create", "operator:"),
        ("admin.principal.create", "operator:"),
        ("admin.system.create", "consumer:"),
        ("admin.access-request.request", "consumer:"),
        ("admin.access-request.enable_test", "operator:"),
        ("admin.document.upload", "consumer:"),
        ("admin.access-request.record_adhesion", "consumer:"),
        ("admin.access-request.enable_production", "operator:"),
        ("admin.token.rotate", "consumer:"),
        ("admin.token.revoke", "consumer:"),
        ("admin.access-request.suspend", "operator:"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|(k, a)| k == kind && a.starts_with(actor_role)),
            "{kind} by {actor_role} missing from the ledger: {kinds:?}"
        );
    }
    let ledger_text = format!("{kinds:?}");
    assert!(!ledger_text.contains(&new_token) && !ledger_text.contains(&test_token));
    // Operators read them through the API; nobody else may.
    let entries = op.get("/audit?kind=admin.access-request.enable_test").await;
    let entries = entries["items"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("operator:"));
    assert_eq!(entries[0]["payload"]["request_id"], rid);
    assert_eq!(entries[0]["hash"].as_str().unwrap().len(), 64);
    let by_consumer = op.get("/audit?actor=consumer&limit=200").await;
    assert!(by_consumer["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"].as_str().unwrap().starts_with("consumer:")));
    sin.problem(Method::GET, "/audit", None, 403, "forbidden")
        .await;
    // The ledger as an export, for operators only, that verifies offline.
    let resp = op.send(Method::GET, "/audit/export", None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let export = resp.text().await.unwrap();
    assert!(
        export.starts_with("{\"header\":{\"format\":1,\"from\":0,"),
        "{export}"
    );
    assert!(export.contains("admin.access-request.enable_test"));
    let export_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(export_file.path(), &export).unwrap();
    let verify = gw.cli(&[
        "audit",
        "verify",
        "--file",
        export_file.path().to_str().unwrap(),
    ]);
    let verified = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && verified.contains("export intact"),
        "{verified}"
    );
    op.problem(
        Method::GET,
        "/audit/export?from=5&to=2",
        None,
        422,
        "validation",
    )
    .await;
    sin.problem(Method::GET, "/audit/export", None, 403, "forbidden")
        .await;
    // Each admin request's log line names the principal, never a token.
    let log = gw.log();
    assert!(
        log.contains("admin request") && log.contains("consumer:"),
        "{log}"
    );
    for secret in [&op_token, &test_token, &prod_token, &new_token] {
        assert!(!log.contains(secret.as_str()), "a token reached the log");
    }
    let verify = gw.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_procedure_end_to_end() {
    publish_walk(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_procedure_end_to_end_on_postgres() {
    publish_walk(Db::Postgres).await;
}

async fn publish_walk(db: Db) {
    let test_up = Upstream::start("visas-pruebas", Behavior::Echo).await;
    let prod_up = Upstream::start("visas-produccion", Behavior::Echo).await;
    // A consumer entity with a system already exists (imported).
    let gw = Gateway::start_on(
        "entities:
  - {code: sin, name: Servicio de Impuestos Nacionales}
consumers:
  - entity: sin
    code: portal
    name: Portal
",
        db,
    )
    .await;
    let op = Admin::new(&gw, Some(&gw.admin_token()));
    for (code, name) in [
        ("migracion", "Dirección General de Migración"),
        ("segip", "SEGIP"),
    ] {
        op.post(
            "/entities",
            json!({"code": code, "name": name, "kind": "public", "contacts": contacts()}),
            201,
        )
        .await;
    }
    let issue = |entity: &'static str, role: &'static str| {
        let op = &op;
        async move {
            let v = op
                .post(
                    "/principals",
                    json!({"role": role, "entity": entity, "name": format!("{role} {entity}")}),
                    201,
                )
                .await;
            v["token"].as_str().unwrap().to_string()
        }
    };
    let mig = Admin::new(&gw, Some(&issue("migracion", "publisher").await));
    let segip = Admin::new(&gw, Some(&issue("segip", "publisher").await));
    // The CLI issues admin tokens too.
    let out = gw.cli(&[
        "admin", "token", "issue", "--role", "consumer", "--entity", "sin", "--name", "SIN",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sin = Admin::new(&gw, Some(String::from_utf8_lossy(&out.stdout).trim()));
    assert_eq!(sin.get("/me").await["entity"], "sin");

    let new_service = json!({
        "publisher": "migracion", "code": "visas", "version": 1,
        "name": "Consulta de visas", "description": "Estado de visas por pasaporte",
        "category": "Migración",
        "sheet": {"data_provided": "Estado y vigencia de la visa", "legal_basis": "Ley 370 de Migración",
                  "personal_data": true, "coordinator": "Unidad de Sistemas", "version_notes": "Primera versión"}
    });
    // A publisher cannot register services for another entity.
    segip
        .problem(
            Method::POST,
            "/services",
            Some(new_service.clone()),
            403,
            "forbidden",
        )
        .await;
    // An unknown category is refused, naming the field, and writes nothing.
    let mut bad = new_service.clone();
    bad["category"] = json!("Deportes");
    let problem = mig
        .problem(Method::POST, "/services", Some(bad), 422, "validation")
        .await;
    assert_eq!(problem["field"], "category");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("Identificación"));
    assert!(op.get("/services?publisher=migracion").await["items"]
        .as_array()
        .unwrap()
        .is_empty());

    let service = mig.post("/services", new_service.clone(), 201).await;
    let sid = service["id"].as_i64().unwrap();
    assert_eq!(service["publication_state"], "draft");
    assert_eq!(service["status"], "draft");
    assert_eq!(service["sheet"]["personal_data"], true);
    // Duplicate codes are a conflict.
    mig.problem(
        Method::POST,
        "/services",
        Some(new_service),
        409,
        "conflict",
    )
    .await;
    // A draft is not routed, nor visible to others.
    let consumer_token = {
        // No grant yet: the data plane says the service does not exist at all.
        let out = gw.cli(&[
            "token",
            "issue",
            "--consumer",
            "sin/portal",
            "--env",
            "pruebas",
            "--label",
            "t",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_problem(
        gw.get("/migracion/v1/visas/1", &consumer_token).await,
        404,
        "unknown-service",
    )
    .await;
    segip
        .problem(
            Method::GET,
            &format!("/services/{sid}"),
            None,
            403,
            "forbidden",
        )
        .await;
    sin.problem(
        Method::GET,
        &format!("/catalog/services/{sid}"),
        None,
        404,
        "not-found",
    )
    .await;

    let transitions = format!("/services/{sid}/transitions");
    // Only AGETIC publishes; and not from draft.
    mig.problem(
        Method::POST,
        &transitions,
        Some(json!({"action": "publish"})),
        403,
        "forbidden",
    )
    .await;
    op.problem(
        Method::POST,
        &transitions,
        Some(json!({"action": "publish"})),
        409,
        "invalid-transition",
    )
    .await;

    // Step 2: the publisher's adhesion agreement.
    let resp = mig.upload("migracion", pdf("Migración")).await;
    assert_eq!(resp.status(), 201);
    let doc_id = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    mig.post(
        &transitions,
        json!({"action": "record_adhesion", "document_id": doc_id}),
        200,
    )
    .await;

    // Step 3 needs upstreams in both environments.
    let body = op
        .problem(
            Method::POST,
            &transitions,
            Some(json!({"action": "enable_environments"})),
            409,
            "invalid-transition",
        )
        .await;
    assert!(body["detail"].as_str().unwrap().contains("pruebas"));
    let bad_upstream = mig
        .problem(
            Method::PUT,
            &format!("/services/{sid}/environments/pruebas"),
            Some(json!({"upstreams": [{"url": "ftp://x"}]})),
            422,
            "validation",
        )
        .await;
    assert_eq!(bad_upstream["field"], "upstreams[0].url");
    let bad_ca = mig
        .problem(
            Method::PUT,
            &format!("/services/{sid}/environments/pruebas"),
            Some(json!({"upstreams": [{"url": test_up.url()}],
                        "ca_pem": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"})),
            422,
            "validation",
        )
        .await;
    assert_eq!(bad_ca["field"], "ca_pem");
    // Nothing of the refused configuration was written.
    assert!(mig
        .get(&format!("/services/{sid}/environments"))
        .await
        .as_array()
        .unwrap()
        .is_empty());
    for (env, up) in [("pruebas", &test_up), ("produccion", &prod_up)] {
        mig.call(
            Method::PUT,
            &format!("/services/{sid}/environments/{env}"),
            Some(json!({"upstreams": [{"url": up.url(), "weight": 1}]})),
            200,
        )
        .await;
    }
    let outcome = op
        .post(&transitions, json!({"action": "enable_environments"}), 200)
        .await;
    assert_eq!(outcome["status"], "testing");
    // Now routed in the test environment (this consumer simply has no grant).
    eventually("routing in pruebas", Duration::from_secs(5), || async {
        call_plane(&gw, "/migracion/v1/visas/1", &consumer_token)
            .await
            .0
            == 403
    })
    .await;
    // Not yet in the catalog, so no request can be filed.
    assert!(
        sin.get("/catalog/services?publisher=migracion").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Step 4: AGETIC publishes it, once its contract is there.
    let body = op
        .problem(
            Method::POST,
            &transitions,
            Some(json!({"action": "publish"})),
            409,
            "invalid-transition",
        )
        .await;
    assert!(body["detail"].as_str().unwrap().contains("OpenAPI"));
    let openapi = json!({"openapi": "3.1.0", "info": {"title": "Visas", "version": "1"},
                         "paths": {"/visas/{pasaporte}": {"get": {"responses": {"200": {"description": "ok"}}}}}});
    mig.call(
        Method::PUT,
        &format!("/services/{sid}/openapi"),
        Some(openapi.clone()),
        204,
    )
    .await;
    mig.problem(
        Method::PUT,
        &format!("/services/{sid}/openapi"),
        Some(json!({"swagger": "2.0"})),
        422,
        "validation",
    )
    .await;
    let outcome = op
        .post(&transitions, json!({"action": "publish"}), 200)
        .await;
    assert_eq!(outcome["to"], "published");
    let listed = sin
        .get("/catalog/services?category=MIGRACION&publisher=migracion")
        .await;
    assert_eq!(listed["items"][0]["id"], sid);
    let sheet = sin.get(&format!("/catalog/services/{sid}")).await;
    assert_eq!(sheet["sheet"]["legal_basis"], "Ley 370 de Migración");
    assert_eq!(
        sin.get(&format!("/catalog/services/{sid}/openapi")).await,
        openapi
    );

    // A publisher cannot touch another entity's service.
    segip
        .problem(
            Method::PUT,
            &format!("/services/{sid}/environments/pruebas"),
            Some(json!({"upstreams": [{"url": "http://127.0.0.1:9"}]})),
            403,
            "forbidden",
        )
        .await;
    segip
        .problem(
            Method::PATCH,
            &format!("/services/{sid}"),
            Some(json!({"name": "Otro"})),
            403,
            "forbidden",
        )
        .await;
    segip
        .problem(
            Method::POST,
            &transitions,
            Some(json!({"action": "deprecate"})),
            403,
            "forbidden",
        )
        .await;
    // ... nor can a consumer.
    sin.problem(
        Method::PATCH,
        &format!("/services/{sid}"),
        Some(json!({"name": "Otro"})),
        403,
        "forbidden",
    )
    .await;

    // A consumer now gets it through the consume procedure.
    let systems = sin.get("/entities/sin/systems").await;
    let system_id = systems[0]["id"].as_i64().unwrap();
    let req = sin
        .post(
            "/access-requests",
            json!({"system_id": system_id, "service_id": sid, "justification": "Control de extranjeros"}),
            201,
        )
        .await;
    let outcome = op
        .post(
            &format!("/access-requests/{}/transitions", req["id"]),
            json!({"action": "enable_test"}),
            200,
        )
        .await;
    let token = outcome["issued_token"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the published service", Duration::from_secs(5), || async {
        call_plane(&gw, "/fake/migracion/v1/visas/1", &token)
            .await
            .0
            == 200
    })
    .await;
    assert_eq!(test_up.seen().last().unwrap().path, "/visas/1");
    // Rotation without a body takes the default overlap.
    let tokens = sin.get(&format!("/systems/{system_id}/tokens")).await;
    let live = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == format!("solicitud-{}-pruebas", req["id"]))
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let rotated = sin
        .call(
            Method::POST,
            &format!("/systems/{system_id}/tokens/{live}/rotate"),
            None,
            201,
        )
        .await;
    assert!(rotated["token"].as_str().unwrap().starts_with("chq_test_"));
    let listed = sin.get(&format!("/systems/{system_id}/tokens")).await;
    let old = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == live)
        .unwrap();
    let left = old["expires_at"].as_i64().unwrap() - old["created_at"].as_i64().unwrap();
    assert!((86_400..=86_402).contains(&left), "{old}");

    // The publisher deprecates it; it stays routed but cannot be published again.
    mig.post(&transitions, json!({"action": "deprecate"}), 200)
        .await;
    op.problem(
        Method::POST,
        &transitions,
        Some(json!({"action": "publish"})),
        409,
        "invalid-transition",
    )
    .await;
    let history = mig.get(&format!("/services/{sid}/history")).await;
    let steps: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "create",
            "record_adhesion",
            "enable_environments",
            "publish",
            "deprecate"
        ]
    );
    assert_eq!(history[1]["document_id"], doc_id);
    assert_eq!(history[3]["principal_name"], "bootstrap operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_problem_and_writes_nothing() {
    let gw = Gateway::start("entities: []\n").await;
    let op = Admin::new(&gw, Some(&gw.admin_token()));
    // A bad contact point: the field is named, the entity is not created.
    let mut bad = json!({"code": "ypfb", "name": "YPFB", "kind": "public", "contacts": contacts()});
    bad["contacts"][0]["email"] = json!("no-es-un-correo");
    let problem = op
        .problem(Method::POST, "/entities", Some(bad), 422, "validation")
        .await;
    assert_eq!(problem["field"], "contacts[0].email");
    op.problem(Method::GET, "/entities/ypfb", None, 404, "not-found")
        .await;
    // A missing field, a wrong type, an unknown field.
    let problem = op
        .problem(
            Method::POST,
            "/entities",
            Some(json!({"code": "ypfb", "kind": "public", "contacts": []})),
            422,
            "validation",
        )
        .await;
    assert!(problem["detail"].as_str().unwrap().contains("name"));
    let problem = op
        .problem(
            Method::POST,
            "/entities",
            Some(json!({"code": "ypfb", "name": "YPFB", "kind": "public", "contacts": "x"})),
            422,
            "validation",
        )
        .await;
    assert_eq!(problem["field"], "contacts");
    op.problem(
        Method::POST,
        "/entities",
        Some(json!({"code": "ypfb", "name": "YPFB", "kind": "public", "contacts": [], "color": 1})),
        422,
        "validation",
    )
    .await;
    let problem = op
        .problem(
            Method::POST,
            "/entities",
            Some(json!({"code": "Y P F B", "name": "YPFB", "kind": "public", "contacts": []})),
            422,
            "validation",
        )
        .await;
    assert_eq!(problem["field"], "code");
    // Malformed JSON.
    let resp = op
        .client
        .post(gw.admin_url("/entities"))
        .bearer_auth(op.token.as_deref().unwrap())
        .header("content-type", "application/json")
        .body("{\"code\": ")
        .send()
        .await
        .unwrap();
    assert_problem(resp, 400, "bad-request").await;
    // Bad query parameters name the parameter.
    let problem = op
        .problem(Method::GET, "/services?limit=abc", None, 422, "validation")
        .await;
    assert_eq!(problem["field"], "limit");
    let problem = op
        .problem(Method::GET, "/services?limit=5000", None, 422, "validation")
        .await;
    assert_eq!(problem["field"], "limit");
    // Duplicate codes.
    let good = json!({"code": "ypfb", "name": "YPFB", "kind": "public", "contacts": contacts()});
    op.post("/entities", good.clone(), 201).await;
    op.problem(Method::POST, "/entities", Some(good), 409, "conflict")
        .await;
    let list = op.get("/entities?q=ypfb").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // Pagination walks every entity once.
    for i in 0..5 {
        op.post(
            "/entities",
            json!({"code": format!("e{i}"), "name": format!("Entidad {i}"), "kind": "private", "contacts": []}),
            201,
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = op
            .get(&format!("/entities?kind=private&limit=2&cursor={cursor}"))
            .await;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["code"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["e0", "e1", "e2", "e3", "e4"]);
    // Unknown paths and methods are problems too.
    op.problem(Method::GET, "/no-such-thing", None, 404, "not-found")
        .await;
    op.problem(Method::DELETE, "/entities", None, 405, "method-not-allowed")
        .await;
    // A publisher or consumer cannot create principals or entities.
    let out = gw.cli(&[
        "admin",
        "token",
        "issue",
        "--role",
        "publisher",
        "--entity",
        "ypfb",
        "--name",
        "YPFB",
    ]);
    assert!(out.status.success());
    let ypfb = Admin::new(&gw, Some(String::from_utf8_lossy(&out.stdout).trim()));
    ypfb.problem(
        Method::POST,
        "/principals",
        Some(json!({"role": "operator", "name": "yo"})),
        403,
        "forbidden",
    )
    .await;
    ypfb.problem(
        Method::POST,
        "/entities",
        Some(json!({"code": "x", "name": "X", "kind": "public", "contacts": []})),
        403,
        "forbidden",
    )
    .await;
    // A revoked principal is refused at once.
    let principals = op.get("/principals").await;
    let ypfb_id = principals
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["entity"] == "ypfb")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    op.post(&format!("/principals/{ypfb_id}/revoke"), json!({}), 200)
        .await;
    ypfb.problem(Method::GET, "/me", None, 401, "admin-unauthenticated")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let gw = Gateway::start("entities: []\n").await;
    let anon = Admin::new(&gw, None);
    let doc = anon.get("/openapi.json").await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routed: BTreeSet<(String, String)> = chasqui::admin::route_list().into_iter().collect();
    assert_eq!(
        documented.difference(&routed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not routed"
    );
    assert_eq!(
        routed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routed but not documented"
    );
    // Every documented route is served by the running binary, behind
    // authentication (only the document itself is public).
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "1")
            .replace("{token_id}", "1")
            .replace("{code}", "x")
            .replace("{environment}", "pruebas");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        if path == "/openapi.json" {
            assert_eq!(anon.send(method, &concrete, None).await.status(), 200);
            continue;
        }
        anon.problem(method, &concrete, None, 401, "admin-unauthenticated")
            .await;
    }
    // Operation ids are unique and every answer is described.
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap().to_string();
            assert!(ids.insert(id.clone()), "operationId {id} repeats");
            for (status, response) in op["responses"].as_object().unwrap() {
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{id} {status} has no description"
                );
            }
        }
    }
    // Every operation documents its answers and every schema it names exists.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "missing schema {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_are_listed_to_the_entities_they_are_about() {
    use chasqui_catalog::incidents::Incident;
    let gw = Gateway::start(
        "entities:
  - {code: segip, name: SEGIP}
  - {code: sin, name: SIN}
  - {code: aduana, name: Aduana}
",
    )
    .await;
    // Incidents as the CGII plugin records them (no recipients: nothing is
    // delivered anywhere).
    let store = chasqui_catalog::Store::open_sqlite(&gw.dir.path().join("chasqui.db"))
        .await
        .unwrap();
    for (i, (service, consumer)) in [
        ("segip/v1", "sin"),
        ("segip/v1", "aduana"),
        ("sin/v1", "aduana"),
    ]
    .into_iter()
    .enumerate()
    {
        let incident = Incident {
            id: format!("inc_{i:026}"),
            at_ms: 1_700_000_000_000 + i as i64,
            plugin: "cgii".into(),
            kind: "cgii.sqli".into(),
            severity: "high".into(),
            summary: "Inyección SQL bloqueada".into(),
            detail: json!({"pattern": "' OR 1=1"}),
            blocked: true,
            request_id: format!("{i:032}"),
            service: service.into(),
            environment: "produccion".into(),
            consumer_entity: Some(consumer.into()),
            consumer_system: Some("portal".into()),
            client_address: Some("127.0.0.1".into()),
            status: "open".into(),
        };
        store.insert_incident(&incident, &[]).await.unwrap();
    }
    store.close().await;

    let op = Admin::new(&gw, Some(&gw.admin_token()));
    let all = op.get("/incidents").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let page = op.get("/incidents?limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let rest = op.get(&format!("/incidents?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    let token = |role: &str, entity: &str| {
        let out = gw.cli(&[
            "admin", "token", "issue", "--role", role, "--entity", entity, "--name", entity,
        ]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // The consumer SIN sees the one it made and the one against its service.
    let sin = Admin::new(&gw, Some(&token("consumer", "sin")));
    let mine = sin.get("/incidents").await;
    let ids: BTreeSet<String> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["service"].as_str().unwrap().to_string()
                + " "
                + i["consumer_entity"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["segip/v1 sin".to_string(), "sin/v1 aduana".to_string()])
    );
    sin.problem(
        Method::GET,
        "/incidents?entity=aduana",
        None,
        403,
        "forbidden",
    )
    .await;
    // The publisher SEGIP sees those against its service.
    let segip = Admin::new(&gw, Some(&token("publisher", "segip")));
    assert_eq!(
        segip.get("/incidents").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        op.get("/incidents?entity=aduana").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_steps_apply_once() {
    let up = Upstream::start("pruebas", Behavior::Echo).await;
    let gw = Gateway::start(&imported_catalog(&up, &up)).await;
    let op = Admin::new(&gw, Some(&gw.admin_token()));
    op.post(
        "/entities",
        json!({"code": "sin", "name": "SIN", "kind": "public", "contacts": contacts()}),
        201,
    )
    .await;
    let system = op
        .post(
            "/entities/sin/systems",
            json!({"code": "portal", "name": "Portal"}),
            201,
        )
        .await;
    let service_id = op.get("/catalog/services").await["items"][0]["id"].clone();
    let request = op
        .post(
            "/access-requests",
            json!({"system_id": system["id"], "service_id": service_id}),
            201,
        )
        .await;
    let path = format!("/access-requests/{}/transitions", request["id"]);
    // Ten operators press "enable test" at once: one step, one token.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let client = op.client.clone();
        let url = gw.admin_url(&path);
        let token = op.token.clone().unwrap();
        calls.spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"action": "enable_test"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = calls.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
    let tokens = op.get(&format!("/systems/{}/tokens", system["id"])).await;
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    let history = op
        .get(&format!("/access-requests/{}/history", request["id"]))
        .await;
    assert_eq!(history.as_array().unwrap().len(), 2);
}
