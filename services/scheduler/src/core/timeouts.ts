/**
 * The timeouts, each failing an attempt as retryable: schedule-to-start (no executor took the
 * queued task in time), start-to-close (the attempt ran too long), heartbeat (the running attempt
 * went silent); and the run's own deadline. Timers come back here as inputs when they fire.
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { ACTIVE_LEASE, type RunState, type TaskState } from "../model/run-state.js";
import type { Core, Moment, Timer } from "./context.js";
import { failAttempt, retryDue } from "./retries.js";
import { timeOutRun } from "./runs.js";
import { leaseGraceExpired } from "./sessions.js";
import { rateWake } from "./rate-limits.js";
import { durableDue } from "./waits.js";

/**
 * No executor took the queued attempt within `limitMs`. That attempt had no lease, yet it counts
 * against the retry policy like any other, so it is recorded as an attempt without executor or
 * start time (its lease time is when it was queued): GetRun lists it, and recovery, which counts
 * failed attempts, does not forget it.
 */
export function scheduleToStartExpired(
  core: Core,
  task: TaskState,
  attempt: number,
  limitMs: number,
  at: Moment,
): void {
  if (task.status !== "QUEUED" || task.attempt !== attempt) return;
  task.attempt++;
  task.fencingToken++;
  task.current = {
    taskRunId: task.id,
    runId: task.runId,
    number: task.attempt,
    fencingToken: task.fencingToken,
    executorId: "",
    status: "QUEUED",
    error: null,
    logs: null,
    leasedAt: task.queuedAt ?? at.now,
    startedAt: null,
    endedAt: null,
  };
  task.queuedAt = null;
  failAttempt(
    core,
    task,
    {
      type: TaskErrorType.SCHEDULE_TO_START_TIMEOUT,
      message: `no executor started the task within ${limitMs} ms`,
      retryable: true,
    },
    0,
    at,
  );
}

/** The lease with `token` reached its start-to-close deadline. */
export function startToCloseExpired(core: Core, task: TaskState, token: number, at: Moment): void {
  if (task.fencingToken !== token || !ACTIVE_LEASE.has(task.status)) return;
  core.fx.cancelLease(task, "start-to-close timeout");
  failAttempt(
    core,
    task,
    {
      type: TaskErrorType.TIMEOUT,
      message: "the attempt exceeded its start-to-close timeout",
      retryable: true,
    },
    0,
    at,
  );
}

/** Fails the running attempt of `taskRunId` if its last heartbeat is older than its step allows. */
export function checkHeartbeat(core: Core, taskRunId: string, at: Moment): void {
  const task = core.tasks.get(taskRunId);
  if (task?.status !== "RUNNING") return;
  const step = core.runs.get(task.runId)?.workflow.stepsById.get(task.stepId);
  const limit = task.kind === "STEP" ? step?.timeouts.heartbeatMs : step?.compensate?.timeouts.heartbeatMs;
  if (limit == null || at.mono - task.lastHeartbeat <= limit) return;
  core.fx.cancelLease(task, "heartbeat timeout");
  failAttempt(
    core,
    task,
    { type: TaskErrorType.HEARTBEAT_TIMEOUT, message: `no heartbeat within ${limit} ms`, retryable: true },
    0,
    at,
  );
}

/** The active run a timer is about, if any (a rate limit's timer is about a bucket). */
export function timerRun(core: Core, timer: Timer): RunState | undefined {
  if (timer.kind === "rate-limit") return undefined;
  return timer.kind === "run-deadline" ? timer.run : core.runs.get(timer.task.runId);
}

/** A timer fired. Returns true when it was a lease's grace and the lease expired (for the log). */
export function timerFired(core: Core, timer: Timer, at: Moment): boolean {
  switch (timer.kind) {
    case "schedule-to-start":
      scheduleToStartExpired(core, timer.task, timer.attempt, timer.limitMs, at);
      return false;
    case "start-to-close":
      startToCloseExpired(core, timer.task, timer.token, at);
      return false;
    case "retry":
      retryDue(core, timer.task, at.now);
      return false;
    case "run-deadline":
      timeOutRun(core, timer.run, at.now);
      return false;
    case "lease-grace":
      return leaseGraceExpired(core, timer.task, timer.token, at);
    case "durable":
      durableDue(core, timer.task, at.now);
      return false;
    case "rate-limit":
      rateWake(core, timer.bucket, timer.at, at.now);
      return false;
  }
}
