//! Store-and-forward: requests accepted with 202 while their upstream could
//! not be reached, kept until they are delivered, in order, per service
//! environment.
//!
//! [`Store::enqueue_deferred`] commits before it returns, so a request the
//! gateway acknowledged survives a crash of the process. Delivery is at least
//! once: a crash between the upstream's answer and
//! [`Store::record_deferred_outcome`] repeats the delivery, which carries the
//! same `Idempotency-Key` so the upstream can recognise it.

use crate::store::{Result, Store};
use serde::Serialize;
use sqlx::Row;

/// A request to keep until it is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeferred {
    /// The tracking id given to the client.
    pub id: String,
    /// The service (`entidad/v{n}`).
    pub service: String,
    /// `pruebas` or `produccion`.
    pub environment: String,
    /// The calling entity.
    pub consumer_entity: String,
    /// The calling system.
    pub consumer_system: String,
    /// The gateway's id of the request that was accepted.
    pub request_id: String,
    /// The method.
    pub method: String,
    /// Path and query as they go upstream.
    pub upstream_path: String,
    /// Header fields as they go upstream.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When it was accepted, Unix ms.
    pub accepted_at_ms: i64,
}

/// A kept request, with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deferred {
    /// Delivery order within its service environment.
    #[serde(skip)]
    pub seq: i64,
    /// The tracking id.
    pub id: String,
    /// The service.
    pub service: String,
    /// The environment.
    pub environment: String,
    /// The calling entity.
    pub consumer_entity: String,
    /// The calling system.
    pub consumer_system: String,
    /// The request id of the accepted request.
    pub request_id: String,
    /// The method.
    pub method: String,
    /// Path and query upstream.
    pub upstream_path: String,
    /// Header fields upstream.
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
    /// The body.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// `queued`, `delivered` or `failed`.
    pub state: String,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// When it was accepted, Unix ms.
    pub accepted_at_ms: i64,
    /// When the next delivery attempt is due, Unix ms.
    #[serde(skip)]
    pub next_attempt_ms: i64,
    /// When it was delivered, Unix ms.
    pub delivered_at_ms: Option<i64>,
    /// What failed last.
    pub last_error: Option<String>,
    /// The upstream's status, once delivered.
    pub upstream_status: Option<i64>,
    /// The upstream answer's content type, once delivered.
    pub response_type: Option<String>,
    /// The upstream's answer, once delivered.
    #[serde(skip)]
    pub response_body: Option<Vec<u8>>,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeferredOutcome {
    /// The upstream answered (any status that is not a temporary failure).
    Delivered {
        /// Its status.
        status: u16,
        /// Its content type.
        content_type: Option<String>,
        /// Its body (bounded by the caller).
        body: Vec<u8>,
    },
    /// Not delivered; try again at `next_attempt_ms`.
    Retry {
        /// When.
        next_attempt_ms: i64,
        /// What failed.
        error: String,
    },
}

fn deferred_from_row(row: &sqlx::any::AnyRow) -> Result<Deferred> {
    let headers: String = row.try_get("headers")?;
    Ok(Deferred {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        service: row.try_get("service")?,
        environment: row.try_get("environment")?,
        consumer_entity: row.try_get("consumer_entity")?,
        consumer_system: row.try_get("consumer_system")?,
        request_id: row.try_get("request_id")?,
        method: row.try_get("method")?,
        upstream_path: row.try_get("upstream_path")?,
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        body: row.try_get("body")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        accepted_at_ms: row.try_get("accepted_at_ms")?,
        next_attempt_ms: row.try_get("next_attempt_ms")?,
        delivered_at_ms: row.try_get("delivered_at_ms")?,
        last_error: row.try_get("last_error")?,
        upstream_status: row.try_get("upstream_status")?,
        response_type: row.try_get("response_type")?,
        response_body: row.try_get("response_body")?,
    })
}

impl Store {
    /// Keeps a request for later delivery; durable when this returns.
    pub async fn enqueue_deferred(&self, request: &NewDeferred) -> Result<()> {
        let headers = serde_json::to_string(&request.headers)
            .map_err(|e| crate::StoreError::Invalid(format!("headers: {e}")))?;
        sqlx::query(
            "INSERT INTO deferred_requests (id, service, environment, consumer_entity, consumer_system,
                 request_id, method, upstream_path, headers, body, accepted_at_ms, next_attempt_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&request.id)
        .bind(&request.service)
        .bind(&request.environment)
        .bind(&request.consumer_entity)
        .bind(&request.consumer_system)
        .bind(&request.request_id)
        .bind(&request.method)
        .bind(&request.upstream_path)
        .bind(headers)
        .bind(&request.body)
        .bind(request.accepted_at_ms)
        .bind(request.accepted_at_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The service environments that have queued requests:
    /// (service, environment, earliest next attempt in ms).
    pub async fn deferred_queues(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT service, environment, MIN(next_attempt_ms) AS due FROM deferred_requests
             WHERE state = 'queued' GROUP BY service, environment",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("service")?,
                    r.try_get("environment")?,
                    r.try_get("due")?,
                ))
            })
            .collect()
    }

    /// The oldest queued request of a service environment: the only one that
    /// may be delivered next, so that delivery keeps the order of acceptance.
    pub async fn next_deferred(
        &self,
        service: &str,
        environment: &str,
    ) -> Result<Option<Deferred>> {
        let row = sqlx::query(
            "SELECT * FROM deferred_requests WHERE service = $1 AND environment = $2 AND state = 'queued'
             ORDER BY seq LIMIT 1",
        )
        .bind(service)
        .bind(environment)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(deferred_from_row).transpose()
    }

    /// Records how delivering request `id` went.
    pub async fn record_deferred_outcome(
        &self,
        id: &str,
        now_ms: i64,
        outcome: &DeferredOutcome,
    ) -> Result<()> {
        match outcome {
            DeferredOutcome::Delivered {
                status,
                content_type,
                body,
            } => {
                sqlx::query(
                    "UPDATE deferred_requests SET state = 'delivered', attempts = attempts + 1,
                         delivered_at_ms = $1, upstream_status = $2, response_type = $3, response_body = $4,
                         last_error = NULL
                     WHERE id = $5",
                )
                .bind(now_ms)
                .bind(i64::from(*status))
                .bind(content_type)
                .bind(body)
                .bind(id)
                .execute(self.pool())
                .await?;
            }
            DeferredOutcome::Retry {
                next_attempt_ms,
                error,
            } => {
                sqlx::query(
                    "UPDATE deferred_requests SET attempts = attempts + 1, next_attempt_ms = $1,
                         last_error = $2 WHERE id = $3",
                )
                .bind(*next_attempt_ms)
                .bind(error)
                .bind(id)
                .execute(self.pool())
                .await?;
            }
        }
        Ok(())
    }

    /// One kept request by tracking id.
    pub async fn deferred(&self, id: &str) -> Result<Option<Deferred>> {
        let row = sqlx::query("SELECT * FROM deferred_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(deferred_from_row).transpose()
    }

    /// How many requests are queued for a service environment.
    pub async fn deferred_backlog(&self, service: &str, environment: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM deferred_requests WHERE service = $1 AND environment = $2 AND state = 'queued'",
        )
        .bind(service)
        .bind(environment)
        .fetch_one(self.pool())
        .await?)
    }
}
