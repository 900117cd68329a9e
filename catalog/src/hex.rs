//! Lowercase hexadecimal, the one form the gateway writes hashes, keys and
//! request ids in, and the 16 bytes that a 32-digit id spells (how record
//! segments and ledger runs store request ids).

/// Lowercase hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex_into(bytes, &mut out).to_string()
}

/// Lowercase hexadecimal of `bytes` written into the first `2 * bytes.len()`
/// bytes of `out` (which must hold them), without allocating: the ledger
/// encodes two hashes per entry it writes this way.
pub fn hex_into<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let out = &mut out[..bytes.len() * 2];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Only ASCII digits were written.
    std::str::from_utf8(out).unwrap_or_default()
}

/// The 16 bytes that exactly 32 lowercase hex digits spell; `None` for any
/// other text (uppercase digits would not read back as they were written).
pub fn id_bytes(text: &str) -> Option<[u8; 16]> {
    fn digit(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if text.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_32_lowercase_digits_and_nothing_else_have_bytes() {
        let id = "00ff10a9b8c7d6e5f4031224354657ab";
        let bytes = id_bytes(id).unwrap();
        assert_eq!(bytes[..3], [0x00, 0xff, 0x10]);
        assert_eq!(hex(&bytes), id);
        for other in [
            "00FF10A9B8C7D6E5F4031224354657AB",
            "00ff10a9b8c7d6e5f4031224354657a",
            "00ff10a9b8c7d6e5f4031224354657abc",
            "00ff10a9b8c7d6e5f4031224354657ag",
            "",
        ] {
            assert_eq!(id_bytes(other), None, "{other}");
        }
    }
}
