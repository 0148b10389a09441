/**
 * Child workflows (dag/child.ts): a parent's `workflow` step starts a run of another workflow and
 * completes with it. Like a durable wait (waits.ts), no executor runs the step: it is WAITING
 * while its child runs and holds no executor slot.
 *
 * - Exactly one child per step: the child's run id is derived from the parent's run id and the
 *   step id ({@link childRunId}), so the child row is the step's idempotency key (a second start
 *   would be the same primary key), and it keeps the parent's partition (the last 32 bits of the
 *   id), so a parent and its children are always owned by the same scheduler.
 * - The step goes WAITING (committed), then the shell resolves the child's definition and checks
 *   the store for the child's row ({@link Effects.startChild}), then {@link childResolved} creates
 *   the child in memory. A crash before the child's commit leaves a WAITING step without a child:
 *   recovery asks the shell to start it again (recovery.ts), under the same id.
 * - When a child ends ({@link childEnded}, from completeRun), its parent's step ends in the same
 *   turn, so in the same commit as the child's end: SUCCEEDED with the child's output, or FAILED
 *   with CHILD_FAILED. A parent whose child's end was committed without it (a child that ended
 *   while its parent was not in memory) finds it when the shell reads the child's row.
 * - Cancelling the parent (or its timeout) cancels its running children unless the step says
 *   `onParentCancel: "abandon"`; a cancel with compensation cancels them with compensation.
 *   A parent's rollback reaches the children that succeeded (child-rollback.ts).
 * - A map over a child workflow (maps.ts): each element is a task of its own that waits on its
 *   child like a child step; the child's parent step is the element's stored id `<step>[<index>]`
 *   (its "key"), from which its id is derived.
 * - Depth: a run {@link MAX_CHILD_DEPTH} levels under its root starts no child (CHILD_DEPTH_EXCEEDED).
 *
 * A failed child is not started again (the step has no retry policy: retries belong to the
 * child's steps).
 */
import { createHash } from "node:crypto";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { MAX_CHILD_DEPTH, type CompiledChild, type CompiledWorkflow } from "../dag/index.js";
import { TaskKind } from "@nexusflow/gen";
import {
  TERMINAL_RUN_STATUSES,
  parseStoredStepId,
  storedStepId,
  type ErrorInfo,
  type RunState,
  type RunStatusName,
  type TaskState,
} from "../model/run-state.js";
import { childRolledBack } from "./child-rollback.js";
import { crossInto, type Core } from "./context.js";
import { advance, cancelRun, startRun } from "./runs.js";
import { failTerminally, succeedTask, waitTask } from "./transitions.js";

/**
 * The id of the child run that `stepId` of run `parentRunId` starts (a map element's: its stored
 * id `<step>[<index>]`): a UUID (version 8, RFC 9562) whose first 96 bits hash the parent and
 * step, and whose last 32 bits are the parent's (its partition, cluster/partitioning.ts).
 */
export function childRunId(parentRunId: string, stepId: string): string {
  const hash = createHash("sha256").update(`${parentRunId}\u0000${stepId}`).digest("hex");
  const tail = parentRunId.replace(/-/g, "").slice(-8).toLowerCase();
  const variant = ((Number.parseInt(hash.charAt(16), 16) & 0x3) | 0x8).toString(16);
  const hex = `${hash.slice(0, 12)}8${hash.slice(13, 16)}${variant}${hash.slice(17, 24)}${tail}`;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** How a child's start was resolved by the shell: its definition and input, or why it cannot start. */
export type ChildResolution =
  | { readonly definitionId: number; readonly workflow: CompiledWorkflow; readonly input: unknown }
  | { readonly error: ErrorInfo };

/** How a child run ended, as stored or in memory. */
export interface ChildEnd {
  readonly status: RunStatusName;
  readonly output: unknown;
  readonly error: ErrorInfo | null;
}

/** The child step of `run` with id `stepId`, when it is one (or a map over a child workflow). */
export function childOf(run: RunState, stepId: string): CompiledChild | null {
  return run.workflow.stepsById.get(stepId)?.child ?? null;
}

/** Whether `task` waits on a child run of its own: a child step's task, or an element of a map over one. */
export function startsChild(run: Readonly<RunState>, task: Readonly<TaskState>): boolean {
  const step = run.workflow.stepsById.get(task.stepId);
  return (
    step?.child != null && task.kind === "STEP" && (step.map === null) === (task.elementIndex === undefined)
  );
}

/**
 * The task of `run` whose child has parent step `key` (a step id, or a map element's stored id),
 * with its step's child; null when there is none.
 */
export function childTaskOf(run: RunState, key: string): { task: TaskState; child: CompiledChild } | null {
  const { stepId, elementIndex } = parseStoredStepId(key);
  const step = run.workflow.stepsById.get(stepId);
  if (step?.child == null) return null;
  const task =
    elementIndex === undefined
      ? step.map === null
        ? run.tasks.get(stepId)
        : undefined
      : run.maps?.get(stepId)?.elements[elementIndex];
  return task === undefined ? null : { task, child: step.child };
}

/**
 * A child workflow step became ready (runs.ts advance): it goes WAITING and the shell is asked to
 * start its child, unless the run is already {@link MAX_CHILD_DEPTH} levels deep.
 */
export function startChildStep(
  core: Core,
  run: RunState,
  task: TaskState,
  child: CompiledChild,
  now: Date,
): void {
  const depth = run.parent?.depth ?? 0;
  if (depth >= MAX_CHILD_DEPTH) {
    failTerminally(
      core,
      run,
      task,
      {
        type: TaskErrorType.CHILD_DEPTH_EXCEEDED,
        message: `run ${run.id} is ${depth} levels under its root run; a child workflow step starts no run deeper than ${MAX_CHILD_DEPTH} (does ${JSON.stringify(child.name)} start itself?)`,
        retryable: false,
      },
      now,
    );
    core.fx.advanceSoon(run);
    return;
  }
  waitTask(core, run, task, null, TaskKind.STEP, { childRunId: childRunId(run.id, storedStepId(task)) });
  core.fx.startChild(run, task);
}

/** Ends a child step SUCCEEDED with its child's output, or FAILED with CHILD_FAILED. */
function endChildStep(
  core: Core,
  run: RunState,
  task: TaskState,
  childId: string,
  end: ChildEnd,
  now: Date,
): void {
  if (end.status === "SUCCEEDED") {
    succeedTask(core, run, task, end.output, now);
    return;
  }
  const cause = end.error === null ? "" : `: ${end.error.type}: ${end.error.message}`;
  failTerminally(
    core,
    run,
    task,
    {
      type: TaskErrorType.CHILD_FAILED,
      message: `child run ${childId} ended ${end.status}${cause}`,
      retryable: false,
      details: { childRunId: childId, status: end.status, error: end.error },
    },
    now,
  );
}

/**
 * The shell resolved the child of `stepId` (a step id, or a map element's stored id: its key):
 * its definition and input, or why it cannot start. The child run is created, in the parent's
 * partition and in the commit that follows; or the step (element) fails. Nothing happens unless
 * the task is still WAITING without a child in memory.
 */
export function childResolved(
  core: Core,
  parentRunId: string,
  stepId: string,
  resolution: ChildResolution,
  now: Date,
): void {
  const parent = core.runs.get(parentRunId);
  const task = parent === undefined ? undefined : childTaskOf(parent, stepId)?.task;
  if (parent === undefined || task?.status !== "WAITING") return;
  if (TERMINAL_RUN_STATUSES.has(parent.status) || parent.cancelRequested) return;
  const id = childRunId(parentRunId, stepId);
  if (core.runs.has(id)) return;
  if ("error" in resolution) {
    failTerminally(core, parent, task, resolution.error, now);
    advance(core, parent, now);
    core.fx.commit();
    return;
  }
  startRun(
    core,
    {
      id,
      definitionId: resolution.definitionId,
      workflow: resolution.workflow,
      input: resolution.input,
      idempotencyKey: null,
      requestHash: null,
      labels: {},
      traceParent: parent.traceParent,
      parent: { runId: parent.id, stepId, depth: (parent.parent?.depth ?? 0) + 1 },
    },
    now,
  );
  core.fx.commit();
}

/**
 * The child of `stepId` (a step id or an element's stored id) of `parentRunId` is found ended in
 * the store (its end was committed while its parent was not in memory): the parent's step (or
 * element) ends as if it had just ended.
 */
export function childFoundEnded(
  core: Core,
  parentRunId: string,
  stepId: string,
  end: ChildEnd,
  now: Date,
): void {
  const parent = core.runs.get(parentRunId);
  const task = parent === undefined ? undefined : childTaskOf(parent, stepId)?.task;
  if (parent === undefined || task?.status !== "WAITING") return;
  if (!TERMINAL_RUN_STATUSES.has(end.status)) return;
  endChildStep(core, parent, task, childRunId(parentRunId, stepId), end, now);
  advance(core, parent, now);
  core.fx.commit();
}

/**
 * A run with a parent ended (completeRun), or was dropped for changes PostgreSQL refused
 * (runs.ts dropRefusedRun, FAILED with STORAGE_REFUSED): its parent's step ends in the same turn,
 * so in the same commit, and the parent is evaluated soon. These are the parent's rules: a fault
 * in them is the parent's (crossInto), and the child's end stands.
 */
export function childEnded(core: Core, child: RunState, now: Date): void {
  const link = child.parent;
  if (link === null) return;
  const parent = core.runs.get(link.runId);
  if (parent === undefined) return;
  crossInto(core, parent, () => {
    // A parent rolling back waits for its children's rollback (child-rollback.ts).
    if (parent.status === "COMPENSATING") {
      childRolledBack(core, parent, child, now);
      return;
    }
    const task = childTaskOf(parent, link.stepId)?.task;
    if (task?.status !== "WAITING") return;
    endChildStep(core, parent, task, child.id, child, now);
    core.fx.advanceSoon(parent);
  });
}

/**
 * The parent's step `task` (or map element) is being cancelled with its run (cancel or run
 * timeout), or by its map failing fast: its running child is cancelled too, unless the step
 * abandons its child. With compensation when the parent's cancel asked for it, or (`failing`)
 * when the map failed fast: a failure rolls back what the child did, as a saga does. Call after
 * the task has ended, so that the child's end leaves it be.
 */
export function cancelChild(
  core: Core,
  run: RunState,
  task: TaskState,
  reason: string,
  now: Date,
  failing = false,
): void {
  const child = childOf(run, task.stepId);
  if (child === null || child.onParentCancel === "abandon" || !startsChild(run, task)) return;
  const childRun = core.runs.get(childRunId(run.id, storedStepId(task)));
  if (childRun === undefined) return;
  const compensate = failing || (run.cancelRequested && run.compensateOnCancel);
  // The child's rules: a fault in them is the child's, and the parent's cancel goes on.
  crossInto(core, childRun, () =>
    cancelRun(core, childRun, `parent run ${run.id} ${reason}`, compensate, now),
  );
}
