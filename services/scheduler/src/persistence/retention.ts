/**
 * Run retention: finished runs that ended longer ago than the retention are deleted, in small
 * batches, with their tasks and attempts (foreign keys cascade), their idempotency key (when it
 * still names them), their outbox rows already published, and their logs and files in the
 * artifact store (`runs/{run_id}/`), and the schedule fires that started them (schedule fires
 * refused for good, with no run, go once past the retention too). Optionally each run is first
 * exported as one JSON document (the GetRun view) to `exports/{yyyy}/{mm}/{dd}/{run_id}.json`,
 * dated by the run's creation (UTC).
 *
 * Safe beside the group-commit writer: only runs whose terminal state is committed, and that the
 * engine no longer holds in memory, are taken; a terminal run never changes again (but a child
 * that SUCCEEDED, while an ancestor is active to roll it back: such a child is kept), and the
 * DELETE checks the status once more. A run's artifacts (and its export) are handled before its rows, so
 * a failure leaves the run to the next pass and never an orphaned folder; its rows then go in one
 * short transaction per batch, with a pause between batches so that the hot path keeps the
 * database. Unpublished outbox rows stay for the relay (which prunes them once published).
 */
import type pg from "pg";
import type { Logger } from "@nexusflow/common";
import { type ArtifactStore, runPrefix } from "@nexusflow/common/artifacts";
import { TERMINAL_RUN_STATUSES } from "../model/run-state.js";
import { PurgeLoop, pauseFor, type PurgeLoopState } from "./purge-loop.js";

/** How long finished runs are kept by default (30 days). */
export const DEFAULT_RUN_RETENTION_MS = 30 * 86_400_000;

/** Options of {@link RunRetention}. */
export interface RunRetentionOptions {
  pool: pg.Pool;
  store: ArtifactStore;
  log: Logger;
  /** Finished runs that ended longer ago than this are deleted; 0 turns retention off. @default 2592000000 (30 days) */
  retentionMs?: number;
  /** Time between the end of one purge and the start of the next. @default 60000 */
  intervalMs?: number;
  /** Runs deleted per transaction at most. @default 500 */
  batchSize?: number;
  /**
   * Rows a transaction deletes at most, counting each run's task rows and earlier attempts (a
   * map of 10,000 elements is 10,000 task rows); a run larger than that alone goes in one.
   * @default 20000
   */
  batchRows?: number;
  /** Pause between two batches of one purge. @default 200 */
  pauseMs?: number;
  /** Runs whose artifacts are deleted (and exported) at once. @default 8 */
  concurrency?: number;
  /**
   * Renders a run as the JSON document to export before it is deleted (the GetRun view);
   * undefined exports nothing. @default undefined
   */
  exportRun?: ((runId: string) => Promise<string>) | undefined;
  /** Whether the engine still holds the run in memory: such a run is never deleted. @default none */
  isActive?: ((runId: string) => boolean) | undefined;
}

/** What one purge did. */
export interface PurgeResult {
  /** Runs deleted. */
  deleted: number;
  /** Runs exported before deletion. */
  exported: number;
  /** Runs left for the next purge because their export or artifacts could not be handled. */
  failed: number;
}

/** Where a run's export is stored: `exports/{yyyy}/{mm}/{dd}/{run_id}.json`, dated by its creation (UTC). */
export function exportKey(runId: string, createdAt: Date): string {
  const yyyy = String(createdAt.getUTCFullYear()).padStart(4, "0");
  const mm = String(createdAt.getUTCMonth() + 1).padStart(2, "0");
  const dd = String(createdAt.getUTCDate()).padStart(2, "0");
  return `exports/${yyyy}/${mm}/${dd}/${runId}.json`;
}

const TERMINAL = [...TERMINAL_RUN_STATUSES];

// The (status, created_at) index finds them: a run that ended before the cutoff began before it.
// A child run stays while its parent (or an ancestor) is active: it may still roll back with it
// (core/child-rollback.ts). Only an active run revives a child, so once none of its ancestors is
// active none ever will be again, and the DELETE need not look twice.
// A run stays while a rerun of it is stored: the rerun's taken-over steps point at its rows and at
// its offloaded outputs (a rerun of a rerun at the first run's, through the rerun between them,
// which stays as long as it has a rerun in turn). The DELETE looks again for a rerun made since
// the candidates were read; one made while a batch's artifacts are deleted (a second, at a run past
// the retention) may still find them gone.
const NO_RERUN = (run: string): string =>
  `NOT EXISTS (SELECT 1 FROM workflow_runs x WHERE x.rerun_of = ${run})`;
const CANDIDATES_SQL = `SELECT r.id, r.created_at FROM workflow_runs r
  WHERE r.status = ANY($1::text[]) AND r.created_at < to_timestamp($2::float8 / 1000)
    AND r.ended_at < to_timestamp($2::float8 / 1000) AND NOT (r.id = ANY($3::uuid[]))
    AND ${NO_RERUN("r.id")}
    AND (r.parent_run_id IS NULL OR NOT EXISTS (
      WITH RECURSIVE up (id, parent_run_id, status) AS (
        SELECT p.id, p.parent_run_id, p.status FROM workflow_runs p WHERE p.id = r.parent_run_id
        UNION ALL
        SELECT p.id, p.parent_run_id, p.status FROM workflow_runs p JOIN up ON p.id = up.parent_run_id)
      SELECT 1 FROM up WHERE up.status IN ('PENDING', 'RUNNING', 'COMPENSATING')))
  ORDER BY r.created_at LIMIT $4`;

// Each candidate's task rows and earlier attempts (the rows its DELETE cascades to), by index.
const ROWS_SQL = `SELECT r.id, (SELECT count(*) FROM task_runs t WHERE t.run_id = r.id)
    + (SELECT count(*) FROM task_attempt_history h WHERE h.run_id = r.id) AS n
  FROM unnest($1::uuid[]) AS r(id)`;

/** PostgreSQL's query_canceled: a statement timeout (the server's, the role's or the URL's). */
const QUERY_CANCELED = "57014";

const DELETE_RUNS_SQL = `DELETE FROM workflow_runs d WHERE d.id = ANY($1::uuid[]) AND d.status = ANY($2::text[])
    AND ${NO_RERUN("d.id")}
  RETURNING d.id, d.workflow_name, d.idempotency_key`;

// By primary key, and only where the key still names the deleted run (not a newer one).
const DELETE_KEYS_SQL = `DELETE FROM idempotency_keys k
  USING unnest($1::text[], $2::text[], $3::uuid[]) AS x(workflow_name, idempotency_key, run_id)
  WHERE k.workflow_name = x.workflow_name AND k.idempotency_key = x.idempotency_key AND k.run_id = x.run_id`;

const DELETE_OUTBOX_SQL = `DELETE FROM outbox_events WHERE run_id = ANY($1::uuid[]) AND published_at IS NOT NULL`;

// A schedule's fire of a deleted run: its fire time is behind the schedule's cursor for good.
const DELETE_FIRES_SQL = `DELETE FROM schedule_fires WHERE run_id = ANY($1::uuid[])`;

// Fires refused for good (no run) past the retention, schedule by schedule through the
// (schedule_uid, created_at) index; at most $2 of them a purge.
const DELETE_REFUSED_FIRES_SQL = `DELETE FROM schedule_fires f USING (
    SELECT x.schedule_uid, x.fire_key FROM schedules s
    CROSS JOIN LATERAL (SELECT schedule_uid, fire_key FROM schedule_fires
      WHERE schedule_uid = s.uid AND created_at < to_timestamp($1::float8 / 1000) AND status = 'FAILED'
      LIMIT $2) x
    LIMIT $2) old
  WHERE f.schedule_uid = old.schedule_uid AND f.fire_key = old.fire_key`;

/** Lifecycle of {@link RunRetention} (its purge loop's). */
export type RunRetentionState = PurgeLoopState;

/** Deletes old finished runs periodically (see the module comment). */
export class RunRetention {
  private readonly retentionMs: number;
  private readonly intervalMs: number;
  private readonly batchSize: number;
  private readonly batchRows: number;
  private readonly pauseMs: number;
  private readonly concurrency: number;
  private readonly loop: PurgeLoop;
  /** Totals since start, for logs and tests. */
  readonly stats = { purges: 0, deleted: 0, exported: 0, failed: 0 };

  constructor(private readonly options: RunRetentionOptions) {
    this.retentionMs = options.retentionMs ?? DEFAULT_RUN_RETENTION_MS;
    this.intervalMs = options.intervalMs ?? 60_000;
    this.batchSize = options.batchSize ?? 500;
    this.batchRows = options.batchRows ?? 20_000;
    this.pauseMs = options.pauseMs ?? 200;
    this.concurrency = options.concurrency ?? 8;
    this.loop = new PurgeLoop({
      name: "run retention purge",
      log: options.log,
      intervalMs: this.intervalMs,
      purge: async (signal) => {
        const r = await this.purge(signal);
        if (r.deleted > 0 || r.failed > 0)
          this.options.log.info({ ...r }, "deleted runs past their retention");
      },
    });
  }

  /** Whether retention deletes anything (a retention of 0 turns it off). */
  get enabled(): boolean {
    return this.retentionMs > 0;
  }

  /** Starts purging every `intervalMs` (the first purge right away); does nothing when disabled. */
  start(): void {
    this.loop.start(this.enabled);
  }

  /** Stops the timer and waits for a purge in progress to end its current batch. */
  stop(): Promise<void> {
    return this.loop.stop();
  }

  /**
   * One purge: batches until no run is past its retention (or `signal` aborts between batches).
   * Returns what it did; a retention of 0 deletes nothing.
   */
  async purge(signal?: AbortSignal): Promise<PurgeResult> {
    const result: PurgeResult = { deleted: 0, exported: 0, failed: 0 };
    if (!this.enabled) return result;
    this.stats.purges++;
    // Runs skipped in this purge (still in memory, or their artifacts failed): not asked for again.
    const skipped: string[] = [];
    for (;;) {
      if (signal?.aborted) break;
      const cutoff = Date.now() - this.retentionMs;
      const { rows } = await this.options.pool.query<{ id: string; created_at: Date }>(CANDIDATES_SQL, [
        TERMINAL,
        cutoff,
        skipped,
        this.batchSize,
      ]);
      if (rows.length === 0) break;
      const free: { id: string; created_at: Date }[] = [];
      for (const r of rows) {
        if (this.options.isActive?.(r.id) === true) skipped.push(r.id);
        else free.push(r);
      }
      // The oldest runs whose rows fit the batch (at least one); the others come first next batch.
      const ready = await this.withinRows(free);
      const cleared = await this.clearArtifacts(ready, result);
      for (const r of ready) if (!cleared.has(r.id)) skipped.push(r.id);
      result.deleted += await this.deleteRows([...cleared], skipped);
      if (rows.length < this.batchSize && ready.length === free.length) break;
      await pauseFor(this.pauseMs, signal);
    }
    if (!signal?.aborted) {
      // A schedule whose workflow refuses its input fails a fire each tick, for ever if let be.
      await this.options.pool.query(DELETE_REFUSED_FIRES_SQL, [Date.now() - this.retentionMs, 10_000]);
    }
    this.stats.deleted += result.deleted;
    this.stats.exported += result.exported;
    this.stats.failed += result.failed;
    return result;
  }

  /** Exports (when configured) and deletes the artifacts of `runs`; returns the ids done. */
  private async clearArtifacts(
    runs: readonly { id: string; created_at: Date }[],
    result: PurgeResult,
  ): Promise<Set<string>> {
    const done = new Set<string>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < runs.length) {
        const run = runs[next++] as { id: string; created_at: Date };
        try {
          if (this.options.exportRun !== undefined) {
            const document = await this.options.exportRun(run.id);
            await this.options.store.put(exportKey(run.id, run.created_at), document, {
              contentType: "application/json",
            });
            result.exported++;
          }
          await this.options.store.delete(runPrefix(run.id));
          done.add(run.id);
        } catch (e) {
          result.failed++;
          this.options.log.warn(
            { err: e, run_id: run.id },
            "cannot export or delete a run's artifacts; the run is kept for the next purge",
          );
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, runs.length) }, worker));
    return done;
  }

  /** The first of `runs` whose rows together fit {@link RunRetentionOptions.batchRows} (one at least). */
  private async withinRows<R extends { id: string }>(runs: readonly R[]): Promise<R[]> {
    if (runs.length <= 1) return [...runs];
    const { rows } = await this.options.pool.query<{ id: string; n: string }>(ROWS_SQL, [
      runs.map((r) => r.id),
    ]);
    const count = new Map(rows.map((r) => [r.id, Number(r.n) + 1]));
    const out: R[] = [];
    let total = 0;
    for (const r of runs) {
      total += count.get(r.id) ?? 1;
      if (out.length > 0 && total > this.batchRows) break;
      out.push(r);
    }
    return out;
  }

  /**
   * Deletes the rows of `ids`, in one short transaction when it can: one cancelled by a statement
   * timeout is tried again in halves, and a single run still cancelled is left (added to
   * `skipped`) for the next purge rather than holding every run after it. Returns how many went.
   */
  private async deleteRows(ids: readonly string[], skipped: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    try {
      return await this.deleteBatch(ids);
    } catch (e) {
      if ((e as { code?: unknown }).code !== QUERY_CANCELED) throw e;
      if (ids.length === 1) {
        this.options.log.error(
          { err: e, run_id: ids[0] },
          "deleting a run's rows exceeds the statement timeout; the run is left for the next purge",
        );
        skipped.push(...ids);
        return 0;
      }
      const half = Math.ceil(ids.length / 2);
      return (
        (await this.deleteRows(ids.slice(0, half), skipped)) +
        (await this.deleteRows(ids.slice(half), skipped))
      );
    }
  }

  /** Deletes the rows of `ids` in one transaction; returns how many runs went. */
  private async deleteBatch(ids: readonly string[]): Promise<number> {
    const client = await this.options.pool.connect();
    let broken = false;
    try {
      await client.query("BEGIN");
      const runs = await client.query<{ id: string; workflow_name: string; idempotency_key: string | null }>(
        DELETE_RUNS_SQL,
        [ids, TERMINAL],
      );
      const keyed = runs.rows.filter((r) => r.idempotency_key !== null);
      if (keyed.length > 0) {
        await client.query(DELETE_KEYS_SQL, [
          keyed.map((r) => r.workflow_name),
          keyed.map((r) => r.idempotency_key),
          keyed.map((r) => r.id),
        ]);
      }
      await client.query(DELETE_OUTBOX_SQL, [runs.rows.map((r) => r.id)]);
      await client.query(DELETE_FIRES_SQL, [runs.rows.map((r) => r.id)]);
      await client.query("COMMIT");
      return runs.rowCount ?? 0;
    } catch (e) {
      broken = true;
      await client.query("ROLLBACK").catch(() => undefined);
      throw e;
    } finally {
      client.release(broken);
    }
  }
}
