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

pub use archive::archive_key;

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

/// What a rollback and the audit need on a locked-down source, and all dualseald keeps there.
const POLICY_ACTIONS: [&str; 3] = [
    "s3:GetBucketPolicy",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
];

/// The policy a lockdown puts on the source: every action on the bucket and its objects is
/// denied to every principal but the break-glass ones, except that dualseald's own role keeps
/// the three bucket-policy actions a rollback needs (nothing on objects). Explicit denies win
/// over any allow, so this holds whatever IAM grants.
pub fn lockdown_policy(
    bucket: &str,
    break_glass: &[String],
    daemon_role: &str,
) -> serde_json::Value {
    let mut keepers: Vec<&str> = break_glass.iter().map(String::as_str).collect();
    keepers.push(daemon_role);
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DualsealLockdownObjects",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": format!("arn:aws:s3:::{bucket}/*"),
                "Condition": {"StringNotEquals": {"aws:PrincipalArn": break_glass}},
            },
            {
                "Sid": "DualsealLockdownBucket",
                "Effect": "Deny",
                "Principal": "*",
                "NotAction": POLICY_ACTIONS,
                "Resource": format!("arn:aws:s3:::{bucket}"),
                "Condition": {"StringNotEquals": {"aws:PrincipalArn": break_glass}},
            },
            {
                "Sid": "DualsealLockdownPolicyForRollback",
                "Effect": "Deny",
                "Principal": "*",
                "Action": POLICY_ACTIONS,
                "Resource": format!("arn:aws:s3:::{bucket}"),
                "Condition": {"StringNotEquals": {"aws:PrincipalArn": keepers}},
            },
        ],
    })
}

/// Versions deleted per DeleteObjects call (S3's limit).
const DELETE_BATCH: usize = 1000;

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

    /// Every version and delete marker of the keys job `job` verified; the rest is kept.
    async fn plan_deletes(
        &self,
        job: &crate::model::JobRecord,
        deletes: &mut Vec<(String, String)>,
        acknowledged: u64,
    ) -> Result<(String, String), EngineError> {
        let admin = self.source_admin()?;
        let bucket = &job.source_bucket;
        let locking = admin.object_lock_enabled(bucket).await?;
        let (mut kept, mut keys) = (0u64, std::collections::BTreeSet::new());
        let mut blocked = Vec::new();
        // Data versions of verified keys other than the one the job copied: a key's history,
        // which exists nowhere else once deleted (archive copies current versions only).
        let mut uncopied: std::collections::BTreeMap<String, u64> = Default::default();
        let mut marker = None;
        loop {
            let page = admin
                .list_versions(bucket, &job.prefix, marker.take())
                .await?;
            for v in page.versions {
                let record = self
                    .inner
                    .journal
                    .get_object(job.id, &v.key)?
                    .filter(|r| r.state == crate::model::ObjectState::Verified);
                let Some(record) = record else {
                    kept += 1;
                    continue;
                };
                let copied = match &record.source_version {
                    Some(copied) => *copied == v.version_id,
                    None => v.is_latest,
                };
                if !v.delete_marker && !copied {
                    *uncopied
                        .entry(record.category.clone().unwrap_or_default())
                        .or_default() += 1;
                }
                if locking && !v.delete_marker {
                    let (until, hold) = admin.lock_state(bucket, &v.key, &v.version_id).await?;
                    let why = match (hold, until) {
                        (true, _) => Some("legal hold".to_owned()),
                        (false, Some(d)) => Some(format!("blocked until {d}")),
                        (false, None) => None,
                    };
                    if let Some(why) = why {
                        blocked.push(format!("{} (version {}): {why}", v.key, v.version_id));
                        continue;
                    }
                }
                keys.insert(v.key.clone());
                deletes.push((v.key, v.version_id));
            }
            match page.next {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        let summary = format!(
            "delete {} version(s) and delete marker(s) of {} verified key(s) from s3://{bucket}; keep {kept} version(s) of keys this job did not verify (unclassified, conflicting, failed or new); {} version(s) under Object Lock are kept{}",
            deletes.len(),
            keys.len(),
            blocked.len(),
            if blocked.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}{}",
                    blocked.iter().take(5).cloned().collect::<Vec<_>>().join("; "),
                    if blocked.len() > 5 { "; ..." } else { "" }
                )
            }
        );
        let history: u64 = uncopied.values().sum();
        if history != acknowledged {
            let per: Vec<String> = uncopied.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            return Err(EngineError::FailedPrecondition(if history == 0 {
                format!(
                    "this delete destroys no uncopied version; plan it without --destroy-uncopied-versions (it acknowledged {acknowledged})"
                )
            } else {
                format!(
                    "this delete would destroy {history} noncurrent version(s) of verified keys that have no current copy (never copied, or copied and since replaced by a newer version's copy) ({}): a secret's earlier values, which a rotation in progress or an auditor may need, may then exist nowhere. Keep them (delete is all or nothing per key), or acknowledge exactly this count with `--destroy-uncopied-versions {history}` and plan again",
                    per.join(", ")
                )
            }));
        }
        let summary = if history == 0 {
            format!("{summary}; every deleted data version was copied")
        } else {
            format!(
                "{summary}; {history} noncurrent version(s) without a current copy are destroyed, as acknowledged"
            )
        };
        let archived = self.inner.journal.decommission(job.id)?.archived;
        let summary = if archived {
            format!("{summary}; an archive of this job's verified objects was made")
        } else {
            format!("{summary}; no archive was made (`--mode archive` first keeps a retained, sealed copy)")
        };
        let mut parts: Vec<&str> = vec!["delete", bucket];
        for (k, v) in deletes.iter() {
            parts.push(k);
            parts.push(v);
        }
        Ok((summary, digest(&parts)))
    }

    async fn execute_deletes(
        &self,
        id: JobId,
        bucket: &str,
        deletes: &[(String, String)],
        token_id: &str,
    ) -> Result<String, EngineError> {
        let admin = self.source_admin()?;
        let targets = self.inner.resolve_targets(false).await?;
        let mut failed = Vec::new();
        let mut deleted = 0usize;
        for chunk in deletes.chunks(DELETE_BATCH) {
            // No delete on a proof taken earlier: the copies of exactly these keys are checked
            // against S3 now, and one that does not hold stops the run before this batch.
            let mut keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            keys.dedup();
            let (bad, good) =
                super::cutover::recheck_keys(&self.inner, &targets, id, &keys).await?;
            if !bad.is_empty() {
                let named: Vec<&str> = bad.iter().take(10).map(String::as_str).collect();
                let why = format!(
                    "{} cop(ies) no longer hold: {}{}",
                    bad.len(),
                    named.join("; "),
                    if bad.len() > named.len() { "; ..." } else { "" }
                );
                self.inner.journal.append_audit(AuditDraft {
                    job_id: id,
                    kind: "decommission_delete",
                    outcome: "refused",
                    detail: format!(
                        "token_id={token_id} bucket={bucket} batch={} deleted_before={deleted} {why}",
                        chunk.len()
                    ),
                    ..Default::default()
                }).await?;
                self.inner.journal.flush().await?;
                tracing::error!(
                    job = id,
                    bucket,
                    deleted,
                    "decommission delete refused: {why}"
                );
                return Err(EngineError::FailedPrecondition(format!(
                    "refused to delete the next {} source version(s) of s3://{bucket}: {why}. {deleted} version(s) were deleted before this batch; their copies held when they were deleted. Restore the copies (`dualsealctl sync {id}`), check with `dualsealctl cutover-check {id}` and plan again",
                    chunk.len()
                )));
            }
            let copy_etag: std::collections::HashMap<&str, &str> =
                good.iter().map(|(k, e)| (k.as_str(), e.as_str())).collect();
            // Each version is recorded, with the copy S3 showed just now, before S3 is asked
            // to delete it: fail closed.
            for (key, version) in chunk {
                self.inner
                    .journal
                    .append_audit(AuditDraft {
                        job_id: id,
                        kind: "deleted_at_decommission",
                        outcome: "requested",
                        source_key: key.clone(),
                        detail: format!(
                            "token_id={token_id} bucket={bucket} version={version} copy_etag={}",
                            copy_etag.get(key.as_str()).copied().unwrap_or("-")
                        ),
                        ..Default::default()
                    })
                    .await?;
            }
            self.inner.journal.flush().await?;
            let refused = admin.delete_versions(bucket, chunk).await?;
            for (key, version, why) in &refused {
                self.inner
                    .journal
                    .append_audit(AuditDraft {
                        job_id: id,
                        kind: "deleted_at_decommission",
                        outcome: "failed",
                        source_key: key.clone(),
                        detail: format!("token_id={token_id} version={version} error={why}"),
                        ..Default::default()
                    })
                    .await?;
            }
            deleted += chunk.len() - refused.len();
            failed.extend(refused);
            self.inner
                .journal
                .append_audit(AuditDraft {
                    job_id: id,
                    kind: "decommission_delete",
                    outcome: "ok",
                    detail: format!(
                        "token_id={token_id} bucket={bucket} batch={} refused={}",
                        chunk.len(),
                        failed.len()
                    ),
                    ..Default::default()
                })
                .await?;
            self.inner.journal.flush().await?;
        }
        tracing::warn!(
            job = id,
            bucket,
            deleted = deletes.len() - failed.len(),
            refused = failed.len(),
            "source versions deleted at decommission"
        );
        Ok(format!(
            "delete of s3://{bucket} done: {} version(s) deleted, {} refused by S3{}",
            deletes.len() - failed.len(),
            failed.len(),
            failed.first().map_or(String::new(), |(k, v, why)| format!(
                " (first: {k} {v}: {why})"
            ))
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the lockdown denies `action` on `resource` to `principal`, evaluating its
    /// denies as IAM would (an explicit deny wins; everything is otherwise allowed).
    fn denied(policy: &serde_json::Value, principal: &str, action: &str, resource: &str) -> bool {
        policy["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .any(|st| {
                let listed = |v: &serde_json::Value| match v {
                    serde_json::Value::String(s) => s == "s3:*" || s == action,
                    serde_json::Value::Array(a) => a.iter().any(|x| x == action),
                    _ => false,
                };
                let acts = match (st.get("Action"), st.get("NotAction")) {
                    (Some(a), _) => listed(a),
                    (None, Some(n)) => !listed(n),
                    _ => false,
                };
                let exempt = st["Condition"]["StringNotEquals"]["aws:PrincipalArn"]
                    .as_array()
                    .expect("principals")
                    .iter()
                    .any(|p| p == principal);
                st["Resource"] == resource && acts && !exempt
            })
    }

    #[test]
    fn lockdown_keeps_the_daemon_exactly_what_rollback_needs() {
        let glass = vec!["arn:aws:iam::1:role/glass".to_owned()];
        let (daemon, app) = ("arn:aws:iam::1:role/dualseald", "arn:aws:iam::1:role/app");
        let p = lockdown_policy("src", &glass, daemon);
        let (bucket, objects) = ("arn:aws:s3:::src", "arn:aws:s3:::src/*");
        for action in POLICY_ACTIONS {
            assert!(!denied(&p, daemon, action, bucket), "{action}");
            assert!(!denied(&p, &glass[0], action, bucket), "{action}");
            assert!(denied(&p, app, action, bucket), "{action}");
        }
        for action in ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"] {
            assert!(denied(&p, daemon, action, objects), "{action}");
            assert!(denied(&p, app, action, objects), "{action}");
            assert!(!denied(&p, &glass[0], action, objects), "{action}");
        }
        for action in ["s3:ListBucket", "s3:PutBucketVersioning", "s3:DeleteBucket"] {
            assert!(denied(&p, daemon, action, bucket), "{action}");
            assert!(!denied(&p, &glass[0], action, bucket), "{action}");
        }
    }
}
