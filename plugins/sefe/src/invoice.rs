//! The rules an invoice (the SIN's *compra-venta* invoice, document sector 1) must meet
//! before it reaches the tax authority.
//!
//! Field names are the SIN's (`nitEmisor`, `numeroFactura`, `detalle[].subTotal`, ...).
//! Besides each field's type and format, the arithmetic is checked exactly, in centavos:
//!
//! - each line: `subTotal = round(cantidad × precioUnitario) − montoDescuento`;
//! - `montoTotal = Σ subTotal − descuentoAdicional`;
//! - `montoTotalSujetoIva = montoTotal − montoGiftCard` (the amount IVA applies to);
//! - `montoIva`, when given, `= round(montoTotalSujetoIva × 13 / 100)` (IVA is 13% and is
//!   included in the prices, Ley 843);
//! - with a currency other than the boliviano, `montoTotalMoneda = round(montoTotal /
//!   tipoCambio)`; with bolivianos `tipoCambio` is 1 and `montoTotalMoneda` is `montoTotal`.
//!
//! Rounding is half up to the centavo.

use crate::dates;
use crate::decimal::{self, format_scaled, Money, AMOUNT_SCALE, QUANTITY_SCALE};
use crate::fields::{self, Errors, Object, Presence};
use crate::json;
use crate::problem::FieldError;
use serde_json::value::RawValue;

/// The IVA rate, in percent.
pub const IVA_PERCENT: i128 = 13;
/// The boliviano's currency code.
pub const BOLIVIANO: i64 = 1;
/// The document sector these rules are written for: *factura compra-venta*.
pub const SECTOR_COMPRA_VENTA: i64 = 1;

/// The limits of the rules that policy can tune.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most lines in one invoice.
    pub max_items: usize,
    /// How far ahead of the clock `fechaEmision` may be, in milliseconds.
    pub future_tolerance_ms: i64,
    /// How old `fechaEmision` may be, in milliseconds.
    pub max_age_ms: i64,
    /// Accepted currency codes.
    pub currencies: Vec<u32>,
    /// Whether unknown members pass.
    pub allow_unknown_fields: bool,
}

/// What is kept of a valid invoice: enough to answer, audit and find it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// The issuer's NIT (digits).
    pub nit_emisor: String,
    /// The issuer's business name.
    pub razon_social_emisor: String,
    /// The invoice number.
    pub numero_factura: i64,
    /// The branch (0 is the head office).
    pub codigo_sucursal: i64,
    /// The point of sale, if any.
    pub codigo_punto_venta: Option<i64>,
    /// The date of issue as sent (local time of Bolivia).
    pub fecha_emision: String,
    /// The currency code.
    pub codigo_moneda: i64,
    /// The total, in bolivianos.
    pub monto_total: Money,
    /// The amount IVA applies to.
    pub monto_total_sujeto_iva: Money,
    /// The IVA included in it (13%).
    pub monto_iva: Money,
    /// The number of lines.
    pub lines: usize,
}

/// Why an invoice was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The body is not JSON (serde_json's message, with line and column).
    Malformed(String),
    /// The body is JSON but breaks rules; never empty.
    Invalid(Vec<FieldError>),
}

/// Checks a NIT: 5 to 13 digits, not starting with 0. (The SIN's own special buyer codes,
/// such as `99001` or `99002`, have this form too.)
fn check_nit(pointer: &str, nit: &str, errors: &mut Errors) -> bool {
    if nit.starts_with('0') {
        errors.push(FieldError::new(
            pointer,
            "format",
            "un NIT no empieza con 0 / a NIT does not start with 0",
        ));
        return false;
    }
    true
}

/// Checks an identity document number by its type (SIN codes): 1 CI, 2 CEX (foreigner's
/// identity card), 3 passport, 4 other document, 5 NIT.
fn check_document(pointer: &str, kind: i64, number: &str, errors: &mut Errors) {
    let alphanumeric = |max: usize| {
        !number.is_empty()
            && number.len() <= max
            && number
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
    };
    let (ok, rule) = match kind {
        1 => (
            (4..=10).contains(&number.len()) && number.bytes().all(|b| b.is_ascii_digit()),
            "una CI tiene de 4 a 10 dígitos (el complemento va en `complemento`) / an identity card number has 4 to 10 digits (the suffix goes in `complemento`)",
        ),
        5 => (
            (5..=13).contains(&number.len())
                && number.bytes().all(|b| b.is_ascii_digit())
                && !number.starts_with('0'),
            "un NIT tiene de 5 a 13 dígitos y no empieza con 0 / a NIT has 5 to 13 digits and does not start with 0",
        ),
        4 => (
            alphanumeric(20),
            "de 1 a 20 letras mayúsculas, dígitos o guiones / 1 to 20 uppercase letters, digits or hyphens",
        ),
        _ => (
            number.len() >= 4 && alphanumeric(20),
            "de 4 a 20 letras mayúsculas, dígitos o guiones / 4 to 20 uppercase letters, digits or hyphens",
        ),
    };
    if !ok {
        errors.push(FieldError::new(pointer, "format", rule));
    }
}

/// A masked card number: 13 to 19 digits, only the first and last four shown, the rest 0
/// (the SIN's rule; a full card number must never travel in an invoice).
fn check_card(pointer: &str, number: &str, errors: &mut Errors) {
    let masked = number.len() >= 13
        && number.bytes().all(|b| b.is_ascii_digit())
        && number[4..number.len() - 4].bytes().all(|b| b == b'0');
    if !masked {
        errors.push(FieldError::new(
            pointer,
            "format",
            "el número de tarjeta debe ir enmascarado: 4 primeros y 4 últimos dígitos, el resto en 0 / the card number must be masked: first and last 4 digits, the rest 0",
        ));
    }
}

fn check_email(pointer: &str, email: &str, errors: &mut Errors) {
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    };
    if !valid {
        errors.push(FieldError::new(
            pointer,
            "format",
            "no es un correo electrónico / not an email address",
        ));
    }
}

fn check_chars(
    pointer: &str,
    value: &str,
    allowed: impl Fn(char) -> bool,
    rule: &str,
    errors: &mut Errors,
) {
    if !value.chars().all(allowed) {
        errors.push(FieldError::new(pointer, "format", rule));
    }
}

fn mismatch(
    pointer: &str,
    expected: i128,
    got: i128,
    formula_es: &str,
    formula_en: &str,
) -> FieldError {
    let (expected, got) = (Money(expected), Money(got));
    FieldError::new(
        pointer,
        "arithmetic",
        format!(
            "se esperaba {expected} ({formula_es}), se recibió {got} / expected {expected} ({formula_en}), got {got}"
        ),
    )
}

/// What a line adds to the total: its subtotal as computed from quantity, price and
/// discount when those could be read, otherwise as stated, `None` if neither is known.
/// Totals are checked against computed values, so a wrong line is reported on the line
/// and not again on every total that depends on it.
struct Line {
    subtotal: Option<i128>,
}

fn check_line(raw: &RawValue, pointer: &str, limits: &Limits, errors: &mut Errors) -> Line {
    let Some(mut item) = Object::read(raw, pointer, errors) else {
        return Line { subtotal: None };
    };
    fields::digits(
        &mut item,
        "actividadEconomica",
        Presence::Required,
        (1, 10),
        errors,
    );
    fields::digits(
        &mut item,
        "codigoProductoSin",
        Presence::Required,
        (1, 10),
        errors,
    );
    fields::text(&mut item, "codigoProducto", Presence::Required, 50, errors);
    fields::text(&mut item, "descripcion", Presence::Required, 500, errors);
    let quantity = fields::scaled(
        &mut item,
        "cantidad",
        Presence::Required,
        (QUANTITY_SCALE, 10),
        true,
        errors,
    );
    fields::integer(
        &mut item,
        "unidadMedida",
        Presence::Required,
        (1, 999),
        errors,
    );
    let price = fields::amount(&mut item, "precioUnitario", Presence::Required, errors);
    let discount = fields::amount_or_zero(&mut item, "montoDescuento", errors);
    let subtotal = fields::amount(&mut item, "subTotal", Presence::Required, errors);
    fields::text(&mut item, "numeroSerie", Presence::Optional, 100, errors);
    fields::text(&mut item, "numeroImei", Presence::Optional, 100, errors);

    let mut computed = None;
    if let (Some(quantity), Some(price), Some(discount)) = (quantity, price, discount) {
        let gross = decimal::div_round_half_up(quantity * price, decimal::pow10(QUANTITY_SCALE));
        if discount > gross {
            errors.push(FieldError::new(
                item.pointer_of("montoDescuento"),
                "range",
                format!(
                    "el descuento supera cantidad × precioUnitario ({}) / the discount exceeds quantity × unit price ({})",
                    Money(gross),
                    Money(gross)
                ),
            ));
        } else if let Some(subtotal) = subtotal {
            let expected = gross - discount;
            computed = Some(expected);
            if subtotal != expected {
                let quantity = format_scaled(quantity, QUANTITY_SCALE);
                let (price, discount) = (Money(price), Money(discount));
                errors.push(mismatch(
                    &item.pointer_of("subTotal"),
                    expected,
                    subtotal,
                    &format!(
                        "cantidad {quantity} × precioUnitario {price} − montoDescuento {discount}"
                    ),
                    &format!("quantity {quantity} × unit price {price} − discount {discount}"),
                ));
            }
        }
    }
    item.finish(limits.allow_unknown_fields, errors);
    Line {
        subtotal: computed.or(subtotal),
    }
}

/// Checks an invoice body against every rule, at `now_ms` (the host's clock).
pub fn validate(body: &[u8], limits: &Limits, now_ms: u64) -> Result<Invoice, Rejection> {
    let document = json::parse_document(body).map_err(Rejection::Malformed)?;
    let mut errors = Vec::new();
    let Some(mut invoice) = Object::read(document, "", &mut errors) else {
        return Err(Rejection::Invalid(errors));
    };
    let errors = &mut errors;
    let object = &mut invoice;

    // The issuer.
    let nit_emisor = fields::digits(object, "nitEmisor", Presence::Required, (5, 13), errors)
        .filter(|nit| check_nit(&object.pointer_of("nitEmisor"), nit, errors));
    let razon_social_emisor =
        fields::text(object, "razonSocialEmisor", Presence::Required, 200, errors);
    fields::text(object, "municipio", Presence::Optional, 100, errors);
    if let Some(phone) = fields::text(object, "telefono", Presence::Optional, 25, errors) {
        check_chars(
            &object.pointer_of("telefono"),
            &phone,
            |c| c.is_ascii_digit() || " +-()".contains(c),
            "solo dígitos, espacios y + - ( ) / digits, spaces and + - ( ) only",
            errors,
        );
    }
    fields::text(object, "direccion", Presence::Optional, 500, errors);

    // Where and when.
    let numero_factura = fields::integer(
        object,
        "numeroFactura",
        Presence::Required,
        (1, 9_999_999_999),
        errors,
    );
    let codigo_sucursal = fields::integer(
        object,
        "codigoSucursal",
        Presence::Required,
        (0, 9999),
        errors,
    );
    let codigo_punto_venta = fields::integer(
        object,
        "codigoPuntoVenta",
        Presence::Optional,
        (0, 9999),
        errors,
    );
    let fecha_emision = fields::text(object, "fechaEmision", Presence::Required, 23, errors)
        .filter(|date| {
            check_date(
                &object.pointer_of("fechaEmision"),
                date,
                limits,
                now_ms,
                errors,
            )
        });

    // The buyer.
    fields::text(object, "nombreRazonSocial", Presence::Required, 500, errors);
    let document_kind = fields::integer(
        object,
        "codigoTipoDocumentoIdentidad",
        Presence::Required,
        (1, 5),
        errors,
    );
    if let Some(number) =
        fields::identifier(object, "numeroDocumento", Presence::Required, 20, errors)
    {
        if let Some(kind) = document_kind {
            check_document(&object.pointer_of("numeroDocumento"), kind, &number, errors);
        }
    }
    if let Some(suffix) = fields::text(object, "complemento", Presence::Optional, 5, errors) {
        let pointer = object.pointer_of("complemento");
        if document_kind.is_some_and(|kind| kind != 1) {
            errors.push(FieldError::new(
                pointer,
                "conflict",
                "solo una CI (codigoTipoDocumentoIdentidad 1) lleva complemento / only an identity card (codigoTipoDocumentoIdentidad 1) has a suffix",
            ));
        } else {
            check_chars(
                &pointer,
                &suffix,
                |c| c.is_ascii_digit() || c.is_ascii_uppercase(),
                "letras mayúsculas y dígitos / uppercase letters and digits",
                errors,
            );
        }
    }
    fields::text(object, "codigoCliente", Presence::Optional, 100, errors);
    if let Some(email) = fields::text(object, "correo", Presence::Optional, 254, errors) {
        check_email(&object.pointer_of("correo"), &email, errors);
    }
    fields::integer(
        object,
        "codigoMetodoPago",
        Presence::Optional,
        (1, 999),
        errors,
    );
    if let Some(card) = fields::digits(
        object,
        "numeroTarjeta",
        Presence::Optional,
        (13, 19),
        errors,
    ) {
        check_card(&object.pointer_of("numeroTarjeta"), &card, errors);
    }

    // Currency.
    let codigo_moneda =
        fields::integer(object, "codigoMoneda", Presence::Required, (1, 999), errors);
    if let Some(code) = codigo_moneda {
        let allowed = u32::try_from(code).is_ok_and(|code| limits.currencies.contains(&code));
        if !allowed {
            let list: Vec<String> = limits.currencies.iter().map(u32::to_string).collect();
            errors.push(FieldError::new(
                object.pointer_of("codigoMoneda"),
                "not-allowed",
                format!(
                    "moneda no admitida; se admite: {} / currency not accepted; accepted: {}",
                    list.join(", "),
                    list.join(", ")
                ),
            ));
        }
    }
    let exchange_rate = fields::scaled(
        object,
        "tipoCambio",
        Presence::Optional,
        (QUANTITY_SCALE, 6),
        true,
        errors,
    );
    let total_in_currency = fields::amount(object, "montoTotalMoneda", Presence::Optional, errors);

    // Totals.
    let additional_discount = fields::amount_or_zero(object, "descuentoAdicional", errors);
    let gift_card = fields::amount_or_zero(object, "montoGiftCard", errors);
    let total = fields::scaled(
        object,
        "montoTotal",
        Presence::Required,
        (AMOUNT_SCALE, fields::AMOUNT_DIGITS),
        true,
        errors,
    );
    let taxable = fields::amount(object, "montoTotalSujetoIva", Presence::Required, errors);
    let iva = fields::amount(object, "montoIva", Presence::Optional, errors);

    // Other SIN fields.
    fields::integer(
        object,
        "codigoExcepcion",
        Presence::Optional,
        (0, 1),
        errors,
    );
    if let Some(cafc) = fields::text(object, "cafc", Presence::Optional, 50, errors) {
        check_chars(
            &object.pointer_of("cafc"),
            &cafc,
            |c| c.is_ascii_alphanumeric(),
            "letras y dígitos / letters and digits",
            errors,
        );
    }
    fields::text(object, "leyenda", Presence::Optional, 500, errors);
    fields::text(object, "usuario", Presence::Optional, 100, errors);
    if let Some(sector) = fields::integer(
        object,
        "codigoDocumentoSector",
        Presence::Optional,
        (1, 99),
        errors,
    ) {
        if sector != SECTOR_COMPRA_VENTA {
            errors.push(FieldError::new(
                object.pointer_of("codigoDocumentoSector"),
                "not-allowed",
                "solo se admite el sector 1 (compra-venta) / only sector 1 (compra-venta) is accepted",
            ));
        }
    }

    // The lines.
    let mut lines = 0;
    let mut sum: Option<i128> = None;
    if let Some((pointer, items)) = fields::array(object, "detalle", Presence::Required, errors) {
        lines = items.len();
        if items.is_empty() {
            errors.push(FieldError::new(
                &pointer,
                "empty",
                "la factura necesita al menos una línea / the invoice needs at least one line",
            ));
        } else if items.len() > limits.max_items {
            errors.push(FieldError::new(
                &pointer,
                "too-many",
                format!(
                    "{} líneas; el máximo es {} / {} lines; at most {} allowed",
                    items.len(),
                    limits.max_items,
                    items.len(),
                    limits.max_items
                ),
            ));
        } else {
            let mut all = Some(0i128);
            for (index, raw) in items.iter().enumerate() {
                let line = check_line(raw, &format!("{pointer}/{index}"), limits, errors);
                all = all.zip(line.subtotal).map(|(sum, subtotal)| sum + subtotal);
            }
            sum = all;
        }
    }

    // Arithmetic of the totals, each checked from the stated values it depends on, and
    // only when those could be read (a bad line is reported once, not again in the total).
    if let (Some(sum), Some(discount)) = (sum, additional_discount) {
        if discount > sum {
            errors.push(FieldError::new(
                object.pointer_of("descuentoAdicional"),
                "range",
                format!(
                    "supera la suma de los subtotales ({}) / exceeds the sum of the subtotals ({})",
                    Money(sum),
                    Money(sum)
                ),
            ));
        } else if let Some(total) = total {
            if total != sum - discount {
                let (sum, discount) = (Money(sum), Money(discount));
                errors.push(mismatch(
                    &object.pointer_of("montoTotal"),
                    sum.0 - discount.0,
                    total,
                    &format!("suma de subTotal {sum} − descuentoAdicional {discount}"),
                    &format!("sum of subTotal {sum} − additional discount {discount}"),
                ));
            }
        }
    }
    // The total as it should be, where it can be computed, else as stated.
    let total_known = match (sum, additional_discount) {
        (Some(sum), Some(discount)) if discount <= sum => Some(sum - discount),
        _ => total,
    };
    if let (Some(total), Some(gift_card)) = (total_known, gift_card) {
        if gift_card > total {
            errors.push(FieldError::new(
                object.pointer_of("montoGiftCard"),
                "range",
                "supera montoTotal / exceeds montoTotal",
            ));
        } else if let Some(taxable) = taxable {
            if taxable != total - gift_card {
                let (total, gift_card) = (Money(total), Money(gift_card));
                errors.push(mismatch(
                    &object.pointer_of("montoTotalSujetoIva"),
                    total.0 - gift_card.0,
                    taxable,
                    &format!("montoTotal {total} − montoGiftCard {gift_card}"),
                    &format!("total {total} − gift card {gift_card}"),
                ));
            }
        }
    }
    let taxable_known = match (total_known, gift_card) {
        (Some(total), Some(gift_card)) if gift_card <= total => Some(total - gift_card),
        _ => taxable,
    };
    let iva_expected =
        taxable_known.map(|taxable| decimal::div_round_half_up(taxable * IVA_PERCENT, 100));
    if let (Some(expected), Some(iva)) = (iva_expected, iva) {
        if iva != expected {
            let base = Money(taxable_known.unwrap_or_default());
            errors.push(mismatch(
                &object.pointer_of("montoIva"),
                expected,
                iva,
                &format!("13% de montoTotalSujetoIva {base}"),
                &format!("13% of the taxable amount {base}"),
            ));
        }
    }
    if let (Some(code), Some(total)) = (codigo_moneda, total_known) {
        check_currency_totals(
            object,
            code,
            total,
            exchange_rate,
            total_in_currency,
            errors,
        );
    }

    invoice.finish(limits.allow_unknown_fields, errors);
    if !errors.is_empty() {
        return Err(Rejection::Invalid(std::mem::take(errors)));
    }
    match (
        nit_emisor,
        razon_social_emisor,
        numero_factura,
        codigo_sucursal,
        fecha_emision,
        codigo_moneda,
        total,
        taxable,
        iva_expected,
    ) {
        (
            Some(nit_emisor),
            Some(razon_social_emisor),
            Some(numero_factura),
            Some(codigo_sucursal),
            Some(fecha_emision),
            Some(codigo_moneda),
            Some(total),
            Some(taxable),
            Some(iva),
        ) => Ok(Invoice {
            nit_emisor,
            razon_social_emisor,
            numero_factura,
            codigo_sucursal,
            codigo_punto_venta,
            fecha_emision,
            codigo_moneda,
            monto_total: Money(total),
            monto_total_sujeto_iva: Money(taxable),
            monto_iva: Money(iva),
            lines,
        }),
        // Every required value above records an error when missing, so this is unreachable;
        // answer a problem rather than trap if a change ever breaks that.
        _ => Err(Rejection::Invalid(vec![FieldError::new(
            "",
            "required",
            "faltan campos obligatorios / required members are missing",
        )])),
    }
}

fn check_date(
    pointer: &str,
    date: &str,
    limits: &Limits,
    now_ms: u64,
    errors: &mut Errors,
) -> bool {
    let Some(instant) = dates::parse_local_datetime(date) else {
        errors.push(FieldError::new(
            pointer,
            "format",
            "use AAAA-MM-DDTHH:MM:SS[.mmm], hora local de Bolivia / use YYYY-MM-DDTHH:MM:SS[.mmm], local time of Bolivia",
        ));
        return false;
    };
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    if instant > now.saturating_add(limits.future_tolerance_ms) {
        errors.push(FieldError::new(
            pointer,
            "date",
            "la fecha de emisión está en el futuro / the date of issue is in the future",
        ));
        return false;
    }
    if instant < now.saturating_sub(limits.max_age_ms) {
        let hours = limits.max_age_ms / 3_600_000;
        errors.push(FieldError::new(
            pointer,
            "date",
            format!(
                "la fecha de emisión tiene más de {hours} horas / the date of issue is more than {hours} hours old"
            ),
        ));
        return false;
    }
    true
}

fn check_currency_totals(
    object: &Object,
    code: i64,
    total: i128,
    exchange_rate: Option<i128>,
    total_in_currency: Option<i128>,
    errors: &mut Errors,
) {
    let one = decimal::pow10(QUANTITY_SCALE);
    if code == BOLIVIANO {
        if exchange_rate.is_some_and(|rate| rate != one) {
            errors.push(FieldError::new(
                object.pointer_of("tipoCambio"),
                "range",
                "en bolivianos el tipo de cambio es 1 / in bolivianos the exchange rate is 1",
            ));
        }
        if let Some(in_currency) = total_in_currency {
            if in_currency != total {
                errors.push(mismatch(
                    &object.pointer_of("montoTotalMoneda"),
                    total,
                    in_currency,
                    "en bolivianos es montoTotal",
                    "in bolivianos it is the total",
                ));
            }
        }
        return;
    }
    let Some(rate) = exchange_rate else {
        if !errors
            .iter()
            .any(|e| e.pointer == object.pointer_of("tipoCambio"))
        {
            errors.push(FieldError::new(
                object.pointer_of("tipoCambio"),
                "required",
                "es obligatorio con una moneda distinta del boliviano / is required with a currency other than the boliviano",
            ));
        }
        return;
    };
    let expected = decimal::div_round_half_up(total * one, rate);
    match total_in_currency {
        None => {
            if !errors
                .iter()
                .any(|e| e.pointer == object.pointer_of("montoTotalMoneda"))
            {
                errors.push(FieldError::new(
                    object.pointer_of("montoTotalMoneda"),
                    "required",
                    "es obligatorio con una moneda distinta del boliviano / is required with a currency other than the boliviano",
                ));
            }
        }
        Some(in_currency) if in_currency != expected => {
            let rate = format_scaled(rate, QUANTITY_SCALE);
            errors.push(mismatch(
                &object.pointer_of("montoTotalMoneda"),
                expected,
                in_currency,
                &format!("montoTotal {} / tipoCambio {rate}", Money(total)),
                &format!("total {} / exchange rate {rate}", Money(total)),
            ));
        }
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests;
