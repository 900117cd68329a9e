//! Quota usage (see migration 0012): the gateway's in-memory counters per
//! consumer system × service × period, written here in batches and read back
//! at start.

use crate::store::{Result, Store};
use sqlx::Row;

/// One counter: consumer id, service id, period (`day` or `month`), the
/// period's start (Unix seconds), requests counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Consumer system's row id.
    pub consumer_id: i64,
    /// Service's row id.
    pub service_id: i64,
    /// `day` or `month`.
    pub period: String,
    /// Unix seconds of the period's start.
    pub period_start: i64,
    /// Requests counted in the period.
    pub used: i64,
}

impl Store {
    /// Writes counters (absolute values: the gateway's memory is the
    /// authority for its periods), in one transaction.
    pub async fn quota_usage_save(&self, rows: &[QuotaUsage], now: i64) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO quota_usage (consumer_id, service_id, period, period_start, used, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (consumer_id, service_id, period, period_start)
                 DO UPDATE SET used = excluded.used, updated_at = excluded.updated_at",
            )
            .bind(r.consumer_id)
            .bind(r.service_id)
            .bind(r.period.as_str())
            .bind(r.period_start)
            .bind(r.used)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The counters of the periods starting at `day_start` (days) and
    /// `month_start` (months): the ones still in force.
    pub async fn quota_usage_current(
        &self,
        day_start: i64,
        month_start: i64,
    ) -> Result<Vec<QuotaUsage>> {
        let rows = sqlx::query(
            "SELECT consumer_id, service_id, period, period_start, used FROM quota_usage
             WHERE (period = 'day' AND period_start = $1) OR (period = 'month' AND period_start = $2)",
        )
        .bind(day_start)
        .bind(month_start)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QuotaUsage {
                    consumer_id: r.try_get(0)?,
                    service_id: r.try_get(1)?,
                    period: r.try_get(2)?,
                    period_start: r.try_get(3)?,
                    used: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Drops counters of periods that started before `before` (Unix
    /// seconds); returns how many.
    pub async fn quota_usage_prune(&self, before: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM quota_usage WHERE period_start < $1")
                .bind(before)
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }
}
