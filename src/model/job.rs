//! Jobs as the operator sees them: what a job covers, how it runs, its limits and its state.
//!
//! Stored by the journal in its own versioned form (`journal/records`); the options serialize
//! only for the audit trail, which records them as given.

use serde::Serialize;

/// Identifies a job; allocated in increasing order.
pub type JobId = u64;

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Created, waiting for the job it was queued behind to end.
    Pending,
    /// Listing and/or migrating.
    Running,
    /// Stopped by the operator; resumable.
    Paused,
    /// Stopped by the operator for good.
    Cancelled,
    /// Every classified object verified.
    Succeeded,
    /// Finished with some objects failed.
    CompletedWithFailures,
    /// Could not run at all.
    Failed,
}

impl JobState {
    /// Whether the job can still make progress.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Running | Self::Paused)
    }

    /// Lower-case name, as the API and CLI show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Succeeded => "succeeded",
            Self::CompletedWithFailures => "completed_with_failures",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a migrated object is proved before it is recorded as verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Read the destination back, open it through KMS and compare with the source bytes.
    #[default]
    Full,
    /// Open the envelope locally before the write and compare with the source; let S3 prove
    /// the stored bytes equal it (`x-amz-checksum-sha256` on the write, checked again on a
    /// HEAD with the server-side encryption). Saves a GET and a KMS Decrypt per object.
    Checksum,
}

impl VerifyMode {
    /// Name in the API, the CLI and audit details.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Checksum => "checksum",
        }
    }
}

/// Live limits of one job; `None` means the daemon's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobLimits {
    /// Objects in flight at most (the adaptive limit stays at or below it).
    pub concurrency: Option<u32>,
    /// Objects started per second.
    pub objects_per_sec: Option<u32>,
    /// Source bytes read per second.
    pub bytes_per_sec: Option<u64>,
    /// KMS requests per second.
    pub kms_requests_per_sec: Option<u32>,
}

/// Stop the job when more than `percent`% of at least `min_objects` finished objects failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FailureThreshold {
    /// Largest tolerated share of failures, in percent (1..=100).
    pub percent: u32,
    /// Finished objects needed before the share is judged.
    pub min_objects: u64,
}

/// What a job covers and how it runs, fixed at start except for `priority` and `limits`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobOptions {
    /// Keys must match one of these globs (empty: every key).
    pub include: Vec<String>,
    /// Keys matching one of these globs are left out.
    pub exclude: Vec<String>,
    /// Only objects of these categories (empty: every category).
    pub only_categories: Vec<String>,
    /// How objects are proved.
    pub verify_mode: VerifyMode,
    /// When to give up on the whole job.
    pub failure_threshold: Option<FailureThreshold>,
    /// Start only after this job has ended.
    pub after: Option<JobId>,
    /// Higher gets workers first when jobs compete.
    pub priority: i32,
    /// Live limits.
    pub limits: JobLimits,
    /// List from this S3 Inventory manifest (`s3://bucket/key/manifest.json`) instead of
    /// ListObjectsV2.
    pub inventory: Option<String>,
}

/// A migration job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Job id.
    pub id: JobId,
    /// Current state.
    pub state: JobState,
    /// Source bucket.
    pub source_bucket: String,
    /// Key prefix within the source.
    pub prefix: String,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Last change, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// Continuation token of the next listing page to read.
    pub listing_token: Option<String>,
    /// Whether the whole source has been listed.
    pub listing_complete: bool,
    /// Why the job failed or was cancelled.
    pub message: Option<String>,
    /// What the job does.
    pub kind: JobKind,
    /// Scope, priority and limits.
    pub options: JobOptions,
    /// Objects the listing left out because of the job's filters.
    pub excluded: u64,
    /// A catch-up pass is listing the source again: changed objects are migrated anew.
    pub syncing: bool,
}

/// What a job does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JobKind {
    /// Migrates the source into the category buckets.
    #[default]
    Migrate,
    /// Re-verifies what migration job `of` migrated; its objects are that job's verified ones.
    Verify {
        /// The migration job checked.
        of: JobId,
    },
}
