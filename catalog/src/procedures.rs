//! The two procedures of AGETIC's document 000 as state machines.
//!
//! **Consume** (a consumer system asks for a service):
//! `requested -> test_enabled -> integration_verified -> adhesion_received ->
//! production_enabled`, plus `rejected`, `suspended` and `revoked`. Enabling
//! test or production writes the grant and issues a token of that
//! environment, shown once; suspending, rejecting or revoking withdraws the
//! grants at once (the grants' catalog triggers make every gateway reload).
//!
//! **Publish** (a publisher offers a service):
//! `draft -> adhesion_received -> environments_enabled -> published`, plus
//! `deprecated`. The state decides the service's routing status.
//!
//! Each transition is allowed only from certain states and to certain roles,
//! happens in one transaction, and is recorded with who, when, and the
//! document it rests on.

use crate::domain::{optional_text, Actor, DomainError, DomainResult, Page, PageRequest, Role};
use crate::model::{now_unix, Environment};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};
use std::fmt;
use std::str::FromStr;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident ($field:literal) { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// The name stored and shown.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(DomainError::field($field, format!("unknown value `{s}`"))),
                }
            }
        }
    };
}

string_enum! {
    /// The states of the consume procedure.
    ConsumeState ("state") {
        /// Step 3: the entity asked for the test environment.
        Requested => "requested",
        /// Step 4: AGETIC enabled test access and issued a test token.
        TestEnabled => "test_enabled",
        /// Step 6: AGETIC and the entity verified the integration.
        IntegrationVerified => "integration_verified",
        /// Step 7: the signed adhesion agreement was received.
        AdhesionReceived => "adhesion_received",
        /// Step 8: production access enabled, production token issued.
        ProductionEnabled => "production_enabled",
        /// Refused by AGETIC (final).
        Rejected => "rejected",
        /// Access withdrawn for now; may be reinstated.
        Suspended => "suspended",
        /// Access withdrawn for good (final).
        Revoked => "revoked",
    }
}

string_enum! {
    /// The actions of the consume procedure (after the request itself).
    ConsumeAction ("action") {
        /// requested -> test_enabled (operator): grant `pruebas`, issue a test token.
        EnableTest => "enable_test",
        /// test_enabled -> integration_verified (operator).
        VerifyIntegration => "verify_integration",
        /// integration_verified -> adhesion_received (operator or the requesting
        /// consumer), resting on an adhesion agreement document.
        RecordAdhesion => "record_adhesion",
        /// adhesion_received -> production_enabled (operator): grant
        /// `produccion`, issue a production token.
        EnableProduction => "enable_production",
        /// Any state before production -> rejected (operator).
        Reject => "reject",
        /// An enabled state -> suspended (operator): grants withdrawn.
        Suspend => "suspend",
        /// suspended -> the state it was suspended from (operator).
        Reinstate => "reinstate",
        /// Any live state -> revoked (operator): grants withdrawn for good.
        Revoke => "revoke",
    }
}

string_enum! {
    /// The states of the publish procedure.
    PublishState ("state") {
        /// Registered, not routed.
        Draft => "draft",
        /// Step 2: the publisher's signed adhesion agreement was received.
        AdhesionReceived => "adhesion_received",
        /// Step 3: test and production environments enabled (routed in `pruebas`).
        EnvironmentsEnabled => "environments_enabled",
        /// Step 4: in the catalog, routed in both environments.
        Published => "published",
        /// Still routed, no longer offered to new consumers.
        Deprecated => "deprecated",
    }
}

string_enum! {
    /// The actions of the publish procedure.
    PublishAction ("action") {
        /// draft -> adhesion_received (operator or the publisher), resting on
        /// an adhesion agreement document.
        RecordAdhesion => "record_adhesion",
        /// adhesion_received -> environments_enabled (operator); needs
        /// upstreams in both environments.
        EnableEnvironments => "enable_environments",
        /// environments_enabled -> published (operator); needs the OpenAPI
        /// document and a metadata sheet with data provided and legal basis.
        Publish => "publish",
        /// published -> deprecated (operator or the publisher).
        Deprecate => "deprecate",
    }
}

/// Where a consume action leads from `from`; `None` if it is not allowed.
/// `suspended_from` is the state a suspended request returns to.
pub fn consume_next(
    from: ConsumeState,
    action: ConsumeAction,
    suspended_from: Option<ConsumeState>,
) -> Option<ConsumeState> {
    use ConsumeAction as A;
    use ConsumeState as S;
    match (from, action) {
        (S::Requested, A::EnableTest) => Some(S::TestEnabled),
        (S::TestEnabled, A::VerifyIntegration) => Some(S::IntegrationVerified),
        (S::IntegrationVerified, A::RecordAdhesion) => Some(S::AdhesionReceived),
        (S::AdhesionReceived, A::EnableProduction) => Some(S::ProductionEnabled),
        (
            S::Requested | S::TestEnabled | S::IntegrationVerified | S::AdhesionReceived,
            A::Reject,
        ) => Some(S::Rejected),
        (
            S::TestEnabled | S::IntegrationVerified | S::AdhesionReceived | S::ProductionEnabled,
            A::Suspend,
        ) => Some(S::Suspended),
        (S::Suspended, A::Reinstate) => suspended_from,
        (
            S::Requested
            | S::TestEnabled
            | S::IntegrationVerified
            | S::AdhesionReceived
            | S::ProductionEnabled
            | S::Suspended,
            A::Revoke,
        ) => Some(S::Revoked),
        _ => None,
    }
}

/// The roles that may take a consume action (besides ownership checks).
pub fn consume_roles(action: ConsumeAction) -> &'static [Role] {
    match action {
        ConsumeAction::RecordAdhesion => &[Role::Operator, Role::Consumer],
        _ => &[Role::Operator],
    }
}

/// Where a publish action leads from `from`; `None` if it is not allowed.
pub fn publish_next(from: PublishState, action: PublishAction) -> Option<PublishState> {
    use PublishAction as A;
    use PublishState as S;
    match (from, action) {
        (S::Draft, A::RecordAdhesion) => Some(S::AdhesionReceived),
        (S::AdhesionReceived, A::EnableEnvironments) => Some(S::EnvironmentsEnabled),
        (S::EnvironmentsEnabled, A::Publish) => Some(S::Published),
        (S::Published, A::Deprecate) => Some(S::Deprecated),
        _ => None,
    }
}

/// The roles that may take a publish action (besides ownership checks).
pub fn publish_roles(action: PublishAction) -> &'static [Role] {
    match action {
        PublishAction::RecordAdhesion | PublishAction::Deprecate => {
            &[Role::Operator, Role::Publisher]
        }
        _ => &[Role::Operator],
    }
}

/// The routing status (`services.status`) of a publish state.
pub fn routing_status(state: PublishState) -> &'static str {
    match state {
        PublishState::Draft | PublishState::AdhesionReceived => "draft",
        PublishState::EnvironmentsEnabled => "testing",
        PublishState::Published => "published",
        PublishState::Deprecated => "deprecated",
    }
}

/// A transition asked for: the action, the document it rests on, a note.
#[derive(Debug, Clone, Deserialize)]
pub struct TransitionInput<A> {
    /// What to do.
    pub action: A,
    /// The document the step rests on (required to record an adhesion).
    #[serde(default)]
    pub document_id: Option<i64>,
    /// Free text for the record (a reason for a rejection, ...).
    #[serde(default)]
    pub note: String,
}

/// A token issued by a transition: shown once, never again.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    /// The token. Store it safely; it is not shown again.
    pub token: String,
    /// Its first characters, as token lists show them.
    pub display_prefix: String,
    /// The environment it opens.
    #[schema(value_type = String, example = "pruebas")]
    pub environment: Environment,
    /// Its label.
    pub label: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("display_prefix", &self.display_prefix)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

/// A consumer system's request for a service.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccessRequest {
    /// Row id.
    pub id: i64,
    /// The consumer system asking.
    pub system_id: i64,
    /// `entity/system` of the consumer system.
    pub consumer: String,
    /// The service asked for.
    pub service_id: i64,
    /// `/{publisher}/v{n}/` of the service.
    pub service_path: String,
    /// Current state.
    pub state: ConsumeState,
    /// When suspended: the state a reinstatement returns to.
    pub suspended_from: Option<ConsumeState>,
    /// Why the entity needs the service.
    pub justification: String,
    /// The adhesion agreement it rests on, once received.
    pub adhesion_document_id: Option<i64>,
    /// The principal who filed it.
    pub requested_by: i64,
    /// Filing time (Unix seconds).
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// The consumer entity's row id.
    #[serde(skip)]
    pub consumer_entity_id: i64,
    /// The publisher entity's row id.
    #[serde(skip)]
    pub publisher_entity_id: i64,
}

/// One recorded step of a procedure.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProcedureEvent {
    /// Row id.
    pub id: i64,
    /// The action taken (`request`, `create` or a transition's action).
    pub action: String,
    /// The state before (none for the first event).
    pub from_state: Option<String>,
    /// The state after.
    pub to_state: String,
    /// Who took it.
    pub principal_id: i64,
    /// That principal's name.
    pub principal_name: String,
    /// The document it rests on.
    pub document_id: Option<i64>,
    /// A note for the record.
    pub note: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// What a consume transition did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsumeOutcome {
    /// The request after the transition.
    pub request: AccessRequest,
    /// The state it left.
    pub from: ConsumeState,
    /// A token issued by this step (enable_test, enable_production): shown once.
    pub issued_token: Option<IssuedToken>,
}

/// What a publish transition did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PublishOutcome {
    /// The service's id.
    pub service_id: i64,
    /// The state it left.
    pub from: PublishState,
    /// The state it is in.
    pub to: PublishState,
    /// The routing status that follows from it.
    pub status: String,
}

/// A grant: a consumer system may call a service in an environment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Grant {
    /// Row id.
    pub id: i64,
    /// The consumer system.
    pub system_id: i64,
    /// `entity/system` of the consumer system.
    pub consumer: String,
    /// The service.
    pub service_id: i64,
    /// `/{publisher}/v{n}/` of the service.
    pub service_path: String,
    /// The environment.
    #[schema(value_type = String, example = "pruebas")]
    pub environment: Environment,
    /// active, suspended or revoked.
    pub status: String,
    /// Creation time (Unix seconds).
    pub created_at: i64,
}

/// Filters of the grant list.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    /// Only this consumer system's grants.
    pub system_id: Option<i64>,
    /// Only grants for this service.
    pub service_id: Option<i64>,
    /// Only this status.
    pub status: Option<String>,
}

/// Filters of the access request list.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only this state.
    pub state: Option<ConsumeState>,
    /// Only requests for this service.
    pub service_id: Option<i64>,
    /// Only requests of this consumer system.
    pub system_id: Option<i64>,
}

const REQUEST_SELECT: &str = "SELECT r.id, r.consumer_id, ce.code || '/' || c.code, r.service_id,
        '/' || pe.code || '/v' || s.version || '/', r.state, r.suspended_from, r.justification,
        r.adhesion_document_id, r.requested_by, r.created_at, r.updated_at, c.entity_id, s.entity_id
     FROM access_requests r
     JOIN consumers c ON c.id = r.consumer_id
     JOIN entities ce ON ce.id = c.entity_id
     JOIN services s ON s.id = r.service_id
     JOIN entities pe ON pe.id = s.entity_id";

fn request_of(r: &sqlx::any::AnyRow) -> DomainResult<AccessRequest> {
    let state: String = r.try_get(5)?;
    let suspended_from: Option<String> = r.try_get(6)?;
    Ok(AccessRequest {
        id: r.try_get(0)?,
        system_id: r.try_get(1)?,
        consumer: r.try_get(2)?,
        service_id: r.try_get(3)?,
        service_path: r.try_get(4)?,
        state: state.parse()?,
        suspended_from: suspended_from.map(|s| s.parse()).transpose()?,
        justification: r.try_get(7)?,
        adhesion_document_id: r.try_get(8)?,
        requested_by: r.try_get(9)?,
        created_at: r.try_get(10)?,
        updated_at: r.try_get(11)?,
        consumer_entity_id: r.try_get(12)?,
        publisher_entity_id: r.try_get(13)?,
    })
}

/// Whether `actor` may see a request: operators, the consumer entity, and
/// the publisher of the service.
fn sees_request(actor: &Actor, r: &AccessRequest) -> bool {
    actor.is_operator()
        || actor.entity_id == Some(r.consumer_entity_id)
        || (actor.role == Role::Publisher && actor.entity_id == Some(r.publisher_entity_id))
}

/// Appends one step to a procedure's record, inside the caller's transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_event(
    tx: &mut Transaction<'_, Any>,
    procedure: &str,
    subject_id: i64,
    action: &str,
    from: Option<&str>,
    to: &str,
    actor: &Actor,
    document_id: Option<i64>,
    note: &str,
    at: i64,
) -> DomainResult<()> {
    sqlx::query(
        "INSERT INTO procedure_events (procedure, subject_id, action, from_state, to_state, principal_id, document_id, note, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(procedure)
    .bind(subject_id)
    .bind(action)
    .bind(from)
    .bind(to)
    .bind(actor.principal_id)
    .bind(document_id)
    .bind(note)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Checks that `document_id` names an adhesion agreement of `entity_id`.
async fn adhesion_document(
    tx: &mut Transaction<'_, Any>,
    document_id: Option<i64>,
    entity_id: i64,
) -> DomainResult<i64> {
    let id = document_id.ok_or_else(|| {
        DomainError::field("document_id", "an adhesion agreement document is required")
    })?;
    let row = sqlx::query("SELECT entity_id, kind FROM documents WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| DomainError::field("document_id", format!("no document {id}")))?;
    let (owner, kind): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
    if owner != entity_id || kind != crate::documents::ADHESION_AGREEMENT {
        return Err(DomainError::field(
            "document_id",
            format!("document {id} is not an adhesion agreement of this entity"),
        ));
    }
    Ok(id)
}

/// Sets the status of the grants of a consumer system for a service, only
/// where they are in one of `from` states.
async fn set_grants(
    tx: &mut Transaction<'_, Any>,
    consumer_id: i64,
    service_id: i64,
    status: &str,
    from: &[&str],
) -> DomainResult<()> {
    for f in from {
        sqlx::query(
            "UPDATE grants SET status = $1 WHERE consumer_id = $2 AND service_id = $3 AND status = $4",
        )
        .bind(status)
        .bind(consumer_id)
        .bind(service_id)
        .bind(f)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn grant_and_issue(
    tx: &mut Transaction<'_, Any>,
    request: &AccessRequest,
    env: Environment,
    now: i64,
) -> DomainResult<IssuedToken> {
    sqlx::query(
        "INSERT INTO grants (consumer_id, service_id, environment, status, created_at)
         VALUES ($1, $2, $3, 'active', $4)
         ON CONFLICT (consumer_id, service_id, environment) DO UPDATE SET status = 'active'",
    )
    .bind(request.system_id)
    .bind(request.service_id)
    .bind(env.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let label = format!("solicitud-{}-{}", request.id, env.as_str());
    let issued = crate::store::insert_token(tx, request.system_id, env, &label, now, None)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Db(e) => DomainError::Db(e),
            other => DomainError::Conflict(other.to_string()),
        })?;
    Ok(IssuedToken {
        display_prefix: crate::token::display_prefix(&issued.secret),
        token: issued.secret,
        environment: env,
        label,
    })
}

impl Store {
    /// Files a request of consumer system `system_id` for the test
    /// environment of a published service (operators, or a consumer
    /// principal of the system's entity).
    pub async fn request_access(
        &self,
        actor: &Actor,
        system_id: i64,
        service_id: i64,
        justification: &str,
    ) -> DomainResult<AccessRequest> {
        let justification = optional_text("justification", justification, 4000)?;
        let mut tx = self.write_tx().await?;
        let system_entity: i64 =
            sqlx::query_scalar("SELECT entity_id FROM consumers WHERE id = $1")
                .bind(system_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| {
                    DomainError::field("system_id", format!("no consumer system {system_id}"))
                })?;
        actor.require_for_entity(
            Role::Consumer,
            system_entity,
            "request access for this system",
        )?;
        let status: String = sqlx::query_scalar("SELECT status FROM services WHERE id = $1")
            .bind(service_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| DomainError::field("service_id", format!("no service {service_id}")))?;
        if status != "published" {
            return Err(DomainError::Conflict(format!(
                "service {service_id} is not published in the catalog (it is {status})"
            )));
        }
        let now = now_unix();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO access_requests (consumer_id, service_id, state, justification, requested_by, created_at, updated_at)
             VALUES ($1, $2, 'requested', $3, $4, $5, $6) RETURNING id",
        )
        .bind(system_id)
        .bind(service_id)
        .bind(&justification)
        .bind(actor.principal_id)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            DomainError::from_write(
                e,
                &format!("system {system_id} already has a live request for service {service_id}"),
                "service_id",
            )
        })?;
        record_event(
            &mut tx,
            "consume",
            id,
            "request",
            None,
            "requested",
            actor,
            None,
            "",
            now,
        )
        .await?;
        tx.commit().await?;
        self.access_request(actor, id).await
    }

    /// One access request, for operators, the consumer entity and the
    /// service's publisher.
    pub async fn access_request(&self, actor: &Actor, id: i64) -> DomainResult<AccessRequest> {
        let row = sqlx::query(&format!("{REQUEST_SELECT} WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("access request {id}")))?;
        let request = request_of(&row)?;
        if !sees_request(actor, &request) {
            return Err(DomainError::Forbidden(format!(
                "access request {id} is not about this principal's entity"
            )));
        }
        Ok(request)
    }

    /// Access requests visible to `actor`, filtered.
    pub async fn list_access_requests(
        &self,
        actor: &Actor,
        filter: &RequestFilter,
        page: PageRequest,
    ) -> DomainResult<Page<AccessRequest>> {
        let (all, entity, as_publisher) = match actor.role {
            Role::Operator => (true, 0, false),
            Role::Consumer => (false, actor.entity_id.unwrap_or(0), false),
            Role::Publisher => (false, actor.entity_id.unwrap_or(0), true),
        };
        let state = filter.state.map(|s| s.as_str());
        let rows = sqlx::query(&format!(
            "{REQUEST_SELECT}
             WHERE r.id > $1
               AND ($2 OR c.entity_id = $3 OR ($4 AND s.entity_id = $5))
               AND ($6 IS NULL OR r.state = $7)
               AND ($8 IS NULL OR r.service_id = $9)
               AND ($10 IS NULL OR r.consumer_id = $11)
             ORDER BY r.id LIMIT $12"
        ))
        .bind(page.after_id)
        .bind(all)
        .bind(entity)
        .bind(as_publisher)
        .bind(entity)
        .bind(state)
        .bind(state)
        .bind(filter.service_id)
        .bind(filter.service_id)
        .bind(filter.system_id)
        .bind(filter.system_id)
        .bind(page.limit + 1)
        .fetch_all(self.pool())
        .await?;
        let items = rows
            .iter()
            .map(request_of)
            .collect::<DomainResult<Vec<_>>>()?;
        Ok(page.finish(items, |r| r.id))
    }

    /// Grants visible to `actor`: operators all, consumers their entity's
    /// systems', publishers those on their services.
    pub async fn list_grants(
        &self,
        actor: &Actor,
        filter: &GrantFilter,
        page: PageRequest,
    ) -> DomainResult<Page<Grant>> {
        if let Some(status) = &filter.status {
            if !["active", "suspended", "revoked"].contains(&status.as_str()) {
                return Err(DomainError::field(
                    "status",
                    "must be one of active, suspended, revoked",
                ));
            }
        }
        let (all, entity, as_publisher) = match actor.role {
            Role::Operator => (true, 0, false),
            Role::Consumer => (false, actor.entity_id.unwrap_or(0), false),
            Role::Publisher => (false, actor.entity_id.unwrap_or(0), true),
        };
        let rows = sqlx::query(
            "SELECT g.id, g.consumer_id, ce.code || '/' || c.code, g.service_id,
                    '/' || pe.code || '/v' || s.version || '/', g.environment, g.status, g.created_at
             FROM grants g
             JOIN consumers c ON c.id = g.consumer_id
             JOIN entities ce ON ce.id = c.entity_id
             JOIN services s ON s.id = g.service_id
             JOIN entities pe ON pe.id = s.entity_id
             WHERE g.id > $1
               AND ($2 OR (NOT $3 AND c.entity_id = $4) OR ($5 AND s.entity_id = $6))
               AND ($7 IS NULL OR g.consumer_id = $8)
               AND ($9 IS NULL OR g.service_id = $10)
               AND ($11 IS NULL OR g.status = $12)
             ORDER BY g.id LIMIT $13",
        )
        .bind(page.after_id)
        .bind(all)
        .bind(as_publisher)
        .bind(entity)
        .bind(as_publisher)
        .bind(entity)
        .bind(filter.system_id)
        .bind(filter.system_id)
        .bind(filter.service_id)
        .bind(filter.service_id)
        .bind(&filter.status)
        .bind(&filter.status)
        .bind(page.limit + 1)
        .fetch_all(self.pool())
        .await?;
        let items = rows
            .iter()
            .map(|r| {
                let env: String = r.try_get(5)?;
                Ok(Grant {
                    id: r.try_get(0)?,
                    system_id: r.try_get(1)?,
                    consumer: r.try_get(2)?,
                    service_id: r.try_get(3)?,
                    service_path: r.try_get(4)?,
                    environment: crate::store::parse_env(env)
                        .map_err(|e| DomainError::Db(sqlx::Error::Decode(Box::new(e))))?,
                    status: r.try_get(6)?,
                    created_at: r.try_get(7)?,
                })
            })
            .collect::<DomainResult<Vec<_>>>()?;
        Ok(page.finish(items, |g| g.id))
    }

    /// Takes a consume action on a request, in one transaction.
    pub async fn transition_access_request(
        &self,
        actor: &Actor,
        id: i64,
        input: &TransitionInput<ConsumeAction>,
    ) -> DomainResult<ConsumeOutcome> {
        let note = optional_text("note", &input.note, 2000)?;
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!("{REQUEST_SELECT} WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("access request {id}")))?;
        let request = request_of(&row)?;
        if !sees_request(actor, &request) {
            return Err(DomainError::Forbidden(format!(
                "access request {id} is not about this principal's entity"
            )));
        }
        let action = input.action;
        let role_ok = consume_roles(action).contains(&actor.role)
            && (actor.is_operator() || actor.entity_id == Some(request.consumer_entity_id));
        if !role_ok {
            return Err(DomainError::Forbidden(format!(
                "a {} may not `{action}` (allowed: {})",
                actor.role,
                consume_roles(action)
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let from = request.state;
        let to = consume_next(from, action, request.suspended_from).ok_or_else(|| {
            DomainError::InvalidTransition {
                from: from.to_string(),
                action: action.to_string(),
                detail: None,
            }
        })?;
        let now = now_unix();
        let mut issued = None;
        let mut document_id = None;
        let mut suspended_from = None;
        match action {
            ConsumeAction::EnableTest => {
                issued = Some(grant_and_issue(&mut tx, &request, Environment::Pruebas, now).await?);
            }
            ConsumeAction::VerifyIntegration => {}
            ConsumeAction::RecordAdhesion => {
                document_id = Some(
                    adhesion_document(&mut tx, input.document_id, request.consumer_entity_id)
                        .await?,
                );
            }
            ConsumeAction::EnableProduction => {
                let status: String =
                    sqlx::query_scalar("SELECT status FROM services WHERE id = $1")
                        .bind(request.service_id)
                        .fetch_one(&mut *tx)
                        .await?;
                if status != "published" && status != "deprecated" {
                    return Err(DomainError::InvalidTransition {
                        from: from.to_string(),
                        action: action.to_string(),
                        detail: Some(format!("the service is {status}, not published")),
                    });
                }
                issued =
                    Some(grant_and_issue(&mut tx, &request, Environment::Produccion, now).await?);
            }
            ConsumeAction::Reject | ConsumeAction::Revoke => {
                set_grants(
                    &mut tx,
                    request.system_id,
                    request.service_id,
                    "revoked",
                    &["active", "suspended"],
                )
                .await?;
            }
            ConsumeAction::Suspend => {
                set_grants(
                    &mut tx,
                    request.system_id,
                    request.service_id,
                    "suspended",
                    &["active"],
                )
                .await?;
                suspended_from = Some(from.as_str());
            }
            ConsumeAction::Reinstate => {
                set_grants(
                    &mut tx,
                    request.system_id,
                    request.service_id,
                    "active",
                    &["suspended"],
                )
                .await?;
            }
        }
        sqlx::query(
            "UPDATE access_requests SET state = $1, suspended_from = $2, updated_at = $3,
                adhesion_document_id = COALESCE($4, adhesion_document_id)
             WHERE id = $5",
        )
        .bind(to.as_str())
        .bind(suspended_from)
        .bind(now)
        .bind(document_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        record_event(
            &mut tx,
            "consume",
            id,
            action.as_str(),
            Some(from.as_str()),
            to.as_str(),
            actor,
            document_id.or(input.document_id),
            &note,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(ConsumeOutcome {
            request: self.access_request(actor, id).await?,
            from,
            issued_token: issued,
        })
    }

    /// Takes a publish action on a service, in one transaction.
    pub async fn transition_service(
        &self,
        actor: &Actor,
        id: i64,
        input: &TransitionInput<PublishAction>,
    ) -> DomainResult<PublishOutcome> {
        let note = optional_text("note", &input.note, 2000)?;
        let service = self.service(actor, id).await?;
        let action = input.action;
        let role_ok =
            publish_roles(action).contains(&actor.role) && actor.may_act_for(service.entity_id);
        if !role_ok {
            return Err(DomainError::Forbidden(format!(
                "a {} may not `{action}` this service (allowed: {})",
                actor.role,
                publish_roles(action)
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut tx = self.write_tx().await?;
        let state: String = sqlx::query_scalar(
            "SELECT COALESCE(p.state, CASE s.status WHEN 'testing' THEN 'environments_enabled' ELSE s.status END)
             FROM services s LEFT JOIN service_publications p ON p.service_id = s.id WHERE s.id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let from: PublishState = state.parse()?;
        let to = publish_next(from, action).ok_or_else(|| DomainError::InvalidTransition {
            from: from.to_string(),
            action: action.to_string(),
            detail: None,
        })?;
        let mut document_id = None;
        match action {
            PublishAction::RecordAdhesion => {
                document_id =
                    Some(adhesion_document(&mut tx, input.document_id, service.entity_id).await?);
            }
            PublishAction::EnableEnvironments => {
                for env in Environment::ALL {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM upstreams WHERE service_id = $1 AND environment = $2",
                    )
                    .bind(id)
                    .bind(env.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                    if n == 0 {
                        return Err(DomainError::InvalidTransition {
                            from: from.to_string(),
                            action: action.to_string(),
                            detail: Some(format!("configure the upstreams of `{env}` first")),
                        });
                    }
                }
            }
            PublishAction::Publish => {
                // The catalog offers a contract and a metadata sheet for
                // every service it lists.
                // A comparison is an integer on SQLite and a boolean on
                // PostgreSQL: CASE makes it an integer on both.
                let row = sqlx::query(
                    "SELECT CASE WHEN openapi IS NULL THEN 0 ELSE 1 END, data_provided, legal_basis
                     FROM service_sheets WHERE service_id = $1",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let (has_openapi, data, legal): (bool, String, String) = match row {
                    Some(r) => (r.try_get::<i64, _>(0)? != 0, r.try_get(1)?, r.try_get(2)?),
                    None => (false, String::new(), String::new()),
                };
                let missing = if !has_openapi {
                    Some("give the service's OpenAPI document first")
                } else if data.is_empty() || legal.is_empty() {
                    Some("complete the metadata sheet (data provided, legal basis) first")
                } else {
                    None
                };
                if let Some(missing) = missing {
                    return Err(DomainError::InvalidTransition {
                        from: from.to_string(),
                        action: action.to_string(),
                        detail: Some(missing.to_string()),
                    });
                }
            }
            PublishAction::Deprecate => {}
        }
        let now = now_unix();
        sqlx::query(
            "INSERT INTO service_publications (service_id, state, adhesion_document_id, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (service_id) DO UPDATE SET state = excluded.state,
               adhesion_document_id = COALESCE(excluded.adhesion_document_id, service_publications.adhesion_document_id),
               updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(to.as_str())
        .bind(document_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let status = routing_status(to);
        sqlx::query("UPDATE services SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        record_event(
            &mut tx,
            "publish",
            id,
            action.as_str(),
            Some(from.as_str()),
            to.as_str(),
            actor,
            document_id.or(input.document_id),
            &note,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(PublishOutcome {
            service_id: id,
            from,
            to,
            status: status.to_string(),
        })
    }

    /// The recorded steps of a procedure's subject, oldest first.
    pub async fn procedure_history(
        &self,
        procedure: &str,
        subject_id: i64,
    ) -> DomainResult<Vec<ProcedureEvent>> {
        let rows = sqlx::query(
            "SELECT ev.id, ev.action, ev.from_state, ev.to_state, ev.principal_id, p.name, ev.document_id, ev.note, ev.at
             FROM procedure_events ev JOIN admin_principals p ON p.id = ev.principal_id
             WHERE ev.procedure = $1 AND ev.subject_id = $2 ORDER BY ev.id",
        )
        .bind(procedure)
        .bind(subject_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ProcedureEvent {
                    id: r.try_get(0)?,
                    action: r.try_get(1)?,
                    from_state: r.try_get(2)?,
                    to_state: r.try_get(3)?,
                    principal_id: r.try_get(4)?,
                    principal_name: r.try_get(5)?,
                    document_id: r.try_get(6)?,
                    note: r.try_get(7)?,
                    at: r.try_get(8)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsumeAction as A;
    use ConsumeState as S;

    #[test]
    fn consume_walks_forward_only_in_order() {
        assert_eq!(
            consume_next(S::Requested, A::EnableTest, None),
            Some(S::TestEnabled)
        );
        assert_eq!(consume_next(S::Requested, A::EnableProduction, None), None);
        assert_eq!(consume_next(S::TestEnabled, A::RecordAdhesion, None), None);
        assert_eq!(
            consume_next(S::AdhesionReceived, A::EnableProduction, None),
            Some(S::ProductionEnabled)
        );
        assert_eq!(consume_next(S::ProductionEnabled, A::Reject, None), None);
        assert_eq!(consume_next(S::Revoked, A::Reinstate, None), None);
        assert_eq!(consume_next(S::Rejected, A::Revoke, None), None);
        assert_eq!(consume_next(S::Requested, A::Suspend, None), None);
        assert_eq!(
            consume_next(S::Suspended, A::Reinstate, Some(S::ProductionEnabled)),
            Some(S::ProductionEnabled)
        );
        assert_eq!(
            consume_next(S::Suspended, A::Revoke, None),
            Some(S::Revoked)
        );
    }

    #[test]
    fn only_operators_approve() {
        for action in [
            A::EnableTest,
            A::VerifyIntegration,
            A::EnableProduction,
            A::Reject,
            A::Suspend,
            A::Reinstate,
            A::Revoke,
        ] {
            assert_eq!(consume_roles(action), &[Role::Operator]);
        }
        assert!(consume_roles(A::RecordAdhesion).contains(&Role::Consumer));
        assert_eq!(publish_roles(PublishAction::Publish), &[Role::Operator]);
        assert!(publish_roles(PublishAction::RecordAdhesion).contains(&Role::Publisher));
    }

    #[test]
    fn publish_walks_in_order_and_sets_routing_status() {
        use PublishAction as P;
        use PublishState as T;
        assert_eq!(publish_next(T::Draft, P::Publish), None);
        assert_eq!(
            publish_next(T::Draft, P::RecordAdhesion),
            Some(T::AdhesionReceived)
        );
        assert_eq!(
            publish_next(T::AdhesionReceived, P::EnableEnvironments),
            Some(T::EnvironmentsEnabled)
        );
        assert_eq!(
            publish_next(T::EnvironmentsEnabled, P::Publish),
            Some(T::Published)
        );
        assert_eq!(
            publish_next(T::Published, P::Deprecate),
            Some(T::Deprecated)
        );
        assert_eq!(publish_next(T::Deprecated, P::Publish), None);
        assert_eq!(routing_status(T::AdhesionReceived), "draft");
        assert_eq!(routing_status(T::EnvironmentsEnabled), "testing");
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::directory::NewEntity;
    use crate::store::Store;

    async fn setup(store: Store) -> (Store, Actor, Actor, AccessRequest) {
        let file = crate::import::parse(
            "entities:
  - {code: segip, name: SEGIP}
services:
  - entity: segip
    code: personas
    version: 1
    name: Personas
    category: Identificación
    environments:
      pruebas: {upstreams: [\"http://127.0.0.1:9\"]}
      produccion: {upstreams: [\"http://127.0.0.1:9\"]}
",
        )
        .unwrap();
        store
            .import(&file, std::path::Path::new("."))
            .await
            .unwrap();
        let op = store
            .issue_admin_token(Role::Operator, None, "op", None)
            .await
            .unwrap();
        let op = store.authenticate_admin(&op.secret).await.unwrap().unwrap();
        store
            .create_entity(
                &op,
                &NewEntity {
                    code: "sin".into(),
                    name: "SIN".into(),
                    kind: "public".into(),
                    contacts: vec![],
                    incident_webhook_url: None,
                },
            )
            .await
            .unwrap();
        let c = store
            .issue_admin_token(Role::Consumer, Some("sin"), "sin", None)
            .await
            .unwrap();
        let consumer = store.authenticate_admin(&c.secret).await.unwrap().unwrap();
        let system = store
            .create_system(&consumer, "sin", "portal", "Portal")
            .await
            .unwrap();
        let request = store
            .request_access(&consumer, system.id, 1, "")
            .await
            .unwrap();
        (store, op, consumer, request)
    }

    fn step(action: ConsumeAction, document_id: Option<i64>) -> TransitionInput<ConsumeAction> {
        TransitionInput {
            action,
            document_id,
            note: String::new(),
        }
    }

    async fn grants(store: &Store) -> Vec<(String, String)> {
        sqlx::query_as("SELECT environment, status FROM grants ORDER BY environment")
            .fetch_all(store.pool())
            .await
            .unwrap()
    }

    crate::testdb::on_both_databases! {
        async fn a_refused_step_changes_nothing(store: Store) {
            let (store, op, consumer, request) = setup(store).await;
            store
                .transition_access_request(&op, request.id, &step(ConsumeAction::EnableTest, None))
                .await
                .unwrap();
            store
                .transition_access_request(
                    &op,
                    request.id,
                    &step(ConsumeAction::VerifyIntegration, None),
                )
                .await
                .unwrap();
            let seq = store.change_seq().await.unwrap();
            // No such document: refused, and neither state nor history moves.
            let refused = store
                .transition_access_request(
                    &consumer,
                    request.id,
                    &step(ConsumeAction::RecordAdhesion, Some(99)),
                )
                .await;
            assert!(
                matches!(refused, Err(DomainError::Validation { ref field, .. }) if field == "document_id")
            );
            let now = store.access_request(&op, request.id).await.unwrap();
            assert_eq!(now.state, ConsumeState::IntegrationVerified);
            assert_eq!(
                store
                    .procedure_history("consume", request.id)
                    .await
                    .unwrap()
                    .len(),
                3
            );
            assert_eq!(store.change_seq().await.unwrap(), seq);
        }
    }

    crate::testdb::on_both_databases! {
        async fn suspension_and_rejection_withdraw_the_grants_the_data_plane_loads(store: Store) {
            let (store, op, _consumer, request) = setup(store).await;
            let outcome = store
                .transition_access_request(&op, request.id, &step(ConsumeAction::EnableTest, None))
                .await
                .unwrap();
            assert!(outcome.issued_token.unwrap().token.starts_with("chq_test_"));
            assert_eq!(store.load_snapshot().await.unwrap().grants.len(), 1);
            store
                .transition_access_request(&op, request.id, &step(ConsumeAction::Suspend, None))
                .await
                .unwrap();
            assert!(store.load_snapshot().await.unwrap().grants.is_empty());
            assert_eq!(
                grants(&store).await,
                [("pruebas".into(), "suspended".into())]
            );
            let back = store
                .transition_access_request(&op, request.id, &step(ConsumeAction::Reinstate, None))
                .await
                .unwrap();
            assert_eq!(back.request.state, ConsumeState::TestEnabled);
            assert_eq!(store.load_snapshot().await.unwrap().grants.len(), 1);
            store
                .transition_access_request(&op, request.id, &step(ConsumeAction::Reject, None))
                .await
                .unwrap();
            assert_eq!(grants(&store).await, [("pruebas".into(), "revoked".into())]);
            // A rejected request is final; a new one may be filed.
            let again = store
                .transition_access_request(&op, request.id, &step(ConsumeAction::EnableTest, None))
                .await;
            assert!(matches!(again, Err(DomainError::InvalidTransition { .. })));
        }
    }
}
