/**
 * The gate that holds a queued task back, as the latest `task_held` lifecycle event of the task
 * reported it (core/hold-events.ts): kept on the task so that an event is emitted only when the
 * task becomes held or the gate holding it changes, never again for the same gate; likewise the
 * key a run waiting for its workflow's keys last reported (`run_held`).
 */

/** A gate decided when the task would be leased (proto HoldGate). */
export type HoldGateName = "concurrency-key" | "rate-limit" | "rate-limit-paused";

/** The gate a task's latest task_held event named. */
export interface TaskHold {
  readonly gate: HoldGateName;
  /** The concurrency key's expression, or the rate limit's name. */
  readonly limit: string;
  /** The key value ("" for a rate limit without a key). */
  readonly key: string;
  /** The `queuedAt` of the task when it was held: a task queued again since is held anew. */
  readonly queuedAt: number;
}

/** The workflow's key a run's latest `run_held` event named (it waits for its workflow's keys). */
export interface RunHold {
  /** The key's expression. */
  readonly limit: string;
  /** The key value. */
  readonly key: string;
}
