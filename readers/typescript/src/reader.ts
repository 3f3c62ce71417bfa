/**
 * Reading a migrated secret from S3 and KMS, pinned to what the reader expects (FORMAT.md,
 * "Reading an object, step by step"):
 *
 * 1. GetObject; S3 must report `aws:kms:dsse` and, in the GET or else in one HEAD of the same
 *    object, the expected KMS key. No key reported: refused (fail closed).
 * 2. Parse the header; its context must name exactly this bucket and key (and no pair dualseal
 *    never writes), its KMS key id must be the expected key, its category the expected one.
 * 3. KMS `Decrypt` with `KeyId` = the expected key and the encryption context built from the
 *    location (version 2: without `dualseal:key`), never copied from the header; KMS must answer
 *    with the expected key.
 * 4-8. Commitment, then the segments (`envelope.ts`).
 *
 * Needs `s3:GetObject` on the category bucket and `kms:Decrypt` on the category key.
 */

import { open, unlink } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

import { DecryptCommand, type KMSClient } from "@aws-sdk/client-kms";
import { GetObjectCommand, HeadObjectCommand, type GetObjectCommandOutput, type S3Client } from "@aws-sdk/client-s3";

import { CTX_BUCKET, CTX_CATEGORY, CTX_KEY, EnvelopeStream, type Header, VERSION_SHARED_KEY } from "./envelope.js";
import {
  KeyNotReportedError,
  KmsRefusedError,
  MisplacedError,
  NotDsseError,
  ReadError,
  StorageError,
  WrongCategoryError,
  WrongKeyError,
} from "./errors.js";
import { Expectation } from "./expectation.js";

/** What S3 reports for DSSE-KMS. */
export const SSE_DSSE_KMS = "aws:kms:dsse";

/** Options of every read. */
export interface ReadOptions {
  /**
   * What the object must be: its category and that category's KMS key ARN. Required. A plain
   * `{ category, kmsKeyArn }` is validated as `new Expectation(...)` would.
   */
  readonly expect: Expectation | { readonly category: string; readonly kmsKeyArn: string };
  /** Cancels the S3 and KMS requests. */
  readonly abortSignal?: AbortSignal;
}

/**
 * Whether a KMS key id as S3 or an envelope reports it (an ARN or a bare key id) names the key
 * ARN `arn`: the rule of dualseal's own reader.
 */
export function sameKey(reported: string, arn: string): boolean {
  return reported === arn || arn.endsWith(`/${reported}`) || reported.endsWith(`/${arn}`);
}

/**
 * Reads and opens `s3://bucket/key`, pinned to `expect`; resolves to the whole plaintext. For
 * objects too large to hold in memory use {@link openStream} or {@link readToFile}.
 *
 * @throws {ReadError} a subclass saying why; none carries plaintext.
 */
export async function read(s3: S3Client, kms: KMSClient, bucket: string, key: string, opts: ReadOptions): Promise<Buffer> {
  const stream = await openStream(s3, kms, bucket, key, opts);
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

/**
 * Opens `s3://bucket/key`, pinned to `expect`, as a Node `Readable` of plaintext.
 *
 * Every check before the first segment (server-side encryption and key, location, envelope key
 * and category, KMS unwrap, key commitment) is done before the promise resolves, so a refused
 * object rejects here. The stream then emits each segment's plaintext once it is authenticated;
 * truncation is only detectable at the end, so the stream errors there (with a
 * {@link ReadError}) if the object ends badly, and whatever was emitted before must be
 * discarded. `pipeline()` and `for await` both surface that error. Destroying the stream
 * releases the HTTP connection.
 *
 * @throws {ReadError} a subclass saying why.
 */
export async function openStream(
  s3: S3Client,
  kms: KMSClient,
  bucket: string,
  key: string,
  opts: ReadOptions,
): Promise<Readable> {
  const given: unknown = opts?.expect;
  // A plain { category, kmsKeyArn } is taken too (validated): two copies of this package in one
  // bundle would otherwise fail an instanceof.
  const expect =
    given instanceof Expectation
      ? given
      : typeof given === "object" && given !== null && "category" in given && "kmsKeyArn" in given
        ? new Expectation(given as { category: string; kmsKeyArn: string })
        : undefined;
  if (expect === undefined) {
    throw new TypeError(
      "opts.expect = new Expectation({ category, kmsKeyArn }) is required: without it nothing proves the object " +
        "is under its category's key (dualsealctl mapping names both)",
    );
  }
  const signal = opts.abortSignal;
  let obj: GetObjectCommandOutput;
  try {
    obj = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }), signal ? { abortSignal: signal } : {});
  } catch (err) {
    throw storageError(err, "GetObject", bucket, key);
  }
  const body = (obj.Body ?? Readable.from([])) as unknown as AsyncIterable<Uint8Array> & { destroy?: () => void };
  const chunks = bodyChunks(body, bucket, key);
  const env = new EnvelopeStream();
  try {
    await checkServerSide(s3, obj, bucket, key, expect, signal);
    while (env.header === undefined) {
      const next = await chunks.next();
      if (next.done) {
        env.finish(); // throws TruncatedError
        break;
      }
      env.push(next.value);
    }
    const header = env.header as unknown as Header;
    checkEnvelope(header, bucket, key, expect);
    const dataKey = await unwrap(kms, header, bucket, key, expect, signal);
    let first: Uint8Array[];
    try {
      first = env.start(dataKey);
    } finally {
      dataKey.fill(0);
    }
    return Readable.from(rest(first, chunks, env, body), { objectMode: false });
  } catch (err) {
    env.abandon();
    body.destroy?.();
    throw err;
  }
}

async function* rest(
  first: Uint8Array[],
  chunks: AsyncGenerator<Uint8Array>,
  env: EnvelopeStream,
  body: { destroy?: () => void },
): AsyncGenerator<Buffer> {
  let ended = false;
  try {
    for (const p of first) yield asBuffer(p);
    for (;;) {
      const next = await chunks.next();
      if (next.done) {
        ended = true;
        for (const p of env.finish()) yield asBuffer(p);
        return;
      }
      for (const p of env.push(next.value)) yield asBuffer(p);
    }
  } finally {
    if (!ended) {
      env.abandon();
      body.destroy?.();
    }
  }
}

const asBuffer = (p: Uint8Array) => Buffer.from(p.buffer, p.byteOffset, p.byteLength);

/**
 * Reads `s3://bucket/key` into a new file at `path` (mode 0600; an existing file is refused),
 * segment by segment; resolves to the number of plaintext bytes. On any failure the file is
 * removed before the promise rejects, so no partial secret stays under that name.
 *
 * @throws {ReadError} a subclass saying why; a Node error when the file cannot be created.
 */
export async function readToFile(
  s3: S3Client,
  kms: KMSClient,
  bucket: string,
  key: string,
  path: string,
  opts: ReadOptions,
): Promise<number> {
  const file = await open(path, "wx", 0o600);
  let written = 0;
  try {
    const stream = await openStream(s3, kms, bucket, key, opts);
    const out = file.createWriteStream();
    stream.on("data", (p: Buffer) => {
      written += p.length;
    });
    await pipeline(stream, out);
  } catch (err) {
    await file.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw err;
  }
  return written;
}

async function* bodyChunks(body: AsyncIterable<Uint8Array>, bucket: string, key: string): AsyncGenerator<Uint8Array> {
  const it = body[Symbol.asyncIterator]();
  for (;;) {
    let next: IteratorResult<Uint8Array>;
    try {
      next = await it.next();
    } catch (err) {
      throw new StorageError(
        `reading s3://${bucket}/${key} failed before its end (${errorName(err)}): the object is incomplete; ` +
          "discard anything read from it and retry",
        undefined,
        { cause: err },
      );
    }
    if (next.done) return;
    if (next.value.length > 0) yield next.value;
  }
}

async function checkServerSide(
  s3: S3Client,
  obj: GetObjectCommandOutput,
  bucket: string,
  key: string,
  expect: Expectation,
  signal: AbortSignal | undefined,
): Promise<void> {
  const sse = obj.ServerSideEncryption as string | undefined;
  if (sse !== SSE_DSSE_KMS) {
    throw new NotDsseError(
      `s3://${bucket}/${key} is stored with server-side encryption ${JSON.stringify(sse ?? "none")}, not ` +
        `${SSE_DSSE_KMS}; it was not written by dualseal or was replaced`,
      sse ?? "none",
    );
  }
  let reported = obj.SSEKMSKeyId;
  if (!reported) {
    // One HEAD of the very object read (its version, else its ETag).
    const input = obj.VersionId
      ? { Bucket: bucket, Key: key, VersionId: obj.VersionId }
      : obj.ETag
        ? { Bucket: bucket, Key: key, IfMatch: obj.ETag }
        : { Bucket: bucket, Key: key };
    let head;
    try {
      head = await s3.send(new HeadObjectCommand(input), signal ? { abortSignal: signal } : {});
    } catch (err) {
      throw storageError(err, "HeadObject", bucket, key);
    }
    const headSse = head.ServerSideEncryption as string | undefined;
    if (headSse !== SSE_DSSE_KMS) {
      throw new NotDsseError(
        `s3://${bucket}/${key}: a HEAD reports server-side encryption ${JSON.stringify(headSse ?? "none")}, not ${SSE_DSSE_KMS}`,
        headSse ?? "none",
      );
    }
    reported = head.SSEKMSKeyId;
  }
  if (!reported) {
    throw new KeyNotReportedError(
      `s3://${bucket}/${key}: S3 did not report which KMS key encrypts it (neither the read nor a HEAD named one), ` +
        "so the expected key cannot be proved; refusing it",
    );
  }
  if (!sameKey(reported, expect.kmsKeyArn)) {
    throw new WrongKeyError(
      `s3://${bucket}/${key}: its server-side layer (DSSE-KMS) is under KMS key ${reported}, not the expected ` +
        `${expect.kmsKeyArn}; refusing it`,
      "server-side",
      reported,
      expect.kmsKeyArn,
    );
  }
}

function checkEnvelope(header: Header, bucket: string, key: string, expect: Expectation): void {
  const ctx = header.context;
  const get = (name: string) => (Object.hasOwn(ctx, name) ? ctx[name] : undefined);
  if (get(CTX_BUCKET) !== bucket || get(CTX_KEY) !== key) {
    throw new MisplacedError(
      `s3://${bucket}/${key} holds an envelope sealed for s3://${get(CTX_BUCKET) ?? "?"}/${get(CTX_KEY) ?? "?"}; ` +
        "refusing a moved or swapped object",
    );
  }
  const extra = Object.keys(ctx).filter((k) => k !== CTX_BUCKET && k !== CTX_CATEGORY && k !== CTX_KEY);
  if (extra.length > 0) {
    throw new MisplacedError(
      `s3://${bucket}/${key} holds an envelope whose encryption context carries pairs dualseal never writes ` +
        `(${extra.join(", ")}); refusing it`,
    );
  }
  if (!sameKey(header.kmsKeyId, expect.kmsKeyArn)) {
    throw new WrongKeyError(
      `s3://${bucket}/${key}: its envelope is under KMS key ${header.kmsKeyId}, not the expected ${expect.kmsKeyArn}; refusing it`,
      "envelope",
      header.kmsKeyId,
      expect.kmsKeyArn,
    );
  }
  const found = get(CTX_CATEGORY) ?? "";
  if (found !== expect.category) {
    throw new WrongCategoryError(
      `s3://${bucket}/${key} holds an envelope of category ${JSON.stringify(found)}, not the expected ` +
        `${JSON.stringify(expect.category)}; refusing it`,
      found,
      expect.category,
    );
  }
}

async function unwrap(
  kms: KMSClient,
  header: Header,
  bucket: string,
  key: string,
  expect: Expectation,
  signal: AbortSignal | undefined,
): Promise<Uint8Array> {
  // Built from the location and the expectation, never copied from the header: KMS itself then
  // refuses a data key bound anywhere else.
  const context: Record<string, string> = { [CTX_BUCKET]: bucket, [CTX_CATEGORY]: expect.category };
  if (header.version !== VERSION_SHARED_KEY) context[CTX_KEY] = key;
  let answer;
  try {
    answer = await kms.send(
      new DecryptCommand({ CiphertextBlob: header.wrappedKey, KeyId: expect.kmsKeyArn, EncryptionContext: context }),
      signal ? { abortSignal: signal } : {},
    );
  } catch (err) {
    const code = errorCode(err);
    throw new KmsRefusedError(
      `KMS refused to unwrap the data key of s3://${bucket}/${key} (${code ?? errorName(err)}): the caller lacks ` +
        "kms:Decrypt on the category key, the key is disabled, or the envelope is bound to another key or location",
      code,
      { cause: err },
    );
  }
  const dataKey = answer.Plaintext ?? new Uint8Array(0);
  const used = answer.KeyId;
  if (!used) {
    dataKey.fill(0);
    throw new KmsRefusedError(`KMS did not say which key unwrapped the data key of s3://${bucket}/${key}`);
  }
  if (!sameKey(used, expect.kmsKeyArn)) {
    dataKey.fill(0);
    throw new WrongKeyError(
      `s3://${bucket}/${key}: KMS unwrapped its data key under ${used}, not the expected ${expect.kmsKeyArn}; refusing it`,
      "KMS",
      used,
      expect.kmsKeyArn,
    );
  }
  return dataKey;
}

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : typeof err;
}

function errorCode(err: unknown): string | undefined {
  // SDK service errors carry the service's error code as their name, and $metadata.
  if (err instanceof Error && "$metadata" in err) return err.name;
  return undefined;
}

function storageError(err: unknown, op: string, bucket: string, key: string): ReadError {
  if (err instanceof ReadError) return err;
  const code = errorCode(err);
  return new StorageError(
    `S3 ${op} of s3://${bucket}/${key} failed (${code ?? errorName(err)}): check that the object exists and that ` +
      "the caller may s3:GetObject it",
    code,
    { cause: err },
  );
}
