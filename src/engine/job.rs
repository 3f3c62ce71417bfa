//! Running one job: list the source page by page, record each page, and feed pending objects
//! to a bounded pool of workers, each retrying its object within the attempt budget.

use std::sync::Arc;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::error::{EngineError, ObjectError, Retryable};
use super::migrate::{Attempt, Outcome, Proof};
use super::pool::Permit;
use super::progress::RecentError;
use super::rate::RateLimitedKeys;
use super::{Inner, JobLive, Scope, Target};
use crate::classify::Classification;
use crate::journal::{
    AuditDraft, JobId, JobKind, JobOptions, JobRecord, JobState, JournalError, ObjectRecord,
    ObjectState,
};
use crate::store::{ListPage, ListedObject};

/// Attempts a job-level call (listing, key resolution) gets for retryable failures before
/// the job fails: with the backoff policy this is about 10 minutes of a flapping network.
pub(super) const JOB_CALL_ATTEMPTS: u32 = 25;

/// Attempts a job-level call gets when the failure is the daemon's (no credentials, an
/// endpoint refusing connections): a few seconds, then the job parks with the reason rather
/// than waiting out ten minutes to fail.
const SYSTEMIC_ATTEMPTS: u32 = 4;

/// Runs a job-level call, retrying retryable failures with backoff, up to `attempts`.
pub(super) async fn with_retries<T, E, F, Fut>(
    inner: &Inner,
    what: &str,
    attempts: u32,
    mut f: F,
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut policy = retry_policy(inner);
    let mut n = 0;
    loop {
        n += 1;
        match f().await {
            Err(e)
                if e.is_retryable()
                    && n < attempts
                    && !(e.is_systemic() && n >= SYSTEMIC_ATTEMPTS)
                    && !inner.shutdown.is_cancelled() =>
            {
                let delay = policy.next_backoff().unwrap_or(inner.settings.retry_max);
                tracing::warn!(what, attempt = n, error = %e, ?delay, "retrying");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

/// One page of a bucket listing, retried like any job-level call.
pub(super) async fn list_with_retries(
    inner: &Inner,
    what: &str,
    bucket: &str,
    prefix: &str,
    token: Option<String>,
) -> Result<crate::store::ListPage, EngineError> {
    with_retries(inner, what, JOB_CALL_ATTEMPTS, || async {
        Ok(inner.store.list_page(bucket, prefix, token.clone()).await?)
    })
    .await
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
        let resolved: Result<String, EngineError> =
            with_retries(inner, "resolve category", attempts, || async {
                let arn = inner.keys.resolve_key(&c.key_ref()).await?;
                inner.store.check_bucket(&c.bucket).await?;
                Ok(arn)
            })
            .await;
        let (kms_key_arn, unusable) = match resolved {
            Ok(arn) => (arn, None),
            Err(e) if strict || e.is_retryable() || e.is_systemic() => return Err(e),
            Err(e) => (
                c.key_ref(),
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
        code: None,
        envelope_version: None,
        upload_id: None,
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
    ctx: &Ctx,
    key: &str,
    rec: ObjectRecord,
    targets: &[Target],
) -> Result<(), JournalError> {
    let (inner, id) = (ctx.inner.as_ref(), ctx.id);
    if ctx.ctl.drain.is_cancelled() {
        return Ok(());
    }
    let finding = tokio::select! {
        _ = ctx.ctl.stop.cancelled() => return Ok(()),
        f = super::plan::check_one(inner, &inner.settings.source_bucket, targets, key, &rec) => f,
    };
    let (state, outcome, detail) = match finding {
        super::plan::Finding::Ok(seen) => (ObjectState::Verified, "ok", seen),
        super::plan::Finding::SourceGone(seen) => (
            ObjectState::Verified,
            "source_gone",
            format!(
                "the source was deleted; the copy matches its recorded checksum and opens; {seen}"
            ),
        ),
        super::plan::Finding::Problem(kind, detail) => (ObjectState::Failed, kind, detail),
        super::plan::Finding::Systemic(why) => return park(ctx, &why).await,
    };
    // What a held copy showed goes to the audit trail; only a finding is the object's reason.
    let reason = (outcome != "ok" && !detail.is_empty()).then(|| format!("{outcome}: {detail}"));
    settle(
        inner,
        id,
        Settler::Verification,
        key,
        {
            let reason = reason.clone();
            move |r| {
                r.state = state;
                r.attempts += 1;
                r.reason = reason;
                r.code = (state == ObjectState::Failed).then(|| outcome.to_owned());
            }
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

/// What a job's task is told and shares while it runs.
pub(super) struct Control {
    /// No new attempts once cancelled.
    pub drain: CancellationToken,
    /// Attempts in flight are abandoned once cancelled.
    pub stop: CancellationToken,
    /// Limits, priority and history.
    pub live: Arc<JobLive>,
}

/// Worker slots a job's finished objects hand back to its own dispatcher (see `pool.rs`).
#[derive(Default)]
struct Spare {
    /// Whether the dispatcher still takes slots; once closed, permits go back to the pool.
    open: bool,
    /// The dispatcher waits in the pool's queue: a freed slot must go there, not sit here.
    queued: bool,
    permits: Vec<Permit>,
}

/// One job's running context, shared by its workers.
struct Ctx {
    spare: std::sync::Mutex<Spare>,
    inner: Arc<Inner>,
    id: JobId,
    options: JobOptions,
    ctl: Control,
    /// The key service behind this job's KMS rate.
    keys: RateLimitedKeys,
}

/// Runs a job until it finishes, is paused or cancelled, or the daemon stops.
pub(super) async fn run(inner: Arc<Inner>, id: JobId, ctl: Control) {
    match drive(&inner, id, ctl).await {
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
        Err(e) if e.is_systemic() => {
            let message = format!(
                "parked: {e}. This is not a problem of the objects; fix it, then `dualsealctl resume {id}`"
            );
            tracing::error!(job = id, %message);
            let to_record = message.clone();
            let draft = AuditDraft {
                job_id: id,
                kind: "job_parked",
                outcome: "paused",
                detail: message,
                ..Default::default()
            };
            record_end(&inner, id, draft, move |j| {
                if j.state == JobState::Running || j.state == JobState::Pending {
                    j.state = JobState::Paused;
                    j.message = Some(to_record);
                }
            })
            .await;
        }
        Err(e) => {
            tracing::error!(job = id, error = %e, "job failed");
            let message = e.to_string();
            let to_record = message.clone();
            let draft = AuditDraft {
                job_id: id,
                kind: "job_failed",
                detail: message,
                ..Default::default()
            };
            record_end(&inner, id, draft, move |j| {
                j.state = JobState::Failed;
                j.message = Some(to_record);
            })
            .await;
        }
    }
    inner.notify();
}

/// Records how a job's task ended (its new state and the audit event) and makes it durable;
/// what cannot be recorded stops the daemon.
async fn record_end(
    inner: &Inner,
    id: JobId,
    draft: AuditDraft,
    update: impl FnOnce(&mut crate::journal::JobRecord),
) {
    let res = inner
        .journal
        .update_job(id, update)
        .and_then(|_| inner.journal.append_audit(draft));
    if let Err(e) = res {
        inner.fail_fatally(e.to_string());
    } else if let Err(e) = inner.journal.flush().await {
        inner.fail_fatally(e.to_string());
    }
}

async fn drive(inner: &Arc<Inner>, id: JobId, ctl: Control) -> Result<(), EngineError> {
    let job = inner.journal.get_job(id)?;
    if !wait_for_predecessor(inner, &job, &ctl.drain).await? {
        return Ok(());
    }
    let job = inner.journal.get_job(id)?;
    let scope = Scope::new(
        &job.options,
        &inner
            .categories
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
    )
    .map_err(|p| EngineError::InvalidRequest(p.join("; ")))?
    .in_shard(inner.settings.shard);
    let targets = Arc::new(resolve_targets(inner, false).await?);
    let mut workers: JoinSet<Result<(), JournalError>> = JoinSet::new();
    let ctx = Arc::new(Ctx {
        spare: std::sync::Mutex::new(Spare {
            open: true,
            ..Spare::default()
        }),
        inner: Arc::clone(inner),
        id,
        options: job.options.clone(),
        keys: RateLimitedKeys {
            inner: Arc::clone(&inner.keys),
            rates: Arc::clone(&ctl.live.rates),
        },
        ctl,
    });

    // Resume: whatever was recorded but not finished goes first, then listing continues
    // from the stored continuation point.
    let mut leftover: Vec<(String, ObjectRecord)> = inner
        .journal
        .pending_objects(id)
        .collect::<Result<_, _>>()?;
    let expected = inner.journal.counts(id).pending();
    if (leftover.len() as u64) < expected {
        // The index missed something (it never should): every record is read instead.
        tracing::warn!(
            job = id,
            indexed = leftover.len(),
            expected,
            "the pending index is incomplete; scanning every record"
        );
        leftover = inner
            .journal
            .iter_objects(id, None)
            .filter(|r| r.as_ref().map_or(true, |(_, rec)| rec.state.is_pending()))
            .collect::<Result<_, _>>()?;
    }
    if !leftover.is_empty() {
        tracing::info!(
            job = id,
            objects = leftover.len(),
            "re-dispatching unfinished objects"
        );
    }
    // A listing that passes a key already handed out above (a rebuilt journal lists from the
    // start over records it seeded) must not hand it out twice: one worker per object, one
    // `object_verified` per object per job.
    let mut in_hand: std::collections::HashSet<String> = if job.listing_complete {
        Default::default()
    } else {
        leftover.iter().map(|(k, _)| k.clone()).collect()
    };
    let mut stopped = dispatch(&ctx, job.kind, leftover, &targets, &mut workers).await?;

    let mut token = job.listing_token.clone();
    let mut listing_complete = job.listing_complete;
    let mut lister = match (&job.kind, listing_complete) {
        (JobKind::Migrate, false) => Some(
            super::listing::Lister::for_job(
                inner,
                &job.source_bucket,
                &job.prefix,
                job.options.inventory.as_deref(),
            )
            .await?,
        ),
        _ => None,
    };
    // The next page is fetched while this one's objects are dispatched, so the workers do not
    // sit idle for a listing round trip between pages.
    let mut ahead: Option<ListPage> = None;
    while !listing_complete && !stopped {
        let mut excluded = 0;
        let (records, next_token) = match job.kind {
            JobKind::Migrate => {
                let page = match (ahead.take(), lister.as_mut()) {
                    (Some(page), _) => page,
                    (None, Some(l)) => l.page(inner, token.clone()).await?,
                    (None, None) => ListPage::default(),
                };
                // Other shards' keys are theirs: neither taken nor counted here.
                let owned: Vec<_> = page.objects.iter().filter(|o| scope.owns(&o.key)).collect();
                let records: Vec<_> = owned
                    .iter()
                    .map(|o| (o.key.clone(), listed_record(inner, o)))
                    .filter(|(k, r)| {
                        scope.admits_key(k) && scope.admits_category(r.category.as_deref())
                    })
                    .collect();
                excluded = (owned.len() - records.len()) as u64;
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
            crate::journal::PagePass {
                excluded,
                requeue_changed: job.syncing,
            },
            |key, rec| listing_event(id, key, rec),
            Some(AuditDraft {
                job_id: id,
                kind: "page_listed",
                detail: format!(
                    "objects={listed} excluded={excluded} more={}",
                    next_token.is_some()
                ),
                ..Default::default()
            }),
        )?;
        inner.journal.flush().await?;
        inner.notify();
        listing_complete = next_token.is_none();
        token = next_token;
        let pending: Vec<_> = if in_hand.is_empty() {
            pending
        } else {
            // Each key is listed once: what the listing passed leaves the set.
            pending
                .into_iter()
                .filter(|(k, _)| !in_hand.remove(k))
                .collect()
        };
        let dispatched = dispatch(&ctx, job.kind, pending, &targets, &mut workers);
        match lister.as_mut().filter(|_| !listing_complete) {
            Some(l) => match dispatch_and_fetch(dispatched, l.page(inner, token.clone())).await? {
                Some(page) => ahead = Some(page),
                None => stopped = true,
            },
            None => stopped = dispatched.await?,
        }
    }
    // Nothing more to start: slots freed from now on go back to the pool.
    let spare = std::mem::take(&mut ctx.lock_spare().permits);
    ctx.lock_spare().open = false;
    drop(spare);
    while let Some(res) = workers.join_next().await {
        reap(res)?;
    }
    if stopped || ctx.ctl.drain.is_cancelled() || inner.shutdown.is_cancelled() {
        // Paused, cancelled, stopped by its failure threshold, or daemon shutdown: the state
        // was set by whoever stopped us; a shutdown leaves the job Running so the next boot
        // resumes it.
        inner.journal.flush().await?;
        return Ok(());
    }
    finish(inner, id).await
}

/// Runs a page's dispatch and the fetch of the next page together: the next page, or `None`
/// when the dispatch stopped the job (paused, cancelled, shutdown). A fetch still under way
/// then is dropped rather than awaited through its retries; its page was not recorded, so a
/// resume fetches it again.
async fn dispatch_and_fetch(
    dispatched: impl std::future::Future<Output = Result<bool, EngineError>>,
    fetch: impl std::future::Future<Output = Result<ListPage, EngineError>>,
) -> Result<Option<ListPage>, EngineError> {
    tokio::pin!(dispatched, fetch);
    let mut page = None;
    let stopped = loop {
        tokio::select! {
            stopped = &mut dispatched => break stopped?,
            fetched = &mut fetch, if page.is_none() => page = Some(fetched),
        }
    };
    if stopped {
        return Ok(None);
    }
    match page {
        Some(fetched) => fetched.map(Some),
        None => fetch.await.map(Some),
    }
}

/// A job queued with `after` waits (as `Pending`) until that job has ended, then becomes
/// `Running`. Returns false when it was drained while waiting.
async fn wait_for_predecessor(
    inner: &Inner,
    job: &JobRecord,
    drain: &CancellationToken,
) -> Result<bool, EngineError> {
    let Some(after) = job.options.after else {
        return Ok(true);
    };
    let mut changes = inner.changes.subscribe();
    loop {
        let active = match inner.journal.get_job(after) {
            Ok(j) => j.state.is_active(),
            Err(JournalError::NoSuchJob(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if !active {
            break;
        }
        tokio::select! {
            _ = drain.cancelled() => return Ok(false),
            r = changes.changed() => if r.is_err() { return Ok(false) },
        }
    }
    let updated = inner.journal.update_job(job.id, |j| {
        if j.state == JobState::Pending {
            j.state = JobState::Running;
        }
    })?;
    if updated.state != JobState::Running {
        return Ok(false);
    }
    if job.state == JobState::Pending {
        inner.journal.append_audit(AuditDraft {
            job_id: job.id,
            kind: "job_dequeued",
            detail: format!("job {after} has ended; starting"),
            ..Default::default()
        })?;
        inner.journal.flush().await?;
        tracing::info!(job = job.id, after, "queued job starting");
        inner.notify();
    }
    Ok(true)
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

/// Hands objects to workers under the job's limits and the daemon's shared pool; returns
/// true once the job is draining (paused, cancelled, over its failure threshold) or the daemon
/// stops.
async fn dispatch(
    ctx: &Arc<Ctx>,
    job_kind: JobKind,
    objects: Vec<(String, ObjectRecord)>,
    targets: &Arc<Vec<Target>>,
    workers: &mut JoinSet<Result<(), JournalError>>,
) -> Result<bool, EngineError> {
    let drain = &ctx.ctl.drain;
    let live = &ctx.ctl.live;
    for (key, rec) in objects {
        if drain.is_cancelled() {
            return Ok(true);
        }
        let slot = tokio::select! {
            _ = drain.cancelled() => return Ok(true),
            s = live.limiter.acquire() => s,
        };
        tokio::select! {
            _ = drain.cancelled() => return Ok(true),
            () = live.rates.object(rec.size) => {}
        }
        let priority = live.priority.load(std::sync::atomic::Ordering::SeqCst);
        let spare = {
            let mut s = ctx.lock_spare();
            let p = s.permits.pop();
            s.queued = p.is_none();
            p
        };
        let permit = match spare {
            Some(p) => p,
            None => {
                let p = tokio::select! {
                    _ = drain.cancelled() => None,
                    p = ctx.inner.pool.acquire(priority) => Some(p),
                };
                ctx.lock_spare().queued = false;
                match p {
                    Some(p) => p,
                    None => return Ok(true),
                }
            }
        };
        while let Some(res) = workers.try_join_next() {
            reap(res)?;
        }
        let ctx = Arc::clone(ctx);
        let targets = Arc::clone(targets);
        workers.spawn(async move {
            let res = match job_kind {
                JobKind::Migrate => migrate_with_retries(&ctx, &key, rec, &targets).await,
                JobKind::Verify { .. } => recheck(&ctx, &key, rec, &targets).await,
            };
            // The permit first, so the dispatcher, woken by the slot, finds it.
            ctx.recycle(permit);
            drop(slot);
            res
        });
    }
    Ok(drain.is_cancelled())
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
/// verified, conflict or failed. A draining job starts no new attempt; a stopped one abandons
/// the attempt in flight (the next run redoes or adopts it).
async fn migrate_with_retries(
    ctx: &Ctx,
    key: &str,
    mut rec: ObjectRecord,
    targets: &[Target],
) -> Result<(), JournalError> {
    let (inner, id) = (ctx.inner.as_ref(), ctx.id);
    let (drain, stop) = (&ctx.ctl.drain, &ctx.ctl.stop);
    let Some(target) = rec
        .category
        .as_deref()
        .and_then(|c| targets.iter().find(|t| t.category == c))
    else {
        let reason = format!(
            "category {:?} is no longer configured; restore it or start a new job",
            rec.category.as_deref().unwrap_or("")
        );
        return fail(ctx, key, &rec, "CategoryMissing", reason).await;
    };
    if let Some(reason) = &target.unusable {
        let reason = reason.clone();
        return fail(ctx, key, &rec, "CategoryUnusable", reason).await;
    }
    let multipart = inner.settings.multipart;
    let streamed = multipart.streams(rec.size);
    if rec.size > super::multipart::MAX_OBJECT_BYTES {
        let reason = format!(
            "{} bytes: sealed, it exceeds S3's 5 TiB object limit; it stays in the source",
            rec.size
        );
        return fail(ctx, key, &rec, "TooLarge", reason).await;
    }
    let dest_key = rec.dest_key.clone().unwrap_or_else(|| key.to_owned());
    let mut policy = retry_policy(inner);
    // Replay the delays of attempts made before a restart, so the next one is as long.
    for _ in 0..rec.attempts {
        let _ = policy.next_backoff();
    }
    let uploaded = std::sync::Mutex::new(None::<Proof>);
    loop {
        if let Some(at) = rec.retry_at_ms {
            let wait = at.saturating_sub(crate::journal::now_ms());
            tokio::select! {
                _ = drain.cancelled() => return Ok(()),
                _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
            }
        }
        if drain.is_cancelled() {
            return Ok(());
        }
        let attempts = rec.attempts + 1;
        let attempt = Attempt {
            store: inner.store.as_ref(),
            keys: &ctx.keys,
            job: id,
            source_bucket: &inner.settings.source_bucket,
            source_key: key,
            target,
            dest_key: &dest_key,
            segment_size: inner.settings.segment_size,
            verify: ctx.options.verify_mode,
            prior: &rec,
            retention: None,
            content_rules: inner
                .classifier
                .has_content_rules()
                .then_some(&inner.classifier),
            data_keys: &inner.data_keys,
            head_first: false,
        };
        // A streamed object's write is recorded without a flush: it only saves work on resume
        // (its read-back is long), it proves nothing.
        let record_upload = |p: &Proof| {
            inner
                .journal
                .transition(id, key, |r| mark_uploaded(r, p, attempts), None)
                .map(|_| ())
        };
        // A single PUT's write is only remembered for this worker's next attempt, which then
        // proves it rather than writing again; the retry's own record carries it. Journaled
        // (unflushed) it cost a write per object and rarely outlived a crash, after which the
        // next attempt's conditional PUT finds the object and proves it anyway.
        let remember_upload = |p: &Proof| {
            *uploaded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(p.clone());
            Ok(())
        };
        // An open upload is durable before its first part is sent, so a crash cannot lose its
        // id; that none is open needs no flush (a lost record makes the next attempt abort an
        // upload S3 no longer knows, which is harmless).
        let record_multipart =
            |upload: Option<String>| -> futures::future::BoxFuture<'_, Result<(), JournalError>> {
                Box::pin(async move {
                    let durable = upload.is_some();
                    inner
                        .journal
                        .transition(id, key, |r| r.upload_id = upload, None)?;
                    if durable {
                        inner.journal.flush().await?;
                    }
                    Ok(())
                })
            };
        let room = async {
            if streamed {
                let bytes = multipart.memory_for(rec.size, inner.settings.segment_size);
                inner.memory.reserve_bytes(bytes).await
            } else {
                inner.memory.reserve(rec.size).await
            }
        };
        // Waiting for room is not having started: a pause takes the object back too.
        let _room = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = drain.cancelled() => return Ok(()),
            r = room => r,
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            o = async {
                if streamed {
                    attempt.run_streamed(&multipart, &record_multipart, record_upload).await
                } else {
                    attempt.run(remember_upload).await
                }
            } => o,
        };
        match outcome {
            Ok(Outcome::Verified(proof)) => {
                ctx.ctl.live.limiter.on_success();
                let rule = rec.rule.as_deref();
                return verified(ctx, key, target, &dest_key, attempts, rule, proof).await;
            }
            Ok(Outcome::Conflict(reason)) => {
                return conflict(inner, id, key, target, &dest_key, attempts, reason).await;
            }
            Err(ObjectError::Journal(e)) => return Err(e),
            Err(e) if e.is_retryable() && attempts < inner.settings.max_attempts => {
                if e.is_throttle() {
                    ctx.ctl.live.limiter.on_throttle();
                }
                let delay = policy.next_backoff().unwrap_or(inner.settings.retry_max);
                tracing::warn!(job = id, key, attempts, error = %e, ?delay, "retrying object");
                remember_error(ctx, key, format!("attempt {attempts}: {e}"));
                metrics::counter!("dualseal_object_retries_total", "code" => e.code()).increment(1);
                let retry_at = crate::journal::now_ms() + delay.as_millis() as u64;
                let upload = uploaded
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                rec = inner.journal.transition(
                    id,
                    key,
                    |r| {
                        if let Some(p) = &upload {
                            mark_uploaded(r, p, attempts);
                        }
                        r.attempts = attempts;
                        r.reason = Some(e.to_string());
                        r.retry_at_ms = Some(retry_at);
                    },
                    None,
                )?;
            }
            Err(e) if e.is_systemic() => {
                // Not this object's fault: it stays pending for the resume.
                return park(ctx, &e.to_string()).await;
            }
            Err(e) => {
                let why = if e.is_retryable() {
                    format!("gave up after {attempts} attempts: {e}")
                } else {
                    e.to_string()
                };
                rec.attempts = attempts;
                return fail(ctx, key, &rec, &e.code(), why).await;
            }
        }
    }
}

/// The record of an object whose envelope S3 accepted, not yet proved.
fn mark_uploaded(r: &mut ObjectRecord, p: &Proof, attempts: u32) {
    r.state = ObjectState::Uploaded;
    r.attempts = attempts;
    r.source_etag.clone_from(&p.source_etag);
    r.source_version.clone_from(&p.source_version);
    r.ciphertext_sha256 = Some(p.ciphertext_sha256.clone());
    r.dest_etag = Some(p.dest_etag.clone());
    r.upload_id = None;
}

impl Ctx {
    fn lock_spare(&self) -> std::sync::MutexGuard<'_, Spare> {
        self.spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps a finished object's worker slot for this job's next object, unless the job has
    /// nothing more to start or a more important job waits for a slot.
    fn recycle(&self, permit: Permit) {
        let mine = self
            .ctl
            .live
            .priority
            .load(std::sync::atomic::Ordering::SeqCst);
        let outranked = self.inner.pool.best_waiting().is_some_and(|p| p > mine);
        let mut spare = self.lock_spare();
        if spare.open && !spare.queued && !outranked && !self.ctl.drain.is_cancelled() {
            spare.permits.push(permit);
        } else {
            drop(spare);
            drop(permit);
        }
    }
}

fn remember_error(ctx: &Ctx, key: &str, message: String) {
    ctx.ctl
        .live
        .progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .error(RecentError {
            at_ms: crate::journal::now_ms(),
            key: key.to_owned(),
            message,
        });
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
        Settler::Migration,
        key,
        {
            let reason = reason.clone();
            move |r| {
                r.state = ObjectState::Conflict;
                r.attempts = attempts;
                r.reason = Some(reason);
                r.code = Some("DestinationConflict".into());
                r.retry_at_ms = None;
            }
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

/// Records an object's final state with its audit event (group-committed with the other
/// objects finishing meanwhile, durable when it returns) and tells watchers.
/// Which kind of job settles an object, as the objects metric labels it.
#[derive(Clone, Copy)]
enum Settler {
    Migration,
    Verification,
}

async fn settle(
    inner: &Inner,
    id: JobId,
    by: Settler,
    key: &str,
    update: impl FnOnce(&mut ObjectRecord) + Send + 'static,
    event: AuditDraft,
) -> Result<(), JournalError> {
    let category = event.category.clone();
    let rec = inner.journal.settle(id, key, update, event).await?;
    inner.notify();
    metrics::counter!(
        "dualseal_objects_total",
        "kind" => match by {
            Settler::Migration => "migrate",
            Settler::Verification => "verify",
        },
        "category" => category.clone(),
        "state" => rec.state.as_str(),
    )
    .increment(1);
    if rec.state == ObjectState::Verified {
        metrics::counter!("dualseal_bytes_migrated_total", "category" => category)
            .increment(rec.size);
    }
    Ok(())
}

async fn verified(
    ctx: &Ctx,
    key: &str,
    target: &Target,
    dest_key: &str,
    attempts: u32,
    rule: Option<&str>,
    proof: Proof,
) -> Result<(), JournalError> {
    let (inner, id) = (ctx.inner.as_ref(), ctx.id);
    let detail = format!(
        "size={} rule={} verify={} write={}{} source_etag={} source_version={} ciphertext_sha256={} dest_etag={} s3_request_id={} kms_key={} sse={} sse_kms_key={} sse_answered_by={} envelope={}",
        proof.size,
        rule.unwrap_or("-"),
        ctx.options.verify_mode.as_str(),
        proof.how.as_str(),
        if proof.source_changed_since_listing { " source-changed-since-listing" } else { "" },
        proof.source_etag,
        proof.source_version.as_deref().unwrap_or("-"),
        if proof.ciphertext_sha256.is_empty() { "-" } else { &proof.ciphertext_sha256 },
        proof.dest_etag,
        proof.put_request_id.as_deref().unwrap_or("-"),
        proof.kms_key_arn,
        proof.server_side.sse,
        proof.server_side.kms_key_id,
        proof.server_side.answered_by,
        match proof.envelope_version {
            0 => "as-found".to_owned(),
            v => format!("v{v}"),
        },
    );
    settle(
        inner,
        id,
        Settler::Migration,
        key,
        move |r| {
            r.state = ObjectState::Verified;
            r.attempts = attempts;
            r.reason = None;
            r.retry_at_ms = None;
            r.size = proof.size;
            r.source_etag = proof.source_etag;
            r.source_version = proof.source_version;
            r.ciphertext_sha256 =
                (!proof.ciphertext_sha256.is_empty()).then_some(proof.ciphertext_sha256);
            r.dest_etag = Some(proof.dest_etag);
            r.upload_id = None;
            if proof.envelope_version != 0 {
                r.envelope_version = Some(proof.envelope_version);
            }
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
    ctx: &Ctx,
    key: &str,
    rec: &ObjectRecord,
    code: &str,
    reason: String,
) -> Result<(), JournalError> {
    let (inner, id) = (ctx.inner.as_ref(), ctx.id);
    tracing::warn!(job = id, key, %reason, "object failed");
    remember_error(ctx, key, reason.clone());
    let attempts = rec.attempts;
    settle(
        inner,
        id,
        Settler::Migration,
        key,
        {
            let (reason, code) = (reason.clone(), code.to_owned());
            move |r| {
                r.state = ObjectState::Failed;
                r.attempts = attempts;
                r.reason = Some(reason);
                r.code = Some(code);
                r.retry_at_ms = None;
            }
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
    .await?;
    check_threshold(ctx).await
}

/// Stops the job (state `Failed`) once its failures pass the threshold: more than `percent`%
/// of at least `min_objects` finished objects. Objects in flight finish; the failed ones can
/// be retried after the cause is fixed.
async fn check_threshold(ctx: &Ctx) -> Result<(), JournalError> {
    let Some(t) = ctx.options.failure_threshold else {
        return Ok(());
    };
    let counts = ctx.inner.journal.counts(ctx.id);
    let failed = counts.get(ObjectState::Failed);
    let finished = failed + counts.get(ObjectState::Verified) + counts.get(ObjectState::Conflict);
    if finished < t.min_objects.max(1) || failed * 100 <= u64::from(t.percent) * finished {
        return Ok(());
    }
    let message = format!(
        "stopped: {failed} of {finished} finished objects failed, more than the {}% threshold; `dualsealctl failures {}` lists why. Fix the cause, then `dualsealctl retry {}`",
        t.percent, ctx.id, ctx.id
    );
    stop_running(ctx, JobState::Failed, "job_failed", "threshold", message).await
}

/// Stops a running job on a problem that is the daemon's, not its objects' (no credentials, an
/// endpoint that cannot be reached): the job is paused with the reason, objects stay as they
/// are, and `resume` continues once the cause is fixed. Marking every object failed or
/// unreadable would only hide the one cause behind thousands of findings.
async fn park(ctx: &Ctx, why: &str) -> Result<(), JournalError> {
    let message = format!(
        "parked: {why}. This is not a problem of the objects; fix it, then `dualsealctl resume {}`",
        ctx.id
    );
    stop_running(ctx, JobState::Paused, "job_parked", "paused", message).await
}

/// Moves a job that is still running to `state` with `message`, audited as `kind` /
/// `outcome` once (whichever worker gets there first), and drains it.
async fn stop_running(
    ctx: &Ctx,
    state: JobState,
    kind: &'static str,
    outcome: &'static str,
    message: String,
) -> Result<(), JournalError> {
    let mut first = false;
    ctx.inner.journal.update_job(ctx.id, |j| {
        if j.state == JobState::Running {
            first = true;
            j.state = state;
            j.message = Some(message.clone());
        }
    })?;
    if first {
        tracing::error!(job = ctx.id, %message);
        ctx.inner.journal.append_audit(AuditDraft {
            job_id: ctx.id,
            kind,
            outcome,
            detail: message,
            ..Default::default()
        })?;
        ctx.inner.journal.flush().await?;
        ctx.inner.notify();
    }
    ctx.ctl.drain.cancel();
    Ok(())
}

async fn finish(inner: &Inner, id: JobId) -> Result<(), EngineError> {
    // Nothing of a finished job is left open in S3 (it is billed, and invisible): an upload
    // whose abort failed, or whose id never reached the journal, is found and aborted here.
    {
        let aborted = super::multipart::abort_open_uploads(
            Arc::clone(&inner.journal),
            inner.store.as_ref(),
            id,
            &inner.settings.multipart,
        )
        .await?;
        if aborted > 0 {
            inner.journal.append_audit(AuditDraft {
                job_id: id,
                kind: "multipart_uploads_aborted",
                detail: format!("count={aborted}"),
                ..Default::default()
            })?;
        }
    }
    let counts = inner.journal.counts(id);
    let failed = counts.get(ObjectState::Failed);
    let state = if failed == 0 {
        JobState::Succeeded
    } else {
        JobState::CompletedWithFailures
    };
    let job = inner.journal.update_job(id, |j| {
        j.syncing = false;
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
