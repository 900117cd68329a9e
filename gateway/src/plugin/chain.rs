//! The plugin chains of a policy: every distinct effective binding loaded
//! once, and the chain of each service assembled from them.
//!
//! A scope may override a plugin's configuration or modes, so one plugin
//! name can stand for several loaded instances (one per distinct effective
//! binding). They are loaded when the policy is loaded: the global list,
//! each scope on its own, and every service of the catalog; a service that
//! appears later with a new combination loads it then, off the request path.

use super::{LoadedPlugin, PluginEngine, PluginError, PluginSpec};
use crate::policy::{PluginBinding, Policy};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The loaded plugins of one policy, in chain order.
#[derive(Default)]
pub struct PluginSet {
    engine: Option<Arc<PluginEngine>>,
    bound: Vec<(Arc<LoadedPlugin>, PluginBinding)>,
    by_binding: Mutex<HashMap<String, Arc<LoadedPlugin>>>,
}

impl std::fmt::Debug for PluginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSet")
            .field("global", &self.bound.len())
            .finish()
    }
}

/// The chain of one request.
pub type Chain = Arc<[Arc<LoadedPlugin>]>;

/// What identifies a loaded instance: everything but where it applies.
fn binding_key(binding: &PluginBinding) -> String {
    let mut b = binding.clone();
    b.services.clear();
    format!("{b:?}")
}

/// Loads one binding, checking the version it pins.
pub fn load_binding(
    engine: &Arc<PluginEngine>,
    binding: &PluginBinding,
) -> Result<Arc<LoadedPlugin>, PluginError> {
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
    let loaded = engine.load(spec)?;
    if let Some(wanted) = &binding.version {
        let declared = loaded.metadata().map(|m| m.version.clone());
        if declared.as_deref() != Some(wanted.as_str()) {
            return Err(PluginError::Invalid {
                plugin: binding.name.clone(),
                message: format!(
                    "the component declares version {}, but the policy asks for {wanted}",
                    declared.unwrap_or_else(|| "(none)".into())
                ),
            });
        }
    }
    Ok(loaded)
}

impl PluginSet {
    /// Loads every plugin the policy binds globally and in each scope on
    /// its own. Any failure refuses the whole set, so a policy with a bad
    /// plugin never reaches the data plane.
    pub fn load(engine: &Arc<PluginEngine>, policy: &Policy) -> Result<PluginSet, PluginError> {
        let set = PluginSet {
            engine: Some(engine.clone()),
            bound: Vec::new(),
            by_binding: Mutex::new(HashMap::new()),
        };
        let mut bound = Vec::with_capacity(policy.plugins.len());
        for binding in &policy.plugins {
            bound.push((set.get_or_load(binding)?, binding.clone()));
        }
        for (_, probe) in policy.scope_probes() {
            let explained = crate::policy::explain(policy, &probe);
            for binding in &explained.bindings {
                set.get_or_load(binding)?;
            }
        }
        Ok(PluginSet { bound, ..set })
    }

    fn get_or_load(&self, binding: &PluginBinding) -> Result<Arc<LoadedPlugin>, PluginError> {
        let key = binding_key(binding);
        if let Some(found) = self
            .by_binding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(found.clone());
        }
        let Some(engine) = &self.engine else {
            return Err(PluginError::Invalid {
                plugin: binding.name.clone(),
                message: "no plugin engine (the policy bound no plugin at load)".into(),
            });
        };
        // Loaded outside the lock: loading compiles and runs `init`.
        let loaded = load_binding(engine, binding)?;
        Ok(self
            .by_binding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(loaded)
            .clone())
    }

    /// The chain made of `bindings` (an effective chain from
    /// [`crate::policy::explain`]), loading any binding not loaded yet.
    pub fn chain_of(&self, bindings: &[PluginBinding]) -> Result<Option<Chain>, PluginError> {
        if bindings.is_empty() {
            return Ok(None);
        }
        let chain = bindings
            .iter()
            .map(|b| self.get_or_load(b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(chain.into()))
    }

    /// Every loaded plugin of the global list, in chain order.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.bound.iter().map(|(p, _)| p)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
            && self
                .by_binding
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    /// The global chain for a service (its `services` lists only, no
    /// scopes), `None` when no plugin runs for it.
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
