//! Test stores on both databases: an in-memory SQLite store and a fresh
//! PostgreSQL database per test, created under `CHASQUI_TEST_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped when
//! the test ends. PostgreSQL being unreachable fails the test: `dev.sh test`
//! starts one first.

use crate::store::Store;
use sqlx::{Connection, Executor, PgConnection};
use std::sync::atomic::{AtomicU32, Ordering};

/// The server the PostgreSQL tests create their databases on.
pub(crate) fn pg_base_url() -> String {
    std::env::var("CHASQUI_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A store for one test, with what it takes to clean up after it.
pub(crate) struct TestDb {
    pub store: Store,
    /// The PostgreSQL database to drop at the end.
    pg_name: Option<String>,
}

/// A fresh in-memory SQLite store.
pub(crate) async fn sqlite() -> TestDb {
    TestDb {
        store: Store::open("sqlite::memory:").await.expect("open SQLite"),
        pg_name: None,
    }
}

/// A fresh PostgreSQL database with the migrations applied.
pub(crate) async fn postgres() -> TestDb {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let base = pg_base_url();
    let name = format!(
        "chasqui_t_{}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    let mut admin = PgConnection::connect(&base).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {base} ({e}); start it (`./dev.sh test` does) \
             or set CHASQUI_TEST_PG_URL"
        )
    });
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create the test database");
    admin.close().await.ok();
    let url = database_url(&base, &name);
    TestDb {
        store: Store::open(&url).await.expect("open PostgreSQL"),
        pg_name: Some(name),
    }
}

/// `base` with its database replaced by `name`.
pub(crate) fn database_url(base: &str, name: &str) -> String {
    let mut url = url::Url::parse(base).expect("CHASQUI_TEST_PG_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

impl TestDb {
    /// Closes the store and drops its PostgreSQL database.
    pub(crate) async fn finish(self) {
        self.store.close().await;
        if let Some(name) = self.pg_name {
            if let Ok(mut admin) = PgConnection::connect(&pg_base_url()).await {
                let _ = admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
                admin.close().await.ok();
            }
        }
    }
}

/// Defines a store test that runs twice, as `<name>::sqlite` and
/// `<name>::postgres`, with a fresh store each time.
macro_rules! on_both_databases {
    (async fn $name:ident($store:ident: Store) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($store: crate::store::Store) $body

            #[tokio::test]
            async fn sqlite() {
                let db = crate::testdb::sqlite().await;
                run(db.store.clone()).await;
                db.finish().await;
            }

            #[tokio::test]
            async fn postgres() {
                let db = crate::testdb::postgres().await;
                run(db.store.clone()).await;
                db.finish().await;
            }
        }
    };
}
pub(crate) use on_both_databases;
