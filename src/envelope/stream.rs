//! The envelope over a stream: plaintext or ciphertext arrives in chunks of any size (as an
//! HTTP body does), and memory holds one segment, not the object. Byte for byte the same format
//! as [`seal`](super::seal) and [`open`](super::open); only the buffering differs.
//!
//! A segment is sealed as the last one only when the input has ended, so both sides keep one
//! segment of read-ahead: a full segment is sealed (or opened) as non-final once at least one
//! more byte has arrived after it.

use zeroize::Zeroizing;

use super::{parse_header, EncryptionContext, EnvelopeError, Header, Opener, Sealer, TAG_LEN};
use super::{DataKey, HeaderParams};

/// Headers dualseal writes are a few hundred bytes; a reader refuses to buffer more than this
/// while looking for the end of one, so a damaged length field cannot make it hold a whole
/// object (FORMAT.md's bound on a header).
pub const MAX_HEADER_LEN: usize = super::MAX_HEADER_LEN;

/// Seals plaintext pushed in arbitrary chunks. The header comes out of the first push.
pub struct StreamSealer {
    sealer: Sealer,
    pending: Zeroizing<Vec<u8>>,
    header_out: bool,
}

impl std::fmt::Debug for StreamSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSealer")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl StreamSealer {
    /// Starts an envelope under `key`.
    ///
    /// # Errors
    /// As [`Sealer::new`].
    pub fn new(key: &DataKey, params: HeaderParams) -> Result<Self, EnvelopeError> {
        let sealer = Sealer::new(key, params)?;
        let seg = sealer.segment_size() as usize;
        Ok(Self {
            sealer,
            pending: Zeroizing::new(Vec::with_capacity(seg + 1)),
            header_out: false,
        })
    }

    fn header_once(&mut self, out: &mut Vec<u8>) {
        if !self.header_out {
            out.extend_from_slice(self.sealer.header());
            self.header_out = true;
        }
    }

    /// Seals what `plaintext` completes, appending the envelope bytes to `out`.
    ///
    /// # Errors
    /// `Misuse` after [`finish`](Self::finish) or past the segment counter.
    pub fn push(&mut self, mut plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
        self.header_once(out);
        let seg = self.sealer.segment_size() as usize;
        while !plaintext.is_empty() {
            if self.pending.is_empty() && plaintext.len() > seg {
                // A whole segment with more input after it: sealed straight from the input,
                // without a copy through the pending buffer.
                self.sealer
                    .seal_segment_into(&plaintext[..seg], false, out)?;
                plaintext = &plaintext[seg..];
                continue;
            }
            if self.pending.len() == seg {
                // More input follows a full segment: it is not the last one.
                self.sealer.seal_segment_into(&self.pending, false, out)?;
                self.pending.clear();
            }
            let take = (seg - self.pending.len()).min(plaintext.len());
            self.pending.extend_from_slice(&plaintext[..take]);
            plaintext = &plaintext[take..];
        }
        Ok(())
    }

    /// The input has ended: seals what is pending as the last segment (empty only when the
    /// whole input was).
    ///
    /// # Errors
    /// `Misuse` when called twice.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
        self.header_once(out);
        self.sealer.seal_segment_into(&self.pending, true, out)?;
        self.pending.clear();
        Ok(())
    }
}

/// Opens an envelope pushed in arbitrary chunks, checking first that it was sealed for
/// `expected` (when given). The header is parsed as soon as it is complete; the caller then
/// unwraps the data key it names and calls [`start`](Self::start).
pub struct StreamOpener {
    expected: Option<EncryptionContext>,
    buf: Vec<u8>,
    state: OpenState,
}

enum OpenState {
    Header,
    Parsed {
        header: Header,
        header_bytes: Vec<u8>,
    },
    Opening(Box<Opener>),
    Done,
}

impl std::fmt::Debug for StreamOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOpener")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl StreamOpener {
    /// Expects an envelope sealed for `expected` (any location when `None`).
    pub fn new(expected: Option<EncryptionContext>) -> Self {
        Self {
            expected,
            buf: Vec::new(),
            state: OpenState::Header,
        }
    }

    /// The header, once enough bytes have been pushed to parse it.
    pub fn header(&self) -> Option<&Header> {
        match &self.state {
            OpenState::Parsed { header, .. } => Some(header),
            OpenState::Opening(o) => Some(o.header()),
            _ => None,
        }
    }

    /// Checks the key commitment of the parsed header and opens what is buffered.
    ///
    /// # Errors
    /// `Misuse` before the header is complete or when started twice; `WrongKey`;
    /// `Authentication` for a buffered segment that does not open.
    pub fn start(
        &mut self,
        key: &DataKey,
        out: &mut Zeroizing<Vec<u8>>,
    ) -> Result<(), EnvelopeError> {
        match std::mem::replace(&mut self.state, OpenState::Done) {
            OpenState::Parsed {
                header,
                header_bytes,
            } => {
                self.state = OpenState::Opening(Box::new(Opener::new(key, header, header_bytes)?));
                self.drain(out, false)
            }
            other => {
                self.state = other;
                Err(EnvelopeError::Misuse("start before the header or twice"))
            }
        }
    }

    /// Takes more envelope bytes; appends whatever plaintext they complete to `out` (only
    /// after [`start`](Self::start)).
    ///
    /// # Errors
    /// Header errors once the header is complete (`BadMagic`, `ContextMismatch`, ...), a header
    /// longer than [`MAX_HEADER_LEN`], `Authentication` for a segment that does not open.
    pub fn push(
        &mut self,
        ciphertext: &[u8],
        out: &mut Zeroizing<Vec<u8>>,
    ) -> Result<(), EnvelopeError> {
        self.buf.extend_from_slice(ciphertext);
        match self.state {
            OpenState::Header => self.try_header(),
            OpenState::Opening(_) => self.drain(out, false),
            OpenState::Parsed { .. } => Ok(()),
            OpenState::Done => Err(EnvelopeError::Misuse("bytes after the end")),
        }
    }

    /// The input has ended: opens the last segment.
    ///
    /// # Errors
    /// `Truncated` when the header or every segment is missing, `Authentication` when the
    /// envelope was cut short or extended, `Misuse` when not started.
    pub fn finish(&mut self, out: &mut Zeroizing<Vec<u8>>) -> Result<(), EnvelopeError> {
        match self.state {
            OpenState::Header => {
                self.try_header()?;
                if matches!(self.state, OpenState::Header) {
                    return Err(EnvelopeError::Truncated("header"));
                }
                Err(EnvelopeError::Misuse("finish before start"))
            }
            OpenState::Parsed { .. } => Err(EnvelopeError::Misuse("finish before start")),
            OpenState::Opening(_) => {
                if self.buf.is_empty() {
                    return Err(EnvelopeError::Truncated("no segments"));
                }
                self.drain(out, true)?;
                self.state = OpenState::Done;
                Ok(())
            }
            OpenState::Done => Err(EnvelopeError::Misuse("finished twice")),
        }
    }

    fn try_header(&mut self) -> Result<(), EnvelopeError> {
        match parse_header(&self.buf) {
            Ok((header, len)) => {
                if self.expected.as_ref().is_some_and(|e| *e != header.context) {
                    return Err(EnvelopeError::ContextMismatch);
                }
                let header_bytes = self.buf[..len].to_vec();
                self.buf.drain(..len);
                self.state = OpenState::Parsed {
                    header,
                    header_bytes,
                };
                Ok(())
            }
            Err(EnvelopeError::Truncated(_)) if self.buf.len() < MAX_HEADER_LEN => Ok(()),
            Err(EnvelopeError::Truncated(_)) => Err(EnvelopeError::MalformedHeader(
                "header longer than any dualseal writes",
            )),
            Err(e) => Err(e),
        }
    }

    /// Opens every buffered segment that is certainly not the last (more bytes follow it), or
    /// everything when the input has ended.
    fn drain(&mut self, out: &mut Zeroizing<Vec<u8>>, at_end: bool) -> Result<(), EnvelopeError> {
        let OpenState::Opening(opener) = &mut self.state else {
            return Ok(());
        };
        let seg = opener.header().segment_size as usize + TAG_LEN;
        let mut used = 0;
        while self.buf.len() - used > seg {
            opener.open_segment_into(&self.buf[used..used + seg], false, out)?;
            used += seg;
        }
        if at_end {
            opener.open_segment_into(&self.buf[used..], true, out)?;
            used = self.buf.len();
        }
        self.buf.drain(..used);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::params;
    use super::super::{open, seal};
    use super::*;
    use proptest::prelude::*;

    fn key() -> DataKey {
        DataKey::from_slice(&[3u8; 32]).unwrap()
    }

    fn seal_streamed(plain: &[u8], seg: u32, chunk: usize) -> Vec<u8> {
        let mut s = StreamSealer::new(&key(), params(seg)).unwrap();
        let mut out = Vec::new();
        for c in plain.chunks(chunk.max(1)) {
            s.push(c, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        out
    }

    fn open_streamed(env: &[u8], chunk: usize) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let mut o = StreamOpener::new(Some(params(16).context));
        let mut out = Zeroizing::new(Vec::new());
        let mut started = false;
        for c in env.chunks(chunk.max(1)) {
            o.push(c, &mut out)?;
            if !started && o.header().is_some() {
                o.start(&key(), &mut out)?;
                started = true;
            }
        }
        if !started {
            o.finish(&mut out)?;
        }
        o.finish(&mut out)?;
        Ok(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn streamed_and_whole_envelopes_are_interchangeable(
            plain in proptest::collection::vec(any::<u8>(), 0..700),
            seg in 16u32..80,
            chunk in 1usize..300,
        ) {
            // Streamed sealing produces an envelope the whole-object opener accepts ...
            let streamed = seal_streamed(&plain, seg, chunk);
            let opened = open(&key(), &streamed, None).unwrap();
            prop_assert_eq!(opened.as_slice(), plain.as_slice());
            // ... of exactly the length the format predicts ...
            let whole = seal(&key(), params(seg), &plain).unwrap();
            prop_assert_eq!(streamed.len(), whole.len());
            // ... and streamed opening accepts what the whole-object sealer wrote.
            let opened = open_streamed(&whole, chunk).unwrap();
            prop_assert_eq!(opened.as_slice(), plain.as_slice());
        }
    }

    #[test]
    fn a_truncated_or_extended_stream_fails_to_open() {
        let env = seal_streamed(&[5u8; 100], 16, 7);
        for cut in [env.len() - 1, env.len() - 17, 60] {
            assert!(open_streamed(&env[..cut], 9).is_err(), "cut at {cut}");
        }
        let mut longer = env.clone();
        longer.extend_from_slice(&[0u8; 16]);
        assert!(open_streamed(&longer, 9).is_err());
        // Ending on a segment boundary of the original is caught by the last-segment flag.
        let (_, hlen) = parse_header(&env).unwrap();
        assert_eq!(
            open_streamed(&env[..hlen + 32], 5).unwrap_err(),
            EnvelopeError::Authentication(0)
        );
    }

    #[test]
    fn a_stream_sealed_for_elsewhere_is_refused_at_the_header() {
        let mut p = params(16);
        p.context = EncryptionContext::new().with("dualseal:key", "other");
        let env = seal(&key(), p, b"x").unwrap();
        assert_eq!(
            open_streamed(&env, 3).unwrap_err(),
            EnvelopeError::ContextMismatch
        );
    }

    #[test]
    fn a_header_that_never_ends_is_refused_without_buffering_the_object() {
        // A valid start whose context claims 64 pairs (the most allowed), each with a
        // 60,000-byte name.
        let mut env = b"DSEL".to_vec();
        env.extend_from_slice(&[1, 1]);
        env.extend_from_slice(&16u32.to_be_bytes());
        env.extend_from_slice(&[0u8; 32 + 19 + 32]);
        env.extend_from_slice(&[0, 1, b'k', 0, 1, b'w', 0x00, 0x40]);
        for i in 0..20u32 {
            let mut name = format!("{i:08}").into_bytes();
            name.resize(60_000, b'x');
            env.extend_from_slice(&60_000u16.to_be_bytes());
            env.extend_from_slice(&name);
            env.extend_from_slice(&[0, 0]);
        }
        let mut o = StreamOpener::new(None);
        let mut out = Zeroizing::new(Vec::new());
        let mut pushed = 0;
        let mut r = Ok(());
        for c in env.chunks(64 * 1024) {
            r = o.push(c, &mut out);
            pushed += c.len();
            if r.is_err() {
                break;
            }
        }
        assert_eq!(
            r.unwrap_err(),
            EnvelopeError::MalformedHeader("header longer than any dualseal writes")
        );
        assert!(pushed <= MAX_HEADER_LEN + 64 * 1024);
    }
}
