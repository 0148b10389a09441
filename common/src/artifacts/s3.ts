/**
 * The production artifact store: an S3-compatible bucket through the `minio` client, path-style
 * requests (MinIO, S3Proxy, Ceph and AWS all accept them), the bucket created when missing.
 *
 * The SHA-256 is stored as user metadata (`x-amz-meta-sha256`) because S3's ETag is not a content
 * hash for multipart uploads. A stream is spooled first (in memory up to `spoolMemoryBytes`, then
 * to a temporary file) so its size and hash are known before the upload starts, which also makes
 * the upload a single atomic PUT for small objects.
 *
 * `minio` (with its XML parsers and their dependencies, ~10 MiB of V8 heap once loaded) is imported
 * on the store's first request, not with this module: every service imports the artifact stores,
 * most run with the filesystem one.
 */
import { createHash } from "node:crypto";
import { once } from "node:events";
import { type WriteStream, createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { finished } from "node:stream/promises";
import type * as Minio from "minio";
import type { ArtifactRef } from "@nexusflow/gen";
import { ArtifactError } from "./errors.js";
import { checkKey, checkPrefix } from "./keys.js";
import {
  type ArtifactData,
  type ArtifactStore,
  DEFAULT_CONTENT_TYPE,
  type ListOptions,
  type PresignedUrl,
  type PutOptions,
  artifactRef,
  checkContentType,
  isStream,
  sha256Hex,
  toBuffer,
} from "./store.js";

/** Options of {@link S3ArtifactStore}. */
export interface S3ArtifactStoreOptions {
  /** Endpoint URL, e.g. "http://127.0.0.1:9000" or "https://s3.eu-west-1.amazonaws.com". */
  endpoint: string;
  accessKey: string;
  secretKey: string;
  /** Region used for signing and for creating the bucket. */
  region: string;
  bucket: string;
  /**
   * Path-style requests (`endpoint/bucket/key`) rather than virtual-hosted ones.
   * @default true
   */
  pathStyle?: boolean | undefined;
  /**
   * Stream puts are kept in memory up to this size, then spooled to a temporary file.
   * @default 8 MiB
   */
  spoolMemoryBytes?: number | undefined;
  /**
   * Concurrent HEAD requests when listing with metadata.
   * @default 8
   */
  statConcurrency?: number | undefined;
}

const NOT_FOUND_CODES = new Set(["NoSuchKey", "NotFound", "NoSuchObject"]);
/** Largest TTL of a presigned URL (SigV4 limit: 7 days). */
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;

/** The `minio` module, once a store has loaded it (its errors come only from a loaded client). */
let minio: typeof Minio | undefined;

function isNotFound(e: unknown): boolean {
  const code = s3Code(e);
  return code !== undefined && NOT_FOUND_CODES.has(code);
}

function s3Code(e: unknown): string | undefined {
  return minio !== undefined && e instanceof minio.S3Error ? e.code : undefined;
}

/** Artifacts as objects of one S3 bucket. */
export class S3ArtifactStore implements ArtifactStore {
  readonly kind = "s3" as const;
  /** The bucket. */
  readonly bucket: string;
  readonly #clientOptions: Minio.ClientOptions;
  #client: Promise<Minio.Client> | undefined;
  readonly #region: string;
  readonly #endpoint: string;
  readonly #spoolMemoryBytes: number;
  readonly #statConcurrency: number;

  constructor(options: S3ArtifactStoreOptions) {
    let url: URL;
    try {
      url = new URL(options.endpoint);
    } catch (e) {
      throw new ArtifactError(
        "INVALID_ARGUMENT",
        `invalid S3 endpoint ${JSON.stringify(options.endpoint)}`,
        undefined,
        {
          cause: e,
        },
      );
    }
    this.bucket = options.bucket;
    this.#region = options.region;
    this.#endpoint = url.origin;
    this.#spoolMemoryBytes = options.spoolMemoryBytes ?? 8 * 1024 * 1024;
    this.#statConcurrency = Math.max(1, options.statConcurrency ?? 8);
    this.#clientOptions = {
      endPoint: url.hostname,
      port: Number(url.port || (url.protocol === "https:" ? 443 : 80)),
      useSSL: url.protocol === "https:",
      accessKey: options.accessKey,
      secretKey: options.secretKey,
      region: options.region,
      pathStyle: options.pathStyle ?? true,
    };
  }

  /** The minio client, created (and `minio` imported) on first use. */
  #s3(): Promise<Minio.Client> {
    this.#client ??= import("minio").then((m) => {
      minio = m;
      return new m.Client(this.#clientOptions);
    });
    return this.#client;
  }

  #unavailable(what: string, key: string | undefined, e: unknown): ArtifactError {
    const detail = e instanceof Error ? `${s3Code(e) ?? e.name}: ${e.message}` : String(e);
    return new ArtifactError(
      "UNAVAILABLE",
      `${what} failed (bucket ${this.bucket} at ${this.#endpoint}): ${detail}`,
      key,
      { cause: e },
    );
  }

  async ensureReady(): Promise<void> {
    try {
      const client = await this.#s3();
      if (await client.bucketExists(this.bucket)) return;
      await client.makeBucket(this.bucket, this.#region);
    } catch (e) {
      // Another process created it first.
      const code = s3Code(e);
      if (code === "BucketAlreadyOwnedByYou" || code === "BucketAlreadyExists") return;
      throw this.#unavailable("checking or creating the bucket", undefined, e);
    }
  }

  async put(key: string, data: ArtifactData, options: PutOptions = {}): Promise<ArtifactRef> {
    checkKey(key);
    const contentType = checkContentType(options.contentType);
    const spooled = isStream(data) ? await this.#spool(data) : { buffer: toBuffer(data) };
    try {
      const sha256 = "buffer" in spooled ? sha256Hex(spooled.buffer) : spooled.sha256;
      const size = "buffer" in spooled ? spooled.buffer.length : spooled.size;
      const body = "buffer" in spooled ? spooled.buffer : createReadStream(spooled.file);
      await (
        await this.#s3()
      ).putObject(this.bucket, key, body, size, {
        "Content-Type": contentType,
        "X-Amz-Meta-Sha256": sha256,
      });
      return artifactRef({ key, size, sha256, contentType, createTime: new Date() });
    } catch (e) {
      throw this.#unavailable(`storing ${JSON.stringify(key)}`, key, e);
    } finally {
      if ("dir" in spooled) await rm(spooled.dir, { recursive: true, force: true });
    }
  }

  /** Reads a stream into memory, or into a temporary file once it outgrows `spoolMemoryBytes`. */
  async #spool(
    data: Readable,
  ): Promise<{ buffer: Buffer } | { dir: string; file: string; size: number; sha256: string }> {
    const hash = createHash("sha256");
    const chunks: Buffer[] = [];
    let size = 0;
    let spill: { dir: string; file: string; out: WriteStream } | undefined;
    try {
      // Iterating (rather than piping) makes an error of the source reject here.
      for await (const chunk of data) {
        const buf = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : (chunk as Buffer);
        hash.update(buf);
        size += buf.length;
        if (spill === undefined) {
          chunks.push(buf);
          if (size > this.#spoolMemoryBytes) {
            const dir = await mkdtemp(join(tmpdir(), "nexusflow-s3-"));
            spill = { dir, file: join(dir, "spool"), out: createWriteStream(join(dir, "spool")) };
            for (const c of chunks.splice(0)) await write(spill.out, c);
          }
        } else await write(spill.out, buf);
      }
      if (spill === undefined) return { buffer: Buffer.concat(chunks) };
      spill.out.end();
      await finished(spill.out);
      return { dir: spill.dir, file: spill.file, size, sha256: hash.digest("hex") };
    } catch (e) {
      data.destroy();
      if (spill !== undefined) {
        spill.out.destroy();
        await rm(spill.dir, { recursive: true, force: true });
      }
      throw new ArtifactError(
        "UNAVAILABLE",
        `reading the data to store failed: ${e instanceof Error ? e.message : String(e)}`,
        undefined,
        { cause: e },
      );
    }
  }

  async get(key: string): Promise<Readable> {
    checkKey(key);
    try {
      return await (await this.#s3()).getObject(this.bucket, key);
    } catch (e) {
      if (isNotFound(e))
        throw new ArtifactError("NOT_FOUND", `no artifact ${JSON.stringify(key)}`, key, { cause: e });
      throw this.#unavailable(`reading ${JSON.stringify(key)}`, key, e);
    }
  }

  async stat(key: string): Promise<ArtifactRef | undefined> {
    checkKey(key);
    try {
      const s = await (await this.#s3()).statObject(this.bucket, key);
      const meta = s.metaData as Record<string, unknown>;
      return artifactRef({
        key,
        size: s.size,
        sha256: typeof meta["sha256"] === "string" ? meta["sha256"] : "",
        contentType: typeof meta["content-type"] === "string" ? meta["content-type"] : DEFAULT_CONTENT_TYPE,
        createTime: s.lastModified,
      });
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw this.#unavailable(`reading ${JSON.stringify(key)}`, key, e);
    }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ArtifactRef[]> {
    checkPrefix(prefix);
    const items: { name: string; size: number; lastModified: Date }[] = [];
    try {
      for await (const item of (await this.#s3()).listObjectsV2(this.bucket, prefix, true)) {
        const i = item as { name?: string; size?: number; lastModified?: Date };
        if (i.name !== undefined)
          items.push({ name: i.name, size: i.size ?? 0, lastModified: i.lastModified ?? new Date(0) });
      }
    } catch (e) {
      throw this.#unavailable(`listing ${JSON.stringify(prefix)}`, undefined, e);
    }
    items.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (options.metadata === false) {
      return items.map((i) =>
        artifactRef({ key: i.name, size: i.size, sha256: "", contentType: "", createTime: i.lastModified }),
      );
    }
    const refs: (ArtifactRef | undefined)[] = items.map(() => undefined);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < items.length) {
        const at = next++;
        const item = items[at] as (typeof items)[number];
        refs[at] = await this.stat(item.name);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#statConcurrency, items.length) }, worker));
    // An object deleted between the listing and its HEAD is left out.
    return refs.filter((r): r is ArtifactRef => r !== undefined);
  }

  async presign(key: string, ttlSeconds: number): Promise<PresignedUrl | undefined> {
    checkKey(key);
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_PRESIGN_SECONDS)
      throw new ArtifactError(
        "INVALID_ARGUMENT",
        `presign TTL must be 1 to ${MAX_PRESIGN_SECONDS} seconds, got ${ttlSeconds}`,
      );
    if ((await this.stat(key)) === undefined)
      throw new ArtifactError("NOT_FOUND", `no artifact ${JSON.stringify(key)}`, key);
    const issued = Date.now();
    try {
      const url = await (await this.#s3()).presignedGetObject(this.bucket, key, ttlSeconds);
      return { url, expiresAt: new Date(issued + ttlSeconds * 1000) };
    } catch (e) {
      throw this.#unavailable(`presigning ${JSON.stringify(key)}`, key, e);
    }
  }

  async delete(prefix = ""): Promise<number> {
    const names = (await this.list(prefix, { metadata: false })).map((r) => r.key);
    try {
      const client = await this.#s3();
      for (let at = 0; at < names.length; at += 1000) {
        await client.removeObjects(this.bucket, names.slice(at, at + 1000));
      }
    } catch (e) {
      throw this.#unavailable(`deleting ${JSON.stringify(prefix)}`, undefined, e);
    }
    return names.length;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Writes a chunk, waiting for the stream to drain when its buffer is full; rejects on error. */
async function write(out: WriteStream, chunk: Buffer): Promise<void> {
  if (!out.write(chunk)) await once(out, "drain");
}
