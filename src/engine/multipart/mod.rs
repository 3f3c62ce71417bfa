//! Migrating a large object as a stream: the source is read, sealed and written as a
//! multipart upload one part at a time, and read back the same way, so memory holds a few
//! parts whatever the object's size.
//!
//! The proof is the one a whole object gets with `verify = full`: the destination holds the
//! envelope we wrote (SHA-256 over the stream), under DSSE-KMS with the category's key, sealed
//! for its location, and it opens through KMS to the bytes read from the source. The two
//! plaintexts are compared by an HMAC under a random key that lives only for this attempt:
//! neither the plaintext nor an unkeyed hash of it is kept anywhere.
//!
//! Large objects are always proved by reading back: S3 stores a composite checksum for a
//! multipart object, which `verify = checksum` cannot compare with a whole-envelope digest.

mod cleanup;
mod proof;

pub(super) use cleanup::abort_open_uploads;
pub(super) use proof::digest_object;
pub use proof::prove_streamed;

use futures::stream::{FuturesUnordered, StreamExt};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::ObjectError;
use super::migrate::{context_for, Attempt, Outcome, Ownership, Proof, WriteKind};
use crate::aws::AwsErrorKind;
use crate::envelope::{self, StreamSealer};
use crate::journal::JournalError;
use crate::model::ObjectState;
use crate::store::{BodyStream, Precondition, SealedUpload, UploadedPart};

/// S3's limit on parts per upload.
const MAX_PARTS: u64 = 10_000;

/// The largest object S3 stores (5 TiB), less room for the envelope's overhead.
pub const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024 * 1024 - 4 * 1024 * 1024 * 1024;

/// When and how large objects are streamed.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Objects of at least this many bytes (as listed) are streamed.
    pub threshold: u64,
    /// Envelope bytes per part.
    pub part_size: u64,
    /// Parts of one object uploading at once.
    pub parts_in_flight: u32,
}

impl Settings {
    /// Whether an object of `size` bytes is streamed.
    pub fn streams(&self, size: u64) -> bool {
        size >= self.threshold
    }

    /// The part size for an object of `size` bytes: the configured one, raised so that its
    /// envelope fits in S3's 10,000 parts.
    pub fn part_size_for(&self, size: u64, segment_size: u32) -> u64 {
        let envelope = envelope::body_len(size, segment_size) + 64 * 1024;
        self.part_size.max(envelope.div_ceil(MAX_PARTS))
    }

    /// Bytes an attempt at an object of `size` holds at its peak: the parts uploading and the
    /// one filling, plus a segment or two of read-back.
    pub fn memory_for(&self, size: u64, segment_size: u32) -> u64 {
        let part = self.part_size_for(size, segment_size);
        part * (u64::from(self.parts_in_flight) + 1) + 4 * u64::from(segment_size)
    }
}

/// The keyed digest two plaintext streams are compared by.
pub(super) type PlainMac = Hmac<Sha256>;

/// A MAC key for comparing two plaintext streams within one attempt.
pub(super) fn fresh_mac_key() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(k.as_mut());
    k
}

pub(super) fn mac_with(key: &[u8; 32]) -> PlainMac {
    // HMAC accepts keys of any length: this cannot fail.
    <PlainMac as hmac::KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// Feeds what is left of `body` into `mac`.
async fn mac_rest(
    mac: &mut PlainMac,
    body: &mut BodyStream,
) -> Result<(), crate::store::StoreError> {
    while let Some(chunk) = body.next().await {
        mac.update(&chunk?);
    }
    Ok(())
}

/// What sealing and uploading a stream produced.
struct Uploaded {
    parts: Vec<UploadedPart>,
    envelope_sha256: [u8; 32],
    plain_mac: PlainMac,
    plain_len: u64,
}

/// Waits for `fut` while the parts already uploading make progress; finished parts are
/// collected, and the first failed one fails the whole.
async fn while_uploading<F, T, U>(
    inflight: &mut FuturesUnordered<U>,
    done: &mut Vec<UploadedPart>,
    fut: F,
) -> Result<T, ObjectError>
where
    F: std::future::Future<Output = T>,
    U: std::future::Future<Output = Result<UploadedPart, crate::store::StoreError>>,
{
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            biased;
            Some(part) = inflight.next(), if !inflight.is_empty() => done.push(part?),
            out = &mut fut => return Ok(out),
        }
    }
}

/// What a destination key held before a streamed attempt wrote.
enum Existing {
    /// Nothing of dualseal's for this source version: the source stream is untouched.
    Absent,
    /// dualseal's copy of this version, proved.
    Proved(Box<Proof>),
    /// dualseal's copy of this version that did not prove; the source stream was read.
    Unproved,
}

/// Records the multipart upload an attempt has open (`Some`), durably before it returns, or
/// that none is (`None`).
pub type OnUpload<'a> = dyn Fn(Option<String>) -> futures::future::BoxFuture<'a, Result<(), JournalError>>
    + Send
    + Sync
    + 'a;

impl Attempt<'_> {
    /// A copy an earlier attempt completed whose record a crash lost: a HEAD shows dualseal's
    /// copy of this very source version, and a read-back proves it, so nothing is uploaded
    /// again (a multi-GiB object re-sent on every restart might never finish). The source
    /// stream is consumed unless the answer is [`Existing::Absent`].
    async fn prove_existing(
        &self,
        src: &mut crate::store::Streamed,
        head: &[u8],
        mac_key: &[u8; 32],
        changed: bool,
    ) -> Result<Existing, ObjectError> {
        let Some(found) = self.store.head(&self.target.bucket, self.dest_key).await? else {
            return Ok(Existing::Absent);
        };
        if !matches!(
            self.ownership(&found, &src.etag),
            Ownership::OursSameVersion
        ) {
            return Ok(Existing::Absent);
        }
        let mut mac = mac_with(mac_key);
        mac.update(head);
        mac_rest(&mut mac, &mut src.body).await?;
        let proved = prove_streamed(
            self.store,
            self.keys,
            self.target,
            self.dest_key,
            None,
            Some((mac_key, mac)),
            None,
        )
        .await;
        match proved {
            Ok(proved) => Ok(Existing::Proved(Box::new(self.adopted(
                &src.etag,
                src.version_id.as_deref(),
                src.content_length,
                String::new(),
                found.etag,
                changed,
                proved,
            )))),
            // Not provable: written anew (conditionally, over our own copy).
            Err(e) => {
                tracing::info!(bucket = %self.target.bucket, key = self.dest_key, error = %e, "an existing copy could not be proved; writing it again");
                Ok(Existing::Unproved)
            }
        }
    }

    /// [`Attempt::run`] for a large object, streamed. `on_upload` records the multipart
    /// upload an attempt has open (or that none is) and returns once a record of an open one
    /// is durable, so that a crash leaves nothing the next attempt does not clean up.
    ///
    /// # Errors
    /// Any [`ObjectError`]; the caller decides on retry from `is_retryable`.
    pub async fn run_streamed(
        &self,
        settings: &Settings,
        on_upload: &OnUpload<'_>,
        on_uploaded: impl AsyncFnOnce(&Proof) -> Result<(), JournalError>,
    ) -> Result<Outcome, ObjectError> {
        // Every upload open on this destination key is a leftover of an earlier attempt (one
        // worker per key): the journaled one, and one whose id a crash took before its record
        // was durable (between CreateMultipartUpload's answer and the flush). S3 keeps, and
        // bills, their parts.
        let mut stale: Vec<String> = self.prior.upload_id.iter().cloned().collect();
        for id in self
            .store
            .list_uploads(&self.target.bucket, self.dest_key)
            .await?
        {
            if !stale.contains(&id) {
                stale.push(id);
            }
        }
        for id in &stale {
            self.store
                .abort_multipart(&self.target.bucket, self.dest_key, id)
                .await?;
        }
        if self.prior.upload_id.is_some() {
            on_upload(None).await?;
        }
        let mac_key = fresh_mac_key();
        let (mut src, mut head) = self.open_source().await?;
        if let Some(held) = self.content_disagreement(&head) {
            return Ok(Outcome::Conflict(held));
        }
        let changed = !self.prior.source_etag.is_empty() && self.prior.source_etag != src.etag;
        match self
            .prove_existing(&mut src, &head, &mac_key, changed)
            .await?
        {
            Existing::Proved(proof) => return Ok(Outcome::Verified(*proof)),
            Existing::Unproved => (src, head) = self.open_source().await?,
            Existing::Absent => {}
        }
        if self.prior.state == ObjectState::Uploaded && !changed {
            if let (Some(sha), Some(etag)) = (&self.prior.ciphertext_sha256, &self.prior.dest_etag)
            {
                // Resume after a crash between the write and its proof: prove what is there.
                let mut mac = mac_with(&mac_key);
                mac.update(&head);
                mac_rest(&mut mac, &mut src.body).await?;
                let proved = prove_streamed(
                    self.store,
                    self.keys,
                    self.target,
                    self.dest_key,
                    Some(sha),
                    Some((&mac_key, mac)),
                    None,
                )
                .await;
                if let Ok(proved) = proved {
                    return Ok(Outcome::Verified(self.adopted(
                        &src.etag,
                        src.version_id.as_deref(),
                        src.content_length,
                        sha.clone(),
                        etag.clone(),
                        false,
                        proved,
                    )));
                }
                // Not provable: read the source again and write (conditionally) anew.
                (src, head) = self.open_source().await?;
            }
        }
        if src.content_length > MAX_OBJECT_BYTES {
            return Err(ObjectError::TooLarge(format!(
                "{} bytes: sealed, it exceeds S3's 5 TiB object limit; it stays in the source",
                src.content_length
            )));
        }

        let ctx = context_for(&self.target.category, &self.target.bucket, self.dest_key);
        let sealing = self
            .data_keys
            .for_object(self.keys, &self.target.kms_key_arn, &ctx)
            .await?;
        let version = sealing.envelope_version();
        let sealer =
            StreamSealer::new(&sealing.key, sealing.header_params(&ctx, self.segment_size))?;
        let upload = SealedUpload {
            bucket: self.target.bucket.clone(),
            key: self.dest_key.to_owned(),
            kms_key_id: self.target.kms_key_arn.clone(),
            sse_context_json: ctx.to_json(),
            metadata: self.metadata(&src.etag, src.version_id.as_deref(), version),
            retention: self.retention,
        };
        let upload_id = self.store.create_multipart(&upload).await?;
        on_upload(Some(upload_id.clone())).await?;
        let part_size = settings.part_size_for(src.content_length, self.segment_size);
        let sent = self
            .upload(
                &upload_id,
                sealer,
                head,
                src.body,
                part_size,
                settings.parts_in_flight,
                &mac_key,
            )
            .await;
        let sent = match sent {
            Ok(s) => s,
            Err(e) => return Err(self.abandon(&upload_id, on_upload, e).await),
        };
        let sha_hex = hex::encode(sent.envelope_sha256);
        let mut how = WriteKind::Written;
        let complete = |precondition| {
            self.store.complete_multipart(
                &self.target.bucket,
                self.dest_key,
                &upload_id,
                &sent.parts,
                precondition,
            )
        };
        let written = match complete(&Precondition::Absent).await {
            Ok(w) => w,
            Err(e) if e.kind == AwsErrorKind::PreconditionFailed => {
                let Some(head) = self.store.head(&self.target.bucket, self.dest_key).await? else {
                    let e = ObjectError::Verify("destination changed during the write".into());
                    return Err(self.abandon(&upload_id, on_upload, e).await);
                };
                match self.ownership(&head, &src.etag) {
                    Ownership::Foreign(why) => {
                        self.store
                            .abort_multipart(&self.target.bucket, self.dest_key, &upload_id)
                            .await?;
                        on_upload(None).await?;
                        return Ok(Outcome::Conflict(why));
                    }
                    Ownership::OursSameVersion => {
                        // Our own earlier write of this version: prove it, drop this upload.
                        self.store
                            .abort_multipart(&self.target.bucket, self.dest_key, &upload_id)
                            .await?;
                        on_upload(None).await?;
                        let proved = prove_streamed(
                            self.store,
                            self.keys,
                            self.target,
                            self.dest_key,
                            None,
                            Some((&mac_key, sent.plain_mac)),
                            None,
                        )
                        .await?;
                        let proof = self.adopted(
                            &src.etag,
                            src.version_id.as_deref(),
                            sent.plain_len,
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
                        match complete(&Precondition::Matches(head.etag)).await {
                            Ok(w) => w,
                            Err(e) => {
                                return Err(self.abandon(&upload_id, on_upload, e.into()).await)
                            }
                        }
                    }
                }
            }
            Err(e) => return Err(self.abandon(&upload_id, on_upload, e.into()).await),
        };
        let mut proof = Proof {
            source_etag: src.etag.clone(),
            source_version: src.version_id.clone(),
            ciphertext_sha256: sha_hex,
            dest_etag: written.etag,
            put_request_id: written.request_id,
            kms_key_arn: sealing.key_arn.clone(),
            size: sent.plain_len,
            how,
            source_changed_since_listing: changed,
            envelope_version: version,
            server_side: Default::default(),
        };
        // Recording the write also records that no upload is open any more.
        on_uploaded(&proof).await?;
        proof.server_side = prove_streamed(
            self.store,
            self.keys,
            self.target,
            self.dest_key,
            Some(&proof.ciphertext_sha256),
            Some((&mac_key, sent.plain_mac)),
            Some(&sealing),
        )
        .await?
        .server_side;
        Ok(Outcome::Verified(proof))
    }

    /// Opens the source stream and reads at least what content rules inspect.
    async fn open_source(
        &self,
    ) -> Result<(crate::store::Streamed, Zeroizing<Vec<u8>>), ObjectError> {
        let mut src = self
            .store
            .get_stream(self.source_bucket, self.source_key)
            .await?;
        let mut head = Zeroizing::new(Vec::new());
        while head.len() < crate::content::INSPECT_BYTES {
            match src.body.next().await {
                Some(chunk) => head.extend_from_slice(&chunk?),
                None => break,
            }
        }
        Ok((src, head))
    }

    /// Seals the source stream into parts and uploads them, a few at a time.
    #[allow(clippy::too_many_arguments)] // one call site; each is one piece of the pipeline
    async fn upload(
        &self,
        upload_id: &str,
        mut sealer: StreamSealer,
        head: Zeroizing<Vec<u8>>,
        mut body: BodyStream,
        part_size: u64,
        parts_in_flight: u32,
        mac_key: &[u8; 32],
    ) -> Result<Uploaded, ObjectError> {
        let part_size = usize::try_from(part_size).unwrap_or(usize::MAX);
        let slack = self.segment_size as usize + envelope::TAG_LEN;
        let mut envelope_sha = Sha256::new();
        let mut mac = mac_with(mac_key);
        let mut plain_len = 0u64;
        let mut buf = Vec::with_capacity(part_size + slack);
        let mut inflight = FuturesUnordered::new();
        let mut done = Vec::new();
        let mut number = 0u64;
        let mut chunk: Option<bytes::Bytes> = Some(bytes::Bytes::new());
        let mut first = Some(head);
        loop {
            let at_end = chunk.is_none();
            match (&first, &chunk) {
                (Some(h), _) => {
                    mac.update(h);
                    plain_len += h.len() as u64;
                    sealer.push(h, &mut buf)?;
                    first = None;
                }
                (None, Some(c)) => {
                    mac.update(c);
                    plain_len += c.len() as u64;
                    sealer.push(c, &mut buf)?;
                }
                (None, None) => sealer.finish(&mut buf)?,
            }
            // Full parts go out; at the end, whatever is left is the last part.
            while buf.len() >= part_size || (at_end && !buf.is_empty()) {
                let cut = buf.len().min(part_size);
                let mut rest = Vec::with_capacity(part_size + slack);
                rest.extend_from_slice(&buf[cut..]);
                buf.truncate(cut);
                let part = std::mem::replace(&mut buf, rest);
                number += 1;
                if number > MAX_PARTS {
                    return Err(ObjectError::TooLarge(format!(
                        "the object grew past {MAX_PARTS} parts of {part_size} bytes since it was listed; it stays in the source. Run the job again to pick up its new size"
                    )));
                }
                envelope_sha.update(&part);
                while inflight.len() >= parts_in_flight as usize {
                    if let Some(p) = inflight.next().await {
                        done.push(p?);
                    }
                }
                inflight.push(self.store.upload_part(
                    &self.target.bucket,
                    self.dest_key,
                    upload_id,
                    i32::try_from(number).unwrap_or(i32::MAX),
                    bytes::Bytes::from(part),
                ));
            }
            if at_end {
                break;
            }
            chunk = match while_uploading(&mut inflight, &mut done, body.next()).await? {
                Some(c) => Some(c?),
                None => None,
            };
        }
        while let Some(p) = inflight.next().await {
            done.push(p?);
        }
        done.sort_by_key(|p| p.number);
        Ok(Uploaded {
            parts: done,
            envelope_sha256: envelope_sha.finalize().into(),
            plain_mac: mac,
            plain_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            threshold: 64 << 20,
            part_size: 8 << 20,
            parts_in_flight: 4,
        }
    }

    #[test]
    fn parts_grow_only_when_ten_thousand_would_not_hold_the_object() {
        let s = settings();
        assert!(!s.streams((64 << 20) - 1));
        assert!(s.streams(64 << 20));
        assert_eq!(s.part_size_for(2 << 30, 65536), 8 << 20);
        // 1 TiB: 8 MiB parts would need ~131k parts.
        let part = s.part_size_for(1 << 40, 65536);
        assert!(part > 8 << 20);
        assert!(envelope::body_len(1 << 40, 65536).div_ceil(part) <= MAX_PARTS);
        // Memory is a handful of parts, not the object.
        assert_eq!(s.memory_for(2 << 30, 65536), 5 * (8 << 20) + 4 * 65536);
    }

    #[test]
    fn a_mac_comparison_tells_equal_streams_from_different_ones() {
        let k = fresh_mac_key();
        let mut a = mac_with(&k);
        a.update(b"split ");
        a.update(b"anywhere");
        let mut b = mac_with(&k);
        b.update(b"split anywhere");
        assert!(a.verify_slice(&b.finalize().into_bytes()).is_ok());
        let mut c = mac_with(&k);
        c.update(b"split anywherE");
        let mut d = mac_with(&k);
        d.update(b"split anywhere");
        assert!(d.verify_slice(&c.finalize().into_bytes()).is_err());
        // Another attempt's key gives another tag for the same bytes: nothing to correlate.
        let mut e = mac_with(&fresh_mac_key());
        e.update(b"split anywhere");
        let mut f = mac_with(&k);
        f.update(b"split anywhere");
        assert!(f.verify_slice(&e.finalize().into_bytes()).is_err());
    }
}
