/**
 * What a no-op single-step run writes to PostgreSQL, per task: WAL bytes (by table, from
 * pg_walinspect), rows inserted, updated and HOT-updated per table (pg_stat_user_tables), and
 * commits. N runs are started with no executor attached (as the benchmark's section 1 enqueues),
 * then one executor drains them; the counters cover both, as the benchmark's cost per task does.
 * Rows and bytes do not depend on CPU speed, except through how many changes share a group commit
 * (a task's started and completed reports in one batch make one update, in two make two).
 */
import { jsonToValue } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import pg from "pg";
import { registerSpec } from "../e2e/harness.js";
import { startTestDatabase, startTestScheduler, testLogger, waitFor, workflowClient } from "../support.js";

/** The tables a run writes. */
export const TABLES = [
  "workflow_runs",
  "task_runs",
  "task_attempt_history",
  "outbox_events",
  "idempotency_keys",
];

/** Per-table counters per task. */
export interface TableCost {
  inserted: number;
  updated: number;
  hotUpdated: number;
  /** WAL bytes of records whose first block is in the table or one of its indexes (FPIs included). */
  walBytes: number;
  /** Of which in its indexes. */
  indexWalBytes: number;
}

/** The cost of a measured drain, per task. */
export interface WriteCost {
  runs: number;
  keyed: boolean;
  /** pg_current_wal_lsn() difference, per task. */
  walBytes: number;
  /** Of which full-page images. */
  fpiBytes: number;
  tables: Record<string, TableCost>;
  /** WAL by table (an index counts for its table) and record type, per task (largest first). */
  records: { type: string; bytes: number; count: number }[];
  /** Transactions committed on the database, per task. */
  commitsPerTask: number;
  /** The batch writer's statements (one per group commit), per task. */
  groupCommitsPerTask: number;
  /** Lifecycle events in the outbox per task (several share a row when they share a commit). */
  eventsPerTask: number;
  rowsInsertedPerTask: number;
  rowsUpdatedPerTask: number;
  hotShare: number;
}

/** Options of {@link measureWriteCost}. */
export interface MeasureOptions {
  runs: number;
  /** Start each run with an idempotency key. @default false */
  keyed?: boolean;
  /** Executor slots. @default 256 */
  slots?: number;
}

const round = (n: number, digits = 1): number => Math.round(n * 10 ** digits) / 10 ** digits;

/** Runs the measurement on a fresh embedded PostgreSQL. */
export async function measureWriteCost(options: MeasureOptions): Promise<WriteCost> {
  const { runs, keyed = false, slots = 256 } = options;
  const db = await startTestDatabase();
  const admin = new pg.Pool({ connectionString: db.url, max: 1 });
  try {
    await admin.query("CREATE EXTENSION IF NOT EXISTS pg_walinspect");
    // Autovacuum's WAL is not the write path's; it is measured apart by the benchmark's retention.
    await admin.query("ALTER SYSTEM SET autovacuum = off");
    await admin.query("SELECT pg_reload_conf()");
    const scheduler = await startTestScheduler(db.url, {
      heartbeatIntervalMs: 2000,
      sessionTimeoutMs: 10_000,
    });
    const client = workflowClient(scheduler.address);
    await registerSpec(client, {
      name: "write-cost",
      version: 1,
      steps: [{ id: "only", type: "noop", input: { i: "{{ input.i }}" } }],
    });
    // Counters of backends still connected flush later (at most once a second): the window starts
    // before the first run and ends after the scheduler's connections closed.
    await admin.query("CHECKPOINT");
    const before = await counters(admin);
    const commits0 = scheduler.writerStats.commits;
    const executor = await startAndDrain(admin, scheduler.address, client, 0, runs, keyed, slots, true);
    const groupCommits = scheduler.writerStats.commits - commits0;
    await executor.stop();
    await scheduler.stop();
    // Backends flush their statistics as they exit: wait until the scheduler's have.
    await waitFor("the scheduler's connections to close", async () => {
      const { rows } = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
      );
      return rows[0]?.n === 0 ? true : undefined;
    });
    const after = await counters(admin);
    return await summarize(admin, runs, keyed, before, after, groupCommits);
  } finally {
    await admin.end();
    await db.close();
  }
}

type Client = ReturnType<typeof workflowClient>;

/**
 * Starts `count` runs (inputs from `first`) with no executor, then one executor until every run
 * succeeded. Returns the executor (stopped unless `keep`).
 */
async function startAndDrain(
  admin: pg.Pool,
  address: string,
  client: Client,
  first: number,
  count: number,
  keyed: boolean,
  slots: number,
  keep = false,
): Promise<Executor> {
  const ids: string[] = [];
  for (let from = 0; from < count; from += 64) {
    const calls = Array.from({ length: Math.min(64, count - from) }, async (_, k) => {
      const i = first + from + k;
      const { run } = await client.startRun({
        workflowName: "write-cost",
        input: jsonToValue({ i }),
        ...(keyed ? { idempotencyKey: `key-${i}` } : {}),
      });
      if (run === undefined) throw new Error("StartRun returned no run");
      return run.id;
    });
    ids.push(...(await Promise.all(calls)));
  }
  const executor = new Executor({
    schedulerAddress: address,
    executorId: `write-cost-${first}`,
    logger: testLogger("executor"),
    taskTypes: ["noop"],
    slots,
  });
  await executor.start();
  await waitFor(
    `${count} runs to succeed`,
    async () => {
      const { rows } = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM workflow_runs WHERE id = ANY($1::uuid[]) AND status = 'SUCCEEDED'",
        [ids],
      );
      return rows[0]?.n === count ? true : undefined;
    },
    120_000,
  );
  if (!keep) await executor.stop();
  return executor;
}

interface Counters {
  lsn: string;
  xacts: number;
  tables: Map<string, { ins: number; upd: number; hot: number }>;
}

async function counters(admin: pg.Pool): Promise<Counters> {
  const { rows: lsn } = await admin.query<{ lsn: string; xacts: string }>(
    "SELECT pg_current_wal_insert_lsn()::text AS lsn, (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS xacts",
  );
  const { rows } = await admin.query<{ relname: string; ins: string; upd: string; hot: string }>(
    "SELECT relname, n_tup_ins AS ins, n_tup_upd AS upd, n_tup_hot_upd AS hot FROM pg_stat_user_tables",
  );
  return {
    lsn: lsn[0]?.lsn as string,
    xacts: Number(lsn[0]?.xacts),
    tables: new Map(
      rows.map((r) => [r.relname, { ins: Number(r.ins), upd: Number(r.upd), hot: Number(r.hot) }]),
    ),
  };
}

async function summarize(
  admin: pg.Pool,
  n: number,
  keyed: boolean,
  before: Counters,
  after: Counters,
  groupCommits: number,
): Promise<WriteCost> {
  const { rows: total } = await admin.query<{ bytes: string }>(
    "SELECT pg_wal_lsn_diff($2::pg_lsn, $1::pg_lsn) AS bytes",
    [before.lsn, after.lsn],
  );
  // Each record's length goes to the relation of its first block (block_id 0): the table, or the
  // table an index belongs to; records without a block (commits) go to "(none)".
  const { rows: byRel } = await admin.query<{
    rel: string | null;
    index: boolean;
    bytes: string;
    fpi: string;
  }>(
    `WITH rec AS (
       SELECT r.start_lsn, r.record_length, b.relfilenode, r.fpi_length AS fpi
         FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn) r
         LEFT JOIN pg_get_wal_block_info($1::pg_lsn, $2::pg_lsn) b ON b.start_lsn = r.start_lsn AND b.block_id = 0)
     SELECT coalesce(t.relname, c.relname) AS rel, c.relkind = 'i' AS index,
            sum(rec.record_length) AS bytes, sum(rec.fpi) AS fpi
       FROM rec LEFT JOIN pg_class c ON c.relfilenode = rec.relfilenode
       LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_class t ON t.oid = i.indrelid
      GROUP BY 1, 2`,
    [before.lsn, after.lsn],
  );
  const { rows: types } = await admin.query<{ type: string; bytes: string; count: string }>(
    `SELECT coalesce(t.relname, c.relname, '-') || ': ' || r.resource_manager || ' ' || split_part(r.record_type, ' ', 1) AS type,
            sum(r.record_length) AS bytes, count(*) AS count
       FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn) r
       LEFT JOIN pg_get_wal_block_info($1::pg_lsn, $2::pg_lsn) b ON b.start_lsn = r.start_lsn AND b.block_id = 0
       LEFT JOIN pg_class c ON c.relfilenode = b.relfilenode
       LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_class t ON t.oid = i.indrelid
      GROUP BY 1 ORDER BY 2 DESC`,
    [before.lsn, after.lsn],
  );
  const { rows: events } = await admin.query<{ n: string }>(
    "SELECT coalesce(sum(event_count), 0) AS n FROM outbox_events",
  );
  const tables: Record<string, TableCost> = {};
  let ins = 0;
  let upd = 0;
  let hot = 0;
  for (const name of TABLES) {
    const a = after.tables.get(name) ?? { ins: 0, upd: 0, hot: 0 };
    const b = before.tables.get(name) ?? { ins: 0, upd: 0, hot: 0 };
    const wal = byRel.filter((r) => r.rel === name);
    tables[name] = {
      inserted: round((a.ins - b.ins) / n, 3),
      updated: round((a.upd - b.upd) / n, 3),
      hotUpdated: round((a.hot - b.hot) / n, 3),
      walBytes: round(wal.reduce((s, r) => s + Number(r.bytes), 0) / n, 0),
      indexWalBytes: round(wal.filter((r) => r.index).reduce((s, r) => s + Number(r.bytes), 0) / n, 0),
    };
    ins += a.ins - b.ins;
    upd += a.upd - b.upd;
    hot += a.hot - b.hot;
  }
  const other = byRel.filter((r) => r.rel === null || !TABLES.includes(r.rel));
  tables["(other)"] = {
    inserted: 0,
    updated: 0,
    hotUpdated: 0,
    walBytes: round(other.reduce((s, r) => s + Number(r.bytes), 0) / n, 0),
    indexWalBytes: 0,
  };
  return {
    runs: n,
    keyed,
    walBytes: round(Number(total[0]?.bytes) / n, 0),
    fpiBytes: round(byRel.reduce((s, r) => s + Number(r.fpi), 0) / n, 0),
    tables,
    records: types.map((t) => ({
      type: t.type,
      bytes: round(Number(t.bytes) / n, 0),
      count: round(Number(t.count) / n, 2),
    })),
    commitsPerTask: round((after.xacts - before.xacts) / n, 3),
    groupCommitsPerTask: round(groupCommits / n, 3),
    eventsPerTask: round(Number(events[0]?.n) / n, 3),
    rowsInsertedPerTask: round(ins / n, 3),
    rowsUpdatedPerTask: round(upd / n, 3),
    hotShare: upd === 0 ? 1 : round(hot / upd, 3),
  };
}
