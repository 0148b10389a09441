/**
 * Executors to every replica across a crash (issue #22): replica B is a real scheduler process,
 * SIGKILLed while a step it leased runs on an executor given only A's address. A takes B's
 * partitions and loads the run (its lease in its grace); the executor's reports of that lease go
 * to A, which adopts the lease; the step's completion is accepted there and the run finishes with
 * the step run once: one attempt, number 1, SUCCEEDED.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { RunStatus } from "@nexusflow/gen";
import type { Executor, TaskContext } from "@nexusflow/executor";
import pg from "pg";
import { partitionOf } from "../../src/cluster/partitioning.js";
import type { Scheduler } from "../../src/scheduler.js";
import { killAll, startSchedulerProcess } from "../e2e/processes.js";
import {
  registerSpec,
  startRunOf,
  startTestDatabase,
  startTestExecutor,
  startTestScheduler,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

describe("an executor with sessions to every replica, when one replica is SIGKILLed", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let sql: pg.Pool;
  let a: Scheduler | undefined;
  let executor: Executor | undefined;
  const holds = new Map<string, { release: () => void; signal: AbortSignal; attempt: number }>();

  before(async () => {
    server = await startTestDatabase();
    sql = new pg.Pool({ connectionString: server.url, max: 2 });
  });
  after(async () => {
    for (const h of holds.values()) h.release();
    await executor?.stop();
    await killAll();
    await a?.stop();
    await sql?.end();
    await server?.close();
  });

  it("A adopts the lease of B's run and accepts its completion: the step ran once", async () => {
    a = await startTestScheduler(server.url, { cluster: true, partitionLeaseMs: 1000 });
    const first = a;
    const b = await startSchedulerProcess("replica-b", server.url, 0, {
      SCHEDULER_CLUSTER: "true",
      PARTITION_LEASE: "1000ms",
    });
    await waitFor("an even split", () => first.partitions.held().length === 8 || undefined);
    // ...and B holding the other half (A handed it over; B takes it at its next heartbeat).
    await b.process.waitForLog("B's partitions", (l) => l.msg === "took partitions");
    executor = await startTestExecutor(
      first,
      { executorId: "crash", slots: 4, replicaRefreshMs: 200 },
      (e) => {
        e.register("hold", (_input: unknown, ctx: TaskContext) => {
          return new Promise((resolve, reject) => {
            holds.set(ctx.runId, {
              release: () => resolve({ held: true }),
              signal: ctx.signal,
              attempt: ctx.attempt,
            });
            ctx.signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true });
          });
        });
        e.register("work", () => ({ ok: true }));
      },
    );
    const ex = executor;
    await waitFor("a session to each replica", () => ex.replicaSessions.size === 2 || undefined);

    await registerSpec(workflowClient(first.address), {
      name: "crash-hold",
      version: 1,
      steps: [
        { id: "hold", type: "hold" },
        { id: "after", type: "work", dependsOn: ["hold"] },
      ],
    });
    const runId = await startRunOf(workflowClient(b.address), "crash-hold");
    const mine = new Set(first.partitions.held().map((h) => h.partition));
    assert.ok(!mine.has(partitionOf(runId, 16)), "the run is in one of B's partitions");
    await waitFor("B leased the step to the executor", () => holds.get(runId));

    await b.process.kill();
    await waitFor("A takes B's partitions", () => first.partitions.held().length === 16 || undefined);
    await waitFor(
      "A adopted the lease on the executor's session",
      () => first.engine.sessions().some((s) => s.executorId === "crash" && s.leases.size > 0) || undefined,
    );
    const hold = holds.get(runId);
    assert.ok(hold !== undefined);
    assert.equal(hold.signal.aborted, false, "the task went on through the crash");
    hold.release();

    const run = await waitForRun(workflowClient(first.address), runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    const { rows } = await sql.query<{ number: number; status: string }>(
      `SELECT a.number, a.status FROM task_runs t JOIN task_attempts a ON a.task_run_id = t.id
       WHERE t.run_id = $1 AND t.step_id = 'hold' ORDER BY a.number`,
      [runId],
    );
    assert.deepEqual(
      rows.map((r) => [r.number, r.status]),
      [[1, "SUCCEEDED"]],
      "one attempt, number 1, which succeeded: accepted once, run once",
    );
    await waitFor("the session to B closed", () =>
      ex.replicaSessions.size === 1 && ex.replicaSessions.has(first.partitions.replicaId) ? true : undefined,
    );
  });
});
