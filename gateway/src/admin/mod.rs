//! The admin API: an HTTPS listener of its own (axum over hyper, the data
//! plane's rustls certificate) on the control runtime, authenticated by
//! bearer admin tokens with roles operator, publisher and consumer.
//!
//! Every domain operation of the catalog is an endpoint ([`routes`]); the
//! API describes itself in an OpenAPI 3.1 document served at
//! `/openapi.json` ([`openapi`]); every administrative action is appended to
//! the audit ledger with who did it ([`audit`]); every error is an RFC 9457
//! problem ([`error`]).
//!
//! # Access
//!
//! `chasqui serve` listens on `admin_listen` (`--admin-listen`,
//! `CHASQUI_ADMIN_LISTEN`, TOML `admin_listen`; default `127.0.0.1:9443`).
//! At first start, when no operator exists, it creates one and writes its
//! token (`chq_admin_...`, 256 random bits, stored only as SHA-256) to
//! `<data_dir>/admin-token`, mode 0600; only the file's path is logged.
//! Operators create the other principals with `POST /principals`, or with
//! `chasqui admin token issue --role ROLE [--entity CODE] --name NAME`.
//!
//! | role | may |
//! | --- | --- |
//! | operator (AGETIC) | everything: entities, principals, every step that approves or withdraws, the audit ledger |
//! | publisher (an entity) | its services: register, sheet, OpenAPI document, upstreams, adhesion, deprecation; its documents |
//! | consumer (an entity) | its consumer systems, their requests and tokens, its adhesion agreements; discovery |
//!
//! Another entity's objects answer `403 forbidden` (services outside the
//! public catalog, requests, documents, systems, tokens).
//!
//! # The procedures
//!
//! Consume (`POST /access-requests`, then `POST /access-requests/{id}/transitions`
//! with an `action`): `requested` -> `enable_test` (operator; grants
//! `pruebas`, answers a test token once) -> `verify_integration` (operator)
//! -> `record_adhesion` (consumer or operator, with the `document_id` of an
//! uploaded PDF) -> `enable_production` (operator; grants `produccion`,
//! answers a production token once); `reject`, `suspend`, `reinstate` and
//! `revoke` (operator) withdraw or restore the grants at once.
//!
//! Publish (`POST /services` in `draft`, then `POST /services/{id}/transitions`):
//! `record_adhesion` (publisher or operator) -> `enable_environments`
//! (operator; needs upstreams in both environments, routes `pruebas`) ->
//! `publish` (operator; needs the OpenAPI document and the metadata sheet's
//! data provided and legal basis; in the catalog, routes both) -> `deprecate`.
//!
//! A step not allowed from the current state answers `409 invalid-transition`
//! and changes nothing; each step is one transaction, recorded with who,
//! when and the document it rests on (`GET .../history`). Grants and service
//! states live in the catalog tables whose triggers make every gateway
//! reload its snapshot, so a withdrawal is in force within one poll period.

pub mod audit;
pub mod bootstrap;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod listener;
pub mod openapi;
pub mod routes;

use crate::ledger::Ledger;
use chasqui_catalog::Store;
use std::sync::Arc;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The catalog store.
    pub store: Store,
    /// The audit ledger.
    pub ledger: Arc<Ledger>,
    /// The gateway's state, for the metrics exposition (`GET /metrics`).
    pub gateway: Arc<crate::state::Gateway>,
}

pub use bootstrap::bootstrap_operator;
pub use listener::start;
pub use routes::{route_list, router};

#[cfg(test)]
mod tests {
    use crate::config::{Config, ServeArgs};

    #[test]
    fn admin_listen_defaults_and_comes_from_the_file_or_a_flag() {
        let cfg = Config::resolve(ServeArgs::default()).unwrap();
        assert_eq!(cfg.admin_listen, "127.0.0.1:9443");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "admin_listen = \"0.0.0.0:9444\"\n").unwrap();
        let cfg = Config::resolve(ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.admin_listen, "0.0.0.0:9444");
        let cfg = Config::resolve(ServeArgs {
            config: Some(file),
            admin_listen: Some("127.0.0.1:1".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.admin_listen, "127.0.0.1:1");
    }
}
