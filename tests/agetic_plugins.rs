//! End-to-end tests of the four AGETIC plugins through the real gateway on
//! its embedded default: the compiled-in policy loads CGII, Ciudadanía
//! Digital, PPE and SEFE as Wasm components, and the demo catalog publishes
//! their services. The test environment is answered by the plugins.

mod support;

use futures_util::future::join_all;
use serde_json::{json, Value};
use std::time::Duration;
use support::agetic::{debt, invoice};
use support::*;

/// Builds the four components and starts the gateway on the embedded default.
async fn embedded() -> Gateway {
    let mut dir = None;
    for plugin in [
        "plugins/cgii",
        "plugins/ciudadania",
        "plugins/ppe",
        "plugins/sefe",
    ] {
        let built = component(plugin);
        dir = built.parent().map(|p| p.to_path_buf());
    }
    Gateway::start_embedded(&dir.expect("a components directory")).await
}

/// Issues a token for the demo consumer `sin/portal-tramites`.
fn issue_token(gw: &Gateway, env: &str) -> String {
    let out = gw.cli(&[
        "token",
        "issue",
        "--consumer",
        "sin/portal-tramites",
        "--env",
        env,
        "--label",
        &format!("e2e-{env}"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rfind(|l| l.trim().starts_with("chq_"))
        .expect("a token line")
        .trim()
        .to_string()
}

async fn post_json(gw: &Gateway, path: &str, token: &str, body: &Value) -> reqwest::Response {
    gw.client
        .post(gw.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("post")
}

fn is_cpt(code: &str) -> bool {
    let parts: Vec<&str> = code.split('-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| p.len() == 4 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_runs_a_test_payment_a_test_invoice_and_blocks_an_attack() {
    let gw = embedded().await;
    let token = issue_token(&gw, "pruebas");

    // PPE in pruebas: a CPT payment answered by the plugin, no bank involved.
    let resp = post_json(
        &gw,
        "/ppe/v1/transaccion/deuda",
        &token,
        &debt("WALK-1", "CPT", json!("80.00")),
    )
    .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let body: Value = resp.json().await.unwrap();
    let datos = &body["datos"];
    assert!(is_cpt(datos["codigoPago"].as_str().unwrap_or("")), "{body}");
    let id = datos["codigoTransaccion"]
        .as_str()
        .expect("payment id")
        .to_string();
    let state = gw
        .get(&format!("/ppe/v1/consulta/estado/{id}"), &token)
        .await;
    assert_eq!(state.status(), 200);
    let state: Value = state.json().await.unwrap();
    assert_eq!(state["datos"]["estado"], "PENDIENTE", "{state}");
    // Over the QR limit (Bs 50,000): a problem, not a payment.
    let over = post_json(
        &gw,
        "/ppe/v1/transaccion/deuda",
        &token,
        &debt("WALK-2", "QR", json!("50000.01")),
    )
    .await;
    assert_eq!(over.status(), 422);
    assert_eq!(
        over.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );

    // SEFE in pruebas: a valid invoice gets an authorisation code; an
    // inconsistent one is refused naming the field.
    let resp = post_json(&gw, "/sefe/v1/facturas", &token, &invoice(1)).await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert!(body.to_string().contains("VALIDADA"), "{body}");
    let mut wrong = invoice(2);
    wrong["detalle"][0]["subTotal"] = json!(92.00);
    let resp = post_json(&gw, "/sefe/v1/facturas", &token, &wrong).await;
    assert!(
        matches!(resp.status().as_u16(), 400 | 422),
        "{}",
        resp.status()
    );
    let problem: Value = resp.json().await.unwrap();
    assert!(
        problem.to_string().contains("/detalle/0/subTotal"),
        "{problem}"
    );

    // CGII: an SQL injection in the path is blocked and becomes an incident.
    let attack = gw
        .get("/segip/v2/personas/1%27%20OR%20%271%27%3D%271", &token)
        .await;
    assert_eq!(attack.status(), 403);
    let problem: Value = attack.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://chasqui.agetic.gob.bo/problems/cgii/attack-detected"
    );
    // An ordinary call passes every plugin.
    let ok = gw.get("/segip/v2/personas/4589632", &token).await;
    assert_ne!(ok.status(), 403);

    let admin = gw.admin_token();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list: Value = gw
            .client
            .get(gw.admin_url("/incidents"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if list.to_string().contains("cgii.sqli") {
            assert!(list.to_string().contains("segip/v2"), "{list}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no incident listed: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_repeats_of_one_payment_create_one_payment() {
    let gw = embedded().await;
    let token = issue_token(&gw, "pruebas");
    let request = debt("REPEAT-50", "QR", json!("150.50"));
    let answers = join_all((0..50).map(|_| {
        let (gw, token, request) = (&gw, token.clone(), request.clone());
        async move {
            let resp = post_json(gw, "/ppe/v1/transaccion/deuda", &token, &request).await;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            (status, body)
        }
    }))
    .await;
    let mut ids = std::collections::BTreeSet::new();
    for (status, body) in &answers {
        assert!((200..300).contains(status), "{status} {body}");
        ids.insert(
            body["datos"]["codigoTransaccion"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    println!(
        "50 concurrent repeats answered with {} payment id(s)",
        ids.len()
    );
    assert_eq!(ids.len(), 1, "one payment for fifty repeats: {ids:?}");
    // The same debt with another amount is a conflict, not a second payment.
    let mut changed = request.clone();
    changed["datosPago"]["montoTotal"] = json!("151.00");
    let resp = post_json(&gw, "/ppe/v1/transaccion/deuda", &token, &changed).await;
    assert_eq!(resp.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_survives_a_crash_and_its_repeat_creates_no_second_one() {
    let mut gw = embedded().await;
    let token = issue_token(&gw, "pruebas");
    let request = debt("CRASH-1", "QR", json!("99.90"));
    let first = post_json(&gw, "/ppe/v1/transaccion/deuda", &token, &request).await;
    assert!(first.status().is_success(), "{}", first.status());
    let first: Value = first.json().await.unwrap();
    let id = first["datos"]["codigoTransaccion"]
        .as_str()
        .unwrap()
        .to_string();

    // SIGKILL right after the answer: the claim was committed before it.
    gw.kill();
    gw.spawn().await;

    let repeat = post_json(&gw, "/ppe/v1/transaccion/deuda", &token, &request).await;
    assert!(repeat.status().is_success(), "{}", repeat.status());
    assert_eq!(
        repeat
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let repeat: Value = repeat.json().await.unwrap();
    assert_eq!(
        repeat["datos"]["codigoTransaccion"],
        id.as_str(),
        "{repeat}"
    );
    // The payment itself is still there.
    let state = gw
        .get(&format!("/ppe/v1/consulta/estado/{id}"), &token)
        .await;
    assert_eq!(state.status(), 200);
}
