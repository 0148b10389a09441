import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createLogger } from "@nexusflow/common";
import { type Lease, type LeaseKey, LeaseSchema } from "@nexusflow/gen";
import { TaskError } from "./handlers/task-error.js";
import type { TaskHandler } from "./handlers/types.js";
import { MemoryLogSink } from "./log-sink.js";
import { RunningTasks } from "./running-tasks.js";
import type { AttemptOutcome, TaskAttempt } from "./task-attempt.js";

let leases = 0;
function lease(taskType: string): Lease & { key: LeaseKey } {
  const n = ++leases;
  return create(LeaseSchema, {
    key: { taskRunId: `task-run-${n}`, attempt: 1, fencingToken: BigInt(n) },
    runId: "run",
    stepId: `step-${n}`,
    taskType,
  }) as Lease & { key: LeaseKey };
}

/** Runs until its signal aborts, then fails with a generic error (the abort reason wins over it). */
const untilAborted: TaskHandler = (_input, ctx) =>
  new Promise((_resolve, reject) =>
    ctx.signal.addEventListener("abort", () => reject(new Error("socket hang up")), { once: true }),
  );

/** Never settles, whatever its signal says. */
const deaf: TaskHandler = () => new Promise(() => {});

/** A table whose handlers are picked by task type, recording every end. */
function table(handlers: Record<string, TaskHandler>) {
  const ended: { attempt: TaskAttempt; outcome: AttemptOutcome; sizeThen: number }[] = [];
  const tasks: RunningTasks = new RunningTasks({
    logger: createLogger("test", "silent"),
    attempts: { logSink: new MemoryLogSink(), maxPayloadBytes: 1_000, sendHeartbeat: () => {} },
    handlerFor: (type) => ({ handler: handlers[type] ?? (() => null), heartbeat: "manual" }),
    onDone: (attempt, outcome) => ended.push({ attempt, outcome, sizeThen: tasks.size }),
  });
  /** Resolves once the attempt of `l` has ended, with its outcome. */
  const outcome = async (l: Lease & { key: LeaseKey }): Promise<AttemptOutcome> => {
    await tasks.whenEmpty(new AbortController().signal);
    const end = ended.find((e) => e.attempt.key.taskRunId === l.key.taskRunId);
    assert.ok(end, `no end for ${l.key.taskRunId}`);
    return end.outcome;
  };
  return { tasks, ended, outcome };
}

function failureType(outcome: AttemptOutcome): string | undefined {
  return outcome.status === "failed" ? outcome.failure.type : undefined;
}

describe("RunningTasks", () => {
  it("runs an attempt with its type's handler and hands its outcome over once it left the table", async () => {
    const { tasks, ended, outcome } = table({ echo: (input) => ({ echoed: input }) });
    const l = lease("echo");
    const attempt = tasks.start(l);
    assert.equal(tasks.size, 1);
    assert.equal(tasks.get(l.key), attempt);
    assert.deepEqual(
      tasks.keys().map((k) => k.taskRunId),
      [l.key.taskRunId],
    );
    assert.equal(tasks.reportable(attempt), true);
    assert.equal((await outcome(l)).status, "completed");
    assert.equal(ended[0]?.sizeThen, 0, "onDone is called after the attempt left the table");
    assert.equal(tasks.reportable(attempt), false);
    assert.equal(tasks.get(l.key), undefined);
  });

  it("cancels a running attempt, which fails CANCELLED and is still reported", async () => {
    const { tasks, outcome } = table({ wait: untilAborted });
    const l = lease("wait");
    const attempt = tasks.start(l);
    tasks.cancel(lease("wait").key, "not this one");
    assert.equal(tasks.size, 1);
    tasks.cancel(l.key, "run cancelled");
    const ended = await outcome(l);
    assert.equal(failureType(ended), "CANCELLED");
    assert.equal(attempt.silenced, false);
  });

  it("revokes and loses leases: their attempts are aborted and silenced", async () => {
    const { tasks, outcome } = table({ wait: untilAborted });
    const revoked = lease("wait");
    const lost = lease("wait");
    const a = tasks.start(revoked);
    const b = tasks.start(lost);
    assert.equal(tasks.revoke(lease("wait").key), false, "nothing runs on that lease");
    assert.equal(tasks.revoke(revoked.key), true);
    tasks.lose(lost.key, { code: "FAILED_PRECONDITION", message: "stale fencing token" });
    assert.equal(tasks.reportable(a), false);
    assert.equal(tasks.reportable(b), false);
    assert.equal(failureType(await outcome(revoked)), "LEASE_REVOKED");
    assert.equal(failureType(await outcome(lost)), "LEASE_LOST");
    assert.ok(a.silenced && b.silenced);
  });

  it("abortAll aborts every attempt and settles one that ignores its signal after the grace period", async () => {
    const { tasks, ended } = table({ wait: untilAborted, deaf });
    tasks.start(lease("wait"));
    tasks.start(lease("deaf"));
    const reason = TaskError.retryable("EXECUTOR_SHUTDOWN", "shutting down");
    await tasks.abortAll(reason, 20);
    assert.equal(tasks.size, 0);
    assert.deepEqual(
      ended.map((e) => [e.attempt.lease.taskType, failureType(e.outcome)]),
      [
        ["wait", "EXECUTOR_SHUTDOWN"],
        ["deaf", "EXECUTOR_SHUTDOWN"],
      ],
    );
  });

  it("reports an attempt failed, once more, when handing its outcome over throws, so that it is not lost", async () => {
    const ended: AttemptOutcome[] = [];
    const tasks = new RunningTasks({
      logger: createLogger("test", "silent"),
      attempts: { logSink: new MemoryLogSink(), maxPayloadBytes: 1_000, sendHeartbeat: () => {} },
      handlerFor: () => ({ handler: () => ({ ok: true }), heartbeat: "manual" }),
      onDone: (_attempt, outcome) => {
        ended.push(outcome);
        if (outcome.status === "completed") throw new Error("cannot encode the output");
      },
    });
    tasks.start(lease("any"));
    assert.equal(await tasks.whenEmpty(new AbortController().signal), true);
    assert.deepEqual(
      ended.map((o) => o.status),
      ["completed", "failed"],
    );
    const failed = ended[1];
    assert.deepEqual(failed?.status === "failed" && failed.failure, {
      type: "Error",
      message: "the executor could not report how the attempt ended: cannot encode the output",
      retryable: true,
    });
  });

  it("whenEmpty resolves false when its signal aborts first", async () => {
    const { tasks } = table({ wait: untilAborted });
    const l = lease("wait");
    tasks.start(l);
    const abort = new AbortController();
    const waiting = tasks.whenEmpty(abort.signal);
    abort.abort();
    assert.equal(await waiting, false);
    tasks.cancel(l.key, "test over");
    assert.equal(await tasks.whenEmpty(new AbortController().signal), true);
  });
});
