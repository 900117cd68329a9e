//! `chasqui policy validate`: loads every plugin a policy binds (globally
//! and in each scope) exactly as a gateway would, and reports each failure
//! with the line and JSON pointer of the place to fix.

use super::lines::{escape, LineIndex};
use super::{explain, Policy};
use crate::plugin::chain::load_binding;
use crate::plugin::{PluginEngine, PluginError};
use std::collections::HashSet;
use std::sync::Arc;

/// One problem found, located in the policy text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line, when it could be found.
    pub line: Option<usize>,
    /// JSON pointer of the offending value.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// The field of a binding an error is about.
fn field_of(e: &PluginError) -> &'static str {
    match e {
        PluginError::Read { .. } => "component",
        PluginError::CapabilityNotGranted { .. } => "capabilities",
        PluginError::Config { .. } => "config",
        PluginError::Invalid { message, .. } if message.contains("version") => "version",
        PluginError::Invalid { message, .. } if message.contains("declares the name") => "name",
        _ => "",
    }
}

/// Loads every binding of `policy` (whose text is `text`) and returns what
/// failed; empty when every plugin loads.
pub fn plugin_findings(policy: &Policy, text: &str, engine: &Arc<PluginEngine>) -> Vec<Finding> {
    let index = LineIndex::new(text);
    let mut findings = Vec::new();
    let mut seen = HashSet::new();
    let report = |base: String, e: PluginError, findings: &mut Vec<Finding>| {
        let field = field_of(&e);
        let mut pointer = base;
        if !field.is_empty() {
            pointer = format!("{pointer}/{field}");
        }
        findings.push(Finding {
            line: index.line(&pointer),
            pointer,
            message: e.to_string(),
        });
    };
    for (i, binding) in policy.plugins.iter().enumerate() {
        seen.insert(format!("{binding:?}"));
        if let Err(e) = load_binding(engine, binding) {
            report(format!("/plugins/{i}"), e, &mut findings);
        }
    }
    // Each scope on its own: the bindings it changes or adds.
    let scopes = policy
        .categories
        .iter()
        .map(|(k, s)| ("categories", k, s))
        .chain(policy.publishers.iter().map(|(k, s)| ("publishers", k, s)))
        .chain(policy.services.iter().map(|(k, s)| ("services", k, s)));
    let probes = policy.scope_probes();
    for ((kind, key, scope), (_, probe)) in scopes.zip(probes) {
        let explained = explain(policy, &probe);
        for binding in &explained.bindings {
            if !seen.insert(format!("{binding:?}")) {
                continue;
            }
            let Some(j) = scope.plugins.iter().position(|p| p.name == binding.name) else {
                continue;
            };
            if let Err(e) = load_binding(engine, binding) {
                report(
                    format!("/{kind}/{}/plugins/{j}", escape(key)),
                    e,
                    &mut findings,
                );
            }
        }
    }
    findings
}
