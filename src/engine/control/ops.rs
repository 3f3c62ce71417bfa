//! What the operator does to an existing job: pause, resume, cancel, update its limits,
//! retry its failures, and sync (a catch-up pass).

use std::sync::Arc;

use super::super::lifecycle::{self, Action, Verdict};
use super::super::{multipart, Engine, EngineError, JobView};
use crate::journal::AuditDraft;
use crate::model::{JobId, JobKind, JobOptions, JobState, ObjectEvent, ObjectState};

impl Engine {
    /// Pauses a pending or running job and returns once it is quiet.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` when the job has ended, `Journal`.
    pub(in crate::engine) async fn pause(&self, id: JobId) -> Result<JobView, EngineError> {
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
    pub(in crate::engine) async fn resume(&self, id: JobId) -> Result<JobView, EngineError> {
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
            .act(id, Action::Resume, "job_resumed", move |to, _| {
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
    pub(in crate::engine) async fn cancel(&self, id: JobId) -> Result<JobView, EngineError> {
        let (verdict, _) = self
            .act(id, Action::Cancel, "job_cancelled", |to, _| to)
            .await?;
        self.quiesce(id, true).await;
        tracing::info!(job = id, "job cancelled; nothing of it is running");
        // Also when already cancelled: a cancel repeated after a crash (or a timeout) finishes
        // the clean-up the first one may not have.
        if matches!(verdict, Verdict::Move(_) | Verdict::Already(_)) {
            let journal = Arc::clone(&self.inner.journal);
            multipart::abort_open_uploads(
                journal,
                self.inner.store.as_ref(),
                id,
                &self.inner.settings.multipart,
            )
            .await?;
        }
        self.answer(id, verdict)
    }

    /// Changes a job's priority and limits while it runs (or before it resumes).
    ///
    /// # Errors
    /// `NoSuchJob`, `InvalidRequest` for a bad limit, `FailedPrecondition` when the job has
    /// ended, `Journal`.
    pub(in crate::engine) async fn update(
        &self,
        id: JobId,
        update: JobUpdate,
    ) -> Result<JobView, EngineError> {
        let _one_at_a_time = self.inner.updates.lock().await;
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
        let record = self
            .inner
            .journal
            .update_job(id, {
                let (limits, priority) = (limits.clone(), update.priority);
                move |j| {
                    j.options.limits = limits;
                    if let Some(p) = priority {
                        j.options.priority = p;
                    }
                }
            })
            .await?;
        self.inner
            .journal
            .append_audit(AuditDraft {
                job_id: id,
                kind: "job_updated",
                detail: format!(
                    "priority={} limits={}",
                    record.options.priority,
                    serde_json::to_string(&record.options.limits).unwrap_or_default()
                ),
                ..Default::default()
            })
            .await?;
        self.inner.journal.flush().await?;
        let live = self.live(&record);
        self.apply_limits(&live, &record.options);
        tracing::info!(job = id, priority = record.options.priority, limits = ?self.effective_limits(&record.options), "job limits changed");
        self.inner.notify();
        let mut view = self.view(id)?;
        view.note = self.above_slots(&record.options);
        Ok(view)
    }

    /// What to tell an operator whose concurrency exceeds the daemon's worker slots: it is
    /// kept, and the slots are what is in force.
    pub(in crate::engine) fn above_slots(&self, options: &JobOptions) -> Option<String> {
        let slots = self.inner.pool.size();
        options
            .limits
            .concurrency
            .filter(|&c| c as usize > slots)
            .map(|c| {
                format!(
                    "concurrency {c} is above the daemon's {slots} worker slots ([daemon] concurrency): {slots} is in force"
                )
            })
    }

    /// Re-queues a finished job's failed objects (attempt budget reset) and runs it again.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` unless the job completed with failures (or failed,
    /// or was cancelled), `Journal`.
    pub(in crate::engine) async fn retry(&self, id: JobId) -> Result<JobView, EngineError> {
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
            self.inner
                .journal
                .transition(id, key, ObjectEvent::Requeued, None)
                .await?;
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

    pub(in crate::engine) async fn sync(&self, id: JobId) -> Result<JobView, EngineError> {
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
        self.inner
            .journal
            .update_job(id, |j| {
                j.listing_token = None;
                j.listing_complete = false;
                j.excluded = 0;
                j.syncing = true;
            })
            .await?;
        self.inner.journal.flush().await?;
        if matches!(verdict, Verdict::Move(_)) {
            self.spawn_job(id);
        }
        self.answer(id, verdict)
    }
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
