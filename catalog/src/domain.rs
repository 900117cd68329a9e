//! What the onboarding modules share: the error type of domain operations,
//! who acts ([`Actor`]), pagination, and the small validators that name the
//! field they refuse.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a domain operation was refused or failed. Every refusal leaves the
/// store unchanged: each operation is one transaction.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The object named does not exist (or the actor may not know it exists).
    #[error("{0} not found")]
    NotFound(String),
    /// A field's value breaks a rule.
    #[error("{field}: {message}")]
    Validation {
        /// The field, as named in the API (`category`, `contacts[0].email`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The operation clashes with what exists (a duplicate code, a live
    /// request for the same service).
    #[error("{0}")]
    Conflict(String),
    /// The procedure does not allow this action from its current state.
    #[error("`{action}` is not allowed from state `{from}`{}", detail_suffix(.detail))]
    InvalidTransition {
        /// The current state.
        from: String,
        /// The action refused.
        action: String,
        /// More about why, if there is more to say.
        detail: Option<String>,
    },
    /// The actor's role or entity may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

impl DomainError {
    /// A validation error on `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> DomainError {
        DomainError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Maps a unique-constraint violation to [`DomainError::Conflict`] with
    /// `message`, and a foreign-key violation to a validation error on
    /// `fk_field`; anything else stays a database error.
    pub fn from_write(e: sqlx::Error, message: &str, fk_field: &str) -> DomainError {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return DomainError::Conflict(message.to_string());
            }
            if db.is_foreign_key_violation() {
                return DomainError::field(fk_field, "refers to something that does not exist");
            }
        }
        DomainError::Db(e)
    }
}

/// The PostgreSQL advisory lock key that serialises domain writes
/// ("chasqui" in ASCII, so that it does not collide with other users).
const DOMAIN_WRITE_LOCK: i64 = 0x0063_6861_7371_7569;

/// Result type of domain operations.
pub type DomainResult<T> = std::result::Result<T, DomainError>;

impl crate::store::Store {
    /// Begins a transaction that will write. SQLite's `BEGIN IMMEDIATE` takes
    /// the write lock at once (waiting out the busy timeout), so a read made
    /// inside it cannot go stale before the write, as a deferred transaction
    /// could when another writer (the ledger flusher) commits in between.
    /// PostgreSQL gets the same one-writer-at-a-time guarantee, across every
    /// node of the cluster, from a transaction-scoped advisory lock taken
    /// first: reads after it see every domain write committed before it.
    pub(crate) async fn write_tx(
        &self,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend() {
            crate::store::Backend::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await,
            crate::store::Backend::Postgres => {
                let mut tx = self.pool().begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(DOMAIN_WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }
}

/// The three roles of the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// AGETIC: approves, enables, publishes, sees everything.
    Operator,
    /// An entity publishing its own services.
    Publisher,
    /// An entity consuming services: its requests, systems and tokens.
    Consumer,
}

impl Role {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Publisher => "publisher",
            Role::Consumer => "consumer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "operator" => Ok(Role::Operator),
            "publisher" => Ok(Role::Publisher),
            "consumer" => Ok(Role::Consumer),
            _ => Err(DomainError::field(
                "role",
                format!("`{s}` is not one of operator, publisher, consumer"),
            )),
        }
    }
}

/// Who performs an operation: an authenticated admin principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Row id of the principal.
    pub principal_id: i64,
    /// The principal's name, for the record.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The entity it acts for (none for operators).
    pub entity_id: Option<i64>,
    /// That entity's code.
    pub entity_code: Option<String>,
}

impl Actor {
    /// Whether the actor is an operator.
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// Whether the actor is an operator or acts for entity `entity_id`.
    pub fn may_act_for(&self, entity_id: i64) -> bool {
        self.is_operator() || self.entity_id == Some(entity_id)
    }

    /// Refuses unless the actor is an operator.
    pub fn require_operator(&self, what: &str) -> DomainResult<()> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(DomainError::Forbidden(format!(
                "only an operator may {what}"
            )))
        }
    }

    /// Refuses unless the actor is an operator or has `role` for `entity_id`.
    pub fn require_for_entity(&self, role: Role, entity_id: i64, what: &str) -> DomainResult<()> {
        if self.is_operator() || (self.role == role && self.entity_id == Some(entity_id)) {
            Ok(())
        } else {
            Err(DomainError::Forbidden(format!(
                "only an operator or a {role} of the owning entity may {what}"
            )))
        }
    }

    /// How the actor is written in the audit ledger: `operator:3:name`.
    pub fn ledger_name(&self) -> String {
        format!("{}:{}:{}", self.role, self.principal_id, self.name)
    }
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Page size and position, as given by the caller.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// At most this many items (1 to [`PageRequest::MAX_LIMIT`]).
    pub limit: i64,
    /// Items strictly after this id.
    pub after_id: i64,
}

impl PageRequest {
    /// The default page size.
    pub const DEFAULT_LIMIT: i64 = 50;
    /// The largest page size.
    pub const MAX_LIMIT: i64 = 200;

    /// Validates `limit` and the opaque `cursor`.
    pub fn parse(limit: Option<i64>, cursor: Option<&str>) -> DomainResult<PageRequest> {
        let limit = limit.unwrap_or(Self::DEFAULT_LIMIT);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(DomainError::field(
                "limit",
                format!("must be between 1 and {}", Self::MAX_LIMIT),
            ));
        }
        let after_id = match cursor {
            None | Some("") => 0,
            Some(c) => c.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
                DomainError::field("cursor", "is not a cursor from a previous page")
            })?,
        };
        Ok(PageRequest { limit, after_id })
    }

    /// Turns `limit + 1` fetched rows into a page; `id_of` gives a row's id.
    pub fn finish<T>(&self, mut rows: Vec<T>, id_of: impl Fn(&T) -> i64) -> Page<T> {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| id_of(r).to_string())
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// A required, trimmed text of at most `max` characters.
pub fn required_text(field: &str, value: &str, max: usize) -> DomainResult<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(DomainError::field(field, "must not be empty"));
    }
    optional_text(field, v, max)
}

/// A trimmed text of at most `max` characters (may be empty).
pub fn optional_text(field: &str, value: &str, max: usize) -> DomainResult<String> {
    let v = value.trim();
    if v.chars().count() > max {
        return Err(DomainError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(DomainError::field(
            field,
            "must not hold control characters",
        ));
    }
    Ok(v.to_string())
}

/// A code used in URLs: 1-64 lowercase letters, digits, `-` or `_`, starting
/// with a letter or digit, and not `fake` (the test alias).
pub fn code(field: &str, value: &str) -> DomainResult<String> {
    crate::import::check_code(field, value)
        .map(|()| value.to_string())
        .map_err(|_| {
            DomainError::field(
                field,
                format!(
                    "`{value}` must be 1-64 lowercase letters, digits, `-` or `_`, start with a letter or digit, and not be `fake`"
                ),
            )
        })
}

/// An e-mail address (a plain shape check: `local@domain.tld`).
pub fn email(field: &str, value: &str) -> DomainResult<String> {
    let v = value.trim();
    let ok = v.len() <= 254
        && v.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        })
        && !v.chars().any(char::is_whitespace);
    if ok {
        Ok(v.to_string())
    } else {
        Err(DomainError::field(
            field,
            format!("`{v}` is not an e-mail address"),
        ))
    }
}

/// A mobile phone number: digits, with an optional leading `+` and spaces or
/// dashes between groups; 7 to 15 digits.
pub fn phone(field: &str, value: &str) -> DomainResult<String> {
    let v = value.trim();
    let digits = v.chars().filter(char::is_ascii_digit).count();
    let ok = (7..=15).contains(&digits)
        && v.chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || c == ' ' || c == '-' || (c == '+' && i == 0));
    if ok {
        Ok(v.to_string())
    } else {
        Err(DomainError::field(
            field,
            format!("`{v}` is not a phone number (7 to 15 digits, optional leading +)"),
        ))
    }
}

/// An `https` URL without credentials or fragment (webhooks).
pub fn https_url(field: &str, value: &str) -> DomainResult<String> {
    let v = value.trim();
    let parsed = url::Url::parse(v)
        .map_err(|e| DomainError::field(field, format!("`{v}` is not a URL: {e}")))?;
    if parsed.scheme() != "https"
        || parsed.host_str().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.fragment().is_some()
    {
        return Err(DomainError::field(
            field,
            "must be an https URL without credentials or fragment",
        ));
    }
    Ok(v.to_string())
}

/// An upstream base URL: `http(s)://host[:port][/base]`, no credentials,
/// query or fragment.
pub fn upstream_url(field: &str, value: &str) -> DomainResult<String> {
    let v = value.trim();
    let parsed = url::Url::parse(v)
        .map_err(|e| DomainError::field(field, format!("`{v}` is not a URL: {e}")))?;
    let ok = matches!(parsed.scheme(), "http" | "https")
        && parsed.host_str().is_some()
        && parsed.query().is_none()
        && parsed.fragment().is_none()
        && parsed.username().is_empty()
        && parsed.password().is_none();
    if ok {
        Ok(v.to_string())
    } else {
        Err(DomainError::field(
            field,
            "must be http(s)://host[:port][/base] without credentials, query or fragment",
        ))
    }
}

/// A `LIKE` pattern that matches `text` anywhere, with `%`, `_` and `\`
/// escaped (use with `ESCAPE '\'`), lowercased.
pub fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.trim().to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_a_cursor_only_when_more_rows_exist() {
        let req = PageRequest::parse(Some(2), None).unwrap();
        let page = req.finish(vec![1, 2, 3], |v| *v);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next_cursor.as_deref(), Some("2"));
        let page = req.finish(vec![1, 2], |v| *v);
        assert!(page.next_cursor.is_none());
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(None, Some("abc")).is_err());
        assert_eq!(PageRequest::parse(None, Some("7")).unwrap().after_id, 7);
    }

    #[test]
    fn validators_name_the_field() {
        let DomainError::Validation { field, .. } = email("contacts[0].email", "nope").unwrap_err()
        else {
            panic!("expected a validation error")
        };
        assert_eq!(field, "contacts[0].email");
        assert!(email("e", "ana@agetic.gob.bo").is_ok());
        assert!(phone("p", "+591 71234567").is_ok());
        assert!(phone("p", "12ab").is_err());
        assert!(https_url("w", "http://x.bo/hook").is_err());
        assert!(https_url("w", "https://x.bo/hook").is_ok());
        assert!(upstream_url("u", "http://127.0.0.1:9/base").is_ok());
        assert!(upstream_url("u", "ftp://x").is_err());
        assert!(code("code", "Bad Code").is_err());
        assert!(code("code", "fake").is_err());
        assert_eq!(like_pattern("50%_a"), "%50\\%\\_a%");
    }
}
