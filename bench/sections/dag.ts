/**
 * Section 3: DAG shapes on Nexusflow. A wide fan-out/fan-in (makespan from StartRun to the run's
 * committed completion) and a long chain (per-hop: one step's handler start to the next one's).
 *
 * The shapes exactly: 1 -> 1000 -> 1 (one join over all 1,000 fan-out steps) and a chain of
 * 1,000 steps (the definition language allows 5,000 steps and joins over all of them).
 */
import { scaled } from "../lib/cli.js";
import type { BenchContext } from "../lib/context.js";
import { roundSummary, summarize, type Summary } from "../lib/stats.js";
import { NOOP_TYPE, workflowSpec } from "../systems/nexusflow.js";

/** Width of the fan-out. */
export const FAN_WIDTH = 1000;
/** Length of the chain. */
export const CHAIN_LENGTH = 1000;

/** Result of section 3. */
export interface DagResult {
  fanOut: {
    shape: string;
    width: number;
    steps: number;
    runs: number;
    /** StartRun call to committed completion, ms, per run. */
    makespanMs: number[];
    makespan: Summary;
    /** Group commits of the engine per run. */
    commitsPerRun: number;
    /** StartRun call to the root step's handler start, ms (median run). */
    firstStartMs: number;
    /** StartRun to the last fan-out handler start, ms (median run). */
    lastFanStartMs: number;
  };
  chain: {
    steps: number;
    makespanMs: number;
    /** Handler start of step k to handler start of step k+1, ms. */
    perHop: Summary;
    /** Group commits of the engine per hop. */
    commitsPerHop: number;
  };
}

/** Steps of 1 -> width -> 1: a root, `width` steps after it, and one join over all of them. */
export function fanOutSteps(width: number): unknown[] {
  const steps: unknown[] = [{ id: "root", type: NOOP_TYPE, input: { i: 0 } }];
  const fans: string[] = [];
  for (let k = 0; k < width; k++) {
    fans.push(`f${k}`);
    steps.push({ id: `f${k}`, type: NOOP_TYPE, dependsOn: ["root"], input: { i: k + 1 } });
  }
  steps.push({ id: "join", type: NOOP_TYPE, dependsOn: fans, input: { i: width + 1 } });
  return steps;
}

/** Steps of a chain s0 -> s1 -> ... */
export function chainSteps(length: number): unknown[] {
  return Array.from({ length }, (_, k) => ({
    id: `s${k}`,
    type: NOOP_TYPE,
    input: { i: k },
    ...(k === 0 ? {} : { dependsOn: [`s${k - 1}`] }),
  }));
}

/** Runs section 3. */
export async function dagSection(ctx: BenchContext): Promise<DagResult> {
  const width = scaled(FAN_WIDTH, ctx.options.scale, 10);
  const length = scaled(CHAIN_LENGTH, ctx.options.scale, 10);
  const runs = ctx.options.scale < 0.5 ? 2 : 5;
  const nf = await ctx.nexusflow("dag");
  await ctx.prepare(nf);
  await nf.start();
  try {
    const fan = fanOutSteps(width);
    await nf.register(workflowSpec("bench-fan", fan));
    await nf.register(workflowSpec("bench-chain", chainSteps(length)));
    await nf.startConsumers();

    ctx.note(`  fan-out 1 -> ${width} -> 1, ${runs} runs`);
    const makespans: number[] = [];
    const lastFan: number[] = [];
    const firstStart: number[] = [];
    const fc0 = nf.writerStats().commits;
    await ctx.profiled("nexusflow-fan-out", async () => {
      for (let r = 0; r < runs; r++) {
        nf.recorder.reset(fan.length);
        const t0 = performance.now();
        const runId = await nf.startRun("bench-fan", {});
        await nf.finished(runId, 120_000);
        makespans.push(performance.now() - t0);
        let last = 0;
        for (let k = 1; k <= width; k++) last = Math.max(last, nf.recorder.starts[k] as number);
        lastFan.push(last - t0);
        firstStart.push((nf.recorder.starts[0] as number) - t0);
      }
    });

    const fanCommits = (nf.writerStats().commits - fc0) / runs;
    ctx.note(`  chain of ${length}`);
    nf.recorder.reset(length);
    const cc0 = nf.writerStats().commits;
    const chain = await ctx.profiled("nexusflow-chain", async () => {
      const t0 = performance.now();
      const runId = await nf.startRun("bench-chain", {});
      await nf.finished(runId, 300_000);
      return performance.now() - t0;
    });
    const chainCommits = nf.writerStats().commits - cc0;
    const hops: number[] = [];
    for (let k = 1; k < length; k++)
      hops.push((nf.recorder.starts[k] as number) - (nf.recorder.starts[k - 1] as number));
    const sortedMakespans = [...makespans].sort((a, b) => a - b);
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
    return {
      fanOut: {
        shape: `1 -> ${width} -> 1`,
        width,
        steps: fan.length,
        runs,
        makespanMs: makespans.map((m) => Math.round(m * 10) / 10),
        makespan: roundSummary(summarize(sortedMakespans)),
        commitsPerRun: Math.round(fanCommits * 10) / 10,
        firstStartMs: Math.round(median(firstStart) * 10) / 10,
        lastFanStartMs: Math.round(median(lastFan) * 10) / 10,
      },
      chain: {
        steps: length,
        makespanMs: Math.round(chain),
        perHop: roundSummary(summarize(hops.filter((h) => !Number.isNaN(h)))),
        commitsPerHop: Math.round((chainCommits / Math.max(1, length - 1)) * 100) / 100,
      },
    };
  } finally {
    await nf.stop();
  }
}
