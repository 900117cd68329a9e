//! Security incidents (reported by the CGII plugin): operators see all,
//! publishers and consumers those about their entity.

use super::ApiResult;
use crate::admin::error::{ApiError, ProblemBody};
use crate::admin::extract::{Auth, Params};
use crate::admin::AppState;
use crate::problem::Problem;
use axum::extract::State;
use axum::Json;
use chasqui_catalog::domain::Page;
use chasqui_catalog::incidents::{Incident, IncidentFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Largest page of incidents.
const MAX_LIMIT: u32 = 500;

/// Filters and page of the incident list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IncidentQuery {
    /// Only incidents about this entity, as consumer or publisher (operators;
    /// others always get their own).
    pub entity: Option<String>,
    /// Only this kind (`cgii.sqli`, ...).
    pub kind: Option<String>,
    /// Only incidents at or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// Page size (1-500, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An incident as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentView {
    /// Its id (time-ordered).
    pub id: String,
    /// When it was reported (Unix milliseconds).
    pub at_ms: i64,
    /// The plugin that reported it.
    pub plugin: String,
    /// What happened (`cgii.sqli`, ...).
    pub kind: String,
    /// low, medium, high or critical.
    pub severity: String,
    /// One line for people.
    pub summary: String,
    /// The evidence, as the plugin gave it.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// Whether the request was blocked.
    pub blocked: bool,
    /// The gateway's request id.
    pub request_id: String,
    /// The service called (`entidad/v{n}`).
    pub service: String,
    /// pruebas or produccion.
    pub environment: String,
    /// The calling entity, if known.
    pub consumer_entity: Option<String>,
    /// The calling system, if known.
    pub consumer_system: Option<String>,
    /// The client's address, if known.
    pub client_address: Option<String>,
    /// open, acknowledged or closed.
    pub status: String,
}

impl From<Incident> for IncidentView {
    fn from(i: Incident) -> IncidentView {
        IncidentView {
            id: i.id,
            at_ms: i.at_ms,
            plugin: i.plugin,
            kind: i.kind,
            severity: i.severity,
            summary: i.summary,
            detail: i.detail,
            blocked: i.blocked,
            request_id: i.request_id,
            service: i.service,
            environment: i.environment,
            consumer_entity: i.consumer_entity,
            consumer_system: i.consumer_system,
            client_address: i.client_address,
            status: i.status,
        }
    }
}

/// Incidents, newest first: operators all (or one entity's), others those
/// in which their entity is the consumer or the publisher.
#[utoipa::path(get, path = "/incidents", tag = "incidents", params(IncidentQuery),
    responses((status = 200, description = "Incidents, newest first", body = Page<IncidentView>),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn list(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<IncidentQuery>,
) -> ApiResult<Json<Page<IncidentView>>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let entity = if auth.actor.is_operator() {
        q.entity
    } else {
        let own = auth.actor.entity_code.clone().ok_or_else(|| {
            ApiError::new(Problem::Forbidden, "this principal acts for no entity")
        })?;
        if q.entity.as_deref().is_some_and(|e| e != own) {
            return Err(ApiError::new(
                Problem::Forbidden,
                "only an operator may list another entity's incidents",
            ));
        }
        Some(own)
    };
    let filter = IncidentFilter {
        entity,
        kind: q.kind,
        since_ms: q.since_ms,
        before_id: q.cursor.filter(|c| !c.is_empty()),
        limit,
    };
    let items: Vec<IncidentView> = state
        .store
        .list_incidents(&filter)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .map(IncidentView::from)
        .collect();
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|i| i.id.clone()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}
