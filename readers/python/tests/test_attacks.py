"""An outsider's attacks on the reader, against fake S3 and KMS clients that answer as AWS does:
each must be refused with its typed error, before any plaintext is handed out when the check
allows it, and at the end of the stream (after an authenticated prefix) when only the end can
tell."""

import os
import tempfile
import unittest

from dualseal_reader import (
    AuthenticationError,
    Expectation,
    ExpectationError,
    KeyNotReportedError,
    KmsRefusedError,
    LocationMap,
    MalformedHeaderError,
    MisplacedError,
    NonCanonicalError,
    NotDsseError,
    ReadError,
    StorageError,
    TruncatedError,
    WrongCategoryError,
    WrongKeyError,
    open_stream,
    read,
    read_to_file,
)
from dualseal_reader.envelope import MAX_HEADER_LEN, EnvelopeStream

from support import FakeKMS, FakeS3, header, seal, seal_chunks, str16

DB_KEY = "arn:aws:kms:us-east-1:111122223333:key/k-db"
API_KEY = "arn:aws:kms:us-east-1:111122223333:key/k-api"
BUCKET, KEY = "secrets-db", "payments/credentials.json"
DATA_KEY = bytes(range(32))
SECRET = b"correct horse battery staple, and then some more bytes"  # 54 bytes: 4 segments of 16
EXPECT = Expectation(category="db", kms_key_arn=DB_KEY)


def ctx(bucket=BUCKET, key=KEY, category="db"):
    return {"dualseal:bucket": bucket, "dualseal:category": category, "dualseal:key": key}


class Attacks(unittest.TestCase):
    def setUp(self) -> None:
        self.s3, self.kms = FakeS3(), FakeKMS()
        self.kms.register(b"wrapped-key", DB_KEY, ctx(), DATA_KEY)
        self.hdr = header(ctx(), DATA_KEY)
        self.env = seal(self.hdr, DATA_KEY, SECRET)

    def put(self, data, **kw):
        kw.setdefault("key_id", DB_KEY)
        self.s3.put(BUCKET, KEY, data, **kw)

    def refused(self, err_type, kind=None):
        with self.assertRaises(err_type) as cm:
            read(self.s3, self.kms, BUCKET, KEY, expect=EXPECT)
        e = cm.exception
        self.assertNotIn("correct horse", str(e) + repr(e))
        if kind:
            self.assertEqual(e.kind, kind)
        return e

    def test_a_genuine_object_reads(self) -> None:
        self.put(self.env)
        self.assertEqual(read(self.s3, self.kms, BUCKET, KEY, expect=EXPECT), SECRET)
        call = self.kms.calls[0]
        self.assertEqual(call["KeyId"], DB_KEY)
        self.assertEqual(call["EncryptionContext"], ctx())
        self.assertTrue(self.s3.last_body.closed)

    def test_the_expectation_is_required(self) -> None:
        self.put(self.env)
        with self.assertRaises(TypeError):
            read(self.s3, self.kms, BUCKET, KEY, expect=None)  # type: ignore[arg-type]
        with self.assertRaises(ExpectationError):
            Expectation(category="", kms_key_arn=DB_KEY)

    # --- the server-side layer --------------------------------------------------------------
    def test_not_dsse(self) -> None:
        for sse in ("aws:kms", "AES256", None):
            self.put(self.env, sse=sse)
            self.assertEqual(self.refused(NotDsseError).found, sse or "none")
        self.assertEqual(self.kms.calls, [], "KMS is not asked for a refused object")

    def test_no_key_reported_fails_closed_after_one_head(self) -> None:
        self.put(self.env, key_id=None)
        self.refused(KeyNotReportedError, "KeyNotReported")
        self.assertEqual(len(self.s3.head_calls), 1)
        self.assertEqual(self.s3.head_calls[0]["IfMatch"], '"etag"', "the HEAD is of the object read")

    def test_a_key_named_by_the_head_only_is_enough(self) -> None:
        self.put(self.env, key_id=None, head_key_id="k-db")
        self.assertEqual(read(self.s3, self.kms, BUCKET, KEY, expect=EXPECT), SECRET)

    def test_server_side_layer_under_another_key(self) -> None:
        self.put(self.env, key_id=API_KEY)
        self.assertEqual(self.refused(WrongKeyError).layer, "server-side")
        self.put(self.env, key_id="k-db-other")
        self.refused(WrongKeyError)

    # --- the envelope against the location and the expectation ------------------------------
    def test_an_envelope_of_another_location(self) -> None:
        for c in (ctx(key="other.json"), ctx(bucket="secrets-api"), {"dualseal:category": "db"}):
            self.put(seal(header(c, DATA_KEY), DATA_KEY, SECRET))
            self.refused(MisplacedError, "Misplaced")

    def test_extra_context_pairs(self) -> None:
        c = dict(ctx(), **{"dualseal:zz": "x"})
        self.put(seal(header(c, DATA_KEY), DATA_KEY, SECRET))
        self.refused(MisplacedError)

    def test_forged_under_another_categorys_key_at_this_location(self) -> None:
        # The forger holds GenerateDataKey on the api key and PutObject on this bucket.
        forged_key = b"\x42" * 32
        self.kms.register(b"forged", API_KEY, ctx(), forged_key)
        env = seal(header(ctx(), forged_key, kms_key_id=API_KEY, wrapped=b"forged"), forged_key, b"evil")
        self.put(env)
        self.assertEqual(self.refused(WrongKeyError).layer, "envelope")
        # Claims the db key in its header, but its data key is wrapped under the api key: KMS
        # refuses it, as the KeyId sent is the expected key.
        env = seal(header(ctx(), forged_key, kms_key_id=DB_KEY, wrapped=b"forged"), forged_key, b"evil")
        self.put(env)
        self.refused(KmsRefusedError)
        # Sealed for this location but as category api: wrong category.
        self.kms.register(b"cat", DB_KEY, ctx(category="api"), forged_key)
        env = seal(header(ctx(category="api"), forged_key, wrapped=b"cat"), forged_key, b"evil")
        self.put(env)
        self.refused(WrongCategoryError)

    def test_kms_must_name_the_expected_key(self) -> None:
        self.put(self.env)
        self.kms.answer_key_id = API_KEY
        self.assertEqual(self.refused(WrongKeyError).layer, "KMS")
        self.kms.answer_key_id = ""
        self.refused(KmsRefusedError)

    def test_version_2_is_unwrapped_without_the_object_key(self) -> None:
        c = ctx()
        self.kms.register(b"shared", DB_KEY, {k: v for k, v in c.items() if k != "dualseal:key"}, DATA_KEY)
        self.put(seal(header(c, DATA_KEY, version=2, wrapped=b"shared"), DATA_KEY, SECRET))
        self.assertEqual(read(self.s3, self.kms, BUCKET, KEY, expect=EXPECT), SECRET)
        # A version-1 envelope relabelled as 2 does not open: the header is authenticated.
        relabelled = bytearray(self.env)
        relabelled[4] = 2
        self.put(bytes(relabelled))
        self.refused(KmsRefusedError)

    # --- the body ---------------------------------------------------------------------------
    def stream_then_fail(self, data, err_type):
        self.put(data)
        got = []
        with self.assertRaises(err_type) as cm:
            for part in open_stream(self.s3, self.kms, BUCKET, KEY, expect=EXPECT):
                got.append(part)
        self.assertTrue(SECRET.startswith(b"".join(got)), "only an authenticated prefix came out")
        self.assertTrue(self.s3.last_body.closed)
        return cm.exception, got

    def test_truncated_at_a_segment_boundary(self) -> None:
        _, got = self.stream_then_fail(self.env[: len(self.hdr) + 3 * 32], AuthenticationError)
        self.assertEqual(len(got), 2, "two segments were handed out before the end showed the cut")

    def test_truncated_inside_a_segment_and_inside_the_header(self) -> None:
        self.stream_then_fail(self.env[:-5], AuthenticationError)
        self.put(self.env[: len(self.hdr)])
        self.refused(TruncatedError)
        self.put(self.hdr[:50])
        self.refused(TruncatedError)
        self.put(b"")
        self.refused(TruncatedError)

    def test_segments_swapped_or_reordered_or_duplicated(self) -> None:
        body = self.env[len(self.hdr) :]
        segs = [body[i : i + 32] for i in range(0, len(body), 32)]
        for order in ([1, 0, 2, 3], [0, 2, 1, 3], [0, 1, 3, 2], [0, 1, 2, 2, 3], [0, 1, 2, 3, 3]):
            with self.subTest(order):
                self.stream_then_fail(self.hdr + b"".join(segs[i] for i in order), AuthenticationError)

    def test_final_flag_removed_or_set_early(self) -> None:
        chunks = [SECRET[i : i + 16] for i in range(0, len(SECRET), 16)]
        no_final = seal_chunks(self.hdr, DATA_KEY, chunks, [False] * 4)
        self.stream_then_fail(self.hdr + b"".join(no_final), AuthenticationError)
        # Sealed as ending after the second segment, then the rest appended.
        early = seal_chunks(self.hdr, DATA_KEY, chunks, [False, True, False, True])
        self.stream_then_fail(self.hdr + b"".join(early), AuthenticationError)
        # The empty last segment after a full one (a second encoding).
        full = seal_chunks(self.hdr, DATA_KEY, [SECRET[:16], SECRET[16:32], b""])
        self.stream_then_fail(self.hdr + b"".join(full), NonCanonicalError)

    def test_a_flipped_byte_anywhere(self) -> None:
        for pos in range(0, len(self.env), 11):
            with self.subTest(pos):
                bad = bytearray(self.env)
                bad[pos] ^= 0x01
                self.put(bytes(bad))
                self.refused(ReadError)

    def test_the_connection_cut_mid_body(self) -> None:
        self.put(self.env, fail_after=len(self.hdr) + 40)
        with self.assertRaises(StorageError):
            for _ in open_stream(self.s3, self.kms, BUCKET, KEY, expect=EXPECT):
                pass

    def test_huge_header_lengths_are_refused_without_buffering(self) -> None:
        base = self.hdr[:93]
        for bad in (
            base + b"\xff\xff",  # a key id of 65535 bytes
            base + str16(DB_KEY.encode()) + b"\xff\xff",  # a wrapped key of 65535 bytes
            base + str16(DB_KEY.encode()) + str16(b"w") + b"\xff\xff",  # 65535 pairs
            base + str16(DB_KEY.encode()) + str16(b"w") + b"\x00\x00",  # no pairs
            self.hdr[:6] + b"\xff\xff\xff\xff" + self.hdr[10:],  # 4 GiB segments
            self.hdr[:6] + b"\x00\x00\x00\x0f" + self.hdr[10:],
        ):
            with self.subTest(bad[-4:].hex()):
                s = EnvelopeStream()
                with self.assertRaises(MalformedHeaderError):
                    s.push(bad)
        # 64 pairs whose names claim 65535 bytes each: refused once the header would pass 64 KiB,
        # without waiting for (or holding) the megabytes it claims.
        s = EnvelopeStream()
        big = base + str16(DB_KEY.encode()) + str16(b"w") + b"\x00\x40" + b"\xff\xff" + b"a" * 65535
        with self.assertRaises(MalformedHeaderError):
            s.push(big[:MAX_HEADER_LEN + 10])
        self.put(big)
        self.refused(MalformedHeaderError)

    def test_a_missing_object(self) -> None:
        with self.assertRaises(StorageError) as cm:
            read(self.s3, self.kms, BUCKET, "nope", expect=EXPECT)
        self.assertEqual(cm.exception.code, "NoSuchKey")

    def test_read_to_file_leaves_nothing_behind_on_failure(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "secret")
            self.put(self.env)
            self.assertEqual(read_to_file(self.s3, self.kms, BUCKET, KEY, path, expect=EXPECT), len(SECRET))
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
            with self.assertRaises(FileExistsError):
                read_to_file(self.s3, self.kms, BUCKET, KEY, path, expect=EXPECT)
            os.remove(path)
            self.put(self.env[:-16])
            with self.assertRaises(AuthenticationError):
                read_to_file(self.s3, self.kms, BUCKET, KEY, path, expect=EXPECT)
            self.assertFalse(os.path.exists(path))


class Mapping(unittest.TestCase):
    LINES = (
        '{"source_bucket":"master","source_key":"db/a.json","source_version":"","destination_bucket":"secrets-db",'
        '"destination_key":"a.json","category":"db","kms_key_arn":"%s","envelope_version":1}\n' % DB_KEY
    )

    def test_from_mapping(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "map.jsonl")
            with open(p, "w") as f:
                f.write(self.LINES)
            self.assertEqual(Expectation.from_mapping(p, "secrets-db", "a.json"), Expectation("db", DB_KEY))
            loc = LocationMap.load(p).for_source("master", "db/a.json")
            self.assertEqual((loc.bucket, loc.key, loc.expect.category), ("secrets-db", "a.json", "db"))
            with self.assertRaises(ExpectationError):
                Expectation.from_mapping(p, "secrets-db", "b.json")
            with open(p, "a") as f:
                f.write(self.LINES.replace('"db"', '"api"'))
            with self.assertRaises(ExpectationError):
                LocationMap.load(p)


if __name__ == "__main__":
    unittest.main()
