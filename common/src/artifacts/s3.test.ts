/**
 * The contract suite against a real S3 (S3Proxy from scripts/test-services.sh), each test in a
 * bucket of its own that the store creates, plus what only S3 has: bucket creation, credentials.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { type TestContext, describe, it } from "node:test";
import { Client } from "minio";
import { loadExecutorConfig } from "../config.js";
import { requireService } from "../testing.js";
import { artifactStoreContract } from "./contract.js";
import { isArtifactError } from "./errors.js";
import { createArtifactStore } from "./factory.js";
import { S3ArtifactStore } from "./s3.js";
import { readAll } from "./store.js";

interface S3Env {
  endpoint: string;
  accessKey: string;
  secretKey: string;
  region: string;
}

/** The S3 test service, or undefined when the test was skipped (throws under CI=true). */
function s3Env(t: TestContext): S3Env | undefined {
  const endpoint = requireService(t, "S3_ENDPOINT");
  if (endpoint === undefined) return undefined;
  const get = (name: string): string => {
    const v = process.env[name];
    assert.ok(v !== undefined && v !== "", `${name} must be set along with S3_ENDPOINT`);
    return v;
  };
  return {
    endpoint,
    accessKey: get("S3_ACCESS_KEY"),
    secretKey: get("S3_SECRET_KEY"),
    region: get("S3_REGION"),
  };
}

function rawClient(env: S3Env): Client {
  const url = new URL(env.endpoint);
  return new Client({
    endPoint: url.hostname,
    port: Number(url.port || 80),
    useSSL: url.protocol === "https:",
    accessKey: env.accessKey,
    secretKey: env.secretKey,
    region: env.region,
    pathStyle: true,
  });
}

/** Removes a bucket and everything in it, if it exists. */
async function dropBucket(env: S3Env, bucket: string): Promise<void> {
  const client = rawClient(env);
  if (!(await client.bucketExists(bucket))) return;
  const names: string[] = [];
  for await (const item of client.listObjectsV2(bucket, "", true)) {
    const name = (item as { name?: string }).name;
    if (name !== undefined) names.push(name);
  }
  if (names.length > 0) await client.removeObjects(bucket, names);
  await client.removeBucket(bucket);
}

artifactStoreContract("s3", async (t) => {
  const env = s3Env(t);
  if (env === undefined) return undefined;
  const bucket = `nf-contract-${randomUUID()}`;
  const store = new S3ArtifactStore({ ...env, bucket });
  await store.ensureReady();
  return { store, dispose: () => dropBucket(env, bucket) };
});

describe("S3ArtifactStore", () => {
  it("creates the bucket when missing, and finds it when present", { timeout: 60_000 }, async (t) => {
    const env = s3Env(t);
    if (env === undefined) return;
    const bucket = `nf-ready-${randomUUID()}`;
    try {
      const client = rawClient(env);
      assert.equal(await client.bucketExists(bucket), false);
      const store = await createArtifactStore(
        loadExecutorConfig({
          S3_ENDPOINT: env.endpoint,
          S3_ACCESS_KEY: env.accessKey,
          S3_SECRET_KEY: env.secretKey,
          S3_REGION: env.region,
          S3_BUCKET: bucket,
        }).artifacts,
      );
      assert.equal(store.kind, "s3");
      assert.equal(await client.bucketExists(bucket), true);
      await store.put("runs/r/s/attempt-1/a.txt", "A", { contentType: "text/plain" });
      // A second store (another process) on the same bucket sees the same objects.
      const other = new S3ArtifactStore({ ...env, bucket });
      await other.ensureReady();
      assert.equal((await readAll(await other.get("runs/r/s/attempt-1/a.txt"))).toString(), "A");
      assert.equal((await other.stat("runs/r/s/attempt-1/a.txt"))?.contentType, "text/plain");
    } finally {
      await dropBucket(env, bucket);
    }
  });

  it(
    "stream puts larger than the memory spool go through a temporary file",
    { timeout: 60_000 },
    async (t) => {
      const env = s3Env(t);
      if (env === undefined) return;
      const bucket = `nf-spool-${randomUUID()}`;
      try {
        const store = new S3ArtifactStore({ ...env, bucket, spoolMemoryBytes: 64 * 1024 });
        await store.ensureReady();
        const { Readable } = await import("node:stream");
        const { randomBytes, createHash } = await import("node:crypto");
        const chunks = Array.from({ length: 40 }, () => randomBytes(16 * 1024));
        const all = Buffer.concat(chunks);
        const ref = await store.put("big.bin", Readable.from(chunks));
        assert.equal(ref.size, BigInt(all.length));
        assert.equal(ref.sha256, createHash("sha256").update(all).digest("hex"));
        assert.deepEqual(await readAll(await store.get("big.bin")), all);
      } finally {
        await dropBucket(env, bucket);
      }
    },
  );

  it(
    "wrong credentials fail ensureReady with UNAVAILABLE naming the bucket",
    { timeout: 60_000 },
    async (t) => {
      const env = s3Env(t);
      if (env === undefined) return;
      const store = new S3ArtifactStore({
        ...env,
        secretKey: `${env.secretKey}-wrong`,
        bucket: "nf-never-created",
      });
      await assert.rejects(store.ensureReady(), (e: unknown) => {
        assert.ok(isArtifactError(e, "UNAVAILABLE"), String(e));
        assert.match(e.message, /nf-never-created/);
        return true;
      });
    },
  );
});
