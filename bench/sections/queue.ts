/**
 * Sections 1 and 2 (and the measurements section 5 reports): no-op throughput and open-loop
 * schedule-to-start latency, for Nexusflow and the peers, with PostgreSQL cost per task.
 */
import type { SystemName } from "../lib/cli.js";
import { phaseCost, type BenchContext, type PhaseCost } from "./context.js";
import type { CpuUsage } from "../lib/cpu.js";
import { type GcPauses, watchGcPauses } from "../lib/gc-pauses.js";
import { closedLoop, openLoop, type OpenLoopResult } from "../lib/loops.js";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { roundSummary, summarize, type Summary } from "../lib/stats.js";
import { NexusflowSystem } from "../systems/nexusflow.js";
import type { QueueSystem } from "../systems/types.js";

/** Concurrent StartRun / send / addJob calls in flight while pre-loading. */
export const ENQUEUE_CONCURRENCY = 64;

/** Result of one throughput phase. */
export interface ThroughputResult {
  system: SystemName;
  tasks: number;
  settings: Record<string, unknown>;
  /** `batch`: jobs per call of the bulk API (bulk section); absent: one job per call. */
  enqueue: { seconds: number; perSecond: number; concurrency: number; batch?: number };
  /**
   * `mainThreadGc`: the collections that paused the main thread (the scheduler's, for Nexusflow);
   * `heapAtStartMiB`: its heap going in (what was left of the enqueue).
   */
  drain: { seconds: number; tasksPerSecond: number; mainThreadGc: GcPauses; heapAtStartMiB: number };
  cost: PhaseCost;
  /** CPU of the enqueue and of the drain. */
  cpu: { enqueue: CpuUsage; drain: CpuUsage };
  /** pg_stat_statements of the enqueue and the drain, most called first. */
  statements: { enqueue: PhaseCost["statements"]; drain: PhaseCost["statements"] };
  /** Nexusflow only: group commits of the engine during the drain. */
  groupCommits?: { enqueue: number; drain: number };
}

/** Result of one open-loop phase. */
export interface LatencyResult {
  system: SystemName;
  rate: number;
  runs: number;
  seconds: number;
  warmupDiscarded: number;
  /** Intended send time (fixed schedule) to handler start, ms. */
  scheduleToStart: Summary;
  /** Actual send time to handler start, ms (hides the harness's own lag). */
  sendToStart: Summary;
  /** How late the harness sent, ms (its own jitter on a shared CPU). */
  sendLag: Summary;
  achievedPerSecond: number;
  /**
   * Garbage-collection pauses of the bench process's main thread during the phase (warm-up
   * included): the scheduler's thread for Nexusflow, the workers' for the peers.
   */
  mainThreadGc: GcPauses;
  /**
   * The same for the system's worker threads, when it has any (Nexusflow: the StartRun client's
   * during the sends, the executors' while attached).
   */
  workerThreadGc?: Record<string, GcPauses>;
  /** Sends that failed (of all runs, warm-up included). */
  failedSends: number;
  /** First failure message, if any. */
  firstError?: string;
  /** Measured runs whose handler never started (failed sends that created nothing, or lost). */
  notStarted: number;
  cost: PhaseCost;
  cpu: CpuUsage;
  /**
   * What to look at when a phase has a tail the others lack: the slowest measured start (when its
   * send was due, in seconds into the phase, and its latency), the longest the bench process's main
   * thread's event loop was held (the scheduler's thread for Nexusflow: a stall there shows here, one
   * in PostgreSQL does not), and the checkpoints PostgreSQL completed meanwhile (null: not known).
   */
  stall: {
    slowestAtSecond: number;
    slowestMs: number;
    mainThreadLoopDelayMaxMs: number;
    /** The longest garbage-collection pause of the main thread, of either kind, ms. */
    mainThreadGcMaxMs: number;
    /** The main thread's heap in use when the phase began, MiB (what earlier phases left). */
    heapUsedAtStartMiB: number;
    checkpoints: number | null;
  };
}

/** Section 1 for one system: pre-load `n` no-op jobs, then measure how fast consumers drain them. */
export async function throughputPhase(
  ctx: BenchContext,
  name: SystemName,
  n: number,
  bulk?: { batch: number; concurrency: number },
  make: () => Promise<QueueSystem> = () => ctx.system(name, "tp"),
): Promise<ThroughputResult> {
  const system = await make();
  await ctx.prepare(system);
  const before = await ctx.counters(system.database);
  await ctx.pg.resetStatements();
  await system.start();
  const stopOnFailure = async (e: unknown): Promise<never> => {
    await system.stop().catch(() => undefined);
    throw e;
  };
  system.recorder.reset(n);
  const nf = system instanceof NexusflowSystem ? system : undefined;
  const c0 = nf?.writerStats().commits ?? 0;
  const concurrency = bulk?.concurrency ?? ENQUEUE_CONCURRENCY;
  ctx.note(
    `  ${name}: enqueue ${n} (${concurrency} calls in flight${bulk === undefined ? "" : `, ${bulk.batch} per call`})`,
  );
  const e0 = performance.now();
  const cpuE = ctx.cpu();
  const enqueue = (): Promise<void> => {
    if (bulk !== undefined) {
      const bulkEnqueue = system.bulkEnqueue?.bind(system);
      if (bulkEnqueue === undefined) throw new Error(`${name} has no bulk enqueue`);
      const calls = Math.ceil(n / bulk.batch);
      return closedLoop(calls, concurrency, (c) =>
        bulkEnqueue(c * bulk.batch, Math.min(bulk.batch, n - c * bulk.batch)),
      );
    }
    return system.preload !== undefined
      ? system.preload(n, concurrency)
      : closedLoop(n, concurrency, (i) => system.enqueue(i));
  };
  await ctx.profiled(`${name}-enqueue`, enqueue).catch(stopOnFailure);
  const enqueueSeconds = (performance.now() - e0) / 1000;
  const cpuEnqueue = ctx.cpuSince(cpuE, n);
  const enqueueCalls = await ctx.pg.statementCalls(system.database);
  const enqueueStatements = await ctx.pg.statements(system.database);
  await ctx.pg.resetStatements();
  const c1 = nf?.writerStats().commits ?? 0;
  ctx.note(`  ${name}: drain`);
  const d0 = performance.now();
  const cpuD = ctx.cpu();
  const heapAtStartMiB = Math.round(process.memoryUsage().heapUsed / 1048576);
  const drainGc = watchGcPauses();
  await ctx
    .profiled(`${name}-drain`, async () => {
      await system.startConsumers();
      await system.drained(120_000 + n * 5);
    })
    .catch((e: unknown) => {
      drainGc.stop();
      return stopOnFailure(e);
    });
  const drainSeconds = (performance.now() - d0) / 1000;
  const cpuDrain = ctx.cpuSince(cpuD, n);
  const mainThreadGc = drainGc.stop();
  const c2 = nf?.writerStats().commits ?? 0;
  const drainCalls = await ctx.pg.statementCalls(system.database);
  const drainStatements = await ctx.pg.statements(system.database);
  await system.stop();
  await ctx.quiesce(system.database);
  const after = await ctx.counters(system.database);
  const result: ThroughputResult = {
    system: name,
    tasks: n,
    settings: system.settings,
    enqueue: {
      seconds: round3(enqueueSeconds),
      perSecond: Math.round(n / enqueueSeconds),
      concurrency,
      ...(bulk === undefined ? {} : { batch: bulk.batch }),
    },
    drain: {
      seconds: round3(drainSeconds),
      tasksPerSecond: Math.round(n / drainSeconds),
      mainThreadGc,
      heapAtStartMiB,
    },
    cost: phaseCost(n, before, after, enqueueCalls + drainCalls, system.probeQueries ?? 0, []),
    cpu: { enqueue: cpuEnqueue, drain: cpuDrain },
    statements: { enqueue: enqueueStatements, drain: drainStatements },
  };
  if (nf !== undefined) result.groupCommits = { enqueue: c1 - c0, drain: c2 - c1 };
  return result;
}

/** An open loop's figures as sections 9 and 11 report them. */
export interface OpenLoopFigures {
  rate: number;
  runs: number;
  /** Scheduled send to the handler's start, ms (first second discarded). */
  p50: number;
  p99: number;
  achievedPerSecond: number;
  notStarted: number;
  /** CPU ms per task of the bench process (scheduler and executors) and of PostgreSQL. */
  cpuMsPerTask: { benchProcess: number; postgres: number } | undefined;
  stall: LatencyResult["stall"];
}

/** The figures of one open loop (see {@link OpenLoopFigures}). */
export function openLoopFigures(r: LatencyResult): OpenLoopFigures {
  return {
    rate: r.rate,
    runs: r.runs,
    p50: r.scheduleToStart.p50,
    p99: r.scheduleToStart.p99,
    achievedPerSecond: r.achievedPerSecond,
    notStarted: r.notStarted,
    cpuMsPerTask: r.cpu.perTaskMs,
    stall: r.stall,
  };
}

/**
 * Section 2 for one system at one rate: jobs are sent on a fixed schedule (open loop: a slow
 * answer never delays the next send) and latency runs from the scheduled send time to the
 * handler's start, on this process's monotonic clock.
 */
export async function latencyPhase(
  ctx: BenchContext,
  name: SystemName,
  rate: number,
  seconds: number,
  make: () => Promise<QueueSystem> = () => ctx.system(name, `lat${Math.round(rate)}`),
): Promise<LatencyResult> {
  const system = await make();
  await ctx.prepare(system);
  const before = await ctx.counters(system.database);
  await ctx.pg.resetStatements();
  await system.start();
  const n = Math.max(10, Math.round(rate * seconds));
  system.recorder.reset(n);
  await system.startConsumers().catch(async (e: unknown) => {
    await system.stop().catch(() => undefined);
    throw e;
  });
  ctx.note(`  ${name}: ${rate}/s for ${seconds} s (${n} runs)`);
  const heapUsedAtStartMiB = Math.round(process.memoryUsage().heapUsed / 2 ** 20);
  const cpu0 = ctx.cpu();
  const gc = watchGcPauses();
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const { intended, sentAt, errors, firstError } = await ctx.profiled(
    `${name}-open-loop-${Math.round(rate)}`,
    async () => {
      const r = await sendOpenLoop(system, rate, n);
      await system.drained(60_000 + n * 5).catch((e: unknown) => {
        ctx.note(`  ${name}: ${e instanceof Error ? e.message : String(e)}`);
      });
      return r;
    },
  );
  const cpu = ctx.cpuSince(cpu0, n);
  const mainThreadGc = gc.stop();
  loopDelay.disable();
  const calls = await ctx.pg.statementCalls(system.database);
  const statements = await ctx.pg.statements(system.database, 8);
  await system.stop();
  const workerThreadGc = system.threadGc?.();
  await ctx.quiesce(system.database);
  const after = await ctx.counters(system.database);
  // The first second (10% of short runs) warms caches and JIT; it is reported but not summarised.
  const warmup = seconds >= 3 ? Math.round(rate) : Math.round(n * 0.1);
  const lat: number[] = [];
  const fromSend: number[] = [];
  const lag: number[] = [];
  let missing = 0;
  let lastStart = 0;
  let slowest = { index: -1, ms: -Infinity };
  for (let i = warmup; i < n; i++) {
    const s = system.recorder.starts[i] as number;
    if (Number.isNaN(s)) {
      missing++;
      continue;
    }
    lastStart = Math.max(lastStart, s);
    const latency = s - (intended[i] as number);
    if (latency > slowest.ms) slowest = { index: i, ms: latency };
    lat.push(latency);
    fromSend.push(s - (sentAt[i] as number));
    lag.push((sentAt[i] as number) - (intended[i] as number));
  }
  const first = intended[warmup] as number;
  const cost = phaseCost(n, before, after, calls, system.probeQueries ?? 0, statements);
  return {
    system: name,
    rate,
    runs: n,
    seconds,
    warmupDiscarded: warmup,
    scheduleToStart: roundSummary(summarize(lat)),
    sendToStart: roundSummary(summarize(fromSend)),
    sendLag: roundSummary(summarize(lag)),
    achievedPerSecond: Math.round(((n - warmup) / (lastStart - first)) * 1000),
    mainThreadGc,
    ...(workerThreadGc === undefined ? {} : { workerThreadGc }),
    failedSends: errors,
    ...(firstError === undefined ? {} : { firstError }),
    notStarted: missing,
    cost,
    cpu,
    stall: {
      slowestAtSecond:
        slowest.index < 0
          ? NaN
          : Math.round(((intended[slowest.index] as number) - (intended[0] as number)) / 100) / 10,
      slowestMs: slowest.index < 0 ? NaN : Math.round(slowest.ms * 10) / 10,
      mainThreadLoopDelayMaxMs: Math.round(loopDelay.max / 1e5) / 10,
      mainThreadGcMaxMs:
        Math.round(Math.max(mainThreadGc.scavenges.maxMs, mainThreadGc.markCompacts.maxMs) * 10) / 10,
      heapUsedAtStartMiB,
      checkpoints: cost.counters.checkpoints,
    },
  };
}

async function sendOpenLoop(
  system: QueueSystem,
  rate: number,
  n: number,
): Promise<{ intended: Float64Array; sentAt: Float64Array } & OpenLoopResult> {
  const intended = new Float64Array(n);
  const t0 = performance.now() + 20;
  for (let i = 0; i < n; i++) intended[i] = t0 + (i * 1000) / rate;
  if (system.openLoop !== undefined) return { intended, ...(await system.openLoop(intended, rate)) };
  const sentAt = new Float64Array(n);
  const result = await openLoop(
    n,
    (i) => intended[i] as number,
    () => performance.now(),
    (i) => system.enqueue(i),
    sentAt,
  );
  return { intended, sentAt, ...result };
}

function round3(v: number): number {
  return Math.round(v * 1000) / 1000;
}
