/**
 * Which partition a run belongs to, and the fence every group commit carries (docs/replicas.md).
 * Pure: no I/O. The partition count is fixed per installation (the `cluster_settings` row).
 */
import { createHash } from "node:crypto";
import { UnavailableError } from "@nexusflow/common";

/**
 * The partition of a StartRun idempotency key (`workflowName` and `key`): keyed starts are sent to
 * its owner, so that two calls with one key made at two replicas at once are answered by one
 * (engine/keyed-starts.ts makes the second wait for the first).
 */
export function keyPartition(workflowName: string, key: string, count: number): number {
  const digest = createHash("sha256").update(workflowName).update("\u0000").update(key).digest();
  return digest.readUInt32BE(0) % count;
}

/** Partitions of a new installation. */
export const DEFAULT_PARTITION_COUNT = 16;

/** Most partitions an installation may have (the table's check constraint says the same). */
export const MAX_PARTITION_COUNT = 4096;

/**
 * Class (first key) of the partitions' transaction-level advisory locks, "NFPT" in ASCII; the
 * second key is the partition. The SQL function `nexusflow_fence` (migration Partitions) takes
 * them shared, a takeover exclusive.
 */
export const PARTITION_LOCK_CLASS = 0x4e465054;

/** Raised for a partition count that cannot be used (0, negative, fractional, NaN, too large). */
export class PartitionCountError extends Error {
  override name = "PartitionCountError";
  /** A stable code for callers (never match the message). */
  readonly code = "INVALID_PARTITION_COUNT";
}

/** Throws {@link PartitionCountError} unless `n` is an integer from 1 to {@link MAX_PARTITION_COUNT}. */
export function checkPartitionCount(n: number, what = "the partition count"): number {
  if (!Number.isInteger(n) || n < 1 || n > MAX_PARTITION_COUNT)
    throw new PartitionCountError(`${what} must be an integer from 1 to ${MAX_PARTITION_COUNT}, got ${n}`);
  return n;
}

/**
 * The partition of a run: the last 32 bits of its id (random in a v4 UUID, and in a v7 one) modulo
 * the partition count. SQL computes the same with `nexusflow_partition_of(id, count)`.
 */
export function partitionOf(runId: string, count: number): number {
  return Number.parseInt(runId.slice(-8), 16) % count;
}

/** A partition this replica owns, at the epoch it took it with. */
export interface OwnedPartition {
  partition: number;
  epoch: number;
}

/**
 * Raised when a write is refused because this replica no longer owns a partition of a run it
 * writes at the epoch it believes (another replica took it over, or it was handed over): by the
 * database (SQLSTATE NF001 from `nexusflow_fence`, in the same statement as the writes, which are
 * rolled back) or before sending anything when the replica already knows. Never retried: the
 * runs of those partitions belong to their new owner. Clients see UNAVAILABLE.
 */
export class PartitionFencedError extends UnavailableError {
  override name = "PartitionFencedError";
  /** A stable code for callers (never match the message). */
  readonly fenceCode = "PARTITION_FENCED";
  constructor(
    /** The partitions lost, in order. */
    readonly partitions: readonly number[],
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Type guard for {@link PartitionFencedError}. */
export function isPartitionFencedError(e: unknown): e is PartitionFencedError {
  return e instanceof PartitionFencedError;
}

/** SQLSTATE that `nexusflow_fence` raises. */
export const FENCE_SQLSTATE = "NF001";

/**
 * The {@link PartitionFencedError} of a database error raised by `nexusflow_fence`, whose DETAIL
 * lists the partitions lost (comma-separated numbers); undefined for any other error.
 */
export function fencedByDatabase(e: unknown, checked: readonly number[]): PartitionFencedError | undefined {
  const err = e as { code?: unknown; detail?: unknown } | null;
  if (!(e instanceof Error) || err?.code !== FENCE_SQLSTATE) return undefined;
  const detail = typeof err.detail === "string" ? err.detail : "";
  const lost = detail
    .split(",")
    .map((x) => Number(x))
    .filter((x) => Number.isInteger(x) && x >= 0);
  return new PartitionFencedError(lost.length > 0 ? lost : [...checked], e.message, { cause: e });
}

/** What the batch writer needs to fence its commits: who it is and the partitions it holds. */
export interface WriteFence {
  /** This replica's id (the `owner` of the partitions it holds). */
  readonly replicaId: string;
  /** The installation's partition count. */
  readonly partitionCount: number;
  /** The epoch this replica holds `partition` at; undefined when it does not hold it. */
  epochOf(partition: number): number | undefined;
  /** Told when a commit was refused: the replica no longer holds these partitions. */
  fenced(error: PartitionFencedError): void;
}

/** The fence parameters of a statement writing `runIds`: partitions and epochs, aligned. */
export interface FenceClaim {
  partitions: number[];
  epochs: number[];
}

/**
 * The claim of a write of `runIds` under `fence`, or a {@link PartitionFencedError} when the
 * replica already knows it holds some of their partitions no longer.
 */
export function claimOf(fence: WriteFence, runIds: Iterable<string>): FenceClaim | PartitionFencedError {
  const seen = new Set<number>();
  for (const id of runIds) seen.add(partitionOf(id, fence.partitionCount));
  const partitions = [...seen].sort((a, b) => a - b);
  const epochs: number[] = [];
  const lost: number[] = [];
  for (const p of partitions) {
    const epoch = fence.epochOf(p);
    if (epoch === undefined) lost.push(p);
    else epochs.push(epoch);
  }
  if (lost.length > 0)
    return new PartitionFencedError(
      lost,
      `this replica does not hold partition${lost.length === 1 ? "" : "s"} ${lost.join(", ")}`,
    );
  return { partitions, epochs };
}
