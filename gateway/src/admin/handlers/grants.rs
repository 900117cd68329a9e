//! Grants: who may call what, in which environment. They are written by the
//! consume procedure's transitions, never directly.

use super::ApiResult;
use crate::admin::error::ProblemBody;
use crate::admin::extract::{Auth, Params};
use crate::admin::AppState;
use axum::extract::State;
use axum::Json;
use chasqui_catalog::domain::{Page, PageRequest};
use chasqui_catalog::procedures::{Grant, GrantFilter};
use serde::Deserialize;
use utoipa::IntoParams;

/// Filters and page of the grant list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GrantQuery {
    /// Only this consumer system's grants.
    pub system_id: Option<i64>,
    /// Only grants for this service.
    pub service_id: Option<i64>,
    /// active, suspended or revoked.
    pub status: Option<String>,
    /// Page size (1-200, default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Grants: operators all, consumers their systems', publishers those on
/// their services.
#[utoipa::path(get, path = "/grants", tag = "grants", params(GrantQuery),
    responses((status = 200, body = Page<Grant>), (status = 401, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn list(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<GrantQuery>,
) -> ApiResult<Json<Page<Grant>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let filter = GrantFilter {
        system_id: q.system_id,
        service_id: q.service_id,
        status: q.status,
    };
    Ok(Json(
        state.store.list_grants(&auth.actor, &filter, page).await?,
    ))
}
