//! The envelope header: what it records, its encoding, and the parser that refuses anything
//! FORMAT.md does not allow.

use super::{
    EncryptionContext, EnvelopeError, ALG_XCHACHA20POLY1305_HKDF_SHA256, COMMITMENT_LEN,
    FORMAT_VERSION, FORMAT_VERSION_SHARED_KEY, MAGIC, MAX_CONTEXT_PAIRS, MAX_HEADER_LEN,
    MAX_KEY_ID_LEN, MAX_SEGMENT_SIZE, MAX_WRAPPED_KEY_LEN, MESSAGE_ID_LEN, MIN_SEGMENT_SIZE,
    NONCE_PREFIX_LEN, PER_OBJECT_CONTEXT_KEY, TAG_LEN,
};

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
fn put_str16(out: &mut Vec<u8>, s: &[u8], what: &'static str) -> Result<(), EnvelopeError> {
    let len = u16::try_from(s.len()).map_err(|_| EnvelopeError::InvalidInput(what))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
    Ok(())
}

pub(super) fn encode_header(h: &Header) -> Result<Vec<u8>, EnvelopeError> {
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
