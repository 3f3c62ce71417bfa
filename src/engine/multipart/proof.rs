//! Proving a streamed object: the destination read back part by part under the checks a whole
//! object gets, and the source's plaintext MAC to compare it with.

use futures::stream::StreamExt;
use hmac::Mac;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{mac_rest, mac_with, PlainMac};
use crate::aws::AwsErrorKind;
use crate::engine::datakey::SealingKey;
use crate::engine::error::ObjectError;
use crate::engine::migrate::{
    check_server_side, confirm_by_head, context_for, data_key_for_proof, Proved,
};
use crate::engine::Target;
use crate::envelope::StreamOpener;
use crate::kms::KeyService;
use crate::store::ObjectStore;

/// Reads a destination object back as a stream and proves it, as
/// [`prove_destination`](super::migrate::prove_destination) does for a whole object: DSSE-KMS
/// under the category key, the envelope we wrote (when `expected_sha` is given), sealed for
/// this location, opening through KMS to the plaintext whose MAC under `source.0` is
/// `source.1` (when given).
///
/// # Errors
/// `Verify`, `WrongEncryption`, `KeyNotReported`, `Envelope`, `Store` or `Kms`.
pub async fn prove_streamed(
    store: &dyn ObjectStore,
    keys: &dyn KeyService,
    target: &Target,
    dest_key: &str,
    expected_sha: Option<&str>,
    source: Option<(&[u8; 32], PlainMac)>,
    sealed_with: Option<&SealingKey>,
) -> Result<Proved, ObjectError> {
    let ctx = context_for(&target.category, &target.bucket, dest_key);
    let mut dst = store.get_stream(&target.bucket, dest_key).await?;
    let answered = check_server_side(
        dst.sse.as_deref(),
        dst.sse_kms_key_id.as_deref(),
        target,
        "GetObject",
    );
    let server_side = confirm_by_head(store, target, dest_key, answered).await?;
    let (mut envelope_kms_key, mut envelope_version) = (String::new(), 0);
    let mut opener = StreamOpener::new(Some(ctx));
    let mut envelope_sha = Sha256::new();
    let mut mac = source.as_ref().map(|(k, _)| mac_with(k));
    let mut plain = Zeroizing::new(Vec::new());
    let mut started = false;
    while let Some(chunk) = dst.body.next().await {
        let chunk = chunk?;
        envelope_sha.update(&chunk);
        opener.push(&chunk, &mut plain)?;
        if !started {
            if let Some(header) = opener.header() {
                envelope_kms_key.clone_from(&header.kms_key_id);
                envelope_version = header.version;
                let key = data_key_for_proof(keys, header, sealed_with).await?;
                opener.start(&key, &mut plain)?;
                started = true;
            }
        }
        if let Some(m) = &mut mac {
            m.update(&plain);
        }
        plain.clear();
    }
    opener.finish(&mut plain)?;
    if let Some(m) = &mut mac {
        m.update(&plain);
    }
    if expected_sha.is_some_and(|sha| hex::encode(envelope_sha.finalize()) != sha) {
        return Err(ObjectError::Verify(
            "destination bytes differ from the envelope written".into(),
        ));
    }
    if let (Some(read_back), Some((_, from_source))) = (mac, source) {
        // Constant-time comparison of the two tags.
        if from_source
            .verify_slice(&read_back.finalize().into_bytes())
            .is_err()
        {
            return Err(ObjectError::Verify(
                "the destination decrypts to different bytes than the source".into(),
            ));
        }
    }
    Ok(Proved {
        server_side,
        envelope_kms_key,
        envelope_version,
    })
}

/// Reads an object as a stream into a MAC under `key`: its ETag and the MAC, or `None` when
/// it does not exist.
///
/// # Errors
/// `Store` for anything but a missing object.
pub(in crate::engine) async fn digest_object(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    mac_key: &[u8; 32],
) -> Result<Option<(String, PlainMac)>, crate::store::StoreError> {
    let mut obj = match store.get_stream(bucket, key).await {
        Ok(o) => o,
        Err(e) if e.kind == AwsErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut mac = mac_with(mac_key);
    mac_rest(&mut mac, &mut obj.body).await?;
    Ok(Some((obj.etag, mac)))
}
