//! The administrative part of the audit ledger, for operators: every
//! action taken through the admin API with who took it, each entry with its
//! position and chained hash (a receipt `chasqui audit receipt` checks).

use super::ApiResult;
use crate::admin::error::{ApiError, ProblemBody};
use crate::admin::extract::{Auth, Params};
use crate::admin::AppState;
use crate::ledger::ExportError;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chasqui_catalog::domain::{like_pattern, Page, PageRequest};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};

/// Filters and page of the audit list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries whose kind starts with this (`admin.access-request`).
    pub kind: Option<String>,
    /// Only entries whose actor contains this (`consumer:7`).
    pub actor: Option<String>,
    /// Page size (1-200, default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One administrative action in the ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the ledger.
    pub position: i64,
    /// When (Unix milliseconds).
    pub at_ms: i64,
    /// `admin.<object>.<action>`.
    pub kind: String,
    /// Who: `role:principal id:name`.
    pub actor: String,
    /// The admin request's id.
    pub request_id: String,
    /// What was touched (never a secret).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The entry's chained hash (lowercase hex).
    pub hash: String,
}

/// Administrative actions recorded in the audit ledger, oldest first
/// (operators). Entries reach the store within the ledger's flush period.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 401, body = ProblemBody),
        (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn list(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    auth.actor.require_operator("read the audit ledger")?;
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    // Positions start at 0; the cursor is the last position + 1.
    let prefix = q.kind.as_deref().unwrap_or("admin.");
    if !prefix.starts_with("admin.") && prefix != "admin" {
        return Err(ApiError::field(
            "kind",
            "administrative kinds start with `admin.`",
        ));
    }
    let kind = prefix_pattern(prefix);
    let actor = q
        .actor
        .as_deref()
        .filter(|a| !a.is_empty())
        .map(like_pattern);
    let rows = sqlx::query(
        // Administrative entries are rows of `ledger_log` (only exchanges
        // are stored in runs): the view, which also unfolds every run,
        // is not needed.
        "SELECT position, at_ms, kind, actor, request_id, COALESCE(payload, ''), lower(hex(hash))
         FROM ledger_log WHERE position >= $1 AND kind LIKE $2 ESCAPE '\\' AND ($3 IS NULL OR LOWER(actor) LIKE $4 ESCAPE '\\')
         ORDER BY position LIMIT $5",
    )
    .bind(page.after_id)
    .bind(&kind)
    .bind(&actor)
    .bind(&actor)
    .bind(page.limit + 1)
    .fetch_all(&state.gateway.ledger_pool)
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let items = rows
        .iter()
        .map(|r| {
            let payload: String = r.try_get(5)?;
            Ok(AuditEntry {
                position: r.try_get(0)?,
                at_ms: r.try_get(1)?,
                kind: r.try_get(2)?,
                actor: r.try_get(3)?,
                request_id: r.try_get(4)?,
                payload: serde_json::from_str(&payload)
                    .unwrap_or(serde_json::Value::String(payload)),
                hash: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(page.finish(items, |e| e.position + 1)))
}

/// Range of `GET /audit/export`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// First entry (default 0).
    pub from: Option<u64>,
    /// Last entry (default: the last, at most [`MAX_EXPORT_ENTRIES`] from `from`).
    pub to: Option<u64>,
}

/// Entries one `GET /audit/export` may hold: the export is built in memory.
pub const MAX_EXPORT_ENTRIES: u64 = 100_000;

/// A range of the ledger as JSON Lines (a header, each entry as hashed, the
/// signed checkpoints in the range), which `chasqui audit verify --file`
/// checks offline (operators).
#[utoipa::path(get, path = "/audit/export", tag = "audit", params(ExportQuery),
    responses((status = 200, description = "The range as JSON Lines", body = String,
            content_type = "application/x-ndjson"),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 422, body = ProblemBody)))]
pub async fn export(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<ExportQuery>,
) -> ApiResult<Response> {
    auth.actor.require_operator("export the audit ledger")?;
    let from = q.from.unwrap_or(0);
    let last_allowed = from.saturating_add(MAX_EXPORT_ENTRIES - 1);
    let to = match q.to {
        Some(to) if to < from => return Err(ApiError::field("to", "must not be before `from`")),
        Some(to) if to > last_allowed => {
            return Err(ApiError::field(
                "to",
                format!("an export holds at most {MAX_EXPORT_ENTRIES} entries"),
            ))
        }
        Some(to) => to,
        None => last_allowed,
    };
    let mut body = Vec::new();
    let summary =
        match crate::ledger::export(&state.gateway.ledger_pool, from, Some(to), &mut body).await {
            Ok(summary) => summary,
            Err(ExportError::Range(why)) => return Err(ApiError::field("from", why)),
            Err(e) => return Err(ApiError::internal(&e)),
        };
    let name = format!("chasqui-ledger-{}-{}.jsonl", summary.from, summary.to);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

/// A `LIKE` pattern for "starts with `prefix`", with `%`, `_` and `\`
/// escaped (use with `ESCAPE '\'`).
fn prefix_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}
