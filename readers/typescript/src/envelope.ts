/**
 * The dualseal envelope, versions 1 and 2, as FORMAT.md specifies it: header parsing within the
 * bounds of "Reader duties", key derivation and commitment (steps 4-5) and the STREAM of
 * XChaCha20-Poly1305 segments (steps 6-8). Pure: no S3, no KMS.
 */

import { hkdfSync, timingSafeEqual } from "node:crypto";

import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";

import {
  AuthenticationError,
  BadMagicError,
  CommitmentMismatchError,
  MalformedHeaderError,
  NonCanonicalError,
  TruncatedError,
  UnsupportedAlgorithmError,
  UnsupportedVersionError,
} from "./errors.js";

export const MAGIC = Buffer.from("DSEL", "ascii");
/** An envelope under its own data key. */
export const VERSION_OWN_KEY = 1;
/** An envelope under a shared data key: KMS binds it without `dualseal:key` (FORMAT.md step 3). */
export const VERSION_SHARED_KEY = 2;
/** XChaCha20-Poly1305 STREAM-BE32, HKDF-SHA256 content key and commitment. */
export const ALGORITHM = 1;
export const MIN_SEGMENT_SIZE = 16;
/** Bounds what a hostile header can make a reader hold per segment. */
export const MAX_SEGMENT_SIZE = 16 * 1024 * 1024;
export const MAX_KEY_ID_LEN = 2048;
export const MAX_WRAPPED_KEY_LEN = 1024;
export const MAX_CONTEXT_PAIRS = 64;
/** Bounds what a reader buffers looking for the end of a header. */
export const MAX_HEADER_LEN = 64 * 1024;
export const TAG_LEN = 16;
export const KEY_LEN = 32;
/** STREAM-BE32's counter is 4 bytes. */
export const MAX_SEGMENTS = 2 ** 32;

export const CTX_BUCKET = "dualseal:bucket";
export const CTX_CATEGORY = "dualseal:category";
export const CTX_KEY = "dualseal:key";

const INFO_CONTENT_KEY = Buffer.from("dualseal/v1 content key", "ascii");
const INFO_COMMITMENT = Buffer.from("dualseal/v1 key commitment", "ascii");

/** A parsed header. `raw` is the header exactly as stored: every segment's associated data. */
export interface Header {
  readonly version: number;
  readonly segmentSize: number;
  readonly messageId: Uint8Array;
  readonly noncePrefix: Uint8Array;
  readonly commitment: Uint8Array;
  readonly kmsKeyId: string;
  readonly wrappedKey: Uint8Array;
  /** The encryption context, names in their (strictly ascending) stored order. */
  readonly context: Readonly<Record<string, string>>;
  readonly raw: Uint8Array;
}

/** What KMS bound the data key to, as the header states it (version 2 leaves out `dualseal:key`). */
export function kmsContext(h: Header): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h.context)) {
    if (!(h.version === VERSION_SHARED_KEY && k === CTX_KEY)) out[k] = v;
  }
  return out;
}

const NEED_MORE = Symbol("need more");
const utf8 = new TextDecoder("utf-8", { fatal: true });

class Cursor {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}

  take(n: number): Uint8Array {
    if (this.pos + n > MAX_HEADER_LEN) {
      // Checked before waiting for the bytes: a hostile length cannot make a streaming reader
      // buffer more than a header may be.
      throw new MalformedHeaderError("envelope header is malformed: header longer than 64 KiB");
    }
    if (this.pos + n > this.buf.length) throw NEED_MORE;
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  u16(): number {
    const b = this.take(2);
    return (b[0]! << 8) | b[1]!;
  }

  text(n: number, what: string): string {
    const b = this.take(n);
    try {
      return utf8.decode(b);
    } catch {
      throw new MalformedHeaderError(`envelope header is malformed: ${what} is not UTF-8`);
    }
  }
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

/**
 * Parses the header at the start of `buf`: `[header, length]`, or `undefined` when `buf` ends
 * before the header does (and nothing seen so far is wrong).
 *
 * @throws {EnvelopeError} as soon as the bytes seen break a rule of "Reader duties".
 */
export function tryParseHeader(buf: Uint8Array): [Header, number] | undefined {
  const c = new Cursor(buf);
  let version: number, segmentSize: number, messageId: Uint8Array, noncePrefix: Uint8Array;
  let commitment: Uint8Array, kmsKeyId: string, wrappedKey: Uint8Array;
  // No prototype: a context name such as `__proto__` is a pair like any other, not a setter.
  const context: Record<string, string> = Object.create(null) as Record<string, string>;
  try {
    if (compareBytes(c.take(4), MAGIC) !== 0) {
      throw new BadMagicError("not a dualseal envelope (bad magic bytes)");
    }
    version = c.take(1)[0]!;
    if (version !== VERSION_OWN_KEY && version !== VERSION_SHARED_KEY) {
      throw new UnsupportedVersionError(
        `envelope format version ${version} is not supported by this reader (it reads 1 and 2)`,
      );
    }
    const algorithm = c.take(1)[0]!;
    if (algorithm !== ALGORITHM) {
      throw new UnsupportedAlgorithmError(`envelope algorithm ${algorithm} is not supported`);
    }
    const s = c.take(4);
    segmentSize = ((s[0]! << 24) >>> 0) + (s[1]! << 16) + (s[2]! << 8) + s[3]!;
    if (segmentSize < MIN_SEGMENT_SIZE || segmentSize > MAX_SEGMENT_SIZE) {
      throw new MalformedHeaderError("envelope header is malformed: segment size out of range");
    }
    messageId = c.take(32);
    noncePrefix = c.take(19);
    commitment = c.take(32);
    let n = c.u16();
    if (n < 1 || n > MAX_KEY_ID_LEN) {
      throw new MalformedHeaderError("envelope header is malformed: KMS key id length out of range");
    }
    kmsKeyId = c.text(n, "the KMS key id");
    n = c.u16();
    if (n < 1 || n > MAX_WRAPPED_KEY_LEN) {
      throw new MalformedHeaderError("envelope header is malformed: wrapped key length out of range");
    }
    wrappedKey = c.take(n);
    const count = c.u16();
    if (count < 1 || count > MAX_CONTEXT_PAIRS) {
      throw new MalformedHeaderError("envelope header is malformed: context pair count out of range");
    }
    let last: Uint8Array | undefined;
    for (let i = 0; i < count; i++) {
      const nameRaw = c.take(c.u16());
      // Canonical: names strictly ascending by bytes, so one context has one encoding.
      if (last !== undefined && compareBytes(nameRaw, last) <= 0) {
        throw new MalformedHeaderError("envelope header is malformed: context names not strictly ascending");
      }
      last = nameRaw;
      let name: string;
      try {
        name = utf8.decode(nameRaw);
      } catch {
        throw new MalformedHeaderError("envelope header is malformed: a context name is not UTF-8");
      }
      context[name] = c.text(c.u16(), "a context value");
    }
  } catch (e) {
    if (e === NEED_MORE) return undefined;
    throw e;
  }
  if (version === VERSION_SHARED_KEY && !Object.hasOwn(context, CTX_KEY)) {
    throw new MalformedHeaderError(
      "envelope header is malformed: a version-2 envelope must name its object (dualseal:key)",
    );
  }
  const copy = (b: Uint8Array) => Uint8Array.from(b);
  const header: Header = {
    version,
    segmentSize,
    messageId: copy(messageId),
    noncePrefix: copy(noncePrefix),
    commitment: copy(commitment),
    kmsKeyId,
    wrappedKey: copy(wrappedKey),
    context,
    raw: copy(buf.subarray(0, c.pos)),
  };
  return [header, c.pos];
}

function hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", ikm, salt, info, 32));
}

/**
 * Opens the segments of one envelope in order, under the content key derived from `dataKey`
 * after its commitment is checked (FORMAT.md steps 4-7).
 */
export class SegmentOpener {
  private key: Uint8Array;
  private next = 0;
  private finished = false;

  /** @throws {CommitmentMismatchError} `dataKey` is not the key the envelope was sealed under. */
  constructor(private readonly header: Header, dataKey: Uint8Array) {
    if (dataKey.length !== KEY_LEN) throw new CommitmentMismatchError("the data key is not 32 bytes");
    const commitment = hkdf(dataKey, header.messageId, INFO_COMMITMENT);
    // Constant time: the commitment is a MAC of the data key.
    if (!timingSafeEqual(commitment, header.commitment)) {
      throw new CommitmentMismatchError("key commitment mismatch: the data key does not belong to this envelope");
    }
    this.key = hkdf(dataKey, header.messageId, INFO_CONTENT_KEY);
  }

  /** How many segments have been opened. */
  get segmentsOpened(): number {
    return this.next;
  }

  /**
   * Opens the next chunk (ciphertext and its 16-byte tag); `last` when it ends the envelope.
   *
   * @throws {AuthenticationError} it does not authenticate in this position with this flag.
   * @throws {NonCanonicalError} an empty last segment after a full one.
   */
  open(chunk: Uint8Array, last: boolean): Uint8Array {
    const i = this.next;
    const full = this.header.segmentSize + TAG_LEN;
    if (this.finished || i >= MAX_SEGMENTS) {
      throw new AuthenticationError(`segment ${i} failed authentication: bytes after the last segment`, i);
    }
    if (chunk.length < TAG_LEN || chunk.length > full || (!last && chunk.length !== full)) {
      throw new AuthenticationError(`segment ${i} failed authentication: the envelope was altered or truncated`, i);
    }
    if (last && i > 0 && chunk.length === TAG_LEN) {
      throw new NonCanonicalError("envelope is not canonical: an empty last segment after a full one");
    }
    const nonce = new Uint8Array(24);
    nonce.set(this.header.noncePrefix, 0);
    new DataView(nonce.buffer).setUint32(19, i, false);
    nonce[23] = last ? 1 : 0;
    let plain: Uint8Array;
    try {
      plain = xchacha20poly1305(this.key, nonce, this.header.raw).decrypt(chunk);
    } catch {
      throw new AuthenticationError(
        `segment ${i} failed authentication: the envelope was altered, truncated, extended or reordered`,
        i,
      );
    }
    this.next = i + 1;
    this.finished = last;
    return plain;
  }

  /** Overwrites the content key. */
  close(): void {
    this.key.fill(0);
  }
}

/**
 * Opens an envelope pushed in pieces of any size; memory holds about one segment. Push until
 * `header` is set, check it, `start` with the data key, keep pushing, then `finish`. A segment is
 * opened once at least one byte follows it (so it is certainly not the last); the rest is opened
 * as the last segment at the end, which is where truncation at a segment boundary shows.
 */
export class EnvelopeStream {
  header: Header | undefined;
  private buf: Uint8Array = new Uint8Array(0);
  private opener: SegmentOpener | undefined;
  private done = false;

  /** Takes more envelope bytes; returns the plaintext segments they complete (none before `start`). */
  push(data: Uint8Array): Uint8Array[] {
    if (this.done) throw new AuthenticationError("bytes after the end of the envelope", -1);
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data]);
    if (this.header === undefined) {
      const parsed = tryParseHeader(this.buf);
      if (parsed === undefined) return [];
      this.header = parsed[0];
      this.buf = this.buf.subarray(parsed[1]);
    }
    return this.drain(false);
  }

  /** Checks the commitment of `dataKey` and opens what is buffered. */
  start(dataKey: Uint8Array): Uint8Array[] {
    if (this.header === undefined || this.opener !== undefined) throw new Error("start before the header, or twice");
    this.opener = new SegmentOpener(this.header, dataKey);
    return this.drain(false);
  }

  /** The input has ended: opens the last segment. */
  finish(): Uint8Array[] {
    if (this.header === undefined) {
      throw new TruncatedError("envelope is truncated (header); the object is incomplete or not a dualseal envelope");
    }
    if (this.opener === undefined) throw new Error("finish before start");
    try {
      if (this.buf.length === 0 && this.opener.segmentsOpened === 0) {
        throw new TruncatedError("envelope is truncated (no segments)");
      }
      const out = this.drain(true);
      this.done = true;
      return out;
    } finally {
      this.opener.close();
    }
  }

  /** Drops the content key without finishing (an abandoned read). */
  abandon(): void {
    this.opener?.close();
    this.done = true;
  }

  private drain(atEnd: boolean): Uint8Array[] {
    const opener = this.opener;
    if (opener === undefined || this.header === undefined) return [];
    const step = this.header.segmentSize + TAG_LEN;
    const out: Uint8Array[] = [];
    let used = 0;
    try {
      while (this.buf.length - used > step) {
        out.push(opener.open(this.buf.subarray(used, used + step), false));
        used += step;
      }
      if (atEnd) {
        out.push(opener.open(this.buf.subarray(used), true));
        used = this.buf.length;
      }
    } catch (e) {
      opener.close();
      throw e;
    }
    this.buf = this.buf.subarray(used);
    return out;
  }
}

/**
 * Opens a whole envelope with a known data key (no S3, no KMS, no location check): what the test
 * vectors exercise. Applications use `read`.
 */
export function openEnvelope(dataKey: Uint8Array, envelope: Uint8Array): { header: Header; plaintext: Uint8Array } {
  const s = new EnvelopeStream();
  const parts = s.push(envelope);
  if (s.header === undefined) {
    throw new TruncatedError("envelope is truncated (header); the object is incomplete or not a dualseal envelope");
  }
  parts.push(...s.start(dataKey), ...s.finish());
  return { header: s.header, plaintext: Buffer.concat(parts) };
}
