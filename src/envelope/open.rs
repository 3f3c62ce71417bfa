//! Opening: the segment opener (after the commitment check) and whole-envelope opening.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{
    derive, parse_header, DataKey, EncryptionContext, EnvelopeError, Header, Stream, TAG_LEN,
};

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
