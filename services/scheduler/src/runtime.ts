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

/** The V8 flags {@link tuneRuntime} sets. */
export const RUNTIME_V8_FLAGS: readonly string[] = ["--no-allocation-site-pretenuring"];

let tuned = false;

/** Applies the scheduler's V8 settings to this process (idempotent). Call before serving. */
export function tuneRuntime(): void {
  if (tuned) return;
  tuned = true;
  for (const flag of RUNTIME_V8_FLAGS) setFlagsFromString(flag);
}
