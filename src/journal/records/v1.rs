//! Version 1 of the stored records: the shape of every record the journal has written so far.
//!
//! Frozen. A change to the model that the stored form must follow is a new version (`v2.rs`)
//! written from then on, with this one kept for reading and upgraded to the model; editing a
//! field here would misread every journal on disk. Objects are written on every transition,
//! so their shape borrows the model's strings instead of copying them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::model::{
    DecommissionState, FailureThreshold, JobId, JobKind, JobLimits, JobOptions, JobRecord,
    JobState, Lockdown, ObjectRecord, ObjectState, VerifyMode,
};

type Text<'a> = Cow<'a, str>;

fn text(s: &str) -> Text<'_> {
    Cow::Borrowed(s)
}

fn opt_text(s: &Option<String>) -> Option<Text<'_>> {
    s.as_deref().map(Cow::Borrowed)
}

fn owned(t: Option<Text<'_>>) -> Option<String> {
    t.map(Cow::into_owned)
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ObjectStateV1 {
    Discovered,
    Uploaded,
    Verified,
    Failed,
    Unclassified,
    Conflict,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Object<'a> {
    state: ObjectStateV1,
    size: u64,
    source_etag: Text<'a>,
    source_version: Option<Text<'a>>,
    category: Option<Text<'a>>,
    dest_bucket: Option<Text<'a>>,
    dest_key: Option<Text<'a>>,
    attempts: u32,
    reason: Option<Text<'a>>,
    ciphertext_sha256: Option<Text<'a>>,
    dest_etag: Option<Text<'a>>,
    updated_at_ms: u64,
    #[serde(default)]
    retry_at_ms: Option<u64>,
    #[serde(default)]
    rule: Option<Text<'a>>,
    #[serde(default)]
    code: Option<Text<'a>>,
    #[serde(default)]
    envelope_version: Option<u8>,
    #[serde(default)]
    upload_id: Option<Text<'a>>,
}

impl From<ObjectState> for ObjectStateV1 {
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

impl From<ObjectStateV1> for ObjectState {
    fn from(s: ObjectStateV1) -> Self {
        match s {
            ObjectStateV1::Discovered => Self::Discovered,
            ObjectStateV1::Uploaded => Self::Uploaded,
            ObjectStateV1::Verified => Self::Verified,
            ObjectStateV1::Failed => Self::Failed,
            ObjectStateV1::Unclassified => Self::Unclassified,
            ObjectStateV1::Conflict => Self::Conflict,
        }
    }
}

impl<'a> From<&'a ObjectRecord> for Object<'a> {
    fn from(r: &'a ObjectRecord) -> Self {
        Self {
            state: r.state.into(),
            size: r.size,
            source_etag: text(&r.source_etag),
            source_version: opt_text(&r.source_version),
            category: opt_text(&r.category),
            dest_bucket: opt_text(&r.dest_bucket),
            dest_key: opt_text(&r.dest_key),
            attempts: r.attempts,
            reason: opt_text(&r.reason),
            ciphertext_sha256: opt_text(&r.ciphertext_sha256),
            dest_etag: opt_text(&r.dest_etag),
            updated_at_ms: r.updated_at_ms,
            retry_at_ms: r.retry_at_ms,
            rule: opt_text(&r.rule),
            code: opt_text(&r.code),
            envelope_version: r.envelope_version,
            upload_id: opt_text(&r.upload_id),
        }
    }
}

impl From<Object<'_>> for ObjectRecord {
    fn from(o: Object<'_>) -> Self {
        Self {
            state: o.state.into(),
            size: o.size,
            source_etag: o.source_etag.into_owned(),
            source_version: owned(o.source_version),
            category: owned(o.category),
            dest_bucket: owned(o.dest_bucket),
            dest_key: owned(o.dest_key),
            attempts: o.attempts,
            reason: owned(o.reason),
            ciphertext_sha256: owned(o.ciphertext_sha256),
            dest_etag: owned(o.dest_etag),
            updated_at_ms: o.updated_at_ms,
            retry_at_ms: o.retry_at_ms,
            rule: owned(o.rule),
            code: owned(o.code),
            envelope_version: o.envelope_version,
            upload_id: owned(o.upload_id),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum JobStateV1 {
    Pending,
    Running,
    Paused,
    Cancelled,
    Succeeded,
    CompletedWithFailures,
    Failed,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum VerifyModeV1 {
    #[default]
    Full,
    Checksum,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum JobKindV1 {
    #[default]
    Migrate,
    Verify {
        of: JobId,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Limits {
    #[serde(default)]
    concurrency: Option<u32>,
    #[serde(default)]
    objects_per_sec: Option<u32>,
    #[serde(default)]
    bytes_per_sec: Option<u64>,
    #[serde(default)]
    kms_requests_per_sec: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Threshold {
    percent: u32,
    min_objects: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Options {
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    only_categories: Vec<String>,
    #[serde(default)]
    verify_mode: VerifyModeV1,
    #[serde(default)]
    failure_threshold: Option<Threshold>,
    #[serde(default)]
    after: Option<JobId>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    inventory: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Job {
    id: JobId,
    state: JobStateV1,
    source_bucket: String,
    prefix: String,
    created_at_ms: u64,
    updated_at_ms: u64,
    listing_token: Option<String>,
    listing_complete: bool,
    message: Option<String>,
    #[serde(default)]
    kind: JobKindV1,
    #[serde(default)]
    options: Options,
    #[serde(default)]
    excluded: u64,
    #[serde(default)]
    syncing: bool,
}

impl From<&JobRecord> for Job {
    fn from(j: &JobRecord) -> Self {
        let o = &j.options;
        Self {
            id: j.id,
            state: match j.state {
                JobState::Pending => JobStateV1::Pending,
                JobState::Running => JobStateV1::Running,
                JobState::Paused => JobStateV1::Paused,
                JobState::Cancelled => JobStateV1::Cancelled,
                JobState::Succeeded => JobStateV1::Succeeded,
                JobState::CompletedWithFailures => JobStateV1::CompletedWithFailures,
                JobState::Failed => JobStateV1::Failed,
            },
            source_bucket: j.source_bucket.clone(),
            prefix: j.prefix.clone(),
            created_at_ms: j.created_at_ms,
            updated_at_ms: j.updated_at_ms,
            listing_token: j.listing_token.clone(),
            listing_complete: j.listing_complete,
            message: j.message.clone(),
            kind: match j.kind {
                JobKind::Migrate => JobKindV1::Migrate,
                JobKind::Verify { of } => JobKindV1::Verify { of },
            },
            options: Options {
                include: o.include.clone(),
                exclude: o.exclude.clone(),
                only_categories: o.only_categories.clone(),
                verify_mode: match o.verify_mode {
                    VerifyMode::Full => VerifyModeV1::Full,
                    VerifyMode::Checksum => VerifyModeV1::Checksum,
                },
                failure_threshold: o.failure_threshold.map(|t| Threshold {
                    percent: t.percent,
                    min_objects: t.min_objects,
                }),
                after: o.after,
                priority: o.priority,
                limits: Limits {
                    concurrency: o.limits.concurrency,
                    objects_per_sec: o.limits.objects_per_sec,
                    bytes_per_sec: o.limits.bytes_per_sec,
                    kms_requests_per_sec: o.limits.kms_requests_per_sec,
                },
                inventory: o.inventory.clone(),
            },
            excluded: j.excluded,
            syncing: j.syncing,
        }
    }
}

impl From<Job> for JobRecord {
    fn from(j: Job) -> Self {
        let o = j.options;
        Self {
            id: j.id,
            state: match j.state {
                JobStateV1::Pending => JobState::Pending,
                JobStateV1::Running => JobState::Running,
                JobStateV1::Paused => JobState::Paused,
                JobStateV1::Cancelled => JobState::Cancelled,
                JobStateV1::Succeeded => JobState::Succeeded,
                JobStateV1::CompletedWithFailures => JobState::CompletedWithFailures,
                JobStateV1::Failed => JobState::Failed,
            },
            source_bucket: j.source_bucket,
            prefix: j.prefix,
            created_at_ms: j.created_at_ms,
            updated_at_ms: j.updated_at_ms,
            listing_token: j.listing_token,
            listing_complete: j.listing_complete,
            message: j.message,
            kind: match j.kind {
                JobKindV1::Migrate => JobKind::Migrate,
                JobKindV1::Verify { of } => JobKind::Verify { of },
            },
            options: JobOptions {
                include: o.include,
                exclude: o.exclude,
                only_categories: o.only_categories,
                verify_mode: match o.verify_mode {
                    VerifyModeV1::Full => VerifyMode::Full,
                    VerifyModeV1::Checksum => VerifyMode::Checksum,
                },
                failure_threshold: o.failure_threshold.map(|t| FailureThreshold {
                    percent: t.percent,
                    min_objects: t.min_objects,
                }),
                after: o.after,
                priority: o.priority,
                limits: JobLimits {
                    concurrency: o.limits.concurrency,
                    objects_per_sec: o.limits.objects_per_sec,
                    bytes_per_sec: o.limits.bytes_per_sec,
                    kms_requests_per_sec: o.limits.kms_requests_per_sec,
                },
                inventory: o.inventory,
            },
            excluded: j.excluded,
            syncing: j.syncing,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LockdownV1 {
    previous_policy: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Decommission {
    #[serde(default)]
    lockdown: Option<LockdownV1>,
    #[serde(default)]
    archived: bool,
}

impl From<&DecommissionState> for Decommission {
    fn from(d: &DecommissionState) -> Self {
        Self {
            lockdown: d.lockdown.as_ref().map(|l| LockdownV1 {
                previous_policy: l.previous_policy.clone(),
            }),
            archived: d.archived,
        }
    }
}

impl From<Decommission> for DecommissionState {
    fn from(d: Decommission) -> Self {
        Self {
            lockdown: d.lockdown.map(|l| Lockdown {
                previous_policy: l.previous_policy,
            }),
            archived: d.archived,
        }
    }
}
