"""Why an object could not be read.

Every refusal is a :class:`ReadError`; catch that to handle them all, or a subclass to tell them
apart. Each class has a stable :attr:`ReadError.kind` string, the same in the TypeScript reader,
so logs and alerts read the same in both languages.

No exception carries plaintext, key bytes or ciphertext: messages name the bucket, the key, the
KMS key ids and what was wrong, nothing else. Errors raised while decrypting are raised ``from
None`` so that no library exception (and nothing it may hold) is chained to them.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "ReadError",
    "StorageError",
    "NotDsseError",
    "KeyNotReportedError",
    "WrongKeyError",
    "WrongCategoryError",
    "MisplacedError",
    "KmsRefusedError",
    "EnvelopeError",
    "TruncatedError",
    "BadMagicError",
    "UnsupportedVersionError",
    "UnsupportedAlgorithmError",
    "MalformedHeaderError",
    "CommitmentMismatchError",
    "AuthenticationError",
    "NonCanonicalError",
    "ExpectationError",
]


class ReadError(Exception):
    """Base of every refusal. ``str(err)`` says what is wrong and what to do."""

    #: Stable name of the refusal, shared with the TypeScript reader.
    kind: str = "ReadError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class StorageError(ReadError):
    """S3 failed: the object is missing, access was denied, the body was cut off in transit.

    ``code`` is the S3 error code when S3 gave one (``NoSuchKey``, ``AccessDenied``, ...).
    """

    kind = "Storage"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code


class NotDsseError(ReadError):
    """S3 stores the object without DSSE-KMS (``aws:kms:dsse``): dualseal did not write it, or it
    was replaced."""

    kind = "NotDsse"

    def __init__(self, message: str, found: str) -> None:
        super().__init__(message)
        self.found = found


class KeyNotReportedError(ReadError):
    """S3 did not say which KMS key encrypts the object (neither the GET nor a HEAD named one),
    so the expected key cannot be proved. AWS S3 always names it; an S3-compatible store that
    does not cannot serve pinned reads."""

    kind = "KeyNotReported"


class WrongKeyError(ReadError):
    """A layer is under another KMS key than expected. ``layer`` says which: the server-side
    layer (DSSE-KMS, as S3 reports it), the envelope (the key its header names), or KMS (the key
    KMS says unwrapped the data key)."""

    kind = "WrongKey"

    def __init__(self, message: str, layer: str, found: str, expected: str) -> None:
        super().__init__(message)
        self.layer = layer
        self.found = found
        self.expected = expected


class WrongCategoryError(ReadError):
    """The envelope was sealed for another category than expected."""

    kind = "WrongCategory"

    def __init__(self, message: str, found: str, expected: str) -> None:
        super().__init__(message)
        self.found = found
        self.expected = expected


class MisplacedError(ReadError):
    """The envelope was sealed for another location (a moved, copied or swapped object), or its
    encryption context is not the one dualseal writes for a location."""

    kind = "Misplaced"


class KmsRefusedError(ReadError):
    """KMS refused to unwrap the data key: no ``kms:Decrypt``, a disabled key, or a wrapped key
    bound to another key or context. ``code`` is KMS's error code when it gave one."""

    kind = "KmsRefused"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code


class EnvelopeError(ReadError):
    """The object is not a valid dualseal envelope: it was altered, truncated, extended,
    reordered, or never was one. The subclasses say how."""

    kind = "Envelope"


class TruncatedError(EnvelopeError):
    """The object ends before its header, or before its first segment."""

    kind = "Truncated"


class BadMagicError(EnvelopeError):
    """The first bytes are not ``DSEL``: not a dualseal envelope."""

    kind = "BadMagic"


class UnsupportedVersionError(EnvelopeError):
    """A format version this reader does not know (it knows 1 and 2): upgrade the reader if
    dualseal has moved on, else the object is damaged."""

    kind = "UnsupportedVersion"


class UnsupportedAlgorithmError(EnvelopeError):
    """An algorithm id this reader does not know (it knows 1)."""

    kind = "UnsupportedAlgorithm"


class MalformedHeaderError(EnvelopeError):
    """A header field is out of the bounds FORMAT.md sets, or not canonical."""

    kind = "MalformedHeader"


class CommitmentMismatchError(EnvelopeError):
    """The data key is not the one the envelope was sealed under (key commitment mismatch).
    The test vectors call this refusal ``WrongKey``."""

    kind = "CommitmentMismatch"


class AuthenticationError(EnvelopeError):
    """A segment failed authentication: the object was tampered with, truncated at a segment
    boundary, extended or reordered. Plaintext already handed out must be discarded."""

    kind = "Authentication"

    def __init__(self, message: str, segment: int) -> None:
        super().__init__(message)
        self.segment = segment


class NonCanonicalError(EnvelopeError):
    """A second encoding of a plaintext that has exactly one (an empty last segment after a full
    one)."""

    kind = "NonCanonical"


class ExpectationError(ValueError):
    """The expectation itself is unusable (empty category or key ARN, a location missing from
    the location map, or named twice with different answers). A programming or deployment
    error, not a refusal of an object; it is a ``ValueError``, not a :class:`ReadError`."""
