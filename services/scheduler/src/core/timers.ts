/**
 * Arming the durable timers: when each kind is due, from the workflow's timeouts and the task's
 * stored times. What happens when one fires is timeouts.ts (and retries.ts for a retry).
 */
import type { RunState, TaskState } from "../model/run-state.js";
import type { Core } from "./context.js";

/** The schedule-to-start timeout of the task's step (or compensation), if it has one. */
export function scheduleToStartMs(core: Core, task: TaskState): number | null {
  const step = core.runs.get(task.runId)?.workflow.stepsById.get(task.stepId);
  const timeouts = task.kind === "STEP" ? step?.timeouts : step?.compensate?.timeouts;
  return timeouts?.scheduleToStartMs ?? null;
}

/**
 * Arms the schedule-to-start timeout of a queued task: the whole limit, or (after a restart, with
 * the task's `queuedAt` and `nowMs` given) only what is left of it.
 */
export function armScheduleToStart(core: Core, task: TaskState, nowMs: number | null): void {
  const limitMs = scheduleToStartMs(core, task);
  if (limitMs === null) return;
  const waited = nowMs === null || task.queuedAt === null ? 0 : nowMs - task.queuedAt.getTime();
  core.fx.setTimer({ kind: "schedule-to-start", task, attempt: task.attempt, limitMs }, limitMs - waited);
}

/** Arms the durable retry timer of a task in RETRY_WAIT (rebuilt from next_attempt_at on recovery). */
export function armRetry(core: Core, task: TaskState, nowMs: number): void {
  const due = task.nextAttemptAt?.getTime() ?? nowMs;
  core.fx.setTimer({ kind: "retry", task }, due - nowMs);
}

/** Arms the run's deadline, if it has one. */
export function armRunDeadline(core: Core, run: RunState, nowMs: number): void {
  if (run.deadline !== null) core.fx.setTimer({ kind: "run-deadline", run }, run.deadline.getTime() - nowMs);
}

/** Arms the start-to-close timeout of a lease just sent, if it has one. */
export function armStartToClose(core: Core, task: TaskState, nowMs: number): void {
  if (task.leaseExpiresAt === null) return;
  core.fx.setTimer(
    { kind: "start-to-close", task, token: task.fencingToken },
    task.leaseExpiresAt.getTime() - nowMs,
  );
}
