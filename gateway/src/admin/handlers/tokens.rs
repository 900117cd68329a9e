//! A consumer system's own tokens: issue, rotate with an overlap window,
//! revoke, list (never the secrets). Operators may manage any system's.

use super::ApiResult;
use crate::admin::audit;
use crate::admin::error::{ApiError, ProblemBody};
use crate::admin::extract::{Auth, JsonBody, OptionalJson};
use crate::admin::AppState;
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chasqui_catalog::domain::{optional_text, DomainError};
use chasqui_catalog::model::now_unix;
use chasqui_catalog::procedures::IssuedToken;
use chasqui_catalog::store::{StoreError, TokenInfo};
use chasqui_catalog::{token, Environment};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// Longest overlap a rotation may grant (7 days).
pub const MAX_OVERLAP_SECS: u32 = 7 * 86_400;
/// Overlap when none is asked for (1 day).
pub const DEFAULT_OVERLAP_SECS: u32 = 86_400;

/// A token as lists show it: never the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// The token's id.
    pub id: i64,
    /// Its first characters.
    pub display_prefix: String,
    /// Its label.
    pub label: String,
    /// The environment it opens.
    pub environment: String,
    /// live, expired or revoked.
    pub state: String,
    /// Issue time (Unix seconds).
    pub created_at: i64,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
    /// Last time the gateway accepted it (recorded every few seconds).
    pub last_used_at: Option<i64>,
}

impl TokenView {
    fn of(t: TokenInfo, now: i64) -> TokenView {
        let state = match (t.revoked_at, t.expires_at) {
            (Some(_), _) => "revoked",
            (None, Some(e)) if e <= now => "expired",
            _ => "live",
        };
        TokenView {
            id: t.id,
            display_prefix: t.display_prefix,
            label: t.label,
            environment: t.environment.to_string(),
            state: state.to_string(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// What issuing a token takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// `pruebas` or `produccion`; the system must hold an active grant there.
    #[schema(value_type = String, example = "pruebas")]
    pub environment: Environment,
    /// A label to recognise it by.
    #[serde(default)]
    pub label: String,
    /// Days until it expires (none: no expiry).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// How a rotation goes.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// Seconds the old token keeps working (default a day, at most 7 days).
    #[serde(default)]
    pub overlap_secs: Option<u32>,
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(what) => ApiError::new(Problem::NotFound, format!("{what} not found")),
        StoreError::Invalid(why) => ApiError::new(Problem::Conflict, why),
        StoreError::Db(db) => DomainError::Db(db).into(),
        other => ApiError::internal(&other),
    }
}

async fn token_of(state: &AppState, system_id: i64, token_id: i64) -> ApiResult<TokenInfo> {
    state
        .store
        .list_tokens(system_id)
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|t| t.id == token_id)
        .ok_or_else(|| {
            ApiError::new(
                Problem::NotFound,
                format!("token {token_id} of system {system_id} not found"),
            )
        })
}

/// The system's tokens, newest first, without secrets.
#[utoipa::path(get, path = "/systems/{id}/tokens", tag = "tokens",
    params(("id" = i64, Path, description = "The consumer system's id")),
    responses((status = 200, body = Vec<TokenView>), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody)))]
pub async fn list(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<TokenView>>> {
    state.store.system_for(&auth.actor, id).await?;
    let now = now_unix();
    let tokens = state.store.list_tokens(id).await.map_err(store_error)?;
    Ok(Json(
        tokens.into_iter().map(|t| TokenView::of(t, now)).collect(),
    ))
}

/// Issues a token, shown once; only for an environment where the system
/// holds an active grant.
#[utoipa::path(post, path = "/systems/{id}/tokens", tag = "tokens", request_body = NewToken,
    params(("id" = i64, Path, description = "The consumer system's id")),
    responses((status = 201, body = IssuedToken), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn issue(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    JsonBody(new): JsonBody<NewToken>,
) -> ApiResult<(StatusCode, Json<IssuedToken>)> {
    state.store.system_for(&auth.actor, id).await?;
    let label = optional_text("label", &new.label, 100)?;
    if new.expires_in_days == Some(0) || new.expires_in_days.is_some_and(|d| d > 3650) {
        return Err(ApiError::field(
            "expires_in_days",
            "must be between 1 and 3650",
        ));
    }
    if !state.store.has_active_grant(id, new.environment).await? {
        return Err(ApiError::new(
            Problem::Conflict,
            format!(
                "system {id} holds no active grant in {}; a token there would open nothing",
                new.environment
            ),
        ));
    }
    let expires_at = new
        .expires_in_days
        .map(|d| now_unix() + i64::from(d) * 86_400);
    let issued = state
        .store
        .issue_token(id, new.environment, &label, expires_at)
        .await
        .map_err(store_error)?;
    let display_prefix = token::display_prefix(&issued.secret);
    audit::record(
        &state,
        &auth,
        "token.issue",
        json!({
            "system_id": id,
            "environment": new.environment,
            "label": label,
            "display_prefix": display_prefix,
        }),
    );
    Ok((
        StatusCode::CREATED,
        Json(IssuedToken {
            token: issued.secret,
            display_prefix,
            environment: new.environment,
            label,
        }),
    ))
}

/// Rotates a live token: a new one (same label, environment and expiry) is
/// answered once; the old one keeps working for the overlap, then expires.
/// The body may be left empty (a day of overlap).
#[utoipa::path(post, path = "/systems/{id}/tokens/{token_id}/rotate", tag = "tokens", request_body(content = Rotation, description = "Optional; empty means a day of overlap"),
    params(("id" = i64, Path, description = "The consumer system's id"), ("token_id" = i64, Path, description = "The token's id")),
    responses((status = 201, body = IssuedToken), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn rotate(
    auth: Auth,
    State(state): State<AppState>,
    Path((id, token_id)): Path<(i64, i64)>,
    OptionalJson(rotation): OptionalJson<Rotation>,
) -> ApiResult<(StatusCode, Json<IssuedToken>)> {
    state.store.system_for(&auth.actor, id).await?;
    let overlap = rotation.overlap_secs.unwrap_or(DEFAULT_OVERLAP_SECS);
    if overlap > MAX_OVERLAP_SECS {
        return Err(ApiError::field(
            "overlap_secs",
            format!("must be at most {MAX_OVERLAP_SECS}"),
        ));
    }
    let old = token_of(&state, id, token_id).await?;
    if old.revoked_at.is_some() || old.expires_at.is_some_and(|e| e <= now_unix()) {
        return Err(ApiError::new(
            Problem::Conflict,
            format!("token {token_id} is no longer live"),
        ));
    }
    let issued = state
        .store
        .rotate_token(id, &old.display_prefix, overlap)
        .await
        .map_err(store_error)?;
    let display_prefix = token::display_prefix(&issued.secret);
    audit::record(
        &state,
        &auth,
        "token.rotate",
        json!({
            "system_id": id,
            "token_id": token_id,
            "old_display_prefix": old.display_prefix,
            "new_display_prefix": display_prefix,
            "overlap_secs": overlap,
        }),
    );
    Ok((
        StatusCode::CREATED,
        Json(IssuedToken {
            token: issued.secret,
            display_prefix,
            environment: old.environment,
            label: old.label,
        }),
    ))
}

/// Revokes a token at once.
#[utoipa::path(post, path = "/systems/{id}/tokens/{token_id}/revoke", tag = "tokens",
    params(("id" = i64, Path, description = "The consumer system's id"), ("token_id" = i64, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
pub async fn revoke(
    auth: Auth,
    State(state): State<AppState>,
    Path((id, token_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    state.store.system_for(&auth.actor, id).await?;
    let old = token_of(&state, id, token_id).await?;
    if old.revoked_at.is_some() {
        return Err(ApiError::new(
            Problem::Conflict,
            format!("token {token_id} is already revoked"),
        ));
    }
    state
        .store
        .revoke_tokens(id, &old.display_prefix)
        .await
        .map_err(store_error)?;
    audit::record(
        &state,
        &auth,
        "token.revoke",
        json!({
            "system_id": id,
            "token_id": token_id,
            "display_prefix": old.display_prefix,
        }),
    );
    Ok(StatusCode::NO_CONTENT)
}
