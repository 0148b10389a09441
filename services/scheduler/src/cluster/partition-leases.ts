/**
 * Partition leases (issue #22, docs/replicas.md): which partitions this replica owns, held in the
 * `partitions` table and renewed on a heartbeat in database time, one statement per heartbeat. The
 * statement renews what this replica holds, records its heartbeat in `replicas`, and takes
 * partitions that nobody holds (handed over, or whose lease expired) up to its share, raising
 * their epoch by one: the epoch fences every later write of the previous owner (partitioning.ts).
 * A takeover holds the partition's exclusive advisory lock in its transaction, so it waits for no
 * commit of the previous owner and never lands while one is in flight (see `nexusflow_fence`).
 *
 * Shares: with N live replicas (a heartbeat within the lease) each takes at most ceil(P / N). A
 * replica that holds more than that for `stablePeriodMs` while N has not changed hands its excess
 * over (highest partitions first; `beforeRelease` runs first) and waits another stable period
 * before it releases again: moves are bounded and a replica joining or leaving moves each
 * partition at most once. A replica that stops hands everything over at once (owner null, lease
 * expired now). `sole` (the scheduler holds the one-per-database lock: no other replica can be
 * alive) takes every partition at start, held or not, so that a restart after a crash waits for no
 * lease to expire; once started it takes only partitions nobody holds, like any replica.
 */
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import pg from "pg";
import type { Logger } from "@nexusflow/common";
import {
  DEFAULT_PARTITION_COUNT,
  PARTITION_LOCK_CLASS,
  PartitionCountError,
  checkPartitionCount,
  type OwnedPartition,
  type PartitionFencedError,
  type WriteFence,
} from "./partitioning.js";

/** Options of {@link PartitionLeases}. */
export interface PartitionLeasesOptions {
  /** PostgreSQL URL (the leases use a connection of their own). */
  url: string;
  log: Logger;
  /** This replica's id (the partitions' `owner`). @default a new random UUID */
  replicaId?: string;
  /** gRPC address others reach this replica at (shown by `nexusflow cluster`). @default "" */
  address?: string;
  /**
   * The installation's partition count (PARTITIONS): written by the first replica of a new
   * installation; a replica configured with another count than the stored one refuses to start.
   * @default the stored count, or 16 for a new installation
   */
  partitions?: number | undefined;
  /** How long a lease holds after a renewal, in database time. @default 5000 */
  leaseMs?: number;
  /** Time between two heartbeats (renewals). @default leaseMs / 5 */
  renewIntervalMs?: number;
  /**
   * How long the number of live replicas must stay the same before a replica over its share
   * hands partitions over. @default 3 * leaseMs
   */
  stablePeriodMs?: number;
  /**
   * This replica is the only one alive (it holds the scheduler lock): it takes every partition at
   * start, held or not, and removes the other replicas' rows (processes that died: ListReplicas
   * must not name them as live to executors); it never hands any over to rebalance. Once started
   * it takes, as any replica, only partitions nobody holds. @default false
   */
  sole?: boolean;
  /** Told when partitions are lost (taken by another replica while this one did not renew, or refused by the fence). */
  onLost?: (partitions: readonly number[]) => void;
  /**
   * Told when a heartbeat took partitions, once started (those taken by `start` are held when it
   * resolves): e.g. to load their runs. @default none
   */
  onTaken?: (partitions: readonly number[]) => void;
  /** Runs before partitions are handed over by rebalancing (e.g. to commit and unload their runs). @default none */
  beforeRelease?: (partitions: readonly number[]) => Promise<void>;
}

/** Another party told of the partitions taken, lost or about to be released (see {@link PartitionLeases.listen}). */
export interface PartitionListener {
  onLost?: (partitions: readonly number[]) => void;
  onTaken?: (partitions: readonly number[]) => void;
  beforeRelease?: (partitions: readonly number[]) => Promise<void>;
}

/** The component's state: a union whose members carry their own data. */
export type PartitionLeasesState =
  | { kind: "IDLE" }
  | { kind: "STARTING" }
  | { kind: "RUNNING"; owned: ReadonlyMap<number, number> }
  | { kind: "STOPPING" }
  | { kind: "STOPPED" };

/** Raised by {@link PartitionLeases.start} when the configured count differs from the installation's. */
export class PartitionCountMismatchError extends PartitionCountError {
  override name = "PartitionCountMismatchError";
}

/** Class of the advisory lock each replica holds while it lives ("NFRL"; key: hashtext(replica id)). */
export const LIVENESS_LOCK_CLASS = 0x4e46524c;

interface TickRow {
  kind: "renewed" | "taken" | "live";
  partition: number;
  epoch: number;
}

const TICK_SQL = `WITH me AS (
  INSERT INTO replicas (id, address, host, pid) VALUES ($1, $2, $3, $4)
  ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), address = excluded.address
  RETURNING id),
renewed AS (
  UPDATE partitions p SET lease_expires_at = now() + $5 * interval '1 millisecond'
  FROM unnest($6::int[], $7::bigint[]) AS x(part, epoch)
  WHERE p.partition = x.part AND p.owner = $1 AND p.epoch = x.epoch
  RETURNING p.partition, p.epoch),
dead AS (SELECT id FROM replicas
  WHERE $10 AND id <> $1 AND heartbeat_at > now() - 100 * $5 * interval '1 millisecond'
    AND heartbeat_at < now() - $11 * interval '1 millisecond'
    AND pg_try_advisory_xact_lock_shared(${LIVENESS_LOCK_CLASS}, hashtext(id::text))),
live AS (SELECT count(*)::int AS n FROM replicas
  WHERE id <> $1 AND heartbeat_at > now() - $5 * interval '1 millisecond' AND id NOT IN (SELECT id FROM dead)),
want AS (SELECT greatest(0, CASE WHEN $8 THEN s.partition_count
    ELSE ceil(s.partition_count::numeric / ((SELECT n FROM live) + 1))::int END - (SELECT count(*) FROM renewed)) AS k
  FROM cluster_settings s),
free AS (SELECT q.partition FROM partitions q
  WHERE ($9 OR q.owner IS NULL OR q.lease_expires_at < now() OR q.owner IN (SELECT id FROM dead))
    AND q.owner IS DISTINCT FROM $1
    AND NOT (q.partition = ANY($6::int[]))
  ORDER BY q.partition),
taken AS (
  UPDATE partitions p SET owner = $1, epoch = p.epoch + 1, lease_expires_at = now() + $5 * interval '1 millisecond',
    changed_at = now()
  FROM (SELECT partition FROM free WHERE pg_try_advisory_xact_lock(${PARTITION_LOCK_CLASS}, partition)
    LIMIT (SELECT k FROM want)) f
  WHERE p.partition = f.partition AND p.owner IS DISTINCT FROM $1
    AND ($9 OR p.owner IS NULL OR p.lease_expires_at < now() OR p.owner IN (SELECT id FROM dead))
  RETURNING p.partition, p.epoch),
pruned AS (DELETE FROM replicas WHERE id <> $1
  AND ($9 OR heartbeat_at < now() - 100 * $5 * interval '1 millisecond'))
SELECT 'renewed' AS kind, partition, epoch FROM renewed
UNION ALL SELECT 'taken', partition, epoch FROM taken
UNION ALL SELECT 'live', n, 0 FROM live`;

const RELEASE_SQL = `UPDATE partitions p SET owner = NULL, lease_expires_at = now(), changed_at = now()
FROM unnest($2::int[], $3::bigint[]) AS x(part, epoch)
WHERE p.partition = x.part AND p.owner = $1 AND p.epoch = x.epoch`;

const STOP_SQL = `WITH released AS (
  UPDATE partitions SET owner = NULL, lease_expires_at = now(), changed_at = now() WHERE owner = $1
  RETURNING partition),
gone AS (DELETE FROM replicas WHERE id = $1)
SELECT count(*)::int AS n FROM released`;

/** Partition leases of one replica (see the module comment); also the batch writer's fence. */
export class PartitionLeases implements WriteFence {
  /** This replica's id. */
  readonly replicaId: string;
  private stateValue: PartitionLeasesState = { kind: "IDLE" };
  private readonly owned = new Map<number, number>();
  /** Held partitions being handed over (rebalancing): no new run goes there. */
  private readonly releasing = new Set<number>();
  private count = 0;
  private address: string;
  /** How long a lease holds after a renewal. */
  readonly leaseMs: number;
  private readonly renewIntervalMs: number;
  private readonly stablePeriodMs: number;
  private readonly pool: pg.Pool;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> = Promise.resolve();
  /** A hand-over under way (rebalance), beside the heartbeats. */
  private rebalancing: Promise<void> | undefined;
  /** A heartbeat is queued or running. */
  private beating = false;
  /** Live replicas (this one included) at the last heartbeat, and since when that number holds. */
  private live = { n: 0, since: 0 };
  private lastRelease = 0;
  /**
   * When (performance.now()) the last heartbeat that succeeded was sent: every partition held was
   * renewed or taken by it, so none can be another replica's before this plus the lease.
   */
  private confirmedAt = -Infinity;
  /** Heartbeats that failed in a row (the database unreachable), for logging once. */
  private failures = 0;
  /**
   * The connection that holds this replica's liveness lock for as long as the process lives, and
   * since when (performance.now()); undefined while it is being (re)made.
   */
  private liveness: { client: pg.Client; since: number } | undefined;
  private livenessConnecting: Promise<void> | undefined;
  /** Told after the options' callbacks (e.g. the coordinator: cluster/coordinator.ts). */
  private readonly listeners: PartitionListener[] = [];

  constructor(private readonly options: PartitionLeasesOptions) {
    if (options.partitions !== undefined) checkPartitionCount(options.partitions, "PARTITIONS");
    this.replicaId = options.replicaId ?? randomUUID();
    this.address = options.address ?? "";
    this.leaseMs = options.leaseMs ?? 5000;
    if (!Number.isFinite(this.leaseMs) || this.leaseMs < 100)
      throw new RangeError(`leaseMs must be at least 100, got ${this.leaseMs}`);
    this.renewIntervalMs = options.renewIntervalMs ?? Math.max(20, Math.floor(this.leaseMs / 5));
    this.stablePeriodMs = options.stablePeriodMs ?? 3 * this.leaseMs;
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: 1,
      connectionTimeoutMillis: 3000,
      application_name: "nexusflow-partitions",
      // A heartbeat that hangs (a network partition without a reset) ends within a lease.
      statement_timeout: this.leaseMs,
      query_timeout: this.leaseMs,
    });
    // An idle connection lost (database restart) is re-made on the next heartbeat; one lost under a
    // heartbeat fails that heartbeat (pool.query listens to its client's 'error' meanwhile).
    this.pool.on("error", () => undefined);
  }

  /** The current state. */
  get state(): PartitionLeasesState {
    return this.stateValue;
  }

  /** The installation's partition count (known once started). */
  get partitionCount(): number {
    return this.count;
  }

  /** The partitions held and their epochs, in order. */
  held(): OwnedPartition[] {
    return [...this.owned].sort(([a], [b]) => a - b).map(([partition, epoch]) => ({ partition, epoch }));
  }

  /**
   * Whether this replica knows it still holds `partition`: it does, and its last successful
   * heartbeat was sent less than a lease ago. A replica that was paused (SIGSTOP, a long GC) or
   * cut off from the database believes it holds partitions that another may have taken at their
   * expiry; until a heartbeat says which are still its own, it must not judge an executor's leases
   * of their runs (revoke them, reject their reports as stale): the new owner may have granted or
   * adopted those very leases (api/executor-session.ts, PartitionRuns.judged).
   */
  sure(partition: number): boolean {
    return this.owned.has(partition) && performance.now() - this.confirmedAt < this.leaseMs;
  }

  /** Whether `partition` is being handed over (rebalancing): held still, but no new run goes there. */
  handingOver(partition: number): boolean {
    return this.releasing.has(partition);
  }

  /** The epoch this replica holds `partition` at (WriteFence). */
  epochOf(partition: number): number | undefined {
    return this.owned.get(partition);
  }

  /** A commit was refused by the fence (WriteFence): those partitions are lost. */
  fenced(error: PartitionFencedError): void {
    this.lose(error.partitions.filter((p) => this.owned.has(p)));
  }

  /** Adds a listener told after the options' onTaken, onLost and beforeRelease. */
  listen(listener: PartitionListener): void {
    this.listeners.push(listener);
  }

  /** Sets the address shown for this replica, written by a heartbeat now. */
  setAddress(address: string): void {
    this.address = address;
    // renew() never rejects.
    void this.renew();
  }

  /**
   * Sets up the installation's partitions (the first replica writes the count), registers this
   * replica and takes its share; with `sole`, waits until it holds every partition. Throws
   * {@link PartitionCountMismatchError} when PARTITIONS differs from the stored count.
   */
  async start(signal?: AbortSignal): Promise<void> {
    if (this.stateValue.kind !== "IDLE")
      throw new Error(`cannot start partition leases that are ${this.stateValue.kind}`);
    this.stateValue = { kind: "STARTING" };
    try {
      this.count = await this.setUp();
      await this.tick();
      // Sole: a partition whose lock a late commit of a dead predecessor still holds is taken on
      // the next try, once that commit ended.
      const since = performance.now();
      let warned = false;
      while (this.options.sole === true && this.owned.size < this.count) {
        signal?.throwIfAborted();
        if (!warned && performance.now() - since > this.leaseMs) {
          warned = true;
          const missing = Array.from({ length: this.count }, (_, p) => p).filter((p) => !this.owned.has(p));
          this.options.log.warn(
            { partitions: missing },
            "still waiting to take partitions: a transaction of a previous scheduler holds their lock",
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
        await this.tick();
      }
      signal?.throwIfAborted();
    } catch (e) {
      this.stateValue = { kind: "STOPPED" };
      await this.livenessConnecting;
      await this.liveness?.client.end().catch(() => undefined);
      this.liveness = undefined;
      await this.pool.end().catch(() => undefined);
      throw e;
    }
    this.stateValue = { kind: "RUNNING", owned: this.owned };
    // A heartbeat still running (the database slow or away) is not queued behind again.
    this.timer = setInterval(() => {
      if (!this.beating) void this.renew();
    }, this.renewIntervalMs);
    this.options.log.info(
      { replica_id: this.replicaId, partitions: this.count, held: this.owned.size },
      "partition leases started",
    );
  }

  private async setUp(): Promise<number> {
    const configured = this.options.partitions;
    await this.pool.query(
      "INSERT INTO cluster_settings (partition_count) VALUES ($1) ON CONFLICT (id) DO NOTHING",
      [configured ?? DEFAULT_PARTITION_COUNT],
    );
    const { rows } = await this.pool.query<{ partition_count: number }>(
      "SELECT partition_count FROM cluster_settings",
    );
    const stored = rows[0]?.partition_count;
    if (stored === undefined) throw new Error("cluster_settings has no row");
    if (configured !== undefined && configured !== stored)
      throw new PartitionCountMismatchError(
        `PARTITIONS is ${configured} but this installation was set up with ${stored} partitions; the count is fixed once (leave PARTITIONS unset or set it to ${stored})`,
      );
    await this.pool.query(
      "INSERT INTO partitions (partition) SELECT generate_series(0, $1::int - 1) ON CONFLICT (partition) DO NOTHING",
      [stored],
    );
    return checkPartitionCount(stored, "the stored partition count");
  }

  /**
   * One heartbeat now (also run on the interval): renews and takes; then starts handing the
   * excess over when the cluster has been stable (resolves without waiting for that hand-over).
   * Never rejects: a failure (database unreachable) is logged.
   */
  renew(): Promise<void> {
    this.beating = true;
    const next = this.ticking.then(async () => {
      if (this.stateValue.kind !== "RUNNING") return;
      try {
        await this.tick();
        if (this.failures > 0) this.options.log.info("partition leases renewed again");
        this.failures = 0;
      } catch (e) {
        if (this.failures++ === 0)
          this.options.log.warn({ error: (e as Error).message }, "cannot renew partition leases; retrying");
        return;
      }
      this.startRebalance();
    });
    this.ticking = next;
    void next.then(() => {
      if (this.ticking === next) this.beating = false;
    });
    return next;
  }

  private async tick(): Promise<void> {
    // At start the lock is held before the first heartbeat (others would take a replica without
    // it for dead); later a lost lock is taken again beside the heartbeats, never in front of
    // them: connecting, or waiting for a lock an old session still holds, can take up to a lease.
    if (this.options.sole !== true) {
      if (this.stateValue.kind === "STARTING") await this.holdLiveness();
      else void this.holdLiveness();
    }
    const believed = [...this.owned];
    // Before the statement: the leases it renews run from the database's now(), later than this.
    const sentAt = performance.now();
    const { rows } = await this.pool.query<TickRow>(TICK_SQL, [
      this.replicaId,
      this.address,
      hostname(),
      process.pid,
      this.leaseMs,
      believed.map(([p]) => p),
      believed.map(([, e]) => e),
      this.options.sole === true,
      this.options.sole === true && this.stateValue.kind === "STARTING",
      // Dead owners are told by their liveness lock only once this replica has held its own for a
      // few heartbeats: back from a database restart, the others re-take theirs meanwhile.
      this.liveness !== undefined && performance.now() - this.liveness.since >= 3 * this.renewIntervalMs,
      this.renewIntervalMs,
    ]);
    const renewed = new Set<number>();
    const taken: number[] = [];
    for (const row of rows) {
      if (row.kind === "live") {
        const n = row.partition + 1;
        if (n !== this.live.n) this.live = { n, since: performance.now() };
      } else if (row.kind === "renewed") renewed.add(row.partition);
      else {
        this.owned.set(row.partition, row.epoch);
        taken.push(row.partition);
      }
    }
    this.confirmedAt = sentAt;
    // Only what this heartbeat believed: a partition taken meanwhile (none: heartbeats are serial)
    // or by this very statement is not lost.
    this.lose(believed.filter(([p, e]) => !renewed.has(p) && this.owned.get(p) === e).map(([p]) => p));
    if (taken.length === 0) return;
    taken.sort((a, b) => a - b);
    this.options.log.info({ replica_id: this.replicaId, partitions: taken }, "took partitions");
    if (this.stateValue.kind === "RUNNING") {
      this.options.onTaken?.(taken);
      for (const l of this.listeners) l.onTaken?.(taken);
    }
  }

  /**
   * Takes this replica's liveness lock on a connection of its own, unless held (never rejects: a
   * replica without it is only taken over at its leases' expiry). A process that dies (SIGKILL, a
   * crash) loses the connection and so the lock at once: PostgreSQL sees the socket close. The
   * others then take its partitions at their next heartbeat instead of a lease later; one that is
   * only paused (SIGSTOP, a long GC) keeps its connection and loses its partitions at expiry.
   */
  private async holdLiveness(): Promise<void> {
    if (this.liveness !== undefined) return;
    this.livenessConnecting ??= (async () => {
      const client = new pg.Client({
        connectionString: this.options.url,
        application_name: "nexusflow-liveness",
        connectionTimeoutMillis: Math.min(3000, this.leaseMs),
        query_timeout: this.leaseMs,
      });
      const lost = (): void => {
        if (this.liveness?.client === client) this.liveness = undefined;
        client.end().catch(() => undefined);
      };
      client.on("error", lost);
      client.on("end", lost);
      try {
        await client.connect();
        // Its own key: a new id per process, so nobody else holds it.
        await client.query(`SELECT pg_advisory_lock(${LIVENESS_LOCK_CLASS}, hashtext($1))`, [this.replicaId]);
        if (this.stateValue.kind === "STOPPING" || this.stateValue.kind === "STOPPED") {
          await client.end();
          return;
        }
        this.liveness = { client, since: performance.now() };
      } catch (e) {
        lost();
        this.options.log.warn(
          { error: (e as Error).message },
          "cannot take the replica's liveness lock; retrying",
        );
      }
    })().finally(() => {
      this.livenessConnecting = undefined;
    });
    await this.livenessConnecting;
  }

  /**
   * Starts handing the excess over (rebalance) unless a hand-over is under way. Beside the
   * heartbeats, not in their chain: `beforeRelease` commits and unloads the partitions' runs, which
   * can wait on the database for long, and the partitions this replica keeps must be renewed
   * meanwhile. Never rejects: a failure is logged and tried again on a later heartbeat.
   */
  private startRebalance(): void {
    if (this.rebalancing !== undefined) return;
    this.rebalancing = this.rebalance()
      .catch((e: unknown) => {
        this.options.log.warn({ error: (e as Error).message }, "cannot hand partitions over; retrying");
      })
      .finally(() => {
        this.rebalancing = undefined;
      });
  }

  /** Hands the excess over when this replica holds more than its share of a stable cluster. */
  private async rebalance(): Promise<void> {
    if (this.stateValue.kind !== "RUNNING") return;
    if (this.options.sole === true || this.live.n === 0) return;
    const share = Math.ceil(this.count / this.live.n);
    const excess = this.owned.size - share;
    const now = performance.now();
    if (
      excess <= 0 ||
      now - this.live.since < this.stablePeriodMs ||
      now - this.lastRelease < this.stablePeriodMs
    )
      return;
    const give = this.held().slice(-excess);
    const partitions = give.map((x) => x.partition);
    // From now on no new run is created in them (engine/partition-load.ts newId).
    for (const p of partitions) this.releasing.add(p);
    let handed: OwnedPartition[];
    try {
      await this.options.beforeRelease?.(partitions);
      for (const l of this.listeners) await l.beforeRelease?.(partitions);
      // Heartbeats went on meanwhile: a partition lost and taken back since (a new epoch, its
      // runs loaded again) is held anew, not handed over.
      handed = give.filter((x) => this.owned.get(x.partition) === x.epoch);
      // Not held from now on: a commit of their runs fails here rather than after the hand-over.
      for (const x of handed) this.owned.delete(x.partition);
    } finally {
      for (const p of partitions) this.releasing.delete(p);
    }
    this.lastRelease = now;
    if (handed.length === 0) return;
    await this.pool.query(RELEASE_SQL, [
      this.replicaId,
      handed.map((x) => x.partition),
      handed.map((x) => x.epoch),
    ]);
    this.options.log.info(
      { replica_id: this.replicaId, partitions: handed.map((x) => x.partition), share, live: this.live.n },
      "handed partitions over to rebalance",
    );
  }

  private lose(partitions: number[]): void {
    if (partitions.length === 0) return;
    for (const p of partitions) this.owned.delete(p);
    this.options.log.error(
      { replica_id: this.replicaId, partitions },
      "lost partitions: another replica holds them now",
    );
    this.options.onLost?.(partitions);
    for (const l of this.listeners) l.onLost?.(partitions);
  }

  /**
   * Stops the heartbeat and hands every partition over at once (owner null, lease expired now),
   * so that another replica takes them on its next heartbeat; removes this replica's row.
   */
  async stop(): Promise<void> {
    const kind = this.stateValue.kind;
    if (kind === "STOPPED" || kind === "STOPPING") return;
    this.stateValue = { kind: "STOPPING" };
    clearInterval(this.timer);
    await this.ticking;
    await this.rebalancing;
    if (kind !== "IDLE") {
      try {
        await this.pool.query(STOP_SQL, [this.replicaId]);
      } catch (e) {
        // The leases expire by themselves.
        this.options.log.warn({ error: (e as Error).message }, "could not hand partitions over on stopping");
      }
    }
    this.owned.clear();
    await this.livenessConnecting;
    await this.liveness?.client.end().catch(() => undefined);
    this.liveness = undefined;
    await this.pool.end().catch(() => undefined);
    this.stateValue = { kind: "STOPPED" };
  }
}
