/**
 * Child runs roll back with their parent (a saga across workflows). When a run rolls back
 * (compensation.ts), a child workflow step whose child may have something to undo gets a
 * compensation of its own: a task no executor runs, WAITING while its children roll back, so the
 * run's rollback goes past the step (its wave) only once they all ended.
 *
 * - Which children ({@link rollbackTargets}): the step's child when the step SUCCEEDED (so did
 *   the child), or when the step was cancelled with its run and its child is rolling back (a
 *   cancel with compensation reaches running children, children.ts cancelChild); for a map over a
 *   child workflow, those of its elements, in element order. A step with `onParentCancel:
 *   "abandon"` leaves its children alone, and a step a rerun took over (reruns.ts) started no
 *   child of this run.
 * - Their ids are the compensation task's input (`{"childRunIds": [...]}`), written when the
 *   rollback starts, so a restart goes on with the same list.
 * - One child after the other (at most the map's parallelism at once): a child in memory is
 *   looked at directly, another's row is read by the shell (Effects.rollbackChild), which answers
 *   with {@link childRollbackRead}. A child that SUCCEEDED goes COMPENSATING (compensation.ts
 *   compensateSucceeded) and runs its own compensations in reverse order, its children's in turn;
 *   one with nothing to undo stays SUCCEEDED. A child rolling back is waited for; one that ended
 *   otherwise has nothing more to undo.
 * - A child's end reaches the rollback in the same turn (children.ts childEnded), so in the same
 *   commit. The compensation SUCCEEDS when no child ended COMPENSATION_FAILED (output: how many
 *   ended how, `{"children": {"COMPENSATED": 3, "SUCCEEDED": 1}}`), else it FAILS with
 *   CHILD_FAILED (a child no longer stored fails it too, and so does one that SUCCEEDED but whose
 *   stored definition no longer compiles), and the run ends COMPENSATION_FAILED.
 */
import { boundedText } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { TaskKind } from "@nexusflow/gen";
import type { CompiledWorkflow } from "../dag/index.js";
import {
  TERMINAL_RUN_STATUSES,
  parseStoredStepId,
  storedStepId,
  type ChildRollback,
  type ErrorInfo,
  type RunState,
  type RunStatusName,
  type TaskState,
} from "../model/run-state.js";
import type { StoredRun, StoredTask } from "../persistence/engine-store.js";
import { childRunId } from "./children.js";
import { compensateSucceeded } from "./compensation.js";
import { crossInto, type Core } from "./context.js";
import { rebuildMaps } from "./maps.js";
import { storedRunState } from "./recovery.js";
import { forgetRun } from "./runs.js";
import { failTerminally, succeedTask, waitTask } from "./transitions.js";

/** Most failures listed in a failed rollback's details. */
const MAX_LISTED_FAILURES = 100;

/**
 * What the shell read of a child to roll back: undefined when it is not stored; its rows and
 * workflow when it SUCCEEDED (it may go COMPENSATING); `unrollable` when it SUCCEEDED but its
 * stored definition no longer compiles (it cannot roll back: the rollback fails, CHILD_FAILED);
 * else its status and error.
 */
export type ChildRollbackRead =
  | undefined
  | { readonly status: RunStatusName; readonly error: ErrorInfo | null }
  | {
      readonly stored: StoredRun;
      readonly tasks: readonly StoredTask[];
      readonly workflow: CompiledWorkflow;
    }
  | { readonly unrollable: ErrorInfo };

/** Whether the compensation `task` rolls back child runs (its step starts them). */
export function rollsBackChildren(run: Readonly<RunState>, task: Readonly<TaskState>): boolean {
  return task.kind === "COMPENSATION" && run.workflow.stepsById.get(task.stepId)?.child != null;
}

/** The child runs that step `stepId` of `run` rolls back with it, in order (see the module comment). */
export function rollbackTargets(core: Core, run: RunState, stepId: string): string[] {
  const step = run.workflow.stepsById.get(stepId);
  if (step?.child?.onParentCancel !== "cancel" || run.rerun?.reused[stepId] !== undefined) return [];
  const target = (task: TaskState | undefined): string | undefined => {
    if (task === undefined) return undefined;
    const id = childRunId(run.id, storedStepId(task));
    if (task.status === "SUCCEEDED") return id;
    return task.status === "CANCELLED" && core.runs.get(id)?.status === "COMPENSATING" ? id : undefined;
  };
  if (step.map === null) {
    const id = target(run.tasks.get(stepId));
    return id === undefined ? [] : [id];
  }
  const ids: string[] = [];
  const map = run.maps?.get(stepId);
  if (map !== undefined)
    for (let i = 0; i < map.created; i++) {
      const id = target(map.elements[i]);
      if (id !== undefined) ids.push(id);
    }
  return ids;
}

/** The child runs a rollback's compensation task lists (its input). */
function idsOf(task: TaskState): string[] {
  const ids = (task.input as { childRunIds?: unknown } | null)?.childRunIds;
  return Array.isArray(ids) ? ids.filter((x): x is string => typeof x === "string") : [];
}

/**
 * The run's rollback (compensation.ts advanceCompensation) reached the compensation `task` of a
 * child workflow step: it starts rolling back the children when PENDING, and goes on after a
 * restart when WAITING without its rollback in memory.
 */
export function advanceChildRollback(core: Core, run: RunState, task: TaskState, now: Date): void {
  const ids = idsOf(task);
  const step = run.workflow.stepsById.get(task.stepId);
  if (task.status === "PENDING") {
    waitTask(core, run, task, null, TaskKind.COMPENSATION, {
      childRunId: step?.map == null ? (ids[0] ?? "") : "",
    });
  } else if (task.status !== "WAITING" || run.childRollbacks?.has(task.stepId) === true) return;
  const rollback: ChildRollback = {
    task,
    ids,
    parallelism: step?.map?.parallelism ?? 1,
    next: 0,
    inFlight: new Map(),
    ended: {},
    failed: [],
    failedCount: 0,
    filling: false,
  };
  (run.childRollbacks ??= new Map()).set(task.stepId, rollback);
  fill(core, run, rollback, now);
}

/** Starts children while fewer than the parallelism roll back; ends the task once all ended. */
function fill(core: Core, run: RunState, rollback: ChildRollback, now: Date): void {
  rollback.filling = true;
  try {
    while (
      rollback.task.status === "WAITING" &&
      rollback.inFlight.size < rollback.parallelism &&
      rollback.next < rollback.ids.length
    ) {
      const id = rollback.ids[rollback.next++] as string;
      rollback.inFlight.set(id, "read");
      const child = core.runs.get(id);
      if (child !== undefined) look(core, run, rollback, child, now);
      else core.fx.rollbackChild(run, rollback.task, id);
    }
  } finally {
    rollback.filling = false;
  }
  settle(core, run, rollback, now);
}

/** Why a child rolls back: its parent's rollback of the step, and the parent's own reason. */
function rollbackError(run: RunState, stepId: string): ErrorInfo {
  const cause = run.rollbackError ?? run.error;
  return {
    type: cause?.type ?? TaskErrorType.STEP_FAILED,
    message: `parent run ${run.id} rolls back step ${stepId}${cause === null ? "" : `: ${cause.message}`}`,
    retryable: false,
  };
}

/**
 * A child in memory: one that SUCCEEDED rolls back now (it may end at once: it then reached this
 * rollback through childEnded already), one rolling back is waited for, one that ended is done.
 * A child that was rolling back and ended other than COMPENSATED (or SUCCEEDED, with nothing left
 * to undo) failed to roll back: dropped for data PostgreSQL refused, say.
 *
 * The child's rollback is the child's rules (crossInto): a fault in them is the child's, and this
 * rollback goes on. A child left rolling back by it is waited for (the shell fails it
 * SCHEDULER_ERROR soon, which ends it here); one left SUCCEEDED failed to roll back.
 */
function look(core: Core, run: RunState, rollback: ChildRollback, child: RunState, now: Date): void {
  const waited = rollback.inFlight.get(child.id) === "waiting";
  let fault: ErrorInfo | undefined;
  if (child.status === "SUCCEEDED")
    crossInto(core, child, () => {
      try {
        compensateSucceeded(core, child, rollbackError(run, rollback.task.stepId), now);
      } catch (e) {
        fault = {
          type: TaskErrorType.SCHEDULER_ERROR,
          message: `the scheduler could not roll it back: ${boundedText(e instanceof Error ? e.message : String(e), 1024)}`,
          retryable: false,
        };
        throw e;
      }
    });
  if (!rollback.inFlight.has(child.id)) return;
  if (!TERMINAL_RUN_STATUSES.has(child.status)) {
    rollback.inFlight.set(child.id, "waiting");
    return;
  }
  if (fault !== undefined) {
    ended(core, run, rollback, child.id, child.status, fault, now, true);
    return;
  }
  const undone = child.status === "COMPENSATED" || child.status === "SUCCEEDED";
  ended(core, run, rollback, child.id, child.status, child.error, now, waited && !undone);
}

/**
 * A child is done: counted by its status. It failed to roll back when it ended COMPENSATION_FAILED
 * (or otherwise while rolling back: `failed`), is not stored (null), or is active in the database
 * but not here (a status that is not terminal).
 */
function ended(
  core: Core,
  run: RunState,
  rollback: ChildRollback,
  id: string,
  status: RunStatusName | null,
  error: ErrorInfo | null,
  now: Date,
  failed = false,
): void {
  if (!rollback.inFlight.delete(id)) return;
  const terminal = status !== null && TERMINAL_RUN_STATUSES.has(status);
  if (terminal) rollback.ended[status] = (rollback.ended[status] ?? 0) + 1;
  if (failed || !terminal || status === "COMPENSATION_FAILED") {
    rollback.failedCount++;
    if (rollback.failed.length < MAX_LISTED_FAILURES) rollback.failed.push({ childRunId: id, status, error });
  }
  if (!rollback.filling) fill(core, run, rollback, now);
}

/** Ends the compensation task once every child ended: SUCCEEDED, or FAILED with CHILD_FAILED. */
function settle(core: Core, run: RunState, rollback: ChildRollback, now: Date): void {
  const task = rollback.task;
  if (task.status !== "WAITING" || rollback.next < rollback.ids.length || rollback.inFlight.size > 0) return;
  run.childRollbacks?.delete(task.stepId);
  task.output = { children: { ...rollback.ended } };
  const first = rollback.failed[0];
  if (first === undefined) {
    succeedTask(core, run, task, task.output, now);
  } else {
    const how =
      first.status === null
        ? "could not be rolled back: it is not stored"
        : first.status === "SUCCEEDED"
          ? // Only a child that cannot roll back (ChildRollbackRead's `unrollable`) fails as SUCCEEDED.
            `could not be rolled back${first.error === null ? "" : `: ${first.error.type}: ${first.error.message}`}`
          : !TERMINAL_RUN_STATUSES.has(first.status)
            ? `could not be rolled back: it is ${first.status} in the database but not active on this scheduler`
            : `ended ${first.status}${first.status === "COMPENSATION_FAILED" ? "" : " while it rolled back"}${first.error === null ? "" : `: ${first.error.type}: ${first.error.message}`}`;
    const more =
      rollback.failedCount > 1
        ? `; ${rollback.failedCount} of ${rollback.ids.length} children failed to roll back`
        : "";
    failTerminally(
      core,
      run,
      task,
      {
        type: TaskErrorType.CHILD_FAILED,
        message: `child run ${first.childRunId} ${how}${more}`,
        retryable: false,
        details: { ...first, failedCount: rollback.failedCount, failed: rollback.failed },
      },
      now,
    );
  }
  core.fx.advanceSoon(run);
}

/** A child ended while its parent rolls back (children.ts childEnded): the rollback waiting for it goes on. */
export function childRolledBack(core: Core, parent: RunState, child: RunState, now: Date): void {
  if (child.parent === null) return;
  const rollback = parent.childRollbacks?.get(parseStoredStepId(child.parent.stepId).stepId);
  if (rollback?.inFlight.has(child.id) !== true) return;
  look(core, parent, rollback, child, now);
}

/**
 * The shell read the child `childId` that the compensation of `stepId` of `parentRunId` rolls
 * back (Effects.rollbackChild): a child that SUCCEEDED comes back into memory and rolls back (or
 * stays as it was, with nothing to undo), another is done. Nothing happens unless the rollback
 * still waits for this read.
 */
export function childRollbackRead(
  core: Core,
  parentRunId: string,
  stepId: string,
  childId: string,
  read: ChildRollbackRead,
  now: Date,
): void {
  const run = core.runs.get(parentRunId);
  const rollback = run?.childRollbacks?.get(stepId);
  if (run === undefined || rollback?.inFlight.get(childId) !== "read") return;
  const active = core.runs.get(childId);
  if (active !== undefined) look(core, run, rollback, active, now);
  else if (read === undefined) ended(core, run, rollback, childId, null, null, now);
  else if ("stored" in read) {
    const child = revive(core, read, now);
    look(core, run, rollback, child, now);
    // Nothing to undo: it stays as stored, and out of memory.
    if (child.status === "SUCCEEDED") forgetRun(core, child);
  } else if ("unrollable" in read)
    ended(core, run, rollback, childId, "SUCCEEDED", read.unrollable, now, true);
  else ended(core, run, rollback, childId, read.status, read.error, now);
  core.fx.commit();
}

/** A child that ended, back in memory from its rows as stored (its tasks, its maps' elements). */
function revive(core: Core, read: Extract<ChildRollbackRead, { stored: StoredRun }>, now: Date): RunState {
  const run = storedRunState(read.stored, read.workflow, null);
  const elements: TaskState[] = [];
  for (const t of read.tasks) {
    const task: TaskState = { ...t, sessionId: null, lastHeartbeat: 0 };
    if (task.elementIndex !== undefined) elements.push(task);
    else if (task.kind === "STEP") run.tasks.set(task.stepId, task);
    else run.compensations.set(task.stepId, task);
    core.tasks.set(task.id, task);
  }
  core.runs.set(run.id, run);
  // Ended maps over child workflows keep their elements: their children roll back too.
  rebuildMaps(core, run, elements, now);
  return run;
}

/**
 * The child runs a compensation task waits for now (ExplainPending's child_run gates): the first
 * `limit` of those rolling back, or being read.
 */
export function rollingBack(run: Readonly<RunState>, task: Readonly<TaskState>, limit: number): string[] {
  const rollback = run.childRollbacks?.get(task.stepId);
  if (rollback === undefined || rollback.task !== task) return [];
  return [...rollback.inFlight.keys()].slice(0, limit);
}
