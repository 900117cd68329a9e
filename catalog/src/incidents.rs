//! Security incidents that plugins report (CGII), their notifications to the
//! affected entities' security contacts, and the fees plugins record (PPE).
//!
//! The gateway writes here off the request path; operators read incidents
//! through the admin API and the CLI.

use crate::store::{Result, Store};
use serde::Serialize;
use sqlx::Row;

/// One incident as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Its id (`inc_` and 26 characters, time-ordered).
    pub id: String,
    /// When it was reported, Unix milliseconds.
    pub at_ms: i64,
    /// The plugin that reported it.
    pub plugin: String,
    /// What happened (`cgii.sqli`, ...).
    pub kind: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// One line for humans.
    pub summary: String,
    /// The evidence, as the plugin gave it.
    pub detail: serde_json::Value,
    /// Whether the request was blocked.
    pub blocked: bool,
    /// The gateway's request id.
    pub request_id: String,
    /// The service called (`entidad/v{n}`).
    pub service: String,
    /// `pruebas` or `produccion`.
    pub environment: String,
    /// The calling entity, if known.
    pub consumer_entity: Option<String>,
    /// The calling system, if known.
    pub consumer_system: Option<String>,
    /// The client's IP address, if known.
    pub client_address: Option<String>,
    /// `open`, `acknowledged` or `closed`.
    pub status: String,
}

/// A party to notify about a new incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The entity's code.
    pub entity_code: String,
    /// `publisher` or `consumer`.
    pub party: &'static str,
}

/// A notification whose delivery is due.
#[derive(Debug, Clone)]
pub struct DueNotification {
    /// The notification's id.
    pub id: i64,
    /// The webhook to POST to.
    pub target: String,
    /// Why this entity is told (`publisher` or `consumer`).
    pub party: String,
    /// The entity told.
    pub entity_code: String,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// The incident.
    pub incident: Incident,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The webhook accepted it.
    Delivered,
    /// Try again at this time (Unix ms); the text says what failed.
    Retry {
        /// When to try again.
        next_attempt_ms: i64,
        /// What failed.
        error: String,
    },
    /// Give up; the text says what failed last.
    Failed(String),
}

/// Which incidents to list.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only incidents in which this entity is the consumer or the publisher
    /// (the first segment of the service).
    pub entity: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only incidents at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only incidents strictly before this id (pagination: pass the last id
    /// of the previous page).
    pub before_id: Option<String>,
    /// At most this many (capped at 500).
    pub limit: u32,
}

/// A fee total to add: one consumer x service x environment x hour x item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeeKey {
    /// Start of the hour, Unix seconds.
    pub hour_start: i64,
    /// The calling entity.
    pub consumer_entity: String,
    /// The calling system.
    pub consumer_system: String,
    /// The service.
    pub service: String,
    /// The environment.
    pub environment: String,
    /// What the fee is for.
    pub item: String,
    /// ISO 4217 currency.
    pub currency: String,
}

/// A stored fee total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeeTotal {
    /// Start of the hour, Unix seconds.
    pub hour_start: i64,
    /// The calling entity.
    pub consumer_entity: String,
    /// The calling system.
    pub consumer_system: String,
    /// The service.
    pub service: String,
    /// The environment.
    pub environment: String,
    /// What the fee is for.
    pub item: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// Sum, in minor units.
    pub amount_minor: i64,
    /// Number of fees summed.
    pub count: i64,
}

const INCIDENT_COLUMNS: &str = "i.id, i.at_ms, i.plugin, i.kind, i.severity, i.summary, i.detail, i.blocked, \
     i.request_id, i.service, i.environment, i.consumer_entity, i.consumer_system, i.client_address, i.status";

fn incident_from_row(row: &sqlx::any::AnyRow) -> Result<Incident> {
    let detail: String = row.try_get("detail")?;
    Ok(Incident {
        id: row.try_get("id")?,
        at_ms: row.try_get("at_ms")?,
        plugin: row.try_get("plugin")?,
        kind: row.try_get("kind")?,
        severity: row.try_get("severity")?,
        summary: row.try_get("summary")?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        blocked: row.try_get::<i64, _>("blocked")? != 0,
        request_id: row.try_get("request_id")?,
        service: row.try_get("service")?,
        environment: row.try_get("environment")?,
        consumer_entity: row.try_get("consumer_entity")?,
        consumer_system: row.try_get("consumer_system")?,
        client_address: row.try_get("client_address")?,
        status: row.try_get("status")?,
    })
}

impl Store {
    /// Stores an incident and one notification per recipient, in one
    /// transaction. A recipient whose entity has no webhook gets a
    /// `no-contact` notification (kept, so operators see who was not told).
    pub async fn insert_incident(
        &self,
        incident: &Incident,
        recipients: &[Recipient],
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO incidents (id, at_ms, plugin, kind, severity, summary, detail, blocked,
                 request_id, service, environment, consumer_entity, consumer_system, client_address)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&incident.id)
        .bind(incident.at_ms)
        .bind(&incident.plugin)
        .bind(&incident.kind)
        .bind(&incident.severity)
        .bind(&incident.summary)
        .bind(incident.detail.to_string())
        .bind(i64::from(incident.blocked))
        .bind(&incident.request_id)
        .bind(&incident.service)
        .bind(&incident.environment)
        .bind(&incident.consumer_entity)
        .bind(&incident.consumer_system)
        .bind(&incident.client_address)
        .execute(&mut *tx)
        .await?;
        for recipient in recipients {
            let target: Option<String> =
                sqlx::query_scalar("SELECT incident_webhook FROM entities WHERE code = $1")
                    .bind(&recipient.entity_code)
                    .fetch_optional(&mut *tx)
                    .await?
                    .flatten();
            let state = if target.is_some() {
                "pending"
            } else {
                "no-contact"
            };
            sqlx::query(
                "INSERT INTO incident_notifications (incident_id, entity_code, party, target, state, next_attempt_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (incident_id, entity_code) DO NOTHING",
            )
            .bind(&incident.id)
            .bind(&recipient.entity_code)
            .bind(recipient.party)
            .bind(&target)
            .bind(state)
            .bind(incident.at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Notifications due at `now_ms`, oldest first.
    pub async fn due_notifications(&self, now_ms: i64, limit: u32) -> Result<Vec<DueNotification>> {
        let sql = format!(
            "SELECT n.id AS notification_id, n.target, n.party, n.entity_code, n.attempts, {INCIDENT_COLUMNS}
             FROM incident_notifications n JOIN incidents i ON i.id = n.incident_id
             WHERE n.state = 'pending' AND n.next_attempt_ms <= $1
             ORDER BY n.next_attempt_ms, n.id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DueNotification {
                    id: row.try_get("notification_id")?,
                    target: row
                        .try_get::<Option<String>, _>("target")?
                        .unwrap_or_default(),
                    party: row.try_get("party")?,
                    entity_code: row.try_get("entity_code")?,
                    attempts: row.try_get("attempts")?,
                    incident: incident_from_row(row)?,
                })
            })
            .collect()
    }

    /// The earliest time a pending notification is due, if any.
    pub async fn next_notification_due(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_ms) FROM incident_notifications WHERE state = 'pending'",
        )
        .fetch_one(self.pool())
        .await?)
    }

    /// Records how a delivery attempt of notification `id` ended.
    pub async fn record_delivery(&self, id: i64, now_ms: i64, outcome: &Delivery) -> Result<()> {
        let query = match outcome {
            Delivery::Delivered => sqlx::query(
                "UPDATE incident_notifications SET state = 'delivered', attempts = attempts + 1,
                     delivered_at_ms = $1, last_error = NULL WHERE id = $2",
            )
            .bind(now_ms),
            Delivery::Retry {
                next_attempt_ms,
                error,
            } => sqlx::query(
                "UPDATE incident_notifications SET attempts = attempts + 1, next_attempt_ms = $1,
                     last_error = $2 WHERE id = $3",
            )
            .bind(*next_attempt_ms)
            .bind(error.clone()),
            Delivery::Failed(error) => sqlx::query(
                "UPDATE incident_notifications SET state = 'failed', attempts = attempts + 1,
                     last_error = $1 WHERE id = $2",
            )
            .bind(error.clone()),
        };
        query.bind(id).execute(self.pool()).await?;
        Ok(())
    }

    /// Incidents, newest first.
    pub async fn list_incidents(&self, filter: &IncidentFilter) -> Result<Vec<Incident>> {
        let limit = i64::from(filter.limit.clamp(1, 500));
        // The publisher of a service is the first segment of its route name
        // (`entidad/v{n}`).
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents i
             WHERE ($1 IS NULL OR i.consumer_entity = $1 OR i.service LIKE $1 || '/%')
               AND ($2 IS NULL OR i.kind = $2)
               AND ($3 IS NULL OR i.at_ms >= $3)
               AND ($4 IS NULL OR i.id < $4)
             ORDER BY i.id DESC LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(&filter.entity)
            .bind(&filter.kind)
            .bind(filter.since_ms)
            .bind(&filter.before_id)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(incident_from_row).collect()
    }

    /// The notifications of one incident: (entity, party, state, attempts).
    pub async fn incident_notifications(
        &self,
        incident_id: &str,
    ) -> Result<Vec<(String, String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT entity_code, party, state, attempts FROM incident_notifications
             WHERE incident_id = $1 ORDER BY id",
        )
        .bind(incident_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("entity_code")?,
                    r.try_get("party")?,
                    r.try_get("state")?,
                    r.try_get("attempts")?,
                ))
            })
            .collect()
    }

    /// Sets (or clears) where an entity's incident notifications go.
    pub async fn set_incident_webhook(&self, entity_code: &str, url: Option<&str>) -> Result<()> {
        let changed = sqlx::query("UPDATE entities SET incident_webhook = $1 WHERE code = $2")
            .bind(url)
            .bind(entity_code)
            .execute(self.pool())
            .await?
            .rows_affected();
        if changed == 0 {
            return Err(crate::StoreError::NotFound(format!("entity {entity_code}")));
        }
        Ok(())
    }

    /// Adds fee totals (amount in minor units, count), in one transaction.
    pub async fn add_fees(&self, totals: &[(FeeKey, i64, i64)]) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        for (key, amount, count) in totals {
            sqlx::query(
                "INSERT INTO metering_fees (hour_start, consumer_entity, consumer_system, service,
                     environment, item, currency, amount_minor, count)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (hour_start, consumer_entity, consumer_system, service, environment, item, currency)
                 DO UPDATE SET amount_minor = metering_fees.amount_minor + excluded.amount_minor,
                               count = metering_fees.count + excluded.count",
            )
            .bind(key.hour_start)
            .bind(&key.consumer_entity)
            .bind(&key.consumer_system)
            .bind(&key.service)
            .bind(&key.environment)
            .bind(&key.item)
            .bind(&key.currency)
            .bind(amount)
            .bind(count)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Fee totals, oldest hour first, optionally for one consumer entity.
    pub async fn fee_totals(&self, consumer_entity: Option<&str>) -> Result<Vec<FeeTotal>> {
        let rows = sqlx::query(
            "SELECT hour_start, consumer_entity, consumer_system, service, environment, item,
                    currency, amount_minor, count
             FROM metering_fees WHERE ($1 IS NULL OR consumer_entity = $1)
             ORDER BY hour_start, consumer_entity, consumer_system, service, item",
        )
        .bind(consumer_entity)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FeeTotal {
                    hour_start: r.try_get("hour_start")?,
                    consumer_entity: r.try_get("consumer_entity")?,
                    consumer_system: r.try_get("consumer_system")?,
                    service: r.try_get("service")?,
                    environment: r.try_get("environment")?,
                    item: r.try_get("item")?,
                    currency: r.try_get("currency")?,
                    amount_minor: r.try_get("amount_minor")?,
                    count: r.try_get("count")?,
                })
            })
            .collect()
    }
}
