//! Before switching applications over: the location map of a job's migrated objects, and the
//! cutover check — is every object verified, has the source changed since, are the destination
//! buckets as hardened as provisioning requires.

use base64::Engine as _;
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};

use super::error::EngineError;
use super::migrate::{check_server_side, meta_value, META_PREFIX};
use super::{Engine, Inner, Scope, Target};
use crate::model::{JobId, JobKind, JobState, ObjectRecord, ObjectState};

/// How many copies a re-check names in a report or an error; the count covers the rest.
const NAMED_COPIES: usize = 10;

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
    /// Verified copies checked against S3 (HEAD) by this check.
    pub copies_checked: u64,
    /// Verified copies that do not hold now (missing, changed, wrongly encrypted, or that
    /// could not be checked), with the reason; at most [`NAMED_COPIES`] are named.
    pub copies_failed: Vec<String>,
    /// How many copies do not hold now.
    pub copies_failed_count: u64,
    /// SHA-256 over every checked copy's key and ETag as S3 answered, in key order: a
    /// decommission token is bound to the copies' state as well as the source's.
    pub copies_fingerprint: String,
}

/// One verified copy, checked against S3 now: it exists, it is the copy dualseal wrote and
/// verified (ETag and, for a single PUT, SHA-256 as recorded then; its metadata names this
/// source key), and S3 reports DSSE-KMS under the category's key. `Ok` is the ETag S3
/// answered; `Err` the reason, naming the copy. Fails closed: a copy that cannot be checked
/// does not hold.
pub(super) async fn recheck_copy(
    inner: &Inner,
    targets: &[Target],
    key: &str,
    rec: &ObjectRecord,
) -> Result<String, String> {
    let category = rec.category.as_deref().unwrap_or_default();
    let Some(target) = targets.iter().find(|t| t.category == category) else {
        return Err(format!(
            "{key}: category {category:?} is no longer configured, so its copy cannot be checked"
        ));
    };
    if let Some(why) = &target.unusable {
        return Err(format!("{key}: {why}"));
    }
    let bucket = rec
        .dest_bucket
        .clone()
        .unwrap_or_else(|| target.bucket.clone());
    let dest_key = rec.dest_key.as_deref().unwrap_or(key);
    let at = format!("s3://{bucket}/{dest_key}");
    let head = match inner.store.head(&bucket, dest_key).await {
        Ok(Some(h)) => h,
        Ok(None) => return Err(format!("{key}: its copy {at} no longer exists")),
        Err(e) => return Err(format!("{key}: its copy {at} could not be checked: {e}")),
    };
    let target = Target {
        bucket: bucket.clone(),
        ..target.clone()
    };
    check_server_side(
        head.sse.as_deref(),
        head.sse_kms_key_id.as_deref(),
        &target,
        "HeadObject",
    )
    .map_err(|e| format!("{key}: its copy {at}: {e}"))?;
    let meta = |k: &str| head.metadata.get(&format!("{META_PREFIX}{k}"));
    if meta("source-key") != Some(&meta_value(key)) {
        return Err(format!(
            "{key}: {at} no longer holds dualseal's copy of this key (its metadata names another source)"
        ));
    }
    match rec.dest_etag.as_deref() {
        Some(then) if then == head.etag => {}
        Some(then) => {
            return Err(format!(
                "{key}: its copy {at} changed since it was verified (ETag {} now, {then} then)",
                head.etag
            ))
        }
        None => {
            return Err(format!(
                "{key}: the journal recorded no ETag for its copy {at}"
            ))
        }
    }
    let recorded = rec
        .ciphertext_sha256
        .as_deref()
        .and_then(|h| hex::decode(h).ok());
    if let (Some(sha), Some(now)) = (recorded, head.checksum_sha256_b64.as_deref()) {
        // A multipart copy's checksum is composite (the digest of its parts' digests), not
        // the envelope's: its ETag (`"…-N"`) says so, whatever the checksum's own form.
        let multipart = head.etag.contains('-') || now.contains('-');
        if !multipart && base64::engine::general_purpose::STANDARD.encode(sha) != now {
            return Err(format!(
                "{key}: its copy {at} has another SHA-256 than the envelope verified"
            ));
        }
    }
    Ok(head.etag)
}

/// Re-checks, concurrently, the copies of `keys` that job `id` verified; the reasons of those
/// that do not hold (a key not verified by the job does not hold either).
///
/// # Errors
/// `Journal`.
pub(super) async fn recheck_keys(
    inner: &Inner,
    targets: &[Target],
    id: JobId,
    keys: &[&str],
) -> Result<(Vec<String>, Vec<(String, String)>), EngineError> {
    let mut recs = Vec::with_capacity(keys.len());
    for key in keys {
        recs.push(((*key).to_owned(), inner.journal.get_object(id, key)?));
    }
    let mut checks = futures::stream::iter(recs)
        .map(|(key, rec)| async move {
            let r = match &rec {
                Some(r) if r.state == ObjectState::Verified => {
                    recheck_copy(inner, targets, &key, r).await
                }
                _ => Err(format!("{key}: not verified by job {id}")),
            };
            (key, r)
        })
        .buffered(inner.settings.concurrency.max(1));
    let (mut bad, mut good) = (Vec::new(), Vec::new());
    while let Some((key, r)) = checks.next().await {
        match r {
            Ok(etag) => good.push((key, etag)),
            Err(why) => bad.push(why),
        }
    }
    Ok((bad, good))
}

impl Engine {
    fn migration_job(&self, id: JobId) -> Result<crate::model::JobRecord, EngineError> {
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
        let targets = self.inner.resolve_targets(false).await?;
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
        self.check_copies(id, &mut r).await?;
        r.checks.push(Check {
            name: "verified copies present and sealed",
            ok: r.copies_failed_count == 0,
            detail: if r.copies_failed_count == 0 {
                format!(
                    "{} cop(ies) checked against S3 now (one HEAD each): all exist, unchanged since verification, DSSE-KMS under their category's key",
                    r.copies_checked
                )
            } else {
                format!(
                    "{} of {} cop(ies) checked against S3 now do not hold: {}{}; nothing may be decommissioned until they do. A missing copy is written again by a new job over its keys; a changed or re-encrypted one must be moved away first (dualseal never writes over an object that is not its verified copy), then a new job migrates it",
                    r.copies_failed_count,
                    r.copies_checked,
                    r.copies_failed.join("; "),
                    if r.copies_failed_count as usize > r.copies_failed.len() { "; ..." } else { "" }
                )
            },
            blocking: true,
        });
        self.diff_source(&job, &mut r).await?;
        // After this job's own delete decommission, verified keys gone from the source are
        // what was asked for, not a change to worry about.
        let decommissioned = self
            .inner
            .journal
            .iter_audit(Some(id))
            .any(|e| e.is_ok_and(|e| e.kind == "decommission_delete" && e.outcome == "ok"));
        let deleted_blocks = r.deleted_in_source > 0 && !decommissioned;
        r.checks.push(Check {
            name: "source unchanged since migration",
            ok: r.new_in_source + r.changed_in_source == 0 && !deleted_blocks,
            detail: format!(
                "{} new, {} changed, {} deleted in the source since the job{}",
                r.new_in_source,
                r.changed_in_source,
                r.deleted_in_source,
                if r.new_in_source + r.changed_in_source > 0 {
                    format!("; `dualsealctl sync {}` migrates them", job.id)
                } else if deleted_blocks {
                    "; restore them, or accept that their copies outlive them".to_owned()
                } else if r.deleted_in_source > 0 {
                    " (deleted by this job's decommission, as planned)".to_owned()
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
        // The latest verification of this job decides: one that found problems is not
        // "not yet" but a reason to stop.
        let last_verify = self
            .inner
            .journal
            .list_jobs()?
            .into_iter()
            .filter(|j| j.kind == (JobKind::Verify { of: id }) && !j.state.is_active())
            .max_by_key(|j| j.id);
        r.checks.push(match last_verify {
            Some(v) if v.state == JobState::Succeeded => Check {
                name: "re-verified",
                ok: true,
                detail: format!("verification job {} re-read both buckets and passed", v.id),
                blocking: false,
            },
            Some(v) => Check {
                name: "re-verified",
                ok: false,
                detail: format!(
                    "the latest verification job {} ended {}; `dualsealctl verify-report {}` names what it found; fix it and verify again",
                    v.id, v.state, v.id
                ),
                blocking: true,
            },
            None => Check {
                name: "re-verified",
                ok: false,
                detail: format!("not yet: `dualsealctl verify {id}` re-reads both buckets"),
                blocking: false,
            },
        });
        r.ready = r.checks.iter().all(|c| c.ok || !c.blocking);
        Ok(r)
    }

    /// HEADs every copy the job verified and compares it with what was verified.
    async fn check_copies(&self, id: JobId, r: &mut CutoverReport) -> Result<(), EngineError> {
        let inner = self.inner.as_ref();
        let targets = inner.resolve_targets(false).await?;
        let targets = &targets;
        let mut fingerprint = Sha256::new();
        let mut checks =
            futures::stream::iter(inner.journal.iter_objects(id, Some(ObjectState::Verified)))
                .map(|item| async move {
                    match item {
                        Ok((key, rec)) => {
                            let r = recheck_copy(inner, targets, &key, &rec).await;
                            Ok((key, r))
                        }
                        Err(e) => Err(EngineError::from(e)),
                    }
                })
                .buffered(inner.settings.concurrency.max(1));
        while let Some(item) = checks.next().await {
            let (key, checked) = item?;
            r.copies_checked += 1;
            match checked {
                Ok(etag) => {
                    for part in [key.as_bytes(), b"\0", etag.as_bytes(), b"\0"] {
                        fingerprint.update(part);
                    }
                }
                Err(why) => {
                    r.copies_failed_count += 1;
                    if r.copies_failed.len() < NAMED_COPIES {
                        r.copies_failed.push(why);
                    }
                }
            }
        }
        r.copies_fingerprint = hex::encode(fingerprint.finalize());
        Ok(())
    }

    /// Lists the source again under the job's prefix and filters and compares it with the
    /// journal: new keys, changed ETags, deleted keys.
    async fn diff_source(
        &self,
        job: &crate::model::JobRecord,
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
            let page = inner
                .retry
                .list_page(
                    &*inner.store,
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
