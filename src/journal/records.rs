//! On-disk records of the journal: versioned encodings and big-endian ordered keys.
//!
//! Every value is one format-version byte followed by JSON. JSON keeps records readable with
//! standard tools during an incident; the version byte lets a later build migrate or refuse
//! records it does not understand instead of misreading them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version byte of every record this build writes.
pub const RECORD_VERSION: u8 = 1;

/// Identifies a job; allocated in increasing order.
pub type JobId = u64;

/// Why a stored value could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The value is empty.
    #[error("empty record")]
    Empty,
    /// A record version this build does not know.
    #[error("record version {0} is not supported by this build (written by a newer dualseal?)")]
    Version(u8),
    /// The JSON does not match the schema.
    #[error("record body is not valid: {0}")]
    Body(String),
    /// A key is too short or not UTF-8.
    #[error("record key is malformed")]
    Key,
}

/// Encodes a record value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Our record types are plain structs of strings and numbers: serialization cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out
}

/// Decodes a record value.
///
/// # Errors
/// `Empty`, `Version` or `Body`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&v, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if v != RECORD_VERSION {
        return Err(DecodeError::Version(v));
    }
    serde_json::from_slice(body).map_err(|e| DecodeError::Body(e.to_string()))
}

/// Key of a job record: the id, big-endian so iteration is in id order.
pub fn job_key(id: JobId) -> [u8; 8] {
    id.to_be_bytes()
}

/// Key of an object record: job id (big-endian) then the source key's UTF-8 bytes, so one
/// job's objects are one contiguous range in key order.
pub fn object_key(job: JobId, source_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + source_key.len());
    k.extend_from_slice(&job.to_be_bytes());
    k.extend_from_slice(source_key.as_bytes());
    k
}

/// Splits an object record key.
///
/// # Errors
/// `Key` when shorter than 8 bytes or not UTF-8.
pub fn split_object_key(k: &[u8]) -> Result<(JobId, String), DecodeError> {
    if k.len() < 8 {
        return Err(DecodeError::Key);
    }
    let (id, rest) = k.split_at(8);
    let id = u64::from_be_bytes(id.try_into().map_err(|_| DecodeError::Key)?);
    let key = String::from_utf8(rest.to_vec()).map_err(|_| DecodeError::Key)?;
    Ok((id, key))
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLimits {
    /// Objects in flight at most (the adaptive limit stays at or below it).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Objects started per second.
    #[serde(default)]
    pub objects_per_sec: Option<u32>,
    /// Source bytes read per second.
    #[serde(default)]
    pub bytes_per_sec: Option<u64>,
    /// KMS requests per second.
    #[serde(default)]
    pub kms_requests_per_sec: Option<u32>,
}

/// Stop the job when more than `percent`% of at least `min_objects` finished objects failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureThreshold {
    /// Largest tolerated share of failures, in percent (1..=100).
    pub percent: u32,
    /// Finished objects needed before the share is judged.
    pub min_objects: u64,
}

/// What a job covers and how it runs, fixed at start except for `priority` and `limits`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOptions {
    /// Keys must match one of these globs (empty: every key).
    #[serde(default)]
    pub include: Vec<String>,
    /// Keys matching one of these globs are left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Only objects of these categories (empty: every category).
    #[serde(default)]
    pub only_categories: Vec<String>,
    /// How objects are proved.
    #[serde(default)]
    pub verify_mode: VerifyMode,
    /// When to give up on the whole job.
    #[serde(default)]
    pub failure_threshold: Option<FailureThreshold>,
    /// Start only after this job has ended.
    #[serde(default)]
    pub after: Option<JobId>,
    /// Higher gets workers first when jobs compete.
    #[serde(default)]
    pub priority: i32,
    /// Live limits.
    #[serde(default)]
    pub limits: JobLimits,
    /// List from this S3 Inventory manifest (`s3://bucket/key/manifest.json`) instead of
    /// ListObjectsV2.
    #[serde(default)]
    pub inventory: Option<String>,
}

/// A migration job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub kind: JobKind,
    /// Scope, priority and limits.
    #[serde(default)]
    pub options: JobOptions,
    /// Objects the listing left out because of the job's filters.
    #[serde(default)]
    pub excluded: u64,
    /// A catch-up pass is listing the source again: changed objects are migrated anew.
    #[serde(default)]
    pub syncing: bool,
}

/// What a job does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

/// Lifecycle of one object within a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectState {
    /// Listed and classified; not yet written.
    Discovered,
    /// Written to the destination; not yet read back.
    Uploaded,
    /// Read back, SSE checked, decrypted and equal to the source: migrated.
    Verified,
    /// Gave up (permanent error or attempt budget spent); `reason` says why.
    Failed,
    /// Matched no category; left in place.
    Unclassified,
    /// Matched more than one category; left in place.
    Conflict,
}

impl ObjectState {
    /// Every state, in display order.
    pub const ALL: [ObjectState; 6] = [
        Self::Discovered,
        Self::Uploaded,
        Self::Verified,
        Self::Failed,
        Self::Unclassified,
        Self::Conflict,
    ];

    /// Whether a worker still has to do something.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Discovered | Self::Uploaded)
    }

    /// Lower-case name, as reports and metric labels show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discovered => "discovered",
            Self::Uploaded => "uploaded",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::Unclassified => "unclassified",
            Self::Conflict => "conflict",
        }
    }

    /// Position in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Per-object migration state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Current state.
    pub state: ObjectState,
    /// Size as listed.
    pub size: u64,
    /// Source ETag (listing, then the one actually read).
    pub source_etag: String,
    /// Source version id, when versioned.
    pub source_version: Option<String>,
    /// Matched category.
    pub category: Option<String>,
    /// Destination bucket.
    pub dest_bucket: Option<String>,
    /// Destination key.
    pub dest_key: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Why the object failed, is unclassified or conflicts.
    pub reason: Option<String>,
    /// Hex SHA-256 of the envelope written (ciphertext, never plaintext).
    pub ciphertext_sha256: Option<String>,
    /// ETag of the destination object.
    pub dest_etag: Option<String>,
    /// Last change, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// Earliest time of the next attempt after a retryable failure, ms since the Unix epoch;
    /// kept across restarts so a crash does not turn a backoff into a burst.
    #[serde(default)]
    pub retry_at_ms: Option<u64>,
    /// The classification rule that matched (`prefix "db/"`), for the audit trail.
    #[serde(default)]
    pub rule: Option<String>,
    /// Short cause of a failure or conflict (`S3.AccessDenied`, `Verify`), for reports.
    #[serde(default)]
    pub code: Option<String>,
    /// Envelope format version of the copy (absent: version 1, or adopted as found).
    #[serde(default)]
    pub envelope_version: Option<u8>,
    /// A multipart upload an attempt started and neither completed nor aborted (a crash or a
    /// pause cut it short): the next attempt aborts it first, since S3 keeps, and bills, the
    /// parts of an open upload.
    #[serde(default)]
    pub upload_id: Option<String>,
}

/// One audit event as stored: hash-chained to its predecessor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Time, ms since the Unix epoch.
    pub at_ms: u64,
    /// Job concerned (0 for daemon-level events).
    pub job_id: JobId,
    /// What happened (`job_started`, `object_verified`, ...).
    pub kind: String,
    /// Who asked for it, or `daemon`.
    #[serde(default)]
    pub actor: String,
    /// Category, when about one object.
    #[serde(default)]
    pub category: String,
    /// `ok`, `failed`, `denied`, `conflict`, ...
    #[serde(default)]
    pub outcome: String,
    /// Source key, when about one object.
    pub source_key: String,
    /// Destination bucket, when about one object.
    pub dest_bucket: String,
    /// Destination key, when about one object.
    pub dest_key: String,
    /// Non-secret detail (ETags, ciphertext digest, key ARN, reasons).
    pub detail: String,
    /// Hash of the previous event (hex), all zeros for the first.
    pub prev_hash: String,
    /// Hash of this event (hex): see [`crate::audit::event_hash`].
    pub hash: String,
}

impl From<&AuditRecord> for crate::audit::AuditEvent {
    fn from(r: &AuditRecord) -> Self {
        Self {
            seq: r.seq,
            at: crate::audit::rfc3339(r.at_ms),
            job_id: r.job_id,
            kind: r.kind.clone(),
            actor: r.actor.clone(),
            category: r.category.clone(),
            outcome: r.outcome.clone(),
            source_key: r.source_key.clone(),
            destination_bucket: r.dest_bucket.clone(),
            destination_key: r.dest_key.clone(),
            detail: r.detail.clone(),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ObjectRecord {
        ObjectRecord {
            state: ObjectState::Uploaded,
            size: 42,
            source_etag: "\"abc\"".into(),
            source_version: None,
            category: Some("db".into()),
            dest_bucket: Some("secrets-db".into()),
            dest_key: Some("k é".into()),
            attempts: 2,
            reason: None,
            ciphertext_sha256: Some("00".into()),
            dest_etag: None,
            updated_at_ms: 7,
            retry_at_ms: Some(9),
            rule: Some("prefix \"db/\"".into()),
            code: None,
            envelope_version: None,
            upload_id: None,
        }
    }

    #[test]
    fn records_round_trip() {
        let r = sample();
        assert_eq!(decode::<ObjectRecord>(&encode(&r)).unwrap(), r);
    }

    #[test]
    fn unknown_version_and_garbage_are_named() {
        let mut b = encode(&sample());
        b[0] = 9;
        assert_eq!(decode::<ObjectRecord>(&b), Err(DecodeError::Version(9)));
        assert_eq!(decode::<ObjectRecord>(&[]), Err(DecodeError::Empty));
        assert!(matches!(
            decode::<ObjectRecord>(&[1, b'{']),
            Err(DecodeError::Body(_))
        ));
    }

    #[test]
    fn object_keys_sort_by_job_then_key() {
        let a = object_key(1, "zzz");
        let b = object_key(2, "aaa");
        let c = object_key(256, "");
        assert!(a < b && b < c);
        assert_eq!(
            split_object_key(&object_key(5, "é x")).unwrap(),
            (5, "é x".into())
        );
        assert_eq!(split_object_key(&[1, 2]), Err(DecodeError::Key));
    }
}
