/**
 * A lease of an element of a map step (Lease.element_index) stores in the element's own folder:
 * its log, its files and its offloaded output, so two elements of one step (same step id, same
 * attempt number) never overwrite each other's objects.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createLogger } from "@nexusflow/common";
import { FilesystemArtifactStore, readAll, resolveOutputRef } from "@nexusflow/common/artifacts";
import { type Lease, type LeaseKey, LeaseSchema, TaskKind } from "@nexusflow/gen";
import { jsonToValue } from "@nexusflow/common";
import { ArtifactLogSink } from "./artifact-log-sink.js";
import { TaskAttempt } from "./task-attempt.js";

const RUN = "7d1c2b3a-0000-4000-8000-0000000000e1";

describe("a map element's attempt", () => {
  let root: string;
  let store: FilesystemArtifactStore;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "nf-element-folders-"));
    store = new FilesystemArtifactStore({ root });
    await store.ensureReady();
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** Runs attempt 1 of step `fan` (element `elementIndex`, or the plain step) to completion. */
  async function runElement(elementIndex: number | undefined, kind = TaskKind.STEP) {
    const lease = create(LeaseSchema, {
      key: { taskRunId: `tr-${elementIndex ?? "step"}`, attempt: 1, fencingToken: 1n },
      runId: RUN,
      stepId: "fan",
      taskType: "t",
      kind,
      input: jsonToValue({ i: elementIndex ?? -1 }),
      ...(elementIndex === undefined ? {} : { elementIndex }),
    }) as Lease & { key: LeaseKey };
    const silent = createLogger("test", "silent");
    const attempt = new TaskAttempt(lease, {
      logSink: new ArtifactLogSink({ store }),
      logger: () => silent,
      maxPayloadBytes: 1024 * 1024,
      artifacts: store,
      offload: { store, thresholdBytes: 64 },
      sendHeartbeat: () => {},
    });
    const outcome = await attempt.run(async (input, ctx) => {
      const { i } = input as { i: number };
      ctx.log.info(`element ${i}`);
      await ctx.artifacts.put("note.txt", `note ${i}`);
      return { i, pad: "x".repeat(200) };
    });
    assert.equal(outcome.status, "completed");
    assert.ok(outcome.status === "completed" && outcome.outputRef !== undefined, "offloaded");
    return outcome;
  }

  it("stores its log, files and offloaded output under runs/{run}/{step}/element-{i}/attempt-{n}/", async () => {
    const one = await runElement(1);
    const ten = await runElement(10);
    const step = await runElement(undefined);
    for (const [i, outcome] of [
      [1, one],
      [10, ten],
    ] as const) {
      const folder = `runs/${RUN}/fan/element-${i}/attempt-1/`;
      assert.equal(outcome.outputRef?.key, `${folder}output.json`);
      assert.equal(outcome.logs?.key, `${folder}logs.jsonl`);
      assert.deepEqual(await resolveOutputRef(store, outcome.outputRef), { i, pad: "x".repeat(200) });
      assert.equal((await readAll(await store.get(`${folder}note.txt`))).toString(), `note ${i}`);
      assert.match(
        (await readAll(await store.get(`${folder}logs.jsonl`))).toString(),
        new RegExp(`element ${i}\\b`),
      );
    }
    // A step that is no map element keeps the step's own folder.
    assert.equal(step.outputRef?.key, `runs/${RUN}/fan/attempt-1/output.json`);
    assert.deepEqual(
      (await store.list(`runs/${RUN}/fan/element-1/`)).map((r) => r.key),
      ["logs.jsonl", "note.txt", "output.json"].map((n) => `runs/${RUN}/fan/element-1/attempt-1/${n}`),
      "nothing of element 10's in element 1's folder",
    );
  });

  it("keeps element 0 apart from the step's own folder", async () => {
    const zero = await runElement(0);
    assert.equal(zero.outputRef?.key, `runs/${RUN}/fan/element-0/attempt-1/output.json`);
  });
});
