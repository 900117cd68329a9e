//! The test environment (`pruebas`): the plugin plays PPE itself.
//!
//! An entity integrates its whole payment flow before any bank is involved: it registers a
//! debt (a synthetic CPT code, QR payload or card checkout URL comes back), queries its
//! state (`PENDIENTE`), simulates the payer paying with `POST .../pruebas/pagar/{id}`,
//! queries again (`PAGADO`), or lets the validity pass (`EXPIRADO`, by the host clock).
//! Validation, limits and the single-payment rule are those of production.

use crate::audit::{self, Created, Settled};
use crate::config::Settings;
use crate::ids::{self, Seed};
use crate::money::{self, format_centavos, Channel, Method, CURRENCY};
use crate::problem::{self, Rejection};
use crate::single;
use crate::store::{self, Claim, PaymentRecord, QrCode, Settlement, Store, StoredAnswer};
use crate::time::{rfc3339, DAY_MS};
use crate::validation::{self, NewPayment};
use crate::Caller;
use chasqui_plugin_sdk::host::clock;
use chasqui_plugin_sdk::Response;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// How many CPT codes to try before giving up on finding a free one.
const CPT_ATTEMPTS: u32 = 4;

/// A payment's state as answers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the payer.
    Pendiente,
    /// Paid.
    Pagado,
    /// Its validity passed unpaid.
    Expirado,
}

impl State {
    /// The name in answers (`estado`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pendiente => "PENDIENTE",
            State::Pagado => "PAGADO",
            State::Expirado => "EXPIRADO",
        }
    }

    fn of(record: &PaymentRecord, settlement: Option<&Settlement>, now_ms: u64) -> State {
        match (settlement, record.expires_ms) {
            (Some(_), _) => State::Pagado,
            (None, Some(expires)) if now_ms >= expires => State::Expirado,
            (None, _) => State::Pendiente,
        }
    }

    fn message(self) -> &'static str {
        match self {
            State::Pendiente => "Pago pendiente / Payment pending",
            State::Pagado => "Pago realizado / Payment made",
            State::Expirado => "Pago expirado / Payment expired",
        }
    }
}

/// `POST .../transaccion/deuda`: registers a test payment.
pub fn create(settings: &Settings, caller: &Caller, body: &[u8]) -> Response {
    try_create(settings, caller, body).unwrap_or_else(Rejection::into_response)
}

/// `GET .../consulta/estado/{id}`: a test payment's state.
pub fn status(settings: &Settings, caller: &Caller, id: &str) -> Response {
    try_status(settings, caller, id).unwrap_or_else(Rejection::into_response)
}

/// `POST .../pruebas/pagar/{id}`: simulates the payer paying.
pub fn pay(settings: &Settings, caller: &Caller, id: &str, body: &[u8]) -> Response {
    try_pay(settings, caller, id, body).unwrap_or_else(Rejection::into_response)
}

fn try_create(settings: &Settings, caller: &Caller, body: &[u8]) -> Result<Response, Rejection> {
    let entity = caller.entity()?;
    let now = clock::now_ms();
    let payment = validation::parse_create(body, settings, now)?;
    let store = Store {
        retry_after_seconds: settings.retry_after_seconds,
    };
    let claim_key = store::claim_key(caller.env, entity, &payment.debt_code);
    // No read-before-write shortcut for repeats: every request builds its payment and the
    // atomic claim below decides, so the one path that matters under concurrency is the
    // path every repeat takes. Losers discard what they built.
    let seed = ids::seed(&caller.request_id, now, entity, &payment.debt_code);
    let id = ids::payment_id(&seed);
    let ttl = settings.record_ttl(payment.validity_days);
    let expires_ms = payment
        .validity_days
        .map(|days| now.saturating_add(u64::from(days) * DAY_MS));
    let cpt_code = match payment.method {
        Method::Cpt => Some(reserve_cpt(&store, caller, &seed, &id, ttl)?),
        _ => None,
    };
    let qr = (payment.method == Method::Qr).then(|| {
        let qr_id = ids::qr_id(&seed);
        let payload = qr_payload(&qr_id, payment.amount, expires_ms.unwrap_or(now));
        QrCode { id: qr_id, payload }
    });
    let checkout_url =
        (payment.method == Method::Tarjeta).then(|| format!("{}/{id}", settings.test_checkout_url));
    let record = PaymentRecord {
        id: id.clone(),
        entity: entity.to_string(),
        debt_code: payment.debt_code.clone(),
        method: payment.method,
        amount: payment.amount,
        description: payment.description.clone(),
        payer: payment.payer.clone(),
        created_ms: now,
        expires_ms,
        fee: money::fee(
            settings,
            payment.method,
            payment.amount,
            Channel::of_method(payment.method),
        ),
        cpt_code,
        qr,
        checkout_url,
    };
    if let Err(rejection) = store.set(&store::payment_key(caller.env, &id), &record, ttl) {
        discard(&store, caller, &record);
        return Err(rejection);
    }

    let mut response = answer(
        202,
        "Deuda registrada en el ambiente de pruebas / Debt registered in the test environment",
        datos(&record, None, now),
    );
    // The prefix is the client's own path; a header value must be visible ASCII.
    if caller.prefix.bytes().all(|b| b.is_ascii_graphic()) {
        response = response.with_header(
            "location",
            format!("{}/consulta/estado/{id}", caller.prefix),
        );
    }
    let claim = Claim::Done {
        fingerprint: payment.fingerprint.clone(),
        payment_id: Some(id.clone()),
        method: payment.method.as_str().to_string(),
        answer: StoredAnswer::of_response(&response),
    };
    // The atomic step: of all concurrent identical requests, one stores its claim.
    match store.set_if_absent(&claim_key, &claim, ttl) {
        Ok(None) => {}
        Ok(Some(existing)) => {
            // Request ids are unique, so the winner's payment is never this one; the check
            // keeps a repeated request id from deleting the payment it would replay.
            if !matches!(&existing, Claim::Done { payment_id: Some(won), .. } if *won == id) {
                discard(&store, caller, &record);
            }
            return Ok(existing_answer(settings, &existing, &payment));
        }
        Err(rejection) => {
            discard(&store, caller, &record);
            return Err(rejection);
        }
    }
    audit::payment_created(
        caller,
        &Created {
            entity,
            debt_code: &payment.debt_code,
            method: payment.method,
            amount: payment.amount,
            payment_id: Some(&id),
            fee: record.fee,
        },
    );
    Ok(response)
}

fn existing_answer(settings: &Settings, existing: &Claim, payment: &NewPayment) -> Response {
    single::answer_existing(
        existing,
        &payment.fingerprint,
        &payment.debt_code,
        settings.retry_after_seconds,
    )
}

/// Reserves a CPT code no other live test payment holds.
fn reserve_cpt(
    store: &Store,
    caller: &Caller,
    seed: &Seed,
    id: &str,
    ttl: Duration,
) -> Result<String, Rejection> {
    for attempt in 0..CPT_ATTEMPTS {
        let code = ids::cpt_code(seed, attempt);
        let key = store::cpt_key(caller.env, &code);
        if store.set_if_absent(&key, &id.to_string(), ttl)?.is_none() {
            return Ok(code);
        }
    }
    Err(problem::state_unavailable(
        store.retry_after_seconds,
        "no free CPT code after several attempts",
    ))
}

/// Removes the records of a payment that lost the race for its key (or failed to store).
fn discard(store: &Store, caller: &Caller, record: &PaymentRecord) {
    store.delete_quietly(&store::payment_key(caller.env, &record.id));
    if let Some(code) = &record.cpt_code {
        store.delete_quietly(&store::cpt_key(caller.env, code));
    }
}

/// The test QR's content, pipe-separated:
/// `PPE-PRUEBAS|QR|1|<idQr>|<monto>|BOB|<vencimiento RFC 3339>`.
fn qr_payload(qr_id: &str, amount: u64, expires_ms: u64) -> String {
    format!(
        "PPE-PRUEBAS|QR|1|{qr_id}|{}|{CURRENCY}|{}",
        format_centavos(amount),
        rfc3339(expires_ms)
    )
}

fn try_status(settings: &Settings, caller: &Caller, id: &str) -> Result<Response, Rejection> {
    let entity = caller.entity()?;
    let store = Store {
        retry_after_seconds: settings.retry_after_seconds,
    };
    let record = load_owned(&store, caller, entity, id)?;
    let settlement = store.get::<Settlement>(&store::settled_key(caller.env, id))?;
    let now = clock::now_ms();
    let state = State::of(&record, settlement.as_ref(), now);
    Ok(answer(
        200,
        state.message(),
        datos(&record, settlement.as_ref(), now),
    ))
}

fn try_pay(
    settings: &Settings,
    caller: &Caller,
    id: &str,
    body: &[u8],
) -> Result<Response, Rejection> {
    let entity = caller.entity()?;
    let store = Store {
        retry_after_seconds: settings.retry_after_seconds,
    };
    let record = load_owned(&store, caller, entity, id)?;
    let channel = validation::parse_pay(body, record.method)?;
    let settled_key = store::settled_key(caller.env, id);
    if store.get::<Settlement>(&settled_key)?.is_some() {
        return Err(not_pending(id));
    }
    let now = clock::now_ms();
    if let Some(expires) = record.expires_ms.filter(|&expires| now >= expires) {
        return Err(Rejection::new(
            problem::PAYMENT_EXPIRED,
            format!(
                "payment {id} expired at {}; register a new debt",
                rfc3339(expires)
            ),
        )
        .with("estado", State::Expirado.as_str()));
    }
    // QR and card fees were charged at creation; a CPT's depends on the channel used now.
    let fee_due = match record.method {
        Method::Cpt => money::fee(settings, Method::Cpt, record.amount, Some(channel)),
        _ => None,
    };
    let settlement = Settlement {
        channel: channel.as_str().to_string(),
        paid_ms: now,
        fee: fee_due.or(record.fee).unwrap_or(0),
        request_id: caller.request_id.clone(),
    };
    // Kept as long as the payment itself: the rest of its validity, then the retention.
    let remaining = Duration::from_millis(record.expires_ms.unwrap_or(now).saturating_sub(now));
    let ttl = settings.retention.saturating_add(remaining);
    // Atomic: two concurrent payments of one debt settle it once, and charge one fee.
    if store
        .set_if_absent(&settled_key, &settlement, ttl)?
        .is_some()
    {
        return Err(not_pending(id));
    }
    audit::payment_settled(
        caller,
        &Settled {
            entity,
            payment_id: id,
            method: record.method,
            channel,
            fee_due,
        },
    );
    Ok(answer(
        200,
        State::Pagado.message(),
        datos(&record, Some(&settlement), now),
    ))
}

fn not_pending(id: &str) -> Rejection {
    Rejection::new(
        problem::PAYMENT_NOT_PENDING,
        format!("payment {id} is already paid"),
    )
    .with("estado", State::Pagado.as_str())
}

/// The payment `id` if it exists and belongs to `entity`; otherwise `payment-not-found`
/// (another entity's payment is reported as missing, not as forbidden: ids do not leak).
fn load_owned(
    store: &Store,
    caller: &Caller,
    entity: &str,
    id: &str,
) -> Result<PaymentRecord, Rejection> {
    let not_found = || {
        Rejection::new(
            problem::PAYMENT_NOT_FOUND,
            format!("your entity has no test payment {id:?}"),
        )
    };
    if !ids::is_plausible_id(id) {
        return Err(not_found());
    }
    match store.get::<PaymentRecord>(&store::payment_key(caller.env, id))? {
        Some(record) if record.entity == entity => Ok(record),
        _ => Err(not_found()),
    }
}

/// The `{finalizado, mensaje, datos}` envelope of PPE's answers.
fn answer(status: u16, message: &str, datos: Value) -> Response {
    let body = json!({ "finalizado": true, "mensaje": message, "datos": datos });
    Response::new(status)
        .with_header("content-type", "application/json")
        .with_body(serde_json::to_vec(&body).unwrap_or_default())
}

/// A payment as answers show it.
fn datos(record: &PaymentRecord, settlement: Option<&Settlement>, now_ms: u64) -> Value {
    let state = State::of(record, settlement, now_ms);
    let fee = settlement.map(|s| s.fee).or(record.fee);
    let mut datos = Map::new();
    let mut put = |name: &str, value: Value| {
        datos.insert(name.to_string(), value);
    };
    put("codigoTransaccion", json!(record.id));
    put("codigoOrden", json!(record.debt_code));
    put("metodoPago", json!(record.method.as_str()));
    put("estado", json!(state.as_str()));
    put("montoTotal", json!(format_centavos(record.amount)));
    put("moneda", json!(CURRENCY));
    put("comision", json!(fee.map(format_centavos)));
    put("descripcion", json!(record.description));
    put("fechaCreacion", json!(rfc3339(record.created_ms)));
    put("fechaVencimiento", json!(record.expires_ms.map(rfc3339)));
    put("fechaPago", json!(settlement.map(|s| rfc3339(s.paid_ms))));
    put("canalPago", json!(settlement.map(|s| s.channel.as_str())));
    put("ambiente", json!("pruebas"));
    if let Some(code) = &record.cpt_code {
        put("codigoPago", json!(code));
    }
    if let Some(qr) = &record.qr {
        put(
            "qr",
            json!({
                "idQr": qr.id,
                "contenido": qr.payload,
                "fechaVencimiento": record.expires_ms.map(rfc3339),
            }),
        );
    }
    if let Some(url) = &record.checkout_url {
        put("urlRedireccion", json!(url));
    }
    let payer = &record.payer;
    let mut data = Map::new();
    data.insert("nombresCliente".into(), json!(payer.names));
    data.insert("apellidosCliente".into(), json!(payer.surnames));
    data.insert(
        "numeroDocumentoCliente".into(),
        json!(payer.document_number),
    );
    if let Some(kind) = payer.document_type {
        data.insert("tipoDocumentoCliente".into(), json!(kind));
    }
    if let Some(date) = &payer.birth_date {
        data.insert("fechaNacimientoCliente".into(), json!(date));
    }
    if let Some(email) = &payer.email {
        data.insert("correo".into(), json!(email));
    }
    datos.insert("datosPago".into(), Value::Object(data));
    Value::Object(datos)
}
