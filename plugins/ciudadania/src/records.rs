//! Record ids and the key-value store that keeps approval, notification and
//! authorization records between requests.
//!
//! The store is the gateway's per-plugin key-value cache, shared by every instance of the
//! plugin. Keys carry the environment, so a test record can never be used in production.

use crate::call::{Call, Environment};
use crate::problem::{self, Problem};
use crate::routes::Kind;
use chasqui_plugin_sdk::host;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// The HMAC key that turns a request's unique facts into a record id. Not a secret: ids
/// are unique because request ids are, and unguessable as far as request ids are.
const ID_KEY: &[u8] = b"chasqui/ciudadania/record-id/v1";

/// The id prefix of each kind.
fn id_prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Approval => "apr",
        Kind::Notification => "not",
        Kind::Authorization => "aut",
    }
}

/// A new record id: the kind's prefix, `-`, and 32 hex digits of an HMAC over the
/// request id, trace id, consumer, time and monotonic clock. The plugin has no random
/// source of its own; the gateway's request id is unique per request.
pub fn new_id(kind: Kind, call: &Call) -> String {
    let context = &call.context;
    let facts = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n{}",
        id_prefix(kind),
        context.request_id,
        context.trace_id.as_deref().unwrap_or(""),
        context.consumer_entity.as_deref().unwrap_or(""),
        context.consumer_system.as_deref().unwrap_or(""),
        call.now_ms,
        host::clock::monotonic_ns(),
    );
    let mac = host::crypto::hmac_sha256(ID_KEY, facts.as_bytes());
    format!("{}-{}", id_prefix(kind), hex(&mac[..16]))
}

/// Whether `id` has the form of an id of `kind`; anything else is never looked up.
pub fn is_id(kind: Kind, id: &str) -> bool {
    id.strip_prefix(id_prefix(kind))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|digits| {
            digits.len() == 32
                && digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn key(environment: Environment, kind: Kind, id: &str) -> String {
    format!("{}/{}/{id}", environment.as_str(), kind.collection())
}

/// Reads a record. A record that no longer deserializes (written by another version) is
/// treated as gone, with a warning.
pub fn load<T: DeserializeOwned>(
    environment: Environment,
    kind: Kind,
    id: &str,
) -> Result<Option<T>, Problem> {
    let bytes = match host::kv::get(&key(environment, kind, id)) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(err) => {
            host::log::warn(&format!("ciudadania: reading {id} failed: {err}"));
            return Err(problem::storage_unavailable());
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(record) => Ok(Some(record)),
        Err(err) => {
            host::log::warn(&format!("ciudadania: record {id} is unreadable: {err}"));
            Ok(None)
        }
    }
}

/// Writes a record that lives until `expires_at_ms` (host clock), at least one second.
pub fn save<T: Serialize>(
    environment: Environment,
    kind: Kind,
    id: &str,
    record: &T,
    now_ms: u64,
    expires_at_ms: u64,
) -> Result<(), Problem> {
    let bytes = serde_json::to_vec(record).map_err(|err| {
        host::log::error(&format!("ciudadania: record {id} not serializable: {err}"));
        problem::storage_unavailable()
    })?;
    let ttl = Duration::from_millis(expires_at_ms.saturating_sub(now_ms).max(1000));
    host::kv::set(&key(environment, kind, id), &bytes, Some(ttl)).map_err(|err| {
        host::log::warn(&format!("ciudadania: storing {id} failed: {err}"));
        problem::storage_unavailable()
    })
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_a_strict_form() {
        let id = format!("apr-{}", "0123456789abcdef".repeat(2));
        assert!(is_id(Kind::Approval, &id));
        assert!(!is_id(Kind::Authorization, &id));
        assert!(!is_id(Kind::Approval, &id.to_uppercase()));
        assert!(!is_id(Kind::Approval, &id[..id.len() - 1]));
        assert!(!is_id(Kind::Approval, "apr-../../x"));
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
