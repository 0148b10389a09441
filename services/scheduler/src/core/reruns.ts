/**
 * Rerun from a step (RerunRun): which steps of an ended run a new run of the same workflow version
 * takes over as they were, and how a new run starts with them.
 *
 * - The chosen step and every step downstream of it run again.
 * - Every step upstream of it (its ancestors) must have SUCCEEDED in the original run, and not
 *   been compensated: it is taken as SUCCEEDED with its stored output (an offloaded output by its
 *   claim check), without an attempt. An upstream step skipped by a condition is decided again by
 *   the DAG (conditions see the same input and outputs, so it is skipped again); one that failed,
 *   was cancelled, never ran or was compensated makes the rerun FAILED_PRECONDITION naming it.
 * - Every other step (neither upstream nor downstream) is taken over the same way when it
 *   succeeded and nothing upstream of it runs again; otherwise it runs again too (a failed side
 *   branch is retried along with the chosen step).
 *
 * A taken-over step is written SUCCEEDED with the new run's first row and announced by a
 * `taskSucceeded` event with `reused_from` (the original task run id) and attempt 0.
 */
import { jsonToValue } from "@nexusflow/common";
import type { CompiledWorkflow } from "../dag/index.js";
import type { RerunLink, RunState, TaskStatusName } from "../model/run-state.js";
import type { Core } from "./context.js";
import { toArtifactRef } from "@nexusflow/common/artifacts";
import { endTask, taskKind } from "./transitions.js";

/** A step of the original run, as a rerun plan reads it. */
export interface OriginalStep {
  readonly taskRunId: string;
  readonly status: TaskStatusName;
  readonly input: unknown;
  readonly output: unknown;
  /** Claim check of an offloaded output; null when the output is inline. */
  readonly outputRef: unknown;
  /** Whether a compensation of the step ran (its effects were undone). */
  readonly compensated: boolean;
}

/** Why a rerun cannot be made: a gRPC code, the request field at fault, a message. */
export interface RerunRefusal {
  readonly code: "NOT_FOUND" | "FAILED_PRECONDITION";
  readonly field: string;
  readonly message: string;
}

/** The steps a rerun takes over, by step id. */
export type RerunPlan = ReadonlyMap<string, OriginalStep>;

/** What a new run needs to start as a rerun (RunStart.rerun). */
export interface RerunStart {
  readonly of: string;
  readonly fromStep: string;
  readonly reused: RerunPlan;
  /** A new input for the chosen step, used instead of rendering its template; undefined: none. */
  readonly stepInput?: unknown;
}

/** Every step reachable from `from` along `edges` (not `from` itself). */
function reachable(edges: ReadonlyMap<string, readonly string[]>, from: Iterable<string>): Set<string> {
  const seen = new Set<string>();
  const stack = [...from];
  for (let id = stack.pop(); id !== undefined; id = stack.pop()) {
    for (const next of edges.get(id) ?? []) {
      if (seen.has(next)) continue;
      seen.add(next);
      stack.push(next);
    }
  }
  return seen;
}

/**
 * The steps of `original` (run `runId` of `workflow`) a rerun from `fromStep` takes over, or why
 * it cannot be made (see the module comment).
 */
export function planRerun(
  workflow: CompiledWorkflow,
  runId: string,
  fromStep: string,
  original: ReadonlyMap<string, OriginalStep>,
): RerunPlan | RerunRefusal {
  if (!workflow.stepsById.has(fromStep))
    return {
      code: "NOT_FOUND",
      field: "from_step",
      message: `workflow ${workflow.name} v${workflow.version} of run ${runId} has no step ${JSON.stringify(fromStep)}`,
    };
  const upstream = reachable(workflow.dependencies, [fromStep]);
  for (const id of workflow.order) {
    if (!upstream.has(id)) continue;
    const step = original.get(id);
    if (step?.status === "SKIPPED") continue;
    if (step?.status !== "SUCCEEDED")
      return {
        code: "FAILED_PRECONDITION",
        field: "from_step",
        message: `step ${id}, upstream of ${fromStep}, did not succeed in run ${runId} (${step?.status ?? "it never ran"}): rerun from ${id} or further up`,
      };
    if (step.compensated)
      return {
        code: "FAILED_PRECONDITION",
        field: "from_step",
        message: `step ${id}, upstream of ${fromStep}, was compensated in run ${runId} (its effects were undone): rerun from ${id} or further up`,
      };
  }
  // What runs again: the chosen step, the side steps that did not succeed, and all downstream.
  const again = new Set([fromStep]);
  for (const id of workflow.order) {
    if (upstream.has(id) || id === fromStep) continue;
    const step = original.get(id);
    if (step?.status !== "SUCCEEDED" || step.compensated) again.add(id);
  }
  for (const id of reachable(workflow.dependents, again)) again.add(id);
  const reused = new Map<string, OriginalStep>();
  for (const id of workflow.order) {
    const step = original.get(id);
    if (!again.has(id) && step?.status === "SUCCEEDED") reused.set(id, step);
  }
  return reused;
}

/** Whether `plan` is a refusal. */
export function isRefusal(plan: RerunPlan | RerunRefusal): plan is RerunRefusal {
  return "code" in plan;
}

/** The run row's link to the original (RunState.rerun). */
export function rerunLink(rerun: RerunStart): RerunLink {
  return {
    of: rerun.of,
    fromStep: rerun.fromStep,
    reused: Object.fromEntries([...rerun.reused].map(([id, s]) => [id, s.taskRunId])),
  };
}

/**
 * A new rerun's tasks before its first evaluation (runs.ts startRun): the taken-over steps end
 * SUCCEEDED with their stored outputs (offloaded ones are read back before their dependents see
 * them), and the chosen step gets its new input, if any.
 */
export function takeOver(core: Core, run: RunState, rerun: RerunStart, now: Date): void {
  for (const [stepId, step] of rerun.reused) {
    const task = run.tasks.get(stepId);
    if (task === undefined) continue;
    task.input = step.input ?? null;
    task.output = step.outputRef === null ? (step.output ?? null) : null;
    task.outputRef = step.outputRef ?? null;
    endTask(core, task, "SUCCEEDED", now);
    if (task.outputRef !== null) core.fx.resolveOutput(task);
    core.fx.event(run, {
      case: "taskSucceeded",
      value: {
        taskRunId: task.id,
        stepId: task.stepId,
        attempt: 0,
        ...(task.outputRef === null
          ? { output: jsonToValue(task.output) }
          : { outputRef: toArtifactRef(task.outputRef) }),
        kind: taskKind(task),
        reusedFrom: step.taskRunId,
      },
    });
  }
  const chosen = run.tasks.get(rerun.fromStep);
  // A PENDING task with an input keeps it when it becomes ready (runs.ts advance).
  if (chosen !== undefined && rerun.stepInput !== undefined && rerun.stepInput !== null)
    chosen.input = rerun.stepInput;
}
