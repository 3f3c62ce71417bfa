/**
 * What a reader expects of an object, and the location map that says it: `dualsealctl mapping
 * JOB --format json` writes one JSON object per line (`source_bucket`, `source_key`,
 * `source_version`, `destination_bucket`, `destination_key`, `category`, `kms_key_arn`,
 * `envelope_version`). A JSON array of the same objects is accepted too.
 */

import { readFileSync } from "node:fs";

import { ExpectationError } from "./errors.js";

/**
 * The category a location belongs to and that category's KMS key ARN: both layers of the object
 * must be under this key and its envelope of this category. `dualsealctl mapping` names both.
 */
export class Expectation {
  readonly category: string;
  readonly kmsKeyArn: string;

  /** @throws {ExpectationError} an empty category or key. */
  constructor(init: { category: string; kmsKeyArn: string }) {
    if (typeof init?.category !== "string" || init.category === "") {
      throw new ExpectationError("Expectation needs the category name the location belongs to");
    }
    if (typeof init.kmsKeyArn !== "string" || init.kmsKeyArn === "") {
      throw new ExpectationError("Expectation needs the category's KMS key ARN");
    }
    this.category = init.category;
    this.kmsKeyArn = init.kmsKeyArn;
    Object.freeze(this);
  }

  /**
   * The expectation for destination `s3://bucket/key` from a location map file (path) or a
   * loaded {@link LocationMap}.
   *
   * @throws {ExpectationError} the map does not name the location, names it twice with
   *   different answers, or is not a location map.
   */
  static fromMapping(mapping: string | LocationMap, bucket: string, key: string): Expectation {
    const m = typeof mapping === "string" ? LocationMap.load(mapping) : mapping;
    return m.expectation(bucket, key);
  }
}

/** Where a secret lives now, and what to expect of it there. */
export interface Location {
  readonly bucket: string;
  readonly key: string;
  readonly expect: Expectation;
}

const loc = (bucket: string, key: string) => JSON.stringify([bucket, key]);

/**
 * A loaded location map: destination location -> {@link Expectation}, and source location -> new
 * {@link Location} (for applications that still know the old address).
 */
export class LocationMap {
  private readonly byDest = new Map<string, Location>();
  private readonly bySource = new Map<string, Location>();

  /** @throws {ExpectationError} an entry without its fields, or one location with two answers. */
  constructor(entries: Iterable<unknown>) {
    let n = 0;
    for (const e of entries) {
      n++;
      let l: Location;
      let src: string;
      try {
        l = {
          bucket: field(e, "destination_bucket"),
          key: field(e, "destination_key"),
          expect: new Expectation({ category: field(e, "category"), kmsKeyArn: field(e, "kms_key_arn") }),
        };
        src = loc(field(e, "source_bucket"), field(e, "source_key"));
      } catch (err) {
        throw new ExpectationError(`location map entry ${n}: ${(err as Error).message}`);
      }
      put(this.byDest, loc(l.bucket, l.key), l, n);
      put(this.bySource, src, l, n);
    }
  }

  /**
   * Reads a map written by `dualsealctl mapping --format json`.
   *
   * @throws {ExpectationError} not a location map.
   */
  static load(path: string): LocationMap {
    return LocationMap.parse(readFileSync(path, "utf8"));
  }

  /** Parses the text of a location map (JSON lines, or a JSON array). */
  static parse(text: string): LocationMap {
    const trimmed = text.trimStart();
    let entries: unknown[];
    try {
      if (trimmed.startsWith("[")) {
        const data: unknown = JSON.parse(trimmed);
        if (!Array.isArray(data)) throw new ExpectationError("a location map is a JSON array or JSON lines");
        entries = data;
      } else {
        entries = text
          .split("\n")
          .filter((l) => l.trim() !== "")
          .map((l) => JSON.parse(l) as unknown);
      }
    } catch (err) {
      if (err instanceof ExpectationError) throw err;
      throw new ExpectationError("not a location map (dualsealctl mapping --format json writes one)");
    }
    return new LocationMap(entries);
  }

  /** @throws {ExpectationError} the map does not name destination `s3://bucket/key`. */
  expectation(bucket: string, key: string): Expectation {
    const l = this.byDest.get(loc(bucket, key));
    if (l === undefined) throw new ExpectationError(`the location map does not name s3://${bucket}/${key}`);
    return l.expect;
  }

  /** @throws {ExpectationError} the map does not name source `s3://bucket/key`. */
  forSource(bucket: string, key: string): Location {
    const l = this.bySource.get(loc(bucket, key));
    if (l === undefined) throw new ExpectationError(`the location map does not name source s3://${bucket}/${key}`);
    return l;
  }

  get size(): number {
    return this.byDest.size;
  }

  [Symbol.iterator](): IterableIterator<Location> {
    return this.byDest.values();
  }
}

function put(table: Map<string, Location>, k: string, v: Location, n: number): void {
  const old = table.get(k);
  if (
    old !== undefined &&
    (old.bucket !== v.bucket ||
      old.key !== v.key ||
      old.expect.category !== v.expect.category ||
      old.expect.kmsKeyArn !== v.expect.kmsKeyArn)
  ) {
    const [b, key] = JSON.parse(k) as [string, string];
    throw new ExpectationError(`location map entry ${n}: s3://${b}/${key} appears twice with different answers`);
  }
  table.set(k, v);
}

function field(e: unknown, name: string): string {
  const v = typeof e === "object" && e !== null ? (e as Record<string, unknown>)[name] : undefined;
  if (typeof v !== "string" || v === "") throw new ExpectationError(`no ${name}`);
  return v;
}
