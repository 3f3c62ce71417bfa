//! The dry run (what a job would do) and re-verification (what a job did still holds).

use std::collections::BTreeMap;

use super::error::{EngineError, ObjectError};
use super::migrate::prove_destination;
use super::{Inner, Scope};
use crate::aws::AwsErrorKind;
use crate::classify::Classification;
use crate::model::{JobRecord, ObjectRecord, ObjectState};

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
    /// The largest of them (key, bytes), largest first.
    pub largest: Vec<(String, u64)>,
    /// Objects per matching rule (`prefix "db/"`).
    pub rules: BTreeMap<String, u64>,
}

/// How many of a category's largest objects the plan names.
const LARGEST: usize = 3;

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
    /// Every object the job would take (listed and not filtered out).
    pub total_objects: u64,
    /// Their bytes.
    pub total_bytes: u64,
    /// Objects listed but left out by the job's filters.
    pub excluded_objects: u64,
    /// Cost and time of migrating what is classified.
    pub estimate: super::Estimate,
    /// What the objects are, when the plan was asked to inspect content.
    pub content: Option<ContentReport>,
    /// Destination bucket settings weaker than provisioning requires, accepted by the
    /// preflight on the operator's `allow_weak_buckets`.
    pub weak_buckets: Vec<String>,
}

/// One content verdict, explained, beside what the key rules say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentVerdict {
    /// Source key.
    pub key: String,
    /// What the content is (`pem_private_key`).
    pub kind: String,
    /// The evidence, secret-free.
    pub why: String,
    /// The category whose `contents` claim that kind, if any.
    pub content_category: Option<String>,
    /// What the key rules say (`db by prefix "db/"`, `unclassified`, `conflict: a, b`).
    pub key_rules: String,
    /// The key rules and the content agree.
    pub agrees: bool,
}

/// What content inspection found over the plan's objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentReport {
    /// Objects whose first bytes were read.
    pub inspected: u64,
    /// Verdicts per kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Content claimed by the category the key rules chose.
    pub agreements: u64,
    /// Content claimed by another category than the key rules chose (or the key rules chose
    /// none): a migration holds these back as conflicts.
    pub disagreements: u64,
    /// Recognised, but no category claims the kind.
    pub unclaimed: u64,
    /// Not recognised as any kind.
    pub unrecognised: u64,
    /// Could not be read (the first error is in `first_error`).
    pub unreadable: u64,
    /// The first read error.
    pub first_error: Option<String>,
    /// Up to the sample limit of the disagreements.
    pub disagreements_sample: Vec<ContentVerdict>,
    /// Up to the sample limit of all verdicts, in key order.
    pub verdicts_sample: Vec<ContentVerdict>,
}

/// An object to inspect, with what its key rules said.
struct ToInspect {
    key: String,
    key_category: Option<usize>,
    key_rules: String,
}

async fn inspect_page(
    inner: &Inner,
    batch: Vec<ToInspect>,
    report: &mut ContentReport,
    sample_limit: usize,
) {
    use futures::StreamExt;
    let bucket = &inner.settings.source_bucket;
    let mut read = futures::stream::iter(batch)
        .map(|item| async move {
            let r = inner
                .store
                .read_head(bucket, &item.key, crate::content::INSPECT_BYTES)
                .await
                // Only the verdict leaves this function: the bytes are dropped (and zeroized)
                // here.
                .map(|bytes| inner.classifier.inspect(&bytes));
            (item, r)
        })
        .buffered(inner.settings.concurrency.max(1));
    while let Some((item, r)) = read.next().await {
        report.inspected += 1;
        let (verdict, owner) = match r {
            Ok(v) => v,
            Err(e) => {
                report.unreadable += 1;
                report.first_error.get_or_insert_with(|| e.to_string());
                continue;
            }
        };
        let Some(verdict) = verdict else {
            report.unrecognised += 1;
            continue;
        };
        *report.by_kind.entry(verdict.kind.to_string()).or_default() += 1;
        let agrees = owner.is_some() && owner == item.key_category;
        let v = ContentVerdict {
            key: item.key,
            kind: verdict.kind.to_string(),
            why: verdict.why,
            content_category: owner.map(|i| inner.classifier.name(i).to_owned()),
            key_rules: item.key_rules,
            agrees,
        };
        match owner {
            None => report.unclaimed += 1,
            Some(_) if agrees => report.agreements += 1,
            Some(_) => {
                report.disagreements += 1;
                if report.disagreements_sample.len() < sample_limit {
                    report.disagreements_sample.push(v.clone());
                }
            }
        }
        if report.verdicts_sample.len() < sample_limit {
            report.verdicts_sample.push(v);
        }
    }
}

pub(super) async fn plan(
    inner: &Inner,
    prefix: &str,
    scope: &Scope,
    sample_limit: usize,
    inspect_content: bool,
    inventory: Option<&str>,
) -> Result<PlanReport, EngineError> {
    let mut lister =
        super::listing::Lister::for_job(inner, &inner.settings.source_bucket, prefix, inventory)
            .await?;
    let mut content = inspect_content.then(ContentReport::default);
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
        let page = lister.page(inner, token.clone()).await?;
        let mut batch = Vec::new();
        for o in page.objects.iter().filter(|o| scope.owns(&o.key)) {
            let class = inner.classifier.classify(&o.key);
            let category = match &class {
                Classification::Matched { category, .. } => {
                    Some(inner.categories[*category].name.as_str())
                }
                _ => None,
            };
            if !scope.admits_key(&o.key) || !scope.admits_category(category) {
                report.excluded_objects += 1;
                continue;
            }
            report.total_objects += 1;
            report.total_bytes += o.size;
            if content.is_some() && o.size > 0 {
                batch.push(ToInspect {
                    key: o.key.clone(),
                    key_category: match &class {
                        Classification::Matched { category, .. } => Some(*category),
                        _ => None,
                    },
                    key_rules: match &class {
                        Classification::Matched { category, rule, .. } => {
                            format!("{} by {rule}", inner.classifier.name(*category))
                        }
                        Classification::Unclassified { .. } => "unclassified".into(),
                        Classification::Conflict(cats) => format!("conflict: {}", cats.join(", ")),
                    },
                });
            }
            match class {
                Classification::Matched { category, rule, .. } => {
                    let c = &mut report.categories[category];
                    c.objects += 1;
                    c.bytes += o.size;
                    *c.rules.entry(rule).or_default() += 1;
                    if c.largest.len() < LARGEST || c.largest.last().is_some_and(|l| l.1 < o.size) {
                        c.largest.push((o.key.clone(), o.size));
                        c.largest.sort_by_key(|l| std::cmp::Reverse(l.1));
                        c.largest.truncate(LARGEST);
                    }
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
        if let Some(c) = content.as_mut() {
            inspect_page(inner, batch, c, sample_limit).await;
        }
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    report.content = content;
    Ok(report)
}

/// Per-category tally of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategoryVerify {
    /// Objects checked.
    pub checked: u64,
    /// Objects that still hold (including `source_gone` ones whose copy is intact).
    pub ok: u64,
    /// Findings by kind: `mismatched`, `missing`, `wrong_key`, `wrong_bucket`,
    /// `source_changed`, `source_gone`, `unreadable`, `category_missing`.
    pub findings: BTreeMap<String, u64>,
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
    /// Per category.
    pub categories: BTreeMap<String, CategoryVerify>,
    /// Objects that do not hold, reason `KIND: detail` (the first [`MAX_LISTED`]).
    pub mismatches: Vec<(String, ObjectRecord)>,
}

/// How many problem objects a report lists by name (all are counted and audited).
pub const MAX_LISTED: usize = 1000;

/// What re-checking one object found.
pub(super) enum Finding {
    /// The copy holds; what S3 and the envelope showed, for the audit trail.
    Ok(String),
    /// The source was deleted; the copy still matches its recorded checksum and opens.
    SourceGone(String),
    Problem(&'static str, String),
    /// S3 or KMS failed in a way that passes (throttled, a 5xx, a timeout): the check says
    /// nothing about the copy and is made again later.
    Transient {
        /// Short cause, for the retries metric (`S3.Throttled`).
        code: String,
        /// What failed.
        error: String,
        /// Whether the service asked us to slow down.
        throttled: bool,
    },
    /// The check could not be made for a reason that is the daemon's, not the object's
    /// (credentials, an unreachable endpoint): the verification parks.
    Systemic(String),
}

/// The report of a verification job, from its objects in the journal (streamed).
pub(super) fn verify_report(inner: &Inner, job: &JobRecord) -> Result<VerifyReport, EngineError> {
    let mut report = VerifyReport {
        job_id: job.id,
        ..Default::default()
    };
    for item in inner.journal.iter_objects(job.id, None) {
        let (key, rec) = item?;
        let finding = match rec.state {
            ObjectState::Verified => rec
                .reason
                .as_deref()
                .and_then(|r| r.split(':').next())
                .map(str::to_owned),
            ObjectState::Failed => Some(
                rec.reason
                    .as_deref()
                    .and_then(|r| r.split(':').next())
                    .unwrap_or("unreadable")
                    .to_owned(),
            ),
            _ => continue,
        };
        let tally = report
            .categories
            .entry(rec.category.clone().unwrap_or_default())
            .or_default();
        report.checked += 1;
        tally.checked += 1;
        if rec.state == ObjectState::Verified {
            report.ok += 1;
            tally.ok += 1;
        }
        if let Some(f) = finding {
            *tally.findings.entry(f).or_default() += 1;
        }
        if rec.state == ObjectState::Failed && report.mismatches.len() < MAX_LISTED {
            report.mismatches.push((key, rec));
        }
    }
    Ok(report)
}

pub(super) async fn check_one(
    inner: &Inner,
    keys: &dyn crate::kms::KeyService,
    source_bucket: &str,
    targets: &[super::Target],
    key: &str,
    rec: &ObjectRecord,
) -> Finding {
    let Some(target) = rec
        .category
        .as_deref()
        .and_then(|c| targets.iter().find(|t| t.category == c))
    else {
        return Finding::Problem(
            "category_missing",
            "its category is no longer configured".into(),
        );
    };
    let dest_key = rec.dest_key.as_deref().unwrap_or(key);
    let sha = rec.ciphertext_sha256.as_deref().filter(|s| !s.is_empty());
    if inner.settings.multipart.streams(rec.size) {
        // A large object, as a stream: the source's plaintext through a MAC under a key of
        // this check only, the copy read back and opened segment by segment.
        use super::multipart::{digest_object, fresh_mac_key, prove_streamed};
        let mac_key = fresh_mac_key();
        let source = match digest_object(inner.store.as_ref(), source_bucket, key, &mac_key).await {
            Ok(s) => s,
            Err(e) => return failed_read(e.into()),
        };
        if let Some((etag, _)) = &source {
            if *etag != rec.source_etag {
                return source_changed(etag, &rec.source_etag);
            }
        }
        let present = source.is_some();
        let proved = prove_streamed(
            inner.store.as_ref(),
            keys,
            target,
            dest_key,
            sha,
            source.map(|(_, mac)| (&*mac_key, mac)),
            None,
        )
        .await
        .map(|p| (present, p));
        return judge(inner, targets, target, key, dest_key, proved).await;
    }
    let source = match inner.store.get(source_bucket, key).await {
        Ok(s) => Some(s),
        Err(e) if e.kind == AwsErrorKind::NotFound => None,
        Err(e) => return failed_read(e.into()),
    };
    if let Some(src) = &source {
        if src.etag != rec.source_etag {
            return source_changed(&src.etag, &rec.source_etag);
        }
    }
    let proved = prove_destination(
        inner.store.as_ref(),
        keys,
        target,
        dest_key,
        sha,
        source.as_ref().map(|s| s.body.as_slice()),
        None,
    )
    .await
    .map(|p| (source.is_some(), p));
    judge(inner, targets, target, key, dest_key, proved).await
}

fn source_changed(now: &str, then: &str) -> Finding {
    Finding::Problem(
        "source_changed",
        format!(
            "the source changed since migration (ETag {now} now, {then} then); run a new job to catch up"
        ),
    )
}

/// Turns a proof's outcome into a finding; a copy that is missing is looked for in the other
/// categories' buckets.
async fn judge(
    inner: &Inner,
    targets: &[super::Target],
    target: &super::Target,
    key: &str,
    dest_key: &str,
    proved: Result<(bool, super::migrate::Proved), ObjectError>,
) -> Finding {
    match proved {
        Ok((present, p)) => {
            let seen = format!(
                "sse={} sse_kms_key={} sse_answered_by={} envelope_kms_key={} envelope=v{}",
                p.server_side.sse,
                p.server_side.kms_key_id,
                p.server_side.answered_by,
                p.envelope_kms_key,
                p.envelope_version
            );
            if present {
                Finding::Ok(seen)
            } else {
                Finding::SourceGone(seen)
            }
        }

        Err(ObjectError::Store(e)) if e.kind == AwsErrorKind::NotFound => {
            // Gone from its bucket: did it land in another category's bucket?
            for other in targets.iter().filter(|t| t.bucket != target.bucket) {
                let found = match inner.store.head(&other.bucket, dest_key).await {
                    Ok(found) => found,
                    // Where the copy went cannot be told now; the whole check is made again.
                    Err(e) if e.is_retryable() || e.is_systemic() => return failed_read(e.into()),
                    Err(_) => None,
                };
                if let Some(head) = found {
                    let src_key = head
                        .metadata
                        .get(&format!("{}source-key", super::migrate::META_PREFIX))
                        .map(|v| {
                            percent_encoding::percent_decode_str(v)
                                .decode_utf8_lossy()
                                .into_owned()
                        });
                    if src_key.as_deref() == Some(key) {
                        return Finding::Problem(
                            "wrong_bucket",
                            format!(
                                "missing from s3://{}/{dest_key} and found in s3://{}/{dest_key}",
                                target.bucket, other.bucket
                            ),
                        );
                    }
                }
            }
            Finding::Problem(
                "missing",
                format!("s3://{}/{dest_key} no longer exists", target.bucket),
            )
        }
        Err(ObjectError::WrongEncryption(d)) => Finding::Problem("wrong_key", d),
        Err(ObjectError::KeyNotReported(d)) => Finding::Problem("key_not_reported", d),
        Err(e @ (ObjectError::Verify(_) | ObjectError::Envelope(_))) => {
            Finding::Problem("mismatched", e.to_string())
        }
        Err(e) => failed_read(e),
    }
}

/// What a failed read of the source or the copy says: nothing about the object when the
/// failure is the daemon's (the job parks) or passes (the check is made again); otherwise the
/// copy is unreadable.
fn failed_read(e: ObjectError) -> Finding {
    if e.is_systemic() {
        Finding::Systemic(e.to_string())
    } else if matches!(e, ObjectError::Store(_) | ObjectError::Kms(_)) && e.is_retryable() {
        Finding::Transient {
            code: e.code(),
            error: e.to_string(),
            throttled: e.is_throttle(),
        }
    } else {
        Finding::Problem("unreadable", e.to_string())
    }
}
