//! Electronic notifications: delivery recorded in the ledger with the hash of what was
//! delivered, by the plugin (test environment) or on the upstream's 2xx (production).

mod common;

use chasqui_plugin_ciudadania::CITIZENS;
use chasqui_plugin_sdk::serde_json::{self, json, Value};
use chasqui_plugin_sdk::{BodyAction, HeadersAction, ResponseHead};
use common::*;

fn notification(documents: Vec<Value>) -> Value {
    json!({
        "sub": CITIZENS[1].sub,
        "asunto": "Resolución administrativa 12/2026",
        "mensaje": "Se le notifica la resolución adjunta.\nPlazo de impugnación: 10 días hábiles.",
        "documentos": documents,
    })
}

#[test]
fn the_test_mailbox_delivers_at_once_and_records_the_delivery() {
    let mut gateway = Gateway::new(config());
    let body = notification(vec![doc("resolucion.pdf", "application/pdf", PDF)]);
    let bytes = serde_json::to_vec(&body).unwrap();
    let answer = gateway.call(
        json_request("POST", &format!("{BASE}/notificaciones"), None, bytes.len()),
        Some(&bytes),
    );
    assert_eq!(answer.status, 201, "{:#}", answer.json);
    let id = answer.json["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("not-"));
    assert_eq!(
        answer.header("location"),
        Some(format!("/ciudadania/v1/notificaciones/{id}").as_str())
    );
    let ledger = gateway.harness.ledger();
    assert_eq!(ledger.len(), 1);
    let entry = &ledger[0];
    assert_eq!(entry.kind, "ciudadania.notification.delivered");
    assert_eq!(entry.payload["notification_id"], id.as_str());
    assert_eq!(entry.payload["citizen"], json!({ "sub": CITIZENS[1].sub }));
    assert_eq!(entry.payload["delivered_at"], "2026-01-01T00:00:00.000Z");
    // What was delivered: the exact body, and each document.
    assert_eq!(entry.payload["content_sha256"], sha256_hex(&bytes));
    assert_eq!(entry.payload["documents"][0]["sha256"], sha256_hex(PDF));
    assert_eq!(
        answer.json,
        json!({
            "id": id,
            "estado": "ENTREGADA",
            "sub": CITIZENS[1].sub,
            "asunto": "Resolución administrativa 12/2026",
            "entregada": "2026-01-01T00:00:00.000Z",
            "contenido_sha256": sha256_hex(&bytes),
            "documentos": [{ "nombre": "resolucion.pdf", "tipo": "application/pdf", "bytes": PDF.len(), "sha256": sha256_hex(PDF) }],
            "recibo": {
                "tipo": "ciudadania.notification.delivered",
                "posicion": entry.receipt.position,
                "hash": entry.receipt.hash,
                "registrado": "2026-01-01T00:00:00.000Z"
            }
        })
    );
    let read = gateway.get(&format!("{BASE}/notificaciones/{id}"), None);
    assert_eq!(read.status, 200);
    assert_eq!(read.json, answer.json);
    gateway.entity = Some("otra-entidad".into());
    gateway
        .get(&format!("{BASE}/notificaciones/{id}"), None)
        .problem(404, "notification-not-found");
    assert_eq!(
        gateway
            .harness
            .counter("notifications_total", &[("event", "delivered")]),
        1
    );
}

#[test]
fn documents_are_optional_and_checked_when_present() {
    let mut gateway = Gateway::new(config());
    let path = format!("{BASE}/notificaciones");
    let mut plain = notification(vec![]);
    plain.as_object_mut().unwrap().remove("documentos");
    assert_eq!(gateway.post_json(&path, None, &plain).status, 201);
    gateway
        .post_json(
            &path,
            None,
            &notification(vec![doc("a.docx", "application/vnd.openxmlformats", PDF)]),
        )
        .problem(415, "document-type-not-allowed");
    gateway
        .post_json(
            &path,
            None,
            &notification(vec![doc("a.json", "application/json", b"nope")]),
        )
        .problem(415, "document-content-mismatch");
    let eleven = vec![doc("a.pdf", "application/pdf", PDF); 11];
    gateway
        .post_json(&path, None, &notification(eleven))
        .problem(413, "too-many-documents");
}

#[test]
fn subject_and_message_are_required_and_bounded() {
    let mut gateway = Gateway::new(config());
    let path = format!("{BASE}/notificaciones");
    let with = |field: &str, value: Value| {
        let mut body = notification(vec![]);
        body[field] = value;
        body
    };
    for body in [
        with("asunto", json!("")),
        with("asunto", json!("x".repeat(201))),
        with("mensaje", json!("   ")),
        with("mensaje", json!("x".repeat(20_001))),
        with("asunto", json!(5)),
        json!({ "sub": CITIZENS[1].sub, "mensaje": "sin asunto" }),
    ] {
        gateway
            .post_json(&path, None, &body)
            .problem(400, "invalid-body");
    }
    gateway
        .post_json(&path, None, &with("sub", json!("nadie")))
        .problem(422, "unknown-citizen");
    assert!(gateway.harness.ledger().is_empty());
}

#[test]
fn without_ledger_there_is_no_delivery() {
    let mut gateway = Gateway::new(config());
    gateway.harness.fail_ledger(Some("unavailable"));
    gateway
        .post_json(
            &format!("{BASE}/notificaciones"),
            None,
            &notification(vec![]),
        )
        .problem(503, "ledger-unavailable");
    assert_eq!(
        gateway.harness.counter(
            "ledger_failures_total",
            &[("kind", "ciudadania.notification.delivered")]
        ),
        1
    );
}

fn production_send(gateway: &mut Gateway) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&json!({
        "sub": "prod-subject-1",
        "asunto": "Aviso",
        "mensaje": "Texto",
    }))
    .unwrap();
    let changes = modified(gateway.headers(&json_request(
        "POST",
        &format!("{BASE}/notificaciones"),
        None,
        body.len(),
    )));
    let id = set_value(&changes, "x-ciudadania-notificacion-id")
        .unwrap()
        .to_string();
    assert_eq!(
        gateway.body(&body, 7).pop(),
        Some(BodyAction::Replace(body.clone()))
    );
    (body, id)
}

#[test]
fn production_records_the_delivery_when_the_upstream_accepts_it() {
    let mut gateway = Gateway::new(config()).production();
    let (body, id) = production_send(&mut gateway);
    assert!(gateway.harness.ledger().is_empty(), "nothing delivered yet");
    gateway
        .harness
        .advance(std::time::Duration::from_millis(250));
    let reply = modified(gateway.harness.response_headers(&ResponseHead::new(202)));
    gateway.harness.end_request();
    let ledger = gateway.harness.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].payload["notification_id"], id.as_str());
    assert_eq!(ledger[0].payload["content_sha256"], sha256_hex(&body));
    assert_eq!(
        ledger[0].payload["delivered_at"],
        "2026-01-01T00:00:00.250Z"
    );
    assert_eq!(ledger[0].payload["environment"], "produccion");
    assert_eq!(
        set_value(&reply, "x-ciudadania-notificacion-id"),
        Some(id.as_str())
    );
    assert_eq!(
        set_value(&reply, "x-ciudadania-notificacion-entregada"),
        Some("2026-01-01T00:00:00.250Z")
    );
    assert_eq!(
        set_value(&reply, "x-ciudadania-recibo-hash"),
        Some(ledger[0].receipt.hash.as_str())
    );
}

#[test]
fn production_records_nothing_when_the_upstream_refuses() {
    let mut gateway = Gateway::new(config()).production();
    production_send(&mut gateway);
    assert_eq!(
        gateway.harness.response_headers(&ResponseHead::new(503)),
        HeadersAction::Continue
    );
    assert!(gateway.harness.ledger().is_empty());
}

#[test]
fn production_passes_a_delivery_the_ledger_refused_without_receipt() {
    let mut gateway = Gateway::new(config()).production();
    production_send(&mut gateway);
    gateway.harness.fail_ledger(Some("down"));
    let reply = modified(gateway.harness.response_headers(&ResponseHead::new(201)));
    assert!(set_value(&reply, "x-ciudadania-notificacion-id").is_some());
    assert_eq!(set_value(&reply, "x-ciudadania-recibo-hash"), None);
    assert_eq!(
        gateway.harness.counter(
            "ledger_failures_total",
            &[("kind", "ciudadania.notification.delivered")]
        ),
        1
    );
}

#[test]
fn production_reads_pass_through() {
    let mut gateway = Gateway::new(config()).production();
    let head = request("GET", &format!("{BASE}/notificaciones/not-123"), None);
    assert_eq!(gateway.headers(&head), HeadersAction::Continue);
}
