//! Validation of request bodies, identical in both environments.
//!
//! A debt request (`POST .../transaccion/deuda`) follows the field names of PPE's public
//! API as existing clients send them (`codigoOrden`, `descripcion`, `datosPago` with
//! `montoTotal`, ...) and adds `metodoPago` and `vigenciaDias`. Members the plugin does not
//! know (`productos`, `cuentaBancaria`, ...) are allowed: in `produccion` they reach PPE
//! unchanged, and they are part of the single-payment fingerprint.

use crate::config::{Settings, QR_VALIDITY_DAYS};
use crate::ids::hex;
use crate::json::{canonical, parse_strict};
use crate::money::{format_centavos, parse_amount, Channel, Method, CURRENCY};
use crate::problem::{self, Rejection};
use crate::time;
use chasqui_plugin_sdk::host::crypto;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Longest debt code (`codigoOrden`), in characters.
pub const MAX_DEBT_CODE_CHARS: usize = 64;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 255;
/// Longest name or surname, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest identity document number, in characters.
pub const MAX_DOCUMENT_CHARS: usize = 20;
/// Longest e-mail address, in characters (RFC 5321).
pub const MAX_EMAIL_CHARS: usize = 254;

/// A validated debt request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPayment {
    /// The entity's debt code (`codigoOrden`), as text.
    pub debt_code: String,
    /// The payment method.
    pub method: Method,
    /// The amount, in centavos.
    pub amount: u64,
    /// Days the payment stays payable (`None` for a card: no validity).
    pub validity_days: Option<u32>,
    /// What is being paid.
    pub description: String,
    /// Who pays.
    pub payer: Payer,
    /// SHA-256 (hex) of the request's canonical content: equal for two requests that ask
    /// for the same payment, however they were spelled.
    pub fingerprint: String,
}

/// The payer, as the debt request gives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Payer {
    /// Given names (`nombresCliente`).
    pub names: String,
    /// Surnames (`apellidosCliente`).
    pub surnames: String,
    /// Document type code (`tipoDocumentoCliente`, 1 = cédula de identidad).
    pub document_type: Option<u64>,
    /// Document number (`numeroDocumentoCliente`).
    pub document_number: String,
    /// Birth date `YYYY-MM-DD` (`fechaNacimientoCliente`).
    pub birth_date: Option<String>,
    /// E-mail (`correo`).
    pub email: Option<String>,
}

/// Reads the raw text of `datosPago.montoTotal` without interpreting it.
#[derive(Deserialize)]
struct AmountProbe<'a> {
    #[serde(rename = "datosPago", borrow, default)]
    payment_data: Option<PaymentDataProbe<'a>>,
}

#[derive(Deserialize)]
struct PaymentDataProbe<'a> {
    #[serde(rename = "montoTotal", borrow, default)]
    amount: Option<&'a RawValue>,
}

/// Parses the body as a strict JSON object (see [`crate::json`]); empty means `{}` only
/// when `empty_ok`.
pub fn parse_object(body: &[u8], empty_ok: bool) -> Result<(&str, Map<String, Value>), Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        if empty_ok {
            return Ok(("{}", Map::new()));
        }
        return Err(Rejection::new(
            problem::BODY_REQUIRED,
            "this route needs a JSON object as its body",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| Rejection::new(problem::INVALID_JSON, "the body is not UTF-8 text"))?;
    match parse_strict(text) {
        Ok(Value::Object(map)) => Ok((text, map)),
        Ok(_) => Err(Rejection::new(
            problem::INVALID_JSON,
            "the body must be a JSON object",
        )),
        Err(err) => Err(Rejection::new(
            problem::INVALID_JSON,
            format!("the body is not valid JSON: {err}"),
        )),
    }
}

/// Validates a debt request. `now_ms` bounds the payer's birth date.
pub fn parse_create(
    body: &[u8],
    settings: &Settings,
    now_ms: u64,
) -> Result<NewPayment, Rejection> {
    let (text, root) = parse_object(body, false)?;

    let debt_code = code(&root, "codigoOrden", "codigoOrden", MAX_DEBT_CODE_CHARS)?;
    let method = match present(&root, "metodoPago") {
        None => {
            return Err(Rejection::new(
                problem::INVALID_METHOD,
                "metodoPago is required: CPT, QR or TARJETA",
            )
            .with("field", "metodoPago"))
        }
        Some(Value::String(name)) => Method::parse(name).ok_or_else(|| {
            Rejection::new(
                problem::INVALID_METHOD,
                format!("metodoPago {name:?} is not one of CPT, QR or TARJETA"),
            )
            .with("field", "metodoPago")
        })?,
        Some(_) => {
            return Err(Rejection::new(
                problem::INVALID_METHOD,
                "metodoPago must be a string: CPT, QR or TARJETA",
            )
            .with("field", "metodoPago"))
        }
    };
    let description = text_field(&root, "descripcion", "descripcion", MAX_DESCRIPTION_CHARS)?
        .ok_or_else(|| Rejection::field("descripcion", "descripcion is required"))?;

    let data = match present(&root, "datosPago") {
        Some(Value::Object(data)) => data,
        Some(_) => {
            return Err(Rejection::field(
                "datosPago",
                "datosPago must be an object with the payer and the amount",
            ))
        }
        None => return Err(Rejection::field("datosPago", "datosPago is required")),
    };
    let payer = payer(data, now_ms)?;
    if let Some(currency) = present(data, "moneda") {
        if currency.as_str() != Some(CURRENCY) {
            return Err(Rejection::new(
                problem::UNSUPPORTED_CURRENCY,
                format!("datosPago.moneda must be \"{CURRENCY}\"; PPE charges in bolivianos only"),
            )
            .with("field", "datosPago.moneda"));
        }
    }
    if let Some(rate) = present(data, "tipoCambioMoneda") {
        if rate.as_u64() != Some(1) {
            return Err(Rejection::field(
                "datosPago.tipoCambioMoneda",
                "datosPago.tipoCambioMoneda must be 1 for BOB",
            ));
        }
    }
    let amount = amount(text, data)?;

    let validity_days = validity(&root, method, settings)?;
    if let Some(products) = present(&root, "productos") {
        if !products.is_array() {
            return Err(Rejection::field("productos", "productos must be an array"));
        }
    }

    let limit = settings.limit(method);
    if amount > limit {
        return Err(Rejection::new(
            problem::AMOUNT_OVER_LIMIT,
            format!(
                "{} payments are limited to Bs {}; this one is Bs {}",
                method.as_str(),
                format_centavos(limit),
                format_centavos(amount)
            ),
        )
        .with("metodoPago", method.as_str())
        .with("limite", format_centavos(limit)));
    }

    let fingerprint = fingerprint(root, &debt_code, amount, validity_days, &payer);
    Ok(NewPayment {
        debt_code,
        method,
        amount,
        validity_days,
        description,
        payer,
        fingerprint,
    })
}

/// Validates the body of a simulated payment: `{"canal": "DIGITAL" | "CAJA"}` for a CPT,
/// an empty body or `{}` for QR and card payments. Returns the channel.
pub fn parse_pay(body: &[u8], method: Method) -> Result<Channel, Rejection> {
    let (_, root) = parse_object(body, true)?;
    let given = present(&root, "canal");
    match (Channel::of_method(method), given) {
        (Some(channel), None) => Ok(channel),
        (Some(_), Some(_)) => Err(Rejection::new(
            problem::INVALID_CHANNEL,
            format!(
                "canal applies to CPT payments only; a {} payment has one channel",
                method.as_str()
            ),
        )
        .with("field", "canal")),
        (None, Some(Value::String(name))) => Channel::parse_cpt(name).ok_or_else(|| {
            Rejection::new(
                problem::INVALID_CHANNEL,
                format!("canal {name:?} is not DIGITAL or CAJA"),
            )
            .with("field", "canal")
        }),
        (None, _) => Err(Rejection::new(
            problem::INVALID_CHANNEL,
            "a CPT payment needs canal: DIGITAL (app, internet banking) or CAJA (bank desk)",
        )
        .with("field", "canal")),
    }
}

/// The member `name`, unless absent or `null`.
fn present<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).filter(|value| !value.is_null())
}

/// An optional text member: a string that is not blank, has no control characters and at
/// most `max_chars` characters.
fn text_field(
    object: &Map<String, Value>,
    name: &str,
    path: &str,
    max_chars: usize,
) -> Result<Option<String>, Rejection> {
    match present(object, name) {
        None => Ok(None),
        Some(Value::String(text)) => {
            check_text(text, path, max_chars)?;
            Ok(Some(text.clone()))
        }
        Some(_) => Err(Rejection::field(path, format!("{path} must be a string"))),
    }
}

fn check_text(text: &str, path: &str, max_chars: usize) -> Result<(), Rejection> {
    if text.trim().is_empty() {
        return Err(Rejection::field(path, format!("{path} must not be blank")));
    }
    if text.chars().any(char::is_control) {
        return Err(Rejection::field(
            path,
            format!("{path} must not contain control characters"),
        ));
    }
    if text.chars().count() > max_chars {
        return Err(Rejection::field(
            path,
            format!("{path} is longer than {max_chars} characters"),
        ));
    }
    Ok(())
}

/// A required code: a string (no surrounding spaces) or a non-negative integer, as text.
fn code(
    object: &Map<String, Value>,
    name: &str,
    path: &str,
    max_chars: usize,
) -> Result<String, Rejection> {
    let text = match present(object, name) {
        None => return Err(Rejection::field(path, format!("{path} is required"))),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(_) => {
            return Err(Rejection::field(
                path,
                format!("{path} must be a string or a non-negative integer"),
            ))
        }
    };
    check_text(&text, path, max_chars)?;
    if text.trim() != text {
        // "A1" and "A1 " would be two debts to the entity's eyes but one to nobody's.
        return Err(Rejection::field(
            path,
            format!("{path} must not start or end with spaces"),
        ));
    }
    Ok(text)
}

fn payer(data: &Map<String, Value>, now_ms: u64) -> Result<Payer, Rejection> {
    let names = text_field(
        data,
        "nombresCliente",
        "datosPago.nombresCliente",
        MAX_NAME_CHARS,
    )?
    .ok_or_else(|| {
        Rejection::field(
            "datosPago.nombresCliente",
            "datosPago.nombresCliente is required",
        )
    })?;
    let surnames = text_field(
        data,
        "apellidosCliente",
        "datosPago.apellidosCliente",
        MAX_NAME_CHARS,
    )?
    .ok_or_else(|| {
        Rejection::field(
            "datosPago.apellidosCliente",
            "datosPago.apellidosCliente is required",
        )
    })?;
    let document_number = code(
        data,
        "numeroDocumentoCliente",
        "datosPago.numeroDocumentoCliente",
        MAX_DOCUMENT_CHARS,
    )?;
    if !document_number
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Rejection::field(
            "datosPago.numeroDocumentoCliente",
            "datosPago.numeroDocumentoCliente may hold only letters, digits and '-' (e.g. 1234567-1B)",
        ));
    }
    let document_type = match present(data, "tipoDocumentoCliente") {
        None => None,
        Some(value) => match value.as_u64() {
            Some(code @ 1..=99) => Some(code),
            _ => {
                return Err(Rejection::field(
                    "datosPago.tipoDocumentoCliente",
                    "datosPago.tipoDocumentoCliente must be an integer from 1 to 99 (1 = cédula de identidad)",
                ))
            }
        },
    };
    let birth_date = text_field(
        data,
        "fechaNacimientoCliente",
        "datosPago.fechaNacimientoCliente",
        10,
    )?;
    if let Some(date) = &birth_date {
        let today = time::date(now_ms);
        // Dates in this form compare correctly as text.
        if !time::is_calendar_date(date) || date.as_str() < "1900-01-01" || *date > today {
            return Err(Rejection::field(
                "datosPago.fechaNacimientoCliente",
                "datosPago.fechaNacimientoCliente must be a past date written YYYY-MM-DD",
            ));
        }
    }
    let email = text_field(data, "correo", "datosPago.correo", MAX_EMAIL_CHARS)?;
    if let Some(email) = &email {
        if !is_plausible_email(email) {
            return Err(Rejection::field(
                "datosPago.correo",
                "datosPago.correo is not an e-mail address",
            ));
        }
    }
    Ok(Payer {
        names,
        surnames,
        document_type,
        document_number,
        birth_date,
        email,
    })
}

/// One `@`, something before it, a dotted domain after it, no spaces.
fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

fn amount(text: &str, data: &Map<String, Value>) -> Result<u64, Rejection> {
    let field = "datosPago.montoTotal";
    if present(data, "montoTotal").is_none() {
        return Err(
            Rejection::new(problem::INVALID_AMOUNT, "datosPago.montoTotal is required")
                .with("field", field),
        );
    }
    // The strict parse already accepted the document, so the probe can only fail on a
    // document it cannot borrow from; answer that as invalid JSON rather than trap.
    let probe: AmountProbe = serde_json::from_str(text).map_err(|err| {
        Rejection::new(
            problem::INVALID_JSON,
            format!("the body cannot be read: {err}"),
        )
    })?;
    let raw = probe
        .payment_data
        .and_then(|data| data.amount)
        .map(RawValue::get)
        .unwrap_or("null");
    parse_amount(raw)
        .map_err(|err| Rejection::new(problem::INVALID_AMOUNT, err.describe()).with("field", field))
}

fn validity(
    root: &Map<String, Value>,
    method: Method,
    settings: &Settings,
) -> Result<Option<u32>, Rejection> {
    let given = present(root, "vigenciaDias");
    let invalid = |detail: String| {
        Rejection::new(problem::INVALID_VALIDITY, detail).with("field", "vigenciaDias")
    };
    let days = match given {
        None => None,
        Some(value) => match value.as_u64().and_then(|d| u32::try_from(d).ok()) {
            Some(days) => Some(days),
            None => {
                return Err(invalid(
                    "vigenciaDias must be a whole number of days".into(),
                ))
            }
        },
    };
    match method {
        Method::Tarjeta => match days {
            None => Ok(None),
            Some(_) => Err(invalid(
                "card payments have no validity; leave vigenciaDias out".into(),
            )),
        },
        Method::Qr => {
            let days = days.unwrap_or(QR_VALIDITY_DAYS[0]);
            if QR_VALIDITY_DAYS.contains(&days) {
                Ok(Some(days))
            } else {
                Err(invalid(format!(
                    "a QR is valid for 1 or 7 days, not {days}"
                )))
            }
        }
        Method::Cpt => {
            let days = days.unwrap_or(settings.cpt_default_validity_days);
            if (1..=settings.cpt_max_validity_days).contains(&days) {
                Ok(Some(days))
            } else {
                Err(invalid(format!(
                    "a CPT is valid for 1 to {} days, not {days}",
                    settings.cpt_max_validity_days
                )))
            }
        }
    }
}

/// The hash of the request's content with every field in its normalized form, so that
/// `150.5` and `"150.50"`, or a missing and an explicit default `vigenciaDias`, agree.
fn fingerprint(
    mut root: Map<String, Value>,
    debt_code: &str,
    amount: u64,
    validity_days: Option<u32>,
    payer: &Payer,
) -> String {
    root.retain(|_, value| !value.is_null());
    root.insert("codigoOrden".into(), Value::String(debt_code.into()));
    match validity_days {
        Some(days) => root.insert("vigenciaDias".into(), Value::from(days)),
        None => root.remove("vigenciaDias"),
    };
    if let Some(Value::Object(data)) = root.get_mut("datosPago") {
        data.retain(|_, value| !value.is_null());
        data.insert("montoTotal".into(), Value::String(format_centavos(amount)));
        data.insert("moneda".into(), Value::String(CURRENCY.into()));
        data.insert("tipoCambioMoneda".into(), Value::from(1));
        data.insert(
            "numeroDocumentoCliente".into(),
            Value::String(payer.document_number.clone()),
        );
    }
    hex(&crypto::sha256(canonical(&Value::Object(root)).as_bytes()))
}
