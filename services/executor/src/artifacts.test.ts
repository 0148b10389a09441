import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, it } from "node:test";
import { toJson } from "@bufbuild/protobuf";
import {
  type ArtifactStore,
  ArtifactError,
  FilesystemArtifactStore,
  isArtifactError,
  readAll,
  resolveOutputRef,
} from "@nexusflow/common/artifacts";
import { ArtifactRefSchema } from "@nexusflow/gen";
import { createTaskArtifacts, settleOutput } from "./artifacts.js";
import { PayloadError } from "./payload.js";
import { isTaskError } from "./handlers/task-error.js";

const RUN = "7d1c2b3a-0000-4000-8000-000000000001";
const identity = { runId: RUN, stepId: "report", attempt: 3 };
const prefix = `runs/${RUN}/report/attempt-3/`;

function broken(inner: ArtifactStore): ArtifactStore {
  return {
    ...inner,
    kind: inner.kind,
    put: () => Promise.reject(new ArtifactError("UNAVAILABLE", "store down")),
  };
}

function isTaskErrorOf(type: string, retryable: boolean) {
  return (e: unknown): boolean => isTaskError(e) && e.type === type && e.retryable === retryable;
}

describe("ctx.artifacts", () => {
  let root: string;
  let store: FilesystemArtifactStore;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "nf-artifacts-"));
    store = new FilesystemArtifactStore({ root });
    await store.ensureReady();
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("saves files under the attempt's folder and returns their refs", async () => {
    const artifacts = createTaskArtifacts(store, identity);
    const ref = await artifacts.put("reports/summary.csv", "a,b\n1,2\n", { contentType: "text/csv" });
    assert.equal(ref.key, `${prefix}reports/summary.csv`);
    assert.equal(ref.name, "reports/summary.csv");
    assert.equal(ref.contentType, "text/csv");
    assert.equal(ref.size, 8n);
    assert.equal((await readAll(await store.get(ref.key))).toString(), "a,b\n1,2\n");
    const streamed = await artifacts.put("dump.bin", Readable.from([Buffer.from([1, 2]), Buffer.from([3])]));
    assert.equal(streamed.size, 3n);
    assert.deepEqual(
      (await store.list(prefix)).map((r) => r.name),
      ["dump.bin", "reports/summary.csv"],
    );
  });

  it("refuses reserved and unsafe names with a terminal INVALID_ARTIFACT", async () => {
    const artifacts = createTaskArtifacts(store, identity);
    for (const name of [
      "logs.jsonl",
      "logs/00001.jsonl",
      "output.json",
      "../escape",
      "/abs",
      "a/../../b",
      "",
    ]) {
      await assert.rejects(artifacts.put(name, "x"), isTaskErrorOf("INVALID_ARTIFACT", false), name);
    }
    await assert.rejects(
      artifacts.put("ok.txt", "x", { contentType: "bad type" }),
      isTaskErrorOf("INVALID_ARTIFACT", false),
    );
    assert.deepEqual(await store.list(""), []);
  });

  it("fails retryably when the store is down, and terminally when there is no store", async () => {
    await assert.rejects(
      createTaskArtifacts(broken(store), identity).put("a.txt", "x"),
      isTaskErrorOf("ARTIFACT_STORE_UNAVAILABLE", true),
    );
    await assert.rejects(
      createTaskArtifacts(undefined, identity).put("a.txt", "x"),
      isTaskErrorOf("ARTIFACTS_UNAVAILABLE", false),
    );
  });
});

describe("settleOutput (claim check)", () => {
  let root: string;
  let store: FilesystemArtifactStore;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "nf-offload-"));
    store = new FilesystemArtifactStore({ root });
    await store.ensureReady();
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const big = { rows: Array.from({ length: 5000 }, (_, i) => ({ i, name: `row-${i}`, ok: i % 2 === 0 })) };

  it("keeps small outputs inline", async () => {
    const settled = await settleOutput({ y: 2 }, identity, 1024 * 1024, { store });
    assert.deepEqual(settled, { output: { y: 2 } });
    assert.deepEqual(await store.list(""), []);
    assert.deepEqual(await settleOutput(undefined, identity, 1024, { store }), { output: null });
  });

  it("offloads outputs over the threshold as output.json, and the ref resolves to the same value", async () => {
    const settled = await settleOutput(big, identity, 3 * 1024 * 1024, { store, thresholdBytes: 64 * 1024 });
    assert.equal(settled.output, undefined);
    const ref = settled.outputRef;
    assert.ok(ref);
    assert.equal(ref.key, `${prefix}output.json`);
    assert.equal(ref.contentType, "application/json");
    assert.equal(ref.size, BigInt(Buffer.byteLength(JSON.stringify(big))));
    assert.deepEqual(await resolveOutputRef(store, ref), big);
    // The JSON form kept in PostgreSQL resolves too.
    assert.deepEqual(await resolveOutputRef(store, toJson(ArtifactRefSchema, ref)), big);
  });

  it("offloads anything over maxPayloadBytes even when the threshold is higher", async () => {
    const settled = await settleOutput(big, identity, 10_000, { store, thresholdBytes: 10 * 1024 * 1024 });
    assert.ok(settled.outputRef);
  });

  it("without a store, large outputs fail TOO_LARGE as before", async () => {
    await assert.rejects(
      settleOutput(big, identity, 10_000),
      (e: unknown) => e instanceof PayloadError && e.problem === "TOO_LARGE",
    );
  });

  it("outputs over the offload limit fail TOO_LARGE; unserialisable ones NOT_JSON", async () => {
    await assert.rejects(
      settleOutput(big, identity, 1000, { store, thresholdBytes: 1000, maxBytes: 5000 }),
      (e: unknown) => e instanceof PayloadError && e.problem === "TOO_LARGE",
    );
    const cyclic: Record<string, unknown> = {};
    cyclic["self"] = cyclic;
    await assert.rejects(
      settleOutput(cyclic, identity, 1000, { store }),
      (e: unknown) => e instanceof PayloadError && e.problem === "NOT_JSON",
    );
    await assert.rejects(
      settleOutput(() => 1, identity, 1000, { store }),
      (e: unknown) => e instanceof PayloadError && e.problem === "NOT_JSON",
    );
  });

  it("refuses an offloaded output holding a NUL character (NUL), naming where, and stores nothing", async () => {
    const nul = { ...big, note: { text: "a\u0000b" } };
    await assert.rejects(
      settleOutput(nul, identity, 10_000, { store }),
      (e: unknown) =>
        e instanceof PayloadError && e.problem === "NUL" && /at output\.note\.text/.test(e.message),
    );
    assert.deepEqual(await store.list(""), []);
    // An escaped backslash before "u0000" is text, not a NUL.
    const text = { ...big, note: "\\u0000" };
    assert.ok((await settleOutput(text, identity, 10_000, { store })).outputRef);
  });

  it("refuses an inline output nested deeper than a report carries (TOO_DEEP); an offloaded one goes", async () => {
    let deep: unknown = 1;
    for (let i = 0; i < 49; i++) deep = [deep];
    await assert.rejects(
      settleOutput(deep, identity, 1024 * 1024, { store }),
      (e: unknown) => e instanceof PayloadError && e.problem === "TOO_DEEP",
    );
    assert.deepEqual(await store.list(""), []);
    // Offloaded, it does not travel in a report.
    assert.ok((await settleOutput(deep, identity, 1024, { store, thresholdBytes: 10 })).outputRef);
  });

  it("a store that cannot take the output fails the attempt retryably", async () => {
    await assert.rejects(
      settleOutput(big, identity, 1000, { store: broken(store), thresholdBytes: 1000 }),
      isTaskErrorOf("OUTPUT_OFFLOAD_FAILED", true),
    );
  });

  it("resolveOutputRef detects a tampered or missing output", async () => {
    const { outputRef } = await settleOutput(big, identity, 1000, { store, thresholdBytes: 1000 });
    assert.ok(outputRef);
    await writeFile(join(root, ...outputRef.key.split("/")), JSON.stringify({ ...big, extra: 1 }));
    await assert.rejects(resolveOutputRef(store, outputRef), (e: unknown) => isArtifactError(e, "INTEGRITY"));
    await store.delete(outputRef.key);
    await assert.rejects(resolveOutputRef(store, outputRef), (e: unknown) => isArtifactError(e, "NOT_FOUND"));
    await assert.rejects(resolveOutputRef(store, { nonsense: true }), (e: unknown) => isArtifactError(e));
  });
});
