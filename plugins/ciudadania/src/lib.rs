//! `ciudadania`: Ciudadanía Digital, Bolivia's digital identity, as a Chasqui plugin.
//!
//! - **Authentication filter.** On any service a policy binds it to, every request must
//!   carry the citizen's OpenID Connect access token (a JWT signed RS256 or ES256 by the
//!   environment's issuer) in `x-ciudadania-token`. The plugin verifies signature, issuer,
//!   audience, times and scopes, removes the token and any forged `x-ciudadania-*`
//!   fields, and passes the citizen's identity upstream in `x-ciudadania-*` fields.
//! - **Its own service** (`ciudadania/v1` by default): userinfo, document approval,
//!   electronic notifications and authorizations. Approvals, deliveries and answers are
//!   written to the gateway's audit ledger and answered with receipts.
//! - **Environments.** In `pruebas` the plugin answers every route itself with synthetic
//!   citizens ([`CITIZENS`]), so an entity integrates its whole flow with no upstream. In
//!   `produccion` it checks and records, then passes requests to the upstream.
//!
//! The README documents routes, bodies, headers, configuration and problems.

#![warn(missing_docs)]

mod answer;
mod approvals;
mod auth;
mod authorizations;
mod call;
mod citizens;
mod config;
mod documents;
mod evidence;
mod exchange;
mod filter;
mod headers;
mod identity;
mod keys;
mod notifications;
mod problem;
mod records;
mod routes;
mod service;
mod time;
mod token;
mod validation;

pub use citizens::{Citizen, CITIZENS};
pub use config::Config;
pub use problem::TYPE_BASE as PROBLEM_TYPE_BASE;

use call::Call;
use chasqui_plugin_sdk::{
    export_plugin, BodyAction, BodyChunk, Capability, HeadersAction, Metadata, Phase, Plugin,
    RequestHead, ResponseHead,
};
use config::Settings;
use exchange::Exchange;

/// The plugin: its checked configuration and the request in flight.
#[derive(Debug)]
pub struct Ciudadania {
    settings: Settings,
    /// The current request to the plugin's own service, from its headers phase to its
    /// end; `None` between requests and for filtered services.
    exchange: Option<Exchange>,
}

impl Plugin for Ciudadania {
    type Config = Config;

    const METADATA: Metadata = Metadata {
        name: "ciudadania",
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
        ],
        config_schema: include_str!("../config.schema.json"),
    };

    fn new(config: Config) -> Result<Self, String> {
        Ok(Ciudadania {
            settings: Settings::from_config(config)?,
            exchange: None,
        })
    }

    fn on_request_headers(&mut self, request: &RequestHead) -> HeadersAction {
        // A request never inherits anything from the previous one, even if the host
        // skipped `on_request_end`.
        self.exchange = None;
        let call = Call::current();
        if call.context.service != self.settings.service {
            return filter::on_headers(&self.settings, &call, request);
        }
        let (action, exchange) = service::on_headers(&self.settings, call, request);
        self.exchange = exchange;
        action
    }

    fn on_request_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        match self.exchange.as_mut() {
            Some(exchange) => exchange.on_body(&self.settings, chunk),
            None => BodyAction::Continue,
        }
    }

    fn on_response_headers(&mut self, response: &ResponseHead) -> HeadersAction {
        match self.exchange.as_mut() {
            Some(exchange) => exchange.on_response(response),
            None => HeadersAction::Continue,
        }
    }

    fn on_request_end(&mut self) {
        self.exchange = None;
    }
}

export_plugin!(Ciudadania);
