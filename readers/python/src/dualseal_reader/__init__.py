"""Read secrets that dualseal migrated, from Python.

Three lines::

    import boto3
    from dualseal_reader import Expectation, read

    secret = read(boto3.client("s3"), boto3.client("kms"), "secrets-db", "payments/credentials.json",
                  expect=Expectation(category="db", kms_key_arn="arn:aws:kms:...:key/..."))

Every read is pinned: S3 must report DSSE-KMS under the expected key, the envelope must be sealed
for exactly this bucket and key, under that key and for that category, and KMS unwraps its data
key under the context of the location read. FORMAT.md (in the dualseal repository) is the
contract; :mod:`dualseal_reader.envelope` implements it without S3 or KMS.
"""

from .envelope import Header, open_envelope
from .errors import (
    AuthenticationError,
    BadMagicError,
    CommitmentMismatchError,
    EnvelopeError,
    ExpectationError,
    KeyNotReportedError,
    KmsRefusedError,
    MalformedHeaderError,
    MisplacedError,
    NonCanonicalError,
    NotDsseError,
    ReadError,
    StorageError,
    TruncatedError,
    UnsupportedAlgorithmError,
    UnsupportedVersionError,
    WrongCategoryError,
    WrongKeyError,
)
from .expectation import Expectation, Location, LocationMap
from .reader import PlaintextStream, open_stream, read, read_to_file

__version__ = "0.1.0"

__all__ = [
    "read",
    "open_stream",
    "read_to_file",
    "PlaintextStream",
    "Expectation",
    "Location",
    "LocationMap",
    "Header",
    "open_envelope",
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
