#!/usr/bin/env python3
"""Independent decryptor of dualseal envelopes, written from FORMAT.md alone.

Uses only libsodium (through PyNaCl) for XChaCha20-Poly1305 and the standard library for
HKDF-SHA256, to prove that the format is specified well enough to implement elsewhere.

usage: reference_open.py FIXTURE.json [...]   (checks envelope_hex opens to plaintext_hex)
       reference_open.py --key HEX ENVELOPE_FILE   (prints the plaintext to stdout)
       reference_open.py --negative FILE.json     (checks every vector in it is refused)
"""
import hashlib
import hmac
import json
import struct
import sys

from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt


def hkdf_sha256(ikm, salt, info, length=32):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


def parse_header(env):
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(env):
            raise ValueError("truncated header")
        b = env[pos:pos + n]
        pos += n
        return b

    def u16():
        return struct.unpack(">H", take(2))[0]

    if take(4) != b"DSEL":
        raise ValueError("bad magic")
    version, alg = take(1)[0], take(1)[0]
    if version not in (1, 2) or alg != 1:
        raise ValueError(f"unsupported version {version} / algorithm {alg}")
    seg = struct.unpack(">I", take(4))[0]
    if not 16 <= seg <= 16 * 1024 * 1024:
        raise ValueError("segment size out of range")
    h = {"version": version, "segment_size": seg, "message_id": take(32), "nonce_prefix": take(19), "commitment": take(32)}
    h["kms_key_id"] = take(u16()).decode()
    if not 1 <= len(h["kms_key_id"].encode()) <= 2048:
        raise ValueError("KMS key id length out of range")
    h["wrapped_key"] = take(u16())
    if not 1 <= len(h["wrapped_key"]) <= 1024:
        raise ValueError("wrapped key length out of range")
    ctx = {}
    count = u16()
    if not 1 <= count <= 64:
        raise ValueError("context pair count out of range")
    last = None
    for _ in range(count):
        kb = take(u16())
        if last is not None and kb <= last:
            raise ValueError("context names not strictly ascending")
        last = kb
        ctx[kb.decode()] = take(u16()).decode()
    h["context"] = ctx
    if pos > 64 * 1024:
        raise ValueError("header longer than 64 KiB")
    if version == 2 and "dualseal:key" not in ctx:
        raise ValueError("a version-2 envelope must name its object in the context")
    # What KMS Decrypt must be given (FORMAT.md step 3): version 2 leaves out dualseal:key.
    h["kms_context"] = {k: v for k, v in ctx.items() if not (version == 2 and k == "dualseal:key")}
    return h, pos


def open_envelope(data_key, env):
    h, hlen = parse_header(env)
    header = env[:hlen]
    content_key = hkdf_sha256(data_key, h["message_id"], b"dualseal/v1 content key")
    commitment = hkdf_sha256(data_key, h["message_id"], b"dualseal/v1 key commitment")
    if not hmac.compare_digest(commitment, h["commitment"]):
        raise ValueError("key commitment mismatch")
    body = env[hlen:]
    step = h["segment_size"] + 16
    chunks = [body[i:i + step] for i in range(0, len(body), step)] or []
    if not chunks:
        raise ValueError("no segments")
    if len(chunks) > 1 and len(chunks[-1]) == 16:
        raise ValueError("not canonical: an empty last segment after a full one")
    out = b""
    for i, c in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        nonce = h["nonce_prefix"] + struct.pack(">I", i) + bytes([last])
        out += crypto_aead_xchacha20poly1305_ietf_decrypt(c, header, nonce, content_key)
    return h, out


def main():
    args = sys.argv[1:]
    if args[:1] == ["--negative"]:
        for v in json.load(open(args[1])):
            try:
                open_envelope(bytes.fromhex(v["data_key_hex"]), bytes.fromhex(v["envelope_hex"]))
            except Exception as e:  # noqa: BLE001 (any refusal is the expected outcome)
                print(f"refused, as it must be: {v['description']}: {e}")
                continue
            raise SystemExit(f"{args[1]}: opened what must be refused: {v['description']}")
        return
    if args[:1] == ["--key"]:
        _, out = open_envelope(bytes.fromhex(args[1]), open(args[2], "rb").read())
        sys.stdout.buffer.write(out)
        return
    for path in args:
        v = json.load(open(path))
        h, out = open_envelope(bytes.fromhex(v["data_key_hex"]), bytes.fromhex(v["envelope_hex"]))
        assert out.hex() == v["plaintext_hex"], f"{path}: plaintext differs"
        assert h["context"] == v["context"], f"{path}: context differs"
        print(f"{path}: OK (v{h['version']}, {len(out)} bytes, KMS context {h['kms_context']})")


if __name__ == "__main__":
    main()
