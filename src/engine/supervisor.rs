//! The job supervisor: spawns a job's task, restarts the jobs a restart interrupted, drains
//! and quiesces them, and keeps each job's live state (adaptive limit, rates, priority).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{job, limit, lock, progress, rate, running, Engine, EngineError};
use crate::model::{JobId, JobLimits, JobOptions, JobRecord, JobState};

impl Engine {
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

    /// Abandons every attempt still in flight: for the daemon, once its exit deadline has
    /// passed after a shutdown. An abandoned object is redone or adopted on the next boot.
    pub fn abandon(&self) {
        self.inner.abandon.cancel();
    }

    /// Waits for every job task to stop (after `shutdown` was cancelled: each job starts no
    /// new attempt, and those in flight finish, or end at once after [`abandon`](Self::abandon)).
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

    /// The live state of a job, made on first use from its stored options.
    pub(in crate::engine) fn live(&self, record: &JobRecord) -> Arc<JobLive> {
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

    pub(in crate::engine) fn effective_limits(&self, options: &JobOptions) -> JobLimits {
        let l = &options.limits;
        JobLimits {
            // What is in force: a job never has more in flight than the daemon's slots.
            concurrency: Some(
                l.concurrency
                    .unwrap_or(self.inner.settings.concurrency as u32)
                    .min(u32::try_from(self.inner.pool.size()).unwrap_or(u32::MAX)),
            ),
            objects_per_sec: l.objects_per_sec,
            bytes_per_sec: l.bytes_per_sec,
            kms_requests_per_sec: l
                .kms_requests_per_sec
                .or(self.inner.settings.kms_requests_per_sec),
        }
    }

    pub(in crate::engine) fn apply_limits(&self, live: &JobLive, options: &JobOptions) {
        let eff = self.effective_limits(options);
        // A job never has more in flight than the daemon has worker slots: a higher ceiling
        // would only make its limit (and the gauge showing it) claim what cannot run.
        let cap = (eff.concurrency.unwrap_or(1) as usize).min(self.inner.pool.size());
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

    pub(in crate::engine) fn spawn_job(&self, id: JobId) {
        let Ok(record) = self.inner.journal.get_job(id) else {
            return;
        };
        let live = self.live(&record);
        // A shutdown drains every job; only the daemon's exit deadline abandons what is in
        // flight (`abandon`). A pause or cancel cancels `drain` before `stop`.
        let stop = self.inner.abandon.child_token();
        let drain = self.inner.shutdown.child_token();
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
            let ctl = running::Control { drain, stop, live };
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
    pub(in crate::engine) async fn quiesce(&self, id: JobId, abandon: bool) {
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
}

/// What the engine keeps about a job while the daemon runs, across pauses: its adaptive
/// limit, rates, priority and recent history.
pub(crate) struct JobLive {
    pub(super) limiter: Arc<limit::Limiter>,
    pub(super) rates: Arc<rate::Rates>,
    pub(super) progress: Mutex<progress::Progress>,
    pub(super) priority: AtomicI32,
}

/// A job's running task.
pub(super) struct JobTask {
    /// No new attempts start once cancelled (pause, cancel, failure threshold).
    pub(super) drain: CancellationToken,
    /// Attempts in flight are abandoned once cancelled (past the drain deadline, shutdown).
    pub(super) stop: CancellationToken,
    /// Becomes true when the task has ended.
    pub(super) done: watch::Receiver<bool>,
    /// Set when a resume, retry or sync found this task still registered: if it turns out to
    /// be ending (drained by a pause, or finishing), it starts its successor on the way out,
    /// so the job never stays recorded `running` with nothing running it.
    pub(super) wanted: Arc<std::sync::atomic::AtomicBool>,
}
