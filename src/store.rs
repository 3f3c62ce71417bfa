//! Object storage: the [`ObjectStore`] trait the engine uses and its S3 implementation, the
//! only module that speaks `aws_sdk_s3`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use zeroize::Zeroizing;

use crate::aws::{classify_sdk_error, AwsErrorKind};

/// The SSE header value S3 uses for dual-layer SSE-KMS.
pub const SSE_DSSE_KMS: &str = "aws:kms:dsse";

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
    /// Writes a sealed object with DSSE-KMS.
    async fn put_sealed(&self, put: SealedPut) -> Result<PutResult, StoreError>;
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
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(conf),
        }
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
        let len = usize::try_from(out.content_length().unwrap_or(0)).unwrap_or(0);
        // Collect into a buffer we own and zeroize, rather than the SDK's aggregated Bytes.
        let mut body = Zeroizing::new(Vec::with_capacity(len));
        let mut stream = out.body;
        while let Some(chunk) = stream.try_next().await.map_err(|e| StoreError {
            op: "GetObject",
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            kind: AwsErrorKind::Transient,
            message: format!("reading the body failed: {e}"),
        })? {
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            body,
            etag,
            version_id,
            sse,
            sse_kms_key_id,
            metadata,
        })
    }

    async fn put_sealed(&self, put: SealedPut) -> Result<PutResult, StoreError> {
        let context_b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(put.sse_context_json.as_bytes())
        };
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
            .body(ByteStream::from(put.body))
            .send()
            .await
            .map_err(|e| err("PutObject", &put.bucket, &put.key, e))?;
        Ok(PutResult {
            request_id: out.request_id().map(str::to_owned),
            etag: out.e_tag().unwrap_or_default().to_owned(),
            version_id: out.version_id().map(str::to_owned),
        })
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<HeadInfo>, StoreError> {
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
