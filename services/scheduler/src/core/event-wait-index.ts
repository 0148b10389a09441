/**
 * The index of the WAITING waits for an event (event-waits.ts), kept in `Core.eventWaits`: by
 * literal key (a pattern without `*`), the patterned ones apart, so that a published event meets
 * only the waits whose pattern may match it. Entered when a step starts waiting or is recovered
 * WAITING (waits.ts armDurable), left when its task ends (transitions.ts endTask); a task that
 * left otherwise (its run refused by storage) is dropped when next met (event-waits.ts).
 */
import type { CompiledEventWait } from "../dag/index.js";
import type { TaskState } from "../model/run-state.js";
import type { Core } from "./context.js";

/** The WAITING waits for an event (see the module comment). */
export class EventWaitIndex {
  private readonly exact = new Map<string, Set<TaskState>>();
  private readonly patterned = new Set<TaskState>();
  /** Each entered task's literal key (null: patterned). */
  private readonly entries = new Map<TaskState, string | null>();
  /** Tasks whose filter failed on an event (reported once each). */
  private readonly failedOnce = new WeakSet<TaskState>();

  /** Enters a WAITING task of a wait for an event (again: no change). */
  add(task: TaskState, wait: CompiledEventWait): void {
    if (this.entries.has(task)) return;
    const literal = wait.segments.every((s) => s !== "*" && s !== "**") ? wait.event : null;
    this.entries.set(task, literal);
    if (literal === null) this.patterned.add(task);
    else (this.exact.get(literal) ?? this.exact.set(literal, new Set()).get(literal))?.add(task);
  }

  /** Removes a task (it ended, or is no longer active); unknown tasks are ignored. */
  remove(task: TaskState): void {
    if (!this.entries.has(task)) return;
    const literal = this.entries.get(task) ?? null;
    this.entries.delete(task);
    if (literal === null) {
      this.patterned.delete(task);
      return;
    }
    const set = this.exact.get(literal);
    set?.delete(task);
    if (set?.size === 0) this.exact.delete(literal);
  }

  /** The tasks whose pattern may match `key`: those of the literal key, and every patterned one. */
  candidates(key: string): TaskState[] {
    return [...(this.exact.get(key) ?? []), ...this.patterned];
  }

  /** Waits entered (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }

  /** True the first time a task's filter fails (so that it is reported once). */
  firstFailure(task: TaskState): boolean {
    if (this.failedOnce.has(task)) return false;
    this.failedOnce.add(task);
    return true;
  }
}

/** The index of `core`, made on first use. */
export function eventWaitsOf(core: Core): EventWaitIndex {
  core.eventWaits ??= new EventWaitIndex();
  return core.eventWaits;
}
