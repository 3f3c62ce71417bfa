//! Migrating one object: read the source, seal it under a fresh data key, write it with
//! DSSE-KMS, read it back and prove it decrypts to the source bytes.

use std::collections::HashMap;

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use sha2::{Digest, Sha256};

use super::error::ObjectError;
use super::Target;
use crate::envelope::{self, EncryptionContext, HeaderParams};
use crate::journal::JobId;
use crate::kms::KeyService;
use crate::store::{Fetched, ObjectStore, SealedPut, SSE_DSSE_KMS};

/// Names of the encryption-context pairs. Public because readers of `FORMAT.md` need them.
pub const CTX_CATEGORY: &str = "dualseal:category";
/// Destination bucket in the context.
pub const CTX_BUCKET: &str = "dualseal:bucket";
/// Destination key in the context.
pub const CTX_KEY: &str = "dualseal:key";

/// Prefix of the S3 user metadata dualseal writes (`x-amz-meta-dualseal-*`).
pub const META_PREFIX: &str = "dualseal-";

/// Characters escaped in metadata values: HTTP headers carry ASCII only, and '%' itself.
const META_ESCAPE: &AsciiSet = &CONTROLS.add(b'%').add(b'"').add(b'\\');

/// The encryption context of an object at its destination.
pub fn context_for(category: &str, bucket: &str, key: &str) -> EncryptionContext {
    EncryptionContext::new()
        .with(CTX_CATEGORY, category)
        .with(CTX_BUCKET, bucket)
        .with(CTX_KEY, key)
}

/// What a successful migration proved.
#[derive(Debug, Clone)]
pub struct Proof {
    /// Source ETag actually read.
    pub source_etag: String,
    /// Source version id, when versioned.
    pub source_version: Option<String>,
    /// Hex SHA-256 of the envelope.
    pub ciphertext_sha256: String,
    /// Destination ETag.
    pub dest_etag: String,
    /// KMS key ARN used for both layers.
    pub kms_key_arn: String,
    /// Bytes migrated.
    pub size: u64,
}

/// Everything one attempt needs.
pub struct Attempt<'a> {
    /// Object storage.
    pub store: &'a dyn ObjectStore,
    /// Key service.
    pub keys: &'a dyn KeyService,
    /// Job id (goes into metadata).
    pub job: JobId,
    /// Source bucket.
    pub source_bucket: &'a str,
    /// Source key.
    pub source_key: &'a str,
    /// Where it goes.
    pub target: &'a Target,
    /// Destination key.
    pub dest_key: &'a str,
    /// Envelope segment size.
    pub segment_size: u32,
}

impl Attempt<'_> {
    /// Runs one attempt: GET, seal, PUT, `on_uploaded` (to record the write), then read back
    /// and verify.
    ///
    /// # Errors
    /// Any [`ObjectError`]; the caller decides on retry from `is_retryable`.
    pub async fn run(
        &self,
        on_uploaded: impl FnOnce(&Proof) -> Result<(), crate::journal::JournalError>,
    ) -> Result<Proof, ObjectError> {
        let src = self.store.get(self.source_bucket, self.source_key).await?;
        let ctx = context_for(&self.target.category, &self.target.bucket, self.dest_key);
        let generated = self
            .keys
            .generate_data_key(&self.target.kms_key_arn, &ctx)
            .await?;
        let sealed = envelope::seal(
            &generated.key,
            HeaderParams {
                kms_key_id: generated.key_arn.clone(),
                wrapped_key: generated.wrapped,
                context: ctx.clone(),
                segment_size: self.segment_size,
            },
            &src.body,
        )?;
        drop(generated.key);
        let digest = Sha256::digest(&sealed);
        let sha_hex = hex::encode(digest);
        let put = SealedPut {
            bucket: self.target.bucket.clone(),
            key: self.dest_key.to_owned(),
            body: bytes::Bytes::from(sealed),
            kms_key_id: self.target.kms_key_arn.clone(),
            sse_context_json: ctx.to_json(),
            checksum_sha256_b64: base64::engine::general_purpose::STANDARD.encode(digest),
            metadata: self.metadata(&src),
        };
        let put_result = self.store.put_sealed(put).await?;
        let proof = Proof {
            source_etag: src.etag.clone(),
            source_version: src.version_id.clone(),
            ciphertext_sha256: sha_hex,
            dest_etag: put_result.etag,
            kms_key_arn: generated.key_arn,
            size: src.body.len() as u64,
        };
        on_uploaded(&proof)?;
        prove_destination(
            self.store,
            self.keys,
            self.target,
            self.dest_key,
            &proof.ciphertext_sha256,
            &src.body,
        )
        .await?;
        Ok(proof)
    }

    fn metadata(&self, src: &Fetched) -> HashMap<String, String> {
        let enc = |s: &str| utf8_percent_encode(s, META_ESCAPE).to_string();
        let mut m = HashMap::new();
        m.insert(
            format!("{META_PREFIX}source-bucket"),
            enc(self.source_bucket),
        );
        m.insert(format!("{META_PREFIX}source-key"), enc(self.source_key));
        m.insert(format!("{META_PREFIX}source-etag"), enc(&src.etag));
        if let Some(v) = &src.version_id {
            m.insert(format!("{META_PREFIX}source-version"), enc(v));
        }
        m.insert(format!("{META_PREFIX}job"), self.job.to_string());
        m.insert(format!("{META_PREFIX}category"), enc(&self.target.category));
        m.insert(
            format!("{META_PREFIX}envelope-version"),
            envelope::FORMAT_VERSION.to_string(),
        );
        m
    }
}

/// Reads a destination object back and proves it: DSSE-KMS under the category key, the bytes
/// we wrote (when `expected_sha` is known), an envelope for this location, and that it opens
/// through KMS, as any reader would, to exactly `source`.
///
/// # Errors
/// `Verify`, `Envelope`, `Store` or `Kms`.
pub async fn prove_destination(
    store: &dyn ObjectStore,
    keys: &dyn KeyService,
    target: &Target,
    dest_key: &str,
    expected_sha: &str,
    source: &[u8],
) -> Result<(), ObjectError> {
    let ctx = context_for(&target.category, &target.bucket, dest_key);
    let dst = store.get(&target.bucket, dest_key).await?;
    check_destination(&dst, target, &ctx, expected_sha)?;
    let (header, _) = envelope::parse_header(&dst.body)?;
    let key = keys
        .decrypt_data_key(&header.kms_key_id, &header.wrapped_key, &ctx)
        .await?;
    let plain = envelope::open(&key, &dst.body, Some(&ctx))?;
    if plain.as_slice() != source {
        return Err(ObjectError::Verify(
            "the destination decrypts to different bytes than the source".into(),
        ));
    }
    Ok(())
}

/// Checks the server-side layer and the stored bytes of a destination object.
///
/// # Errors
/// `Verify` naming the first property that does not hold.
pub fn check_destination(
    dst: &Fetched,
    target: &Target,
    ctx: &EncryptionContext,
    sha_hex: &str,
) -> Result<(), ObjectError> {
    if dst.sse.as_deref() != Some(SSE_DSSE_KMS) {
        return Err(ObjectError::Verify(format!(
            "destination server-side encryption is {:?}, expected {SSE_DSSE_KMS:?}",
            dst.sse.as_deref().unwrap_or("none")
        )));
    }
    if let Some(k) = &dst.sse_kms_key_id {
        if !key_matches(k, &target.kms_key_arn) {
            return Err(ObjectError::Verify(format!(
                "destination is encrypted under KMS key {k}, expected {}",
                target.kms_key_arn
            )));
        }
    }
    if hex::encode(Sha256::digest(&dst.body)) != sha_hex {
        return Err(ObjectError::Verify(
            "destination bytes differ from the envelope written".into(),
        ));
    }
    let (header, _) = envelope::parse_header(&dst.body)?;
    if header.context != *ctx {
        return Err(ObjectError::Envelope(
            envelope::EnvelopeError::ContextMismatch,
        ));
    }
    Ok(())
}

/// S3 may report the key as an ARN or a bare id; both name the same key.
fn key_matches(reported: &str, arn: &str) -> bool {
    reported == arn
        || arn.ends_with(&format!("/{reported}"))
        || reported.ends_with(&format!("/{arn}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_match_arns() {
        let arn = "arn:aws:kms:us-east-1:1:key/abc";
        assert!(key_matches(arn, arn));
        assert!(key_matches("abc", arn));
        assert!(!key_matches("abd", arn));
    }
}
