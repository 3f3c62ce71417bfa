//! Boot and shutdown of `dualseald`, in a fixed, logged order.
//!
//! Boot: journal (logging whether it recovered) → AWS clients → engine (resuming interrupted
//! jobs) → control API → `READY=1` to systemd. Shutdown (the `shutdown` token): stop
//! accepting RPCs → jobs finish or abandon their current object within [`EXIT_DEADLINE`] →
//! journal flush.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::config::Config;
use crate::engine::{Engine, EngineError, EngineSettings};
use crate::journal::{Journal, JournalError, OpenOptions};
use crate::kms::{AwsKms, KeyService};
use crate::store::{ObjectStore, S3Store};

/// How long workers get to finish their current object after a shutdown request. An object
/// abandoned mid-way is simply redone on the next boot.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(20);

/// Why the daemon stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The journal could not be opened or failed while running.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The control API failed.
    #[error(transparent)]
    Api(#[from] api::ApiError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// A fatal error stopped migration.
    #[error("stopped on a fatal error: {0}")]
    Fatal(String),
}

/// Opens the journal named in the config, creating its directory.
///
/// # Errors
/// `Journal`.
pub fn open_journal(config: &Config, opts: OpenOptions) -> Result<Journal, DaemonError> {
    let path = &config.daemon.journal_path;
    std::fs::create_dir_all(path).map_err(|source| JournalError::Io {
        path: path.clone(),
        source,
    })?;
    let journal = Journal::open_with(path, opts)?;
    if journal.recovered() {
        tracing::info!(path = %path.display(), "journal opened (recovered existing state)");
    } else {
        tracing::info!(path = %path.display(), "journal created");
    }
    Ok(journal)
}

/// Runs the daemon until `shutdown` is cancelled or a fatal error occurs.
///
/// # Errors
/// Any [`DaemonError`]; the binary maps them to exit codes.
pub async fn run(
    config: Config,
    opts: OpenOptions,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let journal = Arc::new(open_journal(&config, opts)?);
    let metered = crate::metrics::install(&config.metrics)?;
    let engine = build_engine(&config, Arc::clone(&journal), shutdown.clone(), metered).await?;
    let resumed = engine.resume_unfinished()?;
    tracing::info!(resumed, "engine ready");
    if metered {
        tokio::spawn(crate::metrics::refresh(
            engine.clone(),
            config.daemon.journal_path.clone(),
            shutdown.clone(),
        ));
    }

    let api_stop = CancellationToken::new();
    let api_stop_rx = api_stop.clone();
    let policy = crate::access::Policy::new(
        config.access.clone(),
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let server = tokio::spawn(api::serve(engine.clone(), policy, listener, async move {
        api_stop_rx.cancelled().await
    }));
    tracing::info!(socket = %config.daemon.control_socket.display(), "control API listening");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    spawn_watchdog(engine.clone(), shutdown.clone());

    let fatal = tokio::select! {
        _ = shutdown.cancelled() => None,
        msg = engine.fatal() => Some(msg),
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: stopping the control API");
    shutdown.cancel();
    api_stop.cancel();
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap_or(Ok(Ok(())))
    {
        tracing::warn!(error = %e, "control API stopped with an error");
    }
    tracing::info!(deadline = ?EXIT_DEADLINE, "waiting for workers");
    if tokio::time::timeout(EXIT_DEADLINE, engine.drain())
        .await
        .is_err()
    {
        tracing::warn!("workers did not finish in time; their objects will be redone on restart");
    }
    journal.flush().await?;
    journal.write_high_water_mark()?;
    let _ = std::fs::remove_file(&config.daemon.control_socket);
    tracing::info!("journal flushed; bye");
    match fatal {
        Some(msg) => Err(DaemonError::Fatal(msg)),
        None => Ok(()),
    }
}

/// Pings systemd's watchdog (`WatchdogSec=`) at half its interval while the runtime is
/// responsive and the engine has not failed fatally: a wedged or failing daemon stops pinging
/// and systemd restarts it, and the journal resumes its jobs.
fn spawn_watchdog(engine: Engine, shutdown: CancellationToken) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    tracing::info!(interval = ?every, "systemd watchdog enabled");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = engine.fatal() => return,
                _ = tokio::time::sleep(every) => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    });
}

async fn build_engine(
    config: &Config,
    journal: Arc<Journal>,
    shutdown: CancellationToken,
    metered: bool,
) -> Result<Engine, DaemonError> {
    let sdk = crate::aws::sdk_config(&config.aws).await;
    let path_style = config
        .aws
        .force_path_style
        .unwrap_or(config.aws.endpoint_url.is_some());
    let s3 = Arc::new(S3Store::new(&sdk, path_style));
    let kms = Arc::new(AwsKms::new(&sdk));
    let provisioner = Arc::new(crate::provision::Provisioner::new(
        Arc::clone(&s3) as Arc<dyn crate::store::BucketAdmin>,
        Arc::clone(&kms) as Arc<dyn crate::kms::KeyAdmin>,
        config,
    ));
    let mut store: Arc<dyn ObjectStore> = s3;
    let mut keys: Arc<dyn KeyService> = kms;
    if metered {
        store = Arc::new(crate::metrics::MeteredStore(store));
        keys = Arc::new(crate::metrics::MeteredKeys(keys));
    }
    tracing::info!(
        region = sdk.region().map(|r| r.as_ref()).unwrap_or("(default)"),
        endpoint = config.aws.endpoint_url.as_deref().unwrap_or("(AWS)"),
        "AWS clients ready"
    );
    Ok(Engine::new(
        journal,
        store,
        keys,
        config.categories.clone(),
        EngineSettings::from_config(config),
        shutdown,
        Some(provisioner),
    )?)
}

/// Moves the journal directory aside (never deletes it) and rebuilds a fresh one from the
/// destination buckets. Run with the daemon stopped.
///
/// # Errors
/// `Journal` when the directory cannot be moved or the new journal written, `Engine` when S3
/// cannot be read.
pub async fn rebuild_journal(
    config: &Config,
) -> Result<(crate::engine::RebuildReport, Option<std::path::PathBuf>), DaemonError> {
    let path = &config.daemon.journal_path;
    let moved = if path.exists() {
        let stamp = crate::journal::now_ms();
        let mut aside = path.clone().into_os_string();
        aside.push(format!(".damaged-{stamp}"));
        let aside = std::path::PathBuf::from(aside);
        std::fs::rename(path, &aside).map_err(|source| JournalError::Io {
            path: path.clone(),
            source,
        })?;
        tracing::info!(from = %path.display(), to = %aside.display(), "old journal moved aside");
        Some(aside)
    } else {
        None
    };
    let journal = Arc::new(open_journal(config, OpenOptions::default())?);
    let engine = build_engine(
        config,
        Arc::clone(&journal),
        CancellationToken::new(),
        false,
    )
    .await?;
    let report = engine.rebuild_journal().await?;
    Ok((report, moved))
}
