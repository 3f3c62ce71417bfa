//! Starting jobs: a migration after its preflight (scope, overlap, limits, categories,
//! bucket strength), a verification of a finished migration, and a journal rebuild.

use super::super::{listing, plan, rebuild, Engine, EngineError, JobView, RebuildReport};
use crate::journal::AuditDraft;
use crate::model::{JobId, JobKind, JobLimits, JobOptions, ObjectState};

impl Engine {
    /// Starts a job over the source (or part of it).
    ///
    /// # Errors
    /// `InvalidRequest` for bad options; `FailedPrecondition` when an active job covers the
    /// same objects or the plan finds conflicts (unless allowed); `Store`/`Kms` when a
    /// destination bucket or key is unusable; `Journal`.
    pub(in crate::engine) async fn start(&self, req: StartRequest) -> Result<JobView, EngineError> {
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
        self.inner.resolve_targets(true).await?;
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
        let job = self
            .inner
            .journal
            .create_job_of_kind(
                &self.inner.settings.source_bucket,
                &prefix,
                JobKind::Migrate,
                options,
            )
            .await?;
        self.inner
            .journal
            .append_audit(AuditDraft {
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
            })
            .await?;
        if !weak.is_empty() {
            tracing::warn!(job = job.id, weak = %describe_weak(&weak), "started into weak buckets on the operator's override");
            self.inner
                .journal
                .append_audit(AuditDraft {
                    job_id: job.id,
                    kind: "weak_buckets_accepted",
                    outcome: "override",
                    detail: describe_weak(&weak),
                    ..Default::default()
                })
                .await?;
        }
        self.inner.journal.flush().await?;
        tracing::info!(job = job.id, prefix = %job.prefix, state = %job.state, "job started");
        self.spawn_job(job.id);
        let mut view = self.view(job.id)?;
        view.note = self.above_slots(&job.options);
        Ok(view)
    }

    /// Destination buckets (of `categories`, all when empty) whose live settings are weaker
    /// than provisioning requires, when the config asks for the check.
    pub(in crate::engine) async fn weak_buckets(
        &self,
        categories: &[String],
    ) -> Result<Vec<crate::provision::Change>, EngineError> {
        match &self.inner.provisioner {
            Some(p) if p.enforced() => Ok(p.weaknesses(categories).await?),
            _ => Ok(Vec::new()),
        }
    }

    /// Refuses to run `what` over `prefix`/`scope` while another active migration job could
    /// pick up the same objects (a job queued behind it with `after` is not a clash). Two
    /// jobs on one object would be safe (writes are conditional; the second adopts the
    /// first's copy) but would double the work and the audit trail.
    pub(in crate::engine) fn ensure_no_overlap(
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

    pub(in crate::engine) fn job_prefix(&self, prefix: &str) -> Result<String, EngineError> {
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

    pub(in crate::engine) fn check_limits(limits: &JobLimits) -> Result<(), EngineError> {
        let max = crate::config::MAX_CONCURRENCY as u32;
        match limits.concurrency {
            Some(c) if c == 0 || c > max => Err(EngineError::InvalidRequest(format!(
                "concurrency {c} is out of range; give 1 to {max} (a job never has more in flight than the daemon's `concurrency` worker slots)"
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

    pub(in crate::engine) async fn verify(&self, id: JobId) -> Result<JobView, EngineError> {
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
        let job = self
            .inner
            .journal
            .create_job_of_kind(
                &target.source_bucket,
                &target.prefix,
                JobKind::Verify { of: id },
                JobOptions {
                    limits: target.options.limits.clone(),
                    priority: target.options.priority,
                    ..Default::default()
                },
            )
            .await?;
        self.inner
            .journal
            .append_audit(AuditDraft {
                job_id: job.id,
                kind: "job_started",
                detail: format!("verification of job {id}"),
                ..Default::default()
            })
            .await?;
        self.inner.journal.flush().await?;
        tracing::info!(job = job.id, of = id, "verification job started");
        self.spawn_job(job.id);
        self.view(job.id)
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

pub(in crate::engine) fn describe_weak(changes: &[crate::provision::Change]) -> String {
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
