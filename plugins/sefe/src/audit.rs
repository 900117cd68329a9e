//! Evidence in the audit ledger and counts in the metrics.
//!
//! Every invoice emitted or annulled leaves an entry of kind `sefe.invoice` in the gateway's
//! hash-chained ledger (the host adds the plugin, the request id and the time). Amounts are
//! written as decimal strings (`"113.00"`) so the evidence is exact. The buyer's identity
//! (document number, name) is personal data and is never written to the ledger or logs.

use crate::decimal::Money;
use crate::problem;
use chasqui_plugin_sdk::{host, Response};
use serde_json::{json, Map, Value};

/// The ledger kind of every entry this plugin appends.
pub const LEDGER_KIND: &str = "sefe.invoice";

/// One piece of evidence about an invoice; absent facts are written as `null`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// `emision` or `anulacion`.
    pub operacion: &'static str,
    /// `pruebas` or `produccion`.
    pub entorno: &'static str,
    /// What happened: `VALIDADA`, `ANULADA` (test environment), `ENVIADA` (passed to the
    /// tax authority), `ACEPTADA` or the state the tax authority answered.
    pub estado: String,
    /// The invoice's CUF, when known.
    pub cuf: Option<String>,
    /// The issuer's NIT, when known.
    pub nit_emisor: Option<String>,
    /// The invoice number, when known.
    pub numero_factura: Option<i64>,
    /// The branch, when known.
    pub codigo_sucursal: Option<i64>,
    /// The point of sale, when known.
    pub codigo_punto_venta: Option<i64>,
    /// The total in bolivianos, when known.
    pub monto_total: Option<Money>,
    /// The annulment reason, for an annulment.
    pub codigo_motivo: Option<u32>,
    /// The consumer entity that sent the request.
    pub consumidor: Option<String>,
    /// The upstream's status, for an answer of the tax authority.
    pub estado_http: Option<u16>,
}

impl Evidence {
    /// The ledger payload.
    pub fn to_json(&self) -> Value {
        let mut payload = Map::new();
        payload.insert("operacion".into(), json!(self.operacion));
        payload.insert("entorno".into(), json!(self.entorno));
        payload.insert("estado".into(), json!(self.estado));
        payload.insert("cuf".into(), json!(self.cuf));
        payload.insert("nitEmisor".into(), json!(self.nit_emisor));
        payload.insert("numeroFactura".into(), json!(self.numero_factura));
        payload.insert("codigoSucursal".into(), json!(self.codigo_sucursal));
        payload.insert("codigoPuntoVenta".into(), json!(self.codigo_punto_venta));
        payload.insert(
            "montoTotal".into(),
            json!(self.monto_total.map(|amount| amount.to_string())),
        );
        if self.operacion == "anulacion" {
            payload.insert("codigoMotivo".into(), json!(self.codigo_motivo));
        }
        payload.insert("consumidor".into(), json!(self.consumidor));
        if let Some(status) = self.estado_http {
            payload.insert("estadoHttp".into(), json!(status));
        }
        Value::Object(payload)
    }
}

/// Appends `evidence` to the ledger. A refusal is logged and counted; it fails the
/// operation (`Err` with the answer to give) only when `required`.
pub fn record(evidence: &Evidence, required: bool) -> Result<(), Response> {
    match host::ledger::append(LEDGER_KIND, &evidence.to_json()) {
        Ok(_) => Ok(()),
        Err(err) => {
            host::log::error(&format!(
                "audit entry for {} {} not recorded: {err}",
                evidence.operacion, evidence.estado
            ));
            host::metrics::counter_add(
                "ledger_failures_total",
                1,
                &[("operation", operation_label(evidence.operacion))],
            );
            if required {
                Err(problem::AUDIT_UNAVAILABLE.respond(
                    "el registro de auditoría no está disponible; la operación no se realizó, reintente más tarde / the audit ledger is unavailable; the operation was not carried out, retry later",
                ))
            } else {
                Ok(())
            }
        }
    }
}

fn operation_label(operacion: &str) -> &'static str {
    match operacion {
        "emision" => "emit",
        "anulacion" => "annul",
        _ => "query",
    }
}

/// Counts an operation's outcome in `invoices_total{operation, outcome}`.
pub fn count(operation: &'static str, outcome: &'static str) {
    host::metrics::counter_add(
        "invoices_total",
        1,
        &[("operation", operation), ("outcome", outcome)],
    );
}

/// Records an emitted invoice's total (bolivianos) in `invoice_amount_bob`.
pub fn amount(operation: &'static str, total: Money) {
    // A metric, not evidence: the float is only for the histogram's buckets.
    host::metrics::histogram_record(
        "invoice_amount_bob",
        total.0 as f64 / 100.0,
        &[("operation", operation)],
    );
}

/// Counts a request the plugin refused in `rejections_total{operation, reason}`, `reason`
/// being the problem's slug, and returns the answer.
pub fn reject(operation: &'static str, kind: problem::Kind, response: Response) -> Response {
    host::metrics::counter_add(
        "rejections_total",
        1,
        &[("operation", operation), ("reason", kind.slug)],
    );
    response
}
