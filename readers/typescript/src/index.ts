/**
 * Read secrets that dualseal migrated, from TypeScript / Node.
 *
 * ```ts
 * import { S3Client } from "@aws-sdk/client-s3";
 * import { KMSClient } from "@aws-sdk/client-kms";
 * import { Expectation, read } from "dualseal-reader";
 *
 * const secret = await read(new S3Client({}), new KMSClient({}), "secrets-db", "payments/credentials.json",
 *   { expect: new Expectation({ category: "db", kmsKeyArn: "arn:aws:kms:...:key/..." }) });
 * ```
 *
 * Every read is pinned: S3 must report DSSE-KMS under the expected key, the envelope must be
 * sealed for exactly this bucket and key, under that key and for that category, and KMS unwraps
 * its data key under the context of the location read. FORMAT.md (in the dualseal repository) is
 * the contract.
 */

export { read, openStream, readToFile, sameKey, SSE_DSSE_KMS, type ReadOptions } from "./reader.js";
export { Expectation, LocationMap, type Location } from "./expectation.js";
export { openEnvelope, tryParseHeader, EnvelopeStream, kmsContext, MAX_HEADER_LEN, type Header } from "./envelope.js";
export * from "./errors.js";
