//! The test environment (`pruebas`): the plugin plays the SEFE service itself.
//!
//! An entity integrates its whole flow before any tax authority is involved: a valid
//! emission gets a synthetic CUF and the state `VALIDADA`, and the invoice's summary is
//! kept in the plugin's key-value store so that its state can be queried and it can be
//! annulled (`ANULADA`). Invoices belong to the consumer entity that emitted them: another
//! entity querying or annulling the same CUF gets 404, as if it did not exist.
//!
//! The synthetic CUF is 48 uppercase hexadecimal digits: the first 24 bytes of
//! HMAC-SHA-256 (computed by the host) over the gateway's request id, the host's wall and
//! monotonic clocks, the consumer entity and the invoice's NIT, branch, point of sale and
//! number. Unique in practice (192 bits), it carries no meaning and no fiscal value.

use crate::annulment::Annulment;
use crate::audit::{self, Evidence};
use crate::dates;
use crate::decimal::Money;
use crate::invoice::Invoice;
use crate::problem::{self, Kind};
use chasqui_plugin_sdk::host::{self, context::Context, kv::KvError};
use chasqui_plugin_sdk::Response;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The HMAC key of synthetic CUFs: a fixed label, the uniqueness comes from the data.
const CUF_KEY: &[u8] = b"chasqui/sefe/pruebas/cuf/v1";
/// The version of the stored record's format.
const RECORD_VERSION: u8 = 1;
/// The state of a valid invoice.
pub const VALIDATED: &str = "VALIDADA";
/// The state of an annulled invoice.
pub const ANNULLED: &str = "ANULADA";

/// What the test environment keeps of an invoice (the kv value, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInvoice {
    /// The record format's version.
    pub version: u8,
    /// The synthetic CUF.
    pub cuf: String,
    /// The consumer entity that emitted it (`-` for an unauthenticated service).
    pub consumer: String,
    /// The issuer's NIT.
    pub nit_emisor: String,
    /// The issuer's business name.
    pub razon_social_emisor: String,
    /// The invoice number.
    pub numero_factura: i64,
    /// The branch.
    pub codigo_sucursal: i64,
    /// The point of sale.
    pub codigo_punto_venta: Option<i64>,
    /// The date of issue, as sent.
    pub fecha_emision: String,
    /// When the gateway received it (UTC).
    pub fecha_recepcion: String,
    /// The currency code.
    pub codigo_moneda: i64,
    /// The total, in centavos.
    pub monto_total: i64,
    /// The taxable amount, in centavos.
    pub monto_total_sujeto_iva: i64,
    /// The IVA, in centavos.
    pub monto_iva: i64,
    /// `VALIDADA` or `ANULADA`.
    pub estado: String,
    /// The annulment, once annulled.
    pub anulacion: Option<StoredAnnulment>,
}

/// What the test environment keeps of an annulment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnnulment {
    /// The SIN's reason.
    pub codigo_motivo: u32,
    /// The issuer's note.
    pub descripcion: Option<String>,
    /// When it was annulled (UTC).
    pub fecha: String,
}

/// The `datos` of an answer: the invoice as a client sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InvoiceView<'a> {
    cuf: &'a str,
    estado: &'a str,
    entorno: &'static str,
    nit_emisor: &'a str,
    razon_social_emisor: &'a str,
    numero_factura: i64,
    codigo_sucursal: i64,
    codigo_punto_venta: Option<i64>,
    fecha_emision: &'a str,
    fecha_recepcion: &'a str,
    codigo_moneda: i64,
    monto_total: Money,
    monto_total_sujeto_iva: Money,
    monto_iva: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    anulacion: Option<AnnulmentView<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AnnulmentView<'a> {
    codigo_motivo: u32,
    descripcion: Option<&'a str>,
    fecha_anulacion: &'a str,
}

/// The envelope of every successful answer, as AGETIC's services answer.
#[derive(Serialize)]
struct Envelope<'a> {
    finalizado: bool,
    mensaje: &'a str,
    datos: InvoiceView<'a>,
}

impl StoredInvoice {
    fn view(&self) -> InvoiceView<'_> {
        InvoiceView {
            cuf: &self.cuf,
            estado: &self.estado,
            entorno: "pruebas",
            nit_emisor: &self.nit_emisor,
            razon_social_emisor: &self.razon_social_emisor,
            numero_factura: self.numero_factura,
            codigo_sucursal: self.codigo_sucursal,
            codigo_punto_venta: self.codigo_punto_venta,
            fecha_emision: &self.fecha_emision,
            fecha_recepcion: &self.fecha_recepcion,
            codigo_moneda: self.codigo_moneda,
            monto_total: Money(i128::from(self.monto_total)),
            monto_total_sujeto_iva: Money(i128::from(self.monto_total_sujeto_iva)),
            monto_iva: Money(i128::from(self.monto_iva)),
            anulacion: self.anulacion.as_ref().map(|annulment| AnnulmentView {
                codigo_motivo: annulment.codigo_motivo,
                descripcion: annulment.descripcion.as_deref(),
                fecha_anulacion: &annulment.fecha,
            }),
        }
    }

    fn evidence(&self, operacion: &'static str) -> Evidence {
        Evidence {
            operacion,
            entorno: "pruebas",
            estado: self.estado.clone(),
            cuf: Some(self.cuf.clone()),
            nit_emisor: Some(self.nit_emisor.clone()),
            numero_factura: Some(self.numero_factura),
            codigo_sucursal: Some(self.codigo_sucursal),
            codigo_punto_venta: self.codigo_punto_venta,
            monto_total: Some(Money(i128::from(self.monto_total))),
            codigo_motivo: self.anulacion.as_ref().map(|a| a.codigo_motivo),
            consumidor: Some(self.consumer.clone()),
            estado_http: None,
        }
    }
}

/// Settings of the test environment.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox {
    /// How long invoices are kept.
    pub retention: Duration,
    /// Whether a ledger failure fails the operation.
    pub ledger_required: bool,
}

/// The consumer entity of the request, `-` when the service does not authenticate.
fn consumer(context: &Context) -> String {
    context
        .consumer_entity
        .clone()
        .unwrap_or_else(|| "-".to_string())
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02X}")).collect()
}

fn invoice_key(cuf: &str) -> String {
    format!("factura:{cuf}")
}

/// The key that reserves an invoice number: per consumer, NIT, branch and point of sale.
fn number_key(consumer: &str, invoice: &Invoice) -> String {
    let point_of_sale = invoice
        .codigo_punto_venta
        .map_or_else(String::new, |pos| pos.to_string());
    let identity = format!(
        "{consumer}\n{}\n{}\n{point_of_sale}\n{}",
        invoice.nit_emisor, invoice.codigo_sucursal, invoice.numero_factura
    );
    format!(
        "numero:{}",
        hex_upper(&host::crypto::sha256(identity.as_bytes())[..16])
    )
}

fn json_answer(status: u16, envelope: &Envelope, location: Option<String>) -> Response {
    match serde_json::to_vec(envelope) {
        Ok(body) => {
            let mut response = Response::new(status)
                .with_header("content-type", "application/json")
                .with_header("cache-control", "no-store");
            if let Some(location) = location {
                response = response.with_header("location", location);
            }
            response.with_body(body)
        }
        Err(err) => {
            host::log::error(&format!("answer not serialized: {err}"));
            problem::INTERNAL
                .respond("la respuesta no pudo construirse / the answer could not be built")
        }
    }
}

fn state_failure(operation: &'static str, err: &KvError) -> Response {
    host::log::error(&format!("test state unavailable during {operation}: {err}"));
    host::metrics::counter_add("state_failures_total", 1, &[("operation", operation)]);
    audit::reject(
        operation,
        problem::STATE_UNAVAILABLE,
        problem::STATE_UNAVAILABLE.respond(
            "el almacenamiento del entorno de pruebas no está disponible, reintente más tarde / the test environment's store is unavailable, retry later",
        ),
    )
}

fn refuse(operation: &'static str, kind: Kind, detail: &str) -> Response {
    audit::reject(operation, kind, kind.respond(detail))
}

impl Sandbox {
    /// Reads the invoice `cuf` of the request's consumer: `Ok(None)` if there is none (or
    /// it belongs to another consumer).
    fn load(
        &self,
        operation: &'static str,
        cuf: &str,
        consumer: &str,
    ) -> Result<Option<StoredInvoice>, Response> {
        let bytes = match host::kv::get(&invoice_key(cuf)) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(err) => return Err(state_failure(operation, &err)),
        };
        match serde_json::from_slice::<StoredInvoice>(&bytes) {
            Ok(stored) if stored.consumer == consumer => Ok(Some(stored)),
            Ok(_) => Ok(None),
            Err(err) => {
                host::log::error(&format!("stored invoice {cuf} is unreadable: {err}"));
                Err(problem::INTERNAL.respond(
                    "el estado guardado de la factura no puede leerse / the invoice's stored state cannot be read",
                ))
            }
        }
    }

    fn store(&self, operation: &'static str, stored: &StoredInvoice) -> Result<(), Response> {
        let bytes = serde_json::to_vec(stored).map_err(|err| {
            host::log::error(&format!("invoice record not serialized: {err}"));
            problem::INTERNAL.respond("el estado no pudo guardarse / the state could not be saved")
        })?;
        host::kv::set(&invoice_key(&stored.cuf), &bytes, Some(self.retention))
            .map_err(|err| state_failure(operation, &err))
    }

    fn not_found(operation: &'static str, cuf: &str) -> Response {
        refuse(
            operation,
            problem::INVOICE_NOT_FOUND,
            &format!(
                "no hay una factura con CUF {cuf} emitida por su entidad en el entorno de pruebas / no invoice with CUF {cuf} issued by your entity in the test environment"
            ),
        )
    }

    /// Emits a valid invoice: 201 with its synthetic CUF, or a problem.
    pub fn emit(&self, invoice: &Invoice, prefix: &str) -> Response {
        const OP: &str = "emit";
        let context = host::context::get();
        let consumer = consumer(&context);
        let number_key = number_key(&consumer, invoice);
        match host::kv::get(&number_key) {
            Ok(Some(existing)) => {
                let existing = String::from_utf8_lossy(&existing);
                return refuse(
                    OP,
                    problem::DUPLICATE_INVOICE,
                    &format!(
                        "la factura número {} de la sucursal {} ya fue emitida con CUF {existing} / invoice number {} of branch {} was already issued with CUF {existing}",
                        invoice.numero_factura,
                        invoice.codigo_sucursal,
                        invoice.numero_factura,
                        invoice.codigo_sucursal
                    ),
                );
            }
            Ok(None) => {}
            Err(err) => return state_failure(OP, &err),
        }

        let now_ms = host::clock::now_ms();
        let identity = format!(
            "{}\n{now_ms}\n{}\n{consumer}\n{}\n{}\n{:?}\n{}",
            context.request_id,
            host::clock::monotonic_ns(),
            invoice.nit_emisor,
            invoice.codigo_sucursal,
            invoice.codigo_punto_venta,
            invoice.numero_factura
        );
        let cuf = hex_upper(&host::crypto::hmac_sha256(CUF_KEY, identity.as_bytes())[..24]);
        let stored = StoredInvoice {
            version: RECORD_VERSION,
            cuf: cuf.clone(),
            consumer,
            nit_emisor: invoice.nit_emisor.clone(),
            razon_social_emisor: invoice.razon_social_emisor.clone(),
            numero_factura: invoice.numero_factura,
            codigo_sucursal: invoice.codigo_sucursal,
            codigo_punto_venta: invoice.codigo_punto_venta,
            fecha_emision: invoice.fecha_emision.clone(),
            fecha_recepcion: dates::format_utc(now_ms),
            codigo_moneda: invoice.codigo_moneda,
            monto_total: cents(invoice.monto_total),
            monto_total_sujeto_iva: cents(invoice.monto_total_sujeto_iva),
            monto_iva: cents(invoice.monto_iva),
            estado: VALIDATED.to_string(),
            anulacion: None,
        };
        if let Err(response) = self.store(OP, &stored) {
            return response;
        }
        if let Err(err) = host::kv::set(&number_key, cuf.as_bytes(), Some(self.retention)) {
            let _ = host::kv::delete(&invoice_key(&cuf));
            return state_failure(OP, &err);
        }
        if let Err(response) = audit::record(&stored.evidence("emision"), self.ledger_required) {
            // Without its evidence the invoice must not exist: undo, best effort.
            let _ = host::kv::delete(&invoice_key(&cuf));
            let _ = host::kv::delete(&number_key);
            return response;
        }
        audit::count(OP, "validated");
        audit::amount(OP, invoice.monto_total);
        host::log::info(&format!(
            "test invoice {} of NIT {} validated with CUF {cuf}",
            invoice.numero_factura, invoice.nit_emisor
        ));
        let envelope = Envelope {
            finalizado: true,
            mensaje: "Factura validada en el entorno de pruebas (datos sintéticos, sin valor fiscal) / Invoice validated in the test environment (synthetic data, no fiscal value)",
            datos: stored.view(),
        };
        json_answer(201, &envelope, location(prefix, &cuf))
    }

    /// Answers the state of invoice `cuf`.
    pub fn query(&self, cuf: &str) -> Response {
        const OP: &str = "query";
        let consumer = consumer(&host::context::get());
        match self.load(OP, cuf, &consumer) {
            Ok(Some(stored)) => {
                audit::count(OP, "found");
                let envelope = Envelope {
                    finalizado: true,
                    mensaje: "Estado de la factura en el entorno de pruebas / Invoice state in the test environment",
                    datos: stored.view(),
                };
                json_answer(200, &envelope, None)
            }
            Ok(None) => Self::not_found(OP, cuf),
            Err(response) => response,
        }
    }

    /// Annuls invoice `cuf`: 200 with state `ANULADA`, or a problem.
    pub fn annul(&self, cuf: &str, annulment: &Annulment) -> Response {
        const OP: &str = "annul";
        let consumer = consumer(&host::context::get());
        let mut stored = match self.load(OP, cuf, &consumer) {
            Ok(Some(stored)) => stored,
            Ok(None) => return Self::not_found(OP, cuf),
            Err(response) => return response,
        };
        if let Some(previous) = &stored.anulacion {
            return refuse(
                OP,
                problem::ALREADY_ANNULLED,
                &format!(
                    "la factura {cuf} ya fue anulada el {} / invoice {cuf} was already annulled at {}",
                    previous.fecha, previous.fecha
                ),
            );
        }
        let previous = stored.clone();
        stored.estado = ANNULLED.to_string();
        stored.anulacion = Some(StoredAnnulment {
            codigo_motivo: annulment.codigo_motivo,
            descripcion: annulment.descripcion.clone(),
            fecha: dates::format_utc(host::clock::now_ms()),
        });
        if let Err(response) = self.store(OP, &stored) {
            return response;
        }
        if let Err(response) = audit::record(&stored.evidence("anulacion"), self.ledger_required) {
            let _ = self.store(OP, &previous);
            return response;
        }
        audit::count(OP, "annulled");
        host::log::info(&format!(
            "test invoice {} of NIT {} annulled (CUF {cuf}, reason {})",
            stored.numero_factura, stored.nit_emisor, annulment.codigo_motivo
        ));
        let envelope = Envelope {
            finalizado: true,
            mensaje: "Factura anulada en el entorno de pruebas / Invoice annulled in the test environment",
            datos: stored.view(),
        };
        json_answer(200, &envelope, None)
    }
}

/// Centavos as stored (amounts are bounded to 13 integer digits, far inside `i64`).
fn cents(amount: Money) -> i64 {
    i64::try_from(amount.0).unwrap_or(i64::MAX)
}

/// The invoice's URL path under the prefix the client used, when the prefix is plain
/// visible ASCII (it always is after the gateway's normalisation).
fn location(prefix: &str, cuf: &str) -> Option<String> {
    let plain = !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_graphic());
    plain.then(|| format!("{prefix}/facturas/{cuf}"))
}
