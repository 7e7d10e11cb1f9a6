//! The `arc-node` binary: parses flags, loads the configuration, starts logging, runs the node
//! until SIGTERM or SIGINT, and maps the outcome to an exit code.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
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
    /// Write-ahead log tools; they read the files directly and need no configuration.
    Wal {
        #[command(subcommand)]
        action: WalAction,
    },
}

#[derive(Subcommand)]
enum WalAction {
    /// Prints a WAL directory's segments and LSN range without starting a node, taking its
    /// lock or changing a byte (it may belong to a running node). Exits 1 if the log is
    /// damaged or unreadable (the dump is still printed); a torn tail is what a crash leaves.
    Dump {
        /// The WAL directory (`wal.directory`).
        #[arg(long)]
        dir: PathBuf,
        /// Also lists every entry: epoch, LSN, segment and offset, tables and row counts.
        #[arg(long)]
        entries: bool,
        /// Prints one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Prints the effective configuration (file + environment), secrets redacted.
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // WAL tools read files only: a missing or broken configuration must not stop an operator
    // from inspecting a log.
    if let Some(Command::Wal {
        action: WalAction::Dump { dir, entries, json },
    }) = &cli.command
    {
        return wal_dump(dir, *entries, *json);
    }
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
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
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

fn wal_dump(dir: &Path, entries: bool, json: bool) -> ExitCode {
    let dump = match arc_node::wal_dump::read_dump(dir, entries) {
        Ok(dump) => dump,
        Err(error) => {
            eprintln!("arc-node: wal dump: {:#}", anyhow::Error::from(error));
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        arc_node::wal_dump::render_json(&dump)
    } else {
        arc_node::wal_dump::render_text(&dump)
    };
    // Not `print!`: it panics when stdout is closed early (`| head`).
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("arc-node: wal dump: writing the output: {error}");
        return ExitCode::FAILURE;
    }
    if dump.is_intact() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "arc-node: wal dump: {} is damaged or could not be read completely",
            dir.display()
        );
        ExitCode::FAILURE
    }
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: under systemd stderr goes to the journal, where the escape
    // codes would be stored as text and break every grep.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
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
