/** What every section gets: options, the cluster, system factories, profiling and progress output. */
import { cpus } from "node:os";
import { basename, join } from "node:path";
import type { Logger } from "@nexusflow/common";
import type { BenchOptions, SystemName } from "../lib/cli.js";
import { collectGarbage } from "../lib/collect-garbage.js";
import { cpuBetween, cpuSnapshot, postmasterPid, type CpuSnapshot, type CpuUsage } from "../lib/cpu.js";
import { diffCounters, type BenchPostgres, type PgCounters, type StatementCost } from "../lib/postgres.js";
import { type AllocationSummary, startProfile, type ProfileSummary } from "../lib/profile.js";
import { DbosSystem, type DbosOptions } from "../systems/dbos.js";
import { GraphileSystem } from "../systems/graphile.js";
import { NexusflowSystem, type NexusflowOptions } from "../systems/nexusflow.js";
import { PgBossSystem } from "../systems/pgboss.js";
import type { QueueSystem } from "../systems/types.js";

/** Shared state of one benchmark run. */
export class BenchContext {
  /** Profiles written, by phase. */
  readonly profiles: Record<string, ProfileSummary> = {};
  /** What the executors' thread allocated in each profiled phase (--allocations), by profile name. */
  readonly executorAllocations: Record<string, AllocationSummary> = {};
  private databases = 0;

  constructor(
    readonly options: BenchOptions,
    readonly pg: BenchPostgres,
    readonly log: Logger,
    readonly outDir: string,
    readonly stamp: string,
    private readonly progress: (line: string) => void,
  ) {}

  /** Reads CPU counters (this process, the cluster, the machine). */
  cpu(): CpuSnapshot {
    return cpuSnapshot(postmasterPid(this.pg.dataDir));
  }

  /** CPU used between two readings, per task when `tasks` is given. */
  cpuSince(a: CpuSnapshot, tasks?: number): CpuUsage {
    return cpuBetween(a, this.cpu(), cpus().length, tasks);
  }

  /** Prints a progress line (stderr), so stdout keeps only the tables. */
  note(line: string): void {
    this.progress(line);
  }

  /** A fresh database for one phase, so tables and counters start empty. */
  async freshDatabase(prefix: string): Promise<{ name: string; url: string }> {
    const name = `${prefix.replace(/[^a-z0-9_]/g, "_")}_${++this.databases}`;
    return { name, url: await this.pg.database(name) };
  }

  /** A Nexusflow system on a fresh database. */
  async nexusflow(phase: string, options: Partial<NexusflowOptions> = {}): Promise<NexusflowSystem> {
    const db = await this.freshDatabase(`nf_${phase}`);
    return new NexusflowSystem({
      url: db.url,
      database: db.name,
      log: this.log,
      metrics: this.options.metrics,
      ...(this.options.profile ? { executorProfilePrefix: join(this.outDir, `${this.stamp}-${phase}`) } : {}),
      ...(this.options.allocations
        ? {
            onExecutorAllocations: (a: AllocationSummary) => {
              this.executorAllocations[basename(a.file, ".heapprofile")] = a;
            },
          }
        : {}),
      ...options,
    });
  }

  /** A DBOS system on a fresh database (its system database). */
  async dbos(phase: string, options: Partial<DbosOptions> = {}): Promise<DbosSystem> {
    const db = await this.freshDatabase(`dbos_${phase}`);
    return new DbosSystem({ url: db.url, database: db.name, ...options });
  }

  /** A system of the comparison on a fresh database. */
  async system(name: SystemName, phase: string): Promise<QueueSystem> {
    switch (name) {
      case "nexusflow":
        return this.nexusflow(phase);
      case "pg-boss": {
        const db = await this.freshDatabase(`boss_${phase}`);
        return new PgBossSystem({ url: db.url, database: db.name });
      }
      case "graphile-worker": {
        const db = await this.freshDatabase(`gw_${phase}`);
        return new GraphileSystem({ url: db.url, database: db.name });
      }
      case "dbos":
        return this.dbos(phase);
    }
  }

  /**
   * Starts and stops `system` once (schema, migrations) and waits until its connections are gone,
   * so the counters taken next exclude the set-up and are complete.
   */
  async prepare(system: QueueSystem): Promise<void> {
    try {
      await system.start();
    } catch (error) {
      // A start that failed half-way (a refused registration) must not leave its scheduler or
      // workers running: they would keep the bench process alive after its report.
      await system.stop().catch(() => undefined);
      throw error;
    }
    await system.stop();
    await this.quiesce(system.database);
    // The phase starts without the garbage of the ones before (lib/collect-garbage.ts).
    collectGarbage();
  }

  /** Waits until no backend is connected to `database` (backends publish their stats on exit). */
  async quiesce(database: string): Promise<void> {
    for (let i = 0; i < 500; i++) {
      if ((await this.pg.backends(database)) === 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 150));
  }

  /** Counters of `database` now. */
  counters(database: string): Promise<PgCounters> {
    return this.pg.counters(database);
  }

  /** Runs `fn` under the CPU profiler when --profile is set. */
  async profiled<T>(phase: string, fn: () => Promise<T>): Promise<T> {
    if (!this.options.profile) return fn();
    // A phase run again in one bench (section 9's plain and gated drains) gets -2, -3, ...
    let n = 1;
    while (this.profiles[n === 1 ? phase : `${phase}-${n}`] !== undefined) n++;
    if (n > 1) phase = `${phase}-${n}`;
    const file = join(this.outDir, `${this.stamp}-${phase}.cpuprofile`);
    const profiling = await startProfile(file, { allocations: this.options.allocations });
    try {
      return await fn();
    } finally {
      const summary = await profiling.stop();
      this.profiles[phase] = summary;
      this.note(`  profile ${phase}: ${file}`);
    }
  }
}

/** PostgreSQL cost of a phase, per task. */
export interface PhaseCost {
  tasks: number;
  counters: PgCounters;
  perTask: {
    transactions: number;
    commits: number;
    statements: number;
    walBytes: number;
    walFsyncs: number | null;
  };
  /** pg_stat_statements of the phase, most called first. */
  statements: StatementCost[];
}

/** Per-task cost from counters taken around a phase, less the harness's own probe queries. */
export function phaseCost(
  tasks: number,
  before: PgCounters,
  after: PgCounters,
  statementCalls: number,
  probeQueries: number,
  statements: StatementCost[],
): PhaseCost {
  const d = diffCounters(before, after);
  d.xactCommit -= probeQueries;
  d.statements = statementCalls - probeQueries;
  const per = (v: number): number => Math.round((v / Math.max(1, tasks)) * 1000) / 1000;
  return {
    tasks,
    counters: d,
    perTask: {
      transactions: per(d.xactCommit + d.xactRollback),
      commits: per(d.xactCommit),
      statements: per(d.statements),
      walBytes: Math.round(d.walBytes / Math.max(1, tasks)),
      walFsyncs: d.walFsyncs === null ? null : per(d.walFsyncs),
    },
    statements,
  };
}
