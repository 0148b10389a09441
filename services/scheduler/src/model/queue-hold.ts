/**
 * Why the ready tasks of a type wait for an executor, as the latest scheduling pass recorded it
 * (core/holds.ts decides it; every queued task of the type points to its type's record).
 */

/**
 * Why the ready tasks of a type are held back: no attached session advertises the type, or every
 * session that does is busy (no credit) or draining.
 */
export type Hold =
  | { readonly kind: "unadvertised" }
  | { readonly kind: "busy"; readonly executors: number; readonly draining: number };

/**
 * The latest scheduling pass's decision for one task type, shared by its queued tasks: the hold
 * (null when a session could take them) and since when it has said so.
 */
export interface QueueHold {
  hold: Hold | null;
  /** When the pass that recorded `hold` ran (the latest change of it); null before any. */
  since: Date | null;
}
