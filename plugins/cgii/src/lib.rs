//! `cgii`: the eyes of CGII, the national CSIRT (Centro de Gestión de Incidentes
//! Informáticos), on every service of the platform.
//!
//! A policy binds it to every service. On each request it:
//! 1. refuses clients whose address is on the blocklist, and bearer tokens that start with
//!    a known leaked prefix (`guard`);
//! 2. counts requests per consumer in fixed windows and flags unusual volume, the bulk
//!    pulling of identity data AGETIC has seen (`volume`);
//! 3. looks for attack payloads (SQL injection, XSS, path traversal, command injection,
//!    SSRF) in the path, the query, header values and the body (`detect`, `inspect`),
//!    decoding once and twice to see through double encoding;
//! 4. reports every detection as an incident through the host, rate-limited per consumer,
//!    kind and service (`report`), and counts it in metrics; in `block` mode it answers
//!    with an RFC 9457 problem, in `report` mode the request goes on.
//!
//! It behaves the same in `pruebas` and `produccion` (attacks are attacks); only the
//! sensitivity may differ per environment. The README documents the configuration, the
//! answers and the incidents.

#![warn(missing_docs)]

mod attack;
mod body;
mod config;
mod detect;
mod guard;
mod inspect;
mod json;
mod net;
mod problem;
mod report;
mod request;
mod text;
mod volume;

pub use config::Config;
pub use problem::{
    ADDRESS_BLOCKED, ATTACK_DETECTED, BODY_TOO_LARGE, TOKEN_BLOCKED, UNUSUAL_VOLUME,
};

use body::{BodyBuffer, BodyKind, Step};
use chasqui_plugin_sdk::host::{context, metrics};
use chasqui_plugin_sdk::serde_json::json;
use chasqui_plugin_sdk::{
    export_plugin, BodyAction, BodyChunk, Capability, HeadersAction, Metadata, Phase, Plugin,
    RequestHead,
};
use config::{Mode, Sensitivity, Settings};
use inspect::{Field, Finding, Inspector, Location};
use request::RequestInfo;

/// The plugin: its checked configuration and the request in flight.
#[derive(Debug)]
pub struct Cgii {
    settings: Settings,
    request: Option<InFlight>,
}

/// What the plugin keeps between a request's phases (forgotten in `on_request_end`).
#[derive(Debug)]
struct InFlight {
    info: RequestInfo,
    sensitivity: Sensitivity,
    body: Option<BodyBuffer>,
}

impl Plugin for Cgii {
    type Config = Config;

    const METADATA: Metadata = Metadata {
        name: "cgii",
        version: env!("CARGO_PKG_VERSION"),
        capabilities: &[
            Capability::Log,
            Capability::Kv,
            Capability::Metrics,
            Capability::Context,
            Capability::Incident,
        ],
        phases: &[Phase::RequestHeaders, Phase::RequestBody],
        config_schema: include_str!("../config.schema.json"),
    };

    fn new(config: Config) -> Result<Self, String> {
        Ok(Cgii {
            settings: Settings::new(config)?,
            request: None,
        })
    }

    fn on_request_headers(&mut self, request: &RequestHead) -> HeadersAction {
        self.request = None;
        let settings = &self.settings;
        let info = RequestInfo::new(
            context::get(),
            context::client_address(),
            &request.method,
            &request.path,
        );
        let refused = guard::address(settings, &info)
            .or_else(|| guard::token(settings, &info, request))
            .or_else(|| guard::volume(settings, &info));
        if let Some(response) = refused {
            return HeadersAction::Respond(response);
        }
        let sensitivity = settings.sensitivity(&info.environment);
        let findings = inspect_head(settings, sensitivity, request);
        if let Some(response) =
            attack::respond(&settings.config.incidents, &info, sensitivity, &findings)
        {
            return HeadersAction::Respond(response);
        }
        let body = body_buffer(settings, request);
        self.request = Some(InFlight {
            info,
            sensitivity,
            body,
        });
        HeadersAction::Continue
    }

    fn on_request_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        let settings = &self.settings;
        let Some(in_flight) = self.request.as_mut() else {
            return BodyAction::Continue;
        };
        let Some(buffer) = in_flight.body.as_mut() else {
            return BodyAction::Continue;
        };
        match buffer.push(&chunk.data, chunk.end_of_stream) {
            Step::Continue => BodyAction::Continue,
            Step::Hold => BodyAction::Replace(Vec::new()),
            Step::Reject => {
                metrics::counter_add("body_inspections_total", 1, &[("outcome", "rejected")]);
                let limit = settings.config.inspect.max_body_bytes;
                BodyAction::Respond(problem::problem(
                    413,
                    problem::BODY_TOO_LARGE,
                    "Cuerpo demasiado grande / Body too large",
                    &format!(
                        "El cuerpo supera el límite de inspección de {limit} bytes de esta política. / The body exceeds this policy's inspection limit of {limit} bytes."
                    ),
                    json!({ "limit_bytes": limit, "request_id": in_flight.info.request_id }),
                ))
            }
            Step::Inspect => {
                let outcome = if buffer.truncated {
                    "truncated"
                } else {
                    "inspected"
                };
                metrics::counter_add("body_inspections_total", 1, &[("outcome", outcome)]);
                let findings = inspect_body(settings, in_flight.sensitivity, buffer);
                let response = attack::respond(
                    &settings.config.incidents,
                    &in_flight.info,
                    in_flight.sensitivity,
                    &findings,
                );
                match response {
                    Some(response) => BodyAction::Respond(response),
                    None => match buffer.release() {
                        Some(held) => BodyAction::Replace(held),
                        None => BodyAction::Continue,
                    },
                }
            }
        }
    }

    fn on_request_end(&mut self) {
        self.request = None;
    }
}

/// Inspects the path, the query and the header values, as configured.
fn inspect_head(
    settings: &Settings,
    sensitivity: Sensitivity,
    request: &RequestHead,
) -> Vec<Finding> {
    let inspect = &settings.config.inspect;
    let inspector = Inspector::new(settings, sensitivity.threshold());
    let mut findings = Vec::new();
    let (path, query) = text::split_target(&request.path);
    if inspect.path {
        inspector.path(path, &mut findings);
    }
    if let Some(query) = query.filter(|_| inspect.query) {
        inspector.pairs(Location::Query, query, &mut findings);
    }
    if inspect.headers {
        for header in &request.headers {
            if settings.inspects_header(&header.name) {
                inspector.field(
                    Field {
                        location: Location::Header,
                        name: Some(&header.name),
                        is_name: false,
                        value: &header.value,
                        plus_as_space: false,
                    },
                    &mut findings,
                );
            }
        }
    }
    findings
}

/// A buffer for the request's body, if it is to be inspected: held back until inspected
/// when some detector blocks, only copied when every detector just reports.
fn body_buffer(settings: &Settings, request: &RequestHead) -> Option<BodyBuffer> {
    let enabled: Vec<_> = settings.detectors.iter().filter(|d| d.enabled).collect();
    if !settings.config.inspect.body || enabled.is_empty() {
        return None;
    }
    let kind = match body::classify(
        request.header("content-type"),
        request.header("content-encoding"),
    ) {
        Ok(kind) => kind,
        Err(skip) => {
            metrics::counter_add("body_inspections_total", 1, &[("outcome", skip.as_str())]);
            return None;
        }
    };
    let hold = enabled.iter().any(|detector| detector.mode == Mode::Block);
    let limit = settings.config.inspect.max_body_bytes as usize;
    Some(BodyBuffer::new(
        kind,
        hold,
        limit,
        settings.config.inspect.oversize_body,
    ))
}

/// Inspects a collected body according to its kind.
fn inspect_body(
    settings: &Settings,
    sensitivity: Sensitivity,
    buffer: &BodyBuffer,
) -> Vec<Finding> {
    let inspector = Inspector::new(settings, sensitivity.threshold());
    let text = buffer.text();
    let mut findings = Vec::new();
    let looks_like_json = matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['));
    match buffer.kind {
        BodyKind::Json if looks_like_json => inspector.json(&text, &mut findings),
        BodyKind::Text if looks_like_json => inspector.json(&text, &mut findings),
        BodyKind::Form => inspector.pairs(Location::Body, &text, &mut findings),
        // Declared JSON that is not (a payload sent with the wrong type), or plain text.
        BodyKind::Json | BodyKind::Text => inspector.text(&text, &mut findings),
    }
    findings
}

export_plugin!(Cgii);
