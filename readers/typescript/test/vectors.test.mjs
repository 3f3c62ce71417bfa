// Every positive and negative vector of FORMAT.md and tests/fixtures/: the positive ones open to
// their plaintext (whole and in pieces of every awkward size), the negative ones are refused with
// the typed error their "refused_as" names.
import assert from "node:assert/strict";
import { test } from "node:test";

import { EnvelopeError, EnvelopeStream, kmsContext, openEnvelope } from "../dist/index.js";
import { REFUSED_AS, hex, negativeVectors, positiveVectors } from "./support.mjs";

function openInPieces(dataKey, env, size) {
  const s = new EnvelopeStream();
  const out = [];
  let started = false;
  for (let i = 0; i < env.length; i += size) {
    out.push(...s.push(env.subarray(i, i + size)));
    if (s.header !== undefined && !started) {
      out.push(...s.start(dataKey));
      started = true;
    }
  }
  out.push(...s.finish());
  return Buffer.concat(out);
}

test("every positive vector opens", () => {
  const vectors = positiveVectors();
  assert.ok(vectors.length >= 9, "6 fixture files and FORMAT.md's 3 vectors");
  for (const v of vectors) {
    const key = hex(v.data_key_hex);
    const env = hex(v.envelope_hex);
    const { header, plaintext } = openEnvelope(key, env);
    assert.equal(Buffer.from(plaintext).toString("hex"), v.plaintext_hex, v.source);
    if (v.context) {
      assert.deepEqual({ ...header.context }, v.context, v.source);
      assert.equal(header.kmsKeyId, v.kms_key_id);
      assert.equal(header.version, v.shared_data_key ? 2 : 1);
    }
    for (const size of [1, 7, 16, 65, 4096]) {
      assert.equal(openInPieces(key, env, size).toString("hex"), v.plaintext_hex, `${v.source} in pieces of ${size}`);
    }
  }
});

test("version 2 unwraps without the object key", () => {
  const v = positiveVectors().find((v) => v.source === "envelope-v2-shared-key.json");
  const { header } = openEnvelope(hex(v.data_key_hex), hex(v.envelope_hex));
  assert.deepEqual(kmsContext(header), { "dualseal:bucket": "secrets-db", "dualseal:category": "db" });
});

test("every negative vector is refused with its error", () => {
  const vectors = negativeVectors();
  assert.equal(vectors.length, 12);
  for (const v of vectors) {
    assert.throws(
      () => openEnvelope(hex(v.data_key_hex), hex(v.envelope_hex)),
      (e) => {
        assert.ok(e instanceof EnvelopeError, `${v.description}: ${e}`);
        assert.equal(e.kind, REFUSED_AS[v.refused_as], `${v.description}: ${e.message}`);
        return true;
      },
      v.description,
    );
  }
});
