//! The S3 implementation of [`ObjectStore`] over `aws_sdk_s3`, and the helpers its bucket
//! administration shares.

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockMode, ServerSideEncryption};
use zeroize::Zeroizing;

use super::{
    check_key, Fetched, HeadInfo, ListPage, ListedObject, ObjectStore, Precondition, PutResult,
    RetentionMode, SealedPut, SealedUpload, StoreError, Streamed, UploadedPart,
};
use crate::aws::{classify_sdk_error, AwsErrorKind};

/// [`ObjectStore`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct S3Store {
    pub(super) client: aws_sdk_s3::Client,
    /// Bodies are sent with `UNSIGNED-PAYLOAD` instead of a second SHA-256 for the signature.
    unsigned_payload: bool,
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
            unsigned_payload: over_tls(sdk.endpoint_url()),
        }
    }
}

/// Whether requests to `endpoint` (AWS's own when none is configured) travel over TLS. Only
/// then is a body sent unsigned: TLS protects it on the way, and S3 still checks it against
/// the `x-amz-checksum-sha256` we name, which the signature covers. Over plain HTTP the SDK
/// hashes the body a second time into the signature, as before.
fn over_tls(endpoint: Option<&str>) -> bool {
    endpoint.is_none_or(|u| {
        u.get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    })
}

impl S3Store {
    /// A bucket's lifecycle rules (none when it has no configuration).
    pub(super) async fn lifecycle_rules(
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

impl S3Store {
    pub(super) async fn delete_policy_impl(&self, bucket: &str) -> Result<(), StoreError> {
        self.client
            .delete_bucket_policy()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| err("DeleteBucketPolicy", bucket, "", e))?;
        Ok(())
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

pub(super) fn err<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
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

/// `Ok(None)` for the "not configured" error codes of bucket sub-resources.
pub(super) fn absent<T>(r: Result<T, StoreError>, codes: &[&str]) -> Result<Option<T>, StoreError> {
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

pub(super) fn bad_request(op: &'static str, bucket: &str, message: &str) -> StoreError {
    StoreError {
        op,
        bucket: bucket.to_owned(),
        key: String::new(),
        kind: AwsErrorKind::Invalid,
        message: message.to_owned(),
    }
}

/// The name of the root element of an XML answer (after the `<?xml …?>` prolog).
pub(super) fn xml_root(body: &[u8]) -> Option<&str> {
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
pub(super) fn lenient_element(body: &[u8], roots: &[&str], name: &str) -> Option<String> {
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
pub(super) fn xml_element(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find('<')? + start;
    Some(text[start..end].trim().to_owned())
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
        let sha256_b64 = super::sha256_b64(&body);
        let len = i64::try_from(body.len()).unwrap_or(i64::MAX);
        let request = self
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(len)
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .checksum_sha256(&sha256_b64)
            .body(ByteStream::from(body));
        let out = if self.unsigned_payload {
            request.customize().disable_payload_signing().send().await
        } else {
            request.send().await
        }
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
        let request = self
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
            .body(ByteStream::from(put.body));
        let out = if self.unsigned_payload {
            request.customize().disable_payload_signing().send().await
        } else {
            request.send().await
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `x-amz-content-sha256` header the SDK sends with a PutObject to `endpoint`.
    async fn payload_hash_sent_to(endpoint: &str) -> String {
        let (http, request) = aws_smithy_http_client::test_util::capture_request(None);
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new(
                        "AKIDTEST", "secret", None, None, "test",
                    ),
                ),
            )
            .http_client(http)
            .build();
        let store = S3Store::new(&sdk, true);
        let body = bytes::Bytes::from_static(b"sealed envelope");
        let checksum_sha256_b64 = crate::store::sha256_b64(&body);
        let _ = store
            .put_sealed(SealedPut {
                bucket: "dest".into(),
                key: "k".into(),
                body,
                kms_key_id: "key".into(),
                sse_context_json: "{}".into(),
                checksum_sha256_b64: checksum_sha256_b64.clone(),
                metadata: std::collections::HashMap::new(),
                precondition: Precondition::Absent,
                retention: None,
            })
            .await;
        let sent = request.expect_request();
        let header = |name: &str| sent.headers().get(name).map(str::to_owned);
        assert_eq!(
            header("x-amz-checksum-sha256").as_deref(),
            Some(checksum_sha256_b64.as_str()),
            "the body's checksum travels with it"
        );
        let signed = header("authorization").unwrap_or_default();
        assert!(
            signed.contains("x-amz-checksum-sha256"),
            "the signature does not cover the checksum: {signed}"
        );
        header("x-amz-content-sha256").unwrap_or_default()
    }

    #[tokio::test]
    async fn bodies_go_unsigned_only_over_tls_and_the_signed_checksum_still_binds_them() {
        assert_eq!(
            payload_hash_sent_to("https://s3.example.test").await,
            "UNSIGNED-PAYLOAD"
        );
        assert_eq!(
            payload_hash_sent_to("HTTPS://s3.example.test").await,
            "UNSIGNED-PAYLOAD"
        );
        let over_http = payload_hash_sent_to("http://127.0.0.1:9").await;
        assert_eq!(
            over_http.len(),
            64,
            "over HTTP the body is hashed into the signature: {over_http}"
        );
        assert!(over_tls(None), "AWS's own endpoints are HTTPS");
        assert!(!over_tls(Some("http")));
    }

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
}
