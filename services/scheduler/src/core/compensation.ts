/**
 * The saga rollback: when a run fails or is cancelled with compensation, the compensations of the
 * steps that succeeded run in waves, in reverse dependency order; the run ends COMPENSATED when all
 * succeed, COMPENSATION_FAILED otherwise.
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { compensationOrder, renderCompensationInput } from "../dag/index.js";
import { TERMINAL_TASK_STATUSES, newTaskState, type ErrorInfo, type RunState } from "../model/run-state.js";
import { releaseRun } from "./concurrency.js";
import type { Core } from "./context.js";
import { completeRun, failTerminally, queueTask, stepStates } from "./transitions.js";

function waves(run: RunState): string[][] {
  const succeeded = [...run.tasks.values()].filter((t) => t.status === "SUCCEEDED").map((t) => t.stepId);
  return compensationOrder(run.workflow, succeeded).filter((w) => w.length > 0);
}

/**
 * Starts the rollback when some succeeded step has a compensation: the run goes COMPENSATING and
 * the first wave is queued. Returns false when there is nothing to compensate.
 */
export function startCompensation(core: Core, run: RunState, error: ErrorInfo, now: Date): boolean {
  const order = waves(run);
  if (order.length === 0) return false;
  run.status = "COMPENSATING";
  // Compensations run outside the workflow's concurrency limits: the run's slots go now.
  if (run.claim !== undefined) releaseRun(core, run);
  run.compensationWaves = order;
  run.rollbackError = error;
  run.error = error;
  core.fx.writeRun(run);
  core.fx.event(run, { case: "runCompensating", value: { stepIds: order.flat(), reason: error.message } });
  for (const wave of order) {
    for (const stepId of wave) {
      const step = run.workflow.stepsById.get(stepId);
      if (step?.compensate == null || run.compensations.has(stepId)) continue;
      const task = newTaskState(
        run.id,
        stepId,
        "COMPENSATION",
        step.compensate.type,
        step.order,
        now,
        core.newId(),
      );
      core.tasks.set(task.id, task);
      core.fx.writeTask(task);
      run.compensations.set(stepId, task);
    }
  }
  advanceCompensation(core, run, now);
  return true;
}

/** Queues the next wave of compensations once the previous one finished; completes the rollback. */
export function advanceCompensation(core: Core, run: RunState, now: Date): void {
  if (run.status !== "COMPENSATING") return;
  const order = run.compensationWaves ?? (run.compensationWaves = waves(run));
  const states = stepStates(run);
  for (const wave of order) {
    let unfinished = false;
    for (const id of wave) {
      const task = run.compensations.get(id);
      if (task === undefined) continue;
      if (task.status === "PENDING") {
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
