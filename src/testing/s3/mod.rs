//! An in-memory S3 with AWS's semantics where moto is lax: conditional writes (`If-None-Match:
//! *`, `If-Match`) answer 412, the SHA-256 a write names is checked (BadDigest), multipart
//! objects carry the composite checksum (`…-N`) and ETag, every answer about an object
//! reports its server-side algorithm and KMS key (DSSE included), versions are kept in
//! versioned buckets, listings are paged, open multipart uploads are listable and abortable.
//! Faults come from a seeded [`FaultPlan`]; it also keeps a log of every write it applied, for
//! the simulation's invariants.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use md5::{Digest as _, Md5};
use zeroize::Zeroizing;

use super::faults::{lock, Fault, FaultPlan};
use crate::aws::AwsErrorKind;
use crate::store::{
    sha256_b64, BodyStream, Fetched, HeadInfo, ListPage, ListedObject, ObjectStore, Precondition,
    PutResult, SealedPut, SealedUpload, StoreError, Streamed, UploadedPart,
};

mod admin;
mod multipart;

/// Keys per listing page: small, so that every history pages.
const PAGE: usize = 7;

/// One stored version of an object.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Version id (`null` in an unversioned bucket).
    pub version_id: String,
    /// `None`: a delete marker.
    pub body: Option<bytes::Bytes>,
    /// Quoted ETag.
    pub etag: String,
    /// Server-side algorithm.
    pub sse: Option<String>,
    /// Server-side KMS key.
    pub kms_key: Option<String>,
    /// The SHA-256 checksum S3 stored (base64; composite `…-N` for multipart).
    pub checksum: Option<String>,
    /// User metadata.
    pub metadata: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct Bucket {
    versioned: bool,
    /// Versions per key, oldest first.
    objects: BTreeMap<String, Vec<Stored>>,
    policy: Option<String>,
}

impl Bucket {
    fn current(&self, key: &str) -> Option<&Stored> {
        self.objects.get(key)?.last().filter(|v| v.body.is_some())
    }
}

#[derive(Debug)]
struct Upload {
    bucket: String,
    key: String,
    kms_key: String,
    metadata: HashMap<String, String>,
    parts: BTreeMap<i32, (bytes::Bytes, String)>,
}

/// A write S3 applied, as the simulation's invariants read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedWrite {
    /// Bucket written.
    pub bucket: String,
    /// Key written.
    pub key: String,
    /// The `dualseal-source-etag` metadata of the write (empty when none).
    pub source_etag: String,
}

#[derive(Debug, Default)]
struct State {
    buckets: BTreeMap<String, Bucket>,
    uploads: BTreeMap<String, Upload>,
    next: u64,
    writes: Vec<AppliedWrite>,
    /// What happened to multipart uploads, in order (create, complete, abort, with ids).
    upload_log: Vec<String>,
}

/// The in-memory S3.
#[derive(Debug, Clone)]
pub struct MemS3 {
    state: Arc<Mutex<State>>,
    faults: Arc<FaultPlan>,
}

fn error(op: &'static str, bucket: &str, key: &str, kind: AwsErrorKind, msg: &str) -> StoreError {
    StoreError {
        op,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        kind,
        message: msg.to_owned(),
    }
}

fn quoted_md5(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(body)))
}

impl MemS3 {
    /// An S3 without buckets, drawing faults from `faults`.
    pub fn new(faults: Arc<FaultPlan>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            faults,
        }
    }

    /// Creates a bucket (versioned or not) outside any fault.
    pub fn create(&self, bucket: &str, versioned: bool) {
        lock(&self.state).buckets.insert(
            bucket.to_owned(),
            Bucket {
                versioned,
                ..Bucket::default()
            },
        );
    }

    /// Writes a plaintext source object, as the organisation's own tools do (no faults).
    pub fn seed(&self, bucket: &str, key: &str, body: &[u8]) {
        let mut s = lock(&self.state);
        s.next += 1;
        let n = s.next;
        let Some(b) = s.buckets.get_mut(bucket) else {
            return;
        };
        let version_id = if b.versioned {
            format!("v{n}")
        } else {
            "null".into()
        };
        let stored = Stored {
            version_id,
            body: Some(bytes::Bytes::copy_from_slice(body)),
            etag: quoted_md5(body),
            sse: None,
            kms_key: None,
            checksum: None,
            metadata: HashMap::new(),
        };
        let versions = b.objects.entry(key.to_owned()).or_default();
        if !b.versioned {
            versions.clear();
        }
        versions.push(stored);
    }

    /// Deletes an object as a user would (a delete marker in a versioned bucket).
    pub fn remove(&self, bucket: &str, key: &str) {
        let mut s = lock(&self.state);
        s.next += 1;
        let n = s.next;
        let Some(b) = s.buckets.get_mut(bucket) else {
            return;
        };
        if b.versioned {
            if let Some(v) = b.objects.get_mut(key) {
                v.push(Stored {
                    version_id: format!("v{n}"),
                    body: None,
                    etag: String::new(),
                    sse: None,
                    kms_key: None,
                    checksum: None,
                    metadata: HashMap::new(),
                });
            }
        } else {
            b.objects.remove(key);
        }
    }

    /// The current version of an object, if any.
    pub fn current(&self, bucket: &str, key: &str) -> Option<Stored> {
        lock(&self.state).buckets.get(bucket)?.current(key).cloned()
    }

    /// Every version of an object, oldest first.
    pub fn versions(&self, bucket: &str, key: &str) -> Vec<Stored> {
        lock(&self.state)
            .buckets
            .get(bucket)
            .and_then(|b| b.objects.get(key).cloned())
            .unwrap_or_default()
    }

    /// Every key with a current version.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let s = lock(&self.state);
        s.buckets.get(bucket).map_or_else(Vec::new, |b| {
            b.objects
                .keys()
                .filter(|k| b.current(k).is_some())
                .cloned()
                .collect()
        })
    }

    /// Every write S3 applied (objects and completed uploads), in order.
    pub fn applied_writes(&self) -> Vec<AppliedWrite> {
        lock(&self.state).writes.clone()
    }

    /// What happened to multipart uploads, in order: for a failing seed's report.
    pub fn upload_log(&self) -> Vec<String> {
        lock(&self.state).upload_log.clone()
    }

    /// Open multipart uploads, as (bucket, key).
    pub fn open_uploads(&self) -> Vec<(String, String)> {
        lock(&self.state)
            .uploads
            .values()
            .map(|u| (u.bucket.clone(), u.key.clone()))
            .collect()
    }

    /// The fault this request meets; `Err` for those that stop it before it is applied.
    fn enter(
        &self,
        op: &'static str,
        bucket: &str,
        key: &str,
        writes: bool,
    ) -> Result<Fault, StoreError> {
        match self.faults.s3(writes) {
            Fault::SlowDown => Err(error(
                op,
                bucket,
                key,
                AwsErrorKind::Throttled,
                "SlowDown (HTTP 503) (simulated)",
            )),
            Fault::Internal => Err(error(
                op,
                bucket,
                key,
                AwsErrorKind::Transient,
                "InternalError (HTTP 500) (simulated)",
            )),
            Fault::ResetBefore => Err(error(
                op,
                bucket,
                key,
                AwsErrorKind::Transient,
                "connection reset before the request was sent (simulated)",
            )),
            f => Ok(f),
        }
    }

    fn lost(op: &'static str, bucket: &str, key: &str) -> StoreError {
        error(
            op,
            bucket,
            key,
            AwsErrorKind::Transient,
            "connection reset after the request was applied; the answer was lost (simulated)",
        )
    }

    /// Applies a write of `stored` under `precondition`; the new version.
    fn apply(
        s: &mut State,
        op: &'static str,
        bucket: &str,
        key: &str,
        precondition: &Precondition,
        mut stored: Stored,
    ) -> Result<Stored, StoreError> {
        s.next += 1;
        let n = s.next;
        let b = s
            .buckets
            .get_mut(bucket)
            .ok_or_else(|| error(op, bucket, key, AwsErrorKind::NotFound, "NoSuchBucket"))?;
        let current = b.current(key);
        let holds = match precondition {
            Precondition::Absent => current.is_none(),
            Precondition::Matches(etag) => current.is_some_and(|c| c.etag == *etag),
        };
        if !holds {
            return Err(error(
                op,
                bucket,
                key,
                AwsErrorKind::PreconditionFailed,
                "PreconditionFailed (HTTP 412)",
            ));
        }
        stored.version_id = if b.versioned {
            format!("v{n}")
        } else {
            "null".into()
        };
        let versions = b.objects.entry(key.to_owned()).or_default();
        if !b.versioned {
            versions.clear();
        }
        versions.push(stored.clone());
        s.writes.push(AppliedWrite {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source_etag: stored
                .metadata
                .get("dualseal-source-etag")
                .cloned()
                .unwrap_or_default(),
        });
        Ok(stored)
    }

    fn answer(stored: &Stored, fault: Fault) -> (Option<String>, Option<String>) {
        let key = if fault == Fault::DropKey {
            None
        } else {
            stored.kms_key.clone()
        };
        (stored.sse.clone(), key)
    }

    fn read(
        &self,
        op: &'static str,
        bucket: &str,
        key: &str,
    ) -> Result<(Stored, Fault), StoreError> {
        let fault = self.enter(op, bucket, key, false)?;
        let s = lock(&self.state);
        let b = s
            .buckets
            .get(bucket)
            .ok_or_else(|| error(op, bucket, key, AwsErrorKind::NotFound, "NoSuchBucket"))?;
        let v = b.current(key).cloned().ok_or_else(|| {
            error(
                op,
                bucket,
                key,
                AwsErrorKind::NotFound,
                "NoSuchKey (HTTP 404)",
            )
        })?;
        Ok((v, fault))
    }
}

#[async_trait]
impl ObjectStore for MemS3 {
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<ListPage, StoreError> {
        const OP: &str = "ListObjectsV2";
        self.enter(OP, bucket, prefix, false)?;
        let s = lock(&self.state);
        let b = s
            .buckets
            .get(bucket)
            .ok_or_else(|| error(OP, bucket, prefix, AwsErrorKind::NotFound, "NoSuchBucket"))?;
        let mut objects = Vec::new();
        let mut next_token = None;
        for (k, _) in b.objects.range::<String, _>((
            token
                .as_ref()
                .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
            std::ops::Bound::Unbounded,
        )) {
            if !k.starts_with(prefix) {
                continue;
            }
            let Some(cur) = b.current(k) else { continue };
            if objects.len() == PAGE {
                next_token = objects.last().map(|o: &ListedObject| o.key.clone());
                break;
            }
            objects.push(ListedObject {
                key: k.clone(),
                size: cur.body.as_ref().map_or(0, |b| b.len() as u64),
                etag: cur.etag.clone(),
            });
        }
        Ok(ListPage {
            objects,
            next_token,
        })
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Fetched, StoreError> {
        let (v, fault) = self.read("GetObject", bucket, key)?;
        let (sse, sse_kms_key_id) = Self::answer(&v, fault);
        Ok(Fetched {
            body: Zeroizing::new(v.body.map(|b| b.to_vec()).unwrap_or_default()),
            etag: v.etag,
            version_id: Some(v.version_id).filter(|v| v != "null"),
            sse,
            sse_kms_key_id,
            metadata: v.metadata,
        })
    }

    async fn read_head(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: usize,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let (v, _) = self.read("GetObject", bucket, key)?;
        let body = v.body.unwrap_or_default();
        Ok(Zeroizing::new(body[..body.len().min(max_bytes)].to_vec()))
    }

    async fn get_stream(&self, bucket: &str, key: &str) -> Result<Streamed, StoreError> {
        let (v, fault) = self.read("GetObject", bucket, key)?;
        let (sse, sse_kms_key_id) = Self::answer(&v, fault);
        let body = v.body.unwrap_or_default();
        let content_length = body.len() as u64;
        // In chunks of odd sizes, as a network delivers them.
        let chunks: Vec<Result<bytes::Bytes, StoreError>> = (0..body.len())
            .step_by(7919)
            .map(|i| Ok(body.slice(i..(i + 7919).min(body.len()))))
            .collect();
        let stream: BodyStream = Box::pin(futures::stream::iter(chunks));
        Ok(Streamed {
            etag: v.etag,
            version_id: Some(v.version_id).filter(|v| v != "null"),
            sse,
            sse_kms_key_id,
            metadata: v.metadata,
            content_length,
            body: stream,
        })
    }

    async fn put_sealed(&self, put: SealedPut) -> Result<PutResult, StoreError> {
        const OP: &str = "PutObject";
        let fault = self.enter(OP, &put.bucket, &put.key, true)?;
        if sha256_b64(&put.body) != put.checksum_sha256_b64 {
            return Err(error(
                OP,
                &put.bucket,
                &put.key,
                AwsErrorKind::Invalid,
                "BadDigest (HTTP 400)",
            ));
        }
        let stored = Stored {
            version_id: String::new(),
            etag: quoted_md5(&put.body),
            body: Some(put.body.clone()),
            sse: Some(crate::store::SSE_DSSE_KMS.to_owned()),
            kms_key: Some(put.kms_key_id.clone()),
            checksum: Some(put.checksum_sha256_b64.clone()),
            metadata: put.metadata.clone(),
        };
        let applied = {
            let mut s = lock(&self.state);
            Self::apply(&mut s, OP, &put.bucket, &put.key, &put.precondition, stored)?
        };
        if fault == Fault::LostAnswer {
            return Err(Self::lost(OP, &put.bucket, &put.key));
        }
        let (sse, sse_kms_key_id) = Self::answer(&applied, fault);
        Ok(PutResult {
            etag: applied.etag.clone(),
            request_id: Some(format!("sim-{}", applied.version_id)),
            version_id: Some(applied.version_id).filter(|v| v != "null"),
            sse,
            sse_kms_key_id,
            checksum_sha256_b64: applied.checksum,
        })
    }

    async fn create_multipart(&self, upload: &SealedUpload) -> Result<String, StoreError> {
        self.start_upload(upload)
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<UploadedPart, StoreError> {
        self.put_part(bucket, key, upload_id, number, body)
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        precondition: &Precondition,
    ) -> Result<PutResult, StoreError> {
        self.finish_upload(bucket, key, upload_id, parts, precondition)
    }

    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        self.abort_upload(bucket, key, upload_id)
    }

    async fn list_uploads(&self, bucket: &str, key: &str) -> Result<Vec<String>, StoreError> {
        self.uploads_of(bucket, key)
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<HeadInfo>, StoreError> {
        match self.read("HeadObject", bucket, key) {
            Ok((v, fault)) => {
                let (sse, sse_kms_key_id) = Self::answer(&v, fault);
                Ok(Some(HeadInfo {
                    etag: v.etag,
                    sse,
                    sse_kms_key_id,
                    checksum_sha256_b64: v.checksum,
                    metadata: v.metadata,
                }))
            }
            Err(e) if e.kind == AwsErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn check_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.enter("HeadBucket", bucket, "", false)?;
        if lock(&self.state).buckets.contains_key(bucket) {
            Ok(())
        } else {
            Err(error(
                "HeadBucket",
                bucket,
                "",
                AwsErrorKind::NotFound,
                "NoSuchBucket",
            ))
        }
    }
}
