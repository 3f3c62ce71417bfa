"""Every positive and negative vector of FORMAT.md and tests/fixtures/: the positive ones open to
their plaintext (whole and in pieces of every awkward size), the negative ones are refused with
the typed error their "refused_as" names."""

import unittest

from dualseal_reader import EnvelopeError, open_envelope
from dualseal_reader.envelope import EnvelopeStream

from support import REFUSED_AS, negative_vectors, positive_vectors


def open_in_pieces(data_key: bytes, env: bytes, size: int) -> bytes:
    s = EnvelopeStream()
    out, started = [], False
    for i in range(0, len(env), size):
        out += s.push(env[i : i + size])
        if s.header is not None and not started:
            out += s.start(data_key)
            started = True
    out += s.finish()
    return b"".join(out)


class PositiveVectors(unittest.TestCase):
    def test_every_positive_vector_opens(self) -> None:
        vectors = positive_vectors()
        self.assertGreaterEqual(len(vectors), 9, "6 fixture files and FORMAT.md's 3 vectors")
        for v in vectors:
            with self.subTest(v["source"]):
                key, env = bytes.fromhex(v["data_key_hex"]), bytes.fromhex(v["envelope_hex"])
                header, plain = open_envelope(key, env)
                self.assertEqual(plain.hex(), v["plaintext_hex"])
                if "context" in v:
                    self.assertEqual(header.context, v["context"])
                    self.assertEqual(header.kms_key_id, v["kms_key_id"])
                    self.assertEqual(header.version, 2 if v.get("shared_data_key") else 1)
                for size in (1, 7, 16, 65, 4096):
                    self.assertEqual(open_in_pieces(key, env, size).hex(), v["plaintext_hex"], size)

    def test_version_2_unwraps_without_the_object_key(self) -> None:
        v = next(v for v in positive_vectors() if v["source"] == "envelope-v2-shared-key.json")
        header, _ = open_envelope(bytes.fromhex(v["data_key_hex"]), bytes.fromhex(v["envelope_hex"]))
        self.assertEqual(header.kms_context(), {"dualseal:bucket": "secrets-db", "dualseal:category": "db"})


class NegativeVectors(unittest.TestCase):
    def test_every_negative_vector_is_refused_with_its_error(self) -> None:
        vectors = negative_vectors()
        self.assertEqual(len(vectors), 12)
        for v in vectors:
            with self.subTest(v["description"]):
                with self.assertRaises(EnvelopeError) as cm:
                    open_envelope(bytes.fromhex(v["data_key_hex"]), bytes.fromhex(v["envelope_hex"]))
                self.assertEqual(cm.exception.kind, REFUSED_AS[v["refused_as"]], str(cm.exception))


if __name__ == "__main__":
    unittest.main()
