//! Validation of a Ciudadanía Digital access token: a JWS compact serialization (JWT)
//! signed with RS256 or ES256 by the environment's issuer.
//!
//! The order matters: the header is read only to choose the algorithm and key, the
//! signature is verified by the host before any claim is trusted, then the claims are
//! checked (issuer, audience, times, subject).

use crate::config::TrustedIssuer;
use crate::keys::{self, Key};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chasqui_plugin_sdk::host::{self, crypto::Algorithm};
use serde_json::{Map, Value};

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// No token header.
    Missing,
    /// More than one token header.
    Repeated,
    /// Not a well-formed JWS/JWT; the text says which part.
    Malformed(&'static str),
    /// Signed with an algorithm that is not accepted (`none`, HS*, ...).
    Algorithm(String),
    /// No configured key matches the token's `kid` and algorithm.
    KeyUnknown,
    /// The signature does not verify.
    Signature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is still ahead.
    NotYetValid,
    /// `iat` is in the future.
    IssuedInFuture,
    /// `iat` is older than the configured maximum age.
    TooOld,
    /// `iss` is not the environment's issuer.
    Issuer,
    /// `aud` names none of the accepted audiences.
    Audience,
    /// `sub` is missing or unusable.
    Subject,
}

impl TokenError {
    /// A short reason for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::Repeated => "repeated",
            TokenError::Malformed(_) => "malformed",
            TokenError::Algorithm(_) => "algorithm",
            TokenError::KeyUnknown => "key_unknown",
            TokenError::Signature => "signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::TooOld => "too_old",
            TokenError::Issuer => "issuer",
            TokenError::Audience => "audience",
            TokenError::Subject => "subject",
        }
    }
}

/// A token whose signature and claims were verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The citizen's subject identifier.
    pub subject: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// Every claim, for identity details (CI, name, ...).
    pub claims: Map<String, Value>,
}

/// What a token is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Validation<'a> {
    /// The environment's issuer and keys.
    pub issuer: &'a TrustedIssuer,
    /// Accepted algorithms.
    pub algorithms: &'a [Algorithm],
    /// Clock leeway in milliseconds.
    pub leeway_ms: u64,
    /// Oldest accepted `iat`, in milliseconds before now.
    pub max_age_ms: Option<u64>,
    /// The host's current time.
    pub now_ms: u64,
}

/// Verifies `raw` (the compact JWT) and returns its subject, scopes and claims.
pub fn validate(raw: &str, rules: &Validation<'_>) -> Result<Token, TokenError> {
    if raw.is_empty() {
        return Err(TokenError::Malformed("the token is empty"));
    }
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("the token is too long"));
    }
    let mut parts = raw.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("a JWT has three dot-separated parts"));
    };
    let header = json_object(header_b64).ok_or(TokenError::Malformed(
        "the header is not base64url-encoded JSON",
    ))?;
    if header.contains_key("crit") {
        return Err(TokenError::Malformed(
            "critical header extensions are not supported",
        ));
    }
    let algorithm = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Algorithm::Rs256,
        Some("ES256") => Algorithm::Es256,
        Some(other) => return Err(TokenError::Algorithm(other.to_string())),
        None => return Err(TokenError::Malformed("the header has no alg")),
    };
    if !rules.algorithms.contains(&algorithm) {
        return Err(TokenError::Algorithm(keys::name(algorithm).to_string()));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(TokenError::Malformed("the header's kid is not a string")),
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| TokenError::Malformed("the signature is not base64url"))?;
    let candidates = keys::candidates(&rules.issuer.keys, algorithm, kid);
    if candidates.is_empty() {
        return Err(TokenError::KeyUnknown);
    }
    // The signing input is the header and payload exactly as sent.
    let signing_input = &raw.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    if !candidates
        .iter()
        .any(|key| verifies(key, algorithm, signing_input, &signature))
    {
        return Err(TokenError::Signature);
    }

    let claims = json_object(payload_b64).ok_or(TokenError::Malformed(
        "the payload is not base64url-encoded JSON",
    ))?;
    check_issuer(&claims, rules.issuer)?;
    check_audience(&claims, rules.issuer)?;
    check_times(&claims, rules)?;
    let subject = match claims.get("sub") {
        Some(Value::String(sub)) if valid_subject(sub) => sub.clone(),
        _ => return Err(TokenError::Subject),
    };
    let scopes = scopes(&claims);
    Ok(Token {
        subject,
        scopes,
        claims,
    })
}

/// Whether one key verifies the signature; a key the host refuses counts as not
/// verifying (and is logged: keys are probed at load, so this is unexpected).
fn verifies(key: &Key, algorithm: Algorithm, input: &[u8], signature: &[u8]) -> bool {
    match host::crypto::verify_signature(algorithm, &key.jwk, input, signature) {
        Ok(valid) => valid,
        Err(err) => {
            host::log::warn(&format!(
                "ciudadania: key {} refused by the host: {err}",
                key.kid.as_deref().unwrap_or("(no kid)")
            ));
            false
        }
    }
}

fn json_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn check_issuer(claims: &Map<String, Value>, issuer: &TrustedIssuer) -> Result<(), TokenError> {
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == issuer.issuer => Ok(()),
        _ => Err(TokenError::Issuer),
    }
}

fn check_audience(claims: &Map<String, Value>, issuer: &TrustedIssuer) -> Result<(), TokenError> {
    let accepted = |aud: &str| issuer.audiences.iter().any(|a| a == aud);
    let matches = match claims.get("aud") {
        Some(Value::String(aud)) => accepted(aud),
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        Err(TokenError::Audience)
    }
}

fn check_times(claims: &Map<String, Value>, rules: &Validation<'_>) -> Result<(), TokenError> {
    let now = rules.now_ms;
    let leeway = rules.leeway_ms;
    let exp = match claims.get("exp") {
        Some(value) => numeric_date(value).ok_or(TokenError::Malformed("exp is not a date"))?,
        None => return Err(TokenError::Malformed("the token has no exp")),
    };
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(value) = claims.get("nbf") {
        let nbf = numeric_date(value).ok_or(TokenError::Malformed("nbf is not a date"))?;
        if now.saturating_add(leeway) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    if let Some(value) = claims.get("iat") {
        let iat = numeric_date(value).ok_or(TokenError::Malformed("iat is not a date"))?;
        if iat > now.saturating_add(leeway) {
            return Err(TokenError::IssuedInFuture);
        }
        if iat > exp {
            return Err(TokenError::Malformed("iat is after exp"));
        }
        if let Some(max_age) = rules.max_age_ms {
            if now > iat.saturating_add(max_age).saturating_add(leeway) {
                return Err(TokenError::TooOld);
            }
        }
    } else if rules.max_age_ms.is_some() {
        return Err(TokenError::Malformed(
            "the token has no iat, which a maximum age needs",
        ));
    }
    Ok(())
}

/// A NumericDate (seconds since the epoch, possibly fractional) in milliseconds.
fn numeric_date(value: &Value) -> Option<u64> {
    if let Some(seconds) = value.as_u64() {
        return Some(seconds.saturating_mul(1000));
    }
    let seconds = value.as_f64()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    // Saturating float-to-int conversion: absurdly large dates stay absurdly large.
    Some((seconds * 1000.0) as u64)
}

/// A subject the plugin can pass on and compare: 1 to 255 bytes, no control characters.
fn valid_subject(sub: &str) -> bool {
    !sub.is_empty() && sub.len() <= 255 && !sub.chars().any(char::is_control)
}

/// The granted scopes: `scope` as a space-separated string (RFC 8693 / 9068) or, from
/// some issuers, an array; `scp` likewise.
fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    let value = claims.get("scope").or_else(|| claims.get("scp"));
    let mut scopes: Vec<String> = match value {
        Some(Value::String(text)) => text.split_ascii_whitespace().map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    scopes.retain(|scope| {
        !scope.is_empty() && scope.len() <= 64 && scope.bytes().all(|b| b.is_ascii_graphic())
    });
    scopes.dedup();
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_dates_accept_integers_and_fractions_only() {
        assert_eq!(numeric_date(&json!(10)), Some(10_000));
        assert_eq!(numeric_date(&json!(1.5)), Some(1_500));
        assert_eq!(numeric_date(&json!(-1)), None);
        assert_eq!(numeric_date(&json!("10")), None);
        assert_eq!(numeric_date(&json!(u64::MAX)), Some(u64::MAX));
    }

    #[test]
    fn scopes_come_from_a_string_or_an_array() {
        let claims = |value: Value| json!({ "scope": value }).as_object().unwrap().clone();
        assert_eq!(
            scopes(&claims(json!("openid  profile email"))),
            ["openid", "profile", "email"]
        );
        assert_eq!(
            scopes(&claims(json!(["openid", "profile", 3]))),
            ["openid", "profile"]
        );
        let scp = json!({ "scp": "openid" }).as_object().unwrap().clone();
        assert_eq!(scopes(&scp), ["openid"]);
        assert!(scopes(&Map::new()).is_empty());
    }

    #[test]
    fn subjects_must_be_printable_and_bounded() {
        assert!(valid_subject("c1d2e3f4-0001-4000-8000-000000000001"));
        assert!(!valid_subject(""));
        assert!(!valid_subject("a\nb"));
        assert!(!valid_subject(&"x".repeat(256)));
    }
}
