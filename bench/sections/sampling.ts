/**
 * The `sampling` section (Nexusflow, with `--tracing`; only when named): what the sampled share of
 * runs costs a drain, measured in one process. Sections 1 and 2 compare a run without telemetry
 * against one with it, two processes whose drains differ by 10-25% with no change at all on a
 * noisy machine (bench/notes/25-session-twenty-nine.md); here every drain runs in the same process
 * with tracing on, and only the caller's decision differs: each StartRun carries a `traceparent` of
 * a new trace, sampled for none of the runs or for every tenth, which the scheduler's
 * parent-based sampler follows, as it follows a traced caller's. So the comparison is the sampled
 * tenth's spans, contexts and export against the same propagation with nothing recorded
 * (`--tracing 0` costs what no tracing does: the notes). A warm-up drain (none sampled, not
 * counted), then {@link SAMPLING_ROUNDS} rounds of both, the order alternating, compared by medians.
 */
import { scaled } from "../lib/cli.js";
import { median } from "../lib/stats.js";
import { formatTable } from "../lib/table.js";
import { benchTracing } from "../lib/tracing.js";
import type { BenchContext } from "./context.js";
import { throughputPhase } from "./queue.js";

/** Drains of each kind compared. */
export const SAMPLING_ROUNDS = 4;
/** Runs of each drain at --scale 1. */
export const SAMPLING_TASKS = 20_000;
/** The sampled phases sample every this many runs (10%, the ratio). */
export const SAMPLED_EVERY = 10;

/** One drain of the section. */
export interface SamplingDrain {
  /** Share of runs sampled. */
  sampled: number;
  warmUp: boolean;
  tasks: number;
  tasksPerSecond: number;
  /** CPU ms per task of the bench process (scheduler, executors, their export threads) and PostgreSQL. */
  cpuMsPerTask: { benchProcess: number; postgres: number } | undefined;
  /** The bench process's CPU us per task by thread (Linux: lib/cpu.ts). */
  threadsUsPerTask: Record<string, number> | undefined;
}

/** Median CPU us per task of one group of threads in the drains with none and with a tenth sampled. */
export interface ThreadCost {
  thread: string;
  none: number;
  sampled: number;
}

/** Result of the section. */
export interface SamplingResult {
  drains: SamplingDrain[];
  /** Median drain rate with the sampled share over the median with none sampled. */
  drainRatio: number;
  /** The same for the bench process's CPU per task. */
  cpuRatio: number;
  /** Where the difference is: each group of threads' median CPU per task, by kind of drain. */
  threads: ThreadCost[];
}

/** Median of `f` over the counted drains with a sampled share (`sampled`) or with none. */
function medianOf(
  drains: readonly SamplingDrain[],
  sampled: boolean,
  f: (d: SamplingDrain) => number | undefined,
): number {
  return median(
    drains
      .filter((d) => !d.warmUp && d.sampled > 0 === sampled)
      .map(f)
      .filter((v): v is number => v !== undefined),
  );
}

/** {@link medianOf} the drains with a sampled share over those with none, to 3 decimals. */
function ratio(drains: readonly SamplingDrain[], f: (d: SamplingDrain) => number | undefined): number {
  return Math.round((medianOf(drains, true, f) / medianOf(drains, false, f)) * 1000) / 1000;
}

/** Runs the section (see the module comment). */
export async function samplingSection(ctx: BenchContext): Promise<SamplingResult> {
  if (benchTracing() === undefined)
    throw new Error("the sampling section needs tracing on: run it with --tracing (e.g. --tracing 0)");
  const n = scaled(SAMPLING_TASKS, ctx.options.scale, 100);
  const drain = async (every: number, warmUp: boolean): Promise<SamplingDrain> => {
    const sampled = every === 0 ? 0 : 1 / every;
    ctx.note(
      `  nexusflow: drain of ${n}, ${Math.round(sampled * 100)}% sampled${warmUp ? " (warm-up, not counted)" : ""}`,
    );
    const r = await throughputPhase(ctx, "nexusflow", n, undefined, () =>
      ctx.nexusflow(`sampling-${every}`, { sampledEvery: every }),
    );
    return {
      sampled,
      warmUp,
      tasks: r.tasks,
      tasksPerSecond: r.drain.tasksPerSecond,
      cpuMsPerTask: r.cpu.drain.perTaskMs,
      threadsUsPerTask: r.cpu.drain.threadsUsPerTask,
    };
  };
  const drains = [await drain(0, true)];
  for (let round = 0; round < SAMPLING_ROUNDS; round++) {
    const order = round % 2 === 0 ? [0, SAMPLED_EVERY] : [SAMPLED_EVERY, 0];
    for (const every of order) drains.push(await drain(every, false));
  }
  return {
    drains,
    drainRatio: ratio(drains, (d) => d.tasksPerSecond),
    cpuRatio: ratio(drains, (d) => d.cpuMsPerTask?.benchProcess),
    threads: threadCosts(drains),
  };
}

/** Each group of threads' median CPU per task over the counted drains of each kind. */
function threadCosts(drains: readonly SamplingDrain[]): ThreadCost[] {
  const groups = [...new Set(drains.flatMap((d) => Object.keys(d.threadsUsPerTask ?? {})))].sort();
  const of = (group: string, sampled: boolean): number =>
    Math.round(medianOf(drains, sampled, (d) => d.threadsUsPerTask?.[group] ?? 0) * 10) / 10;
  return groups.map((thread) => ({ thread, none: of(thread, false), sampled: of(thread, true) }));
}

/** The section's table. */
export function samplingTable(r: SamplingResult): string {
  return (
    "\nSampling: drains with none and a tenth of the runs sampled by their caller, tracing on, one process\n" +
    formatTable([
      ["sampled", "drain tasks/s", "CPU ms/task (bench process + pg)"],
      ...r.drains.map((d) => [
        `${Math.round(d.sampled * 100)}%${d.warmUp ? " (warm-up)" : ""}`,
        d.tasksPerSecond,
        d.cpuMsPerTask === undefined ? "-" : `${d.cpuMsPerTask.benchProcess} + ${d.cpuMsPerTask.postgres}`,
      ]),
    ]) +
    `\nmedians, sampled over none: drain ${r.drainRatio}, bench process CPU per task ${r.cpuRatio}\n` +
    (r.threads.length === 0
      ? ""
      : "\nCPU us per task by thread (medians)\n" +
        formatTable([
          ["thread", "none sampled", "10% sampled", "difference"],
          ...r.threads.map((t) => [t.thread, t.none, t.sampled, Math.round((t.sampled - t.none) * 10) / 10]),
        ]) +
        "\n")
  );
}
