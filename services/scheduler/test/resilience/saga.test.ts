/**
 * Resilience against a real scheduler, PostgreSQL and an in-process executor: retry policies,
 * start-to-close timeouts with fencing, cancellation reaching handlers, and saga compensation.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { Executor, TaskError, type TaskContext } from "@nexusflow/executor";
import { RunStatus, TaskKind, TaskStatus, type Run } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

describe("resilience: retries, timeouts, cancellation, sagas", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let executor: Executor;
  let client: ReturnType<typeof workflowClient>;
  const calls: string[] = [];
  const flaky = new Map<string, number>();
  const aborted = new Set<string>();
  const started = new Set<string>();

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "saga-exec",
      slots: 8,
      logger: testLogger("executor"),
      abortGraceMs: 200,
    });
    const booking =
      (name: string) =>
      (input: unknown): unknown => {
        calls.push(name);
        return { ref: `${name}-ref`, input };
      };
    executor.register("book-flight", booking("book-flight"));
    executor.register("book-hotel", booking("book-hotel"));
    executor.register("cancel-flight", booking("cancel-flight"));
    executor.register("cancel-hotel", booking("cancel-hotel"));
    executor.register("refund", () => {
      calls.push("refund");
      throw TaskError.retryable("REFUND_DOWN", "refund service down");
    });
    executor.register("charge-card", (input: unknown) => {
      calls.push("charge-card");
      const { card } = input as { card: string };
      if (card === "declined") throw TaskError.terminal("CARD_DECLINED", "the card was declined");
      return { paid: true };
    });
    executor.register("flaky", (input: unknown) => {
      const { key, failures } = input as { key: string; failures: number };
      const n = (flaky.get(key) ?? 0) + 1;
      flaky.set(key, n);
      if (n <= failures) throw TaskError.retryable("TRANSIENT", `failure ${n}`);
      return { attempts: n };
    });
    executor.register("wait-for-abort", async (input: unknown, ctx: TaskContext) => {
      const { key } = input as { key: string };
      started.add(key);
      await new Promise<void>((resolve) =>
        ctx.signal.addEventListener("abort", () => resolve(), { once: true }),
      );
      aborted.add(key);
      throw new Error("aborted");
    });
    await executor.start();
  });

  after(async () => {
    await executor?.stop();
    await scheduler?.stop();
    await db?.close();
  });

  async function register(spec: object): Promise<void> {
    await client.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(spec) } });
  }

  function task(run: Run, stepId: string, kind = TaskKind.STEP): Run["tasks"][number] {
    const t = run.tasks.find((x) => x.stepId === stepId && x.kind === kind);
    assert.ok(t, `task ${stepId} (${kind})`);
    return t;
  }

  const trip = (name: string, chargeCompensation: object | undefined) => ({
    name,
    version: 1,
    defaults: { retry: { maxAttempts: 3, initialInterval: "10ms" } },
    steps: [
      {
        id: "flight",
        type: "book-flight",
        input: { to: "{{ input.to }}" },
        compensate: { type: "cancel-flight", input: { ref: "{{ step.output.ref }}" } },
      },
      {
        id: "hotel",
        type: "book-hotel",
        dependsOn: ["flight"],
        compensate: {
          type: "cancel-hotel",
          input: { ref: "{{ step.output.ref }}", flight: "{{ steps.flight.output.ref }}" },
        },
      },
      {
        id: "charge",
        type: "charge-card",
        dependsOn: ["hotel"],
        input: { card: "{{ input.card }}" },
        ...(chargeCompensation === undefined ? {} : { compensate: chargeCompensation }),
      },
    ],
  });

  it("retries a retryable failure per policy and records every attempt", async () => {
    await register({
      name: "retrying",
      version: 1,
      steps: [
        {
          id: "s",
          type: "flaky",
          input: { key: "r1", failures: 2 },
          retry: { maxAttempts: 3, initialInterval: "20ms", jitter: "none" },
        },
      ],
    });
    const { run } = await client.startRun({ workflowName: "retrying" });
    const done = await waitForRun(client, run!.id);
    assert.equal(done.status, RunStatus.SUCCEEDED);
    const s = task(done, "s");
    assert.deepEqual(
      s.attempts.map((a) => a.status),
      [TaskStatus.FAILED, TaskStatus.FAILED, TaskStatus.SUCCEEDED],
    );
    assert.deepEqual(
      s.attempts.map((a) => a.error?.type ?? ""),
      ["TRANSIENT", "TRANSIENT", ""],
    );
    // Retries wait at least the configured interval (20 ms, then 40 ms without jitter).
    const ended1 = Number(s.attempts[0]!.endTime!.seconds) * 1000 + s.attempts[0]!.endTime!.nanos / 1e6;
    const leased2 = Number(s.attempts[1]!.leaseTime!.seconds) * 1000 + s.attempts[1]!.leaseTime!.nanos / 1e6;
    assert.ok(leased2 - ended1 >= 15, `second attempt ${leased2 - ended1} ms after the first failed`);

    await register({
      name: "exhausting",
      version: 1,
      steps: [
        {
          id: "s",
          type: "flaky",
          input: { key: "r2", failures: 99 },
          retry: { maxAttempts: 3, initialInterval: "10ms" },
        },
      ],
    });
    const { run: exhausted } = await client.startRun({ workflowName: "exhausting" });
    const failed = await waitForRun(client, exhausted!.id);
    assert.equal(failed.status, RunStatus.FAILED);
    assert.equal(task(failed, "s").attempts.length, 3);
  });

  it("does not retry error types the policy lists as non-retryable", async () => {
    await register({
      name: "nonretry",
      version: 1,
      steps: [
        {
          id: "s",
          type: "flaky",
          input: { key: "nr", failures: 5 },
          retry: { maxAttempts: 5, initialInterval: "10ms", nonRetryableErrors: ["TRANSIENT"] },
        },
      ],
    });
    const { run } = await client.startRun({ workflowName: "nonretry" });
    const done = await waitForRun(client, run!.id);
    assert.equal(done.status, RunStatus.FAILED);
    assert.equal(task(done, "s").attempts.length, 1);
  });

  it("fences an attempt that exceeds start-to-close: the handler is told to stop and the retry runs", async () => {
    await register({
      name: "slow",
      version: 1,
      steps: [
        {
          id: "s",
          type: "wait-for-abort",
          input: { key: "{{ input.key }}" },
          timeouts: { startToClose: "300ms" },
          retry: { maxAttempts: 2, initialInterval: "10ms" },
        },
      ],
    });
    const { run } = await client.startRun({ workflowName: "slow", input: jsonToValue({ key: "slow-1" }) });
    const done = await waitForRun(client, run!.id);
    assert.equal(done.status, RunStatus.FAILED);
    const s = task(done, "s");
    assert.equal(s.attempts.length, 2);
    assert.ok(s.attempts.every((a) => a.error?.type === "TIMEOUT"));
    await waitFor("the handler to see the abort", () => aborted.has("slow-1") || undefined);
  });

  it("ends a run that exceeds its run-level timeout TIMED_OUT and stops its running handler", async () => {
    await register({
      name: "run-timeout",
      version: 1,
      timeout: "400ms",
      steps: [{ id: "s", type: "wait-for-abort", input: { key: "{{ input.key }}" } }],
    });
    const { run } = await client.startRun({
      workflowName: "run-timeout",
      input: jsonToValue({ key: "rt-1" }),
    });
    const done = await waitForRun(client, run!.id);
    assert.equal(done.status, RunStatus.TIMED_OUT);
    assert.equal(done.error?.type, "RUN_TIMEOUT");
    assert.equal(task(done, "s").status, TaskStatus.CANCELLED);
    await waitFor("the handler to see the abort", () => aborted.has("rt-1") || undefined);
  });

  it("fails a silent handler with HEARTBEAT_TIMEOUT; built-ins, heartbeated by the executor, outlive the timeout", async () => {
    const spec = (name: string, step: object) => ({
      name,
      version: 1,
      steps: [{ id: "s", retry: { maxAttempts: 1 }, timeouts: { heartbeat: "300ms" }, ...step }],
    });
    await register(spec("hb-silent", { type: "wait-for-abort", input: { key: "{{ input.key }}" } }));
    await register(spec("hb-sleep", { type: "sleep", input: { duration: "1200ms" } }));
    const silent = await client.startRun({ workflowName: "hb-silent", input: jsonToValue({ key: "hb-1" }) });
    const sleeping = await client.startRun({ workflowName: "hb-sleep" });
    const failed = await waitForRun(client, silent.run!.id);
    assert.equal(failed.status, RunStatus.FAILED);
    assert.equal(task(failed, "s").attempts[0]?.error?.type, "HEARTBEAT_TIMEOUT");
    await waitFor("the silent handler to see the abort", () => aborted.has("hb-1") || undefined);
    const slept = await waitForRun(client, sleeping.run!.id);
    assert.equal(slept.status, RunStatus.SUCCEEDED, JSON.stringify(task(slept, "s").attempts[0]?.error));
    assert.deepEqual(valueToJson(task(slept, "s").output), { sleptMs: 1200 });
  });

  it("cancels a run: running handlers see ctx.signal abort and the run ends CANCELLED (idempotent)", async () => {
    await register({
      name: "cancellable",
      version: 1,
      steps: [
        { id: "s", type: "wait-for-abort", input: { key: "{{ input.key }}" } },
        { id: "after", type: "noop", dependsOn: ["s"] },
      ],
    });
    const { run } = await client.startRun({
      workflowName: "cancellable",
      input: jsonToValue({ key: "c-1" }),
    });
    await waitFor("the handler to start", () => started.has("c-1") || undefined);
    const first = await client.cancelRun({ runId: run!.id, reason: "user asked" });
    assert.equal(first.run?.status, RunStatus.CANCELLED);
    const second = await client.cancelRun({ runId: run!.id, reason: "again" });
    assert.equal(second.run?.status, RunStatus.CANCELLED);
    const code = (e: unknown): Code => ConnectError.from(e).code;
    await assert.rejects(
      client.cancelRun({ runId: "00000000-0000-4000-8000-000000000000" }),
      (e) => code(e) === Code.NotFound,
    );
    await assert.rejects(client.cancelRun({ runId: "not-a-run" }), (e) => code(e) === Code.InvalidArgument);
    await waitFor("the handler to see the abort", () => aborted.has("c-1") || undefined);
    assert.equal(task(second.run, "s").status, TaskStatus.CANCELLED);
    assert.equal(task(second.run, "after").status, TaskStatus.CANCELLED);
  });

  it("rolls a failed saga back: compensations of succeeded steps in reverse order, with their inputs", async () => {
    await register(trip("trip", undefined));
    calls.length = 0;
    const { run } = await client.startRun({
      workflowName: "trip",
      input: jsonToValue({ to: "Lisbon", card: "declined" }),
    });
    const done = await waitForRun(client, run!.id);
    assert.equal(done.status, RunStatus.COMPENSATED);
    assert.equal(done.error?.type, "CARD_DECLINED");
    assert.deepEqual(calls, ["book-flight", "book-hotel", "charge-card", "cancel-hotel", "cancel-flight"]);
    const cancelHotel = task(done, "hotel", TaskKind.COMPENSATION);
    assert.equal(cancelHotel.status, TaskStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(cancelHotel.input), { ref: "book-hotel-ref", flight: "book-flight-ref" });
    assert.equal(task(done, "flight", TaskKind.COMPENSATION).status, TaskStatus.SUCCEEDED);
    assert.equal(done.tasks.filter((t) => t.kind === TaskKind.COMPENSATION).length, 2);
  });

  it("a saga that succeeds runs no compensation", async () => {
    const { run } = await client.startRun({
      workflowName: "trip",
      input: jsonToValue({ to: "Porto", card: "ok" }),
    });
    const done = await waitForRun(client, run!.id);
    assert.equal(done.status, RunStatus.SUCCEEDED);
    assert.equal(done.tasks.filter((t) => t.kind === TaskKind.COMPENSATION).length, 0);
  });

  it("a compensation that keeps failing ends COMPENSATION_FAILED without blocking the others", async () => {
    await register({
      name: "trip-bad-refund",
      version: 1,
      defaults: { retry: { maxAttempts: 2, initialInterval: "10ms" } },
      steps: [
        { id: "flight", type: "book-flight", compensate: { type: "cancel-flight" } },
        {
          id: "pay",
          type: "charge-card",
          input: { card: "ok" },
          compensate: { type: "refund", retry: { maxAttempts: 2, initialInterval: "10ms" } },
        },
        { id: "fail", type: "charge-card", dependsOn: ["flight", "pay"], input: { card: "declined" } },
      ],
    });
    const { run } = await client.startRun({ workflowName: "trip-bad-refund" });
    const done = await waitForRun(client, run!.id);
    assert.equal(done.status, RunStatus.COMPENSATION_FAILED);
    assert.equal(task(done, "flight", TaskKind.COMPENSATION).status, TaskStatus.SUCCEEDED);
    const refund = task(done, "pay", TaskKind.COMPENSATION);
    assert.equal(refund.status, TaskStatus.FAILED);
    assert.equal(refund.attempts.length, 2);
    assert.match(done.error?.message ?? "", /compensation of pay failed/);
  });

  it("cancel with compensate rolls back what succeeded and stops what runs", async () => {
    await register({
      name: "trip-cancel",
      version: 1,
      steps: [
        { id: "flight", type: "book-flight", compensate: { type: "cancel-flight" } },
        { id: "wait", type: "wait-for-abort", dependsOn: ["flight"], input: { key: "{{ input.key }}" } },
      ],
    });
    const { run } = await client.startRun({
      workflowName: "trip-cancel",
      input: jsonToValue({ key: "tc-1" }),
    });
    await waitFor("the waiting step to start", () => started.has("tc-1") || undefined);
    await client.cancelRun({ runId: run!.id, reason: "trip cancelled", compensate: true });
    const done = await waitForRun(client, run!.id);
    assert.equal(done.status, RunStatus.COMPENSATED);
    assert.equal(task(done, "wait").status, TaskStatus.CANCELLED);
    assert.equal(task(done, "flight", TaskKind.COMPENSATION).status, TaskStatus.SUCCEEDED);
    await waitFor("the handler to see the abort", () => aborted.has("tc-1") || undefined);
  });
});
