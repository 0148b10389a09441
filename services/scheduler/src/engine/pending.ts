/**
 * Why ready tasks wait. A task is QUEUED until a session that advertises its type has credit; when
 * the dispatcher's pass leaves ready tasks of a type behind, the reason is one of a few facts about
 * the attached sessions (core/holds.ts), recorded per type (see Dispatcher.recordHolds), read by
 * ExplainPending and shown with each queued task in GetRun (`TaskRun.pending_reason`). A type
 * that no session advertises at all is a problem an operator must fix (deploy or configure an
 * executor), so it is also logged: see UnservedTypes.
 */
import type { Logger } from "@nexusflow/common";
import type { Hold } from "../core/holds.js";

// The holds are the core's (core/holds.ts); re-exported for the shell's modules and their tests.
export {
  describeHold,
  holdOf,
  sameHold,
  type Hold,
  type QueueHold,
  type SessionView,
} from "../core/holds.js";

/** Options of {@link UnservedTypes}. */
export interface UnservedTypesOptions {
  log: Logger;
  /** Least time between two warnings about the same type. @default 60000 */
  repeatMs?: number | undefined;
  /** Monotonic clock in milliseconds. @default performance.now */
  now?: (() => number) | undefined;
}

/**
 * Logs task types that have ready tasks and no executor session advertising them: one warning per
 * type when that begins (`no executor advertises type "x"; 3 tasks waiting`), repeated at most once
 * per `repeatMs` for as long as it lasts (not one line per task), and then an info line when an
 * executor advertising the type attaches. Fed by the engine from the dispatcher's holds.
 */
export class UnservedTypes {
  private readonly log: Logger;
  private readonly repeatMs: number;
  private readonly now: () => number;
  /**
   * Types currently without any advertising session while tasks wait, each with whether it was
   * warned about since that began (only then is its end worth a line).
   */
  private readonly unserved = new Map<string, boolean>();
  /** When each type was last warned about (kept across episodes, so a flapping type warns rarely). */
  private readonly warnedAt = new Map<string, number>();
  /** Warnings are held back until then (see quietFor). */
  private quietUntilMs = 0;

  constructor(options: UnservedTypesOptions) {
    this.log = options.log;
    this.repeatMs = options.repeatMs ?? 60_000;
    this.now = options.now ?? (() => performance.now());
  }

  /**
   * Holds warnings back for `ms`: after a scheduler restart, executors reconnect within their
   * backoff, and until then every type with queued tasks would look unserved.
   */
  quietFor(ms: number): void {
    this.quietUntilMs = this.now() + ms;
  }

  /**
   * The dispatcher recorded a new hold for `type`. `waiting` counts its queued tasks; it is asked
   * only when a line is due, since counting walks the type's queue.
   */
  update(type: string, hold: Hold | null, waiting: () => number): void {
    if (hold?.kind !== "unadvertised") {
      this.unserved.delete(type);
      return;
    }
    if (this.unserved.has(type)) return;
    this.unserved.set(type, false);
    const now = this.now();
    if (this.due(type, now)) this.warn(type, waiting(), now);
  }

  /** A session advertising `types` attached: says so for each type that was warned about. */
  attached(executorId: string, types: Iterable<string>, waiting: (type: string) => number): void {
    for (const type of types) {
      const warned = this.unserved.get(type);
      this.unserved.delete(type);
      if (warned !== true) continue;
      const n = waiting(type);
      this.log.info(
        { task_type: type, executor_id: executorId, waiting: n },
        `executor ${JSON.stringify(executorId)} advertises type ${JSON.stringify(type)}; ${tasks(n)} waiting for it can be leased`,
      );
    }
  }

  /** Called periodically: repeats the warning of each type still unserved once it is due. */
  tick(waiting: (type: string) => number): void {
    const now = this.now();
    for (const type of this.unserved.keys()) {
      if (!this.due(type, now)) continue;
      const n = waiting(type);
      // Its tasks left the queue without a scheduling pass (cancelled, timed out): nothing to say.
      if (n === 0) this.unserved.delete(type);
      else this.warn(type, n, now);
    }
    // Forget warning times long past, so the map does not grow with every type ever seen.
    for (const [type, at] of this.warnedAt) {
      if (!this.unserved.has(type) && now - at >= this.repeatMs) this.warnedAt.delete(type);
    }
  }

  private due(type: string, now: number): boolean {
    if (now < this.quietUntilMs) return false;
    const last = this.warnedAt.get(type);
    return last === undefined || now - last >= this.repeatMs;
  }

  private warn(type: string, waiting: number, now: number): void {
    if (waiting === 0) return;
    this.warnedAt.set(type, now);
    this.unserved.set(type, true);
    this.log.warn(
      { task_type: type, waiting },
      `no executor advertises type ${JSON.stringify(type)}; ${tasks(waiting)} waiting`,
    );
  }
}

function tasks(n: number): string {
  return n === 1 ? "1 task" : `${n} tasks`;
}
