/**
 * The `telemetry` section (Nexusflow; only when named; issue #20): what metrics and 10% tracing
 * cost sections 1 and 2, the issue's own comparison. Tracing patches gRPC, HTTP and pg as they load
 * (bench/start.ts), so "off" and "on" cannot share a process: each phase is a bench process of its
 * own (`--only throughput,latency --rates 1000 --warm-up`, plus `--metrics --tracing 0.1` for "on"), with its
 * own PostgreSQL. On these machines two such processes differ by 10-25% with nothing changed
 * (bench/notes/25-session-twenty-nine.md), and the drift lasts minutes: so the two run in
 * {@link TELEMETRY_ROUNDS} adjacent pairs, the order alternating, and each figure is the median of
 * the pairs' ratios (on over off), which a slow minute moves in one pair only.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ROOT } from "../lib/machine.js";
import { median, round3, roundRatios } from "../lib/stats.js";
import { formatTable } from "../lib/table.js";
import type { BenchContext } from "./context.js";

/** Pairs (off, on) at --scale 0.5 and above; one below (a smoke run). */
export const TELEMETRY_ROUNDS = 5;
/** The open loop's rate, runs per second (the issue's). */
export const TELEMETRY_RATE = 1_000;
/** The share of runs traced in "on" (the issue's). */
export const TELEMETRY_SAMPLED = 0.1;
/** The longest a phase's process may take (one takes about a minute at --scale 1); then it is killed. */
export const PHASE_TIMEOUT_MS = 10 * 60_000;

const START = fileURLToPath(new URL("../start.ts", import.meta.url));

/** Telemetry in a phase: none, or Prometheus metrics and 10% of runs traced. */
export type TelemetryMode = "off" | "on";

/** One phase: a bench process's drain and open loop. */
export interface TelemetryPhase {
  round: number;
  mode: TelemetryMode;
  drainTasksPerSecond: number;
  /** The process's first drain (the warm-up, not counted), tasks/s. */
  coldDrainTasksPerSecond: number | undefined;
  /** CPU ms per drained task of the bench process (scheduler, executors, export threads) and PostgreSQL. */
  drainCpuMsPerTask: { benchProcess: number; postgres: number } | undefined;
  /** The bench process's CPU us per drained task by thread (Linux: lib/cpu.ts). */
  drainThreadsUsPerTask: Record<string, number> | undefined;
  /** The scheduler's heap going into the drain (what the enqueue left, garbage included), MiB. */
  drainHeapAtStartMiB: number | undefined;
  /** The scheduler thread's collections during the drain: scavenges and mark-compacts, and their ms. */
  drainGc: { scavenges: number; scavengeMs: number; markCompacts: number; markCompactMs: number } | undefined;
  /** Spans the phase's trace sink received, over the whole process ("on" only). */
  spansExported: number | undefined;
  /** Schedule-to-start at {@link TELEMETRY_RATE}/s, ms. */
  p50: number;
  p99: number;
}

/** Result of the section. */
export interface TelemetryResult {
  phases: TelemetryPhase[];
  /** Phases that failed (what their process said); their rounds are left out of the ratios. */
  failures: string[];
  /** Median over the rounds of on / off, to 3 decimals: drain rate, CPU per task, open-loop p50 and p99. */
  ratios: { drain: number; coldDrain: number; cpu: number; p50: number; p99: number };
}

/** What the section reads of a phase's report (bench/main.ts BenchReport). */
interface PhaseReport {
  errors: { section: string; message: string }[];
  throughput?: {
    system: string;
    drain: {
      tasksPerSecond: number;
      heapAtStartMiB?: number;
      mainThreadGc?: Record<"scavenges" | "markCompacts", { count: number; totalMs: number }>;
    };
    cpu?: {
      drain?: {
        perTaskMs: { benchProcess: number; postgres: number };
        threadsUsPerTask?: Record<string, number>;
      };
    };
  }[];
  throughputWarmUp?: { system: string; drain: { tasksPerSecond: number } }[];
  latency?: { system: string; rate: number; scheduleToStart: { p50: number; p99: number } }[];
  tracing?: { spans: Record<string, number> };
}

/** Runs one phase in a bench process of its own; its report. */
async function runPhase(ctx: BenchContext, mode: TelemetryMode): Promise<PhaseReport> {
  const out = await mkdtemp(join(tmpdir(), "nexusflow-bench-telemetry-"));
  try {
    const args = [
      "--import",
      "tsx",
      START,
      "--only",
      "throughput,latency",
      "--systems",
      "nexusflow",
      "--rates",
      String(TELEMETRY_RATE),
      "--scale",
      String(ctx.options.scale),
      // The measured drain is the process's second: the first compiles the drain's code paths
      // (with telemetry, the SDK's too) and starts the executors' threads, inside the window the
      // drain is timed over (a 20,000-task drain lasts ~2.5 s). It is reported as the cold drain.
      "--warm-up",
      ...(mode === "on" ? ["--metrics", "--tracing", String(TELEMETRY_SAMPLED)] : []),
      "--out",
      out,
    ];
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      stdio: ["ignore", "ignore", "pipe"],
      timeout: PHASE_TIMEOUT_MS,
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      // The tail says why a phase failed; the rest is the phase's progress lines.
      stderr = (stderr + chunk.toString()).slice(-4000);
    });
    // 'close': the process is gone and its stderr read to the end.
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once("error", reject);
      child.once("close", resolve);
    });
    const file = (await readdir(out)).find((f) => f.endsWith(".json"));
    if (file === undefined)
      throw new Error(`the ${mode} phase wrote no report (exit ${String(code)}): ${stderr}`);
    const report = JSON.parse(await readFile(join(out, file), "utf8")) as PhaseReport;
    if (report.errors.length > 0)
      throw new Error(
        `the ${mode} phase failed: ${report.errors.map((e) => `${e.section}: ${e.message}`).join("; ")}`,
      );
    return report;
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

/** The figures of a phase's report. */
function phaseOf(round: number, mode: TelemetryMode, report: PhaseReport): TelemetryPhase {
  const tp = report.throughput?.find((t) => t.system === "nexusflow");
  const lat = report.latency?.find((l) => l.system === "nexusflow" && l.rate === TELEMETRY_RATE);
  if (tp === undefined || lat === undefined)
    throw new Error(`the ${mode} phase's report has no drain or open loop`);
  return {
    round,
    mode,
    drainTasksPerSecond: tp.drain.tasksPerSecond,
    coldDrainTasksPerSecond: report.throughputWarmUp?.find((t) => t.system === "nexusflow")?.drain
      .tasksPerSecond,
    drainCpuMsPerTask: tp.cpu?.drain?.perTaskMs,
    drainThreadsUsPerTask: tp.cpu?.drain?.threadsUsPerTask,
    drainHeapAtStartMiB: tp.drain.heapAtStartMiB,
    drainGc:
      tp.drain.mainThreadGc === undefined
        ? undefined
        : {
            scavenges: tp.drain.mainThreadGc.scavenges.count,
            scavengeMs: Math.round(tp.drain.mainThreadGc.scavenges.totalMs),
            markCompacts: tp.drain.mainThreadGc.markCompacts.count,
            markCompactMs: Math.round(tp.drain.mainThreadGc.markCompacts.totalMs),
          },
    spansExported:
      report.tracing === undefined
        ? undefined
        : Object.values(report.tracing.spans).reduce((a, b) => a + b, 0),
    p50: lat.scheduleToStart.p50,
    p99: lat.scheduleToStart.p99,
  };
}

/** The median over the rounds of `f(on) / f(off)`, to 3 decimals (NaN without a whole pair). */
export function pairedRatio(
  phases: readonly TelemetryPhase[],
  f: (p: TelemetryPhase) => number | undefined,
): number {
  return round3(
    median(
      roundRatios(
        phases,
        (p) => p.mode === "on",
        (p) => p.mode === "off",
        f,
      ),
    ),
  );
}

const cpuOf = (p: TelemetryPhase): number | undefined =>
  p.drainCpuMsPerTask === undefined
    ? undefined
    : p.drainCpuMsPerTask.benchProcess + p.drainCpuMsPerTask.postgres;

/** Runs the section (see the module comment). */
export async function telemetrySection(ctx: BenchContext): Promise<TelemetryResult> {
  const rounds = ctx.options.scale >= 0.5 ? TELEMETRY_ROUNDS : 1;
  const phases: TelemetryPhase[] = [];
  const failures: string[] = [];
  for (let round = 1; round <= rounds; round++) {
    // Off first in odd rounds, on first in even ones: neither gains from going first.
    const order: TelemetryMode[] = round % 2 === 1 ? ["off", "on"] : ["on", "off"];
    for (const mode of order) {
      ctx.note(`  nexusflow: round ${round} of ${rounds}, telemetry ${mode} (a bench process of its own)`);
      try {
        phases.push(phaseOf(round, mode, await runPhase(ctx, mode)));
      } catch (e) {
        // The other rounds still count: a failed phase leaves its round without a pair.
        const message = e instanceof Error ? e.message : String(e);
        failures.push(`round ${round}, ${mode}: ${message}`);
        ctx.note(`  nexusflow: round ${round}, telemetry ${mode} failed: ${message}`);
        break;
      }
    }
  }
  const ratios = {
    drain: pairedRatio(phases, (p) => p.drainTasksPerSecond),
    coldDrain: pairedRatio(phases, (p) => p.coldDrainTasksPerSecond),
    cpu: pairedRatio(phases, cpuOf),
    p50: pairedRatio(phases, (p) => p.p50),
    p99: pairedRatio(phases, (p) => p.p99),
  };
  if (Number.isNaN(ratios.drain)) throw new Error(`no round made a pair: ${failures.join("; ")}`);
  return { phases, failures, ratios };
}

/** The threads shown in the table (lib/cpu.ts's groups), by their short names. */
const THREADS: readonly [string, string][] = [
  ["main (scheduler)", "scheduler"],
  ["V8 helpers (GC, JIT)", "V8 helpers"],
  ["executor-host", "executors"],
  ["otlp-scheduler", "export (s)"],
  ["otlp-executor", "export (e)"],
];

/** The section's table. */
export function telemetryTable(r: TelemetryResult): string {
  return (
    `\nWhat metrics and ${TELEMETRY_SAMPLED * 100}% tracing cost (#20): sections 1 and 2 in a bench process per phase, off and on in adjacent pairs\n` +
    formatTable([
      [
        "round",
        "telemetry",
        "drain tasks/s (cold)",
        "CPU ms/task (node+pg)",
        ...THREADS.map(([, short]) => `${short} us/task`),
        "heap in MiB",
        "GC ms (scav / m-c)",
        `${TELEMETRY_RATE}/s p50 ms`,
        "p99 ms",
      ],
      ...r.phases.map((p) => [
        p.round,
        p.mode,
        `${p.drainTasksPerSecond} (${p.coldDrainTasksPerSecond ?? "-"})`,
        p.drainCpuMsPerTask === undefined
          ? "-"
          : `${p.drainCpuMsPerTask.benchProcess} + ${p.drainCpuMsPerTask.postgres}`,
        ...THREADS.map(([name]) => p.drainThreadsUsPerTask?.[name] ?? "-"),
        p.drainHeapAtStartMiB ?? "-",
        p.drainGc === undefined ? "-" : `${p.drainGc.scavengeMs} / ${p.drainGc.markCompactMs}`,
        p.p50,
        p.p99,
      ]),
    ]) +
    `\non over off (medians of the rounds' ratios): drain ${r.ratios.drain} (the processes' first, cold drains: ${r.ratios.coldDrain}), CPU per task ${r.ratios.cpu}, open loop p50 x${r.ratios.p50}, p99 x${r.ratios.p99}\n` +
    r.failures.map((f) => `failed (its round left out): ${f}\n`).join("")
  );
}

/** Issue #20's cost target against what this run measured. */
export function telemetryTargets(
  r: TelemetryResult,
): { target: string; goal: string; measured: string; met: boolean }[] {
  const rounds = new Set(
    r.phases
      .filter((p) => r.phases.some((q) => q.round === p.round && q.mode !== p.mode))
      .map((p) => p.round),
  ).size;
  return [
    {
      target: "metrics and 10% tracing (#20)",
      goal: "drain and 1,000/s open loop within 5% of both off",
      measured: `drain ${(r.ratios.drain * 100).toFixed(1)}% of off; open loop p50 x${r.ratios.p50}, p99 x${r.ratios.p99} (medians of ${rounds} pairs)`,
      met: r.ratios.drain >= 0.95 && r.ratios.p50 <= 1.05 && r.ratios.p99 <= 1.05,
    },
  ];
}
