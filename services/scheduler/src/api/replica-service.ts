/**
 * ReplicaService over gRPC: the installation's scheduler replicas and the partitions they own,
 * read from the database (cluster/cluster-view.ts), so any replica answers for all.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { unary } from "@nexusflow/common";
import {
  type ListReplicasResponse,
  ListReplicasResponseSchema,
  type PartitionLease,
  PartitionLeaseSchema,
} from "@nexusflow/gen";
import type { ClusterView, PartitionView } from "../cluster/cluster-view.js";

/** What ReplicaService reads. */
export interface ReplicaSource {
  /** The view of the tables now. */
  view(): Promise<ClusterView>;
  /** The answering replica's id. */
  readonly replicaId: string;
  /**
   * Whether the scheduler is not in cluster mode (the installation's only one): executors need not
   * ask again on their periodic refresh (ListReplicasResponse.sole).
   */
  readonly sole?: boolean | undefined;
}

function lease(p: PartitionView): PartitionLease {
  return create(PartitionLeaseSchema, {
    partition: p.partition,
    epoch: BigInt(p.epoch),
    leaseExpireTime: timestampFromDate(p.leaseExpiresAt),
    owner: p.owner ?? "",
  });
}

/** A view as the ListReplicas response. */
export function listReplicasResponse(
  view: ClusterView,
  answeredBy: string,
  sole = false,
): ListReplicasResponse {
  return create(ListReplicasResponseSchema, {
    partitionCount: view.partitionCount,
    replicas: view.replicas.map((r) => ({
      replicaId: r.id,
      address: r.address,
      host: r.host,
      pid: r.pid,
      startTime: timestampFromDate(r.startedAt),
      heartbeatTime: timestampFromDate(r.heartbeatAt),
      live: r.live,
      partitions: r.partitions.map(lease),
    })),
    unowned: view.unowned.map(lease),
    readTime: timestampFromDate(view.readAt),
    answeredBy,
    sole,
  });
}

/**
 * `read` shared by the calls that come while one is in flight, and its answer reused for
 * `maxAgeMs`: every executor asks every few seconds (its replica map), so N executors cost at most
 * one read of the tables per `maxAgeMs` per replica, not N/3 a second.
 */
export function sharedView(read: () => Promise<ClusterView>, maxAgeMs: number): () => Promise<ClusterView> {
  let last: { at: number; view: Promise<ClusterView> } | undefined;
  return () => {
    const now = performance.now();
    if (last !== undefined && now - last.at < maxAgeMs) return last.view;
    const view = read();
    const entry = { at: now, view };
    last = entry;
    // A failed read is not reused.
    view.catch(() => {
      if (last === entry) last = undefined;
    });
    return view;
  };
}

/** The ReplicaService implementation for grpc-js. */
export function replicaService(source: ReplicaSource): grpc.UntypedServiceImplementation {
  return {
    listReplicas: unary(async () =>
      listReplicasResponse(await source.view(), source.replicaId, source.sole === true),
    ),
  };
}
