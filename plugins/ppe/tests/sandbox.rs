//! The test environment: whole payment flows answered by the plugin itself.

mod common;

use chasqui_plugin_ppe::Ppe;
use chasqui_plugin_sdk::host::kv::KvError;
use chasqui_plugin_sdk::host::log::Level;
use chasqui_plugin_sdk::serde_json::{self, json, Value};
use chasqui_plugin_sdk::{BodyAction, BodyChunk, HeadersAction, Plugin, RequestHead, ResponseHead};
use common::{context, debt, id_of, Answer, Gateway};
use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);
/// The harness's clock starts at 2026-01-01T00:00:00Z.
const START: &str = "2026-01-01T00:00:00Z";

fn is_cpt_code(code: &str) -> bool {
    let parts: Vec<&str> = code.split('-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| p.len() == 4 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn qr_payment_flow_create_query_pay_query() {
    let mut gw = Gateway::pruebas();
    let created = gw.create(&debt("TRAM-0001", "QR", json!(150.5)));
    assert_eq!(created.status, 202);
    assert_eq!(created.header("content-type"), Some("application/json"));
    let id = id_of(&created);
    assert_eq!(
        created.header("location"),
        Some(format!("/ppe/v1/consulta/estado/{id}").as_str())
    );
    assert_eq!(created.header("idempotent-replayed"), None);
    let datos = created.datos();
    assert_eq!(datos["estado"], "PENDIENTE");
    assert_eq!(datos["metodoPago"], "QR");
    assert_eq!(datos["codigoOrden"], "TRAM-0001");
    assert_eq!(datos["montoTotal"], "150.50");
    assert_eq!(datos["moneda"], "BOB");
    assert_eq!(datos["comision"], "1.00");
    assert_eq!(datos["ambiente"], "pruebas");
    assert_eq!(datos["fechaCreacion"], START);
    assert_eq!(datos["fechaVencimiento"], "2026-01-02T00:00:00Z");
    assert_eq!(datos["fechaPago"], Value::Null);
    assert_eq!(datos["canalPago"], Value::Null);
    assert_eq!(datos["datosPago"]["numeroDocumentoCliente"], "4589632");
    let qr = &datos["qr"];
    let qr_id = qr["idQr"].as_str().unwrap();
    assert_eq!(qr_id.len(), 20);
    assert_eq!(
        qr["contenido"],
        format!("PPE-PRUEBAS|QR|1|{qr_id}|150.50|BOB|2026-01-02T00:00:00Z")
    );
    assert_eq!(qr["fechaVencimiento"], "2026-01-02T00:00:00Z");
    assert!(datos.get("codigoPago").is_none());
    assert!(datos.get("urlRedireccion").is_none());
    // UUID v8 form.
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "8");

    // The QR fee is charged at creation, once, and attributed.
    assert_eq!(gw.fees(), vec![("ppe.qr".to_string(), 100)]);
    assert_eq!(
        gw.harness.counter(
            "fees_centavos_total",
            &[("method", "qr"), ("channel", "qr")]
        ),
        100
    );
    assert_eq!(
        gw.harness
            .counter("payments_created_total", &[("method", "qr")]),
        1
    );
    let ledger = gw.harness.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].kind, "ppe.payment");
    let entry = &ledger[0].payload;
    assert_eq!(entry["entity"], "min-salud");
    assert_eq!(entry["system"], "sistema-cobros");
    assert_eq!(entry["environment"], "pruebas");
    assert_eq!(entry["debt_code"], "TRAM-0001");
    assert_eq!(entry["payment_id"], id.as_str());
    assert_eq!(entry["method"], "QR");
    assert_eq!(entry["amount"], "150.50");
    assert_eq!(entry["amount_minor"], 15_050);
    assert_eq!(entry["currency"], "BOB");
    assert_eq!(entry["client_address"], "192.0.2.10");

    let pending = gw.status(&id);
    assert_eq!(pending.status, 200);
    assert_eq!(pending.datos()["estado"], "PENDIENTE");
    assert_eq!(pending.body["mensaje"], "Pago pendiente / Payment pending");

    gw.harness.advance(Duration::from_secs(3600));
    let paid = gw.pay(&id, None);
    assert_eq!(paid.status, 200);
    assert_eq!(paid.datos()["estado"], "PAGADO");
    assert_eq!(paid.datos()["canalPago"], "QR");
    assert_eq!(paid.datos()["fechaPago"], "2026-01-01T01:00:00Z");
    assert_eq!(paid.datos()["comision"], "1.00");

    let after = gw.status(&id);
    assert_eq!(after.datos()["estado"], "PAGADO");
    // Still one fee: QR is charged at creation, not again when paid.
    assert_eq!(gw.fees().len(), 1);
    assert_eq!(gw.harness.ledger()[1].kind, "ppe.settlement");
    assert_eq!(
        gw.harness.counter(
            "payments_settled_total",
            &[("method", "qr"), ("channel", "qr")]
        ),
        1
    );

    // Paying twice is refused.
    gw.pay(&id, None).problem(409, "payment-not-pending");
    // Even after the validity: paid stays paid.
    gw.harness.advance(2 * DAY);
    assert_eq!(gw.status(&id).datos()["estado"], "PAGADO");
}

#[test]
fn cpt_fee_depends_on_the_channel_and_is_charged_when_paid() {
    let mut gw = Gateway::pruebas();
    let desk = gw.create(&debt("CPT-DESK", "CPT", json!("80.00")));
    assert_eq!(desk.status, 202);
    let datos = desk.datos();
    assert!(
        is_cpt_code(datos["codigoPago"].as_str().unwrap()),
        "{datos}"
    );
    assert_eq!(datos["comision"], Value::Null);
    // The default CPT validity is 7 days.
    assert_eq!(datos["fechaVencimiento"], "2026-01-08T00:00:00Z");
    assert!(gw.fees().is_empty(), "a CPT fee is unknown until paid");

    let paid = gw.pay(&id_of(&desk), Some(&json!({"canal": "CAJA"})));
    assert_eq!(paid.status, 200);
    assert_eq!(paid.datos()["canalPago"], "CAJA");
    assert_eq!(paid.datos()["comision"], "3.20");
    assert_eq!(gw.fees(), vec![("ppe.cpt".to_string(), 320)]);

    let digital = gw.create(&debt("CPT-APP", "CPT", json!("80.00")));
    assert_ne!(
        digital.datos()["codigoPago"],
        desk.datos()["codigoPago"],
        "every CPT has its own code"
    );
    let paid = gw.pay(&id_of(&digital), Some(&json!({"canal": "DIGITAL"})));
    assert_eq!(paid.datos()["comision"], "1.00");
    assert_eq!(
        gw.fees(),
        vec![("ppe.cpt".to_string(), 320), ("ppe.cpt".to_string(), 100)]
    );
    assert_eq!(
        gw.harness.counter(
            "fees_centavos_total",
            &[("method", "cpt"), ("channel", "caja")]
        ),
        320
    );
    assert_eq!(
        gw.harness.counter(
            "fees_centavos_total",
            &[("method", "cpt"), ("channel", "digital")]
        ),
        100
    );
    let settlement = &gw.harness.ledger()[1];
    assert_eq!(settlement.kind, "ppe.settlement");
    assert_eq!(settlement.payload["channel"], "CAJA");
    assert_eq!(settlement.payload["fee_minor"], 320);
}

#[test]
fn simulated_payments_check_the_channel() {
    let mut gw = Gateway::pruebas();
    let cpt = id_of(&gw.create(&debt("C-1", "CPT", json!(10))));
    let qr = id_of(&gw.create(&debt("Q-1", "QR", json!(10))));
    let missing = gw.pay(&cpt, None);
    assert_eq!(missing.problem(400, "invalid-channel")["field"], "canal");
    gw.pay(&cpt, Some(&json!({"canal": "ATM"})))
        .problem(400, "invalid-channel");
    gw.pay(&cpt, Some(&json!({"canal": "caja"})))
        .problem(400, "invalid-channel");
    gw.pay(&cpt, Some(&json!({"canal": 1})))
        .problem(400, "invalid-channel");
    gw.pay(&qr, Some(&json!({"canal": "DIGITAL"})))
        .problem(400, "invalid-channel");
    gw.pay(&qr, Some(&json!(["x"])))
        .problem(400, "invalid-json");
    // Nothing was paid by the refused attempts.
    assert_eq!(gw.status(&cpt).datos()["estado"], "PENDIENTE");
    assert_eq!(gw.status(&qr).datos()["estado"], "PENDIENTE");
    assert_eq!(gw.pay(&qr, Some(&json!({}))).status, 200);
}

#[test]
fn card_payment_has_a_checkout_url_and_a_percentage_fee() {
    let mut gw = Gateway::pruebas();
    let created = gw.create(&debt("CARD-1", "TARJETA", json!("100.50")));
    assert_eq!(created.status, 202);
    let id = id_of(&created);
    let datos = created.datos();
    assert_eq!(
        datos["urlRedireccion"],
        format!("https://pruebas.ppe.agetic.gob.bo/checkout/{id}")
    );
    assert_eq!(datos["fechaVencimiento"], Value::Null);
    // 1.7% of Bs 100.50 = 1.7085, rounded half up to Bs 1.71.
    assert_eq!(datos["comision"], "1.71");
    assert_eq!(gw.fees(), vec![("ppe.tarjeta".to_string(), 171)]);
    // A card has no validity: payable for as long as it is kept (retention_days, 30).
    gw.harness.advance(29 * DAY);
    let paid = gw.pay(&id, None);
    assert_eq!(paid.datos()["canalPago"], "TARJETA");
    assert_eq!(paid.datos()["estado"], "PAGADO");
    assert_eq!(gw.fees().len(), 1);
    // After the retention the payment and its single-payment key are forgotten.
    gw.harness.advance(DAY);
    gw.status(&id).problem(404, "payment-not-found");
}

#[test]
fn records_are_kept_for_the_validity_plus_the_retention() {
    let mut gw = Gateway::new("pruebas", json!({"retention_days": 2}));
    let request = debt("KEEP-1", "QR", json!(10));
    let mut seven = request.clone();
    seven["vigenciaDias"] = json!(7);
    let id = id_of(&gw.create(&seven));
    gw.harness.advance(9 * DAY - Duration::from_millis(1));
    assert_eq!(gw.status(&id).datos()["estado"], "EXPIRADO");
    assert_eq!(
        gw.create(&seven).header("idempotent-replayed"),
        Some("true"),
        "the key lives as long as the payment"
    );
    gw.harness.advance(Duration::from_millis(1));
    gw.status(&id).problem(404, "payment-not-found");
    // Then the debt code is free again: the guarantee's documented horizon.
    let again = gw.create(&seven);
    assert_eq!(again.header("idempotent-replayed"), None);
    assert_ne!(id_of(&again), id);
}

#[test]
fn the_checkout_url_is_configurable() {
    let mut gw = Gateway::new(
        "pruebas",
        json!({"test_checkout_url": "https://demo.entidad.bo/pagar"}),
    );
    let created = gw.create(&debt("CARD-2", "TARJETA", json!(5)));
    let id = id_of(&created);
    assert_eq!(
        created.datos()["urlRedireccion"],
        format!("https://demo.entidad.bo/pagar/{id}")
    );
}

#[test]
fn qr_expires_after_one_or_seven_days_by_the_host_clock() {
    let mut gw = Gateway::pruebas();
    let one_day = id_of(&gw.create(&debt("Q-1D", "QR", json!(20))));
    let mut seven = debt("Q-7D", "QR", json!(20));
    seven["vigenciaDias"] = json!(7);
    let seven_days = gw.create(&seven);
    assert_eq!(
        seven_days.datos()["fechaVencimiento"],
        "2026-01-08T00:00:00Z"
    );
    let seven_days = id_of(&seven_days);

    gw.harness.advance(DAY - Duration::from_millis(1));
    assert_eq!(gw.status(&one_day).datos()["estado"], "PENDIENTE");
    gw.harness.advance(Duration::from_millis(1));
    let expired = gw.status(&one_day);
    assert_eq!(expired.datos()["estado"], "EXPIRADO");
    assert_eq!(expired.body["mensaje"], "Pago expirado / Payment expired");
    let refused = gw.pay(&one_day, None);
    assert_eq!(
        refused.problem(409, "payment-expired")["estado"],
        "EXPIRADO"
    );
    assert_eq!(gw.status(&one_day).datos()["estado"], "EXPIRADO");

    assert_eq!(gw.status(&seven_days).datos()["estado"], "PENDIENTE");
    gw.harness.advance(6 * DAY);
    assert_eq!(gw.status(&seven_days).datos()["estado"], "EXPIRADO");
    // An expired payment charged no settlement fee and left no settlement in the ledger.
    assert!(gw
        .harness
        .ledger()
        .iter()
        .all(|entry| entry.kind == "ppe.payment"));
}

#[test]
fn cpt_validity_is_configurable() {
    let mut gw = Gateway::new(
        "pruebas",
        json!({"cpt": {"default_validity_days": 2, "max_validity_days": 10}}),
    );
    let default = gw.create(&debt("C-DEF", "CPT", json!(1)));
    assert_eq!(default.datos()["fechaVencimiento"], "2026-01-03T00:00:00Z");
    let mut ten = debt("C-10", "CPT", json!(1));
    ten["vigenciaDias"] = json!(10);
    let ten = gw.create(&ten);
    assert_eq!(ten.datos()["fechaVencimiento"], "2026-01-11T00:00:00Z");
    let mut eleven = debt("C-11", "CPT", json!(1));
    eleven["vigenciaDias"] = json!(11);
    gw.create(&eleven).problem(400, "invalid-validity");

    let id = id_of(&ten);
    gw.harness.advance(10 * DAY);
    gw.pay(&id, Some(&json!({"canal": "DIGITAL"})))
        .problem(409, "payment-expired");
    assert!(gw.fees().is_empty());
}

#[test]
fn a_repeat_returns_the_first_answer_and_charges_nothing_more() {
    let mut gw = Gateway::pruebas();
    let request = debt("TRAM-77", "QR", json!(99.9));
    let first = gw.create(&request);
    gw.harness.advance(Duration::from_secs(5));
    let second = gw.create(&request);
    assert_eq!(second.status, 202);
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("location"), first.header("location"));
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(gw.harness.ledger().len(), 1);
    assert_eq!(gw.fees().len(), 1);
    assert_eq!(
        gw.harness
            .counter("payments_replayed_total", &[("method", "qr")]),
        1
    );
    assert_eq!(
        gw.harness
            .counter("payments_created_total", &[("method", "qr")]),
        1
    );
    // The payment the replay names is the one that exists.
    assert_eq!(gw.status(&id_of(&second)).status, 200);
}

#[test]
fn the_same_payment_spelled_differently_is_a_repeat() {
    let mut gw = Gateway::pruebas();
    let first = gw.create(&debt("SPELL-1", "QR", json!(150.5)));
    // A string amount with two decimals, an explicit default validity, no `moneda`, members
    // in another order, an integer document number as text: the same payment.
    let mut same = json!({
        "vigenciaDias": 1,
        "datosPago": {
            "montoTotal": "150.50",
            "correo": "juana@example.bo",
            "fechaNacimientoCliente": "1990-05-01",
            "numeroDocumentoCliente": 4589632,
            "tipoDocumentoCliente": 1,
            "apellidosCliente": "Mamani Quispe",
            "nombresCliente": "Juana",
            "tipoCambioMoneda": 1
        },
        "descripcion": "Certificado de antecedentes",
        "metodoPago": "QR",
        "codigoOrden": "SPELL-1",
        "notas": null
    });
    let replay = gw.create(&same);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body);
    // One more decimal digit of real difference is a different payment.
    same["datosPago"]["montoTotal"] = json!("150.51");
    gw.create(&same).problem(409, "idempotency-conflict");
}

#[test]
fn reusing_a_debt_code_for_other_content_is_a_conflict() {
    let mut gw = Gateway::pruebas();
    let first = gw.create(&debt("TRAM-9", "QR", json!(100)));
    let other_amount = gw.create(&debt("TRAM-9", "QR", json!(101)));
    assert_eq!(
        other_amount.problem(409, "idempotency-conflict")["codigoOrden"],
        "TRAM-9"
    );
    gw.create(&debt("TRAM-9", "CPT", json!(100)))
        .problem(409, "idempotency-conflict");
    let mut other_products = debt("TRAM-9", "QR", json!(100));
    other_products["productos"] = json!([{"descripcion": "x", "cantidad": 1}]);
    gw.create(&other_products)
        .problem(409, "idempotency-conflict");
    let mut other_validity = debt("TRAM-9", "QR", json!(100));
    other_validity["vigenciaDias"] = json!(7);
    gw.create(&other_validity)
        .problem(409, "idempotency-conflict");
    // Nothing new was created or charged; the first answer still replays.
    assert_eq!(gw.harness.ledger().len(), 1);
    assert_eq!(gw.fees().len(), 1);
    assert_eq!(
        gw.harness
            .counter("rejected_total", &[("reason", "idempotency-conflict")]),
        4
    );
    assert_eq!(
        gw.create(&debt("TRAM-9", "QR", json!(100))).body,
        first.body
    );
}

#[test]
fn the_key_is_per_consumer_entity() {
    let mut gw = Gateway::pruebas();
    let salud = gw.create(&debt("SHARED-1", "QR", json!(10)));
    gw.entity = Some("min-educacion".into());
    let educacion = gw.create(&debt("SHARED-1", "QR", json!(10)));
    assert_eq!(educacion.status, 202);
    assert_eq!(educacion.header("idempotent-replayed"), None);
    assert_ne!(id_of(&salud), id_of(&educacion));
    assert_eq!(gw.fees().len(), 2);
    // And one entity cannot read or pay another's payment: it does not exist for it.
    gw.status(&id_of(&salud)).problem(404, "payment-not-found");
    gw.pay(&id_of(&salud), None)
        .problem(404, "payment-not-found");
    gw.entity = Some("min-salud".into());
    assert_eq!(gw.status(&id_of(&salud)).datos()["estado"], "PENDIENTE");
}

#[test]
fn fifty_concurrent_identical_requests_on_fifty_instances_create_one_payment() {
    let mut gw = Gateway::pruebas();
    let config: chasqui_plugin_ppe::config::Config = serde_json::from_value(json!({})).unwrap();
    let mut instances: Vec<Ppe> = (0..50).map(|_| Ppe::new(config.clone()).unwrap()).collect();
    let body = serde_json::to_vec(&debt("RUSH-1", "CPT", json!("2500.00"))).unwrap();
    let head = RequestHead::new("POST", "/ppe/v1/transaccion/deuda")
        .with_header("content-type", "application/json");
    // Every instance receives its request head and the first half of the body...
    let (first_half, second_half) = body.split_at(body.len() / 2);
    for (i, instance) in instances.iter_mut().enumerate() {
        gw.harness
            .set_context(context("pruebas", Some("min-salud"), &format!("rush-{i}")));
        gw.harness.run(|_| {
            assert_eq!(instance.on_request_headers(&head), HeadersAction::Continue);
            let held = instance.on_request_body(&BodyChunk::new(first_half.to_vec(), false));
            assert_eq!(held, BodyAction::Replace(Vec::new()));
        });
    }
    // ...then all of them receive their last chunk.
    let mut answers = Vec::new();
    for (i, instance) in instances.iter_mut().enumerate() {
        gw.harness
            .set_context(context("pruebas", Some("min-salud"), &format!("rush-{i}")));
        let action = gw.harness.run(|_| {
            let action = instance.on_request_body(&BodyChunk::new(second_half.to_vec(), true));
            instance.on_request_end();
            action
        });
        let BodyAction::Respond(response) = action else {
            panic!("expected an answer, got {action:?}");
        };
        answers.push(Answer::from_response(response));
    }
    assert!(answers.iter().all(|a| a.status == 202));
    assert!(answers.iter().all(|a| a.body == answers[0].body));
    let replays = answers
        .iter()
        .filter(|a| a.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(replays, 49);
    assert_eq!(gw.harness.ledger().len(), 1, "one payment in the ledger");
    let id = id_of(&answers[0]);
    gw.entity = Some("min-salud".into());
    assert_eq!(gw.status(&id).datos()["estado"], "PENDIENTE");
    // It is paid once, and its one fee charged once.
    assert_eq!(gw.pay(&id, Some(&json!({"canal": "DIGITAL"}))).status, 200);
    gw.pay(&id, Some(&json!({"canal": "DIGITAL"})))
        .problem(409, "payment-not-pending");
    assert_eq!(gw.fees(), vec![("ppe.cpt".to_string(), 100)]);
}

#[test]
fn state_queries_of_unknown_or_malformed_ids_are_not_found() {
    let mut gw = Gateway::pruebas();
    gw.status("00000000-0000-8000-8000-000000000000")
        .problem(404, "payment-not-found");
    gw.status("a%2F..").problem(404, "payment-not-found");
    gw.pay("nope", None).problem(404, "payment-not-found");
}

#[test]
fn routes_and_methods() {
    let mut gw = Gateway::pruebas();
    let unknown = gw.call("GET", "/ppe/v1/transaccion/otra", None);
    unknown.problem(404, "route-not-found");
    let wrong = gw.call("GET", "/ppe/v1/transaccion/deuda", None);
    wrong.problem(405, "method-not-allowed");
    assert_eq!(wrong.header("allow"), Some("POST"));
    let wrong = gw.call("POST", "/ppe/v1/consulta/estado/x", Some(&json!({})));
    assert_eq!(wrong.header("allow"), Some("GET"));
    let wrong = gw.call("DELETE", "/ppe/v1/pruebas/pagar/x", None);
    assert_eq!(wrong.header("allow"), Some("POST"));

    // The legacy alias, a query and a trailing slash all reach the same routes.
    gw.prefix = "/fake/ppe/v1";
    let created = gw.call(
        "POST",
        "/fake/ppe/v1/transaccion/deuda/?origen=portal",
        Some(&debt("ALIAS-1", "QR", json!(3))),
    );
    assert_eq!(created.status, 202);
    let id = id_of(&created);
    assert_eq!(
        created.header("location"),
        Some(format!("/fake/ppe/v1/consulta/estado/{id}").as_str())
    );
    assert_eq!(
        gw.call(
            "GET",
            &format!("/fake/ppe/v1/consulta/estado/{id}?x=1"),
            None
        )
        .status,
        200
    );
}

#[test]
fn a_consumer_entity_is_required() {
    let mut gw = Gateway::pruebas();
    gw.entity = None;
    gw.create(&debt("ANON-1", "QR", json!(3)))
        .problem(401, "consumer-unidentified");
    gw.status("x").problem(401, "consumer-unidentified");
    gw.pay("x", None).problem(401, "consumer-unidentified");
    assert!(gw.harness.ledger().is_empty());
}

#[test]
fn the_body_is_held_back_until_complete_and_bounded() {
    let mut gw = Gateway::new("pruebas", json!({"max_body_bytes": 1024}));
    let body = serde_json::to_vec(&debt("CHUNKS-1", "QR", json!(3))).unwrap();
    let chunks: Vec<Vec<u8>> = body.chunks(50).map(<[u8]>::to_vec).collect();
    assert!(chunks.len() > 3);
    let head = RequestHead::new("POST", "/ppe/v1/transaccion/deuda");
    let answer = gw.send_head(&head, chunks).answer();
    gw.harness.end_request();
    assert_eq!(answer.status, 202);

    // Declared too large: refused before any byte.
    let head =
        RequestHead::new("POST", "/ppe/v1/transaccion/deuda").with_header("content-length", "1025");
    gw.send_head(&head, vec![])
        .answer()
        .problem(413, "body-too-large");
    gw.harness.end_request();
    // Undeclared and too large: refused when the buffer would pass the limit.
    let head = RequestHead::new("POST", "/ppe/v1/transaccion/deuda");
    let big = vec![vec![b' '; 600], vec![b' '; 600], b"{}".to_vec()];
    gw.send_head(&head, big)
        .answer()
        .problem(413, "body-too-large");
    gw.harness.end_request();
}

#[test]
fn bodies_must_be_json_and_present() {
    let mut gw = Gateway::pruebas();
    let head = RequestHead::new("POST", "/ppe/v1/transaccion/deuda")
        .with_header("content-type", "text/plain");
    gw.send_head(&head, vec![b"{}".to_vec()])
        .answer()
        .problem(415, "unsupported-media-type");
    gw.harness.end_request();
    let head = RequestHead::new("POST", "/ppe/v1/transaccion/deuda")
        .with_header(
            "content-type",
            "application/merge-patch+json; charset=utf-8",
        )
        .with_header("content-length", "0");
    gw.send_head(&head, vec![])
        .answer()
        .problem(400, "body-required");
    gw.harness.end_request();

    // A POST with no body and no length (HTTP/2): the gateway makes no body call and the
    // test upstream answers; the plugin replaces that answer.
    gw.next_request();
    let head = RequestHead::new("POST", "/ppe/v1/transaccion/deuda");
    assert_eq!(gw.harness.request_headers(&head), HeadersAction::Continue);
    let HeadersAction::Respond(response) = gw.harness.response_headers(&ResponseHead::new(200))
    else {
        panic!("the plugin answers instead of the test upstream");
    };
    Answer::from_response(response).problem(400, "body-required");
    gw.harness.end_request();

    // A simulated QR payment needs no body, declared or not.
    let id = id_of(&gw.create(&debt("NOBODY-1", "QR", json!(3))));
    let head = RequestHead::new("POST", format!("/ppe/v1/pruebas/pagar/{id}"))
        .with_header("content-length", "0");
    let paid = gw.send_head(&head, vec![]).answer();
    gw.harness.end_request();
    assert_eq!(paid.datos()["estado"], "PAGADO");
}

#[test]
fn an_unavailable_store_answers_503_with_retry_after() {
    let mut gw = Gateway::pruebas();
    gw.harness
        .fail_kv(Some(KvError::Unavailable("redis down".into())));
    let refused = gw.create(&debt("KV-1", "QR", json!(3)));
    refused.problem(503, "state-unavailable");
    assert_eq!(refused.header("retry-after"), Some("2"));
    gw.status("x").problem(503, "state-unavailable");
    assert!(gw.harness.ledger().is_empty());
    assert!(gw.fees().is_empty());
    assert!(gw
        .harness
        .logs()
        .iter()
        .any(|l| l.level == Level::Warn && l.message.contains("redis down")));
    gw.harness.fail_kv(None);
    assert_eq!(gw.create(&debt("KV-1", "QR", json!(3))).status, 202);
}

#[test]
fn a_ledger_failure_is_logged_and_counted_but_does_not_undo_the_payment() {
    let mut gw = Gateway::pruebas();
    gw.harness.fail_ledger(Some("disk full"));
    let created = gw.create(&debt("LEDGER-1", "QR", json!(3)));
    assert_eq!(created.status, 202);
    assert_eq!(
        gw.harness
            .counter("ledger_failures_total", &[("kind", "ppe.payment")]),
        1
    );
    assert!(gw
        .harness
        .logs()
        .iter()
        .any(|l| l.level == Level::Error && l.message.contains("disk full")));
}

#[test]
fn per_request_state_is_forgotten() {
    let mut gw = Gateway::pruebas();
    // A body-collecting request that never completes...
    gw.next_request();
    let head = RequestHead::new("POST", "/ppe/v1/transaccion/deuda");
    assert_eq!(gw.harness.request_headers(&head), HeadersAction::Continue);
    assert_eq!(
        gw.harness
            .request_body(&BodyChunk::new(b"{\"codigo".to_vec(), false)),
        BodyAction::Replace(Vec::new())
    );
    gw.harness.end_request();
    // ...leaves nothing behind for the next one on the same instance.
    let created = gw.create(&debt("AFTER-1", "QR", json!(3)));
    assert_eq!(created.status, 202);
}
