/**
 * The artifact store contract: a flat namespace of immutable-once-written objects under
 * browsable keys (see ./keys.ts), implemented by S3 (production) and the local filesystem
 * (embedded default). Both pass the one contract suite in ./contract.ts.
 */
import { createHash } from "node:crypto";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type ArtifactRef, ArtifactRefSchema } from "@nexusflow/gen";
import { ArtifactError } from "./errors.js";
import { artifactName } from "./keys.js";

/** Content type of objects stored without one. */
export const DEFAULT_CONTENT_TYPE = "application/octet-stream";

/** What {@link ArtifactStore.put} accepts: bytes, text (stored as UTF-8) or a stream of either. */
export type ArtifactData = Buffer | Uint8Array | string | Readable;

/** Options of {@link ArtifactStore.put}. */
export interface PutOptions {
  /**
   * Media type stored with the object.
   * @default "application/octet-stream"
   */
  contentType?: string | undefined;
}

/** Options of {@link ArtifactStore.list}. */
export interface ListOptions {
  /**
   * Fill in `sha256` and `content_type` of every ref. On S3 that costs one HEAD request per
   * object; without it they are empty there (key, name, size and create time are always set).
   * @default true
   */
  metadata?: boolean | undefined;
}

/** A download URL that needs no credentials, valid until `expiresAt`. */
export interface PresignedUrl {
  readonly url: string;
  readonly expiresAt: Date;
}

/** Where task logs, handler files and offloaded outputs are kept. */
export interface ArtifactStore {
  /** Which back end this is, for logs and for choosing presigned URLs. */
  readonly kind: "s3" | "filesystem";
  /** Prepares the back end (S3: creates the bucket when missing; filesystem: the root folder). Idempotent. */
  ensureReady(): Promise<void>;
  /**
   * Stores `data` under `key`, replacing any object there. A reader never sees a partly written
   * object. Resolves to its ref (size and SHA-256 of what was stored). Throws {@link ArtifactError}.
   */
  put(key: string, data: ArtifactData, options?: PutOptions): Promise<ArtifactRef>;
  /** The content of `key` as a stream. Throws {@link ArtifactError} `NOT_FOUND` when missing. */
  get(key: string): Promise<Readable>;
  /** The ref of `key`, or undefined when there is no such object. */
  stat(key: string): Promise<ArtifactRef | undefined>;
  /** Every object whose key starts with `prefix` (a string prefix, not only whole folders), sorted by key. */
  list(prefix: string, options?: ListOptions): Promise<ArtifactRef[]>;
  /**
   * A URL to download `key` without credentials for `ttlSeconds`; undefined when the back end has
   * none (filesystem). Throws {@link ArtifactError} `NOT_FOUND` when missing.
   */
  presign(key: string, ttlSeconds: number): Promise<PresignedUrl | undefined>;
  /** Deletes every object whose key starts with `prefix` (everything when omitted); resolves to how many. */
  delete(prefix?: string): Promise<number>;
  /** Releases what the store holds. The store is not used afterwards. */
  close(): Promise<void>;
}

// A media type: type/subtype with optional parameters, printable ASCII only.
const CONTENT_TYPE = /^[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+(\s*;[\x20-\x7e]*)?$/;

/**
 * Checks a content type and returns it in the form every back end keeps it: without spaces
 * around ";" (S3 servers drop them), the default when undefined or empty. Throws
 * {@link ArtifactError} `INVALID_ARGUMENT`.
 */
export function checkContentType(contentType: string | undefined): string {
  if (contentType === undefined || contentType.trim() === "") return DEFAULT_CONTENT_TYPE;
  if (contentType.length > 255 || !CONTENT_TYPE.test(contentType.trim()))
    throw new ArtifactError("INVALID_ARGUMENT", `invalid content type ${JSON.stringify(contentType)}`);
  return contentType.trim().replace(/\s*;\s*/g, ";");
}

/** Builds the ref of a stored object. */
export function artifactRef(init: {
  key: string;
  size: number;
  sha256: string;
  contentType: string;
  createTime: Date;
}): ArtifactRef {
  return create(ArtifactRefSchema, {
    key: init.key,
    name: artifactName(init.key),
    size: BigInt(init.size),
    contentType: init.contentType,
    sha256: init.sha256,
    createTime: timestampFromDate(init.createTime),
  });
}

/** `data` as a Buffer when it is not a stream. */
export function toBuffer(data: Exclude<ArtifactData, Readable>): Buffer {
  if (typeof data === "string") return Buffer.from(data, "utf8");
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** A pass-through stream that counts and hashes (SHA-256) what goes through it. */
export class HashingStream extends Transform {
  readonly #hash = createHash("sha256");
  #size = 0;
  #digest: string | undefined;

  override _transform(chunk: unknown, _encoding: BufferEncoding, callback: TransformCallback): void {
    const buf = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : (chunk as Buffer);
    this.#hash.update(buf);
    this.#size += buf.length;
    callback(null, buf);
  }

  /** Bytes seen so far. */
  get size(): number {
    return this.#size;
  }

  /** Hex SHA-256 of everything seen; call once the stream has ended. */
  get sha256(): string {
    this.#digest ??= this.#hash.digest("hex");
    return this.#digest;
  }
}

/** Hex SHA-256 of a buffer. */
export function sha256Hex(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Reads a stream to its end. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream)
    chunks.push(typeof chunk === "string" ? Buffer.from(chunk, "utf8") : (chunk as Buffer));
  return Buffer.concat(chunks);
}

/** Whether `data` is a stream. */
export function isStream(data: ArtifactData): data is Readable {
  return data instanceof Readable || (typeof data === "object" && data !== null && "pipe" in data);
}
