//! Rebuilding a lost or damaged journal from what S3 holds: every destination object dualseal
//! wrote carries its source bucket, key and ETag in its metadata, so a fresh journal can be
//! seeded with them as `uploaded`. The rebuilt job then proves each one (read back, decrypt,
//! compare) without writing it again, and migrates whatever is missing.

use super::error::EngineError;
use super::job::listed_record;
use super::migrate::META_PREFIX;
use super::retry::JOB_CALL_ATTEMPTS;
use super::{EngineSettings, Inner};
use crate::journal::AuditDraft;
use crate::model::{JobId, ObjectState};
use crate::store::ListedObject;

/// What a rebuild found.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// The job created to finish the migration.
    pub job_id: JobId,
    /// Destination objects recognised as dualseal's copies of source objects.
    pub recovered: u64,
    /// Destination objects that were not (left alone, and reported by the job as conflicts if
    /// a source object maps onto them).
    pub foreign: u64,
    /// Job ids named in the recovered objects' metadata.
    pub original_jobs: Vec<JobId>,
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

pub(super) async fn rebuild(
    inner: &Inner,
    settings: &EngineSettings,
) -> Result<RebuildReport, EngineError> {
    let mut report = RebuildReport::default();
    let job = inner
        .journal
        .create_job(&settings.source_bucket, &settings.source_prefix)
        .await?;
    report.job_id = job.id;
    for c in &inner.categories {
        let mut token = None;
        loop {
            let page = inner
                .retry
                .list_page(
                    &*inner.store,
                    "list destination",
                    &c.bucket,
                    "",
                    token.clone(),
                )
                .await?;
            let mut records = Vec::new();
            for o in &page.objects {
                let head = inner
                    .retry
                    .run("head destination", JOB_CALL_ATTEMPTS, || async {
                        inner
                            .store
                            .head(&c.bucket, &o.key)
                            .await
                            .map_err(EngineError::from)
                    })
                    .await?;
                let Some(head) = head else { continue };
                let meta = |k: &str| {
                    head.metadata
                        .get(&format!("{META_PREFIX}{k}"))
                        .map(|v| decode(v))
                };
                let (Some(bucket), Some(key), Some(etag)) = (
                    meta("source-bucket"),
                    meta("source-key"),
                    meta("source-etag"),
                ) else {
                    report.foreign += 1;
                    continue;
                };
                if bucket != settings.source_bucket || !key.starts_with(&settings.source_prefix) {
                    report.foreign += 1;
                    continue;
                }
                // Another shard's copy belongs in that shard's journal.
                if settings.shard.is_some_and(|s| !s.owns(&key)) {
                    continue;
                }
                if let Some(j) = meta("job").and_then(|j| j.parse().ok()) {
                    if !report.original_jobs.contains(&j) {
                        report.original_jobs.push(j);
                    }
                }
                // Classify as a fresh listing would, then record the copy found.
                let mut r = listed_record(
                    inner,
                    &ListedObject {
                        key: key.clone(),
                        size: 0,
                        etag: etag.clone(),
                    },
                );
                if r.state != ObjectState::Discovered
                    || r.dest_bucket.as_deref() != Some(&c.bucket)
                    || r.dest_key.as_deref() != Some(&o.key)
                {
                    // The rules changed since it was written: let the job decide afresh.
                    report.foreign += 1;
                    continue;
                }
                r.state = ObjectState::Uploaded;
                r.dest_etag = Some(head.etag.clone());
                records.push((key, r));
                report.recovered += 1;
            }
            inner
                .journal
                .record_page(job.id, records, Some(String::new()))
                .await?;
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
    }
    inner
        .journal
        .update_job(job.id, |j| {
            j.listing_token = None;
            j.listing_complete = false;
        })
        .await?;
    report.original_jobs.sort_unstable();
    inner.journal.append_audit(AuditDraft {
        job_id: job.id,
        kind: "journal_rebuilt",
        detail: format!(
            "recovered={} foreign={} original_jobs={:?}; every recovered object is proved again before it counts as verified",
            report.recovered, report.foreign, report.original_jobs
        ),
        ..Default::default()
    }).await?;
    inner.journal.flush().await?;
    inner.journal.write_high_water_mark().await?;
    Ok(report)
}
