//! The plugin chains of a policy: every bound plugin loaded, and the chain
//! of each service computed on demand.

use super::{LoadedPlugin, PluginEngine, PluginError, PluginSpec};
use crate::policy::{PluginBinding, Policy};
use std::sync::Arc;

/// The loaded plugins of one policy, in chain order.
#[derive(Debug, Default)]
pub struct PluginSet {
    bound: Vec<(Arc<LoadedPlugin>, PluginBinding)>,
}

/// The chain of one request.
pub type Chain = Arc<[Arc<LoadedPlugin>]>;

impl PluginSet {
    /// Loads every plugin the policy binds. Any failure refuses the whole
    /// set, so a policy with a bad plugin never reaches the data plane.
    pub fn load(engine: &Arc<PluginEngine>, policy: &Policy) -> Result<PluginSet, PluginError> {
        let mut bound = Vec::with_capacity(policy.plugins.len());
        for binding in &policy.plugins {
            let spec = PluginSpec {
                name: binding.name.clone(),
                component: binding.component.clone(),
                config: binding.config.clone(),
                capabilities: binding.capabilities.clone(),
                isolation: binding.isolation,
                failure: binding.failure,
                limits: binding.limits.clone(),
                durable_kv: binding.durable_state,
            };
            bound.push((engine.load(spec)?, binding.clone()));
        }
        Ok(PluginSet { bound })
    }

    /// Every loaded plugin, in chain order.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.bound.iter().map(|(p, _)| p)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    /// The chain for a service, `None` when no plugin runs for it.
    pub fn chain_for(&self, route_name: &str) -> Option<Chain> {
        if self.bound.is_empty() {
            return None;
        }
        let chain: Vec<Arc<LoadedPlugin>> = self
            .bound
            .iter()
            .filter(|(_, b)| b.applies_to(route_name))
            .map(|(p, _)| p.clone())
            .collect();
        (!chain.is_empty()).then(|| chain.into())
    }
}
