/**
 * The elements of a map step are tasks of their own that share the step id: each must store in
 * its own folder of the artifact store (`runs/{run}/{step}/element-{i}/attempt-{n}/`, from
 * Lease.element_index), or their offloaded outputs, logs and files overwrite each other (an
 * element's output read back as another's, or refused as corrupt). A real scheduler on embedded
 * PostgreSQL, an in-process Executor offloading every output over 1 KiB to a filesystem store, and
 * ArtifactService read over gRPC with elements named `{step}[{i}]`, as GetRun names their tasks.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { valueToJson } from "@nexusflow/common";
import { FilesystemArtifactStore } from "@nexusflow/common/artifacts";
import { ArtifactLogSink, Executor } from "@nexusflow/executor";
import { ArtifactService, RunStatus, type Run } from "@nexusflow/gen";
import pg from "pg";
import { PgTaskIndex } from "../../src/api/artifact-service.js";
import type { Scheduler } from "../../src/scheduler.js";
import { describeRun, registerSpec, task } from "../e2e/harness.js";
import {
  startRunOf,
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitForRun,
  workflowClient,
} from "../support.js";

/** Elements per run: 12, so element 1's folder and element 10's are both there. */
const ELEMENTS = 12;
/** An element's output: ~2 KB, over the executor's offload threshold, different for each element. */
const outputOf = (i: number) => ({ index: i, text: `${i}:`.padEnd(2000, String.fromCharCode(97 + i)) });

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const m of stream) out.push(m);
  return out;
}

describe("map elements' artifacts", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>> | undefined;
  let root: string | undefined;
  let scheduler: Scheduler | undefined;
  let executor: Executor | undefined;
  let pool: pg.Pool | undefined;
  let runs: ReturnType<typeof workflowClient>;
  let artifacts: Client<typeof ArtifactService>;
  let done: Run;

  before(async () => {
    db = await startTestDatabase();
    root = await mkdtemp(join(tmpdir(), "nf-map-element-artifacts-"));
    const executorStore = new FilesystemArtifactStore({ root });
    await executorStore.ensureReady();
    scheduler = await startTestScheduler(db.url, { artifacts: new FilesystemArtifactStore({ root }) });
    runs = workflowClient(scheduler.address);
    artifacts = createClient(
      ArtifactService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}` }),
    );
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    // Every element waits for all of them to be running, so their writes overlap.
    let started = 0;
    let allStarted: () => void = () => {};
    const together = new Promise<void>((resolve) => (allStarted = resolve));
    executor = new Executor({
      schedulerAddress: scheduler.address,
      logger: testLogger("executor"),
      reconnect: { initialDelayMs: 20, maxDelayMs: 500 },
      drainTimeoutMs: 2000,
      slots: ELEMENTS + 4,
      artifacts: executorStore,
      logSink: new ArtifactLogSink({ store: executorStore, flushIntervalMs: 50 }),
      offloadThresholdBytes: 1024,
    })
      .register("me.split", (input: { n: number }) => Array.from({ length: input.n }, (_, i) => i))
      .register("me.element", async (input: { i: number }, ctx) => {
        ctx.log.info(`element ${input.i} here`);
        await ctx.artifacts.put("note.txt", `note of element ${input.i}`, { contentType: "text/plain" });
        if (++started === ELEMENTS) allStarted();
        await together;
        return outputOf(input.i);
      })
      .register("me.join", (input: { index: number; text: string }[]) => ({
        indexes: input.map((o) => o.index),
        own: input.map((o) => o.text === outputOf(o.index).text),
      }));
    await executor.start();
    await registerSpec(runs, {
      name: "map-element-artifacts",
      version: 1,
      steps: [
        { id: "split", type: "me.split", input: { n: "{{ input.n }}" } },
        {
          id: "each",
          type: "me.element",
          dependsOn: ["split"],
          map: { items: "steps.split.output", parallelism: ELEMENTS },
          input: { i: "{{ index }}" },
          retry: { maxAttempts: 1 },
        },
        { id: "join", type: "me.join", dependsOn: ["each"], input: "{{ steps.each.output }}" },
      ],
      output: "{{ steps.join.output }}",
    });
    const runId = await startRunOf(runs, "map-element-artifacts", { n: ELEMENTS });
    done = await waitForRun(runs, runId, 60_000);
  });

  after(async () => {
    await executor?.stop("test over");
    await scheduler?.stop();
    await pool?.end();
    await db?.close();
    if (root !== undefined) await rm(root, { recursive: true, force: true });
  });

  const folder = (i: number): string => `runs/${done.id}/each/element-${i}/attempt-1/`;
  const content = async (key: string): Promise<string> => {
    const messages = await collect(artifacts.getArtifact({ key }));
    return Buffer.concat(messages.slice(1).map((m) => Buffer.from(m.chunk))).toString("utf8");
  };

  it("reads each element's offloaded output back as its own", { timeout: 90_000 }, async () => {
    assert.equal(done.status, RunStatus.SUCCEEDED, describeRun(done));
    const indexes = Array.from({ length: ELEMENTS }, (_, i) => i);
    assert.deepEqual(valueToJson(done.output), { indexes, own: indexes.map(() => true) });
    for (const i of indexes) {
      const element = task(done, `each[${i}]`);
      assert.equal(element.output, undefined, "offloaded");
      assert.equal(element.outputRef?.key, `${folder(i)}output.json`);
      assert.equal(element.attempts[0]?.logs?.key, `${folder(i)}logs.jsonl`);
      assert.deepEqual(JSON.parse(await content(`${folder(i)}output.json`)), outputOf(i));
    }
  });

  it("serves an element's log and files by `{step}[{i}]`, the map step's with all its elements'", async () => {
    assert.equal(done.status, RunStatus.SUCCEEDED, describeRun(done));
    for (const i of [0, 1, 10]) {
      const lines = (await collect(artifacts.getTaskLogs({ runId: done.id, stepId: `each[${i}]` }))).flatMap(
        (m) => m.lines,
      );
      assert.deepEqual(
        lines.map((l) => l.text),
        [`element ${i} here`],
      );
      const listed = (await artifacts.listArtifacts({ runId: done.id, stepId: `each[${i}]` })).artifacts;
      assert.deepEqual(
        listed.map((a) => a.key),
        ["logs.jsonl", "note.txt", "output.json"].map((name) => `${folder(i)}${name}`),
        "element 1's listing holds nothing of element 10's",
      );
      assert.equal(await content(`${folder(i)}note.txt`), `note of element ${i}`);
    }
    const all = (await artifacts.listArtifacts({ runId: done.id, stepId: "each" })).artifacts;
    assert.equal(all.length, 3 * ELEMENTS);
    assert.ok(all.every((a) => a.key.startsWith(`runs/${done.id}/each/element-`)));
    for (const stepId of ["each[01]", "each[-1]", "each[x]", "each[1].compensation"])
      await assert.rejects(
        collect(artifacts.getTaskLogs({ runId: done.id, stepId })),
        (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument,
        stepId,
      );
    await assert.rejects(
      collect(artifacts.getTaskLogs({ runId: done.id, stepId: `each[${ELEMENTS}]` })),
      (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound,
    );
    // The map step's own task ran nothing: the answer names its elements, not "never ran".
    await assert.rejects(
      collect(artifacts.getTaskLogs({ runId: done.id, stepId: "each" })),
      (e: unknown) =>
        e instanceof ConnectError &&
        e.code === Code.NotFound &&
        /^step each of run \S+ is a map step: .*name one \(each\[0\], each\[1\], \.\.\.\)$/.test(
          e.rawMessage,
        ),
    );
  });

  it("finds the refs reported for a map step's elements, or for one element", async () => {
    assert.ok(pool);
    const index = new PgTaskIndex(pool);
    const ofStep = await index.reportedKeys(done.id, { stepId: "each", kind: "STEP" });
    const expected = Array.from({ length: ELEMENTS }, (_, i) => [
      `${folder(i)}logs.jsonl`,
      `${folder(i)}output.json`,
    ]).flat();
    assert.deepEqual([...ofStep].sort(), [...expected].sort());
    assert.deepEqual([...(await index.reportedKeys(done.id, { stepId: "each[1]", kind: "STEP" }))].sort(), [
      `${folder(1)}logs.jsonl`,
      `${folder(1)}output.json`,
    ]);
    const split = await index.reportedKeys(done.id, { stepId: "split", kind: "STEP" });
    assert.ok(
      split.every((k) => k.startsWith(`runs/${done.id}/split/attempt-1/`)),
      JSON.stringify(split),
    );
  });
});
