//! Control of jobs on an operator's behalf: every action is audited before it runs and
//! after, and moves a job only through the lifecycle's rule.

mod ops;
mod start;

pub use ops::JobUpdate;
pub(super) use start::describe_weak;
pub use start::StartRequest;

use super::lifecycle::{self, Action, Verdict};
use super::{Engine, EngineError, JobView};
use crate::journal::AuditDraft;
use crate::model::{JobId, JobRecord, JobState};
use crate::provision::Report as ProvisionReport;

impl Engine {
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
        self.inner
            .journal
            .append_audit(AuditDraft {
                kind,
                actor: "daemon".into(),
                outcome,
                detail,
                ..Default::default()
            })
            .await?;
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
        let res = match self.inner.journal.append_audit(draft).await {
            Ok(_) => self.inner.journal.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            tracing::error!(error = %e, "could not audit a denied call");
        }
    }

    pub(in crate::engine) async fn audited<T>(
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
        self.inner
            .journal
            .append_audit(draft(
                "control",
                "requested",
                format!("action={action} {params}").trim().to_owned(),
            ))
            .await?;
        self.inner.journal.flush().await?;
        let result = run.await;
        let (outcome, detail) = match &result {
            Ok(v) => ("ok", format!("action={action} {params} {}", outcome_of(v))),
            Err(e) => ("failed", format!("action={action} {params} error={e}")),
        };
        self.inner
            .journal
            .append_audit(draft("control_result", outcome, detail.trim().to_owned()))
            .await?;
        self.inner.journal.flush().await?;
        result
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
                self.inner
                    .journal
                    .append_audit(AuditDraft {
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
                    })
                    .await?;
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

    /// Decides `action` against the job's state and applies the move in one journal update,
    /// so two concurrent calls cannot both act on the same old state (a resume racing a
    /// cancel must not revive the job). A move is audited as `kind` and made durable.
    pub(in crate::engine) async fn act(
        &self,
        id: JobId,
        action: Action,
        kind: &'static str,
        arrive: impl FnOnce(JobState, &JobRecord) -> JobState + Send + 'static,
    ) -> Result<(Verdict, JobRecord), EngineError> {
        let (record, verdict) = self
            .inner
            .journal
            .update_job_with(id, move |j| {
                let verdict = lifecycle::decide(id, j.state, action);
                if let Verdict::Move(to) = &verdict {
                    j.state = arrive(*to, j);
                    match j.state {
                        JobState::Cancelled => j.message = Some("cancelled by the operator".into()),
                        JobState::Running | JobState::Pending => j.message = None,
                        _ => {}
                    }
                }
                verdict
            })
            .await
            .map_err(|e| match e {
                crate::journal::JournalError::NoSuchJob(id) => EngineError::NoSuchJob(id),
                other => EngineError::Journal(other),
            })?;
        match &verdict {
            Verdict::Refuse(why) => return Err(EngineError::FailedPrecondition(why.clone())),
            Verdict::Move(_) => {
                self.inner
                    .journal
                    .append_audit(AuditDraft {
                        job_id: id,
                        kind,
                        detail: format!("state={}", record.state),
                        ..Default::default()
                    })
                    .await?;
                self.inner.journal.flush().await?;
                self.inner.notify();
            }
            Verdict::Already(_) | Verdict::Stay => {}
        }
        Ok((verdict, record))
    }

    pub(in crate::engine) fn answer(
        &self,
        id: JobId,
        verdict: Verdict,
    ) -> Result<JobView, EngineError> {
        match verdict {
            Verdict::Already(note) => self.noted(id, note),
            _ => self.view(id),
        }
    }
}

/// What an operator asks of jobs. Every command runs through [`Engine::execute`], which
/// audits it before it runs and after, and answers with the job it made or acted on.
#[derive(Debug, Clone)]
pub enum Command {
    /// Start a migration job over the source (or part of it). Refused when another active
    /// job covers the same objects, the plan finds conflicts (unless allowed), or a
    /// destination bucket or key is unusable.
    Start(StartRequest),
    /// Change a job's priority and live limits. Refused once the job has ended.
    Update(JobId, JobUpdate),
    /// Stop dispatching new objects of a job; objects in flight finish within the pause
    /// deadline. Answers once the job is quiet.
    Pause(JobId),
    /// Resume a paused (or interrupted) job.
    Resume(JobId),
    /// Stop a job for good.
    Cancel(JobId),
    /// Re-queue a finished job's failed objects.
    Retry(JobId),
    /// Start a verification job that re-reads every object migration job `id` verified,
    /// from both buckets, and checks it again; it can be watched, paused, resumed and
    /// cancelled like any job, and [`Engine::verify_report`] gives its findings.
    Verify(JobId),
    /// List the source of a finished job again and migrate what is new or changed since (by
    /// ETag); deleted source objects are reported by the cutover check.
    Sync(JobId),
}

impl Command {
    /// The action's name in the audit trail.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Start(_) => "start",
            Self::Update(..) => "update",
            Self::Pause(_) => "pause",
            Self::Resume(_) => "resume",
            Self::Cancel(_) => "cancel",
            Self::Retry(_) => "retry",
            Self::Verify(_) => "verify",
            Self::Sync(_) => "sync",
        }
    }

    /// The job acted on (0 for a start: the job does not exist yet).
    pub fn job(&self) -> JobId {
        match self {
            Self::Start(_) => 0,
            Self::Update(id, _)
            | Self::Pause(id)
            | Self::Resume(id)
            | Self::Cancel(id)
            | Self::Retry(id)
            | Self::Verify(id)
            | Self::Sync(id) => *id,
        }
    }

    /// The parameters, as the audit trail records them (never a secret).
    fn params(&self) -> String {
        match self {
            Self::Start(req) => format!(
                "prefix={:?} allow_conflicts={} allow_weak_buckets={} options={}",
                req.prefix,
                req.allow_conflicts,
                req.allow_weak_buckets,
                serde_json::to_string(&req.options).unwrap_or_default()
            ),
            Self::Update(_, update) => format!("{update:?}"),
            _ => String::new(),
        }
    }
}

impl Engine {
    /// Runs `command` on behalf of `actor`, audited: see [`Command`] for what each does.
    ///
    /// # Errors
    /// `NoSuchJob`; `FailedPrecondition` when the job's state (or another job) does not allow
    /// it; `InvalidRequest` for bad filters or limits; `Store`/`Kms` when a start's preflight
    /// finds a category unusable; `Journal`, and `ShuttingDown`.
    pub async fn execute(&self, actor: &str, command: Command) -> Result<JobView, EngineError> {
        let (action, job, params) = (command.action(), command.job(), command.params());
        let run = async move {
            match command {
                Command::Start(req) => self.start(req).await,
                Command::Update(id, update) => self.update(id, update).await,
                Command::Pause(id) => self.pause(id).await,
                Command::Resume(id) => self.resume(id).await,
                Command::Cancel(id) => self.cancel(id).await,
                Command::Retry(id) => self.retry(id).await,
                Command::Verify(id) => self.verify(id).await,
                Command::Sync(id) => self.sync(id).await,
            }
        };
        self.audited(actor, action, job, params, run, |v: &JobView| {
            format!("job={}", v.record.id)
        })
        .await
    }
}
