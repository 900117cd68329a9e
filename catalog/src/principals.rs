//! Admin principals and their bearer tokens.
//!
//! An admin token is `chq_admin_` followed by 48 base64url characters: 32
//! bytes from the operating system's random source and a 4-byte check value,
//! the same shape as consumer tokens (see [`crate::token`]) with a prefix of
//! its own so that secret scanners tell them apart. Only the hex SHA-256 of
//! the whole string is stored; the token is shown once, when issued.

use crate::domain::{required_text, Actor, DomainError, DomainResult, Role};
use crate::model::now_unix;
use crate::store::Store;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Prefix of admin tokens.
pub const ADMIN_PREFIX: &str = "chq_admin_";
const SECRET_BYTES: usize = 32;
const CHECK_BYTES: usize = 4;
const BODY_CHARS: usize = 48;
/// How many characters of an admin token may be shown (prefix plus 6).
pub const ADMIN_DISPLAY_CHARS: usize = 16;

/// A principal of the admin API, as listed (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Principal {
    /// Row id.
    pub id: i64,
    /// Who it is (a person or a system).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Code of the entity it acts for (none for operators).
    pub entity: Option<String>,
    /// The first characters of its token.
    pub display_prefix: String,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
}

/// A newly issued admin token: show `secret` once.
pub struct IssuedAdminToken {
    /// The principal it belongs to.
    pub principal: Principal,
    /// The token. Never store or log it.
    pub secret: String,
}

impl std::fmt::Debug for IssuedAdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedAdminToken")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

fn check_value(secret: &[u8]) -> [u8; CHECK_BYTES] {
    let digest = Sha256::new()
        .chain_update(b"chasqui-admin-token-check")
        .chain_update(secret)
        .finalize();
    let mut out = [0u8; CHECK_BYTES];
    out.copy_from_slice(&digest[..CHECK_BYTES]);
    out
}

/// Generates a new admin token string.
pub fn generate() -> String {
    let mut raw = [0u8; SECRET_BYTES + CHECK_BYTES];
    rand::rng().fill_bytes(&mut raw[..SECRET_BYTES]);
    let check = check_value(&raw[..SECRET_BYTES]);
    raw[SECRET_BYTES..].copy_from_slice(&check);
    format!("{ADMIN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
}

/// Whether a presented string has the shape and check value of an admin token.
pub fn well_formed(token: &str) -> bool {
    let Some(body) = token.strip_prefix(ADMIN_PREFIX) else {
        return false;
    };
    if body.len() != BODY_CHARS {
        return false;
    }
    let Ok(raw) = URL_SAFE_NO_PAD.decode(body) else {
        return false;
    };
    if raw.len() != SECRET_BYTES + CHECK_BYTES {
        return false;
    }
    let (secret, check) = raw.split_at(SECRET_BYTES);
    check_value(secret) == check
}

/// Hex SHA-256 of a token string, as stored.
pub fn hash_hex(token: &str) -> String {
    crate::hex::hex(&Sha256::digest(token.as_bytes()))
}

fn display_prefix(token: &str) -> String {
    token.chars().take(ADMIN_DISPLAY_CHARS).collect()
}

const SELECT: &str =
    "SELECT p.id, p.name, p.role, e.code, p.display_prefix, p.created_at, p.revoked_at, p.entity_id
     FROM admin_principals p LEFT JOIN entities e ON e.id = p.entity_id";

fn principal_of(row: &sqlx::any::AnyRow) -> DomainResult<(Principal, Option<i64>)> {
    let role: String = row.try_get(2)?;
    Ok((
        Principal {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            role: role.parse()?,
            entity: row.try_get(3)?,
            display_prefix: row.try_get(4)?,
            created_at: row.try_get(5)?,
            revoked_at: row.try_get(6)?,
        },
        row.try_get(7)?,
    ))
}

impl Store {
    /// Creates a principal with a new token. Publishers and consumers must
    /// name an existing entity; operators must not.
    pub async fn issue_admin_token(
        &self,
        role: Role,
        entity: Option<&str>,
        name: &str,
        created_by: Option<i64>,
    ) -> DomainResult<IssuedAdminToken> {
        let name = required_text("name", name, 200)?;
        let mut tx = self.write_tx().await?;
        let entity_id: Option<i64> = match (role, entity) {
            (Role::Operator, None) => None,
            (Role::Operator, Some(_)) => {
                return Err(DomainError::field(
                    "entity",
                    "an operator acts for AGETIC and names no entity",
                ))
            }
            (_, None) => {
                return Err(DomainError::field(
                    "entity",
                    "a publisher or consumer must name its entity",
                ))
            }
            (_, Some(code)) => Some(
                sqlx::query_scalar("SELECT id FROM entities WHERE code = $1")
                    .bind(code)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| {
                        DomainError::field("entity", format!("no entity has code `{code}`"))
                    })?,
            ),
        };
        let secret = generate();
        let now = now_unix();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO admin_principals (name, role, entity_id, token_hash, display_prefix, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(&name)
        .bind(role.as_str())
        .bind(entity_id)
        .bind(hash_hex(&secret))
        .bind(display_prefix(&secret))
        .bind(now)
        .bind(created_by)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(IssuedAdminToken {
            principal: Principal {
                id,
                name,
                role,
                entity: entity.map(str::to_string),
                display_prefix: display_prefix(&secret),
                created_at: now,
                revoked_at: None,
            },
            secret,
        })
    }

    /// Whether a live operator exists.
    pub async fn operator_exists(&self) -> DomainResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM admin_principals WHERE role = 'operator' AND revoked_at IS NULL",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    /// Finds the live principal holding a presented admin token.
    pub async fn authenticate_admin(&self, token: &str) -> DomainResult<Option<Actor>> {
        if !well_formed(token) {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "{SELECT} WHERE p.token_hash = $1 AND p.revoked_at IS NULL"
        ))
        .bind(hash_hex(token))
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (p, entity_id) = principal_of(&row)?;
        Ok(Some(Actor {
            principal_id: p.id,
            name: p.name,
            role: p.role,
            entity_id,
            entity_code: p.entity,
        }))
    }

    /// Every principal, oldest first.
    pub async fn list_principals(&self) -> DomainResult<Vec<Principal>> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY p.id"))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| principal_of(r).map(|(p, _)| p))
            .collect()
    }

    /// Revokes a principal's token at once. The last live operator cannot be
    /// revoked, so the API never locks itself out.
    pub async fn revoke_principal(&self, id: i64) -> DomainResult<Principal> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!("{SELECT} WHERE p.id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("principal {id}")))?;
        let (mut p, _) = principal_of(&row)?;
        if p.revoked_at.is_some() {
            return Err(DomainError::Conflict(format!(
                "principal {id} is already revoked"
            )));
        }
        if p.role == Role::Operator {
            let others: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM admin_principals WHERE role = 'operator' AND revoked_at IS NULL AND id <> $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if others == 0 {
                return Err(DomainError::Conflict(
                    "the last live operator cannot be revoked".into(),
                ));
            }
        }
        let now = now_unix();
        sqlx::query("UPDATE admin_principals SET revoked_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        p.revoked_at = Some(now);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_tokens_have_their_own_prefix_and_check_value() {
        let t = generate();
        assert!(t.starts_with(ADMIN_PREFIX));
        assert!(well_formed(&t));
        assert!(!well_formed(&t.replace(ADMIN_PREFIX, "chq_test_")));
        let mut altered: Vec<char> = t.chars().collect();
        let i = altered.len() - 5;
        altered[i] = if altered[i] == 'A' { 'B' } else { 'A' };
        assert!(!well_formed(&altered.into_iter().collect::<String>()));
        assert_eq!(hash_hex(&t).len(), 64);
        assert_ne!(generate(), t);
    }

    crate::testdb::on_both_databases! {
        async fn principals_authenticate_until_revoked(store: Store) {
            assert!(!store.operator_exists().await.unwrap());
            let op = store
                .issue_admin_token(Role::Operator, None, "AGETIC", None)
                .await
                .unwrap();
            assert!(store.operator_exists().await.unwrap());
            let actor = store.authenticate_admin(&op.secret).await.unwrap().unwrap();
            assert_eq!(actor.role, Role::Operator);
            assert!(matches!(
                store
                    .issue_admin_token(Role::Consumer, None, "x", None)
                    .await,
                Err(DomainError::Validation { .. })
            ));
            // The last operator stays.
            assert!(matches!(
                store.revoke_principal(op.principal.id).await,
                Err(DomainError::Conflict(_))
            ));
            let second = store
                .issue_admin_token(Role::Operator, None, "Second", Some(op.principal.id))
                .await
                .unwrap();
            store.revoke_principal(op.principal.id).await.unwrap();
            assert!(store
                .authenticate_admin(&op.secret)
                .await
                .unwrap()
                .is_none());
            assert!(store
                .authenticate_admin(&second.secret)
                .await
                .unwrap()
                .is_some());
            assert_eq!(store.list_principals().await.unwrap().len(), 2);
        }
    }
}
