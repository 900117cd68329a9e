//! Discovery for consumers, the X-Road metadata services done well: the
//! public catalog by category, publisher and text; the services my systems
//! may call in each environment; one service's metadata sheet and OpenAPI
//! document.

use super::services::ServiceQuery;
use super::ApiResult;
use crate::admin::error::{ApiError, ProblemBody};
use crate::admin::extract::{Auth, Params};
use crate::admin::AppState;
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::Json;
use chasqui_catalog::directory::{Callable, Service};
use chasqui_catalog::domain::{DomainError, Page};
use serde::Deserialize;
use utoipa::IntoParams;

/// Whose callable services to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CallableQuery {
    /// The entity (operators; others always get their own).
    pub entity: Option<String>,
}

async fn published(state: &AppState, auth: &Auth, id: i64) -> ApiResult<Service> {
    let service = match state.store.service(&auth.actor, id).await {
        Ok(service) => service,
        // Discovery shows the catalog only: what is not in it is not found.
        Err(DomainError::Forbidden(_)) => {
            return Err(ApiError::new(
                Problem::NotFound,
                format!("service {id} is not in the public catalog"),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if service.status != "published" {
        return Err(ApiError::new(
            Problem::NotFound,
            format!("service {id} is not in the public catalog"),
        ));
    }
    Ok(service)
}

/// The public catalog: published services, by category, publisher and text.
#[utoipa::path(get, path = "/catalog/services", tag = "discovery", params(ServiceQuery),
    responses((status = 200, body = Page<Service>), (status = 401, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn services(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<ServiceQuery>,
) -> ApiResult<Json<Page<Service>>> {
    let (filter, page) = q.split(true)?;
    Ok(Json(
        state
            .store
            .list_services(&auth.actor, &filter, page)
            .await?,
    ))
}

/// One published service with its metadata sheet.
#[utoipa::path(get, path = "/catalog/services/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "The service's id")),
    responses((status = 200, body = Service), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn service(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Service>> {
    Ok(Json(published(&state, &auth, id).await?))
}

/// The OpenAPI document of a published service.
#[utoipa::path(get, path = "/catalog/services/{id}/openapi", tag = "discovery",
    params(("id" = i64, Path, description = "The service's id")),
    responses((status = 200, description = "The OpenAPI document", body = Object), (status = 401, body = ProblemBody),
        (status = 404, body = ProblemBody)))]
pub async fn openapi(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    published(&state, &auth, id).await?;
    Ok(Json(state.store.openapi(&auth.actor, id).await?))
}

/// The services my entity's systems may call now, per environment.
#[utoipa::path(get, path = "/catalog/callable", tag = "discovery", params(CallableQuery),
    responses((status = 200, body = Vec<Callable>), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody),
        (status = 422, body = ProblemBody)))]
pub async fn callable(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<CallableQuery>,
) -> ApiResult<Json<Vec<Callable>>> {
    let entity_id = match (
        auth.actor.is_operator(),
        q.entity.as_deref(),
        auth.actor.entity_id,
    ) {
        (true, Some(code), _) => state.store.entity_id_of(code).await?,
        (true, None, _) => {
            return Err(ApiError::field(
                "entity",
                "an operator must name the entity",
            ))
        }
        (false, _, Some(id)) => id,
        (false, _, None) => {
            return Err(ApiError::new(
                Problem::Forbidden,
                "this principal acts for no entity",
            ))
        }
    };
    Ok(Json(state.store.callable(entity_id).await?))
}
