//! Durable key-value state of plugins (see migration 0005): the gateway
//! writes through to this table for plugins whose policy asks for durable
//! state, and loads it back when it loads the plugin.

use crate::store::{Result, Store};
use sqlx::Row;

/// One stored entry: key, value, expiry (Unix ms).
pub type KvRow = (String, Vec<u8>, Option<i64>);

impl Store {
    /// The live entries of `plugin` at `now_ms`.
    pub async fn plugin_kv_load(&self, plugin: &str, now_ms: i64) -> Result<Vec<KvRow>> {
        let rows = sqlx::query(
            "SELECT key, value, expires_at_ms FROM plugin_kv
             WHERE plugin = $1 AND (expires_at_ms IS NULL OR expires_at_ms > $2)",
        )
        .bind(plugin)
        .bind(now_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("key")?,
                    r.try_get("value")?,
                    r.try_get("expires_at_ms")?,
                ))
            })
            .collect()
    }

    /// Stores (`Some`) or removes (`None`) one entry; committed on return.
    pub async fn plugin_kv_put(
        &self,
        plugin: &str,
        key: &str,
        value: Option<&[u8]>,
        expires_at_ms: Option<i64>,
    ) -> Result<()> {
        match value {
            Some(value) => {
                sqlx::query(
                    "INSERT INTO plugin_kv (plugin, key, value, expires_at_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value,
                         expires_at_ms = excluded.expires_at_ms",
                )
                .bind(plugin)
                .bind(key)
                .bind(value)
                .bind(expires_at_ms)
                .execute(self.pool())
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM plugin_kv WHERE plugin = $1 AND key = $2")
                    .bind(plugin)
                    .bind(key)
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// Drops expired entries of every plugin; returns how many.
    pub async fn plugin_kv_prune(&self, now_ms: i64) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM plugin_kv WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= $1",
        )
        .bind(now_ms)
        .execute(self.pool())
        .await?
        .rows_affected())
    }
}
