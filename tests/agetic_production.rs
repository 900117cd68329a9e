//! End-to-end tests of the AGETIC plugins in `produccion`, against real
//! upstream stand-ins, and of Ciudadanía Digital with real signed tokens.
//!
//! Each test imports its own catalog (`ciudadania/v1`, `ppe/v1`, `sefe/v1`
//! and the plain service `segip/v2`, each with a `pruebas` and a
//! `produccion` upstream that is an echo server of the test) and runs the
//! real `chasqui` binary with a policy binding the four components built
//! from this repository, with the capabilities of `policies/default.yaml`.
//! Ciudadanía Digital's tokens are signed here with the fixture keys of
//! `plugins/ciudadania/tests/fixtures`.

mod support;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::agetic::invoice;
use support::*;

/// The services of the catalog: (entity, service code, version, category).
const SERVICES: [(&str, &str, u32, &str); 4] = [
    ("ciudadania", "identidad", 1, "Identificación"),
    ("ppe", "pagos", 1, "Impuestos"),
    ("sefe", "facturas", 1, "Impuestos"),
    ("segip", "personas", 2, "Identificación"),
];
const ENVIRONMENTS: [&str; 2] = ["pruebas", "produccion"];

/// Ciudadanía Digital's issuers as the policy configures them.
const PRUEBAS_ISS: &str = "https://pruebas.ciudadania.example";
const PRODUCCION_ISS: &str = "https://proveedor.ciudadania.example";
const AUDIENCE: &str = "entidad-demo";
/// The first synthetic citizen of `pruebas` (plugins/ciudadania/README.md).
const CITIZEN_1: &str = "5f0c2a8e-1b7d-4c3e-9a61-000000000001";
const CITIZEN_2: &str = "5f0c2a8e-1b7d-4c3e-9a61-000000000002";

// ---------------------------------------------------------------------------
// The stand: upstream stand-ins, catalog and policy.
// ---------------------------------------------------------------------------

/// The upstream stand-ins of one test, by `entity/environment`.
struct Stand {
    upstreams: HashMap<String, Upstream>,
    /// Ports of the upstreams left down, by `entity/environment`.
    down: HashMap<String, ClosedPort>,
    catalog: String,
}

impl Stand {
    /// Starts an echo server for every service and environment but those
    /// named in `down` (`entity/environment`), which get a free port with
    /// nothing listening.
    async fn start(down: &[&str]) -> Stand {
        let mut upstreams = HashMap::new();
        let mut down_ports = HashMap::new();
        let mut urls = HashMap::new();
        for (entity, ..) in SERVICES {
            for env in ENVIRONMENTS {
                let key = format!("{entity}/{env}");
                if down.contains(&key.as_str()) {
                    let port = ClosedPort::reserve();
                    urls.insert(key.clone(), format!("http://127.0.0.1:{}", port.port()));
                    down_ports.insert(key, port);
                } else {
                    let upstream =
                        Upstream::start(&format!("{entity}-{env}"), Behavior::Echo).await;
                    urls.insert(key.clone(), upstream.url());
                    upstreams.insert(key, upstream);
                }
            }
        }
        let mut catalog = String::from(
            "entities:
  - {code: ciudadania, name: \"Ciudadanía Digital (AGETIC)\"}
  - {code: ppe, name: \"Pasarela de Pagos del Estado (AGETIC)\"}
  - {code: sefe, name: \"Servicio de Emisión de Facturas Electrónicas\"}
  - {code: segip, name: \"Servicio General de Identificación Personal\"}
  - {code: gamlp, name: \"Gobierno Autónomo Municipal de La Paz\"}
services:
",
        );
        for (entity, code, version, category) in SERVICES {
            catalog.push_str(&format!(
                "  - entity: {entity}
    code: {code}
    version: {version}
    name: \"{entity} {code}\"
    category: \"{category}\"
    environments:
      pruebas:
        upstreams: [\"{}\"]
      produccion:
        upstreams: [\"{}\"]
",
                urls[&format!("{entity}/pruebas")],
                urls[&format!("{entity}/produccion")],
            ));
        }
        catalog.push_str(
            "consumers:
  - entity: gamlp
    code: portal
    name: \"Portal de trámites\"
    grants:
      - {service: ciudadania/v1, environments: [pruebas, produccion]}
      - {service: ppe/v1, environments: [pruebas, produccion]}
      - {service: sefe/v1, environments: [pruebas, produccion]}
      - {service: segip/v2, environments: [pruebas, produccion]}
    tokens:
      - {environment: pruebas, label: test}
      - {environment: produccion, label: prod}
",
        );
        Stand {
            upstreams,
            down: down_ports,
            catalog,
        }
    }

    /// The stand-in of `entity` in `env`.
    fn up(&self, entity: &str, env: &str) -> &Upstream {
        &self.upstreams[&format!("{entity}/{env}")]
    }

    /// Requests seen by all the stand-ins together.
    fn total_seen(&self) -> usize {
        self.upstreams.values().map(Upstream::count).sum()
    }
}

/// How a test's policy differs from the default bindings.
struct PolicyOptions {
    /// CGII's configuration.
    cgii: Value,
    /// The services Ciudadanía Digital is bound to.
    ciudadania_services: Vec<&'static str>,
    /// Store-and-forward on for `sefe/v1`.
    store_and_forward: bool,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            cgii: json!({"mode": "block", "sensitivity": "medium"}),
            ciudadania_services: vec!["ciudadania/v1"],
            store_and_forward: false,
        }
    }
}

fn jwk(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture JWK")
}

/// Ciudadanía Digital's configuration: both issuers trust the fixture keys
/// `test-rsa-1` and `test-ec-1` (never `p256-untrusted`).
fn ciudadania_config() -> Value {
    let keys = json!([
        jwk(include_str!(
            "../plugins/ciudadania/tests/fixtures/rsa-2048.jwk.json"
        )),
        jwk(include_str!(
            "../plugins/ciudadania/tests/fixtures/p256.jwk.json"
        )),
    ]);
    json!({
        "issuers": {
            "pruebas": {"issuer": PRUEBAS_ISS, "audiences": [AUDIENCE], "jwks": {"keys": keys}},
            "produccion": {"issuer": PRODUCCION_ISS, "audiences": [AUDIENCE], "jwks": {"keys": keys}}
        }
    })
}

/// TEST_POLICY's limits and upstream settings (with room for the bodies of
/// these tests) and the four AGETIC plugins, bound as in
/// `policies/default.yaml`.
fn policy(options: &PolicyOptions) -> String {
    let base = TEST_POLICY.replace(
        "max_request_body_bytes: 1024\n",
        "max_request_body_bytes: 1048576\n",
    );
    assert_ne!(base, TEST_POLICY, "TEST_POLICY's body limit moved");
    let path = |crate_dir: &str| component(crate_dir).display().to_string();
    let plugins = json!([
        {
            "name": "cgii",
            "component": path("plugins/cgii"),
            "config": options.cgii,
            "capabilities": ["log", "kv", "metrics", "context", "incident"],
            "isolation": "pooled",
            "failure": "fail-closed",
            "services": []
        },
        {
            "name": "ciudadania",
            "component": path("plugins/ciudadania"),
            "config": ciudadania_config(),
            "capabilities": ["log", "kv", "clock", "crypto", "metrics", "ledger", "context"],
            "isolation": "pooled",
            "failure": "fail-closed",
            "services": options.ciudadania_services
        },
        {
            "name": "ppe",
            "component": path("plugins/ppe"),
            "config": {},
            "capabilities": ["log", "kv", "clock", "crypto", "metrics", "ledger", "context", "metering"],
            "isolation": "pooled",
            "failure": "fail-closed",
            "services": ["ppe/v1"]
        },
        {
            "name": "sefe",
            "component": path("plugins/sefe"),
            "config": {},
            "capabilities": ["log", "kv", "clock", "crypto", "metrics", "ledger", "context"],
            "isolation": "pooled",
            "failure": "fail-closed",
            "services": ["sefe/v1"]
        }
    ]);
    // JSON is YAML: the plugin list goes in flow style.
    let mut text = format!("{base}plugins: {plugins}\n");
    if options.store_and_forward {
        text.push_str(
            "store_and_forward: {services: [sefe/v1], methods: [POST], retry_initial_ms: 50, retry_max_ms: 200}\n",
        );
    }
    text
}

async fn start(stand: &Stand, options: &PolicyOptions) -> Gateway {
    Gateway::start_with_policy(&stand.catalog, &policy(options)).await
}

// ---------------------------------------------------------------------------
// Requests and bodies.
// ---------------------------------------------------------------------------

async fn post_raw(gw: &Gateway, path: &str, token: &str, body: &str) -> reqwest::Response {
    gw.client
        .post(gw.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("post")
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// A PPE debt as production clients send it (with their bank account).
fn debt(code: &str, method: &str, amount: Value) -> Value {
    let mut debt = support::agetic::debt(code, method, amount);
    debt["cuentaBancaria"] = json!("10000004678");
    debt
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Invoice `number` with line 0's subtotal off by one boliviano.
fn inconsistent_invoice(number: u64) -> Value {
    let mut wrong = invoice(number);
    wrong["detalle"][0]["subTotal"] = json!(92.00);
    wrong
}

/// Asserts SEFE's validation problem naming line 0's subtotal.
async fn assert_subtotal_refused(resp: reqwest::Response) {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let problem: Value = resp.json().await.expect("problem json");
    assert_eq!(status, 422, "{problem}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(
        problem["type"],
        "https://chasqui.agetic.gob.bo/problems/sefe/factura-invalida"
    );
    assert_eq!(problem["pointer"], "/detalle/0/subTotal", "{problem}");
    assert_eq!(problem["errors"][0]["code"], "arithmetic", "{problem}");
}

/// A small but complete one-page PDF (header, objects, cross-reference
/// table with exact offsets, trailer).
fn small_pdf() -> Vec<u8> {
    let text = "BT /F1 12 Tf 20 50 Td (Contrato de servicios) Tj ET";
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 100] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_string(),
        format!("<< /Length {} >>\nstream\n{text}\nendstream", text.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (n, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", n + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// Ciudadanía Digital tokens, signed with the fixture keys.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    /// RS256, `test-rsa-1` (trusted).
    Rsa,
    /// ES256, `test-ec-1` (trusted).
    Ec,
    /// ES256, `p256-untrusted`.
    Untrusted,
}

impl Key {
    fn sign(self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Key::Rsa => {
                let key = RsaKeyPair::from_pkcs8(include_bytes!(
                    "../plugins/ciudadania/tests/fixtures/rsa-2048.pk8"
                ))
                .expect("fixture RSA key");
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, input, &mut signature)
                    .expect("RSA signature");
                signature
            }
            Key::Ec | Key::Untrusted => {
                let pkcs8: &[u8] = if self == Key::Ec {
                    include_bytes!("../plugins/ciudadania/tests/fixtures/p256.pk8")
                } else {
                    include_bytes!("../plugins/ciudadania/tests/fixtures/p256-untrusted.pk8")
                };
                let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                    .expect("fixture EC key");
                key.sign(&rng, input)
                    .expect("EC signature")
                    .as_ref()
                    .to_vec()
            }
        }
    }
}

/// A compact JWS: `header.claims.signature`, signed by `key`.
fn jwt(key: Key, header: &Value, claims: &Value) -> String {
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn rs256() -> Value {
    json!({"alg": "RS256", "typ": "JWT", "kid": "test-rsa-1"})
}

fn es256(kid: &str) -> Value {
    json!({"alg": "ES256", "typ": "JWT", "kid": kid})
}

/// Valid claims of `sub` from `iss`, issued now for ten minutes.
fn claims(iss: &str, sub: &str) -> Value {
    let now = now_secs();
    json!({
        "iss": iss,
        "aud": AUDIENCE,
        "sub": sub,
        "scope": "openid profile email",
        "iat": now,
        "exp": now + 600,
    })
}

fn claims_with(iss: &str, sub: &str, f: impl FnOnce(&mut Value)) -> Value {
    let mut c = claims(iss, sub);
    f(&mut c);
    c
}

/// GET with the gateway token and a citizen token.
async fn get_as_citizen(
    gw: &Gateway,
    path: &str,
    token: &str,
    citizen: Option<&str>,
) -> reqwest::Response {
    let mut request = gw.client.get(gw.url(path)).bearer_auth(token);
    if let Some(jwt) = citizen {
        request = request.header("x-ciudadania-token", jwt);
    }
    request.send().await.expect("get")
}

/// Asserts one of Ciudadanía Digital's refusals: status, slug, and the
/// `WWW-Authenticate` challenge's error and description.
async fn assert_citizen_refused(
    resp: reqwest::Response,
    status: u16,
    slug: &str,
    error: &str,
    description: &str,
) {
    assert_eq!(resp.status().as_u16(), status, "{slug}");
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{slug}: no WWW-Authenticate"));
    assert!(
        challenge.starts_with("Bearer realm=\"ciudadania\""),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("error=\"{error}\"")),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("error_description=\"{description}\"")),
        "{challenge}"
    );
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(
        problem["type"],
        format!("https://chasqui.agetic.gob.bo/problems/ciudadania/{slug}"),
        "{problem}"
    );
    assert_eq!(problem["status"], status, "{problem}");
}

// ---------------------------------------------------------------------------
// Admin API and store.
// ---------------------------------------------------------------------------

/// Polls the admin API (bounded) until an incident of `kind` on `service`
/// is listed, and returns it.
async fn wait_for_incident(gw: &Gateway, kind: &str, service: &str) -> Value {
    let admin = gw.admin_token();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = gw
            .client
            .get(gw.admin_url("/incidents"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("list incidents");
        assert_eq!(resp.status(), 200);
        let list: Value = resp.json().await.unwrap();
        if let Some(found) = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["kind"] == kind && i["service"] == service)
        {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} incident on {service}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets an entity's incident webhook in the gateway's store (the catalog
/// import has no field for it, and the admin API takes only `https://`).
async fn set_incident_webhook(gw: &Gateway, entity: &str, url: &str) {
    let db = format!("sqlite://{}", gw.dir.path().join("chasqui.db").display());
    let pool = sqlx::SqlitePool::connect(&db)
        .await
        .expect("open the store");
    let changed = sqlx::query("UPDATE entities SET incident_webhook = ? WHERE code = ?")
        .bind(url)
        .bind(entity)
        .execute(&pool)
        .await
        .expect("set the webhook")
        .rows_affected();
    pool.close().await;
    assert_eq!(changed, 1, "entity {entity}");
}

// ---------------------------------------------------------------------------
// 1. PPE in produccion.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ppe_in_production_forwards_a_debt_once_and_replays_its_repeats() {
    let stand = Stand::start(&[]).await;
    let gw = start(&stand, &PolicyOptions::default()).await;
    let ppe = stand.up("ppe", "produccion");
    let token = gw.token("prod");

    // A valid debt reaches PPE once, byte for byte (the odd spacing and the
    // member PPE knows and the plugin does not are kept), without the
    // client's token.
    let body = serde_json::to_string_pretty(&debt("PROD-2026-0001", "QR", json!("150.50")))
        .unwrap()
        .replace("\"QR\"", "\"QR\"   ");
    let resp = post_raw(&gw, "/ppe/v1/transaccion/deuda", token, &body).await;
    assert_eq!(resp.status(), 200);
    let first_headers = resp.headers().clone();
    let first = resp.text().await.unwrap();
    let answer: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(answer["upstream"], "ppe-produccion", "{answer}");
    assert_eq!(ppe.count(), 1);
    let seen = &ppe.seen()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/transaccion/deuda");
    assert_eq!(seen.body, body.as_bytes(), "the body reaches PPE unchanged");
    assert!(seen.header("authorization").is_none(), "{seen:?}");
    assert_eq!(seen.header("x-chasqui-environment"), Some("produccion"));
    assert_eq!(seen.header("x-chasqui-consumer-entity"), Some("gamlp"));
    assert_eq!(seen.header("x-chasqui-service"), Some("ppe/v1"));
    assert_eq!(stand.up("ppe", "pruebas").count(), 0);
    assert!(first_headers.get("idempotent-replayed").is_none());

    // The same request again: PPE's recorded answer, not a second debt.
    let resp = post_raw(&gw, "/ppe/v1/transaccion/deuda", token, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(
        resp.text().await.unwrap(),
        first,
        "the first answer, replayed"
    );
    // The same content written differently (members reordered, the amount
    // as a number) is the same debt.
    let same = debt("PROD-2026-0001", "QR", json!(150.5));
    let resp = post_raw(&gw, "/ppe/v1/transaccion/deuda", token, &same.to_string()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), first);
    assert_eq!(ppe.count(), 1, "repeats never reach PPE");

    // The same debt code with another amount is a conflict, not a debt.
    let other = debt("PROD-2026-0001", "QR", json!("151.00")).to_string();
    let resp = post_raw(&gw, "/ppe/v1/transaccion/deuda", token, &other).await;
    let (status, problem) = json_of(resp).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        problem["type"],
        "https://chasqui.agetic.gob.bo/problems/ppe/idempotency-conflict"
    );

    // Over the QR limit (Bs 50,000.00): the 422 problem, never PPE.
    let over = debt("PROD-2026-0002", "QR", json!("50000.01")).to_string();
    let resp = post_raw(&gw, "/ppe/v1/transaccion/deuda", token, &over).await;
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let (status, problem) = json_of(resp).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["type"],
        "https://chasqui.agetic.gob.bo/problems/ppe/amount-over-limit"
    );
    assert_eq!(problem["metodoPago"], "QR", "{problem}");
    assert_eq!(ppe.count(), 1, "an over-limit debt never reaches PPE");
    assert_eq!(stand.total_seen(), 1);
}

// ---------------------------------------------------------------------------
// 2. SEFE in produccion, and its contingency.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sefe_in_production_forwards_valid_invoices_and_refuses_inconsistent_ones() {
    let stand = Stand::start(&[]).await;
    let gw = start(&stand, &PolicyOptions::default()).await;
    let sefe = stand.up("sefe", "produccion");
    let token = gw.token("prod");

    let valid = invoice(501).to_string();
    let resp = post_raw(&gw, "/sefe/v1/facturas", token, &valid).await;
    let (status, answer) = json_of(resp).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["upstream"], "sefe-produccion", "{answer}");
    assert_eq!(sefe.count(), 1);
    let seen = &sefe.seen()[0];
    assert_eq!(seen.path, "/facturas");
    assert_eq!(
        seen.body,
        valid.as_bytes(),
        "the invoice reaches SEFE unchanged"
    );
    assert!(seen.header("authorization").is_none());

    let resp = post_raw(
        &gw,
        "/sefe/v1/facturas",
        token,
        &inconsistent_invoice(502).to_string(),
    )
    .await;
    assert_subtotal_refused(resp).await;
    assert_eq!(
        sefe.count(),
        1,
        "an inconsistent invoice never reaches SEFE"
    );
    assert_eq!(stand.total_seen(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sefe_contingency_defers_valid_invoices_until_the_upstream_returns() {
    let mut stand = Stand::start(&["sefe/produccion"]).await;
    let options = PolicyOptions {
        store_and_forward: true,
        ..PolicyOptions::default()
    };
    let mut gw = start(&stand, &options).await;
    let token = gw.token("prod").to_string();
    let token = token.as_str();

    // SEFE is down: valid invoices are kept and acknowledged, in order.
    let mut kept = Vec::new();
    for number in [601, 604, 605] {
        let valid = invoice(number).to_string();
        let resp = post_raw(&gw, "/sefe/v1/facturas", token, &valid).await;
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let (status, accepted) = json_of(resp).await;
        assert_eq!(status, 202, "{accepted}\n{}", gw.log());
        let id = accepted["id"].as_str().expect("tracking id").to_string();
        assert_eq!(location, Some(format!("/_chasqui/deferred/{id}")));
        assert_eq!(accepted["state"], "queued");
        kept.push((id, valid));
    }

    // Validation runs before the contingency decision: an inconsistent
    // invoice is refused, not kept.
    let resp = post_raw(
        &gw,
        "/sefe/v1/facturas",
        token,
        &inconsistent_invoice(602).to_string(),
    )
    .await;
    assert_subtotal_refused(resp).await;

    // The gateway crashes and restarts while the invoices wait.
    gw.kill();
    gw.spawn().await;

    // SEFE comes back where it was; every invoice is delivered.
    let port = stand
        .down
        .get_mut("sefe/produccion")
        .expect("SEFE was down")
        .open();
    let sefe = Upstream::start_at("sefe-produccion", Behavior::Echo, port).await;
    let began = Instant::now();
    for (id, _) in &kept {
        let state = loop {
            let resp = gw.get(&format!("/_chasqui/deferred/{id}"), token).await;
            assert_eq!(resp.status(), 200);
            let doc: Value = resp.json().await.unwrap();
            if doc["state"] == "delivered" {
                break doc;
            }
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "{id} not delivered: {doc}\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(state["upstream_status"], 200, "{state}");
    }
    println!(
        "3 deferred invoices delivered {} ms after SEFE came back (across a SIGKILL)",
        began.elapsed().as_millis()
    );
    // Exactly once each, in the order they were accepted.
    let seen = sefe.seen();
    assert_eq!(seen.len(), kept.len(), "each delivered exactly once");
    for (request, (id, valid)) in seen.iter().zip(&kept) {
        assert_eq!(request.path, "/facturas");
        assert_eq!(request.body, valid.as_bytes());
        assert_eq!(request.header("idempotency-key"), Some(id.as_str()));
        assert!(request.header("authorization").is_none());
    }

    // With the queue empty, the next invoice goes straight through, and the
    // deferred one was not sent again.
    let next = invoice(603).to_string();
    let resp = post_raw(&gw, "/sefe/v1/facturas", token, &next).await;
    assert_eq!(resp.status(), 200);
    let seen = sefe.seen();
    assert_eq!(seen.len(), kept.len() + 1, "{seen:?}");
    assert_eq!(seen[kept.len()].body, next.as_bytes());
    assert_eq!(stand.total_seen(), 0, "no other stand-in was reached");
}

// ---------------------------------------------------------------------------
// 3. Ciudadanía Digital with real signed tokens.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciudadania_verifies_real_rs256_and_es256_tokens_through_the_gateway() {
    let stand = Stand::start(&[]).await;
    let gw = start(&stand, &PolicyOptions::default()).await;
    let token = gw.token("test");
    let userinfo = "/ciudadania/v1/userinfo";

    // A valid token, RS256 and ES256: the synthetic citizen.
    for (key, header) in [(Key::Rsa, rs256()), (Key::Ec, es256("test-ec-1"))] {
        let citizen = jwt(key, &header, &claims(PRUEBAS_ISS, CITIZEN_1));
        let resp = get_as_citizen(&gw, userinfo, token, Some(&citizen)).await;
        let (status, body) = json_of(resp).await;
        assert_eq!(status, 200, "{header}: {body}");
        assert_eq!(body["sub"], CITIZEN_1);
        assert_eq!(
            body["profile"]["documento_identidad"]["numero_documento"],
            "4785123"
        );
        assert_eq!(body["profile"]["nombre"]["nombres"], "MARÍA ELENA");
        assert_eq!(body["email"], "maria.quispe@example.com", "{body}");
    }

    // No token.
    let resp = get_as_citizen(&gw, userinfo, token, None).await;
    assert_citizen_refused(
        resp,
        401,
        "token-missing",
        "invalid_request",
        "token missing",
    )
    .await;
    // Expired an hour ago (beyond the 60 s leeway).
    let expired = jwt(
        Key::Rsa,
        &rs256(),
        &claims_with(PRUEBAS_ISS, CITIZEN_1, |c| {
            c["iat"] = json!(now_secs() - 7200);
            c["exp"] = json!(now_secs() - 3600);
        }),
    );
    let resp = get_as_citizen(&gw, userinfo, token, Some(&expired)).await;
    assert_citizen_refused(resp, 401, "token-expired", "invalid_token", "token expired").await;
    // Signed by the untrusted key under its own kid: no such key.
    let claims_1 = claims(PRUEBAS_ISS, CITIZEN_1);
    let stranger = jwt(Key::Untrusted, &es256("test-ec-untrusted"), &claims_1);
    let resp = get_as_citizen(&gw, userinfo, token, Some(&stranger)).await;
    assert_citizen_refused(
        resp,
        401,
        "token-key-unknown",
        "invalid_token",
        "unknown signing key",
    )
    .await;
    // Signed by the untrusted key claiming the trusted key's kid: forged.
    let forged = jwt(Key::Untrusted, &es256("test-ec-1"), &claims_1);
    let resp = get_as_citizen(&gw, userinfo, token, Some(&forged)).await;
    assert_citizen_refused(
        resp,
        401,
        "token-signature",
        "invalid_token",
        "invalid signature",
    )
    .await;
    // Issued for another audience.
    let elsewhere = jwt(
        Key::Ec,
        &es256("test-ec-1"),
        &claims_with(PRUEBAS_ISS, CITIZEN_1, |c| {
            c["aud"] = json!("otra-entidad");
        }),
    );
    let resp = get_as_citizen(&gw, userinfo, token, Some(&elsewhere)).await;
    assert_citizen_refused(
        resp,
        401,
        "token-audience",
        "invalid_token",
        "audience not accepted",
    )
    .await;
    // Without the `profile` scope.
    let narrow = jwt(
        Key::Rsa,
        &rs256(),
        &claims_with(PRUEBAS_ISS, CITIZEN_1, |c| {
            c["scope"] = json!("openid");
        }),
    );
    let resp = get_as_citizen(&gw, userinfo, token, Some(&narrow)).await;
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("scope=\"openid profile\""),
        "{challenge}"
    );
    assert_citizen_refused(
        resp,
        403,
        "insufficient-scope",
        "insufficient_scope",
        "insufficient scope",
    )
    .await;
    // A production token is not a test token.
    let production = jwt(Key::Rsa, &rs256(), &claims(PRODUCCION_ISS, CITIZEN_1));
    let resp = get_as_citizen(&gw, userinfo, token, Some(&production)).await;
    assert_citizen_refused(
        resp,
        401,
        "token-issuer",
        "invalid_token",
        "untrusted issuer",
    )
    .await;

    // In pruebas the plugin answered everything itself.
    assert_eq!(stand.total_seen(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciudadania_fronts_a_plain_service_in_production_with_the_verified_identity_only() {
    let stand = Stand::start(&[]).await;
    let options = PolicyOptions {
        ciudadania_services: vec!["ciudadania/v1", "segip/v2"],
        ..PolicyOptions::default()
    };
    let gw = start(&stand, &options).await;
    let token = gw.token("prod");
    let segip = stand.up("segip", "produccion");
    let sub = "prod-subject-1";

    // A valid production token, and identity fields forged by the client.
    let citizen = jwt(
        Key::Ec,
        &es256("test-ec-1"),
        &claims_with(PRODUCCION_ISS, sub, |c| {
            c["profile"] = json!({
                "documento_identidad": {"numero_documento": "1234567"},
                "nombre": {"nombres": "JOSÉ", "primer_apellido": "PÉREZ"}
            });
        }),
    );
    let resp = gw
        .client
        .get(gw.url("/segip/v2/personas/1234567"))
        .bearer_auth(token)
        .header("x-ciudadania-token", &citizen)
        .header("x-ciudadania-sub", "someone-else")
        .header("x-ciudadania-ci", "9999999")
        .header("x-ciudadania-rol", "admin")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(segip.count(), 1);
    let seen = &segip.seen()[0];
    assert_eq!(seen.path, "/personas/1234567");
    assert_eq!(
        seen.headers.get("x-ciudadania-sub"),
        Some(&vec![sub.to_string()]),
        "only the verified subject: {seen:?}"
    );
    assert_eq!(seen.header("x-ciudadania-ci"), Some("1234567"));
    assert!(
        seen.header("x-ciudadania-rol").is_none(),
        "every client-sent x-ciudadania-* is removed"
    );
    assert_eq!(
        seen.header("x-ciudadania-scopes"),
        Some("openid profile email")
    );
    assert!(
        seen.header("x-ciudadania-token").is_none(),
        "the raw citizen token never reaches the upstream"
    );
    assert!(seen.header("authorization").is_none());

    // Without a citizen token, forged fields get nowhere.
    let resp = gw
        .client
        .get(gw.url("/segip/v2/personas/1234567"))
        .bearer_auth(token)
        .header("x-ciudadania-sub", sub)
        .send()
        .await
        .unwrap();
    assert_citizen_refused(
        resp,
        401,
        "token-missing",
        "invalid_request",
        "token missing",
    )
    .await;
    // A test-issuer token is not accepted in production.
    let test_token = jwt(Key::Rsa, &rs256(), &claims(PRUEBAS_ISS, CITIZEN_1));
    let resp = get_as_citizen(&gw, "/segip/v2/personas/1", token, Some(&test_token)).await;
    assert_citizen_refused(
        resp,
        401,
        "token-issuer",
        "invalid_token",
        "untrusted issuer",
    )
    .await;
    assert_eq!(
        segip.count(),
        1,
        "refused requests never reach the upstream"
    );
    assert_eq!(stand.total_seen(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_approval_gets_a_ledger_receipt_the_cli_verifies() {
    let stand = Stand::start(&[]).await;
    let mut gw = start(&stand, &PolicyOptions::default()).await;
    let token = gw.token("test");
    let pdf = small_pdf();

    // The entity asks citizen 1 to approve a PDF.
    let request = json!({
        "sub": CITIZEN_1,
        "descripcion": "Contrato de servicios",
        "documentos": [
            {"nombre": "contrato.pdf", "tipo": "application/pdf", "contenido": STANDARD.encode(&pdf)}
        ]
    });
    let resp = post_raw(
        &gw,
        "/ciudadania/v1/aprobaciones",
        token,
        &request.to_string(),
    )
    .await;
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, created) = json_of(resp).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("approval id").to_string();
    assert!(id.starts_with("apr-") && id.len() == 36, "{id}");
    assert_eq!(location, Some(format!("/ciudadania/v1/aprobaciones/{id}")));
    assert_eq!(created["estado"], "PENDIENTE");
    assert_eq!(created["documentos"][0]["bytes"], pdf.len());
    assert_eq!(created["documentos"][0]["sha256"], sha256_hex(&pdf));

    let approve = format!("/ciudadania/v1/aprobaciones/{id}/aprobar");
    let approve_as = |citizen: String| {
        gw.client
            .post(gw.url(&approve))
            .bearer_auth(token)
            .header("x-ciudadania-token", citizen)
            .send()
    };
    // Another citizen cannot approve it.
    let other = jwt(Key::Rsa, &rs256(), &claims(PRUEBAS_ISS, CITIZEN_2));
    let (status, problem) = json_of(approve_as(other).await.unwrap()).await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(
        problem["type"],
        "https://chasqui.agetic.gob.bo/problems/ciudadania/citizen-mismatch"
    );
    // The citizen approves with their own (ES256) token: a receipt.
    let own = jwt(
        Key::Ec,
        &es256("test-ec-1"),
        &claims(PRUEBAS_ISS, CITIZEN_1),
    );
    let (status, approved) = json_of(approve_as(own.clone()).await.unwrap()).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["estado"], "APROBADO");
    let receipt = &approved["recibo"];
    assert_eq!(receipt["tipo"], "ciudadania.approval", "{approved}");
    let position = receipt["posicion"].as_u64().expect("position");
    let hash = receipt["hash"].as_str().expect("hash").to_string();
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hash}"
    );
    // Approving twice is a conflict.
    let (status, _) = json_of(approve_as(own).await.unwrap()).await;
    assert_eq!(status, 409);
    let (status, state) = json_of(
        gw.get(&format!("/ciudadania/v1/aprobaciones/{id}"), token)
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(state["estado"], "APROBADO");

    // The receipt, checked offline by the CLI against the ledger in the
    // store and a signed checkpoint.
    let check = |gw: &Gateway| {
        let out = gw.cli(&[
            "audit",
            "receipt",
            "--position",
            &position.to_string(),
            "--hash",
            &hash,
        ]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    // First the flush: the entry is in the store and hashes to the receipt
    // (exit 2 until a signed checkpoint covers it).
    let began = Instant::now();
    loop {
        let (code, out) = check(&gw);
        if code == Some(0) || out.contains(&format!("receipt matches entry {position}")) {
            break;
        }
        assert_eq!(code, Some(1), "{out}");
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "entry {position} not flushed within 5 s: {out}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "entry {position} in the store {} ms after the approval",
        began.elapsed().as_millis()
    );
    // Then a signed checkpoint over it: a quiet ledger signs its last
    // entries within the checkpoint period (10 s), and a graceful stop signs
    // at once. Stop the gateway and check offline.
    gw.terminate();
    let status = gw.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let (code, out) = check(&gw);
    assert_eq!(code, Some(0), "{out}\n{}", gw.log());
    println!(
        "receipt {position} verified {} ms after the approval: {out}",
        began.elapsed().as_millis()
    );
    assert!(
        out.contains(&format!("entry {position} is covered by checkpoint")),
        "{out}"
    );
    // A receipt with another hash is refused.
    let mut wrong = hash.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let out = gw.cli(&[
        "audit",
        "receipt",
        "--position",
        &position.to_string(),
        "--hash",
        std::str::from_utf8(&wrong).unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // In pruebas the plugin answered every route itself.
    assert_eq!(stand.total_seen(), 0);
}

// ---------------------------------------------------------------------------
// 4. CGII.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgii_in_report_mode_lets_an_attack_through_and_notifies_the_publisher() {
    let stand = Stand::start(&[]).await;
    let options = PolicyOptions {
        cgii: json!({"mode": "report", "sensitivity": "medium"}),
        ..PolicyOptions::default()
    };
    let gw = start(&stand, &options).await;
    let webhook = Upstream::start("segip-csirt", Behavior::Echo).await;
    set_incident_webhook(&gw, "segip", &format!("{}/incidentes", webhook.url())).await;
    let segip = stand.up("segip", "produccion");

    let attack = "/segip/v2/personas?ci=1%27%20UNION%20SELECT%20password%20FROM%20usuarios--";
    let resp = gw.get(attack, gw.token("prod")).await;
    assert_eq!(resp.status(), 200, "report mode lets the attack through");
    assert_eq!(segip.count(), 1);
    assert!(
        segip.seen()[0].path.contains("UNION"),
        "{:?}",
        segip.seen()[0].path
    );

    let incident = wait_for_incident(&gw, "cgii.sqli", "segip/v2").await;
    assert_eq!(incident["blocked"], false, "{incident}");
    assert_eq!(incident["environment"], "produccion");
    assert_eq!(incident["consumer_entity"], "gamlp");
    assert_eq!(incident["detail"]["field"], "ci", "{incident}");
    let id = incident["id"].as_str().unwrap();

    // The publisher's security webhook gets the incident.
    webhook.wait_for(1).await;
    let note = &webhook.seen()[0];
    assert_eq!(note.method, "POST");
    assert_eq!(note.path, "/incidentes");
    assert_eq!(note.header("x-chasqui-incident"), Some(id));
    let sent: Value = serde_json::from_slice(&note.body).expect("incident JSON");
    assert_eq!(sent["incident"]["id"], id, "{sent}");
    assert_eq!(sent["incident"]["kind"], "cgii.sqli");
    assert_eq!(sent["incident"]["service"], "segip/v2");
    assert_eq!(sent["notified_entity"], "segip");
    assert_eq!(sent["party"], "publisher");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgii_address_blocklist_blocks_every_call() {
    let stand = Stand::start(&[]).await;
    let options = PolicyOptions {
        cgii: json!({"mode": "report", "blocklist": {"addresses": ["127.0.0.0/8"]}}),
        ..PolicyOptions::default()
    };
    let gw = start(&stand, &options).await;
    let (test, prod) = (gw.token("test"), gw.token("prod"));

    let calls: Vec<(&str, &str, &str, Option<String>)> = vec![
        ("GET", "/segip/v2/personas/4589632", prod, None),
        ("GET", "/segip/v2/personas/4589632", test, None),
        ("GET", "/ciudadania/v1/userinfo", test, None),
        (
            "POST",
            "/ppe/v1/transaccion/deuda",
            prod,
            Some(debt("BLOCKED-1", "CPT", json!("80.00")).to_string()),
        ),
        (
            "POST",
            "/sefe/v1/facturas",
            prod,
            Some(invoice(701).to_string()),
        ),
    ];
    for (method, path, token, body) in calls {
        let mut request = match method {
            "GET" => gw.client.get(gw.url(path)),
            _ => gw.client.post(gw.url(path)),
        }
        .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let resp = request.send().await.unwrap();
        let problem = assert_problem(resp, 403, "cgii/address-blocked").await;
        assert!(
            problem["incident"].is_string(),
            "{method} {path}: {problem}"
        );
    }
    assert_eq!(stand.total_seen(), 0, "a blocked address reaches nothing");
    let incident = wait_for_incident(&gw, "cgii.blocklist.address", "segip/v2").await;
    assert_eq!(incident["detail"]["range"], "127.0.0.0/8", "{incident}");
}
