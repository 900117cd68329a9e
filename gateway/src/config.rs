//! Configuration of `chasqui serve`: a TOML file, overridden by environment
//! variables, overridden by flags; anything left unset takes the embedded
//! default.

use clap::Args;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Flags of `chasqui serve` (each also readable from an environment variable).
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "CHASQUI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: SQLite store, generated certificate. Default `./chasqui-data`.
    #[arg(long, env = "CHASQUI_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTPS listen address of the data plane. Default `127.0.0.1:8443`.
    #[arg(long, env = "CHASQUI_LISTEN")]
    pub listen: Option<String>,
    /// Optional plain-HTTP listen address, for use behind a TLS-terminating balancer.
    #[arg(long, env = "CHASQUI_LISTEN_HTTP")]
    pub listen_http: Option<String>,
    /// TLS certificate chain (PEM). Without it a self-signed one is generated in the data directory.
    #[arg(long, env = "CHASQUI_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "CHASQUI_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Database URL. Default: `sqlite://<data-dir>/chasqui.db`.
    #[arg(long, env = "CHASQUI_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Policy file (YAML). Default: the compiled-in `policies/default.yaml`.
    #[arg(long, env = "CHASQUI_POLICY")]
    pub policy: Option<PathBuf>,
    /// Worker threads of the data plane. Default: the number of CPUs.
    #[arg(long, env = "CHASQUI_THREADS")]
    pub threads: Option<usize>,
    /// Do not load the demo catalog nor start the demo upstream.
    #[arg(long, env = "CHASQUI_NO_DEMO")]
    pub no_demo: bool,
    /// Listen address of the demo upstream. Default `127.0.0.1:18080`.
    #[arg(long, env = "CHASQUI_DEMO_LISTEN")]
    pub demo_listen: Option<String>,
    /// Write one access-log line per request (true/false). Default true.
    #[arg(long, env = "CHASQUI_ACCESS_LOG")]
    pub access_log: Option<bool>,
    /// Longest wait for in-flight requests on SIGTERM, in seconds. Default 30.
    #[arg(long, env = "CHASQUI_DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<u64>,
    /// How often the catalog store is checked for changes, in milliseconds. Default 250.
    #[arg(long, env = "CHASQUI_CATALOG_POLL_MS")]
    pub catalog_poll_ms: Option<u64>,
    /// HTTPS listen address of the admin API (same certificate as the data plane). Default `127.0.0.1:9443`.
    #[arg(long, env = "CHASQUI_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Days operational records are kept before they are deleted. Default 30.
    #[arg(long, env = "CHASQUI_RECORD_RETENTION_DAYS")]
    pub record_retention_days: Option<u32>,
    /// Apply the policy file when it changes (true/false). Default true.
    #[arg(long, env = "CHASQUI_WATCH_POLICY")]
    pub watch_policy: Option<bool>,
    /// `strict` (an answer waits for the commit of its exchange's ledger
    /// entry: a crash loses no acknowledged exchange) or `batched` (a crash
    /// may lose the last 50 ms of entries). Default `strict`.
    #[arg(long, env = "CHASQUI_LEDGER_DURABILITY")]
    pub ledger_durability: Option<String>,
    /// Operational records, usage aggregates and the exchange entries of the
    /// ledger (true/false). Default true; off only to measure their cost.
    #[arg(long, env = "CHASQUI_METERING")]
    pub metering: Option<bool>,
    /// Proxy bodiless calls (`GET`, `HEAD`) by the direct exchange rather
    /// than pingora's general proxy loop (true/false). Default true; off to
    /// compare the two.
    #[arg(long, env = "CHASQUI_DIRECT_EXCHANGE")]
    pub direct_exchange: Option<bool>,
    /// OTLP/HTTP collector (e.g. `http://127.0.0.1:4318`): traces are posted
    /// to `<endpoint>/v1/traces` as JSON. Default: no export.
    #[arg(long, env = "CHASQUI_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Log format, `text` or `json` (also the global `--log-format`).
    #[arg(skip)]
    pub log_format: Option<String>,
}

/// The configuration file; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    listen_http: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    database_url: Option<String>,
    policy: Option<PathBuf>,
    threads: Option<usize>,
    demo: Option<bool>,
    demo_listen: Option<String>,
    access_log: Option<bool>,
    drain_timeout_secs: Option<u64>,
    catalog_poll_ms: Option<u64>,
    admin_listen: Option<String>,
    record_retention_days: Option<u32>,
    watch_policy: Option<bool>,
    ledger_durability: Option<String>,
    metering: Option<bool>,
    direct_exchange: Option<bool>,
    otlp_endpoint: Option<String>,
    log_format: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// HTTPS listen address.
    pub listen: String,
    /// Plain-HTTP listen address, if any.
    pub listen_http: Option<String>,
    /// Configured certificate and key, if any.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Database URL, if not the data directory's SQLite file.
    pub database_url: Option<String>,
    /// Policy file, if not the default policy.
    pub policy: Option<PathBuf>,
    /// Data-plane worker threads.
    pub threads: usize,
    /// Whether the demo catalog and upstream are on.
    pub demo: bool,
    /// Demo upstream listen address.
    pub demo_listen: String,
    /// Access log on or off.
    pub access_log: bool,
    /// Drain deadline on SIGTERM.
    pub drain_timeout: Duration,
    /// Catalog change poll period.
    pub catalog_poll: Duration,
    /// HTTPS listen address of the admin API.
    pub admin_listen: String,
    /// Days operational records are kept.
    pub record_retention_days: u32,
    /// Whether a change of the policy file is applied without SIGHUP.
    pub watch_policy: bool,
    /// What a crash may lose of the exchanges in the ledger.
    pub ledger_durability: crate::ledger::Durability,
    /// Operational records, usage aggregates and exchange ledger entries on.
    pub metering: bool,
    /// Bodiless calls (`GET`, `HEAD`) by the direct exchange.
    pub direct_exchange: bool,
    /// OTLP/HTTP collector for traces, if any.
    pub otlp_endpoint: Option<String>,
    /// `text` or `json`.
    pub log_format: String,
}

impl Config {
    /// Resolves flags and environment (already merged by clap) over the file
    /// over the defaults.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => anyhow::bail!("tls_cert and tls_key must be given together"),
        };
        let threads = args.threads.or(file.threads).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        if threads == 0 {
            anyhow::bail!("threads must be at least 1");
        }
        let ledger_durability = match args.ledger_durability.or(file.ledger_durability) {
            Some(text) => text.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            None => crate::ledger::Durability::default(),
        };
        let log_format = args
            .log_format
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        if !matches!(log_format.as_str(), "text" | "json") {
            anyhow::bail!("log_format `{log_format}` is not one of text, json");
        }
        Ok(Config {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("chasqui-data")),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8443".into()),
            listen_http: args.listen_http.or(file.listen_http),
            tls,
            database_url: args.database_url.or(file.database_url),
            policy: args.policy.or(file.policy),
            threads,
            demo: !args.no_demo && file.demo.unwrap_or(true),
            demo_listen: args
                .demo_listen
                .or(file.demo_listen)
                .unwrap_or_else(|| "127.0.0.1:18080".into()),
            access_log: args.access_log.or(file.access_log).unwrap_or(true),
            drain_timeout: Duration::from_secs(
                args.drain_timeout_secs
                    .or(file.drain_timeout_secs)
                    .unwrap_or(30),
            ),
            catalog_poll: Duration::from_millis(
                args.catalog_poll_ms
                    .or(file.catalog_poll_ms)
                    .unwrap_or(250)
                    .max(10),
            ),
            admin_listen: args
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or_else(|| "127.0.0.1:9443".into()),
            record_retention_days: args
                .record_retention_days
                .or(file.record_retention_days)
                .unwrap_or(30)
                .max(1),
            watch_policy: args.watch_policy.or(file.watch_policy).unwrap_or(true),
            ledger_durability,
            metering: args.metering.or(file.metering).unwrap_or(true),
            direct_exchange: args
                .direct_exchange
                .or(file.direct_exchange)
                .unwrap_or(true),
            otlp_endpoint: args
                .otlp_endpoint
                .or(file.otlp_endpoint)
                .filter(|e| !e.is_empty()),
            log_format,
        })
    }

    /// The SQLite file inside the data directory.
    pub fn sqlite_path(data_dir: &Path) -> PathBuf {
        data_dir.join("chasqui.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9443\"\nthreads = 3\ndemo = false\n",
        )
        .unwrap();
        let cfg = Config::resolve(ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:9443");
        assert_eq!(cfg.threads, 3);
        assert!(!cfg.demo);
        assert_eq!(cfg.data_dir, PathBuf::from("chasqui-data"));
        let cfg = Config::resolve(ServeArgs {
            config: Some(file),
            threads: Some(1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.threads, 1);
    }

    #[test]
    fn record_retention_defaults_to_30_days_and_comes_from_the_file_or_a_flag() {
        assert_eq!(
            Config::resolve(ServeArgs::default())
                .unwrap()
                .record_retention_days,
            30
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "record_retention_days = 7\n").unwrap();
        let cfg = Config::resolve(ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.record_retention_days, 7);
        let cfg = Config::resolve(ServeArgs {
            config: Some(file),
            record_retention_days: Some(90),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.record_retention_days, 90);
    }

    #[test]
    fn observability_settings_come_from_the_file_or_flags() {
        let cfg = Config::resolve(ServeArgs::default()).unwrap();
        assert_eq!(cfg.ledger_durability, crate::ledger::Durability::Strict);
        assert!(cfg.metering);
        assert_eq!(cfg.otlp_endpoint, None);
        assert_eq!(cfg.log_format, "text");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "ledger_durability = \"batched\"\nmetering = false\notlp_endpoint = \"http://127.0.0.1:4318\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        let cfg = Config::resolve(ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.ledger_durability, crate::ledger::Durability::Batched);
        assert!(!cfg.metering);
        assert_eq!(cfg.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!(cfg.log_format, "json");
        let cfg = Config::resolve(ServeArgs {
            config: Some(file),
            ledger_durability: Some("strict".into()),
            log_format: Some("text".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.ledger_durability, crate::ledger::Durability::Strict);
        assert_eq!(cfg.log_format, "text");
        let err = Config::resolve(ServeArgs {
            ledger_durability: Some("eventually".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("eventually"), "{err}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "lisen = \"0.0.0.0:9443\"\n").unwrap();
        let err = Config::resolve(ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
