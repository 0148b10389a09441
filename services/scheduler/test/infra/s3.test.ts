/**
 * Proves the S3 test harness (scripts/test-services.sh, S3Proxy with signed requests) and the
 * minio client: buffer and streamed objects round-trip through put/get/stat/list, a presigned URL
 * serves the same bytes to plain fetch, and a wrong secret key is refused.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { test } from "node:test";
import { requireService } from "@nexusflow/common/testing";
import { Client, S3Error } from "minio";
import type { BucketItem } from "minio";

/** Reads a variable that scripts/test-services.sh always writes next to S3_ENDPOINT. */
function companionVariable(name: "S3_ACCESS_KEY" | "S3_SECRET_KEY" | "S3_REGION"): string {
  const value = process.env[name];
  assert.ok(value !== undefined && value !== "", `${name} must be set along with S3_ENDPOINT`);
  return value;
}

function clientFor(endpoint: string, accessKey: string, secretKey: string, region: string): Client {
  const url = new URL(endpoint);
  return new Client({
    endPoint: url.hostname,
    port: Number(url.port || (url.protocol === "https:" ? 443 : 80)),
    useSSL: url.protocol === "https:",
    accessKey,
    secretKey,
    region,
    pathStyle: true,
  });
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream)
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}

async function listAll(client: Client, bucket: string, prefix: string): Promise<BucketItem[]> {
  const items: BucketItem[] = [];
  for await (const item of client.listObjects(bucket, prefix, true)) items.push(item as BucketItem);
  return items;
}

test(
  "s3: objects round-trip through put/get/stat/list, presigned GET, and credentials are checked",
  { timeout: 60_000 },
  async (t) => {
    const endpoint = requireService(t, "S3_ENDPOINT");
    if (endpoint === undefined) return;

    const accessKey = companionVariable("S3_ACCESS_KEY");
    const secretKey = companionVariable("S3_SECRET_KEY");
    const region = companionVariable("S3_REGION");
    const client = clientFor(endpoint, accessKey, secretKey, region);
    const bucket = `nexusflow-infra-${randomUUID()}`;

    await client.makeBucket(bucket, region);
    try {
      assert.equal(await client.bucketExists(bucket), true);
      assert.ok((await client.listBuckets()).some((b) => b.name === bucket));

      // A binary buffer of a few KB, with content type and user metadata.
      const blobName = "artifacts/run-1/blob.bin";
      const blob = randomBytes(5 * 1024 + 7);
      const uploaded = await client.putObject(bucket, blobName, blob, blob.length, {
        "Content-Type": "application/octet-stream",
        "X-Amz-Meta-Run-Id": "run-1",
      });
      const md5 = createHash("md5").update(blob).digest("hex");
      assert.equal(uploaded.etag, md5);

      assert.deepEqual(await readAll(await client.getObject(bucket, blobName)), blob);
      assert.deepEqual(
        await readAll(await client.getPartialObject(bucket, blobName, 100, 50)),
        blob.subarray(100, 150),
      );

      const stat = await client.statObject(bucket, blobName);
      assert.equal(stat.size, blob.length);
      assert.equal(stat.etag, md5);
      assert.equal(stat.metaData["content-type"], "application/octet-stream");
      assert.equal(stat.metaData["run-id"], "run-1");

      // A streamed object of unknown length, produced chunk by chunk.
      const streamName = "artifacts/run-1/log.txt";
      const lines = Array.from({ length: 2_000 }, (_, i) => `line ${i} ${"x".repeat(i % 40)}\n`);
      await client.putObject(bucket, streamName, Readable.from(lines.map((l) => Buffer.from(l))));
      const streamed = await readAll(await client.getObject(bucket, streamName));
      assert.equal(streamed.toString("utf8"), lines.join(""));

      const listed = await listAll(client, bucket, "artifacts/");
      assert.deepEqual(
        listed
          .map((item) => ({ name: item.name, size: item.size }))
          .sort((a, b) => String(a.name).localeCompare(String(b.name))),
        [
          { name: blobName, size: blob.length },
          { name: streamName, size: streamed.length },
        ],
      );
      assert.deepEqual(await listAll(client, bucket, "nothing-here/"), []);

      // A presigned URL works for a client that knows no credentials.
      const url = await client.presignedGetObject(bucket, blobName, 60);
      const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
      assert.equal(response.status, 200);
      assert.deepEqual(Buffer.from(await response.arrayBuffer()), blob);
      const tampered = new URL(url);
      tampered.searchParams.set("X-Amz-Signature", "0".repeat(64));
      const refused = await fetch(tampered, { signal: AbortSignal.timeout(10_000) });
      assert.equal(refused.status, 403);
      await refused.body?.cancel();

      // Signed requests are really checked: the wrong secret key is refused.
      const impostor = clientFor(endpoint, accessKey, `${secretKey}-wrong`, region);
      await assert.rejects(impostor.listBuckets(), (err: unknown) => {
        assert.ok(err instanceof S3Error, `expected an S3Error, got ${String(err)}`);
        assert.equal(err.code, "SignatureDoesNotMatch");
        return true;
      });
      await assert.rejects(impostor.getObject(bucket, blobName), S3Error);
    } finally {
      const names = (await listAll(client, bucket, ""))
        .map((item) => item.name)
        .filter((n): n is string => n !== undefined);
      await client.removeObjects(bucket, names);
      await client.removeBucket(bucket);
    }
  },
);
