//! The `arc-node` binary: parses flags, loads the configuration, starts logging, runs the node
//! until SIGTERM or SIGINT, and maps the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use arc_node::Config;
use arc_node::config::LogFormat;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Node agent for a clustered, Arc-compatible time-series database.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file; `ARC_<SECTION>_<KEY>` environment variables override it.
    #[arg(long, short, global = true, env = "ARC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the node (the default).
    Run,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Prints the effective configuration (file + environment), secrets redacted.
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("arc-node: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config {
        action: ConfigAction::Show,
    }) = cli.command
    {
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    arc_node::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("arc-node")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("arc-node: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
        let result = arc_node::run(config, shutdown).await;
        signals.abort();
        result
    });
    // Work still on blocking threads (a query DuckDB has not yet noticed is interrupted) must
    // not keep a stopped node alive: give it a moment, then exit regardless.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "arc-node failed");
            eprintln!("arc-node: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "stop requested"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "stop requested"),
    }
    shutdown.cancel();
}
