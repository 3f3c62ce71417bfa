//! Migrating one object: read the source, seal it under a fresh data key, write it with
//! DSSE-KMS, read it back and prove it decrypts to the source bytes.

use std::collections::HashMap;

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use sha2::{Digest, Sha256};

use super::error::ObjectError;
use super::Target;
use crate::aws::AwsErrorKind;
use crate::envelope::{self, EncryptionContext};
use crate::kms::KeyService;
use crate::model::{JobId, ObjectRecord, ObjectState, VerifyMode};
use crate::store::{Fetched, HeadInfo, ObjectStore, Precondition, SealedPut};

mod proof;

pub use proof::{
    check_destination_bytes, check_server_side, confirm_by_head, prove_by_checksum,
    prove_destination, written_proves,
};
pub(super) use proof::{data_key_for_proof, Ownership};

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
    /// Hex SHA-256 of the envelope (empty when an earlier upload was adopted and its digest
    /// was not recorded).
    pub ciphertext_sha256: String,
    /// Destination ETag.
    pub dest_etag: String,
    /// S3 request id of the write, when this attempt wrote.
    pub put_request_id: Option<String>,
    /// KMS key ARN used for both layers.
    pub kms_key_arn: String,
    /// Bytes migrated.
    pub size: u64,
    /// How the destination came to hold the object.
    pub how: WriteKind,
    /// The source ETag differed from the one listed: the newer version was copied.
    pub source_changed_since_listing: bool,
    /// Envelope format version written (0: adopted from an earlier attempt, not rewritten).
    pub envelope_version: u8,
    /// The server-side layer as S3 answered it for this copy.
    pub server_side: ServerSide,
}

/// The server-side layer of a destination object as S3 answered it: the audit trail records
/// this, never the key the config expected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSide {
    /// `x-amz-server-side-encryption`, as answered.
    pub sse: String,
    /// `x-amz-server-side-encryption-aws-kms-key-id`, as answered.
    pub kms_key_id: String,
    /// The S3 operation whose answer carried them.
    pub answered_by: &'static str,
}

/// What a read-back proved, as observed.
#[derive(Debug, Clone, Default)]
pub struct Proved {
    /// The server-side layer S3 reported.
    pub server_side: ServerSide,
    /// The KMS key the envelope's header names (the client-side layer), as read.
    pub envelope_kms_key: String,
    /// The envelope's format version, as read.
    pub envelope_version: u8,
}

/// How an attempt made the destination hold the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// A new object was written.
    Written,
    /// dualseal's own earlier upload of the same source version was found and proved (after a
    /// crash or a lost response): nothing was written again.
    Adopted,
    /// dualseal's own earlier copy of an older source version was replaced.
    Recopied,
}

impl WriteKind {
    /// Name used in audit details.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Written => "written",
            Self::Adopted => "adopted-existing-upload",
            Self::Recopied => "recopied-source-changed",
        }
    }
}

/// The end of one attempt that is not an error.
#[derive(Debug)]
pub enum Outcome {
    /// Migrated and proved.
    Verified(Proof),
    /// The destination key holds an object dualseal did not write for this source: left alone.
    Conflict(String),
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
    /// How the write is proved.
    pub verify: VerifyMode,
    /// The journal's record before this attempt.
    pub prior: &'a ObjectRecord,
    /// Object Lock retention for the write (archive copies).
    pub retention: Option<crate::store::Retention>,
    /// Content rules to check the source against before it is sealed (when any category
    /// claims content kinds).
    pub content_rules: Option<&'a crate::classify::Classifier>,
    /// Where data keys come from (fresh per object, or shared within limits).
    pub data_keys: &'a super::datakey::DataKeys,
    /// Look at the destination before sealing: where a copy is usually already in place (an
    /// archive run again), proving it costs no data key and no refused write.
    pub head_first: bool,
}

pub(super) fn meta_value(s: &str) -> String {
    utf8_percent_encode(s, META_ESCAPE).to_string()
}

impl Attempt<'_> {
    /// Runs one attempt: GET the source; if the journal says an upload of this very version is
    /// already there, prove it; otherwise seal, write conditionally (never over an object
    /// dualseal did not write), `on_uploaded` (to record the write), read back and prove.
    /// A fresh object waits for three round trips with verify=full (the source GET with the
    /// data key, the PUT, the read-back GET with the Decrypt) and two with verify=checksum.
    ///
    /// # Errors
    /// Any [`ObjectError`]; the caller decides on retry from `is_retryable`.
    pub async fn run(
        &self,
        on_uploaded: impl AsyncFnOnce(&Proof) -> Result<(), crate::journal::JournalError>,
    ) -> Result<Outcome, ObjectError> {
        let ctx = context_for(&self.target.category, &self.target.bucket, self.dest_key);
        // An object no earlier attempt wrote needs a data key whatever the source holds: KMS is
        // asked while the GET is on its way, so the two round trips overlap. (A source that
        // changed, a conflict or a GET that fails leaves the key unused, dropped and zeroized.)
        let fresh = self.prior.state != ObjectState::Uploaded && !self.head_first;
        let early_key = async {
            if fresh {
                Some(
                    self.data_keys
                        .for_object(self.keys, &self.target.kms_key_arn, &ctx)
                        .await,
                )
            } else {
                None
            }
        };
        let (src, early_key) = tokio::join!(
            self.store.get(self.source_bucket, self.source_key),
            early_key
        );
        let src = src?;
        if let Some(held) = self.content_disagreement(&src.body) {
            return Ok(Outcome::Conflict(held));
        }
        let changed = !self.prior.source_etag.is_empty() && self.prior.source_etag != src.etag;
        if self.head_first {
            if let Some(head) = self.store.head(&self.target.bucket, self.dest_key).await? {
                if matches!(self.ownership(&head, &src.etag), Ownership::OursSameVersion) {
                    if let Some(proof) = self.prove_and_adopt(&src, None, head.etag, changed).await
                    {
                        return Ok(Outcome::Verified(proof));
                    }
                }
            }
        }
        if self.prior.state == ObjectState::Uploaded && !changed {
            // A retry after the write was accepted but its proof failed (or a resume of a
            // record that says so): the least work is to prove what is there. If that fails,
            // fall through and write (conditionally) again.
            if let (Some(sha), Some(etag)) = (&self.prior.ciphertext_sha256, &self.prior.dest_etag)
            {
                if let Some(proof) = self
                    .prove_and_adopt(&src, Some(sha), etag.clone(), false)
                    .await
                {
                    return Ok(Outcome::Verified(proof));
                }
            }
        }
        let sealing = match early_key {
            Some(key) => key?,
            None => {
                self.data_keys
                    .for_object(self.keys, &self.target.kms_key_arn, &ctx)
                    .await?
            }
        };
        let sealed = envelope::seal(
            &sealing.key,
            sealing.header_params(&ctx, self.segment_size),
            &src.body,
        )?;
        let version = sealing.envelope_version();
        if self.verify == VerifyMode::Checksum {
            // The half of the proof that needs no read-back: the envelope we are about to
            // write opens, for this location, to exactly the source bytes.
            if !envelope::opens_to(&sealing.key, &sealed, Some(&ctx), Some(&src.body))? {
                return Err(ObjectError::Verify(
                    "the sealed envelope does not open to the source bytes".into(),
                ));
            }
        }
        let digest = Sha256::digest(&sealed);
        let sha_hex = hex::encode(digest);
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        let mut put = SealedPut {
            bucket: self.target.bucket.clone(),
            key: self.dest_key.to_owned(),
            body: bytes::Bytes::from(sealed),
            kms_key_id: self.target.kms_key_arn.clone(),
            sse_context_json: ctx.to_json(),
            checksum_sha256_b64: b64.clone(),
            metadata: self.metadata(&src.etag, src.version_id.as_deref(), version),
            precondition: Precondition::Absent,
            retention: self.retention,
        };
        let mut how = WriteKind::Written;
        let written = match self.store.put_sealed(put.clone()).await {
            Ok(r) => r,
            Err(e) if e.kind == AwsErrorKind::PreconditionFailed => {
                // Something is already there. Whose is it?
                let Some(head) = self.store.head(&self.target.bucket, self.dest_key).await? else {
                    // Deleted in between: the next attempt writes it.
                    return Err(ObjectError::Verify(
                        "destination changed during the write".into(),
                    ));
                };
                match self.ownership(&head, &src.etag) {
                    Ownership::Foreign(why) => return Ok(Outcome::Conflict(why)),
                    Ownership::OursSameVersion => {
                        // Our own write whose response or record was lost: prove, don't rewrite.
                        let proved = prove_destination(
                            self.store,
                            self.keys,
                            self.target,
                            self.dest_key,
                            None,
                            Some(&src.body),
                            None,
                        )
                        .await?;
                        let proof = self.adopted(
                            &src.etag,
                            src.version_id.as_deref(),
                            src.body.len() as u64,
                            String::new(),
                            head.etag,
                            changed,
                            proved,
                        );
                        // Proved already: the caller's final record is the only one needed.
                        return Ok(Outcome::Verified(proof));
                    }
                    Ownership::OursOlderVersion => {
                        how = WriteKind::Recopied;
                        put.precondition = Precondition::Matches(head.etag);
                        self.store.put_sealed(put.clone()).await?
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        // The envelope is in S3 now; a read-back must not hold a second copy of it.
        drop(put);
        // What S3 said of the write it accepted: enough for verify=checksum when it echoes
        // the digest it checked the body against.
        let answered = written_proves(&written, self.target, &b64)?;
        let mut proof = Proof {
            source_etag: src.etag.clone(),
            source_version: src.version_id.clone(),
            ciphertext_sha256: sha_hex,
            dest_etag: written.etag,
            put_request_id: written.request_id,
            kms_key_arn: sealing.key_arn.clone(),
            size: src.body.len() as u64,
            how,
            source_changed_since_listing: changed,
            envelope_version: version,
            server_side: answered.clone().unwrap_or_default(),
        };
        // When S3 echoed the digest it checked the body against, the proof is complete and
        // the final record follows at once: nothing is left for a retry to skip.
        if !(self.verify == VerifyMode::Checksum && answered.is_some()) {
            on_uploaded(&proof).await?;
        }
        match self.verify {
            VerifyMode::Full => {
                proof.server_side = prove_destination(
                    self.store,
                    self.keys,
                    self.target,
                    self.dest_key,
                    Some(&proof.ciphertext_sha256),
                    Some(&src.body),
                    Some(&sealing),
                )
                .await?
                .server_side;
            }
            VerifyMode::Checksum if answered.is_some() => {}
            VerifyMode::Checksum => {
                proof.server_side = prove_by_checksum(
                    self.store,
                    self.target,
                    self.dest_key,
                    &proof.dest_etag,
                    &b64,
                )
                .await?;
            }
        }
        Ok(Outcome::Verified(proof))
    }

    /// Proves a copy an earlier attempt (or run) left at the destination, by read-back against
    /// the source bytes (and the envelope digest, when recorded), and adopts it; `None` when
    /// it does not prove, and the caller writes instead.
    async fn prove_and_adopt(
        &self,
        src: &Fetched,
        expected_sha: Option<&String>,
        dest_etag: String,
        changed: bool,
    ) -> Option<Proof> {
        let proved = prove_destination(
            self.store,
            self.keys,
            self.target,
            self.dest_key,
            expected_sha.map(String::as_str),
            Some(&src.body),
            None,
        )
        .await
        .ok()?;
        Some(self.adopted(
            &src.etag,
            src.version_id.as_deref(),
            src.body.len() as u64,
            expected_sha.cloned().unwrap_or_default(),
            dest_etag,
            changed,
            proved,
        ))
    }

    /// Why the object must stay in the source, when a category other than the target claims
    /// what its content is.
    pub(super) fn content_disagreement(&self, body: &[u8]) -> Option<String> {
        let rules = self.content_rules?;
        let m = rules.classify_content(body)?;
        let owner = rules.name(m.category);
        (owner != self.target.category).then(|| {
            format!(
                "content is {} ({}), which category {owner:?} claims, but the key rules put it in {:?}; left in the source. Make the rules agree (`dualsealctl plan --inspect-content` lists every disagreement) and run the job again",
                m.verdict.kind, m.verdict.why, self.target.category
            )
        })
    }

    /// The proof of a copy an earlier attempt wrote, of the source version `etag` /
    /// `version` of `size` bytes, proved again rather than rewritten; the keys are those the
    /// read-back observed.
    #[allow(clippy::too_many_arguments)] // each is one fact of the proof
    pub(super) fn adopted(
        &self,
        etag: &str,
        version: Option<&str>,
        size: u64,
        sha: String,
        dest_etag: String,
        changed: bool,
        proved: Proved,
    ) -> Proof {
        Proof {
            source_etag: etag.to_owned(),
            source_version: version.map(str::to_owned),
            ciphertext_sha256: sha,
            dest_etag,
            put_request_id: None,
            kms_key_arn: proved.envelope_kms_key,
            server_side: proved.server_side,
            size,
            how: WriteKind::Adopted,
            source_changed_since_listing: changed,
            // Adopted: written by an earlier attempt, whose envelope version the proof read.
            envelope_version: proved.envelope_version,
        }
    }

    pub(super) fn ownership(&self, head: &HeadInfo, source_etag: &str) -> Ownership {
        let get = |k: &str| {
            head.metadata
                .get(&format!("{META_PREFIX}{k}"))
                .map(String::as_str)
        };
        let ours = get("source-bucket") == Some(meta_value(self.source_bucket).as_str())
            && get("source-key") == Some(meta_value(self.source_key).as_str());
        if !ours {
            return Ownership::Foreign(format!(
                "destination s3://{}/{} already holds an object dualseal did not write for this source; it was not overwritten. Move it away or change the category's destination",
                self.target.bucket, self.dest_key
            ));
        }
        if get("source-etag") == Some(meta_value(source_etag).as_str()) {
            Ownership::OursSameVersion
        } else {
            Ownership::OursOlderVersion
        }
    }

    pub(super) fn metadata(
        &self,
        source_etag: &str,
        source_version: Option<&str>,
        envelope_version: u8,
    ) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert(
            format!("{META_PREFIX}source-bucket"),
            meta_value(self.source_bucket),
        );
        m.insert(
            format!("{META_PREFIX}source-key"),
            meta_value(self.source_key),
        );
        m.insert(format!("{META_PREFIX}source-etag"), meta_value(source_etag));
        if let Some(v) = source_version {
            m.insert(format!("{META_PREFIX}source-version"), meta_value(v));
        }
        m.insert(format!("{META_PREFIX}job"), self.job.to_string());
        m.insert(
            format!("{META_PREFIX}category"),
            meta_value(&self.target.category),
        );
        m.insert(
            format!("{META_PREFIX}envelope-version"),
            envelope_version.to_string(),
        );
        m
    }
}
