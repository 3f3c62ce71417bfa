//! The proofs an attempt rests on: what S3 reports about a destination object (server-side
//! encryption under the category key, the checksum of the bytes written), and that the bytes
//! read back open through KMS to the source. Each check fails closed: a fact S3 did not report
//! is a failure, never a pass.

use sha2::{Digest, Sha256};

use super::{context_for, Proved, ServerSide};
use crate::engine::datakey::SealingKey;
use crate::engine::error::ObjectError;
use crate::engine::Target;
use crate::envelope::{self, EncryptionContext};
use crate::kms::KeyService;
use crate::store::{is_dsse, Fetched, ObjectStore, SSE_DSSE_KMS};

/// Whose object a destination key holds, judged by the metadata dualseal writes.
pub(in crate::engine) enum Ownership {
    Foreign(String),
    OursSameVersion,
    OursOlderVersion,
}

/// Reads a destination object back and proves it: DSSE-KMS under the category key, the bytes
/// we wrote (when `expected_sha` is given), an envelope for this location, and that it opens
/// through KMS, as any reader would, to exactly `source` (when given; a deleted source leaves
/// only the recorded checksum to compare).
///
/// # Errors
/// `Verify`, `WrongEncryption`, `KeyNotReported`, `Envelope`, `Store` or `Kms`.
#[allow(clippy::too_many_arguments)] // each is one fact the proof needs
pub async fn prove_destination(
    store: &dyn ObjectStore,
    keys: &dyn KeyService,
    target: &Target,
    dest_key: &str,
    expected_sha: Option<&str>,
    source: Option<&[u8]>,
    sealed_with: Option<&SealingKey>,
) -> Result<Proved, ObjectError> {
    let ctx = context_for(&target.category, &target.bucket, dest_key);
    // The Decrypt a proof needs is known before the read-back (the wrapped key, KMS key and
    // context we wrote), so it is asked alongside the GET and used only if the stored header
    // carries exactly that request. A shared key is proved once: the object holding its
    // `proving` lock asks early; the others then find it proven and ask nothing.
    let prover = match sealed_with {
        Some(k) if !k.proves(&k.wrapped) => k.proving(&k.wrapped).await,
        _ => None,
    };
    let early = sealed_with
        .filter(|k| !k.proves(&k.wrapped))
        .map(|k| (k, k.kms_context(&ctx)));
    // Proven while this object waited: no read-back of the key needs holding up.
    let prover = prover.filter(|_| early.is_some());
    let unwrap_early = async {
        match &early {
            Some((k, kms_ctx)) => {
                Some(keys.decrypt_data_key(&k.key_arn, &k.wrapped, kms_ctx).await)
            }
            None => None,
        }
    };
    let (dst, early_unwrap) = tokio::join!(store.get(&target.bucket, dest_key), unwrap_early);
    let dst = dst?;
    let answered = check_server_side(
        dst.sse.as_deref(),
        dst.sse_kms_key_id.as_deref(),
        target,
        "GetObject",
    );
    let server_side = confirm_by_head(store, target, dest_key, answered).await?;
    check_destination_bytes(&dst, &ctx, expected_sha)?;
    let (header, _) = envelope::parse_header(&dst.body)?;
    let asked_early = early.filter(|(k, kms_ctx)| {
        header.wrapped_key == k.wrapped
            && header.kms_key_id == k.key_arn
            && header.kms_context() == *kms_ctx
    });
    let key = match (asked_early, early_unwrap) {
        (Some((k, _)), Some(unwrapped)) => {
            let key = unwrapped_as_generated(Some(k), &header.wrapped_key, unwrapped?)?;
            drop(prover);
            key
        }
        _ => {
            // Another envelope than the one we wrote: ask KMS about what it says (the lock is
            // let go first, since `data_key_for_proof` takes it itself).
            drop(prover);
            data_key_for_proof(keys, &header, sealed_with).await?
        }
    };
    if !envelope::opens_to(&key, &dst.body, Some(&ctx), source)? {
        return Err(ObjectError::Verify(
            "the destination decrypts to different bytes than the source".into(),
        ));
    }
    Ok(Proved {
        server_side,
        envelope_kms_key: header.kms_key_id.clone(),
        envelope_version: header.version,
    })
}

/// The final word on a copy whose HEAD, too, named no KMS key: which object, and why dualseal
/// refuses it.
fn not_reported(e: ObjectError, target: &Target, dest_key: &str) -> ObjectError {
    match e {
        ObjectError::KeyNotReported(_) => ObjectError::KeyNotReported(format!(
            "s3://{}/{dest_key} did not report which KMS key encrypts it (neither the answer nor a HEAD named one); dualseal cannot prove the server-side layer and fails closed. The endpoint must report x-amz-server-side-encryption-aws-kms-key-id as AWS S3 does",
            target.bucket
        )),
        other => other,
    }
}

/// An answer that named no KMS key gets one HEAD, which must; any other outcome stands.
/// No option turns this off: a server that never names the key cannot prove the server-side
/// layer, and every copy it holds fails closed.
///
/// # Errors
/// What the answer's check or the HEAD's check says.
pub async fn confirm_by_head(
    store: &dyn ObjectStore,
    target: &Target,
    dest_key: &str,
    answered: Result<ServerSide, ObjectError>,
) -> Result<ServerSide, ObjectError> {
    match answered {
        Err(ObjectError::KeyNotReported(_)) => {
            let Some(head) = store.head(&target.bucket, dest_key).await? else {
                return Err(ObjectError::Verify(format!(
                    "s3://{}/{dest_key} vanished while it was being proved",
                    target.bucket
                )));
            };
            check_server_side(
                head.sse.as_deref(),
                head.sse_kms_key_id.as_deref(),
                target,
                "HeadObject",
            )
            .map_err(|e| not_reported(e, target, dest_key))
        }
        other => other,
    }
}

/// The data key a proof opens an envelope with: one KMS has already unwrapped, from this very
/// wrapped form, to the key we sealed with (a shared data key proven by an earlier object:
/// asking KMS again would prove nothing new), or else what KMS Decrypt returns now, as any
/// reader would get it.
pub(in crate::engine) async fn data_key_for_proof<'k>(
    keys: &dyn KeyService,
    header: &envelope::Header,
    sealed_with: Option<&'k SealingKey>,
) -> Result<ProofKey<'k>, ObjectError> {
    // One object at a time makes the first proof of a shared key, so KMS is asked once.
    let _one_prover = match sealed_with {
        Some(k) => k.proving(&header.wrapped_key).await,
        None => None,
    };
    if let Some(k) = sealed_with.filter(|k| k.proves(&header.wrapped_key)) {
        return Ok(ProofKey::Proven(&k.key));
    }
    let key = keys
        .decrypt_data_key(
            &header.kms_key_id,
            &header.wrapped_key,
            &header.kms_context(),
        )
        .await?;
    unwrapped_as_generated(sealed_with, &header.wrapped_key, key)
}

/// `key`, what KMS unwrapped `wrapped` to, recorded against the key we sealed with (proving a
/// shared one); a different key than KMS generated for it fails the proof.
fn unwrapped_as_generated<'k>(
    sealed_with: Option<&SealingKey>,
    wrapped: &[u8],
    key: envelope::DataKey,
) -> Result<ProofKey<'k>, ObjectError> {
    if sealed_with.is_some_and(|k| !k.record_unwrap(wrapped, &key)) {
        return Err(ObjectError::Verify(
            "KMS unwrapped the stored data key to a different key than it generated".into(),
        ));
    }
    Ok(ProofKey::Unwrapped(key))
}

/// A data key for a proof, borrowed when already proven.
pub(in crate::engine) enum ProofKey<'k> {
    /// Proven earlier.
    Proven(&'k envelope::DataKey),
    /// Unwrapped by KMS for this proof.
    Unwrapped(envelope::DataKey),
}

impl std::ops::Deref for ProofKey<'_> {
    type Target = envelope::DataKey;
    fn deref(&self) -> &envelope::DataKey {
        match self {
            Self::Proven(k) => k,
            Self::Unwrapped(k) => k,
        }
    }
}

/// Whether the answer to a write already proves it for verify=checksum: S3 accepted a body
/// whose SHA-256 it checked against ours (it refuses a mismatch with `BadDigest`), echoes that
/// digest, and reports DSSE-KMS under the category key; `Some` carries what it reported.
/// Without the echo or the key id (some S3-compatible servers), the caller asks with a HEAD
/// instead.
///
/// # Errors
/// `Verify` when S3 echoes another digest; `WrongEncryption` when it reports another SSE or
/// another key.
pub fn written_proves(
    written: &crate::store::PutResult,
    target: &Target,
    sha256_b64: &str,
) -> Result<Option<ServerSide>, ObjectError> {
    let answered = check_server_side(
        written.sse.as_deref(),
        written.sse_kms_key_id.as_deref(),
        target,
        "PutObject",
    );
    match (written.checksum_sha256_b64.as_deref(), answered) {
        (_, Err(ObjectError::KeyNotReported(_))) | (None, _) => Ok(None),
        (Some(c), _) if c != sha256_b64 => Err(ObjectError::Verify(
            "S3 checked the write against another SHA-256 than the envelope's".into(),
        )),
        (Some(_), answered) => answered.map(Some),
    }
}

/// The other half of a checksum-mode proof: a HEAD shows the object we wrote (same ETag), with
/// DSSE-KMS under the category key and the SHA-256 that S3 itself checked the body against on
/// the write. Together with the local open, this proves what a read-back would, without
/// the GET and the KMS Decrypt.
///
/// # Errors
/// `Verify`, `WrongEncryption` or `KeyNotReported` naming what does not hold; `Store`.
pub async fn prove_by_checksum(
    store: &dyn ObjectStore,
    target: &Target,
    dest_key: &str,
    etag: &str,
    sha256_b64: &str,
) -> Result<ServerSide, ObjectError> {
    let Some(head) = store.head(&target.bucket, dest_key).await? else {
        return Err(ObjectError::Verify(
            "the destination vanished right after the write".into(),
        ));
    };
    if head.etag != etag {
        return Err(ObjectError::Verify(
            "the destination changed right after the write (ETag differs)".into(),
        ));
    }
    let server_side = check_server_side(
        head.sse.as_deref(),
        head.sse_kms_key_id.as_deref(),
        target,
        "HeadObject",
    )
    .map_err(|e| not_reported(e, target, dest_key))?;
    match head.checksum_sha256_b64.as_deref() {
        Some(c) if c == sha256_b64 => Ok(server_side),
        Some(_) => Err(ObjectError::Verify(
            "S3's stored SHA-256 differs from the envelope written".into(),
        )),
        None => Err(ObjectError::Verify(
            "S3 reports no SHA-256 checksum for the object; this endpoint cannot support verify=checksum, use verify=full".into(),
        )),
    }
}

/// Checks the server-side layer one S3 answer (`answered_by`) reports for a destination
/// object: DSSE-KMS under the category's key, both as reported. Fails closed: an answer that
/// names no key proves nothing about the key ([`confirm_by_head`] asks once more).
///
/// # Errors
/// `WrongEncryption` naming what S3 reported instead; `KeyNotReported` when it named no key.
pub fn check_server_side(
    sse: Option<&str>,
    kms_key_id: Option<&str>,
    target: &Target,
    answered_by: &'static str,
) -> Result<ServerSide, ObjectError> {
    if !is_dsse(sse) {
        return Err(ObjectError::WrongEncryption(format!(
            "destination server-side encryption is {:?}, expected {SSE_DSSE_KMS:?}",
            sse.unwrap_or("none")
        )));
    }
    let Some(k) = kms_key_id else {
        if sse.is_none() {
            // Only a `bench` build against a server that ignores SSE gets here (is_dsse).
            return Ok(ServerSide {
                sse: "none (bench server without SSE)".into(),
                kms_key_id: "none".into(),
                answered_by,
            });
        }
        return Err(ObjectError::KeyNotReported(format!(
            "the {answered_by} answer named no KMS key"
        )));
    };
    if !crate::kms::same_key(k, &target.kms_key_arn) {
        return Err(ObjectError::WrongEncryption(format!(
            "destination is encrypted under KMS key {k}, expected {}",
            target.kms_key_arn
        )));
    }
    Ok(ServerSide {
        sse: sse.unwrap_or_default().to_owned(),
        kms_key_id: k.to_owned(),
        answered_by,
    })
}

/// Checks the stored bytes of a destination object: the envelope written (when `sha_hex` is
/// given), sealed for this location.
///
/// # Errors
/// `Verify` or `Envelope` naming the first property that does not hold.
pub fn check_destination_bytes(
    dst: &Fetched,
    ctx: &EncryptionContext,
    sha_hex: Option<&str>,
) -> Result<(), ObjectError> {
    if sha_hex.is_some_and(|sha| hex::encode(Sha256::digest(&dst.body)) != sha) {
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
