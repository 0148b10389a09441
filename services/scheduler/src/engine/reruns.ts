/**
 * RerunRun's side in the engine shell: the input it takes and the new run it asks the core for
 * (core/reruns.ts plans which steps the rerun takes over from the original).
 */
import { ApiError, Code } from "@nexusflow/common";
import * as core from "../core/index.js";
import type { Definitions } from "./definitions.js";

/** Input of {@link Engine.rerunRun}. */
export interface RerunRunInput {
  /** The original run as stored; it has ended. */
  original: {
    id: string;
    definitionId: number;
    workflowName: string;
    input: unknown;
    labels: Record<string, string>;
  };
  /** The original run's steps by step id (core/reruns.ts OriginalStep). */
  steps: ReadonlyMap<string, core.OriginalStep>;
  fromStep: string;
  /** A new input for `fromStep`; undefined to render its template. */
  stepInput: unknown;
  idempotencyKey: string;
}

/** The label a rerun carries, naming its original run. */
export const RERUN_OF_LABEL = "rerun-of";

/**
 * The core's input for the rerun `req` (its original's definition version, input and the steps it
 * takes over); throws ApiError for a refused plan (NOT_FOUND or FAILED_PRECONDITION) or a new
 * input for a map step (INVALID_ARGUMENT naming step_input).
 */
export async function rerunStart(
  definitions: Pick<Definitions, "compiledById">,
  req: RerunRunInput,
  labels: Record<string, string>,
  hash: string | null,
): Promise<core.RunStart> {
  const workflow = await definitions.compiledById(req.original.definitionId);
  // A map step's input is rendered per element (core/maps.ts): one new input cannot stand for it.
  if (req.stepInput !== undefined && workflow.stepsById.get(req.fromStep)?.map != null)
    throw ApiError.invalid(
      "step_input",
      `step ${req.fromStep} is a map step, whose input is rendered once per element: rerun it without step_input`,
    );
  const plan = core.planRerun(workflow, req.original.id, req.fromStep, req.steps);
  if (core.isRefusal(plan))
    throw plan.code === "NOT_FOUND"
      ? ApiError.notFound(plan.message)
      : new ApiError(Code.FAILED_PRECONDITION, plan.message);
  return {
    definitionId: req.original.definitionId,
    workflow,
    input: req.original.input ?? null,
    idempotencyKey: req.idempotencyKey === "" ? null : req.idempotencyKey,
    requestHash: hash,
    labels,
    traceParent: null,
    rerun: {
      of: req.original.id,
      fromStep: req.fromStep,
      reused: plan,
      ...(req.stepInput === undefined ? {} : { stepInput: req.stepInput }),
    },
  };
}
