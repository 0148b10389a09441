/**
 * Section `partitioning` (`--only partitioning`, not part of the default run; issue #22): what
 * cluster mode costs a scheduler that is alone, measured with the harness of sections 1 and 2 (the
 * scheduler and four executors x 256 slots in this process, as the figures of the README's table):
 * the no-op drain of 20,000 runs and the 1,000/s open loop, each with `cluster` off (the
 * one-per-database lock, every run this scheduler's) and on (one replica holding all 16
 * partitions: the fence in every commit, the partition heartbeat, run ids drawn in held
 * partitions). After a warm-up (not counted), the two modes alternate four times, so that neither
 * the process warming up nor a drift of the machine favours one; the ratios compare their medians.
 */
import { scaled } from "../lib/cli.js";
import { median } from "../lib/stats.js";
import { formatTable } from "../lib/table.js";
import type { BenchContext } from "./context.js";
import { latencyPhase, openLoopFigures, throughputPhase, type OpenLoopFigures } from "./queue.js";

/** No-op runs of each drain at scale 1. */
export const PARTITIONING_TASKS = 20_000;
/** Open-loop rate, runs per second. */
export const PARTITIONING_RATE = 1_000;
/** Seconds of each open loop at scale 1. */
export const PARTITIONING_SECONDS = 10;

/** The scheduler's mode in a phase. */
export type SchedulerMode = "sole" | "cluster-1";

/** One drain. */
export interface PartitioningDrain {
  mode: SchedulerMode;
  /** True for the first drain of the section (not counted). */
  warmUp: boolean;
  tasks: number;
  tasksPerSecond: number;
  /** CPU ms per task of the bench process (scheduler and executors) and of PostgreSQL. */
  cpuMsPerTask: { benchProcess: number; postgres: number } | undefined;
  groupCommits: number | undefined;
}

/** One open loop. */
export interface PartitioningOpenLoop extends OpenLoopFigures {
  mode: SchedulerMode;
  warmUp: boolean;
}

/** Result of the section. */
export interface PartitioningResult {
  drains: PartitioningDrain[];
  openLoops: PartitioningOpenLoop[];
  /** Median cluster-1 over median sole (counted phases only), to 3 decimals. */
  drainRatio: number;
  openLoopRatio: { p50: number; p99: number };
}

/**
 * Rounds of alternation (sole, then cluster-1) after the warm-up. A phase's p99 rests on its slowest
 * hundred starts, so one hiccup of the machine moves it by half: four rounds, compared by their
 * medians, let no single phase decide the ratio (two rounds by their means did).
 */
export const PARTITIONING_ROUNDS = 4;

/** A warm-up (sole, not counted), then sole and cluster-1 alternating, {@link PARTITIONING_ROUNDS} times. */
async function alternate<T>(phase: (mode: SchedulerMode, warmUp: boolean) => Promise<T>): Promise<T[]> {
  const out = [await phase("sole", true)];
  for (let round = 0; round < PARTITIONING_ROUNDS; round++)
    for (const mode of ["sole", "cluster-1"] as const) out.push(await phase(mode, false));
  return out;
}

/** Median of `f` over the counted phases of cluster-1, over that of sole, to 3 decimals. */
export function clusterOverSole<T extends { mode: SchedulerMode; warmUp: boolean }>(
  xs: readonly T[],
  f: (x: T) => number,
): number {
  const of = (mode: SchedulerMode): number => median(xs.filter((x) => x.mode === mode && !x.warmUp).map(f));
  return Math.round((of("cluster-1") / of("sole")) * 1000) / 1000;
}

/** Runs the section (see the module comment). */
export async function partitioningSection(ctx: BenchContext): Promise<PartitioningResult> {
  const n = scaled(PARTITIONING_TASKS, ctx.options.scale, 100);
  const options = (mode: SchedulerMode) => (mode === "cluster-1" ? { cluster: true } : {});
  const drains = await alternate(async (mode, warmUp): Promise<PartitioningDrain> => {
    ctx.note(`  nexusflow: drain of ${n}, ${mode}${warmUp ? " (warm-up, not counted)" : ""}`);
    const r = await throughputPhase(ctx, "nexusflow", n, undefined, () =>
      ctx.nexusflow(`part-${mode}`, options(mode)),
    );
    return {
      mode,
      warmUp,
      tasks: r.tasks,
      tasksPerSecond: r.drain.tasksPerSecond,
      cpuMsPerTask: r.cpu.drain.perTaskMs,
      groupCommits: r.groupCommits?.drain,
    };
  });
  const seconds = Math.max(2, Math.round(PARTITIONING_SECONDS * Math.min(1, ctx.options.scale)));
  const openLoops = await alternate(async (mode, warmUp): Promise<PartitioningOpenLoop> => {
    ctx.note(
      `  nexusflow: open loop ${PARTITIONING_RATE}/s, ${mode}${warmUp ? " (warm-up, not counted)" : ""}`,
    );
    const r = await latencyPhase(ctx, "nexusflow", PARTITIONING_RATE, seconds, () =>
      ctx.nexusflow(`part-lat-${mode}`, options(mode)),
    );
    return { mode, warmUp, ...openLoopFigures(r) };
  });
  return {
    drains,
    openLoops,
    drainRatio: clusterOverSole(drains, (d) => d.tasksPerSecond),
    openLoopRatio: {
      p50: clusterOverSole(openLoops, (o) => o.p50),
      p99: clusterOverSole(openLoops, (o) => o.p99),
    },
  };
}

/** The section's table. */
export function partitioningTable(r: PartitioningResult): string {
  const label = (x: { mode: SchedulerMode; warmUp: boolean }): string =>
    x.warmUp ? `${x.mode} (warm-up)` : x.mode;
  return (
    "\nPartitioning: one scheduler without and with cluster mode (one replica), in process (sections 1 and 2's harness)\n" +
    formatTable([
      ["mode", "drain tasks/s", "CPU ms/task (bench process)", "group commits"],
      ...r.drains.map((d) => [
        label(d),
        d.tasksPerSecond,
        d.cpuMsPerTask?.benchProcess ?? "-",
        d.groupCommits ?? "-",
      ]),
    ]) +
    formatTable([
      [
        "mode",
        "open loop",
        "p50 ms",
        "p99 ms",
        "achieved/s",
        "not started",
        "slowest ms (at s)",
        "main loop held max ms",
        "main GC max ms",
        "heap at start MiB",
        "checkpoints",
      ],
      ...r.openLoops.map((o) => [
        label(o),
        `${o.rate}/s`,
        o.p50,
        o.p99,
        o.achievedPerSecond,
        o.notStarted,
        `${o.stall.slowestMs} (${o.stall.slowestAtSecond})`,
        o.stall.mainThreadLoopDelayMaxMs,
        o.stall.mainThreadGcMaxMs,
        o.stall.heapUsedAtStartMiB,
        o.stall.checkpoints ?? "-",
      ]),
    ]) +
    `\ncluster-1 over sole (medians): drain ${r.drainRatio}, open loop p50 ${r.openLoopRatio.p50}, p99 ${r.openLoopRatio.p99}\n`
  );
}

/** Issue #22's in-process targets against what this run measured. */
export function partitioningTargets(
  r: PartitioningResult,
): { target: string; goal: string; measured: string; met: boolean }[] {
  return [
    {
      target: "cost of partitioning, one replica in process",
      goal: "drain and 1,000/s open loop within 5% of one scheduler without cluster mode",
      measured: `drain ${(r.drainRatio * 100).toFixed(1)}% of sole; open loop p50 x${r.openLoopRatio.p50}, p99 x${r.openLoopRatio.p99}`,
      met: r.drainRatio >= 0.95 && r.openLoopRatio.p50 <= 1.05 && r.openLoopRatio.p99 <= 1.05,
    },
  ];
}
