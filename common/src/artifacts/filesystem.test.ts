import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { loadExecutorConfig } from "../config.js";
import { artifactStoreContract } from "./contract.js";
import { isArtifactError } from "./errors.js";
import { FilesystemArtifactStore } from "./filesystem.js";
import { createArtifactStore } from "./factory.js";
import { readAll, sha256Hex } from "./store.js";

async function tempStore(): Promise<{
  root: string;
  store: FilesystemArtifactStore;
  dispose: () => Promise<void>;
}> {
  const root = await mkdtemp(join(tmpdir(), "nf-artifacts-"));
  const store = new FilesystemArtifactStore({ root: join(root, "store") });
  await store.ensureReady();
  return { root, store, dispose: () => rm(root, { recursive: true, force: true }) };
}

artifactStoreContract("filesystem", () => tempStore());

describe("FilesystemArtifactStore", () => {
  it("reads no file outside its folder through a symbolic link planted in it", async () => {
    const { root, store, dispose } = await tempStore();
    try {
      const secret = join(root, "secret.txt");
      await writeFile(secret, "TOP SECRET");
      const outside = join(root, "outside");
      await mkdir(outside);
      await writeFile(join(outside, "leak"), "TOP SECRET");
      const run = randomUUID();
      const attempt = join(root, "store", "runs", run, "s", "attempt-1");
      await mkdir(attempt, { recursive: true });
      // A link to a file, and a folder that is a link to a folder outside.
      await symlink(secret, join(attempt, "leak"));
      await symlink(outside, join(root, "store", "runs", run, "t"));
      for (const key of [`runs/${run}/s/attempt-1/leak`, `runs/${run}/t/leak`]) {
        await assert.rejects(store.get(key), (e: unknown) => isArtifactError(e, "NOT_FOUND"), key);
        assert.equal(await store.stat(key), undefined, key);
      }
      assert.deepEqual(await store.list(`runs/${run}/`), []);
      // A FIFO planted there is no object either, and does not hold a thread at open.
      const fifo = spawnSync("mkfifo", [join(attempt, "pipe")]);
      assert.equal(fifo.status, 0, String(fifo.stderr));
      assert.equal(await store.stat(`runs/${run}/s/attempt-1/pipe`), undefined);
      await assert.rejects(store.get(`runs/${run}/s/attempt-1/pipe`), (e: unknown) =>
        isArtifactError(e, "NOT_FOUND"),
      );
      // Objects of its own are read as ever, through a root that is a link itself too.
      await store.put(`runs/${run}/s/attempt-1/ok.txt`, "fine");
      const linked = new FilesystemArtifactStore({ root: join(root, "linked") });
      await symlink(join(root, "store"), join(root, "linked"));
      assert.equal((await readAll(await linked.get(`runs/${run}/s/attempt-1/ok.txt`))).toString(), "fine");
      assert.equal(
        (await linked.stat(`runs/${run}/s/attempt-1/ok.txt`))?.sha256,
        sha256Hex(Buffer.from("fine")),
      );
    } finally {
      await dispose();
    }
  });

  it("lays objects out as browsable files under the root and nothing outside it", async () => {
    const { root, store, dispose } = await tempStore();
    try {
      const run = randomUUID();
      await store.put(`runs/${run}/build/attempt-1/logs.jsonl`, '{"text":"hi"}\n');
      assert.equal(
        await readFile(join(root, "store", "runs", run, "build", "attempt-1", "logs.jsonl"), "utf8"),
        '{"text":"hi"}\n',
      );
      assert.deepEqual(await readdir(root), ["store"]);
      assert.deepEqual((await readdir(join(root, "store", ".tmp"))).length, 0, "no temporary file is left");
      for (const key of ["../outside", "runs/../../outside", "/etc/passwd"]) {
        await assert.rejects(store.put(key, "x"), (e: unknown) => isArtifactError(e, "INVALID_KEY"));
      }
      assert.deepEqual(await readdir(root), ["store"]);
    } finally {
      await dispose();
    }
  });

  it("hashes a file put there by hand (no sidecar) and one whose sidecar is stale", async () => {
    const { root, store, dispose } = await tempStore();
    try {
      await mkdir(join(root, "store", "manual"), { recursive: true });
      await writeFile(join(root, "store", "manual", "a.txt"), "by hand");
      const ref = await store.stat("manual/a.txt");
      assert.equal(ref?.sha256, sha256Hex(Buffer.from("by hand")));
      assert.equal(ref?.contentType, "application/octet-stream");

      await store.put("manual/b.txt", "original", { contentType: "text/plain" });
      await writeFile(join(root, "store", "manual", "b.txt"), "changed behind the store's back");
      const stale = await store.stat("manual/b.txt");
      assert.equal(stale?.sha256, sha256Hex(Buffer.from("changed behind the store's back")));
      assert.equal(stale?.contentType, "text/plain");
      assert.deepEqual(
        (await store.list("manual/")).map((r) => r.key),
        ["manual/a.txt", "manual/b.txt"],
      );
    } finally {
      await dispose();
    }
  });

  it("refuses a key whose folder is an object (and the other way round) with CONFLICT", async () => {
    const { store, dispose } = await tempStore();
    try {
      await store.put("x/file", "1");
      await assert.rejects(store.put("x/file/below", "2"), (e: unknown) => isArtifactError(e, "CONFLICT"));
      await assert.rejects(store.put("x", "3"), (e: unknown) => isArtifactError(e, "CONFLICT"));
      assert.equal((await readAll(await store.get("x/file"))).toString(), "1");
    } finally {
      await dispose();
    }
  });

  it("delete() prunes the folders it empties", async () => {
    const { root, store, dispose } = await tempStore();
    try {
      await store.put("runs/r/a/attempt-1/logs.jsonl", "1");
      await store.put("keep/me", "2");
      assert.equal(await store.delete("runs/"), 1);
      assert.deepEqual((await readdir(join(root, "store"))).sort(), [".meta", ".tmp", "keep"]);
      assert.equal(await store.delete(), 1);
      assert.deepEqual((await readdir(join(root, "store"))).sort(), [".meta", ".tmp"]);
    } finally {
      await dispose();
    }
  });

  it("createArtifactStore picks the filesystem without an S3 endpoint and creates the folder", async () => {
    const root = await mkdtemp(join(tmpdir(), "nf-artifacts-"));
    try {
      const store = await createArtifactStore(
        loadExecutorConfig({ ARTIFACTS_DIR: join(root, "a", "b") }).artifacts,
      );
      assert.equal(store.kind, "filesystem");
      await store.put("k", "v");
      assert.equal(await readFile(join(root, "a", "b", "k"), "utf8"), "v");
      await store.close();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("createArtifactStore names the missing credential when S3 is configured without one", async () => {
    await assert.rejects(
      createArtifactStore(
        loadExecutorConfig({ S3_ENDPOINT: "http://127.0.0.1:1", S3_SECRET_KEY: "s" }).artifacts,
      ),
      (e: unknown) =>
        e instanceof Error &&
        e.name === "ConfigError" &&
        (e as { variable?: string }).variable === "S3_ACCESS_KEY",
    );
  });
});
