//! Document approval in the test environment (answered by the plugin) and in
//! production (checked, recorded and passed to the upstream).

mod common;

use chasqui_plugin_ciudadania::CITIZENS;
use chasqui_plugin_sdk::host::kv::KvError;
use chasqui_plugin_sdk::serde_json::{self, json, Value};
use chasqui_plugin_sdk::{BodyAction, HeadersAction, ResponseHead};
use common::*;
use std::time::Duration;

fn create(gateway: &mut Gateway, documents: Vec<Value>) -> Answer {
    gateway.post_json(
        &format!("{BASE}/aprobaciones"),
        None,
        &approval_body(0, documents),
    )
}

fn created_id(gateway: &mut Gateway) -> String {
    let answer = create(
        gateway,
        vec![
            doc("contrato.pdf", "application/pdf", PDF),
            doc("datos.json", "application/json", JSON_DOC),
        ],
    );
    assert_eq!(answer.status, 201, "{:#}", answer.json);
    answer.json["id"].as_str().unwrap().to_string()
}

fn approve(gateway: &mut Gateway, id: &str, token: &str) -> Answer {
    gateway.post(&format!("{BASE}/aprobaciones/{id}/aprobar"), Some(token))
}

#[test]
fn an_approval_request_is_created_with_hashes_and_a_window() {
    let mut gateway = Gateway::new(config());
    let answer = create(
        &mut gateway,
        vec![
            doc("contrato.pdf", "application/pdf", PDF),
            doc("datos.json", "application/json; charset=utf-8", JSON_DOC),
        ],
    );
    assert_eq!(answer.status, 201, "{:#}", answer.json);
    let id = answer.json["id"].as_str().unwrap();
    assert!(id.starts_with("apr-") && id.len() == 36, "{id}");
    assert_eq!(
        answer.header("location"),
        Some(format!("/ciudadania/v1/aprobaciones/{id}").as_str())
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        answer.json,
        json!({
            "id": id,
            "estado": "PENDIENTE",
            "sub": CITIZENS[0].sub,
            "descripcion": "Contrato de servicios",
            "creado": "2026-01-01T00:00:00.000Z",
            "expira": "2026-01-01T00:10:00.000Z",
            "documentos": [
                { "nombre": "contrato.pdf", "tipo": "application/pdf", "bytes": PDF.len(), "sha256": sha256_hex(PDF) },
                { "nombre": "datos.json", "tipo": "application/json", "bytes": JSON_DOC.len(), "sha256": sha256_hex(JSON_DOC) }
            ]
        })
    );
    // Nothing is evidence yet; the record waits in the store, per environment.
    assert!(gateway.harness.ledger().is_empty());
    assert!(gateway
        .harness
        .kv_get(&format!("pruebas/aprobaciones/{id}"))
        .is_some());
    assert_eq!(
        gateway
            .harness
            .counter("approvals_total", &[("event", "requested")]),
        1
    );
}

#[test]
fn the_citizen_approves_within_the_window_and_gets_a_ledger_receipt() {
    let mut gateway = Gateway::new(config());
    let id = created_id(&mut gateway);
    gateway.harness.advance(Duration::from_secs(120));
    let answer = approve(&mut gateway, &id, &token());
    assert_eq!(answer.status, 200, "{:#}", answer.json);
    assert_eq!(answer.json["estado"], "APROBADO");
    assert_eq!(answer.json["aprobado"], "2026-01-01T00:02:00.000Z");

    let ledger = gateway.harness.ledger();
    assert_eq!(ledger.len(), 1);
    let entry = &ledger[0];
    assert_eq!(entry.kind, "ciudadania.approval");
    assert_eq!(entry.payload["approval_id"], id.as_str());
    assert_eq!(
        entry.payload["citizen"],
        json!({ "sub": CITIZENS[0].sub, "ci": "4785123" })
    );
    assert_eq!(entry.payload["entity"], "test-entity");
    assert_eq!(entry.payload["system"], "test-system");
    assert_eq!(entry.payload["environment"], "pruebas");
    assert_eq!(entry.payload["requested_at"], "2026-01-01T00:00:00.000Z");
    assert_eq!(entry.payload["approved_at"], "2026-01-01T00:02:00.000Z");
    assert_eq!(
        entry.payload["documents"],
        json!([
            { "name": "contrato.pdf", "media_type": "application/pdf", "bytes": PDF.len(), "sha256": sha256_hex(PDF) },
            { "name": "datos.json", "media_type": "application/json", "bytes": JSON_DOC.len(), "sha256": sha256_hex(JSON_DOC) }
        ])
    );
    // The receipt is the ledger's.
    assert_eq!(
        answer.json["recibo"],
        json!({
            "tipo": "ciudadania.approval",
            "posicion": entry.receipt.position,
            "hash": entry.receipt.hash,
            "registrado": "2026-01-01T00:02:00.000Z",
        })
    );
    // A later read shows the approval and its receipt.
    let read = gateway.get(&format!("{BASE}/aprobaciones/{id}"), None);
    assert_eq!(read.status, 200);
    assert_eq!(read.json["estado"], "APROBADO");
    assert_eq!(read.json["recibo"], answer.json["recibo"]);
    assert_eq!(
        gateway
            .harness
            .counter("approvals_total", &[("event", "approved")]),
        1
    );
}

#[test]
fn an_es256_token_approves_too() {
    let mut gateway = Gateway::new(config());
    let id = created_id(&mut gateway);
    let answer = approve(&mut gateway, &id, &jwt(Signer::Ec, &claims()));
    assert_eq!(answer.status, 200, "{:#}", answer.json);
}

#[test]
fn only_the_addressed_citizen_can_approve() {
    let mut gateway = Gateway::new(config());
    let id = created_id(&mut gateway);
    approve(&mut gateway, &id, &token_for(1)).problem(403, "citizen-mismatch");
    assert!(gateway.harness.ledger().is_empty());
    approve(&mut gateway, &id, "not-a-token").problem(401, "token-malformed");
    gateway
        .post(&format!("{BASE}/aprobaciones/{id}/aprobar"), None)
        .problem(401, "token-missing");
    assert_eq!(approve(&mut gateway, &id, &token()).status, 200);
}

#[test]
fn an_approval_is_given_once() {
    let mut gateway = Gateway::new(config());
    let id = created_id(&mut gateway);
    assert_eq!(approve(&mut gateway, &id, &token()).status, 200);
    let detail = approve(&mut gateway, &id, &token()).problem(409, "already-approved");
    assert!(detail.contains(&id), "{detail}");
    assert_eq!(gateway.harness.ledger().len(), 1);
}

#[test]
fn the_window_closes_after_ten_minutes() {
    let mut gateway = Gateway::new(config_with(
        json!({ "token": { "clock_leeway_seconds": 300 } }),
    ));
    let id = created_id(&mut gateway);
    let late = created_id(&mut gateway);
    // The last millisecond of the window still counts.
    gateway.harness.advance(Duration::from_secs(600));
    assert_eq!(approve(&mut gateway, &id, &token()).status, 200);
    gateway.harness.advance(Duration::from_millis(1));
    let detail = approve(&mut gateway, &late, &token()).problem(410, "approval-expired");
    assert!(detail.contains("2026-01-01T00:10:00.000Z"), "{detail}");
    let read = gateway.get(&format!("{BASE}/aprobaciones/{late}"), None);
    assert_eq!(read.json["estado"], "EXPIRADO");
    assert_eq!(gateway.harness.ledger().len(), 1);
    assert_eq!(
        gateway
            .harness
            .counter("approvals_total", &[("event", "expired")]),
        1
    );
}

#[test]
fn the_window_is_configurable() {
    let mut gateway = Gateway::new(config_with(
        json!({ "approvals": { "window_seconds": 60 } }),
    ));
    let id = created_id(&mut gateway);
    gateway.harness.advance(Duration::from_secs(61));
    approve(&mut gateway, &id, &token()).problem(410, "approval-expired");
}

#[test]
fn without_ledger_nothing_is_approved() {
    let mut gateway = Gateway::new(config());
    let id = created_id(&mut gateway);
    gateway.harness.fail_ledger(Some("disk full"));
    let answer = approve(&mut gateway, &id, &token());
    answer.problem(503, "ledger-unavailable");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(
        gateway
            .harness
            .counter("ledger_failures_total", &[("kind", "ciudadania.approval")]),
        1
    );
    let read = gateway.get(&format!("{BASE}/aprobaciones/{id}"), None);
    assert_eq!(read.json["estado"], "PENDIENTE");
    gateway.harness.fail_ledger(None);
    assert_eq!(approve(&mut gateway, &id, &token()).status, 200);
}

#[test]
fn unknown_malformed_and_foreign_ids_are_not_found() {
    let mut gateway = Gateway::new(config());
    let id = created_id(&mut gateway);
    let missing = format!("apr-{}", "0".repeat(32));
    gateway
        .get(&format!("{BASE}/aprobaciones/{missing}"), None)
        .problem(404, "approval-not-found");
    approve(&mut gateway, &missing, &token()).problem(404, "approval-not-found");
    gateway
        .get(&format!("{BASE}/aprobaciones/..%2f..%2fsecret"), None)
        .problem(404, "approval-not-found");
    // Another entity does not see this entity's request.
    gateway.entity = Some("otra-entidad".into());
    gateway
        .get(&format!("{BASE}/aprobaciones/{id}"), None)
        .problem(404, "approval-not-found");
    approve(&mut gateway, &id, &token()).problem(404, "approval-not-found");
}

#[test]
fn test_records_do_not_exist_in_production() {
    let mut gateway = Gateway::new(config());
    let id = created_id(&mut gateway);
    let mut production = gateway.production();
    let action = production.headers(&request(
        "POST",
        &format!("{BASE}/aprobaciones/{id}/aprobar"),
        Some(&production_token()),
    ));
    answered(action).problem(404, "approval-not-found");
}

#[test]
fn documents_are_checked_by_content_not_only_by_type() {
    let mut gateway = Gateway::new(config());
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            doc("a.pdf", "application/pdf", b"%PDF-1.7\nno trailer"),
            415,
            "document-content-mismatch",
        ),
        (
            doc("a.pdf", "application/pdf", JSON_DOC),
            415,
            "document-content-mismatch",
        ),
        (
            doc("a.json", "application/json", PDF),
            415,
            "document-content-mismatch",
        ),
        (
            doc("a.json", "application/json", b"{\"a\":"),
            415,
            "document-content-mismatch",
        ),
        (
            doc("a.doc", "application/msword", PDF),
            415,
            "document-type-not-allowed",
        ),
        (
            doc("a.txt", "text/plain", b"hola"),
            415,
            "document-type-not-allowed",
        ),
        (
            json!({ "nombre": "a.pdf", "tipo": "application/pdf", "contenido": "%%%not base64" }),
            400,
            "invalid-base64",
        ),
        (
            json!({ "nombre": "a.pdf", "tipo": "application/pdf", "contenido": "JVBERi0x\nLjc=" }),
            400,
            "invalid-base64",
        ),
        (
            json!({ "nombre": "a.pdf", "tipo": "application/pdf", "contenido": "" }),
            400,
            "invalid-body",
        ),
        (doc("", "application/pdf", PDF), 400, "invalid-body"),
        (
            doc(&"n".repeat(256), "application/pdf", PDF),
            400,
            "invalid-body",
        ),
        (
            json!({ "nombre": "a.pdf", "contenido": "JVBERi0=" }),
            400,
            "invalid-body",
        ),
    ];
    for (document, status, slug) in cases {
        let detail = create(
            &mut gateway,
            vec![doc("ok.pdf", "application/pdf", PDF), document.clone()],
        )
        .problem(status, slug);
        if status != 400 || slug != "invalid-body" {
            assert!(detail.contains("documentos[1]"), "{document}: {detail}");
        }
    }
    // Unpadded base64 is accepted.
    let unpadded =
        json!({ "nombre": "a.json", "tipo": "application/json", "contenido": "eyJhIjoxfQ" });
    assert_eq!(create(&mut gateway, vec![unpadded]).status, 201);
}

#[test]
fn count_and_size_limits_are_413() {
    let config = config_with(json!({
        "approvals": { "max_documents": 2, "max_document_bytes": 1024 },
        "max_body_bytes": 4096
    }));
    let mut gateway = Gateway::new(config);
    let three = vec![doc("a.pdf", "application/pdf", PDF); 3];
    let detail = create(&mut gateway, three).problem(413, "too-many-documents");
    assert_eq!(detail, "3 documents sent; at most 2 per request");

    let mut big = b"%PDF-1.7\n".to_vec();
    big.resize(1100, b'x');
    big.extend_from_slice(b"\n%%EOF");
    create(&mut gateway, vec![doc("big.pdf", "application/pdf", &big)])
        .problem(413, "document-too-large");
    let mut exact = b"%PDF-1.7\n".to_vec();
    exact.resize(1024 - 6, b'x');
    exact.extend_from_slice(b"\n%%EOF");
    assert_eq!(exact.len(), 1024);
    assert_eq!(
        create(
            &mut gateway,
            vec![doc("exact.pdf", "application/pdf", &exact)]
        )
        .status,
        201
    );

    // The body limit: declared up front...
    let head = json_request("POST", &format!("{BASE}/aprobaciones"), None, 4097);
    answered(gateway.headers(&head)).problem(413, "body-too-large");
    // ...or found while collecting chunks without a declared length.
    let head = request("POST", &format!("{BASE}/aprobaciones"), None)
        .with_header("content-type", "application/json");
    assert_eq!(gateway.headers(&head), HeadersAction::Continue);
    let actions = gateway.body(&vec![b' '; 5000], 1000);
    assert_eq!(actions.len(), 5);
    assert!(actions[..4]
        .iter()
        .all(|a| *a == BodyAction::Replace(Vec::new())));
    let BodyAction::Respond(response) = &actions[4] else {
        panic!("expected 413, got {:?}", actions[4]);
    };
    Answer::of(response.clone()).problem(413, "body-too-large");
    gateway.harness.end_request();
}

#[test]
fn the_body_must_be_json_of_the_right_shape() {
    let mut gateway = Gateway::new(config());
    let path = format!("{BASE}/aprobaciones");
    let text = request("POST", &path, None)
        .with_header("content-type", "text/plain")
        .with_header("content-length", "2");
    let detail = answered(gateway.headers(&text)).problem(415, "unsupported-media-type");
    assert!(detail.contains("text/plain"), "{detail}");
    let empty = json_request("POST", &path, None, 0);
    answered(gateway.headers(&empty)).problem(400, "body-required");
    gateway
        .call(json_request("POST", &path, None, 3), Some(b"abc"))
        .problem(400, "invalid-body");
    let detail = gateway
        .post_json(&path, None, &json!({ "sub": CITIZENS[0].sub }))
        .problem(400, "invalid-body");
    assert!(detail.contains("documentos"), "{detail}");
    gateway
        .post_json(
            &path,
            None,
            &json!({ "sub": CITIZENS[0].sub, "documentos": [] }),
        )
        .problem(400, "invalid-body");
    gateway
        .post_json(
            &path,
            None,
            &json!({ "sub": " ", "documentos": [doc("a.pdf", "application/pdf", PDF)] }),
        )
        .problem(400, "invalid-body");
    gateway
        .post_json(&path, None, &json!({ "sub": CITIZENS[0].sub, "descripcion": "x".repeat(1001), "documentos": [doc("a.pdf", "application/pdf", PDF)] }))
        .problem(400, "invalid-body");
}

#[test]
fn the_test_environment_knows_only_its_synthetic_citizens() {
    let mut gateway = Gateway::new(config());
    let body =
        json!({ "sub": "real-person", "documentos": [doc("a.pdf", "application/pdf", PDF)] });
    let detail = gateway
        .post_json(&format!("{BASE}/aprobaciones"), None, &body)
        .problem(422, "unknown-citizen");
    assert!(detail.contains("real-person"), "{detail}");
}

#[test]
fn a_body_arriving_in_chunks_is_held_back_then_answered() {
    let mut gateway = Gateway::new(config());
    let body = serde_json::to_vec(&approval_body(
        0,
        vec![doc("a.pdf", "application/pdf", PDF)],
    ))
    .unwrap();
    let head = json_request("POST", &format!("{BASE}/aprobaciones"), None, body.len());
    assert_eq!(gateway.headers(&head), HeadersAction::Continue);
    let actions = gateway.body(&body, 40);
    let (last, early) = actions.split_last().unwrap();
    assert!(early.len() > 2);
    assert!(early.iter().all(|a| *a == BodyAction::Replace(Vec::new())));
    let BodyAction::Respond(response) = last else {
        panic!("expected an answer, got {last:?}");
    };
    assert_eq!(response.status, 201);
    gateway.harness.end_request();
}

#[test]
fn a_body_that_never_comes_is_400_in_the_test_environment() {
    let mut gateway = Gateway::new(config());
    // An HTTP/2 request may declare no length; if no body phase runs, the response
    // phase catches it.
    let head = request("POST", &format!("{BASE}/aprobaciones"), None)
        .with_header("content-type", "application/json");
    assert_eq!(gateway.headers(&head), HeadersAction::Continue);
    answered(gateway.harness.response_headers(&ResponseHead::new(200)))
        .problem(400, "body-required");
    gateway.harness.end_request();
    // An empty last chunk is no body either.
    assert_eq!(gateway.headers(&head), HeadersAction::Continue);
    let BodyAction::Respond(response) = gateway.body(b"", 10).remove(0) else {
        panic!("expected an answer");
    };
    Answer::of(response).problem(400, "body-required");
}

#[test]
fn a_store_failure_is_503() {
    let mut gateway = Gateway::new(config());
    gateway
        .harness
        .fail_kv(Some(KvError::Unavailable("down".into())));
    create(&mut gateway, vec![doc("a.pdf", "application/pdf", PDF)])
        .problem(503, "storage-unavailable");
    gateway.harness.fail_kv(None);
    let id = created_id(&mut gateway);
    gateway
        .harness
        .fail_kv(Some(KvError::Unavailable("down".into())));
    approve(&mut gateway, &id, &token()).problem(503, "storage-unavailable");
    assert!(gateway.harness.ledger().is_empty());
}

#[test]
fn the_legacy_fake_alias_and_query_strings_work() {
    let mut gateway = Gateway::new(config());
    let body = approval_body(0, vec![doc("a.pdf", "application/pdf", PDF)]);
    let answer = gateway.post_json(
        "/fake/ciudadania/v1/aprobaciones/?origen=portal",
        None,
        &body,
    );
    assert_eq!(answer.status, 201);
    let id = answer.json["id"].as_str().unwrap();
    assert_eq!(
        answer.header("location"),
        Some(format!("/fake/ciudadania/v1/aprobaciones/{id}").as_str())
    );
    let approved = gateway.post(
        &format!("/fake/ciudadania/v1/aprobaciones/{id}/aprobar?x=1"),
        Some(&token()),
    );
    assert_eq!(approved.status, 200);
}

#[test]
fn production_checks_the_documents_then_passes_them_upstream_whole() {
    let mut gateway = Gateway::new(config()).production();
    let body = serde_json::to_vec(&json!({
        "sub": "prod-subject-1",
        "documentos": [doc("contrato.pdf", "application/pdf", PDF)]
    }))
    .unwrap();
    let head = json_request("POST", &format!("{BASE}/aprobaciones"), None, body.len())
        .with_header("x-ciudadania-aprobacion-id", "apr-forged");
    let changes = modified(gateway.headers(&head));
    let id = set_value(&changes, "x-ciudadania-aprobacion-id")
        .unwrap()
        .to_string();
    assert!(id.starts_with("apr-") && id != "apr-forged");
    assert_eq!(
        set_value(&changes, "x-ciudadania-aprobacion-expira"),
        Some("2026-01-01T00:10:00.000Z")
    );
    assert!(changes
        .remove
        .iter()
        .any(|r| r == "x-ciudadania-aprobacion-id"));
    let actions = gateway.body(&body, 50);
    assert_eq!(actions.last(), Some(&BodyAction::Replace(body.clone())));
    // The upstream's 201 gets the id and window end.
    let reply = modified(gateway.harness.response_headers(&ResponseHead::new(201)));
    assert_eq!(
        set_value(&reply, "x-ciudadania-aprobacion-id"),
        Some(id.as_str())
    );
    assert!(set_value(&reply, "x-ciudadania-aprobacion-expira").is_some());
    gateway.harness.end_request();
    assert!(gateway
        .harness
        .kv_get(&format!("produccion/aprobaciones/{id}"))
        .is_some());

    // The citizen approves in production: recorded, then passed on with the receipt.
    let token = production_token();
    let approve_head = request(
        "POST",
        &format!("{BASE}/aprobaciones/{id}/aprobar"),
        Some(&token),
    );
    let changes = modified(gateway.headers(&approve_head));
    let ledger = gateway.harness.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].payload["environment"], "produccion");
    assert_eq!(
        ledger[0].payload["citizen"],
        json!({ "sub": "prod-subject-1", "ci": "1234567" })
    );
    let position = ledger[0].receipt.position.to_string();
    assert_eq!(
        set_value(&changes, "x-ciudadania-recibo-posicion"),
        Some(position.as_str())
    );
    assert_eq!(
        set_value(&changes, "x-ciudadania-recibo-hash"),
        Some(ledger[0].receipt.hash.as_str())
    );
    assert_eq!(
        set_value(&changes, "x-ciudadania-recibo-tipo"),
        Some("ciudadania.approval")
    );
    assert_eq!(
        set_value(&changes, "x-ciudadania-sub"),
        Some("prod-subject-1")
    );
    assert!(changes.remove.iter().any(|r| r == "x-ciudadania-token"));
    // The client gets the receipt whatever the upstream answers: the evidence exists.
    let reply = modified(gateway.harness.response_headers(&ResponseHead::new(502)));
    assert_eq!(
        set_value(&reply, "x-ciudadania-recibo-posicion"),
        Some(position.as_str())
    );
    gateway.harness.end_request();
    // And the window is enforced in production too.
    let head = request(
        "POST",
        &format!("{BASE}/aprobaciones/{id}/aprobar"),
        Some(&token),
    );
    answered(gateway.headers(&head)).problem(409, "already-approved");
}

#[test]
fn production_refuses_bad_documents_before_the_upstream() {
    let mut gateway = Gateway::new(config()).production();
    let body = serde_json::to_vec(&json!({
        "sub": "prod-subject-1",
        "documentos": [doc("a.exe", "application/pdf", b"MZ\x90\x00")]
    }))
    .unwrap();
    let head = json_request("POST", &format!("{BASE}/aprobaciones"), None, body.len());
    modified(gateway.headers(&head));
    let BodyAction::Respond(response) = gateway.body(&body, 64 << 10).remove(0) else {
        panic!("expected a refusal");
    };
    Answer::of(response).problem(415, "document-content-mismatch");
}

#[test]
fn production_adds_no_id_to_a_failed_upstream_answer() {
    let mut gateway = Gateway::new(config()).production();
    let body = serde_json::to_vec(&json!({
        "sub": "prod-subject-1",
        "documentos": [doc("a.pdf", "application/pdf", PDF)]
    }))
    .unwrap();
    modified(gateway.headers(&json_request(
        "POST",
        &format!("{BASE}/aprobaciones"),
        None,
        body.len(),
    )));
    gateway.body(&body, 64 << 10);
    assert_eq!(
        gateway.harness.response_headers(&ResponseHead::new(500)),
        HeadersAction::Continue
    );
}

#[test]
fn a_request_never_leaks_into_the_next() {
    let mut gateway = Gateway::new(config());
    let path = format!("{BASE}/aprobaciones");
    let head = json_request("POST", &path, None, 100);
    assert_eq!(gateway.headers(&head), HeadersAction::Continue);
    let partial = chasqui_plugin_sdk::BodyChunk::new(b"{\"sub\": \"abandoned".to_vec(), false);
    assert_eq!(
        gateway.harness.request_body(&partial),
        BodyAction::Replace(Vec::new())
    );
    // The client went away; the gateway ends the request.
    gateway.harness.end_request();
    // The next request's body is not appended to the abandoned one.
    let answer = create(&mut gateway, vec![doc("a.pdf", "application/pdf", PDF)]);
    assert_eq!(answer.status, 201, "{:#}", answer.json);
    // Nor does a filtered request see any of it.
    let mut filter = gateway.for_service("segip/v2");
    modified(filter.headers(&request("GET", "/segip/v2/x", Some(&token()))));
    assert_eq!(filter.body(b"payload", 64), vec![BodyAction::Continue]);
}
