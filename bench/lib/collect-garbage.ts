/**
 * A full garbage collection of this thread, on demand, without starting Node with `--expose-gc`:
 * the flag is set at run time and `gc` taken from a new context, which V8 gives it once the flag is
 * on.
 *
 * Why the bench needs it: every phase runs a new system in this process, and what the phases before
 * left (a stopped scheduler that held 20,000 runs) is garbage in the old generation until V8
 * collects it. That collection then lands in some later phase as one main-thread pause of
 * 150-200 ms (seen in the partitioning section's open loops, the heap at 370-450 MiB going into
 * them: bench/notes/22-session-twenty-six.md), a tail that phase did not make. Collected before
 * each phase, no phase pays for another's garbage.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

let gc: (() => void) | undefined;

/** Collects this thread's garbage now (a full, blocking collection). */
export function collectGarbage(): void {
  if (gc === undefined) {
    setFlagsFromString("--expose-gc");
    gc = runInNewContext("gc") as () => void;
  }
  gc();
}
