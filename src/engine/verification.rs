//! A verification job's work on one object: re-check a copy its migration job verified,
//! and record the finding. Reports; never repairs.

use super::running::{park, Ctx};
use super::worker::{retry_later, settle, Settler};
use super::Target;
use crate::journal::{AuditDraft, JournalError};
use crate::model::{ObjectEvent, ObjectRecord, ObjectState};

/// Objects a verification job takes from the journal per page.
pub(super) const VERIFY_PAGE: usize = 1000;

/// A verification job's record of an object the checked job verified.
pub(super) fn to_recheck(orig: ObjectRecord) -> ObjectRecord {
    ObjectRecord {
        state: ObjectState::Discovered,
        attempts: 0,
        reason: None,
        retry_at_ms: None,
        ..orig
    }
}

/// Re-checks one object for a verification job: verified when it still holds, failed with
/// `KIND: detail` otherwise. A check that S3 or KMS could not answer for now (throttled, a
/// 5xx) is no finding: it is made again after a backoff, like a migration's attempt, and only
/// a spent attempt budget makes the copy `unreadable`. Reports; never repairs.
pub(super) async fn recheck(
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
        f = super::plan::check_one(inner, &ctx.keys, &inner.settings.source_bucket, targets, key, &rec) => f,
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
        // A throttled or failing service says nothing about the copy: the check is made
        // again, as a migration's attempt would be, until the attempt budget is spent.
        super::plan::Finding::Transient {
            code,
            error,
            throttled,
        } => {
            let attempts = rec.attempts + 1;
            if attempts < inner.settings.max_attempts {
                return retry_later(ctx, key, attempts, &code, &error, throttled).await;
            }
            (
                ObjectState::Failed,
                "unreadable",
                format!("gave up after {attempts} attempts: {error}"),
            )
        }
    };
    // An object checked, whatever it showed, is the rate the adaptive limit climbs on.
    ctx.ctl.live.limiter.on_success();
    // What a held copy showed goes to the audit trail; only a finding is the object's reason.
    let reason = (outcome != "ok" && !detail.is_empty()).then(|| format!("{outcome}: {detail}"));
    settle(
        inner,
        id,
        Settler::Verification,
        key,
        ObjectEvent::Rechecked {
            holds: state == ObjectState::Verified,
            reason: reason.clone(),
            code: (state == ObjectState::Failed).then(|| outcome.to_owned()),
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
