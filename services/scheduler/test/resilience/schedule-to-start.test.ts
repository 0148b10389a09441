/**
 * The schedule-to-start timeout against a real scheduler, PostgreSQL and in-process executors: a
 * step that no executor takes within `timeouts.scheduleToStart` (none runs its type, or the only
 * one has no free slot) fails that attempt with SCHEDULE_TO_START_TIMEOUT, which the step's retry
 * policy retries like any other retryable failure.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { Executor, type TaskContext } from "@nexusflow/executor";
import { RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";
import { describeRun, registerSpec, task, type WorkflowClient } from "../e2e/harness.js";

const TIMEOUT = "150ms";
const TIMEOUT_MS = 150;

/** A timestamp that must be set, in milliseconds. */
function ms(t: Timestamp | undefined, what: string): number {
  assert.ok(t, `${what} is not set`);
  return timestampDate(t).getTime();
}

describe("schedule-to-start timeout", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  const executors: Executor[] = [];
  /** Releases the tasks blocking the one-slot executor. */
  const gates = new Map<string, () => void>();

  const executor = (id: string, slots: number, setup: (e: Executor) => Executor): Executor => {
    const e = setup(
      new Executor({
        schedulerAddress: scheduler.address,
        executorId: id,
        slots,
        builtins: false,
        logger: testLogger("executor"),
        reconnect: { initialDelayMs: 20, maxDelayMs: 500 },
        drainTimeoutMs: 2000,
      }),
    );
    executors.push(e);
    return e;
  };

  /** Sessions attached for `executorId`. */
  const attached = (executorId: string): boolean =>
    [...scheduler.engine.sessions()].some((s) => s.executorId === executorId);

  const start = async (workflowName: string, input: unknown = {}): Promise<string> => {
    const { run } = await client.startRun({ workflowName, input: jsonToValue(input) });
    assert.ok(run);
    return run.id;
  };

  const getRun = async (runId: string): Promise<Run> => {
    const { run } = await client.getRun({ runId });
    assert.ok(run);
    return run;
  };

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    // Attached from the start, but runs neither sts.unserved nor sts.late.
    const other = executor("other-types", 4, (e) => e.register("sts.other", () => ({})));
    // One slot: a blocked sts.block task leaves it no credit for anything else.
    const oneSlot = executor("one-slot", 1, (e) =>
      e
        .register("sts.block", async (input: { key: string }, ctx: TaskContext) => {
          await new Promise<void>((resolve) => {
            gates.set(input.key, resolve);
            ctx.signal.addEventListener("abort", () => resolve(), { once: true });
          });
          return { released: input.key };
        })
        .register("sts.quick", (_input: unknown, ctx: TaskContext) => ({ attempt: ctx.attempt })),
    );
    await Promise.all([other.start(), oneSlot.start()]);
    await waitFor("both executors attached", () =>
      attached("other-types") && attached("one-slot") ? true : undefined,
    );
  });

  after(async () => {
    for (const release of gates.values()) release();
    await Promise.all(executors.map((e) => e.stop("test over")));
    await scheduler?.stop();
    await db?.close();
  });

  it("fails the run with SCHEDULE_TO_START_TIMEOUT when no executor runs the step's type (maxAttempts 1)", async () => {
    await registerSpec(client, {
      name: "sts-unserved",
      version: 1,
      steps: [
        {
          id: "s",
          type: "sts.unserved",
          timeouts: { scheduleToStart: TIMEOUT },
          retry: { maxAttempts: 1 },
        },
      ],
    });
    const runId = await start("sts-unserved");
    const done = await waitForRun(client, runId);

    assert.equal(done.status, RunStatus.FAILED, describeRun(done));
    assert.equal(done.error?.type, "SCHEDULE_TO_START_TIMEOUT", describeRun(done));
    const s = task(done, "s");
    assert.equal(s.status, TaskStatus.FAILED);
    assert.equal(s.error?.type, "SCHEDULE_TO_START_TIMEOUT");
    // The attempt that waited in vain is listed, failed, and ran nowhere.
    assert.deepEqual(
      s.attempts.map((a) => [a.number, a.status, a.executorId, a.error?.type]),
      [[1, TaskStatus.FAILED, "", "SCHEDULE_TO_START_TIMEOUT"]],
      describeRun(done),
    );
    const attempt = s.attempts[0];
    assert.ok(attempt);
    assert.equal(attempt.startTime, undefined, "a task no executor took has no start time");
    // It timed out no earlier than the limit after it was queued.
    const waited = ms(attempt.endTime, "end time") - ms(s.createTime, "create time");
    assert.ok(waited >= TIMEOUT_MS - 5, `timed out after ${waited} ms`);
  });

  it("retries per the policy, and a later attempt succeeds once an executor for the type attaches", async () => {
    await registerSpec(client, {
      name: "sts-late",
      version: 1,
      steps: [
        {
          id: "s",
          type: "sts.late",
          timeouts: { scheduleToStart: TIMEOUT },
          // Enough attempts that the run cannot fail before the executor below attaches.
          retry: { maxAttempts: 100, initialInterval: "10ms", maxInterval: "20ms" },
        },
      ],
    });
    const runId = await start("sts-late");
    // Two attempts time out in the queue, each retried.
    const waiting = await waitFor("two SCHEDULE_TO_START_TIMEOUT attempts", async () => {
      const run = await getRun(runId);
      const failed = task(run, "s").attempts.filter((a) => a.error?.type === "SCHEDULE_TO_START_TIMEOUT");
      return failed.length >= 2 ? run : undefined;
    });
    assert.equal(waiting.status, RunStatus.RUNNING, describeRun(waiting));

    const late = executor("late", 2, (e) =>
      e.register("sts.late", (_input: unknown, ctx: TaskContext) => ({ attempt: ctx.attempt })),
    );
    await late.start();
    const done = await waitForRun(client, runId);

    assert.equal(done.status, RunStatus.SUCCEEDED, describeRun(done));
    const s = task(done, "s");
    const n = s.attempts.length;
    assert.ok(n >= 3, describeRun(done));
    assert.deepEqual(
      s.attempts.map((a) => a.number),
      Array.from({ length: n }, (_, i) => i + 1),
      "attempt numbers 1..n",
    );
    for (const a of s.attempts.slice(0, -1)) {
      assert.deepEqual(
        [a.status, a.executorId, a.error?.type, a.error?.retryable],
        [TaskStatus.FAILED, "", "SCHEDULE_TO_START_TIMEOUT", true],
        describeRun(done),
      );
    }
    const last = s.attempts.at(-1);
    assert.deepEqual([last?.status, last?.executorId], [TaskStatus.SUCCEEDED, "late"], describeRun(done));
    // The handler saw the attempt's own number.
    assert.deepEqual(valueToJson(s.output), { attempt: n });
  });

  it("times out a step queued behind an executor with no free slot", async () => {
    await registerSpec(client, {
      name: "sts-blocker",
      version: 1,
      steps: [{ id: "b", type: "sts.block", input: { key: "{{ input.key }}" } }],
    });
    await registerSpec(client, {
      name: "sts-queued-behind",
      version: 1,
      steps: [
        {
          id: "q",
          type: "sts.quick",
          timeouts: { scheduleToStart: TIMEOUT },
          retry: { maxAttempts: 1 },
        },
      ],
    });
    const blocker = await start("sts-blocker", { key: "slot" });
    await waitFor("the blocker to hold the only slot", async () =>
      task(await getRun(blocker), "b").status === TaskStatus.RUNNING && gates.has("slot") ? true : undefined,
    );
    const queued = await start("sts-queued-behind");
    const failed = await waitForRun(client, queued);

    assert.equal(failed.status, RunStatus.FAILED, describeRun(failed));
    assert.equal(failed.error?.type, "SCHEDULE_TO_START_TIMEOUT", describeRun(failed));
    assert.deepEqual(
      task(failed, "q").attempts.map((a) => [a.status, a.executorId, a.error?.type]),
      [[TaskStatus.FAILED, "", "SCHEDULE_TO_START_TIMEOUT"]],
    );

    // The blocker was not disturbed by the step that gave up waiting for its slot.
    gates.get("slot")?.();
    const unblocked = await waitForRun(client, blocker);
    assert.equal(unblocked.status, RunStatus.SUCCEEDED, describeRun(unblocked));
    assert.equal(task(unblocked, "b").attempts.length, 1);
  });
});

describe("schedule-to-start timeout across a scheduler restart", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;

  before(async () => {
    db = await startTestDatabase();
  });

  after(async () => {
    await scheduler?.stop();
    await db?.close();
  });

  it("times out a task queued before the restart, and keeps the attempts that failed before it", async () => {
    scheduler = await startTestScheduler(db.url);
    let client = workflowClient(scheduler.address);
    const step = (scheduleToStart: string, maxAttempts: number) => ({
      id: "s",
      type: "sts.nobody",
      timeouts: { scheduleToStart },
      retry: { maxAttempts, initialInterval: "10ms", maxInterval: "10ms" },
    });
    // Queued (and committed so) when the scheduler stops; its limit is long enough to outlast that.
    const queuedLimitMs = 3000;
    await registerSpec(client, { name: "sts-queued", version: 1, steps: [step(`${queuedLimitMs}ms`, 1)] });
    // Its first attempt times out before the restart, its second after it.
    await registerSpec(client, { name: "sts-twice", version: 1, steps: [step("200ms", 2)] });
    const queued = (await client.startRun({ workflowName: "sts-queued" })).run;
    const twice = (await client.startRun({ workflowName: "sts-twice" })).run;
    assert.ok(queued && twice);
    await waitFor("sts-twice's first attempt to time out", async () => {
      const r = (await client.getRun({ runId: twice.id })).run;
      return r !== undefined && task(r, "s").attempts.length === 1 ? true : undefined;
    });
    const beforeRestart = (await client.getRun({ runId: queued.id })).run;
    assert.ok(beforeRestart);
    await scheduler.stop();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);

    // The task queued across the restart still times out, no earlier than its limit after it was queued.
    const q = await waitForRun(client, queued.id);
    assert.equal(q.status, RunStatus.FAILED, `${describeRun(beforeRestart)}\n${describeRun(q)}`);
    assert.equal(q.error?.type, "SCHEDULE_TO_START_TIMEOUT");
    const attempt = task(q, "s").attempts[0];
    assert.deepEqual(
      [task(q, "s").attempts.length, attempt?.status, attempt?.error?.type],
      [1, TaskStatus.FAILED, "SCHEDULE_TO_START_TIMEOUT"],
    );
    const waited = ms(attempt?.endTime, "end time") - ms(attempt?.leaseTime, "lease (queue) time");
    assert.ok(waited >= queuedLimitMs - 5, `timed out after ${waited} ms`);

    // The failure before the restart still counts: two attempts in all, not two more.
    const t = await waitForRun(client, twice.id);
    assert.equal(t.status, RunStatus.FAILED, describeRun(t));
    assert.deepEqual(
      task(t, "s").attempts.map((a) => [a.number, a.status, a.executorId, a.error?.type]),
      [
        [1, TaskStatus.FAILED, "", "SCHEDULE_TO_START_TIMEOUT"],
        [2, TaskStatus.FAILED, "", "SCHEDULE_TO_START_TIMEOUT"],
      ],
      describeRun(t),
    );
  });
});
