//! Reading a migrated secret, as an application does: fetch the object, check that S3 holds it
//! under DSSE-KMS under the key the reader expects, check that its envelope was sealed for
//! exactly this bucket and key, under that key and for that category, unwrap the data key with
//! KMS under the context of the location read (so that KMS itself enforces the binding), verify
//! the key commitment and open.
//! Needs only `s3:GetObject` on the category bucket and `kms:Decrypt` on the category key.
//! `FORMAT.md` is the contract for readers in other languages.

use zeroize::Zeroizing;

use crate::engine::migrate::{CTX_BUCKET, CTX_CATEGORY, CTX_KEY};
use crate::envelope::{self, EncryptionContext, EnvelopeError};
use crate::kms::{same_key, KeyService, KmsError};
use crate::store::{is_dsse, ObjectStore, StoreError};

/// What a reader expects of the object it opens: the category the location belongs to and
/// that category's KMS key (from the daemon's config or its mapping export). Without one, a
/// reader proves only that the object is a dualseal envelope sealed for where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Category name.
    pub category: String,
    /// The category's KMS key ARN (both layers).
    pub kms_key_arn: String,
}

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
    /// A layer is under another KMS key than the reader expects.
    #[error("s3://{bucket}/{key}: its {layer} is under KMS key {found}, not the expected {expected}; refusing it")]
    WrongKey {
        /// Bucket read.
        bucket: String,
        /// Key read.
        key: String,
        /// Which layer (`server-side layer`, `envelope`).
        layer: &'static str,
        /// The key found.
        found: String,
        /// The key expected.
        expected: String,
    },
    /// S3 did not say which KMS key encrypts the object, so the expected key cannot be proved.
    #[error("s3://{bucket}/{key}: S3 did not report which KMS key encrypts it (neither the read nor a HEAD named one), so the expected key cannot be proved; refusing it")]
    KeyNotReported {
        /// Bucket read.
        bucket: String,
        /// Key read.
        key: String,
    },
    /// The envelope was sealed for another category than the reader expects.
    #[error("s3://{bucket}/{key} holds an envelope of category {found:?}, not the expected {expected:?}; refusing it")]
    WrongCategory {
        /// Bucket read.
        bucket: String,
        /// Key read.
        key: String,
        /// The category in the envelope.
        found: String,
        /// The category expected.
        expected: String,
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
/// With an `expect`ation, both layers must be under its key and the envelope of its category.
///
/// # Errors
/// Any [`ReadError`]; none carries plaintext or key bytes.
pub async fn read_into(
    store: &dyn ObjectStore,
    keys: &dyn KeyService,
    bucket: &str,
    key: &str,
    expect: Option<&Expectation>,
    out: &mut dyn std::io::Write,
) -> Result<u64, ReadError> {
    use futures::StreamExt as _;
    let mut obj = store.get_stream(bucket, key).await?;
    check_dsse(obj.sse.as_deref(), bucket, key)?;
    let reported = obj.sse_kms_key_id.clone();
    if let Some(e) = expect {
        let reported = match obj.sse_kms_key_id.clone() {
            Some(k) => Some(k),
            None => store
                .head(bucket, key)
                .await?
                .and_then(|h| h.sse_kms_key_id),
        };
        let Some(found) = reported else {
            return Err(ReadError::KeyNotReported {
                bucket: bucket.into(),
                key: key.into(),
            });
        };
        if !same_key(&found, &e.kms_key_arn) {
            return Err(ReadError::WrongKey {
                bucket: bucket.into(),
                key: key.into(),
                layer: "server-side layer (DSSE-KMS)",
                found,
                expected: e.kms_key_arn.clone(),
            });
        }
    }
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
                let category = check_expectation(header, bucket, key, expect)?;
                // Both layers are sealed under one category key: even without an expectation,
                // a server-side key that differs from the envelope's is a replaced object.
                if let Some(found) = reported
                    .as_deref()
                    .filter(|k| !same_key(k, &header.kms_key_id))
                {
                    return Err(ReadError::WrongKey {
                        bucket: bucket.into(),
                        key: key.into(),
                        layer: "server-side layer (DSSE-KMS)",
                        found: found.to_owned(),
                        expected: format!("{} (the key its envelope names)", header.kms_key_id),
                    });
                }
                let data_key = unwrap(keys, header, bucket, key, category).await?;
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

/// The envelope's key and category against the expectation; the category to unwrap under.
fn check_expectation<'h>(
    header: &'h envelope::Header,
    bucket: &str,
    key: &str,
    expect: Option<&'h Expectation>,
) -> Result<&'h str, ReadError> {
    let sealed_category = header.context.get(CTX_CATEGORY).unwrap_or_default();
    let Some(e) = expect else {
        return Ok(sealed_category);
    };
    if !same_key(&header.kms_key_id, &e.kms_key_arn) {
        return Err(ReadError::WrongKey {
            bucket: bucket.into(),
            key: key.into(),
            layer: "envelope",
            found: header.kms_key_id.clone(),
            expected: e.kms_key_arn.clone(),
        });
    }
    if sealed_category != e.category {
        return Err(ReadError::WrongCategory {
            bucket: bucket.into(),
            key: key.into(),
            found: sealed_category.into(),
            expected: e.category.clone(),
        });
    }
    Ok(&e.category)
}

/// Unwraps the data key under the context of the location read (and the expected category),
/// not the header's: an envelope whose context says anything else does not unwrap, whatever a
/// reader's own checks missed. A version-2 envelope's key is bound without the object key.
async fn unwrap(
    keys: &dyn KeyService,
    header: &envelope::Header,
    bucket: &str,
    key: &str,
    category: &str,
) -> Result<envelope::DataKey, ReadError> {
    let mut context = EncryptionContext::new()
        .with(CTX_CATEGORY, category)
        .with(CTX_BUCKET, bucket);
    if header.version != envelope::FORMAT_VERSION_SHARED_KEY {
        context = context.with(CTX_KEY, key);
    }
    Ok(keys
        .decrypt_data_key(&header.kms_key_id, &header.wrapped_key, &context)
        .await?)
}
