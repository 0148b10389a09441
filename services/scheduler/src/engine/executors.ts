/**
 * What ListExecutors shows: the attached sessions as plain values, from the dispatcher's live
 * sessions and the leases they hold. No I/O; the engine passes the lookups in.
 */
import type { SessionHandle } from "./dispatcher.js";

/** A task type a session advertised, with the leases of it the session holds. */
export interface ExecutorTypeView {
  readonly name: string;
  readonly slotsInUse: number;
  /** Ready tasks of the type waiting for any session. */
  readonly queued: number;
}

/** One attached session as ListExecutors shows it. */
export interface ExecutorView {
  readonly executorId: string;
  readonly sessionId: string;
  /** ms since the epoch; undefined when the handle does not say. */
  readonly attachedAt: number | undefined;
  /** ms since the epoch. */
  readonly lastSeenAt: number;
  readonly protocolVersion: number;
  /** Sorted by name. */
  readonly taskTypes: readonly ExecutorTypeView[];
  readonly slots: number;
  readonly slotsInUse: number;
  readonly credit: number;
  readonly draining: boolean;
  readonly labels: Readonly<Record<string, string>>;
  readonly version: string;
}

/** How {@link describeSessions} learns about tasks and time. */
export interface DescribeLookups {
  /** The type of a leased task run, undefined when it is no longer known. */
  taskType(taskRunId: string): string | undefined;
  /** Ready tasks of `type` waiting now. */
  queued(type: string): number;
  /** Now, ms since the epoch. */
  wallNow: number;
  /** Now on the monotonic clock the sessions' lastSeen uses. */
  monoNow: number;
}

/** The sessions as views, ordered by executor id then session id. */
export function describeSessions(
  sessions: Iterable<Readonly<SessionHandle>>,
  lookups: DescribeLookups,
): ExecutorView[] {
  const queued = new Map<string, number>();
  const queuedOf = (type: string): number => {
    let n = queued.get(type);
    if (n === undefined) {
      n = lookups.queued(type);
      queued.set(type, n);
    }
    return n;
  };
  const views: ExecutorView[] = [];
  for (const s of sessions) {
    const inUse = new Map<string, number>();
    for (const id of s.leases) {
      const type = lookups.taskType(id);
      if (type !== undefined) inUse.set(type, (inUse.get(type) ?? 0) + 1);
    }
    views.push({
      executorId: s.executorId,
      sessionId: s.id,
      attachedAt: s.attachedAt,
      lastSeenAt: Math.round(lookups.wallNow - Math.max(0, lookups.monoNow - s.lastSeen)),
      protocolVersion: s.protocolVersion ?? 1,
      taskTypes: [...s.types]
        .sort()
        .map((name) => ({ name, slotsInUse: inUse.get(name) ?? 0, queued: queuedOf(name) })),
      slots: s.advertised?.slots ?? 0,
      slotsInUse: s.leases.size,
      credit: s.credit,
      draining: s.draining,
      labels: s.advertised?.labels ?? {},
      version: s.advertised?.version ?? "",
    });
  }
  return views.sort((a, b) => compareKeys(a, b));
}

/** Orders views by executor id, then session id. */
export function compareKeys(
  a: { executorId: string; sessionId: string },
  b: { executorId: string; sessionId: string },
): number {
  if (a.executorId !== b.executorId) return a.executorId < b.executorId ? -1 : 1;
  if (a.sessionId !== b.sessionId) return a.sessionId < b.sessionId ? -1 : 1;
  return 0;
}
