//! Catalog change notifications across the nodes of a cluster.
//!
//! On PostgreSQL the change triggers of migration 0001 `pg_notify` the
//! [`CHANNEL`] channel when a transaction that touched routing or
//! authentication data commits. Each gateway node keeps one `LISTEN`
//! connection and reloads its route table and token cache as soon as a
//! notification arrives, so a revocation made through any node is in force
//! on every node well within a second, while requests never query the
//! database. On SQLite (one node) there is nothing to listen to and the
//! gateway's poll of [`Store::change_seq`] is enough.

use crate::store::{Backend, Store};
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The PostgreSQL notification channel of catalog changes.
pub const CHANNEL: &str = "chasqui_catalog";

/// The first wait before connecting again after the listener lost its
/// connection; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Store {
    /// On PostgreSQL, starts a task (on the current Tokio runtime) that
    /// listens for catalog changes and returns the [`Notify`] it signals:
    /// once per notification (several may collapse into one wake-up) and
    /// once after every (re)connection, because changes made while it was
    /// not listening were not announced to it. Reconnects with a capped
    /// exponential backoff for as long as the process lives. Returns None on
    /// SQLite.
    pub fn watch_changes(&self) -> Option<Arc<Notify>> {
        if self.backend() != Backend::Postgres {
            return None;
        }
        let url = self.postgres_url()?.to_string();
        let notify = Arc::new(Notify::new());
        tokio::spawn(listen(url, notify.clone()));
        Some(notify)
    }
}

/// Keeps one LISTEN connection open, forwarding notifications to `notify`.
async fn listen(url: String, notify: Arc<Notify>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match subscribe(&url).await {
            Ok(mut listener) => {
                backoff = FIRST_BACKOFF;
                tracing::info!(channel = CHANNEL, "listening for catalog changes");
                notify.notify_one();
                // `try_recv` returns None when the connection drops; we then
                // open a fresh listener ourselves so that the reload after
                // reconnecting happens only once LISTEN is in place again.
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => notify.notify_one(),
                        Ok(None) => {
                            tracing::warn!("catalog change listener lost its connection");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "catalog change listener failed");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "cannot listen for catalog changes; polling only until it can");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
