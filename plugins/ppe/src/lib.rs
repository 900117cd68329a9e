//! `ppe`: the Chasqui plugin in front of AGETIC's Pasarela de Pagos del Estado.
//!
//! Routes (after the service prefix, e.g. `/ppe/v1` or the legacy `/fake/ppe/v1`):
//!
//! | route | pruebas | produccion |
//! | --- | --- | --- |
//! | `POST /transaccion/deuda` | validated, answered with a synthetic CPT, QR or card checkout | validated, single-payment key claimed, forwarded to PPE, answer recorded |
//! | `GET /consulta/estado/{id}` | answered from the plugin's state | forwarded; a CPT reported paid is charged its fee |
//! | `POST /pruebas/pagar/{id}` | simulates the payer paying | 404 |
//! | anything else | 404 | forwarded unchanged |
//!
//! The modules: [`config`] (settings), `routes` (path matching), `validation` (request
//! bodies), `money` (centavos, methods, tariff), `single` (the single-payment rule),
//! `store` (key-value records), `sandbox` (the test environment), `production` (claim,
//! forward, record), `audit` (ledger, fees, metrics). See `README.md` for the contract.

#![warn(missing_docs)]

pub mod config;
pub mod problem;

mod audit;
mod ids;
mod json;
mod money;
mod production;
mod routes;
mod sandbox;
mod single;
mod store;
mod time;
mod validation;

use chasqui_plugin_sdk::{
    export_plugin, host, BodyAction, BodyChunk, Capability, HeadersAction, Metadata, Phase, Plugin,
    RequestHead, ResponseHead,
};
use config::{Config, Settings};
use problem::Rejection;
use production::{Claimed, Forwarded, Observed};
use routes::Route;

/// A service environment, as the gateway's context names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// `pruebas`: the plugin answers by itself with synthetic data.
    Pruebas,
    /// `produccion`: requests reach PPE.
    Produccion,
}

impl Environment {
    /// The context's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Pruebas => "pruebas",
            Environment::Produccion => "produccion",
        }
    }

    /// Reads the context's environment. Anything but `pruebas` is production: synthetic
    /// payments are never fabricated where real ones are expected.
    fn from_context(name: &str) -> Environment {
        match name {
            "pruebas" => Environment::Pruebas,
            "produccion" => Environment::Produccion,
            other => {
                host::log::warn(&format!(
                    "unknown environment {other:?}: handled as produccion"
                ));
                Environment::Produccion
            }
        }
    }
}

/// Who is calling, in which environment, through which prefix.
pub(crate) struct Caller {
    env: Environment,
    entity: Option<String>,
    system: Option<String>,
    request_id: String,
    /// The service prefix as the client wrote it (`/ppe/v1`), for `Location` fields.
    prefix: String,
}

impl Caller {
    /// The consumer entity; payments must be attributable, so none is an error.
    fn entity(&self) -> Result<&str, Rejection> {
        self.entity
            .as_deref()
            .filter(|entity| !entity.is_empty())
            .ok_or_else(|| {
                Rejection::new(
                    problem::CONSUMER_UNIDENTIFIED,
                    "payments need an authenticated consumer entity; call with your entity's token",
                )
            })
    }
}

/// A route whose decision waits for the whole request body.
enum BodyRoute {
    Create,
    Pay(String),
}

/// Where the request in flight stands.
enum Step {
    /// Nothing more to do.
    Pass,
    /// Holding the request body back until its last chunk.
    Collect { route: BodyRoute, body: Vec<u8> },
    /// produccion: a debt request forwarded to PPE under its claimed key.
    Forwarded(Forwarded),
    /// produccion: a state query whose answer may settle a CPT.
    Observe(Observed),
}

/// The request in flight.
struct Exchange {
    caller: Caller,
    step: Step,
}

/// The plugin: its settings and the request in flight (cleared in `on_request_end`).
pub struct Ppe {
    settings: Settings,
    exchange: Option<Exchange>,
}

impl Plugin for Ppe {
    type Config = Config;

    const METADATA: Metadata = Metadata {
        name: "ppe",
        version: env!("CARGO_PKG_VERSION"),
        capabilities: &[
            Capability::Log,
            Capability::Kv,
            Capability::Clock,
            Capability::Crypto,
            Capability::Metrics,
            Capability::Ledger,
            Capability::Context,
            Capability::Metering,
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
        Ok(Ppe {
            settings: Settings::from_config(config)?,
            exchange: None,
        })
    }

    fn on_request_headers(&mut self, request: &RequestHead) -> HeadersAction {
        let context = host::context::get();
        let target = routes::parse(&request.path);
        let caller = Caller {
            env: Environment::from_context(&context.environment),
            entity: context.consumer_entity,
            system: context.consumer_system,
            request_id: context.request_id,
            prefix: target.prefix,
        };
        let (step, action) = self.route(&caller, request, target.route);
        self.exchange = Some(Exchange { caller, step });
        action
    }

    fn on_request_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        let Some(exchange) = self.exchange.as_mut() else {
            return BodyAction::Continue;
        };
        let Step::Collect { body, .. } = &mut exchange.step else {
            return BodyAction::Continue;
        };
        if body.len().saturating_add(chunk.data.len()) > self.settings.max_body_bytes {
            exchange.step = Step::Pass;
            return BodyAction::Respond(too_large(self.settings.max_body_bytes).into_response());
        }
        body.extend_from_slice(&chunk.data);
        if !chunk.end_of_stream {
            // Held back: nothing reaches PPE before the whole body is validated.
            return BodyAction::Replace(Vec::new());
        }
        let Step::Collect { route, body } = std::mem::replace(&mut exchange.step, Step::Pass)
        else {
            return BodyAction::Continue;
        };
        let caller = &exchange.caller;
        match (route, caller.env) {
            (BodyRoute::Create, Environment::Pruebas) => {
                BodyAction::Respond(sandbox::create(&self.settings, caller, &body))
            }
            (BodyRoute::Create, Environment::Produccion) => {
                match production::claim(&self.settings, caller, &body) {
                    Claimed::Forward(forwarded) => {
                        exchange.step = Step::Forwarded(forwarded);
                        BodyAction::Replace(body)
                    }
                    Claimed::Answer(response) => BodyAction::Respond(response),
                }
            }
            (BodyRoute::Pay(id), _) => {
                BodyAction::Respond(sandbox::pay(&self.settings, caller, &id, &body))
            }
        }
    }

    fn on_response_headers(&mut self, response: &ResponseHead) -> HeadersAction {
        let Some(exchange) = self.exchange.as_mut() else {
            return HeadersAction::Continue;
        };
        let caller = &exchange.caller;
        match &mut exchange.step {
            Step::Forwarded(forwarded) => {
                forwarded.on_response_headers(&self.settings, caller, response);
                HeadersAction::Continue
            }
            Step::Observe(observed) => {
                observed.on_response_headers(response);
                HeadersAction::Continue
            }
            Step::Collect { .. } if caller.env == Environment::Pruebas => {
                // The request had no body at all (the gateway makes no body call then), so
                // the test upstream was reached: answer in its place as if the body were empty.
                let Step::Collect { route, .. } = std::mem::replace(&mut exchange.step, Step::Pass)
                else {
                    return HeadersAction::Continue;
                };
                HeadersAction::Respond(match route {
                    BodyRoute::Create => sandbox::create(&self.settings, caller, &[]),
                    BodyRoute::Pay(id) => sandbox::pay(&self.settings, caller, &id, &[]),
                })
            }
            Step::Collect { .. } | Step::Pass => {
                // produccion without a body: nothing was claimed, PPE refuses it itself.
                exchange.step = Step::Pass;
                HeadersAction::Continue
            }
        }
    }

    fn on_response_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        if let Some(exchange) = self.exchange.as_mut() {
            let caller = &exchange.caller;
            match &mut exchange.step {
                Step::Forwarded(forwarded) => {
                    forwarded.on_response_body(&self.settings, caller, chunk)
                }
                Step::Observe(observed) => observed.on_response_body(&self.settings, caller, chunk),
                Step::Collect { .. } | Step::Pass => {}
            }
        }
        BodyAction::Continue
    }

    fn on_request_end(&mut self) {
        if let Some(mut exchange) = self.exchange.take() {
            if let Step::Forwarded(forwarded) = &mut exchange.step {
                forwarded.on_request_end(&self.settings, &exchange.caller);
            }
        }
    }
}

/// What the headers phase decided: the next step and the action.
type Routed = (Step, HeadersAction);

impl Ppe {
    fn route(&self, caller: &Caller, request: &RequestHead, route: Route) -> Routed {
        let respond = |rejection: Rejection| {
            (
                Step::Pass,
                HeadersAction::Respond(rejection.into_response()),
            )
        };
        let pass = (Step::Pass, HeadersAction::Continue);
        let production = caller.env == Environment::Produccion;
        let path = request.path.split('?').next().unwrap_or_default();
        match &route {
            Route::Other if production => return pass,
            Route::Other => {
                return respond(Rejection::new(
                    problem::ROUTE_NOT_FOUND,
                    format!("PPE has no route {path}"),
                ))
            }
            Route::TestPay(_) if production => {
                return respond(Rejection::new(
                    problem::ROUTE_NOT_FOUND,
                    "pruebas/pagar exists only in the test environment; in production the payer pays through PPE",
                ))
            }
            _ => {}
        }
        let expected = route.method().unwrap_or("GET");
        if request.method != expected {
            if production {
                return pass;
            }
            return respond(
                Rejection::new(
                    problem::METHOD_NOT_ALLOWED,
                    format!("{path} answers {expected} only"),
                )
                .with_header("allow", expected),
            );
        }
        match route {
            Route::Status(id) if production => {
                (Step::Observe(Observed::new(id)), HeadersAction::Continue)
            }
            Route::Status(id) => (
                Step::Pass,
                HeadersAction::Respond(sandbox::status(&self.settings, caller, &id)),
            ),
            Route::CreateDebt => match self.precheck(caller, request) {
                Err(rejection) => respond(rejection),
                Ok(BodyDeclared::Empty) => respond(Rejection::new(
                    problem::BODY_REQUIRED,
                    "register a debt with a JSON object as the body",
                )),
                Ok(BodyDeclared::Coming) => (
                    Step::Collect {
                        route: BodyRoute::Create,
                        body: Vec::new(),
                    },
                    HeadersAction::Continue,
                ),
            },
            Route::TestPay(id) => match self.precheck(caller, request) {
                Err(rejection) => respond(rejection),
                Ok(BodyDeclared::Empty) => (
                    Step::Pass,
                    HeadersAction::Respond(sandbox::pay(&self.settings, caller, &id, &[])),
                ),
                Ok(BodyDeclared::Coming) => (
                    Step::Collect {
                        route: BodyRoute::Pay(id),
                        body: Vec::new(),
                    },
                    HeadersAction::Continue,
                ),
            },
            Route::Other => pass,
        }
    }

    /// Checks a POST's head before its body: a consumer, a JSON content type, a size
    /// within the limit.
    fn precheck(&self, caller: &Caller, request: &RequestHead) -> Result<BodyDeclared, Rejection> {
        caller.entity()?;
        if let Some(content_type) = request.header("content-type") {
            let media = content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if media != "application/json" && !media.ends_with("+json") {
                return Err(Rejection::new(
                    problem::UNSUPPORTED_MEDIA_TYPE,
                    format!("the body must be application/json, not {media}"),
                ));
            }
        }
        match request
            .header("content-length")
            .and_then(|len| len.trim().parse::<u64>().ok())
        {
            Some(0) => Ok(BodyDeclared::Empty),
            Some(len) if len > self.settings.max_body_bytes as u64 => {
                Err(too_large(self.settings.max_body_bytes))
            }
            _ => Ok(BodyDeclared::Coming),
        }
    }
}

/// What a POST's head says about its body.
enum BodyDeclared {
    /// `content-length: 0`: no body call will come.
    Empty,
    /// A body follows (or may: HTTP/2 need not declare its length).
    Coming,
}

fn too_large(max: usize) -> Rejection {
    Rejection::new(
        problem::BODY_TOO_LARGE,
        format!("the body is limited to {max} bytes"),
    )
}

export_plugin!(Ppe);
