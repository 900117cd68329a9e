//! The store: a sqlx pool, the migrations, and the few reads and writes the
//! data plane and the CLI need.

use crate::model::{now_unix, Environment, TokenRecord};
use crate::token::{self, IssuedToken};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AnyPool, Executor, Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Errors of the catalog store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed an operation.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The append connection failed a write ([`crate::appender`]).
    #[error("append failed: {0}")]
    Append(#[from] crate::appender::AppendError),
    /// A segment of operational records could not be encoded or read.
    #[error("operational records: {0}")]
    Segment(#[from] crate::oprecords::segment::SegmentError),
    /// Something named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The input breaks a rule of the catalog.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Result type of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: the embedded, zero-setup default (one node).
    Sqlite,
    /// PostgreSQL: shared by every node of a cluster.
    Postgres,
}

/// The catalog store. Cheap to clone (it is a pool handle).
///
/// All catalog SQL goes through sqlx's `Any` driver, so one code path serves
/// SQLite and PostgreSQL; the statements are written in the dialect both
/// accept (`$N` placeholders, `ON CONFLICT`, `RETURNING`, integer times).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// A typed pool on the same SQLite file, for the parts that stay
    /// SQLite-only (the audit ledger); None on PostgreSQL and in memory.
    sqlite: Option<SqlitePool>,
    /// The append connection of a SQLite file store (records, ledger).
    appender: Option<Arc<crate::appender::Appender>>,
    /// The PostgreSQL URL, kept to open the LISTEN connection.
    pg_url: Option<String>,
}

/// Everything the data plane routes with, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The change sequence this snapshot reflects.
    pub seq: i64,
    /// Every service that can be routed to, with its environments.
    pub services: Vec<ServiceRoute>,
    /// Active grants: (consumer id, service id, environment).
    pub grants: Vec<(i64, i64, Environment)>,
}

/// One routable service: `/{entity_code}/v{version}/`.
#[derive(Debug, Clone)]
pub struct ServiceRoute {
    /// Row id of the service.
    pub id: i64,
    /// Code of the publishing entity, the first path segment.
    pub entity_code: String,
    /// Code of the service within its entity.
    pub code: String,
    /// Major version, the `v{n}` path segment.
    pub version: u32,
    /// Human name.
    pub name: String,
    /// Catalog category (canonical name).
    pub category: String,
    /// Lifecycle status: draft, testing, published or deprecated.
    pub status: String,
    /// The environments that have upstreams.
    pub environments: Vec<EnvironmentRoute>,
}

impl ServiceRoute {
    /// Whether calls may reach `env` in the service's current status: a
    /// draft serves nothing, a service in testing only `pruebas`.
    pub fn serves(&self, env: Environment) -> bool {
        match self.status.as_str() {
            "published" | "deprecated" => true,
            "testing" => env == Environment::Pruebas,
            _ => false,
        }
    }

    /// The routing data of one environment, if it has any.
    pub fn environment(&self, env: Environment) -> Option<&EnvironmentRoute> {
        self.environments.iter().find(|e| e.environment == env)
    }
}

/// How to reach one environment of a service.
#[derive(Debug, Clone)]
pub struct EnvironmentRoute {
    /// Which environment.
    pub environment: Environment,
    /// Upstream base URLs with their weights.
    pub upstreams: Vec<UpstreamRow>,
    /// PEM bundle that signs the upstreams' certificates (None: system roots).
    pub ca_pem: Option<String>,
    /// Connect timeout override, in milliseconds.
    pub connect_timeout_ms: Option<u64>,
    /// Read timeout override, in milliseconds.
    pub read_timeout_ms: Option<u64>,
}

/// One upstream of an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRow {
    /// Base URL: scheme, host, port and an optional base path.
    pub url: String,
    /// Relative weight for load balancing.
    pub weight: u32,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies
    /// the migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let sqlite = open_sqlite_pool(path).await?;
        // The `Any` pool reaches the same file by URL; `%`, `?` and `#` are
        // escaped because SQLite URLs are percent-decoded.
        let escaped = path
            .display()
            .to_string()
            .replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23");
        let options = AnyConnectOptions::from_str(&format!("sqlite://{escaped}"))?;
        let pool = any_pool_options(Backend::Sqlite, 4)
            .connect_with(options)
            .await?;
        let appender = crate::appender::Appender::open(path)?;
        Ok(Store {
            pool,
            backend: Backend::Sqlite,
            sqlite: Some(sqlite),
            appender: Some(appender),
            pg_url: None,
        })
    }

    /// Opens a database by URL: `postgres://...` (or `postgresql://...`),
    /// `sqlite://path` or `sqlite::memory:`, and applies the migrations of
    /// its dialect.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = AnyConnectOptions::from_str(url)?;
            let pool = any_pool_options(Backend::Postgres, 8)
                .connect_with(options)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            return Ok(Store {
                pool,
                backend: Backend::Postgres,
                sqlite: None,
                appender: None,
                pg_url: Some(url.to_string()),
            });
        }
        let options = SqliteConnectOptions::from_str(url)?;
        if options.get_filename().as_os_str() != ":memory:"
            && !options
                .get_filename()
                .to_string_lossy()
                .starts_with("file:sqlx-in-memory-")
        {
            return Self::open_sqlite(options.get_filename()).await;
        }
        // An in-memory database exists once per connection: one connection,
        // never closed.
        let pool = any_pool_options(Backend::Sqlite, 1)
            .connect_with(AnyConnectOptions::from_str(url)?)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Store {
            pool,
            backend: Backend::Sqlite,
            sqlite: None,
            appender: None,
            pg_url: None,
        })
    }

    /// The underlying pool, for modules that add their own tables. Its SQL
    /// must run on both SQLite and PostgreSQL.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The PostgreSQL URL the store was opened with (None on SQLite).
    pub fn postgres_url(&self) -> Option<&str> {
        self.pg_url.as_deref()
    }

    /// A typed SQLite pool on the same database file (SQLite file stores
    /// only), for what stays SQLite-specific such as the audit ledger.
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        self.sqlite.as_ref()
    }

    /// The append connection of a SQLite file store ([`crate::appender`]);
    /// None on PostgreSQL and in memory.
    pub fn appender(&self) -> Option<&Arc<crate::appender::Appender>> {
        self.appender.as_ref()
    }

    /// Closes the pools, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(sqlite) = &self.sqlite {
            sqlite.close().await;
        }
    }

    /// The highest change id; it moves whenever something routing or
    /// authentication depends on changes.
    pub async fn change_seq(&self) -> Result<i64> {
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM catalog_changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq)
    }

    /// Reads services, their environments and upstreams, and active grants,
    /// in one read transaction so that they agree with each other.
    pub async fn load_snapshot(&self) -> Result<Snapshot> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // PostgreSQL's default (read committed) gives each statement its
            // own snapshot; one snapshot for the whole read keeps services,
            // upstreams and grants consistent, as SQLite's transaction does.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM catalog_changes")
            .fetch_one(&mut *tx)
            .await?;
        let service_rows = sqlx::query(
            "SELECT s.id, e.code, s.code, s.version, s.name, s.category, s.status
             FROM services s JOIN entities e ON e.id = s.entity_id ORDER BY s.id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let env_rows = sqlx::query(
            "SELECT service_id, environment, ca_pem, connect_timeout_ms, read_timeout_ms
             FROM service_environments",
        )
        .fetch_all(&mut *tx)
        .await?;
        let upstream_rows =
            sqlx::query("SELECT service_id, environment, url, weight FROM upstreams ORDER BY id")
                .fetch_all(&mut *tx)
                .await?;
        let grant_rows = sqlx::query(
            "SELECT consumer_id, service_id, environment FROM grants WHERE status = 'active'",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;

        let mut services = Vec::with_capacity(service_rows.len());
        for row in service_rows {
            let version: i64 = row.try_get(3)?;
            services.push(ServiceRoute {
                id: row.try_get(0)?,
                entity_code: row.try_get(1)?,
                code: row.try_get(2)?,
                version: u32::try_from(version).unwrap_or(0),
                name: row.try_get(4)?,
                category: row.try_get(5)?,
                status: row.try_get(6)?,
                environments: Vec::new(),
            });
        }
        let index_of =
            |id: i64, services: &[ServiceRoute]| services.iter().position(|s| s.id == id);
        for row in env_rows {
            let service_id: i64 = row.try_get(0)?;
            let env = parse_env(row.try_get::<String, _>(1)?)?;
            if let Some(i) = index_of(service_id, &services) {
                services[i].environments.push(EnvironmentRoute {
                    environment: env,
                    upstreams: Vec::new(),
                    ca_pem: row.try_get(2)?,
                    connect_timeout_ms: row.try_get::<Option<i64>, _>(3)?.map(|v| v.max(0) as u64),
                    read_timeout_ms: row.try_get::<Option<i64>, _>(4)?.map(|v| v.max(0) as u64),
                });
            }
        }
        for row in upstream_rows {
            let service_id: i64 = row.try_get(0)?;
            let env = parse_env(row.try_get::<String, _>(1)?)?;
            let Some(i) = index_of(service_id, &services) else {
                continue;
            };
            let upstream = UpstreamRow {
                url: row.try_get(2)?,
                weight: u32::try_from(row.try_get::<i64, _>(3)?).unwrap_or(1).max(1),
            };
            let service = &mut services[i];
            match service
                .environments
                .iter_mut()
                .find(|e| e.environment == env)
            {
                Some(e) => e.upstreams.push(upstream),
                None => service.environments.push(EnvironmentRoute {
                    environment: env,
                    upstreams: vec![upstream],
                    ca_pem: None,
                    connect_timeout_ms: None,
                    read_timeout_ms: None,
                }),
            }
        }
        let mut grants = Vec::with_capacity(grant_rows.len());
        for row in grant_rows {
            grants.push((
                row.try_get(0)?,
                row.try_get(1)?,
                parse_env(row.try_get::<String, _>(2)?)?,
            ));
        }
        Ok(Snapshot {
            seq,
            services,
            grants,
        })
    }

    /// Looks a token up by the SHA-256 of its string.
    pub async fn lookup_token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT t.id, t.consumer_id, c.code, e.code, t.environment, t.expires_at, t.revoked_at,
                    t.display_prefix
             FROM tokens t
             JOIN consumers c ON c.id = t.consumer_id
             JOIN entities e ON e.id = c.entity_id
             WHERE t.hash = $1",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(TokenRecord {
            token_id: row.try_get(0)?,
            consumer_id: row.try_get(1)?,
            consumer_code: row.try_get(2)?,
            entity_code: row.try_get(3)?,
            environment: parse_env(row.try_get::<String, _>(4)?)?,
            expires_at: row.try_get(5)?,
            revoked_at: row.try_get(6)?,
            display_prefix: row.try_get(7)?,
        }))
    }

    /// Finds the id of consumer system `system` of entity `entity`.
    pub async fn consumer_id(&self, entity: &str, system: &str) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT c.id FROM consumers c JOIN entities e ON e.id = c.entity_id
             WHERE e.code = $1 AND c.code = $2",
        )
        .bind(entity)
        .bind(system)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("consumer system {entity}/{system}")))
    }

    /// Issues a token for a consumer system and environment. The secret is
    /// returned once; only its hash is kept.
    pub async fn issue_token(
        &self,
        consumer_id: i64,
        env: Environment,
        label: &str,
        expires_at: Option<i64>,
    ) -> Result<IssuedToken> {
        let mut conn = self.pool.acquire().await?;
        insert_token(&mut conn, consumer_id, env, label, now_unix(), expires_at).await
    }

    /// Revokes every live token of a consumer whose display prefix or label
    /// matches; returns how many were revoked.
    pub async fn revoke_tokens(&self, consumer_id: i64, prefix_or_label: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE consumer_id = $2 AND revoked_at IS NULL
               AND (display_prefix = $3 OR label = $4)",
        )
        .bind(now_unix())
        .bind(consumer_id)
        .bind(prefix_or_label)
        .bind(prefix_or_label)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

pub(crate) fn parse_env(s: String) -> Result<Environment> {
    Environment::from_str(&s).map_err(|e| StoreError::Invalid(e.to_string()))
}

impl Store {
    /// How many entities the catalog holds.
    pub async fn entity_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM entities")
            .fetch_one(&self.pool)
            .await?)
    }
}

/// A token as operators see it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Row id.
    pub id: i64,
    /// The first characters of the token.
    pub display_prefix: String,
    /// The label.
    pub label: String,
    /// The environment it opens.
    pub environment: Environment,
    /// Issue time (Unix seconds).
    pub created_at: i64,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
    /// Last time the gateway accepted it (written every few seconds).
    pub last_used_at: Option<i64>,
}

impl Store {
    /// The tokens of a consumer system, newest first.
    pub async fn list_tokens(&self, consumer_id: i64) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT id, display_prefix, label, environment, created_at, expires_at, revoked_at, last_used_at
             FROM tokens WHERE consumer_id = $1 ORDER BY id DESC",
        )
        .bind(consumer_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(TokenInfo {
                    id: row.try_get(0)?,
                    display_prefix: row.try_get(1)?,
                    label: row.try_get(2)?,
                    environment: parse_env(row.try_get::<String, _>(3)?)?,
                    created_at: row.try_get(4)?,
                    expires_at: row.try_get(5)?,
                    revoked_at: row.try_get(6)?,
                    last_used_at: row.try_get(7)?,
                })
            })
            .collect()
    }

    /// Rotates a consumer's live token (by display prefix or label): issues a
    /// new one with the same label, environment and remaining lifetime, and
    /// lets the old one work for `overlap_secs` more so that clients can
    /// switch without an outage. One transaction.
    pub async fn rotate_token(
        &self,
        consumer_id: i64,
        prefix_or_label: &str,
        overlap_secs: u32,
    ) -> Result<IssuedToken> {
        // A write transaction from the start: the token is read, then a new
        // one written. A deferred one failed ("database is locked") when
        // another writer, such as the flush of the old token's last use,
        // committed in between.
        let mut tx = self.write_tx().await?;
        let now = now_unix();
        let old = sqlx::query(
            "SELECT id, environment, label, expires_at FROM tokens
             WHERE consumer_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)
               AND (display_prefix = $3 OR label = $4)
             ORDER BY id DESC",
        )
        .bind(consumer_id)
        .bind(now)
        .bind(prefix_or_label)
        .bind(prefix_or_label)
        .fetch_all(&mut *tx)
        .await?;
        let [row] = old.as_slice() else {
            return Err(if old.is_empty() {
                StoreError::NotFound(format!("live token `{prefix_or_label}`"))
            } else {
                StoreError::Invalid(format!(
                    "`{prefix_or_label}` names {} live tokens; use a display prefix",
                    old.len()
                ))
            });
        };
        let (old_id, env, label, expires_at): (i64, String, String, Option<i64>) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        let env = parse_env(env)?;
        let issued = insert_token(&mut tx, consumer_id, env, &label, now, expires_at).await?;
        // Expiry is kept in whole seconds and checked with `<=`: one more
        // second guarantees at least `overlap_secs` of overlap.
        let overlap_end = now + i64::from(overlap_secs) + 1;
        sqlx::query("UPDATE tokens SET expires_at = $1 WHERE id = $2")
            .bind(expires_at.map_or(overlap_end, |e| e.min(overlap_end)))
            .bind(old_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(issued)
    }
}

impl Store {
    /// Records when tokens were last used: (token id, Unix seconds) pairs, in
    /// one transaction. Never moves a last-use time backwards.
    pub async fn record_last_used(&self, uses: &[(i64, i64)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (id, at) in uses {
            sqlx::query(
                // A comparison rather than SQLite's two-argument MAX, which
                // PostgreSQL spells GREATEST.
                "UPDATE tokens SET last_used_at = $1
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Opens (creating if needed) a SQLite file with the catalog's pragmas and
/// migrations, as a typed pool: the node-local database of the audit ledger.
pub async fn open_sqlite_pool(path: &Path) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL with NORMAL survives a process crash without losing a
        // committed transaction; only a power loss may drop the last ones.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .min_connections(1)
        // An in-process connection does not go stale: the default ping on
        // every acquire is one more round trip to the connection's worker
        // thread per transaction (the ledger's group commits, the
        // record writer's batches).
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
    Ok(pool)
}

/// Pool options for the `Any` pool. The `Any` driver builds SQLite
/// connections from the URL alone, so the pragmas that the typed options
/// would set are applied after connecting.
fn any_pool_options(backend: Backend, max: u32) -> AnyPoolOptions {
    let options = AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None);
    match backend {
        Backend::Postgres => options
            // A node keeps working from its snapshot while PostgreSQL is
            // away; calls that need it fail fast rather than queue.
            .acquire_timeout(Duration::from_secs(5)),
        // In-process connections do not go stale (see `open_sqlite_pool`).
        Backend::Sqlite => options.test_before_acquire(false).after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
                     PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
                )
                .await?;
                Ok(())
            })
        }),
    }
}

/// Mints a token and stores its hash; the one place tokens are written.
pub(crate) async fn insert_token(
    conn: &mut sqlx::AnyConnection,
    consumer_id: i64,
    env: Environment,
    label: &str,
    created_at: i64,
    expires_at: Option<i64>,
) -> Result<IssuedToken> {
    let issued = token::generate(env);
    sqlx::query(
        "INSERT INTO tokens (consumer_id, environment, hash, display_prefix, label, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(consumer_id)
    .bind(env.as_str())
    .bind(&issued.hash[..])
    .bind(token::display_prefix(&issued.secret))
    .bind(label)
    .bind(created_at)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(issued)
}
