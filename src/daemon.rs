//! Boot and shutdown of `dualseald`, in a fixed, logged order.
//!
//! Boot: journal (logging whether it recovered) → AWS clients → engine (resuming interrupted
//! jobs) → control API → `READY=1` to systemd. Shutdown (the `shutdown` token): stop
//! accepting RPCs → every job drains: it starts no new object, and the objects in flight get
//! [`EXIT_DEADLINE`] to finish, after which they are abandoned (redone or adopted on the next
//! boot) → journal flush.

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

/// How long abandoned attempts get to notice and end before the daemon exits without them.
const ABANDON_GRACE: Duration = Duration::from_secs(5);

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
    /// Access settings (token file, TLS files) could not be read or are invalid.
    #[error("{0}")]
    Access(String),
    /// No AWS credentials could be resolved at start.
    #[error("{0}; dualseald does not start without them")]
    NoCredentials(String),
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
    let opts = OpenOptions {
        shard: config.daemon.shard(),
        commit_window: std::time::Duration::from_millis(config.daemon.journal_commit_window_ms),
        ..opts
    };
    let journal = Journal::open_with(path, opts)?;
    if journal.recovered() {
        tracing::info!(path = %path.display(), "journal opened (recovered existing state)");
    } else {
        tracing::info!(path = %path.display(), "journal created");
    }
    Ok(journal)
}

/// Applies a new log filter to the running process.
pub type SetLogFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the binary lends the daemon for SIGHUP reloads.
pub struct Hooks {
    /// The config file to read again.
    pub config_path: std::path::PathBuf,
    /// Applies a new log filter.
    pub set_log_filter: SetLogFilter,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

/// Reads a secret file named in the config (a path or `credential:NAME`).
fn read_secret(what: &str, reference: &str) -> Result<Vec<u8>, DaemonError> {
    let path = crate::config::secret_path(reference)
        .map_err(|e| DaemonError::Access(format!("{what}: {e}")))?;
    std::fs::read(&path).map_err(|e| {
        DaemonError::Access(format!(
            "{what}: cannot read {}: {e}; check the path and that the service may read it",
            path.display()
        ))
    })
}

/// The access policy and tokens the config describes.
///
/// # Errors
/// `Access` when the token file cannot be read or has malformed lines.
pub fn load_access(config: &Config) -> Result<api::Access, DaemonError> {
    let policy = crate::access::Policy::new(
        config.access.clone(),
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let tokens = match &config.tcp.tokens_file {
        None => crate::access::Tokens::default(),
        Some(r) => {
            let text = zeroize::Zeroizing::new(read_secret("tcp.tokens_file", r)?);
            let text = std::str::from_utf8(&text)
                .map_err(|_| DaemonError::Access("tcp.tokens_file: not UTF-8 text".into()))?;
            crate::access::Tokens::parse(text)
                .map_err(|p| DaemonError::Access(format!("tcp.tokens_file: {}", p.join("; "))))?
        }
    };
    Ok(api::Access {
        policy: Some(policy),
        tokens,
    })
}

fn tcp_tls(config: &Config) -> Result<Option<api::TcpTls>, DaemonError> {
    let t = &config.tcp;
    let (Some(cert), Some(key)) = (&t.tls_cert, &t.tls_key) else {
        return Ok(None);
    };
    let tls = api::TcpTls {
        cert_pem: read_secret("tcp.tls_cert", cert)?,
        key_pem: zeroize::Zeroizing::new(read_secret("tcp.tls_key", key)?),
        client_ca_pem: t
            .client_ca
            .as_deref()
            .map(|c| read_secret("tcp.client_ca", c))
            .transpose()?,
        client_cert_optional: t.tokens_file.is_some(),
    };
    tls.check()
        .map_err(|e| DaemonError::Access(e.to_string()))?;
    Ok(Some(tls))
}

/// Reads and checks what the config names outside itself (the token file, the TCP
/// listener's certificate, key and client CA), as a start would: `dualseald validate` runs it,
/// so a file that would refuse the start is named there.
///
/// # Errors
/// `Access`, naming the setting and the remedy.
pub fn preflight(config: &Config) -> Result<(), DaemonError> {
    load_access(config)?;
    tcp_tls(config)?;
    Ok(())
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
    hooks: Hooks,
) -> Result<(), DaemonError> {
    // Everything that can refuse the start is tried before the journal is opened: an open
    // may upgrade its layout for this build and resumes jobs, which a start that then fails
    // should not have done.
    let access = api::shared_access(load_access(&config)?);
    let tls = tcp_tls(&config)?;
    let tcp = match config.tcp.listen {
        Some(addr) => Some((
            addr,
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| api::ApiError::Bind {
                    path: addr.to_string(),
                    source,
                })?,
        )),
        None => None,
    };
    let metered = crate::metrics::install(&config.metrics)?;
    let journal = Arc::new(open_journal(&config, opts)?);
    if metered {
        let categories: Vec<&str> = config.categories.iter().map(|c| c.name.as_str()).collect();
        crate::metrics::zero_counters(&categories);
    }
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
    let mut server = tokio::spawn(api::serve(
        engine.clone(),
        std::sync::Arc::clone(&access),
        listener,
        {
            let stop = api_stop_rx.clone();
            async move { stop.cancelled().await }
        },
    ));
    tracing::info!(socket = %config.daemon.control_socket.display(), "control API listening");
    let mut tcp_server = None;
    if let Some((addr, tcp)) = tcp {
        let mutual = tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some());
        let encrypted = tls.is_some();
        // Built (and its TLS settings checked) before READY: a bad key refuses the start.
        let serving = api::tcp_server(
            engine.clone(),
            std::sync::Arc::clone(&access),
            tcp,
            tls,
            async move { api_stop_rx.cancelled().await },
        )
        .await?;
        tcp_server = Some(tokio::spawn(serving));
        tracing::info!(%addr, tls = encrypted, mutual_tls = mutual, "control API listening on TCP");
    }
    spawn_reloader(
        engine.clone(),
        config.clone(),
        access,
        hooks,
        shutdown.clone(),
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    spawn_watchdog(engine.clone(), shutdown.clone());

    // A listener that stops on its own (its task failed or ended) stops the daemon with the
    // reason: a daemon nobody can reach must not keep running as if it were serving.
    let mut unix_ended = false;
    let fatal = tokio::select! {
        _ = shutdown.cancelled() => None,
        msg = engine.fatal() => Some(msg),
        r = &mut server => {
            unix_ended = true;
            Some(format!("the control API on {} stopped: {}", config.daemon.control_socket.display(), ended(r)))
        }
        r = async {
            match tcp_server.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        } => Some(format!("the control API on TCP stopped: {}", ended(r))),
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: stopping the control API");
    shutdown.cancel();
    api_stop.cancel();
    if !unix_ended {
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap_or(Ok(Ok(())))
        {
            tracing::warn!(error = %e, "control API stopped with an error");
        }
    }
    tracing::info!(deadline = ?EXIT_DEADLINE, "waiting for workers");
    if tokio::time::timeout(EXIT_DEADLINE, engine.drain())
        .await
        .is_err()
    {
        tracing::warn!("workers did not finish in time; abandoning their objects, which will be redone on restart");
        engine.abandon();
        if tokio::time::timeout(ABANDON_GRACE, engine.drain())
            .await
            .is_err()
        {
            tracing::warn!("workers did not stop after abandoning; exiting anyway");
        }
    }
    journal.flush().await?;
    journal.write_high_water_mark().await?;
    let _ = std::fs::remove_file(&config.daemon.control_socket);
    tracing::info!("journal flushed; bye");
    match fatal {
        Some(msg) => Err(DaemonError::Fatal(format!(
            "{msg} (journal {})",
            config.daemon.journal_path.display()
        ))),
        None => Ok(()),
    }
}

/// How a server task ended, in words.
fn ended(r: Result<Result<(), api::ApiError>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(())) => "it ended without an error".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("its task failed: {e}"),
    }
}

/// On SIGHUP: reads the config again and applies what is safe to change live — access roles
/// and tokens, the log filter — and names the settings that need a restart. A config that does
/// not load is refused with its problems; the running one stays.
fn spawn_reloader(
    engine: Engine,
    running: Config,
    access: api::SharedAccess,
    hooks: Hooks,
    shutdown: CancellationToken,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reloads need a restart");
        return;
    };
    tokio::spawn(async move {
        let mut running = running;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            let (outcome, detail) = match reload(&running, &access, &hooks) {
                Ok((cfg, applied, restart)) => {
                    running = cfg;
                    tracing::info!(applied = %applied, needs_restart = %restart, "configuration reloaded");
                    (
                        "ok",
                        format!("applied: {applied}; needs a restart: {restart}"),
                    )
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload refused; the running configuration stays");
                    ("failed", e)
                }
            };
            if let Err(e) = engine
                .audit_daemon("config_reloaded", outcome, detail)
                .await
            {
                tracing::error!(error = %e, "could not audit the reload");
            }
        }
    });
}

fn reload(
    running: &Config,
    access: &api::SharedAccess,
    hooks: &Hooks,
) -> Result<(Config, String, String), String> {
    let new = Config::load(&hooks.config_path).map_err(|e| e.to_string())?;
    let new_access = load_access(&new).map_err(|e| e.to_string())?;
    let mut applied = vec!["[access] roles", "tcp.tokens_file"];
    if let Some(filter) = &new.daemon.log_filter {
        (hooks.set_log_filter)(filter).map_err(|e| format!("daemon.log_filter: {e}"))?;
        applied.push("daemon.log_filter");
    }
    match access.write() {
        Ok(mut a) => *a = std::sync::Arc::new(new_access),
        Err(p) => *p.into_inner() = std::sync::Arc::new(new_access),
    }
    let mut restart = Vec::new();
    let mut daemon_old = running.daemon.clone();
    daemon_old.log_filter.clone_from(&new.daemon.log_filter);
    for (name, changed) in [
        ("[aws]", running.aws != new.aws),
        ("[source]", running.source != new.source),
        ("[daemon]", daemon_old != new.daemon),
        ("[[category]]", running.categories != new.categories),
        ("[metrics]", running.metrics != new.metrics),
        ("[provision]", running.provision != new.provision),
        ("[decommission]", running.decommission != new.decommission),
        ("[pricing]", running.pricing != new.pricing),
        (
            "[tcp] listener and TLS",
            running.tcp.listen != new.tcp.listen
                || running.tcp.tls_cert != new.tcp.tls_cert
                || running.tcp.tls_key != new.tcp.tls_key
                || running.tcp.client_ca != new.tcp.client_ca,
        ),
    ] {
        if changed {
            restart.push(name);
        }
    }
    let restart = if restart.is_empty() {
        "nothing".to_owned()
    } else {
        restart.join(", ")
    };
    Ok((new, applied.join(", "), restart))
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
    let (s3_sdk, kms_sdk) = crate::aws::service_configs(&config.aws).await;
    crate::aws::check_credentials(&s3_sdk)
        .await
        .map_err(DaemonError::NoCredentials)?;
    let s3 = Arc::new(S3Store::new(&s3_sdk, config.aws.path_style()));
    let kms = Arc::new(AwsKms::new(&kms_sdk));
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
        region = s3_sdk.region().map(|r| r.as_ref()).unwrap_or("(default)"),
        s3_endpoint = config.aws.s3_endpoint().unwrap_or("(AWS)"),
        kms_endpoint = config.aws.kms_endpoint().unwrap_or("(AWS)"),
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
    // Held until the new journal is written: a daemon running on this journal makes the
    // rebuild refuse, and one started meanwhile cannot open it.
    let _lock = crate::journal::lock_for_maintenance(path)?;
    if tokio::net::UnixStream::connect(&config.daemon.control_socket)
        .await
        .is_ok()
    {
        return Err(JournalError::InUse { path: path.clone() }.into());
    }
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
