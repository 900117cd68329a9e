//! Write [Chasqui](https://chasqui.agetic.gob.bo) gateway plugins in Rust.
//!
//! A plugin is a type that implements [`Plugin`], exported with [`export_plugin!`]:
//!
//! ```
//! use chasqui_plugin_sdk::{export_plugin, host, HeadersAction, HeaderChanges, Metadata, Capability, Phase, Plugin, RequestHead};
//!
//! /// Adds a header naming the environment to every request.
//! pub struct Tag { value: String }
//!
//! impl Plugin for Tag {
//!     type Config = String;
//!     const METADATA: Metadata = Metadata {
//!         name: "tag",
//!         version: "0.1.0",
//!         capabilities: &[Capability::Log],
//!         phases: &[Phase::RequestHeaders],
//!         config_schema: r#"{ "type": "string", "minLength": 1 }"#,
//!     };
//!
//!     fn new(value: String) -> Result<Self, String> {
//!         host::log::info("tag configured");
//!         Ok(Tag { value })
//!     }
//!
//!     fn on_request_headers(&mut self, _request: &RequestHead) -> HeadersAction {
//!         HeadersAction::Modify(HeaderChanges::new().set("x-tag", &self.value))
//!     }
//! }
//!
//! export_plugin!(Tag);
//! ```
//!
//! - [`Plugin`] is built once per instance from its JSON configuration ([`Plugin::new`]) and
//!   then handles requests, one at a time, phase by phase. Every phase method has a default
//!   that continues, so a plugin writes only the phases it declares in [`Metadata::phases`].
//! - [`host`] holds the host functions (log, key-value state, clock, crypto, metrics,
//!   ledger, request context). A plugin may call only those it lists in
//!   [`Metadata::capabilities`].
//! - [`testing`] (native builds only) runs a plugin with plain `cargo test`, against fake
//!   host functions that the test can set up and inspect.
//! - On `wasm32`, [`export_plugin!`] generates the component glue for the WIT world in
//!   this crate's `wit/` folder; on other targets it only checks the type.

#![warn(missing_docs)]

// The generated glue names this crate by its public name, in this crate as in plugins.
#[cfg(target_arch = "wasm32")]
extern crate self as chasqui_plugin_sdk;

mod http;

pub mod host;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[cfg(target_arch = "wasm32")]
mod guest;

pub use http::{
    BodyAction, BodyChunk, Header, HeaderChanges, HeadersAction, RequestHead, Response,
    ResponseHead,
};
pub use serde_json;

/// A Chasqui plugin.
///
/// The host builds one value per plugin instance with [`Plugin::new`], then calls the phase
/// methods for one request at a time, in order: request headers, request body chunks,
/// response headers, response body chunks, and finally [`Plugin::on_request_end`]. Only the
/// phases listed in [`Metadata::phases`] are called. An instance may serve many requests,
/// so anything a plugin keeps about the current request must be cleared in
/// [`Plugin::on_request_end`].
///
/// A panic in any method is a trap: the host fails the request (open or closed, as policy
/// says) and discards the instance.
pub trait Plugin: Sized + 'static {
    /// The configuration, deserialized with serde from the JSON that policy gives.
    type Config: serde::de::DeserializeOwned;

    /// Name, version, needed capabilities, handled phases and configuration schema.
    const METADATA: Metadata;

    /// Builds an instance from its configuration. `Err` refuses the configuration, with a
    /// message for the operator; the gateway then refuses the policy that holds it.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Handles the request head, before the upstream is called.
    fn on_request_headers(&mut self, request: &RequestHead) -> HeadersAction {
        let _ = request;
        HeadersAction::Continue
    }

    /// Handles one chunk of the request body, before it is sent upstream.
    fn on_request_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        let _ = chunk;
        BodyAction::Continue
    }

    /// Handles the response head, before it is sent to the client.
    fn on_response_headers(&mut self, response: &ResponseHead) -> HeadersAction {
        let _ = response;
        HeadersAction::Continue
    }

    /// Handles one chunk of the response body, before it is sent to the client.
    fn on_response_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        let _ = chunk;
        BodyAction::Continue
    }

    /// Runs after the last phase of each request, however it ended: forget the request here.
    ///
    /// A plugin that keeps nothing per request leaves this default, and the gateway then
    /// stops calling it (one host call less per request).
    fn on_request_end(&mut self) {
        request_end::mark_default();
    }
}

/// What a plugin says about itself; the gateway reads it when it loads the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// The name policies use for the plugin: `[a-z][a-z0-9-]*`, at most 64 bytes.
    pub name: &'static str,
    /// The plugin's version (semver); `env!("CARGO_PKG_VERSION")` is a good value.
    pub version: &'static str,
    /// The host interfaces the plugin calls. Calling any other is refused: in tests the
    /// harness panics, and the gateway refuses to load the component.
    pub capabilities: &'static [Capability],
    /// The phases the plugin handles; the others are never called.
    pub phases: &'static [Phase],
    /// The JSON Schema (draft 2020-12) of the configuration, as JSON text
    /// (`include_str!("config.schema.json")` keeps it in its own file).
    pub config_schema: &'static str,
}

/// A host interface that a plugin may need; each one is granted separately by policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// [`host::log`]: write to the gateway's log.
    Log,
    /// [`host::kv`]: key-value state shared by the plugin's instances.
    Kv,
    /// [`host::clock`]: wall-clock and monotonic time.
    Clock,
    /// [`host::crypto`]: hashes, HMAC and JWS signature verification.
    Crypto,
    /// [`host::metrics`]: counters and histograms.
    Metrics,
    /// [`host::ledger`]: append evidence to the audit ledger.
    Ledger,
    /// [`host::context`]: who is calling which service.
    Context,
    /// [`host::incident`]: report security incidents.
    Incident,
    /// [`host::metering`]: record fees for usage reports.
    Metering,
}

impl Capability {
    /// Every capability, in WIT order.
    pub const ALL: [Capability; 9] = [
        Capability::Log,
        Capability::Kv,
        Capability::Clock,
        Capability::Crypto,
        Capability::Metrics,
        Capability::Ledger,
        Capability::Context,
        Capability::Incident,
        Capability::Metering,
    ];

    /// The WIT interface name (`log`, `kv`, ...), as listed in the plugin's metadata.
    pub const fn as_str(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Kv => "kv",
            Capability::Clock => "clock",
            Capability::Crypto => "crypto",
            Capability::Metrics => "metrics",
            Capability::Ledger => "ledger",
            Capability::Context => "context",
            Capability::Incident => "incident",
            Capability::Metering => "metering",
        }
    }
}

/// A point in the request's path where a plugin can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// [`Plugin::on_request_headers`].
    RequestHeaders,
    /// [`Plugin::on_request_body`].
    RequestBody,
    /// [`Plugin::on_response_headers`].
    ResponseHeaders,
    /// [`Plugin::on_response_body`].
    ResponseBody,
}

/// Builds a plugin from its configuration's JSON text, as the host's `init` call does.
fn configure<P: Plugin>(config_json: &str) -> Result<P, String> {
    let config = serde_json::from_str::<P::Config>(config_json)
        .map_err(|err| format!("invalid configuration: {err}"))?;
    P::new(config)
}

/// Makes `$plugin` (a type implementing [`Plugin`]) the plugin of this crate.
///
/// Use it once, in the crate's `lib.rs`. When the crate is compiled for `wasm32` it
/// generates the exports of the WIT world `chasqui:plugin/plugin`; on other targets it
/// only checks that the type implements [`Plugin`].
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            fn __chasqui_is_plugin<P: $crate::Plugin>() {}
            let _ = __chasqui_is_plugin::<$plugin>;
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __ChasquiGlue = $crate::__private::Glue<$plugin>;
            $crate::__private::bindings::__export_chasqui_world!(
                __ChasquiGlue with_types_in $crate::__private::bindings
            );
        };
    };
}

/// Whether the last `on_request_end` was the trait's default, which tells the gateway
/// that the plugin keeps nothing per request.
pub(crate) mod request_end {
    use std::cell::Cell;

    thread_local! {
        static DEFAULT_RAN: Cell<bool> = const { Cell::new(false) };
    }

    /// Called by the default [`crate::Plugin::on_request_end`].
    pub(crate) fn mark_default() {
        DEFAULT_RAN.with(|ran| ran.set(true));
    }

    /// Runs `end` and says whether it was the default implementation.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn is_default(end: impl FnOnce()) -> bool {
        DEFAULT_RAN.with(|ran| ran.set(false));
        end();
        DEFAULT_RAN.with(|ran| ran.get())
    }

    #[cfg(test)]
    mod tests {
        use super::is_default;
        use crate::{Metadata, Plugin, RequestHead};

        const METADATA: Metadata = Metadata {
            name: "end",
            version: "0.0.0",
            capabilities: &[],
            phases: &[],
            config_schema: "{}",
        };

        /// Keeps nothing per request: the default `on_request_end`.
        struct Stateless;

        impl Plugin for Stateless {
            type Config = ();
            const METADATA: Metadata = METADATA;
            fn new((): ()) -> Result<Self, String> {
                Ok(Stateless)
            }
        }

        /// Remembers the path of the current request and forgets it at the end.
        struct Remembers(Option<String>);

        impl Plugin for Remembers {
            type Config = ();
            const METADATA: Metadata = METADATA;
            fn new((): ()) -> Result<Self, String> {
                Ok(Remembers(None))
            }
            fn on_request_headers(&mut self, request: &RequestHead) -> crate::HeadersAction {
                self.0 = Some(request.path.clone());
                crate::HeadersAction::Continue
            }
            fn on_request_end(&mut self) {
                self.0 = None;
            }
        }

        #[test]
        fn only_the_default_request_end_counts_as_keeping_nothing() {
            let mut stateless = Stateless;
            assert!(is_default(|| stateless.on_request_end()));
            let mut remembers = Remembers(None);
            let _ = remembers.on_request_headers(&RequestHead::new("GET", "/x"));
            assert!(!is_default(|| remembers.on_request_end()));
            assert_eq!(remembers.0, None);
            // The flag of an earlier default call does not leak into the next answer.
            assert!(is_default(|| stateless.on_request_end()));
            assert!(!is_default(|| remembers.on_request_end()));
        }
    }
}

/// Support for [`export_plugin!`]; not part of the API.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private {
    pub use crate::guest::{bindings, Glue};
    pub use wit_bindgen;
}
