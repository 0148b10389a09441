/**
 * Section 3: DAG shapes, on each selected system that has a workflow model (Nexusflow, DBOS). A wide
 * fan-out/fan-in (makespan from the start call to the run's committed completion) and a long chain
 * (per hop: one step's handler start to the next one's).
 *
 * The shapes exactly: 1 -> 1000 -> 1 (one join over all 1,000 fan-out steps) and a chain of
 * 1,000 steps. Nexusflow runs them as workflow definitions (5,000 steps allowed, joins over all of
 * them) whose tasks its executors run; DBOS as workflow code: a chain is one workflow running its steps
 * in turn, a fan-out a workflow starting one child workflow per branch on a queue, awaiting their
 * handles, then running the join step.
 */
import { scaled } from "../lib/cli.js";
import type { BenchContext } from "./context.js";
import { roundSummary, summarize, type Summary } from "../lib/stats.js";
import type { DbosShapes, DbosSystem } from "../systems/dbos.js";
import { NOOP_TYPE, workflowSpec, type NexusflowSystem } from "../systems/nexusflow.js";
import type { StartRecorder } from "../systems/types.js";

/** Width of the fan-out. */
export const FAN_WIDTH = 1000;
/** Length of the chain. */
export const CHAIN_LENGTH = 1000;

/** The systems section 3 runs (those with a workflow model), in this order. */
export const DAG_SYSTEMS = ["nexusflow", "dbos"] as const;
/** One of them. */
export type DagSystemName = (typeof DAG_SYSTEMS)[number];

/** Section 3's results for one system. */
export interface DagShapesResult {
  system: DagSystemName;
  /** The settings it ran with. */
  settings: Record<string, unknown>;
  fanOut: {
    shape: string;
    width: number;
    steps: number;
    runs: number;
    /** Start call to committed completion, ms, per run. */
    makespanMs: number[];
    makespan: Summary;
    /** PostgreSQL statements per run (pg_stat_statements, top level; background queries included). */
    statementsPerRun: number;
    /** Nexusflow only: group commits of the engine per run. */
    commitsPerRun?: number;
    /** Start call to the root step's handler start, ms (median run). */
    firstStartMs: number;
    /** Start call to the last fan-out handler start, ms (median run). */
    lastFanStartMs: number;
  };
  chain: {
    steps: number;
    makespanMs: number;
    /** Handler start of step k to handler start of step k+1, ms. */
    perHop: Summary;
    /** PostgreSQL statements per hop (pg_stat_statements, top level; background queries included). */
    statementsPerHop: number;
    /** Nexusflow only: group commits of the engine per hop. */
    commitsPerHop?: number;
  };
}

/** Section 3's results: one entry per system run. */
export type DagResult = DagShapesResult[];

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

/** What differs between systems: how a shape is run, and what else is counted. */
interface ShapeRunner {
  readonly recorder: StartRecorder;
  readonly database: string;
  /** Runs the fan-out once; resolves at its committed completion. */
  fanOut(): Promise<void>;
  /** Runs the chain once; resolves at its committed completion. */
  chain(): Promise<void>;
  /** The engine's group commits so far (Nexusflow). */
  commits?(): number;
}

/** Runs section 3 on the selected systems that have a workflow model. */
export async function dagSection(ctx: BenchContext): Promise<DagResult> {
  const out: DagResult = [];
  for (const name of DAG_SYSTEMS) {
    if (!ctx.options.systems.includes(name)) continue;
    out.push(name === "nexusflow" ? await nexusflowShapes(ctx) : await dbosShapes(ctx));
  }
  if (out.length === 0) ctx.note(`  no system with a workflow model selected (${DAG_SYSTEMS.join(", ")})`);
  return out;
}

function sizes(ctx: BenchContext): { width: number; length: number; runs: number } {
  return {
    width: scaled(FAN_WIDTH, ctx.options.scale, 10),
    length: scaled(CHAIN_LENGTH, ctx.options.scale, 10),
    runs: ctx.options.scale < 0.5 ? 2 : 5,
  };
}

async function nexusflowShapes(ctx: BenchContext): Promise<DagShapesResult> {
  const { width, length } = sizes(ctx);
  const nf: NexusflowSystem = await ctx.nexusflow("dag");
  await ctx.prepare(nf);
  await nf.start();
  try {
    await nf.register(workflowSpec("bench-fan", fanOutSteps(width)));
    await nf.register(workflowSpec("bench-chain", chainSteps(length)));
    await nf.startConsumers();
    const runner: ShapeRunner = {
      recorder: nf.recorder,
      database: nf.database,
      fanOut: async () => nf.finished(await nf.startRun("bench-fan", {}), 120_000),
      chain: async () => nf.finished(await nf.startRun("bench-chain", {}), 300_000),
      commits: () => nf.writerStats().commits,
    };
    return await measureShapes(ctx, "nexusflow", nf.settings, runner);
  } finally {
    await nf.stop();
  }
}

async function dbosShapes(ctx: BenchContext): Promise<DagShapesResult> {
  const dbos: DbosSystem = await ctx.dbos("dag");
  await ctx.prepare(dbos);
  await dbos.start();
  try {
    await dbos.startConsumers();
    const { width, length } = sizes(ctx);
    const shapes: DbosShapes = dbos.dagShapes;
    const runner: ShapeRunner = {
      recorder: dbos.recorder,
      database: dbos.database,
      fanOut: () => shapes.fanOut(width),
      chain: () => shapes.chain(length),
    };
    return await measureShapes(ctx, "dbos", dbos.settings, runner);
  } finally {
    await dbos.stop();
  }
}

/** The fan-out `runs` times, then the chain once, on a started system. */
async function measureShapes(
  ctx: BenchContext,
  system: DagSystemName,
  settings: Record<string, unknown>,
  runner: ShapeRunner,
): Promise<DagShapesResult> {
  const { width, length, runs } = sizes(ctx);
  const { recorder } = runner;
  ctx.note(`  ${system}: fan-out 1 -> ${width} -> 1, ${runs} runs`);
  const makespans: number[] = [];
  const lastFan: number[] = [];
  const firstStart: number[] = [];
  const fc0 = runner.commits?.();
  await ctx.pg.resetStatements();
  await ctx.profiled(`${system}-fan-out`, async () => {
    for (let r = 0; r < runs; r++) {
      recorder.reset(width + 2);
      const t0 = performance.now();
      await runner.fanOut();
      makespans.push(performance.now() - t0);
      let last = 0;
      for (let k = 1; k <= width; k++) last = Math.max(last, recorder.starts[k] as number);
      lastFan.push(last - t0);
      firstStart.push((recorder.starts[0] as number) - t0);
    }
  });
  const fanStatements = (await ctx.pg.statementCalls(runner.database)) / runs;
  const fc1 = runner.commits?.();

  ctx.note(`  ${system}: chain of ${length}`);
  recorder.reset(length);
  await ctx.pg.resetStatements();
  const chain = await ctx.profiled(`${system}-chain`, async () => {
    const t0 = performance.now();
    await runner.chain();
    return performance.now() - t0;
  });
  const chainStatements = await ctx.pg.statementCalls(runner.database);
  const cc1 = runner.commits?.();
  const hops: number[] = [];
  for (let k = 1; k < length; k++)
    hops.push((recorder.starts[k] as number) - (recorder.starts[k - 1] as number));
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  const perHop = (v: number): number => Math.round((v / Math.max(1, length - 1)) * 100) / 100;
  return {
    system,
    settings,
    fanOut: {
      shape: `1 -> ${width} -> 1`,
      width,
      steps: width + 2,
      runs,
      makespanMs: makespans.map((m) => Math.round(m * 10) / 10),
      makespan: roundSummary(summarize(makespans)),
      statementsPerRun: Math.round(fanStatements * 10) / 10,
      ...(fc0 === undefined || fc1 === undefined
        ? {}
        : { commitsPerRun: Math.round(((fc1 - fc0) / runs) * 10) / 10 }),
      firstStartMs: Math.round(median(firstStart) * 10) / 10,
      lastFanStartMs: Math.round(median(lastFan) * 10) / 10,
    },
    chain: {
      steps: length,
      makespanMs: Math.round(chain),
      perHop: roundSummary(summarize(hops.filter((h) => !Number.isNaN(h)))),
      statementsPerHop: perHop(chainStatements),
      ...(fc1 === undefined || cc1 === undefined ? {} : { commitsPerHop: perHop(cc1 - fc1) }),
    },
  };
}
