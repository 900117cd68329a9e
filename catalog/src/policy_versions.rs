//! Policy versions (migration 0013): every policy a gateway applied, with
//! who, when, why and from where, and the one row naming the version every
//! node of a cluster applies. Versions are append-only; a rollback records
//! the old body again as a new version.

use crate::store::{Result, Store, StoreError};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a policy version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// The compiled-in default policy, at start.
    Default,
    /// The policy file: at start, on SIGHUP or when the watcher saw it change.
    File,
    /// An operator through the admin API.
    Admin,
    /// An operator restoring an earlier version.
    Rollback,
}

impl PolicySource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicySource::Default => "default",
            PolicySource::File => "file",
            PolicySource::Admin => "admin",
            PolicySource::Rollback => "rollback",
        }
    }
}

/// A version to record.
#[derive(Debug, Clone)]
pub struct NewPolicyVersion<'a> {
    /// The policy text (YAML), exactly as applied.
    pub body: &'a str,
    /// Who: `file:<path>`, `default`, or the admin principal's ledger name.
    pub author: &'a str,
    /// Why.
    pub comment: &'a str,
    /// From where.
    pub source: PolicySource,
    /// For a rollback, the version restored.
    pub restores: Option<i64>,
    /// Whether it becomes the version in force (false: kept as history
    /// only, e.g. a node's file seen at start while the store's version
    /// stays in force).
    pub make_current: bool,
}

/// A stored policy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    /// Its number, increasing.
    pub id: i64,
    /// The policy text.
    pub body: String,
    /// SHA-256 of the text, hex.
    pub sha256: String,
    /// Who applied it.
    pub author: String,
    /// Why.
    pub comment: String,
    /// `default`, `file`, `admin` or `rollback`.
    pub source: String,
    /// For a rollback, the version restored.
    pub restores: Option<i64>,
    /// When it was recorded (Unix milliseconds).
    pub created_at_ms: i64,
}

/// Hex SHA-256 of a policy text.
pub fn policy_digest(body: &str) -> String {
    crate::hex::hex(&Sha256::digest(body.as_bytes()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn version_from_row(r: &sqlx::any::AnyRow) -> Result<PolicyVersion> {
    Ok(PolicyVersion {
        id: r.try_get("id")?,
        body: r.try_get("body")?,
        sha256: r.try_get("sha256")?,
        author: r.try_get("author")?,
        comment: r.try_get("comment")?,
        source: r.try_get("source")?,
        restores: r.try_get("restores")?,
        created_at_ms: r.try_get("created_at_ms")?,
    })
}

const COLUMNS: &str = "id, body, sha256, author, comment, source, restores, created_at_ms";

impl Store {
    /// Records `new` as the newest version and, if it says so, makes it the
    /// current one, in one transaction (the change feed then tells every
    /// node).
    pub async fn record_policy_version(&self, new: &NewPolicyVersion<'_>) -> Result<PolicyVersion> {
        if new.comment.len() > 2000 {
            return Err(StoreError::Invalid(
                "the comment is longer than 2000 characters".into(),
            ));
        }
        let sha256 = policy_digest(new.body);
        let at = now_ms();
        let mut tx = self.pool().begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO policy_versions (body, sha256, author, comment, source, restores, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(new.body)
        .bind(&sha256)
        .bind(new.author)
        .bind(new.comment)
        .bind(new.source.as_str())
        .bind(new.restores)
        .bind(at)
        .fetch_one(&mut *tx)
        .await?;
        if new.make_current {
            sqlx::query(
                "INSERT INTO policy_current (singleton, version_id, applied_at_ms) VALUES (1, $1, $2)
                 ON CONFLICT (singleton) DO UPDATE SET version_id = excluded.version_id,
                     applied_at_ms = excluded.applied_at_ms",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(PolicyVersion {
            id,
            body: new.body.to_string(),
            sha256,
            author: new.author.to_string(),
            comment: new.comment.to_string(),
            source: new.source.as_str().to_string(),
            restores: new.restores,
            created_at_ms: at,
        })
    }

    /// The id of the version in force, if any was recorded.
    pub async fn current_policy_id(&self) -> Result<Option<i64>> {
        let id: Option<i64> =
            sqlx::query_scalar("SELECT version_id FROM policy_current WHERE singleton = 1")
                .fetch_optional(self.pool())
                .await?;
        Ok(id)
    }

    /// The version in force, if any was recorded.
    pub async fn current_policy(&self) -> Result<Option<PolicyVersion>> {
        match self.current_policy_id().await? {
            Some(id) => self.policy_version(id).await,
            None => Ok(None),
        }
    }

    /// One version.
    pub async fn policy_version(&self, id: i64) -> Result<Option<PolicyVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM policy_versions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// The newest version recorded from `source` by `author` (the policy a
    /// given file or the default last had), if any.
    pub async fn latest_policy_from(
        &self,
        source: PolicySource,
        author: &str,
    ) -> Result<Option<PolicyVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM policy_versions WHERE source = $1 AND author = $2
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(source.as_str())
        .bind(author)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// Versions, newest first, older than `before_id` when given.
    pub async fn list_policy_versions(
        &self,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<PolicyVersion>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM policy_versions WHERE id < $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(version_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("c.db")).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn versions_are_recorded_in_order_and_the_newest_is_current() {
        let (_dir, store) = store().await;
        assert_eq!(store.current_policy().await.unwrap(), None);
        let v1 = store
            .record_policy_version(&NewPolicyVersion {
                body: "version: 1\n",
                author: "default",
                comment: "initial",
                source: PolicySource::Default,
                restores: None,
                make_current: true,
            })
            .await
            .unwrap();
        let seq = store.change_seq().await.unwrap();
        let v2 = store
            .record_policy_version(&NewPolicyVersion {
                body: "version: 1\nlimits: {}\n",
                author: "operator:1:ana",
                comment: "limits",
                source: PolicySource::Admin,
                restores: None,
                make_current: true,
            })
            .await
            .unwrap();
        assert!(v2.id > v1.id);
        assert!(
            store.change_seq().await.unwrap() > seq,
            "a new current version must reach the change feed"
        );
        assert_eq!(store.current_policy().await.unwrap(), Some(v2.clone()));
        assert_eq!(v1.sha256, policy_digest("version: 1\n"));
        let listed = store.list_policy_versions(None, 10).await.unwrap();
        assert_eq!(listed, vec![v2.clone(), v1.clone()]);
        let older = store.list_policy_versions(Some(v2.id), 10).await.unwrap();
        assert_eq!(older, vec![v1.clone()]);
        let from_default = store
            .latest_policy_from(PolicySource::Default, "default")
            .await
            .unwrap();
        assert_eq!(from_default, Some(v1));
        assert!(store
            .record_policy_version(&NewPolicyVersion {
                body: "x",
                author: "a",
                comment: &"c".repeat(2001),
                source: PolicySource::Admin,
                restores: None,
                make_current: true,
            })
            .await
            .is_err());
        assert_eq!(store.current_policy_id().await.unwrap(), Some(v2.id));
    }
}
