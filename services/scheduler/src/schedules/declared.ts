/**
 * Schedules declared in workflow definitions (WorkflowSpec.schedules, dag/schedules.ts), kept in
 * step with each workflow's latest version. Registering a version reconciles them in the
 * transaction that stores it: the schedules it declares are created (as `<workflow>/<id>`),
 * changed ones updated, and those an older version declared that it no longer does are deleted
 * (their fires with them; the runs they started stay). A version registered below the latest
 * changes nothing, and schedules made by CreateSchedule are never touched (they have no
 * `declared_version`, and no '/' in their id).
 *
 * A declared schedule's runs are of the latest version declaring it (its spec names that
 * version). An update keeps the schedule's uid, counters, fires and pause: an operator's pause
 * outlives a new version. A changed expression or time zone starts from the registration (fire
 * times of the old expression not yet fired are dropped); any other change applies from the next
 * fire.
 *
 * Registrations of one workflow take a transaction-level advisory lock on its name before reading
 * which version is the latest, so two racing registrations reconcile in the order they commit and
 * the highest version wins.
 */
import type { Logger } from "@nexusflow/common";
import type pg from "pg";
import { checkSchedules, contentHash, type DeclaredSchedule } from "../dag/index.js";
import type { DefinitionStoreHooks } from "../persistence/postgres-definition-store.js";
import { cronOf, declaredScheduleId, type ScheduleSpec } from "../dag/schedule-spec.js";

/** A declared schedule as stored, the part reconciling reads. */
export interface DeclaredRow {
  scheduleId: string;
  spec: ScheduleSpec;
  paused: boolean;
  cursorAt: Date;
}

/** One change reconciling makes to the declared schedules of a workflow. */
export type DeclaredChange =
  | { kind: "create"; scheduleId: string; spec: ScheduleSpec; cursorAt: Date; nextFireAt: Date | null }
  | {
      kind: "update";
      scheduleId: string;
      spec: ScheduleSpec;
      /** Whether the declaration changed (beyond the version its runs use). */
      changed: boolean;
      /** A new cursor and next fire time, when the expression or the time zone changed. */
      reset: { cursorAt: Date; nextFireAt: Date | null } | null;
    }
  | { kind: "delete"; scheduleId: string };

/** What reconciling did. */
export interface DeclaredResult {
  created: number;
  updated: number;
  unchanged: number;
  deleted: number;
}

/** Class of the advisory locks of declared schedules ("NFSD"); the key is the workflow name's hash. */
const LOCK_CLASS = 1313231684;

/** The declaration without the version its runs use: what "changed" compares. */
const declarationHash = (spec: ScheduleSpec): string => contentHash({ ...spec, workflowVersion: 0 });

/**
 * The changes that make the stored declared schedules of `workflowName` (`existing`) those of
 * `declared`, as of `now`. Pure.
 */
export function planDeclared(
  workflowName: string,
  existing: readonly DeclaredRow[],
  declared: readonly DeclaredSchedule[],
  now: Date,
): DeclaredChange[] {
  const changes: DeclaredChange[] = [];
  const stored = new Map(existing.map((r) => [r.scheduleId, r]));
  const kept = new Set<string>();
  for (const d of declared) {
    const scheduleId = declaredScheduleId(workflowName, d.id);
    kept.add(scheduleId);
    const row = stored.get(scheduleId);
    if (row === undefined) {
      changes.push({
        kind: "create",
        scheduleId,
        spec: d.spec,
        cursorAt: now,
        nextFireAt: cronOf(d.spec).next(now) ?? null,
      });
      continue;
    }
    const moved = row.spec.cron !== d.spec.cron || row.spec.timeZone !== d.spec.timeZone;
    const cursorAt = new Date(Math.max(now.getTime(), row.cursorAt.getTime()));
    changes.push({
      kind: "update",
      scheduleId,
      spec: d.spec,
      changed: declarationHash(row.spec) !== declarationHash(d.spec),
      reset: moved
        ? { cursorAt, nextFireAt: row.paused ? null : (cronOf(d.spec).next(cursorAt) ?? null) }
        : null,
    });
  }
  for (const r of existing)
    if (!kept.has(r.scheduleId)) changes.push({ kind: "delete", scheduleId: r.scheduleId });
  return changes;
}

/**
 * Reconciles the declared schedules of `definition`'s workflow in `tx` (the transaction that
 * stored it). Returns undefined when a higher version of the workflow is registered (nothing
 * changes), else what it did.
 */
export async function reconcileDeclared(
  tx: Pick<pg.PoolClient, "query">,
  definition: { name: string; version: number; spec: unknown },
  now: Date,
): Promise<DeclaredResult | undefined> {
  const { name, version } = definition;
  await tx.query(`SELECT pg_advisory_xact_lock($1, hashtext($2))`, [LOCK_CLASS, name]);
  const latest = await tx.query<{ max: number | null }>(
    `SELECT max(version) AS max FROM workflow_definitions WHERE name = $1`,
    [name],
  );
  if ((latest.rows[0]?.max ?? version) > version) return undefined;
  const raw = (definition.spec as { schedules?: unknown }).schedules ?? [];
  // Validated when registered: a problem here is a bug, and undoes the registration.
  const { schedules, errors } = checkSchedules(raw, "$.schedules", { name, version }, null);
  if (errors.length > 0)
    throw new Error(
      `declared schedules do not validate: ${errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`,
    );
  const { rows } = await tx.query<{
    schedule_id: string;
    spec: ScheduleSpec;
    paused: boolean;
    cursor_at: Date;
  }>(
    `SELECT schedule_id, spec, paused, cursor_at FROM schedules
     WHERE workflow_name = $1 AND declared_version IS NOT NULL ORDER BY schedule_id FOR UPDATE`,
    [name],
  );
  const existing = rows.map((r) => ({
    scheduleId: r.schedule_id,
    spec: r.spec,
    paused: r.paused,
    cursorAt: r.cursor_at,
  }));
  const result: DeclaredResult = { created: 0, updated: 0, unchanged: 0, deleted: 0 };
  const deletes: string[] = [];
  for (const c of planDeclared(name, existing, schedules, now)) {
    if (c.kind === "delete") {
      deletes.push(c.scheduleId);
    } else if (c.kind === "create") {
      await tx.query(
        `INSERT INTO schedules (schedule_id, uid, workflow_name, spec, paused, note, cursor_at, next_fire_at,
           created_at, updated_at, declared_version)
         VALUES ($1, gen_random_uuid(), $2, $3, false, '', $4, $5, $6, $6, $7)`,
        [c.scheduleId, name, JSON.stringify(c.spec), c.cursorAt, c.nextFireAt, now, version],
      );
      result.created++;
    } else {
      // The cursor and next fire time move only with the expression; the pause stays as it is.
      await tx.query(
        `UPDATE schedules SET spec = $2, declared_version = $3,
           updated_at = CASE WHEN $4 THEN $5 ELSE updated_at END,
           cursor_at = COALESCE($6, cursor_at),
           next_fire_at = CASE WHEN $7 THEN $8 ELSE next_fire_at END
         WHERE schedule_id = $1`,
        [
          c.scheduleId,
          JSON.stringify(c.spec),
          version,
          c.changed,
          now,
          c.reset?.cursorAt ?? null,
          c.reset !== null,
          c.reset?.nextFireAt ?? null,
        ],
      );
      if (c.changed) result.updated++;
      else result.unchanged++;
    }
  }
  if (deletes.length > 0) {
    const r = await tx.query(
      `DELETE FROM schedules WHERE schedule_id = ANY($1::text[]) AND declared_version IS NOT NULL`,
      [deletes],
    );
    result.deleted = r.rowCount ?? 0;
  }
  return result;
}

/**
 * The definition store's hooks that reconcile declared schedules when a version is stored, and
 * wake the fire loop once it is committed (`wake`).
 */
export function declaredScheduleHooks(options: { log: Logger; wake: () => void }): DefinitionStoreHooks {
  const done = new WeakMap<object, DeclaredResult>();
  return {
    async inserting(tx, definition) {
      const result = await reconcileDeclared(tx, definition, new Date());
      if (result !== undefined) done.set(definition, result);
    },
    inserted(definition) {
      const result = done.get(definition);
      if (result === undefined) return;
      if (result.created + result.updated + result.deleted > 0) {
        options.log.info(
          { workflow: definition.name, version: definition.version, ...result },
          "declared schedules reconciled",
        );
        options.wake();
      }
    },
  };
}
