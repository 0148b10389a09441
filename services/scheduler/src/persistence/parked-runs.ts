/**
 * Parked runs in PostgreSQL (tables `parked_runs` and `parked_event_waits`, see
 * Migration20261206010000ParkedRuns): runs that only wait, left out of the scheduler's memory
 * (core/parking.ts, engine/parking.ts). Their truth is their committed rows in `workflow_runs` and
 * `task_runs`; these tables only say which runs are parked, when each must be loaded back at the
 * latest (an indexed `wake_at`, read by a query rather than held as one timer per run), and which
 * event keys or patterns their waits for an event listen to.
 */
import type pg from "pg";
import type { ParkedEntry } from "../model/parked-run.js";
import {
  claimOf,
  fencedByDatabase,
  isPartitionFencedError,
  type FenceClaim,
  type OwnedPartition,
  type WriteFence,
} from "../cluster/partitioning.js";

/** The partitions this replica holds, fencing its writes (the partition leases, docs/replicas.md). */
export interface HeldFence extends WriteFence {
  held(): OwnedPartition[];
}

export type { ParkedEntry, ParkedEventWait } from "../model/parked-run.js";

/** What the engine needs of the parked runs' rows (engine/parking.ts). */
export interface ParkedRunStore {
  /** Stores runs as parked (their rows are committed), in one transaction. */
  park(entries: readonly ParkedEntry[]): Promise<void>;
  /** Deletes a run's parked rows; false when it was not parked. */
  unpark(runId: string): Promise<boolean>;
  /** Parked runs due to wake by `now`, earliest first, at most `limit`. */
  due(now: Date, limit: number): Promise<string[]>;
  /** The earliest wake-up time of a parked run; null when none has one. */
  nextWake(): Promise<Date | null>;
  /** Parked runs with a wait for an event whose key or pattern may match `key`. */
  eventCandidates(key: string): Promise<string[]>;
}

/** {@link ParkedRunStore} in PostgreSQL. */
export class PostgresParkedRuns implements ParkedRunStore {
  /**
   * `partitions`: the partitions this replica holds (docs/replicas.md): due runs, the next wake-up
   * and event candidates are looked for in those only, and parking and unparking a run are fenced
   * like group commits (refused with PartitionFencedError once its partition is another
   * replica's, in the statement that writes). @default every run, no fence
   */
  constructor(
    private readonly pool: pg.Pool,
    private readonly partitions?: HeldFence,
  ) {}

  /** The condition on `run_id` of the partitions held, its parameters numbered from `first`. */
  private scoped(first: number): { sql: string; params: unknown[] } {
    const held = this.partitions;
    if (held === undefined) return { sql: "", params: [] };
    return {
      sql: ` AND nexusflow_partition_of(run_id, $${first}) = ANY($${first + 1}::int[])`,
      params: [held.partitionCount, held.held().map((x) => x.partition)],
    };
  }

  /** The fence claim of writing `runIds` (undefined without partitions); throws when one is known lost. */
  private claim(runIds: readonly string[]): FenceClaim | undefined {
    if (this.partitions === undefined) return undefined;
    const claim = claimOf(this.partitions, runIds);
    if (isPartitionFencedError(claim)) throw claim;
    return claim;
  }

  /** A database error as the fence's refusal (the leases told), or as it is. */
  private refused(e: unknown, claim: FenceClaim | undefined): unknown {
    const fenced = claim === undefined ? undefined : fencedByDatabase(e, claim.partitions);
    if (fenced === undefined) return e;
    this.partitions?.fenced(fenced);
    return fenced;
  }

  async park(entries: readonly ParkedEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const waits = entries.flatMap((e) => e.eventWaits.map((w) => ({ runId: e.runId, ...w })));
    const claim = this.claim(entries.map((e) => e.runId));
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      if (claim !== undefined && this.partitions !== undefined)
        await client.query("SELECT nexusflow_fence($1::uuid, $2::int[], $3::bigint[])", [
          this.partitions.replicaId,
          claim.partitions,
          claim.epochs,
        ]);
      await client.query(
        `INSERT INTO parked_runs (run_id, wake_at)
         SELECT * FROM unnest($1::uuid[], $2::timestamptz[])
         ON CONFLICT (run_id) DO UPDATE SET wake_at = excluded.wake_at, parked_at = now()`,
        [entries.map((e) => e.runId), entries.map((e) => e.wakeAt)],
      );
      if (waits.length > 0)
        await client.query(
          `INSERT INTO parked_event_waits (task_run_id, run_id, key, pattern)
           SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[])
           ON CONFLICT (task_run_id) DO UPDATE SET key = excluded.key, pattern = excluded.pattern`,
          [
            waits.map((w) => w.taskRunId),
            waits.map((w) => w.runId),
            waits.map((w) => w.key),
            waits.map((w) => w.pattern),
          ],
        );
      await client.query("COMMIT");
    } catch (e) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw this.refused(e, claim);
    } finally {
      client.release();
    }
  }

  async unpark(runId: string): Promise<boolean> {
    const claim = this.claim([runId]);
    if (claim === undefined || this.partitions === undefined) {
      const { rowCount } = await this.pool.query("DELETE FROM parked_runs WHERE run_id = $1", [runId]);
      return (rowCount ?? 0) > 0;
    }
    // The fence first (its locks held until the statement's end), then the delete.
    const { rowCount } = await this.pool
      .query(
        `WITH fence AS (SELECT nexusflow_fence($2::uuid, $3::int[], $4::bigint[]) AS n)
         DELETE FROM parked_runs WHERE run_id = $1 AND (SELECT n FROM fence) IS NOT NULL`,
        [runId, this.partitions.replicaId, claim.partitions, claim.epochs],
      )
      .catch((e: unknown) => {
        throw this.refused(e, claim);
      });
    return (rowCount ?? 0) > 0;
  }

  async due(now: Date, limit: number): Promise<string[]> {
    const scope = this.scoped(3);
    const { rows } = await this.pool.query<{ run_id: string }>(
      `SELECT run_id FROM parked_runs WHERE wake_at IS NOT NULL AND wake_at <= $1${scope.sql} ORDER BY wake_at LIMIT $2`,
      [now, limit, ...scope.params],
    );
    return rows.map((r) => r.run_id);
  }

  async nextWake(): Promise<Date | null> {
    const scope = this.scoped(1);
    const { rows } = await this.pool.query<{ wake_at: Date | null }>(
      `SELECT min(wake_at) AS wake_at FROM parked_runs WHERE wake_at IS NOT NULL${scope.sql}`,
      scope.params,
    );
    return rows[0]?.wake_at ?? null;
  }

  async eventCandidates(key: string): Promise<string[]> {
    const scope = this.scoped(2);
    const { rows } = await this.pool.query<{ run_id: string }>(
      `SELECT run_id FROM parked_event_waits WHERE key = $1${scope.sql}
       UNION SELECT run_id FROM parked_event_waits WHERE pattern IS NOT NULL AND $1 ~ pattern${scope.sql}`,
      [key, ...scope.params],
    );
    return rows.map((r) => r.run_id);
  }
}
