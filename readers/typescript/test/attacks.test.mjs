// An outsider's attacks on the reader, against fake S3 and KMS clients that answer as AWS does:
// each must be refused with its typed error, before any plaintext is handed out when the check
// allows it, and at the end of the stream (after an authenticated prefix) when only the end can
// tell.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import {
  AuthenticationError,
  EnvelopeStream,
  Expectation,
  ExpectationError,
  KeyNotReportedError,
  KmsRefusedError,
  LocationMap,
  MAX_HEADER_LEN,
  MalformedHeaderError,
  MisplacedError,
  NonCanonicalError,
  NotDsseError,
  ReadError,
  StorageError,
  TruncatedError,
  WrongCategoryError,
  WrongKeyError,
  openStream,
  read,
  readToFile,
} from "../dist/index.js";
import { FakeKMS, FakeS3, header, seal, sealChunks, str16 } from "./support.mjs";

const DB_KEY = "arn:aws:kms:us-east-1:111122223333:key/k-db";
const API_KEY = "arn:aws:kms:us-east-1:111122223333:key/k-api";
const BUCKET = "secrets-db";
const KEY = "payments/credentials.json";
const DATA_KEY = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const SECRET = Buffer.from("correct horse battery staple, and then some more bytes"); // 4 segments of 16
const EXPECT = new Expectation({ category: "db", kmsKeyArn: DB_KEY });
const ctx = ({ bucket = BUCKET, key = KEY, category = "db" } = {}) => ({
  "dualseal:bucket": bucket,
  "dualseal:category": category,
  "dualseal:key": key,
});

function setup() {
  const s3 = new FakeS3();
  const kms = new FakeKMS();
  kms.register(Buffer.from("wrapped-key"), DB_KEY, ctx(), DATA_KEY);
  const hdr = header(ctx(), DATA_KEY);
  const env = seal(hdr, DATA_KEY, SECRET);
  const put = (data, o = {}) => s3.put(BUCKET, KEY, data, { keyId: DB_KEY, ...o });
  const refused = async (type, kind) => {
    let err;
    await assert.rejects(read(s3, kms, BUCKET, KEY, { expect: EXPECT }), (e) => {
      err = e;
      return true;
    });
    assert.ok(err instanceof type, `${err}`);
    assert.ok(err instanceof ReadError);
    assert.ok(!`${err.message}${err.stack}`.includes("correct horse"));
    if (kind) assert.equal(err.kind, kind);
    return err;
  };
  const streamThenFail = async (data, type) => {
    put(data);
    const got = [];
    let err;
    try {
      for await (const p of await openStream(s3, kms, BUCKET, KEY, { expect: EXPECT })) got.push(p);
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof type, `${err}`);
    assert.ok(SECRET.subarray(0, Buffer.concat(got).length).equals(Buffer.concat(got)), "only an authenticated prefix");
    await new Promise((r) => setImmediate(r));
    assert.ok(s3.last.closed, "the body is released");
    return { err, got };
  };
  return { s3, kms, hdr, env, put, refused, streamThenFail };
}

test("a genuine object reads, with the location's context and the expected key", async () => {
  const t = setup();
  t.put(t.env);
  assert.ok((await read(t.s3, t.kms, BUCKET, KEY, { expect: EXPECT })).equals(SECRET));
  assert.equal(t.kms.calls[0].KeyId, DB_KEY);
  assert.deepEqual(t.kms.calls[0].EncryptionContext, ctx());
});

test("the expectation is required", async () => {
  const t = setup();
  t.put(t.env);
  await assert.rejects(read(t.s3, t.kms, BUCKET, KEY, {}), TypeError);
  await assert.rejects(read(t.s3, t.kms, BUCKET, KEY, { expect: { category: "db" } }), TypeError);
  await assert.rejects(read(t.s3, t.kms, BUCKET, KEY, { expect: { category: "", kmsKeyArn: DB_KEY } }), ExpectationError);
  assert.ok((await read(t.s3, t.kms, BUCKET, KEY, { expect: { category: "db", kmsKeyArn: DB_KEY } })).equals(SECRET));
  assert.throws(() => new Expectation({ category: "", kmsKeyArn: DB_KEY }), ExpectationError);
});

test("not DSSE", async () => {
  const t = setup();
  for (const sse of ["aws:kms", "AES256", null]) {
    t.put(t.env, { sse });
    assert.equal((await t.refused(NotDsseError, "NotDsse")).found, sse ?? "none");
  }
  assert.equal(t.kms.calls.length, 0, "KMS is not asked for a refused object");
});

test("no key reported fails closed after one HEAD of the object read", async () => {
  const t = setup();
  t.put(t.env, { keyId: undefined });
  await t.refused(KeyNotReportedError, "KeyNotReported");
  assert.equal(t.s3.headCalls.length, 1);
  assert.equal(t.s3.headCalls[0].IfMatch, '"etag"');
  t.put(t.env, { keyId: undefined, headKeyId: "k-db" });
  assert.ok((await read(t.s3, t.kms, BUCKET, KEY, { expect: EXPECT })).equals(SECRET));
});

test("server-side layer under another key", async () => {
  const t = setup();
  t.put(t.env, { keyId: API_KEY });
  assert.equal((await t.refused(WrongKeyError)).layer, "server-side");
  t.put(t.env, { keyId: "k-db-other" });
  await t.refused(WrongKeyError);
});

test("an envelope of another location, or with pairs dualseal never writes", async () => {
  const t = setup();
  for (const c of [ctx({ key: "other.json" }), ctx({ bucket: "secrets-api" }), { "dualseal:category": "db" }]) {
    t.put(seal(header(c, DATA_KEY), DATA_KEY, SECRET));
    await t.refused(MisplacedError, "Misplaced");
  }
  t.put(seal(header({ ...ctx(), "dualseal:zz": "x" }, DATA_KEY), DATA_KEY, SECRET));
  await t.refused(MisplacedError);
  // A name that a plain JavaScript object would swallow as its prototype setter.
  const proto = JSON.parse(`{"__proto__": "x", ${JSON.stringify(ctx()).slice(1)}`);
  assert.ok(Object.hasOwn(proto, "__proto__"));
  t.put(seal(header(proto, DATA_KEY), DATA_KEY, SECRET));
  await t.refused(MisplacedError);
});

test("forged under another category's key at this location", async () => {
  const t = setup();
  const forged = Buffer.alloc(32, 0x42);
  t.kms.register(Buffer.from("forged"), API_KEY, ctx(), forged);
  t.put(seal(header(ctx(), forged, { kmsKeyId: API_KEY, wrapped: Buffer.from("forged") }), forged, Buffer.from("evil")));
  assert.equal((await t.refused(WrongKeyError)).layer, "envelope");
  // Claims the db key, but the data key is wrapped under the api key: KMS refuses the KeyId.
  t.put(seal(header(ctx(), forged, { kmsKeyId: DB_KEY, wrapped: Buffer.from("forged") }), forged, Buffer.from("evil")));
  await t.refused(KmsRefusedError, "KmsRefused");
  t.kms.register(Buffer.from("cat"), DB_KEY, ctx({ category: "api" }), forged);
  t.put(seal(header(ctx({ category: "api" }), forged, { wrapped: Buffer.from("cat") }), forged, Buffer.from("evil")));
  await t.refused(WrongCategoryError, "WrongCategory");
});

test("KMS must name the expected key", async () => {
  const t = setup();
  t.put(t.env);
  t.kms.answerKeyId = API_KEY;
  assert.equal((await t.refused(WrongKeyError)).layer, "KMS");
  t.kms.answerKeyId = "";
  await t.refused(KmsRefusedError);
});

test("version 2 is unwrapped without the object key; a relabelled version 1 is not", async () => {
  const t = setup();
  const { "dualseal:key": _, ...kmsCtx } = ctx();
  t.kms.register(Buffer.from("shared"), DB_KEY, kmsCtx, DATA_KEY);
  t.put(seal(header(ctx(), DATA_KEY, { version: 2, wrapped: Buffer.from("shared") }), DATA_KEY, SECRET));
  assert.ok((await read(t.s3, t.kms, BUCKET, KEY, { expect: EXPECT })).equals(SECRET));
  const relabelled = Buffer.from(t.env);
  relabelled[4] = 2;
  t.put(relabelled);
  await t.refused(KmsRefusedError);
});

test("truncated at a segment boundary: two segments out, then the error", async () => {
  const t = setup();
  const { got } = await t.streamThenFail(t.env.subarray(0, t.hdr.length + 3 * 32), AuthenticationError);
  assert.equal(got.length, 2);
});

test("truncated inside a segment, inside the header, or empty", async () => {
  const t = setup();
  await t.streamThenFail(t.env.subarray(0, t.env.length - 5), AuthenticationError);
  for (const data of [t.env.subarray(0, t.hdr.length), t.hdr.subarray(0, 50), Buffer.alloc(0)]) {
    t.put(data);
    await t.refused(TruncatedError, "Truncated");
  }
});

test("segments swapped, reordered or duplicated", async () => {
  const t = setup();
  const body = t.env.subarray(t.hdr.length);
  const segs = [0, 1, 2, 3].map((i) => body.subarray(i * 32, i * 32 + 32));
  for (const order of [[1, 0, 2, 3], [0, 2, 1, 3], [0, 1, 3, 2], [0, 1, 2, 2, 3], [0, 1, 2, 3, 3]]) {
    await t.streamThenFail(Buffer.concat([t.hdr, ...order.map((i) => segs[i])]), AuthenticationError);
  }
});

test("final flag removed, set early, or an empty last segment after a full one", async () => {
  const t = setup();
  const chunks = [0, 16, 32, 48].map((i) => SECRET.subarray(i, i + 16));
  await t.streamThenFail(Buffer.concat([t.hdr, ...sealChunks(t.hdr, DATA_KEY, chunks, [false, false, false, false])]), AuthenticationError);
  await t.streamThenFail(Buffer.concat([t.hdr, ...sealChunks(t.hdr, DATA_KEY, chunks, [false, true, false, true])]), AuthenticationError);
  const extra = sealChunks(t.hdr, DATA_KEY, [SECRET.subarray(0, 16), SECRET.subarray(16, 32), Buffer.alloc(0)]);
  await t.streamThenFail(Buffer.concat([t.hdr, ...extra]), NonCanonicalError);
});

test("a flipped bit anywhere", async () => {
  const t = setup();
  for (let pos = 0; pos < t.env.length; pos += 11) {
    const bad = Buffer.from(t.env);
    bad[pos] ^= 1;
    t.put(bad);
    await t.refused(ReadError);
  }
});

test("the connection cut mid-body", async () => {
  const t = setup();
  t.put(t.env, { failAfter: t.hdr.length + 40 });
  await assert.rejects(async () => {
    for await (const _ of await openStream(t.s3, t.kms, BUCKET, KEY, { expect: EXPECT }));
  }, StorageError);
});

test("huge header lengths are refused without buffering", async () => {
  const t = setup();
  const base = t.hdr.subarray(0, 93);
  const keyId = str16(Buffer.from(DB_KEY));
  const seg = (v) => Buffer.concat([t.hdr.subarray(0, 6), Buffer.from(v, "hex"), t.hdr.subarray(10)]);
  for (const bad of [
    Buffer.concat([base, Buffer.from("ffff", "hex")]),
    Buffer.concat([base, keyId, Buffer.from("ffff", "hex")]),
    Buffer.concat([base, keyId, str16(Buffer.from("w")), Buffer.from("ffff", "hex")]),
    Buffer.concat([base, keyId, str16(Buffer.from("w")), Buffer.from("0000", "hex")]),
    seg("ffffffff"),
    seg("0000000f"),
  ]) {
    assert.throws(() => new EnvelopeStream().push(bad), MalformedHeaderError);
  }
  const big = Buffer.concat([base, keyId, str16(Buffer.from("w")), Buffer.from("0040ffff", "hex"), Buffer.alloc(65535, 0x61)]);
  assert.throws(() => new EnvelopeStream().push(big.subarray(0, MAX_HEADER_LEN + 10)), MalformedHeaderError);
  t.put(big);
  await t.refused(MalformedHeaderError, "MalformedHeader");
});

test("a missing object", async () => {
  const t = setup();
  const err = await read(t.s3, t.kms, BUCKET, "nope", { expect: EXPECT }).catch((e) => e);
  assert.ok(err instanceof StorageError);
  assert.equal(err.code, "NoSuchKey");
});

test("readToFile writes 0600 and leaves nothing behind on failure", async () => {
  const t = setup();
  const dir = mkdtempSync(join(tmpdir(), "dualseal-reader-"));
  try {
    const path = join(dir, "secret");
    t.put(t.env);
    assert.equal(await readToFile(t.s3, t.kms, BUCKET, KEY, path, { expect: EXPECT }), SECRET.length);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    await assert.rejects(readToFile(t.s3, t.kms, BUCKET, KEY, path, { expect: EXPECT }), { code: "EEXIST" });
    rmSync(path);
    t.put(t.env.subarray(0, t.env.length - 16));
    await assert.rejects(readToFile(t.s3, t.kms, BUCKET, KEY, path, { expect: EXPECT }), AuthenticationError);
    assert.ok(!existsSync(path));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the location map", () => {
  const line = JSON.stringify({
    source_bucket: "master",
    source_key: "db/a.json",
    source_version: "",
    destination_bucket: "secrets-db",
    destination_key: "a.json",
    category: "db",
    kms_key_arn: DB_KEY,
    envelope_version: 1,
  });
  const m = LocationMap.parse(`${line}\n`);
  assert.deepEqual(Expectation.fromMapping(m, "secrets-db", "a.json"), EXPECT);
  assert.equal(m.forSource("master", "db/a.json").key, "a.json");
  assert.throws(() => m.expectation("secrets-db", "b.json"), ExpectationError);
  assert.throws(() => LocationMap.parse(`${line}\n${line.replace('"db"', '"api"')}\n`), ExpectationError);
});
