//! The dry run (what a job would do) and re-verification (what a job did still holds).

use futures::StreamExt;

use super::error::{EngineError, ObjectError};
use super::job::{resolve_targets, with_retries, JOB_CALL_ATTEMPTS};
use super::migrate::prove_destination;
use super::Inner;
use crate::classify::Classification;
use crate::journal::{AuditDraft, JobRecord, ObjectRecord, ObjectState};

/// Totals of one category in a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategoryPlan {
    /// Category name.
    pub category: String,
    /// Destination bucket.
    pub bucket: String,
    /// Objects that would go there.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What a job over the source would do.
#[derive(Debug, Clone, Default)]
pub struct PlanReport {
    /// Source bucket.
    pub source_bucket: String,
    /// Per category, in config order.
    pub categories: Vec<CategoryPlan>,
    /// Objects matching no category.
    pub unclassified_objects: u64,
    /// Their bytes.
    pub unclassified_bytes: u64,
    /// Up to the sample limit of their keys.
    pub unclassified_sample: Vec<String>,
    /// Objects matching more than one category.
    pub conflict_objects: u64,
    /// Up to the sample limit of them, with the categories they match.
    pub conflicts_sample: Vec<(String, Vec<String>)>,
    /// Every object listed.
    pub total_objects: u64,
    /// Their bytes.
    pub total_bytes: u64,
}

pub(super) async fn plan(
    inner: &Inner,
    prefix: &str,
    sample_limit: usize,
) -> Result<PlanReport, EngineError> {
    let mut report = PlanReport {
        source_bucket: inner.settings.source_bucket.clone(),
        categories: inner
            .categories
            .iter()
            .map(|c| CategoryPlan {
                category: c.name.clone(),
                bucket: c.bucket.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut token = None;
    loop {
        let page = with_retries(inner, "list source", JOB_CALL_ATTEMPTS, || async {
            Ok(inner
                .store
                .list_page(&inner.settings.source_bucket, prefix, token.clone())
                .await?)
        })
        .await?;
        for o in &page.objects {
            report.total_objects += 1;
            report.total_bytes += o.size;
            match inner.classifier.classify(&o.key) {
                Classification::Matched { category, .. } => {
                    let c = &mut report.categories[category];
                    c.objects += 1;
                    c.bytes += o.size;
                }
                Classification::Unclassified { .. } => {
                    report.unclassified_objects += 1;
                    report.unclassified_bytes += o.size;
                    if report.unclassified_sample.len() < sample_limit {
                        report.unclassified_sample.push(o.key.clone());
                    }
                }
                Classification::Conflict(cats) => {
                    report.conflict_objects += 1;
                    if report.conflicts_sample.len() < sample_limit {
                        report.conflicts_sample.push((o.key.clone(), cats));
                    }
                }
            }
        }
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(report)
}

/// Result of re-verifying a job.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Job verified.
    pub job_id: u64,
    /// Objects checked.
    pub checked: u64,
    /// Objects that still hold.
    pub ok: u64,
    /// Objects that do not, with the reason.
    pub mismatches: Vec<(String, ObjectRecord)>,
}

pub(super) async fn verify(inner: &Inner, job: &JobRecord) -> Result<VerifyReport, EngineError> {
    let targets = resolve_targets(inner, false).await?;
    let verified: Vec<(String, ObjectRecord)> = inner
        .journal
        .iter_objects(job.id, Some(ObjectState::Verified))
        .collect::<Result<_, _>>()?;
    let mut report = VerifyReport {
        job_id: job.id,
        ..Default::default()
    };
    let results: Vec<(String, ObjectRecord, Result<(), ObjectError>)> =
        futures::stream::iter(verified)
            .map(|(key, rec)| {
                let targets = &targets;
                async move {
                    let res = check_one(inner, job, targets, &key, &rec).await;
                    (key, rec, res)
                }
            })
            .buffer_unordered(inner.settings.concurrency)
            .collect()
            .await;
    for (key, mut rec, res) in results {
        report.checked += 1;
        match res {
            Ok(()) => report.ok += 1,
            Err(e) => {
                rec.reason = Some(e.to_string());
                report.mismatches.push((key, rec));
            }
        }
    }
    report.mismatches.sort_by(|a, b| a.0.cmp(&b.0));
    inner.journal.append_audit(AuditDraft {
        job_id: job.id,
        kind: "job_verified",
        detail: format!(
            "checked={} ok={} mismatches={}",
            report.checked,
            report.ok,
            report.mismatches.len()
        ),
        ..Default::default()
    })?;
    inner.journal.flush().await?;
    Ok(report)
}

async fn check_one(
    inner: &Inner,
    job: &JobRecord,
    targets: &[super::Target],
    key: &str,
    rec: &ObjectRecord,
) -> Result<(), ObjectError> {
    let target = rec
        .category
        .as_deref()
        .and_then(|c| targets.iter().find(|t| t.category == c))
        .ok_or_else(|| ObjectError::Verify("its category is no longer configured".into()))?;
    let dest_key = rec.dest_key.as_deref().unwrap_or(key);
    let source = inner.store.get(&job.source_bucket, key).await?;
    if source.etag != rec.source_etag {
        return Err(ObjectError::Verify(format!(
            "the source changed since migration (ETag {} now, {} then); run a new job to catch up",
            source.etag, rec.source_etag
        )));
    }
    let sha = rec.ciphertext_sha256.as_deref().filter(|s| !s.is_empty());
    prove_destination(
        inner.store.as_ref(),
        inner.keys.as_ref(),
        target,
        dest_key,
        sha,
        &source.body,
    )
    .await
}
