/**
 * The fires of schedules in PostgreSQL (table `schedule_fires`): the fires that start (or started)
 * runs, STARTING until their run is known, then STARTED with it (or FAILED with why), and the
 * idempotency keys that name their runs.
 */
import { ApiError, Code } from "@nexusflow/common";
import type pg from "pg";
import type { ScheduleSpec } from "../dag/schedule-spec.js";
import { runsOfKeys } from "../persistence/idempotency-keys.js";
import { TERMINAL_RUN_STATUSES } from "../model/run-state.js";

/** How a fire was started. */
export type FireOrigin = "SCHEDULED" | "TRIGGERED" | "BACKFILL";

/** A fire that starts (or started) a run. */
export interface FireRow {
  scheduleUid: string;
  /** The fire time as ISO text, or `trigger:<key>`. */
  fireKey: string;
  fireAt: Date;
  origin: FireOrigin;
  status: "STARTING" | "STARTED" | "FAILED";
  runId: string | null;
  error: string | null;
}

/** A STARTING fire with what starting its run needs. */
export interface PendingFire extends FireRow {
  scheduleId: string;
  spec: ScheduleSpec;
}

interface FireDbRow {
  schedule_uid: string;
  fire_key: string;
  fire_at: Date;
  origin: FireOrigin;
  status: FireRow["status"];
  run_id: string | null;
  error: string | null;
}

function toFire(r: FireDbRow): FireRow {
  return {
    scheduleUid: r.schedule_uid,
    fireKey: r.fire_key,
    fireAt: r.fire_at,
    origin: r.origin,
    status: r.status,
    runId: r.run_id,
    error: r.error,
  };
}

/** The fire key of a fire time (SCHEDULED and BACKFILL share it: a time starts one run). */
export function timeFireKey(at: Date): string {
  return at.toISOString();
}

/** Fires of schedules in PostgreSQL. */
export class FireStore {
  constructor(private readonly pool: pg.Pool) {}

  /** The most recent fires of a schedule that started (or are starting) runs, newest first. */
  async recentFires(uid: string, limit: number): Promise<FireRow[]> {
    const { rows } = await this.pool.query<FireDbRow>(
      `SELECT * FROM schedule_fires WHERE schedule_uid = $1 ORDER BY created_at DESC, fire_at DESC LIMIT $2`,
      [uid, limit],
    );
    return rows.map(toFire);
  }

  /** Run ids of each schedule's fires not yet known to have ended. */
  async unendedRuns(uids: readonly string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    if (uids.length === 0) return out;
    const { rows } = await this.pool.query<{ schedule_uid: string; run_id: string }>(
      `SELECT schedule_uid, run_id FROM schedule_fires
       WHERE schedule_uid = ANY($1::uuid[]) AND run_id IS NOT NULL AND NOT run_ended`,
      [uids],
    );
    for (const r of rows) out.set(r.schedule_uid, [...(out.get(r.schedule_uid) ?? []), r.run_id]);
    return out;
  }

  /**
   * Of `runIds`, those whose committed row is not in a final state (runs held by another replica:
   * their state in memory is that replica's; what it committed is what this one can know).
   */
  async activeRuns(runIds: readonly string[]): Promise<Set<string>> {
    if (runIds.length === 0) return new Set();
    const { rows } = await this.pool.query<{ id: string }>(
      `SELECT id FROM workflow_runs WHERE id = ANY($1::uuid[]) AND NOT (status = ANY($2::text[]))`,
      [runIds, [...TERMINAL_RUN_STATUSES]],
    );
    return new Set(rows.map((r) => r.id));
  }

  /** Marks fires whose runs have ended, so that they are not looked at again. */
  async markEnded(runIds: readonly string[]): Promise<void> {
    if (runIds.length === 0) return;
    await this.pool.query(`UPDATE schedule_fires SET run_ended = true WHERE run_id = ANY($1::uuid[])`, [
      runIds,
    ]);
  }

  /** Writes fires (TRIGGERED or BACKFILL) as STARTING unless their key exists; returns them all. */
  async insertFires(
    uid: string,
    fires: readonly { fireKey: string; fireAt: Date; origin: FireOrigin }[],
    now: Date,
  ): Promise<FireRow[]> {
    if (fires.length === 0) return [];
    await this.pool.query(
      `INSERT INTO schedule_fires (schedule_uid, fire_key, fire_at, origin, status, created_at)
       SELECT $1, key, at, origin, 'STARTING', $5 FROM unnest($2::text[], $3::timestamptz[], $4::text[])
         AS x(key, at, origin)
       ON CONFLICT (schedule_uid, fire_key) DO NOTHING`,
      [uid, fires.map((f) => f.fireKey), fires.map((f) => f.fireAt), fires.map((f) => f.origin), now],
    );
    const { rows } = await this.pool.query<FireDbRow>(
      `SELECT * FROM schedule_fires WHERE schedule_uid = $1 AND fire_key = ANY($2::text[])`,
      [uid, fires.map((f) => f.fireKey)],
    );
    const byKey = new Map(rows.map((r) => [r.fire_key, toFire(r)]));
    return fires.map((f) => {
      const row = byKey.get(f.fireKey);
      // The schedule was deleted meanwhile (its fires went with it).
      if (row === undefined) throw new ApiError(Code.NOT_FOUND, "the schedule was deleted");
      return row;
    });
  }

  /** STARTING fires of every schedule (written at or `before`, when given), oldest first, at most `limit`. */
  async startingFires(limit: number, before?: Date): Promise<PendingFire[]> {
    const { rows } = await this.pool.query<FireDbRow & { schedule_id: string; spec: ScheduleSpec }>(
      `SELECT f.*, s.schedule_id, s.spec FROM schedule_fires f JOIN schedules s ON s.uid = f.schedule_uid
       WHERE f.status = 'STARTING' AND ($2::timestamptz IS NULL OR f.created_at <= $2)
       ORDER BY f.fire_at LIMIT $1`,
      [limit, before ?? null],
    );
    return rows.map((r) => ({ ...toFire(r), scheduleId: r.schedule_id, spec: r.spec }));
  }

  /** Records the outcome of fires: STARTED with their run, or FAILED with why. */
  async settle(
    outcomes: readonly { uid: string; fireKey: string; runId: string | null; error: string | null }[],
  ): Promise<void> {
    if (outcomes.length === 0) return;
    // Counted once: only a row still STARTING changes.
    await this.pool.query(
      `WITH done AS (
         UPDATE schedule_fires f SET status = CASE WHEN x.run_id IS NULL THEN 'FAILED' ELSE 'STARTED' END,
           run_id = x.run_id, error = x.error
         FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[]) AS x(uid, key, run_id, error)
         WHERE f.schedule_uid = x.uid AND f.fire_key = x.key AND f.status = 'STARTING'
         RETURNING f.schedule_uid, f.status)
       UPDATE schedules s SET started_count = s.started_count + c.n
       FROM (SELECT schedule_uid, count(*) AS n FROM done WHERE status = 'STARTED' GROUP BY schedule_uid) c
       WHERE s.uid = c.schedule_uid`,
      [
        outcomes.map((o) => o.uid),
        outcomes.map((o) => o.fireKey),
        outcomes.map((o) => o.runId),
        outcomes.map((o) => o.error),
      ],
    );
  }

  /** The runs that idempotency keys name, whatever their age (persistence/idempotency-keys.ts). */
  runsOfKeys(keys: readonly { workflowName: string; key: string }[]): Promise<Map<string, string>> {
    return runsOfKeys(this.pool, keys);
  }
}
