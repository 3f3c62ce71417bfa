//! The migration engine: jobs, the bounded worker pool, retries, pause/resume/cancel, the
//! plan (dry run) and re-verification. It depends on the journal, the envelope, the key
//! service, the object store and the classifier, and on nothing above it.

mod error;
mod job;
mod limit;
pub mod migrate;
mod plan;
mod rebuild;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::{EngineError, ObjectError};
pub use plan::{CategoryPlan, CategoryVerify, PlanReport, VerifyReport};
pub use rebuild::RebuildReport;

use crate::classify::Classifier;
use crate::config::{CategoryConfig, Config};
use crate::journal::{
    AuditDraft, JobCounts, JobId, JobKind, JobRecord, JobState, Journal, ObjectRecord, ObjectState,
};
use crate::kms::KeyService;
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
        }
    }
}

/// A job's objects, streamed from the journal.
pub type ObjectStream = tokio::sync::mpsc::Receiver<Result<(String, ObjectRecord), EngineError>>;

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
}

struct JobControl {
    cancel: CancellationToken,
    paused: watch::Sender<bool>,
    limiter: Arc<limit::Limiter>,
}

pub(crate) struct Inner {
    journal: Arc<Journal>,
    store: Arc<dyn ObjectStore>,
    keys: Arc<dyn KeyService>,
    classifier: Classifier,
    categories: Vec<CategoryConfig>,
    settings: EngineSettings,
    running: Mutex<HashMap<JobId, JobControl>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    changes: watch::Sender<u64>,
    fatal: Mutex<Option<String>>,
    fatal_token: CancellationToken,
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
                settings,
                running: Mutex::new(HashMap::new()),
                shutdown,
                tasks: TaskTracker::new(),
                changes,
                fatal: Mutex::new(None),
                fatal_token: CancellationToken::new(),
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
            if job.state == JobState::Running {
                tracing::info!(job = job.id, "resuming job interrupted by a restart");
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

    /// A receiver that changes whenever any job or object changes state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// One job runs at a time: refuses `what` while another is running or paused.
    fn ensure_no_active_job(&self, what: &str) -> Result<(), EngineError> {
        match self
            .inner
            .journal
            .list_jobs()?
            .into_iter()
            .find(|j| j.state.is_active())
        {
            Some(active) => Err(EngineError::FailedPrecondition(format!(
                "job {} is still {:?}; wait for it, or cancel it, before {what}",
                active.id, active.state
            ))),
            None => Ok(()),
        }
    }

    fn check_open(&self) -> Result<(), EngineError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
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

    /// Dry run over the source.
    ///
    /// # Errors
    /// `Store` when the source cannot be listed.
    pub async fn plan(&self, prefix: &str, sample_limit: usize) -> Result<PlanReport, EngineError> {
        self.check_open()?;
        plan::plan(&self.inner, &self.job_prefix(prefix)?, sample_limit).await
    }

    fn job_prefix(&self, prefix: &str) -> Result<String, EngineError> {
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

    /// Starts a job over the source (or part of it).
    ///
    /// # Errors
    /// `FailedPrecondition` when another job is active or the plan finds conflicts (unless
    /// allowed); `Store`/`Kms` when a destination bucket or key is unusable; `Journal`.
    async fn start_job_inner(
        &self,
        prefix: &str,
        allow_conflicts: bool,
    ) -> Result<JobView, EngineError> {
        self.check_open()?;
        let prefix = self.job_prefix(prefix)?;
        self.ensure_no_active_job("starting another")?;
        // Fail fast, before anything is written, when a destination or key is unusable.
        job::resolve_targets(&self.inner, true).await?;
        if !allow_conflicts {
            let report = plan::plan(&self.inner, &prefix, 5).await?;
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
        let job = self
            .inner
            .journal
            .create_job(&self.inner.settings.source_bucket, &prefix)?;
        self.inner.journal.append_audit(AuditDraft {
            job_id: job.id,
            kind: "job_started",
            detail: format!(
                "source s3://{}/{}; categories: {}",
                job.source_bucket,
                job.prefix,
                self.inner
                    .categories
                    .iter()
                    .map(|c| format!("{}->{} ({})", c.name, c.bucket, c.kms_key))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ..Default::default()
        })?;
        self.inner.journal.flush().await?;
        tracing::info!(job = job.id, prefix = %job.prefix, "job started");
        self.spawn_job(job.id);
        self.view(job.id)
    }

    fn spawn_job(&self, id: JobId) {
        let cancel = self.inner.shutdown.child_token();
        let (paused, paused_rx) = watch::channel(false);
        let limiter = limit::Limiter::new(self.inner.settings.concurrency);
        lock(&self.inner.running).insert(
            id,
            JobControl {
                cancel: cancel.clone(),
                paused,
                limiter: Arc::clone(&limiter),
            },
        );
        let inner = Arc::clone(&self.inner);
        self.inner.tasks.spawn(async move {
            job::run(Arc::clone(&inner), id, cancel, paused_rx, limiter).await;
            lock(&inner.running).remove(&id);
            inner.notify();
        });
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
        let running = lock(&self.inner.running);
        let limiter = running.get(&record.id).map(|c| &c.limiter);
        JobView {
            counts: self.inner.journal.counts(record.id),
            concurrency: limiter.map(|l| l.current()),
            throttled: limiter.is_some_and(|l| l.throttled()),
            record,
        }
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

    /// Stops dispatching new objects of a running job; objects in flight finish.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job is not running, `Journal`.
    async fn pause_inner(&self, id: JobId) -> Result<JobView, EngineError> {
        let job = self.view(id)?.record;
        if job.state != JobState::Running {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} is {:?}, only a running job can be paused",
                job.state
            )));
        }
        self.set_state(id, JobState::Paused, "job_paused").await?;
        if let Some(ctl) = lock(&self.inner.running).get(&id) {
            ctl.paused.send_replace(true);
        }
        self.view(id)
    }

    /// Resumes a paused job.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job is not paused, `Journal`.
    async fn resume_inner(&self, id: JobId) -> Result<JobView, EngineError> {
        self.check_open()?;
        let job = self.view(id)?.record;
        if job.state != JobState::Paused {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} is {:?}, only a paused job can be resumed",
                job.state
            )));
        }
        self.set_state(id, JobState::Running, "job_resumed").await?;
        let resumed_live = lock(&self.inner.running)
            .get(&id)
            .map(|ctl| ctl.paused.send_replace(false))
            .is_some();
        if !resumed_live {
            // Paused across a restart: no task exists yet.
            self.spawn_job(id);
        }
        self.view(id)
    }

    /// Stops a job for good. Objects already verified stay verified; the rest stay where
    /// they are in the source.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job already ended, `Journal`.
    async fn cancel_inner(&self, id: JobId) -> Result<JobView, EngineError> {
        let job = self.view(id)?.record;
        if !job.state.is_active() {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} already ended ({:?})",
                job.state
            )));
        }
        self.set_state(id, JobState::Cancelled, "job_cancelled")
            .await?;
        if let Some(ctl) = lock(&self.inner.running).get(&id) {
            ctl.cancel.cancel();
        }
        self.view(id)
    }

    async fn set_state(
        &self,
        id: JobId,
        state: JobState,
        kind: &'static str,
    ) -> Result<(), EngineError> {
        self.inner.journal.update_job(id, |j| {
            j.state = state;
            match state {
                JobState::Cancelled => j.message = Some("cancelled by the operator".into()),
                JobState::Running => j.message = None,
                _ => {}
            }
        })?;
        self.inner.journal.append_audit(AuditDraft {
            job_id: id,
            kind,
            ..Default::default()
        })?;
        self.inner.journal.flush().await?;
        self.inner.notify();
        Ok(())
    }

    /// Re-queues a finished job's failed objects (attempt budget reset) and runs it again.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` unless the job completed with failures (or failed,
    /// or was cancelled), `Journal`.
    async fn retry_inner(&self, id: JobId) -> Result<JobView, EngineError> {
        self.check_open()?;
        let job = self.view(id)?.record;
        if job.state.is_active() || job.state == JobState::Succeeded {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} is {:?}; only a finished job with failures can be retried",
                job.state
            )));
        }
        self.ensure_no_active_job(&format!("retrying job {id}"))?;
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
        self.inner.journal.update_job(id, |j| {
            j.state = JobState::Running;
            j.message = None;
        })?;
        self.inner.journal.append_audit(AuditDraft {
            job_id: id,
            kind: "job_retried",
            detail: format!("requeued {} failed object(s)", failed.len()),
            ..Default::default()
        })?;
        self.inner.journal.flush().await?;
        tracing::info!(job = id, objects = failed.len(), "retrying failed objects");
        self.spawn_job(id);
        self.view(id)
    }

    async fn verify_inner(&self, id: JobId) -> Result<JobView, EngineError> {
        self.check_open()?;
        let target = self.view(id)?.record;
        if target.kind != JobKind::Migrate {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} is itself a verification; verify the migration job it checked"
            )));
        }
        if target.state.is_active() {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} is still {:?}; verify it after it finishes",
                target.state
            )));
        }
        self.ensure_no_active_job(&format!("verifying job {id}"))?;
        let job = self.inner.journal.create_job_of_kind(
            &target.source_bucket,
            &target.prefix,
            JobKind::Verify { of: id },
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
        let job = self.view(id)?.record;
        if !matches!(job.kind, JobKind::Verify { .. }) {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} is not a verification job; start one with VerifyJob"
            )));
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || plan::verify_report(&inner, &job))
            .await
            .map_err(|e| EngineError::FailedPrecondition(format!("report failed: {e}")))?
    }

    /// Streams the audit events that pass `filter`, oldest first, from the journal: memory
    /// stays flat whatever the trail's length.
    pub fn audit_stream(
        &self,
        filter: crate::audit::Filter,
    ) -> tokio::sync::mpsc::Receiver<Result<crate::audit::AuditEvent, EngineError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let journal = Arc::clone(&self.inner.journal);
        tokio::task::spawn_blocking(move || {
            for item in journal.iter_audit(filter.job) {
                let out = item.map_err(EngineError::from).map(|rec| {
                    let e = crate::audit::AuditEvent::from(&rec);
                    filter.matches(&e, rec.at_ms).then_some(e)
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

    async fn audited(
        &self,
        actor: &str,
        action: &'static str,
        job: JobId,
        params: String,
        run: impl std::future::Future<Output = Result<JobView, EngineError>>,
    ) -> Result<JobView, EngineError> {
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
            // The job the action made (start, verify) or acted on.
            Ok(v) => (
                "ok",
                format!("action={action} {params} job={}", v.record.id),
            ),
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

    /// Starts a job over the source (or part of it), on behalf of `actor`.
    ///
    /// # Errors
    /// `FailedPrecondition` when another job is active or the plan finds conflicts (unless
    /// allowed); `Store`/`Kms` when a destination bucket or key is unusable; `Journal`.
    pub async fn start_job(
        &self,
        actor: &str,
        prefix: &str,
        allow_conflicts: bool,
    ) -> Result<JobView, EngineError> {
        let params = format!("prefix={prefix:?} allow_conflicts={allow_conflicts}");
        self.audited(
            actor,
            "start",
            0,
            params,
            self.start_job_inner(prefix, allow_conflicts),
        )
        .await
    }

    /// Stops dispatching new objects of a running job; objects in flight finish.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job is not running, `Journal`.
    pub async fn pause(&self, actor: &str, id: JobId) -> Result<JobView, EngineError> {
        self.audited(actor, "pause", id, String::new(), self.pause_inner(id))
            .await
    }

    /// Resumes a paused job.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job is not paused, `Journal`.
    pub async fn resume(&self, actor: &str, id: JobId) -> Result<JobView, EngineError> {
        self.audited(actor, "resume", id, String::new(), self.resume_inner(id))
            .await
    }

    /// Stops a job for good.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job already ended, `Journal`.
    pub async fn cancel(&self, actor: &str, id: JobId) -> Result<JobView, EngineError> {
        self.audited(actor, "cancel", id, String::new(), self.cancel_inner(id))
            .await
    }

    /// Re-queues a finished job's failed objects.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition`, `Journal`.
    pub async fn retry(&self, actor: &str, id: JobId) -> Result<JobView, EngineError> {
        self.audited(actor, "retry", id, String::new(), self.retry_inner(id))
            .await
    }

    /// Starts a verification job that re-reads every object migration job `id` verified,
    /// from both buckets, and checks it again. It can be watched, paused, resumed and
    /// cancelled like any job; [`verify_report`](Self::verify_report) gives its findings.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` while a job is active, `Journal`.
    pub async fn verify(&self, actor: &str, id: JobId) -> Result<JobView, EngineError> {
        self.audited(actor, "verify", id, String::new(), self.verify_inner(id))
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
