/** The session messages the engine sends an executor: leases (alone or in batches), a cancel, a ping. */
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  BATCH_BYTES,
  BATCH_ITEMS,
  encodeBatch,
  jsonToValue,
  splitBatches,
  type BatchBounds,
  type EncodedItem,
} from "@nexusflow/common";
import {
  LeaseSchema,
  SessionResponseSchema,
  TaskKind,
  type Lease,
  type SessionResponse,
} from "@nexusflow/gen";
import { leaseKey } from "../core/index.js";
import type { RunState, TaskState } from "../model/run-state.js";

/** The Lease of the task's current lease. */
export function leaseValue(
  run: RunState | undefined,
  task: TaskState,
  traceContext?: Record<string, string>,
): Lease {
  const step = run?.workflow.stepsById.get(task.stepId);
  return create(LeaseSchema, {
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
  });
}

/** A Lease as a message of its own. */
export function leaseMessage(lease: Lease): SessionResponse {
  return create(SessionResponseSchema, { message: { case: "lease", value: lease } });
}

/** How {@link leaseFrames} bounds a LeaseBatch. */
export const LEASE_BATCH_BOUNDS: BatchBounds = { maxBytes: BATCH_BYTES, maxItems: BATCH_ITEMS };

const SINGLE_LEASE_FIELD = SessionResponseSchema.field.lease.number;
const LEASE_BATCH_FIELD = SessionResponseSchema.field.leases.number;

/**
 * Leases of one session as encoded SessionResponses, in order: LeaseBatch frames within `bounds`
 * (a lease alone in its frame, a large one, goes as a `lease`). Each lease is encoded once.
 */
export function leaseFrames(leases: readonly Lease[], bounds = LEASE_BATCH_BOUNDS): Uint8Array[] {
  const items: EncodedItem[] = leases.map((lease) => ({
    single: SINGLE_LEASE_FIELD,
    item: 0,
    bytes: toBinary(LeaseSchema, lease),
  }));
  return splitBatches(items, bounds).map((batch) => encodeBatch(batch, LEASE_BATCH_FIELD));
}

/** The Cancel message of the task's current lease (`partitionMoved`: its run left this replica). */
export function cancelMessage(task: TaskState, reason: string, partitionMoved = false): SessionResponse {
  return create(SessionResponseSchema, {
    message: { case: "cancel", value: { key: leaseKey(task), reason, partitionMoved } },
  });
}

/** A Ping with `nonce`. */
export function pingMessage(nonce: bigint): SessionResponse {
  return create(SessionResponseSchema, { message: { case: "ping", value: { nonce } } });
}
