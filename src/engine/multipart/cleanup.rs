//! Uploads that must not stay open: an attempt that gives up aborts its own, and a cancelled
//! job's leftovers are found (journaled, or listed for large objects) and aborted.

use super::{OnUpload, Settings};
use crate::engine::error::ObjectError;
use crate::engine::migrate::Attempt;
use crate::journal::JournalError;
use crate::store::ObjectStore;

/// Aborts one upload, trying again a few times (a second apart at most) when S3 asks to.
async fn abort_with_retries(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    upload: &str,
) -> Result<(), crate::store::StoreError> {
    const ATTEMPTS: u32 = 4;
    let mut n = 0;
    loop {
        n += 1;
        match store.abort_multipart(bucket, key, upload).await {
            Err(e) if e.is_retryable() && n < ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(n * n))).await;
            }
            other => return other,
        }
    }
}

/// Aborts the multipart uploads a job's attempts left open. A cancel abandons attempts in
/// flight and nothing attempts those objects again, so their parts would stay (and be billed)
/// until a lifecycle rule removes them. Records how many were aborted in the audit trail
/// (`multipart_uploads_aborted`, nothing when none was) and returns it; one S3 refuses is
/// logged and stays recorded.
///
/// # Errors
/// `Journal` (the scan, a record update or the audit event).
pub(in crate::engine) async fn abort_open_uploads(
    journal: std::sync::Arc<crate::journal::Journal>,
    store: &dyn ObjectStore,
    job: crate::model::JobId,
    settings: &Settings,
) -> Result<usize, JournalError> {
    let threshold = settings.threshold;
    // A journaled upload is open for sure; any large object may have one whose id a crash,
    // or a lost answer to a CreateMultipartUpload, kept out of the journal, which only a
    // listing of its key finds (one LIST per large object: they are few, and each is
    // megabytes of parts at stake).
    let open = journal
        .select_objects(job, move |rec| {
            rec.upload_id.is_some() || rec.size >= threshold
        })
        .await?;
    let mut aborted = 0;
    for (key, rec) in open {
        let Some(bucket) = &rec.dest_bucket else {
            continue;
        };
        let dest_key = rec.dest_key.as_deref().unwrap_or(&key);
        let mut ids: Vec<String> = rec.upload_id.iter().cloned().collect();
        match store.list_uploads(bucket, dest_key).await {
            Ok(listed) => ids.extend(
                listed
                    .into_iter()
                    .filter(|id| Some(id) != rec.upload_id.as_ref()),
            ),
            Err(e) => {
                tracing::warn!(job, key, error = %e, "could not list the open multipart uploads of a key; a lifecycle rule must remove any");
            }
        }
        let mut all = true;
        for upload in &ids {
            match abort_with_retries(store, bucket, dest_key, upload).await {
                Ok(()) => aborted += 1,
                Err(e) => {
                    all = false;
                    tracing::warn!(job, key, error = %e, "could not abort an open multipart upload; a lifecycle rule must remove it");
                }
            }
        }
        if all && rec.upload_id.is_some() {
            journal
                .transition(job, &key, crate::model::ObjectEvent::UploadClosed, None)
                .await?;
        }
    }
    if aborted > 0 {
        journal
            .append_audit(crate::journal::AuditDraft {
                job_id: job,
                kind: "multipart_uploads_aborted",
                detail: format!("count={aborted}"),
                ..Default::default()
            })
            .await?;
    }
    Ok(aborted)
}

impl Attempt<'_> {
    /// Aborts an upload after `why` and returns `why`; an abort that fails leaves the upload
    /// recorded, for the next attempt to abort.
    pub(super) async fn abandon(
        &self,
        upload_id: &str,
        on_upload: &OnUpload<'_>,
        why: ObjectError,
    ) -> ObjectError {
        match abort_with_retries(self.store, &self.target.bucket, self.dest_key, upload_id).await {
            Ok(()) => match on_upload(None).await {
                Ok(()) => why,
                Err(e) => e.into(),
            },
            Err(e) => {
                tracing::warn!(bucket = %self.target.bucket, key = self.dest_key, error = %e, "could not abort a multipart upload; the next attempt will");
                why
            }
        }
    }
}
