//! Chasqui, the interoperability gateway of the Bolivian state.
//!
//! The `chasqui` binary is a thin CLI over this library: the data plane on
//! pingora ([`proxy`]), the catalog snapshot it routes with ([`routes`],
//! [`upstream`]), token authentication ([`auth`]), RFC 9457 errors
//! ([`problem`]), path normalisation ([`path`]), the policy ([`policy`]) and
//! the server's lifecycle ([`server`]).

pub mod admin;
pub mod auth;
pub mod config;
pub mod contract;
pub mod deferred;
pub mod demo;
pub mod durable_kv;
pub mod effective;
pub mod ledger;
pub mod metrics;
pub mod oprecords;
pub mod path;
pub mod platform;
pub mod plugin;
pub mod policy;
pub mod policy_versions;
pub mod problem;
pub mod proxy;
pub mod quota;
pub mod ratelimit;
pub mod respcache;
pub mod routes;
pub mod server;
pub mod stage;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upstream;

/// Lowercase hexadecimal of `bytes` (request ids, hashes, keys).
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
