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
import type { RunState, TaskState } from "../model/run-state.js";

/** What the timers need of the engine. */
export interface EngineTimersOptions {
  /** Whether a timer firing now still counts (the engine is RUNNING or RECOVERING). */
  live(): boolean;
  /** A timer of the rules fired; returns whether it changed anything (a lease grace: it expired). */
  fired(timer: Timer): boolean;
  /** A lease's grace ended without its executor: the lease expired. */
  leaseExpired(task: TaskState): void;
}

/** The engine's timers (see the module comment). */
export class EngineTimers {
  /** Leases without a session (session lost, or scheduler restarted): grace timers by task id. */
  private readonly orphans = new Map<string, NodeJS.Timeout>();
  /** WAITING steps' timers (core/waits.ts) by task id. */
  private readonly waits = new Map<string, NodeJS.Timeout>();
  /** Runs' deadline timers by run id. */
  private readonly deadlines = new Map<string, NodeJS.Timeout>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly o: EngineTimersOptions) {}

  /** Sets a timer of the rules, due in `ms` (a lease's grace: unless already waiting). */
  set(timer: Timer, ms: number): void {
    if (timer.kind === "lease-grace") {
      const task = timer.task;
      if (this.orphans.has(task.id)) return;
      const t = setTimeout(() => {
        this.orphans.delete(task.id);
        if (this.o.fired(timer)) this.o.leaseExpired(task);
      }, ms);
      this.orphans.set(task.id, t);
      return;
    }
    if (timer.kind === "durable") {
      const id = timer.task.id;
      clearTimeout(this.waits.get(id));
      const t = setTimeout(
        () => {
          this.waits.delete(id);
          if (this.o.live()) this.o.fired(timer);
        },
        Math.max(0, ms),
      );
      this.waits.set(id, t);
      return;
    }
    if (timer.kind === "run-deadline") {
      // By run, so that a run leaving memory (parked) takes its timer with it.
      const id = timer.run.id;
      clearTimeout(this.deadlines.get(id));
      const t = setTimeout(
        () => {
          this.deadlines.delete(id);
          if (this.o.live()) this.o.fired(timer);
        },
        Math.max(0, ms),
      );
      this.deadlines.set(id, t);
      return;
    }
    this.after(ms, () => void this.o.fired(timer));
  }

  /** The run left memory (parked, engine/parking.ts): its deadline's and its waits' timers go. */
  runLeft(run: RunState): void {
    clearTimeout(this.deadlines.get(run.id));
    this.deadlines.delete(run.id);
    for (const task of run.tasks.values()) this.leaseEnded(task);
  }

  /** Calls `fn` in `ms` if the engine is live then. */
  after(ms: number, fn: () => void): void {
    const t = setTimeout(
      () => {
        this.timers.delete(t);
        if (this.o.live()) fn();
      },
      Math.max(0, ms),
    );
    this.timers.add(t);
  }

  /** The task's lease (or its wait) ended: its grace timer (or its wait's), if any, is moot. */
  leaseEnded(task: TaskState): void {
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
  }
}

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
