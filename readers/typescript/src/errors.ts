/**
 * Why an object could not be read.
 *
 * Every refusal is a {@link ReadError}; `instanceof` a subclass tells them apart, and each has a
 * stable `kind`, the same as in the Python reader. No error carries plaintext, key bytes or
 * ciphertext: messages name the bucket, the key, KMS key ids and what was wrong.
 */

/** Base of every refusal. `message` says what is wrong and what to do. */
export class ReadError extends Error {
  /** Stable name of the refusal, shared with the Python reader. */
  readonly kind: string = "ReadError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** S3 failed: a missing object, access denied, a body cut off in transit. */
export class StorageError extends ReadError {
  override readonly kind: string = "Storage";
  constructor(
    message: string,
    /** S3's error code when it gave one (`NoSuchKey`, `AccessDenied`, ...). */
    readonly code?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** S3 stores the object without DSSE-KMS (`aws:kms:dsse`): not written by dualseal, or replaced. */
export class NotDsseError extends ReadError {
  override readonly kind: string = "NotDsse";
  constructor(message: string, readonly found: string) {
    super(message);
  }
}

/**
 * S3 did not say which KMS key encrypts the object (neither the GET nor a HEAD named one), so the
 * expected key cannot be proved. AWS S3 always names it.
 */
export class KeyNotReportedError extends ReadError {
  override readonly kind: string = "KeyNotReported";
}

/** A layer is under another KMS key than expected: `server-side` (DSSE-KMS), `envelope`, or `KMS`. */
export class WrongKeyError extends ReadError {
  override readonly kind: string = "WrongKey";
  constructor(
    message: string,
    readonly layer: "server-side" | "envelope" | "KMS",
    readonly found: string,
    readonly expected: string,
  ) {
    super(message);
  }
}

/** The envelope was sealed for another category than expected. */
export class WrongCategoryError extends ReadError {
  override readonly kind: string = "WrongCategory";
  constructor(message: string, readonly found: string, readonly expected: string) {
    super(message);
  }
}

/**
 * The envelope was sealed for another location (moved, copied, swapped), or its context is not
 * the one dualseal writes for a location.
 */
export class MisplacedError extends ReadError {
  override readonly kind: string = "Misplaced";
}

/** KMS refused to unwrap the data key (no `kms:Decrypt`, disabled key, bound elsewhere). */
export class KmsRefusedError extends ReadError {
  override readonly kind: string = "KmsRefused";
  constructor(message: string, readonly code?: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Not a valid dualseal envelope: altered, truncated, extended, reordered, or never one. */
export class EnvelopeError extends ReadError {
  override readonly kind: string = "Envelope";
}

/** The object ends before its header, or before its first segment. */
export class TruncatedError extends EnvelopeError {
  override readonly kind: string = "Truncated";
}

/** The first bytes are not `DSEL`. */
export class BadMagicError extends EnvelopeError {
  override readonly kind: string = "BadMagic";
}

/** A format version this reader does not know (it reads 1 and 2). */
export class UnsupportedVersionError extends EnvelopeError {
  override readonly kind: string = "UnsupportedVersion";
}

/** An algorithm id this reader does not know (it reads 1). */
export class UnsupportedAlgorithmError extends EnvelopeError {
  override readonly kind: string = "UnsupportedAlgorithm";
}

/** A header field is out of FORMAT.md's bounds, or not canonical. */
export class MalformedHeaderError extends EnvelopeError {
  override readonly kind: string = "MalformedHeader";
}

/**
 * The data key is not the one the envelope was sealed under (key commitment mismatch). The test
 * vectors call this refusal `WrongKey`.
 */
export class CommitmentMismatchError extends EnvelopeError {
  override readonly kind: string = "CommitmentMismatch";
}

/**
 * A segment failed authentication: tampered, truncated at a segment boundary, extended or
 * reordered. Plaintext already handed out must be discarded.
 */
export class AuthenticationError extends EnvelopeError {
  override readonly kind: string = "Authentication";
  constructor(message: string, readonly segment: number) {
    super(message);
  }
}

/** A second encoding of a plaintext that has exactly one (an empty last segment after a full one). */
export class NonCanonicalError extends EnvelopeError {
  override readonly kind: string = "NonCanonical";
}

/**
 * The expectation itself is unusable (empty fields, a location the map does not name, a map that
 * names one location twice with different answers): a deployment error, not a refusal of an
 * object, so not a {@link ReadError}.
 */
export class ExpectationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ExpectationError";
  }
}
