//! Policy versions on a gateway node: applying a policy text from any source
//! (the file at start, on SIGHUP or when the watcher sees it change; the
//! admin API; a rollback), recording each applied text as a version in the
//! store, and following the store's current version so that every node of a
//! cluster applies the same one.
//!
//! # Which policy is in force
//!
//! The store's current version, once there is one. At start, the node's
//! configured source (its policy file, or the compiled-in default) is
//! compared with the newest version recorded from that same source: when the
//! text changed (a file edited while the node was down, a new default in a
//! new release) it is applied and recorded as a new version; otherwise the
//! store's current version is applied, so a change made through the admin
//! API or a rollback survives restarts. A text that fails validation never
//! replaces the one in force: the node keeps its policy and reports the
//! failure (`GET /policies/current`, and the log).
//!
//! Relative plugin component paths of a version resolve against the policy
//! file's directory for versions that came from a file, and against the
//! plugin directory ([`crate::policy::plugin_dir`]) for all others.

use crate::policy::{explain, plugin_dir, Policy, ServiceScope, DEFAULT_POLICY};
use crate::state::Gateway;
use chasqui_catalog::policy_versions::{
    policy_digest, NewPolicyVersion, PolicySource, PolicyVersion,
};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What this node applied last, and the last failure to apply a policy.
#[derive(Debug, Default)]
pub struct PolicyTracker {
    /// Serialises applying: an admin change, the file watcher, SIGHUP and
    /// the cluster sync never interleave.
    lock: tokio::sync::Mutex<()>,
    state: std::sync::Mutex<TrackerState>,
}

#[derive(Debug, Default, Clone)]
struct TrackerState {
    /// Version id in force on this node (None before the first record).
    version_id: Option<i64>,
    /// Its text.
    text: String,
    /// Its author (decides how relative components resolve).
    author: String,
    /// The last failure, if the last attempt failed.
    last_error: Option<PolicyFailure>,
}

/// A policy that could not be applied.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicyFailure {
    /// When (Unix milliseconds).
    pub at_ms: i64,
    /// Where the text came from (`file:<path>`, `admin`, `cluster`...).
    pub origin: String,
    /// What was wrong, with file, line and path where known.
    pub message: String,
}

/// Why a policy was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The text is not a valid policy, or its plugins cannot be loaded.
    #[error("{0}")]
    Invalid(String),
    /// The version could not be stored.
    #[error("policy store: {0}")]
    Store(#[from] chasqui_catalog::StoreError),
}

/// Who applies a text, and why.
#[derive(Debug, Clone)]
pub struct Origin {
    /// From where.
    pub source: PolicySource,
    /// Who (`file:<path>`, `default`, a principal's ledger name).
    pub author: String,
    /// Why.
    pub comment: String,
    /// For a rollback, the version restored.
    pub restores: Option<i64>,
    /// Record a version even when the text equals the one in force: a
    /// source seen for the first time, or changed since it was last
    /// recorded, must leave its own version, or the next start would take
    /// it for changed again and undo later changes made through the API.
    pub always_record: bool,
}

/// The result of applying a text.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The version now in force.
    pub version: PolicyVersion,
    /// Whether a new version was recorded (false: the text equals the
    /// current version; it was reinstalled, which also reloads changed
    /// plugin components).
    pub recorded: bool,
}

/// One setting that differs between two policies for one scope.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SettingChange {
    /// JSON pointer of the setting within the effective settings.
    pub path: String,
    /// Its value before (absent: not set).
    #[schema(value_type = Object)]
    pub before: Option<Value>,
    /// Its value after (absent: not set).
    #[schema(value_type = Object)]
    pub after: Option<Value>,
}

/// The changes of effective settings for one service.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ServiceChanges {
    /// The service (`entidad/v{n}`).
    pub service: String,
    /// What changes for it.
    pub changes: Vec<SettingChange>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The directory relative plugin components of a version resolve against.
pub fn component_base(author: &str) -> PathBuf {
    match author.strip_prefix("file:") {
        Some(path) => Path::new(path)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        None => plugin_dir(),
    }
}

/// Parses and checks `text`, resolving components for `author`.
pub fn parse_for(text: &str, origin: &str, author: &str) -> Result<Policy, ApplyError> {
    Policy::parse_with_base(text, origin, &component_base(author))
        .map_err(|e| ApplyError::Invalid(e.to_string()))
}

impl PolicyTracker {
    /// The version id in force on this node.
    pub fn version_id(&self) -> Option<i64> {
        self.lock_state().version_id
    }

    /// The last failure, if the last attempt to apply a policy failed.
    pub fn last_error(&self) -> Option<PolicyFailure> {
        self.lock_state().last_error.clone()
    }

    /// The text in force on this node.
    pub fn text(&self) -> String {
        self.lock_state().text.clone()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        // A panic while holding this lock cannot leave the plain data in it
        // half-written in a way that matters; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, origin: &str, message: String) {
        tracing::error!(%origin, error = %message, "policy refused; the one in force stays");
        self.lock_state().last_error = Some(PolicyFailure {
            at_ms: now_ms(),
            origin: origin.to_string(),
            message,
        });
    }

    fn set(&self, version: &PolicyVersion) {
        let mut s = self.lock_state();
        s.version_id = Some(version.id);
        s.text = version.body.clone();
        s.author = version.author.clone();
        s.last_error = None;
    }
}

impl Gateway {
    /// The text and origin of this node's configured policy source.
    pub fn configured_policy(&self) -> anyhow::Result<(String, Origin)> {
        Ok(match &self.policy_path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("reading the policy file {}: {e}", path.display())
                })?;
                let author = format!("file:{}", path.display());
                (
                    text,
                    Origin {
                        source: PolicySource::File,
                        author,
                        comment: String::new(),
                        restores: None,
                        always_record: false,
                    },
                )
            }
            None => (
                DEFAULT_POLICY.to_string(),
                Origin {
                    source: PolicySource::Default,
                    author: "default".into(),
                    comment: String::new(),
                    restores: None,
                    always_record: false,
                },
            ),
        })
    }

    /// Validates `text` completely (schema, rules, plugins loaded with
    /// their configurations), swaps it in, and records it as the current
    /// version unless it equals the current one. On any error nothing
    /// changes, and the failure is remembered for `GET /policies/current`.
    pub async fn apply_policy_text(
        self: &Arc<Self>,
        text: String,
        origin: Origin,
    ) -> Result<Applied, ApplyError> {
        let _serial = self.policy_tracker.lock.lock().await;
        let result = self.apply_locked(text, &origin).await;
        if let Err(e) = &result {
            self.policy_tracker.fail(&origin.author, e.to_string());
        }
        result
    }

    async fn apply_locked(
        self: &Arc<Self>,
        text: String,
        origin: &Origin,
    ) -> Result<Applied, ApplyError> {
        let policy = parse_for(&text, &origin.author, &origin.author)?;
        let previous = self.policy.load_full();
        self.install_blocking(policy).await?;
        let current = self.store.current_policy().await;
        let unchanged = match &current {
            Ok(Some(v)) => {
                v.sha256 == policy_digest(&text)
                    && origin.restores.is_none()
                    && !origin.always_record
            }
            _ => false,
        };
        if unchanged {
            if let Ok(Some(v)) = current {
                self.policy_tracker.set(&v);
                return Ok(Applied {
                    version: v,
                    recorded: false,
                });
            }
        }
        let recorded = self
            .store
            .record_policy_version(&NewPolicyVersion {
                body: &text,
                author: &origin.author,
                comment: &origin.comment,
                source: origin.source,
                restores: origin.restores,
                make_current: true,
            })
            .await;
        match recorded {
            Ok(version) => {
                self.policy_tracker.set(&version);
                tracing::info!(version = version.id, author = %version.author, source = %version.source, "policy applied");
                Ok(Applied {
                    version,
                    recorded: true,
                })
            }
            Err(e) => {
                // Not recorded: the cluster would not follow, so this node
                // must not diverge either. Put the previous policy back.
                if let Err(back) = self.install_blocking((*previous).clone()).await {
                    tracing::error!(error = %back, "could not reinstall the previous policy");
                }
                Err(e.into())
            }
        }
    }

    /// Loads the policy's plugins and swaps both in, off the async threads
    /// (compiling a component may take a while).
    async fn install_blocking(self: &Arc<Self>, policy: Policy) -> Result<(), ApplyError> {
        let gw = self.clone();
        tokio::task::spawn_blocking(move || gw.apply_policy(policy))
            .await
            .map_err(|e| ApplyError::Invalid(format!("policy install task failed: {e}")))?
            .map_err(|e| ApplyError::Invalid(format!("{e:#}")))
    }

    /// At start: records the configured source if its text changed since it
    /// was last recorded, otherwise applies the store's current version.
    /// The node already runs the configured policy when this is called.
    pub async fn adopt_startup_policy(self: &Arc<Self>) -> anyhow::Result<()> {
        let (text, origin) = self.configured_policy()?;
        let latest = self
            .store
            .latest_policy_from(origin.source, &origin.author)
            .await?;
        let digest = policy_digest(&text);
        let current = self.store.current_policy_id().await?;
        match (&latest, current) {
            // The first policy of this store, or this source changed since
            // it was last recorded: it applies, as a version of its own.
            (None, None) => {}
            (Some(seen), _) if seen.sha256 != digest => {}
            // A source this store has not seen (a node joining a cluster, a
            // policy file configured for the first time) does not override
            // the version in force: it is kept as history, and SIGHUP or an
            // edit of the file applies it.
            (None, Some(in_force)) => {
                let mut record = NewPolicyVersion {
                    body: &text,
                    author: &origin.author,
                    comment: "seen at start; the version in force stays",
                    source: origin.source,
                    restores: None,
                    make_current: false,
                };
                let in_force_text = self.store.policy_version(in_force).await?;
                if in_force_text.as_ref().is_some_and(|v| v.sha256 == digest) {
                    record.comment = "seen at start; equal to the version in force";
                } else {
                    tracing::warn!(
                        source = %origin.author,
                        version = in_force,
                        "the configured policy differs from the version in force, which stays; SIGHUP or an edit of the file applies it"
                    );
                }
                self.store.record_policy_version(&record).await?;
                self.sync_policy().await;
                return Ok(());
            }
            (Some(_), _) => {}
        }
        let changed = latest.as_ref().is_none_or(|v| v.sha256 != digest);
        if changed {
            let origin = Origin {
                comment: "loaded at start".into(),
                always_record: true,
                ..origin
            };
            self.apply_policy_text(text, origin).await?;
            return Ok(());
        }
        if let (Some(latest), Some(current)) = (&latest, self.store.current_policy_id().await?) {
            if latest.id == current {
                // Already running it: no need to load it twice.
                self.policy_tracker.set(latest);
                return Ok(());
            }
        }
        self.sync_policy().await;
        Ok(())
    }

    /// Applies the store's current version if this node runs another one
    /// (a change made through another node). A version that cannot be
    /// applied here leaves the node on its policy and is reported.
    pub async fn sync_policy(self: &Arc<Self>) {
        let _serial = self.policy_tracker.lock.lock().await;
        // Every catalog change leads here: compare the id first, and read
        // the policy text only when this node runs another version.
        let current = match self.store.current_policy_id().await {
            Ok(Some(id)) if self.policy_tracker.version_id() == Some(id) => return,
            Ok(Some(id)) => self.store.policy_version(id).await,
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let current = match current {
            Ok(Some(v)) => v,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the current policy version");
                return;
            }
        };
        let origin = format!("version {} ({})", current.id, current.author);
        let outcome = match parse_for(&current.body, &origin, &current.author) {
            Ok(policy) => self.install_blocking(policy).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(
                    version = current.id,
                    "policy version applied from the store"
                );
                self.policy_tracker.set(&current);
            }
            Err(e) => self.policy_tracker.fail(&origin, e.to_string()),
        }
    }

    /// SIGHUP: applies the configured source again (also reloading plugin
    /// components that changed on disk).
    pub async fn reload_configured_policy(self: &Arc<Self>) -> anyhow::Result<Applied> {
        let (text, origin) = self.configured_policy()?;
        let origin = Origin {
            comment: "reloaded on SIGHUP".into(),
            ..origin
        };
        Ok(self.apply_policy_text(text, origin).await?)
    }

    /// Watches the policy file (when there is one) and applies it when it
    /// changes. Editors replace files, so the directory is watched.
    pub fn spawn_policy_watcher(self: &Arc<Self>) -> anyhow::Result<()> {
        use notify::{RecursiveMode, Watcher};
        let Some(path) = self.policy_path.clone() else {
            return Ok(());
        };
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = path.file_name().map(|n| n.to_os_string());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    let ours = event
                        .paths
                        .iter()
                        .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
                    if ours && !event.kind.is_access() {
                        let _ = tx.send(());
                    }
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let gw = self.clone();
        self.control.spawn(async move {
            // The watcher lives as long as this task.
            let _watcher = watcher;
            let mut last_seen = policy_digest(&gw.policy_tracker.text());
            while rx.recv().await.is_some() {
                // Let a burst of events (write, rename, chmod) settle.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
                let (text, origin) = match gw.configured_policy() {
                    Ok(found) => found,
                    Err(e) => {
                        gw.policy_tracker
                            .fail(&format!("file:{}", path.display()), format!("{e:#}"));
                        continue;
                    }
                };
                let digest = policy_digest(&text);
                if digest == last_seen {
                    continue;
                }
                last_seen = digest;
                let origin = Origin {
                    comment: "the policy file changed".into(),
                    ..origin
                };
                match gw.apply_policy_text(text, origin).await {
                    Ok(applied) => tracing::info!(
                        version = applied.version.id,
                        "policy file changed: applied"
                    ),
                    Err(e) => tracing::error!(error = %e, "policy file changed: refused; the policy in force stays"),
                }
            }
        });
        Ok(())
    }

    /// For each service of the catalog, how its effective settings (after
    /// scope precedence, [`crate::policy::explain`]) differ between the
    /// policy texts `before` and `after`; services without a change are
    /// left out, and the entry `*` holds the global settings. An empty or
    /// unparseable `before` counts as no policy.
    pub async fn policy_changes(
        &self,
        before: &str,
        after: &str,
    ) -> anyhow::Result<Vec<ServiceChanges>> {
        let base = plugin_dir();
        let before = Policy::parse_with_base(before, "the policy in force", &base).ok();
        let after = Policy::parse_with_base(after, "the new policy", &base)?;
        let snapshot = self.store.load_snapshot().await?;
        let mut scopes = vec![ServiceScope {
            entity: "*".into(),
            code: "*".into(),
            version: 0,
            category: String::new(),
        }];
        scopes.extend(snapshot.services.iter().map(ServiceScope::from));
        let mut out = Vec::new();
        for scope in scopes {
            let name = if scope.entity == "*" {
                "*".to_string()
            } else {
                scope.route_name()
            };
            let mut changes = Vec::new();
            diff_values(
                "",
                before
                    .as_ref()
                    .map(|p| effective_settings(p, &scope, &name))
                    .as_ref(),
                Some(&effective_settings(&after, &scope, &name)),
                &mut changes,
            );
            if !changes.is_empty() {
                out.push(ServiceChanges {
                    service: name,
                    changes,
                });
            }
        }
        Ok(out)
    }
}

/// The effective settings of `policy` for one service as plain values: the
/// explained settings without their origins, the plugin chain, and the
/// store-and-forward settings when they apply.
fn effective_settings(policy: &Policy, scope: &ServiceScope, name: &str) -> Value {
    let explained = explain(policy, scope);
    let mut out = match strip_origins(explained.settings) {
        Value::Object(map) => map,
        other => {
            let mut map = serde_json::Map::new();
            map.insert("settings".into(), other);
            map
        }
    };
    out.insert(
        "plugins".into(),
        strip_origins(serde_json::to_value(&explained.plugins).unwrap_or(Value::Null)),
    );
    if let Some(sf) = &policy.store_and_forward {
        if sf.services.iter().any(|s| s == name) {
            out.insert(
                "store_and_forward".into(),
                serde_json::json!({
                    "methods": sf.methods,
                    "max_body_bytes": sf.max_body_bytes,
                    "retry_initial_ms": sf.retry_initial_ms,
                    "retry_max_ms": sf.retry_max_ms,
                }),
            );
        }
    }
    Value::Object(out)
}

/// Drops where each setting came from: `{"value": v, "from": s}` becomes
/// `v`, and `from` members go. Only what is in force is compared.
fn strip_origins(value: Value) -> Value {
    match value {
        Value::Object(mut map) => {
            map.remove("from");
            if map.len() == 1 && map.contains_key("value") {
                return strip_origins(map.remove("value").unwrap_or(Value::Null));
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, strip_origins(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(strip_origins).collect()),
        other => other,
    }
}

/// Records in `out` every leaf that differs between `a` and `b` under
/// `path`. Arrays of objects with a `name` are compared by name, so a
/// plugin moved or changed shows as that plugin's change.
fn diff_values(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<SettingChange>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff_values(
                    &format!("{path}/{}", escape(k)),
                    x.get(k.as_str()),
                    y.get(k.as_str()),
                    out,
                );
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) if named(x) && named(y) => {
            let order_x: Vec<&str> = x.iter().filter_map(name_of).collect();
            let order_y: Vec<&str> = y.iter().filter_map(name_of).collect();
            if order_x != order_y {
                out.push(SettingChange {
                    path: format!("{path}/@order"),
                    before: Some(serde_json::json!(order_x)),
                    after: Some(serde_json::json!(order_y)),
                });
            }
            let mut names: Vec<&str> = order_x.clone();
            names.extend(order_y.iter().filter(|n| !order_x.contains(n)));
            for n in names {
                diff_values(
                    &format!("{path}/{}", escape(n)),
                    x.iter().find(|e| name_of(e) == Some(n)),
                    y.iter().find(|e| name_of(e) == Some(n)),
                    out,
                );
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(SettingChange {
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_string()
            },
            before: a.cloned(),
            after: b.cloned(),
        }),
    }
}

fn named(items: &[Value]) -> bool {
    items.iter().all(|i| name_of(i).is_some())
}

fn name_of(item: &Value) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

/// JSON pointer escaping of one segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}
