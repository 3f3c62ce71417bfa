//! Conversions between generated proto types and domain types, and engine errors to status.

use tonic::Status;

use super::pb;
use crate::engine::{EngineError, JobView, PlanReport, VerifyReport};
use crate::journal::{
    FailureThreshold, JobLimits, JobOptions, JobState, ObjectRecord, ObjectState, VerifyMode,
};

use crate::audit::rfc3339;

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

/// A state filter from a request: `None` for UNSPECIFIED (every state).
///
/// # Errors
/// `InvalidArgument` for a number outside the enum.
pub fn state_filter(raw: i32) -> Result<Option<ObjectState>, Status> {
    let s = pb::ObjectState::try_from(raw)
        .map_err(|_| Status::invalid_argument(format!("unknown object state {raw}")))?;
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
            created_at: rfc3339(r.created_at_ms),
            updated_at: rfc3339(r.updated_at_ms),
            listing_complete: r.listing_complete,
            discovered: c.total(),
            verified: c.get(ObjectState::Verified),
            failed: c.get(ObjectState::Failed),
            unclassified: c.get(ObjectState::Unclassified),
            conflicts: c.get(ObjectState::Conflict),
            in_progress: c.pending(),
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
                crate::journal::JobKind::Migrate => "migrate".into(),
                crate::journal::JobKind::Verify { .. } => "verify".into(),
            },
            verify_of: match r.kind {
                crate::journal::JobKind::Verify { of } => of,
                crate::journal::JobKind::Migrate => 0,
            },
            state_name: r.state.as_str().into(),
            options: Some(options_to_pb(&r.options)),
            limits: Some(limits_to_pb(&v.limits)),
            objects_per_sec: v.speed.objects_per_sec,
            bytes_per_sec: v.speed.bytes_per_sec,
            eta_seconds: v.speed.eta_secs,
            recent_errors: v
                .recent_errors
                .into_iter()
                .map(|e| pb::RecentError {
                    at: rfc3339(e.at_ms),
                    source_key: e.key,
                    message: e.message,
                })
                .collect(),
            excluded: r.excluded,
            note: v.note.unwrap_or_default(),
        }
    }
}

fn limits_to_pb(l: &JobLimits) -> pb::JobLimits {
    pb::JobLimits {
        concurrency: l.concurrency.unwrap_or(0),
        objects_per_sec: l.objects_per_sec.unwrap_or(0),
        bytes_per_sec: l.bytes_per_sec.unwrap_or(0),
        kms_requests_per_sec: l.kms_requests_per_sec.unwrap_or(0),
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
        after_job: o.after.unwrap_or(0),
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
    let verify_mode = match pb::VerifyMode::try_from(o.verify_mode)
        .map_err(|_| Status::invalid_argument(format!("unknown verify mode {}", o.verify_mode)))?
    {
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
            return Err(Status::invalid_argument(format!(
                "failure threshold {p}% is above 100%"
            )))
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
        after: (o.after_job > 0).then_some(o.after_job),
        priority: o.priority,
        limits: JobLimits {
            concurrency: nz32(l.concurrency),
            objects_per_sec: nz32(l.objects_per_sec),
            bytes_per_sec: (l.bytes_per_sec > 0).then_some(l.bytes_per_sec),
            kms_requests_per_sec: nz32(l.kms_requests_per_sec),
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
        size: r.size,
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
                    rules: c.rules.into_iter().collect(),
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
                kms_dualseal: p.estimate.kms_dualseal,
                kms_dsse: p.estimate.kms_dsse,
                dsse_gb: p.estimate.dsse_gb,
                cost_usd: p.estimate.cost_usd,
                eta_seconds: p.estimate.eta_secs,
                basis: p.estimate.basis,
            }),
            content: p.content.map(|c| pb::ContentReport {
                inspected: c.inspected,
                by_kind: c.by_kind.into_iter().collect(),
                agreements: c.agreements,
                disagreements: c.disagreements,
                unclaimed: c.unclaimed,
                unrecognised: c.unrecognised,
                unreadable: c.unreadable,
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

impl From<VerifyReport> for pb::VerifyJobResponse {
    fn from(v: VerifyReport) -> Self {
        Self {
            job_id: v.job_id,
            checked: v.checked,
            ok: v.ok,
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
                    checked: t.checked,
                    ok: t.ok,
                    findings: t.findings.into_iter().collect(),
                })
                .collect(),
        }
    }
}

impl From<crate::audit::AuditEvent> for pb::AuditEvent {
    fn from(e: crate::audit::AuditEvent) -> Self {
        Self {
            seq: e.seq,
            at: e.at,
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
}

/// An export filter from a request.
///
/// # Errors
/// `InvalidArgument` naming a time that is not RFC 3339.
pub fn audit_filter(r: pb::ExportAuditRequest) -> Result<crate::audit::Filter, Status> {
    let time = |s: &str| {
        if s.is_empty() {
            Ok(None)
        } else {
            crate::audit::parse_time(s)
                .map(Some)
                .map_err(Status::invalid_argument)
        }
    };
    Ok(crate::audit::Filter {
        job: (r.job_id != 0).then_some(r.job_id),
        since_ms: time(&r.since)?,
        until_ms: time(&r.until)?,
        category: r.category,
        kind: r.kind,
        outcome: r.outcome,
        actor: r.actor,
        source_prefix: r.source_prefix,
        destination_prefix: r.destination_prefix,
    })
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
        let msg = e.to_string();
        match e {
            EngineError::NoSuchJob(_) => Status::not_found(msg),
            EngineError::FailedPrecondition(_) => Status::failed_precondition(msg),
            EngineError::InvalidRequest(_) => Status::invalid_argument(msg),
            EngineError::ShuttingDown => Status::unavailable(msg),
            EngineError::Journal(_) => Status::internal(msg),
            EngineError::Store(_) | EngineError::Kms(_) if e.is_retryable() => {
                Status::unavailable(msg)
            }
            EngineError::Store(_) | EngineError::Kms(_) => Status::failed_precondition(msg),
            EngineError::Provision(_) if e.is_retryable() => Status::unavailable(msg),
            EngineError::Provision(_) => Status::failed_precondition(msg),
            EngineError::Inventory(_) => Status::failed_precondition(msg),
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
            crate::provision::Action::Create => "create".into(),
            crate::provision::Action::Update => "update".into(),
        },
        weakens: c.weakens,
    }
}

impl From<crate::provision::Report> for pb::ProvisionReport {
    fn from(r: crate::provision::Report) -> Self {
        Self {
            changes: r.changes.into_iter().map(change_to_pb).collect(),
            applied: r.applied.into_iter().map(change_to_pb).collect(),
            documents: r
                .documents
                .into_iter()
                .map(|d| pb::PolicyDocument {
                    name: d.name,
                    kind: d.kind.into(),
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

impl From<crate::engine::CutoverReport> for pb::CutoverReport {
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
            new_in_source: r.new_in_source,
            changed_in_source: r.changed_in_source,
            deleted_in_source: r.deleted_in_source,
        }
    }
}
