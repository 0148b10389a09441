/**
 * Fencing: a report is judged by its lease key (task run, attempt, fencing token) against the
 * task's current lease and the session that holds it. Stale, foreign or already decided reports
 * are rejected and change nothing, so a result is accepted at most once.
 */
import type { LeaseKey } from "@nexusflow/gen";
import { ACTIVE_LEASE, type TaskState } from "../model/run-state.js";
import type { Core, Rejection } from "./context.js";

/** Whether the key names the task's current lease. */
export function keyMatches(task: TaskState, key: LeaseKey): boolean {
  return task.attempt === key.attempt && task.fencingToken === Number(key.fencingToken);
}

/** The lease key of the task's current lease. */
export function leaseKey(task: TaskState): { taskRunId: string; attempt: number; fencingToken: bigint } {
  return { taskRunId: task.id, attempt: task.attempt, fencingToken: BigInt(task.fencingToken) };
}

/** Who reports: the session, and the executor id it attached as. */
export interface ReportingSession {
  readonly id: string;
  readonly executorId: string;
}

/**
 * The task a report of `session` may change, or why it may not. A current lease of the session's
 * executor that no session of this replica holds (its grace after a partition load, or after its
 * session was lost) is adopted by `session` first, as a reclaim would: an executor with sessions
 * to several replicas reports a lease to the replica that owns its run now, on its session there.
 */
export function checkReport(
  core: Core,
  session: ReportingSession,
  key: LeaseKey | undefined,
): TaskState | Rejection {
  if (key === undefined || key.taskRunId === "") {
    return {
      code: "INVALID_ARGUMENT",
      message: "the report carries no lease key (task_run_id, attempt, fencing_token)",
    };
  }
  const task = core.tasks.get(key.taskRunId);
  if (task === undefined) return { code: "NOT_FOUND", message: `no active task run ${key.taskRunId}` };
  if (!keyMatches(task, key)) {
    return {
      code: "FAILED_PRECONDITION",
      message: `stale lease for task run ${key.taskRunId}: attempt ${key.attempt} token ${key.fencingToken}, current attempt ${task.attempt} token ${task.fencingToken}`,
    };
  }
  if (!ACTIVE_LEASE.has(task.status)) {
    return {
      code: "FAILED_PRECONDITION",
      message: `task run ${key.taskRunId} is ${task.status}; its result was already decided`,
    };
  }
  if (task.sessionId === null && task.executorId === session.executorId) adopt(core, task, session.id);
  if (task.sessionId !== session.id) {
    return {
      code: "FAILED_PRECONDITION",
      message: `task run ${key.taskRunId} is not leased to this session`,
    };
  }
  return task;
}

/** Moves a lease held by no session to `sessionId` (its grace timer is moot). */
function adopt(core: Core, task: TaskState, sessionId: string): void {
  const session = core.sessions.get(sessionId);
  if (session === undefined) return;
  core.fx.leaseEnded(task);
  task.sessionId = sessionId;
  session.leases.add(task.id);
}

/** Whether a report was rejected. */
export function isRejection(r: TaskState | Rejection): r is Rejection {
  return "code" in r;
}
