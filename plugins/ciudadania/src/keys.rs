//! The issuer's public keys: a JWK Set from the configuration, reduced to the keys the
//! host can verify with, and the choice of keys for one token.

use chasqui_plugin_sdk::host::{self, crypto::Algorithm};
use serde_json::{json, Map, Value};

/// JWK members that only a private or symmetric key has: never accepted in configuration.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// One usable public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The key id, if the JWK has one.
    pub kid: Option<String>,
    /// The one algorithm the key verifies.
    pub algorithm: Algorithm,
    /// The public key as the host wants it: a minimal JWK as JSON text.
    pub jwk: String,
}

/// Reads a JWK Set: keys for other uses or algorithms are skipped (an issuer's set may
/// hold them), but a private key, a repeated `kid`, a key the host cannot use, or a set
/// with no usable key at all refuses the configuration.
pub fn parse_jwks(keys: &[Map<String, Value>], accepted: &[Algorithm]) -> Result<Vec<Key>, String> {
    let mut usable: Vec<Key> = Vec::new();
    for (index, jwk) in keys.iter().enumerate() {
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
            return Err(format!(
                "keys[{index}] has the private member `{member}`: configure public keys only"
            ));
        }
        let Some(key) = usable_key(jwk, accepted).map_err(|e| format!("keys[{index}]: {e}"))?
        else {
            host::log::warn(&format!(
                "ciudadania: JWK keys[{index}] skipped: not a signature key for an accepted algorithm"
            ));
            continue;
        };
        if key.kid.is_some() && usable.iter().any(|other| other.kid == key.kid) {
            return Err(format!("keys[{index}] repeats the kid of an earlier key"));
        }
        probe(&key).map_err(|e| format!("keys[{index}]: {e}"))?;
        usable.push(key);
    }
    if usable.is_empty() {
        return Err("no key usable with the accepted algorithms".into());
    }
    Ok(usable)
}

/// The key a JWK describes, `None` if it is not meant for verifying one of the accepted
/// algorithms, `Err` if it claims to be and is malformed.
fn usable_key(jwk: &Map<String, Value>, accepted: &[Algorithm]) -> Result<Option<Key>, String> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    if text("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Ok(None);
        }
    }
    let (algorithm, minimal) = match (text("kty"), text("crv")) {
        (Some("RSA"), _) => {
            let (Some(n), Some(e)) = (text("n"), text("e")) else {
                return Err("an RSA key needs `n` and `e`".into());
            };
            (Algorithm::Rs256, json!({ "kty": "RSA", "n": n, "e": e }))
        }
        (Some("EC"), Some("P-256")) => {
            let (Some(x), Some(y)) = (text("x"), text("y")) else {
                return Err("an EC key needs `x` and `y`".into());
            };
            (
                Algorithm::Es256,
                json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y }),
            )
        }
        _ => return Ok(None),
    };
    if text("alg").is_some_and(|alg| alg != name(algorithm)) || !accepted.contains(&algorithm) {
        return Ok(None);
    }
    Ok(Some(Key {
        kid: text("kid").map(str::to_string),
        algorithm,
        jwk: minimal.to_string(),
    }))
}

/// Asks the host whether it can use the key: a key it cannot use makes verification
/// fail with an error rather than `false`, so a bad key is found at load, not per request.
fn probe(key: &Key) -> Result<(), String> {
    host::crypto::verify_signature(key.algorithm, &key.jwk, b"chasqui-key-probe", &[])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The JWS name of an algorithm.
pub fn name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Rs256 => "RS256",
        Algorithm::Es256 => "ES256",
    }
}

/// The keys to try for a token signed with `algorithm` and naming `kid`: the key with that
/// id, or without an id every key of the algorithm. Empty if none fits.
pub fn candidates<'a>(keys: &'a [Key], algorithm: Algorithm, kid: Option<&str>) -> Vec<&'a Key> {
    keys.iter()
        .filter(|key| key.algorithm == algorithm)
        .filter(|key| kid.is_none_or(|kid| key.kid.as_deref() == Some(kid)))
        .collect()
}
