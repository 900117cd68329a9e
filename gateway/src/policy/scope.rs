//! Scopes and precedence: what a policy says about one service.
//!
//! A policy binds settings at four levels: globally (the top-level keys),
//! per catalog category (`categories:`), per publishing entity
//! (`publishers:`) and per service (`services:`, keyed `entidad/v{n}`).
//! The most specific level wins, **field by field**: a service scope that
//! sets only `rate_limit.burst` keeps the rate its publisher, category or the
//! global policy sets. Leaves (numbers, strings, booleans, lists) replace;
//! only objects merge.
//!
//! The plugin chain follows its own rule, applied global → category →
//! publisher → service:
//! - the global `plugins` list is the chain, in order; a binding's
//!   `services` list (the older form) still restricts where it runs;
//! - in a scope, an entry naming a plugin of the global list binds it there
//!   (even if its `services` left it out) and overrides only the fields it
//!   sets: `config` (replaced whole), `capabilities`, `isolation`,
//!   `failure`, `limits`, `version`, `durable_state`;
//! - `enabled: false` removes the plugin from the chain of that scope's
//!   services;
//! - an entry with a `component` and a name the global list lacks adds a
//!   plugin; added plugins run after the global ones, in the order category,
//!   publisher, service.
//!
//! The data plane resolves this once per service when a policy or the
//! catalog is loaded, never per request.

use super::{Limits, PluginBinding, Policy};
use crate::plugin::{Capability, FailureMode, Isolation, Limits as PluginLimits};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The sections that scopes may set, merged field by field.
pub const SECTIONS: [&str; 6] = [
    "limits",
    "upstream",
    "rate_limit",
    "quota",
    "cache",
    "validation",
];

/// What one scope (category, publisher or service) sets. Sections are kept
/// as written so that a scope sets exactly the fields it names.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Request size limits (fields of [`Limits`]).
    #[serde(default)]
    pub limits: Option<Map<String, Value>>,
    /// Upstream timeouts and retry budget (not health checks, which are per
    /// address and global).
    #[serde(default)]
    pub upstream: Option<Map<String, Value>>,
    /// Burst rate limit per consumer × service.
    #[serde(default)]
    pub rate_limit: Option<Map<String, Value>>,
    /// Quotas per day and per month per consumer × service.
    #[serde(default)]
    pub quota: Option<Map<String, Value>>,
    /// Response cache.
    #[serde(default)]
    pub cache: Option<Map<String, Value>>,
    /// Contract validation of bodies.
    #[serde(default)]
    pub validation: Option<Map<String, Value>>,
    /// Changes to the plugin chain.
    #[serde(default)]
    pub plugins: Vec<PluginPatch>,
}

impl Scope {
    fn section(&self, name: &str) -> Option<&Map<String, Value>> {
        match name {
            "limits" => self.limits.as_ref(),
            "upstream" => self.upstream.as_ref(),
            "rate_limit" => self.rate_limit.as_ref(),
            "quota" => self.quota.as_ref(),
            "cache" => self.cache.as_ref(),
            "validation" => self.validation.as_ref(),
            _ => None,
        }
    }
}

/// A scope's entry about one plugin: binds, overrides, disables or adds it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginPatch {
    /// The plugin's name.
    pub name: String,
    /// `false` removes the plugin from this scope's chain.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The component, to add a plugin the global list lacks.
    #[serde(default)]
    pub component: Option<PathBuf>,
    /// The version the component must declare.
    #[serde(default)]
    pub version: Option<String>,
    /// Replaces the configuration.
    #[serde(default)]
    pub config: Option<Value>,
    /// Replaces the granted capabilities.
    #[serde(default)]
    pub capabilities: Option<Vec<Capability>>,
    /// Replaces the isolation mode.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// Replaces the failure mode.
    #[serde(default)]
    pub failure: Option<FailureMode>,
    /// Replaces the limits.
    #[serde(default)]
    pub limits: Option<PluginLimits>,
    /// Replaces whether its state is durable.
    #[serde(default)]
    pub durable_state: Option<bool>,
}

/// The service a resolution is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ServiceScope {
    /// Publishing entity's code (the first path segment).
    pub entity: String,
    /// The service's code within its entity.
    pub code: String,
    /// Major version.
    pub version: u32,
    /// Catalog category (any spelling the catalog accepts).
    pub category: String,
}

impl ServiceScope {
    /// `entidad/v{n}`.
    pub fn route_name(&self) -> String {
        format!("{}/v{}", self.entity, self.version)
    }
}

impl From<&chasqui_catalog::store::ServiceRoute> for ServiceScope {
    fn from(s: &chasqui_catalog::store::ServiceRoute) -> Self {
        ServiceScope {
            entity: s.entity_code.clone(),
            code: s.code.clone(),
            version: s.version,
            category: s.category.clone(),
        }
    }
}

/// Upstream settings one service may change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceUpstream {
    /// Connect (and TLS handshake) timeout.
    pub connect_timeout_ms: u64,
    /// Per-read timeout.
    pub read_timeout_ms: u64,
    /// Per-write timeout.
    pub write_timeout_ms: u64,
    /// Idle time of a pooled connection.
    pub idle_timeout_ms: u64,
    /// Extra attempts after a failure (the retry budget).
    pub retries: u8,
}

/// Burst rate limit; `requests_per_second: 0` means none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Sustained rate per consumer × service; 0: unlimited.
    pub requests_per_second: u32,
    /// Requests allowed at once (at least the rate).
    pub burst: u32,
}

/// Quotas per consumer × service; 0 means none. Days and months are
/// Bolivian (UTC-4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    /// Requests per day.
    pub per_day: u64,
    /// Requests per month.
    pub per_month: u64,
}

/// Response cache settings of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Whether GET/HEAD answers are cached.
    pub enabled: bool,
    /// How long an answer is served from the cache.
    pub ttl_ms: u64,
    /// Request header fields whose values select different answers.
    pub vary: Vec<String>,
    /// Largest body kept, in bytes.
    pub max_entry_bytes: usize,
    /// Whether consumers share answers. `false` (default): the key includes
    /// the consumer system, so one system never sees an answer fetched for
    /// another.
    pub shared: bool,
    /// Whether answers to requests carrying a citizen's identity, or marked
    /// private, may be cached (default: never).
    pub allow_personalised: bool,
    /// Only when the policy is global: the whole cache's bound, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: false,
            ttl_ms: 30_000,
            vary: Vec::new(),
            max_entry_bytes: 256 << 10,
            shared: false,
            allow_personalised: false,
            max_bytes: None,
        }
    }
}

/// Contract validation of one service's bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSettings {
    /// Check JSON request bodies against the service's OpenAPI document.
    pub request: bool,
    /// Check JSON answers against it.
    pub response: bool,
}

/// The effective settings of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Request size limits.
    pub limits: Limits,
    /// Upstream timeouts and retry budget.
    pub upstream: ServiceUpstream,
    /// Burst rate limit.
    pub rate_limit: RateLimitSettings,
    /// Quotas.
    pub quota: QuotaSettings,
    /// Response cache.
    pub cache: CacheSettings,
    /// Contract validation.
    pub validation: ValidationSettings,
}

/// One plugin of an effective chain, with where its settings came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedPlugin {
    /// Name.
    pub name: String,
    /// Component file.
    pub component: PathBuf,
    /// Version the component must declare, if the policy pins one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Configuration.
    pub config: Value,
    /// Granted capabilities.
    pub capabilities: Vec<&'static str>,
    /// Isolation mode.
    pub isolation: Isolation,
    /// Failure mode.
    pub failure: FailureMode,
    /// Whether its state is durable.
    pub durable_state: bool,
    /// Scopes that bound or changed it, least specific first.
    pub from: Vec<String>,
}

/// A plugin a scope removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisabledPlugin {
    /// Name.
    pub name: String,
    /// The scope that removed it.
    pub by: String,
}

/// The effective settings of one service and where each part came from;
/// its JSON form is deterministic (keys sorted, lists in chain order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// `entidad/v{n}`.
    pub service: String,
    /// The service's code.
    pub code: String,
    /// The publishing entity.
    pub publisher: String,
    /// The canonical category (as written when it is unknown).
    pub category: String,
    /// The scopes that applied, least specific first.
    pub scopes: Vec<String>,
    /// Every setting as `{"value": ..., "from": scope}`, nested by section.
    pub settings: Value,
    /// The plugin chain, in running order.
    pub plugins: Vec<ExplainedPlugin>,
    /// Plugins removed by a scope.
    pub disabled_plugins: Vec<DisabledPlugin>,
    /// The settings alone, typed (not serialised: `settings` says it all).
    #[serde(skip)]
    pub effective: Settings,
    /// The chain as bindings, ready to load (not serialised).
    #[serde(skip)]
    pub bindings: Vec<PluginBinding>,
}

/// The effective settings for one service (after precedence), with where
/// each part came from.
pub fn explain(policy: &Policy, service: &ServiceScope) -> Explanation {
    match try_explain(policy, service) {
        Ok(e) => e,
        // `Policy::check` resolves every scope at load, so a loaded policy
        // cannot get here; answer with the global settings rather than fail
        // a request.
        Err(message) => {
            tracing::error!(service = %service.route_name(), %message, "policy resolution failed; using the global settings");
            let mut global = service.clone();
            global.category = String::new();
            global.entity = String::new();
            let mut e = try_explain(
                &Policy {
                    categories: BTreeMap::new(),
                    publishers: BTreeMap::new(),
                    services: BTreeMap::new(),
                    ..policy.clone()
                },
                &global,
            )
            .unwrap_or_else(|_| fallback_explanation(policy));
            e.service = service.route_name();
            e
        }
    }
}

fn fallback_explanation(policy: &Policy) -> Explanation {
    Explanation {
        service: String::new(),
        code: String::new(),
        publisher: String::new(),
        category: String::new(),
        scopes: vec!["global".into()],
        settings: Value::Null,
        plugins: Vec::new(),
        disabled_plugins: Vec::new(),
        effective: Settings {
            limits: policy.limits.clone(),
            upstream: ServiceUpstream {
                connect_timeout_ms: policy.upstream.connect_timeout_ms,
                read_timeout_ms: policy.upstream.read_timeout_ms,
                write_timeout_ms: policy.upstream.write_timeout_ms,
                idle_timeout_ms: policy.upstream.idle_timeout_ms,
                retries: policy.upstream.retries,
            },
            rate_limit: RateLimitSettings::default(),
            quota: QuotaSettings::default(),
            cache: CacheSettings::default(),
            validation: ValidationSettings::default(),
        },
        bindings: Vec::new(),
    }
}

/// The defaults every service starts from, as JSON.
fn defaults() -> Value {
    let u = super::UpstreamPolicy::default();
    serde_json::json!({
        "limits": Limits::default(),
        "upstream": {
            "connect_timeout_ms": u.connect_timeout_ms,
            "read_timeout_ms": u.read_timeout_ms,
            "write_timeout_ms": u.write_timeout_ms,
            "idle_timeout_ms": u.idle_timeout_ms,
            "retries": u.retries,
        },
        "rate_limit": RateLimitSettings::default(),
        "quota": QuotaSettings::default(),
        "cache": CacheSettings::default(),
        "validation": ValidationSettings::default(),
    })
}

/// Overlays `over` onto `base`, recording `label` as the source of every
/// leaf it sets.
fn overlay(
    base: &mut Map<String, Value>,
    over: &Map<String, Value>,
    pointer: &str,
    label: &str,
    sources: &mut BTreeMap<String, String>,
) {
    for (key, value) in over {
        let here = format!("{pointer}/{key}");
        match (base.get_mut(key), value) {
            (Some(Value::Object(b)), Value::Object(o)) => overlay(b, o, &here, label, sources),
            _ => {
                base.insert(key.clone(), value.clone());
                sources.retain(|p, _| !p.starts_with(&format!("{here}/")));
                sources.insert(here, label.to_string());
            }
        }
    }
}

/// Every leaf of `value` as `{"value", "from"}`.
fn annotate(value: &Value, pointer: &str, sources: &BTreeMap<String, String>) -> Value {
    match value {
        Value::Object(map) if !map.is_empty() && !sources.contains_key(pointer) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(k.clone(), annotate(v, &format!("{pointer}/{k}"), sources));
            }
            Value::Object(out)
        }
        leaf => serde_json::json!({
            "value": leaf,
            "from": sources.get(pointer).map_or("default", String::as_str),
        }),
    }
}

/// The layers that apply to `service`, least specific first.
pub(crate) fn layers<'a>(policy: &'a Policy, service: &ServiceScope) -> Vec<(String, &'a Scope)> {
    let mut out = Vec::new();
    let category = chasqui_catalog::model::Category::parse(&service.category)
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| service.category.clone());
    if let Some(scope) = policy.categories.iter().find_map(|(k, v)| {
        let canonical = chasqui_catalog::model::Category::parse(k).map(|c| c.name());
        (canonical == Some(category.as_str()) || *k == category).then_some(v)
    }) {
        out.push((format!("category:{category}"), scope));
    }
    if let Some(scope) = policy.publishers.get(&service.entity) {
        out.push((format!("publisher:{}", service.entity), scope));
    }
    let route = service.route_name();
    if let Some(scope) = policy.services.get(&route) {
        out.push((format!("service:{route}"), scope));
    }
    out
}

/// Whether some scope adds a plugin `name` with its own component.
fn added_anywhere(policy: &Policy, name: &str) -> bool {
    policy
        .categories
        .values()
        .chain(policy.publishers.values())
        .chain(policy.services.values())
        .flat_map(|s| &s.plugins)
        .any(|p| p.name == name && p.component.is_some())
}

/// Resolves `service`; an error names what in the policy does not fit.
pub(crate) fn try_explain(policy: &Policy, service: &ServiceScope) -> Result<Explanation, String> {
    let Value::Object(mut merged) = defaults() else {
        return Err("defaults are not an object".into());
    };
    let mut sources = BTreeMap::new();
    if let Value::Object(global) = &policy.raw_global {
        overlay(&mut merged, global, "", "global", &mut sources);
    }
    let layers = layers(policy, service);
    let mut scopes = vec!["global".to_string()];
    for (label, scope) in &layers {
        scopes.push(label.clone());
        let mut sections = Map::new();
        for name in SECTIONS {
            if let Some(section) = scope.section(name) {
                sections.insert(name.to_string(), Value::Object(section.clone()));
            }
        }
        overlay(&mut merged, &sections, "", label, &mut sources);
    }
    let merged = Value::Object(merged);
    let effective: Settings = serde_json::from_value(merged.clone())
        .map_err(|e| format!("{}: {e}", scopes.join(" + ")))?;

    // The plugin chain.
    let route = service.route_name();
    struct Entry {
        binding: PluginBinding,
        global_index: Option<usize>,
        from: Vec<String>,
    }
    let mut chain: Vec<Entry> = policy
        .plugins
        .iter()
        .enumerate()
        .filter(|(_, b)| b.applies_to(&route))
        .map(|(i, b)| Entry {
            binding: b.clone(),
            global_index: Some(i),
            from: vec!["global".into()],
        })
        .collect();
    let mut disabled = Vec::new();
    for (label, scope) in &layers {
        for patch in &scope.plugins {
            if patch.enabled == Some(false) {
                if let Some(at) = chain.iter().position(|e| e.binding.name == patch.name) {
                    chain.remove(at);
                    disabled.retain(|d: &DisabledPlugin| d.name != patch.name);
                    disabled.push(DisabledPlugin {
                        name: patch.name.clone(),
                        by: label.clone(),
                    });
                }
                continue;
            }
            let at = match chain.iter().position(|e| e.binding.name == patch.name) {
                Some(at) => at,
                None => {
                    let entry = match policy.plugins.iter().position(|b| b.name == patch.name) {
                        Some(i) => Entry {
                            binding: policy.plugins[i].clone(),
                            global_index: Some(i),
                            from: vec!["global".into()],
                        },
                        None => {
                            let Some(component) = patch.component.clone() else {
                                // Added by another scope that does not apply
                                // here: nothing to change.
                                if added_anywhere(policy, &patch.name) {
                                    continue;
                                }
                                return Err(format!(
                                    "{label}: plugin `{}` is not in the global plugin list and names no component",
                                    patch.name
                                ));
                            };
                            Entry {
                                binding: PluginBinding {
                                    name: patch.name.clone(),
                                    component,
                                    version: None,
                                    config: super::empty_object(),
                                    capabilities: Vec::new(),
                                    isolation: Isolation::default(),
                                    failure: FailureMode::default(),
                                    limits: PluginLimits::default(),
                                    durable_state: false,
                                    services: Vec::new(),
                                },
                                global_index: None,
                                from: Vec::new(),
                            }
                        }
                    };
                    disabled.retain(|d: &DisabledPlugin| d.name != patch.name);
                    chain.push(entry);
                    chain.len() - 1
                }
            };
            let entry = &mut chain[at];
            let b = &mut entry.binding;
            if let Some(c) = &patch.component {
                b.component = c.clone();
            }
            if let Some(v) = &patch.version {
                b.version = Some(v.clone());
            }
            if let Some(c) = &patch.config {
                b.config = c.clone();
            }
            if let Some(c) = &patch.capabilities {
                b.capabilities = c.clone();
            }
            if let Some(i) = patch.isolation {
                b.isolation = i;
            }
            if let Some(f) = patch.failure {
                b.failure = f;
            }
            if let Some(l) = &patch.limits {
                b.limits = l.clone();
            }
            if let Some(d) = patch.durable_state {
                b.durable_state = d;
            }
            entry.from.push(label.clone());
        }
    }
    // Global plugins keep the global order; added ones follow, in the order
    // they were added (a stable sort keeps it).
    chain.sort_by_key(|e| e.global_index.unwrap_or(usize::MAX));
    let plugins = chain
        .iter()
        .map(|e| ExplainedPlugin {
            name: e.binding.name.clone(),
            component: e.binding.component.clone(),
            version: e.binding.version.clone(),
            config: e.binding.config.clone(),
            capabilities: e.binding.capabilities.iter().map(|c| c.name()).collect(),
            isolation: e.binding.isolation,
            failure: e.binding.failure,
            durable_state: e.binding.durable_state,
            from: e.from.clone(),
        })
        .collect();
    let category = chasqui_catalog::model::Category::parse(&service.category)
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| service.category.clone());
    Ok(Explanation {
        service: route,
        code: service.code.clone(),
        publisher: service.entity.clone(),
        category,
        scopes,
        settings: annotate(&merged, "", &sources),
        plugins,
        disabled_plugins: disabled,
        effective,
        bindings: chain.into_iter().map(|e| e.binding).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(entity: &str, category: &str) -> ServiceScope {
        ServiceScope {
            entity: entity.into(),
            code: "s".into(),
            version: 1,
            category: category.into(),
        }
    }

    const POLICY: &str = "version: 1
limits: {max_request_body_bytes: 1000}
quota: {per_day: 10}
plugins:
  - {name: first, component: /p/first.wasm, config: {level: 1}}
  - {name: second, component: /p/second.wasm, services: [x/v1]}
categories:
  migracion:
    quota: {per_month: 100}
    plugins:
      - {name: added, component: /p/added.wasm}
publishers:
  segip:
    limits: {max_request_body_bytes: 2000}
    plugins:
      - {name: first, isolation: pooled}
      - {name: second}
services:
  segip/v1:
    quota: {per_day: 5}
    plugins:
      - {name: first, config: {level: 3}}
      - {name: added, enabled: false}
";

    #[test]
    fn precedence_is_field_by_field_and_says_where() {
        let p = Policy::parse(POLICY, "p.yaml").unwrap();
        let e = explain(&p, &service("segip", "Migración"));
        assert_eq!(
            e.scopes,
            [
                "global",
                "category:Migración",
                "publisher:segip",
                "service:segip/v1"
            ]
        );
        assert_eq!(e.effective.limits.max_request_body_bytes, 2000);
        assert_eq!(e.effective.limits.max_request_headers, 100, "default");
        assert_eq!(e.effective.quota.per_day, 5);
        assert_eq!(e.effective.quota.per_month, 100);
        assert_eq!(
            e.settings["quota"]["per_month"],
            serde_json::json!({"value": 100, "from": "category:Migración"})
        );
        assert_eq!(
            e.settings["limits"]["max_request_headers"]["from"],
            "default"
        );
        // Chain: global order (second bound by the publisher), `added`
        // removed by the service, `first` changed field by field.
        let names: Vec<&str> = e.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["first", "second"]);
        assert_eq!(e.plugins[0].config, serde_json::json!({"level": 3}));
        assert_eq!(e.plugins[0].isolation, Isolation::Pooled);
        assert_eq!(
            e.plugins[0].from,
            ["global", "publisher:segip", "service:segip/v1"]
        );
        assert_eq!(e.disabled_plugins[0].by, "service:segip/v1");
        // Another publisher in the same category gets the added plugin last.
        let e = explain(&p, &service("dgm", "migracion"));
        let names: Vec<&str> = e.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["first", "added"]);
        assert_eq!(e.effective.quota.per_day, 10);
        // Deterministic JSON.
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            serde_json::to_string(&explain(&p, &service("dgm", "Migración"))).unwrap()
        );
    }

    #[test]
    fn a_scope_naming_an_unknown_plugin_is_refused_at_load() {
        let err = Policy::parse(
            "version: 1\nservices:\n  a/v1:\n    plugins:\n      - {name: ghost}\n",
            "p.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 3") && err.contains("/services/a~1v1") && err.contains("ghost"),
            "{err}"
        );
    }
}
