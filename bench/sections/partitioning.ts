/**
 * Section `partitioning` (`--only partitioning`, not part of the default run; issue #22): what
 * cluster mode costs a scheduler that is alone, measured with the harness of sections 1 and 2 (the
 * scheduler and four executors x 256 slots in this process, as the figures of the README's table):
 * the no-op drain of 20,000 runs and the 1,000/s open loop, each with `cluster` off (the
 * one-per-database lock, every run this scheduler's) and on (one replica holding all 16
 * partitions: the fence in every commit, the partition heartbeat, run ids drawn in held
 * partitions). After a warm-up (not counted), rounds of one phase of each mode, back to back, the
 * order reversed every other round, so that neither the process warming up nor a drift of the
 * machine favours one; each ratio is the median over the rounds of that round's ratio.
 */
import { scaled } from "../lib/cli.js";
import { median, round3, roundRatios } from "../lib/stats.js";
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
  /** The round (from 1; 0 for the warm-up). */
  round: number;
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
  /** The round (from 1; 0 for the warm-up). */
  round: number;
  mode: SchedulerMode;
  warmUp: boolean;
}

/** Result of the section. */
export interface PartitioningResult {
  drains: PartitioningDrain[];
  openLoops: PartitioningOpenLoop[];
  /** Median over the rounds of each round's cluster-1 over sole, to 3 decimals. */
  drainRatio: number;
  openLoopRatio: { p50: number; p99: number };
}

/**
 * Rounds after the warm-up at --scale 0.5 and above (two below). A phase's p99 rests on its slowest
 * hundred starts, so one hiccup of the machine moves it by half: two rounds by their means let one
 * phase decide; four rounds with sole always first, compared by the medians of each mode's phases,
 * gave p99 ratios from x0.68 to x1.35 between runs of the same code (bench/notes 28). Now eight
 * rounds, the order reversed every other round, each round's ratio taken and their median.
 */
export const PARTITIONING_ROUNDS = 8;

/**
 * A warm-up (sole, not counted), then `rounds` rounds of one phase of each mode, sole first in odd
 * rounds and cluster-1 first in even ones.
 */
async function alternate<T>(
  rounds: number,
  phase: (mode: SchedulerMode, round: number) => Promise<T>,
): Promise<T[]> {
  const out = [await phase("sole", 0)];
  for (let round = 1; round <= rounds; round++)
    for (const mode of round % 2 === 1 ? (["sole", "cluster-1"] as const) : (["cluster-1", "sole"] as const))
      out.push(await phase(mode, round));
  return out;
}

/** The median over the rounds (warm-up left out) of cluster-1's `f` over sole's, to 3 decimals. */
export function clusterOverSole<T extends { round: number; mode: SchedulerMode; warmUp: boolean }>(
  xs: readonly T[],
  f: (x: T) => number,
): number {
  const counted = xs.filter((x) => !x.warmUp);
  return round3(
    median(
      roundRatios(
        counted,
        (x) => x.mode === "cluster-1",
        (x) => x.mode === "sole",
        f,
      ),
    ),
  );
}

/** Runs the section (see the module comment). */
export async function partitioningSection(ctx: BenchContext): Promise<PartitioningResult> {
  const n = scaled(PARTITIONING_TASKS, ctx.options.scale, 100);
  const options = (mode: SchedulerMode) => (mode === "cluster-1" ? { cluster: true } : {});
  const rounds = ctx.options.scale < 0.5 ? 2 : PARTITIONING_ROUNDS;
  const drains = await alternate(rounds, async (mode, round): Promise<PartitioningDrain> => {
    const warmUp = round === 0;
    ctx.note(`  nexusflow: drain of ${n}, ${mode}${warmUp ? " (warm-up, not counted)" : ""}`);
    const r = await throughputPhase(ctx, "nexusflow", n, undefined, () =>
      ctx.nexusflow(`part-${mode}`, options(mode)),
    );
    return {
      round,
      mode,
      warmUp,
      tasks: r.tasks,
      tasksPerSecond: r.drain.tasksPerSecond,
      cpuMsPerTask: r.cpu.drain.perTaskMs,
      groupCommits: r.groupCommits?.drain,
    };
  });
  const seconds = Math.max(2, Math.round(PARTITIONING_SECONDS * Math.min(1, ctx.options.scale)));
  const openLoops = await alternate(rounds, async (mode, round): Promise<PartitioningOpenLoop> => {
    const warmUp = round === 0;
    ctx.note(
      `  nexusflow: open loop ${PARTITIONING_RATE}/s, ${mode}${warmUp ? " (warm-up, not counted)" : ""}`,
    );
    const r = await latencyPhase(ctx, "nexusflow", PARTITIONING_RATE, seconds, () =>
      ctx.nexusflow(`part-lat-${mode}`, options(mode)),
    );
    return { round, mode, warmUp, ...openLoopFigures(r) };
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
  const label = (x: { round: number; mode: SchedulerMode; warmUp: boolean }): string =>
    x.warmUp ? `${x.mode} (warm-up)` : `${x.round} ${x.mode}`;
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
    `\ncluster-1 over sole (medians of the rounds' ratios): drain ${r.drainRatio}, open loop p50 ${r.openLoopRatio.p50}, p99 ${r.openLoopRatio.p99}\n`
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
