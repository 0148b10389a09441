/**
 * A failed attempt: retried after a backoff by the step's policy (the jitter draw is an input), or
 * failed for good, which advances the run (or its rollback). A retry comes due as a timer.
 */
import { errorToProto } from "@nexusflow/common";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { isRetryableError, retryDelayMs, type ResolvedRetryPolicy } from "../dag/index.js";
import type { ErrorInfo, RunState, TaskState } from "../model/run-state.js";
import { advanceCompensation } from "./compensation.js";
import type { Core, Moment } from "./context.js";
import { advance } from "./runs.js";
import { armRetry } from "./timers.js";
import { detach, endTask, finishAttempt, queueTask, taskKind } from "./transitions.js";

/** The retry policy of the task: its step's, or for a compensation its own if it has one. */
export function retryPolicyOf(run: RunState | undefined, task: TaskState): ResolvedRetryPolicy | undefined {
  const step = run?.workflow.stepsById.get(task.stepId);
  if (step === undefined) return undefined;
  return task.kind === "STEP" ? step.retry : (step.compensate?.retry ?? step.retry);
}

/**
 * The delay before the next attempt after the `failures`-th failure, or null to fail for good: no
 * policy, a non-retryable error, a cancelled run, or no attempts left. An executor's retry-after
 * hint replaces the backoff, capped by the policy's maximum interval. `jitter` is in [0, 1).
 */
export function retryDelay(
  policy: ResolvedRetryPolicy | undefined,
  error: ErrorInfo,
  failures: number,
  retryAfterMs: number,
  cancelRequested: boolean,
  jitter: number,
): number | null {
  if (policy === undefined || !error.retryable || !isRetryableError(policy, error.type) || cancelRequested)
    return null;
  const delay = retryDelayMs(policy, failures, () => jitter);
  if (delay !== null && retryAfterMs > 0) return Math.min(retryAfterMs, policy.maxIntervalMs);
  return delay;
}

/** Fails the task's current attempt: RETRY_WAIT with its timer, or FAILED for good. */
export function failAttempt(
  core: Core,
  task: TaskState,
  error: ErrorInfo,
  retryAfterMs: number,
  at: Moment,
  logs?: unknown,
): void {
  const run = core.runs.get(task.runId);
  const now = at.now;
  finishAttempt(core, task, "FAILED", error, now, logs);
  detach(core, task);
  task.failures++;
  const delay = retryDelay(
    retryPolicyOf(run, task),
    error,
    task.failures,
    retryAfterMs,
    run?.cancelRequested === true,
    at.jitter,
  );
  const kind = taskKind(task);
  if (run !== undefined) {
    core.fx.event(run, {
      case: "taskFailed",
      value: {
        taskRunId: task.id,
        stepId: task.stepId,
        attempt: task.attempt,
        error: errorToProto(error),
        final: delay === null,
        kind,
      },
    });
  }
  if (delay !== null && run !== undefined) {
    task.status = "RETRY_WAIT";
    task.nextAttemptAt = new Date(now.getTime() + delay);
    task.error = error;
    core.fx.writeTask(task);
    core.fx.event(run, {
      case: "taskRetryScheduled",
      value: {
        taskRunId: task.id,
        stepId: task.stepId,
        nextAttempt: task.attempt + 1,
        dueTime: timestampFromDate(task.nextAttemptAt),
        kind,
      },
    });
    armRetry(core, task, now.getTime());
  } else {
    task.error = error;
    endTask(core, task, "FAILED", now);
    if (run !== undefined) {
      if (task.kind === "COMPENSATION") advanceCompensation(core, run, now);
      else advance(core, run, now);
    }
  }
  core.fx.commit();
}

/** A retry came due: the task is queued again. */
export function retryDue(core: Core, task: TaskState, now: Date): void {
  if (task.status !== "RETRY_WAIT") return;
  task.nextAttemptAt = null;
  queueTask(core, task, now);
  core.fx.pump();
}
