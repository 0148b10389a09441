/** The session messages the engine sends an executor: a lease, a cancel, a ping. */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { jsonToValue } from "@nexusflow/common";
import { SessionResponseSchema, TaskKind, type SessionResponse } from "@nexusflow/gen";
import { leaseKey } from "../core/index.js";
import type { RunState, TaskState } from "../model/run-state.js";

/** The Lease message of the task's current lease. */
export function leaseMessage(
  run: RunState | undefined,
  task: TaskState,
  traceContext?: Record<string, string>,
): SessionResponse {
  const step = run?.workflow.stepsById.get(task.stepId);
  return create(SessionResponseSchema, {
    message: {
      case: "lease",
      value: {
        key: leaseKey(task),
        runId: task.runId,
        stepId: task.stepId,
        taskType: task.type,
        kind: task.kind === "STEP" ? TaskKind.STEP : TaskKind.COMPENSATION,
        input: jsonToValue(task.input),
        workflowName: run?.workflow.name ?? "",
        heartbeatTimeoutMs: step?.timeouts.heartbeatMs ?? 0,
        ...(traceContext === undefined ? {} : { traceContext }),
        ...(task.leaseExpiresAt === null ? {} : { deadline: timestampFromDate(task.leaseExpiresAt) }),
      },
    },
  });
}

/** The Cancel message of the task's current lease. */
export function cancelMessage(task: TaskState, reason: string): SessionResponse {
  return create(SessionResponseSchema, {
    message: { case: "cancel", value: { key: leaseKey(task), reason } },
  });
}

/** A Ping with `nonce`. */
export function pingMessage(nonce: bigint): SessionResponse {
  return create(SessionResponseSchema, { message: { case: "ping", value: { nonce } } });
}
