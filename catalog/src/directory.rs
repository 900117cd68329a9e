//! The directory the admin API manages: entities with their security contact
//! points, consumer systems, and services with their metadata sheets, OpenAPI
//! documents and per-environment upstreams. Every write is one transaction;
//! the catalog triggers of the tables the data plane reads make running
//! gateways reload.

use crate::domain::{
    code, email, https_url, like_pattern, optional_text, phone, required_text, upstream_url, Actor,
    DomainError, DomainResult, Page, PageRequest, Role,
};
use crate::model::{now_unix, Category, Environment};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};

/// Largest OpenAPI document accepted, in bytes.
pub const MAX_OPENAPI_BYTES: usize = 1 << 20;

/// A security contact point of an entity (document 000, section 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Full name.
    pub full_name: String,
    /// Position in the entity.
    pub role: String,
    /// E-mail address.
    pub email: String,
    /// Mobile phone number.
    pub phone: String,
}

/// An entity as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entity {
    /// Row id.
    #[serde(skip)]
    pub id: i64,
    /// Short code, used in URLs.
    pub code: String,
    /// Full name.
    pub name: String,
    /// `public` or `private`.
    pub kind: String,
    /// Security contact points (shown to operators and the entity itself).
    pub contacts: Option<Vec<Contact>>,
    /// Where incident notifications are sent (same visibility as contacts).
    pub incident_webhook_url: Option<String>,
    /// Creation time (Unix seconds).
    pub created_at: i64,
}

/// What creating an entity takes.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEntity {
    /// Short code.
    pub code: String,
    /// Full name.
    pub name: String,
    /// `public` or `private`.
    pub kind: String,
    /// Security contact points.
    pub contacts: Vec<Contact>,
    /// Incident webhook URL (https).
    pub incident_webhook_url: Option<String>,
}

/// A change to an entity; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityPatch {
    /// New full name.
    pub name: Option<String>,
    /// New kind (operators only).
    pub kind: Option<String>,
    /// Replaces every contact point.
    pub contacts: Option<Vec<Contact>>,
    /// New webhook URL; an empty string removes it.
    pub incident_webhook_url: Option<String>,
}

/// A consumer system of an entity.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct System {
    /// Row id.
    pub id: i64,
    /// Owning entity's code.
    pub entity: String,
    /// Code of the system within its entity.
    pub code: String,
    /// Human name.
    pub name: String,
    /// Creation time.
    pub created_at: i64,
}

/// The metadata sheet of a service ("ficha de metadatos").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sheet {
    /// What data the service provides.
    #[serde(default)]
    pub data_provided: String,
    /// The legal basis that allows it.
    #[serde(default)]
    pub legal_basis: String,
    /// Whether it carries personal data.
    #[serde(default)]
    pub personal_data: bool,
    /// The publisher's coordinator for this service.
    #[serde(default)]
    pub coordinator: String,
    /// Notes about this version.
    #[serde(default)]
    pub version_notes: String,
}

/// A service as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Service {
    /// Row id.
    pub id: i64,
    /// Publishing entity's code.
    pub publisher: String,
    /// Code within the publisher.
    pub code: String,
    /// Major version (the `v{n}` of its URL).
    pub version: u32,
    /// `/{publisher}/v{version}/`, where consumers call it.
    pub path: String,
    /// Human name.
    pub name: String,
    /// Description.
    pub description: String,
    /// One of the 13 categories.
    pub category: String,
    /// draft, testing, published or deprecated (what the data plane routes by).
    pub status: String,
    /// The state of its publish procedure.
    pub publication_state: String,
    /// The metadata sheet.
    pub sheet: Sheet,
    /// Whether an OpenAPI document was given.
    pub has_openapi: bool,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Owning entity's row id.
    #[serde(skip)]
    pub entity_id: i64,
}

/// What creating a service takes.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewService {
    /// Publishing entity's code (a publisher may only name its own).
    pub publisher: String,
    /// Code within the publisher.
    pub code: String,
    /// Major version (>= 1).
    pub version: i64,
    /// Human name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// One of the 13 categories.
    pub category: String,
    /// The metadata sheet.
    #[serde(default)]
    pub sheet: Sheet,
}

/// A change to a service's descriptive fields; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePatch {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// Replaces the metadata sheet.
    pub sheet: Option<Sheet>,
}

/// Filters of the service list.
#[derive(Debug, Clone, Default)]
pub struct ServiceFilter {
    /// Only this category (any spelling [`Category::parse`] accepts).
    pub category: Option<String>,
    /// Only this publisher's code.
    pub publisher: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Text contained in the code, name or description.
    pub q: Option<String>,
    /// Only published services (discovery).
    pub published_only: bool,
}

/// One upstream of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Base URL.
    pub url: String,
    /// Relative weight (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// The upstreams and settings of one environment of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Which environment (set from the URL).
    #[serde(default = "pruebas")]
    #[schema(value_type = String, example = "pruebas")]
    pub environment: Environment,
    /// At least one upstream.
    pub upstreams: Vec<Upstream>,
    /// PEM bundle of the CA that signs the upstreams' certificates.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Connect timeout override, in milliseconds.
    #[serde(default)]
    pub connect_timeout_ms: Option<u32>,
    /// Read timeout override, in milliseconds.
    #[serde(default)]
    pub read_timeout_ms: Option<u32>,
}

fn pruebas() -> Environment {
    Environment::Pruebas
}

/// A service that a consumer system may call in an environment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Callable {
    /// The consumer system holding the grant.
    pub system: String,
    /// The service's id.
    pub service_id: i64,
    /// `/{publisher}/v{n}/`.
    pub path: String,
    /// The service's name.
    pub name: String,
    /// The environment.
    #[schema(value_type = String, example = "produccion")]
    pub environment: Environment,
}

fn validate_category(value: &str) -> DomainResult<&'static str> {
    Category::parse(value).map(|c| c.name()).ok_or_else(|| {
        DomainError::field(
            "category",
            format!(
                "unknown category `{value}`; one of: {}",
                Category::ALL.join(", ")
            ),
        )
    })
}

fn validate_kind(value: &str) -> DomainResult<String> {
    match value {
        "public" | "private" => Ok(value.to_string()),
        _ => Err(DomainError::field("kind", "must be `public` or `private`")),
    }
}

fn validate_contacts(contacts: &[Contact]) -> DomainResult<Vec<Contact>> {
    if contacts.len() > 20 {
        return Err(DomainError::field("contacts", "at most 20 contact points"));
    }
    contacts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(Contact {
                full_name: required_text(&format!("contacts[{i}].full_name"), &c.full_name, 200)?,
                role: required_text(&format!("contacts[{i}].role"), &c.role, 200)?,
                email: email(&format!("contacts[{i}].email"), &c.email)?,
                phone: phone(&format!("contacts[{i}].phone"), &c.phone)?,
            })
        })
        .collect()
}

fn validate_sheet(sheet: &Sheet) -> DomainResult<Sheet> {
    Ok(Sheet {
        data_provided: optional_text("sheet.data_provided", &sheet.data_provided, 4000)?,
        legal_basis: optional_text("sheet.legal_basis", &sheet.legal_basis, 4000)?,
        personal_data: sheet.personal_data,
        coordinator: optional_text("sheet.coordinator", &sheet.coordinator, 400)?,
        version_notes: optional_text("sheet.version_notes", &sheet.version_notes, 4000)?,
    })
}

/// Checks that `doc` is an OpenAPI 3 document (a JSON object with an
/// `openapi` version `3.x`, an `info` object and `paths`).
pub fn validate_openapi(doc: &serde_json::Value, size: usize) -> DomainResult<()> {
    if size > MAX_OPENAPI_BYTES {
        return Err(DomainError::field(
            "openapi",
            format!("larger than {MAX_OPENAPI_BYTES} bytes"),
        ));
    }
    let version = doc.get("openapi").and_then(|v| v.as_str()).unwrap_or("");
    if !version.starts_with("3.") {
        return Err(DomainError::field(
            "openapi",
            "must be an OpenAPI 3 document (a JSON object whose `openapi` is `3.x`)",
        ));
    }
    if !doc.get("info").is_some_and(|v| v.is_object()) {
        return Err(DomainError::field(
            "info",
            "the OpenAPI document needs an `info` object",
        ));
    }
    if !doc.get("paths").is_some_and(|v| v.is_object()) {
        return Err(DomainError::field(
            "paths",
            "the OpenAPI document needs a `paths` object",
        ));
    }
    Ok(())
}

async fn entity_id_tx(tx: &mut Transaction<'_, Any>, code: &str) -> DomainResult<i64> {
    sqlx::query_scalar("SELECT id FROM entities WHERE code = $1")
        .bind(code)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("entity `{code}`")))
}

async fn write_contacts(
    tx: &mut Transaction<'_, Any>,
    entity_id: i64,
    contacts: &[Contact],
    now: i64,
) -> DomainResult<()> {
    sqlx::query("DELETE FROM entity_security_contacts WHERE entity_id = $1")
        .bind(entity_id)
        .execute(&mut **tx)
        .await?;
    for c in contacts {
        sqlx::query(
            "INSERT INTO entity_security_contacts (entity_id, full_name, role, email, phone, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(entity_id)
        .bind(&c.full_name)
        .bind(&c.role)
        .bind(&c.email)
        .bind(&c.phone)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

const SERVICE_SELECT: &str = "SELECT s.id, e.code, s.code, s.version, s.name, s.description, s.category, s.status,
        COALESCE(p.state, CASE s.status WHEN 'testing' THEN 'environments_enabled' ELSE s.status END),
        COALESCE(sh.data_provided, ''), COALESCE(sh.legal_basis, ''), COALESCE(sh.personal_data, 0),
        COALESCE(sh.coordinator, ''), COALESCE(sh.version_notes, ''),
        CASE WHEN sh.openapi IS NULL THEN 0 ELSE 1 END, s.created_at, s.updated_at, s.entity_id
     FROM services s
     JOIN entities e ON e.id = s.entity_id
     LEFT JOIN service_sheets sh ON sh.service_id = s.id
     LEFT JOIN service_publications p ON p.service_id = s.id";

fn service_of(row: &sqlx::any::AnyRow) -> DomainResult<Service> {
    let publisher: String = row.try_get(1)?;
    let version = u32::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0);
    Ok(Service {
        id: row.try_get(0)?,
        path: format!("/{publisher}/v{version}/"),
        publisher,
        code: row.try_get(2)?,
        version,
        name: row.try_get(4)?,
        description: row.try_get(5)?,
        category: row.try_get(6)?,
        status: row.try_get(7)?,
        publication_state: row.try_get(8)?,
        sheet: Sheet {
            data_provided: row.try_get(9)?,
            legal_basis: row.try_get(10)?,
            personal_data: row.try_get::<i64, _>(11)? != 0,
            coordinator: row.try_get(12)?,
            version_notes: row.try_get(13)?,
        },
        has_openapi: row.try_get::<i64, _>(14)? != 0,
        created_at: row.try_get(15)?,
        updated_at: row.try_get(16)?,
        entity_id: row.try_get(17)?,
    })
}

/// Whether `actor` may see a service that is not (yet, or any more) in the
/// public catalog: operators, and the publisher's own principals.
fn sees_unpublished(actor: &Actor, service: &Service) -> bool {
    actor.may_act_for(service.entity_id)
}

impl Store {
    /// Creates an entity with its contact points (operators only).
    pub async fn create_entity(&self, actor: &Actor, new: &NewEntity) -> DomainResult<Entity> {
        actor.require_operator("register entities")?;
        let code_v = code("code", &new.code)?;
        let name = required_text("name", &new.name, 300)?;
        let kind = validate_kind(&new.kind)?;
        let contacts = validate_contacts(&new.contacts)?;
        let webhook = new
            .incident_webhook_url
            .as_deref()
            .filter(|w| !w.trim().is_empty())
            .map(|w| https_url("incident_webhook_url", w))
            .transpose()?;
        let now = now_unix();
        let mut tx = self.write_tx().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO entities (code, name, kind, incident_webhook, created_at) VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
        )
        .bind(&code_v)
        .bind(&name)
        .bind(&kind)
        .bind(&webhook)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            DomainError::from_write(e, &format!("an entity with code `{code_v}` exists"), "code")
        })?;
        write_contacts(&mut tx, id, &contacts, now).await?;
        tx.commit().await?;
        Ok(Entity {
            id,
            code: code_v,
            name,
            kind,
            contacts: Some(contacts),
            incident_webhook_url: webhook,
            created_at: now,
        })
    }

    /// One entity; contacts and webhook only for operators and the entity's
    /// own principals.
    pub async fn entity(&self, actor: &Actor, code: &str) -> DomainResult<Entity> {
        let row = sqlx::query(
            "SELECT id, code, name, kind, created_at, incident_webhook FROM entities WHERE code = $1",
        )
        .bind(code)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("entity `{code}`")))?;
        let id: i64 = row.try_get(0)?;
        let private = actor.may_act_for(id);
        let contacts = if private {
            let rows = sqlx::query(
                "SELECT full_name, role, email, phone FROM entity_security_contacts
                 WHERE entity_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(self.pool())
            .await?;
            Some(
                rows.iter()
                    .map(|r| {
                        Ok(Contact {
                            full_name: r.try_get(0)?,
                            role: r.try_get(1)?,
                            email: r.try_get(2)?,
                            phone: r.try_get(3)?,
                        })
                    })
                    .collect::<DomainResult<Vec<_>>>()?,
            )
        } else {
            None
        };
        Ok(Entity {
            id,
            code: row.try_get(1)?,
            name: row.try_get(2)?,
            kind: row.try_get(3)?,
            contacts,
            incident_webhook_url: if private { row.try_get(5)? } else { None },
            created_at: row.try_get(4)?,
        })
    }

    /// Lists entities by code search (`q` in code or name) and kind.
    pub async fn list_entities(
        &self,
        q: Option<&str>,
        kind: Option<&str>,
        page: PageRequest,
    ) -> DomainResult<Page<Entity>> {
        if let Some(k) = kind {
            validate_kind(k)?;
        }
        let rows = sqlx::query(
            "SELECT id, code, name, kind, created_at FROM entities
             WHERE id > $1 AND ($2 IS NULL OR kind = $3)
               AND ($4 IS NULL OR LOWER(code) LIKE $5 ESCAPE '\\' OR LOWER(name) LIKE $6 ESCAPE '\\')
             ORDER BY id LIMIT $7",
        )
        .bind(page.after_id)
        .bind(kind)
        .bind(kind)
        .bind(q.map(|_| 1))
        .bind(q.map(like_pattern))
        .bind(q.map(like_pattern))
        .bind(page.limit + 1)
        .fetch_all(self.pool())
        .await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(Entity {
                    id: r.try_get(0)?,
                    code: r.try_get(1)?,
                    name: r.try_get(2)?,
                    kind: r.try_get(3)?,
                    contacts: None,
                    incident_webhook_url: None,
                    created_at: r.try_get(4)?,
                })
            })
            .collect::<DomainResult<Vec<_>>>()?;
        Ok(page.finish(items, |e| e.id))
    }

    /// Changes an entity: operators anything, the entity's own principals
    /// their name, contacts and webhook.
    pub async fn update_entity(
        &self,
        actor: &Actor,
        code_s: &str,
        patch: &EntityPatch,
    ) -> DomainResult<Entity> {
        let mut tx = self.write_tx().await?;
        let id = entity_id_tx(&mut tx, code_s).await?;
        if !actor.may_act_for(id) {
            return Err(DomainError::Forbidden(format!(
                "only an operator or entity `{code_s}` itself may change it"
            )));
        }
        let now = now_unix();
        if let Some(name) = &patch.name {
            let name = required_text("name", name, 300)?;
            sqlx::query("UPDATE entities SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(kind) = &patch.kind {
            actor.require_operator("change an entity's kind")?;
            let kind = validate_kind(kind)?;
            sqlx::query("UPDATE entities SET kind = $1 WHERE id = $2")
                .bind(kind)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(contacts) = &patch.contacts {
            let contacts = validate_contacts(contacts)?;
            write_contacts(&mut tx, id, &contacts, now).await?;
        }
        if let Some(w) = &patch.incident_webhook_url {
            let webhook = if w.trim().is_empty() {
                None
            } else {
                Some(https_url("incident_webhook_url", w)?)
            };
            sqlx::query("UPDATE entities SET incident_webhook = $1 WHERE id = $2")
                .bind(webhook)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.entity(actor, code_s).await
    }

    /// Registers a consumer system of an entity (operators, or a consumer
    /// principal of that entity).
    pub async fn create_system(
        &self,
        actor: &Actor,
        entity: &str,
        code_s: &str,
        name: &str,
    ) -> DomainResult<System> {
        let code_v = code("code", code_s)?;
        let name = required_text("name", name, 300)?;
        let mut tx = self.write_tx().await?;
        let entity_id = entity_id_tx(&mut tx, entity).await?;
        actor.require_for_entity(Role::Consumer, entity_id, "register its consumer systems")?;
        let now = now_unix();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO consumers (entity_id, code, name, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(entity_id)
        .bind(&code_v)
        .bind(&name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            DomainError::from_write(
                e,
                &format!("entity `{entity}` already has a system `{code_v}`"),
                "code",
            )
        })?;
        tx.commit().await?;
        Ok(System {
            id,
            entity: entity.to_string(),
            code: code_v,
            name,
            created_at: now,
        })
    }

    /// The consumer systems of an entity (operators and the entity itself).
    pub async fn list_systems(&self, actor: &Actor, entity: &str) -> DomainResult<Vec<System>> {
        let entity_id: i64 = sqlx::query_scalar("SELECT id FROM entities WHERE code = $1")
            .bind(entity)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("entity `{entity}`")))?;
        if !actor.may_act_for(entity_id) {
            return Err(DomainError::Forbidden(format!(
                "only an operator or entity `{entity}` itself may list its systems"
            )));
        }
        let rows = sqlx::query(
            "SELECT id, code, name, created_at FROM consumers WHERE entity_id = $1 ORDER BY id",
        )
        .bind(entity_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(System {
                    id: r.try_get(0)?,
                    entity: entity.to_string(),
                    code: r.try_get(1)?,
                    name: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// A consumer system by id, checking that `actor` may manage it
    /// (operators, or a consumer principal of its entity).
    pub async fn system_for(&self, actor: &Actor, id: i64) -> DomainResult<System> {
        let row = sqlx::query(
            "SELECT c.id, e.code, c.code, c.name, c.created_at, c.entity_id
             FROM consumers c JOIN entities e ON e.id = c.entity_id WHERE c.id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("consumer system {id}")))?;
        let entity_id: i64 = row.try_get(5)?;
        actor.require_for_entity(Role::Consumer, entity_id, "manage this consumer system")?;
        Ok(System {
            id: row.try_get(0)?,
            entity: row.try_get(1)?,
            code: row.try_get(2)?,
            name: row.try_get(3)?,
            created_at: row.try_get(4)?,
        })
    }

    /// Registers a service in `draft` (operators, or a publisher for its own
    /// entity). Nothing is routed until its publish procedure enables it.
    pub async fn create_service(&self, actor: &Actor, new: &NewService) -> DomainResult<Service> {
        let code_v = code("code", &new.code)?;
        if !(1..=i64::from(u16::MAX)).contains(&new.version) {
            return Err(DomainError::field(
                "version",
                "must be a whole number from 1",
            ));
        }
        let name = required_text("name", &new.name, 300)?;
        let description = optional_text("description", &new.description, 4000)?;
        let category = validate_category(&new.category)?;
        let sheet = validate_sheet(&new.sheet)?;
        let mut tx = self.write_tx().await?;
        let entity_id: i64 = sqlx::query_scalar("SELECT id FROM entities WHERE code = $1")
            .bind(&new.publisher)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                DomainError::field(
                    "publisher",
                    format!("no entity has code `{}`", new.publisher),
                )
            })?;
        actor.require_for_entity(Role::Publisher, entity_id, "register its services")?;
        let now = now_unix();
        let conflict = format!(
            "`{}` already has a service with code `{code_v}` or version {}",
            new.publisher, new.version
        );
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO services (entity_id, code, version, name, description, category, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'draft', $7, $8) RETURNING id",
        )
        .bind(entity_id)
        .bind(&code_v)
        .bind(new.version)
        .bind(&name)
        .bind(&description)
        .bind(category)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| DomainError::from_write(e, &conflict, "publisher"))?;
        sqlx::query(
            "INSERT INTO service_sheets (service_id, data_provided, legal_basis, personal_data, coordinator, version_notes, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(&sheet.data_provided)
        .bind(&sheet.legal_basis)
        .bind(i64::from(sheet.personal_data))
        .bind(&sheet.coordinator)
        .bind(&sheet.version_notes)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO service_publications (service_id, state, updated_at) VALUES ($1, 'draft', $2)",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        crate::procedures::record_event(
            &mut tx, "publish", id, "create", None, "draft", actor, None, "", now,
        )
        .await?;
        tx.commit().await?;
        self.service(actor, id).await
    }

    /// Reads a service without visibility checks.
    pub(crate) async fn service_row(&self, id: i64) -> DomainResult<Service> {
        let row = sqlx::query(&format!("{SERVICE_SELECT} WHERE s.id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("service {id}")))?;
        service_of(&row)
    }

    /// One service. Services outside the public catalog (draft, testing) are
    /// visible only to operators and their publisher; others are refused.
    pub async fn service(&self, actor: &Actor, id: i64) -> DomainResult<Service> {
        let service = self.service_row(id).await?;
        if service.status != "published"
            && service.status != "deprecated"
            && !sees_unpublished(actor, &service)
        {
            return Err(DomainError::Forbidden(format!(
                "service {id} belongs to another entity and is not in the public catalog"
            )));
        }
        Ok(service)
    }

    /// Lists services by category, publisher, status and text. Others than
    /// operators see the public catalog plus their own entity's services.
    pub async fn list_services(
        &self,
        actor: &Actor,
        filter: &ServiceFilter,
        page: PageRequest,
    ) -> DomainResult<Page<Service>> {
        let category = filter
            .category
            .as_deref()
            .map(validate_category)
            .transpose()?;
        if let Some(s) = &filter.status {
            if !["draft", "testing", "published", "deprecated"].contains(&s.as_str()) {
                return Err(DomainError::field(
                    "status",
                    "must be one of draft, testing, published, deprecated",
                ));
            }
        }
        // Operators see every service; others the catalog and their own.
        let all = actor.is_operator();
        let own_entity = actor.entity_id.unwrap_or(0);
        // One statement for both views, so the placeholders keep their
        // numbers: the public catalog ($2) shows only published services;
        // otherwise deprecated ones too, and operators ($3) and the
        // publisher ($4) see everything of theirs.
        let sql = format!(
            "{SERVICE_SELECT}
             WHERE s.id > $1
               AND (s.status = 'published'
                    OR (NOT $2 AND ($3 OR s.status = 'deprecated' OR s.entity_id = $4)))
               AND ($5 IS NULL OR s.category = $6)
               AND ($7 IS NULL OR e.code = $8)
               AND ($9 IS NULL OR s.status = $10)
               AND ($11 IS NULL OR LOWER(s.code) LIKE $12 ESCAPE '\\' OR LOWER(s.name) LIKE $13 ESCAPE '\\'
                    OR LOWER(s.description) LIKE $14 ESCAPE '\\')
             ORDER BY s.id LIMIT $15"
        );
        let query = sqlx::query(&sql)
            .bind(page.after_id)
            .bind(filter.published_only)
            .bind(all)
            .bind(own_entity);
        let q = filter.q.as_deref().filter(|q| !q.trim().is_empty());
        let rows = query
            .bind(category)
            .bind(category)
            .bind(&filter.publisher)
            .bind(&filter.publisher)
            .bind(&filter.status)
            .bind(&filter.status)
            .bind(q.map(|_| 1))
            .bind(q.map(like_pattern))
            .bind(q.map(like_pattern))
            .bind(q.map(like_pattern))
            .bind(page.limit + 1)
            .fetch_all(self.pool())
            .await?;
        let items = rows
            .iter()
            .map(service_of)
            .collect::<DomainResult<Vec<_>>>()?;
        Ok(page.finish(items, |s| s.id))
    }

    /// Changes a service's name, description, category or sheet (operators,
    /// or its publisher).
    pub async fn update_service(
        &self,
        actor: &Actor,
        id: i64,
        patch: &ServicePatch,
    ) -> DomainResult<Service> {
        let service = self.service_owned(actor, id, "change this service").await?;
        let name = patch
            .name
            .as_deref()
            .map(|n| required_text("name", n, 300))
            .transpose()?;
        let description = patch
            .description
            .as_deref()
            .map(|d| optional_text("description", d, 4000))
            .transpose()?;
        let category = patch
            .category
            .as_deref()
            .map(validate_category)
            .transpose()?;
        let sheet = patch.sheet.as_ref().map(validate_sheet).transpose()?;
        let now = now_unix();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE services SET name = $1, description = $2, category = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(name.unwrap_or(service.name))
        .bind(description.unwrap_or(service.description))
        .bind(category.unwrap_or(service.category.as_str()))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if let Some(sheet) = sheet {
            sqlx::query(
                "INSERT INTO service_sheets (service_id, data_provided, legal_basis, personal_data, coordinator, version_notes, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (service_id) DO UPDATE SET data_provided = excluded.data_provided,
                   legal_basis = excluded.legal_basis, personal_data = excluded.personal_data,
                   coordinator = excluded.coordinator, version_notes = excluded.version_notes,
                   updated_at = excluded.updated_at",
            )
            .bind(id)
            .bind(&sheet.data_provided)
            .bind(&sheet.legal_basis)
            .bind(i64::from(sheet.personal_data))
            .bind(&sheet.coordinator)
            .bind(&sheet.version_notes)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.service(actor, id).await
    }

    /// A service that `actor` may manage (operators, or its publisher);
    /// others are refused as forbidden.
    pub async fn service_owned(&self, actor: &Actor, id: i64, what: &str) -> DomainResult<Service> {
        let service = self.service(actor, id).await?;
        actor.require_for_entity(Role::Publisher, service.entity_id, what)?;
        Ok(service)
    }

    /// Stores a service's OpenAPI document (operators, or its publisher).
    pub async fn set_openapi(
        &self,
        actor: &Actor,
        id: i64,
        doc: &serde_json::Value,
        size: usize,
    ) -> DomainResult<()> {
        self.service_owned(actor, id, "change this service's OpenAPI document")
            .await?;
        validate_openapi(doc, size)?;
        let now = now_unix();
        sqlx::query(
            "INSERT INTO service_sheets (service_id, openapi, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (service_id) DO UPDATE SET openapi = excluded.openapi, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(doc.to_string())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A service's OpenAPI document, for whoever may see the service.
    pub async fn openapi(&self, actor: &Actor, id: i64) -> DomainResult<serde_json::Value> {
        self.service(actor, id).await?;
        let text: Option<String> =
            sqlx::query_scalar("SELECT openapi FROM service_sheets WHERE service_id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?
                .flatten();
        let text = text.ok_or_else(|| {
            DomainError::NotFound(format!("the OpenAPI document of service {id}"))
        })?;
        serde_json::from_str(&text).map_err(|e| DomainError::Db(sqlx::Error::Decode(Box::new(e))))
    }

    /// Replaces the upstreams and settings of one environment (operators, or
    /// the publisher). In force on running gateways at their next reload.
    pub async fn set_environment(
        &self,
        actor: &Actor,
        id: i64,
        config: &EnvironmentConfig,
    ) -> DomainResult<EnvironmentConfig> {
        self.service_owned(actor, id, "configure this service's environments")
            .await?;
        if config.upstreams.is_empty() || config.upstreams.len() > 32 {
            return Err(DomainError::field("upstreams", "give 1 to 32 upstreams"));
        }
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for (i, u) in config.upstreams.iter().enumerate() {
            if u.weight == 0 || u.weight > 1000 {
                return Err(DomainError::field(
                    format!("upstreams[{i}].weight"),
                    "must be between 1 and 1000",
                ));
            }
            upstreams.push(Upstream {
                url: upstream_url(&format!("upstreams[{i}].url"), &u.url)?,
                weight: u.weight,
            });
        }
        let ca_pem = config.ca_pem.as_deref().filter(|p| !p.trim().is_empty());
        if let Some(pem) = ca_pem {
            if !pem.contains("-----BEGIN CERTIFICATE-----") || pem.len() > 256 << 10 {
                return Err(DomainError::field(
                    "ca_pem",
                    "must hold PEM certificates (at most 256 KiB)",
                ));
            }
        }
        let env = config.environment.as_str();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO service_environments (service_id, environment, ca_pem, connect_timeout_ms, read_timeout_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (service_id, environment) DO UPDATE SET ca_pem = excluded.ca_pem,
               connect_timeout_ms = excluded.connect_timeout_ms, read_timeout_ms = excluded.read_timeout_ms",
        )
        .bind(id)
        .bind(env)
        .bind(ca_pem)
        .bind(config.connect_timeout_ms.map(i64::from))
        .bind(config.read_timeout_ms.map(i64::from))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM upstreams WHERE service_id = $1 AND environment = $2")
            .bind(id)
            .bind(env)
            .execute(&mut *tx)
            .await?;
        for u in &upstreams {
            sqlx::query(
                "INSERT INTO upstreams (service_id, environment, url, weight) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(env)
            .bind(&u.url)
            .bind(i64::from(u.weight))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                DomainError::from_write(e, "the same upstream URL is listed twice", "upstreams")
            })?;
        }
        tx.commit().await?;
        Ok(EnvironmentConfig {
            environment: config.environment,
            upstreams,
            ca_pem: ca_pem.map(str::to_string),
            connect_timeout_ms: config.connect_timeout_ms,
            read_timeout_ms: config.read_timeout_ms,
        })
    }

    /// The environments of a service with their upstreams (operators, or the
    /// publisher).
    pub async fn environments(
        &self,
        actor: &Actor,
        id: i64,
    ) -> DomainResult<Vec<EnvironmentConfig>> {
        self.service_owned(actor, id, "read this service's environments")
            .await?;
        self.environments_of(id).await
    }

    pub(crate) async fn environments_of(&self, id: i64) -> DomainResult<Vec<EnvironmentConfig>> {
        let mut out = Vec::new();
        for env in Environment::ALL {
            let settings = sqlx::query(
                "SELECT ca_pem, connect_timeout_ms, read_timeout_ms FROM service_environments
                 WHERE service_id = $1 AND environment = $2",
            )
            .bind(id)
            .bind(env.as_str())
            .fetch_optional(self.pool())
            .await?;
            let ups = sqlx::query(
                "SELECT url, weight FROM upstreams WHERE service_id = $1 AND environment = $2 ORDER BY id",
            )
            .bind(id)
            .bind(env.as_str())
            .fetch_all(self.pool())
            .await?;
            if settings.is_none() && ups.is_empty() {
                continue;
            }
            let upstreams = ups
                .iter()
                .map(|r| {
                    Ok(Upstream {
                        url: r.try_get(0)?,
                        weight: u32::try_from(r.try_get::<i64, _>(1)?).unwrap_or(1),
                    })
                })
                .collect::<DomainResult<Vec<_>>>()?;
            let (ca_pem, connect, read) = match settings {
                Some(r) => (
                    r.try_get::<Option<String>, _>(0)?,
                    r.try_get::<Option<i64>, _>(1)?,
                    r.try_get::<Option<i64>, _>(2)?,
                ),
                None => (None, None, None),
            };
            out.push(EnvironmentConfig {
                environment: env,
                upstreams,
                ca_pem,
                connect_timeout_ms: connect.and_then(|v| u32::try_from(v).ok()),
                read_timeout_ms: read.and_then(|v| u32::try_from(v).ok()),
            });
        }
        Ok(out)
    }

    /// The services an entity's systems may call now, per environment: their
    /// active grants on services that serve that environment.
    pub async fn callable(&self, entity_id: i64) -> DomainResult<Vec<Callable>> {
        let rows = sqlx::query(
            "SELECT c.code, s.id, e.code, s.version, s.name, g.environment
             FROM grants g
             JOIN consumers c ON c.id = g.consumer_id
             JOIN services s ON s.id = g.service_id
             JOIN entities e ON e.id = s.entity_id
             WHERE c.entity_id = $1 AND g.status = 'active'
               AND (s.status IN ('published', 'deprecated')
                    OR (s.status = 'testing' AND g.environment = 'pruebas'))
             ORDER BY g.environment, c.code, s.id",
        )
        .bind(entity_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let env: String = r.try_get(5)?;
                Ok(Callable {
                    system: r.try_get(0)?,
                    service_id: r.try_get(1)?,
                    path: format!(
                        "/{}/v{}/",
                        r.try_get::<String, _>(2)?,
                        r.try_get::<i64, _>(3)?
                    ),
                    name: r.try_get(4)?,
                    environment: env.parse().map_err(|e: crate::model::UnknownEnvironment| {
                        DomainError::Db(sqlx::Error::Decode(Box::new(e)))
                    })?,
                })
            })
            .collect()
    }

    /// Whether a consumer system holds an active grant in `env` for a
    /// service that serves that environment.
    pub async fn has_active_grant(&self, system_id: i64, env: Environment) -> DomainResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM grants WHERE consumer_id = $1 AND environment = $2 AND status = 'active'",
        )
        .bind(system_id)
        .bind(env.as_str())
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    /// The id of an entity by code.
    pub async fn entity_id_of(&self, code: &str) -> DomainResult<i64> {
        sqlx::query_scalar("SELECT id FROM entities WHERE code = $1")
            .bind(code)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("entity `{code}`")))
    }
}
