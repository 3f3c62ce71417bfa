//! An engine over the in-memory S3 and KMS models, each answering after a fixed delay: for
//! tests of how an object's calls overlap and how jobs share slots, with no server.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dualseal::config::Config;
use dualseal::engine::{Command, Engine, EngineSettings};
use dualseal::journal::Journal;
use dualseal::model::JobId;
use dualseal::testing::{CallLog, Delayed, MemKms, MemS3};
use tokio_util::sync::CancellationToken;

/// A config over source bucket `master` with the journal and socket under `dir`: `daemon` is
/// added to `[daemon]`, `categories` are `[[category]]` tables.
pub fn config(dir: &Path, daemon: &str, categories: &str) -> Config {
    let text = format!(
        r#"
[aws]
region = "us-east-1"

[source]
bucket = "master"

[daemon]
journal_path = "{}"
control_socket = "{}"
{daemon}

[provision]
require_hardened_buckets = false

{categories}
"#,
        dir.join("journal").display(),
        dir.join("control.sock").display(),
    );
    Config::from_toml(&text, Path::new("models.toml")).expect("config")
}

/// An engine over `s3` and `kms`, each answering after `latency` and logging its calls to
/// `log`, on a two-thread runtime (the engine's tasks need one to be entered when it starts).
pub fn engine(
    cfg: &Config,
    s3: MemS3,
    kms: MemKms,
    latency: Duration,
    log: &CallLog,
) -> (tokio::runtime::Runtime, Engine) {
    engine_tuned(cfg, s3, kms, latency, log, |_| {})
}

/// [`engine`], with its settings changed by `tune` (e.g. shorter retry delays).
pub fn engine_tuned(
    cfg: &Config,
    s3: MemS3,
    kms: MemKms,
    latency: Duration,
    log: &CallLog,
    tune: impl FnOnce(&mut EngineSettings),
) -> (tokio::runtime::Runtime, Engine) {
    let mut settings = EngineSettings::from_config(cfg);
    tune(&mut settings);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let journal = Arc::new(Journal::open(&cfg.daemon.journal_path).expect("journal"));
    let engine = {
        let _enter = rt.enter();
        Engine::new(
            journal,
            Arc::new(Delayed::new(s3, latency, log.clone())),
            Arc::new(Delayed::new(kms, latency, log.clone())),
            cfg.categories.clone(),
            settings,
            CancellationToken::new(),
            None,
        )
        .expect("engine")
    };
    (rt, engine)
}

/// Starts a verification of job `id`; its job id.
pub async fn verify(engine: &Engine, id: JobId) -> JobId {
    engine
        .execute("models", Command::Verify(id))
        .await
        .expect("verify starts")
        .record
        .id
}
