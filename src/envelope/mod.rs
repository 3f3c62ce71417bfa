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

mod header;
mod open;
mod seal;
pub mod stream;

pub use header::{body_len, parse_header, Header, HeaderParams};
pub use open::{open, opens_to, Opener};
pub use seal::{seal, seal_with_randomness, Sealer};
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

#[cfg(test)]
mod tests;
