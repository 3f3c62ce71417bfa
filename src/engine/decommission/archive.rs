//! `--mode archive`: before anything is deleted, a copy of every object the job verified goes
//! to a backup bucket under Object Lock retention, sealed exactly as a migration seals it
//! (envelope under a fresh data key from the category's KMS key, DSSE-KMS under the same key,
//! bound to its archive location). The source is read, never modified.
//!
//! Archive copies live at `s3://<archive>/<source bucket>/<source key>`, so one archive
//! bucket can hold several sources. Running the same archive again writes nothing twice: each
//! copy is conditional, and a copy dualseal already made of the same source version is proved
//! by reading it back and kept.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::super::migrate::{Attempt, Outcome, Proof, WriteKind};
use super::super::retry::JOB_CALL_ATTEMPTS;
use super::super::{Engine, EngineError, Target};
use crate::journal::AuditDraft;
use crate::model::{JobId, JobRecord, ObjectState, VerifyMode};
use crate::store::Retention;
use crate::store::RetentionMode;

/// One object the archive copies.
#[derive(Debug, Clone)]
pub(in crate::engine) struct ArchiveItem {
    key: String,
    category: String,
}

/// Where an object's archive copy lives.
pub fn archive_key(source_bucket: &str, source_key: &str) -> String {
    format!("{source_bucket}/{source_key}")
}

fn mode_name(mode: RetentionMode) -> &'static str {
    match mode {
        RetentionMode::Governance => "governance",
        RetentionMode::Compliance => "compliance",
    }
}

impl Engine {
    fn archive_bucket(&self) -> Result<&str, EngineError> {
        self.inner
            .settings
            .decommission
            .archive_bucket
            .as_deref()
            .ok_or_else(|| {
                EngineError::FailedPrecondition(
                    "set [decommission] archive_bucket to a bucket with Object Lock enabled; an archive needs somewhere to go".into(),
                )
            })
    }

    /// Every object job `job` verified, and a fingerprint of them (key and source ETag) and of
    /// the archive settings, so that a token executes only the archive it was planned for.
    pub(in crate::engine) async fn plan_archive(
        &self,
        job: &JobRecord,
        items: &mut Vec<ArchiveItem>,
    ) -> Result<(String, String), EngineError> {
        let bucket = self.archive_bucket()?;
        let dc = &self.inner.settings.decommission;
        let admin = self.source_admin()?;
        if !admin.bucket_exists(bucket).await? {
            return Err(EngineError::FailedPrecondition(format!(
                "the archive bucket s3://{bucket} does not exist; create it with Object Lock enabled (aws s3api create-bucket --bucket {bucket} --object-lock-enabled-for-bucket) and plan again"
            )));
        }
        if !admin.object_lock_enabled(bucket).await? {
            return Err(EngineError::FailedPrecondition(format!(
                "the archive bucket s3://{bucket} does not have Object Lock enabled, so its copies could not be retained; enable it (aws s3api put-object-lock-configuration) and plan again"
            )));
        }
        let mut h = Sha256::new();
        for part in [
            "archive",
            bucket,
            &dc.archive_retention_days.to_string(),
            mode_name(dc.archive_retention_mode),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let mut bytes = 0u64;
        for entry in self
            .inner
            .journal
            .iter_objects(job.id, Some(ObjectState::Verified))
        {
            let (key, rec) = entry?;
            let Some(category) = rec.category else {
                continue;
            };
            for part in [&key, &rec.source_etag] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            bytes += rec.size;
            items.push(ArchiveItem { key, category });
        }
        let days = dc.archive_retention_days;
        let until = SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400);
        let summary = format!(
            "copy {} verified object(s) ({bytes} bytes) of s3://{src} to s3://{bucket}/{src}/<key>, each sealed again for its archive location under its category's KMS key (envelope and DSSE-KMS) and retained under Object Lock in {} mode for {days} day(s), until about {}; objects this job did not verify are not archived; the source is not modified",
            items.len(),
            mode_name(dc.archive_retention_mode),
            humantime::format_rfc3339_seconds(until),
            src = job.source_bucket,
        );
        Ok((summary, hex::encode(h.finalize())))
    }

    /// Copies every planned object to the archive bucket, auditing each (ok or failed) with
    /// the token's id. A failed object does not stop the others; the result counts them.
    pub(in crate::engine) async fn execute_archive(
        &self,
        id: JobId,
        source_bucket: &str,
        items: &[ArchiveItem],
        token_id: &str,
    ) -> Result<String, EngineError> {
        let bucket = self.archive_bucket()?.to_owned();
        let dc = &self.inner.settings.decommission;
        let retention = Retention {
            mode: dc.archive_retention_mode,
            until: SystemTime::now()
                + Duration::from_secs(u64::from(dc.archive_retention_days) * 86_400),
        };
        let targets = self.inner.resolve_targets(true).await?;
        self.inner
            .journal
            .append_audit(AuditDraft {
                job_id: id,
                kind: "decommission_archive",
                outcome: "requested",
                detail: format!(
                "token_id={token_id} archive_bucket={bucket} objects={} mode={} retain_until={}",
                items.len(),
                mode_name(retention.mode),
                humantime::format_rfc3339_seconds(retention.until)
            ),
                ..Default::default()
            })
            .await?;
        self.inner.journal.flush().await?;
        let (targets, bucket_ref) = (&targets, &bucket);
        let results = futures::stream::iter(items.iter().cloned())
            .map(move |item| {
                let target = targets
                    .iter()
                    .find(|t| t.category == item.category)
                    .map(|t| Target {
                        bucket: bucket_ref.clone(),
                        ..t.clone()
                    });
                async move {
                    let r = match target {
                        Some(t) => {
                            self.archive_one(id, source_bucket, &item, &t, retention)
                                .await
                        }
                        None => Err(format!(
                            "category {:?} is no longer in the config",
                            item.category
                        )),
                    };
                    (item, r)
                }
            })
            .buffer_unordered(self.inner.settings.concurrency.max(1));
        futures::pin_mut!(results);
        let (mut written, mut kept, mut failed) = (0u64, 0u64, Vec::new());
        while let Some((item, result)) = results.next().await {
            let dest = archive_key(source_bucket, &item.key);
            let (outcome, detail) = match &result {
                Ok(p) => (
                    "ok",
                    format!(
                        "token_id={token_id} how={} dest_etag={} s3_request_id={} sse={} sse_kms_key={} sse_answered_by={} envelope_kms_key={}",
                        p.how.as_str(),
                        p.dest_etag,
                        p.put_request_id.as_deref().unwrap_or("-"),
                        p.server_side.sse,
                        p.server_side.kms_key_id,
                        p.server_side.answered_by,
                        p.kms_key_arn,
                    ),
                ),
                Err(why) => ("failed", format!("token_id={token_id} error={why}")),
            };
            match result {
                Ok(p) if p.how == WriteKind::Written => written += 1,
                Ok(_) => kept += 1,
                Err(why) => failed.push(format!("{}: {why}", item.key)),
            }
            self.inner
                .journal
                .append_audit(AuditDraft {
                    job_id: id,
                    kind: "archived_at_decommission",
                    outcome,
                    source_key: item.key.clone(),
                    category: item.category.clone(),
                    dest_bucket: bucket.clone(),
                    dest_key: dest,
                    detail,
                    ..Default::default()
                })
                .await?;
        }
        let summary = format!(
            "archive to s3://{bucket} done: {written} object(s) archived, {kept} already archived and proved, {} failed{}",
            failed.len(),
            failed
                .first()
                .map_or(String::new(), |f| format!(" (first: {f}); plan and run the archive again to retry them"))
        );
        let complete = failed.is_empty();
        self.inner
            .journal
            .record_decommission(
                id,
                move |s| s.archived |= complete,
                AuditDraft {
                    job_id: id,
                    kind: "decommission_archive",
                    outcome: if complete { "ok" } else { "failed" },
                    detail: format!("token_id={token_id} {summary}"),
                    ..Default::default()
                },
            )
            .await?;
        self.inner.journal.flush().await?;
        tracing::warn!(job = id, %bucket, written, kept, failed = failed.len(), "source archived at decommission");
        Ok(summary)
    }

    /// One archive copy, retried as a migration would be. `Ok` is its proof (how the archive
    /// came to hold it, what S3 answered); `Err` is a secret-free reason.
    async fn archive_one(
        &self,
        id: JobId,
        source_bucket: &str,
        item: &ArchiveItem,
        target: &Target,
        retention: Retention,
    ) -> Result<Proof, String> {
        let prior = match self.inner.journal.get_object(id, &item.key) {
            Ok(Some(mut rec)) => {
                // The journal's record is of the migration, not of the archive copy: neither its
                // state nor an upload it may name concerns the archive.
                rec.state = ObjectState::Discovered;
                rec.upload_id = None;
                rec
            }
            Ok(None) => return Err("no longer in the journal".into()),
            Err(e) => return Err(e.to_string()),
        };
        let dest_key = archive_key(source_bucket, &item.key);
        let attempt = Attempt {
            store: self.inner.store.as_ref(),
            keys: self.inner.keys.as_ref(),
            job: id,
            source_bucket,
            source_key: &item.key,
            target,
            dest_key: &dest_key,
            segment_size: self.inner.settings.segment_size,
            verify: VerifyMode::Full,
            prior: &prior,
            retention: Some(retention),
            // What was verified in the migration is archived as it is.
            content_rules: None,
            data_keys: &self.inner.data_keys,
            // A re-run finds most copies in place: a HEAD and a read-back prove them without a
            // new data key or a refused write.
            head_first: true,
        };
        let multipart = self.inner.settings.multipart;
        // Large objects stream as they did in the migration. An archive copy's upload is not
        // journaled: an attempt that fails aborts it; one cut short by a crash is left to the
        // bucket's AbortIncompleteMultipartUpload rule.
        let run = || async {
            if multipart.streams(prior.size) {
                attempt
                    .run_streamed(
                        &multipart,
                        &|_| Box::pin(async { Ok(()) }),
                        async |_| Ok(()),
                    )
                    .await
            } else {
                attempt.run(async |_| Ok(())).await
            }
        };
        match self
            .inner
            .retry
            .run("archive object", JOB_CALL_ATTEMPTS, run)
            .await
        {
            Ok(Outcome::Verified(proof)) => Ok(proof),
            Ok(Outcome::Conflict(why)) => Err(why),
            Err(e) => Err(e.to_string()),
        }
    }
}
