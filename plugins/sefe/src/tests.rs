//! The plugin driven phase by phase on the SDK's fake host, as the gateway drives it.

use super::*;
use chasqui_plugin_sdk::host::context::Context;
use chasqui_plugin_sdk::host::kv::KvError;
use chasqui_plugin_sdk::testing::{Harness, HarnessError};
use serde_json::{json, Value};

const EMIT: &str = "/sefe/v1/facturas";

/// A valid invoice at the harness's clock (2025-12-31T20:00 in La Paz): total 104.00.
fn invoice() -> Value {
    json!({
        "nitEmisor": "1020703023",
        "razonSocialEmisor": "AGENCIA DE GOBIERNO ELECTRONICO",
        "numeroFactura": 125,
        "codigoSucursal": 0,
        "codigoPuntoVenta": 1,
        "fechaEmision": "2025-12-31T19:55:00.000",
        "nombreRazonSocial": "Juana Pérez",
        "codigoTipoDocumentoIdentidad": 1,
        "numeroDocumento": "4752918",
        "codigoMoneda": 1,
        "descuentoAdicional": 5.00,
        "montoTotal": 104.00,
        "montoTotalSujetoIva": 104.00,
        "montoIva": 13.52,
        "detalle": [
            {
                "actividadEconomica": "620100", "codigoProductoSin": "83141",
                "codigoProducto": "SRV-001", "descripcion": "Soporte técnico",
                "cantidad": 2, "unidadMedida": 58, "precioUnitario": 45.50, "subTotal": 91.00
            },
            {
                "actividadEconomica": "620100", "codigoProductoSin": "83141",
                "codigoProducto": "SRV-002", "descripcion": "Capacitación",
                "cantidad": 1.5, "unidadMedida": 58, "precioUnitario": 12.33,
                "montoDescuento": 0.50, "subTotal": 18.00
            }
        ]
    })
}

fn numbered(number: i64) -> Value {
    let mut invoice = invoice();
    invoice["numeroFactura"] = json!(number);
    invoice
}

fn context(environment: &str, entity: Option<&str>, request_id: &str) -> Context {
    Context {
        consumer_entity: entity.map(str::to_string),
        consumer_system: entity.map(|_| "sistema-facturacion".to_string()),
        service: "sefe/v1".into(),
        environment: environment.into(),
        request_id: request_id.into(),
        trace_id: None,
    }
}

fn plugin(config: Value, environment: &str) -> Harness<Sefe> {
    let harness = Harness::<Sefe>::new(config).unwrap();
    harness.set_context(context(environment, Some("ministerio-a"), "req-1"));
    harness
}

fn pruebas() -> Harness<Sefe> {
    plugin(json!({}), "pruebas")
}

fn produccion() -> Harness<Sefe> {
    plugin(json!({}), "produccion")
}

fn post(path: &str) -> RequestHead {
    RequestHead::new("POST", path).with_header("content-type", "application/json")
}

fn annul_path(cuf: &str) -> String {
    format!("/sefe/v1/facturas/{cuf}/anulacion")
}

/// Sends a request with a whole body in one chunk and returns the plugin's answer, which
/// the test environment always gives.
fn answer(harness: &mut Harness<Sefe>, head: &RequestHead, body: &[u8]) -> Response {
    let response = match harness.request_headers(head) {
        HeadersAction::Respond(response) => response,
        _ => match harness.request_body(&BodyChunk::new(body, true)) {
            BodyAction::Respond(response) => response,
            other => panic!("expected an answer, got {other:?}"),
        },
    };
    harness.end_request();
    response
}

fn emit(harness: &mut Harness<Sefe>, invoice: &Value) -> Response {
    answer(harness, &post(EMIT), invoice.to_string().as_bytes())
}

fn query(harness: &mut Harness<Sefe>, cuf: &str) -> Response {
    answer(
        harness,
        &RequestHead::new("GET", format!("/sefe/v1/facturas/{cuf}")),
        b"",
    )
}

fn annul(harness: &mut Harness<Sefe>, cuf: &str, body: Value) -> Response {
    answer(
        harness,
        &post(&annul_path(cuf)),
        body.to_string().as_bytes(),
    )
}

fn body(response: &Response) -> Value {
    serde_json::from_slice(&response.body).unwrap()
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|header| header.name == name)
        .map(|header| header.value.as_str())
}

/// Asserts that `response` is the problem `slug` with `status`, and returns its document.
fn assert_problem(response: &Response, status: u16, slug: &str) -> Value {
    assert_eq!(
        response.status,
        status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        header(response, "content-type"),
        Some("application/problem+json")
    );
    let problem = body(response);
    assert_eq!(
        problem["type"],
        format!("https://chasqui.agetic.gob.bo/problems/sefe/{slug}")
    );
    assert_eq!(problem["status"], status);
    assert!(problem["title"].as_str().unwrap().contains(" / "));
    problem
}

fn emitted_cuf(harness: &mut Harness<Sefe>, invoice: &Value) -> String {
    let response = emit(harness, invoice);
    assert_eq!(response.status, 201);
    body(&response)["datos"]["cuf"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// Configuration.

#[test]
fn the_empty_configuration_works_and_bad_ones_are_refused() {
    assert!(Harness::<Sefe>::new(json!({})).is_ok());
    let refused = |config: Value| match Harness::<Sefe>::new(config) {
        Err(HarnessError::Config(errors)) => errors.join("; "),
        other => panic!("expected a schema violation, got {other:?}"),
    };
    assert_eq!(
        refused(json!({ "max_body_bytes": 2_000_000 })),
        "/max_body_bytes: greater than the maximum 1048576"
    );
    assert_eq!(
        refused(json!({ "currencies": [] })),
        "/currencies: fewer than 1 items"
    );
    assert_eq!(
        refused(json!({ "extra": true })),
        "/extra: unexpected property"
    );
    assert_eq!(
        refused(json!({ "annulment_reasons": [1, 1] })),
        "/annulment_reasons/1: repeats an earlier item"
    );
}

// ---------------------------------------------------------------------------------------
// Test environment: emission.

#[test]
fn a_valid_emission_is_answered_with_a_synthetic_cuf() {
    let mut harness = pruebas();
    let head = post("/fake/sefe/v1/facturas?origen=caja");
    let response = answer(&mut harness, &head, invoice().to_string().as_bytes());
    assert_eq!(response.status, 201);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    let answer = body(&response);
    let cuf = answer["datos"]["cuf"].as_str().unwrap();
    assert_eq!(cuf.len(), 48);
    assert!(routes::is_cuf(cuf));
    assert_eq!(
        header(&response, "location"),
        Some(format!("/fake/sefe/v1/facturas/{cuf}").as_str())
    );
    assert_eq!(answer["finalizado"], true);
    assert_eq!(
        answer["datos"],
        json!({
            "cuf": cuf,
            "estado": "VALIDADA",
            "entorno": "pruebas",
            "nitEmisor": "1020703023",
            "razonSocialEmisor": "AGENCIA DE GOBIERNO ELECTRONICO",
            "numeroFactura": 125,
            "codigoSucursal": 0,
            "codigoPuntoVenta": 1,
            "fechaEmision": "2025-12-31T19:55:00.000",
            "fechaRecepcion": "2026-01-01T00:00:00.000Z",
            "codigoMoneda": 1,
            "montoTotal": 104.0,
            "montoTotalSujetoIva": 104.0,
            "montoIva": 13.52,
        })
    );
    // Amounts are written with exactly two decimals.
    let text = String::from_utf8(response.body.clone()).unwrap();
    assert!(text.contains(r#""montoTotal":104.00"#), "{text}");
    // Stored, audited and counted.
    assert!(harness.kv_get(&format!("factura:{cuf}")).is_some());
    let ledger = harness.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].kind, "sefe.invoice");
    assert_eq!(
        ledger[0].payload,
        json!({
            "operacion": "emision",
            "entorno": "pruebas",
            "estado": "VALIDADA",
            "cuf": cuf,
            "nitEmisor": "1020703023",
            "numeroFactura": 125,
            "codigoSucursal": 0,
            "codigoPuntoVenta": 1,
            "montoTotal": "104.00",
            "consumidor": "ministerio-a",
        })
    );
    assert_eq!(
        harness.counter(
            "invoices_total",
            &[("operation", "emit"), ("outcome", "validated")]
        ),
        1
    );
    assert_eq!(
        harness.histogram("invoice_amount_bob", &[("operation", "emit")]),
        [104.0]
    );
    // The buyer's identity is personal data: not in the logs, not in the ledger.
    let logs: String = harness.logs().iter().map(|l| l.message.clone()).collect();
    assert!(logs.contains(cuf));
    assert!(!logs.contains("4752918") && !logs.contains("Juana"));
    assert!(!ledger[0].payload.to_string().contains("4752918"));
}

#[test]
fn a_body_in_many_chunks_is_held_back_then_answered() {
    let mut harness = pruebas();
    let text = invoice().to_string();
    let (first, rest) = text.as_bytes().split_at(40);
    let (second, third) = rest.split_at(100);
    assert_eq!(
        harness.request_headers(&post(EMIT)),
        HeadersAction::Continue
    );
    assert_eq!(
        harness.request_body(&BodyChunk::new(first, false)),
        BodyAction::Replace(vec![])
    );
    assert_eq!(
        harness.request_body(&BodyChunk::new(second, false)),
        BodyAction::Replace(vec![])
    );
    let BodyAction::Respond(response) = harness.request_body(&BodyChunk::new(third, true)) else {
        panic!("expected the answer on the last chunk")
    };
    assert_eq!(response.status, 201);
    // An empty last chunk works too.
    harness.end_request();
    let text = numbered(126).to_string();
    harness.request_headers(&post(EMIT));
    harness.request_body(&BodyChunk::new(text.as_bytes(), false));
    let BodyAction::Respond(response) = harness.request_body(&BodyChunk::new(b"", true)) else {
        panic!("expected the answer")
    };
    assert_eq!(response.status, 201);
}

#[test]
fn cufs_are_unique() {
    let mut harness = pruebas();
    let mut cufs = std::collections::BTreeSet::new();
    for number in 1..=20 {
        harness.set_context(context(
            "pruebas",
            Some("ministerio-a"),
            &format!("req-{number}"),
        ));
        cufs.insert(emitted_cuf(&mut harness, &numbered(number)));
    }
    assert_eq!(cufs.len(), 20);
    // The same invoice data from another entity, in the same millisecond, differs too.
    harness.set_context(context("pruebas", Some("ministerio-b"), "req-1"));
    assert!(cufs.insert(emitted_cuf(&mut harness, &numbered(1))));
}

#[test]
fn an_invoice_number_is_used_once_per_branch_and_point_of_sale() {
    let mut harness = pruebas();
    let cuf = emitted_cuf(&mut harness, &invoice());
    let response = emit(&mut harness, &invoice());
    let problem = assert_problem(&response, 409, "factura-duplicada");
    assert!(problem["detail"].as_str().unwrap().contains(&cuf));
    assert_eq!(
        harness.counter(
            "rejections_total",
            &[("operation", "emit"), ("reason", "factura-duplicada")]
        ),
        1
    );
    // Another point of sale, or another entity, has its own numbering.
    let mut other_pos = invoice();
    other_pos["codigoPuntoVenta"] = json!(2);
    assert_eq!(emit(&mut harness, &other_pos).status, 201);
    harness.set_context(context("pruebas", Some("ministerio-b"), "req-2"));
    assert_eq!(emit(&mut harness, &invoice()).status, 201);
}

#[test]
fn invalid_invoices_get_a_problem_naming_each_failing_member() {
    let mut harness = pruebas();
    let mut bad = invoice();
    bad["detalle"][1]["subTotal"] = json!(17.99);
    bad["nitEmisor"] = json!("12AB");
    let response = emit(&mut harness, &bad);
    let problem = assert_problem(&response, 422, "factura-invalida");
    assert_eq!(problem["pointer"], "/nitEmisor");
    assert_eq!(problem["errors"][0]["code"], "format");
    assert_eq!(problem["errors"][1]["pointer"], "/detalle/1/subTotal");
    assert_eq!(problem["errors"][1]["code"], "arithmetic");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .starts_with("/nitEmisor: solo puede contener dígitos"));
    assert_eq!(
        harness.counter(
            "rejections_total",
            &[("operation", "emit"), ("reason", "factura-invalida")]
        ),
        1
    );
    assert!(harness.ledger().is_empty());
}

#[test]
fn malformed_json_is_a_400() {
    let mut harness = pruebas();
    let response = answer(&mut harness, &post(EMIT), b"{\"nitEmisor\": 1,");
    let problem = assert_problem(&response, 400, "json-invalido");
    assert!(problem["detail"].as_str().unwrap().contains("line 1"));
}

#[test]
fn the_request_head_is_checked_before_the_body() {
    let mut harness = pruebas();
    // Not JSON.
    let head = RequestHead::new("POST", EMIT).with_header("content-type", "text/plain");
    assert_problem(&answer(&mut harness, &head, b"x"), 415, "tipo-de-contenido");
    let head = RequestHead::new("POST", EMIT);
    assert_problem(
        &answer(&mut harness, &head, b"{}"),
        415,
        "tipo-de-contenido",
    );
    // JSON with parameters or a +json type is fine.
    let head = RequestHead::new("POST", EMIT)
        .with_header("content-type", "Application/JSON; charset=utf-8");
    assert_eq!(
        answer(&mut harness, &head, invoice().to_string().as_bytes()).status,
        201
    );
    // No body.
    let head = post(EMIT).with_header("content-length", "0");
    assert_problem(&answer(&mut harness, &head, b""), 400, "cuerpo-requerido");
    assert_problem(
        &answer(&mut harness, &post(EMIT), b"  \n"),
        400,
        "cuerpo-requerido",
    );
    // Announced too large.
    let head = post(EMIT).with_header("content-length", "262145");
    assert_problem(
        &answer(&mut harness, &head, b""),
        413,
        "cuerpo-demasiado-grande",
    );
}

#[test]
fn a_body_over_the_limit_is_refused_without_buffering_it_all() {
    let mut harness = plugin(json!({ "max_body_bytes": 1024 }), "pruebas");
    assert_eq!(
        harness.request_headers(&post(EMIT)),
        HeadersAction::Continue
    );
    let chunk = vec![b' '; 1000];
    assert_eq!(
        harness.request_body(&BodyChunk::new(chunk.clone(), false)),
        BodyAction::Replace(vec![])
    );
    let BodyAction::Respond(response) = harness.request_body(&BodyChunk::new(chunk, false)) else {
        panic!("expected 413")
    };
    let problem = assert_problem(&response, 413, "cuerpo-demasiado-grande");
    assert!(problem["detail"].as_str().unwrap().contains("1024"));
    // The plugin forgot the request: a stray chunk passes.
    assert_eq!(
        harness.request_body(&BodyChunk::new(b"x".to_vec(), true)),
        BodyAction::Continue
    );
}

#[test]
fn body_limit_and_item_limit_come_from_the_configuration() {
    let mut harness = plugin(json!({ "max_items": 1 }), "pruebas");
    let problem = assert_problem(&emit(&mut harness, &invoice()), 422, "factura-invalida");
    assert_eq!(problem["pointer"], "/detalle");
    assert_eq!(problem["errors"][0]["code"], "too-many");
    let mut harness = plugin(json!({ "allow_unknown_fields": true }), "pruebas");
    let mut extended = invoice();
    extended["codigoOrden"] = json!("ORD-1");
    assert_eq!(emit(&mut harness, &extended).status, 201);
}

// ---------------------------------------------------------------------------------------
// Test environment: query and annulment.

#[test]
fn an_emitted_invoice_can_be_queried_by_its_emitter_only() {
    let mut harness = pruebas();
    let cuf = emitted_cuf(&mut harness, &invoice());
    let response = query(&mut harness, &cuf);
    assert_eq!(response.status, 200);
    let answer = body(&response);
    assert_eq!(answer["datos"]["cuf"], cuf.as_str());
    assert_eq!(answer["datos"]["estado"], "VALIDADA");
    assert!(answer["datos"].get("anulacion").is_none());
    assert_eq!(
        harness.counter(
            "invoices_total",
            &[("operation", "query"), ("outcome", "found")]
        ),
        1
    );
    // Another entity does not see it.
    harness.set_context(context("pruebas", Some("ministerio-b"), "req-2"));
    assert_problem(&query(&mut harness, &cuf), 404, "factura-no-encontrada");
    // Unknown and malformed CUFs.
    harness.set_context(context("pruebas", Some("ministerio-a"), "req-3"));
    assert_problem(
        &query(&mut harness, &"A".repeat(48)),
        404,
        "factura-no-encontrada",
    );
    assert_problem(&query(&mut harness, "abc"), 400, "cuf-invalido");
    // Kept for the configured retention only.
    harness.advance(Duration::from_secs(168 * 3600));
    assert_problem(&query(&mut harness, &cuf), 404, "factura-no-encontrada");
}

#[test]
fn an_invoice_is_annulled_once() {
    let mut harness = pruebas();
    let cuf = emitted_cuf(&mut harness, &invoice());
    harness.advance(Duration::from_secs(60));
    let response = annul(
        &mut harness,
        &cuf,
        json!({ "codigoMotivo": 1, "descripcion": "Monto mal registrado" }),
    );
    assert_eq!(response.status, 200);
    let answer = body(&response);
    assert_eq!(answer["datos"]["estado"], "ANULADA");
    assert_eq!(
        answer["datos"]["anulacion"],
        json!({
            "codigoMotivo": 1,
            "descripcion": "Monto mal registrado",
            "fechaAnulacion": "2026-01-01T00:01:00.000Z"
        })
    );
    assert_eq!(
        body(&query(&mut harness, &cuf))["datos"]["estado"],
        "ANULADA"
    );
    let ledger = harness.ledger();
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[1].payload["operacion"], "anulacion");
    assert_eq!(ledger[1].payload["estado"], "ANULADA");
    assert_eq!(ledger[1].payload["cuf"], cuf.as_str());
    assert_eq!(ledger[1].payload["codigoMotivo"], 1);
    assert_eq!(ledger[1].payload["montoTotal"], "104.00");
    assert_eq!(
        harness.counter(
            "invoices_total",
            &[("operation", "annul"), ("outcome", "annulled")]
        ),
        1
    );
    // Twice: refused, and nothing more recorded.
    let again = annul(&mut harness, &cuf, json!({ "codigoMotivo": 3 }));
    let problem = assert_problem(&again, 409, "factura-ya-anulada");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("2026-01-01T00:01:00.000Z"));
    assert_eq!(harness.ledger().len(), 2);
}

#[test]
fn annulments_are_validated_and_scoped() {
    let mut harness = pruebas();
    let cuf = emitted_cuf(&mut harness, &invoice());
    let problem = assert_problem(
        &annul(&mut harness, &cuf, json!({ "codigoMotivo": 2 })),
        422,
        "anulacion-invalida",
    );
    assert_eq!(problem["pointer"], "/codigoMotivo");
    assert_eq!(problem["errors"][0]["code"], "not-allowed");
    let problem = assert_problem(
        &annul(&mut harness, &cuf, json!({})),
        422,
        "anulacion-invalida",
    );
    assert_eq!(problem["errors"][0]["code"], "required");
    assert_problem(
        &annul(&mut harness, &"B".repeat(48), json!({ "codigoMotivo": 1 })),
        404,
        "factura-no-encontrada",
    );
    assert_problem(
        &annul(&mut harness, "xyz", json!({ "codigoMotivo": 1 })),
        400,
        "cuf-invalido",
    );
    harness.set_context(context("pruebas", Some("ministerio-b"), "req-2"));
    assert_problem(
        &annul(&mut harness, &cuf, json!({ "codigoMotivo": 1 })),
        404,
        "factura-no-encontrada",
    );
    // The configured reasons apply.
    let mut harness = plugin(json!({ "annulment_reasons": [2] }), "pruebas");
    let cuf = emitted_cuf(&mut harness, &invoice());
    assert_eq!(
        annul(&mut harness, &cuf, json!({ "codigoMotivo": 2 })).status,
        200
    );
}

#[test]
fn unknown_routes_and_methods_in_the_test_environment() {
    let mut harness = pruebas();
    for path in ["/sefe/v1/clientes", "/sefe/v1", "/sefe/v1/facturas/X/Y/Z"] {
        let response = answer(&mut harness, &RequestHead::new("GET", path), b"");
        assert_problem(&response, 404, "ruta-desconocida");
    }
    let response = answer(&mut harness, &RequestHead::new("GET", EMIT), b"");
    assert_problem(&response, 405, "metodo-no-permitido");
    assert_eq!(header(&response, "allow"), Some("POST"));
    let response = answer(
        &mut harness,
        &RequestHead::new("DELETE", format!("/sefe/v1/facturas/{}", "A".repeat(48))),
        b"",
    );
    assert_eq!(header(&response, "allow"), Some("GET"));
}

#[test]
fn a_service_without_consumer_authentication_still_scopes_invoices() {
    let mut harness = pruebas();
    harness.set_context(context("pruebas", None, "req-1"));
    let cuf = emitted_cuf(&mut harness, &invoice());
    assert_eq!(query(&mut harness, &cuf).status, 200);
    harness.set_context(context("pruebas", Some("ministerio-a"), "req-2"));
    assert_eq!(query(&mut harness, &cuf).status, 404);
}

// ---------------------------------------------------------------------------------------
// Test environment: failures of the host.

#[test]
fn an_unavailable_store_is_a_503() {
    let mut harness = pruebas();
    let cuf = emitted_cuf(&mut harness, &invoice());
    harness.fail_kv(Some(KvError::Unavailable("down".into())));
    assert_problem(
        &emit(&mut harness, &numbered(2)),
        503,
        "estado-no-disponible",
    );
    assert_problem(&query(&mut harness, &cuf), 503, "estado-no-disponible");
    assert_problem(
        &annul(&mut harness, &cuf, json!({ "codigoMotivo": 1 })),
        503,
        "estado-no-disponible",
    );
    assert_eq!(
        harness.counter("state_failures_total", &[("operation", "emit")]),
        1
    );
    harness.fail_kv(None);
    assert_eq!(harness.ledger().len(), 1);
}

#[test]
fn a_corrupt_stored_record_is_an_internal_error() {
    let mut harness = pruebas();
    let cuf = "C".repeat(48);
    harness.kv_set(&format!("factura:{cuf}"), b"not json", None);
    assert_problem(&query(&mut harness, &cuf), 500, "error-interno");
}

#[test]
fn a_ledger_failure_is_reported_or_fatal_as_configured() {
    // Not required: the emission goes on, the failure is logged and counted.
    let mut harness = pruebas();
    harness.fail_ledger(Some("disk full"));
    assert_eq!(emit(&mut harness, &invoice()).status, 201);
    assert_eq!(
        harness.counter("ledger_failures_total", &[("operation", "emit")]),
        1
    );
    assert!(harness
        .logs()
        .iter()
        .any(|log| log.message.contains("disk full")));
    // Required: refused, and nothing kept (the number is free again).
    let mut harness = plugin(json!({ "ledger_required": true }), "pruebas");
    harness.fail_ledger(Some("disk full"));
    assert_problem(
        &emit(&mut harness, &invoice()),
        503,
        "auditoria-no-disponible",
    );
    harness.fail_ledger(None);
    let cuf = emitted_cuf(&mut harness, &invoice());
    // An annulment that cannot be recorded is undone.
    harness.fail_ledger(Some("disk full"));
    assert_problem(
        &annul(&mut harness, &cuf, json!({ "codigoMotivo": 1 })),
        503,
        "auditoria-no-disponible",
    );
    harness.fail_ledger(None);
    assert_eq!(
        body(&query(&mut harness, &cuf))["datos"]["estado"],
        "VALIDADA"
    );
}

#[test]
fn an_unknown_environment_is_refused() {
    let mut harness = pruebas();
    harness.set_context(context("staging", Some("ministerio-a"), "req-1"));
    let response = answer(&mut harness, &post(EMIT), invoice().to_string().as_bytes());
    assert_problem(&response, 503, "entorno-desconocido");
    assert!(harness.ledger().is_empty());
}

// ---------------------------------------------------------------------------------------
// Production.

/// Sends a body in chunks of `size` in production and returns the last chunk's action.
fn release(harness: &mut Harness<Sefe>, body: &[u8], size: usize) -> BodyAction {
    let chunks: Vec<&[u8]> = body.chunks(size).collect();
    for chunk in &chunks[..chunks.len() - 1] {
        assert_eq!(
            harness.request_body(&BodyChunk::new(*chunk, false)),
            BodyAction::Replace(vec![])
        );
    }
    harness.request_body(&BodyChunk::new(chunks[chunks.len() - 1], true))
}

#[test]
fn production_releases_a_valid_invoice_whole_and_unchanged() {
    let mut harness = produccion();
    let text = invoice().to_string();
    assert_eq!(
        harness.request_headers(&post(EMIT)),
        HeadersAction::Modify(HeaderChanges::new().set("accept-encoding", "identity"))
    );
    assert_eq!(
        release(&mut harness, text.as_bytes(), 64),
        BodyAction::Replace(text.as_bytes().to_vec())
    );
    let ledger = harness.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].payload["entorno"], "produccion");
    assert_eq!(ledger[0].payload["estado"], "ENVIADA");
    assert_eq!(ledger[0].payload["cuf"], Value::Null);
    assert_eq!(ledger[0].payload["montoTotal"], "104.00");
    assert_eq!(
        harness.counter(
            "invoices_total",
            &[("operation", "emit"), ("outcome", "forwarded")]
        ),
        1
    );
    // The tax authority answers; the CUF it assigned is recorded.
    let head = ResponseHead::new(201).with_header("content-type", "application/json");
    assert_eq!(harness.response_headers(&head), HeadersAction::Continue);
    let upstream = json!({
        "finalizado": true,
        "mensaje": "ok",
        "datos": { "cuf": "1A2B3C4D5E6F70819A2B3C4D5E6F7081", "estado": "VALIDADA" }
    })
    .to_string();
    let (first, second) = upstream.as_bytes().split_at(30);
    assert_eq!(
        harness.response_body(&BodyChunk::new(first, false)),
        BodyAction::Continue
    );
    assert_eq!(harness.ledger().len(), 1);
    assert_eq!(
        harness.response_body(&BodyChunk::new(second, true)),
        BodyAction::Continue
    );
    harness.end_request();
    let ledger = harness.ledger();
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[1].payload["estado"], "VALIDADA");
    assert_eq!(ledger[1].payload["cuf"], "1A2B3C4D5E6F70819A2B3C4D5E6F7081");
    assert_eq!(ledger[1].payload["estadoHttp"], 201);
    assert_eq!(ledger[1].payload["nitEmisor"], "1020703023");
    assert_eq!(
        harness.counter(
            "invoices_total",
            &[("operation", "emit"), ("outcome", "accepted")]
        ),
        1
    );
    // Nothing was stored as test state.
    assert!(harness
        .kv_get("factura:1A2B3C4D5E6F70819A2B3C4D5E6F7081")
        .is_none());
}

#[test]
fn production_refuses_invalid_invoices_before_the_upstream() {
    let mut harness = produccion();
    let mut bad = invoice();
    bad["montoIva"] = json!(13.53);
    harness.request_headers(&post(EMIT));
    let BodyAction::Respond(response) = release(&mut harness, bad.to_string().as_bytes(), 100)
    else {
        panic!("expected a refusal")
    };
    let problem = assert_problem(&response, 422, "factura-invalida");
    assert_eq!(problem["pointer"], "/montoIva");
    assert!(harness.ledger().is_empty());
    // Same head checks as in the test environment.
    let head = post(EMIT).with_header("content-length", "999999999");
    let HeadersAction::Respond(response) = harness.request_headers(&head) else {
        panic!("expected 413")
    };
    assert_problem(&response, 413, "cuerpo-demasiado-grande");
}

#[test]
fn production_does_not_need_an_answer_from_the_upstream() {
    // Contingency: the gateway queues the request and answers 202 itself, or the request
    // fails on the way; the evidence that it was sent is already there.
    let mut harness = produccion();
    harness.request_headers(&post(EMIT));
    let text = invoice().to_string();
    assert!(matches!(
        release(&mut harness, text.as_bytes(), 1 << 16),
        BodyAction::Replace(_)
    ));
    harness.end_request();
    assert_eq!(harness.ledger().len(), 1);
    assert_eq!(harness.ledger()[0].payload["estado"], "ENVIADA");
    // The next request starts clean: its answer is not taken for the previous one.
    assert_eq!(
        harness.request_headers(&RequestHead::new("GET", "/sefe/v1/otra")),
        HeadersAction::Continue
    );
    harness.response_headers(&ResponseHead::new(200));
    harness.response_body(&BodyChunk::new(b"{}".to_vec(), true));
    assert_eq!(harness.ledger().len(), 1);
    // A 202 passed back to the plugin counts as accepted, without a CUF.
    harness.end_request();
    harness.request_headers(&post(EMIT));
    release(&mut harness, numbered(9).to_string().as_bytes(), 1 << 16);
    let head = ResponseHead::new(202)
        .with_header("content-type", "application/problem+json")
        .with_header("content-length", "0");
    harness.response_headers(&head);
    assert_eq!(harness.ledger()[2].payload["estadoHttp"], 202);
    assert_eq!(harness.ledger()[2].payload["cuf"], Value::Null);
    assert_eq!(harness.ledger()[2].payload["estado"], "ACEPTADA");
}

#[test]
fn production_counts_upstream_refusals_without_evidence() {
    let mut harness = produccion();
    harness.request_headers(&post(EMIT));
    release(&mut harness, invoice().to_string().as_bytes(), 1 << 16);
    harness
        .response_headers(&ResponseHead::new(409).with_header("content-type", "application/json"));
    assert_eq!(
        harness.response_body(&BodyChunk::new(b"{\"cuf\":\"X\"}".to_vec(), true)),
        BodyAction::Continue
    );
    assert_eq!(harness.ledger().len(), 1);
    assert_eq!(
        harness.counter(
            "invoices_total",
            &[("operation", "emit"), ("outcome", "rejected_upstream")]
        ),
        1
    );
}

#[test]
fn production_reads_the_cuf_only_from_a_plain_json_answer() {
    let cases = [
        // Compressed: not read.
        ResponseHead::new(200)
            .with_header("content-type", "application/json")
            .with_header("content-encoding", "gzip"),
        // Not JSON.
        ResponseHead::new(200).with_header("content-type", "text/html"),
    ];
    for head in cases {
        let mut harness = produccion();
        harness.request_headers(&post(EMIT));
        release(&mut harness, invoice().to_string().as_bytes(), 1 << 16);
        harness.response_headers(&head);
        assert_eq!(harness.ledger().len(), 2);
        assert_eq!(harness.ledger()[1].payload["cuf"], Value::Null);
    }
    // Larger than the limit: recorded without a CUF.
    let mut harness = plugin(json!({ "max_body_bytes": 1024 }), "produccion");
    harness.request_headers(&post(EMIT));
    release(&mut harness, invoice().to_string().as_bytes(), 512);
    harness
        .response_headers(&ResponseHead::new(200).with_header("content-type", "application/json"));
    let big = format!("{{\"cuf\":\"ABC\",\"relleno\":\"{}\"}}", "x".repeat(2000));
    harness.response_body(&BodyChunk::new(big.as_bytes(), true));
    assert_eq!(harness.ledger()[1].payload["cuf"], Value::Null);
    // A top-level cuf is found too; a value that is not a code is ignored.
    let mut harness = produccion();
    harness.request_headers(&post(EMIT));
    release(&mut harness, invoice().to_string().as_bytes(), 1 << 16);
    harness
        .response_headers(&ResponseHead::new(200).with_header("content-type", "application/json"));
    harness.response_body(&BodyChunk::new(
        br#"{"cuf":"ABC123","estado":""}"#.to_vec(),
        true,
    ));
    assert_eq!(harness.ledger()[1].payload["cuf"], "ABC123");
    assert_eq!(harness.ledger()[1].payload["estado"], "ACEPTADA");
}

#[test]
fn production_annulment_and_query_pass_through() {
    let mut harness = produccion();
    let cuf = "1A2B3C4D5E6F70819A2B3C4D5E6F7081";
    assert_eq!(
        harness.request_headers(&post(&annul_path(cuf))),
        HeadersAction::Continue
    );
    let body = json!({ "codigoMotivo": 3 }).to_string();
    assert_eq!(
        release(&mut harness, body.as_bytes(), 1 << 16),
        BodyAction::Replace(body.as_bytes().to_vec())
    );
    harness.response_headers(&ResponseHead::new(200));
    harness.end_request();
    let ledger = harness.ledger();
    assert_eq!(ledger.len(), 2);
    for (entry, estado) in ledger.iter().zip(["ENVIADA", "ACEPTADA"]) {
        assert_eq!(entry.payload["operacion"], "anulacion");
        assert_eq!(entry.payload["estado"], estado);
        assert_eq!(entry.payload["cuf"], cuf);
        assert_eq!(entry.payload["codigoMotivo"], 3);
    }
    // An invalid annulment never leaves.
    harness.request_headers(&post(&annul_path(cuf)));
    let BodyAction::Respond(response) = release(&mut harness, b"{\"codigoMotivo\": 9}", 64) else {
        panic!("expected a refusal")
    };
    assert_problem(&response, 422, "anulacion-invalida");
    harness.end_request();
    // A query goes to the upstream; a malformed CUF does not.
    let head = RequestHead::new("GET", format!("/sefe/v1/facturas/{cuf}"));
    assert_eq!(harness.request_headers(&head), HeadersAction::Continue);
    assert_eq!(
        harness.counter(
            "invoices_total",
            &[("operation", "query"), ("outcome", "forwarded")]
        ),
        1
    );
    let HeadersAction::Respond(response) =
        harness.request_headers(&RequestHead::new("GET", "/sefe/v1/facturas/123"))
    else {
        panic!("expected 400")
    };
    assert_problem(&response, 400, "cuf-invalido");
}

#[test]
fn production_passes_unknown_routes_and_methods_to_the_upstream() {
    let mut harness = produccion();
    for (method, path) in [
        ("GET", "/sefe/v1/sucursales"),
        ("GET", EMIT),
        ("PUT", "/sefe/v1/facturas/ABC"),
        ("GET", "/sin-version"),
    ] {
        assert_eq!(
            harness.request_headers(&RequestHead::new(method, path)),
            HeadersAction::Continue,
            "{method} {path}"
        );
        assert_eq!(
            harness.request_body(&BodyChunk::new(b"x".to_vec(), true)),
            BodyAction::Continue
        );
        harness.end_request();
    }
}

#[test]
fn production_with_a_required_ledger_holds_the_request_when_it_fails() {
    let mut harness = plugin(json!({ "ledger_required": true }), "produccion");
    harness.fail_ledger(Some("unavailable"));
    harness.request_headers(&post(EMIT));
    let BodyAction::Respond(response) =
        release(&mut harness, invoice().to_string().as_bytes(), 1 << 16)
    else {
        panic!("expected 503")
    };
    assert_problem(&response, 503, "auditoria-no-disponible");
    assert_eq!(
        harness.counter(
            "invoices_total",
            &[("operation", "emit"), ("outcome", "forwarded")]
        ),
        0
    );
}
