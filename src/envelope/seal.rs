//! Sealing: the segment sealer and whole-envelope sealing.

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;

use super::header::encode_header;
use super::{
    body_len, derive, DataKey, EnvelopeError, Header, HeaderParams, Stream,
    ALG_XCHACHA20POLY1305_HKDF_SHA256, FORMAT_VERSION, FORMAT_VERSION_SHARED_KEY, MESSAGE_ID_LEN,
    NONCE_PREFIX_LEN, PER_OBJECT_CONTEXT_KEY, TAG_LEN,
};

/// Seals a stream of plaintext segments. Every segment but the last must be exactly
/// `segment_size` bytes; the last may be 0..=`segment_size` bytes.
pub struct Sealer {
    stream: Stream,
    header: Vec<u8>,
    segment_size: u32,
    next: u32,
    finished: bool,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("segment_size", &self.segment_size)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Starts an envelope under `key`, with fresh random message id and nonce prefix.
    ///
    /// # Errors
    /// `InvalidInput` when a header field is out of range.
    pub fn new(key: &DataKey, params: HeaderParams) -> Result<Self, EnvelopeError> {
        let mut message_id = [0u8; MESSAGE_ID_LEN];
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        OsRng.fill_bytes(&mut message_id);
        OsRng.fill_bytes(&mut nonce_prefix);
        Self::with_randomness(key, params, message_id, nonce_prefix)
    }

    /// Like [`new`](Self::new) with caller-chosen random values: only for test vectors.
    /// Reusing a message id and nonce prefix under one data key breaks confidentiality.
    ///
    /// # Errors
    /// `InvalidInput` when a header field is out of range.
    pub fn with_randomness(
        key: &DataKey,
        params: HeaderParams,
        message_id: [u8; MESSAGE_ID_LEN],
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<Self, EnvelopeError> {
        if params.shared_data_key && !params.context.0.contains_key(PER_OBJECT_CONTEXT_KEY) {
            return Err(EnvelopeError::InvalidInput(
                "a shared data key needs the per-object context pair to bind the envelope",
            ));
        }
        let derived = derive(key, &message_id);
        let header = Header {
            version: if params.shared_data_key {
                FORMAT_VERSION_SHARED_KEY
            } else {
                FORMAT_VERSION
            },
            algorithm: ALG_XCHACHA20POLY1305_HKDF_SHA256,
            segment_size: params.segment_size,
            message_id,
            nonce_prefix,
            commitment: derived.commitment,
            kms_key_id: params.kms_key_id,
            wrapped_key: params.wrapped_key,
            context: params.context,
        };
        let header_bytes = encode_header(&header)?;
        Ok(Self {
            stream: Stream::new(&derived.content_key, &nonce_prefix),
            header: header_bytes,
            segment_size: params.segment_size,
            next: 0,
            finished: false,
        })
    }

    /// The header bytes; they come first in the envelope.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Plaintext bytes per segment.
    pub fn segment_size(&self) -> u32 {
        self.segment_size
    }

    /// Seals the next segment and returns its ciphertext (plaintext length + 16).
    ///
    /// # Errors
    /// `Misuse` when a non-final segment has the wrong size, a segment follows the last one, or
    /// the segment counter would overflow.
    pub fn seal_segment(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        self.seal_segment_into(plaintext, last, &mut out)?;
        Ok(out)
    }

    /// Like [`seal_segment`](Self::seal_segment), appending the ciphertext to `out`: the
    /// segment is encrypted where it lands, with no buffer of its own.
    ///
    /// # Errors
    /// As [`seal_segment`](Self::seal_segment).
    pub fn seal_segment_into(
        &mut self,
        plaintext: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), EnvelopeError> {
        let start = out.len();
        // Zeroing the room costs less than copying the plaintext in to encrypt it in place.
        out.resize(start + plaintext.len() + TAG_LEN, 0);
        let sealed = self.seal_segment_at(plaintext, last, &mut out[start..]);
        if sealed.is_err() {
            out.truncate(start);
        }
        sealed
    }

    /// Seals the next segment into `out`, which is exactly its ciphertext's length (plaintext
    /// length + 16).
    fn seal_segment_at(
        &mut self,
        plaintext: &[u8],
        last: bool,
        out: &mut [u8],
    ) -> Result<(), EnvelopeError> {
        if self.finished {
            return Err(EnvelopeError::Misuse("segment after the last segment"));
        }
        let seg = self.segment_size as usize;
        if plaintext.len() > seg || (!last && plaintext.len() != seg) {
            return Err(EnvelopeError::Misuse("segment has the wrong size"));
        }
        if !last && self.next == u32::MAX {
            return Err(EnvelopeError::Misuse("too many segments"));
        }
        if out.len() != plaintext.len() + TAG_LEN {
            return Err(EnvelopeError::Misuse("segment output has the wrong size"));
        }
        let (body, tag_out) = out.split_at_mut(plaintext.len());
        let tag = self
            .stream
            .seal(self.next, last, &self.header, plaintext, body)
            .map_err(|_| EnvelopeError::Misuse("segment encryption failed"))?;
        tag_out.copy_from_slice(&tag);
        self.next = self.next.wrapping_add(1);
        self.finished = last;
        Ok(())
    }
}

/// Seals a whole plaintext held in memory: header followed by every segment.
///
/// # Errors
/// `InvalidInput` when a header field is out of range.
pub fn seal(
    key: &DataKey,
    params: HeaderParams,
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let sealer = Sealer::new(key, params)?;
    seal_all(sealer, plaintext)
}

/// [`seal`] with caller-chosen randomness: only for test vectors and golden fixtures.
///
/// # Errors
/// As [`seal`].
pub fn seal_with_randomness(
    key: &DataKey,
    params: HeaderParams,
    plaintext: &[u8],
    message_id: [u8; MESSAGE_ID_LEN],
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
) -> Result<Vec<u8>, EnvelopeError> {
    let sealer = Sealer::with_randomness(key, params, message_id, nonce_prefix)?;
    seal_all(sealer, plaintext)
}

fn seal_all(mut sealer: Sealer, plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let seg = sealer.segment_size() as usize;
    let hlen = sealer.header().len();
    let total = hlen as u64 + body_len(plaintext.len() as u64, sealer.segment_size());
    let total = usize::try_from(total)
        .map_err(|_| EnvelopeError::InvalidInput("plaintext too large to seal in memory"))?;
    // Allocated zeroed, which a large allocation gets from the kernel for nothing, and
    // written once: each segment is encrypted straight from the plaintext to its place.
    let mut out = vec![0u8; total];
    out[..hlen].copy_from_slice(sealer.header());
    if plaintext.is_empty() {
        sealer.seal_segment_at(&[], true, &mut out[hlen..])?;
        return Ok(out);
    }
    let mut rest = &mut out[hlen..];
    let mut chunks = plaintext.chunks(seg).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let (this, next) = std::mem::take(&mut rest)
            .split_at_mut_checked(chunk.len() + TAG_LEN)
            .ok_or(EnvelopeError::Misuse("envelope shorter than its segments"))?;
        sealer.seal_segment_at(chunk, last, this)?;
        rest = next;
    }
    Ok(out)
}
