//! Running one job: list the source page by page, record each page, and feed pending objects
//! to a bounded pool of workers, each retrying its object within the attempt budget.

use std::sync::Arc;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::error::{EngineError, ObjectError};
use super::limit::Limiter;
use super::migrate::{Attempt, Outcome, Proof};
use super::{Inner, Target};
use crate::classify::Classification;
use crate::journal::{
    AuditDraft, JobId, JobKind, JobState, JournalError, ObjectRecord, ObjectState,
};
use crate::store::ListedObject;

/// Attempts a job-level call (listing, key resolution) gets for retryable failures before
/// the job fails: with the backoff policy this is about 10 minutes of a flapping network.
pub(super) const JOB_CALL_ATTEMPTS: u32 = 25;

/// Runs a job-level call, retrying retryable failures with backoff, up to `attempts`.
pub(super) async fn with_retries<T, F, Fut>(
    inner: &Inner,
    what: &str,
    attempts: u32,
    mut f: F,
) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, EngineError>>,
{
    let mut policy = retry_policy(inner);
    let mut n = 0;
    loop {
        n += 1;
        match f().await {
            Err(e) if e.is_retryable() && n < attempts && !inner.shutdown.is_cancelled() => {
                let delay = policy.next_backoff().unwrap_or(inner.settings.retry_max);
                tracing::warn!(what, attempt = n, error = %e, ?delay, "retrying");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

/// Resolves every category's KMS key and checks every destination bucket. `strict` (the
/// preflight of StartJob) fails on the first unusable category; otherwise an unusable
/// category is marked so that its objects fail with the reason while the others proceed.
///
/// # Errors
/// `Kms` or `Store` naming the category resource that is unusable (strict), or a retryable
/// error that outlasted its retries.
pub(super) async fn resolve_targets(
    inner: &Inner,
    strict: bool,
) -> Result<Vec<Target>, EngineError> {
    let mut out = Vec::with_capacity(inner.categories.len());
    for c in &inner.categories {
        // A control request should answer within seconds; a running job can wait longer.
        let attempts = if strict { 4 } else { JOB_CALL_ATTEMPTS };
        let resolved = with_retries(inner, "resolve category", attempts, || async {
            let arn = inner.keys.resolve_key(&c.kms_key).await?;
            inner.store.check_bucket(&c.bucket).await?;
            Ok(arn)
        })
        .await;
        let (kms_key_arn, unusable) = match resolved {
            Ok(arn) => (arn, None),
            Err(e) if strict || e.is_retryable() => return Err(e),
            Err(e) => (
                c.kms_key.clone(),
                Some(format!("category {:?} is unusable: {e}", c.name)),
            ),
        };
        out.push(Target {
            category: c.name.clone(),
            bucket: c.bucket.clone(),
            kms_key_arn,
            unusable,
        });
    }
    Ok(out)
}

/// Builds the journal record of a freshly listed object.
pub(super) fn listed_record(inner: &Inner, o: &ListedObject) -> ObjectRecord {
    let mut r = ObjectRecord {
        state: ObjectState::Discovered,
        size: o.size,
        source_etag: o.etag.clone(),
        source_version: None,
        category: None,
        dest_bucket: None,
        dest_key: None,
        attempts: 0,
        reason: None,
        ciphertext_sha256: None,
        dest_etag: None,
        updated_at_ms: 0,
        retry_at_ms: None,
        rule: None,
    };
    match inner.classifier.classify(&o.key) {
        Classification::Matched {
            category,
            dest_key,
            rule,
        } => {
            let c = &inner.categories[category];
            r.rule = Some(rule);
            r.category = Some(c.name.clone());
            r.dest_bucket = Some(c.bucket.clone());
            r.dest_key = Some(dest_key);
        }
        Classification::Unclassified { reason } => {
            r.state = ObjectState::Unclassified;
            r.reason = Some(reason.unwrap_or_else(|| {
                "matches no category; left in the source. Add a rule to migrate it".into()
            }));
        }
        Classification::Conflict(cats) => {
            r.state = ObjectState::Conflict;
            r.reason = Some(format!(
                "matches categories {}; left in the source. Make the rules disjoint",
                cats.join(" and ")
            ));
        }
    }
    r
}

/// Objects a verification job takes from the journal per page.
const VERIFY_PAGE: usize = 1000;

/// A verification job's record of an object the checked job verified.
fn to_recheck(orig: ObjectRecord) -> ObjectRecord {
    ObjectRecord {
        state: ObjectState::Discovered,
        attempts: 0,
        reason: None,
        retry_at_ms: None,
        ..orig
    }
}

/// Re-checks one object for a verification job: verified when it still holds, failed with
/// `KIND: detail` otherwise. Reports; never repairs.
async fn recheck(
    inner: &Inner,
    id: JobId,
    key: &str,
    rec: ObjectRecord,
    targets: &[Target],
    cancel: &CancellationToken,
) -> Result<(), JournalError> {
    let finding = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        f = super::plan::check_one(inner, &inner.settings.source_bucket, targets, key, &rec) => f,
    };
    let (state, outcome, detail) = match finding {
        super::plan::Finding::Ok => (ObjectState::Verified, "ok", String::new()),
        super::plan::Finding::SourceGone => (
            ObjectState::Verified,
            "source_gone",
            "the source was deleted; the copy matches its recorded checksum and opens".to_owned(),
        ),
        super::plan::Finding::Problem(kind, detail) => (ObjectState::Failed, kind, detail),
    };
    let reason = (!detail.is_empty()).then(|| format!("{outcome}: {detail}"));
    settle(
        inner,
        id,
        key,
        |r| {
            r.state = state;
            r.attempts += 1;
            r.reason.clone_from(&reason);
        },
        AuditDraft {
            job_id: id,
            kind: if state == ObjectState::Verified {
                "object_reverified"
            } else {
                "verify_problem"
            },
            category: rec.category.clone().unwrap_or_default(),
            outcome,
            source_key: key.to_owned(),
            dest_bucket: rec.dest_bucket.clone().unwrap_or_default(),
            dest_key: rec.dest_key.clone().unwrap_or_default(),
            detail,
            ..Default::default()
        },
    )
    .await
}

/// The audit event of an object that the listing leaves in place.
fn listing_event(job: JobId, key: &str, rec: &ObjectRecord) -> Option<AuditDraft> {
    let (kind, outcome) = match rec.state {
        ObjectState::Unclassified => ("object_unclassified", "unclassified"),
        ObjectState::Conflict => ("object_conflict", "conflict"),
        _ => return None,
    };
    Some(AuditDraft {
        job_id: job,
        kind,
        outcome,
        source_key: key.to_owned(),
        detail: rec.reason.clone().unwrap_or_default(),
        ..Default::default()
    })
}

/// Runs a job until it finishes, is paused-and-cancelled, cancelled, or the daemon stops.
pub(super) async fn run(
    inner: Arc<Inner>,
    id: JobId,
    cancel: CancellationToken,
    paused: watch::Receiver<bool>,
    limiter: Arc<Limiter>,
) {
    match drive(&inner, id, &cancel, paused, &limiter).await {
        Ok(()) => {}
        Err(EngineError::Journal(e)) => {
            // Fail closed: what cannot be recorded does not happen. Park the job with the
            // reason and keep serving; if even that cannot be written, stop the daemon.
            let message = format!(
                "paused: the journal could not record progress ({e}); fix the cause, then `dualsealctl resume {id}`"
            );
            tracing::error!(job = id, %message);
            let parked = inner.journal.update_job(id, |j| {
                j.state = JobState::Paused;
                j.message = Some(message.clone());
            });
            match parked {
                Ok(_) => {
                    if let Err(e) = inner.journal.flush().await {
                        inner.fail_fatally(e.to_string());
                    }
                }
                Err(e2) => inner.fail_fatally(format!("{e}; then {e2}")),
            }
        }
        Err(e) => {
            tracing::error!(job = id, error = %e, "job failed");
            let message = e.to_string();
            let res = inner
                .journal
                .update_job(id, |j| {
                    j.state = JobState::Failed;
                    j.message = Some(message.clone());
                })
                .and_then(|_| {
                    inner.journal.append_audit(AuditDraft {
                        job_id: id,
                        kind: "job_failed",
                        detail: message,
                        ..Default::default()
                    })
                });
            if let Err(e) = res {
                inner.fail_fatally(e.to_string());
            } else if let Err(e) = inner.journal.flush().await {
                inner.fail_fatally(e.to_string());
            }
        }
    }
    inner.notify();
}

async fn drive(
    inner: &Arc<Inner>,
    id: JobId,
    cancel: &CancellationToken,
    mut paused: watch::Receiver<bool>,
    limiter: &Arc<Limiter>,
) -> Result<(), EngineError> {
    let targets = Arc::new(resolve_targets(inner, false).await?);
    let mut workers: JoinSet<Result<(), JournalError>> = JoinSet::new();
    let job = inner.journal.get_job(id)?;

    // Resume: whatever was recorded but not finished goes first, then listing continues
    // from the stored continuation point.
    let leftover: Vec<(String, ObjectRecord)> = inner
        .journal
        .iter_objects(id, None)
        .filter(|r| r.as_ref().map_or(true, |(_, rec)| rec.state.is_pending()))
        .collect::<Result<_, _>>()?;
    if !leftover.is_empty() {
        tracing::info!(
            job = id,
            objects = leftover.len(),
            "re-dispatching unfinished objects"
        );
    }
    let mut stopped = dispatch(
        inner,
        id,
        job.kind,
        leftover,
        &targets,
        limiter,
        &mut workers,
        cancel,
        &mut paused,
    )
    .await?;

    let mut token = job.listing_token.clone();
    let mut listing_complete = job.listing_complete;
    while !listing_complete && !stopped {
        let (records, next_token) = match job.kind {
            JobKind::Migrate => {
                let page = with_retries(inner, "list source", JOB_CALL_ATTEMPTS, || async {
                    Ok(inner
                        .store
                        .list_page(&job.source_bucket, &job.prefix, token.clone())
                        .await?)
                })
                .await?;
                let records: Vec<_> = page
                    .objects
                    .iter()
                    .map(|o| (o.key.clone(), listed_record(inner, o)))
                    .collect();
                (records, page.next_token)
            }
            // A verification "lists" the verified objects of the job it checks, from the
            // journal; the continuation point is the last key taken.
            JobKind::Verify { of } => {
                let page = inner.journal.objects_page(
                    of,
                    token.as_deref(),
                    ObjectState::Verified,
                    VERIFY_PAGE,
                )?;
                let next = (page.len() == VERIFY_PAGE)
                    .then(|| page.last().map(|(k, _)| k.clone()))
                    .flatten();
                let records: Vec<_> = page
                    .into_iter()
                    .map(|(k, orig)| (k, to_recheck(orig)))
                    .collect();
                (records, next)
            }
        };
        let listed = records.len();
        let pending = inner.journal.record_page_audited(
            id,
            records,
            next_token.clone(),
            |key, rec| listing_event(id, key, rec),
            Some(AuditDraft {
                job_id: id,
                kind: "page_listed",
                detail: format!("objects={listed} more={}", next_token.is_some()),
                ..Default::default()
            }),
        )?;
        inner.journal.flush().await?;
        inner.notify();
        listing_complete = next_token.is_none();
        token = next_token;
        stopped = dispatch(
            inner,
            id,
            job.kind,
            pending,
            &targets,
            limiter,
            &mut workers,
            cancel,
            &mut paused,
        )
        .await?;
    }
    while let Some(res) = workers.join_next().await {
        reap(res)?;
    }
    if stopped || inner.shutdown.is_cancelled() {
        // Paused-then-cancelled, cancelled, or daemon shutdown: state was set by whoever
        // stopped us; a shutdown leaves the job Running so the next boot resumes it.
        inner.journal.flush().await?;
        return Ok(());
    }
    finish(inner, id).await
}

fn reap(res: Result<Result<(), JournalError>, tokio::task::JoinError>) -> Result<(), EngineError> {
    match res {
        Ok(r) => r.map_err(EngineError::Journal),
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(EngineError::FailedPrecondition(format!(
            "worker panicked: {e}"
        ))),
    }
}

/// Hands objects to workers; returns true when the job was cancelled or the daemon stops.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    inner: &Arc<Inner>,
    id: JobId,
    job_kind: JobKind,
    objects: Vec<(String, ObjectRecord)>,
    targets: &Arc<Vec<Target>>,
    limiter: &Arc<Limiter>,
    workers: &mut JoinSet<Result<(), JournalError>>,
    cancel: &CancellationToken,
    paused: &mut watch::Receiver<bool>,
) -> Result<bool, EngineError> {
    for (key, rec) in objects {
        // Wait while paused; a cancel or shutdown ends the wait.
        while *paused.borrow_and_update() {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(true),
                r = paused.changed() => if r.is_err() { return Ok(true) },
            }
        }
        let slot = tokio::select! {
            _ = cancel.cancelled() => return Ok(true),
            s = limiter.acquire() => s,
        };
        while let Some(res) = workers.try_join_next() {
            reap(res)?;
        }
        let inner = Arc::clone(inner);
        let targets = Arc::clone(targets);
        let cancel = cancel.clone();
        let limiter = Arc::clone(limiter);
        let kind = job_kind;
        workers.spawn(async move {
            let _slot = slot;
            match kind {
                JobKind::Migrate => {
                    migrate_with_retries(&inner, id, &key, rec, &targets, &cancel, &limiter).await
                }
                JobKind::Verify { .. } => recheck(&inner, id, &key, rec, &targets, &cancel).await,
            }
        });
    }
    Ok(cancel.is_cancelled())
}

fn retry_policy(inner: &Inner) -> ExponentialBackoff {
    ExponentialBackoff {
        initial_interval: inner.settings.retry_initial,
        max_interval: inner.settings.retry_max,
        multiplier: 2.0,
        randomization_factor: 0.5,
        // The attempt budget bounds retries, not wall time: a throttled hour must not turn
        // into silently failed objects.
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    }
}

/// Migrates one object, retrying retryable failures with a jittered, growing delay that is
/// persisted, so a restart honours it. Only journal failures escape; everything else ends as
/// verified, conflict or failed.
async fn migrate_with_retries(
    inner: &Inner,
    id: JobId,
    key: &str,
    mut rec: ObjectRecord,
    targets: &[Target],
    cancel: &CancellationToken,
    limiter: &Limiter,
) -> Result<(), JournalError> {
    let Some(target) = rec
        .category
        .as_deref()
        .and_then(|c| targets.iter().find(|t| t.category == c))
    else {
        let reason = format!(
            "category {:?} is no longer configured; restore it or start a new job",
            rec.category.as_deref().unwrap_or("")
        );
        return fail(inner, id, key, &rec, reason).await;
    };
    if let Some(reason) = &target.unusable {
        let reason = reason.clone();
        return fail(inner, id, key, &rec, reason).await;
    }
    let dest_key = rec.dest_key.clone().unwrap_or_else(|| key.to_owned());
    let mut policy = retry_policy(inner);
    // Replay the delays of attempts made before a restart, so the next one is as long.
    for _ in 0..rec.attempts {
        let _ = policy.next_backoff();
    }
    loop {
        if let Some(at) = rec.retry_at_ms {
            let wait = at.saturating_sub(crate::journal::now_ms());
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
            }
        }
        if cancel.is_cancelled() {
            return Ok(());
        }
        let attempts = rec.attempts + 1;
        let attempt = Attempt {
            store: inner.store.as_ref(),
            keys: inner.keys.as_ref(),
            job: id,
            source_bucket: &inner.settings.source_bucket,
            source_key: key,
            target,
            dest_key: &dest_key,
            segment_size: inner.settings.segment_size,
            prior: &rec,
        };
        // Recorded without a flush: it only saves work on resume, it proves nothing.
        let record_upload = |p: &Proof| {
            inner
                .journal
                .transition(
                    id,
                    key,
                    |r| {
                        r.state = ObjectState::Uploaded;
                        r.attempts = attempts;
                        r.source_etag.clone_from(&p.source_etag);
                        r.source_version.clone_from(&p.source_version);
                        r.ciphertext_sha256 = Some(p.ciphertext_sha256.clone());
                        r.dest_etag = Some(p.dest_etag.clone());
                    },
                    None,
                )
                .map(|_| ())
        };
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            o = attempt.run(record_upload) => o,
        };
        match outcome {
            Ok(Outcome::Verified(proof)) => {
                limiter.on_success();
                let rule = rec.rule.as_deref();
                return verified(inner, id, key, target, &dest_key, attempts, rule, proof).await;
            }
            Ok(Outcome::Conflict(reason)) => {
                return conflict(inner, id, key, target, &dest_key, attempts, reason).await;
            }
            Err(ObjectError::Journal(e)) => return Err(e),
            Err(e) if e.is_retryable() && attempts < inner.settings.max_attempts => {
                if e.is_throttle() {
                    limiter.on_throttle();
                }
                let delay = policy.next_backoff().unwrap_or(inner.settings.retry_max);
                tracing::warn!(job = id, key, attempts, error = %e, ?delay, "retrying object");
                let retry_at = crate::journal::now_ms() + delay.as_millis() as u64;
                rec = inner.journal.transition(
                    id,
                    key,
                    |r| {
                        r.attempts = attempts;
                        r.reason = Some(e.to_string());
                        r.retry_at_ms = Some(retry_at);
                    },
                    None,
                )?;
            }
            Err(e) => {
                let why = if e.is_retryable() {
                    format!("gave up after {attempts} attempts: {e}")
                } else {
                    e.to_string()
                };
                rec.attempts = attempts;
                return fail(inner, id, key, &rec, why).await;
            }
        }
    }
}

async fn conflict(
    inner: &Inner,
    id: JobId,
    key: &str,
    target: &Target,
    dest_key: &str,
    attempts: u32,
    reason: String,
) -> Result<(), JournalError> {
    tracing::warn!(job = id, key, %reason, "destination conflict");
    settle(
        inner,
        id,
        key,
        |r| {
            r.state = ObjectState::Conflict;
            r.attempts = attempts;
            r.reason = Some(reason.clone());
            r.retry_at_ms = None;
        },
        AuditDraft {
            job_id: id,
            kind: "object_conflict",
            actor: String::new(),
            category: target.category.clone(),
            outcome: "conflict",
            source_key: key.to_owned(),
            dest_bucket: target.bucket.clone(),
            dest_key: dest_key.to_owned(),
            detail: reason.clone(),
        },
    )
    .await
}

/// Records an object's final state with its audit event (one transaction), makes it durable
/// and tells watchers.
async fn settle(
    inner: &Inner,
    id: JobId,
    key: &str,
    update: impl FnOnce(&mut ObjectRecord),
    event: AuditDraft,
) -> Result<(), JournalError> {
    inner.journal.transition(id, key, update, Some(event))?;
    inner.journal.flush().await?;
    inner.notify();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn verified(
    inner: &Inner,
    id: JobId,
    key: &str,
    target: &Target,
    dest_key: &str,
    attempts: u32,
    rule: Option<&str>,
    proof: Proof,
) -> Result<(), JournalError> {
    let detail = format!(
        "size={} rule={} write={}{} source_etag={} source_version={} ciphertext_sha256={} dest_etag={} s3_request_id={} kms_key={} sse=aws:kms:dsse sse_kms_key={} envelope=v{}",
        proof.size,
        rule.unwrap_or("-"),
        proof.how.as_str(),
        if proof.source_changed_since_listing { " source-changed-since-listing" } else { "" },
        proof.source_etag,
        proof.source_version.as_deref().unwrap_or("-"),
        proof.ciphertext_sha256,
        proof.dest_etag,
        proof.put_request_id.as_deref().unwrap_or("-"),
        proof.kms_key_arn,
        target.kms_key_arn,
        crate::envelope::FORMAT_VERSION,
    );
    settle(
        inner,
        id,
        key,
        |r| {
            r.state = ObjectState::Verified;
            r.attempts = attempts;
            r.reason = None;
            r.retry_at_ms = None;
            r.size = proof.size;
            r.source_etag = proof.source_etag.clone();
            r.source_version = proof.source_version.clone();
            r.ciphertext_sha256 =
                (!proof.ciphertext_sha256.is_empty()).then(|| proof.ciphertext_sha256.clone());
            r.dest_etag = Some(proof.dest_etag.clone());
        },
        AuditDraft {
            job_id: id,
            kind: "object_verified",
            actor: String::new(),
            category: target.category.clone(),
            outcome: "ok",
            source_key: key.to_owned(),
            dest_bucket: target.bucket.clone(),
            dest_key: dest_key.to_owned(),
            detail,
        },
    )
    .await
}

async fn fail(
    inner: &Inner,
    id: JobId,
    key: &str,
    rec: &ObjectRecord,
    reason: String,
) -> Result<(), JournalError> {
    tracing::warn!(job = id, key, %reason, "object failed");
    let attempts = rec.attempts;
    settle(
        inner,
        id,
        key,
        |r| {
            r.state = ObjectState::Failed;
            r.attempts = attempts;
            r.reason = Some(reason.clone());
            r.retry_at_ms = None;
        },
        AuditDraft {
            job_id: id,
            kind: "object_failed",
            actor: String::new(),
            category: rec.category.clone().unwrap_or_default(),
            outcome: "failed",
            source_key: key.to_owned(),
            dest_bucket: rec.dest_bucket.clone().unwrap_or_default(),
            dest_key: rec.dest_key.clone().unwrap_or_default(),
            detail: reason.clone(),
        },
    )
    .await
}

async fn finish(inner: &Inner, id: JobId) -> Result<(), EngineError> {
    let counts = inner.journal.counts(id);
    let failed = counts.get(ObjectState::Failed);
    let state = if failed == 0 {
        JobState::Succeeded
    } else {
        JobState::CompletedWithFailures
    };
    let job = inner.journal.update_job(id, |j| {
        // A cancel or pause that raced with the last object wins.
        if j.state == JobState::Running {
            j.state = state;
            if failed > 0 {
                j.message = Some(format!(
                    "{failed} object(s) failed; `dualsealctl objects {id} --state failed` lists them with reasons"
                ));
            }
        }
    })?;
    inner.journal.append_audit(AuditDraft {
        job_id: id,
        kind: match job.kind {
            JobKind::Migrate => "job_finished",
            JobKind::Verify { .. } => "job_verified",
        },
        detail: format!(
            "state={:?} verified={} verified_bytes={} failed={} unclassified={} conflicts={}",
            job.state,
            counts.get(ObjectState::Verified),
            counts.verified_bytes,
            failed,
            counts.get(ObjectState::Unclassified),
            counts.get(ObjectState::Conflict),
        ),
        ..Default::default()
    })?;
    inner.journal.flush().await?;
    tracing::info!(job = id, state = ?job.state, "job finished");
    Ok(())
}
