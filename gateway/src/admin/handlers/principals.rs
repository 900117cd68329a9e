//! Who may use the admin API: the caller itself, and (for operators) the
//! principals and their admin tokens.

use super::ApiResult;
use crate::admin::audit;
use crate::admin::error::ProblemBody;
use crate::admin::extract::{Auth, JsonBody};
use crate::admin::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chasqui_catalog::domain::Role;
use chasqui_catalog::principals::Principal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// The caller, as the API knows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The principal's id.
    pub principal_id: i64,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The entity it acts for (none for operators).
    pub entity: Option<String>,
}

/// What creating a principal takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPrincipal {
    /// operator, publisher or consumer.
    pub role: Role,
    /// The entity a publisher or consumer acts for.
    #[serde(default)]
    pub entity: Option<String>,
    /// Who it is.
    pub name: String,
}

/// A new principal and its admin token, shown once.
#[derive(Serialize, ToSchema)]
pub struct IssuedPrincipal {
    /// The principal.
    pub principal: Principal,
    /// Its admin token (`chq_admin_...`). Not shown again.
    pub token: String,
}

/// Who am I.
#[utoipa::path(get, path = "/me", tag = "principals",
    responses((status = 200, body = Me), (status = 401, body = ProblemBody)))]
pub async fn me(auth: Auth) -> Json<Me> {
    Json(Me {
        principal_id: auth.actor.principal_id,
        name: auth.actor.name,
        role: auth.actor.role,
        entity: auth.actor.entity_code,
    })
}

/// Every principal (operators).
#[utoipa::path(get, path = "/principals", tag = "principals",
    responses((status = 200, body = Vec<Principal>), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn list(auth: Auth, State(state): State<AppState>) -> ApiResult<Json<Vec<Principal>>> {
    auth.actor.require_operator("list principals")?;
    Ok(Json(state.store.list_principals().await?))
}

/// Creates a principal with a new admin token, shown once (operators).
#[utoipa::path(post, path = "/principals", tag = "principals", request_body = NewPrincipal,
    responses((status = 201, body = IssuedPrincipal), (status = 401, body = ProblemBody),
        (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn create(
    auth: Auth,
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewPrincipal>,
) -> ApiResult<(StatusCode, Json<IssuedPrincipal>)> {
    auth.actor.require_operator("create principals")?;
    let issued = state
        .store
        .issue_admin_token(
            new.role,
            new.entity.as_deref(),
            &new.name,
            Some(auth.actor.principal_id),
        )
        .await?;
    audit::record(
        &state,
        &auth,
        "principal.create",
        json!({
            "principal_id": issued.principal.id,
            "role": issued.principal.role,
            "entity": issued.principal.entity,
            "display_prefix": issued.principal.display_prefix,
        }),
    );
    Ok((
        StatusCode::CREATED,
        Json(IssuedPrincipal {
            principal: issued.principal.clone(),
            token: issued.secret,
        }),
    ))
}

/// Revokes a principal's admin token at once (operators).
#[utoipa::path(post, path = "/principals/{id}/revoke", tag = "principals",
    params(("id" = i64, Path, description = "The principal's id")),
    responses((status = 200, body = Principal), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
pub async fn revoke(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Principal>> {
    auth.actor.require_operator("revoke principals")?;
    let p = state.store.revoke_principal(id).await?;
    audit::record(
        &state,
        &auth,
        "principal.revoke",
        json!({ "principal_id": id }),
    );
    Ok(Json(p))
}
