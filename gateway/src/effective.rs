//! The per-service policy table: every catalog service's effective settings,
//! plugin chain, rate limiter and contract validators, resolved once when a
//! policy or the catalog is loaded and swapped atomically. A request loads
//! the table once and looks its service up by id.

use crate::contract::Contract;
use crate::plugin::chain::{Chain, PluginSet};
use crate::policy::scope::RateLimitSettings;
use crate::policy::{explain, Limits, Policy, ServiceScope, Settings};
use crate::ratelimit::RateLimits;
use crate::respcache::ResponseCache;
use crate::routes::RouteTable;
use std::collections::HashMap;
use std::sync::Arc;

/// What the data plane applies to one service.
pub struct ServicePolicy {
    /// The effective settings.
    pub settings: Settings,
    /// The plugin chain, if any plugin runs.
    pub chain: Option<Chain>,
    /// The burst limiter, if the service has a rate limit.
    pub rate: Option<Arc<RateLimits>>,
    /// The compiled contract, if validation is on and a document exists.
    pub contract: Option<Arc<Contract>>,
    /// A chain that could not be loaded: requests to the service fail
    /// closed with this message (only possible for a service that appeared
    /// after the policy was loaded).
    pub broken: Option<String>,
}

impl std::fmt::Debug for ServicePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServicePolicy")
            .field("settings", &self.settings)
            .field("rate_limited", &self.rate.is_some())
            .field("contract", &self.contract)
            .field("broken", &self.broken)
            .finish()
    }
}

/// The policy, its plugins and the resolution for every known service.
pub struct PolicyTable {
    /// The policy.
    pub policy: Arc<Policy>,
    /// Its loaded plugins.
    pub plugins: Arc<PluginSet>,
    /// The response cache (its bound is the policy's).
    pub cache: Arc<ResponseCache>,
    /// Limits checked before a request is routed: the loosest of any scope,
    /// so that the service's own (checked after routing) can be larger than
    /// the global ones.
    pub loosest: Limits,
    by_service: HashMap<i64, Arc<ServicePolicy>>,
    fallback: Arc<ServicePolicy>,
    limiters: HashMap<RateLimitSettings, Arc<RateLimits>>,
}

impl std::fmt::Debug for PolicyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyTable")
            .field("services", &self.by_service.len())
            .finish()
    }
}

/// Contract documents by service id, parsed.
pub type Documents = HashMap<i64, Arc<serde_json::Value>>;

impl PolicyTable {
    /// Resolves `policy` for every service of `routes`. Limiters and the
    /// cache of `previous` are kept where the settings did not change, so a
    /// catalog refresh or a reload does not reset budgets. Fails only when a
    /// plugin chain cannot be loaded.
    pub fn build(
        policy: Arc<Policy>,
        plugins: Arc<PluginSet>,
        routes: &RouteTable,
        documents: &Documents,
        previous: Option<&PolicyTable>,
        strict: bool,
    ) -> anyhow::Result<PolicyTable> {
        let mut limiters: HashMap<RateLimitSettings, Arc<RateLimits>> = HashMap::new();
        let mut limiter = |s: &RateLimitSettings| -> Option<Arc<RateLimits>> {
            if s.requests_per_second == 0 {
                return None;
            }
            if let Some(l) = limiters.get(s) {
                return Some(l.clone());
            }
            let l = previous
                .and_then(|p| p.limiters.get(s).cloned())
                .or_else(|| RateLimits::from_settings(s).map(Arc::new))?;
            limiters.insert(s.clone(), l.clone());
            Some(l)
        };
        let max_bytes = policy
            .cache
            .as_ref()
            .and_then(|c| c.max_bytes)
            .unwrap_or(crate::respcache::DEFAULT_MAX_BYTES);
        // A catalog refresh keeps the cache; a new policy (new TTLs, vary
        // fields, bound) starts an empty one.
        let cache = match previous {
            Some(p) if Arc::ptr_eq(&p.policy, &policy) => p.cache.clone(),
            _ => Arc::new(ResponseCache::new(max_bytes)),
        };
        let mut loosest = policy.limits.clone();
        let mut by_service = HashMap::new();
        for service in routes.services() {
            let scope = ServiceScope {
                entity: service.entity_code.clone(),
                code: service.code.clone(),
                version: service.version,
                category: service.category.clone(),
            };
            let explained = explain(&policy, &scope);
            let (chain, broken) = match plugins.chain_of(&explained.bindings) {
                Ok(chain) => (chain, None),
                Err(e) if strict => {
                    return Err(anyhow::anyhow!("service {}: {e}", scope.route_name()))
                }
                Err(e) => {
                    tracing::error!(service = %scope.route_name(), error = %e, "plugin chain cannot be loaded; the service fails closed");
                    (None, Some(e.to_string()))
                }
            };
            let s = explained.effective;
            let validating = s.validation.request || s.validation.response;
            let contract = match documents.get(&service.id).filter(|_| validating) {
                Some(doc) => match Contract::compile(doc) {
                    Ok(c) => Some(Arc::new(c)),
                    Err(e) => {
                        // A broken contract is the publisher's problem: the
                        // service still runs, unvalidated, and says so.
                        tracing::warn!(service = %scope.route_name(), error = %e, "contract cannot be compiled; bodies are not validated");
                        None
                    }
                },
                None => None,
            };
            loosest.max_request_body_bytes = loosest
                .max_request_body_bytes
                .max(s.limits.max_request_body_bytes);
            loosest.max_request_header_bytes = loosest
                .max_request_header_bytes
                .max(s.limits.max_request_header_bytes);
            loosest.max_request_headers = loosest
                .max_request_headers
                .max(s.limits.max_request_headers);
            by_service.insert(
                service.id,
                Arc::new(ServicePolicy {
                    rate: limiter(&s.rate_limit),
                    settings: s,
                    chain,
                    contract,
                    broken,
                }),
            );
        }
        let global = explain(
            &policy,
            &ServiceScope {
                entity: String::new(),
                code: String::new(),
                version: 0,
                category: String::new(),
            },
        );
        let fallback = Arc::new(ServicePolicy {
            rate: limiter(&global.effective.rate_limit),
            settings: global.effective,
            chain: None,
            contract: None,
            broken: None,
        });
        Ok(PolicyTable {
            policy,
            plugins,
            cache,
            loosest,
            by_service,
            fallback,
            limiters,
        })
    }

    /// The resolution for a service, if the table knows it.
    pub fn service(&self, id: i64) -> Option<&Arc<ServicePolicy>> {
        self.by_service.get(&id)
    }

    /// The global settings, for a service the table does not know yet (the
    /// catalog changed a moment ago); its chain is the global one.
    pub fn fallback(&self) -> &Arc<ServicePolicy> {
        &self.fallback
    }

    /// Forgets idle keys of every limiter (bounded memory).
    pub fn prune(&self) {
        for l in self.limiters.values() {
            l.prune();
        }
    }
}
