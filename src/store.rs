//! Object storage: the [`ObjectStore`] trait the engine uses and its S3 implementation, the
//! only module that speaks `aws_sdk_s3`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockMode, ServerSideEncryption};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::aws::{classify_sdk_error, AwsErrorKind};

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

/// [`ObjectStore`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
}

impl S3Store {
    /// Builds the one shared S3 client from an SDK config.
    pub fn new(sdk: &aws_config::SdkConfig, force_path_style: bool) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(force_path_style)
            // dualseal names the SHA-256 of every body it writes and proves what it reads back
            // by its own digest of the envelope: the SDK's default checksums on top (a CRC per
            // request, a second hash of every downloaded body) would be paid twice.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(conf),
        }
    }
}

/// Collects a body into a buffer we own and zeroize (rather than the SDK's aggregated
/// `Bytes`), stopping after `max` bytes.
async fn collect_body(
    mut stream: ByteStream,
    capacity: usize,
    max: usize,
    bucket: &str,
    key: &str,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let mut body = Zeroizing::new(Vec::with_capacity(capacity));
    while let Some(chunk) = stream.try_next().await.map_err(|e| StoreError {
        op: "GetObject",
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        kind: AwsErrorKind::Transient,
        message: format!("reading the body failed: {e}"),
    })? {
        let room = max.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    Ok(body)
}

fn context_b64(json: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(json.as_bytes())
}

fn lock_mode(mode: RetentionMode) -> ObjectLockMode {
    match mode {
        RetentionMode::Governance => ObjectLockMode::Governance,
        RetentionMode::Compliance => ObjectLockMode::Compliance,
    }
}

fn err<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    op: &'static str,
    bucket: &str,
    key: &str,
    e: SdkError<E, HttpResponse>,
) -> StoreError {
    let (kind, message) = classify_sdk_error(&e);
    StoreError {
        op,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        kind,
        message,
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        check_key("ListObjectsV2", bucket, prefix)?;
        let mut req = self.client.list_objects_v2().bucket(bucket);
        if !prefix.is_empty() {
            req = req.prefix(prefix);
        }
        let out = req
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| err("ListObjectsV2", bucket, prefix, e))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ListedObject {
                    key: o.key()?.to_owned(),
                    size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                    etag: o.e_tag().unwrap_or_default().to_owned(),
                })
            })
            .collect();
        let next_token = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next_token,
        })
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Fetched, StoreError> {
        use futures::StreamExt as _;
        let mut s = self.get_stream(bucket, key).await?;
        let mut body = Zeroizing::new(Vec::with_capacity(
            usize::try_from(s.content_length).unwrap_or(0),
        ));
        while let Some(chunk) = s.body.next().await {
            body.extend_from_slice(&chunk?);
        }
        Ok(Fetched {
            body,
            etag: s.etag,
            version_id: s.version_id,
            sse: s.sse,
            sse_kms_key_id: s.sse_kms_key_id,
            metadata: s.metadata,
        })
    }

    async fn read_head(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: usize,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        check_key("GetObject", bucket, key)?;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes=0-{}", max_bytes.saturating_sub(1)))
            .send()
            .await
            .map_err(|e| err("GetObject", bucket, key, e))?;
        let len = usize::try_from(out.content_length().unwrap_or(0)).unwrap_or(0);
        collect_body(out.body, len.min(max_bytes), max_bytes, bucket, key).await
    }

    async fn get_stream(&self, bucket: &str, key: &str) -> Result<Streamed, StoreError> {
        check_key("GetObject", bucket, key)?;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| err("GetObject", bucket, key, e))?;
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let version_id = out.version_id().map(str::to_owned);
        let sse = out.server_side_encryption().map(|s| s.as_str().to_owned());
        let sse_kms_key_id = out.ssekms_key_id().map(str::to_owned);
        let metadata = out.metadata().cloned().unwrap_or_default();
        let content_length = u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0);
        // The names travel with the stream, for the one error that may end it.
        let start = Some((out.body, bucket.to_owned(), key.to_owned()));
        let body = futures::stream::unfold(start, |state| async move {
            let (mut stream, bucket, key) = state?;
            match stream.try_next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some((stream, bucket, key)))),
                Ok(None) => None,
                Err(e) => Some((
                    Err(StoreError {
                        op: "GetObject",
                        bucket,
                        key,
                        kind: AwsErrorKind::Transient,
                        message: format!("reading the body failed: {e}"),
                    }),
                    None,
                )),
            }
        });
        Ok(Streamed {
            etag,
            version_id,
            sse,
            sse_kms_key_id,
            metadata,
            content_length,
            body: Box::pin(body),
        })
    }

    async fn create_multipart(&self, upload: &SealedUpload) -> Result<String, StoreError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&upload.bucket)
            .key(&upload.key)
            .content_type("application/vnd.dualseal.envelope")
            .server_side_encryption(ServerSideEncryption::AwsKmsDsse)
            .ssekms_key_id(&upload.kms_key_id)
            .ssekms_encryption_context(context_b64(&upload.sse_context_json))
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .set_metadata(Some(upload.metadata.clone()))
            .set_object_lock_mode(upload.retention.map(|r| lock_mode(r.mode)))
            .set_object_lock_retain_until_date(
                upload
                    .retention
                    .map(|r| aws_sdk_s3::primitives::DateTime::from(r.until)),
            )
            .send()
            .await
            .map_err(|e| err("CreateMultipartUpload", &upload.bucket, &upload.key, e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| StoreError {
                op: "CreateMultipartUpload",
                bucket: upload.bucket.clone(),
                key: upload.key.clone(),
                kind: AwsErrorKind::Other,
                message: "the response carries no upload id".into(),
            })
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<UploadedPart, StoreError> {
        let sha256_b64 = {
            use base64::Engine as _;
            use sha2::Digest as _;
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body))
        };
        let len = i64::try_from(body.len()).unwrap_or(i64::MAX);
        let out = self
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(len)
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .checksum_sha256(&sha256_b64)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| err("UploadPart", bucket, key, e))?;
        Ok(UploadedPart {
            number,
            etag: out.e_tag().unwrap_or_default().to_owned(),
            sha256_b64,
        })
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        precondition: &Precondition,
    ) -> Result<PutResult, StoreError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let parts = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(&p.etag)
                    .checksum_sha256(&p.sha256_b64)
                    .build()
            })
            .collect();
        let (if_none_match, if_match) = match precondition {
            Precondition::Absent => (Some("*".to_owned()), None),
            Precondition::Matches(etag) => (None, Some(etag.clone())),
        };
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .set_if_none_match(if_none_match)
            .set_if_match(if_match)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match out {
            Ok(out) => Ok(PutResult {
                request_id: out.request_id().map(str::to_owned),
                etag: out.e_tag().unwrap_or_default().to_owned(),
                version_id: out.version_id().map(str::to_owned),
                sse: out.server_side_encryption().map(|s| s.as_str().to_owned()),
                sse_kms_key_id: out.ssekms_key_id().map(str::to_owned),
                // A multipart object's checksum is composite: not comparable to one digest.
                checksum_sha256_b64: None,
            }),
            // Some S3 implementations (moto 5) name the answer's root element
            // `CompleteMultipartUploadResponse`, which the SDK refuses; a success carries the
            // new ETag, an error answered with 200 (as S3 may for this call) does not.
            Err(e) => {
                let completed = e
                    .raw_response()
                    .filter(|r| r.status().is_success())
                    .and_then(|r| {
                        let body = r.body().bytes()?;
                        let etag = lenient_element(body, &["CompleteMultipartUpload"], "ETag")?;
                        let header = |h| r.headers().get(h).map(str::to_owned);
                        Some(PutResult {
                            etag: etag.replace("&quot;", "\""),
                            request_id: header("x-amz-request-id"),
                            version_id: header("x-amz-version-id"),
                            sse: header("x-amz-server-side-encryption"),
                            sse_kms_key_id: header("x-amz-server-side-encryption-aws-kms-key-id"),
                            checksum_sha256_b64: None,
                        })
                    });
                completed.ok_or_else(|| err("CompleteMultipartUpload", bucket, key, e))
            }
        }
    }

    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = err("AbortMultipartUpload", bucket, key, e);
                if e.kind == AwsErrorKind::NotFound || e.message.contains("NoSuchUpload") {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn put_sealed(&self, put: SealedPut) -> Result<PutResult, StoreError> {
        let context_b64 = context_b64(&put.sse_context_json);
        let len = i64::try_from(put.body.len()).unwrap_or(i64::MAX);
        let (if_none_match, if_match) = match put.precondition {
            Precondition::Absent => (Some("*".to_owned()), None),
            Precondition::Matches(etag) => (None, Some(etag)),
        };
        let out = self
            .client
            .put_object()
            .set_if_none_match(if_none_match)
            .set_if_match(if_match)
            .bucket(&put.bucket)
            .key(&put.key)
            .content_length(len)
            .content_type("application/vnd.dualseal.envelope")
            .server_side_encryption(ServerSideEncryption::AwsKmsDsse)
            .ssekms_key_id(&put.kms_key_id)
            .ssekms_encryption_context(context_b64)
            // Naming the algorithm makes S3 store the checksum with the object (HEAD returns it
            // for verify=checksum); the value is ours, computed over the envelope.
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .checksum_sha256(&put.checksum_sha256_b64)
            .set_metadata(Some(put.metadata))
            .set_object_lock_mode(put.retention.map(|r| lock_mode(r.mode)))
            .set_object_lock_retain_until_date(
                put.retention
                    .map(|r| aws_sdk_s3::primitives::DateTime::from(r.until)),
            )
            .body(ByteStream::from(put.body))
            .send()
            .await
            .map_err(|e| err("PutObject", &put.bucket, &put.key, e))?;
        Ok(PutResult {
            request_id: out.request_id().map(str::to_owned),
            etag: out.e_tag().unwrap_or_default().to_owned(),
            version_id: out.version_id().map(str::to_owned),
            sse: out.server_side_encryption().map(|s| s.as_str().to_owned()),
            sse_kms_key_id: out.ssekms_key_id().map(str::to_owned),
            checksum_sha256_b64: out.checksum_sha256().map(str::to_owned),
        })
    }

    async fn list_uploads(&self, bucket: &str, key: &str) -> Result<Vec<String>, StoreError> {
        check_key("ListMultipartUploads", bucket, key)?;
        let (mut ids, mut key_marker, mut id_marker) = (Vec::new(), None, None);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| err("ListMultipartUploads", bucket, key, e))?;
            ids.extend(
                out.uploads()
                    .iter()
                    .filter(|u| u.key() == Some(key))
                    .filter_map(|u| u.upload_id().map(str::to_owned)),
            );
            if !out.is_truncated().unwrap_or(false) {
                return Ok(ids);
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                // A truncated answer without a marker would list the same page for ever.
                return Err(StoreError {
                    op: "ListMultipartUploads",
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    kind: AwsErrorKind::Other,
                    message: "a truncated answer carries no marker to continue from".into(),
                });
            }
        }
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<HeadInfo>, StoreError> {
        check_key("HeadObject", bucket, key)?;
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => Ok(Some(HeadInfo {
                etag: out.e_tag().unwrap_or_default().to_owned(),
                sse: out.server_side_encryption().map(|s| s.as_str().to_owned()),
                sse_kms_key_id: out.ssekms_key_id().map(str::to_owned),
                checksum_sha256_b64: out.checksum_sha256().map(str::to_owned),
                metadata: out.metadata().cloned().unwrap_or_default(),
            })),
            Err(e) => {
                let e = err("HeadObject", bucket, key, e);
                if e.kind == AwsErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| err("HeadBucket", bucket, "", e))?;
        Ok(())
    }
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

/// `Ok(None)` for the "not configured" error codes of bucket sub-resources.
fn absent<T>(r: Result<T, StoreError>, codes: &[&str]) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e)
            if e.kind == AwsErrorKind::NotFound || codes.iter().any(|c| e.message.contains(c)) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[async_trait]
impl BucketAdmin for S3Store {
    async fn bucket_exists(&self, bucket: &str) -> Result<bool, StoreError> {
        match self.check_bucket(bucket).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind == AwsErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn bucket_security(&self, bucket: &str) -> Result<BucketSecurity, StoreError> {
        let c = &self.client;
        let mut s = BucketSecurity::default();
        let enc = c.get_bucket_encryption().bucket(bucket).send().await;
        let enc = enc.map_err(|e| err("GetBucketEncryption", bucket, "", e));
        if let Some(out) = absent(enc, &["ServerSideEncryptionConfigurationNotFound"])? {
            if let Some(rule) = out
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
            {
                if let Some(d) = rule.apply_server_side_encryption_by_default() {
                    s.sse_algorithm = Some(d.sse_algorithm().as_str().to_owned());
                    s.sse_kms_key = d.kms_master_key_id().map(str::to_owned);
                }
                s.bucket_key_enabled = rule.bucket_key_enabled();
            }
        }
        let pab = c.get_public_access_block().bucket(bucket).send().await;
        let pab = pab.map_err(|e| err("GetPublicAccessBlock", bucket, "", e));
        if let Some(out) = absent(pab, &["NoSuchPublicAccessBlockConfiguration"])? {
            if let Some(p) = out.public_access_block_configuration() {
                s.public_access_block = Some([
                    p.block_public_acls().unwrap_or(false),
                    p.ignore_public_acls().unwrap_or(false),
                    p.block_public_policy().unwrap_or(false),
                    p.restrict_public_buckets().unwrap_or(false),
                ]);
            }
        }
        s.versioning = match c.get_bucket_versioning().bucket(bucket).send().await {
            Ok(v) => v.status().map(|s| s.as_str().to_owned()),
            // Some S3 implementations (moto 5) name the answer's root element differently, which
            // the SDK refuses; the one element that matters is read from the raw answer.
            Err(e) if e.raw_response().is_some_and(|r| r.status().is_success()) => e
                .raw_response()
                .and_then(|r| r.body().bytes())
                .and_then(|b| {
                    lenient_element(
                        b,
                        &["VersioningConfiguration", "GetBucketVersioning"],
                        "Status",
                    )
                }),
            Err(e) => return Err(err("GetBucketVersioning", bucket, "", e)),
        };
        let own = c
            .get_bucket_ownership_controls()
            .bucket(bucket)
            .send()
            .await;
        let own = own.map_err(|e| err("GetBucketOwnershipControls", bucket, "", e));
        if let Some(out) = absent(own, &["OwnershipControlsNotFoundError"])? {
            s.ownership = out
                .ownership_controls()
                .and_then(|o| o.rules().first())
                .map(|r| r.object_ownership().as_str().to_owned());
        }
        let pol = c.get_bucket_policy().bucket(bucket).send().await;
        let pol = pol.map_err(|e| err("GetBucketPolicy", bucket, "", e));
        if let Some(out) = absent(pol, &["NoSuchBucketPolicy"])? {
            s.policy = out.policy().map(str::to_owned);
        }
        let log = c
            .get_bucket_logging()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| err("GetBucketLogging", bucket, "", e))?;
        s.logging = log
            .logging_enabled()
            .map(|l| (l.target_bucket().to_owned(), l.target_prefix().to_owned()));
        s.abort_incomplete_uploads_days = self
            .lifecycle_rules(bucket)
            .await?
            .iter()
            .filter(|r| r.status() == &aws_sdk_s3::types::ExpirationStatus::Enabled)
            .filter(|r| {
                r.filter().is_none_or(|f| {
                    f.prefix().unwrap_or_default().is_empty()
                        && f.tag().is_none()
                        && f.and().is_none()
                        && f.object_size_greater_than().is_none()
                        && f.object_size_less_than().is_none()
                })
            })
            .filter_map(|r| {
                r.abort_incomplete_multipart_upload()?
                    .days_after_initiation()
            })
            .min();
        Ok(s)
    }

    async fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
        let mut req = self.client.create_bucket().bucket(bucket);
        // us-east-1 is the one region that takes no location constraint.
        if let Some(r) = self.client.config().region().map(|r| r.as_ref().to_owned()) {
            if r != "us-east-1" {
                req = req.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(r.as_str()))
                        .build(),
                );
            }
        }
        req.send()
            .await
            .map_err(|e| err("CreateBucket", bucket, "", e))?;
        Ok(())
    }

    async fn put_default_encryption(&self, bucket: &str, key_arn: &str) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{
            BlockedEncryptionTypes, EncryptionType, ServerSideEncryptionByDefault,
            ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
        };
        let by_default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::AwsKmsDsse)
            .kms_master_key_id(key_arn)
            .build()
            .map_err(|e| bad_request("PutBucketEncryption", bucket, &e.to_string()))?;
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(by_default)
            .bucket_key_enabled(false)
            .blocked_encryption_types(
                BlockedEncryptionTypes::builder()
                    .encryption_type(EncryptionType::SseC)
                    .build(),
            )
            .build();
        let conf = ServerSideEncryptionConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|e| bad_request("PutBucketEncryption", bucket, &e.to_string()))?;
        self.client
            .put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(conf)
            .send()
            .await
            .map_err(|e| err("PutBucketEncryption", bucket, "", e))?;
        Ok(())
    }

    async fn put_public_access_block(&self, bucket: &str) -> Result<(), StoreError> {
        use aws_sdk_s3::types::PublicAccessBlockConfiguration;
        self.client
            .put_public_access_block()
            .bucket(bucket)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err("PutPublicAccessBlock", bucket, "", e))?;
        Ok(())
    }

    async fn put_versioning(&self, bucket: &str) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        self.client
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err("PutBucketVersioning", bucket, "", e))?;
        Ok(())
    }

    async fn put_ownership(&self, bucket: &str) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{ObjectOwnership, OwnershipControls, OwnershipControlsRule};
        let rule = OwnershipControlsRule::builder()
            .object_ownership(ObjectOwnership::BucketOwnerEnforced)
            .build()
            .map_err(|e| bad_request("PutBucketOwnershipControls", bucket, &e.to_string()))?;
        let controls = OwnershipControls::builder()
            .rules(rule)
            .build()
            .map_err(|e| bad_request("PutBucketOwnershipControls", bucket, &e.to_string()))?;
        self.client
            .put_bucket_ownership_controls()
            .bucket(bucket)
            .ownership_controls(controls)
            .send()
            .await
            .map_err(|e| err("PutBucketOwnershipControls", bucket, "", e))?;
        Ok(())
    }

    async fn put_policy(&self, bucket: &str, policy_json: &str) -> Result<(), StoreError> {
        self.client
            .put_bucket_policy()
            .bucket(bucket)
            .policy(policy_json)
            .send()
            .await
            .map_err(|e| err("PutBucketPolicy", bucket, "", e))?;
        Ok(())
    }

    async fn delete_policy(&self, bucket: &str) -> Result<(), StoreError> {
        self.delete_policy_impl(bucket).await
    }

    async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<(String, String)>,
    ) -> Result<VersionPage, StoreError> {
        let mut req = self
            .client
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix);
        if let Some((k, v)) = marker {
            req = req.key_marker(k).version_id_marker(v);
        }
        let out = req
            .send()
            .await
            .map_err(|e| err("ListObjectVersions", bucket, prefix, e))?;
        let mut versions: Vec<ObjectVersion> = out
            .versions()
            .iter()
            .map(|v| ObjectVersion {
                key: v.key().unwrap_or_default().to_owned(),
                version_id: v.version_id().unwrap_or("null").to_owned(),
                delete_marker: false,
                is_latest: v.is_latest().unwrap_or(false),
            })
            .collect();
        versions.extend(out.delete_markers().iter().map(|m| ObjectVersion {
            key: m.key().unwrap_or_default().to_owned(),
            version_id: m.version_id().unwrap_or("null").to_owned(),
            delete_marker: true,
            is_latest: m.is_latest().unwrap_or(false),
        }));
        versions.sort_by(|a, b| a.key.cmp(&b.key));
        let next = if out.is_truncated() == Some(true) {
            out.next_key_marker().map(|k| {
                (
                    k.to_owned(),
                    out.next_version_id_marker().unwrap_or_default().to_owned(),
                )
            })
        } else {
            None
        };
        Ok(VersionPage { versions, next })
    }

    async fn object_lock_enabled(&self, bucket: &str) -> Result<bool, StoreError> {
        let r = self
            .client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| err("GetObjectLockConfiguration", bucket, "", e));
        Ok(absent(r, &["ObjectLockConfigurationNotFound"])?
            .and_then(|o| o.object_lock_configuration().cloned())
            .is_some_and(|c| {
                c.object_lock_enabled() == Some(&aws_sdk_s3::types::ObjectLockEnabled::Enabled)
            }))
    }

    async fn lock_state(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> Result<(Option<String>, bool), StoreError> {
        // HeadObject reports both (given s3:GetObjectRetention and s3:GetObjectLegalHold),
        // in one call per version.
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .version_id(version)
            .send()
            .await
            .map_err(|e| err("HeadObject", bucket, key, e))?;
        let now = std::time::SystemTime::now();
        let until = out
            .object_lock_retain_until_date()
            .filter(|d| std::time::SystemTime::try_from(**d).is_ok_and(|t| t > now))
            .and_then(|d| d.fmt(aws_smithy_types::date_time::Format::DateTime).ok());
        let on = out.object_lock_legal_hold_status()
            == Some(&aws_sdk_s3::types::ObjectLockLegalHoldStatus::On);
        Ok((until, on))
    }

    async fn delete_versions(
        &self,
        bucket: &str,
        versions: &[(String, String)],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        let objects = versions
            .iter()
            .map(|(k, v)| {
                ObjectIdentifier::builder()
                    .key(k)
                    .version_id(v)
                    .build()
                    .map_err(|e| bad_request("DeleteObjects", bucket, &e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| bad_request("DeleteObjects", bucket, &e.to_string()))?;
        let out = self
            .client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| err("DeleteObjects", bucket, "", e))?;
        Ok(out
            .errors()
            .iter()
            .map(|e| {
                (
                    e.key().unwrap_or_default().to_owned(),
                    e.version_id().unwrap_or_default().to_owned(),
                    format!(
                        "{}: {}",
                        e.code().unwrap_or("error"),
                        e.message().unwrap_or_default()
                    ),
                )
            })
            .collect())
    }

    async fn put_abort_incomplete_uploads(
        &self,
        bucket: &str,
        days: i32,
    ) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{
            AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
            LifecycleRule, LifecycleRuleFilter,
        };
        // PutBucketLifecycleConfiguration replaces the whole configuration: keep the
        // operator's rules, replace only ours.
        let mut rules: Vec<LifecycleRule> = self
            .lifecycle_rules(bucket)
            .await?
            .into_iter()
            .filter(|r| r.id() != Some(LIFECYCLE_RULE_ID))
            .collect();
        let bad = |e: aws_sdk_s3::error::BuildError| {
            bad_request("PutBucketLifecycleConfiguration", bucket, &e.to_string())
        };
        rules.push(
            LifecycleRule::builder()
                .id(LIFECYCLE_RULE_ID)
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix("").build())
                .abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(days)
                        .build(),
                )
                .build()
                .map_err(bad)?,
        );
        self.client
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .set_rules(Some(rules))
                    .build()
                    .map_err(bad)?,
            )
            .send()
            .await
            .map_err(|e| err("PutBucketLifecycleConfiguration", bucket, "", e))?;
        Ok(())
    }

    async fn put_logging(
        &self,
        bucket: &str,
        target: &str,
        prefix: &str,
    ) -> Result<(), StoreError> {
        use aws_sdk_s3::types::{BucketLoggingStatus, LoggingEnabled};
        let enabled = LoggingEnabled::builder()
            .target_bucket(target)
            .target_prefix(prefix)
            .build()
            .map_err(|e| bad_request("PutBucketLogging", bucket, &e.to_string()))?;
        self.client
            .put_bucket_logging()
            .bucket(bucket)
            .bucket_logging_status(
                BucketLoggingStatus::builder()
                    .logging_enabled(enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| err("PutBucketLogging", bucket, "", e))?;
        Ok(())
    }
}

/// The id of the lifecycle rule provisioning adds to category buckets.
pub const LIFECYCLE_RULE_ID: &str = "dualseal-abort-incomplete-uploads";

impl S3Store {
    /// A bucket's lifecycle rules (none when it has no configuration).
    async fn lifecycle_rules(
        &self,
        bucket: &str,
    ) -> Result<Vec<aws_sdk_s3::types::LifecycleRule>, StoreError> {
        let got = self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| err("GetBucketLifecycleConfiguration", bucket, "", e));
        Ok(absent(got, &["NoSuchLifecycleConfiguration"])?
            .map(|o| o.rules().to_vec())
            .unwrap_or_default())
    }
}

/// The name of the root element of an XML answer (after the `<?xml …?>` prolog).
fn xml_root(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?.trim_start();
    let text = match text.strip_prefix("<?") {
        Some(rest) => rest.split_once("?>")?.1.trim_start(),
        None => text,
    };
    let tag = text.strip_prefix('<')?;
    let end = tag.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
    Some(&tag[..end])
}

/// The text of the first `<name>` element of a 2xx answer the SDK refused to parse, only when
/// the answer is the one expected: its root element starts with one of `roots` (moto names
/// them differently than S3), and it carries no `<Error>` (S3 may answer 200 with an error
/// body, which must stay an error).
fn lenient_element(body: &[u8], roots: &[&str], name: &str) -> Option<String> {
    let root = xml_root(body)?;
    if !roots.iter().any(|r| root.starts_with(r)) || root == "Error" {
        return None;
    }
    if std::str::from_utf8(body).ok()?.contains("<Error>") {
        return None;
    }
    xml_element(body, name)
}

/// The text of the first `<name>` element of a small XML answer.
fn xml_element(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find('<')? + start;
    Some(text[start..end].trim().to_owned())
}

impl S3Store {
    async fn delete_policy_impl(&self, bucket: &str) -> Result<(), StoreError> {
        self.client
            .delete_bucket_policy()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| err("DeleteBucketPolicy", bucket, "", e))?;
        Ok(())
    }
}

fn bad_request(op: &'static str, bucket: &str, message: &str) -> StoreError {
    StoreError {
        op,
        bucket: bucket.to_owned(),
        key: String::new(),
        kind: AwsErrorKind::Invalid,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lenient_parse_never_turns_an_error_into_a_success() {
        let ok = br#"<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUploadResponse xmlns="x"><ETag>&quot;abc-2&quot;</ETag></CompleteMultipartUploadResponse>"#;
        assert_eq!(
            lenient_element(ok, &["CompleteMultipartUpload"], "ETag").as_deref(),
            Some("&quot;abc-2&quot;")
        );
        // S3 answers some failures of CompleteMultipartUpload with 200 and an error body.
        let error = br#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><ETag>"x"</ETag></Error>"#;
        assert_eq!(
            lenient_element(error, &["CompleteMultipartUpload"], "ETag"),
            None
        );
        let nested = br#"<CompleteMultipartUploadResult><Error><Code>SlowDown</Code></Error><ETag>"x"</ETag></CompleteMultipartUploadResult>"#;
        assert_eq!(
            lenient_element(nested, &["CompleteMultipartUpload"], "ETag"),
            None
        );
        let other = br#"<ListBucketResult><ETag>"x"</ETag></ListBucketResult>"#;
        assert_eq!(
            lenient_element(other, &["CompleteMultipartUpload"], "ETag"),
            None
        );
        let versioning = br#"<VersioningConfiguration xmlns="x"><Status>Enabled</Status></VersioningConfiguration>"#;
        assert_eq!(
            lenient_element(versioning, &["VersioningConfiguration"], "Status").as_deref(),
            Some("Enabled")
        );
    }

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
