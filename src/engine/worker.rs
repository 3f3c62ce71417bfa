//! One worker's object: an attempt, and either the settlement of its final state with its
//! audit event, or a retry recorded with its persisted backoff and handed to the job's backlog
//! (`backlog.rs`), which brings it back to a worker when it is due.

use backoff::backoff::Backoff;

use super::error::ObjectError;
use super::migrate::{Attempt, Outcome, Proof};
use super::progress::RecentError;
use super::running::{check_threshold, park, Ctx};
use super::{Inner, Target};
use crate::journal::{AuditDraft, JournalError};
use crate::model::{JobId, ObjectEvent, ObjectRecord, ObjectState};

/// Migrates one object. A retryable failure within the attempt budget is recorded with a
/// jittered, growing delay that is persisted, so a restart honours it, and the object goes to
/// the job's backlog until then; the budget spent, it ends as failed. Only journal failures
/// escape; everything else ends as verified, conflict, failed or waiting in the backlog. A
/// draining job starts no new attempt; a stopped one abandons the attempt in flight (the next
/// run redoes or adopts it).
pub(super) async fn migrate_with_retries(
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
    let mut uploaded: Option<Proof> = None;
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
    let record_upload = async |p: &Proof| {
        inner
            .journal
            .transition(id, key, upload_event(p, attempts), None)
            .await
            .map(|_| ())
    };
    // A single PUT's write is only remembered for this worker's next attempt, which then
    // proves it rather than writing again; the retry's own record carries it. Journaled
    // (unflushed) it cost a write per object and rarely outlived a crash, after which the
    // next attempt's conditional PUT finds the object and proves it anyway.
    let remember_upload = async |p: &Proof| {
        uploaded = Some(p.clone());
        Ok(())
    };
    // An open upload is durable before its first part is sent, so a crash cannot lose its
    // id; that none is open needs no flush (a lost record makes the next attempt abort an
    // upload S3 no longer knows, which is harmless).
    let record_multipart =
        |upload: Option<String>| -> futures::future::BoxFuture<'_, Result<(), JournalError>> {
            Box::pin(async move {
                let durable = upload.is_some();
                let event = match upload {
                    Some(upload_id) => ObjectEvent::UploadOpened { upload_id },
                    None => ObjectEvent::UploadClosed,
                };
                inner.journal.transition(id, key, event, None).await?;
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
            verified(ctx, key, target, &dest_key, attempts, rule, proof).await
        }
        Ok(Outcome::Conflict(reason)) => {
            conflict(inner, id, key, target, &dest_key, attempts, reason).await
        }
        Err(ObjectError::Journal(e)) => Err(e),
        Err(e) if e.is_retryable() && attempts < inner.settings.max_attempts => {
            if let Some(p) = uploaded.take() {
                inner
                    .journal
                    .transition(id, key, upload_event(&p, attempts), None)
                    .await?;
            }
            retry_later(
                ctx,
                key,
                attempts,
                &e.code(),
                &e.to_string(),
                e.is_throttle(),
            )
            .await
        }
        Err(e) if e.is_systemic() => {
            // Not this object's fault: it stays pending for the resume.
            park(ctx, &e.to_string()).await
        }
        Err(e) => {
            let why = if e.is_retryable() {
                format!("gave up after {attempts} attempts: {e}")
            } else {
                e.to_string()
            };
            rec.attempts = attempts;
            fail(ctx, key, &rec, &e.code(), why).await
        }
    }
}

/// Records a retryable failure of an object's `attempts`-th attempt and hands the object to
/// the job's backlog until its jittered, growing delay (persisted, so a restart honours it) is
/// over; the slot, the pool permit and the memory go to other objects meanwhile, and the
/// dispatcher brings this one back when it is due. A throttled attempt backs the job off.
pub(super) async fn retry_later(
    ctx: &Ctx,
    key: &str,
    attempts: u32,
    code: &str,
    error: &str,
    throttled: bool,
) -> Result<(), JournalError> {
    let inner = ctx.inner.as_ref();
    if throttled {
        ctx.ctl.live.limiter.on_throttle();
    }
    let mut policy = inner.retry.policy();
    // The delays of the attempts before this one, so this one's is as long as its number
    // says, across restarts too.
    for _ in 1..attempts {
        let _ = policy.next_backoff();
    }
    let delay = policy.next_backoff().unwrap_or(inner.retry.max());
    tracing::warn!(
        job = ctx.id,
        key,
        attempts,
        error,
        ?delay,
        "retrying object"
    );
    remember_error(ctx, key, format!("attempt {attempts}: {error}"));
    metrics::counter!("dualseal_object_retries_total", "code" => code.to_owned()).increment(1);
    let waiting = inner
        .journal
        .transition(
            ctx.id,
            key,
            ObjectEvent::RetryScheduled {
                attempts,
                reason: error.to_owned(),
                retry_at_ms: crate::journal::now_ms() + delay.as_millis() as u64,
            },
            None,
        )
        .await?;
    ctx.backlog.push(key.to_owned(), waiting);
    Ok(())
}

/// The record of an object whose envelope S3 accepted, not yet proved.
pub(super) fn upload_event(p: &Proof, attempts: u32) -> ObjectEvent {
    ObjectEvent::Uploaded {
        attempts,
        source_etag: p.source_etag.clone(),
        source_version: p.source_version.clone(),
        ciphertext_sha256: p.ciphertext_sha256.clone(),
        dest_etag: p.dest_etag.clone(),
    }
}

pub(super) fn remember_error(ctx: &Ctx, key: &str, message: String) {
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

pub(super) async fn conflict(
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
        ObjectEvent::Conflicted {
            attempts,
            reason: reason.clone(),
            code: "DestinationConflict".into(),
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

/// Which kind of job settles an object, as the objects metric labels it.
#[derive(Clone, Copy)]
pub(super) enum Settler {
    Migration,
    Verification,
}

/// Records an object's final state with its audit event (group-committed with the other
/// objects finishing meanwhile, durable when it returns) and tells watchers.
pub(super) async fn settle(
    inner: &Inner,
    id: JobId,
    by: Settler,
    key: &str,
    change: ObjectEvent,
    event: AuditDraft,
) -> Result<(), JournalError> {
    let category = event.category.clone();
    let rec = inner.journal.settle(id, key, change, event).await?;
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

pub(super) async fn verified(
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
        ObjectEvent::Verified {
            attempts,
            size: proof.size,
            source_etag: proof.source_etag,
            source_version: proof.source_version,
            ciphertext_sha256: (!proof.ciphertext_sha256.is_empty())
                .then_some(proof.ciphertext_sha256),
            dest_etag: proof.dest_etag,
            envelope_version: (proof.envelope_version != 0).then_some(proof.envelope_version),
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

pub(super) async fn fail(
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
        ObjectEvent::Failed {
            attempts,
            reason: reason.clone(),
            code: code.to_owned(),
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
