/**
 * The installation's replicas and partitions as the tables hold them (one read, one snapshot):
 * what ReplicaService.ListReplicas and `nexusflow cluster` show.
 */
import type pg from "pg";

/** One partition's row. */
export interface PartitionView {
  partition: number;
  owner: string | null;
  epoch: number;
  leaseExpiresAt: Date;
  /** Whether the lease holds now (database time) and names an owner. */
  held: boolean;
}

/** One replica's row and the partitions it holds. */
export interface ReplicaView {
  id: string;
  address: string;
  host: string;
  pid: number;
  startedAt: Date;
  heartbeatAt: Date;
  live: boolean;
  partitions: PartitionView[];
}

/** The whole view. */
export interface ClusterView {
  partitionCount: number;
  replicas: ReplicaView[];
  /** Partitions held by no replica now (handed over, expired, or owned by an unknown replica). */
  unowned: PartitionView[];
  readAt: Date;
}

interface Row {
  kind: "replica" | "partition" | "settings";
  id: string | null;
  address: string | null;
  host: string | null;
  pid: number | null;
  started_at: Date | null;
  heartbeat_at: Date | null;
  live: boolean | null;
  partition: number | null;
  epoch: number | null;
  lease_expires_at: Date | null;
  read_at: Date;
}

// One statement: every part reads the same snapshot. A replica is live while its heartbeat is
// younger than a lease ($1, ms), as PartitionLeases counts live replicas.
const VIEW_SQL = `SELECT 'replica' AS kind, r.id::text AS id, r.address, r.host, r.pid, r.started_at, r.heartbeat_at,
  r.heartbeat_at > now() - $1 * interval '1 millisecond' AS live,
  NULL::int AS partition, NULL::bigint AS epoch, NULL::timestamptz AS lease_expires_at, now() AS read_at
FROM replicas r
UNION ALL
SELECT 'partition', p.owner::text, NULL, NULL, NULL, NULL, NULL, NULL, p.partition, p.epoch, p.lease_expires_at, now()
FROM partitions p
UNION ALL
SELECT 'settings', NULL, NULL, NULL, s.partition_count, NULL, NULL, NULL, NULL, NULL, NULL, now()
FROM cluster_settings s`;

/** Reads the view (see the module comment); `leaseMs`: the lease length replicas use. */
export async function readClusterView(pool: pg.Pool, leaseMs: number): Promise<ClusterView> {
  const { rows } = await pool.query<Row>(VIEW_SQL, [leaseMs]);
  const replicas = new Map<string, ReplicaView>();
  const partitions: PartitionView[] = [];
  let partitionCount = 0;
  let readAt = new Date();
  for (const r of rows) {
    readAt = r.read_at;
    if (r.kind === "settings") partitionCount = r.pid ?? 0;
    else if (r.kind === "replica" && r.id !== null)
      replicas.set(r.id, {
        id: r.id,
        address: r.address ?? "",
        host: r.host ?? "",
        pid: r.pid ?? 0,
        startedAt: r.started_at ?? readAt,
        heartbeatAt: r.heartbeat_at ?? readAt,
        live: r.live === true,
        partitions: [],
      });
    else if (r.kind === "partition" && r.partition !== null && r.lease_expires_at !== null)
      partitions.push({
        partition: r.partition,
        owner: r.id,
        epoch: r.epoch ?? 0,
        leaseExpiresAt: r.lease_expires_at,
        held: false,
      });
  }
  const unowned: PartitionView[] = [];
  for (const p of partitions.sort((a, b) => a.partition - b.partition)) {
    p.held = p.owner !== null && p.leaseExpiresAt > readAt;
    const owner = p.owner === null ? undefined : replicas.get(p.owner);
    if (p.held && owner !== undefined) owner.partitions.push(p);
    else unowned.push(p);
  }
  const ordered = [...replicas.values()].sort(
    (a, b) => Number(b.live) - Number(a.live) || a.startedAt.getTime() - b.startedAt.getTime(),
  );
  return { partitionCount, replicas: ordered, unowned, readAt };
}
