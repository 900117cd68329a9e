//! Services' contracts for the data plane: the OpenAPI documents stored with
//! the services' sheets, read in one go when the gateway (re)loads.

use crate::store::{Result, Store};
use sqlx::Row;

impl Store {
    /// Every stored OpenAPI document, by service id (the JSON text as stored).
    pub async fn openapi_documents(&self) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT service_id, openapi FROM service_sheets WHERE openapi IS NOT NULL ORDER BY service_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
