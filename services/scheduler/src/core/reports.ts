/**
 * An executor's reports about a lease it holds: started, heartbeat, completed (accepted at most
 * once), failed, released; and the offloaded output of a completion read back, or not readable.
 * Every report is fenced first (fencing.ts).
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import type { LeaseKey } from "@nexusflow/gen";
import { ELEMENT_FOLDERS_VERSION, MIN_SESSION_PROTOCOL_VERSION, jsonToValue } from "@nexusflow/common";
import { attemptPrefix, checkKey, toArtifactRef } from "@nexusflow/common/artifacts";
import type { ErrorInfo, TaskState } from "../model/run-state.js";
import { advanceCompensation } from "./compensation.js";
import type { Core, Moment, Rejection } from "./context.js";
import { checkReport, isRejection } from "./fencing.js";
import { pauseTaskKeys } from "./rate-limits.js";
import { failAttempt } from "./retries.js";
import { advance } from "./runs.js";
import { mapOutputResolved, mapOutputUnavailable } from "./maps.js";
import { keysRead } from "./unread-keys.js";
import { detach, failTerminally, finishAttempt, endTask, taskKind } from "./transitions.js";

/** Who reports: the session, its executor and its protocol version (absent: 1). */
export interface Reporter {
  readonly id: string;
  readonly executorId: string;
  readonly protocolVersion?: number;
}

/**
 * The attempt began: RUNNING, its start time and a taskStarted event. Also applied by a Completed
 * or Failed report for an attempt still LEASED, because an executor may leave out the Started of
 * an attempt that finished before Started was sent (the result implies the start).
 */
function markStarted(core: Core, task: TaskState, executorId: string, at: Moment): void {
  const run = core.runs.get(task.runId);
  task.status = "RUNNING";
  task.lastHeartbeat = at.mono;
  if (task.current !== null) {
    task.current.status = "RUNNING";
    task.current.startedAt = at.now;
    core.fx.writeAttempt(task.current);
  }
  core.fx.writeTask(task);
  if (run !== undefined) {
    core.fx.event(run, {
      case: "taskStarted",
      value: {
        taskRunId: task.id,
        stepId: task.stepId,
        attempt: task.attempt,
        executorId,
        kind: taskKind(task),
      },
    });
  }
}

/** Started report. */
export function started(
  core: Core,
  session: Reporter,
  key: LeaseKey | undefined,
  at: Moment,
): Rejection | null {
  const task = checkReport(core, session, key);
  if (isRejection(task)) return task;
  if (task.status !== "LEASED")
    return { code: "FAILED_PRECONDITION", message: `task run ${task.id} was already started` };
  markStarted(core, task, session.executorId, at);
  // No commit of its own when another is near: RUNNING rides along with it.
  core.fx.commitSoon();
  return null;
}

/** Heartbeat report for a task. */
export function heartbeat(
  core: Core,
  session: Reporter,
  key: LeaseKey | undefined,
  at: Moment,
): Rejection | null {
  const task = checkReport(core, session, key);
  if (isRejection(task)) return task;
  task.lastHeartbeat = at.mono;
  return null;
}

/**
 * A report's artifact references (its offloaded output, its logs) must name objects in the folder
 * of the attempt reported on, where the executor writes them: the scheduler reads an offloaded
 * output back into the run, and serves logs by these keys, so a key elsewhere (another run's
 * output, any object of the store) would hand an executor whatever it names. INVALID_ARGUMENT,
 * before anything changes; null when every key is the attempt's own.
 *
 * A map element's folder is its own (the elements share the step id, see Lease.element_index) on
 * a session of protocol version 3 (ELEMENT_FOLDERS_VERSION) or later. An executor of an older
 * session (an older release, or ours attached to an older scheduler) ignores element_index and
 * stores every element's objects in the step's attempt folder, shared by the step's elements (the
 * old bug: their outputs may overwrite each other) until it is upgraded: from such a session the
 * step's attempt folder is taken too, so that a rolling upgrade does not fail every map element;
 * and so it is for a lease granted on such a session and reported on a newer one (its executor
 * re-attached to an upgraded scheduler), or recovered from storage (TaskState.elementFolder).
 */
function foreignRefs(
  task: TaskState,
  protocolVersion: number,
  refs: Record<string, unknown>,
): Rejection | null {
  const folders: string[] = [];
  try {
    folders.push(attemptPrefix(task.runId, task.stepId, task.attempt, task.kind, task.elementIndex));
    // The folder the lease's executor was told to use (its grant's session), or, for a lease
    // recovered from storage, whichever it used.
    if (
      task.elementIndex !== undefined &&
      (protocolVersion < ELEMENT_FOLDERS_VERSION || task.elementFolder !== true)
    )
      folders.push(attemptPrefix(task.runId, task.stepId, task.attempt, task.kind));
  } catch {
    // No folder can be named for the attempt: no key is its own.
  }
  for (const [field, ref] of Object.entries(refs)) {
    if (ref === null || ref === undefined) continue;
    const key = (ref as { key?: unknown }).key;
    // A log reference without a key (the proto allows it) names no object.
    if (field === "logs" && (key === undefined || key === "")) continue;
    let ok = false;
    try {
      ok =
        typeof key === "string" && checkKey(key) === key && folders.some((folder) => key.startsWith(folder));
    } catch {
      ok = false;
    }
    if (!ok)
      return {
        code: "INVALID_ARGUMENT",
        message: `${field}.key ${JSON.stringify(String(key)).slice(0, 300)} is not in the attempt's own folder ${folders.join(" or ")}`,
      };
  }
  return null;
}

/** Completed report: accepted at most once per task. */
export function completed(
  core: Core,
  session: Reporter,
  key: LeaseKey | undefined,
  output: unknown,
  outputRef: unknown,
  logs: unknown,
  at: Moment,
): Rejection | null {
  const task = checkReport(core, session, key);
  if (isRejection(task)) return task;
  const foreign = foreignRefs(task, session.protocolVersion ?? MIN_SESSION_PROTOCOL_VERSION, {
    output_ref: outputRef,
    logs,
  });
  if (foreign !== null) return foreign;
  if (task.status === "LEASED") markStarted(core, task, session.executorId, at);
  const run = core.runs.get(task.runId);
  const now = at.now;
  finishAttempt(core, task, "SUCCEEDED", null, now, logs);
  task.output = output ?? null;
  task.outputRef = outputRef ?? null;
  endTask(core, task, "SUCCEEDED", now);
  if (task.kind === "STEP" && task.outputRef !== null) core.fx.resolveOutput(task);
  if (run !== undefined) {
    core.fx.event(run, {
      case: "taskSucceeded",
      value: {
        taskRunId: task.id,
        stepId: task.stepId,
        attempt: task.attempt,
        ...(task.outputRef === null
          ? { output: jsonToValue(output) }
          : { outputRef: toArtifactRef(task.outputRef) }),
        kind: taskKind(task),
      },
    });
    if (task.kind === "STEP") {
      // The completions of a wide fan-in that arrive together cost one evaluation, not one each;
      // the commit follows it, so a completion and the steps it makes ready are written together.
      core.fx.advanceSoon(run);
      return null;
    }
    advanceCompensation(core, run, now);
  }
  core.fx.commit();
  return null;
}

/** Failed report: retried per policy or failed for good. */
export function failed(
  core: Core,
  session: Reporter,
  key: LeaseKey | undefined,
  error: ErrorInfo,
  retryAfterMs: number,
  logs: unknown,
  at: Moment,
  pauseKeyUntilMs = 0,
): Rejection | null {
  const task = checkReport(core, session, key);
  if (isRejection(task)) return task;
  const foreign = foreignRefs(task, session.protocolVersion ?? MIN_SESSION_PROTOCOL_VERSION, { logs });
  if (foreign !== null) return foreign;
  if (task.status === "LEASED") markStarted(core, task, session.executorId, at);
  if (pauseKeyUntilMs > at.now.getTime())
    pauseTaskKeys(
      core,
      task,
      pauseKeyUntilMs,
      `handler (task run ${task.id})`,
      `${error.type}: ${error.message}`,
      at.now,
    );
  failAttempt(core, task, error, retryAfterMs, at, logs);
  return null;
}

/** Release report: the lease goes back to the front of the queue without counting as a failure. */
export function released(
  core: Core,
  session: Reporter,
  key: LeaseKey | undefined,
  reason: string,
  at: Moment,
): Rejection | null {
  const task = checkReport(core, session, key);
  if (isRejection(task)) return task;
  const now = at.now;
  const error = {
    type: TaskErrorType.RELEASED,
    message: reason || "released by the executor",
    retryable: true,
  };
  finishAttempt(core, task, "CANCELLED", error, now);
  detach(core, task);
  task.status = "QUEUED";
  task.queuedAt = now;
  core.fx.writeTask(task);
  core.fx.offer(task, true);
  core.fx.pump();
  return null;
}

/** A step's offloaded output was read back: templates, conditions and the output mapping see it now. */
export function outputResolved(core: Core, task: TaskState, value: unknown, now: Date): void {
  task.resolvedOutput = value ?? null;
  const run = core.runs.get(task.runId);
  if (run === undefined) return;
  if (task.elementIndex !== undefined) mapOutputResolved(core, task, now);
  // Keys of its run's queued or leased tasks that waited for it (after a restart) are known now.
  if (run.unreadKeys !== undefined) keysRead(core, run, now);
  advance(core, run, now);
  core.fx.commit();
}

/** A step's offloaded output is gone or corrupt: the step fails (OUTPUT_UNAVAILABLE). */
export function outputUnavailable(core: Core, task: TaskState, reason: string, now: Date): void {
  const run = core.runs.get(task.runId);
  if (run === undefined || task.status !== "SUCCEEDED") return;
  if (task.elementIndex !== undefined) mapOutputUnavailable(core, task);
  failTerminally(
    core,
    run,
    task,
    {
      type: TaskErrorType.OUTPUT_UNAVAILABLE,
      message: `the offloaded output of step ${task.stepId} cannot be read: ${reason}`,
      retryable: false,
    },
    now,
  );
  if (run.unreadKeys !== undefined) keysRead(core, run, now);
  advance(core, run, now);
  core.fx.commit();
}
