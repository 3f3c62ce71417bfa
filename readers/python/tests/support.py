"""Test helpers: the committed vectors (tests/fixtures and FORMAT.md), a sealer written from
FORMAT.md (tests only: the package never seals), and fake boto3 clients that answer as S3 and KMS
do, so the pinning rules can be attacked without a server."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import struct
from typing import Any, Dict, List, Optional

from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

REPO = os.environ.get(
    "DUALSEAL_REPO", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
)
FIXTURES = os.path.join(REPO, "tests", "fixtures")

#: What each "refused_as" of envelope-negative.json (dualseal's own error names) is here.
REFUSED_AS = {
    "NonCanonical": "NonCanonical",
    "Authentication": "Authentication",
    "MalformedHeader": "MalformedHeader",
    "UnsupportedVersion": "UnsupportedVersion",
    "Truncated": "Truncated",
    "WrongKey": "CommitmentMismatch",
    "BadMagic": "BadMagic",
    "UnsupportedAlgorithm": "UnsupportedAlgorithm",
}


def positive_vectors() -> List[Dict[str, Any]]:
    """Every positive vector: the fixture files, and the ones FORMAT.md prints in full."""
    out = []
    for name in sorted(os.listdir(FIXTURES)):
        if re.fullmatch(r"envelope-v\d.*\.json", name):
            with open(os.path.join(FIXTURES, name)) as f:
                v = json.load(f)
            v["source"] = name
            out.append(v)
    with open(os.path.join(REPO, "FORMAT.md")) as f:
        text = f.read()
    sections = re.split(r"^### ", text, flags=re.M)[1:]
    for s in sections:
        if not s.startswith("Vector"):
            continue
        key = re.search(r"\| data key \(hex\) \| `([0-9a-f]+)`", s)
        plain = re.search(r"Plaintext \(hex\):\s*```\s*([0-9a-f\s]*?)```", s)
        env = re.search(r"Complete envelope \(hex\):\s*```\s*([0-9a-f\s]+?)```", s)
        assert key and plain and env, f"FORMAT.md section {s.splitlines()[0]!r} lost its vector"
        out.append(
            {
                "source": "FORMAT.md " + s.splitlines()[0].split(":")[0],
                "data_key_hex": key.group(1),
                "plaintext_hex": re.sub(r"\s", "", plain.group(1)),
                "envelope_hex": re.sub(r"\s", "", env.group(1)),
            }
        )
    return out


def negative_vectors() -> List[Dict[str, Any]]:
    with open(os.path.join(FIXTURES, "envelope-negative.json")) as f:
        return json.load(f)


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def str16(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def header(
    context: Dict[str, str],
    data_key: bytes,
    *,
    version: int = 1,
    segment_size: int = 16,
    kms_key_id: str = "arn:aws:kms:us-east-1:111122223333:key/k-db",
    wrapped: bytes = b"wrapped-key",
    message_id: bytes = b"\xa5" * 32,
    nonce_prefix: bytes = b"\x5a" * 19,
) -> bytes:
    out = b"DSEL" + bytes([version, 1]) + struct.pack(">I", segment_size)
    out += message_id + nonce_prefix + hkdf(data_key, message_id, b"dualseal/v1 key commitment")
    out += str16(kms_key_id.encode()) + str16(wrapped) + struct.pack(">H", len(context))
    for k in sorted(context, key=lambda s: s.encode()):
        out += str16(k.encode()) + str16(context[k].encode())
    return out


def seal_chunks(hdr: bytes, data_key: bytes, chunks: List[bytes], flags: Optional[List[bool]] = None) -> List[bytes]:
    """Each plaintext chunk sealed in its position (``flags``: the last-segment flags, by default
    only the last one set)."""
    message_id = hdr[10:42]
    nonce_prefix = hdr[42:61]
    content_key = hkdf(data_key, message_id, b"dualseal/v1 content key")
    flags = flags if flags is not None else [i == len(chunks) - 1 for i in range(len(chunks))]
    return [
        crypto_aead_xchacha20poly1305_ietf_encrypt(c, hdr, nonce_prefix + struct.pack(">IB", i, int(f)), content_key)
        for i, (c, f) in enumerate(zip(chunks, flags))
    ]


def seal(hdr: bytes, data_key: bytes, plaintext: bytes, segment_size: int = 16) -> bytes:
    chunks = [plaintext[i : i + segment_size] for i in range(0, len(plaintext), segment_size)] or [b""]
    return hdr + b"".join(seal_chunks(hdr, data_key, chunks))


class ClientError(Exception):
    """Shaped like botocore's: ``response["Error"]["Code"]``."""

    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}}


class Body:
    """A StreamingBody stand-in; ``fail_after``: raise after that many bytes, as a cut
    connection does."""

    def __init__(self, data: bytes, fail_after: Optional[int] = None) -> None:
        self.data = data
        self.fail_after = fail_after
        self.closed = False

    def iter_chunks(self, chunk_size: int = 1024):
        pos = 0
        while pos < len(self.data):
            if self.fail_after is not None and pos >= self.fail_after:
                raise ConnectionResetError("connection reset")
            step = min(chunk_size, 7)  # odd sizes: pieces never line up with segments
            yield self.data[pos : pos + step]
            pos += step

    def close(self) -> None:
        self.closed = True


class FakeS3:
    def __init__(self) -> None:
        self.objects: Dict[tuple, Dict[str, Any]] = {}
        self.head_calls: List[Dict[str, Any]] = []
        self.last_body: Optional[Body] = None

    def put(self, bucket: str, key: str, data: bytes, sse: Optional[str] = "aws:kms:dsse",
            key_id: Optional[str] = None, head_key_id: Optional[str] = None,
            fail_after: Optional[int] = None) -> None:
        self.objects[(bucket, key)] = dict(data=data, sse=sse, key_id=key_id, head_key_id=head_key_id,
                                           fail_after=fail_after)

    def get_object(self, Bucket: str, Key: str) -> Dict[str, Any]:
        o = self.objects.get((Bucket, Key))
        if o is None:
            raise ClientError("NoSuchKey")
        self.last_body = Body(o["data"], o["fail_after"])
        ans: Dict[str, Any] = {"Body": self.last_body, "ETag": '"etag"'}
        if o["sse"]:
            ans["ServerSideEncryption"] = o["sse"]
        if o["key_id"]:
            ans["SSEKMSKeyId"] = o["key_id"]
        return ans

    def head_object(self, **kw: Any) -> Dict[str, Any]:
        self.head_calls.append(kw)
        o = self.objects[(kw["Bucket"], kw["Key"])]
        ans: Dict[str, Any] = {}
        if o["sse"]:
            ans["ServerSideEncryption"] = o["sse"]
        if o["head_key_id"]:
            ans["SSEKMSKeyId"] = o["head_key_id"]
        return ans


class FakeKMS:
    """Unwraps ``wrapped`` blobs registered with their key and context, as KMS does: the
    context and (when given) the KeyId must match."""

    def __init__(self) -> None:
        self.blobs: Dict[bytes, tuple] = {}
        self.calls: List[Dict[str, Any]] = []
        self.answer_key_id: Optional[str] = None

    def register(self, wrapped: bytes, key_arn: str, context: Dict[str, str], data_key: bytes) -> None:
        self.blobs[wrapped] = (key_arn, dict(context), data_key)

    def decrypt(self, CiphertextBlob: bytes, EncryptionContext: Dict[str, str], KeyId: Optional[str] = None) -> Dict[str, Any]:
        self.calls.append(dict(CiphertextBlob=CiphertextBlob, EncryptionContext=EncryptionContext, KeyId=KeyId))
        entry = self.blobs.get(bytes(CiphertextBlob))
        if entry is None or entry[1] != EncryptionContext:
            raise ClientError("InvalidCiphertextException")
        if KeyId is not None and KeyId != entry[0]:
            raise ClientError("IncorrectKeyException")
        ans: Dict[str, Any] = {"Plaintext": entry[2], "KeyId": entry[0] if self.answer_key_id is None else self.answer_key_id}
        if self.answer_key_id == "":
            del ans["KeyId"]
        return ans
