//! The `chasqui` command: `serve`, and the operator commands around it.

use anyhow::Context;
use chasqui::config::{Config, ServeArgs};
use chasqui::policy::Policy;
use chasqui::server;
use chasqui_catalog::model::now_unix;
use chasqui_catalog::Environment;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: the request path allocates many small, short-lived buffers, and
/// glibc's malloc showed up as a sixth of the data plane's CPU time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Chasqui, the interoperability gateway of the Bolivian state.
#[derive(Parser)]
#[command(name = "chasqui", version, about)]
struct Cli {
    /// Log format: `text` (default) or `json` (for `serve`, also the
    /// configuration file's `log_format`).
    #[arg(long, env = "CHASQUI_LOG_FORMAT", global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the `serve` arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Work with the catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Issue and revoke consumer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Build and start WebAssembly plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Check the audit ledger.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage access to the admin API.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Admin tokens.
    #[command(subcommand)]
    Token(AdminTokenCommand),
}

#[derive(Subcommand)]
enum AdminTokenCommand {
    /// Create an admin principal and print its token once on standard output.
    Issue {
        /// `operator`, `publisher` or `consumer`.
        #[arg(long)]
        role: chasqui_catalog::domain::Role,
        /// The entity a publisher or consumer acts for.
        #[arg(long)]
        entity: Option<String>,
        /// Who the token is for.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the ledger offline: the hash chain from the first entry and every
    /// signed checkpoint. Names the first entry altered, removed or moved; the
    /// exit code says the result. With `--file`, verifies an export instead
    /// (`audit export`), without the store.
    Verify {
        /// An export to verify instead of the store's ledger.
        #[arg(long)]
        file: Option<PathBuf>,
        /// With `--file`: accept only checkpoints signed by this node key
        /// (hex Ed25519 public key).
        #[arg(long, requires = "file")]
        public_key: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Export a range of the ledger (entries as hashed, and the signed
    /// checkpoints among them) as JSON Lines that `audit verify --file`
    /// checks offline.
    Export {
        /// First entry (default: the first).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Last entry (default: the last).
        #[arg(long)]
        to: Option<u64>,
        /// Where to write it (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check a receipt (ledger position and hash) against the ledger and its
    /// signed checkpoints.
    Receipt {
        /// The entry's position.
        #[arg(long)]
        position: u64,
        /// The entry's hash (lowercase hex).
        #[arg(long)]
        hash: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Compile a plugin crate to a WebAssembly component, choosing the wasm
    /// toolchain by itself; prints the component's path.
    Build {
        /// The plugin crate's directory.
        crate_dir: PathBuf,
        /// Where to write the component (default: `<target>/components/<package>.wasm`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Cargo target directory for the wasm build (default: a directory per
        /// checkout under `~/.cache/chasqui-wasm-target/checkouts/`; components
        /// then go to `~/.cache/chasqui-wasm-target/components/`).
        #[arg(long, env = "CHASQUI_WASM_TARGET_DIR")]
        target_dir: Option<PathBuf>,
    },
    /// Start a new plugin crate from the SDK's template.
    New {
        /// The plugin's name: `[a-z][a-z0-9-]*`.
        name: String,
        /// Directory to create (default: `plugins/<name>`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Path to the SDK as written in the new Cargo.toml (default: `../../sdk-plugin`).
        #[arg(long, default_value = "../../sdk-plugin")]
        sdk: String,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Import entities, services, upstreams, consumers and grants from a YAML
    /// file, and issue the tokens it lists (each printed once).
    Import {
        /// The catalog file.
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token and print it once on standard output.
    Issue {
        /// The holder, as `entity/system` (e.g. `sin/portal-tramites`).
        #[arg(long)]
        consumer: String,
        /// `pruebas` or `produccion`.
        #[arg(long = "env")]
        environment: Environment,
        /// A label to recognise the token by.
        #[arg(long, default_value = "")]
        label: String,
        /// Days until it expires (none: no expiry).
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Rotate a live token: print a new one (same label, environment and
    /// expiry) once; the old one keeps working for the overlap, then expires.
    Rotate {
        /// The holder, as `entity/system`.
        #[arg(long)]
        consumer: String,
        /// The token's display prefix or its label.
        #[arg(long)]
        token: String,
        /// Seconds the old token keeps working.
        #[arg(long, default_value_t = 86_400)]
        overlap_secs: u32,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List a consumer's tokens (display prefix, label, state); never the secrets.
    List {
        /// The holder, as `entity/system`.
        #[arg(long)]
        consumer: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a consumer's live tokens by display prefix or label; in force on
    /// running gateways within their catalog poll period.
    Revoke {
        /// The holder, as `entity/system`.
        #[arg(long)]
        consumer: String,
        /// The token's display prefix (its first 15 characters) or its label.
        #[arg(long)]
        token: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a policy file; the exit code says whether it is valid.
    Validate {
        /// The policy file.
        file: PathBuf,
    },
    /// Print the effective settings of one service (`entidad/v{n}`) and
    /// where each part came from, as JSON.
    Explain {
        /// The service, `entidad/v{n}`.
        service: String,
        /// The policy file (default: the gateway's, `CHASQUI_POLICY`, else the
        /// compiled-in default).
        #[arg(long, env = "CHASQUI_POLICY")]
        policy: Option<PathBuf>,
        /// The service's category; without it, read from the catalog store.
        #[arg(long)]
        category: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the catalog store is.
#[derive(Args)]
struct StoreArgs {
    /// Data directory holding `chasqui.db`.
    #[arg(long, env = "CHASQUI_DATA_DIR", default_value = "chasqui-data")]
    data_dir: PathBuf,
    /// Database URL, instead of the data directory's SQLite file.
    #[arg(long, env = "CHASQUI_DATABASE_URL")]
    database_url: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        // The configuration file may set the log format: resolve it first.
        Command::Serve(mut args) => {
            args.log_format = cli.log_format.clone();
            match Config::resolve(args) {
                Ok(config) => {
                    init_logging(&config.log_format);
                    return match server::serve(config) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("error: {e:#}");
                            ExitCode::FAILURE
                        }
                    };
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        other => other,
    };
    init_logging(cli.log_format.as_deref().unwrap_or("text"));
    match run(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            server::serve(Config::resolve(args)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Validate { file }) => {
            let policy = match Policy::load(&file) {
                Ok(policy) => policy,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            // Load every plugin exactly as a gateway would: component,
            // version, capabilities, configuration schema and `init`, for the
            // global list and for each scope.
            let text = std::fs::read_to_string(&file)?;
            let cache =
                std::env::temp_dir().join(format!("chasqui-validate-{}", std::process::id()));
            let engine = chasqui::plugin::PluginEngine::new(&cache, None)?;
            let findings = chasqui::policy::validate::plugin_findings(&policy, &text, &engine);
            let _ = std::fs::remove_dir_all(&cache);
            if !findings.is_empty() {
                for f in &findings {
                    match f.line {
                        Some(line) => {
                            eprintln!(
                                "{}: line {line}, at {}: {}",
                                file.display(),
                                f.pointer,
                                f.message
                            )
                        }
                        None => eprintln!("{}: at {}: {}", file.display(), f.pointer, f.message),
                    }
                }
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "{}: valid ({} plugin(s) loaded)",
                file.display(),
                policy.plugins.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Explain {
            service,
            policy,
            category,
            store,
        }) => {
            let policy = match &policy {
                Some(path) => Policy::load(path),
                None => Policy::default_policy(),
            };
            let policy = match policy {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let Some((entity, version)) = service
                .split_once("/v")
                .and_then(|(e, v)| Some((e.to_string(), v.parse::<u32>().ok()?)))
            else {
                eprintln!("the service is named entidad/v{{n}}, e.g. segip/v1");
                return Ok(ExitCode::FAILURE);
            };
            let scope = match category {
                Some(category) => chasqui::policy::ServiceScope {
                    entity,
                    code: String::new(),
                    version,
                    category,
                },
                None => {
                    let found = block_on_value(async {
                        let store = open(&store).await?;
                        let snapshot = store.load_snapshot().await?;
                        Ok::<_, anyhow::Error>(
                            snapshot
                                .services
                                .iter()
                                .find(|s| s.entity_code == entity && s.version == version)
                                .map(chasqui::policy::ServiceScope::from),
                        )
                    })?;
                    match found {
                        Some(scope) => scope,
                        None => {
                            eprintln!("{service} is not in the catalog; give its category with --category");
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
            };
            let explanation = chasqui::policy::explain(&policy, &scope);
            println!("{}", serde_json::to_string_pretty(&explanation)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify {
            file: Some(file),
            public_key,
            ..
        }) => {
            let verified = std::fs::File::open(&file)
                .map_err(chasqui::ledger::ExportError::from)
                .and_then(|f| {
                    chasqui::ledger::verify_export(
                        std::io::BufReader::new(f),
                        public_key.as_deref(),
                    )
                });
            match verified {
                Err(e) => Err(anyhow::anyhow!("{}: {e}", file.display())),
                Ok((summary, report)) => Ok(match report.problem {
                    None => {
                        let covered = match report.covered_to {
                            Some(c) if c >= summary.to => "all of them covered".to_string(),
                            Some(c) => {
                                format!("entries after {c} not covered by a signed checkpoint")
                            }
                            None => "none covered by a signed checkpoint".to_string(),
                        };
                        println!(
                            "export intact: entries {} to {} ({}), {} signed checkpoints verified, {covered}",
                            summary.from, summary.to, report.entries, report.checkpoints
                        );
                        ExitCode::SUCCESS
                    }
                    Some(problem) => {
                        println!("export broken: {problem} ({} entries read)", report.entries);
                        ExitCode::FAILURE
                    }
                }),
            }
        }
        Command::Audit(AuditCommand::Export {
            from,
            to,
            output,
            store: args,
        }) => block_on(async move {
            let store = open(&args).await?;
            let ledger = chasqui::state::open_ledger_pool(&store, &args.data_dir).await?;
            let summary = match &output {
                Some(path) => {
                    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
                    chasqui::ledger::export(&ledger, from, to, &mut out).await?
                }
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    chasqui::ledger::export(&ledger, from, to, &mut out).await?
                }
            };
            eprintln!(
                "exported entries {} to {} ({} entries, {} checkpoints)",
                summary.from, summary.to, summary.entries, summary.checkpoints
            );
            Ok(ExitCode::SUCCESS)
        }),
        Command::Audit(AuditCommand::Verify {
            file: None,
            store: args,
            ..
        }) => block_on(async move {
            let store = open(&args).await?;
            let ledger = chasqui::state::open_ledger_pool(&store, &args.data_dir).await?;
            let report = chasqui::ledger::verify(&ledger).await?;
            match report.problem {
                None => {
                    println!(
                        "ledger intact: {} entries, {} signed checkpoints verified",
                        report.entries, report.checkpoints
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Some(problem) => {
                    println!("ledger broken: {problem} ({} entries read)", report.entries);
                    Ok(ExitCode::FAILURE)
                }
            }
        }),
        Command::Audit(AuditCommand::Receipt {
            position,
            hash,
            store,
        }) => {
            block_on(async move {
                use chasqui::ledger::ReceiptCheck;
                let args = store;
                let store = open(&args).await?;
                let ledger = chasqui::state::open_ledger_pool(&store, &args.data_dir).await?;
                match chasqui::ledger::verify_receipt(&ledger, position, &hash).await? {
                    ReceiptCheck::Valid {
                        checkpoint,
                        signed_by,
                    } => {
                        println!("receipt valid: entry {position} is covered by checkpoint {checkpoint} signed by {signed_by}");
                        Ok(ExitCode::SUCCESS)
                    }
                    ReceiptCheck::NotYetCheckpointed => {
                        println!("receipt matches entry {position}, but no signed checkpoint covers it yet");
                        Ok(ExitCode::from(2))
                    }
                    ReceiptCheck::Invalid(why) => {
                        println!("receipt invalid: {why}");
                        Ok(ExitCode::FAILURE)
                    }
                }
            })
        }
        Command::Admin(AdminCommand::Token(AdminTokenCommand::Issue {
            role,
            entity,
            name,
            store,
        })) => block_on(async move {
            let store = open(&store).await?;
            let issued = store
                .issue_admin_token(role, entity.as_deref(), &name, None)
                .await?;
            // The only time this secret is ever shown.
            println!("{}", issued.secret);
            Ok(ExitCode::SUCCESS)
        }),
        Command::Plugin(PluginCommand::Build {
            crate_dir,
            out,
            target_dir,
        }) => {
            let path =
                chasqui::plugin::build::build(&crate_dir, out.as_deref(), target_dir.as_deref())?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin(PluginCommand::New { name, dir, sdk }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("plugins").join(&name));
            chasqui::plugin::build::new_plugin(&dir, &name, &sdk)?;
            println!(
                "created {} (test it with `cargo test --manifest-path {}/Cargo.toml`)",
                dir.display(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Catalog(CatalogCommand::Import { file, store }) => block_on(async move {
            let store = open(&store).await?;
            let report = store.import_file(&file).await?;
            println!(
                "imported {} entities, {} services, {} consumer systems, {} grants",
                report.entities, report.services, report.consumers, report.grants
            );
            for kept in &report.kept {
                println!("kept   {kept} (a live token with this label exists; not shown again)");
            }
            for t in &report.issued {
                // The only time these secrets are ever shown.
                println!(
                    "token  {} {} {} {}",
                    t.consumer, t.environment, t.label, t.secret
                );
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Token(TokenCommand::Issue {
            consumer,
            environment,
            label,
            expires_in_days,
            store,
        }) => block_on(async move {
            let store = open(&store).await?;
            let (entity, system) = split_consumer(&consumer)?;
            let id = store.consumer_id(entity, system).await?;
            let expires_at = expires_in_days.map(|d| now_unix() + i64::from(d) * 86_400);
            let issued = store
                .issue_token(id, environment, &label, expires_at)
                .await?;
            println!("{}", issued.secret);
            Ok(ExitCode::SUCCESS)
        }),
        Command::Token(TokenCommand::Rotate {
            consumer,
            token,
            overlap_secs,
            store,
        }) => block_on(async move {
            let store = open(&store).await?;
            let (entity, system) = split_consumer(&consumer)?;
            let id = store.consumer_id(entity, system).await?;
            let issued = store.rotate_token(id, &token, overlap_secs).await?;
            println!("{}", issued.secret);
            Ok(ExitCode::SUCCESS)
        }),
        Command::Token(TokenCommand::List { consumer, store }) => block_on(async move {
            let store = open(&store).await?;
            let (entity, system) = split_consumer(&consumer)?;
            let id = store.consumer_id(entity, system).await?;
            let now = now_unix();
            for t in store.list_tokens(id).await? {
                let state = match (t.revoked_at, t.expires_at) {
                    (Some(_), _) => "revoked".to_string(),
                    (None, Some(e)) if e <= now => "expired".to_string(),
                    (None, Some(e)) => format!("live, expires in {} s", e - now),
                    (None, None) => "live".to_string(),
                };
                let used = t.last_used_at.map_or_else(
                    || "never used".to_string(),
                    |u| format!("last used {} s ago", now - u),
                );
                println!(
                    "{}…  {:<10} {:<20} {}; {}",
                    t.display_prefix, t.environment, t.label, state, used
                );
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Token(TokenCommand::Revoke {
            consumer,
            token,
            store,
        }) => block_on(async move {
            let store = open(&store).await?;
            let (entity, system) = split_consumer(&consumer)?;
            let id = store.consumer_id(entity, system).await?;
            let n = store.revoke_tokens(id, &token).await?;
            println!("revoked {n} token(s)");
            Ok(if n == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }),
    }
}

fn split_consumer(consumer: &str) -> anyhow::Result<(&str, &str)> {
    consumer
        .split_once('/')
        .context("the consumer is written `entity/system`, e.g. `sin/portal-tramites`")
}

async fn open(args: &StoreArgs) -> anyhow::Result<chasqui_catalog::Store> {
    server::open_store(&args.data_dir, args.database_url.as_deref()).await
}

fn block_on_value<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    f: F,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}
