//! Services: registration, the metadata sheet, the OpenAPI document, the
//! upstreams of each environment, and the publish procedure.

use super::ApiResult;
use crate::admin::audit;
use crate::admin::error::{ApiError, ProblemBody};
use crate::admin::extract::{parse_json, Auth, JsonBody, Params, RawBody};
use crate::admin::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chasqui_catalog::directory::{
    EnvironmentConfig, NewService, Service, ServiceFilter, ServicePatch, MAX_OPENAPI_BYTES,
};
use chasqui_catalog::domain::{Page, PageRequest};
use chasqui_catalog::procedures::{ProcedureEvent, PublishAction, PublishOutcome, TransitionInput};
use chasqui_catalog::Environment;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// Filters and page of the service list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ServiceQuery {
    /// One of the 13 categories (accents and case are ignored).
    pub category: Option<String>,
    /// The publisher's entity code.
    pub publisher: Option<String>,
    /// draft, testing, published or deprecated.
    pub status: Option<String>,
    /// Text contained in the code, name or description.
    pub q: Option<String>,
    /// Page size (1-200, default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ServiceQuery {
    /// The filter and page it asks for.
    pub fn split(self, published_only: bool) -> ApiResult<(ServiceFilter, PageRequest)> {
        let page = PageRequest::parse(self.limit, self.cursor.as_deref())?;
        Ok((
            ServiceFilter {
                category: self.category,
                publisher: self.publisher,
                status: self.status,
                q: self.q,
                published_only,
            },
            page,
        ))
    }
}

/// A step of the publish procedure.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishStep {
    /// record_adhesion (operator or publisher; needs `document_id`),
    /// enable_environments (operator), publish (operator), deprecate
    /// (operator or publisher).
    pub action: PublishAction,
    /// The adhesion agreement the step rests on.
    #[serde(default)]
    pub document_id: Option<i64>,
    /// A note for the record.
    #[serde(default)]
    pub note: String,
}

/// Lists services: operators all, others the public catalog plus their own.
#[utoipa::path(get, path = "/services", tag = "services", params(ServiceQuery),
    responses((status = 200, body = Page<Service>), (status = 401, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn list(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<ServiceQuery>,
) -> ApiResult<Json<Page<Service>>> {
    let (filter, page) = q.split(false)?;
    Ok(Json(
        state
            .store
            .list_services(&auth.actor, &filter, page)
            .await?,
    ))
}

/// Registers a service in `draft` (operators, or a publisher for its own entity).
#[utoipa::path(post, path = "/services", tag = "services", request_body = NewService,
    responses((status = 201, body = Service), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn create(
    auth: Auth,
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewService>,
) -> ApiResult<(StatusCode, Json<Service>)> {
    let service = state.store.create_service(&auth.actor, &new).await?;
    audit::record(
        &state,
        &auth,
        "service.create",
        json!({ "service_id": service.id, "path": service.path }),
    );
    Ok((StatusCode::CREATED, Json(service)))
}

/// One service (drafts only for operators and their publisher).
#[utoipa::path(get, path = "/services/{id}", tag = "services",
    params(("id" = i64, Path, description = "The service's id")),
    responses((status = 200, body = Service), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn get(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Service>> {
    Ok(Json(state.store.service(&auth.actor, id).await?))
}

/// Changes a service's name, description, category or metadata sheet
/// (operators and its publisher).
#[utoipa::path(patch, path = "/services/{id}", tag = "services", request_body = ServicePatch,
    params(("id" = i64, Path, description = "The service's id")),
    responses((status = 200, body = Service), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn update(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    JsonBody(patch): JsonBody<ServicePatch>,
) -> ApiResult<Json<Service>> {
    let service = state.store.update_service(&auth.actor, id, &patch).await?;
    audit::record(&state, &auth, "service.update", json!({ "service_id": id }));
    Ok(Json(service))
}

/// The service's OpenAPI document.
#[utoipa::path(get, path = "/services/{id}/openapi", tag = "services",
    params(("id" = i64, Path, description = "The service's id")),
    responses((status = 200, description = "The OpenAPI document", body = Object), (status = 401, body = ProblemBody),
        (status = 404, body = ProblemBody)))]
pub async fn get_openapi(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(state.store.openapi(&auth.actor, id).await?))
}

/// Replaces the service's OpenAPI 3 document (operators and its publisher).
#[utoipa::path(put, path = "/services/{id}/openapi", tag = "services",
    request_body(content = Object, description = "An OpenAPI 3 document", content_type = "application/json"),
    params(("id" = i64, Path, description = "The service's id")),
    responses((status = 204, description = "Stored"), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 413, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn put_openapi(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    RawBody(bytes): RawBody<MAX_OPENAPI_BYTES>,
) -> ApiResult<StatusCode> {
    let doc: serde_json::Value = parse_json(&bytes)?;
    state
        .store
        .set_openapi(&auth.actor, id, &doc, bytes.len())
        .await?;
    audit::record(
        &state,
        &auth,
        "service.openapi",
        json!({ "service_id": id, "bytes": bytes.len() }),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// The service's environments and their upstreams (operators and its publisher).
#[utoipa::path(get, path = "/services/{id}/environments", tag = "services",
    params(("id" = i64, Path, description = "The service's id")),
    responses((status = 200, body = Vec<EnvironmentConfig>), (status = 401, body = ProblemBody),
        (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn environments(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<EnvironmentConfig>>> {
    Ok(Json(state.store.environments(&auth.actor, id).await?))
}

/// Replaces the upstreams of one environment, in force on every gateway at
/// its next catalog reload (operators and its publisher).
#[utoipa::path(put, path = "/services/{id}/environments/{environment}", tag = "services", request_body = EnvironmentConfig,
    params(("id" = i64, Path, description = "The service's id"),
        ("environment" = String, Path, description = "`pruebas` or `produccion`")),
    responses((status = 200, body = EnvironmentConfig), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn put_environment(
    auth: Auth,
    State(state): State<AppState>,
    Path((id, environment)): Path<(i64, String)>,
    JsonBody(mut config): JsonBody<EnvironmentConfig>,
) -> ApiResult<Json<EnvironmentConfig>> {
    config.environment = environment
        .parse::<Environment>()
        .map_err(|e| ApiError::field("environment", e.to_string()))?;
    // The data plane would leave an environment with an unusable CA out of
    // its table; refuse it here, where the publisher can see why (once it is
    // known the caller may configure this service at all).
    state
        .store
        .service_owned(&auth.actor, id, "configure this service's environments")
        .await?;
    if let Some(pem) = config.ca_pem.as_deref().filter(|p| !p.trim().is_empty()) {
        crate::upstream::parse_ca_bundle(pem).map_err(|e| ApiError::field("ca_pem", e))?;
    }
    let stored = state
        .store
        .set_environment(&auth.actor, id, &config)
        .await?;
    audit::record(
        &state,
        &auth,
        "service.environment",
        json!({
            "service_id": id,
            "environment": stored.environment,
            "upstreams": stored.upstreams.iter().map(|u| u.url.as_str()).collect::<Vec<_>>(),
        }),
    );
    Ok(Json(stored))
}

/// Takes a step of the publish procedure; 409 when the current state does not allow it.
#[utoipa::path(post, path = "/services/{id}/transitions", tag = "services", request_body = PublishStep,
    params(("id" = i64, Path, description = "The service's id")),
    responses((status = 200, body = PublishOutcome), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn transition(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    JsonBody(step): JsonBody<PublishStep>,
) -> ApiResult<Json<PublishOutcome>> {
    let input = TransitionInput {
        action: step.action,
        document_id: step.document_id,
        note: step.note,
    };
    let outcome = state
        .store
        .transition_service(&auth.actor, id, &input)
        .await?;
    audit::record(
        &state,
        &auth,
        &format!("service.{}", step.action),
        json!({
            "service_id": id,
            "from": outcome.from,
            "to": outcome.to,
            "document_id": input.document_id,
        }),
    );
    Ok(Json(outcome))
}

/// The recorded steps of the service's publish procedure.
#[utoipa::path(get, path = "/services/{id}/history", tag = "services",
    params(("id" = i64, Path, description = "The service's id")),
    responses((status = 200, body = Vec<ProcedureEvent>), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn history(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<ProcedureEvent>>> {
    state.store.service(&auth.actor, id).await?;
    Ok(Json(state.store.procedure_history("publish", id).await?))
}
