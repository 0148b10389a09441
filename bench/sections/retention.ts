/**
 * Section 6 (Nexusflow only): does deleting old runs slow the hot path? The same no-op drain as
 * section 1, on a database that also holds `oldRuns` finished runs (one task and one attempt each)
 * that ended 40 days ago, with and without a retention purge of them running during the drain.
 * The purge is the scheduler's own (`RunRetention.purge()` on its pool: batches of 500 runs in short
 * transactions with a pause between them), started when the consumers start; the phases alternate
 * (off, purging, off, purging, ...) and each variant's median is compared.
 */
import pg from "pg";
import type { BenchContext } from "./context.js";
import { databaseUrl } from "../lib/postgres.js";
import { median } from "../lib/stats.js";
import { NOOP_TYPE, NOOP_WORKFLOW, type NexusflowSystem } from "../systems/nexusflow.js";
import { ENQUEUE_CONCURRENCY } from "./queue.js";

/** One drain of the section. */
export interface RetentionPhase {
  purging: boolean;
  tasks: number;
  oldRuns: number;
  drainSeconds: number;
  tasksPerSecond: number;
  /** Old runs deleted by the time the drain ended (purging phases). */
  deletedDuringDrain: number;
  /** The whole purge (purging phases): runs deleted and how long it took. */
  purge?: { deleted: number; seconds: number };
}

/** Result of section 6. */
export interface RetentionResult {
  phases: RetentionPhase[];
  /** Median drain rate without a purge, tasks/s. */
  offMedian: number;
  /** Median drain rate with a purge running, tasks/s. */
  purgingMedian: number;
  /** purgingMedian / offMedian. */
  ratio: number;
}

// Runs, their task and its attempt, finished 40 days ago (past the 30-day retention), in one statement.
const INSERT_OLD_RUNS_SQL = `
WITH def AS (SELECT id, version FROM workflow_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1),
runs AS (
  INSERT INTO workflow_runs (id, definition_id, workflow_name, workflow_version, status, input, output,
                             created_at, updated_at, ended_at)
  SELECT gen_random_uuid(), def.id, $1, def.version, 'SUCCEEDED', jsonb_build_object('i', g),
         jsonb_build_object('i', g), now() - interval '40 days', now() - interval '40 days',
         now() - interval '40 days'
  FROM def, generate_series(1, $2::int) AS g
  RETURNING id, created_at
),
tasks AS (
  INSERT INTO task_runs (id, run_id, step_id, kind, type, status, position, input, output, attempt,
                         fencing_token, executor_id, created_at, updated_at, ended_at, attempt_status,
                         leased_at, started_at, attempt_ended_at)
  SELECT gen_random_uuid(), id, 'only', 'STEP', $3, 'SUCCEEDED', 0, '{}'::jsonb, '{}'::jsonb, 1, 1,
         'old-executor', created_at, created_at, created_at, 'SUCCEEDED', created_at, created_at, created_at
  FROM runs
  RETURNING id
)
SELECT count(*) FROM tasks`;

/** The scheduler's default retention (30 days). */
const RETENTION_MS = 30 * 86_400_000;

const COUNT_OLD_SQL = `SELECT count(*)::int AS n FROM workflow_runs WHERE created_at < now() - interval '30 days'`;

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function phase(
  ctx: BenchContext,
  index: number,
  purging: boolean,
  n: number,
  oldRuns: number,
): Promise<RetentionPhase> {
  // Both variants run the same scheduler configuration: retention on, its timer's first purge at
  // start (the old runs are not there yet) and the next an hour later; only the purging phases
  // start a purge when the drain starts.
  const system: NexusflowSystem = await ctx.nexusflow(`ret${index}_${purging ? "on" : "off"}`, {
    runRetentionMs: RETENTION_MS,
    runRetentionIntervalMs: 3_600_000,
  });
  await ctx.prepare(system);
  const url = databaseUrl(ctx.pg.baseUrl, system.database);
  await system.start();
  try {
    system.recorder.reset(n);
    ctx.note(`  nexusflow: enqueue ${n}, then ${oldRuns} runs that ended 40 days ago`);
    await system.preload(n, ENQUEUE_CONCURRENCY);
    await withClient(url, async (c) => {
      await c.query(INSERT_OLD_RUNS_SQL, [NOOP_WORKFLOW, oldRuns, NOOP_TYPE]);
      await c.query("ANALYZE workflow_runs, task_runs, task_attempt_history");
    });
    ctx.note(`  nexusflow: drain ${purging ? "while purging" : "(no purge)"}`);
    const d0 = performance.now();
    const purge = purging
      ? system.scheduler.retention.purge().then((r) => ({
          deleted: r.deleted,
          seconds: (performance.now() - d0) / 1000,
        }))
      : undefined;
    await system.startConsumers();
    await system.drained(120_000 + n * 5);
    const drainSeconds = (performance.now() - d0) / 1000;
    const left = await withClient(
      url,
      async (c) => (await c.query<{ n: number }>(COUNT_OLD_SQL)).rows[0]?.n ?? 0,
    );
    const purged = await purge;
    return {
      purging,
      tasks: n,
      oldRuns,
      drainSeconds: Math.round(drainSeconds * 1000) / 1000,
      tasksPerSecond: Math.round(n / drainSeconds),
      deletedDuringDrain: oldRuns - left,
      ...(purged === undefined
        ? {}
        : { purge: { deleted: purged.deleted, seconds: Math.round(purged.seconds * 1000) / 1000 } }),
    };
  } finally {
    await system.stop();
    await ctx.quiesce(system.database);
  }
}

/** Section 6: `repeats` pairs of drains of `n` runs beside `oldRuns` old ones, without and with a purge. */
export async function retentionSection(
  ctx: BenchContext,
  n: number,
  oldRuns: number,
  repeats: number,
): Promise<RetentionResult> {
  const phases: RetentionPhase[] = [];
  for (let i = 0; i < repeats; i++) {
    phases.push(await phase(ctx, i, false, n, oldRuns));
    phases.push(await phase(ctx, i, true, n, oldRuns));
  }
  const offMedian = median(phases.filter((p) => !p.purging).map((p) => p.tasksPerSecond));
  const purgingMedian = median(phases.filter((p) => p.purging).map((p) => p.tasksPerSecond));
  return { phases, offMedian, purgingMedian, ratio: Math.round((purgingMedian / offMedian) * 1000) / 1000 };
}
