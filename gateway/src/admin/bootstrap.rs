//! The first operator: created at first start, when none exists, with its
//! token written to `<data_dir>/admin-token` (mode 0600). Only the file's
//! path is logged, never the token.

use anyhow::Context;
use chasqui_catalog::domain::Role;
use chasqui_catalog::Store;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file that receives the bootstrap operator's token.
pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

/// Creates an operator and writes its token to [`token_file`] when no live
/// operator exists; returns the file's path if it did.
pub async fn bootstrap_operator(store: &Store, data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if store.operator_exists().await? {
        return Ok(None);
    }
    let path = token_file(data_dir);
    // A leftover file from an earlier store is replaced; if the new one
    // cannot be written, the operator is taken back out of the store.
    let issued = store
        .issue_admin_token(Role::Operator, None, "bootstrap operator", None)
        .await?;
    let _ = std::fs::remove_file(&path);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(issued.secret.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()
        });
    if let Err(e) = written {
        // Take the token back so no unknown operator stays behind.
        let _ = sqlx::query("DELETE FROM admin_principals WHERE id = $1")
            .bind(issued.principal.id)
            .execute(store.pool())
            .await;
        return Err(e).with_context(|| format!("writing the admin token to {}", path.display()));
    }
    tracing::info!(
        file = %path.display(),
        "created the first operator of the admin API; its token is in this file (readable only by this user)"
    );
    Ok(Some(path))
}
