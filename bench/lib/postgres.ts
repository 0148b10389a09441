/**
 * One embedded PostgreSQL cluster for the whole benchmark, with pg_stat_statements preloaded and
 * synchronous_commit on. Every system under test gets its own database in it, so
 * pg_stat_database and pg_stat_statements separate their costs; the monitor connects to the
 * `postgres` database, so its own queries never count against a system.
 */
import { closeSync, fdatasyncSync, openSync, unlinkSync, writeSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedDatabase } from "@nexusflow/scheduler";
import type { Logger } from "@nexusflow/common";
import { summarize, type Summary } from "./stats.js";

/** Server settings passed as `-c name=value`; recorded in the results. */
export const POSTGRES_SETTINGS = [
  "shared_preload_libraries=pg_stat_statements",
  "pg_stat_statements.track=top",
  "pg_stat_statements.max=10000",
  "synchronous_commit=on",
  "fsync=on",
  // Recycle every WAL segment at a checkpoint instead of removing it (see preallocateWal).
  "min_wal_size=1GB",
];

/** WAL segments (16 MiB each) made ready at --scale 1: more than a full run writes. */
export const WAL_SEGMENTS = 64;

/**
 * Leaves `segments` WAL segment files ready for reuse, as a server that has run for a while has
 * them. A fresh cluster creates each new segment when it needs it, writing and syncing 16 MiB of
 * zeros inside some commit: at 1,000 runs/s that stalled one commit (and every caller waiting on
 * it) for 12-20 ms every 3-4 s. Each switch here creates one segment; the checkpoint then renames
 * them all to future segments instead of removing them (min_wal_size), so the systems under test
 * write into preallocated files, as they would on a long-running server.
 */
async function preallocateWal(monitor: pg.Client, segments: number): Promise<void> {
  for (let i = 0; i < segments; i++) {
    await monitor.query("SELECT pg_logical_emit_message(false, 'nexusflow-bench', 'preallocate')");
    await monitor.query("SELECT pg_switch_wal()");
  }
  await monitor.query("CHECKPOINT");
}

/** Counters of one database (and the cluster's WAL) at one moment. */
export interface PgCounters {
  xactCommit: number;
  xactRollback: number;
  tupInserted: number;
  tupUpdated: number;
  tupDeleted: number;
  statements: number;
  walRecords: number;
  walBytes: number;
  /** WAL fsyncs (pg_stat_io, PostgreSQL 16+); null when not available. */
  walFsyncs: number | null;
  /**
   * Checkpoints the cluster completed (pg_stat_checkpointer, PostgreSQL 17+: `num_done` from 18,
   * else timed and requested); null when not available. A checkpoint's writes and fsyncs share the
   * disk with every commit's WAL flush: a phase with one in it may have a stall no other had.
   */
  checkpoints: number | null;
}

/** One statement's share of a phase, from pg_stat_statements. */
export interface StatementCost {
  calls: number;
  totalMs: number;
  meanMs: number;
  rows: number;
  query: string;
}

/** The running cluster and a monitor connection to its `postgres` database. */
export class BenchPostgres {
  private constructor(
    private readonly server: EmbeddedDatabase,
    private readonly dir: string,
    private readonly monitor: pg.Client,
    /** URL of the cluster's `nexusflow` database (superuser). */
    readonly baseUrl: string,
  ) {}

  /** Initialises and starts a fresh cluster in a temporary directory, with `walSegments` WAL files ready. */
  static async start(log: Logger, walSegments = WAL_SEGMENTS): Promise<BenchPostgres> {
    const dir = await mkdtemp(join(tmpdir(), "nf-bench-"));
    const server = await startEmbeddedPostgres({ dir: join(dir, "pg"), log, settings: POSTGRES_SETTINGS });
    // Every system connects as the scheduler does to its embedded default: over the local socket.
    const monitor = new pg.Client({ connectionString: databaseUrl(server.localUrl, "postgres") });
    // On Ctrl-C PostgreSQL (same process group) shuts down first and ends this connection.
    monitor.on("error", () => undefined);
    await monitor.connect();
    await monitor.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    await preallocateWal(monitor, walSegments);
    return new BenchPostgres(server, dir, monitor, server.localUrl);
  }

  /** Directory of the cluster's data (for the fsync probe). */
  get dataDir(): string {
    return this.server.dataDir;
  }

  /** Creates (if missing) a database and returns its URL. */
  async database(name: string): Promise<string> {
    const exists = await this.monitor.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (exists.rowCount === 0) await this.monitor.query(`CREATE DATABASE "${name}"`);
    return databaseUrl(this.baseUrl, name);
  }

  /** Server version and the settings that matter for the numbers. */
  async describe(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    const v = await this.monitor.query<{ server_version: string }>("SHOW server_version");
    out["server_version"] = v.rows[0]?.server_version ?? "?";
    for (const name of [
      "synchronous_commit",
      "fsync",
      "wal_sync_method",
      "shared_buffers",
      "max_connections",
      "min_wal_size",
      "max_wal_size",
      "commit_delay",
      "wal_level",
      "shared_preload_libraries",
    ]) {
      const r = await this.monitor.query<Record<string, string>>(`SHOW ${name}`);
      out[name] = Object.values(r.rows[0] ?? {})[0] ?? "?";
    }
    return out;
  }

  /** Backends connected to `database`. */
  async backends(database: string): Promise<number> {
    const r = await this.monitor.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1",
      [database],
    );
    return r.rows[0]?.n ?? 0;
  }

  /** Total pg_stat_statements calls in `database` since the last reset. */
  async statementCalls(database: string): Promise<number> {
    const r = await this.monitor.query<{ calls: string }>(
      `SELECT coalesce(sum(s.calls), 0) AS calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1`,
      [database],
    );
    return Number(r.rows[0]?.calls ?? 0);
  }

  /** Forgets pg_stat_statements entries (cluster-wide; one system runs at a time). */
  async resetStatements(): Promise<void> {
    await this.monitor.query("SELECT pg_stat_statements_reset()");
  }

  /**
   * Counters of `database`. Backends publish transaction counts when idle for a second or on
   * exit, so take this after the system under test was idle that long or stopped.
   */
  async counters(database: string): Promise<PgCounters> {
    const db = await this.monitor.query<{
      xact_commit: string;
      xact_rollback: string;
      tup_inserted: string;
      tup_updated: string;
      tup_deleted: string;
    }>(
      `SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database WHERE datname = $1`,
      [database],
    );
    const st = await this.monitor.query<{ calls: string }>(
      `SELECT coalesce(sum(s.calls), 0) AS calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1`,
      [database],
    );
    const wal = await this.monitor.query<{ wal_records: string; wal_bytes: string }>(
      "SELECT wal_records, wal_bytes FROM pg_stat_wal",
    );
    let walFsyncs: number | null = null;
    try {
      const io = await this.monitor.query<{ fsyncs: string | null }>(
        "SELECT sum(fsyncs) AS fsyncs FROM pg_stat_io WHERE object = 'wal'",
      );
      walFsyncs = io.rows[0]?.fsyncs == null ? null : Number(io.rows[0].fsyncs);
    } catch {
      walFsyncs = null;
    }
    const d = db.rows[0];
    return {
      checkpoints: await this.checkpoints(),
      xactCommit: Number(d?.xact_commit ?? 0),
      xactRollback: Number(d?.xact_rollback ?? 0),
      tupInserted: Number(d?.tup_inserted ?? 0),
      tupUpdated: Number(d?.tup_updated ?? 0),
      tupDeleted: Number(d?.tup_deleted ?? 0),
      statements: Number(st.rows[0]?.calls ?? 0),
      walRecords: Number(wal.rows[0]?.wal_records ?? 0),
      walBytes: Number(wal.rows[0]?.wal_bytes ?? 0),
      walFsyncs,
    };
  }

  /** See {@link PgCounters.checkpoints}. */
  private async checkpoints(): Promise<number | null> {
    for (const sql of [
      "SELECT num_done AS n FROM pg_stat_checkpointer",
      "SELECT num_timed + num_requested AS n FROM pg_stat_checkpointer",
    ]) {
      try {
        const r = await this.monitor.query<{ n: string | null }>(sql);
        const n = r.rows[0]?.n;
        return n == null ? null : Number(n);
      } catch {
        // An older server: the next form, or none.
      }
    }
    return null;
  }

  /** The statements of `database` since the last reset, most called first. */
  async statements(database: string, limit = 12): Promise<StatementCost[]> {
    const r = await this.monitor.query<{
      calls: string;
      total_exec_time: number;
      rows: string;
      query: string;
    }>(
      `SELECT s.calls, s.total_exec_time, s.rows, s.query FROM pg_stat_statements s
       JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1 ORDER BY s.calls DESC, s.total_exec_time DESC LIMIT $2`,
      [database, limit],
    );
    return r.rows.map((row) => ({
      calls: Number(row.calls),
      totalMs: Math.round(row.total_exec_time),
      meanMs: Math.round((row.total_exec_time / Math.max(1, Number(row.calls))) * 1000) / 1000,
      rows: Number(row.rows),
      query: row.query.replace(/\s+/g, " ").slice(0, 160),
    }));
  }

  /** Stops the cluster and deletes its files. */
  async stop(): Promise<void> {
    try {
      await this.monitor.end().catch(() => undefined);
      await this.server.destroy();
    } finally {
      await rm(this.dir, { recursive: true, force: true });
    }
  }
}

/** The same server URL pointing at another database. */
export function databaseUrl(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Differences `after - before` of every counter. */
export function diffCounters(before: PgCounters, after: PgCounters): PgCounters {
  return {
    xactCommit: after.xactCommit - before.xactCommit,
    xactRollback: after.xactRollback - before.xactRollback,
    tupInserted: after.tupInserted - before.tupInserted,
    tupUpdated: after.tupUpdated - before.tupUpdated,
    tupDeleted: after.tupDeleted - before.tupDeleted,
    statements: after.statements - before.statements,
    walRecords: after.walRecords - before.walRecords,
    walBytes: after.walBytes - before.walBytes,
    walFsyncs:
      after.walFsyncs === null || before.walFsyncs === null ? null : after.walFsyncs - before.walFsyncs,
    checkpoints:
      after.checkpoints === null || before.checkpoints === null
        ? null
        : after.checkpoints - before.checkpoints,
  };
}

/**
 * Latency of one 8 KiB write + fdatasync in the cluster's data directory, `n` times: the floor
 * under every synchronous commit on this disk.
 */
export function fsyncProbe(dir: string, n = 200): Summary {
  const file = join(dir, `fsync-probe-${process.pid}`);
  const fd = openSync(file, "w");
  const block = Buffer.alloc(8192, 1);
  const samples: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      writeSync(fd, block, 0, block.length, (i % 16) * 8192);
      fdatasyncSync(fd);
      samples.push(performance.now() - t);
    }
  } finally {
    closeSync(fd);
    unlinkSync(file);
  }
  return summarize(samples);
}
