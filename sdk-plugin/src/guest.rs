//! The component glue, compiled only for `wasm32`: the wit-bindgen bindings, the exports
//! that drive a [`Plugin`], and the host functions' backend over the WIT imports.

use crate::{http, Capability, Phase, Plugin};
use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

/// The bindings generated from `wit/plugin.wit`.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_chasqui_world",
        default_bindings_module: "chasqui_plugin_sdk::__private::bindings",
    });
}

use bindings::exports::chasqui::plugin::handler as wit;

thread_local! {
    /// The plugin instance that `init` built (one per component instance).
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    /// The header fields of the last head a phase saw, kept so that the next head is parsed
    /// into the same strings: a reused instance then parses a head without allocating (in
    /// Wasm, each allocation and free costs about as much as parsing a field). A phase gets
    /// only the fields of its own head; the vector is never shown to the plugin otherwise.
    static SPARE_HEADERS: RefCell<Vec<http::Header>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the configured plugin. A phase before `init` breaks the contract: trap.
fn with_plugin<P: Plugin, R>(f: impl FnOnce(&mut P) -> R) -> R {
    INSTANCE.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut().and_then(|plugin| plugin.downcast_mut::<P>()) {
            Some(plugin) => f(plugin),
            None => std::process::abort(),
        }
    })
}

/// The exported `handler` interface for the plugin type `P`.
pub struct Glue<P>(PhantomData<P>);

impl<P: Plugin> wit::Guest for Glue<P> {
    fn metadata() -> wit::PluginMetadata {
        let metadata = P::METADATA;
        wit::PluginMetadata {
            name: metadata.name.into(),
            version: metadata.version.into(),
            capabilities: metadata
                .capabilities
                .iter()
                .map(|c| Capability::as_str(*c).into())
                .collect(),
            phases: metadata
                .phases
                .iter()
                .map(|phase| phase_to_wit(*phase))
                .collect(),
            config_schema: metadata.config_schema.into(),
        }
    }

    fn init(config: String) -> Result<(), String> {
        let plugin: P = crate::configure(&config)?;
        INSTANCE.with(|cell| *cell.borrow_mut() = Some(Box::new(plugin)));
        Ok(())
    }

    fn on_request_headers(request: wit::RequestHead) -> wit::HeadersAction {
        let request = http::RequestHead {
            method: request.method,
            path: request.path,
            headers: headers_from_block(&request.headers),
        };
        let action = with_plugin(|plugin: &mut P| plugin.on_request_headers(&request));
        keep_headers(request.headers);
        headers_action_to_wit(action)
    }

    fn on_request_body(chunk: wit::BodyChunk) -> wit::BodyAction {
        let chunk = http::BodyChunk {
            data: chunk.data,
            end_of_stream: chunk.end_of_stream,
        };
        body_action_to_wit(with_plugin(|plugin: &mut P| plugin.on_request_body(&chunk)))
    }

    fn on_response_headers(response: wit::ResponseHead) -> wit::HeadersAction {
        let response = http::ResponseHead {
            status: response.status,
            headers: headers_from_block(&response.headers),
        };
        let action = with_plugin(|plugin: &mut P| plugin.on_response_headers(&response));
        keep_headers(response.headers);
        headers_action_to_wit(action)
    }

    fn on_response_body(chunk: wit::BodyChunk) -> wit::BodyAction {
        let chunk = http::BodyChunk {
            data: chunk.data,
            end_of_stream: chunk.end_of_stream,
        };
        body_action_to_wit(with_plugin(|plugin: &mut P| {
            plugin.on_response_body(&chunk)
        }))
    }

    fn on_request_end() -> bool {
        // `false` (the plugin kept the default, which forgets nothing) lets the host skip
        // this call from now on.
        !crate::request_end::is_default(|| with_plugin(|plugin: &mut P| plugin.on_request_end()))
    }
}

fn phase_to_wit(phase: Phase) -> wit::Phase {
    match phase {
        Phase::RequestHeaders => wit::Phase::RequestHeaders,
        Phase::RequestBody => wit::Phase::RequestBody,
        Phase::ResponseHeaders => wit::Phase::ResponseHeaders,
        Phase::ResponseBody => wit::Phase::ResponseBody,
    }
}

/// The header fields of a field block: `name LF value LF` per field (see the WIT), parsed
/// into the strings of the previous head where there are some.
fn headers_from_block(block: &str) -> Vec<http::Header> {
    let mut headers = SPARE_HEADERS.with(|spare| std::mem::take(&mut *spare.borrow_mut()));
    let mut used = 0;
    let mut rest = block;
    while let Some((name, after_name)) = next_line(rest) {
        let Some((value, after_value)) = next_line(after_name) else {
            break;
        };
        rest = after_value;
        match headers.get_mut(used) {
            Some(header) => {
                header.name.clear();
                header.name.push_str(name);
                header.value.clear();
                header.value.push_str(value);
            }
            None => headers.push(http::Header {
                name: name.to_string(),
                value: value.to_string(),
            }),
        }
        used += 1;
    }
    headers.truncate(used);
    headers
}

/// The text before the first line feed and the text after it. A plain byte loop: fields are
/// short, and `str::split_once`'s word-at-a-time search costs more to set up than it saves.
fn next_line(text: &str) -> Option<(&str, &str)> {
    let end = text.bytes().position(|b| b == b'\n')?;
    // A line feed is ASCII, so both sides of it are on character boundaries.
    Some((text.get(..end)?, text.get(end + 1..)?))
}

/// Keeps a head's fields for the next [`headers_from_block`].
fn keep_headers(headers: Vec<http::Header>) {
    SPARE_HEADERS.with(|spare| *spare.borrow_mut() = headers);
}

fn headers_to_wit(headers: Vec<http::Header>) -> Vec<wit::Header> {
    headers
        .into_iter()
        .map(|h| wit::Header {
            name: h.name,
            value: h.value,
        })
        .collect()
}

fn response_to_wit(response: http::Response) -> wit::Response {
    wit::Response {
        status: response.status,
        headers: headers_to_wit(response.headers),
        body: response.body,
    }
}

fn headers_action_to_wit(action: http::HeadersAction) -> wit::HeadersAction {
    match action {
        http::HeadersAction::Continue => wit::HeadersAction::Continue,
        http::HeadersAction::Modify(changes) => wit::HeadersAction::Modify(wit::HeaderChanges {
            set: headers_to_wit(changes.set),
            remove: changes.remove,
        }),
        http::HeadersAction::Respond(response) => {
            wit::HeadersAction::Respond(response_to_wit(response))
        }
    }
}

fn body_action_to_wit(action: http::BodyAction) -> wit::BodyAction {
    match action {
        http::BodyAction::Continue => wit::BodyAction::Continue,
        http::BodyAction::Replace(data) => wit::BodyAction::Replace(data),
        http::BodyAction::Respond(response) => wit::BodyAction::Respond(response_to_wit(response)),
    }
}

/// The host functions of [`crate::host`], over the WIT imports.
pub(crate) mod backend {
    use super::bindings::chasqui::plugin as imports;
    use crate::host::{context::Context, crypto, incident, kv::KvError, ledger, log::Level};

    pub fn log_write(level: Level, message: &str) {
        let level = match level {
            Level::Trace => imports::log::Level::Trace,
            Level::Debug => imports::log::Level::Debug,
            Level::Info => imports::log::Level::Info,
            Level::Warn => imports::log::Level::Warn,
            Level::Error => imports::log::Level::Error,
        };
        imports::log::write(level, message);
    }

    fn kv_error(err: imports::kv::Error) -> KvError {
        match err {
            imports::kv::Error::TooLarge => KvError::TooLarge,
            imports::kv::Error::QuotaExceeded => KvError::QuotaExceeded,
            imports::kv::Error::Unavailable(why) => KvError::Unavailable(why),
        }
    }

    pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        imports::kv::get(key).map_err(kv_error)
    }

    pub fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        imports::kv::set(key, value, ttl_ms).map_err(kv_error)
    }

    pub fn kv_delete(key: &str) -> Result<(), KvError> {
        imports::kv::delete(key).map_err(kv_error)
    }

    pub fn kv_set_if_absent(
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<Option<Vec<u8>>, KvError> {
        imports::kv::set_if_absent(key, value, ttl_ms).map_err(kv_error)
    }

    pub fn kv_increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        imports::kv::increment(key, delta, ttl_ms).map_err(kv_error)
    }

    pub fn clock_now_ms() -> u64 {
        imports::clock::now_ms()
    }

    pub fn clock_monotonic_ns() -> u64 {
        imports::clock::monotonic_ns()
    }

    /// A 32-byte digest from the host; any other length breaks the contract: trap.
    fn digest(bytes: Vec<u8>) -> [u8; 32] {
        match <[u8; 32]>::try_from(bytes) {
            Ok(digest) => digest,
            Err(_) => std::process::abort(),
        }
    }

    pub fn crypto_sha256(data: &[u8]) -> [u8; 32] {
        digest(imports::crypto::sha256(data))
    }

    pub fn crypto_hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
        digest(imports::crypto::hmac_sha256(key, data))
    }

    pub fn crypto_verify_signature(
        alg: crypto::Algorithm,
        jwk: &str,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<bool, crypto::KeyError> {
        let alg = match alg {
            crypto::Algorithm::Rs256 => imports::crypto::Algorithm::Rs256,
            crypto::Algorithm::Es256 => imports::crypto::Algorithm::Es256,
        };
        imports::crypto::verify_signature(alg, jwk, signing_input, signature)
            .map_err(crypto::KeyError)
    }

    fn labels(labels: &[(&str, &str)]) -> Vec<imports::metrics::Label> {
        labels
            .iter()
            .map(|(key, value)| imports::metrics::Label {
                key: (*key).into(),
                value: (*value).into(),
            })
            .collect()
    }

    pub fn metrics_counter_add(name: &str, value: u64, label_list: &[(&str, &str)]) {
        imports::metrics::counter_add(name, value, &labels(label_list));
    }

    pub fn metrics_histogram_record(name: &str, value: f64, label_list: &[(&str, &str)]) {
        imports::metrics::histogram_record(name, value, &labels(label_list));
    }

    pub fn ledger_append(
        kind: &str,
        payload_json: &str,
    ) -> Result<ledger::Receipt, ledger::LedgerError> {
        imports::ledger::append(kind, payload_json)
            .map(|receipt| ledger::Receipt {
                position: receipt.position,
                hash: receipt.hash,
            })
            .map_err(ledger::LedgerError)
    }

    pub fn context_get() -> Context {
        let context = imports::context::get();
        Context {
            consumer_entity: context.consumer_entity,
            consumer_system: context.consumer_system,
            service: context.service,
            environment: context.environment,
            request_id: context.request_id,
            trace_id: context.trace_id,
        }
    }

    pub fn context_client_address() -> Option<String> {
        imports::context::client_address()
    }

    pub fn incident_report(
        incident: &incident::Incident,
    ) -> Result<String, incident::IncidentError> {
        use imports::incident as wit;
        let report = wit::IncidentReport {
            kind: incident.kind.clone(),
            severity: match incident.severity {
                incident::Severity::Low => wit::Severity::Low,
                incident::Severity::Medium => wit::Severity::Medium,
                incident::Severity::High => wit::Severity::High,
                incident::Severity::Critical => wit::Severity::Critical,
            },
            summary: incident.summary.clone(),
            detail_json: incident.detail.to_string(),
            blocked: incident.blocked,
            notify: incident
                .notify
                .iter()
                .map(|party| match party {
                    incident::Party::Publisher => wit::Party::Publisher,
                    incident::Party::Consumer => wit::Party::Consumer,
                })
                .collect(),
        };
        wit::report(&report).map_err(incident::IncidentError)
    }

    pub fn metering_record_fee(item: &str, amount_minor: u64, currency: &str) {
        imports::metering::record_fee(item, amount_minor, currency);
    }
}
