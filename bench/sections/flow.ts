/**
 * Section 9: what flow control costs when it does not bind (issue #27), Nexusflow only. The no-op
 * drain of section 1, run again with the no-op step declaring a concurrency limit keyed by the
 * run's input (every run its own key: as many distinct keys as tasks, each with a limit of 1) and a
 * rate limit whose bucket never runs dry. Every task then goes through both gates (a key's slot taken
 * and given back, a bucket's tokens taken, both written in the commit of its lease) without ever
 * waiting at one: the difference with the plain drain is the gates' own cost. The keyed drain's
 * rate is also the scheduler's decisions per second with that many distinct keys.
 */
import { scaled } from "../lib/cli.js";
import { formatTable } from "../lib/table.js";
import type { BenchContext } from "./context.js";
import { throughputPhase, type ThroughputResult } from "./queue.js";

/** Tasks per drain. */
export const FLOW_TASKS = 20_000;

/** The step fields of the gated variant. */
export const GATES = {
  concurrency: [{ key: "input.i", limit: 1 }],
  rateLimits: [{ name: "bench-unbound", rate: 1_000_000, per: "1s", burst: 1_000_000 }],
};

/** One drain of section 9. */
export interface FlowVariant {
  variant: "plain" | "gated";
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

/** Section 9's results. */
export interface FlowResult {
  variants: FlowVariant[];
  /** Gated drain rate over plain. */
  drainRatio: number;
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

/** Runs section 9: the plain drain, then the gated one, then the plain one again (drift check). */
export async function flowSection(ctx: BenchContext): Promise<FlowResult> {
  const n = scaled(FLOW_TASKS, ctx.options.scale, 100);
  const plain = () => throughputPhase(ctx, "nexusflow", n, undefined, () => ctx.nexusflow("flow"));
  ctx.note(`  nexusflow: plain drain of ${n}`);
  const first = variantOf("plain", "nothing", 0, await plain());
  ctx.note(`  nexusflow: drain of ${n} with a concurrency key and a rate limit (not binding)`);
  const gatedRun = await throughputPhase(ctx, "nexusflow", n, undefined, () =>
    ctx.nexusflow("flow", { noopStep: GATES }),
  );
  const gated = variantOf("gated", "concurrency key input.i (limit 1) + rate limit 1,000,000/s", n, gatedRun);
  ctx.note(`  nexusflow: plain drain of ${n} again`);
  const second = variantOf("plain", "nothing (again)", 0, await plain());
  const plainRate = (first.tasksPerSecond + second.tasksPerSecond) / 2;
  return {
    variants: [first, gated, second],
    drainRatio: Math.round((gated.tasksPerSecond / plainRate) * 1000) / 1000,
  };
}

/** The section's table. */
export function flowTable(r: FlowResult): string {
  return (
    "\n9. Flow control that does not bind (Nexusflow: the no-op drain with and without gates)\n" +
    formatTable([
      ["step declares", "tasks", "distinct keys", "drain tasks/s", "CPU ms/task (node+pg)", "group commits"],
      ...r.variants.map((v) => [
        v.declared,
        v.tasks,
        v.distinctKeys,
        v.tasksPerSecond,
        v.cpuMsPerTask === undefined ? "-" : `${v.cpuMsPerTask.benchProcess} + ${v.cpuMsPerTask.postgres}`,
        v.groupCommits ?? "-",
      ]),
    ]) +
    `\ngated drain / plain drain (mean of both plain runs): ${r.drainRatio}`
  );
}

/** The target this section measures. */
export function flowTargets(
  r: FlowResult,
): { target: string; goal: string; measured: string; met: boolean }[] {
  return [
    {
      target: "drain with a concurrency key and a rate limit declared (not binding)",
      goal: "within 10% of the plain drain",
      measured: `${Math.round(r.drainRatio * 100)}% of plain (${r.variants.map((v) => v.tasksPerSecond).join(" / ")} tasks/s)`,
      met: r.drainRatio >= 0.9,
    },
  ];
}
