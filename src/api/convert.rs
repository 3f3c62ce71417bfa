//! Conversions between generated proto types and domain types, and engine errors to status
//! with `google.rpc` error details.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::pb;
use crate::engine::{EngineError, JobView, PlanReport, VerifyReport};
use crate::model::{
    FailureThreshold, JobLimits, JobOptions, JobState, ObjectRecord, ObjectState, VerifyMode,
};

/// The `domain` of every `ErrorInfo` the API sends.
pub const ERROR_DOMAIN: &str = "dualseal.io";

/// A timestamp from ms since the Unix epoch.
pub fn timestamp(ms: u64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        // Below 1e9: fits.
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// ms since the Unix epoch from a timestamp; `None` before 1970 or out of range.
pub fn timestamp_ms(t: &pbjson_types::Timestamp) -> Option<u64> {
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u64::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    secs.checked_mul(1000)?.checked_add(nanos / 1_000_000)
}

fn duration(secs: u64) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(secs).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

/// The `reason` of an `ErrorInfo`: the enum value's name without its prefix.
pub fn reason_name(r: pb::ErrorReason) -> &'static str {
    let name = r.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

/// A status carrying an `ErrorInfo` with `reason`, plus whatever `more` adds.
pub fn status(
    code: Code,
    reason: pb::ErrorReason,
    message: String,
    metadata: HashMap<String, String>,
    more: impl FnOnce(&mut ErrorDetails),
) -> Status {
    let mut details = ErrorDetails::with_error_info(reason_name(reason), ERROR_DOMAIN, metadata);
    more(&mut details);
    Status::with_error_details(code, message, details)
}

/// INVALID_ARGUMENT naming the field (a `BadRequest` violation).
pub fn invalid(field: &str, message: impl Into<String>) -> Status {
    let message = message.into();
    status(
        Code::InvalidArgument,
        pb::ErrorReason::InvalidArgument,
        message.clone(),
        HashMap::new(),
        |d| {
            d.add_bad_request_violation(field, message);
        },
    )
}

/// FAILED_PRECONDITION with a `PreconditionFailure` of `kind` about `subject`.
pub fn precondition(kind: &str, subject: &str, message: String) -> Status {
    status(
        Code::FailedPrecondition,
        pb::ErrorReason::Precondition,
        message.clone(),
        HashMap::new(),
        |d| {
            d.add_precondition_failure_violation(kind, subject, message);
        },
    )
}

/// PERMISSION_DENIED.
pub fn denied(message: String) -> Status {
    status(
        Code::PermissionDenied,
        pb::ErrorReason::PermissionDenied,
        message,
        HashMap::new(),
        |_| {},
    )
}

impl From<JobState> for pb::JobState {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Pending => Self::Pending,
            JobState::Running => Self::Running,
            JobState::Paused => Self::Paused,
            JobState::Cancelled => Self::Cancelled,
            JobState::Succeeded => Self::Succeeded,
            JobState::CompletedWithFailures => Self::CompletedWithFailures,
            JobState::Failed => Self::Failed,
        }
    }
}

impl From<ObjectState> for pb::ObjectState {
    fn from(s: ObjectState) -> Self {
        match s {
            ObjectState::Discovered => Self::Discovered,
            ObjectState::Uploaded => Self::Uploaded,
            ObjectState::Verified => Self::Verified,
            ObjectState::Failed => Self::Failed,
            ObjectState::Unclassified => Self::Unclassified,
            ObjectState::Conflict => Self::Conflict,
        }
    }
}

/// A job state from a request.
///
/// # Errors
/// `InvalidArgument` naming `field` for UNSPECIFIED or a number outside the enum.
pub fn job_state(field: &str, raw: i32) -> Result<JobState, Status> {
    let s = pb::JobState::try_from(raw)
        .map_err(|_| invalid(field, format!("{field}: unknown job state {raw}")))?;
    Ok(match s {
        pb::JobState::Unspecified => {
            return Err(invalid(
                field,
                format!("{field}: JOB_STATE_UNSPECIFIED is not a state; leave the list empty for every state"),
            ))
        }
        pb::JobState::Running => JobState::Running,
        pb::JobState::Paused => JobState::Paused,
        pb::JobState::Cancelled => JobState::Cancelled,
        pb::JobState::Succeeded => JobState::Succeeded,
        pb::JobState::CompletedWithFailures => JobState::CompletedWithFailures,
        pb::JobState::Failed => JobState::Failed,
        pb::JobState::Pending => JobState::Pending,
    })
}

/// A kind filter from a request: `None` for UNSPECIFIED (every kind).
///
/// # Errors
/// `InvalidArgument` for a number outside the enum.
pub fn kind_filter(raw: i32) -> Result<Option<crate::engine::KindFilter>, Status> {
    use crate::engine::KindFilter;
    match pb::JobKind::try_from(raw) {
        Ok(pb::JobKind::Unspecified) => Ok(None),
        Ok(pb::JobKind::Migrate) => Ok(Some(KindFilter::Migrate)),
        Ok(pb::JobKind::Verify) => Ok(Some(KindFilter::Verify)),
        Err(_) => Err(invalid("kind", format!("kind: unknown job kind {raw}"))),
    }
}

/// A state filter from a request: `None` for UNSPECIFIED (every state).
///
/// # Errors
/// `InvalidArgument` for a number outside the enum.
pub fn state_filter(raw: i32) -> Result<Option<ObjectState>, Status> {
    let s = pb::ObjectState::try_from(raw)
        .map_err(|_| invalid("state", format!("state: unknown object state {raw}")))?;
    Ok(match s {
        pb::ObjectState::Unspecified => None,
        pb::ObjectState::Discovered => Some(ObjectState::Discovered),
        pb::ObjectState::Uploaded => Some(ObjectState::Uploaded),
        pb::ObjectState::Verified => Some(ObjectState::Verified),
        pb::ObjectState::Failed => Some(ObjectState::Failed),
        pb::ObjectState::Unclassified => Some(ObjectState::Unclassified),
        pb::ObjectState::Conflict => Some(ObjectState::Conflict),
    })
}

impl From<JobView> for pb::Job {
    fn from(v: JobView) -> Self {
        let r = v.record;
        let c = v.counts;
        Self {
            job_id: r.id,
            state: pb::JobState::from(r.state) as i32,
            source_bucket: r.source_bucket,
            prefix: r.prefix,
            create_time: Some(timestamp(r.created_at_ms)),
            update_time: Some(timestamp(r.updated_at_ms)),
            listing_complete: r.listing_complete,
            discovered_objects: c.total(),
            verified_objects: c.get(ObjectState::Verified),
            failed_objects: c.get(ObjectState::Failed),
            unclassified_objects: c.get(ObjectState::Unclassified),
            conflict_objects: c.get(ObjectState::Conflict),
            pending_objects: c.pending(),
            verified_bytes: c.verified_bytes,
            categories: c
                .per_category
                .into_iter()
                .map(|(category, k)| pb::CategoryProgress {
                    category,
                    verified_objects: k.get(ObjectState::Verified),
                    verified_bytes: k.verified_bytes,
                    objects: k.by_state.iter().sum(),
                    bytes: k.bytes,
                    failed_objects: k.get(ObjectState::Failed),
                    pending_objects: k.pending(),
                    conflict_objects: k.get(ObjectState::Conflict),
                })
                .collect(),
            message: r.message.unwrap_or_default(),
            current_concurrency: v
                .concurrency
                .map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX)),
            throttled: v.throttled,
            kind: match r.kind {
                crate::model::JobKind::Migrate => pb::JobKind::Migrate,
                crate::model::JobKind::Verify { .. } => pb::JobKind::Verify,
            } as i32,
            verify_of_job_id: match r.kind {
                crate::model::JobKind::Verify { of } => of,
                crate::model::JobKind::Migrate => 0,
            },
            options: Some(options_to_pb(&r.options)),
            limits: Some(limits_to_pb(&v.limits)),
            objects_per_second: v.speed.objects_per_sec,
            bytes_per_second: v.speed.bytes_per_sec,
            eta: v.speed.eta_secs.map(duration),
            recent_errors: v
                .recent_errors
                .into_iter()
                .map(|e| pb::RecentError {
                    time: Some(timestamp(e.at_ms)),
                    source_key: e.key,
                    message: e.message,
                })
                .collect(),
            excluded_objects: r.excluded,
            note: v.note.unwrap_or_default(),
        }
    }
}

fn limits_to_pb(l: &JobLimits) -> pb::JobLimits {
    pb::JobLimits {
        concurrency: l.concurrency.unwrap_or(0),
        objects_per_second: l.objects_per_sec.unwrap_or(0),
        bytes_per_second: l.bytes_per_sec.unwrap_or(0),
        kms_requests_per_second: l.kms_requests_per_sec.unwrap_or(0),
    }
}

fn options_to_pb(o: &JobOptions) -> pb::JobOptions {
    pb::JobOptions {
        include: o.include.clone(),
        exclude: o.exclude.clone(),
        only_categories: o.only_categories.clone(),
        verify_mode: match o.verify_mode {
            VerifyMode::Full => pb::VerifyMode::Full,
            VerifyMode::Checksum => pb::VerifyMode::Checksum,
        } as i32,
        failure_threshold_percent: o.failure_threshold.map_or(100, |t| t.percent),
        failure_threshold_min_objects: o.failure_threshold.map_or(0, |t| t.min_objects),
        after_job_id: o.after.unwrap_or(0),
        priority: o.priority,
        limits: Some(limits_to_pb(&o.limits)),
        inventory_manifest: o.inventory.clone().unwrap_or_default(),
    }
}

/// Job options from a request; `None` (absent) is every default.
///
/// # Errors
/// `InvalidArgument` for an unknown verify mode or a threshold above 100%.
pub fn options_from_pb(o: Option<pb::JobOptions>) -> Result<JobOptions, Status> {
    let Some(o) = o else {
        return Ok(JobOptions::default());
    };
    let verify_mode = match pb::VerifyMode::try_from(o.verify_mode).map_err(|_| {
        invalid(
            "options.verify_mode",
            format!("unknown verify mode {}", o.verify_mode),
        )
    })? {
        pb::VerifyMode::Unspecified | pb::VerifyMode::Full => VerifyMode::Full,
        pb::VerifyMode::Checksum => VerifyMode::Checksum,
    };
    let failure_threshold = match o.failure_threshold_percent {
        0 => None,
        100 => Some(FailureThreshold {
            percent: 100,
            min_objects: u64::MAX,
        }),
        p if p > 100 => {
            return Err(invalid(
                "options.failure_threshold_percent",
                format!("failure threshold {p}% is above 100%"),
            ))
        }
        p => Some(FailureThreshold {
            percent: p,
            min_objects: o.failure_threshold_min_objects,
        }),
    };
    let nz32 = |v: u32| (v > 0).then_some(v);
    let l = o.limits.unwrap_or_default();
    Ok(JobOptions {
        include: o.include,
        exclude: o.exclude,
        only_categories: o.only_categories,
        verify_mode,
        failure_threshold,
        after: (o.after_job_id > 0).then_some(o.after_job_id),
        priority: o.priority,
        limits: JobLimits {
            concurrency: nz32(l.concurrency),
            objects_per_sec: nz32(l.objects_per_second),
            bytes_per_sec: (l.bytes_per_second > 0).then_some(l.bytes_per_second),
            kms_requests_per_sec: nz32(l.kms_requests_per_second),
        },
        inventory: (!o.inventory_manifest.is_empty()).then_some(o.inventory_manifest),
    })
}

/// Proto form of one object's state.
pub fn object_status(key: String, r: ObjectRecord) -> pb::ObjectStatus {
    pb::ObjectStatus {
        source_key: key,
        state: pb::ObjectState::from(r.state) as i32,
        category: r.category.unwrap_or_default(),
        destination_bucket: r.dest_bucket.unwrap_or_default(),
        destination_key: r.dest_key.unwrap_or_default(),
        size_bytes: r.size,
        attempts: r.attempts,
        reason: r.reason.unwrap_or_default(),
        source_version: r.source_version.unwrap_or_default(),
        error_code: r.code.unwrap_or_default(),
    }
}

impl From<PlanReport> for pb::PlanResponse {
    fn from(p: PlanReport) -> Self {
        Self {
            source_bucket: p.source_bucket,
            categories: p
                .categories
                .into_iter()
                .map(|c| pb::CategoryTotals {
                    category: c.category,
                    destination_bucket: c.bucket,
                    objects: c.objects,
                    bytes: c.bytes,
                    largest: c
                        .largest
                        .into_iter()
                        .map(|(key, bytes)| pb::SizedKey { key, bytes })
                        .collect(),
                    objects_by_rule: c.rules.into_iter().collect(),
                })
                .collect(),
            unclassified_objects: p.unclassified_objects,
            unclassified_bytes: p.unclassified_bytes,
            unclassified_sample: p.unclassified_sample,
            conflict_objects: p.conflict_objects,
            conflicts_sample: p
                .conflicts_sample
                .into_iter()
                .map(|(key, categories)| pb::Conflict { key, categories })
                .collect(),
            total_objects: p.total_objects,
            total_bytes: p.total_bytes,
            excluded_objects: p.excluded_objects,
            estimate: Some(pb::Estimate {
                s3_gets: p.estimate.s3_gets,
                s3_puts: p.estimate.s3_puts,
                s3_lists_and_heads: p.estimate.s3_lists_and_heads,
                kms_dualseal_requests: p.estimate.kms_dualseal,
                kms_dsse_requests: p.estimate.kms_dsse,
                dsse_gb: p.estimate.dsse_gb,
                cost_usd: p.estimate.cost_usd,
                eta: p.estimate.eta_secs.map(duration),
                basis: p.estimate.basis,
            }),
            content: p.content.map(|c| pb::ContentReport {
                inspected_objects: c.inspected,
                objects_by_kind: c.by_kind.into_iter().collect(),
                agreement_objects: c.agreements,
                disagreement_objects: c.disagreements,
                unclaimed_objects: c.unclaimed,
                unrecognised_objects: c.unrecognised,
                unreadable_objects: c.unreadable,
                first_error: c.first_error.unwrap_or_default(),
                disagreements_sample: c.disagreements_sample.into_iter().map(verdict).collect(),
                verdicts_sample: c.verdicts_sample.into_iter().map(verdict).collect(),
            }),
        }
    }
}

fn verdict(v: crate::engine::ContentVerdict) -> pb::ContentVerdict {
    pb::ContentVerdict {
        key: v.key,
        kind: v.kind,
        why: v.why,
        content_category: v.content_category.unwrap_or_default(),
        key_rules: v.key_rules,
        agrees: v.agrees,
    }
}

impl From<VerifyReport> for pb::VerifyReport {
    fn from(v: VerifyReport) -> Self {
        Self {
            job_id: v.job_id,
            checked_objects: v.checked,
            ok_objects: v.ok,
            mismatches: v
                .mismatches
                .into_iter()
                .map(|(k, r)| object_status(k, r))
                .collect(),
            categories: v
                .categories
                .into_iter()
                .map(|(category, t)| pb::CategoryVerify {
                    category,
                    checked_objects: t.checked,
                    ok_objects: t.ok,
                    objects_by_finding: t.findings.into_iter().collect(),
                })
                .collect(),
        }
    }
}

/// The proto form of an audit event recorded at `at_ms` (the time its `at` text renders).
pub fn audit_event(e: crate::audit::AuditEvent, at_ms: u64) -> pb::AuditEvent {
    pb::AuditEvent {
        seq: e.seq,
        time: Some(timestamp(at_ms)),
        job_id: e.job_id,
        kind: e.kind,
        source_key: e.source_key,
        destination_bucket: e.destination_bucket,
        destination_key: e.destination_key,
        detail: e.detail,
        prev_hash: e.prev_hash,
        hash: e.hash,
        actor: e.actor,
        category: e.category,
        outcome: e.outcome,
    }
}

/// The record form of an exported event (what its hash covers), for offline verification.
pub fn audit_record(e: pb::AuditEvent) -> crate::audit::AuditEvent {
    crate::audit::AuditEvent {
        seq: e.seq,
        at: e
            .time
            .as_ref()
            .and_then(timestamp_ms)
            .map(crate::audit::rfc3339)
            .unwrap_or_default(),
        job_id: e.job_id,
        kind: e.kind,
        actor: e.actor,
        category: e.category,
        outcome: e.outcome,
        source_key: e.source_key,
        destination_bucket: e.destination_bucket,
        destination_key: e.destination_key,
        detail: e.detail,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

/// An export filter from a request.
///
/// # Errors
/// `InvalidArgument` with a `BadRequest` violation per problem: a time before 1970, `since`
/// after `until`, a kind or outcome the trail never records.
pub fn audit_filter(r: pb::ExportAuditRequest) -> Result<crate::audit::Filter, Status> {
    let time = |field: &str, t: Option<&pbjson_types::Timestamp>| match t {
        None => Ok(None),
        Some(t) => timestamp_ms(t)
            .map(Some)
            .ok_or_else(|| invalid(field, format!("{field} is before 1970 or out of range"))),
    };
    let filter = crate::audit::Filter {
        after_seq: r.after_seq,
        job: (r.job_id != 0).then_some(r.job_id),
        since_ms: time("since", r.since.as_ref())?,
        until_ms: time("until", r.until.as_ref())?,
        category: r.category,
        kind: r.kind,
        outcome: r.outcome,
        actor: r.actor,
        source_prefix: r.source_prefix,
        destination_prefix: r.destination_prefix,
    };
    let mut problems = filter.problems();
    // Compared exactly: a range inverted by less than a millisecond is as empty.
    let inverted = match (&r.since, &r.until) {
        (Some(a), Some(b)) => (a.seconds, a.nanos) > (b.seconds, b.nanos),
        _ => false,
    };
    if inverted && !problems.iter().any(|(field, _)| *field == "since") {
        problems.push((
            "since",
            "since is after until: the range is empty".to_owned(),
        ));
    }
    if problems.is_empty() {
        return Ok(filter);
    }
    let message = problems
        .iter()
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Err(status(
        Code::InvalidArgument,
        pb::ErrorReason::InvalidArgument,
        message,
        HashMap::new(),
        |d| {
            for (field, m) in problems {
                d.add_bad_request_violation(field, m);
            }
        },
    ))
}

impl From<crate::audit::ChainReport> for pb::VerifyAuditResponse {
    fn from(r: crate::audit::ChainReport) -> Self {
        let broken_seq = match &r.broken {
            Some(crate::audit::ChainBreak::Edited { seq })
            | Some(crate::audit::ChainBreak::Reordered { seq, .. })
            | Some(crate::audit::ChainBreak::Unlinked { seq })
            | Some(crate::audit::ChainBreak::HeadMismatch { seq }) => *seq,
            Some(crate::audit::ChainBreak::Missing { expected, .. }) => *expected,
            Some(crate::audit::ChainBreak::Truncated { last, .. }) => last + 1,
            None => 0,
        };
        let (head_seq, head_hash) = r.head.unwrap_or_default();
        Self {
            events: r.events,
            intact: r.broken.is_none(),
            problem: r.broken.map(|b| b.to_string()).unwrap_or_default(),
            broken_seq,
            head_seq,
            head_hash,
        }
    }
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        use pb::ErrorReason as R;
        let msg = e.to_string();
        let plain = |code, reason| status(code, reason, msg.clone(), HashMap::new(), |_| {});
        match e {
            EngineError::NoSuchJob(id) => status(
                Code::NotFound,
                R::JobNotFound,
                msg,
                HashMap::from([("job_id".to_owned(), id.to_string())]),
                |d| {
                    d.set_resource_info(
                        "dualseal.v1.Job",
                        id.to_string(),
                        "",
                        "no job has this id",
                    );
                },
            ),
            EngineError::FailedPrecondition(_) => precondition("STATE", "", msg),
            EngineError::InvalidRequest(_) => status(
                Code::InvalidArgument,
                R::InvalidArgument,
                msg,
                HashMap::new(),
                |_| {},
            ),
            EngineError::ShuttingDown => plain(Code::Unavailable, R::ShuttingDown),
            EngineError::Journal(_) => plain(Code::Internal, R::Journal),
            EngineError::Store(_) | EngineError::Kms(_) | EngineError::Provision(_)
                if e.is_retryable() =>
            {
                plain(Code::Unavailable, R::AwsUnavailable)
            }
            EngineError::Store(_) | EngineError::Kms(_) | EngineError::Provision(_) => {
                plain(Code::FailedPrecondition, R::Aws)
            }
            EngineError::Inventory(_) => plain(Code::FailedPrecondition, R::Inventory),
        }
    }
}

fn change_to_pb(c: crate::provision::Change) -> pb::ProvisionChange {
    pb::ProvisionChange {
        resource: c.resource,
        category: c.category,
        setting: c.setting,
        live: c.live,
        desired: c.desired,
        action: match c.action {
            crate::provision::Action::Create => pb::ProvisionAction::Create,
            crate::provision::Action::Update => pb::ProvisionAction::Update,
        } as i32,
        weakens: c.weakens,
    }
}

impl From<crate::provision::Report> for pb::ProvisionResponse {
    fn from(r: crate::provision::Report) -> Self {
        Self {
            changes: r.changes.into_iter().map(change_to_pb).collect(),
            applied: r.applied.into_iter().map(change_to_pb).collect(),
            documents: r
                .documents
                .into_iter()
                .map(|d| pb::PolicyDocument {
                    name: d.name,
                    kind: policy_kind(d.kind) as i32,
                    json: d.json,
                })
                .collect(),
            terraform_json: r.terraform,
            notes: r.notes,
        }
    }
}

impl From<crate::engine::MappingEntry> for pb::MappingEntry {
    fn from(m: crate::engine::MappingEntry) -> Self {
        Self {
            source_bucket: m.source_bucket,
            source_key: m.source_key,
            source_version: m.source_version.unwrap_or_default(),
            destination_bucket: m.dest_bucket,
            destination_key: m.dest_key,
            category: m.category,
            kms_key_arn: m.kms_key_arn,
            envelope_version: u32::from(m.envelope_version),
        }
    }
}

impl From<crate::engine::CutoverReport> for pb::CutoverCheckResponse {
    fn from(r: crate::engine::CutoverReport) -> Self {
        Self {
            job_id: r.job_id,
            ready: r.ready,
            checks: r
                .checks
                .into_iter()
                .map(|c| pb::CutoverCheckItem {
                    name: c.name.into(),
                    ok: c.ok,
                    detail: c.detail,
                    blocking: c.blocking,
                })
                .collect(),
            new_in_source_objects: r.new_in_source,
            changed_in_source_objects: r.changed_in_source,
            deleted_in_source_objects: r.deleted_in_source,
            copies_checked: r.copies_checked,
            copies_failed: r.copies_failed_count,
        }
    }
}

fn policy_kind(kind: &str) -> pb::PolicyKind {
    match kind {
        "key-policy" => pb::PolicyKind::KeyPolicy,
        "bucket-policy" => pb::PolicyKind::BucketPolicy,
        "identity-policy" => pb::PolicyKind::IdentityPolicy,
        _ => pb::PolicyKind::Unspecified,
    }
}

/// The engine's decommission mode for a request's.
///
/// # Errors
/// `InvalidArgument` naming `mode` for UNSPECIFIED or a number outside the enum.
pub fn decommission_mode(raw: i32) -> Result<crate::engine::DecommissionMode, Status> {
    use crate::engine::DecommissionMode as M;
    match pb::DecommissionMode::try_from(raw) {
        Ok(pb::DecommissionMode::Lockdown) => Ok(M::Lockdown),
        Ok(pb::DecommissionMode::Rollback) => Ok(M::Rollback),
        Ok(pb::DecommissionMode::Archive) => Ok(M::Archive),
        Ok(pb::DecommissionMode::Delete) => Ok(M::Delete),
        Ok(pb::DecommissionMode::Unspecified) | Err(_) => Err(invalid(
            "mode",
            "mode is required: DECOMMISSION_MODE_LOCKDOWN, _ROLLBACK, _ARCHIVE or _DELETE",
        )),
    }
}

/// The proto form of the engine's decommission mode.
pub fn decommission_mode_to_pb(m: crate::engine::DecommissionMode) -> pb::DecommissionMode {
    use crate::engine::DecommissionMode as M;
    match m {
        M::Lockdown => pb::DecommissionMode::Lockdown,
        M::Rollback => pb::DecommissionMode::Rollback,
        M::Archive => pb::DecommissionMode::Archive,
        M::Delete => pb::DecommissionMode::Delete,
    }
}

/// A plan's token expiry, `secs` from now.
pub fn expire_time(secs: u64) -> pbjson_types::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    timestamp(now.saturating_add(secs.saturating_mul(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_to_the_audit_trail_text() {
        for at in [
            "2026-11-27T15:13:06.100Z",
            "1970-01-01T00:00:00.000Z",
            "2026-12-03T23:59:59.999Z",
        ] {
            let ms = crate::audit::parse_time(at).expect("valid");
            let back = timestamp_ms(&timestamp(ms)).expect("in range");
            assert_eq!(crate::audit::rfc3339(back), at);
        }
        assert_eq!(
            timestamp_ms(&pbjson_types::Timestamp {
                seconds: -1,
                nanos: 0
            }),
            None
        );
        assert_eq!(
            timestamp_ms(&pbjson_types::Timestamp {
                seconds: 1,
                nanos: 1_000_000_000
            }),
            None
        );
    }

    #[test]
    fn engine_errors_carry_a_stable_reason() {
        let s = Status::from(EngineError::NoSuchJob(7));
        assert_eq!(s.code(), Code::NotFound);
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("JOB_NOT_FOUND", ERROR_DOMAIN)
        );
        assert_eq!(info.metadata.get("job_id").map(String::as_str), Some("7"));
    }

    #[test]
    fn an_export_filter_that_can_match_nothing_is_refused_field_by_field() {
        let req = pb::ExportAuditRequest {
            kind: "object_verifed".into(),
            outcome: "okay".into(),
            since: Some(timestamp(2_000)),
            until: Some(timestamp(1_000)),
            ..Default::default()
        };
        let s = audit_filter(req).expect_err("refused");
        assert_eq!(s.code(), Code::InvalidArgument);
        let fields: Vec<String> = s
            .get_details_bad_request()
            .expect("bad request")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["kind", "outcome", "since"]);
        assert!(audit_filter(pb::ExportAuditRequest {
            kind: "object_verified".into(),
            ..Default::default()
        })
        .is_ok());
    }
}
