//! Chasqui's catalog: the entities that publish and consume services, the
//! services with their versions and per-environment upstreams, the consumer
//! systems, their grants and their tokens.
//!
//! Storage goes through sqlx's `Any` driver with migrations that run at
//! start: SQLite in a data directory is the embedded default, PostgreSQL
//! (`postgres://...`) lets several gateway nodes share one catalog. The data plane never queries the
//! store per request: it loads a [`Snapshot`] and watches [`Store::change_seq`]
//! to know when to load a new one, and looks tokens up through a cache.

pub mod appender;
pub mod contracts;
pub mod deferred;
pub mod directory;
pub mod documents;
pub mod domain;
pub mod hex;
pub mod import;
pub mod incidents;
pub mod model;
pub mod notify;
pub mod oprecords;
pub mod plugin_kv;
pub mod policy_versions;
pub mod principals;
pub mod procedures;
pub mod quotas;
pub mod store;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod testdb;
pub mod token;
pub mod usage;

pub use model::{Category, Environment, TokenRecord};
pub use store::{Backend, Snapshot, Store, StoreError};
