//! Deleting the source's versions at decommission: the plan of what would go (only what this
//! job verified, with retention and legal holds reported, never bypassed), and its execution,
//! which proves each copy again against S3 before the batch that deletes its source.

use super::digest;
use crate::engine::error::EngineError;
use crate::engine::Engine;
use crate::journal::AuditDraft;
use crate::model::JobId;

/// Versions deleted per DeleteObjects call (S3's limit).
const DELETE_BATCH: usize = 1000;

impl Engine {
    /// Every version and delete marker of the keys job `job` verified; the rest is kept.
    pub(super) async fn plan_deletes(
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

    pub(super) async fn execute_deletes(
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
                crate::engine::cutover::recheck_keys(&self.inner, &targets, id, &keys).await?;
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
}
