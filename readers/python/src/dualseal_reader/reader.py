"""Reading a migrated secret from S3 and KMS, pinned to what the reader expects (FORMAT.md,
"Reading an object, step by step"):

1. GetObject; S3 must report ``aws:kms:dsse`` and, in the GET or else in one HEAD of the same
   object, the expected KMS key. No key reported: refused (fail closed).
2. Parse the header; its context must name exactly this bucket and key (and nothing else dualseal
   never writes), its KMS key id must be the expected key, its category the expected one.
3. KMS ``Decrypt`` with ``KeyId`` = the expected key and the encryption context built from the
   location (version 2: without ``dualseal:key``), never copied from the header; KMS must answer
   with the expected key.
4-8. Commitment, then the segments (:mod:`dualseal_reader.envelope`).

Needs ``s3:GetObject`` on the category bucket and ``kms:Decrypt`` on the category key (plus the
``kms:Decrypt`` that S3 itself makes for DSSE-KMS under the caller's identity).
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Union

from .envelope import CTX_BUCKET, CTX_CATEGORY, CTX_KEY, VERSION_SHARED_KEY, EnvelopeStream, Header
from .errors import (
    KeyNotReportedError,
    KmsRefusedError,
    MisplacedError,
    NotDsseError,
    ReadError,
    StorageError,
    WrongCategoryError,
    WrongKeyError,
)
from .expectation import Expectation

#: What S3 reports for DSSE-KMS.
SSE_DSSE_KMS = "aws:kms:dsse"
#: Bytes asked of the S3 body per read: large enough to keep the HTTP stream busy, small enough
#: that memory stays at about one read plus one segment.
DEFAULT_CHUNK_SIZE = 1024 * 1024

__all__ = ["read", "open_stream", "read_to_file", "PlaintextStream", "same_key", "SSE_DSSE_KMS"]


def same_key(reported: str, arn: str) -> bool:
    """Whether a KMS key id as S3 or an envelope reports it (an ARN or a bare key id) names the
    key ARN ``arn``: the rule of dualseal's own reader."""
    return reported == arn or arn.endswith("/" + reported) or reported.endswith("/" + arn)


def read(s3: Any, kms: Any, bucket: str, key: str, *, expect: Expectation) -> bytes:
    """Reads and opens ``s3://bucket/key``, pinned to ``expect``; returns the whole plaintext.

    ``s3`` and ``kms`` are boto3 clients (``boto3.client("s3")``, ``boto3.client("kms")``).
    For objects too large to hold in memory, use :func:`open_stream` or :func:`read_to_file`.

    :raises ReadError: a subclass saying why (see :mod:`dualseal_reader.errors`); none carries
        plaintext.
    """
    with open_stream(s3, kms, bucket, key, expect=expect) as stream:
        return b"".join(stream)


def open_stream(
    s3: Any,
    kms: Any,
    bucket: str,
    key: str,
    *,
    expect: Expectation,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> "PlaintextStream":
    """Opens ``s3://bucket/key``, pinned to ``expect``, for reading segment by segment.

    Every check before the first segment (server-side encryption and key, location, envelope
    key and category, KMS unwrap, key commitment) is done before this returns, so a refused
    object raises here. The returned stream then yields each segment's plaintext once it is
    authenticated; truncation is only detectable at the end, so iteration raises there if the
    object ends badly, and whatever was yielded before must be discarded. Close it (or use it
    as a context manager) to release the HTTP connection early.

    :raises ReadError: a subclass saying why.
    """
    if not isinstance(expect, Expectation):
        raise TypeError(
            "expect=Expectation(category=..., kms_key_arn=...) is required: without it nothing proves "
            "the object is under its category's key (dualsealctl mapping names both)"
        )
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except Exception as err:  # noqa: BLE001 (every S3 failure becomes one typed error)
        raise _storage_error(err, "GetObject", bucket, key) from err
    body = obj["Body"]
    try:
        _check_server_side(s3, obj, bucket, key, expect)
        chunks = _body_chunks(body, chunk_size, bucket, key)
        env = EnvelopeStream()
        for data in chunks:
            env.push(data)
            if env.header is not None:
                break
        if env.header is None:
            env.finish()  # raises TruncatedError
            raise AssertionError("unreachable")
        _check_envelope(env.header, bucket, key, expect)
        data_key = _unwrap(kms, env.header, bucket, key, expect)
        try:
            first = env.start(data_key)
        finally:
            _wipe(data_key)
        return PlaintextStream(body, chunks, env, first)
    except BaseException:
        body.close()
        raise


def read_to_file(
    s3: Any,
    kms: Any,
    bucket: str,
    key: str,
    path: Union[str, "os.PathLike[str]"],
    *,
    expect: Expectation,
) -> int:
    """Reads ``s3://bucket/key`` into a new file at ``path`` (mode 0600; an existing file is
    refused), segment by segment; returns the number of plaintext bytes. On any failure the file
    is removed before the error is raised, so no partial secret stays under that name.

    :raises ReadError: a subclass saying why.
    :raises FileExistsError, OSError: the file cannot be created or written.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            with open_stream(s3, kms, bucket, key, expect=expect) as stream:
                for part in stream:
                    f.write(part)
                    written += len(part)
    except BaseException:
        try:
            os.remove(path)
        except OSError:
            pass
        raise
    return written


class PlaintextStream(Iterator[bytes]):
    """The plaintext of one object, segment by segment (see :func:`open_stream`). Iterating it
    raises a :class:`ReadError` at the end when the object does not end as sealed."""

    def __init__(self, body: Any, chunks: Iterator[bytes], env: EnvelopeStream, first: List[bytes]) -> None:
        self._body = body
        self._chunks = chunks
        self._env = env
        self._ready: List[bytes] = list(first)
        self._ended = False
        self._closed = False
        #: Plaintext bytes handed out so far (what a caller must discard after a failure).
        self.bytes_out = 0

    def __iter__(self) -> "PlaintextStream":
        return self

    def __next__(self) -> bytes:
        while not self._ready:
            if self._ended or self._closed:
                raise StopIteration
            try:
                data = next(self._chunks, None)
                if data is None:
                    self._ended = True
                    self._ready = self._env.finish()
                    self.close()
                else:
                    self._ready = self._env.push(data)
            except BaseException:
                self.close()
                raise
        part = self._ready.pop(0)
        self.bytes_out += len(part)
        return part

    def read_into(self, out: BinaryIO) -> int:
        """Writes every remaining segment to ``out``; returns the bytes written.

        :raises ReadError: as iteration does; ``out`` then holds a prefix to discard.
        """
        n = 0
        for part in self:
            out.write(part)
            n += len(part)
        return n

    def close(self) -> None:
        """Releases the HTTP connection; the rest of the object is not read."""
        if not self._closed:
            self._closed = True
            try:
                self._body.close()
            except Exception:  # noqa: BLE001 (closing is best effort)
                pass

    def __enter__(self) -> "PlaintextStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PlaintextStream(bytes_out={self.bytes_out}, ended={self._ended})"


def _body_chunks(body: Any, chunk_size: int, bucket: str, key: str) -> Iterator[bytes]:
    it = body.iter_chunks(chunk_size)
    while True:
        try:
            data = next(it)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 (a cut connection, a short body)
            raise StorageError(
                f"reading s3://{bucket}/{key} failed before its end ({type(err).__name__}): "
                "the object is incomplete; discard anything read from it and retry"
            ) from err
        if data:
            yield data


def _check_server_side(s3: Any, obj: Dict[str, Any], bucket: str, key: str, expect: Expectation) -> None:
    sse = obj.get("ServerSideEncryption")
    if sse != SSE_DSSE_KMS:
        raise NotDsseError(
            f"s3://{bucket}/{key} is stored with server-side encryption {sse or 'none'!r}, not "
            f"{SSE_DSSE_KMS}; it was not written by dualseal or was replaced",
            found=str(sse or "none"),
        )
    reported = obj.get("SSEKMSKeyId")
    if not reported:
        # One HEAD of the very object read (its version, else its ETag).
        args: Dict[str, str] = {"Bucket": bucket, "Key": key}
        if obj.get("VersionId"):
            args["VersionId"] = obj["VersionId"]
        elif obj.get("ETag"):
            args["IfMatch"] = obj["ETag"]
        try:
            head = s3.head_object(**args)
        except Exception as err:  # noqa: BLE001
            raise _storage_error(err, "HeadObject", bucket, key) from err
        if head.get("ServerSideEncryption") != SSE_DSSE_KMS:
            raise NotDsseError(
                f"s3://{bucket}/{key}: a HEAD reports server-side encryption "
                f"{head.get('ServerSideEncryption') or 'none'!r}, not {SSE_DSSE_KMS}",
                found=str(head.get("ServerSideEncryption") or "none"),
            )
        reported = head.get("SSEKMSKeyId")
    if not reported:
        raise KeyNotReportedError(
            f"s3://{bucket}/{key}: S3 did not report which KMS key encrypts it (neither the read nor a "
            "HEAD named one), so the expected key cannot be proved; refusing it"
        )
    if not same_key(reported, expect.kms_key_arn):
        raise WrongKeyError(
            f"s3://{bucket}/{key}: its server-side layer (DSSE-KMS) is under KMS key {reported}, not the "
            f"expected {expect.kms_key_arn}; refusing it",
            layer="server-side",
            found=reported,
            expected=expect.kms_key_arn,
        )


def _check_envelope(header: Header, bucket: str, key: str, expect: Expectation) -> None:
    ctx = header.context
    if (ctx.get(CTX_BUCKET), ctx.get(CTX_KEY)) != (bucket, key):
        raise MisplacedError(
            f"s3://{bucket}/{key} holds an envelope sealed for "
            f"s3://{ctx.get(CTX_BUCKET, '?')}/{ctx.get(CTX_KEY, '?')}; refusing a moved or swapped object"
        )
    extra = sorted(set(ctx) - {CTX_BUCKET, CTX_CATEGORY, CTX_KEY})
    if extra:
        raise MisplacedError(
            f"s3://{bucket}/{key} holds an envelope whose encryption context carries pairs dualseal "
            f"never writes ({', '.join(extra)}); refusing it"
        )
    if not same_key(header.kms_key_id, expect.kms_key_arn):
        raise WrongKeyError(
            f"s3://{bucket}/{key}: its envelope is under KMS key {header.kms_key_id}, not the expected "
            f"{expect.kms_key_arn}; refusing it",
            layer="envelope",
            found=header.kms_key_id,
            expected=expect.kms_key_arn,
        )
    found = ctx.get(CTX_CATEGORY, "")
    if found != expect.category:
        raise WrongCategoryError(
            f"s3://{bucket}/{key} holds an envelope of category {found!r}, not the expected "
            f"{expect.category!r}; refusing it",
            found=found,
            expected=expect.category,
        )


def _unwrap(kms: Any, header: Header, bucket: str, key: str, expect: Expectation) -> bytearray:
    # Built from the location and the expectation, never copied from the header: KMS itself
    # then refuses a data key bound anywhere else.
    context = {CTX_BUCKET: bucket, CTX_CATEGORY: expect.category}
    if header.version != VERSION_SHARED_KEY:
        context[CTX_KEY] = key
    try:
        answer = kms.decrypt(
            CiphertextBlob=header.wrapped_key,
            KeyId=expect.kms_key_arn,
            EncryptionContext=context,
        )
    except Exception as err:  # noqa: BLE001
        code = _error_code(err)
        raise KmsRefusedError(
            f"KMS refused to unwrap the data key of s3://{bucket}/{key} ({code or type(err).__name__}): "
            "the caller lacks kms:Decrypt on the category key, the key is disabled, or the envelope "
            "is bound to another key or location",
            code=code,
        ) from err
    plaintext = answer.get("Plaintext")
    data_key = bytearray(plaintext or b"")
    del plaintext, answer["Plaintext"]
    used = answer.get("KeyId")
    if not used:
        _wipe(data_key)
        raise KmsRefusedError(f"KMS did not say which key unwrapped the data key of s3://{bucket}/{key}")
    if not same_key(used, expect.kms_key_arn):
        _wipe(data_key)
        raise WrongKeyError(
            f"s3://{bucket}/{key}: KMS unwrapped its data key under {used}, not the expected "
            f"{expect.kms_key_arn}; refusing it",
            layer="KMS",
            found=used,
            expected=expect.kms_key_arn,
        )
    return data_key


def _wipe(b: bytearray) -> None:
    for i in range(len(b)):
        b[i] = 0


def _error_code(err: BaseException) -> Optional[str]:
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return None


def _storage_error(err: BaseException, op: str, bucket: str, key: str) -> ReadError:
    if isinstance(err, ReadError):
        return err
    code = _error_code(err)
    return StorageError(
        f"S3 {op} of s3://{bucket}/{key} failed ({code or type(err).__name__}): check that the object "
        "exists and that the caller may s3:GetObject it",
        code=code,
    )
