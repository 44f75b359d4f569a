//! Command line: `serve`, `migrate`, `config check`, `audit verify|query|export|keygen|prune`,
//! `test`, `eval`, `bundle build`, `gatekeeper verify|test`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

pub mod audit;
mod bundle;
mod eval;
mod gatekeeper;
mod prune;
mod test;

use crate::{
    config::{Config, LogConfig, LogFormat},
    dev,
    server::Gateway,
};

#[derive(Debug, Parser)]
#[command(
    name = "countersign",
    version,
    about = "Policy-as-code compliance gateway for bank transfers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Apply the shipped schema migrations to the store (run once as the schema owner).
    Migrate(StoreArgs),
    /// Audit trail tools (exit codes: 0 ok, 1 verification failed, 2 usage or I/O error).
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Run Rego unit tests like `opa test`.
    Test(test::TestArgs),
    /// Evaluate a Rego query like `opa eval`.
    Eval(eval::EvalArgs),
    /// Policy bundle tools (`bundle build`, like `opa build -b`).
    Bundle {
        #[command(subcommand)]
        command: bundle::BundleCommand,
    },
    /// Configuration tools (`config check`).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Gatekeeper policy checks like `gator verify` / `gator test` (exit codes: 0 ok,
    /// 1 a case failed or a deny violation, 2 usage or input error).
    Gatekeeper {
        #[command(subcommand)]
        command: gatekeeper::GatekeeperCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate a configuration file and the COUNTERSIGN__* variables as `serve`
    /// does, without reading the files it names or connecting to anything (for CI and
    /// deployment pipelines). Exit 0 valid, 1 invalid (the message names the key).
    Check {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// One-command quickstart: throwaway PKI and embedded store under --var.
    #[arg(long, conflicts_with = "config")]
    pub dev: bool,
    /// Configuration file (TOML); COUNTERSIGN__* environment variables override it.
    #[arg(long, required_unless_present = "dev")]
    pub config: Option<PathBuf>,
    /// --dev only: state directory.
    #[arg(long, default_value = "var")]
    pub var: PathBuf,
    /// --dev only: policy bundle directory.
    #[arg(long, default_value = "policies")]
    pub bundle: PathBuf,
    /// --dev only: listen address.
    #[arg(long, default_value = dev::DEV_LISTEN_ADDRESS)]
    pub listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Use the dev store under --var.
    #[arg(long, conflicts_with_all = ["config", "store"])]
    pub dev: bool,
    #[arg(long, conflicts_with = "store")]
    pub config: Option<PathBuf>,
    /// Store URL, e.g. sqlite://var/countersign.db or postgres://owner@db.internal/countersign
    #[arg(long)]
    pub store: Option<String>,
    #[arg(long, default_value = "var")]
    pub var: PathBuf,
}

pub fn main(started: Instant) -> ExitCode {
    let cli = Cli::parse();
    match run(cli, started) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli, started: Instant) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args, started),
        Command::Migrate(args) => migrate(args),
        Command::Audit { command } => Ok(audit::run(command)),
        Command::Test(args) => Ok(test::run(args)),
        Command::Eval(args) => Ok(eval::run(args)),
        Command::Bundle { command } => bundle::run(command),
        Command::Gatekeeper { command } => Ok(gatekeeper::run(command)),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => config_check(&config),
    }
}

fn serve(args: ServeArgs, started: Instant) -> Result<ExitCode> {
    let (config, pki) = if args.dev {
        let (config, pki) = dev::dev_config(&args.var, args.bundle.clone(), args.listen);
        init_logging(&config.log);
        if !args.bundle.join("countersign").exists() && !args.bundle.exists() {
            bail!(
                "policy bundle {} not found: run from the repository root or pass --bundle",
                args.bundle.display()
            );
        }
        dev::ensure_pki(&pki).context("cannot create the dev PKI")?;
        (config, Some(pki))
    } else {
        let path = args.config.expect("clap requires --config without --dev");
        let config = Config::load(&path, std::env::vars())?;
        init_logging(&config.log);
        (config, None)
    };
    let runtime = runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen_address)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_address))?;
        let ops_listener = match config.ops_listen_address {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address}"))?,
            ),
            None => None,
        };
        let listen_address = listener.local_addr()?;
        let gateway = Gateway::build(config).await?;
        if let Some(pki) = &pki {
            let revision = gateway.state.policy.load().revision().to_owned();
            let created = dev::seed_demo_accounts(&gateway.state.store, &revision).await?;
            if created > 0 {
                tracing::info!(accounts = created, "seeded demo accounts");
            }
            let elapsed = started.elapsed();
            println!(
                "countersign ready on https://{listen_address} in {:.1} ms (dev mode: PKI in {}, store {})",
                elapsed.as_secs_f64() * 1000.0,
                pki.directory.display(),
                gateway.state.config.store.url,
            );
            println!("{}", dev::curl_examples(pki, listen_address));
        } else {
            let elapsed = started.elapsed();
            println!(
                "countersign ready on https://{listen_address} in {:.1} ms",
                elapsed.as_secs_f64() * 1000.0
            );
        }
        gateway
            .run(listener, ops_listener, shutdown_signal())
            .await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

fn config_check(path: &std::path::Path) -> Result<ExitCode> {
    let config = Config::load(path, std::env::vars())?;
    println!(
        "{}: valid (store {}, kafka {}, admission webhook {}, {} proxy route(s), {} role mapping(s))",
        path.display(),
        redact_url(&config.store.url),
        if config.kafka.is_some() { "on" } else { "off" },
        if config.admission.is_some() {
            "on"
        } else {
            "off"
        },
        config.routes.len(),
        config.role_mapping.len(),
    );
    Ok(ExitCode::SUCCESS)
}

/// The store a command works on: `--store URL`, the store of `--config`, or the dev store.
fn store_url(args: &StoreArgs) -> Result<String> {
    if let Some(url) = &args.store {
        return Ok(url.clone());
    }
    if let Some(path) = &args.config {
        let config = Config::load(path, std::env::vars())?;
        return Ok(config.store.url);
    }
    Ok(format!(
        "sqlite://{}",
        args.var.join("countersign.db").display()
    ))
}

fn migrate(args: StoreArgs) -> Result<ExitCode> {
    let url = store_url(&args)?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        countersign_ledger::Store::migrate(&url)
            .await
            .with_context(|| format!("migrating {}", redact_url(&url)))?;
        println!("{}: schema up to date", redact_url(&url));
        Ok(ExitCode::SUCCESS)
    })
}

/// A store URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _password)) => {
                    format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
