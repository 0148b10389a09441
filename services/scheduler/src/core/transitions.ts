/**
 * The state changes every rule is made of: a task queued, its attempt finished, the task ended or
 * failed for good, its lease detached from its session, the run completed. Each writes the rows it
 * changes and the events it implies.
 */
import { errorToProto, jsonToValue } from "@nexusflow/common";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { RunStatus, TaskKind } from "@nexusflow/gen";
import type { StepState, StepStates } from "../dag/index.js";
import type { ErrorInfo, RunState, TaskState, TaskStatusName } from "../model/run-state.js";
import { childEnded } from "./children.js";
import { mapElementEnded } from "./maps.js";
import { releaseRun, releaseTask } from "./concurrency.js";
import { releaseShare } from "./fair-shares.js";
import type { Core, EventInit } from "./context.js";
import { armScheduleToStart } from "./timers.js";

/** The task's kind as in events. */
export function taskKind(task: TaskState): TaskKind {
  return task.kind === "STEP" ? TaskKind.STEP : TaskKind.COMPENSATION;
}

const PENDING_STATE: StepState = Object.freeze({ status: "pending" });
const CANCELLED_STATE: StepState = Object.freeze({ status: "cancelled" });

/** A task as DAG evaluation sees it. */
export function stepState(t: TaskState): StepState {
  switch (t.status) {
    case "PENDING":
      return PENDING_STATE;
    case "QUEUED":
    case "LEASED":
    case "RUNNING":
    case "RETRY_WAIT":
    case "WAITING":
      return { status: "active", input: t.input };
    case "SUCCEEDED":
      // An offloaded output counts once it has been read back (see reports.ts outputResolved).
      if (t.outputRef !== null && t.outputRef !== undefined) {
        return t.resolvedOutput === undefined
          ? { status: "active", input: t.input }
          : { status: "succeeded", output: t.resolvedOutput, input: t.input };
      }
      return { status: "succeeded", output: t.output, input: t.input };
    case "FAILED":
      return { status: "failed", input: t.input };
    case "SKIPPED":
      return { status: "skipped", skipReason: t.skipReason ?? "upstream" };
    case "CANCELLED":
      return CANCELLED_STATE;
  }
}

/**
 * The DAG states of a run's steps: a view over its tasks, each state made when asked. Evaluating a
 * run reads every step's state once per advance; a map of them all built first made each step's
 * completion cost O(steps) in allocations and hashing (a chain of 1,000 steps: ~0.1 ms per hop).
 */
export function stepStates(run: RunState): StepStates {
  return {
    get(stepId: string): StepState | undefined {
      const t = run.tasks.get(stepId);
      return t === undefined ? undefined : stepState(t);
    },
  };
}

/** Moves a task to QUEUED, offers its lease and arms its schedule-to-start timeout. */
export function queueTask(core: Core, task: TaskState, now: Date): void {
  task.status = "QUEUED";
  task.queuedAt = now;
  core.fx.writeTask(task);
  core.fx.offer(task, false);
  armScheduleToStart(core, task, null);
}

/** Removes the task's lease from its session (the session gets no credit back: the executor grants it). */
export function detach(core: Core, task: TaskState): void {
  if (task.sessionId !== null) core.sessions.get(task.sessionId)?.leases.delete(task.id);
  task.sessionId = null;
  task.leaseExpiresAt = null;
  core.fx.leaseEnded(task);
  // Its concurrency slots (or its place in a key's queue) go to the next in line.
  if (task.claim !== undefined) releaseTask(core, task);
  if (task.fairLease !== undefined) releaseShare(task);
}

/** Ends the current attempt with `status`. */
export function finishAttempt(
  core: Core,
  task: TaskState,
  status: TaskStatusName,
  error: ErrorInfo | null,
  now: Date,
  logs?: unknown,
): void {
  const a = task.current;
  if (a === null) return;
  a.status = status;
  a.error = error;
  a.endedAt = now;
  if (logs !== undefined) a.logs = logs;
  core.fx.writeAttempt(a);
  task.current = null;
}

/** Ends a task with a terminal `status`. */
export function endTask(core: Core, task: TaskState, status: TaskStatusName, now: Date): void {
  task.status = status;
  task.endedAt = now;
  task.nextAttemptAt = null;
  detach(core, task);
  core.eventWaits?.remove(task);
  core.fx.writeTask(task);
  if (task.elementIndex !== undefined) mapElementEnded(core, task, now);
}

/**
 * Ends a task SUCCEEDED with `output` (held in its row, not offloaded) and emits its taskSucceeded
 * event: a wait, sleep, child workflow or map step, or a child rollback's compensation.
 */
export function succeedTask(core: Core, run: RunState, task: TaskState, output: unknown, now: Date): void {
  task.output = output ?? null;
  endTask(core, task, "SUCCEEDED", now);
  core.fx.event(run, {
    case: "taskSucceeded",
    value: {
      taskRunId: task.id,
      stepId: task.stepId,
      attempt: task.attempt,
      output: jsonToValue(output ?? null),
      kind: taskKind(task),
    },
  });
}

/** What a waiting task waits for, as its taskWaiting event says (signal "" unless named). */
export type WaitingOn = Pick<
  Extract<EventInit, { case: "taskWaiting" }>["value"],
  "signal" | "childRunId" | "event" | "filter"
>;

/**
 * Puts a task in WAITING (`due`: when it wakes by itself, or null), writes it and emits its
 * taskWaiting event (with the due time, if any, and what it waits for).
 */
export function waitTask(
  core: Core,
  run: RunState,
  task: TaskState,
  due: Date | null,
  kind: TaskKind,
  on: WaitingOn = {},
): void {
  task.status = "WAITING";
  task.nextAttemptAt = due;
  core.fx.writeTask(task);
  core.fx.event(run, {
    case: "taskWaiting",
    value: {
      taskRunId: task.id,
      stepId: task.stepId,
      signal: "",
      ...on,
      kind,
      ...(due === null ? {} : { dueTime: timestampFromDate(due) }),
    },
  });
}

/** Fails a task for good without an attempt of its own (render errors, unreadable outputs). */
export function failTerminally(
  core: Core,
  run: RunState,
  task: TaskState,
  error: ErrorInfo,
  now: Date,
): void {
  task.error = error;
  endTask(core, task, "FAILED", now);
  core.fx.event(run, {
    case: "taskFailed",
    value: {
      taskRunId: task.id,
      stepId: task.stepId,
      attempt: task.attempt,
      final: true,
      kind: taskKind(task),
      error: errorToProto(error),
    },
  });
}

/**
 * Ends the run with `status`; once committed it leaves memory. Its own end (row, runCompleted
 * event, runEnded) is recorded before anything that reaches other runs (its concurrency slots
 * going to the next in line, its parent's step ending): a fault there cannot leave a run ended in
 * memory and not in storage (runs.ts failBrokenRun leaves a run already ended be).
 */
export function completeRun(
  core: Core,
  run: RunState,
  status: RunState["status"],
  output: unknown,
  error: ErrorInfo | null,
  now: Date,
): void {
  run.status = status;
  run.output = output ?? null;
  run.error = error;
  run.endedAt = now;
  core.fx.writeRun(run);
  core.fx.event(run, {
    case: "runCompleted",
    value: {
      status: RunStatus[status],
      ...(output === null || output === undefined ? {} : { output: jsonToValue(output) }),
      ...(error === null ? {} : { error: errorToProto(error) }),
    },
  });
  core.fx.runEnded(run);
  if (run.claim !== undefined) releaseRun(core, run);
  // A child's end ends its parent's step in the same commit (a fault there is the parent's).
  if (run.parent !== null) childEnded(core, run, now);
}
