/**
 * A run's own inputs: started, advanced (its DAG evaluated and what became ready, skipped or
 * failed applied), cancelled, timed out, refused by storage, and forgotten once its end is committed.
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { jsonToValue } from "@nexusflow/common";
import { evaluateRun, newEvaluationMemo, type CompiledWorkflow } from "../dag/index.js";
import {
  ACTIVE_LEASE,
  STORAGE_REFUSED,
  TERMINAL_RUN_STATUSES,
  TERMINAL_TASK_STATUSES,
  newRunState,
  newTaskState,
  type ErrorInfo,
  type ParentLink,
  type RunState,
  type TaskState,
} from "../model/run-state.js";
import { advanceCompensation, startCompensation } from "./compensation.js";
import {
  ConcurrencyKeyError,
  admitRun,
  admitTask,
  claimTask,
  keyErrorInfo,
  readmitRun,
  releaseRun,
  type CancelRun,
} from "./concurrency.js";
import { crossInto, type Core } from "./context.js";
import { admitWithRate } from "./rate-limits.js";
import { clearHeld, noteHeld, noteRunHeld } from "./hold-events.js";
import { cancelChild, startChildStep } from "./children.js";
import { rerunLink, takeOver, type RerunStart } from "./reruns.js";
import { armRunDeadline } from "./timers.js";
import { startWaiting } from "./waits.js";
import { mapElements, startMap } from "./maps.js";
import {
  completeRun,
  detach,
  endTask,
  failTerminally,
  finishAttempt,
  queueTask,
  stepState,
  stepStates,
} from "./transitions.js";

/** What a new run is started with (its input already validated). */
export interface RunStart {
  definitionId: number;
  workflow: CompiledWorkflow;
  input: unknown;
  idempotencyKey: string | null;
  requestHash: string | null;
  labels: Record<string, string>;
  /** The StartRun call's trace context (RunState.traceParent). */
  traceParent?: string | null;
  /** A rerun's original run, the steps it takes over and its chosen step's new input (reruns.ts). */
  rerun?: RerunStart;
  /** The run's id (a child run's is derived, children.ts); default a new one. */
  id?: string;
  /** The parent run and step of a child run (children.ts). */
  parent?: ParentLink | null;
}

/**
 * Starts a run: its tasks, its runStarted event, its first ready steps and its deadline. The run
 * and its tasks are made before anything of them goes into memory or is marked to be written: a
 * fault (a throw) before the run is in `core.runs` leaves no trace of it (never created, nothing
 * of it committed); one after is the run's own (the shell fails it SCHEDULER_ERROR).
 */
export function startRun(core: Core, start: RunStart, now: Date): RunState {
  const run = newRunState({ ...start, id: start.id ?? core.newId(), now });
  for (const step of start.workflow.steps)
    run.tasks.set(step.id, newTaskState(run.id, step.id, "STEP", step.type, step.order, now, core.newId()));
  if (start.rerun !== undefined) run.rerun = rerunLink(start.rerun);
  core.runs.set(run.id, run);
  for (const task of run.tasks.values()) {
    core.tasks.set(task.id, task);
    core.fx.writeTask(task);
  }
  core.fx.writeRun(run);
  core.fx.event(run, {
    case: "runStarted",
    value: {
      input: jsonToValue(run.input),
      idempotencyKey: start.idempotencyKey ?? "",
      labels: start.labels,
      ...(start.rerun === undefined ? {} : { rerunOf: start.rerun.of, rerunFromStep: start.rerun.fromStep }),
    },
  });
  if (start.rerun !== undefined) takeOver(core, run, start.rerun, now);
  // A run of a workflow with concurrency limits starts its steps once it holds its keys.
  if (start.workflow.concurrency.length > 0) admitNewRun(core, run, now);
  advance(core, run, now);
  armRunDeadline(core, run, now.getTime());
  return run;
}

/**
 * How a concurrency strategy cancels a run: as CancelRun with compensation. Often another run
 * than the one whose rules apply it (the oldest holder of a cancel-in-progress key): a fault in
 * its cancel is its own (crossInto).
 */
export const cancelByLimit: CancelRun = (core, run, reason, now) =>
  crossInto(core, run, () => cancelRun(core, run, reason, true, now));

/** A new run takes its workflow's concurrency keys, or waits for them (concurrency.ts). */
function admitNewRun(core: Core, run: RunState, now: Date): void {
  try {
    admitRun(core, run, now, cancelByLimit);
  } catch (error) {
    // StartRun checked the keys; a run that gets here anyway fails rather than start unlimited.
    if (!(error instanceof ConcurrencyKeyError)) throw error;
    completeRun(core, run, "FAILED", null, keyErrorInfo(error), now);
  }
}

/**
 * The dispatcher is about to lease `task`, which has concurrency keys or rate limits: true when it
 * takes their slots and tokens, false when it waits for one (or its run was cancelled by a
 * strategy): skip it. Rate limits first: a task without tokens takes no slot (rate-limits.ts).
 */
export function admitQueued(core: Core, task: TaskState, now: Date): boolean {
  const ok =
    task.rate === undefined
      ? admitTask(core, task, now, cancelByLimit)
      : admitWithRate(core, task, now, cancelByLimit);
  // Held back: a task_held event when the gate holding it is new to it (hold-events.ts).
  if (ok) clearHeld(task);
  else noteHeld(core, task, now);
  return ok;
}

/**
 * Evaluates the DAG and applies what became ready, skipped or failed; completes the run when done.
 * A run rolling back goes on with its rollback instead (compensation.ts).
 */
export function advance(core: Core, run: RunState, now: Date): void {
  if (run.status === "COMPENSATING") {
    advanceCompensation(core, run, now);
    return;
  }
  if (TERMINAL_RUN_STATUSES.has(run.status) || run.cancelRequested) return;
  // Waiting for its workflow's concurrency keys: its steps start once it holds them.
  if (run.claim !== undefined && run.claim.state !== "held" && !readmitRun(core, run, now, cancelByLimit)) {
    // Still waiting (not cancelled by a strategy): a run_held event when its key is new to it.
    noteRunHeld(core, run);
    return;
  }
  if (run.heldBy !== undefined) run.heldBy = undefined;
  for (let round = 0; round < run.workflow.steps.length + 1; round++) {
    const ev = evaluateRun(
      run.workflow,
      run.input ?? null,
      stepStates(run),
      { id: run.id, workflow: run.workflow.name, version: run.workflow.version },
      (run.evaluation ??= newEvaluationMemo()),
    );
    let keyFailed = false;
    for (const r of ev.ready) {
      const task = run.tasks.get(r.stepId);
      if (task === undefined || task.status !== "PENDING") continue;
      // A rerun's chosen step may come with a new input of its own (reruns.ts takeOver).
      task.input ??= r.input;
      const limits = run.workflow.steps[task.position]?.concurrency;
      if (limits !== undefined && limits.length > 0) {
        const error = claimTask(core, run, task, limits, stepState);
        if (error !== null) {
          failTerminally(core, run, task, keyErrorInfo(error), now);
          keyFailed = true;
          continue;
        }
      }
      const step = run.workflow.stepsById.get(task.stepId);
      if (step?.durable != null) startWaiting(core, run, task, step.durable, now);
      // A map over a child workflow is a map: its elements start the children.
      else if (step?.map != null) startMap(core, run, task, step, r.input as unknown[], now);
      else if (step?.child != null) startChildStep(core, run, task, step.child, now);
      else queueTask(core, task, now);
    }
    for (const s of ev.skip) {
      const task = run.tasks.get(s.stepId);
      if (task === undefined || task.status !== "PENDING") continue;
      task.skipReason = s.reason;
      endTask(core, task, "SKIPPED", now);
      core.fx.event(run, {
        case: "taskSkipped",
        value: { taskRunId: task.id, stepId: task.stepId, reason: s.reason },
      });
    }
    for (const f of ev.fail) {
      const task = run.tasks.get(f.stepId);
      if (task === undefined || task.status !== "PENDING") continue;
      failTerminally(
        core,
        run,
        task,
        {
          type: f.error.type,
          message: f.error.message,
          retryable: false,
          ...(f.error.details === undefined ? {} : { details: f.error.details }),
        },
        now,
      );
    }
    if (ev.outcome !== undefined) {
      if (ev.outcome.status === "succeeded")
        completeRun(core, run, "SUCCEEDED", ev.outcome.output, null, now);
      else {
        const failed = ev.outcome.failedSteps;
        const first = failed[0] === undefined ? undefined : run.tasks.get(failed[0]);
        const error: ErrorInfo =
          ev.outcome.error !== undefined
            ? {
                type: ev.outcome.error.type,
                message: `output mapping: ${ev.outcome.error.message}`,
                retryable: false,
              }
            : {
                type: first?.error?.type ?? TaskErrorType.STEP_FAILED,
                message: `step${failed.length === 1 ? "" : "s"} ${failed.join(", ")} failed${first?.error ? `: ${first.error.message}` : ""}`,
                retryable: false,
              };
        if (!startCompensation(core, run, error, now)) completeRun(core, run, "FAILED", null, error, now);
      }
      break;
    }
    // Another round only when a render (or key) failure may have decided more steps.
    if (ev.fail.length === 0 && !keyFailed) break;
  }
  core.fx.pump();
}

/** Advances a run in either direction: its DAG, or its rollback. */
export function advanceAny(core: Core, run: RunState, now: Date): void {
  if (run.status === "COMPENSATING") advanceCompensation(core, run, now);
  else advance(core, run, now);
}

/**
 * Cancels every unfinished step task of `run` (and, with `compensations`, every unfinished
 * compensation), telling executors to stop leased ones.
 */
function stopActiveTasks(
  core: Core,
  run: RunState,
  reason: string,
  error: ErrorInfo,
  now: Date,
  compensations = false,
): void {
  // A map step ends before its elements, so that their ends only count (maps.ts mapElementEnded).
  const tasks = [...run.tasks.values(), ...mapElements(run, true)];
  if (compensations) tasks.push(...run.compensations.values());
  for (const task of tasks) {
    if (TERMINAL_TASK_STATUSES.has(task.status)) continue;
    if (ACTIVE_LEASE.has(task.status)) {
      core.fx.cancelLease(task, reason);
      finishAttempt(core, task, "CANCELLED", error, now);
    }
    const waiting = task.status === "WAITING";
    endTask(core, task, "CANCELLED", now);
    core.fx.event(run, { case: "taskCancelled", value: { taskRunId: task.id, stepId: task.stepId, reason } });
    if (waiting) cancelChild(core, run, task, reason, now);
  }
}

/**
 * Cancels a run: pending work is cancelled, leased tasks are told to stop. With `compensate`, the
 * compensations of the steps that succeeded run afterwards. Idempotent: returns false (and does
 * nothing) for a run already ended, cancelled or rolling back.
 */
export function cancelRun(
  core: Core,
  run: RunState,
  reason: string,
  compensate: boolean,
  now: Date,
): boolean {
  if (TERMINAL_RUN_STATUSES.has(run.status) || run.cancelRequested || run.status === "COMPENSATING")
    return false;
  run.cancelRequested = true;
  run.compensateOnCancel = compensate;
  core.fx.writeRun(run);
  core.fx.event(run, { case: "runCancelRequested", value: { reason, compensate } });
  const error: ErrorInfo = { type: TaskErrorType.CANCELLED, message: reason, retryable: false };
  stopActiveTasks(core, run, `run cancelled: ${reason}`, error, now);
  if (!compensate || !startCompensation(core, run, error, now))
    completeRun(core, run, "CANCELLED", null, error, now);
  return true;
}

/**
 * The run's deadline passed: its tasks are cancelled and it ends TIMED_OUT. A rollback under way
 * is not cut short (a child that succeeded may roll back long after its deadline).
 */
export function timeOutRun(core: Core, run: RunState, now: Date): void {
  if (TERMINAL_RUN_STATUSES.has(run.status) || run.status === "COMPENSATING") return;
  const error: ErrorInfo = {
    type: TaskErrorType.RUN_TIMEOUT,
    message: "the run exceeded its timeout",
    retryable: false,
  };
  stopActiveTasks(core, run, "run timed out", error, now);
  completeRun(core, run, "TIMED_OUT", null, error, now);
  core.fx.commit();
}

/**
 * Advancing the run threw (a fault in the scheduler, not in the run's data): its unfinished tasks
 * and compensations are cancelled, leased ones told to stop, and it ends FAILED with
 * SCHEDULER_ERROR. No rollback is started: it would run the code that just failed. Returns false
 * (and does nothing) for a run already ended.
 */
export function failBrokenRun(core: Core, run: RunState, message: string, now: Date): boolean {
  if (TERMINAL_RUN_STATUSES.has(run.status)) return false;
  const error: ErrorInfo = { type: TaskErrorType.SCHEDULER_ERROR, message, retryable: false };
  stopActiveTasks(core, run, "the run failed: the scheduler could not advance it", error, now, true);
  completeRun(core, run, "FAILED", null, error, now);
  core.fx.commit();
  return true;
}

/**
 * The run's end is committed: it lives only in storage now (leased tasks stay to reject reports).
 * Not if it is no longer ended (a child that succeeded, rolling back with its parent since).
 */
export function forgetRun(core: Core, run: RunState): void {
  if (!TERMINAL_RUN_STATUSES.has(run.status) || core.runs.get(run.id) !== run) return;
  core.runs.delete(run.id);
  for (const t of run.tasks.values()) if (!ACTIVE_LEASE.has(t.status)) core.tasks.delete(t.id);
  for (const t of mapElements(run, false)) if (!ACTIVE_LEASE.has(t.status)) core.tasks.delete(t.id);
  for (const t of run.compensations.values()) if (!ACTIVE_LEASE.has(t.status)) core.tasks.delete(t.id);
}

/**
 * Storage refused the run's changes for their data (retrying would fail forever): the run leaves
 * memory FAILED with STORAGE_REFUSED (or `error`: a run too broken to end the usual way,
 * engine.ts), executors holding its leases are told to stop. Returns the run, or undefined when it
 * is not active.
 */
export function dropRefusedRun(
  core: Core,
  runId: string,
  cause: string,
  error: ErrorInfo = {
    type: STORAGE_REFUSED,
    message: `PostgreSQL refused to store the run's changes: ${cause}`,
    retryable: false,
  },
): RunState | undefined {
  const run = core.runs.get(runId);
  if (run === undefined) return undefined;
  for (const task of [...mapElements(run, false), ...run.tasks.values(), ...run.compensations.values()]) {
    if (ACTIVE_LEASE.has(task.status))
      core.fx.cancelLease(task, "the run failed: its changes cannot be stored");
    detach(core, task);
    task.status = "CANCELLED";
    core.tasks.delete(task.id);
  }
  if (run.claim !== undefined) releaseRun(core, run);
  run.status = "FAILED";
  run.error = error;
  core.runs.delete(runId);
  return run;
}
