//! Opaque bearer tokens.
//!
//! A token is `chq_test_` or `chq_prod_` followed by 48 base64url characters:
//! 32 bytes from the operating system's random source and a 4-byte check
//! value. The prefix lets secret scanners find leaked tokens and tells a
//! reader which environment a token opens; the check value lets the gateway
//! refuse a mistyped or made-up token without touching the store. Only the
//! SHA-256 of the whole string is stored.

use crate::model::Environment;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of test (`pruebas`) tokens.
pub const TEST_PREFIX: &str = "chq_test_";
/// Prefix of production (`produccion`) tokens.
pub const PROD_PREFIX: &str = "chq_prod_";
const SECRET_BYTES: usize = 32;
const CHECK_BYTES: usize = 4;
const BODY_CHARS: usize = 48; // base64url of 36 bytes, no padding
/// How many characters of a token may be shown (prefix plus 6).
pub const DISPLAY_CHARS: usize = 15;

/// A freshly issued token: the secret to hand over once, and its hash to store.
pub struct IssuedToken {
    /// The token string. Show it once; never store or log it.
    pub secret: String,
    /// SHA-256 of `secret`.
    pub hash: [u8; 32],
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("display", &display_prefix(&self.secret))
            .finish_non_exhaustive()
    }
}

/// Generates a new token for `env`.
pub fn generate(env: Environment) -> IssuedToken {
    let mut raw = [0u8; SECRET_BYTES + CHECK_BYTES];
    // ThreadRng is a CSPRNG (ChaCha12) seeded and reseeded from the OS source.
    rand::rng().fill_bytes(&mut raw[..SECRET_BYTES]);
    let check = check_value(&raw[..SECRET_BYTES]);
    raw[SECRET_BYTES..].copy_from_slice(&check);
    let secret = format!("{}{}", prefix_of(env), URL_SAFE_NO_PAD.encode(raw));
    let hash = hash(&secret);
    IssuedToken { secret, hash }
}

fn prefix_of(env: Environment) -> &'static str {
    match env {
        Environment::Pruebas => TEST_PREFIX,
        Environment::Produccion => PROD_PREFIX,
    }
}

fn check_value(secret: &[u8]) -> [u8; CHECK_BYTES] {
    let digest = Sha256::new()
        .chain_update(b"chasqui-token-check")
        .chain_update(secret)
        .finalize();
    let mut out = [0u8; CHECK_BYTES];
    out.copy_from_slice(&digest[..CHECK_BYTES]);
    out
}

/// SHA-256 of a token string, as stored.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The part of a token that may be shown in lists and logs.
pub fn display_prefix(token: &str) -> String {
    token.chars().take(DISPLAY_CHARS).collect()
}

/// Checks the shape and check value of a presented token and returns the
/// environment its prefix names. `None` means it cannot be one of ours.
pub fn parse(token: &str) -> Option<Environment> {
    let (env, body) = if let Some(body) = token.strip_prefix(TEST_PREFIX) {
        (Environment::Pruebas, body)
    } else if let Some(body) = token.strip_prefix(PROD_PREFIX) {
        (Environment::Produccion, body)
    } else {
        return None;
    };
    if body.len() != BODY_CHARS {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(body).ok()?;
    if raw.len() != SECRET_BYTES + CHECK_BYTES {
        return None;
    }
    let (secret, check) = raw.split_at(SECRET_BYTES);
    // The check value only filters typos and noise; it is not a secret, so a
    // plain comparison is fine.
    (check_value(secret) == check).then_some(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_with_their_environment() {
        let t = generate(Environment::Pruebas);
        assert!(t.secret.starts_with("chq_test_"));
        assert_eq!(t.secret.len(), TEST_PREFIX.len() + BODY_CHARS);
        assert_eq!(parse(&t.secret), Some(Environment::Pruebas));
        assert_eq!(hash(&t.secret), t.hash);
        let p = generate(Environment::Produccion);
        assert_eq!(parse(&p.secret), Some(Environment::Produccion));
        assert_ne!(t.secret, generate(Environment::Pruebas).secret);
    }

    #[test]
    fn altered_or_foreign_tokens_are_refused() {
        let t = generate(Environment::Pruebas).secret;
        let mut chars: Vec<char> = t.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let altered: String = chars.into_iter().collect();
        assert_eq!(parse(&altered), None);
        // moving a test token's body under the production prefix breaks nothing
        // but the environment it claims, which the store decides anyway
        assert_eq!(parse("chq_test_short"), None);
        assert_eq!(parse("Bearer something"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let t = generate(Environment::Produccion);
        let shown = format!("{t:?}");
        assert!(!shown.contains(&t.secret));
        assert!(shown.contains(&t.secret[..DISPLAY_CHARS]));
    }
}
