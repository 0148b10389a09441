/**
 * Why ready tasks of a type wait for an executor. A task is QUEUED until a session that advertises
 * its type has credit; when a scheduling pass leaves ready tasks of a type behind, the reason is
 * one of a few facts about the attached sessions, decided by that pass ({@link holdOf}) and
 * recorded in the type's {@link QueueHold}, which every queued task of the type points to
 * (`TaskState.hold`): what explain.ts reads, never recomputed from the sessions afterwards.
 */

import type { Hold, QueueHold } from "../model/queue-hold.js";

export type { Hold, QueueHold };

/** The minimum a hold needs to know of a session (SessionHandle has it). */
export interface SessionView {
  readonly types: ReadonlySet<string>;
  readonly credit: number;
  readonly draining: boolean;
}

/** Why ready tasks of `type` cannot be leased to any of `sessions` now; null when one can take them. */
export function holdOf(type: string, sessions: Iterable<SessionView>): Hold | null {
  let executors = 0;
  let draining = 0;
  for (const s of sessions) {
    if (!s.types.has(type)) continue;
    if (!s.draining && s.credit > 0) return null;
    executors++;
    if (s.draining) draining++;
  }
  return executors === 0 ? { kind: "unadvertised" } : { kind: "busy", executors, draining };
}

/** Whether two holds say the same (null: not held). */
export function sameHold(a: Hold | null, b: Hold | null): boolean {
  if (a === null || b === null) return a === b;
  if (a.kind === "unadvertised" || b.kind === "unadvertised") return a.kind === b.kind;
  return a.executors === b.executors && a.draining === b.draining;
}

/**
 * The one-line reason of a hold: `no executor advertises type "charge-card"`,
 * `all 2 executors for type "charge-card" are busy (no credit)`; "" when not held.
 */
export function describeHold(type: string, hold: Hold | null | undefined): string {
  if (hold === null || hold === undefined) return "";
  const t = JSON.stringify(type);
  if (hold.kind === "unadvertised") return `no executor advertises type ${t}`;
  const state =
    hold.draining === hold.executors
      ? "draining"
      : hold.draining === 0
        ? "busy (no credit)"
        : "busy (no credit) or draining";
  return hold.executors === 1
    ? `the one executor for type ${t} is ${state}`
    : `all ${hold.executors} executors for type ${t} are ${state}`;
}
