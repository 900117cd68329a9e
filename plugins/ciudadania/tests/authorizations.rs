//! Authorizations: the entity asks, the citizen accepts or rejects once within the
//! window, and the answer goes to the ledger.

mod common;

use chasqui_plugin_ciudadania::CITIZENS;
use chasqui_plugin_sdk::serde_json::{json, Value};
use chasqui_plugin_sdk::{HeadersAction, ResponseHead};
use common::*;
use std::time::Duration;

const QUESTION: &str = "¿Autoriza al Ministerio de Salud a consultar su historial de vacunas?";

fn ask(gateway: &mut Gateway, sub_index: usize) -> Answer {
    let body = json!({
        "sub": CITIZENS[sub_index].sub,
        "consulta": QUESTION,
        "enlaces": ["https://salud.example.gob.bo/tramites/vacunas"],
    });
    gateway.post_json(&format!("{BASE}/autorizaciones"), None, &body)
}

fn asked_id(gateway: &mut Gateway) -> String {
    let answer = ask(gateway, 0);
    assert_eq!(answer.status, 201, "{:#}", answer.json);
    answer.json["id"].as_str().unwrap().to_string()
}

fn reply(gateway: &mut Gateway, id: &str, verb: &str, token: &str) -> Answer {
    gateway.post(&format!("{BASE}/autorizaciones/{id}/{verb}"), Some(token))
}

#[test]
fn an_authorization_request_is_created_pending() {
    let mut gateway = Gateway::new(config());
    let answer = ask(&mut gateway, 0);
    assert_eq!(answer.status, 201, "{:#}", answer.json);
    let id = answer.json["id"].as_str().unwrap();
    assert!(id.starts_with("aut-"));
    assert_eq!(
        answer.json,
        json!({
            "id": id,
            "estado": "PENDIENTE",
            "sub": CITIZENS[0].sub,
            "consulta": QUESTION,
            "enlaces": ["https://salud.example.gob.bo/tramites/vacunas"],
            "creado": "2026-01-01T00:00:00.000Z",
            "expira": "2026-01-02T00:00:00.000Z",
        })
    );
}

#[test]
fn the_citizen_accepts_and_the_answer_is_recorded() {
    let mut gateway = Gateway::new(config());
    let id = asked_id(&mut gateway);
    gateway.harness.advance(Duration::from_secs(30));
    let answer = reply(&mut gateway, &id, "aceptar", &token());
    assert_eq!(answer.status, 200, "{:#}", answer.json);
    assert_eq!(answer.json["estado"], "ACEPTADA");
    assert_eq!(answer.json["respondido"], "2026-01-01T00:00:30.000Z");
    let ledger = gateway.harness.ledger();
    assert_eq!(ledger.len(), 1);
    let entry = &ledger[0];
    assert_eq!(entry.kind, "ciudadania.authorization.answer");
    assert_eq!(entry.payload["authorization_id"], id.as_str());
    assert_eq!(entry.payload["answer"], "ACEPTADA");
    assert_eq!(
        entry.payload["question_sha256"],
        sha256_hex(QUESTION.as_bytes())
    );
    assert_eq!(
        entry.payload["citizen"],
        json!({ "sub": CITIZENS[0].sub, "ci": "4785123" })
    );
    assert_eq!(entry.payload["entity"], "test-entity");
    assert_eq!(answer.json["recibo"]["posicion"], entry.receipt.position);
    assert_eq!(answer.json["recibo"]["hash"], entry.receipt.hash.as_str());
    let read = gateway.get(&format!("{BASE}/autorizaciones/{id}"), None);
    assert_eq!(read.json["estado"], "ACEPTADA");
    assert_eq!(
        gateway
            .harness
            .counter("authorizations_total", &[("event", "accepted")]),
        1
    );
}

#[test]
fn the_citizen_rejects_once() {
    let mut gateway = Gateway::new(config());
    let id = asked_id(&mut gateway);
    let answer = reply(&mut gateway, &id, "rechazar", &token());
    assert_eq!(answer.json["estado"], "RECHAZADA");
    let detail = reply(&mut gateway, &id, "aceptar", &token()).problem(409, "already-answered");
    assert!(detail.ends_with("RECHAZADA"), "{detail}");
    assert_eq!(gateway.harness.ledger().len(), 1);
    assert_eq!(gateway.harness.ledger()[0].payload["answer"], "RECHAZADA");
}

#[test]
fn only_the_asked_citizen_answers_within_the_window() {
    let mut gateway = Gateway::new(config());
    let id = asked_id(&mut gateway);
    reply(&mut gateway, &id, "aceptar", &token_for(2)).problem(403, "citizen-mismatch");
    gateway
        .post(&format!("{BASE}/autorizaciones/{id}/aceptar"), None)
        .problem(401, "token-missing");
    gateway
        .harness
        .advance(Duration::from_secs(86_400) + Duration::from_millis(1));
    // A token issued now, after the window.
    let late = jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.insert("iat".into(), json!(NOW + 86_401));
            c.insert("exp".into(), json!(NOW + 90_000));
        }),
    );
    let detail = reply(&mut gateway, &id, "aceptar", &late).problem(410, "authorization-expired");
    assert!(detail.contains("2026-01-02T00:00:00.000Z"), "{detail}");
    assert_eq!(
        gateway
            .get(&format!("{BASE}/autorizaciones/{id}"), None)
            .json["estado"],
        "EXPIRADA"
    );
    assert!(gateway.harness.ledger().is_empty());
}

#[test]
fn the_answer_window_is_configurable() {
    let mut gateway = Gateway::new(config_with(
        json!({ "authorizations": { "window_seconds": 120 } }),
    ));
    let answer = ask(&mut gateway, 0);
    assert_eq!(answer.json["expira"], "2026-01-01T00:02:00.000Z");
    let id = answer.json["id"].as_str().unwrap().to_string();
    gateway.harness.advance(Duration::from_secs(121));
    reply(&mut gateway, &id, "aceptar", &token()).problem(410, "authorization-expired");
}

#[test]
fn the_request_body_is_checked() {
    let mut gateway = Gateway::new(config());
    let path = format!("{BASE}/autorizaciones");
    let base =
        |links: Value| json!({ "sub": CITIZENS[0].sub, "consulta": "¿Acepta?", "enlaces": links });
    for body in [
        base(json!(["http://inseguro.example"])),
        base(json!(["https://a.example/x y"])),
        base(json!([
            "https://a.example/1",
            "https://a.example/2",
            "https://a.example/3",
            "https://a.example/4",
            "https://a.example/5",
            "https://a.example/6"
        ])),
        json!({ "sub": CITIZENS[0].sub, "consulta": "" }),
        json!({ "sub": CITIZENS[0].sub, "consulta": "x".repeat(2001) }),
        json!({ "sub": CITIZENS[0].sub }),
    ] {
        gateway
            .post_json(&path, None, &body)
            .problem(400, "invalid-body");
    }
    // Links are optional.
    let answer = gateway.post_json(
        &path,
        None,
        &json!({ "sub": CITIZENS[0].sub, "consulta": "¿Acepta?" }),
    );
    assert_eq!(answer.status, 201);
    assert_eq!(answer.json["enlaces"], json!([]));
}

#[test]
fn unknown_ids_are_not_found() {
    let mut gateway = Gateway::new(config());
    let id = asked_id(&mut gateway);
    let other = format!("aut-{}", "f".repeat(32));
    reply(&mut gateway, &other, "aceptar", &token()).problem(404, "authorization-not-found");
    // An approval id is not an authorization id.
    let approval_like = id.replacen("aut-", "apr-", 1);
    gateway
        .get(&format!("{BASE}/autorizaciones/{approval_like}"), None)
        .problem(404, "authorization-not-found");
}

#[test]
fn production_records_the_answer_and_passes_it_upstream() {
    let mut gateway = Gateway::new(config()).production();
    let body = chasqui_plugin_sdk::serde_json::to_vec(&json!({
        "sub": "prod-subject-1",
        "consulta": QUESTION,
    }))
    .unwrap();
    let changes = modified(gateway.headers(&json_request(
        "POST",
        &format!("{BASE}/autorizaciones"),
        None,
        body.len(),
    )));
    let id = set_value(&changes, "x-ciudadania-autorizacion-id")
        .unwrap()
        .to_string();
    assert_eq!(
        set_value(&changes, "x-ciudadania-autorizacion-expira"),
        Some("2026-01-02T00:00:00.000Z")
    );
    gateway.body(&body, 1 << 16);
    modified(gateway.harness.response_headers(&ResponseHead::new(201)));
    gateway.harness.end_request();

    let head = request(
        "POST",
        &format!("{BASE}/autorizaciones/{id}/rechazar"),
        Some(&production_token()),
    );
    let changes = modified(gateway.headers(&head));
    assert_eq!(
        set_value(&changes, "x-ciudadania-autorizacion-respuesta"),
        Some("RECHAZADA")
    );
    assert_eq!(
        set_value(&changes, "x-ciudadania-autorizacion-id"),
        Some(id.as_str())
    );
    assert_eq!(
        set_value(&changes, "x-ciudadania-recibo-tipo"),
        Some("ciudadania.authorization.answer")
    );
    let ledger = gateway.harness.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].payload["environment"], "produccion");
    let reply = modified(gateway.harness.response_headers(&ResponseHead::new(200)));
    assert_eq!(
        set_value(&reply, "x-ciudadania-autorizacion-respuesta"),
        Some("RECHAZADA")
    );
    gateway.harness.end_request();
    // Production reads pass through to the upstream.
    let read = request("GET", &format!("{BASE}/autorizaciones/{id}"), None);
    assert_eq!(gateway.headers(&read), HeadersAction::Continue);
}
