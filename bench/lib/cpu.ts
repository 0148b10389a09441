/**
 * Where the CPU went during a phase: this process, the PostgreSQL cluster (postmaster, its live
 * children, and the children it already reaped), and everything else on the machine. The machine
 * may be shared (other builds and tests): "others" says how much of it they took.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const TICKS_PER_SECOND = 100;

/** One reading. */
export interface CpuSnapshot {
  wallMs: number;
  /** Busy and total jiffies of the whole machine. */
  machineBusy: number;
  machineTotal: number;
  /** This process, microseconds. */
  selfUs: number;
  /** The PostgreSQL cluster, ticks. */
  pgTicks: number;
  /** This process's threads by id: their group ({@link threadCpu}) and CPU so far, nanoseconds. */
  threads: Record<string, ThreadCpu>;
}

/** CPU of a phase, in percent of one core (a 2-core machine has 200). */
export interface CpuUsage {
  wallMs: number;
  cores: number;
  machineBusyPct: number;
  benchProcessPct: number;
  postgresPct: number;
  othersPct: number;
  /** CPU milliseconds per task (bench process, PostgreSQL), when `tasks` is given. */
  perTaskMs?: { benchProcess: number; postgres: number };
  /**
   * The bench process's CPU microseconds per task by thread ({@link threadCpu}), when `tasks` is
   * given and the system says (Linux).
   */
  threadsUsPerTask?: Record<string, number>;
}

/**
 * What each of this process's threads is, by the name the system gives it: the main thread runs the
 * scheduler; the bench names its worker threads (executor-host, producer-host) and the services
 * their span export threads (otlp-scheduler, otlp-executor); V8's helpers (concurrent and parallel
 * garbage collection, compilation) are one group, libuv's thread pool another, the rest "other".
 */
function threadGroup(name: string): string {
  if (name === "MainThread") return "main (scheduler)";
  if (name === "V8Worker") return "V8 helpers (GC, JIT)";
  if (name === "libuv-worker") return "libuv pool";
  if (/^(executor-host|producer-host|otlp-)/.test(name)) return name;
  return "other";
}

/** One thread's group and its CPU so far, nanoseconds. */
export interface ThreadCpu {
  group: string;
  ns: number;
}

/** A thread's CPU from /proc: `schedstat` (exact), or `stat`'s 10 ms ticks where that reads 0. */
function threadNs(tid: string): number {
  const ns = Number(readFileSync(`/proc/self/task/${tid}/schedstat`, "utf8").split(" ")[0]);
  if (ns > 0) return ns;
  const text = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * (1e9 / TICKS_PER_SECOND);
}

/**
 * CPU of this process's threads by id, with each one's group ({@link threadGroup}), from the
 * kernel's accounting in /proc (`schedstat`: time on a CPU, exact, unlike the 10 ms ticks of
 * `stat`, the fallback where schedstat reads 0). Empty where /proc has no threads (not Linux).
 */
export function threadCpu(): Record<string, ThreadCpu> {
  const out: Record<string, ThreadCpu> = {};
  let tids: string[];
  try {
    tids = readdirSync("/proc/self/task");
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const name = readFileSync(`/proc/self/task/${tid}/comm`, "utf8").trim();
      const ns = threadNs(tid);
      if (Number.isFinite(ns)) out[tid] = { group: threadGroup(name), ns };
    } catch {
      // the thread ended between the listing and the reading
    }
  }
  return out;
}

/**
 * CPU used by each group of threads between two readings, nanoseconds: each thread's own
 * difference (a thread started meanwhile counts from 0; one that ended meanwhile is not counted,
 * its last reading being unknown).
 */
export function threadCpuBetween(
  a: Record<string, ThreadCpu>,
  b: Record<string, ThreadCpu>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [tid, t] of Object.entries(b)) {
    const before = a[tid];
    const used = t.ns - (before !== undefined && before.group === t.group ? before.ns : 0);
    if (used > 0) out[t.group] = (out[t.group] ?? 0) + used;
  }
  return out;
}

function procStat(pid: number): number[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces) start after the last ')'.
    return text
      .slice(text.lastIndexOf(")") + 2)
      .split(" ")
      .map(Number);
  } catch {
    return undefined;
  }
}

/** utime+stime+cutime+cstime of `pid` plus utime+stime of its live children, in ticks. */
function treeTicks(pid: number): number {
  const own = procStat(pid);
  if (own === undefined) return 0;
  // After ')': state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
  let ticks = (own[11] ?? 0) + (own[12] ?? 0) + (own[13] ?? 0) + (own[14] ?? 0);
  let entries: string[] = [];
  try {
    entries = readdirProc();
  } catch {
    return ticks;
  }
  for (const e of entries) {
    const s = procStat(Number(e));
    if (s !== undefined && s[1] === pid) ticks += (s[11] ?? 0) + (s[12] ?? 0);
  }
  return ticks;
}

function readdirProc(): string[] {
  return readdirSync("/proc").filter((e) => /^\d+$/.test(e));
}

/** The postmaster's pid from the data directory, or undefined. */
export function postmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Reads the counters now. */
export function cpuSnapshot(pgPid: number | undefined): CpuSnapshot {
  let busy = 0;
  let total = 0;
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    busy = total - (v[3] ?? 0) - (v[4] ?? 0);
  } catch {
    // not Linux: only the process's own CPU is reported
  }
  const self = process.cpuUsage();
  return {
    wallMs: performance.now(),
    machineBusy: busy,
    machineTotal: total,
    selfUs: self.user + self.system,
    pgTicks: pgPid === undefined ? 0 : treeTicks(pgPid),
    threads: threadCpu(),
  };
}

/** Usage between two readings. */
export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot, cores: number, tasks?: number): CpuUsage {
  const wallMs = b.wallMs - a.wallMs;
  const pct = (ms: number): number => Math.round((ms / Math.max(1, wallMs)) * 1000) / 10;
  const machineBusyMs =
    b.machineTotal > a.machineTotal
      ? ((b.machineBusy - a.machineBusy) / (b.machineTotal - a.machineTotal)) * wallMs * cores
      : Number.NaN;
  const selfMs = (b.selfUs - a.selfUs) / 1000;
  const pgMs = ((b.pgTicks - a.pgTicks) * 1000) / TICKS_PER_SECOND;
  const usage: CpuUsage = {
    wallMs: Math.round(wallMs),
    cores,
    machineBusyPct: pct(machineBusyMs),
    benchProcessPct: pct(selfMs),
    postgresPct: pct(pgMs),
    othersPct: pct(Math.max(0, machineBusyMs - selfMs - pgMs)),
  };
  if (tasks !== undefined && tasks > 0) {
    usage.perTaskMs = {
      benchProcess: Math.round((selfMs / tasks) * 1000) / 1000,
      postgres: Math.round((pgMs / tasks) * 1000) / 1000,
    };
    const threads: Record<string, number> = {};
    for (const [group, ns] of Object.entries(threadCpuBetween(a.threads, b.threads)))
      threads[group] = Math.round(ns / tasks / 100) / 10;
    if (Object.keys(threads).length > 0) usage.threadsUsPerTask = threads;
  }
  return usage;
}
