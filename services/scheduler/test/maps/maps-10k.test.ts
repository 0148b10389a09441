/**
 * The largest map a step takes, on a real scheduler, PostgreSQL and an in-process executor: a
 * 1 -> 10,000 -> 1 map with parallelism 50 finishes with every output in order, never more than
 * 50 elements at once, and the scheduler's heap (this process: scheduler and executor both) grows
 * by well under 500 MB while it runs. The slowest map test (about 3 s here; 120 s allowed).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import { startTestDatabase, startTestScheduler, testLogger, waitFor, workflowClient } from "../support.js";

const N = 10_000;

describe("a 10,000-element map", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;
  let executor: Executor | undefined;
  let sql: pg.Client;
  let running = 0;
  let mostRunning = 0;
  let calls = 0;

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    const sched = (scheduler = await startTestScheduler(db.url));
    executor = new Executor({
      schedulerAddress: sched.address,
      executorId: "maps-10k",
      slots: 64,
      builtins: false,
      drainTimeoutMs: 1000,
      logger: testLogger("executor"),
    })
      .register("big.split", (input: { n: number }) => Array.from({ length: input.n }, (_, i) => i))
      .register("big.element", async (input: { x: number }) => {
        calls++;
        running++;
        mostRunning = Math.max(mostRunning, running);
        try {
          await new Promise((resolve) => setImmediate(resolve));
          return input.x + 1;
        } finally {
          running--;
        }
      })
      .register("big.join", (input: number[]) => ({
        count: input.length,
        inOrder: input.every((v, i) => v === i + 1),
      }));
    await executor.start();
    await waitFor("the executor's session", () =>
      [...sched.engine.sessions()].some((s) => s.executorId === "maps-10k" && s.credit > 0)
        ? true
        : undefined,
    );
  });

  after(async () => {
    await executor?.stop("test over");
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  it(
    "1 -> 10,000 -> 1 with parallelism 50 finishes in order, within bounds of memory",
    { timeout: 120_000 },
    async () => {
      assert.ok(scheduler);
      const client = workflowClient(scheduler.address);
      await client.registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({
            name: "big-map",
            version: 1,
            steps: [
              { id: "split", type: "big.split", input: { n: "{{ input.n }}" } },
              {
                id: "each",
                type: "big.element",
                dependsOn: ["split"],
                map: { items: "steps.split.output", parallelism: 50 },
                input: { x: "{{ item }}" },
              },
              { id: "join", type: "big.join", dependsOn: ["each"], input: "{{ steps.each.output }}" },
            ],
            output: "{{ steps.join.output }}",
          }),
        },
      });
      const heapBefore = process.memoryUsage().heapUsed;
      let heapMost = heapBefore;
      const { run } = await client.startRun({ workflowName: "big-map", input: jsonToValue({ n: N }) });
      assert.ok(run);
      // Read the run's row, not GetRun: its answer would list all 10,002 task runs.
      const ended = await waitFor(
        "the 10,000-element map to finish",
        async () => {
          heapMost = Math.max(heapMost, process.memoryUsage().heapUsed);
          const { rows } = await sql.query<{ status: string; output: unknown; error: unknown }>(
            "SELECT status, output, error FROM workflow_runs WHERE id = $1",
            [run.id],
          );
          const row = rows[0];
          return row !== undefined && row.status !== "RUNNING" ? row : undefined;
        },
        110_000,
      );
      assert.equal(ended.status, "SUCCEEDED", JSON.stringify(ended.error));
      assert.deepEqual(ended.output, { count: N, inOrder: true });
      assert.equal(calls, N);
      assert.ok(mostRunning <= 50, `at most 50 elements at once, got ${mostRunning}`);
      const { rows } = await sql.query<{ n: string }>(
        "SELECT count(*) AS n FROM task_runs WHERE run_id = $1 AND step_id LIKE 'each[%' AND status = 'SUCCEEDED'",
        [run.id],
      );
      assert.equal(Number(rows[0]?.n), N);
      const grewMb = (heapMost - heapBefore) / 2 ** 20;
      assert.ok(grewMb < 500, `the heap grew by ${grewMb.toFixed(0)} MB`);
      // GetRun of the run still answers (its element task runs listed from the rows).
      const { run: got } = await client.getRun({ runId: run.id });
      assert.deepEqual(valueToJson(got?.output), { count: N, inOrder: true });
    },
  );
});
