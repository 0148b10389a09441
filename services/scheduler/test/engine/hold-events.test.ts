/**
 * task_held lifecycle events on a real scheduler, executor and PostgreSQL, read back from the
 * outbox: 200 runs behind one concurrency key of limit 1 produce one task_held per held task (not
 * one per scheduling pass), each before its task_leased, with the key and ExplainPending's reason;
 * a rate limit's waiters are reported held by its tokens, then by an operator's pause of the key,
 * then by its tokens again, one event per change; runs waiting for their workflow's key get one
 * run_held each, before their first task is leased. The held-task metrics follow, on /metrics.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import { HoldGate, RateLimitService, RunStatus, type RunHeld, type TaskHeld } from "@nexusflow/gen";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec, type WorkflowClient } from "../e2e/harness.js";
import {
  outboxEvents,
  startMeteredTestScheduler,
  startTestDatabase,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
  type OutboxEventRow,
} from "../support.js";

/** The value of the sample `name{labels}` (labels as written, in order), undefined when absent. */
function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

const heldOf = (events: OutboxEventRow[], runId: string): TaskHeld[] =>
  events
    .filter((e) => e.runId === runId && e.message.event.case === "taskHeld")
    .map((e) => e.message.event.value as TaskHeld);

describe("task_held events", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let pool: pg.Pool;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  let executor: Executor;
  /** The he.work handlers wait for the gate of their input's `g`; release(g) opens it. */
  const gates = new Map<string, { open: Promise<void>; release: () => void }>();
  const gateOf = (g: string) => {
    let gate = gates.get(g);
    if (gate === undefined) {
      let release: () => void = () => undefined;
      const open = new Promise<void>((resolve) => (release = resolve));
      gate = { open, release };
      gates.set(g, gate);
    }
    return gate;
  };
  const release = (g: string): void => gateOf(g).release();
  let port = 0;

  const scrape = async (): Promise<string> => {
    const url = scheduler.metricsUrl;
    assert.ok(url, "the scheduler serves metrics");
    return (await fetch(url)).text();
  };

  before(async () => {
    db = await startTestDatabase();
    pool = new pg.Pool({ connectionString: db.url });
    // A long session timeout: a lease held across the restart is reclaimed, never expired.
    scheduler = await startMeteredTestScheduler(db.url, { sessionTimeoutMs: 10_000 });
    port = Number(scheduler.address.slice(scheduler.address.lastIndexOf(":") + 1));
    client = workflowClient(scheduler.address);
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "he-exec",
      slots: 8,
      logger: testLogger("executor"),
      reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
    });
    executor.register("he.work", async (input: unknown) => {
      await gateOf((input as { g: string }).g).open;
      return { ok: true };
    });
    executor.register("he.quick", () => ({ ok: true }));
    await executor.start();
    await registerSpec(client, {
      name: "he-keyed",
      version: 1,
      steps: [
        {
          id: "charge",
          type: "he.work",
          input: { g: "{{ input.g }}" },
          concurrency: [{ key: "input.c", limit: 1 }],
        },
      ],
    });
    await registerSpec(client, {
      name: "he-run-keyed",
      version: 1,
      concurrency: [{ key: "input.t", limit: 1 }],
      steps: [{ id: "sync", type: "he.work", input: { g: "{{ input.g }}" } }],
    });
    await registerSpec(client, {
      name: "he-rated",
      version: 1,
      steps: [
        {
          id: "call",
          type: "he.quick",
          rateLimits: [{ name: "he-hourly", key: "input.k", rate: 1, per: "1h" }],
        },
      ],
    });
  });

  after(async () => {
    for (const g of gates.values()) g.release();
    await executor?.stop();
    await scheduler?.stop();
    await pool?.end();
    await db?.close();
  });

  const start = async (workflowName: string, input: unknown): Promise<string> => {
    const { run } = await client.startRun({ workflowName, input: jsonToValue(input) });
    assert.ok(run);
    return run.id;
  };

  it("200 runs behind one key of limit 1: one task_held per held task, before its task_leased", async () => {
    const ids = await Promise.all(Array.from({ length: 200 }, () => start("he-keyed", { c: "c1", g: "a" })));
    // The first leased holds the key until released: the 199 others are held by it.
    const events = await waitFor("199 task_held events committed", async () => {
      const e = await outboxEvents(pool, ids);
      return e.filter((x) => x.type === "taskHeld").length >= 199 ? e : undefined;
    });
    const text = await scrape();
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="concurrency_key"'), 199);
    assert.equal(
      sample(text, "nexusflow_scheduler_held_key_tasks", 'gate="concurrency_key",limit="input.c",key="c1"'),
      199,
    );
    const holder = ids.find((id) => heldOf(events, id).length === 0);
    assert.ok(holder !== undefined);
    for (const id of ids) {
      if (id === holder) continue;
      const [e, more] = heldOf(events, id);
      assert.equal(more, undefined);
      assert.ok(e);
      assert.deepEqual(
        [e.gate, e.limit, e.key, e.stepId, e.attempt],
        [HoldGate.CONCURRENCY_KEY, "input.c", "c1", "charge", 1],
      );
      assert.match(
        e.reason,
        new RegExp(
          `^concurrency key "c1" \\(input\\.c, limit 1\\): held by charge of run ${holder}; \\d+ of \\d+ in its queue$`,
        ),
      );
    }
    release("a");
    for (const id of ids) assert.equal((await waitForRun(client, id, 120_000)).status, RunStatus.SUCCEEDED);
    const all = await outboxEvents(pool, ids);
    // Still one per held task, each before the task's lease.
    assert.equal(all.filter((x) => x.type === "taskHeld").length, 199);
    for (const id of ids) {
      const types = all.filter((x) => x.runId === id).map((x) => x.type);
      if (id !== holder) assert.ok(types.indexOf("taskHeld") < types.indexOf("taskLeased"), types.join(","));
    }
    const after = await scrape();
    assert.equal(sample(after, "nexusflow_scheduler_tasks_held", 'gate="concurrency_key"'), 0);
    assert.equal(sample(after, "nexusflow_task_held_seconds_count", 'gate="concurrency_key"'), 199);
  });

  it("a scheduler restart reports each held task again at most once", async () => {
    const ids = await Promise.all(Array.from({ length: 20 }, () => start("he-keyed", { c: "c2", g: "b" })));
    const heldEvents = async (n: number) => {
      const e = await outboxEvents(pool, ids);
      return e.filter((x) => x.type === "taskHeld").length >= n ? e : undefined;
    };
    await waitFor("19 task_held events", () => heldEvents(19));
    // Same database and port: the executor reconnects and reclaims the lease it holds; the
    // restarted scheduler, which kept nothing of the holds in memory, reports the 19 again.
    await scheduler.stop();
    scheduler = await startMeteredTestScheduler(db.url, { sessionTimeoutMs: 10_000, port });
    client = workflowClient(scheduler.address);
    await waitFor("the 19 held again", () => heldEvents(38));
    await waitFor("the held-tasks gauge after the restart", async () =>
      sample(await scrape(), "nexusflow_scheduler_tasks_held", 'gate="concurrency_key"') === 19
        ? true
        : undefined,
    );
    release("b");
    for (const id of ids) assert.equal((await waitForRun(client, id, 60_000)).status, RunStatus.SUCCEEDED);
    const all = await outboxEvents(pool, ids);
    assert.equal(all.filter((x) => x.type === "taskHeld").length, 38);
    for (const id of ids)
      assert.ok(heldOf(all, id).length <= 2, `${id}: ${heldOf(all, id).length} task_held`);
  });

  it("runs waiting for their workflow's key: one run_held each, before their first task_leased", async () => {
    const countBefore =
      sample(await scrape(), "nexusflow_task_held_seconds_count", 'gate="concurrency_key"') ?? 0;
    const holder = await start("he-run-keyed", { t: "t1", g: "r" });
    await waitFor("the first run's task leased", async () =>
      (await outboxEvents(pool, [holder])).some((e) => e.type === "taskLeased") ? true : undefined,
    );
    const waiting: string[] = [];
    for (let i = 0; i < 4; i++) waiting.push(await start("he-run-keyed", { t: "t1", g: "r" }));
    const runHeldOf = (events: OutboxEventRow[], runId: string): RunHeld[] =>
      events
        .filter((e) => e.runId === runId && e.message.event.case === "runHeld")
        .map((e) => e.message.event.value as RunHeld);
    const events = await waitFor("4 run_held events committed", async () => {
      const e = await outboxEvents(pool, waiting);
      return e.filter((x) => x.type === "runHeld").length >= 4 ? e : undefined;
    });
    for (const [i, id] of waiting.entries()) {
      const [e, more] = runHeldOf(events, id);
      assert.equal(more, undefined);
      assert.ok(e);
      assert.deepEqual([e.gate, e.limit, e.key], [HoldGate.CONCURRENCY_KEY, "input.t", "t1"]);
      assert.equal(
        e.reason,
        `the run waits for concurrency key "t1" (input.t, limit 1): held by run ${holder}; ${i + 1} of ${i + 1} in its queue`,
      );
      // Nothing of the run started: no task event yet.
      assert.deepEqual(
        events.filter((x) => x.runId === id && x.type.startsWith("task")).map((x) => x.type),
        [],
      );
    }
    const text = await scrape();
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="concurrency_key"'), 4);
    assert.equal(
      sample(text, "nexusflow_scheduler_held_key_tasks", 'gate="concurrency_key",limit="input.t",key="t1"'),
      4,
    );
    release("r");
    for (const id of [holder, ...waiting])
      assert.equal((await waitForRun(client, id, 60_000)).status, RunStatus.SUCCEEDED);
    const all = await outboxEvents(pool, [holder, ...waiting]);
    assert.equal(runHeldOf(all, holder).length, 0);
    for (const id of waiting) {
      const types = all.filter((x) => x.runId === id).map((x) => x.type);
      assert.equal(types.filter((t) => t === "runHeld").length, 1, types.join(","));
      assert.ok(types.indexOf("runHeld") < types.indexOf("taskLeased"), types.join(","));
    }
    const after = await scrape();
    assert.equal(sample(after, "nexusflow_scheduler_tasks_held", 'gate="concurrency_key"'), 0);
    assert.equal(
      sample(after, "nexusflow_task_held_seconds_count", 'gate="concurrency_key"'),
      countBefore + 4,
    );
  });

  it("a rate limit's waiters: held by its tokens, by an operator's pause of the key, by its tokens again", async () => {
    const limits = createClient(
      RateLimitService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}` }),
    );
    const first = await start("he-rated", { k: "acct" });
    assert.equal((await waitForRun(client, first, 30_000)).status, RunStatus.SUCCEEDED);
    // The hour's one token is spent: the next two wait for the next.
    const waiting = [await start("he-rated", { k: "acct" }), await start("he-rated", { k: "acct" })];
    const gates = async (n: number): Promise<HoldGate[][] | undefined> => {
      const events = await outboxEvents(pool, waiting);
      const g = waiting.map((id) => heldOf(events, id).map((e) => e.gate));
      return g.every((x) => x.length >= n) ? g : undefined;
    };
    assert.deepEqual(await waitFor("held by the tokens", () => gates(1)), [
      [HoldGate.RATE_LIMIT],
      [HoldGate.RATE_LIMIT],
    ]);
    await limits.pauseRateLimit({
      name: "he-hourly",
      key: "acct",
      until: timestampFromMs(Date.now() + 3_600_000),
      note: "partner maintenance",
    });
    const paused = await waitFor("held by the pause", () => gates(2));
    assert.deepEqual(paused, [
      [HoldGate.RATE_LIMIT, HoldGate.RATE_LIMIT_PAUSED],
      [HoldGate.RATE_LIMIT, HoldGate.RATE_LIMIT_PAUSED],
    ]);
    const events = await outboxEvents(pool, waiting);
    assert.match(
      heldOf(events, waiting[0] as string)[1]?.reason ?? "",
      /^rate limit "he-hourly" key "acct" is paused until \S+ by operator \(partner maintenance\)$/,
    );
    assert.equal(sample(await scrape(), "nexusflow_scheduler_tasks_held", 'gate="rate_limit_paused"'), 2);
    await limits.resumeRateLimit({ name: "he-hourly", key: "acct" });
    assert.deepEqual(await waitFor("held by the tokens again", () => gates(3)), [
      [HoldGate.RATE_LIMIT, HoldGate.RATE_LIMIT_PAUSED, HoldGate.RATE_LIMIT],
      [HoldGate.RATE_LIMIT, HoldGate.RATE_LIMIT_PAUSED, HoldGate.RATE_LIMIT],
    ]);
    for (const runId of waiting) await client.cancelRun({ runId, reason: "done" });
    for (const runId of waiting) assert.equal((await waitForRun(client, runId)).status, RunStatus.CANCELLED);
    const text = await scrape();
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="rate_limit"'), 0);
    // Cancelled waits are not observed as held times: only the pause's end let them go.
    assert.equal(sample(text, "nexusflow_task_held_seconds_count", 'gate="rate_limit_paused"'), 2);
    assert.equal(sample(text, "nexusflow_task_held_seconds_count", 'gate="rate_limit"'), 2);
  });
});
