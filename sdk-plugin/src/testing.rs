//! Run a plugin natively with `cargo test`, against fake host functions.
//!
//! A [`Harness`] builds the plugin the way the gateway does (metadata checked,
//! configuration validated against the declared schema, then [`Plugin::new`]), drives its
//! phases, and lets the test set the clock and the request context and inspect what the
//! plugin logged, counted, stored and appended to the ledger:
//!
//! ```
//! # use chasqui_plugin_sdk::{HeadersAction, Metadata, Plugin, Phase, RequestHead, Capability, host};
//! # struct Hello;
//! # impl Plugin for Hello {
//! #     type Config = chasqui_plugin_sdk::serde_json::Value;
//! #     const METADATA: Metadata = Metadata { name: "hello", version: "0.1.0",
//! #         capabilities: &[Capability::Log], phases: &[Phase::RequestHeaders], config_schema: "{}" };
//! #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Hello) }
//! #     fn on_request_headers(&mut self, _: &RequestHead) -> HeadersAction {
//! #         host::log::info("hello"); HeadersAction::Continue
//! #     }
//! # }
//! use chasqui_plugin_sdk::testing::Harness;
//! use chasqui_plugin_sdk::serde_json::json;
//!
//! let mut harness = Harness::<Hello>::new(json!({})).unwrap();
//! let action = harness.request_headers(&RequestHead::new("GET", "/"));
//! assert_eq!(action, HeadersAction::Continue);
//! assert_eq!(harness.logs()[0].message, "hello");
//! ```
//!
//! The fakes are strict where the gateway is: calling a host function whose capability the
//! plugin did not declare, calling a phase it did not declare, recording an invalid metric,
//! or returning an action that breaks the contract (a bad status or header, an oversized
//! body) panics with an explanation, because the gateway would refuse the plugin or fail
//! the request.

mod crypto;
mod schema;

pub use schema::SchemaError;

use crate::host::context::Context;
use crate::host::incident::{Incident, IncidentError, Party, Severity};
use crate::host::kv::KvError;
use crate::host::ledger::{LedgerError, Receipt};
use crate::host::log::Level;
use crate::{BodyAction, BodyChunk, Capability, Header, HeadersAction, Metadata, Phase, Plugin};
use crate::{RequestHead, Response, ResponseHead};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// The largest body a plugin may pass on or answer with (the gateway's default).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The largest key-value key (the gateway's default).
pub const MAX_KV_KEY_BYTES: usize = 512;
/// The largest key-value value (the gateway's default).
pub const MAX_KV_VALUE_BYTES: usize = 64 << 10;

/// Why a plugin could not be built from a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HarnessError {
    /// The plugin's metadata breaks the contract (the gateway would not load it).
    #[error("invalid plugin metadata: {0}")]
    Metadata(String),
    /// The declared configuration schema cannot be used.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The configuration does not match the schema; one message per violation.
    #[error("the configuration does not match the schema: {}", .0.join("; "))]
    Config(Vec<String>),
    /// The plugin refused the configuration (deserialization or [`Plugin::new`]).
    #[error("the plugin refused the configuration: {0}")]
    Init(String),
}

/// One log record written by the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its severity.
    pub level: Level,
    /// Its message.
    pub message: String,
}

/// Whether a metric sample went to a counter or a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// [`host::metrics::counter_add`](crate::host::metrics::counter_add).
    Counter,
    /// [`host::metrics::histogram_record`](crate::host::metrics::histogram_record).
    Histogram,
}

/// One metric sample recorded by the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    /// Counter or histogram.
    pub kind: MetricKind,
    /// The metric's name, as the plugin gave it (without the gateway's prefix).
    pub name: String,
    /// The value added or observed.
    pub value: f64,
    /// The labels, as given.
    pub labels: Vec<(String, String)>,
}

/// One entry appended to the fake ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    /// The entry's kind.
    pub kind: String,
    /// The evidence.
    pub payload: serde_json::Value,
    /// What the plugin got back. The fake chains `sha256(previous hash, kind, payload)`;
    /// the gateway's ledger has its own format.
    pub receipt: Receipt,
}

/// One incident reported by the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRecord {
    /// Its kind (`cgii.sqli`, ...).
    pub kind: String,
    /// Its severity.
    pub severity: Severity,
    /// Its one-line summary.
    pub summary: String,
    /// Its evidence.
    pub detail: serde_json::Value,
    /// Whether the plugin blocked the request.
    pub blocked: bool,
    /// Whom to notify.
    pub notify: Vec<Party>,
}

/// One fee recorded by the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeRecord {
    /// What the fee is for (`ppe.qr`, ...).
    pub item: String,
    /// The amount in minor units (centavos).
    pub amount_minor: u64,
    /// The ISO 4217 currency.
    pub currency: String,
}

/// The fake host's state.
#[derive(Debug)]
struct FakeHost {
    capabilities: &'static [Capability],
    in_phase: bool,
    logs: Vec<LogRecord>,
    kv: BTreeMap<String, (Vec<u8>, Option<u64>)>,
    kv_failure: Option<KvError>,
    now_ms: u64,
    monotonic_ns: u64,
    context: Context,
    metrics: Vec<MetricSample>,
    ledger: Vec<LedgerEntry>,
    ledger_failure: Option<String>,
    client_address: Option<String>,
    incidents: Vec<IncidentRecord>,
    fees: Vec<FeeRecord>,
}

impl FakeHost {
    fn new(capabilities: &'static [Capability]) -> Self {
        FakeHost {
            capabilities,
            in_phase: false,
            logs: Vec::new(),
            kv: BTreeMap::new(),
            kv_failure: None,
            now_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            monotonic_ns: 1_000_000_000,
            context: Context {
                consumer_entity: Some("test-entity".into()),
                consumer_system: Some("test-system".into()),
                service: "test-service".into(),
                environment: "pruebas".into(),
                request_id: "test-request".into(),
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            },
            metrics: Vec::new(),
            ledger: Vec::new(),
            ledger_failure: None,
            client_address: Some("192.0.2.10".into()),
            incidents: Vec::new(),
            fees: Vec::new(),
        }
    }

    fn kv_live(&self, key: &str) -> Option<&Vec<u8>> {
        match self.kv.get(key) {
            Some((value, expires)) if expires.is_none_or(|at| self.now_ms < at) => Some(value),
            _ => None,
        }
    }
}

thread_local! {
    /// The fake host of the harness that is running plugin code on this thread.
    static CURRENT: RefCell<Option<Rc<RefCell<FakeHost>>>> = const { RefCell::new(None) };
}

/// Makes a harness's host current while plugin code runs; restores the previous on drop.
struct Installed(Option<Rc<RefCell<FakeHost>>>);

impl Installed {
    fn new(host: &Rc<RefCell<FakeHost>>, in_phase: bool) -> Self {
        host.borrow_mut().in_phase = in_phase;
        Installed(CURRENT.with(|current| current.replace(Some(Rc::clone(host)))))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|current| *current.borrow_mut() = self.0.take());
    }
}

/// A plugin instance with a fake host, driven by a test.
pub struct Harness<P: Plugin> {
    plugin: P,
    host: Rc<RefCell<FakeHost>>,
}

impl<P: Plugin> std::fmt::Debug for Harness<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("plugin", &P::METADATA.name)
            .finish_non_exhaustive()
    }
}

impl<P: Plugin> Harness<P> {
    /// Builds the plugin from a configuration, as the gateway does at load: checks the
    /// metadata, validates the configuration against the declared schema (see
    /// [`SchemaError`] for the keywords the native checker implements), then calls
    /// [`Plugin::new`] with the fake host in place.
    pub fn new(config: serde_json::Value) -> Result<Self, HarnessError> {
        check_metadata(&P::METADATA).map_err(HarnessError::Metadata)?;
        let schema = schema::parse(P::METADATA.config_schema)?;
        let errors = schema::validate(&schema, &config);
        if !errors.is_empty() {
            return Err(HarnessError::Config(errors));
        }
        let host = Rc::new(RefCell::new(FakeHost::new(P::METADATA.capabilities)));
        let plugin = {
            let _installed = Installed::new(&host, false);
            crate::configure::<P>(&config.to_string()).map_err(HarnessError::Init)?
        };
        Ok(Harness { plugin, host })
    }

    /// The plugin itself.
    pub fn plugin(&mut self) -> &mut P {
        &mut self.plugin
    }

    fn expect_phase(phase: Phase) {
        if !P::METADATA.phases.contains(&phase) {
            panic!("the test drives {phase:?}, but the plugin's metadata does not declare it: the gateway would never call it");
        }
    }

    /// Runs the request headers phase.
    pub fn request_headers(&mut self, request: &RequestHead) -> HeadersAction {
        Self::expect_phase(Phase::RequestHeaders);
        let action = {
            let _installed = Installed::new(&self.host, true);
            self.plugin.on_request_headers(request)
        };
        check_headers_action(&action);
        action
    }

    /// Runs the request body phase on one chunk.
    pub fn request_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        Self::expect_phase(Phase::RequestBody);
        let action = {
            let _installed = Installed::new(&self.host, true);
            self.plugin.on_request_body(chunk)
        };
        check_body_action(&action);
        action
    }

    /// Runs the response headers phase.
    pub fn response_headers(&mut self, response: &ResponseHead) -> HeadersAction {
        Self::expect_phase(Phase::ResponseHeaders);
        let action = {
            let _installed = Installed::new(&self.host, true);
            self.plugin.on_response_headers(response)
        };
        check_headers_action(&action);
        action
    }

    /// Runs the response body phase on one chunk.
    pub fn response_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        Self::expect_phase(Phase::ResponseBody);
        let action = {
            let _installed = Installed::new(&self.host, true);
            self.plugin.on_response_body(chunk)
        };
        check_body_action(&action);
        action
    }

    /// Runs `f` on the plugin with the fake host in place, as inside a phase: for testing
    /// a plugin's own functions that call [`host`](crate::host) directly.
    pub fn run<R>(&mut self, f: impl FnOnce(&mut P) -> R) -> R {
        let _installed = Installed::new(&self.host, true);
        f(&mut self.plugin)
    }

    /// Ends the current request ([`Plugin::on_request_end`]).
    pub fn end_request(&mut self) {
        let _installed = Installed::new(&self.host, true);
        self.plugin.on_request_end();
    }

    /// Sets the wall clock (milliseconds since the Unix epoch). It starts at 2026-01-01.
    pub fn set_now_ms(&self, now_ms: u64) {
        self.host.borrow_mut().now_ms = now_ms;
    }

    /// Moves both clocks forward; key-value entries expire accordingly.
    pub fn advance(&self, by: Duration) {
        let mut host = self.host.borrow_mut();
        host.now_ms = host
            .now_ms
            .saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
        host.monotonic_ns = host
            .monotonic_ns
            .saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Sets the request context that phases see (the default names a `test-entity`
    /// consumer calling `test-service` in `test`).
    pub fn set_context(&self, context: Context) {
        self.host.borrow_mut().context = context;
    }

    /// Every record the plugin logged, oldest first.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.host.borrow().logs.clone()
    }

    /// Every metric sample the plugin recorded, oldest first.
    pub fn metrics(&self) -> Vec<MetricSample> {
        self.host.borrow().metrics.clone()
    }

    /// The total of counter `name` with exactly these labels (in any order).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.samples(MetricKind::Counter, name, labels)
            .iter()
            .sum::<f64>() as u64
    }

    /// The observations of histogram `name` with exactly these labels (in any order).
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.samples(MetricKind::Histogram, name, labels)
    }

    fn samples(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wanted.sort();
        let host = self.host.borrow();
        let matching = host.metrics.iter().filter(|sample| {
            let mut labels = sample.labels.clone();
            labels.sort();
            sample.kind == kind && sample.name == name && labels == wanted
        });
        matching.map(|sample| sample.value).collect()
    }

    /// Every entry the plugin appended to the ledger, oldest first.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.host.borrow().ledger.clone()
    }

    /// The live value under `key` in the plugin's key-value namespace.
    pub fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.host.borrow().kv_live(key).cloned()
    }

    /// Stores a value in the plugin's key-value namespace, as if an earlier request had.
    pub fn kv_set(&self, key: &str, value: &[u8], ttl: Option<Duration>) {
        let mut host = self.host.borrow_mut();
        let expires = ttl.map(|ttl| {
            host.now_ms
                .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        });
        host.kv.insert(key.to_string(), (value.to_vec(), expires));
    }

    /// Makes every key-value call fail with `error` (`None` heals the store).
    pub fn fail_kv(&self, error: Option<KvError>) {
        self.host.borrow_mut().kv_failure = error;
    }

    /// Makes every ledger append fail with this reason (`None` heals the ledger).
    pub fn fail_ledger(&self, reason: Option<&str>) {
        self.host.borrow_mut().ledger_failure = reason.map(str::to_string);
    }

    /// Sets the client address that [`host::context::client_address`](crate::host::context::client_address)
    /// returns during phases (`192.0.2.10` until set).
    pub fn set_client_address(&self, address: Option<&str>) {
        self.host.borrow_mut().client_address = address.map(str::to_string);
    }

    /// The incidents reported so far, in order.
    pub fn incidents(&self) -> Vec<IncidentRecord> {
        self.host.borrow().incidents.clone()
    }

    /// The fees recorded so far, in order.
    pub fn fees(&self) -> Vec<FeeRecord> {
        self.host.borrow().fees.clone()
    }
}

/// Checks metadata as the gateway does when it loads a plugin.
pub fn check_metadata(metadata: &Metadata) -> Result<(), String> {
    let name = metadata.name;
    let name_ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        return Err(format!(
            "the name `{name}` is not [a-z][a-z0-9-]* of at most 64 bytes"
        ));
    }
    let core = metadata
        .version
        .split(['-', '+'])
        .next()
        .unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3
        || !parts
            .iter()
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("the version `{}` is not semver", metadata.version));
    }
    for (index, capability) in metadata.capabilities.iter().enumerate() {
        if metadata.capabilities[..index].contains(capability) {
            return Err(format!("the capability {capability:?} is listed twice"));
        }
    }
    for (index, phase) in metadata.phases.iter().enumerate() {
        if metadata.phases[..index].contains(phase) {
            return Err(format!("the phase {phase:?} is listed twice"));
        }
    }
    Ok(())
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fn check_headers(headers: &[Header]) {
    for header in headers {
        if !is_token(&header.name) {
            panic!(
                "the plugin returned the header name {:?}: names are lowercase HTTP tokens",
                header.name
            );
        }
        if header.value.contains(['\r', '\n', '\0']) {
            panic!(
                "the plugin returned a value with CR, LF or NUL for the header {:?}",
                header.name
            );
        }
    }
}

fn check_response(response: &Response) {
    if !(200..=599).contains(&response.status) {
        panic!(
            "the plugin answered with status {}: the gateway accepts 200 to 599",
            response.status
        );
    }
    check_headers(&response.headers);
    check_body_size(response.body.len());
}

fn check_body_size(len: usize) {
    if len > MAX_BODY_BYTES {
        panic!(
            "the plugin returned a body of {len} bytes: the gateway's limit is {MAX_BODY_BYTES}"
        );
    }
}

fn check_headers_action(action: &HeadersAction) {
    match action {
        HeadersAction::Continue => {}
        HeadersAction::Modify(changes) => {
            check_headers(&changes.set);
            if let Some(name) = changes
                .remove
                .iter()
                .find(|name| !is_token(&name.to_ascii_lowercase()))
            {
                panic!("the plugin removes the header {name:?}, which is not an HTTP token");
            }
        }
        HeadersAction::Respond(response) => check_response(response),
    }
}

fn check_body_action(action: &BodyAction) {
    match action {
        BodyAction::Continue => {}
        BodyAction::Replace(data) => check_body_size(data.len()),
        BodyAction::Respond(response) => check_response(response),
    }
}

fn is_metric_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The host functions of [`crate::host`], over the current harness's fake host.
pub(crate) mod backend {
    use super::*;
    use crate::host::crypto::{Algorithm, KeyError};

    /// Runs `f` on the current fake host, after checking that the plugin declared `capability`.
    fn with_host<R>(
        capability: Capability,
        function: &str,
        f: impl FnOnce(&mut FakeHost) -> R,
    ) -> R {
        let Some(host) = CURRENT.with(|current| current.borrow().clone()) else {
            panic!("host::{function} called outside a test harness: drive the plugin with chasqui_plugin_sdk::testing::Harness");
        };
        let mut host = host.borrow_mut();
        if !host.capabilities.contains(&capability) {
            panic!(
                "the plugin called host::{function} but does not declare Capability::{capability:?}: the gateway would refuse to load it"
            );
        }
        f(&mut host)
    }

    pub fn log_write(level: Level, message: &str) {
        with_host(Capability::Log, "log::write", |host| {
            host.logs.push(LogRecord {
                level,
                message: message.to_string(),
            })
        });
    }

    fn kv_check(host: &FakeHost, key: &str, value_len: usize) -> Result<(), KvError> {
        if let Some(error) = &host.kv_failure {
            return Err(error.clone());
        }
        if key.len() > MAX_KV_KEY_BYTES || value_len > MAX_KV_VALUE_BYTES {
            return Err(KvError::TooLarge);
        }
        Ok(())
    }

    pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        with_host(Capability::Kv, "kv::get", |host| {
            kv_check(host, key, 0)?;
            Ok(host.kv_live(key).cloned())
        })
    }

    pub fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        with_host(Capability::Kv, "kv::set", |host| {
            kv_check(host, key, value.len())?;
            let expires = ttl_ms.map(|ttl| host.now_ms.saturating_add(ttl));
            host.kv.insert(key.to_string(), (value.to_vec(), expires));
            Ok(())
        })
    }

    pub fn kv_delete(key: &str) -> Result<(), KvError> {
        with_host(Capability::Kv, "kv::delete", |host| {
            kv_check(host, key, 0)?;
            host.kv.remove(key);
            Ok(())
        })
    }

    pub fn kv_set_if_absent(
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<Option<Vec<u8>>, KvError> {
        with_host(Capability::Kv, "kv::set_if_absent", |host| {
            kv_check(host, key, value.len())?;
            if let Some(existing) = host.kv_live(key) {
                return Ok(Some(existing.clone()));
            }
            let expires = ttl_ms.map(|ttl| host.now_ms.saturating_add(ttl));
            host.kv.insert(key.to_string(), (value.to_vec(), expires));
            Ok(None)
        })
    }

    pub fn kv_increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        with_host(Capability::Kv, "kv::increment", |host| {
            kv_check(host, key, 8)?;
            let now = host.now_ms;
            let (current, expires) = match host.kv.get(key) {
                Some((value, expires)) if expires.is_none_or(|at| now < at) => {
                    let current = <[u8; 8]>::try_from(value.as_slice())
                        .map(i64::from_le_bytes)
                        .unwrap_or(0);
                    (current, *expires)
                }
                _ => (0, ttl_ms.map(|ttl| now.saturating_add(ttl))),
            };
            let next = current.saturating_add(delta);
            host.kv
                .insert(key.to_string(), (next.to_le_bytes().to_vec(), expires));
            Ok(next)
        })
    }

    pub fn clock_now_ms() -> u64 {
        with_host(Capability::Clock, "clock::now_ms", |host| host.now_ms)
    }

    pub fn clock_monotonic_ns() -> u64 {
        with_host(Capability::Clock, "clock::monotonic_ns", |host| {
            host.monotonic_ns
        })
    }

    pub fn crypto_sha256(data: &[u8]) -> [u8; 32] {
        with_host(Capability::Crypto, "crypto::sha256", |_| {
            crypto::sha256(data)
        })
    }

    pub fn crypto_hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
        with_host(Capability::Crypto, "crypto::hmac_sha256", |_| {
            crypto::hmac_sha256(key, data)
        })
    }

    pub fn crypto_verify_signature(
        alg: Algorithm,
        jwk: &str,
        input: &[u8],
        sig: &[u8],
    ) -> Result<bool, KeyError> {
        with_host(Capability::Crypto, "crypto::verify_signature", |_| {
            crypto::verify_signature(alg, jwk, input, sig)
        })
    }

    fn record(kind: MetricKind, name: &str, value: f64, labels: &[(&str, &str)]) {
        with_host(Capability::Metrics, "metrics", |host| {
            if !is_metric_name(name) {
                panic!("the metric name {name:?} is not [a-z_][a-z0-9_]*: the gateway would drop the sample");
            }
            if labels.len() > 4 || !labels.iter().all(|(key, _)| is_metric_name(key)) {
                panic!(
                    "the metric {name:?} has labels {labels:?}: at most 4, keys [a-z_][a-z0-9_]*"
                );
            }
            let labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            host.metrics.push(MetricSample {
                kind,
                name: name.to_string(),
                value,
                labels,
            });
        });
    }

    pub fn metrics_counter_add(name: &str, value: u64, labels: &[(&str, &str)]) {
        record(MetricKind::Counter, name, value as f64, labels);
    }

    pub fn metrics_histogram_record(name: &str, value: f64, labels: &[(&str, &str)]) {
        record(MetricKind::Histogram, name, value, labels);
    }

    pub fn ledger_append(kind: &str, payload_json: &str) -> Result<Receipt, LedgerError> {
        with_host(Capability::Ledger, "ledger::append", |host| {
            if let Some(reason) = &host.ledger_failure {
                return Err(LedgerError(reason.clone()));
            }
            let kind_ok = !kind.is_empty()
                && kind.len() <= 64
                && kind
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if !kind_ok {
                return Err(LedgerError(format!(
                    "the kind {kind:?} is not [a-z0-9._-] of at most 64 bytes"
                )));
            }
            let payload: serde_json::Value = serde_json::from_str(payload_json)
                .map_err(|err| LedgerError(format!("payload is not JSON: {err}")))?;
            let previous = host
                .ledger
                .last()
                .map(|entry| entry.receipt.hash.clone())
                .unwrap_or_default();
            let chained = [
                previous.as_bytes(),
                b"\n",
                kind.as_bytes(),
                b"\n",
                payload_json.as_bytes(),
            ]
            .concat();
            let hash = crypto::sha256(&chained)
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            let receipt = Receipt {
                position: host.ledger.len() as u64,
                hash,
            };
            host.ledger.push(LedgerEntry {
                kind: kind.to_string(),
                payload,
                receipt: receipt.clone(),
            });
            Ok(receipt)
        })
    }

    pub fn context_get() -> Context {
        with_host(Capability::Context, "context::get", |host| {
            if host.in_phase {
                host.context.clone()
            } else {
                Context::default()
            }
        })
    }

    pub fn context_client_address() -> Option<String> {
        with_host(Capability::Context, "context::client_address", |host| {
            if host.in_phase {
                host.client_address.clone()
            } else {
                None
            }
        })
    }

    pub fn incident_report(incident: &Incident) -> Result<String, IncidentError> {
        with_host(Capability::Incident, "incident::report", |host| {
            let kind_ok = !incident.kind.is_empty()
                && incident.kind.len() <= 64
                && incident
                    .kind
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if !kind_ok {
                return Err(IncidentError(format!(
                    "the kind {:?} is not [a-z0-9._-] of at most 64 bytes",
                    incident.kind
                )));
            }
            if incident.summary.len() > 256 {
                return Err(IncidentError("the summary is over 256 bytes".into()));
            }
            if incident.detail.to_string().len() > 16 << 10 {
                return Err(IncidentError("the detail is over 16 KiB".into()));
            }
            host.incidents.push(IncidentRecord {
                kind: incident.kind.clone(),
                severity: incident.severity,
                summary: incident.summary.clone(),
                detail: incident.detail.clone(),
                blocked: incident.blocked,
                notify: incident.notify.clone(),
            });
            Ok(format!("inc-{}", host.incidents.len()))
        })
    }

    pub fn metering_record_fee(item: &str, amount_minor: u64, currency: &str) {
        with_host(Capability::Metering, "metering::record_fee", |host| {
            let item_ok = !item.is_empty()
                && item.len() <= 64
                && item
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if !item_ok {
                panic!("the fee item {item:?} is not [a-z0-9._-] of at most 64 bytes: the gateway would drop it");
            }
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                panic!("the currency {currency:?} is not an ISO 4217 code: the gateway would drop the fee");
            }
            host.fees.push(FeeRecord {
                item: item.to_string(),
                amount_minor,
                currency: currency.to_string(),
            });
        });
    }
}
