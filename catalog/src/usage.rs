//! Hourly usage aggregates: per consumer entity x consumer system x service
//! x environment x hour, the calls, errors by class, bytes and a latency
//! histogram with fixed buckets. The gateway folds each batch of
//! operational records into them ([`aggregate`], [`Store::add_usage`]), off
//! the request path; the admin API reports them, with the fees plugins
//! recorded ([`Store::fee_report`]).
//!
//! The SQL here runs unchanged on SQLite and PostgreSQL.

use crate::oprecords::OperationalRecord;
use crate::store::{Result, Store};
use serde::Serialize;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Upper bounds of the latency buckets, in milliseconds; a last bucket
/// holds everything above the last bound.
pub const LATENCY_BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// Column names of the buckets, in order (the last is above 10 s).
const BUCKET_COLUMNS: [&str; 12] = [
    "lat_5ms",
    "lat_10ms",
    "lat_25ms",
    "lat_50ms",
    "lat_100ms",
    "lat_250ms",
    "lat_500ms",
    "lat_1s",
    "lat_2500ms",
    "lat_5s",
    "lat_10s",
    "lat_inf",
];

/// Which consumer, service and environment an aggregate is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
pub struct UsageKey {
    /// Start of the hour, Unix seconds (UTC).
    pub hour_start: i64,
    /// The calling entity (empty: not authenticated).
    pub consumer_entity: String,
    /// The calling system (empty: not authenticated).
    pub consumer_system: String,
    /// The service as requested (`entidad/v{n}`).
    pub service: String,
    /// `pruebas` or `produccion` (empty: not authenticated).
    pub environment: String,
}

/// The usage of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsageRow {
    /// What the row counts.
    #[serde(flatten)]
    pub key: UsageKey,
    /// Calls.
    pub calls: i64,
    /// Calls answered 400-499.
    pub errors_4xx: i64,
    /// Calls answered 500-599.
    pub errors_5xx: i64,
    /// Request body bytes.
    pub bytes_in: i64,
    /// Response body bytes.
    pub bytes_out: i64,
    /// Sum of the latencies (received to answered), microseconds.
    pub latency_sum_us: i64,
    /// Calls per latency bucket: `latency_buckets[i]` counts latencies at
    /// most `LATENCY_BUCKETS_MS[i]` ms and above the previous bound; the
    /// last (12th) counts those above 10 s.
    pub latency_buckets: Vec<i64>,
}

impl UsageRow {
    fn empty(key: UsageKey) -> UsageRow {
        UsageRow {
            key,
            calls: 0,
            errors_4xx: 0,
            errors_5xx: 0,
            bytes_in: 0,
            bytes_out: 0,
            latency_sum_us: 0,
            latency_buckets: vec![0; BUCKET_COLUMNS.len()],
        }
    }
}

/// The bucket of a latency.
pub fn bucket_of(latency_us: i64) -> usize {
    let us = u64::try_from(latency_us).unwrap_or(0);
    LATENCY_BUCKETS_MS
        .iter()
        .position(|&ms| us <= ms * 1000)
        .unwrap_or(LATENCY_BUCKETS_MS.len())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Folds a batch of records into one row per key, in key order.
pub fn aggregate(records: &[OperationalRecord]) -> Vec<UsageRow> {
    // Looked up by the records' own strings: a batch holds few keys, and
    // cloning four strings per record to look one up cost more than the
    // sums (the key is cloned once, for its row).
    let mut index: HashMap<(i64, &str, &str, &str, &str), usize> = HashMap::new();
    let mut rows: Vec<UsageRow> = Vec::new();
    for r in records {
        let hour_start = r.received_at_us.div_euclid(3_600_000_000) * 3600;
        let at = *index
            .entry((
                hour_start,
                &r.consumer_entity,
                &r.consumer_system,
                &r.service,
                &r.environment,
            ))
            .or_insert_with(|| {
                rows.push(UsageRow::empty(UsageKey {
                    hour_start,
                    consumer_entity: r.consumer_entity.to_string(),
                    consumer_system: r.consumer_system.to_string(),
                    service: r.service.to_string(),
                    environment: r.environment.to_string(),
                }));
                rows.len() - 1
            });
        let row = &mut rows[at];
        row.calls += 1;
        match r.status {
            400..=499 => row.errors_4xx += 1,
            500..=599 => row.errors_5xx += 1,
            _ => {}
        }
        row.bytes_in = row.bytes_in.saturating_add(to_i64(r.request_bytes));
        row.bytes_out = row.bytes_out.saturating_add(to_i64(r.response_bytes));
        let latency = (r.answered_at_us - r.received_at_us).max(0);
        row.latency_sum_us = row.latency_sum_us.saturating_add(latency);
        row.latency_buckets[bucket_of(latency)] += 1;
    }
    rows.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    rows
}

/// The statement that adds one row to `usage_hourly` (`$1` to `$11` the key
/// and sums, then the buckets), for sqlx and rusqlite alike.
fn usage_upsert_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let buckets = BUCKET_COLUMNS.join(", ");
        let placeholders: Vec<String> = (12..12 + BUCKET_COLUMNS.len())
            .map(|i| format!("${i}"))
            .collect();
        let updates: Vec<String> = [
            "calls",
            "errors_4xx",
            "errors_5xx",
            "bytes_in",
            "bytes_out",
            "latency_sum_us",
        ]
        .iter()
        .chain(BUCKET_COLUMNS.iter())
        .map(|c| format!("{c} = usage_hourly.{c} + excluded.{c}"))
        .collect();
        format!(
            "INSERT INTO usage_hourly (hour_start, consumer_entity, consumer_system, service,
                 environment, calls, errors_4xx, errors_5xx, bytes_in, bytes_out, latency_sum_us, {buckets})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, {})
             ON CONFLICT (hour_start, consumer_entity, consumer_system, service, environment)
             DO UPDATE SET {}",
            placeholders.join(", "),
            updates.join(", ")
        )
    })
}

/// Adds `rows` to the aggregates in the append connection's transaction
/// `tx` (SQLite numbers `$N` parameters in order of appearance).
pub(crate) fn append_usage(
    tx: &rusqlite::Transaction<'_>,
    rows: &[UsageRow],
) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(usage_upsert_sql())?;
    for row in rows {
        upsert.raw_bind_parameter(1, row.key.hour_start)?;
        upsert.raw_bind_parameter(2, &row.key.consumer_entity)?;
        upsert.raw_bind_parameter(3, &row.key.consumer_system)?;
        upsert.raw_bind_parameter(4, &row.key.service)?;
        upsert.raw_bind_parameter(5, &row.key.environment)?;
        let sums = [
            row.calls,
            row.errors_4xx,
            row.errors_5xx,
            row.bytes_in,
            row.bytes_out,
            row.latency_sum_us,
        ];
        for (i, sum) in sums.into_iter().enumerate() {
            upsert.raw_bind_parameter(6 + i, sum)?;
        }
        for i in 0..BUCKET_COLUMNS.len() {
            let count = row.latency_buckets.get(i).copied().unwrap_or(0);
            upsert.raw_bind_parameter(12 + i, count)?;
        }
        upsert.raw_execute()?;
    }
    Ok(())
}

/// Which usage (or fees) to report.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    /// Only calls by this consumer entity.
    pub consumer_entity: Option<String>,
    /// Only this service (`entidad/v{n}`).
    pub service: Option<String>,
    /// Only services whose name starts with this: a publisher's services
    /// are `code/v{n}`, so `code/v` selects them.
    pub service_prefix: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
    /// Only hours starting at or after this time (Unix seconds).
    pub from: Option<i64>,
    /// Only hours starting before this time (Unix seconds).
    pub to: Option<i64>,
}

/// The fees one key owes for one item, as plugins recorded them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FeeRow {
    /// What the row counts.
    #[serde(flatten)]
    pub key: UsageKey,
    /// What was charged for (e.g. a payment type).
    pub item: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// Total, in the currency's minor unit.
    pub amount_minor: i64,
    /// Charges summed.
    pub count: i64,
}

/// The filter's WHERE clause over columns named like `metering_fees`' and
/// `usage_hourly`'s, with parameters `$1`..`$6`.
const WHERE: &str = "WHERE ($1 IS NULL OR consumer_entity = $1)
       AND ($2 IS NULL OR service = $2)
       AND ($3 IS NULL OR substr(service, 1, length(CAST($3 AS TEXT))) = CAST($3 AS TEXT))
       AND ($4 IS NULL OR environment = $4)
       AND ($5 IS NULL OR hour_start >= $5)
       AND ($6 IS NULL OR hour_start < $6)";

/// Binds a [`UsageFilter`] to `$1`..`$6` of [`WHERE`].
macro_rules! bind_filter {
    ($query:expr, $f:expr) => {
        $query
            .bind($f.consumer_entity.as_deref())
            .bind($f.service.as_deref())
            .bind($f.service_prefix.as_deref())
            .bind($f.environment.as_deref())
            .bind($f.from)
            .bind($f.to)
    };
}

/// Reads the [`UsageKey`] columns of a row.
macro_rules! key_from_row {
    ($r:expr) => {
        UsageKey {
            hour_start: $r.try_get("hour_start")?,
            consumer_entity: $r.try_get("consumer_entity")?,
            consumer_system: $r.try_get("consumer_system")?,
            service: $r.try_get("service")?,
            environment: $r.try_get("environment")?,
        }
    };
}

impl Store {
    /// Adds aggregates to the stored ones (one transaction).
    pub async fn add_usage(&self, rows: &[UsageRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = usage_upsert_sql();
        let mut tx = self.pool().begin().await?;
        for row in rows {
            let mut q = sqlx::query(sql)
                .bind(row.key.hour_start)
                .bind(&row.key.consumer_entity)
                .bind(&row.key.consumer_system)
                .bind(&row.key.service)
                .bind(&row.key.environment)
                .bind(row.calls)
                .bind(row.errors_4xx)
                .bind(row.errors_5xx)
                .bind(row.bytes_in)
                .bind(row.bytes_out)
                .bind(row.latency_sum_us);
            for i in 0..BUCKET_COLUMNS.len() {
                q = q.bind(row.latency_buckets.get(i).copied().unwrap_or(0));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The aggregates matching `filter`, by hour, consumer, service and
    /// environment.
    pub async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>> {
        let sql = format!(
            "SELECT hour_start, consumer_entity, consumer_system, service, environment, calls,
                    errors_4xx, errors_5xx, bytes_in, bytes_out, latency_sum_us, {}
             FROM usage_hourly {WHERE}
             ORDER BY hour_start, consumer_entity, consumer_system, service, environment",
            BUCKET_COLUMNS.join(", ")
        );
        let rows = bind_filter!(sqlx::query(&sql), filter)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    key: key_from_row!(r),
                    calls: r.try_get("calls")?,
                    errors_4xx: r.try_get("errors_4xx")?,
                    errors_5xx: r.try_get("errors_5xx")?,
                    bytes_in: r.try_get("bytes_in")?,
                    bytes_out: r.try_get("bytes_out")?,
                    latency_sum_us: r.try_get("latency_sum_us")?,
                    latency_buckets: BUCKET_COLUMNS
                        .iter()
                        .map(|c| r.try_get::<i64, _>(*c))
                        .collect::<std::result::Result<_, _>>()?,
                })
            })
            .collect()
    }

    /// The fees plugins recorded (`metering_fees`) matching `filter`.
    pub async fn fee_report(&self, filter: &UsageFilter) -> Result<Vec<FeeRow>> {
        let sql = format!(
            "SELECT hour_start, consumer_entity, consumer_system, service, environment, item,
                    currency, amount_minor, count
             FROM metering_fees {WHERE}
             ORDER BY hour_start, consumer_entity, consumer_system, service, environment, item, currency"
        );
        let rows = bind_filter!(sqlx::query(&sql), filter)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FeeRow {
                    key: key_from_row!(r),
                    item: r.try_get("item")?,
                    currency: r.try_get("currency")?,
                    amount_minor: r.try_get("amount_minor")?,
                    count: r.try_get("count")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oprecords::SmolStr;

    fn record(
        entity: &str,
        service: &str,
        status: u16,
        at: i64,
        latency_us: i64,
    ) -> OperationalRecord {
        OperationalRecord {
            request_id: format!("r{at}").into(),
            trace_id: None,
            consumer_entity: entity.into(),
            consumer_system: "sys".into(),
            service: service.into(),
            route: "/x".into(),
            environment: "pruebas".into(),
            method: "GET".into(),
            status,
            request_bytes: 3,
            response_bytes: 10,
            received_at_us: at,
            sent_upstream_at_us: None,
            upstream_answered_at_us: None,
            answered_at_us: at + latency_us,
            plugin_outcome: SmolStr::default(),
            error_type: SmolStr::default(),
        }
    }

    #[test]
    fn latencies_fall_in_their_buckets() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(5_000), 0);
        assert_eq!(bucket_of(5_001), 1);
        assert_eq!(bucket_of(10_000_000), 10);
        assert_eq!(bucket_of(10_000_001), 11);
        assert_eq!(bucket_of(-3), 0);
    }

    #[tokio::test]
    async fn batches_add_up_per_key_and_hour_and_filter() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let hour = 1_795_705_200_i64 * 1_000_000;
        let batch = vec![
            record("a", "segip/v1", 200, hour + 1, 1_000),
            record("a", "segip/v1", 404, hour + 2, 7_000),
            record("a", "segip/v1", 503, hour + 3, 20_000_000),
            record("b", "segip/v1", 200, hour + 4, 1_000),
            // the next hour
            record("a", "segip/v1", 200, hour + 3_600_000_000, 1_000),
            record("a", "sin/v2", 200, hour + 5, 60_000),
        ];
        let rows = aggregate(&batch);
        assert_eq!(rows.len(), 4);
        store.add_usage(&rows).await.unwrap();
        // A second batch adds to the same rows.
        store.add_usage(&aggregate(&batch[..1])).await.unwrap();
        let all = store.usage(&UsageFilter::default()).await.unwrap();
        assert_eq!(all.len(), 4);
        let a = &all[0];
        assert_eq!(
            (
                a.key.hour_start,
                a.key.consumer_entity.as_str(),
                a.key.service.as_str()
            ),
            (1_795_705_200, "a", "segip/v1")
        );
        assert_eq!((a.calls, a.errors_4xx, a.errors_5xx), (4, 1, 1));
        assert_eq!((a.bytes_in, a.bytes_out), (12, 40));
        assert_eq!(a.latency_sum_us, 1_000 + 7_000 + 20_000_000 + 1_000);
        let mut expected = vec![0; 12];
        expected[0] = 2;
        expected[1] = 1;
        expected[11] = 1;
        assert_eq!(a.latency_buckets, expected);

        let only_b = store
            .usage(&UsageFilter {
                consumer_entity: Some("b".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(only_b.len(), 1);
        assert_eq!(only_b[0].calls, 1);
        let sin = store
            .usage(&UsageFilter {
                service_prefix: Some("sin/v".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(sin.len(), 1);
        assert_eq!(sin[0].latency_buckets[4], 1);
        let later = store
            .usage(&UsageFilter {
                from: Some(1_795_705_200 + 3600),
                to: Some(1_795_705_200 + 7200),
                environment: Some("pruebas".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].key.hour_start, 1_795_705_200 + 3600);
        assert!(store
            .usage(&UsageFilter {
                environment: Some("produccion".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .fee_report(&UsageFilter::default())
            .await
            .unwrap()
            .is_empty());
    }
}
