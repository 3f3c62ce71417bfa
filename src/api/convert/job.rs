//! Jobs, their options and limits, and objects' states.

use tonic::Status;

use super::super::pb;
use super::{duration, invalid, timestamp};
use crate::engine::JobView;
use crate::model::{
    FailureThreshold, JobLimits, JobOptions, JobState, ObjectRecord, ObjectState, VerifyMode,
};

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
