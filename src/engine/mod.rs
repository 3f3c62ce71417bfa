//! The migration engine: jobs, the bounded worker pool, retries, pause/resume/cancel, the
//! plan (dry run) and re-verification. It depends on the journal, the envelope, the key
//! service, the object store and the classifier, and on nothing above it.

mod backlog;
mod control;
mod cutover;
pub mod datakey;
mod decommission;
mod dispatch;
mod error;
mod estimate;
mod job;
mod lifecycle;
mod limit;
mod listing;
mod memory;
pub mod migrate;
pub mod multipart;
mod plan;
mod pool;
mod progress;
mod queries;
mod rate;
mod rebuild;
mod retry;
mod running;
mod scope;
mod supervisor;
mod target;
mod verification;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use control::describe_weak;
pub use control::{Command, JobUpdate, StartRequest};
pub use cutover::{Check, CutoverReport, MappingEntry};
pub use decommission::{archive_key, DecommissionMode, DecommissionPlan};
pub use error::{EngineError, ObjectError};
pub use estimate::Estimate;
pub use plan::{
    CategoryPlan, CategoryVerify, ContentReport, ContentVerdict, PlanReport, VerifyReport,
};
pub use progress::{RecentError, Speed};
pub use queries::{JobView, KindFilter, ObjectStream};
pub use rebuild::RebuildReport;
pub use scope::Scope;
use supervisor::{JobLive, JobTask};
pub use target::Target;

use crate::classify::Classifier;
use crate::config::{CategoryConfig, Config};
use crate::journal::Journal;
use crate::kms::KeyService;
use crate::model::{FailureThreshold, JobId, JobOptions};
use crate::provision::Provisioner;
use crate::store::ObjectStore;

/// Tunables the engine takes from config.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Source bucket.
    pub source_bucket: String,
    /// Source prefix.
    pub source_prefix: String,
    /// Objects in flight per job.
    pub concurrency: usize,
    /// Attempts per object.
    pub max_attempts: u32,
    /// Envelope segment size.
    pub segment_size: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub retry_initial: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
    /// Default KMS requests per second per job (`None`: unlimited).
    pub kms_requests_per_sec: Option<u32>,
    /// How long a pause or cancel lets in-flight objects finish.
    pub pause_deadline: Duration,
    /// Default failure threshold (`None`: disabled).
    pub failure_threshold: Option<FailureThreshold>,
    /// Break-glass principals and the archive.
    pub decommission: crate::config::DecommissionConfig,
    /// dualseald's own role (`[provision] writer`): what a lockdown leaves it for rollback.
    pub daemon_role: Option<String>,
    /// Prices for plan estimates.
    pub pricing: crate::config::Pricing,
    /// Data-key reuse (`None`: a fresh data key per object).
    pub data_key_reuse: Option<datakey::ReuseLimits>,
    /// This daemon's share of the source, when several split it.
    pub shard: Option<crate::shard::Shard>,
    /// Memory budget for objects in flight, in bytes.
    pub max_bytes_in_flight: u64,
    /// When and how large objects are streamed as multipart uploads.
    pub multipart: multipart::Settings,
}

impl EngineSettings {
    /// Settings from a validated config.
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            source_bucket: cfg.source.bucket.clone(),
            source_prefix: cfg.source.prefix.clone(),
            concurrency: cfg.daemon.concurrency,
            max_attempts: cfg.daemon.max_attempts,
            segment_size: cfg.daemon.segment_size,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            kms_requests_per_sec: (cfg.daemon.kms_requests_per_sec > 0)
                .then_some(cfg.daemon.kms_requests_per_sec),
            pause_deadline: Duration::from_secs(cfg.daemon.pause_deadline_secs),
            failure_threshold: (cfg.daemon.failure_threshold_percent < 100).then_some(
                FailureThreshold {
                    percent: cfg.daemon.failure_threshold_percent,
                    min_objects: cfg.daemon.failure_threshold_min_objects,
                },
            ),
            decommission: cfg.decommission.clone(),
            daemon_role: cfg.provision.writer.clone(),
            pricing: cfg.pricing.clone(),
            data_key_reuse: (cfg.daemon.data_key_reuse_objects > 0).then(|| datakey::ReuseLimits {
                max_objects: u64::from(cfg.daemon.data_key_reuse_objects),
                max_age: Duration::from_secs(cfg.daemon.data_key_reuse_secs),
            }),
            shard: cfg.daemon.shard(),
            max_bytes_in_flight: cfg.daemon.max_bytes_in_flight,
            multipart: multipart::Settings {
                threshold: cfg.daemon.multipart_threshold,
                part_size: cfg.daemon.multipart_part_size,
                parts_in_flight: cfg.daemon.multipart_parts_in_flight.max(1),
            },
        }
    }
}

pub(crate) struct Inner {
    journal: Arc<Journal>,
    store: Arc<dyn ObjectStore>,
    keys: Arc<dyn KeyService>,
    classifier: Classifier,
    data_keys: datakey::DataKeys,
    memory: memory::Budget,
    categories: Vec<CategoryConfig>,
    settings: EngineSettings,
    retry: retry::Retry,
    pool: Arc<pool::Pool>,
    running: Mutex<HashMap<JobId, JobTask>>,
    live: Mutex<HashMap<JobId, Arc<JobLive>>>,
    /// Cancelled by the daemon's shutdown: every job drains (starts no new attempt).
    shutdown: CancellationToken,
    /// Cancelled once the exit deadline has passed: attempts still in flight are abandoned.
    abandon: CancellationToken,
    tasks: TaskTracker,
    changes: watch::Sender<u64>,
    fatal: Mutex<Option<String>>,
    fatal_token: CancellationToken,
    provisioner: Option<Arc<Provisioner>>,
    decommissions: Mutex<HashMap<String, decommission::Planned>>,
    /// Held from a start's checks to its journal record, so that two racing starts cannot
    /// both pass the overlap check, nor two racing verifications both create a job.
    starts: tokio::sync::Mutex<()>,
    /// Held through a change of a job's limits, from reading them to applying them, so that
    /// racing changes neither undo each other's fields nor get audited in another order than
    /// they took effect.
    updates: tokio::sync::Mutex<()>,
}

/// The engine. Clone to share.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engine {
    /// Builds an engine over its parts. `shutdown` stops every job.
    ///
    /// # Errors
    /// `InvalidRequest` when the categories' rules do not compile (config validation
    /// normally catches this first).
    pub fn new(
        journal: Arc<Journal>,
        store: Arc<dyn ObjectStore>,
        keys: Arc<dyn KeyService>,
        categories: Vec<CategoryConfig>,
        settings: EngineSettings,
        shutdown: CancellationToken,
        provisioner: Option<Arc<Provisioner>>,
    ) -> Result<Self, EngineError> {
        let classifier = Classifier::new(categories.iter().map(CategoryConfig::rules))
            .map_err(|e| EngineError::InvalidRequest(e.join("; ")))?;
        let (changes, _) = watch::channel(0);
        Ok(Self {
            inner: Arc::new(Inner {
                journal,
                store,
                keys,
                classifier,
                categories,
                data_keys: datakey::DataKeys::new(settings.data_key_reuse),
                memory: memory::Budget::new(settings.max_bytes_in_flight),
                pool: pool::Pool::new(settings.concurrency),
                retry: retry::Retry::new(
                    settings.retry_initial,
                    settings.retry_max,
                    shutdown.clone(),
                ),
                settings,
                running: Mutex::new(HashMap::new()),
                live: Mutex::new(HashMap::new()),
                shutdown,
                abandon: CancellationToken::new(),
                tasks: TaskTracker::new(),
                changes,
                fatal: Mutex::new(None),
                fatal_token: CancellationToken::new(),
                provisioner,
                decommissions: Mutex::new(HashMap::new()),
                starts: tokio::sync::Mutex::new(()),
                updates: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn check_open(&self) -> Result<(), EngineError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        Ok(())
    }

    fn category_names(&self) -> Vec<&str> {
        self.inner
            .categories
            .iter()
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Compiles a job's filters.
    ///
    /// # Errors
    /// `InvalidRequest` naming every problem.
    pub fn scope(&self, options: &JobOptions) -> Result<Scope, EngineError> {
        Scope::new(options, &self.category_names())
            .map(|s| s.in_shard(self.inner.settings.shard))
            .map_err(|p| EngineError::InvalidRequest(p.join("; ")))
    }

    // ---------------------------------------------------------------- audited control
    //
    // Every control action is recorded twice: `control` with outcome `requested` before it
    // runs (if that cannot be written, the action does not happen: fail closed), and
    // `control_result` with its outcome after, before the caller hears back.
}

impl Inner {
    /// Every category's target, checked now (see [`target::resolve`]).
    async fn resolve_targets(&self, strict: bool) -> Result<Vec<Target>, EngineError> {
        target::resolve(
            &self.categories,
            &*self.keys,
            &*self.store,
            &self.retry,
            strict,
        )
        .await
    }

    fn notify(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Records a fatal error and asks the daemon to stop.
    fn fail_fatally(&self, message: String) {
        tracing::error!(%message, "fatal error; the daemon will stop");
        lock(&self.fatal).get_or_insert(message);
        self.fatal_token.cancel();
    }
}
