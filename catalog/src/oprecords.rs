//! The operational record of every request the data plane served, written
//! in batches by the gateway off the request path, listed by operators and
//! deleted after the retention period. On SQLite each batch is one row, a
//! [`segment`]; on PostgreSQL each record is a row.

pub mod segment;

use crate::store::{Backend, Result, Store, StoreError};
use segment::Segment;
use serde::{Deserialize, Serialize};
pub use smol_str::SmolStr;
use sqlx::Row;

/// One request's operational record.
///
/// Segments encode it with postcard, field by field in this order: fields
/// are added at the end with a new segment version, and no field may skip
/// serialization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperationalRecord {
    /// The gateway's request id.
    #[schema(value_type = String)]
    pub request_id: SmolStr,
    /// The W3C trace id the client sent, if any.
    #[schema(value_type = Option<String>)]
    pub trace_id: Option<SmolStr>,
    /// The calling entity (empty when not authenticated).
    #[schema(value_type = String)]
    pub consumer_entity: SmolStr,
    /// The calling system (empty when not authenticated).
    #[schema(value_type = String)]
    pub consumer_system: SmolStr,
    /// The service as requested (`entidad/v{n}`; empty when none was named).
    #[schema(value_type = String)]
    pub service: SmolStr,
    /// The path below the service with identifiers as `{id}`, no query.
    #[schema(value_type = String)]
    pub route: SmolStr,
    /// `pruebas` or `produccion` (empty when not authenticated).
    #[schema(value_type = String)]
    pub environment: SmolStr,
    /// The HTTP method.
    #[schema(value_type = String)]
    pub method: SmolStr,
    /// The status answered (0 when nothing was).
    pub status: u16,
    /// Bytes of the request body.
    pub request_bytes: u64,
    /// Bytes of the response body sent.
    pub response_bytes: u64,
    /// When the request was received (Unix microseconds).
    pub received_at_us: i64,
    /// When it was last sent upstream, if it was.
    pub sent_upstream_at_us: Option<i64>,
    /// When the upstream answered, if one did.
    pub upstream_answered_at_us: Option<i64>,
    /// When the answer was done (Unix microseconds).
    pub answered_at_us: i64,
    /// The status a plugin answered with, or empty.
    #[schema(value_type = String)]
    pub plugin_outcome: SmolStr,
    /// The problem slug the request ended with, or empty.
    #[schema(value_type = String)]
    pub error_type: SmolStr,
}

/// Which records to list.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// Only this service (`entidad/v{n}`).
    pub service: Option<String>,
    /// Only calls by this consumer entity.
    pub consumer_entity: Option<String>,
    /// Only requests received at or after this time (Unix microseconds).
    pub since_us: Option<i64>,
    /// At most this many (capped at 1000).
    pub limit: u32,
}

const COLUMNS: &str = "request_id, trace_id, consumer_entity, consumer_system, service, route,
    environment, method, status, request_bytes, response_bytes, received_at_us,
    sent_upstream_at_us, upstream_answered_at_us, answered_at_us, plugin_outcome, error_type";

/// Columns bound per record in [`Store::insert_operational_records`].
const BOUND_COLUMNS: usize = 17;
/// Records stored in one transaction at most by [`Store::store_operational_records`].
pub const RECORDS_PER_TRANSACTION: usize = 500;
/// Records per INSERT statement: 17 x 50 = 850 parameters, far below both
/// SQLite's (32,766) and PostgreSQL's (65,535) limits.
const ROWS_PER_INSERT: usize = 50;

/// `INSERT ... VALUES (..17..), (..17..), ...` for `rows` records, with
/// the placeholders of `backend`. On SQLite they are anonymous (`?`):
/// sqlx binds a numbered one (`$N`) by asking SQLite for its name, which
/// SQLite finds by a linear scan of the statement's names, so binding a
/// statement with n numbered parameters costs O(n^2); with 850 it was a
/// third of the gateway's CPU under load.
fn multi_row_insert(backend: Backend, rows: usize) -> String {
    let mut sql = format!("INSERT INTO operational_records ({COLUMNS}) VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..BOUND_COLUMNS {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(row * BOUND_COLUMNS + column + 1).to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// Binds `rows` to a [`multi_row_insert`] query, in column order; a macro
/// so that one list serves both the typed SQLite and the `Any` query.
macro_rules! bind_records {
    ($query:expr, $rows:expr) => {{
        let mut query = $query;
        for r in $rows {
            query = query
                .bind(r.request_id.as_str())
                .bind(r.trace_id.as_deref())
                .bind(r.consumer_entity.as_str())
                .bind(r.consumer_system.as_str())
                .bind(r.service.as_str())
                .bind(r.route.as_str())
                .bind(r.environment.as_str())
                .bind(r.method.as_str())
                .bind(i64::from(r.status))
                .bind(to_i64(r.request_bytes))
                .bind(to_i64(r.response_bytes))
                .bind(r.received_at_us)
                .bind(r.sent_upstream_at_us)
                .bind(r.upstream_answered_at_us)
                .bind(r.answered_at_us)
                .bind(r.plugin_outcome.as_str())
                .bind(r.error_type.as_str());
        }
        query
    }};
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A text column as the record keeps it.
fn text(r: &sqlx::any::AnyRow, column: &str) -> Result<SmolStr> {
    Ok(SmolStr::from(r.try_get::<String, _>(column)?))
}

fn record_from_row(r: &sqlx::any::AnyRow) -> Result<OperationalRecord> {
    let status: i64 = r.try_get("status")?;
    let request_bytes: i64 = r.try_get("request_bytes")?;
    let response_bytes: i64 = r.try_get("response_bytes")?;
    Ok(OperationalRecord {
        request_id: text(r, "request_id")?,
        trace_id: r
            .try_get::<Option<String>, _>("trace_id")?
            .map(SmolStr::from),
        consumer_entity: text(r, "consumer_entity")?,
        consumer_system: text(r, "consumer_system")?,
        service: text(r, "service")?,
        route: text(r, "route")?,
        environment: text(r, "environment")?,
        method: text(r, "method")?,
        status: u16::try_from(status).unwrap_or(0),
        request_bytes: u64::try_from(request_bytes).unwrap_or(0),
        response_bytes: u64::try_from(response_bytes).unwrap_or(0),
        received_at_us: r.try_get("received_at_us")?,
        sent_upstream_at_us: r.try_get("sent_upstream_at_us")?,
        upstream_answered_at_us: r.try_get("upstream_answered_at_us")?,
        answered_at_us: r.try_get("answered_at_us")?,
        plugin_outcome: text(r, "plugin_outcome")?,
        error_type: text(r, "error_type")?,
    })
}

/// The INSERT of one segment, for rusqlite and sqlx alike (SQLite reads `?N`).
const SEGMENT_INSERT: &str = "INSERT INTO operational_record_segments \
     (first_received_us, last_received_us, records, body) VALUES (?1, ?2, ?3, ?4)";

/// Stores one segment in the caller's transaction.
fn append_segment(tx: &rusqlite::Transaction<'_>, segment: &Segment) -> rusqlite::Result<()> {
    tx.prepare_cached(SEGMENT_INSERT)?
        .execute(rusqlite::params![
            segment.first_received_us,
            segment.last_received_us,
            segment.records,
            segment.body,
        ])?;
    Ok(())
}

/// Segments read per query by the listing, newest first.
const SEGMENTS_PER_PAGE: i64 = 8;

impl Store {
    /// Stores records, [`RECORDS_PER_TRANSACTION`] per transaction, adds
    /// them to the hourly usage aggregates ([`crate::usage::aggregate`]), and
    /// hands the buffer back (for reuse). On a SQLite file they go through
    /// the append connection ([`crate::appender`]) on the blocking pool,
    /// which is why it takes the records by value, each batch's records and
    /// aggregates in one transaction; elsewhere through
    /// [`Store::insert_operational_records`] and [`Store::add_usage`].
    /// A failed transaction loses its records (and their aggregates) only;
    /// the error is the first.
    pub async fn store_operational_records(
        &self,
        records: Vec<OperationalRecord>,
    ) -> (Vec<OperationalRecord>, Result<()>) {
        let Some(appender) = self.appender() else {
            let mut outcome = Ok(());
            for batch in records.chunks(RECORDS_PER_TRANSACTION) {
                // Two transactions here: a crash between them loses the
                // batch's aggregates only.
                let stored = self.insert_operational_records(batch).await;
                let added = self.add_usage(&crate::usage::aggregate(batch)).await;
                outcome = outcome.and(stored).and(added);
            }
            return (records, outcome);
        };
        if records.is_empty() {
            return (records, Ok(()));
        }
        let (give_back, given) = tokio::sync::oneshot::channel();
        let stored = appender
            .run(move |appender| {
                let mut outcome = Ok(());
                for batch in records.chunks(RECORDS_PER_TRANSACTION) {
                    let stored = match segment::encode(batch) {
                        Ok(segment) => {
                            let usage = crate::usage::aggregate(batch);
                            appender
                                .write_now(|tx| {
                                    append_segment(tx, &segment)?;
                                    crate::usage::append_usage(tx, &usage)
                                })
                                .map_err(StoreError::from)
                        }
                        Err(e) => Err(StoreError::from(e)),
                    };
                    outcome = outcome.and(stored);
                }
                let _ = give_back.send(records);
                outcome
            })
            .await;
        let outcome = stored.map_err(StoreError::from).and_then(|outcome| outcome);
        (given.await.unwrap_or_default(), outcome)
    }

    /// Inserts a batch of records in one transaction: on SQLite as
    /// segments of up to [`RECORDS_PER_TRANSACTION`], on PostgreSQL
    /// [`ROWS_PER_INSERT`] rows per statement (each statement is a round
    /// trip to the server, and one per row made the writer cost more than
    /// the requests it records).
    pub async fn insert_operational_records(&self, records: &[OperationalRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.backend() == Backend::Sqlite {
            let mut tx = self.pool().begin().await?;
            for batch in records.chunks(RECORDS_PER_TRANSACTION) {
                let segment = segment::encode(batch)?;
                sqlx::query(SEGMENT_INSERT)
                    .bind(segment.first_received_us)
                    .bind(segment.last_received_us)
                    .bind(segment.records)
                    .bind(segment.body)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for rows in records.chunks(ROWS_PER_INSERT) {
            let sql = multi_row_insert(self.backend(), rows.len());
            bind_records!(sqlx::query(&sql), rows)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records matching `filter`, newest first (by the time received; ties
    /// in the order they were stored, the later first).
    pub async fn list_operational_records(
        &self,
        filter: &RecordFilter,
    ) -> Result<Vec<OperationalRecord>> {
        let limit = i64::from(filter.limit.clamp(1, 1000));
        if self.backend() == Backend::Sqlite {
            return self.list_from_segments(filter, limit as usize).await;
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM operational_records
             WHERE ($1 IS NULL OR service = $1)
               AND ($2 IS NULL OR consumer_entity = $2)
               AND ($3 IS NULL OR received_at_us >= $3)
             ORDER BY received_at_us DESC, id DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(&filter.service)
            .bind(&filter.consumer_entity)
            .bind(filter.since_us)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// The listing on SQLite: segments newest first (by their latest
    /// record), a page at a time, decoded and filtered, until no segment
    /// left can hold a record newer than the `limit`-th found.
    async fn list_from_segments(
        &self,
        filter: &RecordFilter,
        limit: usize,
    ) -> Result<Vec<OperationalRecord>> {
        let matches = |r: &OperationalRecord| {
            filter.service.as_ref().is_none_or(|s| r.service == s)
                && filter
                    .consumer_entity
                    .as_ref()
                    .is_none_or(|e| r.consumer_entity == e)
                && filter.since_us.is_none_or(|t| r.received_at_us >= t)
        };
        // (received, segment id, position in it): the listing's order key.
        let mut found: Vec<((i64, i64, usize), OperationalRecord)> = Vec::new();
        // Where the previous page ended: (last_received_us, id).
        let mut after: Option<(i64, i64)> = None;
        loop {
            let page = sqlx::query(
                "SELECT id, last_received_us, body FROM operational_record_segments
                 WHERE ($1 IS NULL OR last_received_us >= $1)
                   AND ($2 IS NULL OR last_received_us < $2
                        OR (last_received_us = $2 AND id < $3))
                 ORDER BY last_received_us DESC, id DESC LIMIT $4",
            )
            .bind(filter.since_us)
            .bind(after.map(|(t, _)| t))
            .bind(after.map(|(_, id)| id))
            .bind(SEGMENTS_PER_PAGE)
            .fetch_all(self.pool())
            .await?;
            let full_page = page.len() as i64 == SEGMENTS_PER_PAGE;
            for row in &page {
                let id: i64 = row.try_get("id")?;
                let last: i64 = row.try_get("last_received_us")?;
                if found.len() >= limit && last < found[limit - 1].0 .0 {
                    // Every record left was received before the limit-th.
                    return Ok(found.into_iter().take(limit).map(|(_, r)| r).collect());
                }
                let body: Vec<u8> = row.try_get("body")?;
                for (n, record) in segment::decode(&body)?.into_iter().enumerate() {
                    if matches(&record) {
                        found.push(((record.received_at_us, id, n), record));
                    }
                }
                found.sort_unstable_by_key(|(key, _)| std::cmp::Reverse(*key));
                found.truncate(limit);
                after = Some((last, id));
            }
            if !full_page {
                return Ok(found.into_iter().map(|(_, r)| r).collect());
            }
        }
    }

    /// Deletes the records received before `before_us` (Unix microseconds);
    /// returns how many. On SQLite, segments wholly before are deleted and
    /// a segment that spans the limit is rewritten with the records it keeps.
    pub async fn delete_operational_records_before(&self, before_us: i64) -> Result<u64> {
        if self.backend() != Backend::Sqlite {
            let done = sqlx::query("DELETE FROM operational_records WHERE received_at_us < $1")
                .bind(before_us)
                .execute(self.pool())
                .await?;
            return Ok(done.rows_affected());
        }
        let mut tx = self.pool().begin().await?;
        // A write first: the transaction then holds SQLite's write lock
        // (waiting for it if the record writer has it), where a read first
        // would fail to upgrade once the writer had committed meanwhile.
        let whole: Vec<(i64,)> = sqlx::query_as(
            "DELETE FROM operational_record_segments WHERE last_received_us < $1
             RETURNING records",
        )
        .bind(before_us)
        .fetch_all(&mut *tx)
        .await?;
        let mut deleted = whole
            .iter()
            .map(|(n,)| u64::try_from(*n).unwrap_or(0))
            .sum::<u64>();
        let spanning = sqlx::query(
            "SELECT id, body FROM operational_record_segments
             WHERE first_received_us < $1 AND last_received_us >= $1",
        )
        .bind(before_us)
        .fetch_all(&mut *tx)
        .await?;
        for row in &spanning {
            let id: i64 = row.try_get("id")?;
            let body: Vec<u8> = row.try_get("body")?;
            let mut kept = segment::decode(&body)?;
            let held = kept.len();
            kept.retain(|r| r.received_at_us >= before_us);
            deleted += (held - kept.len()) as u64;
            let rewritten = segment::encode(&kept)?;
            sqlx::query(
                "UPDATE operational_record_segments
                 SET first_received_us = $1, records = $2, body = $3 WHERE id = $4",
            )
            .bind(rewritten.first_received_us)
            .bind(rewritten.records)
            .bind(rewritten.body)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, service: &str, entity: &str, at: i64) -> OperationalRecord {
        OperationalRecord {
            request_id: id.into(),
            trace_id: None,
            consumer_entity: entity.into(),
            consumer_system: "sys".into(),
            service: service.into(),
            route: "/personas/{id}".into(),
            environment: "pruebas".into(),
            method: "GET".into(),
            status: 200,
            request_bytes: 0,
            response_bytes: 12,
            received_at_us: at,
            sent_upstream_at_us: Some(at + 1),
            upstream_answered_at_us: Some(at + 2),
            answered_at_us: at + 3,
            plugin_outcome: SmolStr::default(),
            error_type: SmolStr::default(),
        }
    }

    crate::testdb::on_both_databases! {
        async fn batches_are_listed_filtered_and_expire(store: Store) {
            let batch = vec![
                record("r1", "a/v1", "c", 100),
                record("r2", "a/v1", "d", 200),
                record("r3", "b/v1", "c", 300),
            ];
            store.insert_operational_records(&batch).await.unwrap();
            let all = store
                .list_operational_records(&RecordFilter {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(
                all.iter()
                    .map(|r| r.request_id.as_str())
                    .collect::<Vec<_>>(),
                ["r3", "r2", "r1"]
            );
            assert_eq!(all[2], batch[0]);
            let some = store
                .list_operational_records(&RecordFilter {
                    service: Some("a/v1".into()),
                    consumer_entity: Some("c".into()),
                    since_us: Some(50),
                    limit: 10,
                })
                .await
                .unwrap();
            assert_eq!(some, vec![batch[0].clone()]);
            assert_eq!(
                store.delete_operational_records_before(250).await.unwrap(),
                2
            );
            let left = store
                .list_operational_records(&RecordFilter {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(left, vec![batch[2].clone()]);
        }
    }

    crate::testdb::on_both_databases! {
        async fn a_batch_larger_than_one_statement_is_stored_whole(store: Store) {
            // Two full statements and a partial one, with every optional
            // column both set and unset, in order.
            let batch = mixed_batch(2 * ROWS_PER_INSERT + 7);
            store.insert_operational_records(&batch).await.unwrap();
            assert_eq!(listed(&store).await, batch);
        }
    }

    /// Records with every optional column both set and unset.
    fn mixed_batch(n: usize) -> Vec<OperationalRecord> {
        (0..n)
            .map(|i| {
                let mut r = record(&format!("r{i}"), "a/v1", "c", 1_000 + i as i64);
                if i % 2 == 0 {
                    r.trace_id = Some(format!("{i:032x}").into());
                } else {
                    r.sent_upstream_at_us = None;
                    r.upstream_answered_at_us = None;
                    r.status = 502;
                    r.error_type = "upstream-refused".into();
                }
                r
            })
            .collect()
    }

    async fn listed(store: &Store) -> Vec<OperationalRecord> {
        let mut all = store
            .list_operational_records(&RecordFilter {
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap();
        all.reverse();
        all
    }

    #[tokio::test]
    async fn a_file_store_appends_through_its_own_connection_in_bounded_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("c.db")).await.unwrap();
        assert!(
            store.appender().is_some(),
            "a file store has an append connection"
        );
        // Two transactions (a full one and a partial one); under the
        // listing's cap of 1,000 rows, so that all can be read back.
        let batch = mixed_batch(RECORDS_PER_TRANSACTION + 3);
        let (given_back, stored) = store.store_operational_records(batch.clone()).await;
        stored.unwrap();
        // The buffer comes back with its records (the usage aggregates read them).
        assert_eq!(given_back, batch);
        // What the append connection committed, the store's pools read back whole.
        assert_eq!(listed(&store).await, batch);
        // An in-memory store has none and stores through its pool.
        let memory = Store::open("sqlite::memory:").await.unwrap();
        assert!(memory.appender().is_none());
        let (_, stored) = memory.store_operational_records(batch.clone()).await;
        stored.unwrap();
        assert_eq!(listed(&memory).await, batch);
    }

    #[tokio::test]
    async fn records_stored_one_per_row_become_segments_at_migration_15() {
        // A file at migration 14 (one row per record) holding records, then
        // opened by this version: its rows become segments of up to 500 in
        // their order, and the one-per-row table is gone.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let batch = mixed_batch(RECORDS_PER_TRANSACTION + 7);
        {
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(
                    sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(&path)
                        .create_if_missing(true),
                )
                .await
                .unwrap();
            let mut before = sqlx::migrate!("./migrations/sqlite");
            before.migrations = before
                .migrations
                .iter()
                .filter(|m| m.version <= 14)
                .cloned()
                .collect::<Vec<_>>()
                .into();
            before.run(&pool).await.unwrap();
            for rows in batch.chunks(ROWS_PER_INSERT) {
                let sql = multi_row_insert(Backend::Sqlite, rows.len());
                bind_records!(sqlx::query(&sql), rows)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        let store = Store::open_sqlite(&path).await.unwrap();
        assert_eq!(listed(&store).await, batch);
        let pool = store.sqlite_pool().unwrap();
        let segments: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT records, first_received_us, last_received_us
             FROM operational_record_segments ORDER BY id",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(segments, [(500, 1_000, 1_499), (7, 1_500, 1_506)]);
        let (old_tables,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM sqlite_master WHERE name = 'operational_records'")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(old_tables, 0);
        // New records are appended after them, in binary segments.
        let mut later = mixed_batch(2);
        for r in &mut later {
            r.received_at_us += 10_000;
        }
        let (_, stored) = store.store_operational_records(later.clone()).await;
        stored.unwrap();
        let (body,): (Vec<u8>,) =
            sqlx::query_as("SELECT body FROM operational_record_segments ORDER BY id DESC LIMIT 1")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(body[0], 2, "binary, version 2");
        assert_eq!(listed(&store).await, [batch, later].concat());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_deletes_while_the_writer_appends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("c.db")).await.unwrap();
        let (_, stored) = store.store_operational_records(mixed_batch(100)).await;
        stored.unwrap();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0..200 {
                    let mut batch = mixed_batch(20);
                    for r in &mut batch {
                        r.received_at_us += 10_000 + round * 100;
                    }
                    let (_, stored) = store.store_operational_records(batch).await;
                    stored.unwrap();
                }
            })
        };
        let mut deleted = 0;
        while !writer.is_finished() {
            deleted += store
                .delete_operational_records_before(1_050)
                .await
                .unwrap();
        }
        writer.await.unwrap();
        assert_eq!(deleted, 50);
        assert_eq!(listed(&store).await.len(), 1000, "the listing's cap");
    }

    #[tokio::test]
    async fn the_listing_agrees_with_a_full_sort_over_many_pages_of_segments() {
        // 30 segments (several pages of the listing) of records whose times
        // interleave across segments, listed with every limit and compared
        // with sorting everything (time, then the order stored, descending).
        let store = Store::open("sqlite::memory:").await.unwrap();
        let mut stored = Vec::new();
        for s in 0..30i64 {
            let segment: Vec<_> = (0..5i64)
                .map(|i| {
                    let t = (s * 37 + i * 101) % 400;
                    let entity = if (s + i) % 3 == 0 { "c" } else { "d" };
                    record(&format!("s{s}-{i}"), "a/v1", entity, t)
                })
                .collect();
            store.insert_operational_records(&segment).await.unwrap();
            stored.extend(segment);
        }
        for (entity, since) in [(None, None), (Some("c"), None), (Some("d"), Some(150))] {
            let mut expected: Vec<_> = stored
                .iter()
                .enumerate()
                .filter(|(_, r)| entity.is_none_or(|e| r.consumer_entity == e))
                .filter(|(_, r)| since.is_none_or(|t| r.received_at_us >= t))
                .collect();
            expected.sort_by_key(|(n, r)| std::cmp::Reverse((r.received_at_us, *n)));
            for limit in [1, 2, 7, 40, 1000] {
                let listed = store
                    .list_operational_records(&RecordFilter {
                        service: None,
                        consumer_entity: entity.map(Into::into),
                        since_us: since,
                        limit,
                    })
                    .await
                    .unwrap();
                let want: Vec<_> = expected
                    .iter()
                    .take(limit as usize)
                    .map(|(_, r)| (*r).clone())
                    .collect();
                assert_eq!(
                    listed, want,
                    "entity {entity:?} since {since:?} limit {limit}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_listing_reads_across_segments_newest_first_and_stops_at_its_limit() {
        // Three segments whose times interleave (records are stored in the
        // order requests end, not the order they arrived).
        let store = Store::open("sqlite::memory:").await.unwrap();
        let at = |id: &str, t: i64| record(id, "a/v1", if t % 2 == 0 { "c" } else { "d" }, t);
        let segments = [
            vec![at("s1-a", 10), at("s1-b", 40), at("s1-c", 20)],
            vec![at("s2-a", 30), at("s2-b", 50)],
            vec![at("s3-a", 45), at("s3-b", 60), at("s3-c", 40)],
        ];
        for segment in &segments {
            store.insert_operational_records(segment).await.unwrap();
        }
        let list = |limit, consumer: Option<&str>, since| {
            let store = store.clone();
            let filter = RecordFilter {
                service: None,
                consumer_entity: consumer.map(Into::into),
                since_us: since,
                limit,
            };
            async move {
                store
                    .list_operational_records(&filter)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.request_id)
                    .collect::<Vec<_>>()
            }
        };
        // Ties (40) in the order stored, the later first.
        assert_eq!(
            list(10, None, None).await,
            ["s3-b", "s2-b", "s3-a", "s3-c", "s1-b", "s2-a", "s1-c", "s1-a"]
        );
        assert_eq!(list(3, None, None).await, ["s3-b", "s2-b", "s3-a"]);
        assert_eq!(list(3, Some("c"), Some(25)).await, ["s3-b", "s2-b", "s3-c"]);
        assert_eq!(list(10, Some("d"), None).await, ["s3-a"]);
        // Retention: segment 1 spans the limit and is rewritten.
        assert_eq!(
            store.delete_operational_records_before(30).await.unwrap(),
            2
        );
        assert_eq!(
            list(10, None, None).await,
            ["s3-b", "s2-b", "s3-a", "s3-c", "s1-b", "s2-a"]
        );
        assert_eq!(
            store
                .delete_operational_records_before(1_000)
                .await
                .unwrap(),
            6
        );
        assert!(list(10, None, None).await.is_empty());
    }
}
