//! The admin API: an HTTPS listener of its own (axum over hyper, the data
//! plane's rustls certificate) on the control runtime, authenticated by
//! bearer admin tokens with roles operator, publisher and consumer.
//!
//! Every domain operation of the catalog is an endpoint ([`routes`]); the
//! API describes itself in an OpenAPI 3.1 document served at
//! `/openapi.json` ([`openapi`]); every administrative action is appended to
//! the audit ledger with who did it ([`audit`]); every error is an RFC 9457
//! problem ([`error`]).

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
