//! `sefe`: the gateway's guard in front of AGETIC's SEFE, the electronic invoicing service
//! (catalog service `sefe/v1`).
//!
//! Routes (after the service prefix `/sefe/v1` or `/fake/sefe/v1`):
//! `POST /facturas` emits an invoice, `GET /facturas/{cuf}` reads its state,
//! `POST /facturas/{cuf}/anulacion` annuls it. See the crate's README for the bodies.
//!
//! - Every invoice and annulment is validated before it reaches the tax authority
//!   ([`invoice`], [`annulment`]): fields, formats and the arithmetic, exactly in centavos.
//!   A failure is a 400/422 problem document naming the failing member by JSON pointer.
//! - In the test environment (`pruebas`) the plugin answers by itself with synthetic data
//!   ([`sandbox`]); in production (`produccion`) it passes valid requests through unchanged
//!   and records the upstream's answer when one comes ([`production`]).
//! - Emissions and annulments are recorded in the audit ledger and counted ([`audit`]).
//!
//! The request body is held back (never sent on in pieces) until its last chunk, checked
//! whole, then released at once or answered: the gateway's store-and-forward decision
//! happens after this plugin, on a body that was already validated.

#![warn(missing_docs)]

pub mod annulment;
pub mod audit;
pub mod config;
pub mod dates;
pub mod decimal;
pub mod fields;
pub mod invoice;
pub mod json;
pub mod problem;
pub mod production;
pub mod routes;
pub mod sandbox;

use chasqui_plugin_sdk::{
    export_plugin, host, BodyAction, BodyChunk, Capability, HeaderChanges, HeadersAction, Metadata,
    Phase, Plugin, RequestHead, Response, ResponseHead,
};
use config::Config;
use invoice::{Limits, Rejection};
use production::{Forwarded, Watch};
use routes::{RequestPath, Route};
use sandbox::Sandbox;
use std::time::Duration;

/// The environment the gateway says a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// `pruebas`: the plugin answers with synthetic data.
    Pruebas,
    /// `produccion`: valid requests go on to the tax authority.
    Produccion,
}

impl Environment {
    /// The environment named by the host's context, `None` for any other value.
    pub fn from_context(name: &str) -> Option<Self> {
        match name {
            "pruebas" => Some(Environment::Pruebas),
            "produccion" => Some(Environment::Produccion),
            _ => None,
        }
    }
}

/// Whether a `content-type` value is JSON (`application/json` or `application/*+json`,
/// parameters such as `charset` ignored).
pub fn is_json_media_type(value: &str) -> bool {
    let media_type = value.split(';').next().unwrap_or_default().trim();
    let media_type = media_type.to_ascii_lowercase();
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// An operation that needs the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyOperation {
    Emit,
    Annul { cuf: String },
}

impl BodyOperation {
    fn label(&self) -> &'static str {
        match self {
            BodyOperation::Emit => "emit",
            BodyOperation::Annul { .. } => "annul",
        }
    }
}

/// The request being handled.
#[derive(Debug)]
enum InFlight {
    /// Holding the body back until its last chunk.
    Reading {
        environment: Environment,
        operation: BodyOperation,
        prefix: String,
        body: Vec<u8>,
    },
    /// Released upstream (production): following the answer.
    Forwarded(Watch),
}

/// The plugin: its settings and the request in flight.
#[derive(Debug)]
pub struct Sefe {
    config: Config,
    limits: Limits,
    sandbox: Sandbox,
    request: Option<InFlight>,
}

impl Sefe {
    fn max_body(&self) -> usize {
        self.config.max_body_bytes as usize
    }

    /// Checks the head of an emission or annulment and starts holding its body.
    fn expect_body(
        &mut self,
        request: &RequestHead,
        environment: Environment,
        operation: BodyOperation,
        prefix: String,
    ) -> HeadersAction {
        let label = operation.label();
        let content_type = request.header("content-type").unwrap_or_default();
        if !is_json_media_type(content_type) {
            let kind = problem::UNSUPPORTED_MEDIA_TYPE;
            return respond(audit::reject(
                label,
                kind,
                kind.respond(
                    "envíe el cuerpo como application/json / send the body as application/json",
                ),
            ));
        }
        if let Some(length) = request.header("content-length") {
            match length.trim().parse::<u64>() {
                Ok(0) => {
                    let kind = problem::BODY_REQUIRED;
                    return respond(audit::reject(
                        label,
                        kind,
                        kind.respond(body_required_detail()),
                    ));
                }
                Ok(length) if length > self.config.max_body_bytes as u64 => {
                    return respond(self.too_large(label));
                }
                _ => {}
            }
        }
        self.request = Some(InFlight::Reading {
            environment,
            operation: operation.clone(),
            prefix,
            body: Vec::new(),
        });
        match (environment, operation) {
            // The answer is read to record the CUF the service assigns: ask for it
            // uncompressed (it is a small JSON document).
            (Environment::Produccion, BodyOperation::Emit) => {
                HeadersAction::Modify(HeaderChanges::new().set("accept-encoding", "identity"))
            }
            _ => HeadersAction::Continue,
        }
    }

    fn too_large(&self, operation: &'static str) -> Response {
        let kind = problem::BODY_TOO_LARGE;
        let max = self.config.max_body_bytes;
        audit::reject(
            operation,
            kind,
            kind.respond(&format!(
                "el cuerpo supera {max} bytes / the body exceeds {max} bytes"
            )),
        )
    }

    /// Handles a whole body: the answer in `pruebas`, the release or a refusal in
    /// `produccion`.
    fn complete(
        &mut self,
        environment: Environment,
        operation: BodyOperation,
        prefix: &str,
        body: Vec<u8>,
    ) -> BodyAction {
        let label = operation.label();
        if body.iter().all(u8::is_ascii_whitespace) {
            let kind = problem::BODY_REQUIRED;
            return BodyAction::Respond(audit::reject(
                label,
                kind,
                kind.respond(body_required_detail()),
            ));
        }
        let forwarded = match operation {
            BodyOperation::Emit => {
                let now_ms = host::clock::now_ms();
                match invoice::validate(&body, &self.limits, now_ms) {
                    Ok(invoice) if environment == Environment::Pruebas => {
                        return BodyAction::Respond(self.sandbox.emit(&invoice, prefix));
                    }
                    Ok(invoice) => Forwarded::Emit(invoice),
                    Err(rejection) => {
                        return BodyAction::Respond(refusal(
                            label,
                            problem::INVALID_INVOICE,
                            rejection,
                        ))
                    }
                }
            }
            BodyOperation::Annul { cuf } => {
                match annulment::validate(
                    &body,
                    &self.config.annulment_reasons,
                    self.config.allow_unknown_fields,
                ) {
                    Ok(annulment) if environment == Environment::Pruebas => {
                        return BodyAction::Respond(self.sandbox.annul(&cuf, &annulment));
                    }
                    Ok(annulment) => Forwarded::Annul { cuf, annulment },
                    Err(rejection) => {
                        return BodyAction::Respond(refusal(
                            label,
                            problem::INVALID_ANNULMENT,
                            rejection,
                        ))
                    }
                }
            }
        };
        // Production: the evidence that a validated request left for the tax authority is
        // written before it leaves (and stops it when policy requires the ledger).
        let consumer = host::context::get().consumer_entity;
        if let Err(response) = audit::record(
            &forwarded.evidence("ENVIADA", consumer.clone()),
            self.config.ledger_required,
        ) {
            return BodyAction::Respond(audit::reject(label, problem::AUDIT_UNAVAILABLE, response));
        }
        audit::count(label, "forwarded");
        if let Forwarded::Emit(invoice) = &forwarded {
            audit::amount(label, invoice.monto_total);
        }
        self.request = Some(InFlight::Forwarded(Watch::new(
            forwarded,
            consumer,
            self.max_body(),
        )));
        BodyAction::Replace(body)
    }
}

fn body_required_detail() -> &'static str {
    "la operación necesita un cuerpo JSON / the operation needs a JSON body"
}

fn respond(response: Response) -> HeadersAction {
    HeadersAction::Respond(response)
}

/// The answer to a body that failed validation.
fn refusal(operation: &'static str, kind: problem::Kind, rejection: Rejection) -> Response {
    match rejection {
        Rejection::Malformed(message) => {
            let malformed = problem::MALFORMED_JSON;
            audit::reject(
                operation,
                malformed,
                malformed.respond(&format!(
                    "el cuerpo no es JSON válido / the body is not valid JSON: {message}"
                )),
            )
        }
        Rejection::Invalid(errors) => {
            audit::reject(operation, kind, problem::validation(kind, &errors))
        }
    }
}

impl Plugin for Sefe {
    type Config = Config;

    const METADATA: Metadata = Metadata {
        name: "sefe",
        version: env!("CARGO_PKG_VERSION"),
        capabilities: &[
            Capability::Log,
            Capability::Kv,
            Capability::Clock,
            Capability::Crypto,
            Capability::Metrics,
            Capability::Ledger,
            Capability::Context,
        ],
        phases: &[
            Phase::RequestHeaders,
            Phase::RequestBody,
            Phase::ResponseHeaders,
            Phase::ResponseBody,
        ],
        config_schema: include_str!("../config.schema.json"),
    };

    fn new(config: Config) -> Result<Self, String> {
        config.check()?;
        let limits = Limits {
            max_items: config.max_items as usize,
            future_tolerance_ms: i64::from(config.future_tolerance_seconds) * 1000,
            max_age_ms: i64::from(config.max_emission_age_hours) * 3_600_000,
            currencies: config.currencies.clone(),
            allow_unknown_fields: config.allow_unknown_fields,
        };
        let sandbox = Sandbox {
            retention: Duration::from_secs(u64::from(config.test_retention_hours) * 3600),
            ledger_required: config.ledger_required,
        };
        Ok(Sefe {
            config,
            limits,
            sandbox,
            request: None,
        })
    }

    fn on_request_headers(&mut self, request: &RequestHead) -> HeadersAction {
        // An instance may be reused without `on_request_end` having run: start clean.
        self.request = None;
        let context = host::context::get();
        let Some(environment) = Environment::from_context(&context.environment) else {
            host::log::error(&format!(
                "unknown environment {:?}: neither synthetic answers nor forwarding are safe",
                context.environment
            ));
            let kind = problem::UNKNOWN_ENVIRONMENT;
            return respond(audit::reject(
                "other",
                kind,
                kind.respond("el servicio no está disponible en este entorno / the service is not available in this environment"),
            ));
        };
        let RequestPath { prefix, route } = routes::parse(&request.method, &request.path);
        let pruebas = environment == Environment::Pruebas;
        match route {
            Route::Emit => self.expect_body(request, environment, BodyOperation::Emit, prefix),
            Route::Annul { cuf } | Route::Query { cuf } if !routes::is_cuf(&cuf) => {
                let label = if request.method == "GET" {
                    "query"
                } else {
                    "annul"
                };
                let kind = problem::INVALID_CUF;
                respond(audit::reject(
                    label,
                    kind,
                    kind.respond("el CUF son de 16 a 100 dígitos hexadecimales en mayúsculas / a CUF is 16 to 100 uppercase hexadecimal digits"),
                ))
            }
            Route::Annul { cuf } => {
                self.expect_body(request, environment, BodyOperation::Annul { cuf }, prefix)
            }
            Route::Query { cuf } if pruebas => respond(self.sandbox.query(&cuf)),
            Route::Query { .. } => {
                audit::count("query", "forwarded");
                HeadersAction::Continue
            }
            Route::WrongMethod { allow } if pruebas => {
                let kind = problem::METHOD_NOT_ALLOWED;
                let response = kind
                    .respond(&format!(
                        "esta ruta admite {allow}, no {} / this route takes {allow}, not {}",
                        request.method, request.method
                    ))
                    .with_header("allow", allow);
                respond(audit::reject("other", kind, response))
            }
            Route::Unknown if pruebas => {
                let kind = problem::UNKNOWN_ROUTE;
                respond(audit::reject(
                    "other",
                    kind,
                    kind.respond("rutas: POST /facturas, GET /facturas/{cuf}, POST /facturas/{cuf}/anulacion / routes: POST /facturas, GET /facturas/{cuf}, POST /facturas/{cuf}/anulacion"),
                ))
            }
            // Production: what the plugin does not know is the upstream's to answer.
            Route::WrongMethod { .. } | Route::Unknown => HeadersAction::Continue,
        }
    }

    fn on_request_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        let max_body = self.max_body();
        let Some(InFlight::Reading {
            body, operation, ..
        }) = self.request.as_mut()
        else {
            return BodyAction::Continue;
        };
        if body.len() + chunk.data.len() > max_body {
            let label = operation.label();
            self.request = None;
            return BodyAction::Respond(self.too_large(label));
        }
        body.extend_from_slice(&chunk.data);
        if !chunk.end_of_stream {
            // Held back: nothing reaches the upstream before the whole body is checked.
            return BodyAction::Replace(Vec::new());
        }
        match self.request.take() {
            Some(InFlight::Reading {
                environment,
                operation,
                prefix,
                body,
            }) => self.complete(environment, operation, &prefix, body),
            _ => BodyAction::Continue,
        }
    }

    fn on_response_headers(&mut self, response: &ResponseHead) -> HeadersAction {
        if let Some(InFlight::Forwarded(watch)) = self.request.as_mut() {
            if watch.on_headers(response) {
                self.request = None;
            }
        }
        HeadersAction::Continue
    }

    fn on_response_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        if let Some(InFlight::Forwarded(watch)) = self.request.as_mut() {
            if watch.on_body(chunk) {
                self.request = None;
            }
        }
        BodyAction::Continue
    }

    fn on_request_end(&mut self) {
        self.request = None;
    }
}

export_plugin!(Sefe);

#[cfg(test)]
mod tests;
