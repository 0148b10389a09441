/**
 * Keyed concurrency limits on a real scheduler, executor and PostgreSQL: 200 runs for 10 customers
 * with a per-customer limit of 1 never overlap for a customer (checked over the attempts' lease
 * and end times from GetRun), all finish, and the limit holds across a scheduler restart in the
 * middle; a customer's full key never holds up other work of the same type (work-conserving);
 * each strategy behaves as documented, and ExplainPending names the key, its holder and the
 * position in its queue.
 */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import { Executor, type TaskContext } from "@nexusflow/executor";
import { RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { date, registerSpec, task, type WorkflowClient } from "../e2e/harness.js";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
  maxOverlap,
} from "../support.js";

/** A task's attempts as [leased, ended] intervals in ms. */
function intervals(run: Run, stepId: string): [number, number][] {
  return task(run, stepId).attempts.map((a) => [
    date(a.leaseTime, "lease time").getTime(),
    date(a.endTime, "end time").getTime(),
  ]);
}

describe("keyed concurrency limits", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  let executor: Executor;
  let port = 0;
  let worked = 0;
  /** Handlers of type cc.hold waiting to be let go, by their input id. */
  const held = new Map<string, () => void>();

  before(async () => {
    db = await startTestDatabase();
    // A long session timeout: leases held across the restart are reclaimed, never expired.
    scheduler = await startTestScheduler(db.url, { sessionTimeoutMs: 10_000 });
    port = Number(scheduler.address.slice(scheduler.address.lastIndexOf(":") + 1));
    client = workflowClient(scheduler.address);
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "cc-exec",
      slots: 8,
      logger: testLogger("executor"),
      reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
    });
    // A few milliseconds of work, so that a customer's runs would overlap if nothing stopped them.
    executor.register("cc.work", async () => {
      await sleep(3);
      worked++;
      return { ok: true };
    });
    executor.register("cc.undo", () => ({ undone: true }));
    executor.register(
      "cc.hold",
      (input: unknown, ctx: TaskContext) =>
        new Promise((resolve, reject) => {
          const { id } = input as { id: string };
          held.set(id, () => resolve({ id }));
          ctx.signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true });
        }),
    );
    await executor.start();
    await registerSpec(client, {
      name: "cc-keyed",
      version: 1,
      steps: [
        {
          id: "charge",
          type: "cc.work",
          input: { c: "{{ input.c }}" },
          concurrency: [{ key: "input.c", limit: 1 }],
        },
      ],
    });
    await registerSpec(client, { name: "cc-bulk", version: 1, steps: [{ id: "charge", type: "cc.work" }] });
    for (const strategy of ["cancel-newest", "cancel-in-progress", "keep-newest-queued"])
      await registerSpec(client, {
        name: `cc-${strategy}`,
        version: 1,
        steps: [
          { id: "pay", type: "cc.work", compensate: { type: "cc.undo" } },
          {
            id: "hold",
            type: "cc.hold",
            dependsOn: ["pay"],
            input: { id: "{{ input.id }}" },
            concurrency: [{ key: "input.c", limit: 1, strategy }],
          },
        ],
      });
  });

  after(async () => {
    await executor?.stop();
    await scheduler?.stop();
    await db?.close();
  });

  const start = async (workflowName: string, input: unknown): Promise<string> => {
    const { run } = await client.startRun({ workflowName, input: jsonToValue(input) });
    assert.ok(run);
    return run.id;
  };

  it("200 runs for 10 customers, limit 1 each: never two at once for a customer, across a restart", async () => {
    const customers = Array.from({ length: 10 }, (_, i) => `cust-${i}`);
    const ids = await Promise.all(
      Array.from({ length: 200 }, (_, i) => start("cc-keyed", { c: customers[i % 10] })),
    );
    // Restart the scheduler mid-way (same database and port; the executor reconnects and
    // reclaims what it holds): the limit holds for what was queued and leased at that moment.
    await waitFor("a third of the work done", () => (worked >= 60 ? true : undefined), 60_000);
    assert.ok(worked < 200, "the restart happens mid-way");
    await scheduler.stop();
    scheduler = await startTestScheduler(db.url, { sessionTimeoutMs: 10_000, port });
    const runs = await Promise.all(ids.map((id) => waitForRun(client, id, 120_000)));
    assert.deepEqual(
      runs.filter((r) => r.status !== RunStatus.SUCCEEDED).map((r) => r.id),
      [],
      "every run succeeds",
    );
    const byCustomer = new Map<string, [number, number][]>();
    runs.forEach((r, i) => {
      const c = customers[i % 10] as string;
      byCustomer.set(c, [...(byCustomer.get(c) ?? []), ...intervals(r, "charge")]);
    });
    for (const [c, spans] of byCustomer) assert.equal(maxOverlap(spans), 1, `${c}: at most one at a time`);
    // The limit is per customer, not global: customers ran side by side.
    assert.ok(maxOverlap([...byCustomer.values()].flat()) > 1, "customers overlap one another");
  });

  it("is work-conserving: a customer's full key holds up none of the other work of the same type", async () => {
    const hot = await Promise.all(Array.from({ length: 20 }, () => start("cc-keyed", { c: "hot" })));
    const bulk = await Promise.all(Array.from({ length: 20 }, () => start("cc-bulk", {})));
    const hotRuns = await Promise.all(hot.map((id) => waitForRun(client, id, 60_000)));
    const bulkRuns = await Promise.all(bulk.map((id) => waitForRun(client, id, 60_000)));
    assert.ok([...hotRuns, ...bulkRuns].every((r) => r.status === RunStatus.SUCCEEDED));
    const hotSpans = hotRuns.flatMap((r) => intervals(r, "charge"));
    const bulkSpans = bulkRuns.flatMap((r) => intervals(r, "charge"));
    assert.equal(maxOverlap(hotSpans), 1);
    // Queued after all of the hot customer's tasks, the bulk tasks were leased while the hot ones
    // still waited for their key: the free slots went to them, not idle behind the key's queue.
    const lastHot = Math.max(...hotSpans.map(([s]) => s));
    const lastBulk = Math.max(...bulkSpans.map(([s]) => s));
    assert.ok(
      lastBulk < lastHot,
      `every bulk task leased (${lastBulk}) before the last hot one (${lastHot})`,
    );
    assert.ok(maxOverlap([...hotSpans, ...bulkSpans]) > 1, "several slots in use at once");
  });

  /** Starts a strategy run for customer `c`; `id` names its held handler. */
  const startHeld = (strategy: string, c: string, id: string) => start(`cc-${strategy}`, { c, id });
  const holding = (id: string) => waitFor(`handler ${id} running`, () => (held.has(id) ? true : undefined));
  const stepStatus = async (runId: string, stepId: string): Promise<TaskStatus | undefined> => {
    const { run } = await client.getRun({ runId });
    return run?.tasks.find((t) => t.stepId === stepId)?.status;
  };

  it("queue: ExplainPending and GetRun name the key, its holder and the place in its queue", async () => {
    // queue is the default strategy.
    await registerSpec(client, {
      name: "cc-queue",
      version: 1,
      steps: [
        {
          id: "hold",
          type: "cc.hold",
          input: { id: "{{ input.id }}" },
          concurrency: [{ key: "input.c", limit: 1 }],
        },
      ],
    });
    const first = await start("cc-queue", { c: "q", id: "q1" });
    await holding("q1");
    const second = await start("cc-queue", { c: "q", id: "q2" });
    const third = await start("cc-queue", { c: "q", id: "q3" });
    const explained = await waitFor("the third in the key's queue", async () => {
      const r = await client.explainPending({ runId: third, stepId: "hold" });
      const g = r.gates.find((x) => x.gate.case === "concurrencyKey")?.gate;
      return g?.case === "concurrencyKey" && g.value.position === 2 ? { r, g: g.value } : undefined;
    });
    assert.deepEqual(
      {
        scope: explained.g.scope,
        keyExpression: explained.g.keyExpression,
        key: explained.g.key,
        limit: explained.g.limit,
        strategy: explained.g.strategy,
        holders: explained.g.holders.map((h) => [h.runId, h.stepId]),
        holding: explained.g.holding,
        position: explained.g.position,
        waiting: explained.g.waiting,
      },
      {
        scope: "step",
        keyExpression: "input.c",
        key: "q",
        limit: 1,
        strategy: "queue",
        holders: [[first, "hold"]],
        holding: 1,
        position: 2,
        waiting: 2,
      },
    );
    assert.equal(explained.r.status, TaskStatus.QUEUED);
    const { run } = await client.getRun({ runId: second });
    assert.equal(
      run?.tasks.find((t) => t.stepId === "hold")?.pendingReason,
      `concurrency key "q" (input.c, limit 1): held by hold of run ${first}; 1 of 2 in its queue`,
    );
    held.get("q1")?.();
    await holding("q2");
    held.get("q2")?.();
    await holding("q3");
    held.get("q3")?.();
    for (const id of [first, second, third])
      assert.equal((await waitForRun(client, id)).status, RunStatus.SUCCEEDED);
  });

  it("cancel-newest: a run arriving at a full key is cancelled; the holder finishes", async () => {
    const first = await startHeld("cancel-newest", "n", "n1");
    await holding("n1");
    const second = await startHeld("cancel-newest", "n", "n2");
    const cancelled = await waitForRun(client, second);
    assert.equal(cancelled.status, RunStatus.COMPENSATED, "cancelled with its compensation run");
    assert.match(
      cancelled.error?.message ?? "",
      /concurrency key "n" \(input\.c, limit 1\) is full: the newest task is cancelled \(cancel-newest\)/,
    );
    assert.equal(await stepStatus(first, "hold"), TaskStatus.RUNNING);
    held.get("n1")?.();
    assert.equal((await waitForRun(client, first)).status, RunStatus.SUCCEEDED);
    assert.equal(held.has("n2"), false, "the cancelled run's step never ran");
  });

  it("cancel-in-progress: the holder's run is cancelled (its handler aborted, its steps compensated) and the newcomer runs", async () => {
    const first = await startHeld("cancel-in-progress", "p", "p1");
    await holding("p1");
    const second = await startHeld("cancel-in-progress", "p", "p2");
    const cancelled = await waitForRun(client, first);
    assert.equal(cancelled.status, RunStatus.COMPENSATED);
    assert.match(cancelled.error?.message ?? "", /a newer task takes its slot \(cancel-in-progress\)/);
    assert.equal(task(cancelled, "hold").status, TaskStatus.CANCELLED);
    await holding("p2");
    held.get("p2")?.();
    assert.equal((await waitForRun(client, second)).status, RunStatus.SUCCEEDED);
  });

  it("keep-newest-queued: only the newest waiter is kept, and it runs when the slot frees", async () => {
    const first = await startHeld("keep-newest-queued", "k", "k1");
    await holding("k1");
    const second = await startHeld("keep-newest-queued", "k", "k2");
    await waitFor("the second waiting for the key", async () => {
      const r = await client.explainPending({ runId: second, stepId: "hold" });
      return r.gates.some((g) => g.gate.case === "concurrencyKey" && g.gate.value.position === 1)
        ? true
        : undefined;
    });
    const third = await startHeld("keep-newest-queued", "k", "k3");
    const superseded = await waitForRun(client, second);
    assert.equal(superseded.status, RunStatus.COMPENSATED);
    assert.match(superseded.error?.message ?? "", /superseded by a newer task \(keep-newest-queued\)/);
    held.get("k1")?.();
    await holding("k3");
    held.get("k3")?.();
    assert.equal((await waitForRun(client, first)).status, RunStatus.SUCCEEDED);
    assert.equal((await waitForRun(client, third)).status, RunStatus.SUCCEEDED);
    assert.equal(held.has("k2"), false);
  });

  it("a workflow's limit: a run waits with its steps pending, named by ExplainPending, across a restart", async () => {
    await registerSpec(client, {
      name: "cc-per-tenant",
      version: 1,
      concurrency: [{ key: "input.tenant", limit: 1 }],
      steps: [{ id: "hold", type: "cc.hold", input: { id: "{{ input.id }}" } }],
    });
    const first = await start("cc-per-tenant", { tenant: "acme", id: "t1" });
    await holding("t1");
    const second = await start("cc-per-tenant", { tenant: "acme", id: "t2" });
    const waiting = async () => {
      const r = await client.explainPending({ runId: second, stepId: "hold" });
      const g = r.gates[0]?.gate;
      return g?.case === "concurrencyKey"
        ? { status: r.status, reason: r.pendingReason, g: g.value }
        : undefined;
    };
    const before = await waitFor("the second run waiting for its key", waiting);
    const expected = {
      status: TaskStatus.PENDING,
      reason: `the run waits for concurrency key "acme" (input.tenant, limit 1): held by run ${first}; 1 of 1 in its queue`,
      scope: "workflow",
      holders: [[first, ""]],
      position: 1,
    };
    const shape = (w: NonNullable<Awaited<ReturnType<typeof waiting>>>) => ({
      status: w.status,
      reason: w.reason,
      scope: w.g.scope,
      holders: w.g.holders.map((h) => [h.runId, h.stepId]),
      position: w.g.position,
    });
    assert.deepEqual(shape(before), expected);
    // A restart rebuilds it from the runs: the first (started) holds the key, the second waits.
    await scheduler.stop();
    scheduler = await startTestScheduler(db.url, { sessionTimeoutMs: 10_000, port });
    assert.deepEqual(shape(await waitFor("the second still waiting after the restart", waiting)), expected);
    held.get("t1")?.();
    assert.equal((await waitForRun(client, first)).status, RunStatus.SUCCEEDED);
    await holding("t2");
    held.get("t2")?.();
    assert.equal((await waitForRun(client, second)).status, RunStatus.SUCCEEDED);
  });

  it("a workflow's key that is not a string or a number: StartRun answers INVALID_ARGUMENT naming it", async () => {
    await registerSpec(client, {
      name: "cc-run-key",
      version: 1,
      concurrency: [{ key: "input.tenant", limit: 2 }],
      steps: [{ id: "a", type: "cc.work" }],
    });
    await assert.rejects(start("cc-run-key", { tenant: ["x"] }), (e: unknown) => {
      const err = ConnectError.from(e);
      assert.equal(err.code, Code.InvalidArgument);
      assert.match(
        err.rawMessage,
        /concurrency key "input\.tenant" \(\$\.concurrency\[0\]\.key\) is an array/,
      );
      return true;
    });
    assert.equal(
      (await waitForRun(client, await start("cc-run-key", { tenant: 42 }))).status,
      RunStatus.SUCCEEDED,
    );
  });
});
