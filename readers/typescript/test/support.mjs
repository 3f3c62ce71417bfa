// Test helpers: the committed vectors (tests/fixtures and FORMAT.md), a sealer written from
// FORMAT.md (tests only: the package never seals), and fake SDK clients that answer as S3 and
// KMS do, so the pinning rules can be attacked without a server.
import { readFileSync, readdirSync } from "node:fs";
import { hkdfSync } from "node:crypto";
import { dirname, join, resolve } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";

import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { DecryptCommand } from "@aws-sdk/client-kms";
import { GetObjectCommand, HeadObjectCommand } from "@aws-sdk/client-s3";

export const REPO = process.env.DUALSEAL_REPO ?? resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const FIXTURES = join(REPO, "tests", "fixtures");

/** What each "refused_as" of envelope-negative.json (dualseal's own error names) is here. */
export const REFUSED_AS = {
  NonCanonical: "NonCanonical",
  Authentication: "Authentication",
  MalformedHeader: "MalformedHeader",
  UnsupportedVersion: "UnsupportedVersion",
  Truncated: "Truncated",
  WrongKey: "CommitmentMismatch",
  BadMagic: "BadMagic",
  UnsupportedAlgorithm: "UnsupportedAlgorithm",
};

export function positiveVectors() {
  const out = [];
  for (const name of readdirSync(FIXTURES).sort()) {
    if (/^envelope-v\d.*\.json$/.test(name)) {
      out.push({ ...JSON.parse(readFileSync(join(FIXTURES, name), "utf8")), source: name });
    }
  }
  const text = readFileSync(join(REPO, "FORMAT.md"), "utf8");
  for (const s of text.split(/^### /m).slice(1)) {
    if (!s.startsWith("Vector")) continue;
    const key = /\| data key \(hex\) \| `([0-9a-f]+)`/.exec(s);
    const plain = /Plaintext \(hex\):\s*```\s*([0-9a-f\s]*?)```/.exec(s);
    const env = /Complete envelope \(hex\):\s*```\s*([0-9a-f\s]+?)```/.exec(s);
    if (!key || !plain || !env) throw new Error(`FORMAT.md section ${s.split("\n")[0]} lost its vector`);
    out.push({
      source: `FORMAT.md ${s.split("\n")[0].split(":")[0]}`,
      data_key_hex: key[1],
      plaintext_hex: plain[1].replace(/\s/g, ""),
      envelope_hex: env[1].replace(/\s/g, ""),
    });
  }
  return out;
}

export function negativeVectors() {
  return JSON.parse(readFileSync(join(FIXTURES, "envelope-negative.json"), "utf8"));
}

export const hex = (s) => Buffer.from(s, "hex");
const hkdf = (ikm, salt, info) => new Uint8Array(hkdfSync("sha256", ikm, salt, Buffer.from(info), 32));
export const str16 = (b) => Buffer.concat([Buffer.from([b.length >> 8, b.length & 255]), Buffer.from(b)]);

export function header(context, dataKey, opts = {}) {
  const {
    version = 1,
    segmentSize = 16,
    kmsKeyId = "arn:aws:kms:us-east-1:111122223333:key/k-db",
    wrapped = Buffer.from("wrapped-key"),
    messageId = Buffer.alloc(32, 0xa5),
    noncePrefix = Buffer.alloc(19, 0x5a),
  } = opts;
  const seg = Buffer.alloc(4);
  seg.writeUInt32BE(segmentSize);
  const parts = [Buffer.from("DSEL"), Buffer.from([version, 1]), seg, messageId, noncePrefix];
  parts.push(Buffer.from(hkdf(dataKey, messageId, "dualseal/v1 key commitment")));
  parts.push(str16(Buffer.from(kmsKeyId)), str16(wrapped), Buffer.from([0, Object.keys(context).length]));
  for (const k of Object.keys(context).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))) {
    parts.push(str16(Buffer.from(k)), str16(Buffer.from(context[k])));
  }
  return Buffer.concat(parts);
}

export function sealChunks(hdr, dataKey, chunks, flags) {
  const messageId = hdr.subarray(10, 42);
  const noncePrefix = hdr.subarray(42, 61);
  const key = hkdf(dataKey, messageId, "dualseal/v1 content key");
  flags ??= chunks.map((_, i) => i === chunks.length - 1);
  return chunks.map((c, i) => {
    const nonce = Buffer.alloc(24);
    noncePrefix.copy(nonce);
    nonce.writeUInt32BE(i, 19);
    nonce[23] = flags[i] ? 1 : 0;
    return Buffer.from(xchacha20poly1305(key, nonce, hdr).encrypt(c));
  });
}

export function seal(hdr, dataKey, plaintext, segmentSize = 16) {
  const chunks = [];
  for (let i = 0; i < plaintext.length; i += segmentSize) chunks.push(plaintext.subarray(i, i + segmentSize));
  if (chunks.length === 0) chunks.push(Buffer.alloc(0));
  return Buffer.concat([hdr, ...sealChunks(hdr, dataKey, chunks)]);
}

class ServiceError extends Error {
  constructor(code) {
    super(`${code} (fake)`);
    this.name = code;
    this.$metadata = {};
  }
}

/** A body in odd-sized pieces (they never line up with segments); `failAfter` cuts it. */
function body(data, failAfter, state) {
  async function* gen() {
    try {
      for (let pos = 0; pos < data.length; pos += 7) {
        if (failAfter !== undefined && pos >= failAfter) throw Object.assign(new Error("aborted"), { code: "ECONNRESET" });
        yield data.subarray(pos, pos + 7);
      }
    } finally {
      state.closed = true;
    }
  }
  const r = Readable.from(gen(), { objectMode: false });
  r.on("close", () => (state.closed = true));
  return r;
}

export class FakeS3 {
  objects = new Map();
  headCalls = [];
  last = { closed: false };

  put(bucket, key, data, { sse = "aws:kms:dsse", keyId, headKeyId, failAfter } = {}) {
    this.objects.set(`${bucket}/${key}`, { data, sse, keyId, headKeyId, failAfter });
  }

  async send(cmd) {
    const { Bucket, Key } = cmd.input;
    const o = this.objects.get(`${Bucket}/${Key}`);
    if (cmd instanceof GetObjectCommand) {
      if (!o) throw new ServiceError("NoSuchKey");
      this.last = { closed: false };
      return { Body: body(o.data, o.failAfter, this.last), ETag: '"etag"', ServerSideEncryption: o.sse ?? undefined, SSEKMSKeyId: o.keyId };
    }
    if (cmd instanceof HeadObjectCommand) {
      this.headCalls.push(cmd.input);
      return { ServerSideEncryption: o.sse ?? undefined, SSEKMSKeyId: o.headKeyId };
    }
    throw new Error(`unexpected ${cmd.constructor.name}`);
  }
}

/** Unwraps blobs registered with their key and context, as KMS does. */
export class FakeKMS {
  blobs = new Map();
  calls = [];
  answerKeyId;

  register(wrapped, keyArn, context, dataKey) {
    this.blobs.set(Buffer.from(wrapped).toString("hex"), { keyArn, context, dataKey });
  }

  async send(cmd) {
    if (!(cmd instanceof DecryptCommand)) throw new Error(`unexpected ${cmd.constructor.name}`);
    const { CiphertextBlob, EncryptionContext, KeyId } = cmd.input;
    this.calls.push(cmd.input);
    const e = this.blobs.get(Buffer.from(CiphertextBlob).toString("hex"));
    if (!e || JSON.stringify(sorted(e.context)) !== JSON.stringify(sorted(EncryptionContext))) {
      throw new ServiceError("InvalidCiphertextException");
    }
    if (KeyId !== undefined && KeyId !== e.keyArn) throw new ServiceError("IncorrectKeyException");
    const ans = { Plaintext: Uint8Array.from(e.dataKey), KeyId: this.answerKeyId ?? e.keyArn };
    if (this.answerKeyId === "") delete ans.KeyId;
    return ans;
  }
}

const sorted = (o) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)));
