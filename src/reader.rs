//! Reading a migrated secret, as an application does: fetch the object, check that S3 holds it
//! under DSSE-KMS, check that its envelope was sealed for exactly this bucket and key, unwrap
//! the data key with KMS under that encryption context, verify the key commitment and open.
//! Needs only `s3:GetObject` on the category bucket and `kms:Decrypt` on the category key.
//! `FORMAT.md` is the contract for readers in other languages.

use zeroize::Zeroizing;

use crate::envelope::{self, EnvelopeError};
use crate::kms::{KeyService, KmsError};
use crate::store::{is_dsse, ObjectStore, StoreError};

/// Why an object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// S3 failed (missing object, access denied, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// KMS refused to unwrap the data key (no `kms:Decrypt`, wrong context, disabled key).
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The object is not a dualseal envelope, or it was tampered with. Never carries bytes.
    #[error("s3://{bucket}/{key} is not a valid dualseal envelope: {source}")]
    Envelope {
        /// Bucket read.
        bucket: String,
        /// Key read.
        key: String,
        /// What is wrong.
        source: EnvelopeError,
    },
    /// The object is stored without DSSE-KMS.
    #[error("s3://{bucket}/{key} is stored with server-side encryption {found:?}, not aws:kms:dsse; it was not written by dualseal or was replaced")]
    NotDsse {
        /// Bucket read.
        bucket: String,
        /// Key read.
        key: String,
        /// What S3 reported.
        found: String,
    },
    /// The envelope was sealed for another location: a swapped or copied object.
    #[error("s3://{bucket}/{key} holds an envelope sealed for {sealed_for}; refusing a moved or swapped object")]
    Misplaced {
        /// Bucket read.
        bucket: String,
        /// Key read.
        key: String,
        /// Where the envelope says it belongs.
        sealed_for: String,
    },
}

/// Reads and opens `s3://bucket/key`.
///
/// # Errors
/// Any [`ReadError`]; none carries plaintext or key bytes.
pub async fn read(
    store: &dyn ObjectStore,
    keys: &dyn KeyService,
    bucket: &str,
    key: &str,
) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let obj = store.get(bucket, key).await?;
    if !is_dsse(obj.sse.as_deref()) {
        return Err(ReadError::NotDsse {
            bucket: bucket.into(),
            key: key.into(),
            found: obj.sse.unwrap_or_else(|| "none".into()),
        });
    }
    let bad = |source| ReadError::Envelope {
        bucket: bucket.into(),
        key: key.into(),
        source,
    };
    let (header, _) = envelope::parse_header(&obj.body).map_err(bad)?;
    let ctx = &header.context;
    let field = |name| {
        ctx.iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v.as_str())
    };
    let here = (
        field(crate::engine::migrate::CTX_BUCKET),
        field(crate::engine::migrate::CTX_KEY),
    );
    if here != (Some(bucket), Some(key)) {
        return Err(ReadError::Misplaced {
            bucket: bucket.into(),
            key: key.into(),
            sealed_for: format!("s3://{}/{}", here.0.unwrap_or("?"), here.1.unwrap_or("?")),
        });
    }
    let data_key = keys
        .decrypt_data_key(
            &header.kms_key_id,
            &header.wrapped_key,
            &header.kms_context(),
        )
        .await?;
    envelope::open(&data_key, &obj.body, Some(ctx)).map_err(bad)
}
