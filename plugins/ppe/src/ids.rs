//! Identifiers of test-environment payments, derived with the host's HMAC.
//!
//! A plugin has no randomness of its own. Every id comes from one per-request seed, an HMAC
//! over the gateway's request id (unique per request), the time, the consumer entity and
//! the debt code; each kind of id is a further HMAC of the seed under its own label, so ids
//! are unpredictable from each other and unique in practice.

use chasqui_plugin_sdk::host::crypto;

/// The per-request secret material every id is derived from.
pub struct Seed([u8; 32]);

/// The seed of a payment created by `request_id` at `now_ms` for `entity`'s `debt_code`.
pub fn seed(request_id: &str, now_ms: u64, entity: &str, debt_code: &str) -> Seed {
    let now = now_ms.to_be_bytes();
    let data = length_prefixed(&[
        request_id.as_bytes(),
        &now,
        entity.as_bytes(),
        debt_code.as_bytes(),
    ]);
    Seed(crypto::hmac_sha256(b"chasqui/ppe/seed/v1", &data))
}

/// `parts` joined so that no two different lists give the same bytes.
pub fn length_prefixed(parts: &[&[u8]]) -> Vec<u8> {
    let mut data = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for part in parts {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(part);
    }
    data
}

fn derive(seed: &Seed, label: &str) -> [u8; 32] {
    crypto::hmac_sha256(&seed.0, label.as_bytes())
}

/// The payment id (`codigoTransaccion`): a UUID of version 8 (RFC 9562, custom) whose
/// bits come from the seed, e.g. `3f2a9c1e-4b7d-8e21-9a0f-5c6d7e8f9a0b`.
pub fn payment_id(seed: &Seed) -> String {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&derive(seed, "payment-id")[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
    let hex = hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A CPT code `NNNN-NNNN-NNNN` (12 digits). `attempt` gives another code from the same seed
/// when one is already taken.
pub fn cpt_code(seed: &Seed, attempt: u32) -> String {
    let digest = derive(seed, &format!("cpt/{attempt}"));
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The modulo bias over 2^64 is below 10^-7: irrelevant for a test code.
    let n = u64::from_be_bytes(first) % 1_000_000_000_000;
    format!(
        "{:04}-{:04}-{:04}",
        n / 100_000_000,
        n / 10_000 % 10_000,
        n % 10_000
    )
}

/// The id of a test QR: 20 uppercase hexadecimal digits.
pub fn qr_id(seed: &Seed) -> String {
    hex(&derive(seed, "qr-id")[..10]).to_ascii_uppercase()
}

/// Whether `id` has the form of a payment id this plugin or PPE could have issued: 1 to 64
/// ASCII letters, digits, `-` or `_`. Anything else is certainly unknown.
pub fn is_plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
    fn hex_and_length_prefixing() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        // ("ab", "c") and ("a", "bc") must not collide.
        assert_ne!(
            length_prefixed(&[b"ab", b"c"]),
            length_prefixed(&[b"a", b"bc"])
        );
    }

    #[test]
    fn plausible_ids() {
        assert!(is_plausible_id("3f2a9c1e-4b7d-8e21-9a0f-5c6d7e8f9a0b"));
        assert!(is_plausible_id("12345"));
        assert!(!is_plausible_id(""));
        assert!(!is_plausible_id("a/b"));
        assert!(!is_plausible_id("a%2Fb"));
        assert!(!is_plausible_id(&"a".repeat(65)));
    }
}
