//! `chasqui serve`: the control runtime, the pingora server with its
//! listeners, and graceful shutdown.
//!
//! Shutdown: on SIGTERM or SIGINT readiness turns to 503 at once, pingora
//! stops accepting and closes keep-alive connections after their current
//! request, and the process exits as soon as no request is in flight (or
//! when the drain deadline passes).

use crate::config::Config;
use crate::policy::Policy;
use crate::proxy::ChasquiProxy;
use crate::state::Gateway;
use crate::{demo, tls};
use anyhow::Context;
use async_trait::async_trait;
use chasqui_catalog::Store;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Opens the store named by the configuration (creating the data directory).
pub async fn open_store(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) -> anyhow::Result<Store> {
    match database_url {
        Some(url) => Store::open(url)
            .await
            .with_context(|| "opening the database".to_string()),
        None => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating data directory {}", data_dir.display()))?;
            let path = Config::sqlite_path(data_dir);
            Store::open_sqlite(&path)
                .await
                .with_context(|| format!("opening {}", path.display()))
        }
    }
}

/// Runs the gateway until it is told to stop. Does not return on success:
/// the process exits once drained.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let policy = match &config.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default_policy()?,
    };
    let (cert, key) = tls::ensure_certificate(config.tls.as_ref(), &config.data_dir)?;

    // The control runtime owns the store's pool, the catalog watcher and the
    // health checker; the data plane runs on pingora's own runtimes.
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("chasqui-control")
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    let gw = control.block_on(async {
        let store = open_store(&config.data_dir, config.database_url.as_deref()).await?;
        if config.demo && demo::seed_if_empty(&store).await? {
            tracing::info!("loaded the demo catalog into the new store");
        }
        Gateway::new(
            store,
            policy,
            config.policy.clone(),
            config.data_dir.join("plugin-cache"),
            config.access_log,
            crate::state::ObsSettings {
                metering: config.metering,
                ledger_durability: config.ledger_durability,
                otlp_endpoint: config.otlp_endpoint.clone(),
            },
        )
        .await
    })?;
    control.block_on(gw.adopt_startup_policy())?;
    if config.watch_policy {
        gw.spawn_policy_watcher()?;
    }
    gw.spawn_control_tasks(config.catalog_poll);
    crate::oprecords::Recorder::spawn_retention(
        control.handle(),
        gw.store.clone(),
        config.record_retention_days,
    );
    // The admin API runs on the control runtime, beside the store's pool.
    control.block_on(crate::admin::start(
        &config.admin_listen,
        &cert,
        &key,
        &config.data_dir,
        crate::admin::AppState {
            store: gw.store.clone(),
            ledger: gw.ledger.clone(),
            gateway: gw.clone(),
        },
    ))?;

    let mut conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(config.drain_timeout.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: 1024,
        // One single-threaded runtime per worker thread, like nginx's
        // workers: no cross-thread wakeups or atomics on the request path.
        work_stealing: false,
        ..ServerConf::default()
    };
    conf.pid_file = config.data_dir.join("chasqui.pid").display().to_string();
    conf.upgrade_sock = config
        .data_dir
        .join("chasqui-upgrade.sock")
        .display()
        .to_string();
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        ChasquiProxy::new(gw.clone(), &server.configuration, config.direct_exchange),
        "chasqui data plane",
    );
    let mut tls_settings =
        TlsSettings::intermediate(&cert.display().to_string(), &key.display().to_string())
            .map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
    tls_settings.enable_h2();
    proxy.add_tls_with_settings(&config.listen, None, tls_settings);
    if let Some(addr) = &config.listen_http {
        proxy.add_tcp(addr);
    }
    server.add_service(proxy);
    if config.demo {
        let mut upstream = Service::new("chasqui demo upstream".to_string(), demo::DemoUpstream);
        upstream.add_tcp(&config.demo_listen);
        server.add_service(upstream);
    }

    tracing::info!(
        listen = %config.listen,
        listen_http = config.listen_http.as_deref().unwrap_or("-"),
        demo = config.demo,
        threads = config.threads,
        "chasqui serving"
    );
    gw.lifecycle.set_ready();
    spawn_drain_watch(gw.clone(), config.drain_timeout, control);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals { gw }),
    });
    Ok(())
}

/// Turns SIGTERM and SIGINT into a graceful shutdown, marking the gateway
/// not ready first.
struct Signals {
    gw: Arc<Gateway>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler; stopping");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); break; }
                _ = hup.recv() => {
                    // Applying reads the store and compiles plugins: it runs
                    // on the control runtime, beside the store's pool.
                    let gw = self.gw.clone();
                    let outcome = self
                        .gw
                        .control
                        .spawn(async move { gw.reload_configured_policy().await })
                        .await;
                    match outcome {
                        Ok(Ok(applied)) => tracing::info!(version = applied.version.id, recorded = applied.recorded, "SIGHUP: policy reloaded"),
                        Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: policy refused; the previous one stays in force"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
                    }
                }
            }
        }
        self.gw.lifecycle.begin_drain();
        ShutdownSignal::GracefulTerminate
    }
}

/// Exits the process once draining has begun and no request is in flight,
/// or when the deadline passes. Pingora would otherwise wait out its whole
/// grace period.
fn spawn_drain_watch(gw: Arc<Gateway>, deadline: Duration, control: tokio::runtime::Runtime) {
    std::thread::Builder::new()
        .name("chasqui-drain".into())
        .spawn(move || {
            while !gw.lifecycle.is_draining() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let began = Instant::now();
            // Let the listeners close and requests that were being read register.
            std::thread::sleep(Duration::from_millis(100));
            let mut idle_checks = 0;
            while began.elapsed() < deadline {
                if gw.lifecycle.inflight() == 0 {
                    idle_checks += 1;
                    if idle_checks >= 3 {
                        break;
                    }
                } else {
                    idle_checks = 0;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let left = gw.lifecycle.inflight();
            if left > 0 {
                tracing::warn!(in_flight = left, "drain deadline passed; exiting");
            } else {
                tracing::info!(
                    took_ms = began.elapsed().as_millis() as u64,
                    "drained; exiting"
                );
            }
            control.block_on(async {
                // Everything appended to the ledger reaches the store before
                // exit, covered by a signed checkpoint.
                if let Err(e) = gw.ledger.checkpoint().await {
                    tracing::error!(error = %e, "final ledger flush failed");
                }
                let (commits, entries) = gw.ledger.commit_counts();
                tracing::info!(commits, entries, "ledger entries committed since start");
                if let Err(e) = gw.tokens.flush_last_used().await {
                    tracing::warn!(error = %e, "final token last-use flush failed");
                }
                if let Err(e) = gw.platform.flush_fees().await {
                    tracing::warn!(error = %e, "final fee flush failed");
                }
                gw.records.flush().await;
                // Quota counts survive a graceful stop exactly.
                gw.quotas.flush(&gw.store).await;
                gw.store.close().await;
            });
            std::process::exit(0);
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the drain watcher"));
}
