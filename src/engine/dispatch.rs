//! Dispatch: hands a job's pending objects to the shared worker pool, as slots, limits and
//! memory allow, fetching the next page of pending objects while the workers run.

use std::sync::Arc;

use tokio::task::JoinSet;

use super::error::EngineError;
use super::running::Ctx;
use super::verification::recheck;
use super::worker::migrate_with_retries;
use super::Target;
use crate::journal::JournalError;
use crate::model::{JobKind, ObjectRecord};
use crate::store::ListPage;

/// Runs a page's dispatch and the fetch of the next page together: the next page, or `None`
/// when the dispatch stopped the job (paused, cancelled, shutdown). A fetch still under way
/// then is dropped rather than awaited through its retries; its page was not recorded, so a
/// resume fetches it again.
pub(super) async fn dispatch_and_fetch(
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

pub(super) fn reap(
    res: Result<Result<(), JournalError>, tokio::task::JoinError>,
) -> Result<(), EngineError> {
    match res {
        Ok(r) => r.map_err(EngineError::Journal),
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(EngineError::FailedPrecondition(format!(
            "worker panicked: {e}"
        ))),
    }
}

/// Hands objects to workers under the job's limits and the daemon's shared pool, each object
/// due in the job's backlog before the next of `objects`; returns
/// true once the job is draining (paused, cancelled, over its failure threshold) or the daemon
/// stops.
pub(super) async fn dispatch(
    ctx: &Arc<Ctx>,
    job_kind: JobKind,
    objects: Vec<(String, ObjectRecord)>,
    targets: &Arc<Vec<Target>>,
    workers: &mut JoinSet<Result<(), JournalError>>,
) -> Result<bool, EngineError> {
    let drain = &ctx.ctl.drain;
    let live = &ctx.ctl.live;
    let mut fresh = objects.into_iter();
    // What is due in the backlog goes before anything new.
    while let Some((key, rec)) = ctx
        .backlog
        .pop_due(crate::journal::now_ms())
        .or_else(|| fresh.next())
    {
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
        // Objects of a job bound by its KMS rate would wait for tokens holding slots (and so
        // a slot of the daemon's pool) that other jobs could use.
        tokio::select! {
            _ = drain.cancelled() => return Ok(true),
            () = live.rates.kms_room() => {}
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
