//! Round trips made visible: a wrapper that gives every S3 and KMS call a fixed latency and
//! logs when each began and ended, so a test can count the calls an object waits for one after
//! another (the critical path) rather than the calls made. With a latency far above the
//! machine's own work, two calls overlapped when their intervals overlap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::faults::lock;
use crate::envelope::{DataKey, EncryptionContext};
use crate::kms::{GeneratedKey, KeyService, KmsError};
use crate::store::{
    Fetched, HeadInfo, ListPage, ObjectStore, Precondition, PutResult, SealedPut, SealedUpload,
    StoreError, Streamed, UploadedPart,
};

/// One call: its operation, the key or KMS key it was about, and when it ran.
#[derive(Debug, Clone)]
pub struct Call {
    /// `GetObject`, `PutObject`, `GenerateDataKey`, ...
    pub op: &'static str,
    /// The object key (S3) or the KMS key (KMS).
    pub about: String,
    /// When it was sent.
    pub start: Instant,
    /// When its answer came.
    pub end: Instant,
}

/// The calls made through the wrappers sharing it.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<Call>>>);

impl CallLog {
    /// Every call so far, in the order they ended.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.0).clone()
    }

    /// The longest chain of `calls` in which each began after the one before it ended: the
    /// round trips waited for one after another.
    pub fn critical_path(calls: &[Call]) -> Vec<&'static str> {
        let mut sorted: Vec<&Call> = calls.iter().collect();
        sorted.sort_by_key(|c| c.end);
        let mut best: Vec<Vec<&'static str>> = Vec::with_capacity(sorted.len());
        for (i, c) in sorted.iter().enumerate() {
            let mut chain = (0..i)
                .filter(|&j| sorted[j].end <= c.start)
                .map(|j| best[j].clone())
                .max_by_key(Vec::len)
                .unwrap_or_default();
            chain.push(c.op);
            best.push(chain);
        }
        best.into_iter().max_by_key(Vec::len).unwrap_or_default()
    }
}

/// `inner` with every call taking `latency` more, and logged.
#[derive(Debug, Clone)]
pub struct Delayed<T> {
    inner: T,
    latency: Duration,
    log: CallLog,
}

impl<T> Delayed<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, latency: Duration, log: CallLog) -> Self {
        Self {
            inner,
            latency,
            log,
        }
    }

    async fn call<R>(
        &self,
        op: &'static str,
        about: &str,
        f: impl std::future::Future<Output = R>,
    ) -> R {
        let start = Instant::now();
        tokio::time::sleep(self.latency).await;
        let r = f.await;
        lock(&self.log.0).push(Call {
            op,
            about: about.to_owned(),
            start,
            end: Instant::now(),
        });
        r
    }
}

#[async_trait]
impl<T: ObjectStore> ObjectStore for Delayed<T> {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        let f = self.inner.list_page(bucket, prefix, token);
        self.call("ListObjectsV2", prefix, f).await
    }
    async fn get(&self, bucket: &str, key: &str) -> Result<Fetched, StoreError> {
        self.call("GetObject", key, self.inner.get(bucket, key))
            .await
    }
    async fn read_head(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: usize,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let f = self.inner.read_head(bucket, key, max_bytes);
        self.call("GetObject(range)", key, f).await
    }
    async fn get_stream(&self, bucket: &str, key: &str) -> Result<Streamed, StoreError> {
        self.call("GetObject", key, self.inner.get_stream(bucket, key))
            .await
    }
    async fn put_sealed(&self, put: SealedPut) -> Result<PutResult, StoreError> {
        let key = put.key.clone();
        self.call("PutObject", &key, self.inner.put_sealed(put))
            .await
    }
    async fn create_multipart(&self, upload: &SealedUpload) -> Result<String, StoreError> {
        let f = self.inner.create_multipart(upload);
        self.call("CreateMultipartUpload", &upload.key, f).await
    }
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<UploadedPart, StoreError> {
        let f = self.inner.upload_part(bucket, key, upload_id, number, body);
        self.call("UploadPart", key, f).await
    }
    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        precondition: &Precondition,
    ) -> Result<PutResult, StoreError> {
        let f = self
            .inner
            .complete_multipart(bucket, key, upload_id, parts, precondition);
        self.call("CompleteMultipartUpload", key, f).await
    }
    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        let f = self.inner.abort_multipart(bucket, key, upload_id);
        self.call("AbortMultipartUpload", key, f).await
    }
    async fn list_uploads(&self, bucket: &str, key: &str) -> Result<Vec<String>, StoreError> {
        let f = self.inner.list_uploads(bucket, key);
        self.call("ListMultipartUploads", key, f).await
    }
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<HeadInfo>, StoreError> {
        self.call("HeadObject", key, self.inner.head(bucket, key))
            .await
    }
    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.call("HeadBucket", bucket, self.inner.check_bucket(bucket))
            .await
    }
}

#[async_trait]
impl<T: KeyService> KeyService for Delayed<T> {
    async fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KmsError> {
        let f = self.inner.generate_data_key(key_id, context);
        self.call("GenerateDataKey", key_id, f).await
    }
    async fn decrypt_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let f = self.inner.decrypt_data_key(key_id, wrapped, context);
        self.call("Decrypt", key_id, f).await
    }
    async fn resolve_key(&self, key_id: &str) -> Result<String, KmsError> {
        self.call("DescribeKey", key_id, self.inner.resolve_key(key_id))
            .await
    }
}
