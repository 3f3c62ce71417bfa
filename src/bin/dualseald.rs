//! `dualseald`: the migration daemon.

use std::process::ExitCode;

use dualseal::config::{Config, ConfigError, LogFormat};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// sysexits: configuration error.
const EX_CONFIG: u8 = 78;
/// sysexits: I/O error (journal).
const EX_IOERR: u8 = 74;
/// sysexits: service unavailable (cannot listen).
const EX_UNAVAILABLE: u8 = 69;

// The clap definitions, shared with examples/gen_docs.rs (man page, completions).
include!("dualseald/cli.rs");

/// jemalloc, one arena, freed pages returned at once (`.cargo/config.toml`): against glibc's
/// malloc, ~15 % less CPU per object and no slow creep of RSS over a long run (docs/scaling.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match Config::load(&args.config) {
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
    if let (Some(ordinal), Some(count)) = (&args.shard_ordinal, &args.shard_count) {
        match dualseal::shard::Shard::from_ordinal(ordinal, count) {
            Ok(shard) => config.daemon.shard = Some(shard.to_string()),
            Err(e) => {
                eprintln!("dualseald: {e}");
                return ExitCode::from(EX_CONFIG);
            }
        }
    } else if let Some(shard) = &args.shard {
        if let Err(e) = shard.parse::<dualseal::shard::Shard>() {
            eprintln!("dualseald: --{e}");
            return ExitCode::from(EX_CONFIG);
        }
        config.daemon.shard = Some(shard.clone());
    }
    let json = match args.log_format.as_deref() {
        Some(f) => f == "json",
        None => config.daemon.log_format == LogFormat::Json,
    };
    let set_log_filter = init_logging(json, config.daemon.log_filter.as_deref());
    if matches!(args.cmd, Some(Cmd::Validate)) {
        if let Err(e) = dualseal::daemon::preflight(&config) {
            eprintln!("{}: {e}", args.config.display());
            return ExitCode::from(EX_CONFIG);
        }
        let shard = config
            .daemon
            .shard()
            .map(|s| format!(", shard {s}"))
            .unwrap_or_default();
        println!(
            "{}: OK ({} categories, source s3://{}/{}{shard})",
            args.config.display(),
            config.categories.len(),
            config.source.bucket,
            config.source.prefix
        );
        return ExitCode::SUCCESS;
    }
    install_panic_hook();
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
    if matches!(args.cmd, Some(Cmd::RebuildJournal)) {
        return rt.block_on(rebuild(config));
    }
    let opts = dualseal::journal::OpenOptions {
        accept_rollback: args.accept_journal_rollback,
        ..Default::default()
    };
    let hooks = dualseal::daemon::Hooks {
        config_path: args.config.clone(),
        set_log_filter,
    };
    rt.block_on(run(config, opts, hooks))
}

/// Logs go to stderr (journald under systemd). JSON puts every span and event field (job,
/// key, error) into the object, for log pipelines. `DUALSEAL_LOG` wins over the config's
/// filter at start; the returned setter changes the filter later (SIGHUP).
fn init_logging(json: bool, configured: Option<&str>) -> dualseal::daemon::SetLogFilter {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    const DEFAULT: &str =
        "info,aws_config=warn,aws_smithy_runtime=warn,hyper=warn,h2=warn,tower=warn,sled=warn";
    let filter = tracing_subscriber::EnvFilter::try_from_env("DUALSEAL_LOG")
        .ok()
        .or_else(|| configured.and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok()))
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(DEFAULT));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init();
    }
    Box::new(move |f: &str| {
        let new = tracing_subscriber::EnvFilter::try_new(f).map_err(|e| e.to_string())?;
        handle.reload(new).map_err(|e| e.to_string())
    })
}

/// A panic anywhere aborts the process, so systemd restarts a clean one and the journal
/// resumes: a half-dead daemon is worse than a restart. The one exception is sled's recovery
/// inside a guarded journal open, where a panic means "damaged files" and becomes an error.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if dualseal::journal::is_guarded() {
            dualseal::journal::record_panic(info.to_string());
            return;
        }
        default(info);
        std::process::abort();
    }));
}

async fn rebuild(config: Config) -> ExitCode {
    match dualseal::daemon::rebuild_journal(&config).await {
        Ok((report, moved)) => {
            if let Some(p) = moved {
                println!("old journal kept at {}", p.display());
            }
            println!(
                "rebuilt journal {}: job {} with {} recovered object(s) to prove, {} foreign object(s) left alone (original jobs {:?}); start dualseald to finish the job",
                config.daemon.journal_path.display(),
                report.job_id,
                report.recovered,
                report.foreign,
                report.original_jobs
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dualseald: rebuild failed: {e}");
            ExitCode::from(EX_IOERR)
        }
    }
}

async fn run(
    config: Config,
    opts: dualseal::journal::OpenOptions,
    hooks: dualseal::daemon::Hooks,
) -> ExitCode {
    let shutdown = CancellationToken::new();
    if let Err(e) = watch_signals(shutdown.clone()) {
        eprintln!("dualseald: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(dir) = config.daemon.control_socket.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // Secrets pass through this process's memory: no core dumps, no ptrace by other users.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "could not disable core dumps (PR_SET_DUMPABLE)");
    }
    let mode = config.daemon.socket_mode().unwrap_or(0o660);
    let listener = match dualseal::api::bind_unix(&config.daemon.control_socket, mode).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let socket = config.daemon.control_socket.clone();
    let result = dualseal::daemon::run(config, opts, listener, shutdown, hooks).await;
    // A start that failed after binding (a journal that will not open, a bad TLS file) leaves
    // no socket file behind; a clean stop has removed it already.
    if result.is_err() {
        let _ = std::fs::remove_file(&socket);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            match e {
                dualseal::daemon::DaemonError::Journal(_)
                | dualseal::daemon::DaemonError::Fatal(_) => ExitCode::from(EX_IOERR),
                dualseal::daemon::DaemonError::Metrics(_)
                | dualseal::daemon::DaemonError::Api(_) => ExitCode::from(EX_UNAVAILABLE),
                dualseal::daemon::DaemonError::Access(_)
                | dualseal::daemon::DaemonError::NoCredentials(_) => ExitCode::from(EX_CONFIG),
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
