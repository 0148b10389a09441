/**
 * RerunRun: validates the request, reads the original run as committed, and has the engine start
 * the rerun (core/reruns.ts decides which steps it takes over).
 */
import { create } from "@bufbuild/protobuf";
import { ApiError, Code, nulCharacterPath, valueToJsonChecked } from "@nexusflow/common";
import { RerunRunResponseSchema, RunView, type RerunRunRequest, type RerunRunResponse } from "@nexusflow/gen";
import type { OriginalStep } from "../core/index.js";
import type { Engine } from "../engine/engine.js";
import { refuseReservedKey } from "../engine/keyed-starts.js";
import { TERMINAL_RUN_STATUSES, type RunStatusName, type TaskStatusName } from "../model/run-state.js";
import { checkRunId, type RunStore, type TaskRow } from "../persistence/run-store.js";
import {
  boundedRun,
  runBasic,
  runBasicFromState,
  runDetail,
  runFromState,
  type PendingReasons,
} from "./convert.js";
import { refuseTooDeep, TASK_VALUE_DEPTH } from "../model/answer-depth.js";

/** Longest step id a definition accepts. */
const MAX_STEP_ID = 63;

/** Compensation states after which a step's effects count as undone (or attempted to be). */
const COMPENSATION_RAN: ReadonlySet<string> = new Set([
  "LEASED",
  "RUNNING",
  "RETRY_WAIT",
  "SUCCEEDED",
  "FAILED",
]);

/** The original run's steps as core/reruns.ts reads them. */
export function originalSteps(tasks: readonly TaskRow[]): Map<string, OriginalStep> {
  const compensated = new Set(
    tasks.filter((t) => t.kind === "COMPENSATION" && COMPENSATION_RAN.has(t.status)).map((t) => t.stepId),
  );
  const steps = new Map<string, OriginalStep>();
  for (const t of tasks) {
    if (t.kind !== "STEP") continue;
    steps.set(t.stepId, {
      taskRunId: t.id,
      status: t.status as TaskStatusName,
      input: t.input ?? null,
      output: t.output ?? null,
      outputRef: t.outputRef ?? null,
      compensated: compensated.has(t.stepId),
    });
  }
  return steps;
}

function refuseNul(value: unknown, field: string): void {
  const path = nulCharacterPath(value, field);
  if (path !== undefined)
    throw ApiError.invalid(path, "contains a NUL character (U+0000), which cannot be stored");
}

/**
 * RerunRun's checks of its request (INVALID_ARGUMENT naming the field at fault); the new input of
 * the step, if the request sets one.
 */
export function checkRerunRequest(req: RerunRunRequest): unknown {
  checkRunId(req.runId);
  if (req.fromStep === "") throw ApiError.invalid("from_step", "a step id is required");
  if (req.fromStep.length > MAX_STEP_ID)
    throw ApiError.invalid("from_step", `at most ${MAX_STEP_ID} characters (a step id)`);
  refuseNul(req.fromStep, "from_step");
  if (req.idempotencyKey.length > 200) throw ApiError.invalid("idempotency_key", "at most 200 characters");
  refuseNul(req.idempotencyKey, "idempotency_key");
  refuseReservedKey(req.idempotencyKey, "idempotency_key");
  if (RunView[req.view] === undefined) throw ApiError.invalid("view", `unknown run view ${req.view}`);
  if (req.stepInput === undefined) return undefined;
  const stepInput = valueToJsonChecked(req.stepInput, "step_input");
  if (stepInput === null)
    throw ApiError.invalid(
      "step_input",
      "null is no new input: leave it unset to render the step's template",
    );
  refuseNul(stepInput, "step_input");
  refuseTooDeep(stepInput, TASK_VALUE_DEPTH, "step_input");
  return stepInput;
}

/**
 * How long before retention may delete a run RerunRun refuses it (half the retention when that is
 * shorter): retention deletes a run's files before its rows, so a rerun made meanwhile would take
 * over steps whose offloaded outputs are gone.
 */
export const RERUN_RETENTION_MARGIN_MS = 10 * 60_000;

/** RerunRun (see the rpc's comment in workflow_service.proto). */
export async function rerunRun(
  engine: Engine,
  runs: RunStore,
  req: RerunRunRequest,
  pendingReason: PendingReasons,
  runRetentionMs = 0,
): Promise<RerunRunResponse> {
  const stepInput = checkRerunRequest(req);
  const original = await runs.get(req.runId);
  if (!TERMINAL_RUN_STATUSES.has(original.run.status as RunStatusName))
    throw new ApiError(
      Code.FAILED_PRECONDITION,
      `run ${req.runId} is still active (${original.run.status}): rerun it once it has ended (or cancel it first)`,
    );
  const endedAt = original.run.endedAt?.getTime();
  if (
    runRetentionMs > 0 &&
    endedAt !== undefined &&
    endedAt < Date.now() - runRetentionMs + Math.min(RERUN_RETENTION_MARGIN_MS, runRetentionMs / 2)
  )
    throw new ApiError(
      Code.FAILED_PRECONDITION,
      `run ${req.runId} ended on ${new Date(endedAt).toISOString()} and is due for deletion by the run retention (RUN_RETENTION ${runRetentionMs} ms): it can no longer be rerun`,
    );
  const { runId, created } = await engine.rerunRun({
    original: {
      id: original.run.id,
      definitionId: original.run.definitionId,
      workflowName: original.run.workflowName,
      input: original.run.input ?? null,
      labels: original.run.labels,
    },
    steps: originalSteps(original.tasks),
    fromStep: req.fromStep,
    stepInput,
    idempotencyKey: req.idempotencyKey,
  });
  const active = created ? engine.activeRun(runId) : undefined;
  const run =
    req.view === RunView.BASIC
      ? active !== undefined
        ? runBasicFromState(active)
        : runBasic(await runs.getRun(runId))
      : boundedRun(
          active !== undefined
            ? runFromState(active, pendingReason)
            : runDetail(await runs.get(runId), pendingReason),
        );
  return create(RerunRunResponseSchema, { run, created });
}
