//! `dualseald`: the migration daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dualseal::config::{Config, ConfigError};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// sysexits: configuration error.
const EX_CONFIG: u8 = 78;
/// sysexits: I/O error (journal).
const EX_IOERR: u8 = 74;
/// sysexits: service unavailable (cannot listen).
const EX_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(
    version,
    about = "dualseal daemon: migrates a master S3 bucket into per-category buckets, sealed twice"
)]
struct Args {
    /// Config file.
    #[arg(
        long,
        short,
        env = "DUALSEAL_CONFIG",
        default_value = "/etc/dualseal/dualseal.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (the default).
    Run,
    /// Check the config file and report every problem; touches no AWS service.
    Validate,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DUALSEAL_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,aws_config=warn,aws_smithy_runtime=warn,hyper=warn,h2=warn,tower=warn,sled=warn",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dualseald: {e}");
            return ExitCode::from(match e {
                ConfigError::Read { .. }
                | ConfigError::Parse { .. }
                | ConfigError::Invalid { .. } => EX_CONFIG,
            });
        }
    };
    if matches!(args.cmd, Some(Cmd::Validate)) {
        println!(
            "{}: OK ({} categories, source s3://{}/{})",
            args.config.display(),
            config.categories.len(),
            config.source.bucket,
            config.source.prefix
        );
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dualseald: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let shutdown = CancellationToken::new();
    if let Err(e) = watch_signals(shutdown.clone()) {
        eprintln!("dualseald: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(dir) = config.daemon.control_socket.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let listener = match dualseal::api::bind_unix(&config.daemon.control_socket).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    match dualseal::daemon::run(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("dualseald: {e}");
            match e {
                dualseal::daemon::DaemonError::Journal(_)
                | dualseal::daemon::DaemonError::Fatal(_) => ExitCode::from(EX_IOERR),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// First SIGTERM/SIGINT starts a graceful shutdown; a second exits at once.
fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                tracing::info!("signal received: shutting down (send again to exit at once)");
                shutdown.cancel();
            } else {
                eprintln!("dualseald: second signal, exiting now; unfinished objects are redone on restart");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
