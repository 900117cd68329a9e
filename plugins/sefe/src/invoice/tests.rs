use super::*;
use serde_json::{json, Value};

/// 2026-01-01T00:00:00Z, the harness's clock: 2025-12-31T20:00:00 in La Paz.
const NOW_MS: u64 = 1_767_225_600_000;

fn limits() -> Limits {
    Limits {
        max_items: 500,
        future_tolerance_ms: 300_000,
        max_age_ms: 72 * 3_600_000,
        currencies: vec![1],
        allow_unknown_fields: false,
    }
}

/// A valid invoice: 2 × 45.50 = 91.00 and round(1.5 × 12.33 = 18.495) − 0.50 = 18.00,
/// 109.00 − 5.00 = 104.00, IVA 13% = 13.52.
fn valid() -> Value {
    json!({
        "nitEmisor": "1020703023",
        "razonSocialEmisor": "AGENCIA DE GOBIERNO ELECTRONICO",
        "municipio": "La Paz",
        "telefono": "+591 2 2184026",
        "numeroFactura": 125,
        "codigoSucursal": 0,
        "codigoPuntoVenta": 1,
        "fechaEmision": "2025-12-31T19:55:00.000",
        "nombreRazonSocial": "Juana Pérez",
        "codigoTipoDocumentoIdentidad": 1,
        "numeroDocumento": "4752918",
        "complemento": "1E",
        "codigoCliente": "CLI-4752918",
        "codigoMetodoPago": 1,
        "codigoMoneda": 1,
        "tipoCambio": 1,
        "montoTotalMoneda": 104.00,
        "descuentoAdicional": 5.00,
        "montoTotal": 104.00,
        "montoTotalSujetoIva": 104.00,
        "montoIva": 13.52,
        "detalle": [
            {
                "actividadEconomica": "620100",
                "codigoProductoSin": "83141",
                "codigoProducto": "SRV-001",
                "descripcion": "Soporte técnico",
                "cantidad": 2,
                "unidadMedida": 58,
                "precioUnitario": 45.50,
                "montoDescuento": 0,
                "subTotal": 91.00
            },
            {
                "actividadEconomica": "620100",
                "codigoProductoSin": "83141",
                "codigoProducto": "SRV-002",
                "descripcion": "Capacitación",
                "cantidad": 1.5,
                "unidadMedida": 58,
                "precioUnitario": 12.33,
                "montoDescuento": 0.50,
                "subTotal": 18.00
            }
        ]
    })
}

fn check(invoice: &Value) -> Result<Invoice, Rejection> {
    check_with(invoice, &limits())
}

fn check_with(invoice: &Value, limits: &Limits) -> Result<Invoice, Rejection> {
    validate(invoice.to_string().as_bytes(), limits, NOW_MS)
}

/// The (pointer, code) of every error of a refused invoice.
fn errors_of(result: Result<Invoice, Rejection>) -> Vec<(String, &'static str)> {
    match result {
        Err(Rejection::Invalid(errors)) => {
            errors.into_iter().map(|e| (e.pointer, e.code)).collect()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn only_error(invoice: &Value) -> (String, &'static str) {
    let errors = errors_of(check(invoice));
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.into_iter().next().unwrap()
}

fn detail_of(invoice: &Value) -> String {
    match check(invoice) {
        Err(Rejection::Invalid(errors)) => errors[0].detail.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The invoice with the member at `pointer` set (added if absent) to `value`.
fn with(mut invoice: Value, pointer: &str, value: Value) -> Value {
    let (parent, name) = pointer.rsplit_once('/').expect(pointer);
    match invoice.pointer_mut(parent).expect(pointer) {
        Value::Object(members) => {
            members.insert(name.to_string(), value);
        }
        Value::Array(items) => items[name.parse::<usize>().expect(pointer)] = value,
        _ => panic!("{pointer}"),
    }
    invoice
}

fn without(mut invoice: Value, name: &str) -> Value {
    invoice.as_object_mut().unwrap().remove(name);
    invoice
}

fn owned(pointer: &str, code: &'static str) -> (String, &'static str) {
    (pointer.to_string(), code)
}

#[test]
fn a_valid_invoice_is_summarised() {
    let invoice = check(&valid()).unwrap();
    assert_eq!(
        invoice,
        Invoice {
            nit_emisor: "1020703023".into(),
            razon_social_emisor: "AGENCIA DE GOBIERNO ELECTRONICO".into(),
            numero_factura: 125,
            codigo_sucursal: 0,
            codigo_punto_venta: Some(1),
            fecha_emision: "2025-12-31T19:55:00.000".into(),
            codigo_moneda: 1,
            monto_total: Money(10_400),
            monto_total_sujeto_iva: Money(10_400),
            monto_iva: Money(1_352),
            lines: 2,
        }
    );
}

#[test]
fn minimal_invoice_with_only_required_members() {
    let mut invoice = valid();
    for name in [
        "municipio",
        "telefono",
        "codigoPuntoVenta",
        "complemento",
        "codigoCliente",
        "codigoMetodoPago",
        "tipoCambio",
        "montoTotalMoneda",
        "montoIva",
    ] {
        invoice = without(invoice, name);
    }
    let invoice = with(invoice, "/descuentoAdicional", Value::Null);
    let invoice = with(invoice, "/montoTotal", json!(109));
    let invoice = with(invoice, "/montoTotalSujetoIva", json!(109));
    let invoice = with(invoice, "/detalle/0/montoDescuento", Value::Null);
    let summary = check(&invoice).unwrap();
    assert_eq!(summary.codigo_punto_venta, None);
    assert_eq!(summary.monto_total, Money(10_900));
    // IVA is computed when not given: 13% of 109.00 = 14.17.
    assert_eq!(summary.monto_iva, Money(1_417));
}

#[test]
fn every_required_member_is_named_when_missing() {
    let required = [
        "nitEmisor",
        "razonSocialEmisor",
        "numeroFactura",
        "codigoSucursal",
        "fechaEmision",
        "nombreRazonSocial",
        "codigoTipoDocumentoIdentidad",
        "numeroDocumento",
        "codigoMoneda",
        "montoTotal",
        "montoTotalSujetoIva",
        "detalle",
    ];
    for name in required {
        let errors = errors_of(check(&without(valid(), name)));
        assert!(
            errors.contains(&owned(&format!("/{name}"), "required")),
            "{name}: {errors:?}"
        );
        // `null` is absent too.
        let errors = errors_of(check(&with(valid(), &format!("/{name}"), Value::Null)));
        assert!(
            errors.contains(&owned(&format!("/{name}"), "required")),
            "{name}"
        );
    }
    for name in [
        "actividadEconomica",
        "codigoProductoSin",
        "codigoProducto",
        "descripcion",
        "cantidad",
        "unidadMedida",
        "precioUnitario",
        "subTotal",
    ] {
        let mut invoice = valid();
        invoice["detalle"][1].as_object_mut().unwrap().remove(name);
        let errors = errors_of(check(&invoice));
        assert!(
            errors.contains(&owned(&format!("/detalle/1/{name}"), "required")),
            "{name}: {errors:?}"
        );
    }
}

#[test]
fn all_failures_are_reported_at_once_in_order() {
    let invoice = with(valid(), "/nitEmisor", json!("12"));
    let invoice = with(invoice, "/numeroFactura", json!(0));
    let invoice = with(invoice, "/detalle/0/cantidad", json!(-1));
    assert_eq!(
        errors_of(check(&invoice)),
        [
            owned("/nitEmisor", "length"),
            owned("/numeroFactura", "range"),
            owned("/detalle/0/cantidad", "range"),
        ]
    );
}

#[test]
fn issuer_nit_format() {
    for (nit, code) in [
        (json!("1234"), "length"),
        (json!("12345678901234"), "length"),
        (json!("10207O3023"), "format"),
        (json!("0020703023"), "format"),
        (json!(""), "format"),
        (json!(true), "type"),
        (json!(-1020703023), "format"),
    ] {
        assert_eq!(
            only_error(&with(valid(), "/nitEmisor", nit.clone())),
            owned("/nitEmisor", code),
            "{nit}"
        );
    }
    // A JSON integer is accepted and kept as digits.
    let invoice = check(&with(valid(), "/nitEmisor", json!(1020703023))).unwrap();
    assert_eq!(invoice.nit_emisor, "1020703023");
    assert!(check(&with(valid(), "/nitEmisor", json!("12345"))).is_ok());
    assert!(check(&with(valid(), "/nitEmisor", json!("1234567890123"))).is_ok());
}

#[test]
fn business_names_and_texts() {
    assert_eq!(
        only_error(&with(valid(), "/razonSocialEmisor", json!("   "))),
        owned("/razonSocialEmisor", "empty")
    );
    assert_eq!(
        only_error(&with(valid(), "/razonSocialEmisor", json!("X".repeat(201)))),
        owned("/razonSocialEmisor", "length")
    );
    assert_eq!(
        only_error(&with(valid(), "/nombreRazonSocial", json!("A\u{0}B"))),
        owned("/nombreRazonSocial", "format")
    );
    assert_eq!(
        only_error(&with(valid(), "/telefono", json!("22-ABC"))),
        owned("/telefono", "format")
    );
    assert_eq!(
        only_error(&with(valid(), "/detalle/1/descripcion", json!(5))),
        owned("/detalle/1/descripcion", "type")
    );
}

#[test]
fn buyer_document_by_type() {
    let buyer = |kind: i64, number: Value| {
        let invoice = with(valid(), "/codigoTipoDocumentoIdentidad", json!(kind));
        let invoice = without(invoice, "complemento");
        check(&with(invoice, "/numeroDocumento", number))
    };
    // 1 CI: 4 to 10 digits.
    assert!(buyer(1, json!("4752918")).is_ok());
    assert!(buyer(1, json!(4752918)).is_ok());
    assert_eq!(
        errors_of(buyer(1, json!("4752918LP"))),
        [owned("/numeroDocumento", "format")]
    );
    assert_eq!(
        errors_of(buyer(1, json!("123"))),
        [owned("/numeroDocumento", "format")]
    );
    // 5 NIT, including the SIN's special codes.
    assert!(buyer(5, json!("99002")).is_ok());
    assert_eq!(
        errors_of(buyer(5, json!("0123456"))),
        [owned("/numeroDocumento", "format")]
    );
    // 2 CEX and 3 passport: uppercase letters and digits.
    assert!(buyer(3, json!("AB123456")).is_ok());
    assert_eq!(
        errors_of(buyer(3, json!("ab123456"))),
        [owned("/numeroDocumento", "format")]
    );
    assert_eq!(
        errors_of(buyer(2, json!("E12"))),
        [owned("/numeroDocumento", "format")]
    );
    // 4 other document: 1 to 20.
    assert!(buyer(4, json!("X")).is_ok());
    assert_eq!(
        errors_of(buyer(4, json!("X".repeat(21)))),
        [owned("/numeroDocumento", "length")]
    );
    // Unknown type.
    assert_eq!(
        errors_of(buyer(6, json!("4752918"))),
        [owned("/codigoTipoDocumentoIdentidad", "range")]
    );
    assert_eq!(
        errors_of(buyer(1, json!(-4752918))),
        [owned("/numeroDocumento", "format")]
    );
}

#[test]
fn identity_card_suffix() {
    assert!(check(&with(valid(), "/complemento", json!("1E"))).is_ok());
    assert_eq!(
        only_error(&with(valid(), "/complemento", json!("1e"))),
        owned("/complemento", "format")
    );
    let nit_buyer = with(valid(), "/codigoTipoDocumentoIdentidad", json!(5));
    assert_eq!(
        only_error(&with(nit_buyer, "/numeroDocumento", json!("1020703023"))),
        owned("/complemento", "conflict")
    );
}

#[test]
fn invoice_number_branch_and_point_of_sale() {
    for (pointer, value, code) in [
        ("/numeroFactura", json!(0), "range"),
        ("/numeroFactura", json!(10_000_000_000i64), "range"),
        ("/numeroFactura", json!("125"), "type"),
        ("/numeroFactura", json!(12.5), "type"),
        ("/codigoSucursal", json!(-1), "range"),
        ("/codigoSucursal", json!(10_000), "range"),
        ("/codigoPuntoVenta", json!(10_000), "range"),
        ("/codigoPuntoVenta", json!("1"), "type"),
    ] {
        assert_eq!(
            only_error(&with(valid(), pointer, value.clone())),
            owned(pointer, code),
            "{pointer} = {value}"
        );
    }
    assert!(check(&with(valid(), "/numeroFactura", json!(9_999_999_999i64))).is_ok());
    assert!(check(&with(valid(), "/codigoPuntoVenta", Value::Null)).is_ok());
}

#[test]
fn date_of_issue() {
    for date in [
        "2025-12-31 19:55:00",
        "2025-12-31T19:55:00Z",
        "31/12/2025",
        "2025-02-30T10:00:00",
    ] {
        assert_eq!(
            only_error(&with(valid(), "/fechaEmision", json!(date))),
            owned("/fechaEmision", "format"),
            "{date}"
        );
    }
    // Clock skew: up to 5 minutes ahead is accepted, more is not.
    assert!(check(&with(
        valid(),
        "/fechaEmision",
        json!("2025-12-31T20:05:00")
    ))
    .is_ok());
    assert_eq!(
        only_error(&with(
            valid(),
            "/fechaEmision",
            json!("2025-12-31T20:05:01")
        )),
        owned("/fechaEmision", "date")
    );
    // Age: up to 72 hours.
    assert!(check(&with(
        valid(),
        "/fechaEmision",
        json!("2025-12-28T20:00:00")
    ))
    .is_ok());
    assert_eq!(
        only_error(&with(
            valid(),
            "/fechaEmision",
            json!("2025-12-28T19:59:59.999")
        )),
        owned("/fechaEmision", "date")
    );
    assert!(detail_of(&with(
        valid(),
        "/fechaEmision",
        json!("2025-01-01T00:00:00")
    ))
    .contains("72"));
}

#[test]
fn line_arithmetic_is_exact_to_the_centavo() {
    // 1.5 × 12.33 = 18.495 rounds half up to 18.50; minus 0.50 is 18.00 (accepted above).
    let invoice = with(valid(), "/detalle/1/subTotal", json!(17.99));
    assert_eq!(
        only_error(&invoice),
        owned("/detalle/1/subTotal", "arithmetic")
    );
    assert_eq!(
        detail_of(&invoice),
        "se esperaba 18.00 (cantidad 1.5 × precioUnitario 12.33 − montoDescuento 0.50), se recibió 17.99 / expected 18.00 (quantity 1.5 × unit price 12.33 − discount 0.50), got 17.99"
    );
    // Rounding down below half: 3 × 0.333 is not allowed (3 decimals), but
    // 0.00333 × 100.00 = 0.333 rounds to 0.33.
    let mut invoice = valid();
    invoice["detalle"][0] = json!({
        "actividadEconomica": "620100", "codigoProductoSin": "83141", "codigoProducto": "P",
        "descripcion": "d", "cantidad": 0.00333, "unidadMedida": 58, "precioUnitario": 100,
        "subTotal": 0.33
    });
    let invoice = with(invoice, "/montoTotal", json!(13.33));
    let invoice = with(invoice, "/montoTotalSujetoIva", json!(13.33));
    let invoice = with(invoice, "/montoTotalMoneda", json!(13.33));
    let invoice = with(invoice, "/montoIva", json!(1.73));
    assert!(check(&invoice).is_ok(), "{:?}", check(&invoice));
}

#[test]
fn sums_that_f64_gets_wrong_are_exact() {
    // 0.10 + 0.20 is 0.30000000000000004 in f64; in centavos it is 0.30.
    let line = |price: f64| {
        json!({
            "actividadEconomica": "620100", "codigoProductoSin": "83141", "codigoProducto": "P",
            "descripcion": "d", "cantidad": 1, "unidadMedida": 58, "precioUnitario": price,
            "subTotal": price
        })
    };
    let invoice = with(valid(), "/detalle", json!([line(0.1), line(0.2)]));
    let invoice = with(invoice, "/descuentoAdicional", json!(0));
    let invoice = with(invoice, "/montoTotal", json!(0.3));
    let invoice = with(invoice, "/montoTotalSujetoIva", json!(0.3));
    let invoice = with(invoice, "/montoTotalMoneda", json!(0.3));
    let invoice = with(invoice, "/montoIva", json!(0.04));
    assert_eq!(check(&invoice).unwrap().monto_total, Money(30));
}

#[test]
fn amounts_have_at_most_two_decimals_and_no_sign() {
    // Literal text, so that the number is exactly what a client sends.
    let body = valid()
        .to_string()
        .replace("\"precioUnitario\":45.5", "\"precioUnitario\":45.505");
    assert_eq!(
        errors_of(validate(body.as_bytes(), &limits(), NOW_MS)),
        [owned("/detalle/0/precioUnitario", "decimals")]
    );
    // Trailing zeros do not count.
    let body = valid()
        .to_string()
        .replace("\"precioUnitario\":45.5", "\"precioUnitario\":45.5000");
    assert!(validate(body.as_bytes(), &limits(), NOW_MS).is_ok());
    let body = valid()
        .to_string()
        .replace("\"precioUnitario\":45.5", "\"precioUnitario\":4.55e1");
    assert_eq!(
        errors_of(validate(body.as_bytes(), &limits(), NOW_MS)),
        [owned("/detalle/0/precioUnitario", "format")]
    );
    assert_eq!(
        only_error(&with(valid(), "/detalle/0/precioUnitario", json!("45.50"))),
        owned("/detalle/0/precioUnitario", "type")
    );
    let negative = with(valid(), "/detalle/0/precioUnitario", json!(-45.5));
    assert_eq!(
        errors_of(check(&negative)),
        [owned("/detalle/0/precioUnitario", "range")]
    );
    // Quantities take up to 5 decimals and must be positive.
    assert_eq!(
        only_error(&with(valid(), "/detalle/0/cantidad", json!(0))),
        owned("/detalle/0/cantidad", "range")
    );
    assert_eq!(
        only_error(&with(valid(), "/detalle/0/cantidad", json!(1.000001))),
        owned("/detalle/0/cantidad", "decimals")
    );
    assert_eq!(
        only_error(&with(
            valid(),
            "/detalle/0/cantidad",
            json!(10_000_000_000i64)
        )),
        owned("/detalle/0/cantidad", "range")
    );
    assert_eq!(
        only_error(&with(valid(), "/detalle/0/unidadMedida", json!(0))),
        owned("/detalle/0/unidadMedida", "range")
    );
}

#[test]
fn a_bad_line_does_not_cascade_into_the_totals() {
    // The subtotal cannot be read, so neither it nor the total is checked further.
    let invoice = with(valid(), "/detalle/0/subTotal", json!("91.00"));
    assert_eq!(
        errors_of(check(&invoice)),
        [owned("/detalle/0/subTotal", "type")]
    );
    // A wrong subtotal is reported on the line only: the total is checked against what
    // the line should be, and the stated total is right.
    let invoice = with(valid(), "/detalle/0/subTotal", json!(90));
    assert_eq!(
        errors_of(check(&invoice)),
        [owned("/detalle/0/subTotal", "arithmetic")]
    );
    // A total that follows the wrong subtotal is wrong too.
    let invoice = with(invoice, "/montoTotal", json!(103));
    assert_eq!(
        errors_of(check(&invoice)),
        [
            owned("/detalle/0/subTotal", "arithmetic"),
            owned("/montoTotal", "arithmetic")
        ]
    );
}

#[test]
fn line_discount_cannot_exceed_the_line() {
    let invoice = with(valid(), "/detalle/0/montoDescuento", json!(91.01));
    assert_eq!(
        only_error(&invoice),
        owned("/detalle/0/montoDescuento", "range")
    );
    let invoice = with(valid(), "/detalle/0/montoDescuento", json!(91));
    let invoice = with(invoice, "/detalle/0/subTotal", json!(0));
    let invoice = with(invoice, "/montoTotal", json!(13));
    let invoice = with(invoice, "/montoTotalSujetoIva", json!(13));
    let invoice = with(invoice, "/montoTotalMoneda", json!(13));
    let invoice = with(invoice, "/montoIva", json!(1.69));
    assert!(check(&invoice).is_ok());
}

#[test]
fn total_is_the_sum_of_subtotals_minus_the_additional_discount() {
    let invoice = with(valid(), "/montoTotal", json!(109));
    assert_eq!(only_error(&invoice), owned("/montoTotal", "arithmetic"));
    assert_eq!(
        detail_of(&invoice),
        "se esperaba 104.00 (suma de subTotal 109.00 − descuentoAdicional 5.00), se recibió 109.00 / expected 104.00 (sum of subTotal 109.00 − additional discount 5.00), got 109.00"
    );
    assert_eq!(
        only_error(&with(valid(), "/descuentoAdicional", json!(109.01))),
        owned("/descuentoAdicional", "range")
    );
    assert_eq!(
        only_error(&with(valid(), "/montoTotal", json!(0))),
        owned("/montoTotal", "range")
    );
}

#[test]
fn taxable_amount_and_iva() {
    assert_eq!(
        only_error(&with(valid(), "/montoTotalSujetoIva", json!(100))),
        owned("/montoTotalSujetoIva", "arithmetic")
    );
    // A gift card lowers the taxable amount: 104.00 − 4.00 = 100.00, IVA 13.00.
    let invoice = with(valid(), "/montoTotalSujetoIva", json!(100));
    let invoice = with(invoice, "/montoGiftCard", json!(4));
    let invoice = with(invoice, "/montoIva", json!(13));
    let summary = check(&invoice).unwrap();
    assert_eq!(summary.monto_total_sujeto_iva, Money(10_000));
    assert_eq!(summary.monto_iva, Money(1_300));
    assert_eq!(
        only_error(&with(valid(), "/montoGiftCard", json!(104.01))),
        owned("/montoGiftCard", "range")
    );
    // IVA: 13% of 104.00 is 13.52.
    let invoice = with(valid(), "/montoIva", json!(13.53));
    assert_eq!(only_error(&invoice), owned("/montoIva", "arithmetic"));
    assert!(
        detail_of(&invoice).starts_with("se esperaba 13.52 (13% de montoTotalSujetoIva 104.00)")
    );
    // Half up: 13% of 0.50 is 0.065, which is 0.07.
    assert_eq!(decimal::div_round_half_up(50 * IVA_PERCENT, 100), 7);
}

#[test]
fn currency_and_exchange_rate() {
    assert_eq!(
        only_error(&with(valid(), "/codigoMoneda", json!(2))),
        owned("/codigoMoneda", "not-allowed")
    );
    assert_eq!(
        only_error(&with(valid(), "/tipoCambio", json!(6.96))),
        owned("/tipoCambio", "range")
    );
    assert_eq!(
        only_error(&with(valid(), "/montoTotalMoneda", json!(103))),
        owned("/montoTotalMoneda", "arithmetic")
    );
    // Another currency, when policy accepts it: 104.00 / 6.96 = 14.9425... = 14.94.
    let dollars = Limits {
        currencies: vec![1, 2],
        ..limits()
    };
    let invoice = with(valid(), "/codigoMoneda", json!(2));
    let invoice = with(invoice, "/tipoCambio", json!(6.96));
    assert_eq!(
        errors_of(check_with(&invoice, &dollars)),
        [owned("/montoTotalMoneda", "arithmetic")]
    );
    let invoice = with(invoice, "/montoTotalMoneda", json!(14.94));
    assert!(check_with(&invoice, &dollars).is_ok());
    assert_eq!(
        errors_of(check_with(
            &without(invoice.clone(), "tipoCambio"),
            &dollars
        )),
        [owned("/tipoCambio", "required")]
    );
    assert_eq!(
        errors_of(check_with(
            &without(invoice.clone(), "montoTotalMoneda"),
            &dollars
        )),
        [owned("/montoTotalMoneda", "required")]
    );
    assert_eq!(
        errors_of(check_with(
            &with(invoice, "/tipoCambio", json!(0)),
            &dollars
        )),
        [owned("/tipoCambio", "range")]
    );
}

#[test]
fn lines_count_and_shape() {
    assert_eq!(
        only_error(&with(valid(), "/detalle", json!([]))),
        owned("/detalle", "empty")
    );
    assert_eq!(
        only_error(&with(valid(), "/detalle", json!({}))),
        owned("/detalle", "type")
    );
    let errors = errors_of(check(&with(valid(), "/detalle/0", json!("línea"))));
    assert_eq!(errors[0], owned("/detalle/0", "type"));
    let two = Limits {
        max_items: 1,
        ..limits()
    };
    assert_eq!(
        errors_of(check_with(&valid(), &two)),
        [owned("/detalle", "too-many")]
    );
}

#[test]
fn unknown_and_repeated_members() {
    let invoice = with(valid(), "/detalle/1/subtotal", json!(18));
    assert_eq!(
        only_error(&invoice),
        owned("/detalle/1/subtotal", "unknown-field")
    );
    let invoice = with(valid(), "/descuento", json!(1));
    assert_eq!(only_error(&invoice), owned("/descuento", "unknown-field"));
    let open = Limits {
        allow_unknown_fields: true,
        ..limits()
    };
    assert!(check_with(&invoice, &open).is_ok());
    // A repeated member is refused even when unknown members are allowed: the tax
    // authority's parser could read the other copy.
    let body = valid()
        .to_string()
        .replacen("{", r#"{"montoTotal":1.00,"#, 1);
    assert_eq!(
        errors_of(validate(body.as_bytes(), &open, NOW_MS)),
        [owned("/montoTotal", "duplicate-key")]
    );
}

#[test]
fn payment_card_must_be_masked() {
    assert!(check(&with(valid(), "/numeroTarjeta", json!("4797000000007896"))).is_ok());
    assert!(check(&with(valid(), "/numeroTarjeta", json!(4797000000007896i64))).is_ok());
    assert_eq!(
        only_error(&with(valid(), "/numeroTarjeta", json!("4797123456787896"))),
        owned("/numeroTarjeta", "format")
    );
    assert_eq!(
        only_error(&with(valid(), "/numeroTarjeta", json!("479700007896"))),
        owned("/numeroTarjeta", "length")
    );
}

#[test]
fn other_sin_members() {
    assert_eq!(
        only_error(&with(valid(), "/correo", json!("juana.perez"))),
        owned("/correo", "format")
    );
    assert!(check(&with(valid(), "/correo", json!("juana@example.bo"))).is_ok());
    assert_eq!(
        only_error(&with(valid(), "/codigoDocumentoSector", json!(11))),
        owned("/codigoDocumentoSector", "not-allowed")
    );
    assert!(check(&with(valid(), "/codigoDocumentoSector", json!(1))).is_ok());
    assert_eq!(
        only_error(&with(valid(), "/codigoExcepcion", json!(2))),
        owned("/codigoExcepcion", "range")
    );
    assert_eq!(
        only_error(&with(valid(), "/cafc", json!("12-34"))),
        owned("/cafc", "format")
    );
    assert_eq!(
        only_error(&with(valid(), "/codigoMetodoPago", json!(0))),
        owned("/codigoMetodoPago", "range")
    );
}

#[test]
fn malformed_documents() {
    assert!(matches!(
        validate(b"{\"nitEmisor\": ", &limits(), NOW_MS),
        Err(Rejection::Malformed(message)) if message.contains("line 1")
    ));
    assert!(matches!(
        validate(b"\xef\xbb\xbf{}", &limits(), NOW_MS),
        Err(Rejection::Malformed(_))
    ));
    assert_eq!(
        errors_of(validate(b"[]", &limits(), NOW_MS)),
        [owned("", "type")]
    );
    assert_eq!(
        errors_of(validate(b"\"factura\"", &limits(), NOW_MS)),
        [owned("", "type")]
    );
}
