/**
 * ExplainPending: why a step's task is not running. An active run is answered from the engine's
 * memory (core/explain.ts: every gate that holds the task now); a run that has ended is read from
 * storage and answered with its task's state and no gates. Unknown run or step: NOT_FOUND naming
 * it; a missing or malformed field: INVALID_ARGUMENT naming it.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ApiError, errorToProto } from "@nexusflow/common";
import {
  ExplainPendingResponseSchema,
  PendingGateSchema,
  TaskKind,
  type ExplainPendingRequest,
  type ExplainPendingResponse,
  type PendingGate,
} from "@nexusflow/gen";
import { pendingReason, type Gate } from "../core/index.js";
import type { Engine } from "../engine/engine.js";
import { checkRunId, type RunStore } from "../persistence/run-store.js";
import { runStatus, taskStatus } from "./convert.js";

/** Longest step id looked up (longer ones name no step). */
const MAX_STEP_ID = 1024;

/** A core gate as the API's PendingGate. */
export function gateMessage(gate: Gate): PendingGate {
  const ts = (d: Date | null) => (d === null ? undefined : timestampFromDate(d));
  let init: MessageInitShape<typeof PendingGateSchema>["gate"];
  switch (gate.kind) {
    case "dependencies":
      init = {
        case: "dependencies",
        value: { stepIds: [...gate.steps], readingOutputStepIds: [...gate.readingOutput] },
      };
      break;
    case "condition":
      init = { case: "condition", value: { expression: gate.expression, stepIds: [...gate.steps] } };
      break;
    case "retry-backoff":
      init = {
        case: "retryBackoff",
        value: {
          nextAttemptTime: ts(gate.until),
          nextAttempt: gate.nextAttempt,
          maxAttempts: gate.maxAttempts,
          ...(gate.lastError === null ? {} : { lastError: errorToProto(gate.lastError) }),
        },
      };
      break;
    case "no-executor":
      init = { case: "noExecutor", value: { type: gate.type, ahead: gate.ahead, since: ts(gate.since) } };
      break;
    case "executors-busy":
      init = {
        case: "executorsBusy",
        value: {
          type: gate.type,
          executors: gate.executors,
          draining: gate.draining,
          ahead: gate.ahead,
          since: ts(gate.since),
        },
      };
      break;
    case "schedule-to-start":
      init = {
        case: "scheduleToStart",
        value: { deadline: timestampFromDate(gate.deadline), timeoutMs: BigInt(gate.timeoutMs) },
      };
      break;
    case "concurrency-key":
      init = {
        case: "concurrencyKey",
        value: {
          scope: gate.scope,
          keyExpression: gate.expression,
          key: gate.key,
          limit: gate.limit,
          strategy: gate.strategy,
          holders: gate.holders.map((h) => ({
            runId: h.runId,
            stepId: h.stepId ?? "",
            taskRunId: h.taskRunId ?? "",
          })),
          holding: gate.holding,
          position: gate.position,
          waiting: gate.waiting,
        },
      };
      break;
    case "rate-limit":
      init = {
        case: "rateLimit",
        value: {
          name: gate.name,
          key: gate.key,
          nextTokenAt: timestampFromDate(gate.nextTokenAt),
          ...(gate.pausedUntil === null ? {} : { pausedUntil: timestampFromDate(gate.pausedUntil) }),
          pausedBy: gate.pausedBy,
          pauseNote: gate.pauseNote,
        },
      };
      break;
    case "fair-share":
      init = {
        case: "fairShare",
        value: {
          level: gate.level,
          tenant: gate.tenant,
          key: gate.key,
          type: gate.type,
          leased: gate.leased,
          weight: gate.weight,
          min: gate.min,
          max: gate.max,
          atMax: gate.atMax,
          next: gate.next,
          waiting: gate.waiting,
        },
      };
      break;
    case "run-stopping":
      init = {
        case: "runStopping",
        value: { runStatus: runStatus(gate.runStatus), cancelRequested: gate.cancelRequested },
      };
      break;
    case "durable-wait":
      init = {
        case: "durableWait",
        value: {
          signal: gate.signal ?? "",
          until: ts(gate.until),
          event: gate.event?.key ?? "",
          filter: gate.event?.filter ?? "",
        },
      };
      break;
    case "map-elements":
      init = {
        case: "mapElements",
        value: {
          total: gate.total,
          succeeded: gate.succeeded,
          failed: gate.failed,
          running: gate.running,
          queued: gate.queued,
          waitingForParallelism: gate.waitingForParallelism,
          parallelism: gate.parallelism,
        },
      };
      break;
    case "child-run":
      init = {
        case: "childRun",
        value: {
          runId: gate.runId,
          workflowName: gate.workflow,
          workflowVersion: gate.version ?? 0,
          compensating: gate.compensating,
        },
      };
      break;
  }
  return create(PendingGateSchema, { gate: init });
}

/** ExplainPending's checks of its request: INVALID_ARGUMENT naming the field at fault. */
export function checkExplainPending(req: ExplainPendingRequest): void {
  checkRunId(req.runId);
  if (req.stepId === "") throw ApiError.invalid("step_id", "a step id is required");
  if (req.stepId.length > MAX_STEP_ID) throw ApiError.invalid("step_id", `at most ${MAX_STEP_ID} characters`);
}

/** The ExplainPending handler's work (see the module comment). */
export async function explainPending(
  engine: Engine,
  runs: RunStore,
  req: ExplainPendingRequest,
): Promise<ExplainPendingResponse> {
  checkExplainPending(req);
  const kind = req.compensation ? TaskKind.COMPENSATION : TaskKind.STEP;
  // A parked run (engine/parking.ts) is loaded back: its gates are those of a run in memory.
  if (engine.state === "RUNNING") await engine.load(req.runId);
  const active = engine.explainPending(req.runId, req.stepId, req.compensation);
  if (active !== undefined) {
    const { run, task, gates, at } = active;
    if (task === undefined) throw notFound(req, run.workflow.stepsById.has(req.stepId));
    const priority = run.workflow.stepsById.get(task.stepId)?.priority ?? 0;
    return create(ExplainPendingResponseSchema, {
      runId: run.id,
      stepId: task.stepId,
      kind,
      taskRunId: task.id,
      status: taskStatus(task.status),
      runStatus: runStatus(run.status),
      gates: gates.map(gateMessage),
      pendingReason: pendingReason(gates),
      time: timestampFromDate(at),
      priority,
    });
  }
  // Not active here: ended (or this scheduler is still recovering it); its stored state answers.
  const detail = await runs.get(req.runId);
  const task = detail.tasks.find(
    (t) => t.stepId === req.stepId && (t.kind === "COMPENSATION") === req.compensation,
  );
  if (task === undefined)
    throw notFound(
      req,
      detail.tasks.some((t) => t.stepId === req.stepId),
    );
  return create(ExplainPendingResponseSchema, {
    runId: detail.run.id,
    stepId: task.stepId,
    kind,
    taskRunId: task.id,
    status: taskStatus(task.status),
    runStatus: runStatus(detail.run.status),
    gates: [],
    pendingReason: "",
    time: timestampFromDate(new Date()),
  });
}

/** NOT_FOUND for a step the run has no task of (`stepExists`: the step is known, its compensation not). */
function notFound(req: ExplainPendingRequest, stepExists: boolean): ApiError {
  const step = JSON.stringify(req.stepId);
  return ApiError.notFound(
    req.compensation && stepExists
      ? `step ${step} of run ${req.runId} has no compensation task (none is defined, or the run is not rolling back)`
      : `run ${req.runId} has no step ${step}`,
  );
}
