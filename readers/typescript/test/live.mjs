#!/usr/bin/env node
// Reads live objects (migrated by the real daemon, or forged beside them) through the package,
// as an application would, and checks each against what the case file says: the exact source
// bytes, or the typed refusal. Driven by tests/readers.rs; usage: node live.mjs CASES.json
// (format: readers/python/tests/live.py). Every case is read with read() and with openStream().
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

import { KMSClient } from "@aws-sdk/client-kms";
import { S3Client } from "@aws-sdk/client-s3";

import { Expectation, ReadError, openStream, read } from "../dist/index.js";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const common = {
  region: spec.region,
  endpoint: spec.endpoint,
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
};
const s3 = new S3Client({ ...common, forcePathStyle: true });
const kms = new KMSClient(common);
let failures = 0;
for (const c of spec.cases) {
  const expect =
    c.expect === "mapping"
      ? Expectation.fromMapping(spec.mapping, c.bucket, c.key)
      : new Expectation({ category: c.expect.category, kmsKeyArn: c.expect.kms_key_arn });
  const want = c.plaintext ? readFileSync(c.plaintext) : undefined;
  for (const how of ["read", "openStream"]) {
    let outcome;
    try {
      const h = createHash("sha256");
      let n = 0;
      if (how === "read") {
        const got = await read(s3, kms, c.bucket, c.key, { expect });
        h.update(got);
        n = got.length;
      } else {
        for await (const part of await openStream(s3, kms, c.bucket, c.key, { expect })) {
          h.update(part);
          n += part.length;
        }
      }
      outcome = { bytes: h.digest("hex"), n };
    } catch (err) {
      if (!(err instanceof ReadError)) throw err;
      outcome = { error: err.kind, message: err.message };
    }
    const tag = `node   ${how.padEnd(11)} ${c.name}`;
    if (want && outcome.bytes === createHash("sha256").update(want).digest("hex") && outcome.n === want.length) {
      console.log(`ok    ${tag}: ${outcome.n} bytes, as in the source`);
    } else if (!want && outcome.error === c.error) {
      console.log(`ok    ${tag}: refused as ${outcome.error}: ${outcome.message}`);
    } else {
      failures++;
      const exp = want ? `${want.length} source bytes` : `refusal ${c.error}`;
      console.log(`FAIL  ${tag}: expected ${exp}, got ${JSON.stringify(outcome)}`);
    }
  }
}
process.exit(failures ? 1 : 0);
