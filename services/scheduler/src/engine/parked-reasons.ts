/**
 * Why the tasks of a parked run wait (TaskRun.pending_reason), from its committed rows: the same
 * words core/explain.ts gives for a run in memory ("waiting for signal ...", "waiting for step
 * ..."), so that GetRun, ListRuns and WatchRun answer alike whether a waiting run is parked or
 * not (engine/parking.ts). Read-only: the run is not loaded back.
 */
import * as core from "../core/index.js";
import { storedRunState } from "../core/recovery.js";
import {
  HELD_BACK_TASK_STATUSES,
  TERMINAL_RUN_STATUSES,
  parseStoredStepId,
  type ErrorInfo,
  type RunStatusName,
  type SignalState,
  type TaskState,
} from "../model/run-state.js";
import type { RunRow, TaskRow } from "../persistence/run-store.js";
import type { Definitions } from "./definitions.js";

/**
 * The pending reasons of a run that is active but not in memory (parked), by task run id;
 * undefined for an ended run or one without a waiting task.
 */
export async function parkedPendingReasons(
  definitions: Pick<Definitions, "compiledById">,
  row: RunRow,
  rows: readonly TaskRow[],
  now: Date,
): Promise<Map<string, string> | undefined> {
  if (
    TERMINAL_RUN_STATUSES.has(row.status as RunStatusName) ||
    !rows.some((t) => HELD_BACK_TASK_STATUSES.has(t.status))
  )
    return undefined;
  const workflow = await definitions.compiledById(row.definitionId);
  const run = storedRunState(
    {
      id: row.id,
      definitionId: row.definitionId,
      workflowName: row.workflowName,
      status: row.status as RunStatusName,
      input: row.input ?? null,
      idempotencyKey: row.idempotencyKey ?? null,
      labels: row.labels,
      cancelRequested: row.cancelRequested,
      compensateOnCancel: row.compensateOnCancel,
      error: (row.error as ErrorInfo | null) ?? null,
      lastEventSeq: row.eventSeq,
      deadline: row.deadline ?? null,
      createdAt: row.createdAt,
      signals: (row.signals as SignalState[] | null) ?? [],
    },
    workflow,
    null,
  );
  const tasks: TaskState[] = rows.map((t) => ({
    id: t.id,
    runId: t.runId,
    ...parseStoredStepId(t.stepId),
    kind: t.kind as TaskState["kind"],
    type: t.type,
    position: t.position,
    status: t.status as TaskState["status"],
    input: t.input ?? null,
    output: t.output ?? null,
    outputRef: t.outputRef ?? null,
    error: (t.error as ErrorInfo | null) ?? null,
    skipReason: (t.skipReason ?? null) as TaskState["skipReason"],
    attempt: t.attempt,
    fencingToken: t.fencingToken,
    failures: 0,
    executorId: t.executorId ?? null,
    leaseExpiresAt: t.leaseExpiresAt ?? null,
    nextAttemptAt: t.nextAttemptAt ?? null,
    queuedAt: t.queuedAt ?? null,
    createdAt: t.createdAt,
    endedAt: t.endedAt ?? null,
    current: null,
    sessionId: null,
    lastHeartbeat: 0,
  }));
  for (const t of tasks) {
    if (t.elementIndex !== undefined) continue;
    if (t.kind === "STEP") run.tasks.set(t.stepId, t);
    else run.compensations.set(t.stepId, t);
  }
  const reasons = new Map<string, string>();
  for (const t of tasks)
    if (HELD_BACK_TASK_STATUSES.has(t.status))
      reasons.set(t.id, core.pendingReason(core.explainPending(run, t, undefined, now)));
  return reasons;
}
