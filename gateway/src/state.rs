//! The gateway's shared state: the route table, the token cache, the policy
//! and the lifecycle flags, plus the control-plane tasks that keep them fresh.

use crate::auth::TokenCache;
use crate::deferred::Deferrals;
use crate::effective::{Documents, PolicyTable};
use crate::ledger::Ledger;
use crate::platform::Platform;
use crate::plugin::chain::PluginSet;
use crate::plugin::PluginEngine;
use crate::policy::Policy;
use crate::quota::Quotas;
use crate::routes::{self, HealthRegistry, RouteTable};
use arc_swap::ArcSwap;
use chasqui_catalog::Store;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::runtime::Handle;

/// How often token last-use times are written to the store.
pub const LAST_USED_FLUSH: Duration = Duration::from_secs(2);

/// Shared state of one gateway process.
pub struct Gateway {
    /// Current route table.
    pub routes: ArcSwap<RouteTable>,
    /// Token cache.
    pub tokens: TokenCache,
    /// Current policy.
    pub policy: ArcSwap<Policy>,
    /// Health of upstream addresses.
    pub health: HealthRegistry,
    /// The catalog store.
    pub store: Store,
    /// Handle of the control runtime (store, refresh, health checks).
    pub control: Handle,
    /// Readiness, draining and in-flight accounting.
    pub lifecycle: Arc<Lifecycle>,
    /// Whether to write access-log lines.
    pub access_log: bool,
    /// The loaded plugins of the current policy.
    pub plugins: ArcSwap<PluginSet>,
    /// The policy file, if any (reloaded on SIGHUP).
    pub policy_path: Option<PathBuf>,
    /// Where compiled plugins are cached.
    plugin_cache: PathBuf,
    engine: OnceLock<Arc<PluginEngine>>,
    /// The audit ledger.
    pub ledger: Arc<Ledger>,
    /// The current policy resolved per service (settings, chains, rate
    /// limiters, contracts, cache), swapped with the policy and refreshed
    /// with the catalog.
    pub table: ArcSwap<PolicyTable>,
    /// Quota counters (per consumer × service, day and month).
    pub quotas: Arc<Quotas>,
    /// Services' OpenAPI documents, for contract validation.
    documents: ArcSwap<Documents>,
    /// The SQLite database the ledger is kept in (see [`open_ledger_pool`]).
    pub ledger_pool: sqlx::SqlitePool,
    /// Requests kept by store-and-forward.
    pub deferred: Arc<Deferrals>,
    /// Incidents and fees reported by plugins.
    pub platform: Arc<Platform>,
    /// Request metrics, exposed by the admin API's `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The operational record of every request.
    pub records: Arc<crate::oprecords::Recorder>,
    /// The policy version in force here and the last failure to apply one.
    pub policy_tracker: crate::policy_versions::PolicyTracker,
    /// Whether operational records, usage aggregates and exchange entries
    /// of the ledger are kept (off only to measure their cost).
    pub metering: bool,
    /// Whether answers wait for the commit of their exchange's ledger entry.
    pub ledger_durability: crate::ledger::Durability,
    /// The trace exporter.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

/// Observability settings of the data plane.
#[derive(Debug, Clone, Default)]
pub struct ObsSettings {
    /// Operational records, usage aggregates and exchange ledger entries on.
    pub metering: bool,
    /// What a crash may lose of the exchanges in the ledger.
    pub ledger_durability: crate::ledger::Durability,
    /// OTLP/HTTP collector for traces, if any.
    pub otlp_endpoint: Option<String>,
}

/// Readiness and draining.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    draining: AtomicBool,
    inflight: AtomicUsize,
}

impl Lifecycle {
    /// Ready to take traffic: catalog loaded and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.is_draining()
    }

    /// Marks the gateway ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Begins draining: readiness goes to 503 at once.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Requests being served now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Counts a request until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.clone())
    }
}

/// Decrements the in-flight count when dropped.
pub struct InflightGuard(Arc<Lifecycle>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gateway {
    /// Builds the state from an open store; call on the control runtime.
    /// The policy's plugins are loaded here: a plugin that cannot be loaded
    /// stops the start.
    pub async fn new(
        store: Store,
        policy: Policy,
        policy_path: Option<PathBuf>,
        plugin_cache: PathBuf,
        access_log: bool,
        obs: ObsSettings,
    ) -> anyhow::Result<Arc<Gateway>> {
        let telemetry = crate::telemetry::Telemetry::start(obs.otlp_endpoint.as_deref())?;
        let data_dir = plugin_cache.parent().unwrap_or(Path::new("."));
        let ledger_pool = open_ledger_pool(&store, data_dir).await?;
        let key_path = plugin_cache.with_file_name("ledger-ed25519.pk8");
        let appender = ledger_appender(&store, data_dir)?;
        let ledger = match obs.ledger_durability {
            // Strict answers are journaled rather than waiting for commits.
            crate::ledger::Durability::Strict => {
                Ledger::open_journaled(ledger_pool.clone(), appender, &key_path, data_dir).await?
            }
            crate::ledger::Durability::Batched => {
                Ledger::open_appending(ledger_pool.clone(), appender, &key_path).await?
            }
        };
        ledger.spawn_flusher();
        let deferred = Arc::new(Deferrals::load(&store).await?);
        let platform = Platform::start(store.clone());
        let records = crate::oprecords::Recorder::start(store.clone());
        let engine = OnceLock::new();
        let plugins = load_plugins(
            &engine,
            &plugin_cache,
            &policy,
            &ledger,
            &platform,
            &store,
            &Handle::current(),
        )?;
        let health = HealthRegistry::default();
        let snapshot = store.load_snapshot().await?;
        let table = routes::build(&snapshot, &health).await;
        let documents = load_documents(&store).await?;
        let quotas = Arc::new(Quotas::load(&store, chasqui_catalog::model::now_unix()).await?);
        let policy = Arc::new(policy);
        let plugins = Arc::new(plugins);
        let resolved = PolicyTable::build(
            policy.clone(),
            plugins.clone(),
            &table,
            &documents,
            None,
            true,
        )?;
        let gateway = Gateway {
            routes: ArcSwap::from_pointee(table),
            tokens: TokenCache::new(store.clone(), Handle::current()),
            policy: ArcSwap::new(policy),
            health,
            store,
            control: Handle::current(),
            lifecycle: Arc::new(Lifecycle::default()),
            access_log,
            plugins: ArcSwap::new(plugins),
            policy_path,
            plugin_cache,
            engine,
            ledger,
            table: ArcSwap::from_pointee(resolved),
            quotas,
            documents: ArcSwap::from_pointee(documents),
            ledger_pool,
            deferred,
            platform,
            metrics: crate::metrics::Metrics::new(),
            records,
            policy_tracker: Default::default(),
            metering: obs.metering,
            ledger_durability: obs.ledger_durability,
            telemetry,
        };
        Ok(Arc::new(gateway))
    }

    /// Validates `policy` completely (plugins loaded, every service
    /// resolved), then swaps it in atomically. Requests in flight finish
    /// with the policy and chains they started with; on any error nothing
    /// changes. Blocking: plugins may need compiling. Versions and sources
    /// are handled by [`crate::policy_versions`].
    pub fn apply_policy(&self, policy: Policy) -> anyhow::Result<()> {
        let (policy, plugins, resolved) = self.prepare_policy(policy)?;
        // One swap decides what new requests see: they read the policy and
        // chains from the table.
        self.table.store(Arc::new(resolved));
        self.plugins.store(plugins);
        self.policy.store(policy);
        Ok(())
    }

    /// Everything [`Gateway::apply_policy`] checks, without swapping: the
    /// validation of a dry run. Blocking.
    pub fn check_policy(&self, policy: Policy) -> anyhow::Result<()> {
        self.prepare_policy(policy).map(drop)
    }

    fn prepare_policy(
        &self,
        policy: Policy,
    ) -> anyhow::Result<(Arc<Policy>, Arc<PluginSet>, PolicyTable)> {
        let plugins = Arc::new(load_plugins(
            &self.engine,
            &self.plugin_cache,
            &policy,
            &self.ledger,
            &self.platform,
            &self.store,
            &self.control,
        )?);
        let policy = Arc::new(policy);
        let previous = self.table.load_full();
        let resolved = PolicyTable::build(
            policy.clone(),
            plugins.clone(),
            &self.routes.load(),
            &self.documents.load(),
            Some(&previous),
            true,
        )?;
        Ok((policy, plugins, resolved))
    }

    /// Reloads the route table if the catalog changed; returns whether it did.
    pub async fn refresh(self: &Arc<Self>) -> anyhow::Result<bool> {
        let seq = self.store.change_seq().await?;
        if seq == self.routes.load().seq {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Reloads the route table and drops every cached token, whatever the
    /// change sequence says. On PostgreSQL a change notification leads here:
    /// identity values are handed out at insert, not at commit, so a change
    /// can commit with a lower `catalog_changes` id than one already seen and
    /// the sequence alone would miss it.
    pub async fn reload(self: &Arc<Self>) -> anyhow::Result<()> {
        let snapshot = self.store.load_snapshot().await?;
        let table = routes::build(&snapshot, &self.health).await;
        // Swap first, then drop cached tokens: a request that races sees
        // either the old table with old tokens or fresh lookups.
        self.routes.store(Arc::new(table));
        self.tokens.invalidate_all();
        match load_documents(&self.store).await {
            Ok(documents) => self.documents.store(Arc::new(documents)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the services' contracts; keeping the previous ones")
            }
        }
        let previous = self.table.load_full();
        let resolved = PolicyTable::build(
            previous.policy.clone(),
            previous.plugins.clone(),
            &self.routes.load(),
            &self.documents.load(),
            Some(&previous),
            false,
        )?;
        self.table.store(Arc::new(resolved));
        tracing::info!(seq = snapshot.seq, "catalog reloaded");
        // The change may be a new policy version applied through another
        // node: follow it (after the routes, so that a revocation never
        // waits for a plugin to compile).
        self.sync_policy().await;
        Ok(())
    }

    /// Spawns the catalog watcher and the health checker on the control runtime.
    pub fn spawn_control_tasks(self: &Arc<Self>, poll: Duration) {
        crate::deferred::spawn_forwarder(self.clone());
        let gw = self.clone();
        self.control.spawn(async move {
            // On PostgreSQL other nodes change the catalog too: a LISTEN
            // connection wakes this loop at once; the poll stays as the
            // fallback for when that connection is down.
            let changes = gw.store.watch_changes();
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let notified = match &changes {
                    Some(changes) => tokio::select! {
                        _ = tick.tick() => false,
                        _ = changes.notified() => true,
                    },
                    None => {
                        tick.tick().await;
                        false
                    }
                };
                let outcome = if notified {
                    gw.reload().await
                } else {
                    gw.refresh().await.map(|_| ())
                };
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "catalog refresh failed; keeping the current table");
                }
            }
        });
        let gw = self.clone();
        self.control.spawn(async move {
            loop {
                tokio::time::sleep(LAST_USED_FLUSH).await;
                if let Err(e) = gw.tokens.flush_last_used().await {
                    tracing::warn!(error = %e, "could not record token last-use times");
                }
            }
        });
        let gw = self.clone();
        self.control.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                gw.table.load().prune();
                gw.quotas
                    .prune(&gw.store, chasqui_catalog::model::now_unix())
                    .await;
            }
        });
        let gw = self.clone();
        self.control.spawn(async move {
            loop {
                tokio::time::sleep(crate::quota::QUOTA_FLUSH).await;
                gw.quotas.flush(&gw.store).await;
            }
        });
        let gw = self.clone();
        self.control.spawn(async move {
            loop {
                let hc = gw.policy.load().upstream.health_check.clone();
                gw.probe_all(&hc).await;
                tokio::time::sleep(Duration::from_millis(hc.interval_ms)).await;
            }
        });
    }

    /// Probes every distinct upstream address once with a TCP connect.
    async fn probe_all(&self, hc: &crate::policy::HealthCheckPolicy) {
        let table = self.routes.load_full();
        let mut targets = HashMap::new();
        for pool in table.pools() {
            for b in &pool.backends {
                targets
                    .entry(b.addr)
                    .or_insert_with(|| (b.health.clone(), b.url.clone()));
            }
        }
        let timeout = Duration::from_millis(hc.timeout_ms);
        let mut probes = tokio::task::JoinSet::new();
        for (addr, (health, url)) in targets {
            probes.spawn(async move {
                let ok = matches!(
                    tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
                    Ok(Ok(_))
                );
                (health, url, ok)
            });
        }
        while let Some(Ok((health, url, ok))) = probes.join_next().await {
            if let Some(now_healthy) = health.record_probe(ok, hc.healthy_after, hc.unhealthy_after)
            {
                if now_healthy {
                    tracing::info!(%url, "upstream healthy again");
                } else {
                    tracing::warn!(%url, "upstream unhealthy");
                }
            }
        }
    }
}

/// Opens the SQLite database of this node's audit ledger. The ledger is per
/// node (hash-chained and signed with the node's key), so it always stays in
/// SQLite: in the catalog's own file when the catalog is a SQLite file, and
/// in `<data_dir>/ledger.db` when the catalog is shared (PostgreSQL) or in
/// memory. Entries that a gateway which crashed had journaled, and not yet
/// committed, are recovered into it first ([`crate::ledger::recover_journal`]).
pub async fn open_ledger_pool(store: &Store, data_dir: &Path) -> anyhow::Result<sqlx::SqlitePool> {
    let pool = match store.sqlite_pool() {
        Some(pool) => pool.clone(),
        None => {
            std::fs::create_dir_all(data_dir)?;
            let path = data_dir.join("ledger.db");
            chasqui_catalog::store::open_sqlite_pool(&path)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("opening the ledger database {}: {e}", path.display())
                })?
        }
    };
    // Entries a crashed gateway journaled but did not commit (none while a
    // gateway runs on this directory: it holds the journal).
    let recovered = crate::ledger::recover_journal(&pool, data_dir).await?;
    if recovered > 0 {
        tracing::warn!(
            entries = recovered,
            "recovered ledger entries from the journal"
        );
    }
    Ok(pool)
}

/// The append connection of the ledger's file ([`open_ledger_pool`]): the
/// catalog's own when the catalog is that file, else one to
/// `<data_dir>/ledger.db` (opened, and so migrated, before this).
pub fn ledger_appender(
    store: &Store,
    data_dir: &Path,
) -> anyhow::Result<Option<Arc<chasqui_catalog::appender::Appender>>> {
    if store.sqlite_pool().is_some() {
        return Ok(store.appender().cloned());
    }
    let path = data_dir.join("ledger.db");
    let appender = chasqui_catalog::appender::Appender::open(&path)
        .map_err(|e| anyhow::anyhow!("opening the ledger database {}: {e}", path.display()))?;
    Ok(Some(appender))
}

/// Loads a policy's plugins, creating the shared engine the first time one
/// is needed.
fn load_plugins(
    engine: &OnceLock<Arc<PluginEngine>>,
    cache: &Path,
    policy: &Policy,
    ledger: &Arc<Ledger>,
    platform: &Arc<Platform>,
    store: &Store,
    control: &Handle,
) -> anyhow::Result<PluginSet> {
    let scoped = policy
        .categories
        .values()
        .chain(policy.publishers.values())
        .chain(policy.services.values())
        .any(|s| s.plugins.iter().any(|p| p.component.is_some()));
    if policy.plugins.is_empty() && !scoped {
        return Ok(PluginSet::default());
    }
    let engine = match engine.get() {
        Some(e) => e.clone(),
        None => {
            let sink: Arc<dyn crate::plugin::EvidenceSink> = ledger.clone();
            let reports: Arc<dyn crate::plugin::PlatformSink> = platform.clone();
            let durable: Arc<dyn crate::plugin::KvBackend> = Arc::new(
                crate::durable_kv::StoreKv::new(store.clone(), control.clone()),
            );
            let created =
                PluginEngine::with_platform(cache, Some(sink), Some(reports), Some(durable))?;
            engine.get_or_init(|| created).clone()
        }
    };
    Ok(PluginSet::load(&engine, policy)?)
}

/// Every stored OpenAPI document, parsed; unparsable ones are left out.
async fn load_documents(store: &Store) -> anyhow::Result<Documents> {
    let mut out = Documents::new();
    for (id, text) in store.openapi_documents().await? {
        match serde_json::from_str(&text) {
            Ok(doc) => {
                out.insert(id, Arc::new(doc));
            }
            Err(e) => {
                tracing::warn!(service_id = id, error = %e, "stored OpenAPI document is not JSON")
            }
        }
    }
    Ok(out)
}
