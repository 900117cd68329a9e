//! The production environment: validate, claim, forward to PPE, record, replay, release.

mod common;

use chasqui_plugin_ppe::Ppe;
use chasqui_plugin_sdk::host::kv::KvError;
use chasqui_plugin_sdk::host::log::Level;
use chasqui_plugin_sdk::serde_json::{self, json, Value};
use chasqui_plugin_sdk::{BodyAction, BodyChunk, HeadersAction, Plugin, RequestHead, ResponseHead};
use common::{context, debt, Answer, Gateway, Sent};
use std::time::Duration;

/// PPE's answer to an accepted debt.
fn accepted(id: &str) -> Value {
    json!({
        "finalizado": true,
        "mensaje": "Registro creado con éxito",
        "datos": {"codigoTransaccion": id, "urlRedireccion": format!("https://ppe.agetic.gob.bo/transaccion/?id={id}")}
    })
}

#[test]
fn a_valid_debt_is_forwarded_unchanged_and_its_answer_replayed_to_repeats() {
    let mut gw = Gateway::produccion();
    let request = debt("PROD-1", "QR", json!(150.5));
    let original = serde_json::to_vec(&request).unwrap();
    // Sent in chunks: held back, then released whole and byte for byte.
    let head = RequestHead::new("POST", "/ppe/v1/transaccion/deuda")
        .with_header("content-type", "application/json");
    let chunks: Vec<Vec<u8>> = original.chunks(40).map(<[u8]>::to_vec).collect();
    let forwarded = gw.send_head(&head, chunks).forwarded();
    assert_eq!(forwarded, original);
    assert!(
        gw.harness.ledger().is_empty(),
        "nothing is recorded before PPE accepts"
    );
    assert!(gw.fees().is_empty());

    gw.upstream(202, &accepted("PPE-4711"));
    let ledger = gw.harness.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].kind, "ppe.payment");
    assert_eq!(ledger[0].payload["payment_id"], "PPE-4711");
    assert_eq!(ledger[0].payload["environment"], "produccion");
    assert_eq!(ledger[0].payload["amount"], "150.50");
    // The QR fee is charged when PPE accepts.
    assert_eq!(gw.fees(), vec![("ppe.qr".to_string(), 100)]);
    assert_eq!(
        gw.harness
            .counter("upstream_outcomes_total", &[("outcome", "accepted")]),
        1
    );

    // A repeat never reaches PPE: it gets the recorded answer.
    let replay = gw.forward(&request).answer();
    gw.harness.end_request();
    assert_eq!(replay.status, 202);
    assert_eq!(replay.body, accepted("PPE-4711"));
    assert_eq!(replay.header("content-type"), Some("application/json"));
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(gw.harness.ledger().len(), 1);
    assert_eq!(gw.fees().len(), 1);
}

#[test]
fn a_repeat_while_the_first_is_pending_gets_409_with_retry_after() {
    let mut gw = Gateway::produccion();
    let request = debt("PROD-2", "TARJETA", json!("1000.00"));
    gw.forward(&request).forwarded();
    // The first request is still waiting for PPE (on another instance, in reality).
    let repeat = gw.forward(&request).answer();
    let problem = repeat.problem(409, "payment-in-progress");
    assert_eq!(problem["codigoOrden"], "PROD-2");
    assert_eq!(repeat.header("retry-after"), Some("2"));
    let conflict = gw
        .forward(&debt("PROD-2", "TARJETA", json!("1000.01")))
        .answer();
    conflict.problem(409, "idempotency-conflict");
}

#[test]
fn fifty_concurrent_instances_forward_exactly_one_request() {
    let mut gw = Gateway::produccion();
    let config: chasqui_plugin_ppe::config::Config = serde_json::from_value(json!({})).unwrap();
    let mut instances: Vec<Ppe> = (0..50).map(|_| Ppe::new(config.clone()).unwrap()).collect();
    let body = serde_json::to_vec(&debt("RUSH-P", "QR", json!(10))).unwrap();
    let head = RequestHead::new("POST", "/ppe/v1/transaccion/deuda");
    let mut forwarded = Vec::new();
    let mut answers = Vec::new();
    for (i, instance) in instances.iter_mut().enumerate() {
        gw.harness
            .set_context(context("produccion", Some("min-salud"), &format!("p-{i}")));
        let action = gw.harness.run(|_| {
            assert_eq!(instance.on_request_headers(&head), HeadersAction::Continue);
            instance.on_request_body(&BodyChunk::new(body.clone(), true))
        });
        match action {
            BodyAction::Replace(bytes) => forwarded.push((i, bytes)),
            BodyAction::Respond(response) => answers.push(Answer::from_response(response)),
            BodyAction::Continue => panic!("the body is always held or answered"),
        }
    }
    assert_eq!(forwarded.len(), 1, "exactly one request reaches PPE");
    assert_eq!(answers.len(), 49);
    for answer in &answers {
        answer.problem(409, "payment-in-progress");
    }
    // The one forwarded request gets PPE's answer; the others' retries replay it.
    let (winner, _) = forwarded[0];
    gw.harness.set_context(context(
        "produccion",
        Some("min-salud"),
        &format!("p-{winner}"),
    ));
    gw.harness.run(|_| {
        let instance = &mut instances[winner];
        let head = ResponseHead::new(202).with_header("content-type", "application/json");
        assert_eq!(instance.on_response_headers(&head), HeadersAction::Continue);
        let chunk = BodyChunk::new(serde_json::to_vec(&accepted("PPE-RUSH")).unwrap(), true);
        assert_eq!(instance.on_response_body(&chunk), BodyAction::Continue);
        instance.on_request_end();
    });
    for (i, instance) in instances
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != winner)
    {
        gw.harness.set_context(context(
            "produccion",
            Some("min-salud"),
            &format!("retry-{i}"),
        ));
        let action = gw.harness.run(|_| {
            instance.on_request_end();
            instance.on_request_headers(&head);
            instance.on_request_body(&BodyChunk::new(body.clone(), true))
        });
        let BodyAction::Respond(response) = action else {
            panic!("a retry is answered from the record, got {action:?}");
        };
        let answer = Answer::from_response(response);
        assert_eq!(answer.status, 202);
        assert_eq!(answer.body, accepted("PPE-RUSH"));
    }
    assert_eq!(gw.harness.ledger().len(), 1);
    assert_eq!(gw.fees(), vec![("ppe.qr".to_string(), 100)]);
}

#[test]
fn a_server_error_or_no_answer_releases_the_key() {
    let mut gw = Gateway::produccion();
    let request = debt("PROD-3", "QR", json!(10));

    gw.forward(&request).forwarded();
    gw.upstream(503, &json!({"error": "mantenimiento"}));
    assert_eq!(
        gw.harness
            .counter("upstream_outcomes_total", &[("outcome", "failed")]),
        1
    );

    // PPE never answered (connection refused, timeout): the request just ends.
    gw.forward(&request).forwarded();
    gw.harness.end_request();
    assert_eq!(
        gw.harness
            .counter("upstream_outcomes_total", &[("outcome", "failed")]),
        2
    );

    // So the entity may retry; this time PPE accepts.
    gw.forward(&request).forwarded();
    gw.upstream(202, &accepted("PPE-3"));
    assert_eq!(gw.harness.ledger().len(), 1);
    assert_eq!(gw.fees().len(), 1);
    assert!(gw
        .harness
        .logs()
        .iter()
        .any(|l| l.message.contains("PPE answered 503")));
}

#[test]
fn a_refusal_by_ppe_releases_the_key_and_charges_nothing() {
    let mut gw = Gateway::produccion();
    let request = debt("PROD-4", "QR", json!(10));
    gw.forward(&request).forwarded();
    gw.upstream(
        400,
        &json!({"finalizado": false, "mensaje": "cuenta inválida"}),
    );
    // PPE's way of refusing with a 2xx status.
    gw.forward(&request).forwarded();
    gw.upstream(
        200,
        &json!({"finalizado": false, "mensaje": "servicio no habilitado"}),
    );
    assert_eq!(
        gw.harness
            .counter("upstream_outcomes_total", &[("outcome", "refused")]),
        2
    );
    assert!(gw.harness.ledger().is_empty());
    assert!(gw.fees().is_empty());
    // Still free.
    gw.forward(&request).forwarded();
    gw.harness.end_request();
}

#[test]
fn an_answer_too_large_or_cut_short_still_blocks_a_second_payment() {
    let mut gw = Gateway::new("produccion", json!({"max_recorded_response_bytes": 1024}));
    let big = debt("PROD-5", "QR", json!(10));
    gw.forward(&big).forwarded();
    let mut answer = accepted("PPE-5");
    answer["relleno"] = json!("x".repeat(2000));
    gw.upstream(202, &answer);
    let repeat = gw.forward(&big).answer();
    gw.harness.end_request();
    repeat.problem(409, "payment-already-created");
    assert_eq!(gw.harness.ledger().len(), 1);

    // 2xx head, part of the body, then the client went away.
    let cut = debt("PROD-6", "QR", json!(10));
    gw.forward(&cut).forwarded();
    let head = ResponseHead::new(202).with_header("content-type", "application/json");
    gw.harness.response_headers(&head);
    gw.harness.response_body(&BodyChunk::new(
        b"{\"finalizado\":true,\"da".to_vec(),
        false,
    ));
    gw.harness.end_request();
    let repeat = gw.forward(&cut).answer();
    gw.harness.end_request();
    repeat.problem(409, "payment-already-created");
    assert_eq!(gw.harness.ledger().len(), 2);
    assert_eq!(gw.fees().len(), 2);
}

#[test]
fn an_accepted_answer_without_body_is_replayed() {
    let mut gw = Gateway::produccion();
    let request = debt("PROD-7", "QR", json!(10));
    gw.forward(&request).forwarded();
    gw.harness.response_headers(&ResponseHead::new(204));
    gw.harness.end_request();
    let replay = gw.forward(&request).answer();
    gw.harness.end_request();
    assert_eq!(replay.status, 204);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    // PPE gave no id: the ledger says so.
    assert_eq!(gw.harness.ledger()[0].payload["payment_id"], Value::Null);
}

#[test]
fn a_claim_outlived_by_a_slow_ppe_is_not_overwritten() {
    let mut gw = Gateway::new("produccion", json!({"pending_seconds": 10}));
    let request = debt("PROD-8", "QR", json!(10));
    let config: chasqui_plugin_ppe::config::Config =
        serde_json::from_value(json!({"pending_seconds": 10})).unwrap();
    let mut slow = Ppe::new(config.clone()).unwrap();
    let mut fast = Ppe::new(config).unwrap();
    let body = serde_json::to_vec(&request).unwrap();
    let head = RequestHead::new("POST", "/ppe/v1/transaccion/deuda");
    let forward = |gw: &mut Gateway, plugin: &mut Ppe, request_id: &str| {
        gw.harness
            .set_context(context("produccion", Some("min-salud"), request_id));
        gw.harness.run(|_| {
            plugin.on_request_headers(&head);
            plugin.on_request_body(&BodyChunk::new(body.clone(), true))
        })
    };
    assert!(matches!(
        forward(&mut gw, &mut slow, "slow"),
        BodyAction::Replace(_)
    ));
    gw.harness.advance(Duration::from_secs(11));
    // The claim expired: a retry claims the key again (the documented limit).
    assert!(matches!(
        forward(&mut gw, &mut fast, "fast"),
        BodyAction::Replace(_)
    ));
    // The slow request's answer arrives last; it must not replace the fast one's claim.
    let finish = |gw: &mut Gateway, plugin: &mut Ppe, request_id: &str, id: &str| {
        gw.harness
            .set_context(context("produccion", Some("min-salud"), request_id));
        gw.harness.run(|_| {
            plugin.on_response_headers(&ResponseHead::new(202));
            let chunk = BodyChunk::new(serde_json::to_vec(&accepted(id)).unwrap(), true);
            plugin.on_response_body(&chunk);
            plugin.on_request_end();
        });
    };
    finish(&mut gw, &mut fast, "fast", "PPE-FAST");
    finish(&mut gw, &mut slow, "slow", "PPE-SLOW");
    assert_eq!(gw.harness.counter("claims_lost_total", &[]), 1);
    assert!(gw
        .harness
        .logs()
        .iter()
        .any(|l| l.level == Level::Error && l.message.contains("changed hands")));
    let replay = gw.forward(&request).answer();
    gw.harness.end_request();
    assert_eq!(replay.body, accepted("PPE-FAST"));
}

#[test]
fn card_fee_is_charged_on_acceptance_and_cpt_fee_when_ppe_reports_it_paid() {
    let mut gw = Gateway::produccion();
    gw.forward(&debt("PROD-CARD", "TARJETA", json!("150.00")))
        .forwarded();
    gw.upstream(202, &accepted("PPE-CARD"));
    assert_eq!(gw.fees(), vec![("ppe.tarjeta".to_string(), 255)]);

    gw.forward(&debt("PROD-CPT", "CPT", json!("80.00")))
        .forwarded();
    gw.upstream(202, &accepted("PPE-CPT"));
    assert_eq!(gw.fees().len(), 1, "a CPT's fee waits for its channel");

    let status = |state: &str, channel: Value| json!({"finalizado": true, "datos": {"codigoTransaccion": "PPE-CPT", "metodoPago": "CPT", "estado": state, "canalPago": channel}});
    let query = |gw: &mut Gateway, answer: &Value| {
        let sent = gw.send("GET", "/ppe/v1/consulta/estado/PPE-CPT", None);
        assert!(
            matches!(sent, Sent::Forwarded(_)),
            "state queries go to PPE"
        );
        gw.upstream(200, answer);
    };
    query(&mut gw, &status("PENDIENTE", Value::Null));
    assert_eq!(gw.fees().len(), 1);
    query(&mut gw, &status("PAGADO", json!("CAJA")));
    assert_eq!(gw.fees()[1], ("ppe.cpt".to_string(), 320));
    // Later queries see it paid again: no second fee.
    query(&mut gw, &status("PAGADO", json!("CAJA")));
    assert_eq!(gw.fees().len(), 2);
    let settlement = gw.harness.ledger().last().unwrap().clone();
    assert_eq!(settlement.kind, "ppe.settlement");
    assert_eq!(settlement.payload["payment_id"], "PPE-CPT");
    assert_eq!(settlement.payload["channel"], "CAJA");

    // Paid without a channel the plugin can price: counted, not guessed.
    let unknown = json!({"finalizado": true, "datos": {"metodoPago": "CPT", "estado": "PAGADO"}});
    let sent = gw.send("GET", "/ppe/v1/consulta/estado/PPE-OTHER", None);
    assert!(matches!(sent, Sent::Forwarded(_)));
    gw.upstream(200, &unknown);
    assert_eq!(gw.fees().len(), 2);
    assert_eq!(
        gw.harness
            .counter("fees_unresolved_total", &[("method", "cpt")]),
        1
    );
    // A failed query charges nothing.
    gw.send("GET", "/ppe/v1/consulta/estado/PPE-X", None);
    gw.upstream(500, &status("PAGADO", json!("DIGITAL")));
    assert_eq!(gw.fees().len(), 2);
}

#[test]
fn invalid_requests_never_reach_ppe() {
    let mut gw = Gateway::produccion();
    gw.forward(&debt("PROD-BAD", "QR", json!("50000.01")))
        .answer()
        .problem(422, "amount-over-limit");
    gw.harness.end_request();
    gw.forward(&debt("PROD-BAD", "QR", json!("1.001")))
        .answer()
        .problem(400, "invalid-amount");
    gw.harness.end_request();
    gw.entity = None;
    let sent = gw.send(
        "POST",
        "/ppe/v1/transaccion/deuda",
        Some(br#"{"codigoOrden":"X"}"#),
    );
    sent.answer().problem(401, "consumer-unidentified");
    gw.harness.end_request();
    assert!(gw.harness.ledger().is_empty());
}

#[test]
fn other_routes_pass_through_and_the_test_route_does_not_exist() {
    let mut gw = Gateway::produccion();
    for (method, path) in [
        ("GET", "/ppe/v1/metodos"),
        ("GET", "/ppe/v1/transaccion/deuda"),
        ("POST", "/ppe/v1/consulta/estado/x"),
        ("GET", "/ppe/health"),
    ] {
        gw.next_request();
        let action = gw.harness.request_headers(&RequestHead::new(method, path));
        assert_eq!(action, HeadersAction::Continue, "{method} {path}");
        assert_eq!(
            gw.harness.response_headers(&ResponseHead::new(200)),
            HeadersAction::Continue
        );
        assert_eq!(
            gw.harness
                .response_body(&BodyChunk::new(b"{}".to_vec(), true)),
            BodyAction::Continue
        );
        gw.harness.end_request();
    }
    gw.call(
        "POST",
        "/ppe/v1/pruebas/pagar/PPE-1",
        Some(&json!({"canal": "CAJA"})),
    )
    .problem(404, "route-not-found");
    assert!(gw.fees().is_empty());
}

#[test]
fn environments_never_share_single_payment_keys() {
    let mut pruebas = Gateway::pruebas();
    let request = debt("BOTH-1", "QR", json!(10));
    assert_eq!(pruebas.create(&request).status, 202);
    // Same harness (same store), now in produccion: a new claim, forwarded.
    pruebas.environment = "produccion";
    pruebas.forward(&request).forwarded();
    pruebas.harness.end_request();
}

#[test]
fn an_unavailable_store_refuses_rather_than_risk_a_double_charge() {
    let mut gw = Gateway::produccion();
    gw.harness.fail_kv(Some(KvError::QuotaExceeded));
    let refused = gw.forward(&debt("PROD-KV", "QR", json!(10))).answer();
    gw.harness.end_request();
    refused.problem(503, "state-unavailable");
    assert_eq!(refused.header("retry-after"), Some("2"));
}

#[test]
fn unknown_environment_names_are_treated_as_production() {
    let mut gw = Gateway::new("staging", json!({}));
    gw.forward(&debt("ENV-1", "QR", json!(10))).forwarded();
    gw.harness.end_request();
    assert!(gw
        .harness
        .logs()
        .iter()
        .any(|l| l.level == Level::Warn && l.message.contains("staging")));
}
