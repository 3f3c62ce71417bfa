//! Decommissioning the source bucket, in two steps: a plan that says what would happen and
//! returns a one-time token bound to that plan, then the execution of that token. Refused
//! unless the cutover check passes, and again if anything changed since the plan. Every step
//! is audited with the token's id and the actor.
//!
//! Built so far: `lockdown` (the source's policy becomes deny-all except the configured
//! break-glass principals; the previous policy is kept in the audit trail), `rollback` (puts
//! that previous policy back) and `delete` (every version and delete marker of the keys this
//! job verified; keys it did not verify — unclassified, conflicting, failed, new — are kept,
//! and versions under Object Lock retention or legal hold are reported, never bypassed) and
//! `archive` (a sealed copy of every verified object under Object Lock retention; see
//! [`archive`]).

mod archive;
mod deletes;
mod policy;

pub use archive::archive_key;
pub use policy::lockdown_policy;

use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::EngineError;
use super::Engine;
use crate::journal::AuditDraft;
use crate::model::{JobId, Lockdown};

/// A token is good for this long after its plan.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// What a decommission does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecommissionMode {
    /// Deny all access to the source except break-glass principals; reversible.
    Lockdown,
    /// Undo the last lockdown.
    Rollback,
    /// Copy the verified objects, sealed, to a backup bucket under Object Lock retention.
    Archive,
    /// Delete every object version of verified objects.
    Delete,
}

impl DecommissionMode {
    /// Name in the API and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lockdown => "lockdown",
            Self::Rollback => "rollback",
            Self::Archive => "archive",
            Self::Delete => "delete",
        }
    }
}

/// A plan the operator can execute with its token.
#[derive(Debug, Clone)]
pub struct DecommissionPlan {
    /// One-time token bound to this plan.
    pub token: String,
    /// The mode.
    pub mode: DecommissionMode,
    /// What would happen, in words.
    pub summary: String,
    /// Seconds the token stays valid.
    pub expires_in_secs: u64,
}

#[derive(Debug, Clone)]
pub(super) struct Planned {
    job: JobId,
    mode: DecommissionMode,
    fingerprint: String,
    expires: Instant,
    new_policy: Option<String>,
    deletes: Vec<(String, String)>,
    archives: Vec<archive::ArchiveItem>,
    /// Uncopied source versions the operator acknowledged destroying (delete only).
    acknowledged: u64,
}

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

impl Engine {
    /// The cutover check, which HEADs every verified copy; its fingerprint of the copies'
    /// state when it passes.
    async fn require_cutover(&self, id: JobId) -> Result<String, EngineError> {
        let report = self.cutover_check(id).await?;
        if report.ready {
            return Ok(report.copies_fingerprint);
        }
        let why: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.blocking && !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        Err(EngineError::FailedPrecondition(format!(
            "the cutover check does not pass ({}); `dualsealctl cutover-check {id}` shows it",
            why.join("; ")
        )))
    }

    fn source_admin(&self) -> Result<&std::sync::Arc<dyn crate::store::BucketAdmin>, EngineError> {
        self.inner
            .provisioner
            .as_ref()
            .map(|p| p.bucket_admin())
            .ok_or_else(|| {
                EngineError::FailedPrecondition(
                    "decommissioning is not available in this daemon".into(),
                )
            })
    }

    /// The source policy before the lockdown of job `id`'s source in force (`None` inside:
    /// the source had no policy). `None`: not locked down.
    fn last_lockdown(&self, id: JobId) -> Result<Option<Option<String>>, EngineError> {
        Ok(self
            .inner
            .journal
            .decommission(id)?
            .lockdown
            .map(|l| l.previous_policy))
    }

    /// What `mode` would do to job `id`'s source bucket now, and a token to do it.
    ///
    /// # Errors
    /// `FailedPrecondition` when the cutover check does not pass, break-glass principals or
    /// the archive bucket are missing, or there is nothing to roll back; `Store`.
    pub async fn decommission_plan(
        &self,
        actor: &str,
        id: JobId,
        mode: DecommissionMode,
        destroy_uncopied_versions: u64,
    ) -> Result<DecommissionPlan, EngineError> {
        let run = self.decommission_plan_inner(id, mode, destroy_uncopied_versions);
        self.audited(
            actor,
            "decommission_plan",
            id,
            format!(
                "mode={} destroy_uncopied_versions={destroy_uncopied_versions}",
                mode.as_str()
            ),
            run,
            |p| format!("token_id={}", &digest(&[&p.token])[..12]),
        )
        .await
    }

    async fn decommission_plan_inner(
        &self,
        id: JobId,
        mode: DecommissionMode,
        acknowledged: u64,
    ) -> Result<DecommissionPlan, EngineError> {
        let job = self.view(id)?.record;
        let admin = self.source_admin()?;
        let bucket = job.source_bucket.clone();
        if acknowledged > 0 && mode != DecommissionMode::Delete {
            return Err(EngineError::InvalidRequest(format!(
                "--destroy-uncopied-versions applies to --mode delete only, not {}",
                mode.as_str()
            )));
        }
        // Only the policy modes need the source's current policy (a delete plan does not).
        let current = match mode {
            DecommissionMode::Lockdown | DecommissionMode::Rollback => {
                admin.bucket_security(&bucket).await?.policy
            }
            DecommissionMode::Archive | DecommissionMode::Delete => None,
        };
        let (mut deletes, mut archives) = (Vec::new(), Vec::new());
        let (summary, new_policy, fingerprint) = match mode {
            DecommissionMode::Archive => {
                let copies = self.require_cutover(id).await?;
                let (summary, fp) = self.plan_archive(&job, &mut archives).await?;
                (summary, None, digest(&[&fp, &copies]))
            }
            DecommissionMode::Delete => {
                let copies = self.require_cutover(id).await?;
                let (summary, fp) = self.plan_deletes(&job, &mut deletes, acknowledged).await?;
                let heads = self
                    .inner
                    .journal
                    .counts(id)
                    .get(crate::model::ObjectState::Verified);
                let summary = format!(
                    "{summary}; every copy was checked against S3 for this plan, and the copies of each batch are checked again (one HEAD per key, {heads} in all) immediately before it is deleted: a batch with a copy that no longer holds is refused"
                );
                (summary, None, digest(&[&fp, &copies]))
            }
            DecommissionMode::Lockdown => {
                // A second lockdown would record the lockdown policy as the one to restore,
                // and a rollback would then restore it: the original would be lost.
                if self.last_lockdown(id)?.is_some()
                    || current
                        .as_deref()
                        .is_some_and(|p| p.contains("DualsealLockdown"))
                {
                    return Err(EngineError::FailedPrecondition(format!(
                        "s3://{bucket} is already locked down by dualseal (the policy it had before is kept for rollback); nothing to do. To change the lockdown, roll it back first"
                    )));
                }
                let copies = self.require_cutover(id).await?;
                let glass = &self.inner.settings.decommission.break_glass;
                if glass.is_empty() {
                    return Err(EngineError::FailedPrecondition(
                        "set [decommission] break_glass to the role ARN(s) that keep access to the locked source; a lockdown without a way back is refused".into(),
                    ));
                }
                let Some(daemon_role) = self.inner.settings.daemon_role.clone() else {
                    return Err(EngineError::FailedPrecondition(
                        "set [provision] writer to dualseald's own role ARN: the lockdown keeps that role exactly the bucket-policy permissions a rollback needs, and nothing on objects; without it the daemon would lock itself out of the rollback it offers".into(),
                    ));
                };
                let policy = lockdown_policy(&bucket, glass, &daemon_role).to_string();
                let verified = self
                    .inner
                    .journal
                    .counts(id)
                    .get(crate::model::ObjectState::Verified);
                let summary = format!(
                    "replace the policy of s3://{bucket} with deny-all except {} (dualseald's role {daemon_role} keeps only reading, putting and deleting the bucket policy, for rollback); its {verified} migrated object(s) live on, sealed, in the category buckets; the current policy ({}) is kept in the audit trail for rollback",
                    glass.join(", "),
                    if current.is_some() { "present" } else { "none" }
                );
                let fp = digest(&[
                    "lockdown",
                    &bucket,
                    current.as_deref().unwrap_or("none"),
                    &policy,
                    &copies,
                ]);
                (summary, Some(policy), fp)
            }
            DecommissionMode::Rollback => {
                let Some(previous) = self.last_lockdown(id)? else {
                    return Err(EngineError::FailedPrecondition(format!(
                        "job {id}'s source s3://{bucket} was not locked down by dualseal; nothing to roll back"
                    )));
                };
                let summary = format!(
                    "restore the policy s3://{bucket} had before the lockdown ({})",
                    if previous.is_some() {
                        "a policy"
                    } else {
                        "no policy"
                    }
                );
                let fp = digest(&[
                    "rollback",
                    &bucket,
                    current.as_deref().unwrap_or("none"),
                    previous.as_deref().unwrap_or("none"),
                ]);
                (summary, previous, fp)
            }
        };
        let mut raw = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = hex::encode(raw);
        super::lock(&self.inner.decommissions).insert(
            token.clone(),
            Planned {
                job: id,
                mode,
                fingerprint,
                expires: Instant::now() + TOKEN_LIFETIME,
                new_policy,
                deletes,
                archives,
                acknowledged,
            },
        );
        Ok(DecommissionPlan {
            token,
            mode,
            summary,
            expires_in_secs: TOKEN_LIFETIME.as_secs(),
        })
    }

    /// Executes a planned decommission. The token is used up whatever the outcome.
    ///
    /// # Errors
    /// `FailedPrecondition` for an unknown, used or expired token, or when the state changed
    /// since the plan (plan again); `Store`; `Journal`.
    pub async fn decommission(&self, actor: &str, token: &str) -> Result<String, EngineError> {
        let token_id = digest(&[token])[..12].to_owned();
        let planned = super::lock(&self.inner.decommissions).remove(token);
        let job = planned.as_ref().map_or(0, |p| p.job);
        let run = self.decommission_inner(planned, token_id.clone());
        self.audited(
            actor,
            "decommission",
            job,
            format!("token_id={token_id}"),
            run,
            |d| d.clone(),
        )
        .await
    }

    async fn decommission_inner(
        &self,
        planned: Option<Planned>,
        token_id: String,
    ) -> Result<String, EngineError> {
        let Some(p) = planned else {
            return Err(EngineError::FailedPrecondition(
                "unknown or already used decommission token; plan again with `dualsealctl decommission plan`".into(),
            ));
        };
        if Instant::now() > p.expires {
            return Err(EngineError::FailedPrecondition(
                "the decommission token has expired; plan again".into(),
            ));
        }
        // Plan again now: the token only executes the plan it was issued for.
        let again = self
            .decommission_plan_inner(p.job, p.mode, p.acknowledged)
            .await?;
        let fresh = super::lock(&self.inner.decommissions).remove(&again.token);
        if fresh.map(|f| f.fingerprint) != Some(p.fingerprint.clone()) {
            return Err(EngineError::FailedPrecondition(
                "the source or its policy changed since the plan; plan again".into(),
            ));
        }
        let job = self.view(p.job)?.record;
        let bucket = job.source_bucket;
        let admin = self.source_admin()?;
        match p.mode {
            DecommissionMode::Delete => {
                return self
                    .execute_deletes(p.job, &bucket, &p.deletes, &token_id)
                    .await
            }
            DecommissionMode::Archive => {
                return self
                    .execute_archive(p.job, &bucket, &p.archives, &token_id)
                    .await
            }
            DecommissionMode::Lockdown | DecommissionMode::Rollback => {}
        }
        let current = admin.bucket_security(&bucket).await?.policy;
        let kind = match p.mode {
            DecommissionMode::Lockdown => "decommission_lockdown",
            _ => "decommission_rollback",
        };
        // Recorded (with the policy to restore) before S3 is touched: fail closed.
        let lockdown = p.mode == DecommissionMode::Lockdown;
        let detail = format!(
            "token_id={token_id} bucket={bucket} previous_policy={}",
            current.as_deref().unwrap_or("none")
        );
        self.inner
            .journal
            .record_decommission(
                p.job,
                move |s| {
                    if lockdown {
                        s.lockdown = Some(Lockdown {
                            previous_policy: current,
                        });
                    }
                },
                AuditDraft {
                    job_id: p.job,
                    kind,
                    outcome: "requested",
                    detail,
                    ..Default::default()
                },
            )
            .await?;
        self.inner.journal.flush().await?;
        match &p.new_policy {
            Some(policy) => admin.put_policy(&bucket, policy).await?,
            None => admin.delete_policy(&bucket).await?,
        }
        self.inner
            .journal
            .record_decommission(
                p.job,
                move |s| {
                    if !lockdown {
                        s.lockdown = None;
                    }
                },
                AuditDraft {
                    job_id: p.job,
                    kind,
                    outcome: "ok",
                    detail: format!("token_id={token_id} bucket={bucket}"),
                    ..Default::default()
                },
            )
            .await?;
        self.inner.journal.flush().await?;
        tracing::warn!(job = p.job, %bucket, mode = p.mode.as_str(), "source bucket decommission step done");
        Ok(format!("{} of s3://{bucket} done", p.mode.as_str()))
    }
}
