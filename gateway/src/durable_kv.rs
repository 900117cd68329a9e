//! The store behind plugins' durable key-value state ([`KvBackend`]).
//!
//! Plugin host calls are synchronous and run on the data plane's threads;
//! the store is async on the control runtime. Each call is sent there and
//! the calling thread waits for the commit (bounded), which is the point:
//! a durable write is acknowledged to the plugin only once it is stored.

use crate::plugin::{KvBackend, KvEntryRecord};
use chasqui_catalog::Store;
use std::sync::mpsc;
use std::time::Duration;
use tokio::runtime::Handle;

/// Longest wait for one durable write before the plugin is told the store is
/// unavailable.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// [`KvBackend`] over the catalog store.
pub struct StoreKv {
    store: Store,
    control: Handle,
}

impl StoreKv {
    /// A backend running its queries on `control`.
    pub fn new(store: Store, control: Handle) -> StoreKv {
        StoreKv { store, control }
    }

    /// Runs `work` on the control runtime and waits for its result.
    fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.control.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv_timeout(WRITE_TIMEOUT)
            .map_err(|_| "the store did not answer in time".to_string())?
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl KvBackend for StoreKv {
    fn load(&self, plugin: &str) -> Result<Vec<KvEntryRecord>, String> {
        let (store, plugin) = (self.store.clone(), plugin.to_string());
        self.run(async move {
            let now = now_ms();
            store
                .plugin_kv_prune(now)
                .await
                .map_err(|e| e.to_string())?;
            store
                .plugin_kv_load(&plugin, now)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn put(
        &self,
        plugin: &str,
        key: &str,
        value: Option<&[u8]>,
        expires_at_ms: Option<i64>,
    ) -> Result<(), String> {
        let (store, plugin, key) = (self.store.clone(), plugin.to_string(), key.to_string());
        let value = value.map(<[u8]>::to_vec);
        self.run(async move {
            store
                .plugin_kv_put(&plugin, &key, value.as_deref(), expires_at_ms)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
