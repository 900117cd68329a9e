//! The production environment (`produccion`): valid requests go on to the tax authority's
//! server, and the plugin records what comes back.
//!
//! When a validated emission or annulment is released upstream, the ledger gets an entry
//! with state `ENVIADA` at once: the gateway's store-and-forward policy may accept the
//! request itself (202) when the upstream cannot be reached and deliver it later, and a
//! request can fail on the way, so an answer from the upstream is never assumed. When a
//! 2xx answer does pass through the plugin, a second entry records it (`ACEPTADA` or the
//! state the service answered) with the CUF the service assigned, read from the answer's
//! `cuf` or `datos.cuf` member. Non-2xx answers are counted, not recorded as evidence.

use crate::annulment::Annulment;
use crate::audit::{self, Evidence};
use crate::invoice::Invoice;
use chasqui_plugin_sdk::{host, BodyChunk, ResponseHead};
use serde_json::Value;

/// What was released upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// An emission.
    Emit(Invoice),
    /// An annulment of `cuf`.
    Annul {
        /// The CUF from the path.
        cuf: String,
        /// The request.
        annulment: Annulment,
    },
}

impl Forwarded {
    fn operation(&self) -> &'static str {
        match self {
            Forwarded::Emit(_) => "emit",
            Forwarded::Annul { .. } => "annul",
        }
    }

    /// The evidence of this request in state `estado`.
    pub fn evidence(&self, estado: &str, consumer: Option<String>) -> Evidence {
        match self {
            Forwarded::Emit(invoice) => Evidence {
                operacion: "emision",
                entorno: "produccion",
                estado: estado.to_string(),
                cuf: None,
                nit_emisor: Some(invoice.nit_emisor.clone()),
                numero_factura: Some(invoice.numero_factura),
                codigo_sucursal: Some(invoice.codigo_sucursal),
                codigo_punto_venta: invoice.codigo_punto_venta,
                monto_total: Some(invoice.monto_total),
                codigo_motivo: None,
                consumidor: consumer,
                estado_http: None,
            },
            Forwarded::Annul { cuf, annulment } => Evidence {
                operacion: "anulacion",
                entorno: "produccion",
                estado: estado.to_string(),
                cuf: Some(cuf.clone()),
                codigo_motivo: Some(annulment.codigo_motivo),
                consumidor: consumer,
                ..Evidence::default()
            },
        }
    }
}

/// Follows the upstream's answer to a released request.
#[derive(Debug)]
pub struct Watch {
    forwarded: Forwarded,
    consumer: Option<String>,
    max_body: usize,
    status: u16,
    collecting: bool,
    body: Vec<u8>,
    overflow: bool,
}

impl Watch {
    /// Starts following `forwarded`, reading at most `max_body` bytes of the answer.
    pub fn new(forwarded: Forwarded, consumer: Option<String>, max_body: usize) -> Self {
        Watch {
            forwarded,
            consumer,
            max_body,
            status: 0,
            collecting: false,
            body: Vec::new(),
            overflow: false,
        }
    }

    /// Handles the answer's head; `true` when nothing more is needed.
    pub fn on_headers(&mut self, response: &ResponseHead) -> bool {
        let operation = self.forwarded.operation();
        self.status = response.status;
        if !(200..300).contains(&response.status) {
            audit::count(operation, "rejected_upstream");
            host::log::info(&format!(
                "upstream answered {} to a validated {operation}",
                response.status
            ));
            return true;
        }
        let empty =
            response.status == 204 || response.header("content-length").map(str::trim) == Some("0");
        let json = response
            .header("content-type")
            .is_some_and(crate::is_json_media_type);
        let encoded = response
            .header("content-encoding")
            .is_some_and(|value| !value.trim().eq_ignore_ascii_case("identity"));
        match &self.forwarded {
            Forwarded::Emit(_) if !empty && json && !encoded => {
                self.collecting = true;
                false
            }
            _ => {
                self.accepted(None);
                true
            }
        }
    }

    /// Handles a chunk of the answer (which passes on unchanged); `true` when done.
    pub fn on_body(&mut self, chunk: &BodyChunk) -> bool {
        if !self.collecting {
            return true;
        }
        if !self.overflow {
            if self.body.len() + chunk.data.len() > self.max_body {
                self.overflow = true;
                self.body = Vec::new();
            } else {
                self.body.extend_from_slice(&chunk.data);
            }
        }
        if !chunk.end_of_stream {
            return false;
        }
        let answer = if self.overflow {
            None
        } else {
            serde_json::from_slice::<Value>(&self.body).ok()
        };
        self.accepted(answer.as_ref());
        true
    }

    /// Records a 2xx answer, with the CUF and state found in `answer`, if any.
    fn accepted(&self, answer: Option<&Value>) {
        let operation = self.forwarded.operation();
        let member = |name: &str| {
            answer.and_then(|answer| {
                answer
                    .get("datos")
                    .and_then(|datos| datos.get(name))
                    .or_else(|| answer.get(name))
                    .and_then(Value::as_str)
            })
        };
        let estado = member("estado")
            .filter(|estado| (1..=40).contains(&estado.len()))
            .unwrap_or("ACEPTADA");
        let mut evidence = self.forwarded.evidence(estado, self.consumer.clone());
        evidence.estado_http = Some(self.status);
        if let Forwarded::Emit(_) = self.forwarded {
            evidence.cuf = member("cuf")
                .filter(|cuf| {
                    (1..=100).contains(&cuf.len()) && cuf.bytes().all(|b| b.is_ascii_alphanumeric())
                })
                .map(str::to_string);
        }
        // The operation already happened upstream: a ledger failure can only be reported.
        let _ = audit::record(&evidence, false);
        audit::count(operation, "accepted");
    }
}
