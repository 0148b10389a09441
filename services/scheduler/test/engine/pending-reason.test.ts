/**
 * Why a queued task waits (issue #19), against a real scheduler and PostgreSQL: a step whose type no
 * executor advertises shows `no executor advertises type "..."` in GetRun and is warned about once
 * in the scheduler's log, not once per task; an executor advertising the type then attaches, the
 * task runs, the reason clears and the run succeeds. A type whose only executor has no free slot
 * reads as busy, and a WatchRun stream hears of a new reason although nothing was committed.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jsonToValue } from "@nexusflow/common";
import { Executor, type TaskContext } from "@nexusflow/executor";
import { RunStatus, TaskStatus, type Run, type WatchRunResponse } from "@nexusflow/gen";
import { pino } from "pino";
import type { Scheduler } from "../../src/scheduler.js";
import { describeRun, registerSpec, task, type WorkflowClient } from "../e2e/harness.js";
import {
  RawSession,
  startTestDatabase,
  startTestExecutor,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

/** One JSON line the scheduler logged. */
interface LogLine {
  level: number;
  msg: string;
  task_type?: string;
  waiting?: number;
  executor_id?: string;
}

/** pino's numbers for the levels asserted here. */
const INFO = 30;
const WARN = 40;

describe("pending reason of queued tasks", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  const executors: Executor[] = [];
  const raw: RawSession[] = [];
  /** Every line the scheduler logged, parsed. */
  const lines: LogLine[] = [];
  /** Releases the tasks blocking the one-slot executor. */
  const gates: (() => void)[] = [];

  const start = async (workflowName: string): Promise<string> => {
    const { run } = await client.startRun({ workflowName, input: jsonToValue({}) });
    assert.ok(run);
    return run.id;
  };

  const getRun = async (runId: string): Promise<Run> => {
    const { run } = await client.getRun({ runId });
    assert.ok(run);
    return run;
  };

  /** Waits until step `stepId` of the run is QUEUED with `reason`, and returns the run. */
  const waitForReason = (runId: string, stepId: string, reason: string): Promise<Run> =>
    waitFor(`step ${stepId} of run ${runId} to wait with reason ${reason}`, async () => {
      const run = await getRun(runId);
      const t = task(run, stepId);
      return t.status === TaskStatus.QUEUED && t.pendingReason === reason ? run : undefined;
    });

  const linesAbout = (level: number, taskType: string): LogLine[] =>
    lines.filter((l) => l.level === level && l.task_type === taskType);

  /** Starts an executor running only what `register` adds, and waits until it has credit. */
  const attach = async (
    executorId: string,
    slots: number,
    register: (e: Executor) => Executor,
  ): Promise<Executor> => {
    const e = register(
      new Executor({
        schedulerAddress: scheduler.address,
        executorId,
        slots,
        builtins: false,
        logger: testLogger("executor"),
      }),
    );
    executors.push(e);
    await e.start();
    await waitFor(`executor ${executorId}'s session`, () =>
      [...scheduler.engine.sessions()].some((s) => s.executorId === executorId && s.credit > 0),
    );
    return e;
  };

  before(async () => {
    db = await startTestDatabase();
    // The scheduler's real logger, with its JSON lines kept here instead of written to stdout.
    const log = pino(
      { name: "scheduler", level: "info" },
      { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) },
    );
    scheduler = await startTestScheduler(db.url, { log });
    client = workflowClient(scheduler.address);
    // Attached throughout, running the built-in types only: "advertises" is about the type.
    executors.push(await startTestExecutor(scheduler, { executorId: "built-ins", slots: 4 }));
  });

  after(async () => {
    for (const release of gates) release();
    for (const s of raw) s.close();
    await Promise.all(executors.map((e) => e.stop("test over")));
    await scheduler?.stop();
    await db?.close();
  });

  it("shows and logs once that no executor advertises a step's type, and clears once one attaches", async () => {
    await registerSpec(client, {
      name: "pr-charge",
      version: 1,
      steps: [
        { id: "validate", type: "noop" },
        { id: "charge", type: "charge-card", dependsOn: ["validate"] },
      ],
    });
    const first = await start("pr-charge");
    const second = await start("pr-charge");
    const reason = 'no executor advertises type "charge-card"';
    const waiting = await waitForReason(first, "charge", reason);
    await waitForReason(second, "charge", reason);

    // Only the waiting task carries a reason: the step before it ran on the built-ins executor.
    assert.equal(task(waiting, "validate").status, TaskStatus.SUCCEEDED, describeRun(waiting));
    assert.equal(task(waiting, "validate").pendingReason, "");
    assert.equal(waiting.status, RunStatus.RUNNING);
    // One warning for the type, however many of its tasks wait.
    await waitFor("the warning", () => linesAbout(WARN, "charge-card").length > 0);
    const warnings = linesAbout(WARN, "charge-card");
    assert.equal(warnings.length, 1, JSON.stringify(warnings));
    assert.match(warnings[0]?.msg ?? "", /^no executor advertises type "charge-card"; [12] tasks? waiting$/);

    await attach("payments-1", 2, (e) => e.register("charge-card", () => ({ paymentId: "pay_1" })));
    const done = await Promise.all([waitForRun(client, first), waitForRun(client, second)]);
    for (const run of done) {
      assert.equal(run.status, RunStatus.SUCCEEDED, describeRun(run));
      const charge = task(run, "charge");
      assert.equal(charge.pendingReason, "");
      assert.equal(charge.attempts.at(-1)?.executorId, "payments-1");
    }
    assert.equal(linesAbout(WARN, "charge-card").length, 1, "still one warning");
    const attached = linesAbout(INFO, "charge-card");
    assert.equal(attached.length, 1, JSON.stringify(attached));
    assert.equal(attached[0]?.executor_id, "payments-1");
    assert.equal(attached[0]?.waiting, 2);
  });

  it("reads busy while the only executor of the type has no free slot", async () => {
    await registerSpec(client, {
      name: "pr-gated",
      version: 1,
      steps: [{ id: "g", type: "pr.gated" }],
    });
    await attach("one-slot", 1, (e) =>
      e.register(
        "pr.gated",
        (_input: unknown, ctx: TaskContext) =>
          new Promise<object>((resolve) => {
            gates.push(() => resolve({}));
            ctx.signal.addEventListener("abort", () => resolve({}), { once: true });
          }),
      ),
    );
    const blocking = await start("pr-gated");
    await waitFor("the first task to run", async () =>
      task(await getRun(blocking), "g").status === TaskStatus.RUNNING ? true : undefined,
    );
    const queued = await start("pr-gated");
    await waitForReason(queued, "g", 'the one executor for type "pr.gated" is busy (no credit)');
    // Busy is no reason to warn: only a type nobody runs is.
    assert.deepEqual(linesAbout(WARN, "pr.gated"), []);

    await waitFor("both gates", async () => {
      for (const release of gates.splice(0)) release();
      const runs = await Promise.all([getRun(blocking), getRun(queued)]);
      return runs.every((r) => r.status === RunStatus.SUCCEEDED) ? runs : undefined;
    });
    assert.equal(task(await getRun(queued), "g").pendingReason, "");
  });

  it("tells a WatchRun stream when a queued task's reason changes with no commit", async () => {
    await registerSpec(client, {
      name: "pr-watched",
      version: 1,
      steps: [{ id: "w", type: "pr.watched" }],
    });
    // A session advertising the type that never grants credit: the task waits for it, busy.
    const session = new RawSession(scheduler.address);
    raw.push(session);
    session.send({ case: "attach", value: { executorId: "raw-no-credit", taskTypes: ["pr.watched"] } });
    await session.next("attachAck");
    const runId = await start("pr-watched");
    await waitForReason(runId, "w", 'the one executor for type "pr.watched" is busy (no credit)');

    const abort = new AbortController();
    const messages: WatchRunResponse[] = [];
    const watching = (async () => {
      for await (const m of client.watchRun({ runId }, { signal: abort.signal })) messages.push(m);
    })().catch((e: unknown) => {
      if (!abort.signal.aborted) throw e;
    });
    await waitFor("the first WatchRun message", () => messages.length > 0);
    assert.equal(
      task(messages[0]?.run as Run, "w").pendingReason,
      'the one executor for type "pr.watched" is busy (no credit)',
    );

    // The session goes away: nothing about the run is stored anew, yet its task now waits for
    // another reason, and the stream says so.
    session.close();
    const update = await waitFor("a WatchRun message with the new reason", () =>
      messages.find(
        (m) => task(m.run as Run, "w").pendingReason === 'no executor advertises type "pr.watched"',
      ),
    );
    assert.deepEqual(update.changedTaskIds, [task(update.run as Run, "w").id]);
    assert.equal(task(update.run as Run, "w").status, TaskStatus.QUEUED);
    await waitFor("the warning", () => linesAbout(WARN, "pr.watched").length === 1);
    abort.abort();
    await watching;
    await client.cancelRun({ runId, reason: "test over" });
  });
});
