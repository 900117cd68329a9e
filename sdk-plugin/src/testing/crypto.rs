//! Real cryptography for the native harness (ring), with the contract's error rules.

use crate::host::crypto::{Algorithm, KeyError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    out.copy_from_slice(ring::hmac::sign(&key, data).as_ref());
    out
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, KeyError> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| KeyError(format!("the JWK has no `{name}` string")))
}

fn bytes(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(member(jwk, name)?)
        .map_err(|_| KeyError(format!("`{name}` is not base64url")))
}

/// Verifies a JWS signature as `crypto.verify-signature` specifies.
///
/// Unlike a host built on a curve library, ring cannot tell an EC point that is off the
/// curve from a bad signature, so such a key gives `Ok(false)` here.
pub fn verify_signature(
    alg: Algorithm,
    jwk: &str,
    input: &[u8],
    sig: &[u8],
) -> Result<bool, KeyError> {
    let jwk: Value =
        serde_json::from_str(jwk).map_err(|err| KeyError(format!("the JWK is not JSON: {err}")))?;
    let jwk = jwk
        .as_object()
        .ok_or_else(|| KeyError("the JWK is not a JSON object".into()))?;
    let (name, kty) = match alg {
        Algorithm::Rs256 => ("RS256", "RSA"),
        Algorithm::Es256 => ("ES256", "EC"),
    };
    if jwk.get("alg").is_some_and(|alg| alg.as_str() != Some(name)) {
        return Err(KeyError(format!("the JWK's `alg` is not {name}")));
    }
    if member(jwk, "kty")? != kty {
        return Err(KeyError(format!("{name} needs a JWK with `kty` {kty}")));
    }
    match alg {
        Algorithm::Rs256 => {
            let n = bytes(jwk, "n")?;
            let e = bytes(jwk, "e")?;
            let n_trimmed = strip_zeros(&n);
            let bits = n_trimmed.len() * 8
                - n_trimmed
                    .first()
                    .map_or(8, |top| top.leading_zeros() as usize);
            if !(2048..=8192).contains(&bits) {
                return Err(KeyError(format!(
                    "the RSA modulus has {bits} bits, not 2048 to 8192"
                )));
            }
            let e_trimmed = strip_zeros(&e);
            if e_trimmed.len() > 4
                || e_trimmed.last().is_none_or(|low| low % 2 == 0)
                || e_trimmed == [1]
            {
                return Err(KeyError(
                    "the RSA exponent is not an odd number from 3 to 2^32-1".into(),
                ));
            }
            let key = RsaPublicKeyComponents {
                n: n_trimmed,
                e: e_trimmed,
            };
            Ok(key
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, input, sig)
                .is_ok())
        }
        Algorithm::Es256 => {
            if member(jwk, "crv")? != "P-256" {
                return Err(KeyError("ES256 needs a JWK with `crv` P-256".into()));
            }
            let (x, y) = (bytes(jwk, "x")?, bytes(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err(KeyError("P-256 coordinates are 32 bytes each".into()));
            }
            let point = [&[4u8][..], &x, &y].concat();
            let key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
            Ok(key.verify(input, sig).is_ok())
        }
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    &bytes[start..]
}
