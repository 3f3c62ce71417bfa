//! Multipart uploads as S3 keeps them: parts held per upload id until the upload is completed
//! (the composite checksum and ETag, the object's server-side encryption from the upload) or
//! aborted; an upload a completion refused (412) stays open.

use std::collections::BTreeMap;

use base64::Engine as _;
use md5::{Digest as _, Md5};

use super::super::faults::{lock, Fault};
use super::{error, quoted_md5, MemS3, Stored, Upload};
use crate::aws::AwsErrorKind;
use crate::store::sha256_b64;
use crate::store::{Precondition, PutResult, SealedUpload, StoreError, UploadedPart};

impl MemS3 {
    pub(super) fn start_upload(&self, upload: &SealedUpload) -> Result<String, StoreError> {
        const OP: &str = "CreateMultipartUpload";
        let fault = self.enter(OP, &upload.bucket, &upload.key, true)?;
        let id = hex::encode(self.faults.bytes::<12>());
        {
            let mut s = lock(&self.state);
            if !s.buckets.contains_key(&upload.bucket) {
                return Err(error(
                    OP,
                    &upload.bucket,
                    &upload.key,
                    AwsErrorKind::NotFound,
                    "NoSuchBucket",
                ));
            }
            s.upload_log.push(format!(
                "create {} {} {id} ({fault:?})",
                upload.bucket, upload.key
            ));
            s.uploads.insert(
                id.clone(),
                Upload {
                    bucket: upload.bucket.clone(),
                    key: upload.key.clone(),
                    kms_key: upload.kms_key_id.clone(),
                    metadata: upload.metadata.clone(),
                    parts: BTreeMap::new(),
                },
            );
        }
        if fault == Fault::LostAnswer {
            return Err(Self::lost(OP, &upload.bucket, &upload.key));
        }
        Ok(id)
    }

    pub(super) fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<UploadedPart, StoreError> {
        const OP: &str = "UploadPart";
        let fault = self.enter(OP, bucket, key, true)?;
        let sha = sha256_b64(&body);
        let etag = quoted_md5(&body);
        {
            let mut s = lock(&self.state);
            let u = s
                .uploads
                .get_mut(upload_id)
                .filter(|u| u.bucket == bucket && u.key == key)
                .ok_or_else(|| {
                    error(
                        OP,
                        bucket,
                        key,
                        AwsErrorKind::NotFound,
                        "NoSuchUpload (HTTP 404)",
                    )
                })?;
            u.parts.insert(number, (body, sha.clone()));
        }
        if fault == Fault::LostAnswer {
            return Err(Self::lost(OP, bucket, key));
        }
        Ok(UploadedPart {
            number,
            etag,
            sha256_b64: sha,
        })
    }

    pub(super) fn finish_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        precondition: &Precondition,
    ) -> Result<PutResult, StoreError> {
        const OP: &str = "CompleteMultipartUpload";
        let fault = self.enter(OP, bucket, key, true)?;
        let applied = {
            let mut s = lock(&self.state);
            let u = s
                .uploads
                .get(upload_id)
                .filter(|u| u.bucket == bucket && u.key == key)
                .ok_or_else(|| {
                    error(
                        OP,
                        bucket,
                        key,
                        AwsErrorKind::NotFound,
                        "NoSuchUpload (HTTP 404)",
                    )
                })?;
            let mut body = Vec::new();
            let (mut md5s, mut shas) = (Vec::new(), Vec::new());
            for p in parts {
                let Some((bytes, sha)) = u.parts.get(&p.number) else {
                    return Err(error(
                        OP,
                        bucket,
                        key,
                        AwsErrorKind::Invalid,
                        "InvalidPart (HTTP 400)",
                    ));
                };
                if *sha != p.sha256_b64 || quoted_md5(bytes) != p.etag {
                    return Err(error(
                        OP,
                        bucket,
                        key,
                        AwsErrorKind::Invalid,
                        "InvalidPart: checksum or ETag differs (HTTP 400)",
                    ));
                }
                body.extend_from_slice(bytes);
                md5s.extend_from_slice(&Md5::digest(bytes));
                shas.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(sha)
                        .unwrap_or_default(),
                );
            }
            let stored = Stored {
                version_id: String::new(),
                etag: format!("\"{}-{}\"", hex::encode(Md5::digest(&md5s)), parts.len()),
                body: Some(body.into()),
                sse: Some(crate::store::SSE_DSSE_KMS.to_owned()),
                kms_key: Some(u.kms_key.clone()),
                checksum: Some(format!("{}-{}", sha256_b64(&shas), parts.len())),
                metadata: u.metadata.clone(),
            };
            // On 412 the upload stays open, as on AWS: complete again or abort it.
            let applied = Self::apply(&mut s, OP, bucket, key, precondition, stored);
            s.upload_log.push(format!(
                "complete {bucket} {key} {upload_id} ({fault:?}): {}",
                applied
                    .as_ref()
                    .map_or_else(|e| e.message.clone(), |_| "applied".into())
            ));
            let applied = applied?;
            s.uploads.remove(upload_id);
            applied
        };
        if fault == Fault::LostAnswer {
            return Err(Self::lost(OP, bucket, key));
        }
        let (sse, sse_kms_key_id) = Self::answer(&applied, fault);
        Ok(PutResult {
            etag: applied.etag.clone(),
            request_id: Some(format!("sim-{}", applied.version_id)),
            version_id: Some(applied.version_id).filter(|v| v != "null"),
            sse,
            sse_kms_key_id,
            checksum_sha256_b64: None,
        })
    }

    pub(super) fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        const OP: &str = "AbortMultipartUpload";
        let fault = self.enter(OP, bucket, key, true)?;
        let mut s = lock(&self.state);
        let known = s.uploads.remove(upload_id).is_some();
        s.upload_log.push(format!(
            "abort {bucket} {key} {upload_id} ({fault:?}) known={known}"
        ));
        drop(s);
        if fault == Fault::LostAnswer {
            return Err(Self::lost(OP, bucket, key));
        }
        Ok(())
    }

    pub(super) fn uploads_of(&self, bucket: &str, key: &str) -> Result<Vec<String>, StoreError> {
        self.enter("ListMultipartUploads", bucket, key, false)?;
        Ok(lock(&self.state)
            .uploads
            .iter()
            .filter(|(_, u)| u.bucket == bucket && u.key == key)
            .map(|(id, _)| id.clone())
            .collect())
    }
}
