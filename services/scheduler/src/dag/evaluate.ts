/**
 * Run evaluation: given a compiled workflow and the recorded state of every step, decide which
 * pending steps to start, skip or fail now, and whether the run is over. Pure and O(steps + edges)
 * per call (plus rendering the inputs of the steps it starts), so the scheduler can simply call it
 * after every batch of state changes instead of tracking what changed.
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { RunEvaluationBudget, WorkBudget } from "./budget.js";
import { DagError, InputTooLargeError } from "./errors.js";
import { evaluateExpression, truthy } from "./expr.js";
import type { EvalScope, StepView } from "./expr.js";
import { objectFromEntries, pathJoin } from "./json.js";
import type { JsonValue } from "./json.js";
import { MAX_MAP_ITEMS } from "./map.js";
import type {
  CompiledStep,
  CompiledWorkflow,
  RunInfo,
  SkipReason,
  StepState,
  StepStates,
  StepStatus,
} from "./spec.js";
import { MAX_TASK_INPUT_BYTES, renderTemplate } from "./template.js";

/** A step to start now with its rendered input (null when the step has no `input`). */
export interface ReadyStep {
  readonly stepId: string;
  readonly input: JsonValue;
}

/** A pending step to mark skipped now. */
export interface SkipDecision {
  readonly stepId: string;
  readonly reason: SkipReason;
}

/**
 * Why a step failed before running: its input or its `when` could not be rendered / evaluated, or
 * its input would be larger than a lease carries (INPUT_TOO_LARGE, as when it is leased).
 */
export interface StepDecisionError {
  readonly type:
    | typeof TaskErrorType.TEMPLATE_ERROR
    | typeof TaskErrorType.EXPRESSION_ERROR
    | typeof TaskErrorType.MAP_ITEMS_INVALID
    | typeof TaskErrorType.INPUT_TOO_LARGE;
  readonly message: string;
  /** MAP_ITEMS_INVALID's details (task-error-types.ts). */
  readonly details?: unknown;
}

/** A pending step to mark failed now (terminal: no retry can fix a template against the same data). */
export interface FailDecision {
  readonly stepId: string;
  readonly error: StepDecisionError;
}

/** How a finished run ended. Cancelled steps count as failed. */
export type RunOutcome =
  | { readonly status: "succeeded"; readonly output: JsonValue }
  | {
      readonly status: "failed";
      /** Failed and cancelled steps, in topological order; empty when only the output mapping failed. */
      readonly failedSteps: readonly string[];
      /** Set when every step succeeded or was skipped but the `output` mapping could not be rendered. */
      readonly error?: { readonly type: typeof TaskErrorType.TEMPLATE_ERROR; readonly message: string };
    };

/** Decisions of one {@link evaluateRun} call. */
export interface Evaluation {
  readonly ready: readonly ReadyStep[];
  readonly skip: readonly SkipDecision[];
  readonly fail: readonly FailDecision[];
  /** Present when no step is pending or active once this call's skip/fail decisions are applied (and nothing is ready). */
  readonly outcome?: RunOutcome;
}

// Effective statuses as small integers: one byte per step per call, no allocation per step.
const PENDING = 0;
const ACTIVE = 1;
const SUCCEEDED = 2;
const FAILED = 3;
const CANCELLED = 4;
const SKIPPED_CONDITION = 5;
const SKIPPED_UPSTREAM = 6;
const STATUS_NAMES: readonly StepStatus[] = [
  "pending",
  "active",
  "succeeded",
  "failed",
  "cancelled",
  "skipped",
  "skipped",
];

function codeOf(state: StepState | undefined): number {
  if (state === undefined) return PENDING;
  switch (state.status) {
    case "pending":
      return PENDING;
    case "active":
      return ACTIVE;
    case "succeeded":
      return SUCCEEDED;
    case "failed":
      return FAILED;
    case "cancelled":
      return CANCELLED;
    case "skipped":
      // Without a reason, skipping is treated as blocking: dependents are not run on a guess.
      return state.skipReason === "condition" ? SKIPPED_CONDITION : SKIPPED_UPSTREAM;
  }
}

function errorMessage(error: unknown): string | undefined {
  if (error instanceof DagError) return error.message;
  // Outside data nested deeper than the stack allows must fail the step, not the scheduler.
  if (error instanceof RangeError) return `value too deeply nested: ${error.message}`;
  return undefined;
}

/**
 * What one evaluation of a run leaves for the next ({@link evaluateRun}'s `memo`): the longest
 * prefix of the workflow's steps, in topological order, whose recorded states were settled
 * (succeeded, failed, cancelled or skipped) when read, with their codes. A settled state is final
 * for a task (a task only moves forward; a run read back from the database is a new RunState with
 * a memo of its own), so the next evaluation starts after that prefix: a chain's step costs O(1)
 * instead of O(steps). Create one with {@link newEvaluationMemo}; keep it with the run, never share it.
 */
export interface EvaluationMemo {
  /** The workflow it was made for: a memo used with another starts over. */
  workflow: CompiledWorkflow | undefined;
  /** Effective codes of the first `settled` steps. */
  codes: Uint8Array;
  settled: number;
}

/** An empty {@link EvaluationMemo}. */
export function newEvaluationMemo(): EvaluationMemo {
  return { workflow: undefined, codes: new Uint8Array(0), settled: 0 };
}

/** Why a task input could not be rendered: TEMPLATE_ERROR, or INPUT_TOO_LARGE naming the step. */
interface InputError {
  readonly type: typeof TaskErrorType.TEMPLATE_ERROR | typeof TaskErrorType.INPUT_TOO_LARGE;
  readonly message: string;
}

/** The {@link InputError} of `error`, thrown rendering the input of step `stepId`; undefined when it is not one. */
function inputError(stepId: string, error: unknown): InputError | undefined {
  if (error instanceof InputTooLargeError)
    return {
      type: TaskErrorType.INPUT_TOO_LARGE,
      message: `step ${JSON.stringify(stepId)}: ${error.message}`,
    };
  const message = errorMessage(error);
  return message === undefined ? undefined : { type: TaskErrorType.TEMPLATE_ERROR, message };
}

/**
 * Decides what happens next in a run. Steps missing from `states` are pending. Only pending steps are
 * decided, in topological order, and each decision is visible to later steps of the same call, so
 * cascades (skips, template failures and the skips they cause downstream) resolve in one call.
 *
 * Rules for a pending step:
 * - a dependency failed, was cancelled or was skipped for "upstream" → skip "upstream" at once, even
 *   if other dependencies are still running (the step can no longer run);
 * - otherwise, while a dependency is pending/active → wait;
 * - every dependency skipped for "condition" → skip "condition" (the whole branch was not taken);
 * - otherwise (no dependencies, or some succeeded and the rest were condition-skipped, which is how
 *   if/else branches join) → evaluate `when` (falsy → skip "condition"; error → fail
 *   EXPRESSION_ERROR), then render `input` (error → fail TEMPLATE_ERROR; larger than a lease
 *   carries, {@link MAX_TASK_INPUT_BYTES} → fail INPUT_TOO_LARGE) and report it ready.
 *
 * The whole call spends one work `budget` (budget.ts {@link RunEvaluationBudget}): every `when`,
 * `map.items` and `input` it evaluates, and the `output` mapping, has an expression budget of its
 * own within it, so a call costs at most that much whatever the number of steps it decides. A step
 * being decided when it runs out fails as one whose own expression needed too much work (`when` or
 * `map.items` EXPRESSION_ERROR, `input` TEMPLATE_ERROR, the output mapping fails the run), with a
 * message naming it; so does every later step of the call that needs any work.
 *
 * A failure does not stop independent branches; the run's outcome is decided when nothing is pending
 * or active. The outcome's output is the rendered `output` mapping or, without one, an object of
 * every succeeded step's output (null when it had none) keyed by step id.
 *
 * Rendered inputs/outputs may share frozen structure with the spec and with step outputs: do not
 * mutate them.
 */
export function evaluateRun(
  workflow: CompiledWorkflow,
  runInput: unknown,
  states: StepStates,
  run: RunInfo,
  memo?: EvaluationMemo,
  budget: RunEvaluationBudget = new RunEvaluationBudget(),
): Evaluation {
  const steps = workflow.steps;
  const n = steps.length;
  const effective = new Uint8Array(n);
  let from = 0;
  if (memo !== undefined) {
    if (memo.workflow !== workflow) {
      memo.workflow = workflow;
      memo.codes = new Uint8Array(n);
      memo.settled = 0;
    }
    from = memo.settled;
    effective.set(memo.codes.subarray(0, from));
  }
  const ready: ReadyStep[] = [];
  const skip: SkipDecision[] = [];
  const fail: FailDecision[] = [];
  let unfinished = 0;

  const scope: EvalScope = {
    input: runInput,
    run,
    step: undefined,
    stepView(id: string): StepView | undefined {
      const step = workflow.stepsById.get(id);
      if (step === undefined) return undefined;
      // Templates only reference upstream steps, which were decided earlier in this same pass.
      return {
        status: STATUS_NAMES[effective[step.order] as number] as StepStatus,
        output: states.get(id)?.output,
      };
    },
  };

  for (let i = from; i < n; i++) {
    const step = steps[i] as (typeof steps)[number];
    const code = codeOf(states.get(step.id));
    if (code !== PENDING) {
      effective[i] = code;
      if (code === ACTIVE) unfinished++;
      // Read from a recorded state (not decided by this call), settled, and right after the
      // prefix: the prefix grows by it.
      else if (memo !== undefined && memo.settled === i) {
        memo.codes[i] = code;
        memo.settled = i + 1;
      }
      continue;
    }
    let waiting = false;
    let blocked = false;
    let anySucceeded = false;
    const deps = step.dependencyOrders;
    for (let k = 0; k < deps.length; k++) {
      const dep = effective[deps[k] as number] as number;
      if (dep === SUCCEEDED) anySucceeded = true;
      else if (dep === PENDING || dep === ACTIVE) waiting = true;
      else if (dep !== SKIPPED_CONDITION) {
        blocked = true;
        break;
      }
    }
    if (blocked) {
      effective[i] = SKIPPED_UPSTREAM;
      skip.push({ stepId: step.id, reason: "upstream" });
      continue;
    }
    if (waiting) {
      effective[i] = PENDING;
      unfinished++;
      continue;
    }
    if (step.dependencyOrders.length > 0 && !anySucceeded) {
      effective[i] = SKIPPED_CONDITION;
      skip.push({ stepId: step.id, reason: "condition" });
      continue;
    }
    budget.deciding = `step ${JSON.stringify(step.id)}`;
    if (step.when !== null) {
      let go: boolean;
      try {
        go = truthy(evaluateExpression(step.when, scope, budget.within()));
      } catch (error) {
        const message = errorMessage(error);
        if (message === undefined) throw error;
        effective[i] = FAILED;
        fail.push({
          stepId: step.id,
          error: { type: TaskErrorType.EXPRESSION_ERROR, message: `when: ${message}` },
        });
        continue;
      }
      if (!go) {
        effective[i] = SKIPPED_CONDITION;
        skip.push({ stepId: step.id, reason: "condition" });
        continue;
      }
    }
    let input: JsonValue = null;
    if (step.map !== null) {
      // A map step's input is rendered per element (renderElementInput); what it starts with is its items.
      const items = mapItems(step, scope, budget.within());
      if ("error" in items) {
        effective[i] = FAILED;
        fail.push({ stepId: step.id, error: items.error });
        continue;
      }
      input = items.items;
    } else if (step.input !== null) {
      try {
        const at = pathJoin(pathJoin("$.steps", step.specIndex), "input");
        input = renderTemplate(step.input, scope, at, budget.within(), MAX_TASK_INPUT_BYTES);
      } catch (error) {
        const failure = inputError(step.id, error);
        if (failure === undefined) throw error;
        effective[i] = FAILED;
        fail.push({ stepId: step.id, error: failure });
        continue;
      }
    }
    // A ready step is about to become active; it keeps the run unfinished.
    effective[i] = ACTIVE;
    unfinished++;
    ready.push({ stepId: step.id, input });
  }

  if (unfinished > 0) return { ready, skip, fail };
  budget.deciding = "the output mapping";
  return { ready, skip, fail, outcome: outcomeOf(workflow, effective, scope, states, budget) };
}

function outcomeOf(
  workflow: CompiledWorkflow,
  effective: Uint8Array,
  scope: EvalScope,
  states: StepStates,
  budget: RunEvaluationBudget,
): RunOutcome {
  const failedSteps: string[] = [];
  workflow.steps.forEach((step, i) => {
    const code = effective[i];
    if (code === FAILED || code === CANCELLED) failedSteps.push(step.id);
  });
  if (failedSteps.length > 0) return { status: "failed", failedSteps };
  if (workflow.output === null) {
    // Spec order rather than topological order: it is the order the author wrote.
    const bySpec = [...workflow.steps].sort((a, b) => a.specIndex - b.specIndex);
    const entries = bySpec
      .filter((step) => effective[step.order] === SUCCEEDED)
      .map((step) => [step.id, (states.get(step.id)?.output ?? null) as JsonValue] as const);
    return { status: "succeeded", output: objectFromEntries(entries) as JsonValue };
  }
  try {
    return {
      status: "succeeded",
      output: renderTemplate(workflow.output, scope, "$.output", budget.within()),
    };
  } catch (error) {
    const message = errorMessage(error);
    if (message === undefined) throw error;
    return { status: "failed", failedSteps: [], error: { type: TaskErrorType.TEMPLATE_ERROR, message } };
  }
}

/** Result of {@link renderCompensationInput}. */
export type CompensationInput =
  { readonly ok: true; readonly input: JsonValue } | { readonly ok: false; readonly error: InputError };

/**
 * Renders the `compensate.input` of a step (null when it has none). `step.input` / `step.output` are
 * the step's own recorded input and output; `steps.<id>` read `states` as recorded.
 * Throws {@link DagError} UNKNOWN_STEP / INVALID_ARGUMENT when the step does not exist or has no compensation.
 */
export function renderCompensationInput(
  workflow: CompiledWorkflow,
  stepId: string,
  runInput: unknown,
  states: StepStates,
  run: RunInfo,
): CompensationInput {
  const step = workflow.stepsById.get(stepId);
  if (step === undefined)
    throw new DagError("UNKNOWN_STEP", `workflow ${workflow.name} has no step ${JSON.stringify(stepId)}`);
  if (step.compensate === null)
    throw new DagError("INVALID_ARGUMENT", `step ${JSON.stringify(stepId)} has no compensate`);
  if (step.compensate.input === null) return { ok: true, input: null };
  const own = states.get(stepId);
  const scope: EvalScope = {
    input: runInput,
    run,
    step: { input: own?.input, output: own?.status === "succeeded" ? (own.output ?? null) : own?.output },
    stepView(id: string): StepView | undefined {
      if (!workflow.stepsById.has(id)) return undefined;
      const state = states.get(id);
      return { status: state?.status ?? "pending", output: state?.output };
    },
  };
  try {
    const at = pathJoin(pathJoin(pathJoin("$.steps", step.specIndex), "compensate"), "input");
    return {
      ok: true,
      input: renderTemplate(step.compensate.input, scope, at, new WorkBudget(), MAX_TASK_INPUT_BYTES),
    };
  } catch (error) {
    const failure = inputError(stepId, error);
    if (failure === undefined) throw error;
    return { ok: false, error: failure };
  }
}

/**
 * Saga order: the steps among `succeededStepIds` that have a `compensate`, or start child runs that
 * roll back with their parent (`workflow` with `onParentCancel: "cancel"`), grouped into waves. Every
 * step's compensation comes in a later wave than the compensations of all steps downstream of it
 * (directly or through steps without compensation), and the steps of one wave may run in parallel.
 * Within a wave, steps are in reverse topological order. O(steps + edges).
 * Throws {@link DagError} UNKNOWN_STEP for ids that are not steps of the workflow.
 */
export function compensationOrder(
  workflow: CompiledWorkflow,
  succeededStepIds: Iterable<string>,
): string[][] {
  const steps = workflow.steps;
  const compensated = new Uint8Array(steps.length);
  for (const id of succeededStepIds) {
    const step = workflow.stepsById.get(id);
    if (step === undefined)
      throw new DagError("UNKNOWN_STEP", `workflow ${workflow.name} has no step ${JSON.stringify(id)}`);
    if (step.compensate !== null || step.child?.onParentCancel === "cancel") compensated[step.order] = 1;
  }
  // after[i]: first wave in which anything upstream of i may be compensated, given i's descendants.
  const after = new Int32Array(steps.length);
  const waves: string[][] = [];
  for (let i = steps.length - 1; i >= 0; i--) {
    const step = steps[i] as (typeof steps)[number];
    let wave = 0;
    for (const d of step.dependentOrders) wave = Math.max(wave, after[d] as number);
    if (compensated[i] === 1) {
      (waves[wave] ??= []).push(step.id);
      after[i] = wave + 1;
    } else {
      after[i] = wave;
    }
  }
  return waves.filter((w) => w !== undefined);
}

/** Evaluates a map step's `map.items`: the array, or why the step fails (MAP_ITEMS_INVALID, EXPRESSION_ERROR). */
function mapItems(
  step: CompiledStep,
  scope: EvalScope,
  budget: WorkBudget,
): { items: JsonValue[] } | { error: StepDecisionError } {
  const map = step.map as NonNullable<CompiledStep["map"]>;
  let value: JsonValue;
  try {
    value = evaluateExpression(map.items, scope, budget);
  } catch (error) {
    const message = errorMessage(error);
    if (message === undefined) throw error;
    return { error: { type: TaskErrorType.EXPRESSION_ERROR, message: `map.items: ${message}` } };
  }
  if (!Array.isArray(value))
    return {
      error: {
        type: TaskErrorType.MAP_ITEMS_INVALID,
        message: `map.items (${map.expression}) must yield an array, got ${value === null ? "null" : typeof value}`,
        details: { items: map.expression, got: value === null ? "null" : typeof value },
      },
    };
  if (value.length > MAX_MAP_ITEMS)
    return {
      error: {
        type: TaskErrorType.MAP_ITEMS_INVALID,
        message: `map.items (${map.expression}) has ${value.length} elements; a map step takes at most ${MAX_MAP_ITEMS}`,
        details: { items: map.expression, length: value.length },
      },
    };
  return { items: value as JsonValue[] };
}

/**
 * Renders a map step's `input` for one element (`item`, `index`), over the run input and the
 * recorded states of its upstream steps. Throws a DagError (RenderError) when it cannot: the
 * InputTooLargeError (code INPUT_TOO_LARGE) of an input larger than a lease carries, among them.
 */
export function renderElementInput(
  workflow: CompiledWorkflow,
  step: CompiledStep,
  runInput: unknown,
  states: StepStates,
  run: RunInfo,
  item: unknown,
  index: number,
): JsonValue {
  if (step.input === null) return item as JsonValue;
  const scope: EvalScope = {
    input: runInput,
    run,
    step: undefined,
    element: { item, index },
    stepView(id: string): StepView | undefined {
      if (!workflow.stepsById.has(id)) return undefined;
      const state = states.get(id);
      return { status: state?.status ?? "pending", output: state?.output };
    },
  };
  const at = pathJoin(pathJoin("$.steps", step.specIndex), "input");
  return renderTemplate(step.input, scope, at, new WorkBudget(), MAX_TASK_INPUT_BYTES);
}
