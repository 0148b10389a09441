import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { loadExecutorConfig } from "../config.js";
import { artifactStoreContract } from "./contract.js";
import { isArtifactError } from "./errors.js";
import { FilesystemArtifactStore } from "./filesystem.js";
import { createArtifactStore } from "./factory.js";
import { readAll, sha256Hex } from "./store.js";

async function tempStore(useProcFd?: boolean): Promise<{
  root: string;
  store: FilesystemArtifactStore;
  dispose: () => Promise<void>;
}> {
  const root = await mkdtemp(join(tmpdir(), "nf-artifacts-"));
  const store = new FilesystemArtifactStore({ root: join(root, "store"), useProcFd });
  await store.ensureReady();
  return { root, store, dispose: () => rm(root, { recursive: true, force: true }) };
}

artifactStoreContract("filesystem", () => tempStore());
artifactStoreContract("filesystem without /proc/self/fd", () => tempStore(false));

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

  for (const useProcFd of [true, false]) {
    const mode = useProcFd ? "" : " (without /proc/self/fd)";

    it(`writes nothing outside its folder or into another run's through a planted link${mode}`, async () => {
      const { root, store, dispose } = await tempStore(useProcFd);
      try {
        const outside = join(root, "outside");
        await mkdir(outside);
        const [run, other, victim] = [randomUUID(), randomUUID(), randomUUID()];
        const runs = join(root, "store", "runs");
        await store.put(`runs/${victim}/s/attempt-1/logs.jsonl`, "victim's");
        await mkdir(join(runs, run), { recursive: true });
        // A folder of the key that is a link outside, and one that is a link to another run's.
        await symlink(outside, join(runs, run, "s"));
        await symlink(join(runs, victim), join(runs, other));
        const isLinkRefused = (e: unknown): boolean => isArtifactError(e, "CONFLICT");
        await assert.rejects(store.put(`runs/${run}/s/attempt-1/x`, "1"), isLinkRefused);
        await assert.rejects(store.put(`runs/${run}/s/x`, "2"), isLinkRefused);
        await assert.rejects(store.put(`runs/${other}/s/attempt-1/logs.jsonl`, "3"), isLinkRefused);
        await assert.rejects(store.put(`runs/${other}/t/attempt-1/new`, "4"), isLinkRefused);
        // A folder of the sidecars that is a link outside.
        await mkdir(join(root, "store", ".meta", "runs", run), { recursive: true });
        await symlink(outside, join(root, "store", ".meta", "runs", run, "m"));
        await assert.rejects(store.put(`runs/${run}/m/attempt-1/y`, "5"), isLinkRefused);
        assert.deepEqual(await readdir(outside), [], "nothing was written outside the root");
        assert.deepEqual(await readdir(join(runs, victim)), ["s"]);
        assert.deepEqual(await readdir(join(runs, victim, "s", "attempt-1")), ["logs.jsonl"]);
        assert.equal(
          (await readAll(await store.get(`runs/${victim}/s/attempt-1/logs.jsonl`))).toString(),
          "victim's",
        );
        // A link at the object's own name is replaced, never written through.
        await writeFile(join(outside, "target"), "untouched");
        await mkdir(join(runs, run, "u"));
        await symlink(join(outside, "target"), join(runs, run, "u", "obj"));
        await store.put(`runs/${run}/u/obj`, "mine");
        assert.equal(await readFile(join(outside, "target"), "utf8"), "untouched");
        assert.ok((await lstat(join(runs, run, "u", "obj"))).isFile());
        assert.equal((await readAll(await store.get(`runs/${run}/u/obj`))).toString(), "mine");
        // The folder of writes in progress planted as a link: no write at all.
        await rm(join(root, "store", ".tmp"), { recursive: true });
        await symlink(outside, join(root, "store", ".tmp"));
        await assert.rejects(store.put(`runs/${run}/u/other`, "6"), isLinkRefused);
        assert.deepEqual(await readdir(outside), ["target"]);
        await assert.rejects(store.ensureReady(), (e: unknown) => isArtifactError(e, "UNAVAILABLE"));
      } finally {
        await dispose();
      }
    });

    it(`delete() removes a planted link itself, never what it points to${mode}`, async () => {
      const { root, store, dispose } = await tempStore(useProcFd);
      try {
        const outside = join(root, "outside");
        await mkdir(outside);
        await writeFile(join(outside, "keep"), "outside");
        const [run, other, victim] = [randomUUID(), randomUUID(), randomUUID()];
        const runs = join(root, "store", "runs");
        await store.put(`runs/${victim}/s/attempt-1/logs.jsonl`, "victim's");
        await store.put(`runs/${run}/t/attempt-1/f`, "mine");
        // Links inside the run's folder: to a folder outside, to a file outside.
        await symlink(outside, join(runs, run, "s"));
        await symlink(join(outside, "keep"), join(runs, run, "t", "attempt-1", "leak"));
        // Runs whose folders are links: outside, and to another run's folder.
        await symlink(outside, join(runs, other));
        const linked = randomUUID();
        await symlink(join(runs, victim), join(runs, linked));
        await mkdir(join(root, "store", ".meta", "runs"), { recursive: true });
        await symlink(outside, join(root, "store", ".meta", "runs", other));

        assert.equal(await store.delete(`runs/${run}/`), 1);
        assert.equal(await store.delete(`runs/${other}/`), 0);
        assert.equal(await store.delete(`runs/${linked}/`), 0);
        assert.deepEqual(await readdir(outside), ["keep"]);
        assert.equal(await readFile(join(outside, "keep"), "utf8"), "outside");
        assert.equal(
          (await readAll(await store.get(`runs/${victim}/s/attempt-1/logs.jsonl`))).toString(),
          "victim's",
        );
        // The links are gone, and the folders they left empty.
        assert.deepEqual(await readdir(runs), [victim]);
        assert.deepEqual(await readdir(join(root, "store", ".meta", "runs")), [victim]);

        // Deleting everything removes the store's objects only.
        await symlink(outside, join(runs, "everything"));
        assert.equal(await store.delete(), 1);
        assert.deepEqual((await readdir(join(root, "store"))).sort(), [".meta", ".tmp"]);
        assert.deepEqual(await readdir(outside), ["keep"]);
      } finally {
        await dispose();
      }
    });

    it(`list() does not follow a link at any folder of its prefix${mode}`, async () => {
      const { root, store, dispose } = await tempStore(useProcFd);
      try {
        const outside = join(root, "outside");
        await mkdir(join(outside, "attempt-1"), { recursive: true });
        await writeFile(join(outside, "attempt-1", "secret"), "outside");
        const [run, other, victim] = [randomUUID(), randomUUID(), randomUUID()];
        const runs = join(root, "store", "runs");
        await store.put(`runs/${victim}/s/attempt-1/logs.jsonl`, "victim's");
        await symlink(outside, join(runs, run));
        await symlink(join(runs, victim), join(runs, other));
        for (const prefix of [
          `runs/${run}/`,
          `runs/${run}/attempt-1/`,
          `runs/${run}/attempt-1/se`,
          `runs/${other}/`,
          `runs/${other}/s/attempt-1/`,
        ]) {
          assert.deepEqual(await store.list(prefix), [], prefix);
          assert.deepEqual(await store.list(prefix, { metadata: false }), [], prefix);
        }
        assert.deepEqual(
          (await store.list("runs/")).map((r) => r.key),
          [`runs/${victim}/s/attempt-1/logs.jsonl`],
        );
        // Nor does reading an object through one, even to another run's folder inside the root.
        assert.equal(await store.stat(`runs/${other}/s/attempt-1/logs.jsonl`), undefined);
        await assert.rejects(store.get(`runs/${other}/s/attempt-1/logs.jsonl`), (e: unknown) =>
          isArtifactError(e, "NOT_FOUND"),
        );
      } finally {
        await dispose();
      }
    });
  }

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
