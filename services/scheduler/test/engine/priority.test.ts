/**
 * Step priorities on a real scheduler and PostgreSQL: of two tasks of one type waiting for an
 * executor, the one of higher priority is leased first although it was queued later, and
 * ExplainPending counts it ahead of the other; the priority comes back with the definition.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jsonToValue } from "@nexusflow/common";
import { RunStatus, TaskStatus } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec, task, type WorkflowClient } from "../e2e/harness.js";
import {
  RawSession,
  startTestDatabase,
  startTestScheduler,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

describe("step priorities", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  const raw: RawSession[] = [];

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
  });

  after(async () => {
    for (const s of raw) s.close();
    await scheduler?.stop();
    await db?.close();
  });

  it("leases the higher priority first, and says it is ahead", async () => {
    await registerSpec(client, { name: "prio-low", version: 1, steps: [{ id: "s", type: "prio.t" }] });
    await registerSpec(client, {
      name: "prio-high",
      version: 1,
      defaults: { priority: 2 },
      steps: [{ id: "s", type: "prio.t", priority: 5 }],
    });
    const { workflow } = await client.getWorkflow({ name: "prio-high" });
    assert.equal(workflow?.spec?.steps[0]?.priority, 5);
    assert.equal(workflow?.spec?.defaults?.priority, 2);

    const start = async (workflowName: string): Promise<string> => {
      const { run } = await client.startRun({ workflowName, input: jsonToValue({}) });
      assert.ok(run);
      return run.id;
    };
    const low = await start("prio-low");
    const noExec = 'no executor advertises type "prio.t"';
    await waitFor("the low one waiting", async () => {
      const r = await client.explainPending({ runId: low, stepId: "s" });
      return r.pendingReason === noExec ? r : undefined;
    });
    const high = await start("prio-high");
    const explained = await waitFor("both waiting", async () => {
      const [l, h] = await Promise.all(
        [low, high].map((runId) => client.explainPending({ runId, stepId: "s" })),
      );
      return l?.pendingReason === noExec && h?.pendingReason === noExec ? { l, h } : undefined;
    });
    const ahead = (r: typeof explained.l) =>
      r.gates.find((g) => g.gate.case === "noExecutor")?.gate.value as { ahead: number } | undefined;
    assert.equal(ahead(explained.h)?.ahead, 0, "the higher priority is first");
    assert.deepEqual([explained.h.priority, explained.l.priority], [5, 0]);
    assert.equal(ahead(explained.l)?.ahead, 1, "the older, lower one is behind it");

    const session = new RawSession(scheduler.address);
    raw.push(session);
    session.send({ case: "attach", value: { executorId: "prio-1", taskTypes: ["prio.t"] } });
    await session.next("attachAck");
    session.send({ case: "credit", value: { n: 1 } });
    const first = await session.next("lease");
    assert.equal(first.runId, high, "the later, higher priority task is leased first");
    session.send({ case: "completed", value: { key: first.key } });
    assert.equal((await waitForRun(client, high)).status, RunStatus.SUCCEEDED);
    session.send({ case: "credit", value: { n: 1 } });
    const second = await session.next("lease");
    assert.equal(second.runId, low);
    session.send({ case: "completed", value: { key: second.key } });
    const done = await waitForRun(client, low);
    assert.equal(done.status, RunStatus.SUCCEEDED);
    assert.equal(task(done, "s").status, TaskStatus.SUCCEEDED);
  });
});
