//! The plugin host: runs WebAssembly components of the `chasqui:plugin`
//! world (`sdk-plugin/wit/plugin.wit`) with wasmtime, each inside limits
//! its policy sets.
//!
//! - Components are compiled once per content hash and cached on disk
//!   ([`cache`]); each plugin is pre-instantiated once.
//! - A plugin links only the host interfaces its policy grants; a component
//!   that imports more, or whose metadata asks for more, is refused at load.
//! - Its configuration is validated against the JSON Schema it declares, and
//!   `init` must accept it, at load: never at request time.
//! - Isolation: `request` mode gives each request a fresh instance, so no data
//!   survives from one request to the next; `pooled` mode reuses warm
//!   instances for hot paths.
//! - Limits: CPU per call by epoch deadline, memory by a store limiter and the
//!   pooling allocator, output sizes by checks on every result. A trap, a
//!   timeout or a broken contract fails the call; the instance is discarded;
//!   repeated failures open the plugin's [`breaker`].

pub mod breaker;
pub mod build;
pub mod cache;
pub mod chain;
mod handler;
mod host;

use breaker::{Breaker, Permit};
use host::HostState;
pub use host::RequestContext as Context;
pub use host::{PluginShared, RequestContext};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder,
};

wasmtime::component::bindgen!({
    path: "../sdk-plugin/wit",
    world: "plugin",
    anyhow: true,
});

use exports::chasqui::plugin::handler as wire;
pub use exports::chasqui::plugin::handler::{
    BodyAction, BodyChunk, Header, HeaderChanges, HeadersAction, Phase, PluginMetadata, Response,
};

/// The request as a plugin's `on-request-headers` sees it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The method, uppercase.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The header fields, in order (names lowercase).
    pub headers: Vec<Header>,
}

/// The response as a plugin's `on-response-headers` sees it.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The header fields, in order (names lowercase).
    pub headers: Vec<Header>,
}

/// The header fields as the WIT's field block: `name LF value LF` each.
/// One string instead of a list of records, because the canonical ABI calls
/// into the guest's allocator once per string it hands over: with ten
/// fields, 1 call instead of 21.
fn field_block(headers: &[Header]) -> String {
    let size = headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 2)
        .sum();
    let mut block = String::with_capacity(size);
    for header in headers {
        push_line(&mut block, &header.name);
        push_line(&mut block, &header.value);
    }
    block
}

/// Appends `text` and a line feed; a line feed inside `text` (impossible in
/// a real HTTP field, possible in a hand-made head) becomes a space, so that
/// it cannot shift the fields that follow.
fn push_line(block: &mut String, text: &str) {
    if text.contains('\n') {
        block.extend(text.chars().map(|c| if c == '\n' { ' ' } else { c }));
    } else {
        block.push_str(text);
    }
    block.push('\n');
}

/// Milliseconds per epoch tick.
const TICK: Duration = Duration::from_millis(1);

/// A host interface a plugin may be granted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// `log`
    Log,
    /// `kv`
    Kv,
    /// `clock`
    Clock,
    /// `crypto`
    Crypto,
    /// `metrics`
    Metrics,
    /// `ledger`
    Ledger,
    /// `context`
    Context,
    /// `incident`
    Incident,
    /// `metering`
    Metering,
}

impl Capability {
    /// Every capability.
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

    /// The WIT interface name.
    pub fn name(self) -> &'static str {
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

    /// Parses an interface name.
    pub fn parse(name: &str) -> Option<Capability> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The capability behind a component import name such as
    /// `chasqui:plugin/kv@0.3.0`.
    fn of_import(import: &str) -> Option<Capability> {
        let rest = import.strip_prefix("chasqui:plugin/")?;
        Self::parse(rest.split('@').next()?)
    }
}

/// How instances are used across requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A fresh instance for every request: nothing survives a request.
    #[default]
    Request,
    /// Warm instances reused across requests (one request at a time each).
    Pooled,
}

/// What a failed plugin call means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// Answer the client with a problem (the default).
    #[default]
    FailClosed,
    /// Go on as if the plugin had continued.
    FailOpen,
}

/// Limits of one plugin.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// CPU time per call, in milliseconds (epoch ticks).
    pub cpu_ms: u64,
    /// Linear memory per instance, in bytes.
    pub memory_bytes: usize,
    /// Largest body or response a plugin may hand back, in bytes.
    pub max_output_bytes: usize,
    /// Most header fields a plugin may set in one result.
    pub max_headers: usize,
    /// Consecutive failures that open the breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker waits before probing, in milliseconds.
    pub breaker_cool_down_ms: u64,
    /// Most warm instances kept in `pooled` mode.
    pub pool_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_ms: 50,
            memory_bytes: 16 << 20,
            max_output_bytes: 1 << 20,
            max_headers: 64,
            breaker_threshold: 5,
            breaker_cool_down_ms: 5_000,
            pool_size: 64,
        }
    }
}

/// What policy says about one plugin.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The plugin's name as policy refers to it.
    pub name: String,
    /// The component file.
    pub component: PathBuf,
    /// The configuration handed to `init`.
    pub config: serde_json::Value,
    /// Granted host interfaces.
    pub capabilities: Vec<Capability>,
    /// Isolation mode.
    pub isolation: Isolation,
    /// Failure mode.
    pub failure: FailureMode,
    /// Limits.
    pub limits: Limits,
    /// Whether its key-value state is written through to durable storage
    /// (and loaded back when the plugin is loaded).
    pub durable_kv: bool,
}

/// One durable kv entry: key, value, expiry in Unix ms.
pub type KvEntryRecord = (String, Vec<u8>, Option<i64>);

/// Durable storage for plugins' key-value state. Calls block the calling
/// thread until the write is committed: a plugin that relies on a claim
/// (PPE's single payment) must not see it acknowledged before it is stored.
pub trait KvBackend: Send + Sync {
    /// The live entries of `plugin`: key, value, expiry in Unix ms.
    fn load(&self, plugin: &str) -> Result<Vec<KvEntryRecord>, String>;
    /// Stores (`Some`) or removes (`None`) one entry; returns once committed.
    fn put(
        &self,
        plugin: &str,
        key: &str,
        value: Option<&[u8]>,
        expires_at_ms: Option<i64>,
    ) -> Result<(), String>;
}

/// Why a plugin could not be loaded or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The component file could not be read.
    #[error("plugin {plugin}: cannot read {path}: {source}")]
    Read {
        /// Plugin name.
        plugin: String,
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The component is not a valid `chasqui:plugin` component.
    #[error("plugin {plugin}: invalid component: {message}")]
    Invalid {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// The plugin asks for an interface its policy does not grant.
    #[error("plugin {plugin}: needs capability `{capability}`, which its policy does not grant (granted: {granted})")]
    CapabilityNotGranted {
        /// Plugin name.
        plugin: String,
        /// The missing capability.
        capability: String,
        /// What was granted.
        granted: String,
    },
    /// The configuration breaks the plugin's schema or `init` refused it.
    #[error("plugin {plugin}: configuration refused: {message}")]
    Config {
        /// Plugin name.
        plugin: String,
        /// Why.
        message: String,
    },
    /// A call trapped, ran out of time or memory, or broke the contract.
    #[error("plugin {plugin}: {message}")]
    Call {
        /// Plugin name.
        plugin: String,
        /// What happened.
        message: String,
    },
    /// The breaker is open: the plugin is not being called.
    #[error("plugin {plugin}: failing repeatedly; calls suspended for a while")]
    BreakerOpen {
        /// Plugin name.
        plugin: String,
    },
}

/// Where the `ledger` capability writes evidence.
pub trait EvidenceSink: Send + Sync {
    /// Appends one entry; returns its position and lowercase hex hash.
    fn append(
        &self,
        kind: &str,
        actor: &str,
        request_id: &str,
        payload_json: &str,
    ) -> Result<(u64, String), String>;
}

/// A security incident as a plugin reported it, with the plugin's name.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentReport {
    /// The reporting plugin.
    pub plugin: String,
    /// `[a-z0-9._-]`, at most 64 bytes.
    pub kind: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: &'static str,
    /// One line, at most 256 bytes.
    pub summary: String,
    /// The evidence, JSON text of at most 16 KiB.
    pub detail_json: String,
    /// Whether the plugin blocked the request.
    pub blocked: bool,
    /// Parties to notify: `publisher`, `consumer`.
    pub notify: Vec<&'static str>,
}

/// Where the `incident` and `metering` capabilities deliver what plugins
/// report. Both are called on the request path: implementations must not
/// block (queue, then write elsewhere).
pub trait PlatformSink: Send + Sync {
    /// Records an incident seen while serving `context`; returns its id.
    fn incident(&self, context: &CallContext, report: IncidentReport) -> Result<String, String>;
    /// Records a fee charged while serving `context`.
    fn fee(
        &self,
        context: &CallContext,
        plugin: &str,
        item: &str,
        amount_minor: u64,
        currency: &str,
    );
}

/// What the host knows about the request a plugin instance serves.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The context given to the plugin (`context.get`).
    pub request: RequestContext,
    /// The client's IP address (`context.client-address`).
    pub client_address: Option<String>,
}

impl From<RequestContext> for CallContext {
    fn from(request: RequestContext) -> CallContext {
        CallContext {
            request,
            client_address: None,
        }
    }
}

impl From<RequestContext> for Arc<CallContext> {
    fn from(request: RequestContext) -> Arc<CallContext> {
        Arc::new(request.into())
    }
}

/// Bytes of each linear memory slot kept resident when an instance is
/// dropped, by default: a Rust guest's 1 MiB shadow stack plus its first
/// heap pages. `CHASQUI_PLUGIN_KEEP_RESIDENT` (bytes) overrides it, to
/// measure the trade-off (0: unmap everything, wasmtime's default).
const KEEP_RESIDENT: usize = 2 << 20;
/// Bytes of each table slot kept resident.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

fn keep_resident() -> usize {
    std::env::var("CHASQUI_PLUGIN_KEEP_RESIDENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KEEP_RESIDENT)
}

/// The engine all plugins share, with its epoch ticker.
pub struct PluginEngine {
    engine: Engine,
    cache_dir: PathBuf,
    evidence: Option<Arc<dyn EvidenceSink>>,
    platform: Option<Arc<dyn PlatformSink>>,
    kv_backend: Option<Arc<dyn KvBackend>>,
}

impl PluginEngine {
    /// Builds the engine (pooling allocator, epoch interruption) and starts
    /// the epoch ticker; artifacts are cached under `cache_dir`.
    /// Plugins granted `ledger` append to `evidence`; without one they are
    /// told the ledger is unavailable.
    pub fn new(
        cache_dir: &Path,
        evidence: Option<Arc<dyn EvidenceSink>>,
    ) -> anyhow::Result<Arc<PluginEngine>> {
        Self::with_platform(cache_dir, evidence, None, None)
    }

    /// Like [`PluginEngine::new`], with the sink of the `incident` and
    /// `metering` capabilities (without one, incidents are refused as
    /// unavailable and fees are only logged).
    pub fn with_platform(
        cache_dir: &Path,
        evidence: Option<Arc<dyn EvidenceSink>>,
        platform: Option<Arc<dyn PlatformSink>>,
        kv_backend: Option<Arc<dyn KvBackend>>,
    ) -> anyhow::Result<Arc<PluginEngine>> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(1_000)
            .total_core_instances(1_000)
            .total_memories(1_000)
            .total_tables(1_000)
            .max_memory_size(64 << 20)
            // A slot given back keeps its first pages mapped and is reset in
            // place (only the pages the instance dirtied, found with the
            // PAGEMAP_SCAN ioctl where the kernel has it) instead of being
            // unmapped: the next instance in that slot, a `request`-mode
            // plugin's fresh one, then takes no page faults on its stack
            // and first heap pages, the largest part of its start-up.
            .linear_memory_keep_resident(keep_resident())
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            // 64 MiB reservations keep a thousand slots cheap in address space;
            // the store limiter enforces each plugin's own, smaller limit.
            .memory_reservation(64 << 20)
            // Explicit bounds checks in compiled code instead of guard pages
            // and signal handlers. With guard pages, every instance whose
            // memory grew (a Rust guest's allocator grows it on its first
            // allocation) had its slot's accessible range shrunk back with
            // `mprotect` when the next instance took the slot, and grown
            // again with another: two protection changes and TLB flushes per
            // `request`-mode call, a third of its cost (13.0 -> 8.4 us in
            // `bench/benches/plugin_call.rs`). The checks cost a pooled call
            // about 3 %. Isolation is the same: every access is checked
            // against the instance's own memory size.
            .memory_guard_size(0)
            .signals_based_traps(false)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        if std::env::var_os("CHASQUI_PLUGIN_PERFMAP").is_some() {
            // For `perf`: names the plugins' compiled functions in
            // /tmp/perf-<pid>.map (profiling only; it costs at load).
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("chasqui-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })?;
        Ok(Arc::new(PluginEngine {
            engine,
            cache_dir: cache_dir.to_path_buf(),
            evidence,
            platform,
            kv_backend,
        }))
    }

    /// Loads a plugin as its spec says: compile (or load the cached
    /// artifact), check capabilities, validate the configuration, run `init`.
    pub fn load(self: &Arc<Self>, spec: PluginSpec) -> Result<Arc<LoadedPlugin>, PluginError> {
        let plugin = spec.name.clone();
        let bytes = std::fs::read(&spec.component).map_err(|source| PluginError::Read {
            plugin: plugin.clone(),
            path: spec.component.display().to_string(),
            source,
        })?;
        self.load_bytes(spec, &bytes)
    }

    /// Like [`PluginEngine::load`] with the component's bytes in hand.
    pub fn load_bytes(
        self: &Arc<Self>,
        spec: PluginSpec,
        bytes: &[u8],
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let plugin = spec.name.clone();
        let invalid = |message: String| PluginError::Invalid {
            plugin: plugin.clone(),
            message,
        };
        let (component, _cached) = cache::load(&self.engine, bytes, &self.cache_dir)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let granted_list = || {
            spec.capabilities
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", ")
        };

        // Imports: only granted chasqui interfaces, nothing else (no WASI).
        let mut imported = Vec::new();
        for (name, _) in component.component_type().imports(&self.engine) {
            let Some(cap) = Capability::of_import(name) else {
                return Err(invalid(format!(
                    "imports `{name}`, which is not a Chasqui host interface"
                )));
            };
            if !spec.capabilities.contains(&cap) {
                return Err(PluginError::CapabilityNotGranted {
                    plugin: plugin.clone(),
                    capability: cap.name().to_string(),
                    granted: granted_list(),
                });
            }
            imported.push(cap);
        }
        let mut linker: Linker<HostState> = Linker::new(&self.engine);
        host::add_granted(&mut linker, &spec.capabilities)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let indices = handler::HandlerIndices::find(&component).map_err(&invalid)?;

        let mut shared =
            PluginShared::new(&spec.name, self.evidence.clone(), self.platform.clone());
        if spec.durable_kv {
            let Some(backend) = self.kv_backend.clone() else {
                return Err(invalid(
                    "durable state was asked for, but this gateway has no durable store".into(),
                ));
            };
            shared
                .make_durable(backend)
                .map_err(|e| invalid(format!("loading its durable state: {e}")))?;
        }
        let shared = Arc::new(shared);
        let loaded = LoadedPlugin {
            engine: self.clone(),
            pre,
            indices,
            spec,
            shared,
            metadata: None,
            breaker: Breaker::new(1, Duration::ZERO),
            pool: Mutex::new(Vec::new()),
            request_end: AtomicBool::new(true),
        };
        // One instance to read the metadata and try the configuration.
        let mut first = loaded
            .instantiate(None)
            .map_err(|e| invalid(e.to_string()))?;
        first.check_contract().map_err(|e| invalid(e.to_string()))?;
        let metadata = first.metadata().map_err(|e| invalid(e.to_string()))?;
        let LoadedPlugin {
            engine,
            pre,
            indices,
            spec,
            shared,
            ..
        } = loaded;
        if metadata.name != spec.name {
            return Err(invalid(format!(
                "declares the name `{}`, but policy loads it as `{}`",
                metadata.name, spec.name
            )));
        }
        for asked in &metadata.capabilities {
            match Capability::parse(asked) {
                Some(cap) if spec.capabilities.contains(&cap) => {}
                Some(_) | None => {
                    return Err(PluginError::CapabilityNotGranted {
                        plugin: spec.name.clone(),
                        capability: asked.clone(),
                        granted: spec
                            .capabilities
                            .iter()
                            .map(|c| c.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
        for cap in &imported {
            if !metadata.capabilities.iter().any(|c| c == cap.name()) {
                return Err(invalid(format!(
                    "imports `{}` without declaring it in its metadata",
                    cap.name()
                )));
            }
        }
        check_config(&spec.name, &metadata.config_schema, &spec.config)?;
        let config_text = spec.config.to_string();
        first.init(&config_text)?;
        let breaker = Breaker::new(
            spec.limits.breaker_threshold,
            Duration::from_millis(spec.limits.breaker_cool_down_ms),
        );
        let loaded = Arc::new(LoadedPlugin {
            engine,
            pre,
            indices,
            spec,
            shared,
            metadata: Some((metadata, config_text)),
            breaker,
            pool: Mutex::new(Vec::new()),
            request_end: AtomicBool::new(true),
        });
        if loaded.spec.isolation == Isolation::Pooled {
            loaded.check_in(first);
        }
        Ok(loaded)
    }
}

/// Validates a configuration against the plugin's declared schema.
fn check_config(plugin: &str, schema: &str, config: &serde_json::Value) -> Result<(), PluginError> {
    let refuse = |message: String| PluginError::Config {
        plugin: plugin.to_string(),
        message,
    };
    let schema: serde_json::Value = serde_json::from_str(schema)
        .map_err(|e| refuse(format!("the plugin's config-schema is not JSON: {e}")))?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| refuse(format!("the plugin's config-schema is invalid: {e}")))?;
    let errors: Vec<String> = validator
        .iter_errors(config)
        .map(|e| format!("{} (at `{}`)", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(refuse(errors.join("; ")))
    }
}

/// A loaded plugin: pre-instantiated, configured, ready to hand out instances.
pub struct LoadedPlugin {
    engine: Arc<PluginEngine>,
    pre: wasmtime::component::InstancePre<HostState>,
    /// Where the handler's functions are among the component's exports.
    indices: handler::HandlerIndices,
    spec: PluginSpec,
    shared: Arc<PluginShared>,
    /// Metadata and the configuration text, once known.
    metadata: Option<(PluginMetadata, String)>,
    breaker: Breaker,
    pool: Mutex<Vec<PluginInstance>>,
    /// Whether reused instances get `on-request-end`: cleared for good when the plugin
    /// answers it with `false` (it keeps nothing per request).
    request_end: AtomicBool,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.spec.name)
            .field("isolation", &self.spec.isolation)
            .finish()
    }
}

impl LoadedPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The policy spec it was loaded with.
    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// What the plugin declared about itself.
    pub fn metadata(&self) -> Option<&PluginMetadata> {
        self.metadata.as_ref().map(|(m, _)| m)
    }

    /// Shared state (kv namespace, metrics) of the plugin.
    pub fn shared(&self) -> &Arc<PluginShared> {
        &self.shared
    }

    /// Whether the plugin declared that it handles `phase`.
    pub fn handles(&self, phase: Phase) -> bool {
        self.metadata().is_some_and(|m| m.phases.contains(&phase))
    }

    /// Whether a failure lets the request go on.
    pub fn fails_open(&self) -> bool {
        self.spec.failure == FailureMode::FailOpen
    }

    /// Whether reused instances still get `on-request-end`: false once the plugin has
    /// said it keeps nothing per request.
    pub fn calls_request_end(&self) -> bool {
        self.request_end.load(Ordering::Relaxed)
    }

    /// Whether the plugin's breaker is open.
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    fn instantiate(
        &self,
        context: Option<Arc<CallContext>>,
    ) -> Result<PluginInstance, PluginError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.spec.limits.memory_bytes)
            .instances(4)
            .tables(8)
            .memories(2)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState::new(self.shared.clone(), limits, context);
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.spec.limits.cpu_ms.max(1));
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.call_error(format!("instantiation failed: {e:#}")))?;
        Ok(PluginInstance {
            store,
            funcs: handler::HandlerFuncs::new(instance, self.indices),
            plugin: self.spec.name.clone(),
            limits: self.spec.limits.clone(),
            broken: false,
        })
    }

    /// An instance for one request: a fresh, configured one in `request`
    /// mode, a warm one from the pool in `pooled` mode. Refused while the
    /// breaker is open.
    pub fn check_out(
        self: &Arc<Self>,
        context: impl Into<Arc<CallContext>>,
    ) -> Result<Checkout, PluginError> {
        let context = context.into();
        let permit = self.breaker.permit();
        if permit == Permit::Reject {
            return Err(PluginError::BreakerOpen {
                plugin: self.spec.name.clone(),
            });
        }
        let reused = if self.spec.isolation == Isolation::Pooled {
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop()
        } else {
            None
        };
        let instance = match reused {
            Some(mut instance) => {
                instance.store.data_mut().set_context(Some(context));
                Ok(instance)
            }
            None => self.instantiate(Some(context)).and_then(|mut instance| {
                let config = self
                    .metadata
                    .as_ref()
                    .map(|(_, c)| c.as_str())
                    .unwrap_or("{}");
                instance.init(config).map(|()| instance)
            }),
        };
        match instance {
            Ok(instance) => Ok(Checkout {
                plugin: self.clone(),
                instance: Some(instance),
                permit,
                failed: false,
                failure_reported: false,
            }),
            Err(e) => {
                self.breaker.failure(permit);
                Err(e)
            }
        }
    }

    fn check_in(&self, mut instance: PluginInstance) {
        if instance.broken || self.spec.isolation != Isolation::Pooled {
            return;
        }
        instance.store.data_mut().set_context(None);
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.spec.limits.pool_size {
            pool.push(instance);
        }
    }

    fn call_error(&self, message: String) -> PluginError {
        PluginError::Call {
            plugin: self.spec.name.clone(),
            message,
        }
    }
}

/// An instance checked out for one request; returns to the pool (or is
/// dropped) when this goes out of scope, and reports to the breaker.
pub struct Checkout {
    plugin: Arc<LoadedPlugin>,
    instance: Option<PluginInstance>,
    permit: Permit,
    failed: bool,
    /// Whether the failure was already told to the breaker (at the failed
    /// call, so that it counts before the request's answer is sent).
    failure_reported: bool,
}

impl Checkout {
    /// The plugin this instance belongs to.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut PluginInstance) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        let Some(instance) = self.instance.as_mut() else {
            return Err(PluginError::Call {
                plugin: self.plugin.spec.name.clone(),
                message: "no instance".into(),
            });
        };
        let result = f(instance);
        if result.is_err() {
            self.failed = true;
            // Counted now, not when the request ends: the failure's answer
            // goes out first, and a client's next request could otherwise
            // find the breaker still closed after `threshold` failures.
            if !self.failure_reported {
                self.plugin.breaker.failure(self.permit);
                self.failure_reported = true;
            }
        } else if self.permit == Permit::Probe && !instance.broken {
            // The probe answered: the breaker closes now, not when the
            // request ends (after its answer was sent, a client's next
            // request could come first and be refused as a second probe).
            self.plugin.breaker.success(Permit::Probe);
            self.permit = Permit::Call;
        }
        result
    }

    /// Runs `on-request-headers`.
    pub fn on_request_headers(&mut self, head: &RequestHead) -> Result<HeadersAction, PluginError> {
        self.call(|i| i.on_request_headers(head))
    }

    /// Runs `on-request-body`.
    pub fn on_request_body(&mut self, chunk: &BodyChunk) -> Result<BodyAction, PluginError> {
        self.call(|i| i.on_request_body(chunk))
    }

    /// Runs `on-response-headers`.
    pub fn on_response_headers(
        &mut self,
        head: &ResponseHead,
    ) -> Result<HeadersAction, PluginError> {
        self.call(|i| i.on_response_headers(head))
    }

    /// Runs `on-response-body`.
    pub fn on_response_body(&mut self, chunk: &BodyChunk) -> Result<BodyAction, PluginError> {
        self.call(|i| i.on_response_body(chunk))
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(mut instance) = self.instance.take() {
            if !self.failed
                && !instance.broken
                && self.plugin.spec.isolation == Isolation::Pooled
                && self.plugin.request_end.load(Ordering::Relaxed)
            {
                // The plugin must forget the request; if that fails, drop it.
                match instance.on_request_end() {
                    Ok(true) => {}
                    Ok(false) => self.plugin.request_end.store(false, Ordering::Relaxed),
                    Err(_) => self.failed = true,
                }
            }
            if self.failed || instance.broken {
                if !self.failure_reported {
                    self.plugin.breaker.failure(self.permit);
                }
            } else {
                self.plugin.breaker.success(self.permit);
                self.plugin.check_in(instance);
            }
        }
    }
}

/// One instance of a plugin with its store.
pub struct PluginInstance {
    store: Store<HostState>,
    /// The instance's handler functions, typed as they are first called.
    funcs: handler::HandlerFuncs,
    plugin: String,
    limits: Limits,
    /// Set after a trap or contract breach: the instance is never reused.
    broken: bool,
}

impl PluginInstance {
    fn guard<T>(&mut self, what: &str, result: wasmtime::Result<T>) -> Result<T, PluginError> {
        result.map_err(|e| {
            self.broken = true;
            let message = match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => {
                    format!("{what} exceeded its CPU limit of {} ms", self.limits.cpu_ms)
                }
                Some(trap) => format!("{what} trapped: {trap}"),
                None => format!("{what} failed: {e:#}"),
            };
            PluginError::Call {
                plugin: self.plugin.clone(),
                message,
            }
        })
    }

    fn breach(&mut self, message: String) -> PluginError {
        self.broken = true;
        PluginError::Call {
            plugin: self.plugin.clone(),
            message: format!("broke the contract: {message}"),
        }
    }

    /// Type-checks all the handler's functions against the contract.
    fn check_contract(&mut self) -> Result<(), PluginError> {
        let r = self.funcs.check_all(&mut self.store);
        self.guard("the contract check", r)
    }

    /// Calls `metadata`.
    pub fn metadata(&mut self) -> Result<PluginMetadata, PluginError> {
        self.store.set_epoch_deadline(self.limits.cpu_ms.max(1));
        let r = self
            .funcs
            .metadata(&mut self.store)
            .and_then(|f| f.call(&mut self.store, ()))
            .map(|(r,)| r);
        self.guard("metadata", r)
    }

    /// Calls `init` with the configuration text.
    pub fn init(&mut self, config: &str) -> Result<(), PluginError> {
        self.store.set_epoch_deadline(self.limits.cpu_ms.max(1));
        let r = self
            .funcs
            .init(&mut self.store)
            .and_then(|f| f.call(&mut self.store, (config,)))
            .map(|(r,)| r);
        match self.guard("init", r)? {
            Ok(()) => Ok(()),
            Err(message) => {
                self.broken = true;
                Err(PluginError::Config {
                    plugin: self.plugin.clone(),
                    message,
                })
            }
        }
    }

    /// Calls `on-request-headers`.
    pub fn on_request_headers(&mut self, head: &RequestHead) -> Result<HeadersAction, PluginError> {
        let head = wire::RequestHead {
            method: head.method.clone(),
            path: head.path.clone(),
            headers: field_block(&head.headers),
        };
        self.store.set_epoch_deadline(self.limits.cpu_ms.max(1));
        let r = self
            .funcs
            .on_request_headers(&mut self.store)
            .and_then(|f| f.call(&mut self.store, (&head,)))
            .map(|(r,)| r);
        let action = self.guard("on-request-headers", r)?;
        self.check_headers_action(action)
    }

    /// Calls `on-request-body`.
    pub fn on_request_body(&mut self, chunk: &BodyChunk) -> Result<BodyAction, PluginError> {
        self.store.set_epoch_deadline(self.limits.cpu_ms.max(1));
        let r = self
            .funcs
            .on_request_body(&mut self.store)
            .and_then(|f| f.call(&mut self.store, (chunk,)))
            .map(|(r,)| r);
        let action = self.guard("on-request-body", r)?;
        self.check_body_action(action)
    }

    /// Calls `on-response-headers`.
    pub fn on_response_headers(
        &mut self,
        head: &ResponseHead,
    ) -> Result<HeadersAction, PluginError> {
        let head = wire::ResponseHead {
            status: head.status,
            headers: field_block(&head.headers),
        };
        self.store.set_epoch_deadline(self.limits.cpu_ms.max(1));
        let r = self
            .funcs
            .on_response_headers(&mut self.store)
            .and_then(|f| f.call(&mut self.store, (&head,)))
            .map(|(r,)| r);
        let action = self.guard("on-response-headers", r)?;
        self.check_headers_action(action)
    }

    /// Calls `on-response-body`.
    pub fn on_response_body(&mut self, chunk: &BodyChunk) -> Result<BodyAction, PluginError> {
        self.store.set_epoch_deadline(self.limits.cpu_ms.max(1));
        let r = self
            .funcs
            .on_response_body(&mut self.store)
            .and_then(|f| f.call(&mut self.store, (chunk,)))
            .map(|(r,)| r);
        let action = self.guard("on-response-body", r)?;
        self.check_body_action(action)
    }

    /// Calls `on-request-end`: whether the plugin needs it after later requests too.
    pub fn on_request_end(&mut self) -> Result<bool, PluginError> {
        self.store.set_epoch_deadline(self.limits.cpu_ms.max(1));
        let r = self
            .funcs
            .on_request_end(&mut self.store)
            .and_then(|f| f.call(&mut self.store, ()))
            .map(|(r,)| r);
        self.guard("on-request-end", r)
    }

    /// Checks a result against the contract; a breach marks the instance
    /// broken. The checks borrow nothing mutably, so results are not copied.
    fn check_headers_action(
        &mut self,
        action: HeadersAction,
    ) -> Result<HeadersAction, PluginError> {
        let verdict = match &action {
            HeadersAction::Continue => Ok(()),
            HeadersAction::Modify(changes) => {
                check_headers(&self.limits, &changes.set).and_then(|()| {
                    if changes.remove.len() > self.limits.max_headers {
                        Err(format!(
                            "removed {} header fields (limit {})",
                            changes.remove.len(),
                            self.limits.max_headers
                        ))
                    } else {
                        Ok(())
                    }
                })
            }
            HeadersAction::Respond(response) => check_response(&self.limits, response),
        };
        verdict.map(|()| action).map_err(|m| self.breach(m))
    }

    fn check_body_action(&mut self, action: BodyAction) -> Result<BodyAction, PluginError> {
        let verdict = match &action {
            BodyAction::Continue => Ok(()),
            BodyAction::Replace(bytes) if bytes.len() > self.limits.max_output_bytes => {
                Err(format!(
                    "replaced a chunk with {} bytes (limit {})",
                    bytes.len(),
                    self.limits.max_output_bytes
                ))
            }
            BodyAction::Replace(_) => Ok(()),
            BodyAction::Respond(response) => check_response(&self.limits, response),
        };
        verdict.map(|()| action).map_err(|m| self.breach(m))
    }
}

fn check_response(limits: &Limits, response: &Response) -> Result<(), String> {
    if !(200..=599).contains(&response.status) {
        return Err(format!("answered with status {}", response.status));
    }
    if response.body.len() > limits.max_output_bytes {
        return Err(format!(
            "answered with {} bytes (limit {})",
            response.body.len(),
            limits.max_output_bytes
        ));
    }
    check_headers(limits, &response.headers)
}

fn check_headers(limits: &Limits, headers: &[Header]) -> Result<(), String> {
    if headers.len() > limits.max_headers {
        return Err(format!(
            "set {} header fields (limit {})",
            headers.len(),
            limits.max_headers
        ));
    }
    match headers.iter().find(|h| {
        http::HeaderName::from_bytes(h.name.as_bytes()).is_err()
            || http::HeaderValue::from_str(&h.value).is_err()
    }) {
        Some(bad) => Err(format!(
            "set an invalid header field `{}`",
            bad.name.escape_debug()
        )),
        None => Ok(()),
    }
}
