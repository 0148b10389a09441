/**
 * PostgreSQL stopped for a few seconds and started again under a running scheduler: clients get
 * UNAVAILABLE quickly (never a hang), the scheduler recovers by itself, and the run completes.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ConnectError, Code } from "@connectrpc/connect";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { Executor, type TaskContext } from "@nexusflow/executor";
import { RunStatus } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

describe("PostgreSQL outage", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let executor: Executor;
  let client: ReturnType<typeof workflowClient>;
  const release = new Map<string, () => void>();

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "outage",
      logger: testLogger("executor"),
    });
    executor.register("gate", (input: unknown, ctx: TaskContext) => {
      const { n } = input as { n: number };
      return new Promise((resolve) => {
        release.set(ctx.taskRunId, () => resolve({ n: n + 1 }));
      });
    });
    await executor.start();
    await client.registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({
          name: "outage",
          version: 1,
          steps: [
            { id: "a", type: "gate", input: { n: "{{ input.n }}" } },
            { id: "b", type: "gate", dependsOn: ["a"], input: { n: "{{ steps.a.output.n }}" } },
          ],
          output: "{{ steps.b.output.n }}",
        }),
      },
    });
  });

  after(async () => {
    await executor?.stop();
    await scheduler?.stop();
    await db?.close();
  });

  it("answers UNAVAILABLE while the database is down and finishes the run after it returns", async () => {
    const { run } = await client.startRun({ workflowName: "outage", input: jsonToValue({ n: 1 }) });
    const runId = run!.id;
    await waitFor("step a to run", () => (release.size === 1 ? true : undefined));

    await db.server.stop();
    // The step finishes while the database is down: its completion must not be lost.
    for (const [id, done] of release) {
      release.delete(id);
      done();
    }
    const started = Date.now();
    const read = await client.getRun({ runId }, { timeoutMs: 15_000 }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(read?.code, Code.Unavailable, `GetRun during the outage: ${read?.message}`);
    assert.ok(Date.now() - started < 10_000, "GetRun did not hang");
    const start = await client
      .startRun({ workflowName: "outage", input: jsonToValue({ n: 5 }) }, { timeoutMs: 15_000 })
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    assert.equal(start?.code, Code.Unavailable, `StartRun during the outage: ${start?.message}`);

    await db.server.restart();
    // Step b is leased once the completion of a is committed; release it too.
    await waitFor("step b to run", () => (release.size === 1 ? true : undefined), 30_000);
    for (const [id, done] of release) {
      release.delete(id);
      done();
    }
    const finished = await waitForRun(client, runId);
    assert.equal(finished.status, RunStatus.SUCCEEDED);
    assert.equal(valueToJson(finished.output), 3);
    assert.ok(
      finished.tasks.every((t) => t.attempts.length === 1),
      "no step ran twice",
    );
    // And the scheduler takes new work again without a restart of its own.
    const again = await client.startRun({ workflowName: "outage", input: jsonToValue({ n: 10 }) });
    await waitFor("the new run's first step", () => (release.size === 1 ? true : undefined));
    assert.ok(again.run);
  });
});
