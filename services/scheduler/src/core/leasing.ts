/**
 * Leasing: a queued task given to a session becomes LEASED with a new attempt and a higher fencing
 * token; the lease is sent only once that is committed, and only if it still stands then.
 */
import { ACTIVE_LEASE, type RunState, type TaskState, leasedAttempt } from "../model/run-state.js";
import type { Core, SessionLeases } from "./context.js";
import { taskKind } from "./transitions.js";

/** Leases `task` of `run` to `session`; returns the fencing token of the lease. */
export function grantLease(
  core: Core,
  run: RunState,
  task: TaskState,
  session: SessionLeases,
  now: Date,
): number {
  task.attempt++;
  task.fencingToken++;
  task.status = "LEASED";
  task.executorId = session.executorId;
  task.sessionId = session.id;
  task.queuedAt = null;
  const attempt = leasedAttempt(task, session.executorId, now);
  task.current = attempt;
  const startToClose = run.workflow.stepsById.get(task.stepId)?.timeouts.startToCloseMs ?? null;
  task.leaseExpiresAt = startToClose === null ? null : new Date(now.getTime() + startToClose);
  session.leases.add(task.id);
  core.fx.writeTask(task);
  core.fx.writeAttempt(attempt);
  core.fx.event(run, {
    case: "taskLeased",
    value: {
      taskRunId: task.id,
      stepId: task.stepId,
      attempt: task.attempt,
      executorId: session.executorId,
      fencingToken: BigInt(task.fencingToken),
      kind: taskKind(task),
    },
  });
  return task.fencingToken;
}

/**
 * Whether a lease granted to `sessionId` with `token` still stands once committed; one that does
 * not (cancelled, refused or taken back meanwhile) is never sent, and its credit goes back.
 */
export function leaseStands(task: TaskState, sessionId: string, token: number): boolean {
  return task.sessionId === sessionId && task.fencingToken === token && ACTIVE_LEASE.has(task.status);
}
