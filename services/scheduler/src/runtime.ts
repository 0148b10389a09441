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
import { setFlagsFromString } from "node:v8";
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
