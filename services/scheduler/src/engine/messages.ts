/** The session messages the engine sends an executor: leases (alone or in batches), a cancel, a ping. */
import { create, toBinary } from "@bufbuild/protobuf";
import { type BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  BATCH_BYTES,
  BATCH_ITEMS,
  KeptWriter,
  encodeBatch,
  jsonToValue,
  splitBatches,
  writeJsonAsValue,
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
    // A map element: the executor stores its objects in the element's own folder (reports.ts).
    ...(task.elementIndex === undefined ? {} : { elementIndex: task.elementIndex }),
    ...(task.leaseExpiresAt === null ? {} : { deadline: timestampFromDate(task.leaseExpiresAt) }),
  });
}

/** The writer {@link encodeLease} writes into, kept from one lease to the next. */
const leaseWriter = new KeptWriter();

/**
 * The Lease of the task's current lease, encoded: the bytes of
 * `toBinary(LeaseSchema, leaseValue(run, task, traceContext))`, written by hand and with the task's
 * JSON input written straight as a google.protobuf.Value (no Value message made and walked; every
 * lease of a drain passes here). messages.test.ts compares both for leases with every field set,
 * and fails when Lease or LeaseKey gains a field this function does not write.
 */
export function encodeLease(
  run: RunState | undefined,
  task: TaskState,
  traceContext?: Record<string, string>,
): Uint8Array {
  return (
    leaseWriter.encode(writeLease, run, task, traceContext) ??
    toBinary(LeaseSchema, leaseValue(run, task, traceContext))
  );
}

/** Writes the lease into `w`; false for an input the fast path leaves to the generic way (writeJsonAsValue). */
function writeLease(
  w: BinaryWriter,
  run: RunState | undefined,
  task: TaskState,
  traceContext: Record<string, string> | undefined,
): boolean {
  // The key as leaseKey(task) makes it: LeaseKey.run_id (4) is left unset (the Lease has run_id).
  w.tag(1, LEN).fork();
  if (task.id !== "") w.tag(1, LEN).string(task.id);
  if (task.attempt !== 0) w.tag(2, VARINT).int32(task.attempt);
  if (task.fencingToken !== 0) w.tag(3, VARINT).int64(task.fencingToken);
  w.join();
  if (task.runId !== "") w.tag(2, LEN).string(task.runId);
  if (task.stepId !== "") w.tag(3, LEN).string(task.stepId);
  if (task.type !== "") w.tag(4, LEN).string(task.type);
  w.tag(5, VARINT).int32(task.kind === "STEP" ? TaskKind.STEP : TaskKind.COMPENSATION);
  w.tag(6, LEN).fork();
  // An input the fast path leaves goes the generic way, failing as it fails.
  if (!writeJsonAsValue(w, task.input ?? null)) return false;
  w.join();
  if (task.leaseExpiresAt !== null) {
    const ms = task.leaseExpiresAt.getTime();
    const seconds = Math.floor(ms / 1000);
    const nanos = (ms - seconds * 1000) * 1_000_000;
    w.tag(7, LEN).fork();
    if (seconds !== 0) w.tag(1, VARINT).int64(seconds);
    if (nanos !== 0) w.tag(2, VARINT).int32(nanos);
    w.join();
  }
  const heartbeatMs = run?.workflow.stepsById.get(task.stepId)?.timeouts.heartbeatMs ?? 0;
  if (heartbeatMs !== 0) w.tag(8, VARINT).int32(heartbeatMs);
  if (traceContext !== undefined)
    for (const key of Object.keys(traceContext)) {
      w.tag(9, LEN).fork();
      w.tag(1, LEN).string(key);
      w.tag(2, LEN).string(traceContext[key] as string);
      w.join();
    }
  const workflowName = run?.workflow.name ?? "";
  if (workflowName !== "") w.tag(10, LEN).string(workflowName);
  // Proto3 optional: written whenever set, 0 included.
  if (task.elementIndex !== undefined) w.tag(11, VARINT).int32(task.elementIndex);
  return true;
}

const LEN = WireType.LengthDelimited;
const VARINT = WireType.Varint;

/** A Lease as a message of its own. */
export function leaseMessage(lease: Lease): SessionResponse {
  return create(SessionResponseSchema, { message: { case: "lease", value: lease } });
}

/** How {@link leaseFrames} bounds a LeaseBatch. */
export const LEASE_BATCH_BOUNDS: BatchBounds = { maxBytes: BATCH_BYTES, maxItems: BATCH_ITEMS };

const SINGLE_LEASE_FIELD = SessionResponseSchema.field.lease.number;
const LEASE_BATCH_FIELD = SessionResponseSchema.field.leases.number;

/**
 * Encoded leases (see {@link encodeLease}) of one session as encoded SessionResponses, in order:
 * LeaseBatch frames within `bounds` (a lease alone in its frame, a large one, goes as a `lease`).
 */
export function leaseFrames(leases: readonly Uint8Array[], bounds = LEASE_BATCH_BOUNDS): Uint8Array[] {
  const items: EncodedItem[] = leases.map((bytes) => ({ single: SINGLE_LEASE_FIELD, item: 0, bytes }));
  return splitBatches(items, bounds).map((batch) => encodeBatch(batch, LEASE_BATCH_FIELD));
}

/** The Cancel message of the task's current lease (`partitionMoved`: its run left this replica). */
export function cancelMessage(task: TaskState, reason: string, partitionMoved = false): SessionResponse {
  return create(SessionResponseSchema, {
    message: { case: "cancel", value: { key: leaseKey(task), reason, partitionMoved } },
  });
}

/** A Ping with `nonce`. */
export function pingMessage(nonce: bigint, listHeld = false): SessionResponse {
  return create(SessionResponseSchema, { message: { case: "ping", value: { nonce, listHeld } } });
}
