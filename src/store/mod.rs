//! Object storage: the [`ObjectStore`] and [`BucketAdmin`] traits the engine and provisioning
//! use, and their S3 implementation (`s3.rs`, `s3_admin.rs`): the only module that speaks
//! `aws_sdk_s3`.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::aws::AwsErrorKind;

mod s3;
mod s3_admin;

pub use s3::S3Store;

/// The SSE header value S3 uses for dual-layer SSE-KMS.
pub const SSE_DSSE_KMS: &str = "aws:kms:dsse";

/// Whether `sse`, as a destination reported it, is DSSE-KMS. Only a `bench` build with
/// `DUALSEAL_BENCH_SERVER_WITHOUT_SSE=1` also accepts a server that reports no encryption at
/// all (the benchmark's S3 server ignores SSE headers); a shipped build cannot be told to.
pub fn is_dsse(sse: Option<&str>) -> bool {
    match sse {
        Some(s) => s == SSE_DSSE_KMS,
        None => bench_server_without_sse(),
    }
}

#[cfg(feature = "bench")]
fn bench_server_without_sse() -> bool {
    std::env::var_os("DUALSEAL_BENCH_SERVER_WITHOUT_SSE").is_some_and(|v| v == "1")
}

#[cfg(not(feature = "bench"))]
fn bench_server_without_sse() -> bool {
    false
}

/// Object Lock retention modes (S3's names, lower case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionMode {
    /// Users with `s3:BypassGovernanceRetention` can still shorten or remove it: the default,
    /// so a mistaken archive can be cleaned up by a deliberate, audited act.
    #[default]
    Governance,
    /// Nobody, the root user included, can delete before the date.
    Compliance,
}

/// The longest key S3 accepts (UTF-8 bytes). Longer keys and prefixes are refused before a
/// request is built: the SDK panics on a URI too long to build.
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest bucket name S3 accepts.
pub const MAX_BUCKET_BYTES: usize = 63;

/// Refuses a key or prefix S3 could never hold, as the error of operation `op`.
fn check_key(op: &'static str, bucket: &str, key: &str) -> Result<(), StoreError> {
    if key.len() <= MAX_KEY_BYTES && bucket.len() <= MAX_BUCKET_BYTES {
        return Ok(());
    }
    let shown = |s: &str, n: usize| {
        if s.chars().count() > n {
            s.chars().take(n).collect::<String>() + "…"
        } else {
            s.to_owned()
        }
    };
    Err(StoreError {
        op,
        bucket: shown(bucket, MAX_BUCKET_BYTES),
        key: shown(key, 100),
        kind: AwsErrorKind::Invalid,
        message: format!(
            "a key or prefix of {} bytes (S3's limit is {MAX_KEY_BYTES}) or a bucket name of {} bytes (limit {MAX_BUCKET_BYTES})",
            key.len(),
            bucket.len()
        ),
    })
}

/// What went wrong talking to the object store. The message is the service's code and text,
/// which never carries object bytes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("S3 {op} s3://{bucket}/{key}: {kind}: {message}")]
pub struct StoreError {
    /// Operation (GetObject, PutObject, ...).
    pub op: &'static str,
    /// Bucket addressed.
    pub bucket: String,
    /// Key addressed (empty for bucket-level calls).
    pub key: String,
    /// Classified failure kind.
    pub kind: AwsErrorKind,
    /// Service code and message.
    pub message: String,
}

impl StoreError {
    /// Whether trying the same call again later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// Whether it is the daemon's problem, not the object's (see [`AwsErrorKind::is_systemic`]).
    pub fn is_systemic(&self) -> bool {
        self.kind.is_systemic(&self.message)
    }
}

/// One object in a listing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag as listed (quoted, as S3 returns it).
    pub etag: String,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Objects in key order.
    pub objects: Vec<ListedObject>,
    /// Token for the next page, `None` on the last.
    pub next_token: Option<String>,
}

/// An object read in full. The body is zeroized on drop because source objects are plaintext.
#[derive(Debug)]
pub struct Fetched {
    /// Object bytes.
    pub body: Zeroizing<Vec<u8>>,
    /// ETag of the version read.
    pub etag: String,
    /// Version id, when the bucket is versioned.
    pub version_id: Option<String>,
    /// `x-amz-server-side-encryption` of the object.
    pub sse: Option<String>,
    /// KMS key of the object's SSE, when SSE-KMS.
    pub sse_kms_key_id: Option<String>,
    /// User metadata.
    pub metadata: HashMap<String, String>,
}

/// The base64 SHA-256 of `body`: what S3 checks a written body or part against
/// (`x-amz-checksum-sha256`).
pub fn sha256_b64(body: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body))
}

/// A sealed object to write.
#[derive(Debug, Clone)]
pub struct SealedPut {
    /// Destination bucket.
    pub bucket: String,
    /// Destination key.
    pub key: String,
    /// Envelope bytes (ciphertext only).
    pub body: bytes::Bytes,
    /// KMS key for DSSE-KMS.
    pub kms_key_id: String,
    /// SSE-KMS encryption context, as canonical JSON.
    pub sse_context_json: String,
    /// Base64 SHA-256 of `body`, checked by S3 on receipt.
    pub checksum_sha256_b64: String,
    /// User metadata (never secret).
    pub metadata: HashMap<String, String>,
    /// Condition on what the destination key holds now.
    pub precondition: Precondition,
    /// Object Lock retention to set with the write (archive copies only).
    pub retention: Option<Retention>,
}

/// A sealed object written in parts (multipart upload): everything but the body, which
/// follows part by part.
#[derive(Debug, Clone)]
pub struct SealedUpload {
    /// Destination bucket.
    pub bucket: String,
    /// Destination key.
    pub key: String,
    /// KMS key for DSSE-KMS.
    pub kms_key_id: String,
    /// SSE-KMS encryption context, as canonical JSON.
    pub sse_context_json: String,
    /// User metadata (never secret).
    pub metadata: HashMap<String, String>,
    /// Object Lock retention to set with the write (archive copies only).
    pub retention: Option<Retention>,
}

/// One uploaded part, as `CompleteMultipartUpload` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    /// Part number, from 1.
    pub number: i32,
    /// The part's ETag.
    pub etag: String,
    /// Base64 SHA-256 of the part, checked by S3 on receipt.
    pub sha256_b64: String,
}

/// An object body arriving in chunks. The chunks of a source object are plaintext: they are
/// sealed or hashed and dropped, never kept.
pub type BodyStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, StoreError>> + Send>>;

/// An object being read as a stream.
pub struct Streamed {
    /// ETag of the version read.
    pub etag: String,
    /// Version id, when the bucket is versioned.
    pub version_id: Option<String>,
    /// `x-amz-server-side-encryption` of the object.
    pub sse: Option<String>,
    /// KMS key of the object's SSE, when SSE-KMS.
    pub sse_kms_key_id: Option<String>,
    /// User metadata.
    pub metadata: HashMap<String, String>,
    /// Bytes the body will carry.
    pub content_length: u64,
    /// The body.
    pub body: BodyStream,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed")
            .field("etag", &self.etag)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

/// Object Lock retention of a write: the bucket must have Object Lock enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Governance or compliance.
    pub mode: RetentionMode,
    /// Retained until then.
    pub until: std::time::SystemTime,
}

/// What the destination must hold for a write to apply. Writes are always conditional, so
/// dualseal never overwrites an object it did not write, nor a newer copy of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The key must not exist (`If-None-Match: *`).
    Absent,
    /// The key must hold exactly this ETag (`If-Match`).
    Matches(String),
}

/// What a HEAD of an object says.
#[derive(Debug, Clone, Default)]
pub struct HeadInfo {
    /// ETag.
    pub etag: String,
    /// `x-amz-server-side-encryption`.
    pub sse: Option<String>,
    /// `x-amz-server-side-encryption-aws-kms-key-id`.
    pub sse_kms_key_id: Option<String>,
    /// The SHA-256 checksum S3 stored with the object (base64), when it has one.
    pub checksum_sha256_b64: Option<String>,
    /// User metadata.
    pub metadata: HashMap<String, String>,
}

/// Result of a write.
#[derive(Debug, Clone)]
pub struct PutResult {
    /// ETag of the new object.
    pub etag: String,
    /// S3's request id of the write (`x-amz-request-id`), for the audit trail.
    pub request_id: Option<String>,
    /// Version id, when the bucket is versioned.
    pub version_id: Option<String>,
    /// The server-side encryption S3 reports it applied.
    pub sse: Option<String>,
    /// Its KMS key.
    pub sse_kms_key_id: Option<String>,
    /// The SHA-256 S3 checked the body against (base64), when the write named one.
    pub checksum_sha256_b64: Option<String>,
}

/// The storage operations dualseal needs. Narrow on purpose, so pure logic can be tested with
/// an in-memory fake while everything claiming S3 behaviour is tested against a real server.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// One page of keys under `prefix`.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<ListPage, StoreError>;
    /// Reads a whole object.
    async fn get(&self, bucket: &str, key: &str) -> Result<Fetched, StoreError>;
    /// Reads at most the first `max_bytes` of a non-empty object (a ranged GET).
    async fn read_head(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: usize,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError>;
    /// Reads an object as a stream of chunks (large objects, held one part at a time).
    async fn get_stream(&self, bucket: &str, key: &str) -> Result<Streamed, StoreError>;
    /// Writes a sealed object with DSSE-KMS.
    async fn put_sealed(&self, put: SealedPut) -> Result<PutResult, StoreError>;
    /// Starts a multipart upload of a sealed object with DSSE-KMS and SHA-256 part checksums;
    /// returns the upload id.
    async fn create_multipart(&self, upload: &SealedUpload) -> Result<String, StoreError>;
    /// Uploads one part (at least 5 MiB, except the last).
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<UploadedPart, StoreError>;
    /// Completes an upload, only if the destination satisfies `precondition`; on
    /// `PreconditionFailed` the upload stays open (complete again or abort it).
    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        precondition: &Precondition,
    ) -> Result<PutResult, StoreError>;
    /// Aborts an upload and frees its parts; an upload S3 no longer knows is not an error.
    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StoreError>;
    /// The ids of the multipart uploads open on exactly `key`.
    async fn list_uploads(&self, bucket: &str, key: &str) -> Result<Vec<String>, StoreError>;
    /// Metadata of an object, `None` when the key does not exist.
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<HeadInfo>, StoreError>;
    /// Whether a bucket exists and is reachable with our credentials.
    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError>;
}

/// The security-relevant configuration of a bucket, as S3 reports it. `None` means "not set"
/// (or, for the policy, no policy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketSecurity {
    /// Default encryption algorithm (`aws:kms:dsse`).
    pub sse_algorithm: Option<String>,
    /// Default encryption KMS key.
    pub sse_kms_key: Option<String>,
    /// S3 Bucket Keys (must be off: DSSE-KMS does not use them).
    pub bucket_key_enabled: Option<bool>,
    /// Block Public Access: BlockPublicAcls, IgnorePublicAcls, BlockPublicPolicy,
    /// RestrictPublicBuckets.
    pub public_access_block: Option<[bool; 4]>,
    /// `Enabled` or `Suspended`.
    pub versioning: Option<String>,
    /// Object ownership (`BucketOwnerEnforced`).
    pub ownership: Option<String>,
    /// The bucket policy JSON.
    pub policy: Option<String>,
    /// Access logging target bucket and prefix.
    pub logging: Option<(String, String)>,
    /// Days after which an enabled whole-bucket lifecycle rule aborts incomplete multipart
    /// uploads (the shortest, when several do).
    pub abort_incomplete_uploads_days: Option<i32>,
}

/// Bucket administration for provisioning: read and set what makes a bucket safe to hold
/// secrets. Separate from [`ObjectStore`], which the migration path uses.
#[async_trait]
pub trait BucketAdmin: Send + Sync {
    /// Whether the bucket exists (and we may see it).
    async fn bucket_exists(&self, bucket: &str) -> Result<bool, StoreError>;
    /// Its security configuration.
    async fn bucket_security(&self, bucket: &str) -> Result<BucketSecurity, StoreError>;
    /// Creates it in the client's region.
    async fn create_bucket(&self, bucket: &str) -> Result<(), StoreError>;
    /// Default encryption DSSE-KMS under `key_arn`, bucket keys off, SSE-C blocked.
    async fn put_default_encryption(&self, bucket: &str, key_arn: &str) -> Result<(), StoreError>;
    /// Block Public Access, all four settings on.
    async fn put_public_access_block(&self, bucket: &str) -> Result<(), StoreError>;
    /// Versioning on.
    async fn put_versioning(&self, bucket: &str) -> Result<(), StoreError>;
    /// Object ownership `BucketOwnerEnforced` (ACLs off).
    async fn put_ownership(&self, bucket: &str) -> Result<(), StoreError>;
    /// Replaces the bucket policy.
    async fn put_policy(&self, bucket: &str, policy_json: &str) -> Result<(), StoreError>;
    /// Server access logging into `target` under `prefix`.
    async fn put_logging(&self, bucket: &str, target: &str, prefix: &str)
        -> Result<(), StoreError>;
    /// Adds (or replaces) dualseal's lifecycle rule aborting incomplete multipart uploads
    /// after `days`, keeping every other rule of the bucket.
    async fn put_abort_incomplete_uploads(&self, bucket: &str, days: i32)
        -> Result<(), StoreError>;
    /// Removes the bucket policy.
    async fn delete_policy(&self, bucket: &str) -> Result<(), StoreError>;
    /// One page of object versions and delete markers under `prefix`.
    async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<VersionPage, StoreError>;
    /// Whether the bucket has Object Lock enabled.
    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool, StoreError>;
    /// Object Lock state of one version: retain-until (RFC 3339) when in the future, and
    /// whether a legal hold is on.
    async fn lock_state(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> Result<(Option<String>, bool), StoreError>;
    /// Deletes versions (at most 1000); returns the ones S3 refused, with its reason.
    async fn delete_versions(
        &self,
        bucket: &str,
        versions: &[(String, String)],
    ) -> Result<Vec<(String, String, String)>, StoreError>;
}

/// One version (or delete marker) of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Key.
    pub key: String,
    /// Version id (`null` for unversioned objects).
    pub version_id: String,
    /// A delete marker rather than data.
    pub delete_marker: bool,
    /// The current version of its key.
    pub is_latest: bool,
}

/// A page of versions.
#[derive(Debug, Clone, Default)]
pub struct VersionPage {
    /// Versions and markers, in key order.
    pub versions: Vec<ObjectVersion>,
    /// Where the next page starts (key, version id marker), if any.
    pub next: Option<(String, String)>,
}

/// The id of the lifecycle rule provisioning adds to category buckets.
pub const LIFECYCLE_RULE_ID: &str = "dualseal-abort-incomplete-uploads";

#[cfg(test)]
mod tests {
    use super::{is_dsse, SSE_DSSE_KMS};

    #[test]
    fn only_dsse_kms_counts_as_dsse() {
        assert!(is_dsse(Some(SSE_DSSE_KMS)));
        assert!(!is_dsse(Some("aws:kms")));
        assert!(!is_dsse(Some("AES256")));
        // A shipped build never accepts a server that reports no encryption.
        #[cfg(not(feature = "bench"))]
        assert!(!is_dsse(None));
    }
}
