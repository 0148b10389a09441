/**
 * V8 settings of a process that hosts the scheduler, applied once at start-up.
 *
 * Allocation-site pretenuring is off. V8 watches which allocation sites produce objects that
 * survive scavenges and, past a threshold, allocates everything from those sites directly in the
 * old generation. Under steady load at 1,000 StartRun/s the scheduler thread's old generation grew
 * by ~1.5 MB per scavenge with objects that die within milliseconds (sampled: the pg client's
 * parameter buffers, the StartRun handler's and the batch writer's objects), and mark-compact
 * pauses of 10-35 ms followed every 5-15 s. Without pretenuring the old generation grows by about
 * a third of that, and in the benchmark's open loop (bench/README.md, fifth round) the median p99
 * of repeated 1,000/s phases went from ~34 to ~21 ms in interleaved runs of the same code.
 */
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** The V8 flags {@link tuneRuntime} sets. */
export const RUNTIME_V8_FLAGS: readonly string[] = ["--no-allocation-site-pretenuring"];

let tuned = false;

/** Applies the scheduler's V8 settings to this process (idempotent). Call before serving. */
export function tuneRuntime(): void {
  if (tuned) return;
  tuned = true;
  for (const flag of RUNTIME_V8_FLAGS) setFlagsFromString(flag);
}

/**
 * Gives back the memory start-up needed and idle running does not: one full, memory-reducing
 * collection (V8's "last resort" flavour, as under memory pressure), which also shrinks the young
 * generation to its initial size. Loading the modules and opening the database promote most of
 * what they allocate, so V8 grows the young generation's semi-spaces to their maximum while
 * starting (64 MiB committed on Node 24, most of it touched) and never shrinks them in a process
 * that then idles: measured on the compiled scheduler, RSS 143 -> 112 MiB, the young generation
 * 64 -> 1 MiB. Under load V8 grows it again as it would have (nothing else changes); the pause,
 * once, is that of a full collection of a ~40 MiB heap (tens of milliseconds). Call once, after
 * start-up, in the scheduler's own process (serve.ts), not in a process that embeds it.
 * Returns the collection's duration, ms.
 */
export function releaseStartupMemory(): number {
  return memoryReducingGc();
}

/** The young generation's committed size (new space: both semi-spaces), bytes. */
function youngGenerationBytes(): number {
  return getHeapSpaceStatistics().find((s) => s.space_name === "new_space")?.space_size ?? 0;
}

/** One full, memory-reducing collection (V8's "last resort" flavour); returns its duration, ms. */
function memoryReducingGc(): number {
  // `gc` exists only in a context created after --expose-gc is set; turned off again at once so
  // that no other context (a library's vm) gets one.
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as (options: {
    type: "major";
    execution: "sync";
    flavor: "last-resort";
  }) => void;
  setFlagsFromString("--no-expose-gc");
  const start = performance.now();
  gc({ type: "major", execution: "sync", flavor: "last-resort" });
  return performance.now() - start;
}

/** Options of {@link releaseMemoryWhenIdle}. */
export interface IdleReleaseOptions {
  /** How often the process looks at itself, ms. @default 1000 */
  sampleMs?: number;
  /** How many samples in a row must be quiet before a release. @default 5 */
  quietSamples?: number;
  /** Busiest a sample may be (event-loop utilization, 0-1) and still count as quiet. @default 0.05 */
  maxUtilization?: number;
  /** Size of the young generation (V8's new space, both semi-spaces) worth a collection, bytes. @default 8 MiB */
  minYoungBytes?: number;
  /** Least time between two releases, ms. @default 30000 */
  minSpacingMs?: number;
  /** Told of each release: its duration and the RSS before and after, bytes. */
  onRelease?: (release: { ms: number; rssBefore: number; rssAfter: number }) => void;
}

/** The watcher {@link releaseMemoryWhenIdle} started. */
export interface IdleRelease {
  /** Stops watching (idempotent). */
  stop(): void;
}

/**
 * Gives back, once the process has gone quiet after a burst of work, the memory the burst left
 * committed. A burst (200 executors attaching at once, a batch of runs) grows V8's young
 * generation, and V8 keeps the pages it no longer uses until it next collects with memory
 * reduction, which an idle process may not do for minutes: measured on the compiled scheduler,
 * ~100 MiB of RSS 5-12 s after 200 executors attached (young generation 8-10 MiB), 92-95 once
 * released; 169 MiB after 20 s of 100 StartRun/s (young generation 64 MiB), 102 once released.
 *
 * Every `sampleMs` it reads the event-loop utilization of the last sample (a scheduler with 200
 * idle sessions heartbeating is at 2-3%, one serving 100 StartRun/s far above 5%). Once
 * `quietSamples` samples in a row were at most `maxUtilization` and the young generation is still
 * `minYoungBytes` or more (an idle scheduler's is 1-4 MiB; V8 grows it only under allocation with
 * survivors), one memory-reducing full collection (as {@link releaseStartupMemory}) runs, at most
 * once per `minSpacingMs`; it shrinks the young generation, so a process that stays idle collects
 * once, and one that stays busy never. Load that resumes makes its first second busy, so it does
 * not collect then. The cost is one pause per burst, once
 * the burst is over: 40-400 ms measured on the 2-core bench machine (the more so the larger the
 * young generation the burst grew and the busier the machine), which a request arriving just then
 * waits out. For the scheduler's own process (serve.ts), not one that embeds it; the timer is
 * unref'd.
 */
export function releaseMemoryWhenIdle(options: IdleReleaseOptions = {}): IdleRelease {
  const sampleMs = options.sampleMs ?? 1000;
  const quietSamples = options.quietSamples ?? 5;
  const maxUtilization = options.maxUtilization ?? 0.05;
  const minYoung = options.minYoungBytes ?? 8 * 2 ** 20;
  const minSpacingMs = options.minSpacingMs ?? 30_000;
  let quiet = 0;
  let releasedAt = -Infinity;
  let last = performance.eventLoopUtilization();
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization();
    const utilization = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    quiet = utilization > maxUtilization ? 0 : quiet + 1;
    if (quiet < quietSamples || performance.now() - releasedAt < minSpacingMs) return;
    if (youngGenerationBytes() < minYoung) return;
    const rssBefore = process.memoryUsage.rss();
    const ms = memoryReducingGc();
    releasedAt = performance.now();
    quiet = 0;
    // The collection's own time is not the next sample's work.
    last = performance.eventLoopUtilization();
    options.onRelease?.({ ms, rssBefore, rssAfter: process.memoryUsage.rss() });
  }, sampleMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
