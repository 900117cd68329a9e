//! The data-plane part of a policy: request limits and upstream behaviour.
//!
//! The default policy ships in `policies/default.yaml` and is compiled in, so
//! the embedded default needs no file. Unknown keys are refused, so a typo
//! fails at load instead of silently doing nothing.

use crate::plugin::{Capability, FailureMode, Isolation, Limits as PluginLimits};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod lines;
pub mod scope;
pub mod validate;

pub use scope::{explain, Explanation, ServiceScope, Settings};

/// The text of `policies/default.yaml`.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.yaml");

/// The JSON Schema of policy files, `policies/policy.schema.json`.
pub const POLICY_SCHEMA: &str = include_str!("../../policies/policy.schema.json");

/// A loaded policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Format version; only 1 exists.
    pub version: u32,
    /// Request size limits.
    #[serde(default)]
    pub limits: Limits,
    /// Upstream timeouts, retries and health checks.
    #[serde(default)]
    pub upstream: UpstreamPolicy,
    /// The plugin chain, in the order the plugins run.
    #[serde(default)]
    pub plugins: Vec<PluginBinding>,
    /// Requests per second per consumer system and service; none: unlimited.
    #[serde(default)]
    pub rate_limit: Option<RateLimitPolicy>,
    /// Contingency for services whose upstream may be unreachable; none: off.
    #[serde(default)]
    pub store_and_forward: Option<StoreAndForwardPolicy>,
    /// Quotas per day and month per consumer × service (global scope).
    #[serde(default)]
    pub quota: Option<scope::QuotaSettings>,
    /// Response cache (global scope; `max_bytes` bounds the whole cache).
    #[serde(default)]
    pub cache: Option<scope::CacheSettings>,
    /// Contract validation (global scope).
    #[serde(default)]
    pub validation: Option<scope::ValidationSettings>,
    /// Settings per catalog category, keyed by category name.
    #[serde(default)]
    pub categories: BTreeMap<String, scope::Scope>,
    /// Settings per publishing entity, keyed by entity code.
    #[serde(default)]
    pub publishers: BTreeMap<String, scope::Scope>,
    /// Settings per service, keyed `entidad/v{n}`.
    #[serde(default)]
    pub services: BTreeMap<String, scope::Scope>,
    /// The global sections as written (for field-by-field precedence and
    /// for saying where each effective value came from).
    #[serde(skip)]
    pub raw_global: serde_json::Value,
}

/// Store-and-forward (contingency) settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreAndForwardPolicy {
    /// Services (`entidad/v{n}`) it applies to.
    pub services: Vec<String>,
    /// Methods it applies to.
    #[serde(default = "default_deferred_methods")]
    pub methods: Vec<String>,
    /// Largest body that can be deferred.
    #[serde(default = "default_deferred_body")]
    pub max_body_bytes: usize,
    /// First delay between delivery attempts.
    #[serde(default = "default_retry_initial")]
    pub retry_initial_ms: u64,
    /// Longest delay between delivery attempts.
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
}

fn default_deferred_methods() -> Vec<String> {
    vec!["POST".into()]
}
fn default_deferred_body() -> usize {
    64 << 10
}
fn default_retry_initial() -> u64 {
    500
}
fn default_retry_max() -> u64 {
    30_000
}

impl StoreAndForwardPolicy {
    /// Whether a request of `method` to `service` may be deferred.
    pub fn applies(&self, service: &str, method: &str) -> bool {
        self.services.iter().any(|s| s == service) && self.methods.iter().any(|m| m == method)
    }
}

/// A rate limit per consumer system and service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// Sustained rate.
    pub requests_per_second: u32,
    /// Requests allowed at once above the sustained rate (at least the rate).
    #[serde(default)]
    pub burst: u32,
}

/// One plugin in the chain and where it runs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginBinding {
    /// The plugin's name (it must match the name the component declares).
    pub name: String,
    /// The component file; relative paths are relative to the policy file.
    pub component: PathBuf,
    /// Its configuration, checked against the schema the plugin declares.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Host interfaces granted to it.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// `request` (default) or `pooled`.
    #[serde(default)]
    pub isolation: Isolation,
    /// `fail-closed` (default) or `fail-open`.
    #[serde(default)]
    pub failure: FailureMode,
    /// CPU, memory and output limits, breaker settings.
    #[serde(default)]
    pub limits: PluginLimits,
    /// The version the component must declare (`plugin validate` and load
    /// refuse another); none: any.
    #[serde(default)]
    pub version: Option<String>,
    /// Whether the plugin's key-value state is durable: written through to
    /// the store before each call returns, and loaded back at load.
    #[serde(default)]
    pub durable_state: bool,
    /// Services (`entidad/v{n}`) it runs for; empty means every service.
    #[serde(default)]
    pub services: Vec<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl PluginBinding {
    /// Whether the plugin runs for the service `route_name` (`entidad/v{n}`).
    pub fn applies_to(&self, route_name: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|s| s == route_name)
    }
}

/// Request size limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_request_body_bytes: u64,
    /// Largest request head, in bytes.
    pub max_request_header_bytes: usize,
    /// Most header fields.
    pub max_request_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body_bytes: 10 << 20,
            max_request_header_bytes: 32 << 10,
            max_request_headers: 100,
        }
    }
}

/// Upstream behaviour.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamPolicy {
    /// Connect (and TLS handshake) timeout.
    pub connect_timeout_ms: u64,
    /// Per-read timeout.
    pub read_timeout_ms: u64,
    /// Per-write timeout.
    pub write_timeout_ms: u64,
    /// Idle time of a pooled connection.
    pub idle_timeout_ms: u64,
    /// Extra attempts after a failure.
    pub retries: u8,
    /// Active health checks.
    pub health_check: HealthCheckPolicy,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        UpstreamPolicy {
            connect_timeout_ms: 2_000,
            read_timeout_ms: 30_000,
            write_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            retries: 2,
            health_check: HealthCheckPolicy::default(),
        }
    }
}

/// Active health checks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckPolicy {
    /// Probe period.
    pub interval_ms: u64,
    /// Probe timeout.
    pub timeout_ms: u64,
    /// Successes to come back.
    pub healthy_after: u32,
    /// Failures to go out.
    pub unhealthy_after: u32,
}

impl Default for HealthCheckPolicy {
    fn default() -> Self {
        HealthCheckPolicy {
            interval_ms: 2_000,
            timeout_ms: 1_000,
            healthy_after: 2,
            unhealthy_after: 2,
        }
    }
}

/// Errors loading a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is malformed or does not match the format.
    #[error("{origin}: {message}")]
    Invalid {
        /// File name or `default policy`.
        origin: String,
        /// What is wrong, with line and column when known.
        message: String,
    },
}

/// Validates a policy text against [`POLICY_SCHEMA`], naming each failing
/// path and, where it can be found, its line. Returns the document as JSON.
fn check_schema(text: &str, origin: &str) -> Result<serde_json::Value, PolicyError> {
    let invalid = |message: String| PolicyError::Invalid {
        origin: origin.to_string(),
        message,
    };
    let value: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let schema: serde_json::Value =
        serde_json::from_str(POLICY_SCHEMA).map_err(|e| invalid(format!("policy schema: {e}")))?;
    let validator =
        jsonschema::validator_for(&schema).map_err(|e| invalid(format!("policy schema: {e}")))?;
    let index = lines::LineIndex::new(text);
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| {
            let mut path = e.instance_path().to_string();
            // An unknown key is reported at its parent; point at the key itself.
            if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } =
                e.kind()
            {
                if let Some(first) = unexpected.first() {
                    path = format!("{path}/{}", lines::escape(first));
                }
            }
            index.locate(&path, &e.to_string())
        })
        .collect();
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(invalid(errors.join("; ")))
    }
}

/// Where the components of the compiled-in default policy are looked for:
/// `$CHASQUI_PLUGIN_DIR`, else the `components` folder of `chasqui plugin
/// build`'s default target directory.
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("CHASQUI_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::plugin::build::default_target_dir().join("components"))
}

impl Policy {
    /// Parses and checks a policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let value = check_schema(text, origin)?;
        let mut policy: Policy = serde_yaml::from_str(text).map_err(|e| PolicyError::Invalid {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut global = serde_json::Map::new();
        for name in scope::SECTIONS {
            if let Some(serde_json::Value::Object(section)) = value.get(name) {
                let mut section = section.clone();
                // Health checks are per upstream address, not per service.
                if name == "upstream" {
                    section.remove("health_check");
                }
                global.insert(name.to_string(), serde_json::Value::Object(section));
            }
        }
        policy.raw_global = serde_json::Value::Object(global);
        let index = lines::LineIndex::new(text);
        policy
            .check()
            .map_err(|(pointer, message)| PolicyError::Invalid {
                origin: origin.to_string(),
                message: index.locate(&pointer, &message),
            })?;
        Ok(policy)
    }

    /// Loads a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut policy = Self::parse(&text, &path.display().to_string())?;
        policy.resolve_components(path.parent().unwrap_or(Path::new(".")));
        Ok(policy)
    }

    /// The compiled-in default policy. Its components are named relative to
    /// [`plugin_dir`], where `chasqui plugin build` writes them.
    pub fn default_policy() -> Result<Policy, PolicyError> {
        let mut policy = Self::parse(DEFAULT_POLICY, "policies/default.yaml")?;
        policy.resolve_components(&plugin_dir());
        Ok(policy)
    }

    /// Parses and checks a policy text whose relative component paths are
    /// relative to `base` (a stored version, a text sent to the admin API).
    pub fn parse_with_base(text: &str, origin: &str, base: &Path) -> Result<Policy, PolicyError> {
        let mut policy = Self::parse(text, origin)?;
        policy.resolve_components(base);
        Ok(policy)
    }

    /// Makes relative component paths relative to `base`.
    fn resolve_components(&mut self, base: &Path) {
        for binding in &mut self.plugins {
            if binding.component.is_relative() {
                binding.component = base.join(&binding.component);
            }
        }
        let scopes = self
            .categories
            .values_mut()
            .chain(self.publishers.values_mut())
            .chain(self.services.values_mut());
        for scope in scopes {
            for patch in &mut scope.plugins {
                if let Some(c) = patch.component.as_mut().filter(|c| c.is_relative()) {
                    *c = base.join(&*c);
                }
            }
        }
    }

    /// Every scope as (JSON pointer of the scope, the synthetic service it
    /// alone applies to).
    pub fn scope_probes(&self) -> Vec<(String, ServiceScope)> {
        let mut out = Vec::new();
        for key in self.categories.keys() {
            out.push((
                format!("/categories/{}", lines::escape(key)),
                ServiceScope {
                    entity: String::new(),
                    code: String::new(),
                    version: 0,
                    category: key.clone(),
                },
            ));
        }
        for key in self.publishers.keys() {
            out.push((
                format!("/publishers/{}", lines::escape(key)),
                ServiceScope {
                    entity: key.clone(),
                    code: String::new(),
                    version: 0,
                    category: String::new(),
                },
            ));
        }
        for key in self.services.keys() {
            let (entity, version) = key
                .split_once("/v")
                .and_then(|(e, v)| Some((e.to_string(), v.parse().ok()?)))
                .unwrap_or_default();
            out.push((
                format!("/services/{}", lines::escape(key)),
                ServiceScope {
                    entity,
                    code: String::new(),
                    version,
                    category: String::new(),
                },
            ));
        }
        out
    }

    /// Checks what the schema cannot; errors carry a JSON pointer.
    fn check(&self) -> Result<(), (String, String)> {
        if self.version != 1 {
            return Err((
                "/version".into(),
                format!("unsupported policy version {} (expected 1)", self.version),
            ));
        }
        let u = &self.upstream;
        for (name, value) in [
            ("/upstream/connect_timeout_ms", u.connect_timeout_ms),
            ("/upstream/read_timeout_ms", u.read_timeout_ms),
            ("/upstream/write_timeout_ms", u.write_timeout_ms),
            (
                "/upstream/health_check/interval_ms",
                u.health_check.interval_ms,
            ),
            (
                "/upstream/health_check/timeout_ms",
                u.health_check.timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err((name.into(), "must be greater than 0".into()));
            }
        }
        if u.health_check.healthy_after == 0 || u.health_check.unhealthy_after == 0 {
            return Err((
                "/upstream/health_check".into(),
                "thresholds must be at least 1".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.plugins.iter().enumerate() {
            if !names.insert(p.name.as_str()) {
                return Err((
                    format!("/plugins/{i}/name"),
                    format!("plugin `{}` appears twice", p.name),
                ));
            }
            if p.limits.cpu_ms == 0 || p.limits.memory_bytes < (64 << 10) {
                return Err((
                    format!("/plugins/{i}/limits"),
                    "cpu_ms must be > 0 and memory_bytes at least 65536".into(),
                ));
            }
        }
        if self.limits.max_request_header_bytes < 1024 {
            return Err((
                "/limits/max_request_header_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        for key in self.categories.keys() {
            if chasqui_catalog::model::Category::parse(key).is_none() {
                return Err((
                    format!("/categories/{}", lines::escape(key)),
                    format!(
                        "unknown category `{key}`; one of: {}",
                        chasqui_catalog::model::Category::ALL.join(", ")
                    ),
                ));
            }
        }
        // Every scope alone must resolve: wrong types and plugin entries
        // that name nothing show up here, at load, not on the request path.
        for (pointer, probe) in self.scope_probes() {
            if let Err(message) = scope::try_explain(self, &probe) {
                return Err((pointer, message));
            }
        }
        Ok(())
    }

    /// Connect timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream.connect_timeout_ms)
    }

    /// Read timeout as a duration.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream.read_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_catches_bad_values_with_their_path_and_line() {
        let text = "version: 1\nplugins:\n  - name: Bad_Name\n    component: x.wasm\n    isolation: sometimes\n";
        let msg = Policy::parse(text, "p.yaml").unwrap_err().to_string();
        assert!(
            msg.contains("/plugins/0/name") && msg.contains("line 3"),
            "{msg}"
        );
        assert!(
            msg.contains("/plugins/0/isolation") && msg.contains("line 5"),
            "{msg}"
        );
        let msg = Policy::parse(
            "version: 1\nlimits:\n  max_request_header_bytes: 10\n",
            "p.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("max_request_header_bytes") && msg.contains("line 3"),
            "{msg}"
        );
    }

    #[test]
    fn the_shipped_default_policy_loads() {
        let p = Policy::default_policy().unwrap();
        assert_eq!(p.limits.max_request_body_bytes, 10 << 20);
        assert_eq!(p.upstream.retries, 2);
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_their_place() {
        let err =
            Policy::parse("version: 1\nlimits:\n  max_request_body: 5\n", "p.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("p.yaml") && msg.contains("max_request_body") && msg.contains("line 3"),
            "{msg}"
        );
        let err = Policy::parse("version: 2\n", "p.yaml").unwrap_err();
        assert!(err.to_string().contains("/version"), "{err}");
        let err =
            Policy::parse("version: 1\nupstream:\n  read_timeout_ms: 0\n", "p.yaml").unwrap_err();
        assert!(err.to_string().contains("read_timeout_ms"));
    }
}
