/**
 * The saga rollback: when a run fails or is cancelled with compensation, the compensations of the
 * steps that succeeded run in waves, in reverse dependency order; the run ends COMPENSATED when all
 * succeed, COMPENSATION_FAILED otherwise. A child workflow step's compensation is its children's
 * rollback (child-rollback.ts), and a child run that SUCCEEDED rolls back when its parent does
 * ({@link compensateSucceeded}).
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { compensationOrder, renderCompensationInput } from "../dag/index.js";
import { TERMINAL_TASK_STATUSES, newTaskState, type ErrorInfo, type RunState } from "../model/run-state.js";
import { releaseRun } from "./concurrency.js";
import { advanceChildRollback, rollbackTargets, rollsBackChildren } from "./child-rollback.js";
import type { Core } from "./context.js";
import { completeRun, failTerminally, queueTask, stepStates } from "./transitions.js";

function waves(core: Core, run: RunState): string[][] {
  // Once begun (a restart in the middle), its compensation tasks say which steps roll back.
  const steps =
    run.compensations.size > 0
      ? [...run.compensations.keys()]
      : [...run.tasks.values()]
          .filter(
            (t) =>
              (t.status === "SUCCEEDED" && run.workflow.stepsById.get(t.stepId)?.compensate != null) ||
              rollbackTargets(core, run, t.stepId).length > 0,
          )
          .map((t) => t.stepId);
  return compensationOrder(run.workflow, steps).filter((w) => w.length > 0);
}

/**
 * Starts the rollback when some succeeded step has a compensation: the run goes COMPENSATING and
 * the first wave is queued. Returns false when there is nothing to compensate.
 */
export function startCompensation(core: Core, run: RunState, error: ErrorInfo, now: Date): boolean {
  const order = waves(core, run);
  if (order.length === 0) return false;
  // A child that had SUCCEEDED rolls back with its parent (compensateSucceeded): it is not ended now.
  const reopened = run.status === "SUCCEEDED";
  run.status = "COMPENSATING";
  run.endedAt = null;
  // Compensations run outside the workflow's concurrency limits: the run's slots go now.
  if (run.claim !== undefined) releaseRun(core, run);
  run.compensationWaves = order;
  run.rollbackError = error;
  run.error = error;
  core.fx.writeRun(run);
  core.fx.event(run, {
    case: "runCompensating",
    value: {
      stepIds: order.flat(),
      reason: error.message,
      ...(reopened && run.parent !== null ? { parentRunId: run.parent.runId } : {}),
    },
  });
  for (const wave of order) {
    for (const stepId of wave) {
      const step = run.workflow.stepsById.get(stepId);
      if (step === undefined || run.compensations.has(stepId)) continue;
      // A child workflow step's compensation rolls back its children: their ids are its input.
      const children = step.compensate === null ? rollbackTargets(core, run, stepId) : [];
      if (step.compensate === null && children.length === 0) continue;
      const type = step.compensate?.type ?? "";
      const task = newTaskState(run.id, stepId, "COMPENSATION", type, step.order, now, core.newId());
      if (children.length > 0) task.input = { childRunIds: children };
      core.tasks.set(task.id, task);
      core.fx.writeTask(task);
      run.compensations.set(stepId, task);
    }
  }
  advanceCompensation(core, run, now);
  return true;
}

/**
 * A run that ended SUCCEEDED rolls back because its parent compensates the step that started it
 * (child-rollback.ts): SUCCEEDED goes COMPENSATING, written like any transition, and its
 * compensations run in waves as for any rollback; it ends COMPENSATED or COMPENSATION_FAILED
 * again. Returns false, changing nothing, when it did not succeed or has nothing to compensate.
 */
export function compensateSucceeded(core: Core, run: RunState, error: ErrorInfo, now: Date): boolean {
  if (run.status !== "SUCCEEDED") return false;
  return startCompensation(core, run, error, now);
}

/** Queues the next wave of compensations once the previous one finished; completes the rollback. */
export function advanceCompensation(core: Core, run: RunState, now: Date): void {
  if (run.status !== "COMPENSATING") return;
  const order = run.compensationWaves ?? (run.compensationWaves = waves(core, run));
  const states = stepStates(run);
  for (const wave of order) {
    let unfinished = false;
    for (const id of wave) {
      const task = run.compensations.get(id);
      if (task === undefined) continue;
      if (rollsBackChildren(run, task)) {
        advanceChildRollback(core, run, task, now);
        if (!TERMINAL_TASK_STATUSES.has(task.status)) unfinished = true;
      } else if (task.status === "PENDING") {
        const rendered = renderCompensationInput(run.workflow, task.stepId, run.input ?? null, states, {
          id: run.id,
          workflow: run.workflow.name,
          version: run.workflow.version,
        });
        if (rendered.ok) {
          task.input = rendered.input;
          queueTask(core, task, now);
          unfinished = true;
        } else {
          // A compensation that cannot even be rendered fails alone; the others still run.
          const error = { type: rendered.error.type, message: rendered.error.message, retryable: false };
          failTerminally(core, run, task, error, now);
        }
      } else if (!TERMINAL_TASK_STATUSES.has(task.status)) {
        unfinished = true;
      }
    }
    if (unfinished) {
      core.fx.pump();
      return;
    }
  }
  const failed = [...run.compensations.values()].filter((t) => t.status !== "SUCCEEDED");
  const base = run.rollbackError ?? {
    type: TaskErrorType.STEP_FAILED,
    message: "the run failed",
    retryable: false,
  };
  if (failed.length === 0) {
    completeRun(core, run, "COMPENSATED", null, base, now);
  } else {
    completeRun(
      core,
      run,
      "COMPENSATION_FAILED",
      null,
      {
        type: TaskErrorType.COMPENSATION_FAILED,
        message: `${base.message}; compensation of ${failed.map((t) => t.stepId).join(", ")} failed`,
        retryable: false,
      },
      now,
    );
  }
}
