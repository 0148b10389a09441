/**
 * Which scheduler replica owns which partition of runs, as ReplicaService.ListReplicas tells it,
 * and the call that asks. No session logic here: the executor opens a session to each live replica
 * (one holding no partition yet too: when partitions move to it, after a rebalance or a crash of
 * their owner, its session is there to lease them at once) and routes each lease's reports to the
 * owner of its run's partition.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type ListReplicasResponse,
  ListReplicasRequestSchema,
  ListReplicasResponseSchema,
  ReplicaService,
} from "@nexusflow/gen";

/** One live replica. */
export interface ReplicaEntry {
  readonly id: string;
  /** Where it listens (replicas.address: its advertise address). */
  readonly address: string;
  /** How many partitions it holds, 0 included (its share of the executor's slots follows it). */
  readonly partitions: number;
}

/** The live replicas, and the owner of each partition. */
export interface ReplicaMap {
  readonly partitionCount: number;
  /** By replica id. */
  readonly replicas: ReadonlyMap<string, ReplicaEntry>;
  /** Replica id owning each partition (by index); undefined when no live replica holds it. */
  readonly owners: readonly (string | undefined)[];
  /**
   * When the call that answered it went out (monotonic ms, performance.now()): it tells who
   * owned what at some moment after that, so a lease that came later is newer than the map.
   */
  readonly askedAt: number;
}

/**
 * A run's partition: the last 8 hex digits of its id modulo the partition count, exactly as the
 * scheduler computes it (services/scheduler/src/cluster/partitioning.ts `partitionOf`, SQL
 * `nexusflow_partition_of`); undefined for an id whose last 8 characters are not hex.
 */
export function partitionOfRun(runId: string, partitionCount: number): number | undefined {
  const tail = runId.slice(-8);
  if (partitionCount <= 0 || !/^[0-9a-fA-F]{8}$/.test(tail)) return undefined;
  return Number.parseInt(tail, 16) % partitionCount;
}

/** The map of a ListReplicas answer: the live replicas with an address. */
export function replicaMapOf(response: ListReplicasResponse, askedAt = 0): ReplicaMap {
  const replicas = new Map<string, ReplicaEntry>();
  const owners: (string | undefined)[] = Array.from({ length: Math.max(0, response.partitionCount) });
  for (const r of response.replicas) {
    if (!r.live || r.address === "") continue;
    replicas.set(r.replicaId, { id: r.replicaId, address: r.address, partitions: r.partitions.length });
    for (const p of r.partitions)
      if (p.partition >= 0 && p.partition < owners.length) owners[p.partition] = r.replicaId;
  }
  return { partitionCount: response.partitionCount, replicas, owners, askedAt };
}

/** The replica owning `runId`'s partition by `map`, if known. */
export function ownerOfRun(map: ReplicaMap, runId: string): string | undefined {
  const p = partitionOfRun(runId, map.partitionCount);
  return p === undefined ? undefined : map.owners[p];
}

const LIST = ReplicaService.method.listReplicas;
const LIST_PATH = `/${ReplicaService.typeName}/${LIST.name}`;

/** Calls ReplicaService.ListReplicas on `client`; rejects with the grpc-js ServiceError. */
export function listReplicas(
  client: grpc.Client,
  metadata: grpc.Metadata,
  timeoutMs: number,
): Promise<ListReplicasResponse> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      LIST_PATH,
      (request: ReturnType<typeof create<typeof ListReplicasRequestSchema>>) => {
        const bytes = toBinary(ListReplicasRequestSchema, request);
        return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      },
      (bytes: Buffer) => fromBinary(ListReplicasResponseSchema, bytes),
      create(ListReplicasRequestSchema),
      metadata,
      { deadline: Date.now() + timeoutMs },
      (error, response) => {
        if (error !== null) reject(error);
        else if (response === undefined) reject(new Error("ListReplicas: no response"));
        else resolve(response);
      },
    );
  });
}

/** Whether a ListReplicas failure means the scheduler cannot tell (single-session mode for good). */
export function noDiscovery(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === grpc.status.UNIMPLEMENTED || code === grpc.status.PERMISSION_DENIED;
}
