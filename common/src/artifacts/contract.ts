/**
 * The one test suite every {@link ArtifactStore} passes (test code; imported by the back ends'
 * test files, not exported by the package). Each test gets a fresh store from the fixture factory
 * and works under its own random prefix, so back ends may share a bucket.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { type TestContext, describe, it } from "node:test";
import { isArtifactError } from "./errors.js";
import { type ArtifactStore, readAll } from "./store.js";

/** A store for one test and how to clean up after it. */
export interface StoreFixture {
  readonly store: ArtifactStore;
  /** Removes what the test left (objects, folders, buckets). */
  dispose(): Promise<void>;
}

/** Makes a fixture, or returns undefined when the back end is unavailable and the test was skipped. */
export type StoreFactory = (t: TestContext) => Promise<StoreFixture | undefined>;

function sha(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** A stream of `chunks` that fails with `error` after them, if given. */
function streamOf(chunks: Buffer[], error?: Error): Readable {
  return Readable.from(
    (async function* () {
      for (const c of chunks) {
        await Promise.resolve();
        yield c;
      }
      if (error !== undefined) throw error;
    })(),
  );
}

const INVALID_KEYS = [
  "",
  "/absolute",
  "a/../b",
  "../escape",
  "a/./b",
  "a//b",
  "trailing/",
  "nul\u0000byte",
  "new\nline",
  "back\\slash",
  ".meta/x",
  ".tmp/x",
  "..",
];

/** Registers the contract suite for one back end. */
export function artifactStoreContract(name: string, makeStore: StoreFactory): void {
  const storeTest = (title: string, body: (store: ArtifactStore, prefix: string) => Promise<void>): void => {
    void it(title, { timeout: 60_000 }, async (t) => {
      const fixture = await makeStore(t);
      if (fixture === undefined) return;
      try {
        await body(fixture.store, `contract/${randomUUID()}/`);
      } finally {
        await fixture.dispose();
      }
    });
  };

  void describe(`ArtifactStore contract: ${name}`, () => {
    storeTest("a buffer round-trips with its size, SHA-256 and content type", async (store, p) => {
      const data = randomBytes(70_001);
      const ref = await store.put(`${p}runs/r1/step/attempt-1/blob.bin`, data, {
        contentType: "application/x-test",
      });
      assert.equal(ref.key, `${p}runs/r1/step/attempt-1/blob.bin`);
      assert.equal(ref.name, "blob.bin");
      assert.equal(ref.size, BigInt(data.length));
      assert.equal(ref.sha256, sha(data));
      assert.equal(ref.contentType, "application/x-test");
      assert.ok(ref.createTime !== undefined);
      assert.deepEqual(await readAll(await store.get(ref.key)), data);
      const stat = await store.stat(ref.key);
      assert.ok(stat);
      assert.equal(stat.key, ref.key);
      assert.equal(stat.size, ref.size);
      assert.equal(stat.sha256, ref.sha256);
      assert.equal(stat.contentType, "application/x-test");
    });

    storeTest("the task layout names artifacts by their path within the attempt", async (store) => {
      const run = randomUUID();
      const ref = await store.put(`runs/${run}/build/attempt-2/reports/summary.txt`, "ok");
      try {
        assert.equal(ref.name, "reports/summary.txt");
        assert.equal(ref.contentType, "application/octet-stream");
      } finally {
        await store.delete(`runs/${run}/`);
      }
    });

    storeTest(
      "strings are stored as UTF-8 and typed arrays as bytes; empty objects exist",
      async (store, p) => {
        const text = "héllo wörld ✓\n";
        const s = await store.put(`${p}text.txt`, text, { contentType: "text/plain; charset=utf-8" });
        assert.equal(s.size, BigInt(Buffer.byteLength(text)));
        assert.equal((await readAll(await store.get(`${p}text.txt`))).toString("utf8"), text);
        assert.equal(s.contentType, "text/plain;charset=utf-8", "spaces around ';' are dropped");
        assert.equal((await store.stat(`${p}text.txt`))?.contentType, "text/plain;charset=utf-8");

        const bytes = new Uint8Array([0, 1, 2, 254, 255]);
        await store.put(`${p}bytes.bin`, bytes);
        assert.deepEqual([...(await readAll(await store.get(`${p}bytes.bin`)))], [0, 1, 2, 254, 255]);

        const empty = await store.put(`${p}empty`, Buffer.alloc(0));
        assert.equal(empty.size, 0n);
        assert.equal(empty.sha256, sha(Buffer.alloc(0)));
        assert.equal((await store.stat(`${p}empty`))?.size, 0n);
        assert.equal((await readAll(await store.get(`${p}empty`))).length, 0);
      },
    );

    storeTest(
      "a stream of unknown length is stored whole, with the hash of its content",
      async (store, p) => {
        const chunks = Array.from({ length: 300 }, (_, i) => randomBytes(1000 + i));
        const all = Buffer.concat(chunks);
        const ref = await store.put(`${p}stream.bin`, streamOf(chunks));
        assert.equal(ref.size, BigInt(all.length));
        assert.equal(ref.sha256, sha(all));
        assert.deepEqual(await readAll(await store.get(`${p}stream.bin`)), all);
        assert.equal((await store.stat(`${p}stream.bin`))?.sha256, sha(all));
      },
    );

    storeTest("a stream that fails leaves no object behind", async (store, p) => {
      await assert.rejects(
        store.put(`${p}broken.bin`, streamOf([randomBytes(5000)], new Error("source broke"))),
      );
      assert.equal(await store.stat(`${p}broken.bin`), undefined);
      assert.deepEqual(await store.list(p), []);
    });

    storeTest("put replaces an object; concurrent puts leave one of them whole", async (store, p) => {
      await store.put(`${p}doc`, "first");
      await store.put(`${p}doc`, "second version");
      assert.equal((await readAll(await store.get(`${p}doc`))).toString(), "second version");
      assert.equal((await store.stat(`${p}doc`))?.size, BigInt("second version".length));

      const versions = Array.from({ length: 5 }, () => randomBytes(256 * 1024));
      await Promise.all(versions.map((v) => store.put(`${p}race`, v)));
      const final = await readAll(await store.get(`${p}race`));
      assert.ok(
        versions.some((v) => v.equals(final)),
        "the object is exactly one of the versions written",
      );
      assert.equal((await store.stat(`${p}race`))?.sha256, sha(final));
    });

    storeTest(
      "missing objects: get rejects NOT_FOUND, stat is undefined, presign rejects",
      async (store, p) => {
        await assert.rejects(store.get(`${p}nothing`), (e: unknown) => isArtifactError(e, "NOT_FOUND"));
        assert.equal(await store.stat(`${p}nothing`), undefined);
        await assert.rejects(store.presign(`${p}nothing`, 60), (e: unknown) =>
          isArtifactError(e, "NOT_FOUND"),
        );
        await store.put(`${p}folder/inside`, "x");
        // A "folder" is not an object.
        assert.equal(await store.stat(`${p}folder`), undefined);
        await assert.rejects(store.get(`${p}folder`), (e: unknown) => isArtifactError(e, "NOT_FOUND"));
      },
    );

    storeTest("list matches a string prefix, recursively, sorted by key", async (store, p) => {
      const keys = [
        `${p}runs/r1/a/attempt-1/logs.jsonl`,
        `${p}runs/r1/a/attempt-1/out/x.txt`,
        `${p}runs/r1/a/attempt-2/logs.jsonl`,
        `${p}runs/r1/ab/attempt-1/logs.jsonl`,
        `${p}runs/r2/a/attempt-1/logs.jsonl`,
      ];
      for (const key of [...keys].reverse()) await store.put(key, key, { contentType: "text/plain" });
      const all = await store.list(p);
      assert.deepEqual(
        all.map((r) => r.key),
        keys,
      );
      assert.ok(all.every((r) => r.sha256 === sha(Buffer.from(r.key)) && r.contentType === "text/plain"));
      assert.ok(all.every((r) => r.size === BigInt(Buffer.byteLength(r.key))));
      assert.deepEqual(
        (await store.list(`${p}runs/r1/a/`)).map((r) => r.key),
        keys.slice(0, 3),
      );
      assert.deepEqual(
        (await store.list(`${p}runs/r1/a`)).map((r) => r.key),
        keys.slice(0, 4),
      );
      assert.deepEqual(
        (await store.list(`${p}runs/r1/a/attempt-1/logs.jsonl`)).map((r) => r.key),
        [keys[0]],
      );
      assert.deepEqual(await store.list(`${p}runs/r3/`), []);
      assert.deepEqual(await store.list(`${p}nothing-here`), []);
      const bare = await store.list(`${p}runs/r2/`, { metadata: false });
      assert.equal(bare.length, 1);
      assert.equal(bare[0]?.key, keys[4]);
      assert.equal(bare[0]?.size, BigInt(Buffer.byteLength(keys[4] ?? "")));
    });

    storeTest("keys with spaces, unicode and punctuation round-trip and list", async (store, p) => {
      const keys = [
        `${p}with space/ünïcødé ✓.txt`,
        `${p}odd/a+b=c&d%20e;f@g,h.txt`,
        `${p}odd/日本語/ファイル`,
      ];
      for (const key of keys) await store.put(key, key);
      for (const key of keys) assert.equal((await readAll(await store.get(key))).toString(), key);
      assert.deepEqual((await store.list(p)).map((r) => r.key).sort(), [...keys].sort());
    });

    storeTest("unsafe keys and prefixes are refused with INVALID_KEY", async (store, p) => {
      for (const key of INVALID_KEYS) {
        const isInvalid = (e: unknown): boolean => isArtifactError(e, "INVALID_KEY");
        await assert.rejects(store.put(key, "x"), isInvalid, `put ${JSON.stringify(key)}`);
        await assert.rejects(store.get(key), isInvalid, `get ${JSON.stringify(key)}`);
        await assert.rejects(store.stat(key), isInvalid, `stat ${JSON.stringify(key)}`);
      }
      for (const prefix of ["/abs", "../", "a/../", "x\u0000", ".meta/"]) {
        await assert.rejects(
          store.list(prefix),
          (e: unknown) => isArtifactError(e, "INVALID_KEY"),
          `list ${JSON.stringify(prefix)}`,
        );
      }
      await assert.rejects(store.put(`${p}bad-type`, "x", { contentType: "not a type\n" }), (e: unknown) =>
        isArtifactError(e, "INVALID_ARGUMENT"),
      );
    });

    storeTest("delete removes what matches the prefix and nothing else", async (store, p) => {
      await store.put(`${p}runs/r1/a/attempt-1/logs.jsonl`, "1");
      await store.put(`${p}runs/r1/a/attempt-1/files/x`, "2");
      await store.put(`${p}runs/r1/b/attempt-1/logs.jsonl`, "3");
      await store.put(`${p}runs/r10/a/attempt-1/logs.jsonl`, "4");
      assert.equal(await store.delete(`${p}runs/r1/a/`), 2);
      assert.deepEqual(
        (await store.list(p)).map((r) => r.key),
        [`${p}runs/r1/b/attempt-1/logs.jsonl`, `${p}runs/r10/a/attempt-1/logs.jsonl`],
      );
      assert.equal(await store.delete(`${p}runs/r1/`), 1);
      assert.equal(await store.delete(`${p}runs/nothing/`), 0);
      assert.deepEqual(
        (await store.list(p)).map((r) => r.key),
        [`${p}runs/r10/a/attempt-1/logs.jsonl`],
      );
      // The deleted key can be written again (no leftover folder or marker in the way).
      await store.put(`${p}runs/r1/a/attempt-1/logs.jsonl`, "again");
      assert.equal(
        (await readAll(await store.get(`${p}runs/r1/a/attempt-1/logs.jsonl`))).toString(),
        "again",
      );
    });

    storeTest("presign: a credential-free URL on S3, none on the filesystem", async (store, p) => {
      const data = randomBytes(3000);
      await store.put(`${p}dl/file.bin`, data);
      const presigned = await store.presign(`${p}dl/file.bin`, 120);
      if (store.kind === "filesystem") {
        assert.equal(presigned, undefined);
        return;
      }
      assert.ok(presigned !== undefined, "S3 presigns");
      assert.ok(presigned.expiresAt.getTime() > Date.now() + 100_000);
      const response = await fetch(presigned.url, { signal: AbortSignal.timeout(10_000) });
      assert.equal(response.status, 200);
      assert.deepEqual(Buffer.from(await response.arrayBuffer()), data);
    });

    storeTest("ensureReady is idempotent", async (store, p) => {
      await store.ensureReady();
      await store.ensureReady();
      await store.put(`${p}ready`, "yes");
      assert.equal((await store.stat(`${p}ready`))?.size, 3n);
    });
  });
}
