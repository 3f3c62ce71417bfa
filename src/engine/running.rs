//! A running job's context, shared by its dispatcher and workers, and the ways a worker stops
//! the whole job (failure threshold, parking on a problem of the daemon's).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::pool::Permit;
use super::rate::RateLimitedKeys;
use super::{Inner, JobLive};
use crate::journal::{AuditDraft, JournalError};
use crate::model::{JobId, JobOptions, JobState, ObjectState};

/// What a job's task is told and shares while it runs.
pub(super) struct Control {
    /// No new attempts once cancelled.
    pub drain: CancellationToken,
    /// Attempts in flight are abandoned once cancelled.
    pub stop: CancellationToken,
    /// Limits, priority and history.
    pub live: Arc<JobLive>,
}

/// One job's running context, shared by its workers.
pub(super) struct Ctx {
    pub(super) spare: std::sync::Mutex<Spare>,
    pub(super) inner: Arc<Inner>,
    pub(super) id: JobId,
    pub(super) options: JobOptions,
    pub(super) ctl: Control,
    /// The key service behind this job's KMS rate.
    pub(super) keys: RateLimitedKeys,
    /// Objects waiting out a retry's delay, without a worker.
    pub(super) backlog: super::backlog::Backlog,
}

/// Stops the job (state `Failed`) once its failures pass the threshold: more than `percent`%
/// of at least `min_objects` finished objects. Objects in flight finish; the failed ones can
/// be retried after the cause is fixed.
pub(super) async fn check_threshold(ctx: &Ctx) -> Result<(), JournalError> {
    let Some(t) = ctx.options.failure_threshold else {
        return Ok(());
    };
    let counts = ctx.inner.journal.counts(ctx.id);
    let failed = counts.get(ObjectState::Failed);
    let finished = failed + counts.get(ObjectState::Verified) + counts.get(ObjectState::Conflict);
    if finished < t.min_objects.max(1) || failed * 100 <= u64::from(t.percent) * finished {
        return Ok(());
    }
    let message = format!(
        "stopped: {failed} of {finished} finished objects failed, more than the {}% threshold; `dualsealctl failures {}` lists why. Fix the cause, then `dualsealctl retry {}`",
        t.percent, ctx.id, ctx.id
    );
    stop_running(ctx, JobState::Failed, "job_failed", "threshold", message).await
}

/// Stops a running job on a problem that is the daemon's, not its objects' (no credentials, an
/// endpoint that cannot be reached): the job is paused with the reason, objects stay as they
/// are, and `resume` continues once the cause is fixed. Marking every object failed or
/// unreadable would only hide the one cause behind thousands of findings.
pub(super) async fn park(ctx: &Ctx, why: &str) -> Result<(), JournalError> {
    let message = format!(
        "parked: {why}. This is not a problem of the objects; fix it, then `dualsealctl resume {}`",
        ctx.id
    );
    stop_running(ctx, JobState::Paused, "job_parked", "paused", message).await
}

/// Moves a job that is still running to `state` with `message`, audited as `kind` /
/// `outcome` once (whichever worker gets there first), and drains it.
pub(super) async fn stop_running(
    ctx: &Ctx,
    state: JobState,
    kind: &'static str,
    outcome: &'static str,
    message: String,
) -> Result<(), JournalError> {
    let recorded = message.clone();
    let (_, first) = ctx
        .inner
        .journal
        .update_job_with(ctx.id, move |j| {
            let first = j.state == JobState::Running;
            if first {
                j.state = state;
                j.message = Some(recorded);
            }
            first
        })
        .await?;
    if first {
        tracing::error!(job = ctx.id, %message);
        ctx.inner
            .journal
            .append_audit(AuditDraft {
                job_id: ctx.id,
                kind,
                outcome,
                detail: message,
                ..Default::default()
            })
            .await?;
        ctx.inner.journal.flush().await?;
        ctx.inner.notify();
    }
    ctx.ctl.drain.cancel();
    Ok(())
}

/// Worker slots a job's finished objects hand back to its own dispatcher (see `pool.rs`).
#[derive(Default)]
pub(super) struct Spare {
    /// Whether the dispatcher still takes slots; once closed, permits go back to the pool.
    pub(super) open: bool,
    /// The dispatcher waits in the pool's queue: a freed slot must go there, not sit here.
    pub(super) queued: bool,
    pub(super) permits: Vec<Permit>,
}

impl Ctx {
    pub(super) fn lock_spare(&self) -> std::sync::MutexGuard<'_, Spare> {
        self.spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps a finished object's worker slot for this job's next object, unless the job has
    /// nothing more to start, its adaptive limit has room for fewer slots than it holds, or a
    /// job of the same or higher priority waits for a slot (equal jobs then take turns).
    pub(super) fn recycle(&self, permit: Permit) {
        let mine = self
            .ctl
            .live
            .priority
            .load(std::sync::atomic::Ordering::SeqCst);
        let outranked = self.inner.pool.best_waiting().is_some_and(|p| p >= mine);
        let limiter = &self.ctl.live.limiter;
        let mut spare = self.lock_spare();
        // The slots the job holds once this object is done (its objects still running, those
        // kept, this one) stay within its adaptive limit: a job whose limit fell must not sit
        // on slots that another job could use.
        let within = limiter.in_flight() + spare.permits.len() <= limiter.current();
        if spare.open && !spare.queued && !outranked && within && !self.ctl.drain.is_cancelled() {
            spare.permits.push(permit);
        } else {
            drop(spare);
            drop(permit);
        }
    }
}
