//! Importing a catalog from a YAML file: entities, services with their
//! upstreams, consumer systems, grants, and the tokens to issue.
//!
//! The import is one transaction: a file with any error changes nothing.
//! Entities, services, consumers and grants are upserted by their codes, so
//! importing the same file twice is harmless. A token is issued for each
//! `tokens` item whose label the consumer does not already hold (live) in
//! that environment, so re-importing does not mint new secrets.

use crate::model::{now_unix, Category, Environment};
use crate::store::{Result, Store, StoreError};
use serde::Deserialize;
use sqlx::{Any, Transaction};
use std::collections::BTreeMap;
use std::path::Path;

/// The whole import file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Entities (publishers and consumers alike).
    #[serde(default)]
    pub entities: Vec<EntitySpec>,
    /// Services and their environments.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Consumer systems, their grants and tokens.
    #[serde(default)]
    pub consumers: Vec<ConsumerSpec>,
}

/// An entity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    /// Short code, used in URLs (`segip`).
    pub code: String,
    /// Full name.
    pub name: String,
    /// `public` (default) or `private`.
    #[serde(default = "default_kind")]
    pub kind: String,
}

fn default_kind() -> String {
    "public".into()
}

/// A service of a publishing entity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Code of the publishing entity.
    pub entity: String,
    /// Code of the service within the entity.
    pub code: String,
    /// Major version (the `v{n}` of the URL).
    pub version: u32,
    /// Human name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// One of the 13 catalog categories.
    pub category: String,
    /// draft, testing, published (default) or deprecated.
    #[serde(default = "default_status")]
    pub status: String,
    /// Per environment: upstreams and their settings.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentSpec>,
}

fn default_status() -> String {
    "published".into()
}

/// Upstreams and settings of one environment of a service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// Upstream base URLs (`https://host:port/base`).
    pub upstreams: Vec<UpstreamSpec>,
    /// A PEM file (relative to the import file) with the CA that signs the
    /// upstreams' certificates.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The same, inline.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Connect timeout in milliseconds (overrides the policy).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Read timeout in milliseconds (overrides the policy).
    #[serde(default)]
    pub read_timeout_ms: Option<u64>,
}

/// An upstream: a URL, or a URL with a weight.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum UpstreamSpec {
    /// Only the URL; weight 1.
    Url(String),
    /// URL and weight.
    Weighted {
        /// Base URL.
        url: String,
        /// Relative weight.
        weight: u32,
    },
}

/// A consumer system of an entity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    /// Code of the entity that owns the system.
    pub entity: String,
    /// Code of the system.
    pub code: String,
    /// Human name.
    pub name: String,
    /// Services this system may call.
    #[serde(default)]
    pub grants: Vec<GrantSpec>,
    /// Tokens to issue.
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
}

/// A grant: a service (`entity/v{n}`) in some environments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    /// The service as `entity/v{n}` (e.g. `segip/v2`).
    pub service: String,
    /// The environments granted.
    pub environments: Vec<String>,
}

/// A token to issue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// The environment the token opens.
    pub environment: String,
    /// A label that names the token (unique per consumer and environment
    /// among live tokens).
    pub label: String,
    /// Days until expiry; none means no expiry.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// What an import did; `issued` carries secrets to show once.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Entities created or updated.
    pub entities: usize,
    /// Services created or updated.
    pub services: usize,
    /// Consumer systems created or updated.
    pub consumers: usize,
    /// Grants created or updated.
    pub grants: usize,
    /// Tokens issued now: (entity/system, environment, label, secret).
    pub issued: Vec<IssuedSecret>,
    /// Tokens skipped because a live one with the same label exists.
    pub kept: Vec<String>,
}

/// A token issued by an import.
pub struct IssuedSecret {
    /// `entity/system` of the holder.
    pub consumer: String,
    /// Environment.
    pub environment: Environment,
    /// Label.
    pub label: String,
    /// The secret: show once, never log.
    pub secret: String,
}

impl std::fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("consumer", &self.consumer)
            .field("environment", &self.environment)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Parses a catalog file's text.
pub fn parse(text: &str) -> Result<CatalogFile> {
    serde_yaml::from_str(text).map_err(|e| StoreError::Invalid(format!("catalog file: {e}")))
}

impl Store {
    /// Imports a catalog file from disk; relative `ca_file`s are resolved
    /// against the file's directory.
    pub async fn import_file(&self, path: &Path) -> Result<ImportReport> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StoreError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        self.import(&parse(&text)?, base).await
    }

    /// Imports a parsed catalog in one transaction.
    pub async fn import(&self, file: &CatalogFile, base_dir: &Path) -> Result<ImportReport> {
        let mut tx = self.pool().begin().await?;
        let mut report = ImportReport::default();
        let now = now_unix();
        for e in &file.entities {
            check_code("entity code", &e.code)?;
            if e.kind != "public" && e.kind != "private" {
                return Err(StoreError::Invalid(format!(
                    "entity {}: kind must be public or private, not `{}`",
                    e.code, e.kind
                )));
            }
            sqlx::query(
                "INSERT INTO entities (code, name, kind, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind",
            )
            .bind(&e.code)
            .bind(&e.name)
            .bind(&e.kind)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            report.entities += 1;
        }
        for s in &file.services {
            import_service(&mut tx, s, base_dir, now).await?;
            report.services += 1;
        }
        for c in &file.consumers {
            check_code("consumer code", &c.code)?;
            let entity_id = entity_id(&mut tx, &c.entity).await?;
            sqlx::query(
                "INSERT INTO consumers (entity_id, code, name, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (entity_id, code) DO UPDATE SET name = excluded.name",
            )
            .bind(entity_id)
            .bind(&c.code)
            .bind(&c.name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let consumer_id: i64 =
                sqlx::query_scalar("SELECT id FROM consumers WHERE entity_id = $1 AND code = $2")
                    .bind(entity_id)
                    .bind(&c.code)
                    .fetch_one(&mut *tx)
                    .await?;
            report.consumers += 1;
            for g in &c.grants {
                let service_id = service_id_by_route(&mut tx, &g.service).await?;
                for env in &g.environments {
                    let env = parse_env(env)?;
                    sqlx::query(
                        "INSERT INTO grants (consumer_id, service_id, environment, status, created_at)
                         VALUES ($1, $2, $3, 'active', $4)
                         ON CONFLICT (consumer_id, service_id, environment) DO UPDATE SET status = 'active'",
                    )
                    .bind(consumer_id)
                    .bind(service_id)
                    .bind(env.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    report.grants += 1;
                }
            }
            for t in &c.tokens {
                let env = parse_env(&t.environment)?;
                let holder = format!("{}/{}", c.entity, c.code);
                let live: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM tokens WHERE consumer_id = $1 AND environment = $2 AND label = $3
                       AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $4)",
                )
                .bind(consumer_id)
                .bind(env.as_str())
                .bind(&t.label)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                if live > 0 {
                    report.kept.push(format!("{holder} {env} {}", t.label));
                    continue;
                }
                let expires_at = t.expires_in_days.map(|d| now + i64::from(d) * 86_400);
                let issued = crate::store::insert_token(
                    &mut tx,
                    consumer_id,
                    env,
                    &t.label,
                    now,
                    expires_at,
                )
                .await?;
                report.issued.push(IssuedSecret {
                    consumer: holder,
                    environment: env,
                    label: t.label.clone(),
                    secret: issued.secret,
                });
            }
        }
        tx.commit().await?;
        Ok(report)
    }
}

async fn import_service(
    tx: &mut Transaction<'_, Any>,
    s: &ServiceSpec,
    base_dir: &Path,
    now: i64,
) -> Result<()> {
    check_code("service code", &s.code)?;
    let category = Category::parse(&s.category).ok_or_else(|| {
        StoreError::Invalid(format!(
            "service {}/{}: unknown category `{}` (one of: {})",
            s.entity,
            s.code,
            s.category,
            Category::ALL.join(", ")
        ))
    })?;
    if !["draft", "testing", "published", "deprecated"].contains(&s.status.as_str()) {
        return Err(StoreError::Invalid(format!(
            "service {}/{}: unknown status `{}`",
            s.entity, s.code, s.status
        )));
    }
    let entity_id = entity_id(tx, &s.entity).await?;
    sqlx::query(
        "INSERT INTO services (entity_id, code, version, name, description, category, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (entity_id, code) DO UPDATE SET version = excluded.version, name = excluded.name,
           description = excluded.description, category = excluded.category,
           status = excluded.status, updated_at = excluded.updated_at",
    )
    .bind(entity_id)
    .bind(&s.code)
    .bind(i64::from(s.version))
    .bind(&s.name)
    .bind(&s.description)
    .bind(category.name())
    .bind(&s.status)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let service_id: i64 =
        sqlx::query_scalar("SELECT id FROM services WHERE entity_id = $1 AND code = $2")
            .bind(entity_id)
            .bind(&s.code)
            .fetch_one(&mut **tx)
            .await?;
    for (env_name, spec) in &s.environments {
        let env = parse_env(env_name)?;
        if spec.upstreams.is_empty() {
            return Err(StoreError::Invalid(format!(
                "service {}/{} {env}: at least one upstream is needed",
                s.entity, s.code
            )));
        }
        let ca_pem = match (&spec.ca_file, &spec.ca_pem) {
            (Some(_), Some(_)) => {
                return Err(StoreError::Invalid(format!(
                    "service {}/{} {env}: give ca_file or ca_pem, not both",
                    s.entity, s.code
                )))
            }
            (Some(file), None) => {
                let path = base_dir.join(file);
                Some(std::fs::read_to_string(&path).map_err(|e| {
                    StoreError::Invalid(format!("cannot read CA file {}: {e}", path.display()))
                })?)
            }
            (None, pem) => pem.clone(),
        };
        if let Some(pem) = &ca_pem {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(StoreError::Invalid(format!(
                    "service {}/{} {env}: the CA holds no PEM certificate",
                    s.entity, s.code
                )));
            }
        }
        sqlx::query(
            "INSERT INTO service_environments (service_id, environment, ca_pem, connect_timeout_ms, read_timeout_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (service_id, environment) DO UPDATE SET ca_pem = excluded.ca_pem,
               connect_timeout_ms = excluded.connect_timeout_ms, read_timeout_ms = excluded.read_timeout_ms",
        )
        .bind(service_id)
        .bind(env.as_str())
        .bind(ca_pem)
        .bind(spec.connect_timeout_ms.map(|v| v as i64))
        .bind(spec.read_timeout_ms.map(|v| v as i64))
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM upstreams WHERE service_id = $1 AND environment = $2")
            .bind(service_id)
            .bind(env.as_str())
            .execute(&mut **tx)
            .await?;
        for u in &spec.upstreams {
            let (url, weight) = match u {
                UpstreamSpec::Url(url) => (url.as_str(), 1),
                UpstreamSpec::Weighted { url, weight } => (url.as_str(), (*weight).max(1)),
            };
            check_upstream_url(url)?;
            sqlx::query(
                "INSERT INTO upstreams (service_id, environment, url, weight) VALUES ($1, $2, $3, $4)",
            )
            .bind(service_id)
            .bind(env.as_str())
            .bind(url)
            .bind(i64::from(weight))
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

async fn entity_id(tx: &mut Transaction<'_, Any>, code: &str) -> Result<i64> {
    sqlx::query_scalar("SELECT id FROM entities WHERE code = $1")
        .bind(code)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("entity `{code}`")))
}

async fn service_id_by_route(tx: &mut Transaction<'_, Any>, route: &str) -> Result<i64> {
    let (entity, version) = route
        .split_once('/')
        .and_then(|(e, v)| Some((e, v.strip_prefix('v')?.parse::<u32>().ok()?)))
        .ok_or_else(|| {
            StoreError::Invalid(format!("grant service `{route}` is not `entity/v<n>`"))
        })?;
    sqlx::query_scalar(
        "SELECT s.id FROM services s JOIN entities e ON e.id = s.entity_id WHERE e.code = $1 AND s.version = $2",
    )
    .bind(entity)
    .bind(i64::from(version))
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("service `{route}`")))
}

fn parse_env(s: &str) -> Result<Environment> {
    s.parse()
        .map_err(|e: crate::model::UnknownEnvironment| StoreError::Invalid(e.to_string()))
}

/// Codes appear in URLs: lowercase letters, digits, `-` and `_`, starting
/// with a letter or digit, at most 64 characters.
pub fn check_code(what: &str, code: &str) -> Result<()> {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && code
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && code != "fake";
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} `{code}` must be 1-64 lowercase letters, digits, `-` or `_` (and not `fake`)"
        )))
    }
}

fn check_upstream_url(url: &str) -> Result<()> {
    let parsed =
        url::Url::parse(url).map_err(|e| StoreError::Invalid(format!("upstream `{url}`: {e}")))?;
    let ok = matches!(parsed.scheme(), "http" | "https")
        && parsed.host_str().is_some()
        && parsed.query().is_none()
        && parsed.fragment().is_none()
        && parsed.username().is_empty()
        && parsed.password().is_none();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "upstream `{url}` must be http(s)://host[:port][/base] without credentials, query or fragment"
        )))
    }
}
