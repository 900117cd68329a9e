//! Every validation rule and limit of a debt request, with its problem type and field.

mod common;

use chasqui_plugin_sdk::serde_json::{json, Value};
use common::{debt, Answer, Gateway};

/// Sends raw bytes as a debt request in pruebas.
fn raw(gw: &mut Gateway, body: &[u8]) -> Answer {
    let answer = gw
        .send("POST", "/ppe/v1/transaccion/deuda", Some(body))
        .answer();
    gw.harness.end_request();
    answer
}

/// A valid request with one member changed (`null` removes it), at a dotted path.
fn with(path: &str, value: Value) -> Value {
    let mut request = debt("VAL-1", "QR", json!("10.00"));
    let mut target = &mut request;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        target = &mut target[*part];
    }
    let last = parts[parts.len() - 1];
    if value.is_null() {
        target.as_object_mut().unwrap().remove(last);
    } else {
        target[last] = value;
    }
    request
}

/// Asserts that `request` is refused with `slug` naming `field`.
fn refused(gw: &mut Gateway, request: &Value, status: u16, slug: &str, field: Option<&str>) {
    let answer = gw.create(request);
    let problem = answer.problem(status, slug);
    match field {
        Some(field) => assert_eq!(problem["field"], field, "{problem}"),
        None => assert!(problem.get("field").is_none(), "{problem}"),
    }
}

#[test]
fn malformed_bodies_are_invalid_json() {
    let mut gw = Gateway::pruebas();
    let cases: [&[u8]; 6] = [
        b"{",
        b"[]",
        b"\"text\"",
        b"{\"codigoOrden\": \"A\"} trailing",
        b"\xff\xfe{}",
        b"{\"datosPago\": {\"montoTotal\": 1, \"montoTotal\": 1000000}}",
    ];
    for body in cases {
        raw(&mut gw, body).problem(400, "invalid-json");
    }
    let duplicate = raw(&mut gw, br#"{"codigoOrden": "A", "codigoOrden": "B"}"#);
    assert!(duplicate.body["detail"]
        .as_str()
        .unwrap()
        .contains("more than once"));
    raw(&mut gw, b"   ").problem(400, "body-required");
    assert!(gw.harness.ledger().is_empty());
}

#[test]
fn debt_code_rules() {
    let mut gw = Gateway::pruebas();
    let field = Some("codigoOrden");
    refused(
        &mut gw,
        &with("codigoOrden", Value::Null),
        400,
        "invalid-field",
        field,
    );
    for bad in [
        json!(""),
        json!("   "),
        json!(" A1"),
        json!("A1 "),
        json!("a\nb"),
        json!(-1),
        json!(1.5),
        json!(true),
        json!({}),
    ] {
        refused(
            &mut gw,
            &with("codigoOrden", bad),
            400,
            "invalid-field",
            field,
        );
    }
    refused(
        &mut gw,
        &with("codigoOrden", json!("x".repeat(65))),
        400,
        "invalid-field",
        field,
    );
    assert_eq!(
        gw.create(&with("codigoOrden", json!("x".repeat(64))))
            .status,
        202
    );
    assert_eq!(
        gw.create(&with("codigoOrden", json!("Trámite Nº 5/2026")))
            .status,
        202
    );
    // An integer code is the same debt as its text.
    let number = gw.create(&with("codigoOrden", json!(12345)));
    assert_eq!(number.status, 202);
    assert_eq!(number.datos()["codigoOrden"], "12345");
    let text = gw.create(&with("codigoOrden", json!("12345")));
    assert_eq!(text.header("idempotent-replayed"), Some("true"));
}

#[test]
fn method_rules() {
    let mut gw = Gateway::pruebas();
    let field = Some("metodoPago");
    refused(
        &mut gw,
        &with("metodoPago", Value::Null),
        400,
        "invalid-method",
        field,
    );
    for bad in [
        json!("qr"),
        json!("CARD"),
        json!("EFECTIVO"),
        json!(1),
        json!(["QR"]),
    ] {
        refused(
            &mut gw,
            &with("metodoPago", bad),
            400,
            "invalid-method",
            field,
        );
    }
}

#[test]
fn description_rules() {
    let mut gw = Gateway::pruebas();
    let field = Some("descripcion");
    refused(
        &mut gw,
        &with("descripcion", Value::Null),
        400,
        "invalid-field",
        field,
    );
    refused(
        &mut gw,
        &with("descripcion", json!(" ")),
        400,
        "invalid-field",
        field,
    );
    refused(
        &mut gw,
        &with("descripcion", json!(5)),
        400,
        "invalid-field",
        field,
    );
    refused(
        &mut gw,
        &with("descripcion", json!("x".repeat(256))),
        400,
        "invalid-field",
        field,
    );
    refused(
        &mut gw,
        &with("descripcion", json!("a\u{0007}b")),
        400,
        "invalid-field",
        field,
    );
    assert_eq!(
        gw.create(&with("descripcion", json!("ñ".repeat(255))))
            .status,
        202
    );
}

#[test]
fn payer_rules() {
    let mut gw = Gateway::pruebas();
    refused(
        &mut gw,
        &with("datosPago", Value::Null),
        400,
        "invalid-field",
        Some("datosPago"),
    );
    refused(
        &mut gw,
        &with("datosPago", json!("x")),
        400,
        "invalid-field",
        Some("datosPago"),
    );
    let cases = [
        ("datosPago.nombresCliente", Value::Null),
        ("datosPago.nombresCliente", json!("")),
        ("datosPago.nombresCliente", json!("x".repeat(101))),
        ("datosPago.apellidosCliente", Value::Null),
        ("datosPago.apellidosCliente", json!(["Mamani"])),
        ("datosPago.numeroDocumentoCliente", Value::Null),
        ("datosPago.numeroDocumentoCliente", json!("45 89")),
        ("datosPago.numeroDocumentoCliente", json!("4589'--")),
        ("datosPago.numeroDocumentoCliente", json!("1".repeat(21))),
        ("datosPago.tipoDocumentoCliente", json!(0)),
        ("datosPago.tipoDocumentoCliente", json!("1")),
        ("datosPago.tipoDocumentoCliente", json!(100)),
        ("datosPago.fechaNacimientoCliente", json!("1990-02-30")),
        ("datosPago.fechaNacimientoCliente", json!("01/05/1990")),
        ("datosPago.fechaNacimientoCliente", json!("1899-12-31")),
        // The harness clock is 2026-01-01: tomorrow is in the future.
        ("datosPago.fechaNacimientoCliente", json!("2026-01-02")),
        ("datosPago.correo", json!("juana")),
        ("datosPago.correo", json!("juana@bo")),
        ("datosPago.correo", json!("ju ana@example.bo")),
        ("datosPago.correo", json!("@example.bo")),
        ("datosPago.tipoCambioMoneda", json!(6.96)),
    ];
    for (path, value) in cases {
        refused(
            &mut gw,
            &with(path, value.clone()),
            400,
            "invalid-field",
            Some(path),
        );
    }
    // Optional payer fields may be left out; the document number may be an integer.
    let mut minimal = debt("VAL-MIN", "QR", json!(1));
    for optional in [
        "tipoDocumentoCliente",
        "fechaNacimientoCliente",
        "correo",
        "moneda",
    ] {
        minimal["datosPago"]
            .as_object_mut()
            .unwrap()
            .remove(optional);
    }
    minimal["datosPago"]["numeroDocumentoCliente"] = json!(4589632);
    let created = gw.create(&minimal);
    assert_eq!(created.status, 202);
    assert_eq!(
        created.datos()["datosPago"]["numeroDocumentoCliente"],
        "4589632"
    );
    assert_eq!(
        gw.create(&with(
            "datosPago.fechaNacimientoCliente",
            json!("2026-01-01")
        ))
        .status,
        202
    );
}

#[test]
fn currency_must_be_bob() {
    let mut gw = Gateway::pruebas();
    for bad in [json!("USD"), json!("bob"), json!(1)] {
        refused(
            &mut gw,
            &with("datosPago.moneda", bad),
            400,
            "unsupported-currency",
            Some("datosPago.moneda"),
        );
    }
}

#[test]
fn amount_rules_work_on_the_exact_text() {
    let mut gw = Gateway::pruebas();
    let field = Some("datosPago.montoTotal");
    let bad = [
        Value::Null,
        json!(123.456),
        json!("123.456"),
        json!("1.100"),
        json!(-5),
        json!("-5.00"),
        json!(0),
        json!("0.00"),
        json!("abc"),
        json!(""),
        json!("1e3"),
        json!(true),
        json!([10]),
        json!({"monto": 10}),
        json!("10,50"),
        json!(" 10.50"),
    ];
    for amount in bad {
        refused(
            &mut gw,
            &with("datosPago.montoTotal", amount),
            400,
            "invalid-amount",
            field,
        );
    }
    // Written by hand: JSON numbers that serde_json would round through f64.
    for text in ["1e3", "1.5E2", "10.001", "10.0000000000000001", "0.000"] {
        let body = format!(
            r#"{{"codigoOrden":"RAW-1","metodoPago":"CPT","descripcion":"x","datosPago":{{"nombresCliente":"A","apellidosCliente":"B","numeroDocumentoCliente":"1","montoTotal":{text}}}}}"#
        );
        let answer = raw(&mut gw, body.as_bytes());
        assert_eq!(
            answer.problem(400, "invalid-amount")["field"],
            "datosPago.montoTotal",
            "{text}"
        );
    }
    let body = r#"{"codigoOrden":"RAW-2","metodoPago":"CPT","descripcion":"x","datosPago":{"nombresCliente":"A","apellidosCliente":"B","numeroDocumentoCliente":"1","montoTotal":0.1}}"#;
    assert_eq!(raw(&mut gw, body.as_bytes()).datos()["montoTotal"], "0.10");
    for (amount, shown) in [
        (json!(10), "10.00"),
        (json!(10.5), "10.50"),
        (json!("10.05"), "10.05"),
        (json!(0.01), "0.01"),
    ] {
        let created = gw.create(&debt(&format!("OK-{shown}"), "CPT", amount));
        assert_eq!(created.datos()["montoTotal"], shown);
    }
}

#[test]
fn method_limits_are_enforced_in_centavos() {
    let mut gw = Gateway::pruebas();
    for (method, limit, over) in [
        ("QR", "50000.00", "50000.01"),
        ("TARJETA", "15000.00", "15000.01"),
        ("CPT", "100000.00", "100000.01"),
    ] {
        assert_eq!(
            gw.create(&debt(&format!("LIM-{method}"), method, json!(limit)))
                .status,
            202
        );
        let refused = gw.create(&debt(&format!("OVER-{method}"), method, json!(over)));
        let problem = refused.problem(422, "amount-over-limit");
        assert_eq!(
            problem["title"],
            "Monto fuera de límite / Amount over the limit"
        );
        assert_eq!(problem["metodoPago"], method);
        assert_eq!(problem["limite"], limit);
        assert!(problem["detail"].as_str().unwrap().contains(over));
    }
    assert_eq!(
        gw.harness
            .counter("rejected_total", &[("reason", "amount-over-limit")]),
        3
    );
}

#[test]
fn limits_are_configurable_but_qr_never_above_the_bank_ceiling() {
    let mut gw = Gateway::new(
        "pruebas",
        json!({"limits": {"tarjeta_centavos": 2_000_000, "cpt_centavos": 50_000, "qr_centavos": 100_000}}),
    );
    assert_eq!(
        gw.create(&debt("CFG-T", "TARJETA", json!("20000.00")))
            .status,
        202
    );
    gw.create(&debt("CFG-T2", "TARJETA", json!("20000.01")))
        .problem(422, "amount-over-limit");
    assert_eq!(gw.create(&debt("CFG-C", "CPT", json!(500))).status, 202);
    gw.create(&debt("CFG-C2", "CPT", json!(500.01)))
        .problem(422, "amount-over-limit");
    gw.create(&debt("CFG-Q", "QR", json!(1000.01)))
        .problem(422, "amount-over-limit");
}

#[test]
fn validity_rules_per_method() {
    let mut gw = Gateway::pruebas();
    let field = Some("vigenciaDias");
    let qr = |days: Value| {
        let mut request = debt("VIG-Q", "QR", json!(1));
        request["vigenciaDias"] = days;
        request
    };
    for bad in [
        json!(2),
        json!(0),
        json!(30),
        json!("1"),
        json!(1.5),
        json!(-1),
    ] {
        refused(&mut gw, &qr(bad), 400, "invalid-validity", field);
    }
    let mut card = debt("VIG-T", "TARJETA", json!(1));
    card["vigenciaDias"] = json!(1);
    refused(&mut gw, &card, 400, "invalid-validity", field);
    let mut cpt = debt("VIG-C", "CPT", json!(1));
    cpt["vigenciaDias"] = json!(31);
    refused(&mut gw, &cpt, 400, "invalid-validity", field);
    cpt["vigenciaDias"] = json!(0);
    refused(&mut gw, &cpt, 400, "invalid-validity", field);
    cpt["vigenciaDias"] = json!(30);
    assert_eq!(gw.create(&cpt).status, 202);
}

#[test]
fn unknown_members_are_accepted_and_productos_must_be_a_list() {
    let mut gw = Gateway::pruebas();
    let mut request = debt("EXTRA-1", "QR", json!(1));
    request["productos"] = json!([{"actividadEconomica": "841001", "descripcion": "x", "precioUnitario": 1, "cantidad": 1}]);
    request["metaDatosTransaccion"] = json!({"ventanilla": 3});
    request["datosPago"]["cuentaBancaria"] = json!("1000005678");
    assert_eq!(gw.create(&request).status, 202);
    refused(
        &mut gw,
        &with("productos", json!({"a": 1})),
        400,
        "invalid-field",
        Some("productos"),
    );
}

#[test]
fn validation_happens_before_anything_is_stored() {
    let mut gw = Gateway::pruebas();
    gw.create(&debt("FIRST-BAD", "QR", json!(0)))
        .problem(400, "invalid-amount");
    // The refused request claimed nothing: the same code is free for a valid debt.
    assert_eq!(gw.create(&debt("FIRST-BAD", "QR", json!(1))).status, 202);
    assert_eq!(gw.harness.ledger().len(), 1);
}
