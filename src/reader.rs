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
    /// Writing the plaintext out failed (disk full, closed pipe).
    #[error("writing the plaintext failed: {0}")]
    Output(std::io::Error),
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

/// Reads and opens `s3://bucket/key` as a stream, writing the plaintext to `out` segment by
/// segment as each one authenticates: memory holds a segment, whatever the object's size.
/// When it fails after some output, that output is an authenticated prefix of the object, and
/// the error says the object is incomplete: truncation is only detected at the end.
///
/// # Errors
/// Any [`ReadError`]; none carries plaintext or key bytes.
pub async fn read_into(
    store: &dyn ObjectStore,
    keys: &dyn KeyService,
    bucket: &str,
    key: &str,
    out: &mut dyn std::io::Write,
) -> Result<u64, ReadError> {
    use futures::StreamExt as _;
    let mut obj = store.get_stream(bucket, key).await?;
    check_dsse(obj.sse.as_deref(), bucket, key)?;
    let bad = |source| ReadError::Envelope {
        bucket: bucket.into(),
        key: key.into(),
        source,
    };
    let mut opener = envelope::StreamOpener::new(None);
    let mut plain = Zeroizing::new(Vec::new());
    let mut written = 0u64;
    let mut emit = |plain: &mut Zeroizing<Vec<u8>>| -> Result<(), ReadError> {
        out.write_all(plain).map_err(ReadError::Output)?;
        written += plain.len() as u64;
        plain.clear();
        Ok(())
    };
    let mut started = false;
    while let Some(chunk) = obj.body.next().await {
        opener.push(&chunk?, &mut plain).map_err(bad)?;
        if !started {
            if let Some(header) = opener.header() {
                check_location(header, bucket, key)?;
                let data_key = unwrap(keys, header).await?;
                opener.start(&data_key, &mut plain).map_err(bad)?;
                started = true;
            }
        }
        emit(&mut plain)?;
    }
    opener.finish(&mut plain).map_err(bad)?;
    emit(&mut plain)?;
    out.flush().map_err(ReadError::Output)?;
    Ok(written)
}

fn check_dsse(sse: Option<&str>, bucket: &str, key: &str) -> Result<(), ReadError> {
    if is_dsse(sse) {
        return Ok(());
    }
    Err(ReadError::NotDsse {
        bucket: bucket.into(),
        key: key.into(),
        found: sse.unwrap_or("none").into(),
    })
}

/// The envelope must name exactly the place it was read from: a swapped or copied object
/// is refused before KMS is asked.
fn check_location(header: &envelope::Header, bucket: &str, key: &str) -> Result<(), ReadError> {
    let field = |name| header.context.get(name);
    let here = (
        field(crate::engine::migrate::CTX_BUCKET),
        field(crate::engine::migrate::CTX_KEY),
    );
    if here == (Some(bucket), Some(key)) {
        return Ok(());
    }
    Err(ReadError::Misplaced {
        bucket: bucket.into(),
        key: key.into(),
        sealed_for: format!("s3://{}/{}", here.0.unwrap_or("?"), here.1.unwrap_or("?")),
    })
}

async fn unwrap(
    keys: &dyn KeyService,
    header: &envelope::Header,
) -> Result<envelope::DataKey, ReadError> {
    Ok(keys
        .decrypt_data_key(
            &header.kms_key_id,
            &header.wrapped_key,
            &header.kms_context(),
        )
        .await?)
}
