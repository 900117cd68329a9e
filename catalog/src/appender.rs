//! The append path of a SQLite file: the rows written once per exchange (its
//! operational record, its audit-ledger entry) go through one connection of
//! their own, with prepared statements kept between batches and values bound
//! straight from the rows, instead of through sqlx.
//!
//! Why: through sqlx each value of a multi-row INSERT was first encoded into
//! an owned argument (a copy of every string), sent to the connection's
//! worker thread, bound (SQLite copies it again), and the statement's
//! bindings cleared afterwards; measured with `bench/examples/metering_count.rs`
//! that marshalling cost more than SQLite's own work of inserting the rows.
//! Here a batch is one `BEGIN IMMEDIATE` transaction of single-row INSERTs
//! of a cached statement, run on tokio's blocking pool.
//!
//! The connection is one more writer on the file beside the store's pools:
//! SQLite serialises writers, `BEGIN IMMEDIATE` takes the write lock up front
//! (no lock upgrade that could fail with `SQLITE_BUSY` mid-transaction) and
//! the busy timeout is the store's. Only file databases have one: an
//! in-memory database exists per connection, so those stores keep writing
//! through sqlx.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// SQLite refused or failed the write.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The blocking task that ran the write did not finish (the runtime is
    /// shutting down, or the write panicked).
    #[error("the write did not run to its end: {0}")]
    Interrupted(String),
}

/// A connection that appends to one SQLite file.
#[derive(Debug)]
pub struct Appender {
    connection: Mutex<rusqlite::Connection>,
    path: PathBuf,
}

/// Pages of SQLite's cache on the append connection (negative: KiB). The
/// default 2 MB made each batch read back pages it had written shortly before.
const CACHE_KIB: i64 = 16 * 1024;

impl Appender {
    /// Opens an append connection to an existing SQLite database (its schema
    /// made by the store's migrations), with the store's pragmas.
    pub fn open(path: &Path) -> Result<Arc<Appender>, AppendError> {
        let connection = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(Duration::from_secs(5))?;
        // WAL is a property of the file (set by the store when it created
        // it); synchronous is per connection: NORMAL in WAL survives a
        // process crash without losing a committed transaction.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "cache_size", -CACHE_KIB)?;
        connection.set_prepared_statement_cache_capacity(16);
        Ok(Arc::new(Appender {
            connection: Mutex::new(connection),
            path: path.to_path_buf(),
        }))
    }

    /// The database file this appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `write` in one `BEGIN IMMEDIATE` transaction, committed when it
    /// returns `Ok` and rolled back otherwise, on tokio's blocking pool.
    pub async fn write<T, F>(self: &Arc<Self>, write: F) -> Result<T, AppendError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.run(move |appender| appender.write_now(write)).await?
    }

    /// Runs `work` with the appender on tokio's blocking pool (for several
    /// transactions in one hand-off, each with [`Appender::write_now`]). The
    /// closure owns what it writes and may hand it back (buffers for reuse).
    pub async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, AppendError>
    where
        T: Send + 'static,
        F: FnOnce(&Appender) -> T + Send + 'static,
    {
        let appender = self.clone();
        tokio::task::spawn_blocking(move || work(&appender))
            .await
            .map_err(|e| AppendError::Interrupted(e.to_string()))
    }

    /// [`Appender::write`] on the calling thread (which it blocks).
    pub fn write_now<T>(
        &self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, AppendError> {
        let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let value = write(&tx)?;
        tx.commit()?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_write_rolls_back_and_the_next_one_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch("CREATE TABLE t (v INTEGER NOT NULL UNIQUE)")
                .unwrap();
        }
        let appender = Appender::open(&path).unwrap();
        let insert = |v: i64| {
            move |tx: &rusqlite::Transaction<'_>| {
                let mut stmt = tx.prepare_cached("INSERT INTO t (v) VALUES (?1)")?;
                stmt.execute([1])?;
                stmt.execute([v])
            }
        };
        // The second row breaks UNIQUE: the first one must not stay either.
        assert!(appender.write(insert(1)).await.is_err());
        appender.write(insert(2)).await.unwrap();
        let c = rusqlite::Connection::open(&path).unwrap();
        let rows: Vec<i64> = c
            .prepare("SELECT v FROM t ORDER BY v")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, vec![1, 2]);
    }
}
