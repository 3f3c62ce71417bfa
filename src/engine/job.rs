//! Running one job: list the source page by page, record each page, and feed pending objects
//! to a bounded pool of workers, each retrying its object within the attempt budget.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::dispatch::{dispatch, dispatch_and_fetch, reap};
use super::error::EngineError;
use super::rate::RateLimitedKeys;
use super::running::{Control, Ctx, Spare};
use super::verification::{to_recheck, VERIFY_PAGE};
use super::{Inner, Scope};
use crate::classify::Classification;
use crate::journal::{AuditDraft, JournalError};
use crate::model::{JobId, JobKind, JobRecord, JobState, ObjectRecord, ObjectState};
use crate::store::{ListPage, ListedObject};

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

/// The audit event of an object that the listing leaves in place.
pub(super) fn listing_event(job: JobId, key: &str, rec: &ObjectRecord) -> Option<AuditDraft> {
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
            let parked = inner
                .journal
                .update_job(id, {
                    let message = message.clone();
                    move |j| {
                        j.state = JobState::Paused;
                        j.message = Some(message);
                    }
                })
                .await;
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
pub(super) async fn record_end(
    inner: &Inner,
    id: JobId,
    draft: AuditDraft,
    update: impl FnOnce(&mut crate::model::JobRecord) + Send + 'static,
) {
    let res = match inner.journal.update_job(id, update).await {
        Ok(_) => inner.journal.append_audit(draft).await.map(|_| ()),
        Err(e) => Err(e),
    };
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
    // Resolving the keys and buckets retries for minutes when S3 or KMS refuse; a pause or
    // cancel meanwhile ends it (the state is already recorded by the call).
    let targets = tokio::select! {
        _ = ctl.drain.cancelled() => return Ok(()),
        t = inner.resolve_targets(false) => Arc::new(t?),
    };
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
        backlog: super::backlog::Backlog::default(),
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
    // Objects that were waiting out a retry's delay wait on, in the backlog, and go first
    // once due; the others go in key order.
    let (waiting, fresh): (Vec<_>, Vec<_>) = leftover
        .into_iter()
        .partition(|(_, rec)| rec.retry_at_ms.is_some());
    for (key, rec) in waiting {
        ctx.backlog.push(key, rec);
    }
    let mut stopped = dispatch(&ctx, job.kind, fresh, &targets, &mut workers).await?;

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
        let pending = inner
            .journal
            .record_page_audited(
                id,
                records,
                next_token.clone(),
                crate::journal::PagePass {
                    excluded,
                    requeue_changed: job.syncing,
                },
                Box::new(move |key, rec| listing_event(id, key, rec)),
                Some(AuditDraft {
                    job_id: id,
                    kind: "page_listed",
                    detail: format!(
                        "objects={listed} excluded={excluded} more={}",
                        next_token.is_some()
                    ),
                    ..Default::default()
                }),
            )
            .await?;
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
    if !stopped {
        stopped = work_off_backlog(&ctx, job.kind, &targets, &mut workers).await?;
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

/// After the last page: dispatches the objects waiting for a retry as they fall due, until
/// none waits and no worker runs (a worker may put its object back). Returns true when the
/// job was stopped meanwhile.
async fn work_off_backlog(
    ctx: &Arc<Ctx>,
    kind: JobKind,
    targets: &Arc<Vec<super::Target>>,
    workers: &mut JoinSet<Result<(), JournalError>>,
) -> Result<bool, EngineError> {
    loop {
        if dispatch(ctx, kind, Vec::new(), targets, workers).await? {
            return Ok(true);
        }
        if ctx.backlog.is_empty() && workers.is_empty() {
            return Ok(false);
        }
        let wait = ctx.backlog.next_due().map(|due| {
            std::time::Duration::from_millis(due.saturating_sub(crate::journal::now_ms()))
        });
        tokio::select! {
            _ = ctx.ctl.drain.cancelled() => return Ok(true),
            Some(res) = workers.join_next(), if !workers.is_empty() => reap(res)?,
            () = sleep_or_forever(wait) => {}
            () = ctx.backlog.changed() => {}
        }
    }
}

async fn sleep_or_forever(wait: Option<std::time::Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
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
    let updated = inner
        .journal
        .update_job(job.id, |j| {
            if j.state == JobState::Pending {
                j.state = JobState::Running;
            }
        })
        .await?;
    if updated.state != JobState::Running {
        return Ok(false);
    }
    if job.state == JobState::Pending {
        inner
            .journal
            .append_audit(AuditDraft {
                job_id: job.id,
                kind: "job_dequeued",
                detail: format!("job {after} has ended; starting"),
                ..Default::default()
            })
            .await?;
        inner.journal.flush().await?;
        tracing::info!(job = job.id, after, "queued job starting");
        inner.notify();
    }
    Ok(true)
}

pub(super) async fn finish(inner: &Inner, id: JobId) -> Result<(), EngineError> {
    // Nothing of a finished job is left open in S3 (it is billed, and invisible): an upload
    // whose abort failed, or whose id never reached the journal, is found and aborted here.
    super::multipart::abort_open_uploads(
        Arc::clone(&inner.journal),
        inner.store.as_ref(),
        id,
        &inner.settings.multipart,
    )
    .await?;
    let counts = inner.journal.counts(id);
    let failed = counts.get(ObjectState::Failed);
    let state = if failed == 0 {
        JobState::Succeeded
    } else {
        JobState::CompletedWithFailures
    };
    let job = inner.journal.update_job(id, move |j| {
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
    }).await?;
    inner
        .journal
        .append_audit(AuditDraft {
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
        })
        .await?;
    inner.journal.flush().await?;
    tracing::info!(job = id, state = ?job.state, "job finished");
    Ok(())
}
