//! Before switching applications over: the location map of a job's migrated objects, and the
//! cutover check — is every object verified, has the source changed since, are the destination
//! buckets as hardened as provisioning requires.

use super::error::EngineError;
use super::job::{list_with_retries, resolve_targets};
use super::{Engine, Scope};
use crate::journal::{JobId, JobKind, JobState, ObjectState};

/// Where one migrated object now lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingEntry {
    /// Source bucket.
    pub source_bucket: String,
    /// Source key.
    pub source_key: String,
    /// Source version id, when the source is versioned.
    pub source_version: Option<String>,
    /// Destination bucket.
    pub dest_bucket: String,
    /// Destination key.
    pub dest_key: String,
    /// Category.
    pub category: String,
    /// KMS key ARN of the category (both layers).
    pub kms_key_arn: String,
    /// Envelope format version.
    pub envelope_version: u8,
}

/// One line of the cutover check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// Counts or reasons.
    pub detail: String,
    /// A failure here means "not safe to switch"; otherwise it is advice.
    pub blocking: bool,
}

/// The answer to "is it safe to switch applications to the new buckets?".
#[derive(Debug, Clone, Default)]
pub struct CutoverReport {
    /// The migration job.
    pub job_id: JobId,
    /// Every blocking check holds.
    pub ready: bool,
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// Keys in the source now that the job never saw.
    pub new_in_source: u64,
    /// Keys whose source ETag changed since they were migrated.
    pub changed_in_source: u64,
    /// Migrated keys no longer in the source.
    pub deleted_in_source: u64,
}

impl Engine {
    fn migration_job(&self, id: JobId) -> Result<crate::journal::JobRecord, EngineError> {
        let job = self.view(id)?.record;
        if job.kind != JobKind::Migrate {
            return Err(EngineError::FailedPrecondition(format!(
                "job {id} is a verification job; give the migration job it checked"
            )));
        }
        Ok(job)
    }

    /// The location map of a job's verified objects, streamed.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` for a verification job, `Kms`/`Store` when the
    /// category keys cannot be resolved.
    pub async fn mapping(
        &self,
        id: JobId,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<MappingEntry, EngineError>>, EngineError> {
        let job = self.migration_job(id)?;
        let targets = resolve_targets(&self.inner, false).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let journal = std::sync::Arc::clone(&self.inner.journal);
        tokio::task::spawn_blocking(move || {
            for item in journal.iter_objects(id, Some(ObjectState::Verified)) {
                let out = item.map_err(EngineError::from).map(|(key, r)| {
                    let category = r.category.unwrap_or_default();
                    MappingEntry {
                        kms_key_arn: targets
                            .iter()
                            .find(|t| t.category == category)
                            .map(|t| t.kms_key_arn.clone())
                            .unwrap_or_default(),
                        source_bucket: job.source_bucket.clone(),
                        dest_key: r.dest_key.unwrap_or_else(|| key.clone()),
                        source_key: key,
                        source_version: r.source_version,
                        dest_bucket: r.dest_bucket.unwrap_or_default(),
                        category,
                        envelope_version: r
                            .envelope_version
                            .unwrap_or(crate::envelope::FORMAT_VERSION),
                    }
                });
                if tx.blocking_send(out).is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Checks whether applications can be switched to the new buckets.
    ///
    /// # Errors
    /// `NoSuchJob`, `FailedPrecondition` for a verification job, `Store` when the source
    /// cannot be listed, `Journal`.
    pub async fn cutover_check(&self, id: JobId) -> Result<CutoverReport, EngineError> {
        let job = self.migration_job(id)?;
        let counts = self.inner.journal.counts(id);
        let mut r = CutoverReport {
            job_id: id,
            ..Default::default()
        };
        let n = |s| counts.get(s);
        r.checks.push(Check {
            name: "job finished",
            ok: job.state == JobState::Succeeded,
            detail: format!("job {id} is {}", job.state),
            blocking: true,
        });
        r.checks.push(Check {
            name: "every object verified",
            ok: counts.pending() + n(ObjectState::Failed) == 0,
            detail: format!(
                "{} verified, {} pending, {} failed",
                n(ObjectState::Verified),
                counts.pending(),
                n(ObjectState::Failed)
            ),
            blocking: true,
        });
        r.checks.push(Check {
            name: "no conflicts",
            ok: n(ObjectState::Conflict) == 0,
            detail: format!("{} conflicting object(s)", n(ObjectState::Conflict)),
            blocking: true,
        });
        self.diff_source(&job, &mut r).await?;
        r.checks.push(Check {
            name: "source unchanged since migration",
            ok: r.new_in_source + r.changed_in_source + r.deleted_in_source == 0,
            detail: format!(
                "{} new, {} changed, {} deleted in the source since the job{}",
                r.new_in_source,
                r.changed_in_source,
                r.deleted_in_source,
                if r.new_in_source + r.changed_in_source > 0 {
                    format!("; `dualsealctl sync {}` migrates them", job.id)
                } else if r.deleted_in_source > 0 {
                    "; restore them, or accept that their copies outlive them".to_owned()
                } else {
                    String::new()
                }
            ),
            blocking: true,
        });
        let enforced = self
            .inner
            .provisioner
            .as_ref()
            .is_some_and(|p| p.enforced());
        let weak = self.weak_buckets(&job.options.only_categories).await?;
        r.checks.push(Check {
            name: "destination buckets hardened",
            ok: weak.is_empty(),
            detail: if !enforced {
                "not checked: provision.require_hardened_buckets = false".into()
            } else if weak.is_empty() {
                "provisioning check clean".into()
            } else {
                super::describe_weak(&weak)
            },
            blocking: true,
        });
        r.checks.push(Check {
            name: "unclassified objects",
            ok: n(ObjectState::Unclassified) == 0,
            detail: format!(
                "{} object(s) matched no category and stay in the source (never deleted unless named)",
                n(ObjectState::Unclassified)
            ),
            blocking: false,
        });
        let reverified = self
            .inner
            .journal
            .list_jobs()?
            .into_iter()
            .any(|j| j.kind == (JobKind::Verify { of: id }) && j.state == JobState::Succeeded);
        r.checks.push(Check {
            name: "re-verified",
            ok: reverified,
            detail: if reverified {
                "a verification job re-read both buckets and passed".into()
            } else {
                format!("not yet: `dualsealctl verify {id}` re-reads both buckets")
            },
            blocking: false,
        });
        r.ready = r.checks.iter().all(|c| c.ok || !c.blocking);
        Ok(r)
    }

    /// Lists the source again under the job's prefix and filters and compares it with the
    /// journal: new keys, changed ETags, deleted keys.
    async fn diff_source(
        &self,
        job: &crate::journal::JobRecord,
        r: &mut CutoverReport,
    ) -> Result<(), EngineError> {
        let inner = &self.inner;
        let names: Vec<&str> = inner.categories.iter().map(|c| c.name.as_str()).collect();
        let scope = Scope::new(&job.options, &names)
            .map_err(|p| EngineError::InvalidRequest(p.join("; ")))?
            .in_shard(inner.settings.shard);
        // The listing and the journal are both in key (byte) order: walking them side by side
        // finds the verified keys the listing no longer has, in memory that does not grow
        // with the source.
        let mut verified = inner
            .journal
            .iter_objects(job.id, Some(ObjectState::Verified))
            .peekable();
        let mut token = None;
        loop {
            let page = list_with_retries(
                inner,
                "list source",
                &job.source_bucket,
                &job.prefix,
                token.clone(),
            )
            .await?;
            for o in &page.objects {
                while let Some(item) = verified.next_if(|item| {
                    item.as_ref()
                        .map_or(true, |(k, _)| k.as_bytes() <= o.key.as_bytes())
                }) {
                    let (k, _) = item?;
                    if k != o.key {
                        r.deleted_in_source += 1;
                    }
                }
                if !scope.owns(&o.key) || !scope.admits_key(&o.key) {
                    continue;
                }
                match inner.journal.get_object(job.id, &o.key)? {
                    None => {
                        let rec = super::job::listed_record(inner, o);
                        if scope.admits_category(rec.category.as_deref()) {
                            r.new_in_source += 1;
                        }
                    }
                    Some(rec) => {
                        if rec.state == ObjectState::Verified && rec.source_etag != o.etag {
                            r.changed_in_source += 1;
                        }
                    }
                }
            }
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        for item in verified {
            item?;
            r.deleted_in_source += 1;
        }
        Ok(())
    }
}
