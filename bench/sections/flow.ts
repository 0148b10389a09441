/**
 * Section 9: what flow control costs when it does not bind (issue #27), Nexusflow only. The no-op
 * drain of section 1, run again with the no-op step declaring a concurrency limit keyed by the
 * run's input (every run its own key: as many distinct keys as tasks, each with a limit of 1) and a
 * rate limit whose bucket never runs dry. Every task then goes through both gates (a key's slot taken
 * and given back, a bucket's tokens taken, both written in the commit of its lease) without ever
 * waiting at one: the difference with the plain drain is the gates' own cost. The keyed drain's
 * rate is also the scheduler's decisions per second with that many distinct keys. After a warm-up
 * drain (not counted), plain, gated, plain, gated, compared by the means of each, so that neither
 * the process warming up nor a drift of the machine favours one. Then the 1,000/s open loop of
 * section 2 the same way (plain, gated, plain, gated): every run its own key again, so the gates
 * are evaluated, taken and written for each task and never make one wait.
 */
import { scaled } from "../lib/cli.js";
import { formatTable } from "../lib/table.js";
import type { BenchContext } from "./context.js";
import {
  latencyPhase,
  openLoopFigures,
  throughputPhase,
  type LatencyResult,
  type OpenLoopFigures,
  type ThroughputResult,
} from "./queue.js";

/** Tasks per drain. */
export const FLOW_TASKS = 20_000;

/** The step fields of the gated variant. */
export const GATES = {
  concurrency: [{ key: "input.i", limit: 1 }],
  rateLimits: [{ name: "bench-unbound", rate: 1_000_000, per: "1s", burst: 1_000_000 }],
};

/** One drain of section 9. */
export interface FlowVariant {
  variant: "plain" | "gated" | "warm-up";
  /** What the step declared. */
  declared: string;
  tasks: number;
  /** Distinct concurrency keys (0: none declared). */
  distinctKeys: number;
  tasksPerSecond: number;
  /** CPU ms per task of the bench process (scheduler and executors) and of PostgreSQL. */
  cpuMsPerTask: { benchProcess: number; postgres: number } | undefined;
  groupCommits: number | undefined;
}

/** One open-loop phase of section 9. */
export interface FlowOpenLoop extends OpenLoopFigures {
  variant: "plain" | "gated" | "warm-up";
  declared: string;
}

/** Open-loop rate of section 9, per second, and its length. */
export const FLOW_RATE = 1_000;
export const FLOW_SECONDS = 10;

/** Section 9's results. */
export interface FlowResult {
  /** The first drain of the section, not counted (absent in results from before it). */
  warmUp?: FlowVariant;
  /** Plain, gated, plain, gated (plain, gated, plain in results from before the warm-up). */
  variants: FlowVariant[];
  /** Mean gated drain rate over the mean plain one. */
  drainRatio: number;
  /** The first open loop, not counted (absent in results from before it). */
  openWarmUp?: FlowOpenLoop;
  /** The 1,000/s open loop: plain, gated, plain, gated (absent in results from before it). */
  openLoop?: FlowOpenLoop[];
  /** Mean gated p50 and p99 over the mean plain ones (1.0: the same). */
  openLoopRatio?: { p50: number; p99: number };
}

function variantOf(
  variant: FlowVariant["variant"],
  declared: string,
  keys: number,
  r: ThroughputResult,
): FlowVariant {
  return {
    variant,
    declared,
    tasks: r.tasks,
    distinctKeys: keys,
    tasksPerSecond: r.drain.tasksPerSecond,
    cpuMsPerTask: r.cpu.drain.perTaskMs,
    groupCommits: r.groupCommits?.drain,
  };
}

/** The declared gates of the gated phases. */
const DECLARED = "concurrency key input.i (limit 1) + rate limit 1,000,000/s";

/**
 * A warm-up phase (the first of a kind in a process pays for its JIT and caches; not counted),
 * then plain, gated, plain, gated, so that neither the process warming up nor a drift of the
 * machine favours one.
 */
async function alternate<T>(
  phase: (variant: FlowVariant["variant"], declared: string) => Promise<T>,
): Promise<{ warmUp: T; measured: T[] }> {
  const warmUp = await phase("warm-up", "nothing (warm-up, not counted)");
  const measured = [
    await phase("plain", "nothing"),
    await phase("gated", DECLARED),
    await phase("plain", "nothing (again)"),
    await phase("gated", `${DECLARED} (again)`),
  ];
  return { warmUp, measured };
}

/** The mean gated `f` over the mean plain one, to 3 decimals. */
function gatedOverPlain<T extends { variant: FlowVariant["variant"] }>(xs: T[], f: (x: T) => number): number {
  const mean = (v: "plain" | "gated"): number => {
    const of = xs.filter((x) => x.variant === v).map(f);
    return of.reduce((a, b) => a + b, 0) / of.length;
  };
  return Math.round((mean("gated") / mean("plain")) * 1000) / 1000;
}

/**
 * Runs section 9: the drains, then the open loops, each as {@link alternate} runs them; the ratios
 * compare the means of the two of each.
 */
export async function flowSection(ctx: BenchContext): Promise<FlowResult> {
  const n = scaled(FLOW_TASKS, ctx.options.scale, 100);
  const fields = (variant: FlowVariant["variant"]) => (variant === "gated" ? { noopStep: GATES } : {});
  const drains = await alternate(async (variant, declared) => {
    ctx.note(`  nexusflow: drain of ${n}, ${declared}`);
    const r = await throughputPhase(ctx, "nexusflow", n, undefined, () =>
      ctx.nexusflow("flow", fields(variant)),
    );
    return variantOf(variant, declared, variant === "gated" ? n : 0, r);
  });

  const seconds = Math.max(2, Math.round(FLOW_SECONDS * Math.min(1, ctx.options.scale)));
  // The first open loop after the drains was always the worst (p99 58-230 ms against 15-20):
  // a warm-up phase, not counted, as for the drains.
  const opens = await alternate(async (variant, declared): Promise<FlowOpenLoop> => {
    ctx.note(`  nexusflow: open loop ${FLOW_RATE}/s, ${declared}`);
    const r: LatencyResult = await latencyPhase(ctx, "nexusflow", FLOW_RATE, seconds, () =>
      ctx.nexusflow(`flow-lat-${variant}`, fields(variant)),
    );
    return { variant, declared, ...openLoopFigures(r) };
  });
  return {
    warmUp: drains.warmUp,
    variants: drains.measured,
    drainRatio: gatedOverPlain(drains.measured, (v) => v.tasksPerSecond),
    openWarmUp: opens.warmUp,
    openLoop: opens.measured,
    openLoopRatio: {
      p50: gatedOverPlain(opens.measured, (o) => o.p50),
      p99: gatedOverPlain(opens.measured, (o) => o.p99),
    },
  };
}

/** The section's table. */
export function flowTable(r: FlowResult): string {
  return (
    "\n9. Flow control that does not bind (Nexusflow: the no-op drain with and without gates)\n" +
    formatTable([
      ["step declares", "tasks", "distinct keys", "drain tasks/s", "CPU ms/task (node+pg)", "group commits"],
      ...(r.warmUp === undefined ? [] : [r.warmUp])
        .concat(r.variants)
        .map((v) => [
          v.declared,
          v.tasks,
          v.distinctKeys,
          v.tasksPerSecond,
          v.cpuMsPerTask === undefined ? "-" : `${v.cpuMsPerTask.benchProcess} + ${v.cpuMsPerTask.postgres}`,
          v.groupCommits ?? "-",
        ]),
    ]) +
    `\ngated drain / plain drain (means of the two of each; after a warm-up drain not counted): ${r.drainRatio}` +
    (r.openLoop === undefined
      ? ""
      : "\n" +
        formatTable([
          ["open loop, step declares", "rate/s", "runs", "p50 ms", "p99 ms", "achieved/s", "not started"],
          ...(r.openWarmUp === undefined ? [] : [r.openWarmUp])
            .concat(r.openLoop)
            .map((o) => [o.declared, o.rate, o.runs, o.p50, o.p99, o.achievedPerSecond, o.notStarted]),
        ]) +
        `\ngated / plain (means of the two of each): p50 ${r.openLoopRatio?.p50}, p99 ${r.openLoopRatio?.p99}`)
  );
}

/** The issue's target this section measures. */
export function flowTargets(
  r: FlowResult,
): { target: string; goal: string; measured: string; met: boolean }[] {
  return [
    {
      target: "drain with a concurrency key and a rate limit declared (not binding)",
      goal: "within 10% of the plain drain",
      measured: `${Math.round(r.drainRatio * 100)}% of plain (${r.variants.map((v) => `${v.variant} ${v.tasksPerSecond}`).join(" / ")} tasks/s)`,
      met: r.drainRatio >= 0.9,
    },
    ...(r.openLoop === undefined || r.openLoopRatio === undefined
      ? []
      : [
          {
            target: `open loop ${FLOW_RATE}/s with a concurrency key and a rate limit declared (not binding)`,
            goal: "p50 and p99 within 10% of the plain open loop",
            measured: `p50 ${r.openLoop.map((o) => o.p50).join(" / ")} ms, p99 ${r.openLoop.map((o) => o.p99).join(" / ")} ms (plain / gated / plain / gated)`,
            met: r.openLoopRatio.p50 <= 1.1 && r.openLoopRatio.p99 <= 1.1,
          },
        ]),
  ];
}
