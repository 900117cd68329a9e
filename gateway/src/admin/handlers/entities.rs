//! Entities (publishers and consumers alike), their security contact points
//! and their consumer systems.

use super::ApiResult;
use crate::admin::audit;
use crate::admin::error::ProblemBody;
use crate::admin::extract::{Auth, JsonBody, Params};
use crate::admin::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chasqui_catalog::directory::{Entity, EntityPatch, NewEntity, System};
use chasqui_catalog::domain::{Page, PageRequest};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// Filters and page of the entity list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EntityQuery {
    /// Text contained in the code or name.
    pub q: Option<String>,
    /// `public` or `private`.
    pub kind: Option<String>,
    /// Page size (1-200, default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// What registering a consumer system takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSystem {
    /// Code of the system within its entity.
    pub code: String,
    /// Human name.
    pub name: String,
}

/// Lists entities (any principal; contact points are not listed).
#[utoipa::path(get, path = "/entities", tag = "entities", params(EntityQuery),
    responses((status = 200, body = Page<Entity>), (status = 401, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn list(
    _auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<EntityQuery>,
) -> ApiResult<Json<Page<Entity>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let query = q.q.as_deref().filter(|s| !s.trim().is_empty());
    Ok(Json(
        state
            .store
            .list_entities(query, q.kind.as_deref(), page)
            .await?,
    ))
}

/// Registers an entity with its security contact points (operators).
#[utoipa::path(post, path = "/entities", tag = "entities", request_body = NewEntity,
    responses((status = 201, body = Entity), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn create(
    auth: Auth,
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewEntity>,
) -> ApiResult<(StatusCode, Json<Entity>)> {
    let entity = state.store.create_entity(&auth.actor, &new).await?;
    audit::record(
        &state,
        &auth,
        "entity.create",
        json!({ "entity": entity.code, "kind": entity.kind }),
    );
    Ok((StatusCode::CREATED, Json(entity)))
}

/// One entity; contact points and webhook only for operators and the entity itself.
#[utoipa::path(get, path = "/entities/{code}", tag = "entities",
    params(("code" = String, Path, description = "The entity's code")),
    responses((status = 200, body = Entity), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn get(
    auth: Auth,
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> ApiResult<Json<Entity>> {
    Ok(Json(state.store.entity(&auth.actor, &code).await?))
}

/// Changes an entity's name, contact points or webhook (operators and the
/// entity itself; the kind only operators).
#[utoipa::path(patch, path = "/entities/{code}", tag = "entities", request_body = EntityPatch,
    params(("code" = String, Path, description = "The entity's code")),
    responses((status = 200, body = Entity), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn update(
    auth: Auth,
    State(state): State<AppState>,
    Path(code): Path<String>,
    JsonBody(patch): JsonBody<EntityPatch>,
) -> ApiResult<Json<Entity>> {
    let entity = state
        .store
        .update_entity(&auth.actor, &code, &patch)
        .await?;
    audit::record(
        &state,
        &auth,
        "entity.update",
        json!({
            "entity": code,
            "name": patch.name.is_some(),
            "kind": patch.kind,
            "contacts": patch.contacts.as_ref().map(Vec::len),
            "incident_webhook_url": patch.incident_webhook_url.is_some(),
        }),
    );
    Ok(Json(entity))
}

/// The consumer systems of an entity (operators and the entity itself).
#[utoipa::path(get, path = "/entities/{code}/systems", tag = "entities",
    params(("code" = String, Path, description = "The entity's code")),
    responses((status = 200, body = Vec<System>), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody)))]
pub async fn systems(
    auth: Auth,
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> ApiResult<Json<Vec<System>>> {
    Ok(Json(state.store.list_systems(&auth.actor, &code).await?))
}

/// Registers a consumer system (operators, or a consumer of the entity).
#[utoipa::path(post, path = "/entities/{code}/systems", tag = "entities", request_body = NewSystem,
    params(("code" = String, Path, description = "The entity's code")),
    responses((status = 201, body = System), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn create_system(
    auth: Auth,
    State(state): State<AppState>,
    Path(code): Path<String>,
    JsonBody(new): JsonBody<NewSystem>,
) -> ApiResult<(StatusCode, Json<System>)> {
    let system = state
        .store
        .create_system(&auth.actor, &code, &new.code, &new.name)
        .await?;
    audit::record(
        &state,
        &auth,
        "system.create",
        json!({ "entity": code, "system_id": system.id, "system": system.code }),
    );
    Ok((StatusCode::CREATED, Json(system)))
}
