/**
 * Schedules in PostgreSQL (table `schedules`, migration Schedules): plain SQL over the scheduler's
 * pool. The fire loop's pass is one transaction ({@link ScheduleStore.applyPass}) that moves
 * cursors and writes the fires that start runs as STARTING rows of `schedule_fires`; fire-store.ts
 * has the rest of that table.
 */
import { ApiError } from "@nexusflow/common";
import type pg from "pg";
import { type Listing, decodeToken, encodeToken, pageSizeOf } from "../persistence/page-token.js";
import { timeFireKey } from "./fire-store.js";
import { isScheduleRef, type ScheduleSpec } from "../dag/schedule-spec.js";
import { coordinatorFenceSql, type CoordinatorFence } from "../cluster/coordinator.js";

/** A stored schedule. */
export interface ScheduleRow {
  scheduleId: string;
  /** New for each creation: scopes the fires' idempotency keys. */
  uid: string;
  spec: ScheduleSpec;
  paused: boolean;
  note: string;
  /** The latest instant the loop has dealt with: fire times after it are still to come. */
  cursorAt: Date;
  lastFireAt: Date | null;
  nextFireAt: Date | null;
  bufferedFireAt: Date | null;
  startedCount: number;
  skippedCount: number;
  missedCount: number;
  createdAt: Date;
  updatedAt: Date;
  /**
   * The latest version of its workflow declaring it (WorkflowSpec.schedules; schedules/declared.ts),
   * or null for a schedule made by CreateSchedule.
   */
  declaredVersion: number | null;
}

/** One schedule's changes in a pass of the fire loop. */
export interface PassUpdate {
  uid: string;
  cursorAt: Date;
  lastFireAt: Date | null;
  nextFireAt: Date | null;
  bufferedFireAt: Date | null;
  skipped: number;
  missed: number;
  /** Fire times that start runs (SCHEDULED). */
  starts: Date[];
}

export const COLUMNS = `schedule_id, uid, spec, paused, note, cursor_at, last_fire_at, next_fire_at, buffered_fire_at,
  started_count, skipped_count, missed_count, created_at, updated_at, declared_version`;

/** A row of `schedules` as {@link COLUMNS} reads it. */
export interface Row {
  schedule_id: string;
  uid: string;
  spec: ScheduleSpec;
  paused: boolean;
  note: string;
  cursor_at: Date;
  last_fire_at: Date | null;
  next_fire_at: Date | null;
  buffered_fire_at: Date | null;
  started_count: string;
  skipped_count: string;
  missed_count: string;
  created_at: Date;
  updated_at: Date;
  declared_version: number | null;
}

/** A row of `schedules` as the scheduler works with it. */
export function toRow(r: Row): ScheduleRow {
  return {
    scheduleId: r.schedule_id,
    uid: r.uid,
    spec: r.spec,
    paused: r.paused,
    note: r.note,
    cursorAt: r.cursor_at,
    lastFireAt: r.last_fire_at,
    nextFireAt: r.next_fire_at,
    bufferedFireAt: r.buffered_fire_at,
    startedCount: Number(r.started_count),
    skippedCount: Number(r.skipped_count),
    missedCount: Number(r.missed_count),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    declaredVersion: r.declared_version,
  };
}

const notFound = (id: string): ApiError => ApiError.notFound(`schedule ${JSON.stringify(id)} does not exist`);

/** A page token names a schedule id: anything else (a NUL PostgreSQL cannot take) is not ours. */
const isToken = (v: unknown): v is { after: string } =>
  typeof v === "object" &&
  v !== null &&
  typeof (v as { after?: unknown }).after === "string" &&
  isScheduleRef((v as { after: string }).after);

/** Schedules and fires in PostgreSQL. */
export class ScheduleStore {
  constructor(private readonly pool: pg.Pool) {}

  /** Inserts a schedule made by CreateSchedule, or returns the one under its id (`created` false). */
  async insert(row: Omit<ScheduleRow, "declaredVersion">): Promise<{ row: ScheduleRow; created: boolean }> {
    const { rows } = await this.pool.query<Row>(
      `INSERT INTO schedules (schedule_id, uid, workflow_name, spec, paused, note, cursor_at, next_fire_at,
         created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
       ON CONFLICT (schedule_id) DO NOTHING RETURNING ${COLUMNS}`,
      [
        row.scheduleId,
        row.uid,
        row.spec.workflowName,
        JSON.stringify(row.spec),
        row.paused,
        row.note,
        row.cursorAt,
        row.nextFireAt,
        row.createdAt,
      ],
    );
    const inserted = rows[0];
    if (inserted !== undefined) return { row: toRow(inserted), created: true };
    return { row: await this.get(row.scheduleId), created: false };
  }

  /** The schedule; NOT_FOUND when missing. */
  async get(scheduleId: string): Promise<ScheduleRow> {
    const { rows } = await this.pool.query<Row>(`SELECT ${COLUMNS} FROM schedules WHERE schedule_id = $1`, [
      scheduleId,
    ]);
    const row = rows[0];
    if (row === undefined) throw notFound(scheduleId);
    return toRow(row);
  }

  /** A page of schedules by id. */
  async list(
    workflowName: string,
    pageSize: number,
    pageToken: string,
  ): Promise<{ rows: ScheduleRow[]; nextPageToken: string }> {
    const size = pageSizeOf(pageSize);
    const listing: Listing = { filters: [workflowName], names: "workflow_name" };
    const after = pageToken === "" ? "" : decodeToken(pageToken, isToken, listing).after;
    const { rows } = await this.pool.query<Row>(
      `SELECT ${COLUMNS} FROM schedules WHERE schedule_id > $1 AND ($2 = '' OR workflow_name = $2)
       ORDER BY schedule_id LIMIT $3`,
      [after, workflowName, size + 1],
    );
    const page = rows.slice(0, size).map(toRow);
    const last = page.at(-1);
    return {
      rows: page,
      nextPageToken:
        rows.length > size && last !== undefined ? encodeToken({ after: last.scheduleId }, listing) : "",
    };
  }

  /** Deletes the schedule and its fire rows; NOT_FOUND when missing. */
  async delete(scheduleId: string): Promise<void> {
    const r = await this.pool.query(`DELETE FROM schedules WHERE schedule_id = $1`, [scheduleId]);
    if (r.rowCount === 0) throw notFound(scheduleId);
  }

  /**
   * Pauses or resumes. Resuming moves the cursor to `now` (fire times of the pause are not fired)
   * and sets the next fire time; pausing clears it. NOT_FOUND when missing.
   */
  async setPaused(
    scheduleId: string,
    paused: boolean,
    note: string,
    now: Date,
    nextFireAt: (row: ScheduleRow) => Date | null,
  ): Promise<ScheduleRow> {
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      const { rows } = await client.query<Row>(
        `SELECT ${COLUMNS} FROM schedules WHERE schedule_id = $1 FOR UPDATE`,
        [scheduleId],
      );
      const found = rows[0];
      if (found === undefined) throw notFound(scheduleId);
      const row = toRow(found);
      let updated = row;
      if (row.paused !== paused) {
        const cursor = paused ? row.cursorAt : new Date(Math.max(now.getTime(), row.cursorAt.getTime()));
        const next = paused ? null : nextFireAt({ ...row, cursorAt: cursor });
        const r = await client.query<Row>(
          `UPDATE schedules SET paused = $2, note = $3, cursor_at = $4, next_fire_at = $5, updated_at = $6
           WHERE schedule_id = $1 RETURNING ${COLUMNS}`,
          [scheduleId, paused, note, cursor, next, now],
        );
        updated = toRow(r.rows[0] as Row);
      } else if (note !== "" && note !== row.note) {
        const r = await client.query<Row>(
          `UPDATE schedules SET note = $2, updated_at = $3 WHERE schedule_id = $1 RETURNING ${COLUMNS}`,
          [scheduleId, note, now],
        );
        updated = toRow(r.rows[0] as Row);
      }
      await client.query("COMMIT");
      return updated;
    } catch (e) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw e;
    } finally {
      client.release();
    }
  }

  /** Schedules due by `now` (a fire time reached, or a fire buffered), at most `limit`. */
  async due(now: Date, limit: number): Promise<ScheduleRow[]> {
    const { rows } = await this.pool.query<Row>(
      `SELECT ${COLUMNS} FROM schedules
       WHERE NOT paused AND (next_fire_at <= $1 OR buffered_fire_at IS NOT NULL)
       ORDER BY next_fire_at NULLS LAST LIMIT $2`,
      [now, limit],
    );
    return rows.map(toRow);
  }

  /** The earliest next fire time of any running schedule, and whether any has a buffered fire. */
  async nextWake(): Promise<{ nextFireAt: Date | null; buffered: boolean }> {
    const { rows } = await this.pool.query<{ next: Date | null; buffered: boolean }>(
      `SELECT (SELECT min(next_fire_at) FROM schedules WHERE NOT paused) AS next,
              EXISTS (SELECT 1 FROM schedules WHERE NOT paused AND buffered_fire_at IS NOT NULL) AS buffered`,
    );
    return { nextFireAt: rows[0]?.next ?? null, buffered: rows[0]?.buffered ?? false };
  }

  /**
   * One pass of the fire loop, in one transaction: each schedule's cursor, counters and buffered
   * fire move only if its cursor is still where the pass read it (`expected`), with its starts
   * written as STARTING fires. Returns the uids whose update applied. With a coordinator's
   * `fence` (cluster/coordinator.ts), the transaction first checks that this replica still holds
   * partition 0 at its epoch and keeps that check's lock until it commits: a stale coordinator's
   * pass raises NF001 and writes nothing.
   */
  async applyPass(
    updates: readonly (PassUpdate & { expected: Date })[],
    now: Date,
    fence?: CoordinatorFence,
  ): Promise<Set<string>> {
    const applied = new Set<string>();
    if (updates.length === 0) return applied;
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      if (fence !== undefined) {
        const check = coordinatorFenceSql(fence, 1);
        await client.query(check.sql, check.params);
      }
      const { rows } = await client.query<{ uid: string }>(
        `UPDATE schedules s SET cursor_at = u.cursor_at, last_fire_at = COALESCE(u.last_fire_at, s.last_fire_at),
           next_fire_at = u.next_fire_at, buffered_fire_at = u.buffered_fire_at,
           skipped_count = s.skipped_count + u.skipped, missed_count = s.missed_count + u.missed
         FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[],
                     $6::int[], $7::int[], $8::timestamptz[])
           AS u(uid, cursor_at, last_fire_at, next_fire_at, buffered_fire_at, skipped, missed, expected)
         WHERE s.uid = u.uid AND s.cursor_at = u.expected AND NOT s.paused
         RETURNING s.uid`,
        [
          updates.map((u) => u.uid),
          updates.map((u) => u.cursorAt),
          updates.map((u) => u.lastFireAt),
          updates.map((u) => u.nextFireAt),
          updates.map((u) => u.bufferedFireAt),
          updates.map((u) => u.skipped),
          updates.map((u) => u.missed),
          updates.map((u) => u.expected),
        ],
      );
      for (const r of rows) applied.add(r.uid);
      const starts = updates
        .filter((u) => applied.has(u.uid))
        .flatMap((u) => u.starts.map((t) => ({ uid: u.uid, t })));
      if (starts.length > 0) {
        await client.query(
          `INSERT INTO schedule_fires (schedule_uid, fire_key, fire_at, origin, status, created_at)
           SELECT uid, key, at, 'SCHEDULED', 'STARTING', $4 FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])
             AS x(uid, key, at)
           ON CONFLICT (schedule_uid, fire_key) DO NOTHING`,
          [starts.map((s) => s.uid), starts.map((s) => timeFireKey(s.t)), starts.map((s) => s.t), now],
        );
      }
      await client.query("COMMIT");
      return applied;
    } catch (e) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw e;
    } finally {
      client.release();
    }
  }
}
