//! The migration engine: jobs, the bounded worker pool, retries, pause/resume/cancel, the
//! plan (dry run) and re-verification. It depends on the journal, the envelope, the key
//! service, the object store and the classifier, and on nothing above it.

mod cutover;
pub mod datakey;
mod decommission;
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
mod rate;
mod rebuild;
mod scope;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use cutover::{Check, CutoverReport, MappingEntry};
pub use decommission::{archive_key, DecommissionMode, DecommissionPlan};
pub use error::{EngineError, ObjectError};
pub use estimate::Estimate;
use lifecycle::{Action, Verdict};
pub use plan::{
    CategoryPlan, CategoryVerify, ContentReport, ContentVerdict, PlanReport, VerifyReport,
};
pub use progress::{RecentError, Speed};
pub use rebuild::RebuildReport;
pub use scope::Scope;

use crate::classify::Classifier;
use crate::config::{CategoryConfig, Config};
use crate::journal::{
    AuditDraft, FailureThreshold, JobCounts, JobId, JobKind, JobLimits, JobOptions, JobRecord,
    JobState, Journal, ObjectRecord, ObjectState,
};
use crate::kms::KeyService;
use crate::provision::{Provisioner, Report as ProvisionReport};
use crate::store::ObjectStore;

/// Where one category's objects go, with its KMS key resolved to an ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Category name.
    pub category: String,
    /// Destination bucket.
    pub bucket: String,
    /// KMS key ARN for both layers.
    pub kms_key_arn: String,
    /// Why the category cannot be used now (disabled key, missing bucket), if so.
    pub unusable: Option<String>,
}

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

/// What a start asks for.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// Key prefix (within the configured source prefix).
    pub prefix: String,
    /// Filters, verification, threshold, queueing, priority and limits.
    pub options: JobOptions,
    /// Start even when keys match more than one category (they stay in place).
    pub allow_conflicts: bool,
    /// Start even into buckets weaker than provisioning requires (audited).
    pub allow_weak_buckets: bool,
}

fn describe_weak(changes: &[crate::provision::Change]) -> String {
    changes
        .iter()
        .map(|c| {
            format!(
                "{} {} is {} (want {})",
                c.resource, c.setting, c.live, c.desired
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A change to a running job; `None` leaves a setting as it is, a limit of 0 returns it to
/// the daemon's default.
#[derive(Debug, Clone, Default)]
pub struct JobUpdate {
    /// New priority.
    pub priority: Option<i32>,
    /// Objects in flight at most.
    pub concurrency: Option<u32>,
    /// Objects started per second.
    pub objects_per_sec: Option<u32>,
    /// Source bytes per second.
    pub bytes_per_sec: Option<u64>,
    /// KMS requests per second.
    pub kms_requests_per_sec: Option<u32>,
}

/// A job's objects, streamed from the journal.
pub type ObjectStream = tokio::sync::mpsc::Receiver<Result<(String, ObjectRecord), EngineError>>;

/// Which kind of job a listing keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindFilter {
    /// Migration jobs.
    Migrate,
    /// Verification jobs.
    Verify,
}

/// A job with its live counts, as the API shows it.
#[derive(Debug, Clone)]
pub struct JobView {
    /// The stored record.
    pub record: JobRecord,
    /// Object counts.
    pub counts: JobCounts,
    /// Objects allowed in flight now (adaptive), when the job has workers.
    pub concurrency: Option<usize>,
    /// Whether S3 or KMS throttled the job recently.
    pub throttled: bool,
    /// Speed over the last seconds and ETA, while the job runs.
    pub speed: Speed,
    /// The most recent object errors (retried or final), newest last.
    pub recent_errors: Vec<RecentError>,
    /// The limits in force: the job's own, else the daemon's defaults.
    pub limits: JobLimits,
    /// What the call did, when that is not obvious from the state (e.g. "already paused").
    pub note: Option<String>,
}

/// What the engine keeps about a job while the daemon runs, across pauses: its adaptive
/// limit, rates, priority and recent history.
pub(crate) struct JobLive {
    limiter: Arc<limit::Limiter>,
    rates: Arc<rate::Rates>,
    progress: Mutex<progress::Progress>,
    priority: AtomicI32,
}

/// A job's running task.
struct JobTask {
    /// No new attempts start once cancelled (pause, cancel, failure threshold).
    drain: CancellationToken,
    /// Attempts in flight are abandoned once cancelled (past the drain deadline, shutdown).
    stop: CancellationToken,
    /// Becomes true when the task has ended.
    done: watch::Receiver<bool>,
    /// Set when a resume, retry or sync found this task still registered: if it turns out to
    /// be ending (drained by a pause, or finishing), it starts its successor on the way out,
    /// so the job never stays recorded `running` with nothing running it.
    wanted: Arc<std::sync::atomic::AtomicBool>,
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
    pool: Arc<pool::Pool>,
    running: Mutex<HashMap<JobId, JobTask>>,
    live: Mutex<HashMap<JobId, Arc<JobLive>>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    changes: watch::Sender<u64>,
    fatal: Mutex<Option<String>>,
    fatal_token: CancellationToken,
    provisioner: Option<Arc<Provisioner>>,
    decommissions: Mutex<HashMap<String, decommission::Planned>>,
    /// Held from a start's checks to its journal record, so that two racing starts cannot
    /// both pass the overlap check, nor two racing verifications both create a job.
    starts: tokio::sync::Mutex<()>,
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
        let classifier =
            Classifier::new(&categories).map_err(|e| EngineError::InvalidRequest(e.join("; ")))?;
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
                settings,
                running: Mutex::new(HashMap::new()),
                live: Mutex::new(HashMap::new()),
                shutdown,
                tasks: TaskTracker::new(),
                changes,
                fatal: Mutex::new(None),
                fatal_token: CancellationToken::new(),
                provisioner,
                decommissions: Mutex::new(HashMap::new()),
                starts: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Restarts every job that was running when the daemon stopped. Paused jobs stay paused.
    ///
    /// # Errors
    /// `Journal`.
    pub fn resume_unfinished(&self) -> Result<usize, EngineError> {
        let mut n = 0;
        for job in self.inner.journal.list_jobs()? {
            if matches!(job.state, JobState::Running | JobState::Pending) {
                tracing::info!(job = job.id, state = %job.state, "resuming job interrupted by a restart");
                self.spawn_job(job.id);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Resolves when a fatal error (journal failure) means the daemon must stop; returns it.
    pub async fn fatal(&self) -> String {
        self.inner.fatal_token.cancelled().await;
        lock(&self.inner.fatal).clone().unwrap_or_default()
    }

    /// Waits for every job task to stop (after `shutdown` was cancelled).
    pub async fn drain(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Worker slots in use across all jobs.
    pub fn workers_busy(&self) -> usize {
        self.inner.pool.in_use()
    }

    /// A receiver that changes whenever any job or object changes state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
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

    /// Refuses to run `what` over `prefix`/`scope` while another active migration job could
    /// pick up the same objects (a job queued behind it with `after` is not a clash). Two
    /// jobs on one object would be safe (writes are conditional; the second adopts the
    /// first's copy) but would double the work and the audit trail.
    fn ensure_no_overlap(
        &self,
        what: &str,
        myself: Option<JobId>,
        prefix: &str,
        options: &JobOptions,
    ) -> Result<(), EngineError> {
        let mine = self.scope(options)?;
        for other in self.inner.journal.list_jobs()? {
            if !other.state.is_active()
                || other.kind != JobKind::Migrate
                || Some(other.id) == myself
                || Some(other.id) == options.after
                || other.options.after.is_some_and(|a| Some(a) == myself)
            {
                continue;
            }
            let prefixes_overlap =
                other.prefix.starts_with(prefix) || prefix.starts_with(other.prefix.as_str());
            let theirs = self.scope(&other.options)?;
            if prefixes_overlap && mine.categories_overlap(&theirs) {
                return Err(EngineError::FailedPrecondition(format!(
                    "job {} ({}) already covers prefix {:?}{}; narrow this one with a prefix or --only-category, or queue it with --after {}, before {what}",
                    other.id,
                    other.state,
                    other.prefix,
                    if other.options.only_categories.is_empty() {
                        String::new()
                    } else {
                        format!(" for {}", other.options.only_categories.join(", "))
                    },
                    other.id
                )));
            }
        }
        Ok(())
    }

    /// Seeds an empty journal from the destination buckets' metadata and creates a running
    /// job that proves the recovered objects and migrates the rest (see `rebuild.rs`).
    ///
    /// # Errors
    /// `FailedPrecondition` when the journal already has jobs; `Store`, `Journal`.
    pub async fn rebuild_journal(&self) -> Result<RebuildReport, EngineError> {
        if !self.inner.journal.list_jobs()?.is_empty() {
            return Err(EngineError::FailedPrecondition(
                "the journal is not empty; rebuild only into a fresh journal".into(),
            ));
        }
        rebuild::rebuild(&self.inner, &self.inner.settings).await
    }

    /// Dry run over the source with a job's filters. With `preflight`, also checks every
    /// category's KMS key and bucket as a start would.
    ///
    /// # Errors
    /// `InvalidRequest` for bad filters; `Store`/`Kms` when the source cannot be listed or
    /// (preflight) a category is unusable.
    pub async fn plan(
        &self,
        prefix: &str,
        options: &JobOptions,
        preflight: bool,
        sample_limit: usize,
        inspect_content: bool,
    ) -> Result<PlanReport, EngineError> {
        self.check_open()?;
        let scope = self.scope(options)?;
        if preflight {
            job::resolve_targets(&self.inner, true).await?;
            let weak = self.weak_buckets(&options.only_categories).await?;
            if !weak.is_empty() {
                return Err(EngineError::FailedPrecondition(format!(
                    "a start would be refused: destination bucket(s) weaker than provisioning requires: {}; run `dualsealctl provision --apply` (or start with --allow-weak-buckets, audited)",
                    describe_weak(&weak)
                )));
            }
        }
        let mut report = plan::plan(
            &self.inner,
            &self.job_prefix(prefix)?,
            &scope,
            sample_limit,
            inspect_content,
            options.inventory.as_deref(),
        )
        .await?;
        report.estimate = estimate::estimate(
            report.total_objects - report.unclassified_objects - report.conflict_objects,
            report.total_bytes - report.unclassified_bytes,
            options.verify_mode,
            &self.effective_limits(options),
            &self.inner.settings.pricing,
        );
        Ok(report)
    }

    fn job_prefix(&self, prefix: &str) -> Result<String, EngineError> {
        if prefix.len() > crate::store::MAX_KEY_BYTES {
            return Err(EngineError::InvalidRequest(format!(
                "prefix is {} bytes; S3 keys, and so prefixes, are at most {} bytes",
                prefix.len(),
                crate::store::MAX_KEY_BYTES
            )));
        }
        let base = &self.inner.settings.source_prefix;
        if prefix.is_empty() {
            return Ok(base.clone());
        }
        if !prefix.starts_with(base.as_str()) {
            return Err(EngineError::InvalidRequest(format!(
                "prefix {prefix:?} is outside the configured source prefix {base:?}"
            )));
        }
        Ok(prefix.to_owned())
    }

    fn check_limits(limits: &JobLimits) -> Result<(), EngineError> {
        let max = crate::config::MAX_CONCURRENCY as u32;
        match limits.concurrency {
            Some(c) if c == 0 || c > max => Err(EngineError::InvalidRequest(format!(
                "concurrency {c} is out of range; give 1 to {max}"
            ))),
            _ if limits.objects_per_sec == Some(0)
                || limits.bytes_per_sec == Some(0)
                || limits.kms_requests_per_sec == Some(0) =>
            {
                Err(EngineError::InvalidRequest(
                    "a rate of 0 would stop the job; pause it instead, or leave the rate unset for no limit".into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Starts a job over the source (or part of it).
    ///
    /// # Errors
    /// `InvalidRequest` for bad options; `FailedPrecondition` when an active job covers the
    /// same objects or the plan finds conflicts (unless allowed); `Store`/`Kms` when a
    /// destination bucket or key is unusable; `Journal`.
    async fn start_job_inner(&self, req: StartRequest) -> Result<JobView, EngineError> {
        let StartRequest {
            prefix,
            mut options,
            allow_conflicts,
            allow_weak_buckets,
        } = req;
        self.check_open()?;
        let _serial = self.inner.starts.lock().await;
        let prefix = self.job_prefix(&prefix)?;
        Self::check_limits(&options.limits)?;
        if options.failure_threshold.is_none() {
            options.failure_threshold = self.inner.settings.failure_threshold;
        }
        let scope = self.scope(&options)?;
        if let Some(after) = options.after {
            self.view(after)?;
        }
        self.ensure_no_overlap("starting another", None, &prefix, &options)?;
        if let Some(url) = &options.inventory {
            // Read and check the manifest now, so a wrong one is the caller's error.
            listing::InventoryLister::open(
                &self.inner,
                url,
                &self.inner.settings.source_bucket,
                &prefix,
            )
            .await?;
        }
        // Fail fast, before anything is written, when a destination or key is unusable.
        job::resolve_targets(&self.inner, true).await?;
        let weak = self.weak_buckets(&options.only_categories).await?;
        if !weak.is_empty() && !allow_weak_buckets {
            return Err(EngineError::FailedPrecondition(format!(
                "destination bucket(s) weaker than provisioning requires: {}; run `dualsealctl provision --apply`, or start with --allow-weak-buckets (audited)",
                describe_weak(&weak)
            )));
        }
        // When the rules alone show that no key can match two categories, the listing could
        // only confirm it: skipping it spares a second pass over the whole source (at a
        // million keys, a thousand requests before the first object moves).
        if !allow_conflicts && !self.inner.classifier.categories_are_disjoint() {
            let inventory = options.inventory.as_deref();
            let report = plan::plan(&self.inner, &prefix, &scope, 5, false, inventory).await?;
            if report.conflict_objects > 0 {
                let sample: Vec<String> = report
                    .conflicts_sample
                    .iter()
                    .map(|(k, cats)| format!("{k:?} matches {}", cats.join(" and ")))
                    .collect();
                return Err(EngineError::FailedPrecondition(format!(
                    "{} key(s) match more than one category (e.g. {}); fix the rules or start with allow_conflicts to leave them in place",
                    report.conflict_objects,
                    sample.join("; ")
                )));
            }
        }
        let job = self.inner.journal.create_job_of_kind(
            &self.inner.settings.source_bucket,
            &prefix,
            JobKind::Migrate,
            options,
        )?;
        self.inner.journal.append_audit(AuditDraft {
            job_id: job.id,
            kind: "job_started",
            detail: format!(
                "source s3://{}/{}; categories: {}; options: {}",
                job.source_bucket,
                job.prefix,
                self.inner
                    .categories
                    .iter()
                    .map(|c| format!("{}->{} ({})", c.name, c.bucket, c.key_ref()))
                    .collect::<Vec<_>>()
                    .join(", "),
                serde_json::to_string(&job.options).unwrap_or_default()
            ),
            ..Default::default()
        })?;
        if !weak.is_empty() {
            tracing::warn!(job = job.id, weak = %describe_weak(&weak), "started into weak buckets on the operator's override");
            self.inner.journal.append_audit(AuditDraft {
                job_id: job.id,
                kind: "weak_buckets_accepted",
                outcome: "override",
                detail: describe_weak(&weak),
                ..Default::default()
            })?;
        }
        self.inner.journal.flush().await?;
        tracing::info!(job = job.id, prefix = %job.prefix, state = %job.state, "job started");
        self.spawn_job(job.id);
        self.view(job.id)
    }

    /// Destination buckets (of `categories`, all when empty) whose live settings are weaker
    /// than provisioning requires, when the config asks for the check.
    async fn weak_buckets(
        &self,
        categories: &[String],
    ) -> Result<Vec<crate::provision::Change>, EngineError> {
        match &self.inner.provisioner {
            Some(p) if p.enforced() => Ok(p.weaknesses(categories).await?),
            _ => Ok(Vec::new()),
        }
    }

    /// The live state of a job, made on first use from its stored options.
    fn live(&self, record: &JobRecord) -> Arc<JobLive> {
        let mut live = lock(&self.inner.live);
        let l = live.entry(record.id).or_insert_with(|| {
            Arc::new(JobLive {
                limiter: limit::Limiter::new(self.inner.settings.concurrency),
                rates: Arc::new(rate::Rates::default()),
                progress: Mutex::new(progress::Progress::default()),
                priority: AtomicI32::new(0),
            })
        });
        let l = Arc::clone(l);
        drop(live);
        self.apply_limits(&l, &record.options);
        l
    }

    fn effective_limits(&self, options: &JobOptions) -> JobLimits {
        let l = &options.limits;
        JobLimits {
            concurrency: Some(
                l.concurrency
                    .unwrap_or(self.inner.settings.concurrency as u32),
            ),
            objects_per_sec: l.objects_per_sec,
            bytes_per_sec: l.bytes_per_sec,
            kms_requests_per_sec: l
                .kms_requests_per_sec
                .or(self.inner.settings.kms_requests_per_sec),
        }
    }

    fn apply_limits(&self, live: &JobLive, options: &JobOptions) {
        let eff = self.effective_limits(options);
        let cap = eff.concurrency.unwrap_or(1) as usize;
        if live.limiter.max() != cap {
            live.limiter.set_max(cap);
        }
        live.rates.set(
            eff.objects_per_sec,
            eff.bytes_per_sec,
            eff.kms_requests_per_sec,
        );
        live.priority.store(options.priority, Ordering::SeqCst);
    }

    fn spawn_job(&self, id: JobId) {
        let Ok(record) = self.inner.journal.get_job(id) else {
            return;
        };
        let live = self.live(&record);
        let stop = self.inner.shutdown.child_token();
        let drain = stop.child_token();
        let (done_tx, done) = watch::channel(false);
        let wanted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let mut running = lock(&self.inner.running);
            if let Some(task) = running.get(&id) {
                // One task per job, whatever races between callers; if that task is on its
                // way out, it starts this one's successor when it has ended.
                task.wanted.store(true, Ordering::SeqCst);
                return;
            }
            // Read under the lock a pause's quiesce also takes: a pause recorded before this
            // point is seen here, one recorded after finds the task registered and drains it.
            match self.inner.journal.get_job(id) {
                Ok(j) if matches!(j.state, JobState::Running | JobState::Pending) => {}
                _ => return,
            }
            running.insert(
                id,
                JobTask {
                    drain: drain.clone(),
                    stop: stop.clone(),
                    done,
                    wanted: Arc::clone(&wanted),
                },
            );
        }
        // Idle time while paused or down is not slowness.
        lock(&live.progress).reset();
        let inner = Arc::clone(&self.inner);
        self.inner.tasks.spawn(async move {
            let ctl = job::Control { drain, stop, live };
            job::run(Arc::clone(&inner), id, ctl).await;
            lock(&inner.running).remove(&id);
            done_tx.send_replace(true);
            inner.notify();
            if wanted.load(Ordering::SeqCst)
                && !inner.shutdown.is_cancelled()
                && !inner.fatal_token.is_cancelled()
            {
                Engine { inner }.spawn_job(id);
            }
        });
    }

    /// Stops a job's task: no new objects start; those in flight get `pause_deadline` to
    /// finish and are then abandoned (an abandoned object is redone or adopted on resume).
    /// Returns once the task has ended, so nothing of the job runs after the caller hears
    /// back.
    async fn quiesce(&self, id: JobId, abandon: bool) {
        let Some((drain, stop, mut done)) = lock(&self.inner.running)
            .get(&id)
            .map(|t| (t.drain.clone(), t.stop.clone(), t.done.clone()))
        else {
            return;
        };
        drain.cancel();
        if abandon {
            stop.cancel();
        }
        let drained =
            tokio::time::timeout(self.inner.settings.pause_deadline, done.wait_for(|d| *d))
                .await
                .is_ok();
        if !drained {
            tracing::warn!(job = id, deadline = ?self.inner.settings.pause_deadline, "objects in flight did not finish in time; abandoning them");
            stop.cancel();
            let _ = done.wait_for(|d| *d).await;
        }
    }

    /// One job with its counts.
    ///
    /// # Errors
    /// `NoSuchJob` or `Journal`.
    pub fn view(&self, id: JobId) -> Result<JobView, EngineError> {
        let record = self.inner.journal.get_job(id).map_err(|e| match e {
            crate::journal::JournalError::NoSuchJob(id) => EngineError::NoSuchJob(id),
            other => EngineError::Journal(other),
        })?;
        Ok(self.with_live(record))
    }

    fn with_live(&self, record: JobRecord) -> JobView {
        let counts = self.inner.journal.counts(record.id);
        let running = lock(&self.inner.running).contains_key(&record.id);
        let live = lock(&self.inner.live).get(&record.id).cloned();
        let (mut speed, mut recent_errors) = (Speed::default(), Vec::new());
        if let Some(l) = &live {
            let mut p = lock(&l.progress);
            let done = counts.get(ObjectState::Verified)
                + counts.get(ObjectState::Failed)
                + counts.get(ObjectState::Conflict);
            if running {
                p.sample(std::time::Instant::now(), done, counts.verified_bytes);
                let remaining = record.listing_complete.then(|| counts.pending());
                speed = p.speed(remaining);
            }
            recent_errors = p.errors();
        }
        let limiter = live.as_ref().filter(|_| running).map(|l| &l.limiter);
        JobView {
            counts,
            concurrency: limiter.map(|l| l.current()),
            throttled: limiter.is_some_and(|l| l.throttled()),
            speed,
            recent_errors,
            limits: self.effective_limits(&record.options),
            note: None,
            record,
        }
    }

    fn noted(&self, id: JobId, note: String) -> Result<JobView, EngineError> {
        let mut v = self.view(id)?;
        v.note = Some(note);
        Ok(v)
    }

    /// Every job, oldest first.
    ///
    /// # Errors
    /// `Journal`.
    pub fn list_jobs(&self) -> Result<Vec<JobView>, EngineError> {
        self.inner
            .journal
            .list_jobs()?
            .into_iter()
            .map(|record| Ok(self.with_live(record)))
            .collect()
    }

    /// One page of jobs, lowest id first: those with an id above `after` that are in one of
    /// `states` (any, when empty) and of `kind` (any, when `None`), at most `limit`, and the
    /// id to continue after when more follow.
    ///
    /// # Errors
    /// `Journal`.
    pub fn jobs_page(
        &self,
        after: JobId,
        limit: usize,
        states: &[JobState],
        kind: Option<KindFilter>,
    ) -> Result<(Vec<JobView>, Option<JobId>), EngineError> {
        let mut records: Vec<JobRecord> = self
            .inner
            .journal
            .list_jobs()?
            .into_iter()
            .filter(|r| r.id > after)
            .filter(|r| states.is_empty() || states.contains(&r.state))
            .filter(|r| {
                kind.is_none_or(|k| match (k, &r.kind) {
                    (KindFilter::Migrate, crate::journal::JobKind::Migrate)
                    | (KindFilter::Verify, crate::journal::JobKind::Verify { .. }) => true,
                    (KindFilter::Migrate | KindFilter::Verify, _) => false,
                })
            })
            .collect();
        records.sort_by_key(|r| r.id);
        let limit = limit.max(1);
        let next = (records.len() > limit).then(|| records[limit - 1].id);
        records.truncate(limit);
        let page = records.into_iter().map(|r| self.with_live(r)).collect();
        Ok((page, next))
    }

    /// Decides `action` against the job's state and applies the move in one journal update,
    /// so two concurrent calls cannot both act on the same old state (a resume racing a
    /// cancel must not revive the job). A move is audited as `kind` and made durable.
    async fn act(
        &self,
        id: JobId,
        action: Action,
        kind: &'static str,
        arrive: impl Fn(JobState, &JobRecord) -> JobState,
    ) -> Result<(Verdict, JobRecord), EngineError> {
        let mut verdict = Verdict::Stay;
        let record = self
            .inner
            .journal
            .update_job(id, |j| {
                verdict = lifecycle::decide(id, j.state, action);
                if let Verdict::Move(to) = verdict {
                    j.state = arrive(to, j);
                    match j.state {
                        JobState::Cancelled => j.message = Some("cancelled by the operator".into()),
                        JobState::Running | JobState::Pending => j.message = None,
                        _ => {}
                    }
                }
            })
            .map_err(|e| match e {
                crate::journal::JournalError::NoSuchJob(id) => EngineError::NoSuchJob(id),
                other => EngineError::Journal(other),
            })?;
        match &verdict {
            Verdict::Refuse(why) => return Err(EngineError::FailedPrecondition(why.clone())),
            Verdict::Move(_) => {
                self.inner.journal.append_audit(AuditDraft {
                    job_id: id,
                    kind,
                    detail: format!("state={}", record.state),
                    ..Default::default()
                })?;
                self.inner.journal.flush().await?;
                self.inner.notify();
            }
            Verdict::Already(_) | Verdict::Stay => {}
        }
        Ok((verdict, record))
    }

    fn answer(&self, id: JobId, verdict: Verdict) -> Result<JobView, EngineError> {
        match verdict {
            Verdict::Already(note) => self.noted(id, note),
            _ => self.view(id),
        }
    }

    /// Pauses a pending or running job and returns once it is quiet.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job has ended, `Journal`.
    async fn pause_inner(&self, id: JobId) -> Result<JobView, EngineError> {
        let (verdict, _) = self
            .act(id, Action::Pause, "job_paused", |to, _| to)
            .await?;
        // Also when already paused: another caller's pause may still be draining.
        self.quiesce(id, false).await;
        tracing::info!(job = id, "job paused; nothing of it is running");
        self.answer(id, verdict)
    }

    /// Resumes a paused job where it stopped.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job has ended or would overlap another
    /// active job, `Journal`.
    async fn resume_inner(&self, id: JobId) -> Result<JobView, EngineError> {
        self.check_open()?;
        let job = self.view(id)?.record;
        if job.state == JobState::Paused && job.kind == JobKind::Migrate {
            self.ensure_no_overlap(
                &format!("resuming job {id}"),
                Some(id),
                &job.prefix,
                &job.options,
            )?;
        }
        // A pause that is still draining (another client's call) finishes first. A job
        // recorded running or pending has its task: draining it would leave it recorded
        // running with nothing running it (a retried resume did exactly that).
        if !matches!(job.state, JobState::Running | JobState::Pending) {
            self.quiesce(id, false).await;
        }
        let predecessor_active = job.options.after.is_some_and(|a| {
            self.inner
                .journal
                .get_job(a)
                .is_ok_and(|j| j.state.is_active())
        });
        let (verdict, _) = self
            .act(id, Action::Resume, "job_resumed", |to, _| {
                if predecessor_active {
                    JobState::Pending
                } else {
                    to
                }
            })
            .await?;
        // Also when already running: a job recorded running must have a task (spawn_job
        // starts none while one is registered).
        if matches!(verdict, Verdict::Move(_) | Verdict::Already(_)) {
            self.spawn_job(id);
        }
        self.answer(id, verdict)
    }

    /// Stops a job for good, at once: attempts in flight are abandoned where they stand, as a
    /// crash would leave them (an object already written is recorded `uploaded`; a later job
    /// proves and adopts it). Objects already verified stay verified; the rest stay where they
    /// are in the source. Returns once nothing of the job runs.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job already ended otherwise, `Journal`.
    async fn cancel_inner(&self, id: JobId) -> Result<JobView, EngineError> {
        let (verdict, _) = self
            .act(id, Action::Cancel, "job_cancelled", |to, _| to)
            .await?;
        self.quiesce(id, true).await;
        tracing::info!(job = id, "job cancelled; nothing of it is running");
        // Also when already cancelled: a cancel repeated after a crash (or a timeout) finishes
        // the clean-up the first one may not have.
        if matches!(verdict, Verdict::Move(_) | Verdict::Already(_)) {
            let journal = Arc::clone(&self.inner.journal);
            let aborted = multipart::abort_open_uploads(
                journal,
                self.inner.store.as_ref(),
                id,
                &self.inner.settings.multipart,
            )
            .await?;
            if aborted > 0 {
                self.inner.journal.append_audit(AuditDraft {
                    job_id: id,
                    kind: "multipart_uploads_aborted",
                    detail: format!("count={aborted}"),
                    ..Default::default()
                })?;
            }
        }
        self.answer(id, verdict)
    }

    /// Changes a job's priority and limits while it runs (or before it resumes).
    ///
    /// # Errors
    /// `NoSuchJob`, `InvalidRequest` for a bad limit, `FailedPrecondition` when the job has
    /// ended, `Journal`.
    async fn update_inner(&self, id: JobId, update: JobUpdate) -> Result<JobView, EngineError> {
        let job = self.view(id)?.record;
        if let Verdict::Refuse(why) = lifecycle::decide(id, job.state, Action::Update) {
            return Err(EngineError::FailedPrecondition(why));
        }
        let mut limits = job.options.limits.clone();
        let set = |slot: &mut Option<u64>, v: Option<u64>| {
            if let Some(v) = v {
                // 0 from the API means "no limit of my own": back to the daemon's default.
                *slot = (v > 0).then_some(v);
            }
        };
        let mut c = limits.concurrency.map(u64::from);
        set(&mut c, update.concurrency.map(u64::from));
        let mut o = limits.objects_per_sec.map(u64::from);
        set(&mut o, update.objects_per_sec.map(u64::from));
        let mut k = limits.kms_requests_per_sec.map(u64::from);
        set(&mut k, update.kms_requests_per_sec.map(u64::from));
        set(&mut limits.bytes_per_sec, update.bytes_per_sec);
        let narrow = |v: Option<u64>| v.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
        limits.concurrency = narrow(c);
        limits.objects_per_sec = narrow(o);
        limits.kms_requests_per_sec = narrow(k);
        Self::check_limits(&limits)?;
        let record = self.inner.journal.update_job(id, |j| {
            j.options.limits = limits.clone();
            if let Some(p) = update.priority {
                j.options.priority = p;
            }
        })?;
        self.inner.journal.append_audit(AuditDraft {
            job_id: id,
            kind: "job_updated",
            detail: format!(
                "priority={} limits={}",
                record.options.priority,
                serde_json::to_string(&record.options.limits).unwrap_or_default()
            ),
            ..Default::default()
        })?;
        self.inner.journal.flush().await?;
        let live = self.live(&record);
        self.apply_limits(&live, &record.options);
        tracing::info!(job = id, priority = record.options.priority, limits = ?self.effective_limits(&record.options), "job limits changed");
        self.inner.notify();
        self.view(id)
    }

    /// Re-queues a finished job's failed objects (attempt budget reset) and runs it again.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` unless the job completed with failures (or failed,
    /// or was cancelled), `Journal`.
    async fn retry_inner(&self, id: JobId) -> Result<JobView, EngineError> {
        self.check_open()?;
        let job = self.view(id)?.record;
        if let Verdict::Refuse(why) = lifecycle::decide(id, job.state, Action::Retry) {
            return Err(EngineError::FailedPrecondition(why));
        }
        if job.kind == JobKind::Migrate {
            self.ensure_no_overlap(
                &format!("retrying job {id}"),
                Some(id),
                &job.prefix,
                &job.options,
            )?;
        }
        let failed: Vec<String> = self
            .inner
            .journal
            .iter_objects(id, Some(ObjectState::Failed))
            .map(|r| r.map(|(k, _)| k))
            .collect::<Result<_, _>>()?;
        for key in &failed {
            self.inner.journal.transition(
                id,
                key,
                |r| {
                    r.state = ObjectState::Discovered;
                    r.attempts = 0;
                    r.retry_at_ms = None;
                },
                None,
            )?;
        }
        // Requeued first (harmless if the move below is refused): the job's task picks up
        // pending objects when it starts.
        let (verdict, _) = self
            .act(id, Action::Retry, "job_retried", |to, _| to)
            .await?;
        tracing::info!(job = id, objects = failed.len(), "retrying failed objects");
        if matches!(verdict, Verdict::Move(_)) {
            self.spawn_job(id);
        }
        self.answer(id, verdict)
    }

    async fn sync_inner(&self, id: JobId) -> Result<JobView, EngineError> {
        self.check_open()?;
        let job = self.view(id)?.record;
        if job.kind != JobKind::Migrate {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} is a verification job; catch up the migration job"
            )));
        }
        if let Verdict::Refuse(why) = lifecycle::decide(id, job.state, Action::Sync) {
            return Err(EngineError::FailedPrecondition(why));
        }
        self.ensure_no_overlap(
            &format!("catching up job {id}"),
            Some(id),
            &job.prefix,
            &job.options,
        )?;
        let (verdict, _) = self.act(id, Action::Sync, "job_sync", |to, _| to).await?;
        // List from the start again; existing records keep their state unless the source
        // changed (see Journal::record_page_audited).
        self.inner.journal.update_job(id, |j| {
            j.listing_token = None;
            j.listing_complete = false;
            j.excluded = 0;
            j.syncing = true;
        })?;
        self.inner.journal.flush().await?;
        if matches!(verdict, Verdict::Move(_)) {
            self.spawn_job(id);
        }
        self.answer(id, verdict)
    }

    /// Lists the source of a finished job again and migrates what is new or changed since
    /// (by ETag); deleted source objects are reported by the cutover check.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` unless the job finished, `Journal`.
    pub async fn sync(&self, actor: &str, id: JobId) -> Result<JobView, EngineError> {
        self.audited_job(actor, "sync", id, String::new(), self.sync_inner(id))
            .await
    }

    async fn verify_inner(&self, id: JobId) -> Result<JobView, EngineError> {
        self.check_open()?;
        let _serial = self.inner.starts.lock().await;
        let target = self.view(id)?.record;
        if target.kind != JobKind::Migrate {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} is itself a verification; verify the migration job it checked"
            )));
        }
        if target.state.is_active() {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} is still {}; verify it after it finishes",
                target.state
            )));
        }
        // A retried or repeated call joins the verification already under way.
        if let Some(running) = self
            .inner
            .journal
            .list_jobs()?
            .into_iter()
            .filter(|j| matches!(j.kind, JobKind::Verify { of } if of == id))
            .filter(|j| j.state.is_active())
            .max_by_key(|j| j.id)
        {
            let mut view = self.view(running.id)?;
            view.note = Some(format!(
                "job {id} is already being verified by job {}",
                running.id
            ));
            return Ok(view);
        }
        // A verification of nothing would pass, and read as if it proved something.
        if self.inner.journal.counts(id).get(ObjectState::Verified) == 0 {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} has no verified object: there is nothing to re-verify (`dualsealctl failures {id}` says why its objects failed)"
            )));
        }
        let job = self.inner.journal.create_job_of_kind(
            &target.source_bucket,
            &target.prefix,
            JobKind::Verify { of: id },
            JobOptions {
                limits: target.options.limits.clone(),
                priority: target.options.priority,
                ..Default::default()
            },
        )?;
        self.inner.journal.append_audit(AuditDraft {
            job_id: job.id,
            kind: "job_started",
            detail: format!("verification of job {id}"),
            ..Default::default()
        })?;
        self.inner.journal.flush().await?;
        tracing::info!(job = job.id, of = id, "verification job started");
        self.spawn_job(job.id);
        self.view(job.id)
    }

    /// The report of a verification job (running or finished).
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job is not a verification, `Journal`.
    pub async fn verify_report(&self, id: JobId) -> Result<VerifyReport, EngineError> {
        let mut job = self.view(id)?.record;
        if matches!(job.kind, JobKind::Migrate) {
            // A migration job's report is that of its latest verification.
            job = self
                .inner
                .journal
                .list_jobs()?
                .into_iter()
                .filter(|j| matches!(j.kind, JobKind::Verify { of } if of == id))
                .max_by_key(|j| j.id)
                .ok_or_else(|| {
                    EngineError::FailedPrecondition(format!(
                        "migration job {id} has not been verified; start a verification with VerifyJob"
                    ))
                })?;
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || plan::verify_report(&inner, &job))
            .await
            .map_err(|e| EngineError::FailedPrecondition(format!("report failed: {e}")))?
    }

    /// Streams the audit events that pass `filter`, oldest first, from the journal, each with
    /// its time in ms since the Unix epoch: memory stays flat whatever the trail's length.
    pub fn audit_stream(
        &self,
        filter: crate::audit::Filter,
    ) -> tokio::sync::mpsc::Receiver<Result<(crate::audit::AuditEvent, u64), EngineError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let journal = Arc::clone(&self.inner.journal);
        tokio::task::spawn_blocking(move || {
            for item in journal.iter_audit_after(filter.job, filter.after_seq) {
                let out = item.map_err(EngineError::from).map(|rec| {
                    let e = crate::audit::AuditEvent::from(&rec);
                    filter.matches(&e, rec.at_ms).then_some((e, rec.at_ms))
                });
                let send = match out {
                    Ok(None) => continue,
                    Ok(Some(e)) => tx.blocking_send(Ok(e)),
                    Err(e) => tx.blocking_send(Err(e)),
                };
                if send.is_err() {
                    return; // the client went away
                }
            }
        });
        rx
    }

    /// Streams a job's objects (optionally in one state) from the journal.
    ///
    /// # Errors
    /// `NoSuchJob` or `Journal`.
    pub fn objects_stream(
        &self,
        id: JobId,
        state: Option<ObjectState>,
    ) -> Result<ObjectStream, EngineError> {
        self.view(id)?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let journal = Arc::clone(&self.inner.journal);
        tokio::task::spawn_blocking(move || {
            for item in journal.iter_objects(id, state) {
                if tx.blocking_send(item.map_err(EngineError::from)).is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Walks the whole audit chain.
    ///
    /// # Errors
    /// `Journal`.
    pub async fn verify_audit(&self) -> Result<crate::audit::ChainReport, EngineError> {
        let journal = Arc::clone(&self.inner.journal);
        tokio::task::spawn_blocking(move || journal.verify_audit_chain())
            .await
            .map_err(|e| EngineError::FailedPrecondition(format!("audit walk failed: {e}")))?
            .map_err(EngineError::from)
    }

    /// Records a daemon-level event (a reload, a listener started) and makes it durable.
    ///
    /// # Errors
    /// `Journal`.
    pub async fn audit_daemon(
        &self,
        kind: &'static str,
        outcome: &'static str,
        detail: String,
    ) -> Result<(), EngineError> {
        self.inner.journal.append_audit(AuditDraft {
            kind,
            actor: "daemon".into(),
            outcome,
            detail,
            ..Default::default()
        })?;
        self.inner.journal.flush().await?;
        Ok(())
    }

    /// Records a refused control-plane call. A refusal stays a refusal even when it cannot be
    /// recorded, so a failure here is only logged.
    pub async fn audit_denied(&self, actor: &str, what: &str) {
        let draft = AuditDraft {
            kind: "denied",
            actor: actor.to_owned(),
            outcome: "denied",
            detail: format!("action={what:?}"),
            ..Default::default()
        };
        tracing::warn!(actor, action = what, "call denied");
        let res = match self.inner.journal.append_audit(draft) {
            Ok(_) => self.inner.journal.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            tracing::error!(error = %e, "could not audit a denied call");
        }
    }

    // ---------------------------------------------------------------- audited control
    //
    // Every control action is recorded twice: `control` with outcome `requested` before it
    // runs (if that cannot be written, the action does not happen: fail closed), and
    // `control_result` with its outcome after, before the caller hears back.

    async fn audited<T>(
        &self,
        actor: &str,
        action: &'static str,
        job: JobId,
        params: String,
        run: impl std::future::Future<Output = Result<T, EngineError>>,
        outcome_of: impl Fn(&T) -> String,
    ) -> Result<T, EngineError> {
        let draft = |kind, outcome, detail: String| AuditDraft {
            job_id: job,
            kind,
            actor: actor.to_owned(),
            outcome,
            detail,
            ..Default::default()
        };
        self.inner.journal.append_audit(draft(
            "control",
            "requested",
            format!("action={action} {params}").trim().to_owned(),
        ))?;
        self.inner.journal.flush().await?;
        let result = run.await;
        let (outcome, detail) = match &result {
            Ok(v) => ("ok", format!("action={action} {params} {}", outcome_of(v))),
            Err(e) => ("failed", format!("action={action} {params} error={e}")),
        };
        self.inner.journal.append_audit(draft(
            "control_result",
            outcome,
            detail.trim().to_owned(),
        ))?;
        self.inner.journal.flush().await?;
        result
    }

    /// [`audited`](Self::audited) for actions that answer with a job: the result names the
    /// job the action made or acted on.
    async fn audited_job(
        &self,
        actor: &str,
        action: &'static str,
        job: JobId,
        params: String,
        run: impl std::future::Future<Output = Result<JobView, EngineError>>,
    ) -> Result<JobView, EngineError> {
        self.audited(actor, action, job, params, run, |v| {
            format!("job={}", v.record.id)
        })
        .await
    }

    /// Plans (or, with `apply`, applies) provisioning of the category keys and buckets.
    ///
    /// # Errors
    /// `FailedPrecondition` when the daemon has no provisioner; `Provision`.
    pub async fn provision(
        &self,
        actor: &str,
        apply: bool,
    ) -> Result<ProvisionReport, EngineError> {
        let run = async {
            let p = self.inner.provisioner.as_ref().ok_or_else(|| {
                EngineError::FailedPrecondition(
                    "provisioning is not available in this daemon".into(),
                )
            })?;
            let report = if apply {
                p.apply().await?
            } else {
                p.plan().await?
            };
            for c in &report.applied {
                self.inner.journal.append_audit(AuditDraft {
                    kind: "provisioned",
                    actor: actor.to_owned(),
                    category: c.category.clone(),
                    outcome: "ok",
                    dest_bucket: c
                        .resource
                        .strip_prefix("s3://")
                        .unwrap_or_default()
                        .to_owned(),
                    detail: format!(
                        "{} {}: was {:?}, now {:?}",
                        c.resource, c.setting, c.live, c.desired
                    ),
                    ..Default::default()
                })?;
            }
            Ok(report)
        };
        let action = if apply {
            "provision_apply"
        } else {
            "provision_plan"
        };
        self.audited(actor, action, 0, String::new(), run, |r| {
            format!("applied={} remaining={}", r.applied.len(), r.changes.len())
        })
        .await
    }

    /// Starts a job over the source (or part of it), on behalf of `actor`.
    ///
    /// # Errors
    /// `FailedPrecondition` when another job is active or the plan finds conflicts (unless
    /// allowed); `Store`/`Kms` when a destination bucket or key is unusable; `Journal`.
    pub async fn start_job(&self, actor: &str, req: StartRequest) -> Result<JobView, EngineError> {
        let params = format!(
            "prefix={:?} allow_conflicts={} allow_weak_buckets={} options={}",
            req.prefix,
            req.allow_conflicts,
            req.allow_weak_buckets,
            serde_json::to_string(&req.options).unwrap_or_default()
        );
        self.audited_job(actor, "start", 0, params, self.start_job_inner(req))
            .await
    }

    /// Changes a job's priority and live limits.
    ///
    /// # Errors
    /// `NoSuchJob`, `InvalidRequest`, `FailedPrecondition` when the job has ended, `Journal`.
    pub async fn update(
        &self,
        actor: &str,
        id: JobId,
        update: JobUpdate,
    ) -> Result<JobView, EngineError> {
        let params = format!("{update:?}");
        self.audited_job(actor, "update", id, params, self.update_inner(id, update))
            .await
    }

    /// Stops dispatching new objects of a running job; objects in flight finish.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job is not running, `Journal`.
    pub async fn pause(&self, actor: &str, id: JobId) -> Result<JobView, EngineError> {
        self.audited_job(actor, "pause", id, String::new(), self.pause_inner(id))
            .await
    }

    /// Resumes a paused job.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job is not paused, `Journal`.
    pub async fn resume(&self, actor: &str, id: JobId) -> Result<JobView, EngineError> {
        self.audited_job(actor, "resume", id, String::new(), self.resume_inner(id))
            .await
    }

    /// Stops a job for good.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job already ended, `Journal`.
    pub async fn cancel(&self, actor: &str, id: JobId) -> Result<JobView, EngineError> {
        self.audited_job(actor, "cancel", id, String::new(), self.cancel_inner(id))
            .await
    }

    /// Re-queues a finished job's failed objects.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition`, `Journal`.
    pub async fn retry(&self, actor: &str, id: JobId) -> Result<JobView, EngineError> {
        self.audited_job(actor, "retry", id, String::new(), self.retry_inner(id))
            .await
    }

    /// Starts a verification job that re-reads every object migration job `id` verified,
    /// from both buckets, and checks it again. It can be watched, paused, resumed and
    /// cancelled like any job; [`verify_report`](Self::verify_report) gives its findings.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` while a job is active, `Journal`.
    pub async fn verify(&self, actor: &str, id: JobId) -> Result<JobView, EngineError> {
        self.audited_job(actor, "verify", id, String::new(), self.verify_inner(id))
            .await
    }
}

impl Inner {
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
