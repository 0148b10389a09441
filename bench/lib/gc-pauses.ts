/**
 * Pauses of this thread's garbage collector during a phase. The bench process's main thread hosts
 * the scheduler (for the peers: their workers), so a tail of the open loop can be told apart from
 * the collections that stopped it.
 */
import { PerformanceObserver, constants, type PerformanceEntry } from "node:perf_hooks";

/** Count, total and longest pause of one kind of collection, ms. */
export interface PauseStats {
  count: number;
  totalMs: number;
  maxMs: number;
}

/** Young-generation scavenges and full mark-compacts of a phase. */
export interface GcPauses {
  scavenges: PauseStats;
  markCompacts: PauseStats;
}

const empty = (): PauseStats => ({ count: 0, totalMs: 0, maxMs: 0 });

/** Starts recording; `stop()` ends it and returns what was paused meanwhile. */
export function watchGcPauses(): { stop(): GcPauses } {
  const pauses: GcPauses = { scavenges: empty(), markCompacts: empty() };
  const add = (entries: PerformanceEntry[]): void => {
    for (const e of entries) {
      const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
      const stats =
        kind === constants.NODE_PERFORMANCE_GC_MINOR
          ? pauses.scavenges
          : kind === constants.NODE_PERFORMANCE_GC_MAJOR
            ? pauses.markCompacts
            : undefined;
      if (stats === undefined) continue;
      stats.count++;
      stats.totalMs += e.duration;
      stats.maxMs = Math.max(stats.maxMs, e.duration);
    }
  };
  const observer = new PerformanceObserver((list) => add(list.getEntries()));
  observer.observe({ entryTypes: ["gc"] });
  return {
    stop(): GcPauses {
      add(observer.takeRecords());
      observer.disconnect();
      const round = (s: PauseStats): PauseStats => ({
        count: s.count,
        totalMs: Math.round(s.totalMs * 10) / 10,
        maxMs: Math.round(s.maxMs * 10) / 10,
      });
      return { scavenges: round(pauses.scavenges), markCompacts: round(pauses.markCompacts) };
    },
  };
}
