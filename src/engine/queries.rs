//! The read side: jobs with their live state, pages of jobs and objects, the audit stream,
//! verification reports and the plan (dry run). Nothing here changes a job.

use std::sync::Arc;

use super::{
    describe_weak, estimate, lock, plan, Engine, EngineError, PlanReport, RecentError, Speed,
    VerifyReport,
};
use crate::journal::JobCounts;
use crate::model::{
    JobId, JobKind, JobLimits, JobOptions, JobRecord, JobState, ObjectRecord, ObjectState,
};

impl Engine {
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

    pub(in crate::engine) fn with_live(&self, record: JobRecord) -> JobView {
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

    pub(in crate::engine) fn noted(&self, id: JobId, note: String) -> Result<JobView, EngineError> {
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
                    (KindFilter::Migrate, crate::model::JobKind::Migrate)
                    | (KindFilter::Verify, crate::model::JobKind::Verify { .. }) => true,
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

    /// Dry run over the source with a job's filters. With `preflight`, also checks every
    /// category's KMS key and bucket as a start would (with `allow_weak_buckets` as a start
    /// with it would: weak buckets are listed, not refused).
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
        allow_weak_buckets: bool,
    ) -> Result<PlanReport, EngineError> {
        self.check_open()?;
        let scope = self.scope(options)?;
        let mut weak = Vec::new();
        if preflight {
            self.inner.resolve_targets(true).await?;
            weak = self.weak_buckets(&options.only_categories).await?;
            if !weak.is_empty() && !allow_weak_buckets {
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
        report.weak_buckets = weak
            .iter()
            .map(|c| describe_weak(std::slice::from_ref(c)))
            .collect();
        Ok(report)
    }
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
