/**
 * The timers the engine shell sets for the rules (core timers.ts): each comes back to them as an
 * input when it fires, while the engine is live. A lease whose session was lost waits out its grace
 * on a timer of its own, by task, cleared as soon as the lease ends (reclaimed or decided) so that
 * an executor that comes back in time keeps it. A wait or sleep step's timer (its timeout, which
 * may be days away) is by task too, cleared when the step ends (a signal came), so that waits
 * answered early hold no timer. And the deadline of an API call that waits for its change to be
 * committed.
 */
import { UnavailableError } from "@nexusflow/common";
import type { Timer } from "../core/index.js";
import { type RunState, type TaskState, tasksOfRun } from "../model/run-state.js";

/**
 * The longest delay Node's setTimeout keeps (2^31 - 1 ms, about 24.8 days): it fires a longer one
 * after 1 ms. A timer due later (a 30-day step timeout or run deadline, a retry or rate limit a
 * month away) waits in steps of at most this long.
 */
export const MAX_TIMEOUT_MS = 2_147_483_647;

/** What the timers need of the engine. */
export interface EngineTimersOptions {
  /** Whether a timer firing now still counts (the engine is RUNNING or RECOVERING). */
  live(): boolean;
  /** A timer of the rules fired; returns whether it changed anything (a lease grace: it expired). */
  fired(timer: Timer): boolean;
  /** A lease's grace ended without its executor: the lease expired. */
  leaseExpired(task: TaskState): void;
  /** A run left memory unended (see {@link EngineTimers.runLeft}), after its timers went. */
  runLeft?(run: RunState): void;
}

/** The engine's timers (see the module comment). */
export class EngineTimers {
  /** Leases without a session (session lost, or scheduler restarted): grace timers by task id. */
  private readonly orphans = new Map<string, NodeJS.Timeout>();
  /** WAITING steps' timers (core/waits.ts) by task id. */
  private readonly waits = new Map<string, NodeJS.Timeout>();
  /** Runs' deadline timers by run id. */
  private readonly deadlines = new Map<string, NodeJS.Timeout>();
  /**
   * A task's schedule-to-start, start-to-close and retry timers, by kind, then task id: cleared
   * once moot rather than left to fire stale, since each holds its task (input and output
   * included) for as long as its timeout, hours maybe, after the task ended.
   */
  private readonly byTask: Record<TaskTimerKind, Map<string, NodeJS.Timeout>> = {
    "schedule-to-start": new Map(),
    "start-to-close": new Map(),
    retry: new Map(),
  };
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly o: EngineTimersOptions) {}

  /** Sets a timer of the rules, due in `ms` (a lease's grace: unless already waiting). */
  set(timer: Timer, ms: number): void {
    if (timer.kind === "lease-grace") {
      const task = timer.task;
      if (this.orphans.has(task.id)) return;
      // A grace is a session timeout (seconds): never beyond setTimeout's reach.
      const t = setTimeout(
        () => {
          this.orphans.delete(task.id);
          if (this.o.fired(timer)) this.o.leaseExpired(task);
        },
        Math.min(ms, MAX_TIMEOUT_MS),
      );
      this.orphans.set(task.id, t);
      return;
    }
    if (timer.kind === "durable") {
      this.replace(this.waits, timer.task.id, ms, timer);
      return;
    }
    if (timer.kind === "run-deadline") {
      // By run, so that a run leaving memory (parked) takes its timer with it.
      this.replace(this.deadlines, timer.run.id, ms, timer);
      return;
    }
    if (timer.kind === "schedule-to-start" || timer.kind === "start-to-close" || timer.kind === "retry") {
      // One of each kind per task: a later one (the next attempt's, a new lease's) replaces it.
      this.replace(this.byTask[timer.kind], timer.task.id, ms, timer);
      return;
    }
    this.after(ms, () => void this.o.fired(timer));
  }

  /** Sets `timer` in `map` under `key`, in place of the one there; it fires while the engine is live. */
  private replace(map: Map<string, NodeJS.Timeout>, key: string, ms: number, timer: Timer): void {
    clearTimeout(map.get(key));
    const wait = Math.max(0, ms);
    const t =
      wait > MAX_TIMEOUT_MS
        ? setTimeout(() => this.replace(map, key, wait - MAX_TIMEOUT_MS, timer), MAX_TIMEOUT_MS)
        : setTimeout(() => {
            map.delete(key);
            if (this.o.live()) this.o.fired(timer);
          }, wait);
    map.set(key, t);
  }

  /** Clears the task's timer in `timers` (one kind's of {@link byTask}), if it has one. */
  private clearTaskTimer(timers: Map<string, NodeJS.Timeout>, taskId: string): void {
    if (timers.size === 0) return;
    clearTimeout(timers.get(taskId));
    timers.delete(taskId);
  }

  /**
   * The run left memory unended (parked, engine/parking.ts; or its partition lost,
   * engine/partition-load.ts): its deadline's and its tasks' timers go, then the engine is told
   * (its open attempt spans end).
   */
  runLeft(run: RunState): void {
    clearTimeout(this.deadlines.get(run.id));
    this.deadlines.delete(run.id);
    const byTask = Object.values(this.byTask);
    for (const task of tasksOfRun(run)) {
      this.leaseEnded(task);
      for (const timers of byTask) this.clearTaskTimer(timers, task.id);
    }
    this.o.runLeft?.(run);
  }

  /** Calls `fn` in `ms` if the engine is live then. */
  after(ms: number, fn: () => void): void {
    const wait = Math.max(0, ms);
    const t = setTimeout(
      () => {
        this.timers.delete(t);
        if (wait > MAX_TIMEOUT_MS) this.after(wait - MAX_TIMEOUT_MS, fn);
        else if (this.o.live()) fn();
      },
      Math.min(wait, MAX_TIMEOUT_MS),
    );
    this.timers.add(t);
  }

  /**
   * The task's lease (or its wait) ended, or moved to another session: its grace timer (or its
   * wait's), if any, is moot, and so is its schedule-to-start timer (it was leased); its
   * start-to-close timer too once the lease has no deadline any more (the attempt ended, see
   * core/transitions.ts detach; a lease adopted by a session keeps its deadline and its timer).
   */
  leaseEnded(task: TaskState): void {
    this.clearTaskTimer(this.byTask["schedule-to-start"], task.id);
    if (task.leaseExpiresAt === null) this.clearTaskTimer(this.byTask["start-to-close"], task.id);
    if (this.waits.size > 0) {
      const wait = this.waits.get(task.id);
      if (wait !== undefined) {
        clearTimeout(wait);
        this.waits.delete(task.id);
      }
    }
    if (this.orphans.size === 0) return;
    const orphan = this.orphans.get(task.id);
    if (orphan === undefined) return;
    clearTimeout(orphan);
    this.orphans.delete(task.id);
  }

  /** Clears every timer (the engine stops). */
  clear(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const t of this.orphans.values()) clearTimeout(t);
    this.orphans.clear();
    for (const t of this.waits.values()) clearTimeout(t);
    this.waits.clear();
    for (const t of this.deadlines.values()) clearTimeout(t);
    this.deadlines.clear();
    for (const timers of Object.values(this.byTask)) {
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
    }
  }
}

/** The timers kept by task ({@link EngineTimers}' `byTask`). */
type TaskTimerKind = "schedule-to-start" | "start-to-close" | "retry";

/**
 * Waits for `commit`, or rejects with UNAVAILABLE once `ms` have passed (the change stays pending
 * and is committed when the database returns).
 */
export async function commitWithin(commit: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      commit,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new UnavailableError(
                "the database is unavailable; the change will be committed when it returns",
              ),
            ),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
