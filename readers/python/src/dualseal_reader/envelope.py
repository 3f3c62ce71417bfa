"""The dualseal envelope, versions 1 and 2, as FORMAT.md specifies it: header parsing within the
bounds of "Reader duties", key derivation and commitment (step 4-5), and the STREAM of
XChaCha20-Poly1305 segments (steps 6-8). Pure: no S3, no KMS.

:class:`EnvelopeStream` opens an envelope pushed in pieces of any size, handing out each segment
once it is authenticated and certainly not the last one; :func:`open_envelope` opens one held
whole (what the test vectors need).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
from nacl.exceptions import CryptoError

from .errors import (
    AuthenticationError,
    BadMagicError,
    CommitmentMismatchError,
    MalformedHeaderError,
    NonCanonicalError,
    TruncatedError,
    UnsupportedAlgorithmError,
    UnsupportedVersionError,
)

MAGIC = b"DSEL"
#: An envelope under its own data key.
VERSION_OWN_KEY = 1
#: An envelope under a data key shared with other objects: KMS binds the key without
#: ``dualseal:key`` (FORMAT.md, step 3).
VERSION_SHARED_KEY = 2
#: XChaCha20-Poly1305 STREAM-BE32, HKDF-SHA256 content key and commitment.
ALGORITHM = 1
MIN_SEGMENT_SIZE = 16
#: Bounds what a hostile header can make a reader hold per segment.
MAX_SEGMENT_SIZE = 16 * 1024 * 1024
MAX_KEY_ID_LEN = 2048
MAX_WRAPPED_KEY_LEN = 1024
MAX_CONTEXT_PAIRS = 64
#: Bounds what a reader buffers looking for the end of a header.
MAX_HEADER_LEN = 64 * 1024
TAG_LEN = 16
KEY_LEN = 32
#: STREAM-BE32's counter is 4 bytes.
MAX_SEGMENTS = 1 << 32

CTX_BUCKET = "dualseal:bucket"
CTX_CATEGORY = "dualseal:category"
CTX_KEY = "dualseal:key"

_INFO_CONTENT_KEY = b"dualseal/v1 content key"
_INFO_COMMITMENT = b"dualseal/v1 key commitment"
_FIXED_LEN = 4 + 1 + 1 + 4 + 32 + 19 + 32


@dataclass(frozen=True)
class Header:
    """A parsed envelope header. ``raw`` is the header exactly as stored: the associated data of
    every segment."""

    version: int
    segment_size: int
    message_id: bytes = field(repr=False)
    nonce_prefix: bytes = field(repr=False)
    commitment: bytes = field(repr=False)
    kms_key_id: str
    wrapped_key: bytes = field(repr=False)
    context: Dict[str, str]
    raw: bytes = field(repr=False)

    def kms_context(self) -> Dict[str, str]:
        """What KMS bound the data key to, as this header states it (version 2 leaves out
        ``dualseal:key``). A pinned reader builds it from the location instead."""
        return {
            k: v
            for k, v in self.context.items()
            if not (self.version == VERSION_SHARED_KEY and k == CTX_KEY)
        }


class _NeedMore(Exception):
    """The header is not complete yet (internal)."""


class _Cursor:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > MAX_HEADER_LEN:
            # Checked before waiting for the bytes: a damaged or hostile length field cannot
            # make a streaming reader buffer more than a header may be.
            raise MalformedHeaderError("envelope header is malformed: header longer than 64 KiB")
        if self.pos + n > len(self.buf):
            raise _NeedMore()
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return b

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def text(self, n: int, what: str) -> str:
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedHeaderError(f"envelope header is malformed: {what} is not UTF-8") from None


def try_parse_header(buf: bytes) -> Optional[Tuple[Header, int]]:
    """Parses the header at the start of ``buf``: ``(header, length)``, or ``None`` when ``buf``
    ends before the header does (and nothing seen so far is wrong).

    :raises BadMagicError, UnsupportedVersionError, UnsupportedAlgorithmError,
        MalformedHeaderError: as soon as the bytes seen break a rule of FORMAT.md's "Reader
        duties", before any cryptography.
    """
    c = _Cursor(buf)
    try:
        if c.take(4) != MAGIC:
            raise BadMagicError("not a dualseal envelope (bad magic bytes)")
        version = c.take(1)[0]
        if version not in (VERSION_OWN_KEY, VERSION_SHARED_KEY):
            raise UnsupportedVersionError(
                f"envelope format version {version} is not supported by this reader (it reads 1 and 2)"
            )
        algorithm = c.take(1)[0]
        if algorithm != ALGORITHM:
            raise UnsupportedAlgorithmError(f"envelope algorithm {algorithm} is not supported")
        segment_size = int(struct.unpack(">I", c.take(4))[0])
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise MalformedHeaderError("envelope header is malformed: segment size out of range")
        message_id = c.take(32)
        nonce_prefix = c.take(19)
        commitment = c.take(32)
        n = c.u16()
        if not 1 <= n <= MAX_KEY_ID_LEN:
            raise MalformedHeaderError("envelope header is malformed: KMS key id length out of range")
        kms_key_id = c.text(n, "the KMS key id")
        n = c.u16()
        if not 1 <= n <= MAX_WRAPPED_KEY_LEN:
            raise MalformedHeaderError("envelope header is malformed: wrapped key length out of range")
        wrapped_key = c.take(n)
        count = c.u16()
        if not 1 <= count <= MAX_CONTEXT_PAIRS:
            raise MalformedHeaderError("envelope header is malformed: context pair count out of range")
        context: Dict[str, str] = {}
        last: Optional[bytes] = None
        for _ in range(count):
            name_raw = c.take(c.u16())
            # Canonical: names strictly ascending by bytes, so one context has one encoding.
            if last is not None and name_raw <= last:
                raise MalformedHeaderError(
                    "envelope header is malformed: context names not strictly ascending"
                )
            last = name_raw
            try:
                name = name_raw.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedHeaderError(
                    "envelope header is malformed: a context name is not UTF-8"
                ) from None
            context[name] = c.text(c.u16(), "a context value")
    except _NeedMore:
        return None
    if version == VERSION_SHARED_KEY and CTX_KEY not in context:
        raise MalformedHeaderError(
            "envelope header is malformed: a version-2 envelope must name its object (dualseal:key)"
        )
    raw = bytes(buf[: c.pos])
    header = Header(
        version=version,
        segment_size=segment_size,
        message_id=bytes(message_id),
        nonce_prefix=bytes(nonce_prefix),
        commitment=bytes(commitment),
        kms_key_id=kms_key_id,
        wrapped_key=bytes(wrapped_key),
        context=context,
        raw=raw,
    )
    return header, c.pos


def parse_header(envelope: bytes) -> Tuple[Header, int]:
    """Parses a complete header: ``(header, length)``.

    :raises TruncatedError: when ``envelope`` ends inside the header; otherwise as
        :func:`try_parse_header`.
    """
    parsed = try_parse_header(envelope)
    if parsed is None:
        raise TruncatedError("envelope is truncated (header); the object is incomplete or not a dualseal envelope")
    return parsed


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) for L = 32: one block of expand."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


class SegmentOpener:
    """Opens the segments of one envelope in order, under the content key derived from
    ``data_key`` after its commitment is checked (FORMAT.md steps 4-7)."""

    def __init__(self, header: Header, data_key: Union[bytes, bytearray]) -> None:
        """
        :raises CommitmentMismatchError: ``data_key`` is not the key the envelope was sealed under.
        """
        if len(data_key) != KEY_LEN:
            raise CommitmentMismatchError("the data key is not 32 bytes")
        commitment = _hkdf_sha256(data_key, header.message_id, _INFO_COMMITMENT)
        # Constant time: the commitment is a MAC of the data key.
        if not hmac.compare_digest(commitment, header.commitment):
            raise CommitmentMismatchError(
                "key commitment mismatch: the data key does not belong to this envelope"
            )
        self._key = _hkdf_sha256(data_key, header.message_id, _INFO_CONTENT_KEY)
        self._header = header
        self._next = 0
        self._finished = False

    @property
    def segments_opened(self) -> int:
        """How many segments have been opened."""
        return self._next

    def open(self, chunk: bytes, last: bool) -> bytes:
        """Opens the next chunk (ciphertext and its 16-byte tag); ``last`` when it ends the
        envelope.

        :raises AuthenticationError: it does not authenticate in this position with this flag.
        :raises NonCanonicalError: an empty last segment after a full one.
        """
        i = self._next
        full = self._header.segment_size + TAG_LEN
        if self._finished or i >= MAX_SEGMENTS:
            raise AuthenticationError(f"segment {i} failed authentication: bytes after the last segment", i)
        if len(chunk) < TAG_LEN or len(chunk) > full or (not last and len(chunk) != full):
            raise AuthenticationError(
                f"segment {i} failed authentication: the envelope was altered or truncated", i
            )
        if last and i > 0 and len(chunk) == TAG_LEN:
            raise NonCanonicalError("envelope is not canonical: an empty last segment after a full one")
        nonce = self._header.nonce_prefix + struct.pack(">IB", i, 1 if last else 0)
        try:
            plain = crypto_aead_xchacha20poly1305_ietf_decrypt(bytes(chunk), self._header.raw, nonce, self._key)
        except CryptoError:
            raise AuthenticationError(
                f"segment {i} failed authentication: the envelope was altered, truncated, extended or reordered",
                i,
            ) from None
        self._next = i + 1
        self._finished = last
        return plain

    def close(self) -> None:
        """Drops the content key. Python cannot overwrite an immutable ``bytes`` in place; see
        the README on what this does and does not guarantee."""
        self._key = b""


class EnvelopeStream:
    """Opens an envelope pushed in pieces of any size; memory holds about one segment.

    Call :meth:`push` until :attr:`header` is set, check it, :meth:`start` with the data key,
    keep pushing, then :meth:`finish`. A segment is opened once at least one byte follows it
    (so it is certainly not the last); the rest is opened as the last segment at the end, which
    is where truncation at a segment boundary is detected.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.header: Optional[Header] = None
        self._opener: Optional[SegmentOpener] = None
        self._done = False

    def push(self, data: bytes) -> List[bytes]:
        """Takes more envelope bytes; returns the plaintext segments they complete (none before
        :meth:`start`).

        :raises EnvelopeError: a header rule broken, or a segment that does not authenticate.
        """
        if self._done:
            raise AuthenticationError("bytes after the end of the envelope", -1)
        self._buf += data
        if self.header is None:
            parsed = try_parse_header(self._buf)
            if parsed is None:
                return []
            self.header, n = parsed
            del self._buf[:n]
        return self._drain(at_end=False)

    def start(self, data_key: Union[bytes, bytearray]) -> List[bytes]:
        """Checks the commitment of ``data_key`` and opens what is buffered.

        :raises CommitmentMismatchError, AuthenticationError:
        """
        if self.header is None or self._opener is not None:
            raise RuntimeError("start before the header, or twice")
        self._opener = SegmentOpener(self.header, data_key)
        return self._drain(at_end=False)

    def finish(self) -> List[bytes]:
        """The input has ended: opens the last segment.

        :raises TruncatedError: the header, or every segment, is missing.
        :raises AuthenticationError, NonCanonicalError: the end is not the envelope's end.
        """
        if self.header is None:
            raise TruncatedError("envelope is truncated (header); the object is incomplete or not a dualseal envelope")
        if self._opener is None:
            raise RuntimeError("finish before start")
        if not self._buf and self._opener.segments_opened == 0:
            raise TruncatedError("envelope is truncated (no segments)")
        out = self._drain(at_end=True)
        self._done = True
        self._opener.close()
        return out

    def _drain(self, at_end: bool) -> List[bytes]:
        if self._opener is None or self.header is None:
            return []
        step = self.header.segment_size + TAG_LEN
        out: List[bytes] = []
        view = memoryview(self._buf)
        used = 0
        try:
            while len(self._buf) - used > step:
                out.append(self._opener.open(view[used : used + step], last=False))
                used += step
            if at_end:
                out.append(self._opener.open(view[used:], last=True))
                used = len(self._buf)
        finally:
            view.release()
        del self._buf[:used]
        return out


def open_envelope(data_key: bytes, envelope: bytes) -> Tuple[Header, bytes]:
    """Opens a whole envelope with a known data key (no S3, no KMS, no location check): what
    the test vectors exercise. Applications use :func:`dualseal_reader.read`.

    :raises EnvelopeError: any way the envelope is not valid.
    """
    s = EnvelopeStream()
    parts = s.push(envelope)
    if s.header is None:
        raise TruncatedError("envelope is truncated (header); the object is incomplete or not a dualseal envelope")
    parts += s.start(data_key)
    parts += s.finish()
    return s.header, b"".join(parts)
