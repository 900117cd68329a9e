//! Chasqui, the interoperability gateway of the Bolivian state.
//!
//! The `chasqui` binary is a thin CLI over this library: the data plane on
//! pingora ([`proxy`]), the catalog snapshot it routes with ([`routes`],
//! [`upstream`]), token authentication ([`auth`]), RFC 9457 errors
//! ([`problem`]), path normalisation ([`path`]), the policy ([`policy`]) and
//! the server's lifecycle ([`server`]).

pub mod admin;
pub mod auth;
pub mod config;
pub mod contract;
pub mod deferred;
pub mod demo;
pub mod durable_kv;
pub mod effective;
pub mod ledger;
pub mod metrics;
pub mod oprecords;
pub mod path;
pub mod platform;
pub mod plugin;
pub mod policy;
pub mod policy_versions;
pub mod problem;
pub mod proxy;
pub mod quota;
pub mod ratelimit;
pub mod respcache;
pub mod routes;
pub mod server;
pub mod stage;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upstream;

pub use chasqui_catalog::hex::{hex, hex_into};
