//! Policy versions for operators: list and read them, compare two, apply a
//! new policy (or only see what it would change: `dry_run`), and roll back
//! to any earlier version. Applying validates the whole policy first (schema,
//! rules, every plugin loaded with its configuration); a refused policy
//! changes nothing and answers `422`. Every applied version reaches every
//! node through the store ([`crate::policy_versions`]).

use super::ApiResult;
use crate::admin::audit;
use crate::admin::error::{ApiError, ProblemBody};
use crate::admin::extract::{Auth, JsonBody, Params};
use crate::admin::AppState;
use crate::policy_versions::{parse_for, ApplyError, Origin, PolicyFailure, ServiceChanges};
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::Json;
use chasqui_catalog::domain::Page;
use chasqui_catalog::policy_versions::{PolicySource, PolicyVersion};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// Largest page of versions.
const MAX_LIMIT: u32 = 200;

/// Largest policy text accepted.
const MAX_POLICY_BYTES: usize = 1 << 20;

/// A policy version as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyVersionView {
    /// Its number, increasing.
    pub id: i64,
    /// SHA-256 of the text, hex.
    pub sha256: String,
    /// Who applied it (`file:<path>`, `default`, or `role:id:name`).
    pub author: String,
    /// Why.
    pub comment: String,
    /// `default`, `file`, `admin` or `rollback`.
    pub source: String,
    /// For a rollback, the version it restored.
    pub restores: Option<i64>,
    /// When it was applied (Unix milliseconds).
    pub created_at_ms: i64,
    /// Whether it is the version in force.
    pub current: bool,
    /// The policy text (YAML); left out of lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl PolicyVersionView {
    fn of(v: PolicyVersion, current: Option<i64>, with_body: bool) -> PolicyVersionView {
        PolicyVersionView {
            current: current == Some(v.id),
            id: v.id,
            sha256: v.sha256,
            author: v.author,
            comment: v.comment,
            source: v.source,
            restores: v.restores,
            created_at_ms: v.created_at_ms,
            body: with_body.then_some(v.body),
        }
    }
}

/// The version in force and this node's view of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyState {
    /// The version in force in the cluster (absent before the first one).
    pub version: Option<PolicyVersionView>,
    /// The version this node applies (it follows the one in force within a
    /// catalog poll period, or at once with PostgreSQL notifications).
    pub applied_here: Option<i64>,
    /// The last failure to apply a policy on this node (a broken file, a
    /// version whose plugins this node lacks), cleared by the next success.
    pub last_error: Option<PolicyFailure>,
}

/// Page of the version list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// Page size (1-200, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The two versions to compare.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The earlier version.
    pub from: i64,
    /// The later version.
    pub to: i64,
}

/// A new policy to apply.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyPolicy {
    /// The policy text (YAML, the format of `policies/policy.schema.json`).
    pub policy: String,
    /// Why (kept with the version; required).
    pub comment: String,
    /// Only validate and answer what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// A rollback.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// Why (kept with the new version; required).
    pub comment: String,
    /// Only answer what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// What applying did, or would do.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplyOutcome {
    /// Whether this was only a dry run (nothing changed).
    pub dry_run: bool,
    /// The version in force after applying (absent in a dry run).
    pub version: Option<PolicyVersionView>,
    /// Whether a new version was recorded (false when the text equals the
    /// version in force).
    pub recorded: bool,
    /// The changes of effective settings, per service (`*`: every service).
    pub changes: Vec<ServiceChanges>,
}

/// The differences of effective settings between two versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyDiff {
    /// The earlier version.
    pub from: i64,
    /// The later version.
    pub to: i64,
    /// The changes, per service (`*`: every service).
    pub changes: Vec<ServiceChanges>,
}

async fn version_or_404(state: &AppState, id: i64) -> ApiResult<PolicyVersion> {
    state
        .store
        .policy_version(id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::new(Problem::NotFound, format!("no policy version {id}")))
}

fn require_comment(comment: &str) -> ApiResult<()> {
    if comment.trim().is_empty() {
        return Err(ApiError::field("comment", "say why the policy changes"));
    }
    if comment.len() > 2000 {
        return Err(ApiError::field("comment", "at most 2000 characters"));
    }
    Ok(())
}

/// Policy versions, newest first.
#[utoipa::path(get, path = "/policies", tag = "policies", params(VersionQuery),
    responses((status = 200, description = "Versions, newest first", body = Page<PolicyVersionView>),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn list(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<VersionQuery>,
) -> ApiResult<Json<Page<PolicyVersionView>>> {
    auth.actor.require_operator("read policy versions")?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let before = match q.cursor.filter(|c| !c.is_empty()) {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::field("cursor", "not a cursor of this list"))?,
        ),
        None => None,
    };
    let current = state
        .store
        .current_policy_id()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let items: Vec<PolicyVersionView> = state
        .store
        .list_policy_versions(before, i64::from(limit))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .map(|v| PolicyVersionView::of(v, current, false))
        .collect();
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|v| v.id.to_string()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

/// The version in force, its text, and this node's state.
#[utoipa::path(get, path = "/policies/current", tag = "policies",
    responses((status = 200, description = "The policy in force", body = PolicyState),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn current(auth: Auth, State(state): State<AppState>) -> ApiResult<Json<PolicyState>> {
    auth.actor.require_operator("read the policy")?;
    let version = state
        .store
        .current_policy()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let current = version.as_ref().map(|v| v.id);
    Ok(Json(PolicyState {
        version: version.map(|v| PolicyVersionView::of(v, current, true)),
        applied_here: state.gateway.policy_tracker.version_id(),
        last_error: state.gateway.policy_tracker.last_error(),
    }))
}

/// One version with its text.
#[utoipa::path(get, path = "/policies/{id}", tag = "policies",
    params(("id" = i64, Path, description = "Version number")),
    responses((status = 200, description = "The version", body = PolicyVersionView),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn get(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<PolicyVersionView>> {
    auth.actor.require_operator("read policy versions")?;
    let version = version_or_404(&state, id).await?;
    let current = state
        .store
        .current_policy_id()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(PolicyVersionView::of(version, current, true)))
}

/// How the effective settings of each service differ between two versions.
#[utoipa::path(get, path = "/policies/diff", tag = "policies", params(DiffQuery),
    responses((status = 200, description = "Changes of effective settings", body = PolicyDiff),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody),
        (status = 422, body = ProblemBody)))]
pub async fn diff(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<DiffQuery>,
) -> ApiResult<Json<PolicyDiff>> {
    auth.actor.require_operator("compare policy versions")?;
    let from = version_or_404(&state, q.from).await?;
    let to = version_or_404(&state, q.to).await?;
    let changes = state
        .gateway
        .policy_changes(&from.body, &to.body)
        .await
        .map_err(|e| ApiError::internal(&format!("{e:#}")))?;
    Ok(Json(PolicyDiff {
        from: from.id,
        to: to.id,
        changes,
    }))
}

/// Applies a new policy to every node, or with `dry_run` only validates it
/// and answers what would change.
#[utoipa::path(put, path = "/policies/current", tag = "policies", request_body = ApplyPolicy,
    responses((status = 200, description = "Applied, or what would change", body = ApplyOutcome),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 422, description = "The policy is not valid; nothing changed", body = ProblemBody)))]
pub async fn apply(
    auth: Auth,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<ApplyPolicy>,
) -> ApiResult<Json<ApplyOutcome>> {
    auth.actor.require_operator("change the policy")?;
    require_comment(&req.comment)?;
    if req.policy.len() > MAX_POLICY_BYTES {
        return Err(ApiError::field("policy", "larger than 1 MiB"));
    }
    let author = auth.actor.ledger_name();
    apply_text(
        &state,
        &auth,
        req.policy,
        Origin {
            source: PolicySource::Admin,
            author,
            comment: req.comment,
            restores: None,
            always_record: false,
        },
        req.dry_run,
    )
    .await
    .map(Json)
}

/// Applies an earlier version's text again, as a new version.
#[utoipa::path(post, path = "/policies/{id}/rollback", tag = "policies", request_body = Rollback,
    params(("id" = i64, Path, description = "The version to restore")),
    responses((status = 200, description = "Restored, or what would change", body = ApplyOutcome),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody),
        (status = 422, description = "The version cannot be applied any more; nothing changed", body = ProblemBody)))]
pub async fn rollback(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    JsonBody(req): JsonBody<Rollback>,
) -> ApiResult<Json<ApplyOutcome>> {
    auth.actor.require_operator("roll the policy back")?;
    require_comment(&req.comment)?;
    let old = version_or_404(&state, id).await?;
    // A version keeps the author it had, so that its relative plugin paths
    // resolve as they did; who rolled back is in the comment's version row
    // (`source: rollback`) and in the ledger.
    let comment = format!(
        "{} (rollback to version {id} by {})",
        req.comment,
        auth.actor.ledger_name()
    );
    apply_text(
        &state,
        &auth,
        old.body,
        Origin {
            source: PolicySource::Rollback,
            author: old.author,
            comment,
            restores: Some(id),
            always_record: false,
        },
        req.dry_run,
    )
    .await
    .map(Json)
}

async fn apply_text(
    state: &AppState,
    auth: &Auth,
    text: String,
    origin: Origin,
    dry_run: bool,
) -> ApiResult<ApplyOutcome> {
    let before = state.gateway.policy_tracker.text();
    let invalid = |e: ApplyError| match e {
        ApplyError::Invalid(message) => ApiError::new(Problem::Validation, message),
        ApplyError::Store(e) => ApiError::internal(&e),
    };
    if dry_run {
        let policy = parse_for(&text, "the submitted policy", &origin.author).map_err(invalid)?;
        let gw = state.gateway.clone();
        tokio::task::spawn_blocking(move || gw.check_policy(policy))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_err(|e| ApiError::new(Problem::Validation, format!("{e:#}")))?;
    }
    let changes = state
        .gateway
        .policy_changes(&before, &text)
        .await
        .map_err(|e| ApiError::new(Problem::Validation, format!("{e:#}")))?;
    if dry_run {
        return Ok(ApplyOutcome {
            dry_run,
            version: None,
            recorded: false,
            changes,
        });
    }
    let restores = origin.restores;
    let applied = state
        .gateway
        .apply_policy_text(text, origin)
        .await
        .map_err(invalid)?;
    let kind = if restores.is_some() {
        "policy.rollback"
    } else {
        "policy.apply"
    };
    audit::record(
        state,
        auth,
        kind,
        json!({
            "version": applied.version.id,
            "sha256": applied.version.sha256,
            "recorded": applied.recorded,
            "restores": restores,
        }),
    );
    let current = Some(applied.version.id);
    Ok(ApplyOutcome {
        dry_run,
        recorded: applied.recorded,
        version: Some(PolicyVersionView::of(applied.version, current, false)),
        changes,
    })
}
