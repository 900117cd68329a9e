//! The operational record of every request the data plane served
//! ([`crate::oprecords`]), for operators.

use super::ApiResult;
use crate::admin::error::{ApiError, ProblemBody};
use crate::admin::extract::{Auth, Params};
use crate::admin::AppState;
use axum::extract::State;
use axum::Json;
use chasqui_catalog::oprecords::{OperationalRecord, RecordFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Largest number of records listed at once.
const MAX_LIMIT: u32 = 1000;

/// Filters of the record list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    /// Only this service (`entidad/v{n}`).
    pub service: Option<String>,
    /// Only calls by this consumer entity.
    pub entity: Option<String>,
    /// Only requests received at or after this time (Unix microseconds).
    pub since: Option<i64>,
    /// At most this many (1-1000, default 100).
    pub limit: Option<u32>,
}

/// Operational records, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordList {
    /// The records.
    pub items: Vec<OperationalRecord>,
    /// Records this gateway process dropped since it started because its
    /// queue to the store was full.
    pub dropped: u64,
}

/// Operational records of the requests served, newest first (operators).
#[utoipa::path(get, path = "/records", tag = "records", params(RecordQuery),
    responses((status = 200, description = "Operational records, newest first", body = RecordList),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn list(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<RecordQuery>,
) -> ApiResult<Json<RecordList>> {
    auth.actor
        .require_operator("read the operational records")?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let filter = RecordFilter {
        service: q.service.filter(|s| !s.is_empty()),
        consumer_entity: q.entity.filter(|e| !e.is_empty()),
        since_us: q.since,
        limit,
    };
    let items = state
        .store
        .list_operational_records(&filter)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(RecordList {
        items,
        dropped: state.gateway.records.dropped(),
    }))
}
