//! The client-side layer: a versioned, self-describing, key-committing XChaCha20-Poly1305
//! envelope, sealed as a STREAM of fixed-size segments. Pure: no I/O, no KMS; `FORMAT.md`
//! specifies every byte.
//!
//! Why each piece is there:
//! - **HKDF-derived content key and commitment.** XChaCha20-Poly1305 is not key-committing: one
//!   ciphertext can be made to authenticate under two keys. Like the S3 Encryption Client v3 and
//!   the AWS Encryption SDK, the data key from KMS is never used directly; HKDF-SHA256 (salted
//!   with a random per-object message id) derives the content key and a commitment value that is
//!   stored in the header and checked, in constant time, before any segment is opened.
//! - **Header as associated data.** Every segment authenticates the whole header, and the header
//!   carries the KMS encryption context (category, destination bucket and key), so a ciphertext
//!   copied to another place, or given another header, fails to open.
//! - **STREAM (BE32 counter + last-segment flag in the nonce).** Bounded memory for large objects,
//!   and truncation or reordering of segments is detected.

use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub mod stream;
pub use stream::{StreamOpener, StreamSealer};

/// First four bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"DSEL";
/// The format version of an envelope under its own data key (the default); readers accept
/// exactly the versions they know.
pub const FORMAT_VERSION: u8 = 1;
/// The format version of an envelope whose data key is shared with other objects (data-key
/// reuse): identical to version 1 except that KMS binds the data key to the context without
/// the [`PER_OBJECT_CONTEXT_KEY`] pair. The header, and so every segment's associated data,
/// still carries that pair: the envelope stays bound to its location.
pub const FORMAT_VERSION_SHARED_KEY: u8 = 2;
/// The context pair that names one object; left out of the KMS context of a shared data key.
pub const PER_OBJECT_CONTEXT_KEY: &str = "dualseal:key";
/// XChaCha20-Poly1305 in STREAM-BE32, content key and commitment by HKDF-SHA256.
pub const ALG_XCHACHA20POLY1305_HKDF_SHA256: u8 = 1;
/// Plaintext bytes per segment written by default: large enough that the 16-byte tag per
/// segment costs 0.02 %, small enough that a worker holds only a few of them at once.
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024;
/// Smallest segment a reader accepts (keeps the test vectors small but rejects silly headers).
pub const MIN_SEGMENT_SIZE: u32 = 16;
/// Largest segment a reader accepts, so a hostile header cannot make us allocate gigabytes.
pub const MAX_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;
/// Poly1305 tag length appended to every segment.
pub const TAG_LEN: usize = 16;
/// Length of the data key KMS returns for `AES_256` and of the derived content key.
pub const KEY_LEN: usize = 32;
/// Random per-object salt for HKDF.
pub const MESSAGE_ID_LEN: usize = 32;
/// 24-byte XChaCha nonce minus STREAM-BE32's 4-byte counter and 1-byte last flag.
pub const NONCE_PREFIX_LEN: usize = 19;
/// Length of the key commitment value.
pub const COMMITMENT_LEN: usize = 32;
/// Largest wrapped (KMS ciphertext blob) data key a reader accepts.
pub const MAX_WRAPPED_KEY_LEN: usize = 1024;
/// Largest KMS key id a header may carry (a key ARN is about 75 bytes; an alias ARN at most
/// a few hundred).
pub const MAX_KEY_ID_LEN: usize = 2048;
/// Most encryption-context pairs a header may carry (dualseal writes three).
pub const MAX_CONTEXT_PAIRS: u16 = 64;
/// Largest header a reader accepts: bounds what it buffers before the first segment.
pub const MAX_HEADER_LEN: usize = 64 * 1024;

const INFO_CONTENT_KEY: &[u8] = b"dualseal/v1 content key";
const INFO_COMMITMENT: &[u8] = b"dualseal/v1 key commitment";

/// What can go wrong sealing or opening. Deliberately opaque: no variant carries key bytes,
/// plaintext or ciphertext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The input ends before the structure it claims is complete.
    #[error("envelope is truncated ({0}); the object is incomplete or not a dualseal envelope")]
    Truncated(&'static str),
    /// The first bytes are not `DSEL`.
    #[error("not a dualseal envelope (bad magic bytes)")]
    BadMagic,
    /// A format version this build does not know.
    #[error("envelope format version {0} is not supported by this build; upgrade dualseal")]
    UnsupportedVersion(u8),
    /// An algorithm id this build does not know.
    #[error("envelope algorithm {0} is not supported by this build")]
    UnsupportedAlgorithm(u8),
    /// A header field is out of range or not canonical.
    #[error("envelope header is malformed: {0}")]
    MalformedHeader(&'static str),
    /// The data key given is not the one this envelope was sealed under.
    #[error("key commitment mismatch: the data key does not belong to this envelope")]
    WrongKey,
    /// The header's encryption context differs from the one expected for this location.
    #[error("encryption context mismatch: the envelope was sealed for another location")]
    ContextMismatch,
    /// A segment failed authentication: the ciphertext or header was altered.
    #[error("segment {0} failed authentication: the envelope was altered or truncated")]
    Authentication(u32),
    /// The envelope is a second encoding of a plaintext that has exactly one.
    #[error("envelope is not canonical: {0}")]
    NonCanonical(&'static str),
    /// A caller fed segments in a way the format does not allow.
    #[error("invalid segment use: {0}")]
    Misuse(&'static str),
    /// Invalid input to sealing (for example a context key that is too long).
    #[error("cannot seal: {0}")]
    InvalidInput(&'static str),
}

/// A 256-bit data key. Not `Copy`, not `Clone`, redacted `Debug`, zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    /// Takes a data key from its raw bytes (as KMS returns them).
    ///
    /// # Errors
    /// `InvalidInput` when the slice is not exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let arr: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| EnvelopeError::InvalidInput("data key must be 32 bytes"))?;
        Ok(Self(arr))
    }

    /// A random key, for tests and for callers that wrap keys themselves.
    pub fn generate() -> Self {
        let mut k = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut k);
        Self(k)
    }

    fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Whether two keys are the same, in constant time.
    pub fn same_as(&self, other: &DataKey) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// The KMS encryption context: non-secret name/value pairs bound to the data key by KMS and to
/// the ciphertext by the header. Kept sorted so its encoding is canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces one pair.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    /// One value by name.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Canonical JSON (sorted keys), the form S3 takes as the SSE-KMS context.
    pub fn to_json(&self) -> String {
        // A BTreeMap<String, String> always serializes.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Everything the header records besides the random values and the commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderParams {
    /// The KMS key (ARN) that wrapped the data key.
    pub kms_key_id: String,
    /// The data key as KMS encrypted it (`CiphertextBlob`).
    pub wrapped_key: Vec<u8>,
    /// The object's encryption context: bound into the header; KMS bound the data key to it
    /// (or, with `shared_data_key`, to it without [`PER_OBJECT_CONTEXT_KEY`]).
    pub context: EncryptionContext,
    /// Plaintext bytes per segment.
    pub segment_size: u32,
    /// The data key is shared with other objects: writes a version-2 envelope.
    pub shared_data_key: bool,
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version: [`FORMAT_VERSION`] or [`FORMAT_VERSION_SHARED_KEY`].
    pub version: u8,
    /// Algorithm id.
    pub algorithm: u8,
    /// Plaintext bytes per segment.
    pub segment_size: u32,
    /// Random HKDF salt.
    pub message_id: [u8; MESSAGE_ID_LEN],
    /// Random STREAM nonce prefix.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// Key commitment value.
    pub commitment: [u8; COMMITMENT_LEN],
    /// The KMS key that wrapped the data key.
    pub kms_key_id: String,
    /// The wrapped data key.
    pub wrapped_key: Vec<u8>,
    /// The encryption context.
    pub context: EncryptionContext,
}

impl Header {
    /// The context KMS bound the data key to: the whole context in version 1, the context
    /// without [`PER_OBJECT_CONTEXT_KEY`] in version 2 (a data key shared by several objects).
    pub fn kms_context(&self) -> EncryptionContext {
        if self.version == FORMAT_VERSION_SHARED_KEY {
            let mut c = self.context.clone();
            c.0.remove(PER_OBJECT_CONTEXT_KEY);
            c
        } else {
            self.context.clone()
        }
    }
}

/// Content key and commitment derived from a data key.
struct Derived {
    content_key: Zeroizing<[u8; KEY_LEN]>,
    commitment: [u8; COMMITMENT_LEN],
}

fn derive(key: &DataKey, message_id: &[u8; MESSAGE_ID_LEN]) -> Derived {
    let hk = Hkdf::<Sha256>::new(Some(message_id), key.bytes());
    let mut content_key = Zeroizing::new([0u8; KEY_LEN]);
    let mut commitment = [0u8; COMMITMENT_LEN];
    // 32-byte outputs are far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    let _ = hk.expand(INFO_CONTENT_KEY, content_key.as_mut());
    let _ = hk.expand(INFO_COMMITMENT, &mut commitment);
    Derived {
        content_key,
        commitment,
    }
}

/// STREAM-BE32 over XChaCha20-Poly1305 (Hoang, Reyhanitabar, Rogaway and Vizár, 2015): the
/// nonce of segment `i` is the 19-byte prefix, `i` as a big-endian u32, and a last-segment
/// flag byte, exactly as `aead-stream`'s `StreamBE32` builds it (`FORMAT.md`; the golden
/// vectors pin it). Spelled out because that crate only encrypts in place, which costs every
/// segment a copy of its plaintext before the cipher runs; the AEAD itself encrypts from where
/// the plaintext is to where the ciphertext goes.
struct Stream {
    aead: XChaCha20Poly1305,
    prefix: [u8; NONCE_PREFIX_LEN],
}

impl Stream {
    fn new(content_key: &[u8; KEY_LEN], prefix: &[u8; NONCE_PREFIX_LEN]) -> Self {
        Self {
            aead: XChaCha20Poly1305::new(content_key.into()),
            prefix: *prefix,
        }
    }

    fn nonce(&self, position: u32, last: bool) -> XNonce {
        let mut nonce = XNonce::default();
        let (prefix, tail) = nonce.split_at_mut(NONCE_PREFIX_LEN);
        prefix.copy_from_slice(&self.prefix);
        tail[..4].copy_from_slice(&position.to_be_bytes());
        tail[4] = u8::from(last);
        nonce
    }

    /// Encrypts `plaintext` into `out` (the same length) and returns the tag.
    fn seal(
        &self,
        position: u32,
        last: bool,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<Tag, chacha20poly1305::Error> {
        let buf = InOutBuf::new(plaintext, out).map_err(|_| chacha20poly1305::Error)?;
        self.aead
            .encrypt_inout_detached(&self.nonce(position, last), aad, buf)
    }

    /// Checks `tag` over `ciphertext`, then decrypts it into `out` (the same length); `out`
    /// is not written when the tag does not match.
    fn open(
        &self,
        position: u32,
        last: bool,
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<(), chacha20poly1305::Error> {
        let tag = Tag::try_from(tag).map_err(|_| chacha20poly1305::Error)?;
        let buf = InOutBuf::new(ciphertext, out).map_err(|_| chacha20poly1305::Error)?;
        self.aead
            .decrypt_inout_detached(&self.nonce(position, last), aad, buf, &tag)
    }
}

fn put_str16(out: &mut Vec<u8>, s: &[u8], what: &'static str) -> Result<(), EnvelopeError> {
    let len = u16::try_from(s.len()).map_err(|_| EnvelopeError::InvalidInput(what))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
    Ok(())
}

fn encode_header(h: &Header) -> Result<Vec<u8>, EnvelopeError> {
    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&h.segment_size) {
        return Err(EnvelopeError::InvalidInput("segment size out of range"));
    }
    if h.wrapped_key.is_empty() || h.wrapped_key.len() > MAX_WRAPPED_KEY_LEN {
        return Err(EnvelopeError::InvalidInput(
            "wrapped key length out of range",
        ));
    }
    let mut out = Vec::with_capacity(256 + h.wrapped_key.len());
    out.extend_from_slice(&MAGIC);
    out.push(h.version);
    out.push(h.algorithm);
    out.extend_from_slice(&h.segment_size.to_be_bytes());
    out.extend_from_slice(&h.message_id);
    out.extend_from_slice(&h.nonce_prefix);
    out.extend_from_slice(&h.commitment);
    put_str16(&mut out, h.kms_key_id.as_bytes(), "KMS key id too long")?;
    put_str16(&mut out, &h.wrapped_key, "wrapped key too long")?;
    let count = u16::try_from(h.context.0.len())
        .map_err(|_| EnvelopeError::InvalidInput("too many encryption context pairs"))?;
    out.extend_from_slice(&count.to_be_bytes());
    for (k, v) in h.context.iter() {
        put_str16(&mut out, k.as_bytes(), "context name too long")?;
        put_str16(&mut out, v.as_bytes(), "context value too long")?;
    }
    Ok(out)
}

/// A cursor over header bytes that turns running out of input into `Truncated`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EnvelopeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(EnvelopeError::Truncated(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], EnvelopeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, EnvelopeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    fn bytes16(&mut self, what: &'static str) -> Result<&'a [u8], EnvelopeError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    fn str16(&mut self, what: &'static str) -> Result<String, EnvelopeError> {
        let b = self.bytes16(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| EnvelopeError::MalformedHeader(what))
    }
}

/// Parses the header at the start of `envelope` and returns it with its length in bytes.
///
/// # Errors
/// `BadMagic`, `UnsupportedVersion`, `UnsupportedAlgorithm`, `Truncated` or `MalformedHeader`.
pub fn parse_header(envelope: &[u8]) -> Result<(Header, usize), EnvelopeError> {
    let mut r = Reader {
        buf: envelope,
        pos: 0,
    };
    if r.take(MAGIC.len(), "magic")? != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    let version = r.array::<1>("version")?[0];
    if version != FORMAT_VERSION && version != FORMAT_VERSION_SHARED_KEY {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    let algorithm = r.array::<1>("algorithm")?[0];
    if algorithm != ALG_XCHACHA20POLY1305_HKDF_SHA256 {
        return Err(EnvelopeError::UnsupportedAlgorithm(algorithm));
    }
    let segment_size = u32::from_be_bytes(r.array("segment size")?);
    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
        return Err(EnvelopeError::MalformedHeader("segment size out of range"));
    }
    let message_id = r.array("message id")?;
    let nonce_prefix = r.array("nonce prefix")?;
    let commitment = r.array("commitment")?;
    let kms_key_id = r.str16("KMS key id")?;
    if kms_key_id.is_empty() || kms_key_id.len() > MAX_KEY_ID_LEN {
        return Err(EnvelopeError::MalformedHeader(
            "KMS key id length out of range",
        ));
    }
    let wrapped_key = r.bytes16("wrapped key")?.to_vec();
    if wrapped_key.is_empty() || wrapped_key.len() > MAX_WRAPPED_KEY_LEN {
        return Err(EnvelopeError::MalformedHeader(
            "wrapped key length out of range",
        ));
    }
    let count = r.u16("context count")?;
    if count == 0 || count > MAX_CONTEXT_PAIRS {
        return Err(EnvelopeError::MalformedHeader(
            "context pair count out of range",
        ));
    }
    let mut context = EncryptionContext::new();
    let mut last: Option<String> = None;
    for _ in 0..count {
        let k = r.str16("context name")?;
        let v = r.str16("context value")?;
        // Canonical order is part of the format: the header is authenticated byte for byte, so
        // two encodings of one context must not both be valid.
        if last.as_ref().is_some_and(|l| l.as_bytes() >= k.as_bytes()) {
            return Err(EnvelopeError::MalformedHeader(
                "context names not strictly ascending",
            ));
        }
        last = Some(k.clone());
        context.insert(k, v);
    }
    if version == FORMAT_VERSION_SHARED_KEY && !context.0.contains_key(PER_OBJECT_CONTEXT_KEY) {
        return Err(EnvelopeError::MalformedHeader(
            "a shared-key envelope must name its object in the context",
        ));
    }
    if r.pos > MAX_HEADER_LEN {
        return Err(EnvelopeError::MalformedHeader("header longer than 64 KiB"));
    }
    let header = Header {
        version,
        algorithm,
        segment_size,
        message_id,
        nonce_prefix,
        commitment,
        kms_key_id,
        wrapped_key,
        context,
    };
    Ok((header, r.pos))
}

/// Length of the sealed body (all segments, without the header) for `plain_len` bytes.
pub fn body_len(plain_len: u64, segment_size: u32) -> u64 {
    let seg = u64::from(segment_size);
    let segments = if plain_len == 0 {
        1
    } else {
        plain_len.div_ceil(seg)
    };
    plain_len + segments * TAG_LEN as u64
}

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

/// Opens a stream of sealed segments after the header's commitment has been checked.
pub struct Opener {
    stream: Stream,
    header_bytes: Vec<u8>,
    header: Header,
    next: u32,
    finished: bool,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// Checks that `key` is the key this header committed to and prepares to open segments.
    /// `header_bytes` must be the exact bytes the header was parsed from.
    ///
    /// # Errors
    /// `WrongKey` when the commitment does not match.
    pub fn new(
        key: &DataKey,
        header: Header,
        header_bytes: Vec<u8>,
    ) -> Result<Self, EnvelopeError> {
        let derived = derive(key, &header.message_id);
        if !bool::from(derived.commitment.ct_eq(&header.commitment)) {
            return Err(EnvelopeError::WrongKey);
        }
        Ok(Self {
            stream: Stream::new(&derived.content_key, &header.nonce_prefix),
            header_bytes,
            header,
            next: 0,
            finished: false,
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Opens the next segment.
    ///
    /// # Errors
    /// `Authentication` when the segment, its position or the header was altered.
    pub fn open_segment(
        &mut self,
        ciphertext: &[u8],
        last: bool,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let mut out = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
        self.open_segment_into(ciphertext, last, &mut out)?;
        Ok(out)
    }

    /// Like [`open_segment`](Self::open_segment), appending the plaintext to `out` (nothing is
    /// appended when the segment does not authenticate).
    ///
    /// # Errors
    /// As [`open_segment`](Self::open_segment).
    pub fn open_segment_into(
        &mut self,
        ciphertext: &[u8],
        last: bool,
        out: &mut Zeroizing<Vec<u8>>,
    ) -> Result<(), EnvelopeError> {
        if self.finished {
            return Err(EnvelopeError::Misuse("segment after the last segment"));
        }
        let max = self.header.segment_size as usize + TAG_LEN;
        if ciphertext.len() < TAG_LEN
            || ciphertext.len() > max
            || (!last && ciphertext.len() != max)
        {
            return Err(EnvelopeError::Authentication(self.next));
        }
        // One plaintext, one encoding: only an empty plaintext ends in an empty segment.
        if last && self.next > 0 && ciphertext.len() == TAG_LEN {
            return Err(EnvelopeError::NonCanonical(
                "an empty last segment after a full one",
            ));
        }
        let (body, tag) = ciphertext.split_at(ciphertext.len() - TAG_LEN);
        let start = out.len();
        out.resize(start + body.len(), 0);
        let opened = self.stream.open(
            self.next,
            last,
            &self.header_bytes,
            body,
            tag,
            &mut out[start..],
        );
        if opened.is_err() {
            // Only zeros were appended: the tag is checked before anything is decrypted.
            out.truncate(start);
            return Err(EnvelopeError::Authentication(self.next));
        }
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

/// Opens a whole envelope held in memory. When `expected` is given, the header's context must
/// equal it exactly (checked before any cryptography, so a misplaced object fails clearly).
///
/// # Errors
/// Any [`EnvelopeError`]; none of them carries secret bytes.
pub fn open(
    key: &DataKey,
    envelope: &[u8],
    expected: Option<&EncryptionContext>,
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let body = parse_header(envelope)?.1;
    let mut out = Zeroizing::new(Vec::with_capacity(envelope.len().saturating_sub(body)));
    open_each(key, envelope, expected, |segment| {
        out.extend_from_slice(segment)
    })?;
    Ok(out)
}

/// Whether a whole envelope opens (for `expected`, when given) to exactly `plaintext` (when
/// given; `None` only checks that it opens). Holds one segment of plaintext at a time, not a
/// second copy of the object.
///
/// # Errors
/// As [`open`]: an envelope that does not open is an error, not `false`.
pub fn opens_to(
    key: &DataKey,
    envelope: &[u8],
    expected: Option<&EncryptionContext>,
    plaintext: Option<&[u8]>,
) -> Result<bool, EnvelopeError> {
    let Some(mut rest) = plaintext else {
        return open_each(key, envelope, expected, |_| {}).map(|()| true);
    };
    let mut same = true;
    open_each(key, envelope, expected, |segment| {
        match rest.split_at_checked(segment.len()) {
            Some((head, tail)) if same && head == segment => rest = tail,
            _ => same = false,
        }
    })?;
    Ok(same && rest.is_empty())
}

/// Opens a whole envelope segment by segment, handing each segment's plaintext to `f` (in one
/// buffer that is reused and zeroized).
fn open_each(
    key: &DataKey,
    envelope: &[u8],
    expected: Option<&EncryptionContext>,
    mut f: impl FnMut(&[u8]),
) -> Result<(), EnvelopeError> {
    let (header, hlen) = parse_header(envelope)?;
    if expected.is_some_and(|e| *e != header.context) {
        return Err(EnvelopeError::ContextMismatch);
    }
    let seg = header.segment_size as usize + TAG_LEN;
    let mut opener = Opener::new(key, header, envelope[..hlen].to_vec())?;
    let body = &envelope[hlen..];
    if body.is_empty() {
        return Err(EnvelopeError::Truncated("no segments"));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(seg.min(body.len())));
    let mut chunks = body.chunks(seg).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        buf.clear();
        opener.open_segment_into(chunk, last, &mut buf)?;
        f(&buf);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Header parameters of a made-up object (also used by `stream`'s tests).
    pub(super) fn params(segment_size: u32) -> HeaderParams {
        HeaderParams {
            kms_key_id: "arn:aws:kms:us-east-1:123456789012:key/test".into(),
            wrapped_key: vec![7u8; 40],
            context: EncryptionContext::new()
                .with("dualseal:category", "db")
                .with("dualseal:bucket", "secrets-db")
                .with("dualseal:key", "payments/x.json"),
            segment_size,
            shared_data_key: false,
        }
    }

    #[test]
    fn opens_to_compares_segment_by_segment_with_the_whole_plaintext() {
        let key = DataKey::from_slice(&[3u8; 32]).unwrap();
        let p = params(16);
        let plain: Vec<u8> = (0..100u8).collect();
        let sealed = seal(&key, p.clone(), &plain).unwrap();
        let ctx = Some(&p.context);
        assert!(opens_to(&key, &sealed, ctx, Some(&plain)).unwrap());
        assert!(opens_to(&key, &sealed, ctx, None).unwrap());
        let mut other = plain.clone();
        other[99] ^= 1;
        assert!(!opens_to(&key, &sealed, ctx, Some(&other)).unwrap());
        other[99] ^= 1;
        other[0] ^= 1;
        assert!(!opens_to(&key, &sealed, ctx, Some(&other)).unwrap());
        assert!(!opens_to(&key, &sealed, ctx, Some(&plain[..99])).unwrap());
        assert!(!opens_to(&key, &sealed, ctx, Some(&[plain.as_slice(), b"x"].concat())).unwrap());
        let elsewhere = EncryptionContext::new().with("dualseal:key", "other");
        assert!(matches!(
            opens_to(&key, &sealed, Some(&elsewhere), Some(&plain)),
            Err(EnvelopeError::ContextMismatch)
        ));
        let mut damaged = sealed.clone();
        let n = damaged.len();
        damaged[n - 1] ^= 1;
        assert!(opens_to(&key, &damaged, ctx, None).is_err());
    }

    #[test]
    fn shared_key_envelopes_keep_the_location_out_of_kms_but_in_the_header() {
        let key = DataKey::from_slice(&[9u8; 32]).unwrap();
        let mut p = params(64);
        p.shared_data_key = true;
        let sealed = seal(&key, p.clone(), b"shared key secret").unwrap();
        let (h, _) = parse_header(&sealed).unwrap();
        assert_eq!(h.version, FORMAT_VERSION_SHARED_KEY);
        let kms = h.kms_context();
        assert!(kms.iter().all(|(k, _)| k != PER_OBJECT_CONTEXT_KEY));
        assert_eq!(kms.iter().count(), 2);
        assert_eq!(
            open(&key, &sealed, Some(&p.context)).unwrap().as_slice(),
            b"shared key secret"
        );
        // The version is authenticated: relabelling a shared-key envelope as version 1 (so a
        // reader would ask KMS with the whole context) breaks it.
        let mut relabelled = sealed.clone();
        relabelled[4] = FORMAT_VERSION;
        assert!(open(&key, &relabelled, None).is_err());
        // Moved to another key, it no longer opens for that location.
        let elsewhere = EncryptionContext::new()
            .with("dualseal:category", "db")
            .with("dualseal:bucket", "secrets-db")
            .with("dualseal:key", "payments/y.json");
        assert_eq!(
            open(&key, &sealed, Some(&elsewhere)).unwrap_err(),
            EnvelopeError::ContextMismatch
        );
        // A shared key without a per-object pair would bind nothing to the object.
        let mut unbound = params(64);
        unbound.shared_data_key = true;
        unbound.context = EncryptionContext::new().with("dualseal:category", "db");
        assert!(seal(&key, unbound, b"x").is_err());
        // Version 1 keeps the whole context for KMS.
        let (h1, _) = parse_header(&seal(&key, params(64), b"x").unwrap()).unwrap();
        assert_eq!(h1.kms_context(), h1.context);
    }

    #[test]
    fn round_trip_empty_and_exact_multiple() {
        let key = DataKey::generate();
        for len in [0usize, 1, 63, 64, 65, 128, 1000] {
            let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let env = seal(&key, params(64), &pt).unwrap();
            let (h, hl) = parse_header(&env).unwrap();
            assert_eq!(
                env.len() as u64,
                hl as u64 + body_len(len as u64, h.segment_size)
            );
            assert_eq!(&*open(&key, &env, Some(&params(64).context)).unwrap(), &pt);
        }
    }

    #[test]
    fn wrong_key_and_wrong_context_fail_clearly() {
        let key = DataKey::generate();
        let env = seal(&key, params(64), b"hunter2").unwrap();
        assert_eq!(
            open(&DataKey::generate(), &env, None),
            Err(EnvelopeError::WrongKey)
        );
        let other = params(64).context.with("dualseal:key", "elsewhere");
        assert_eq!(
            open(&key, &env, Some(&other)),
            Err(EnvelopeError::ContextMismatch)
        );
    }

    #[test]
    fn truncation_at_a_segment_boundary_fails() {
        let key = DataKey::generate();
        let pt = vec![1u8; 64 * 3];
        let env = seal(&key, params(64), &pt).unwrap();
        let (_, hl) = parse_header(&env).unwrap();
        let cut = &env[..hl + 2 * (64 + TAG_LEN)];
        assert!(matches!(
            open(&key, cut, None),
            Err(EnvelopeError::Authentication(1))
        ));
        assert!(matches!(
            open(&key, &env[..hl], None),
            Err(EnvelopeError::Truncated(_))
        ));
    }

    #[test]
    fn swapped_segments_fail() {
        let key = DataKey::generate();
        let pt: Vec<u8> = (0..64 * 3).map(|i| i as u8).collect();
        let mut env = seal(&key, params(64), &pt).unwrap();
        let (_, hl) = parse_header(&env).unwrap();
        let s = 64 + TAG_LEN;
        let (a, b) = env[hl..].split_at_mut(s);
        a.swap_with_slice(&mut b[..s]);
        assert!(open(&key, &env, None).is_err());
    }

    #[test]
    fn header_of_another_envelope_fails() {
        let key = DataKey::generate();
        let e1 = seal(&key, params(64), b"first secret").unwrap();
        let e2 = seal(&key, params(64), b"other secret").unwrap();
        let (_, h1) = parse_header(&e1).unwrap();
        let (_, h2) = parse_header(&e2).unwrap();
        let mut mixed = e1[..h1].to_vec();
        mixed.extend_from_slice(&e2[h2..]);
        assert!(open(&key, &mixed, None).is_err());
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let key = DataKey::generate();
        let pt: Vec<u8> = (0..150).map(|i| (i * 7) as u8).collect();
        let env = seal(&key, params(64), &pt).unwrap();
        for byte in 0..env.len() {
            for bit in 0..8 {
                let mut t = env.clone();
                t[byte] ^= 1 << bit;
                assert!(
                    open(&key, &t, None).is_err(),
                    "flip at byte {byte} bit {bit} opened"
                );
            }
        }
    }

    #[test]
    fn errors_never_contain_the_plaintext() {
        let key = DataKey::generate();
        let env = seal(&key, params(64), b"CANARY-plaintext").unwrap();
        let mut t = env.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        let msg = open(&key, &t, None).unwrap_err().to_string();
        assert!(!msg.contains("CANARY"));
        assert!(!format!("{key:?}").contains(&hex::encode(key.bytes())));
    }

    #[test]
    fn unknown_version_and_algorithm_are_named() {
        let key = DataKey::generate();
        let mut env = seal(&key, params(64), b"x").unwrap();
        env[4] = 9;
        assert_eq!(
            open(&key, &env, None),
            Err(EnvelopeError::UnsupportedVersion(9))
        );
        env[4] = 1;
        env[5] = 2;
        assert_eq!(
            open(&key, &env, None),
            Err(EnvelopeError::UnsupportedAlgorithm(2))
        );
    }

    proptest! {
        #[test]
        fn prop_round_trip(pt in proptest::collection::vec(any::<u8>(), 0..2000), seg in 16u32..300) {
            let key = DataKey::generate();
            let env = seal(&key, params(seg), &pt).unwrap();
            prop_assert_eq!(&*open(&key, &env, None).unwrap(), &pt);
        }

        #[test]
        fn prop_any_change_fails(pt in proptest::collection::vec(any::<u8>(), 0..400), idx in any::<prop::sample::Index>(), x in 1u8..=255) {
            let key = DataKey::generate();
            let mut env = seal(&key, params(32), &pt).unwrap();
            let i = idx.index(env.len());
            env[i] ^= x;
            prop_assert!(open(&key, &env, None).is_err());
        }

        #[test]
        fn prop_parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_header(&data);
        }
    }
}
