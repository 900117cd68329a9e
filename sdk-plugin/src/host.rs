//! The host functions a plugin can call, one module per capability.
//!
//! A plugin may call only the modules whose [`Capability`](crate::Capability) it lists in
//! its metadata. In the Wasm build each function calls the WIT import of the same name; in
//! native builds it calls the fakes of [`testing`](crate::testing), and panics if no
//! [`Harness`](crate::testing::Harness) is running the plugin.

#[cfg(target_arch = "wasm32")]
use crate::guest::backend;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::backend;

/// Logging into the gateway's structured log ([`Capability::Log`](crate::Capability::Log)).
///
/// The gateway adds the plugin's name and the request id to each record.
pub mod log {
    use super::backend;

    /// Severity of a log record, lowest first.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Level {
        /// Step-by-step detail.
        Trace,
        /// Diagnostics for developers.
        Debug,
        /// Normal events worth keeping.
        Info,
        /// Something unexpected that the plugin handled.
        Warn,
        /// Something failed.
        Error,
    }

    /// Writes one record.
    pub fn write(level: Level, message: &str) {
        backend::log_write(level, message);
    }

    /// Writes a `debug` record.
    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }

    /// Writes an `info` record.
    pub fn info(message: &str) {
        write(Level::Info, message);
    }

    /// Writes a `warn` record.
    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }

    /// Writes an `error` record.
    pub fn error(message: &str) {
        write(Level::Error, message);
    }
}

/// Key-value state shared by all instances of the plugin ([`Capability::Kv`](crate::Capability::Kv)).
///
/// Keys are namespaced per plugin by the gateway. The store behaves like a cache: an entry
/// may disappear before its TTL.
pub mod kv {
    use super::backend;
    use std::time::Duration;

    /// Why a key-value operation failed.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum KvError {
        /// The key or value is larger than the gateway allows (512 B and 64 KiB by default).
        #[error("key or value too large")]
        TooLarge,
        /// The plugin's namespace is full.
        #[error("key-value quota exceeded")]
        QuotaExceeded,
        /// The store cannot be used right now.
        #[error("key-value store unavailable: {0}")]
        Unavailable(String),
    }

    /// The value under `key`, or `None` if there is none or it expired.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        backend::kv_get(key)
    }

    /// Stores `value` under `key`; with `ttl` it expires after that long (rounded down to
    /// milliseconds).
    pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        backend::kv_set(key, value, ttl_ms(ttl))
    }

    /// Removes `key` (removing a missing key succeeds).
    pub fn delete(key: &str) -> Result<(), KvError> {
        backend::kv_delete(key)
    }

    /// Stores `value` under `key` only if there is no live entry, atomically across all the
    /// plugin's instances: `Ok(None)` means it was stored, `Ok(Some(existing))` that an entry
    /// was there (nothing written). The building block of idempotency keys.
    pub fn set_if_absent(
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, KvError> {
        backend::kv_set_if_absent(key, value, ttl_ms(ttl))
    }

    /// Adds `delta` to the counter under `key` atomically and returns the new value. A
    /// missing or expired counter starts at 0 and lives for `ttl` from its creation (a
    /// fixed window).
    pub fn increment(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        backend::kv_increment(key, delta, ttl_ms(ttl))
    }

    fn ttl_ms(ttl: Option<Duration>) -> Option<u64> {
        ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Time as the gateway sees it ([`Capability::Clock`](crate::Capability::Clock)).
pub mod clock {
    use super::backend;

    /// Milliseconds since the Unix epoch (UTC). It can jump; do not measure durations with it.
    pub fn now_ms() -> u64 {
        backend::clock_now_ms()
    }

    /// Nanoseconds from an arbitrary origin; never goes back. Subtract two readings to
    /// measure a duration.
    pub fn monotonic_ns() -> u64 {
        backend::clock_monotonic_ns()
    }
}

/// Hashes, HMAC and JWS signature verification, computed by the gateway
/// ([`Capability::Crypto`](crate::Capability::Crypto)).
pub mod crypto {
    use super::backend;

    /// The JWS algorithms [`verify_signature`] accepts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Algorithm {
        /// RSASSA-PKCS1-v1_5 with SHA-256; an RSA JWK (`n`, `e`) of 2048 to 8192 bits.
        Rs256,
        /// ECDSA P-256 with SHA-256; an EC JWK (`crv` `P-256`, `x`, `y`) and a 64-byte `r || s`
        /// signature.
        Es256,
    }

    /// The key given to [`verify_signature`] cannot be used; the text says why.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("unusable key: {0}")]
    pub struct KeyError(pub String);

    /// SHA-256 of `data`.
    pub fn sha256(data: &[u8]) -> [u8; 32] {
        backend::crypto_sha256(data)
    }

    /// HMAC-SHA-256 of `data` under `key`.
    pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
        backend::crypto_hmac_sha256(key, data)
    }

    /// Verifies a JWS (JWT) signature: `signing_input` is `BASE64URL(header).BASE64URL(payload)`
    /// as sent, `signature` the base64url-decoded signature and `jwk` the public key as JSON.
    ///
    /// `Ok(false)` for a signature that does not verify (including one of the wrong length);
    /// `Err` when the key is unusable (not JSON, wrong `kty`/`crv`, bad base64url, size out
    /// of range, or an `alg` member naming another algorithm).
    pub fn verify_signature(
        alg: Algorithm,
        jwk: &str,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<bool, KeyError> {
        backend::crypto_verify_signature(alg, jwk, signing_input, signature)
    }
}

/// Counters and histograms exported by the gateway ([`Capability::Metrics`](crate::Capability::Metrics)).
///
/// The gateway prefixes names with `chasqui_plugin_<name>_` and adds `service` and
/// `environment` labels. Names and label keys are `[a-z_][a-z0-9_]*`; at most 4 labels.
pub mod metrics {
    use super::backend;

    /// Adds `value` to the counter `name`.
    pub fn counter_add(name: &str, value: u64, labels: &[(&str, &str)]) {
        backend::metrics_counter_add(name, value, labels);
    }

    /// Records one observation in the histogram `name`.
    pub fn histogram_record(name: &str, value: f64, labels: &[(&str, &str)]) {
        backend::metrics_histogram_record(name, value, labels);
    }
}

/// The gateway's hash-chained audit ledger ([`Capability::Ledger`](crate::Capability::Ledger)).
pub mod ledger {
    use super::backend;

    /// Where an appended entry sits in the ledger.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Receipt {
        /// The entry's position, from 0.
        pub position: u64,
        /// The entry's chained hash (lowercase hex SHA-256).
        pub hash: String,
    }

    /// The ledger refused an entry; the text says why.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("ledger append refused: {0}")]
    pub struct LedgerError(pub String);

    /// Appends a piece of evidence: `kind` (`[a-z0-9._-]`, at most 64 bytes) says what it is,
    /// `payload` is the evidence. The gateway records the plugin, request id and time with it.
    pub fn append(kind: &str, payload: &serde_json::Value) -> Result<Receipt, LedgerError> {
        backend::ledger_append(kind, &payload.to_string())
    }
}

/// The current request's context ([`Capability::Context`](crate::Capability::Context)).
pub mod context {
    use super::backend;

    /// Who is calling which service, as the gateway established it before any plugin ran.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Context {
        /// The consumer's entity code; `None` on a service without consumer authentication.
        pub consumer_entity: Option<String>,
        /// The consumer's system code; `None` like `consumer_entity`.
        pub consumer_system: Option<String>,
        /// The catalog code of the service called.
        pub service: String,
        /// The environment called: `pruebas` (test) or `produccion`.
        pub environment: String,
        /// The gateway's request id.
        pub request_id: String,
        /// The W3C trace id, if the request is traced.
        pub trace_id: Option<String>,
    }

    /// The current request's context (all empty during [`Plugin::new`](crate::Plugin::new)).
    pub fn get() -> Context {
        backend::context_get()
    }

    /// The calling client's IP address as text, without port; `None` outside a request.
    pub fn client_address() -> Option<String> {
        backend::context_client_address()
    }
}

/// Security incidents, stored and notified by the gateway
/// ([`Capability::Incident`](crate::Capability::Incident)).
pub mod incident {
    use super::backend;

    /// How serious an incident is.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Severity {
        /// Worth recording.
        Low,
        /// Worth a look.
        Medium,
        /// Needs attention.
        High,
        /// Needs attention now.
        Critical,
    }

    /// Whom the gateway notifies about an incident.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Party {
        /// The entity that publishes the service called.
        Publisher,
        /// The calling entity.
        Consumer,
    }

    /// One incident, as a plugin reports it. The gateway adds the request's context.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Incident {
        /// What happened: `[a-z0-9._-]`, at most 64 bytes (e.g. `cgii.sqli`).
        pub kind: String,
        /// How serious it is.
        pub severity: Severity,
        /// One line for humans, at most 256 bytes.
        pub summary: String,
        /// The evidence, at most 16 KiB as JSON.
        pub detail: serde_json::Value,
        /// Whether the plugin blocked the request.
        pub blocked: bool,
        /// Whom to notify.
        pub notify: Vec<Party>,
    }

    /// The gateway refused an incident; the text says why.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("incident refused: {0}")]
    pub struct IncidentError(pub String);

    /// Records an incident and returns its id.
    pub fn report(incident: &Incident) -> Result<String, IncidentError> {
        backend::incident_report(incident)
    }
}

/// Fees for usage reports ([`Capability::Metering`](crate::Capability::Metering)).
pub mod metering {
    use super::backend;

    /// Records a fee: `item` names it (`[a-z0-9._-]`, e.g. `ppe.qr`), `amount_minor` is in
    /// minor units (centavos) of `currency` (ISO 4217, e.g. `BOB`). The gateway attributes
    /// it to consumer x service x environment x hour. Never fails.
    pub fn record_fee(item: &str, amount_minor: u64, currency: &str) {
        backend::metering_record_fee(item, amount_minor, currency);
    }
}
