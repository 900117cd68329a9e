//! Access requests and the consume procedure.

use super::ApiResult;
use crate::admin::audit;
use crate::admin::error::ProblemBody;
use crate::admin::extract::{Auth, JsonBody, Params};
use crate::admin::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chasqui_catalog::domain::{Page, PageRequest};
use chasqui_catalog::procedures::{
    AccessRequest, ConsumeAction, ConsumeOutcome, ConsumeState, ProcedureEvent, RequestFilter,
    TransitionInput,
};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// Filters and page of the request list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RequestQuery {
    /// Only requests in this state.
    pub state: Option<ConsumeState>,
    /// Only requests for this service.
    pub service_id: Option<i64>,
    /// Only requests of this consumer system.
    pub system_id: Option<i64>,
    /// Page size (1-200, default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// What filing a request takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// The consumer system that will call the service.
    pub system_id: i64,
    /// The service (published in the catalog).
    pub service_id: i64,
    /// Why the entity needs it.
    #[serde(default)]
    pub justification: String,
}

/// A step of the consume procedure.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeStep {
    /// enable_test, verify_integration, enable_production, reject, suspend,
    /// reinstate, revoke (operators); record_adhesion (operators or the
    /// requesting consumer; needs `document_id`).
    pub action: ConsumeAction,
    /// The adhesion agreement the step rests on.
    #[serde(default)]
    pub document_id: Option<i64>,
    /// A note for the record (e.g. the reason for a rejection).
    #[serde(default)]
    pub note: String,
}

/// Lists requests: operators all, consumers their entity's, publishers those
/// for their services.
#[utoipa::path(get, path = "/access-requests", tag = "access requests", params(RequestQuery),
    responses((status = 200, body = Page<AccessRequest>), (status = 401, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn list(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<RequestQuery>,
) -> ApiResult<Json<Page<AccessRequest>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let filter = RequestFilter {
        state: q.state,
        service_id: q.service_id,
        system_id: q.system_id,
    };
    Ok(Json(
        state
            .store
            .list_access_requests(&auth.actor, &filter, page)
            .await?,
    ))
}

/// Files a request for the test environment of a published service (step 3;
/// operators, or a consumer for its own system).
#[utoipa::path(post, path = "/access-requests", tag = "access requests", request_body = NewRequest,
    responses((status = 201, body = AccessRequest), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn create(
    auth: Auth,
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewRequest>,
) -> ApiResult<(StatusCode, Json<AccessRequest>)> {
    let request = state
        .store
        .request_access(
            &auth.actor,
            new.system_id,
            new.service_id,
            &new.justification,
        )
        .await?;
    audit::record(
        &state,
        &auth,
        "access-request.request",
        json!({
            "request_id": request.id,
            "consumer": request.consumer,
            "service_id": request.service_id,
        }),
    );
    Ok((StatusCode::CREATED, Json(request)))
}

/// One request.
#[utoipa::path(get, path = "/access-requests/{id}", tag = "access requests",
    params(("id" = i64, Path, description = "The request's id")),
    responses((status = 200, body = AccessRequest), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn get(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<AccessRequest>> {
    Ok(Json(state.store.access_request(&auth.actor, id).await?))
}

/// Takes a step of the consume procedure; 409 when the current state does
/// not allow it. Enabling test or production answers the new token, once.
#[utoipa::path(post, path = "/access-requests/{id}/transitions", tag = "access requests", request_body = ConsumeStep,
    params(("id" = i64, Path, description = "The request's id")),
    responses((status = 200, body = ConsumeOutcome), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn transition(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    JsonBody(step): JsonBody<ConsumeStep>,
) -> ApiResult<Json<ConsumeOutcome>> {
    let input = TransitionInput {
        action: step.action,
        document_id: step.document_id,
        note: step.note,
    };
    let outcome = state
        .store
        .transition_access_request(&auth.actor, id, &input)
        .await?;
    audit::record(
        &state,
        &auth,
        &format!("access-request.{}", step.action),
        json!({
            "request_id": id,
            "consumer": outcome.request.consumer,
            "service_id": outcome.request.service_id,
            "from": outcome.from,
            "to": outcome.request.state,
            "document_id": input.document_id,
            "issued_token": outcome.issued_token.as_ref().map(|t| &t.display_prefix),
        }),
    );
    Ok(Json(outcome))
}

/// The recorded steps of a request: who, when, and the document each rests on.
#[utoipa::path(get, path = "/access-requests/{id}/history", tag = "access requests",
    params(("id" = i64, Path, description = "The request's id")),
    responses((status = 200, body = Vec<ProcedureEvent>), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn history(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<ProcedureEvent>>> {
    state.store.access_request(&auth.actor, id).await?;
    Ok(Json(state.store.procedure_history("consume", id).await?))
}
