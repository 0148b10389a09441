/**
 * The `task_held` lifecycle event: a queued task the dispatcher would have leased was held back by
 * a gate the core decided then (a full concurrency key, a rate limit bucket without its units or
 * with its key paused). The event is emitted when the task becomes held and again only when the
 * gate holding it changes (its kind, limit or key), never for a gate it already reported: a task
 * that waits an hour behind a key costs one event, however many passes and wake-ups go by. The
 * gate reported is kept on the task (`TaskState.heldBy`); admitting the task clears it, and a task
 * queued again (a retry, a released lease) is held anew. Its reason is ExplainPending's line for
 * the gates of this kind, computed at the decision from the same state.
 *
 * A run that waits for its workflow's concurrency keys (none of its steps started) has the
 * `run_held` event instead, by the same rule: when it starts waiting, and again only when the key
 * holding it changes (`RunState.heldBy`).
 */
import { HoldGate } from "@nexusflow/gen";
import type { Bucket } from "../model/rate-limit-state.js";
import type { RunState, TaskState } from "../model/run-state.js";
import type { HoldGateName, RunHold, TaskHold } from "../model/task-hold.js";
import type { Core } from "./context.js";
import { keyWaits } from "./concurrency.js";
import { pendingReason, rateGates, turnGates, type Gate } from "./explain.js";
import { rateHolds } from "./rate-limits.js";
import { taskKind } from "./transitions.js";

export type { HoldGateName, RunHold, TaskHold };

/** Longest limit name (or key expression) and key value an event carries. */
export const MAX_HOLD_NAME = 200;
/** Longest reason an event carries. */
export const MAX_HOLD_REASON = 1000;

/** The proto HoldGate of each gate. */
export const HOLD_GATES: Readonly<Record<HoldGateName, HoldGate>> = {
  "concurrency-key": HoldGate.CONCURRENCY_KEY,
  "rate-limit": HoldGate.RATE_LIMIT,
  "rate-limit-paused": HoldGate.RATE_LIMIT_PAUSED,
};

/** `text` cut to at most `max` characters, ending with "..." when cut. */
export function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 3)}...`;
}

/**
 * The gate that holds queued `task` at `now`, as the state says where it waits: the first full key
 * of a claim parked in keys' queues, else the first rate limit bucket that cannot grant its units
 * (paused, or short of tokens), else `waitingIn`, a bucket whose waiters it is among (left for a
 * later wake-up: the tokens there are for the waiters before it); null when none holds it.
 */
export function holdingGate(
  task: TaskState,
  now: Date,
  waitingIn?: Bucket,
): Omit<TaskHold, "queuedAt"> | null {
  const claim = task.claim;
  if (claim?.state === "parked") {
    const slot = claim.slots.find((s) => claim.keys.holding(s.id) >= s.limit.limit);
    if (slot !== undefined) return { gate: "concurrency-key", limit: slot.limit.expression, key: slot.value };
  }
  const bucket = rateHolds(task, now)[0]?.bucket ?? waitingIn;
  if (bucket === undefined) return null;
  const paused = bucket.pausedUntil !== null && bucket.pausedUntil > now.getTime();
  return { gate: paused ? "rate-limit-paused" : "rate-limit", limit: bucket.name, key: bucket.key };
}

/**
 * The dispatcher did not admit queued `task` (runs.ts admitQueued), or the bucket it waits in
 * changed (a pause, a wake-up that left it waiting: `waitingIn`): when a gate holds it now that is
 * not the one it last reported, the task_held event is emitted (committed soon: a refusal writes
 * no row of its own).
 */
export function noteHeld(core: Core, task: TaskState, now: Date, waitingIn?: Bucket): void {
  if (task.status !== "QUEUED") return;
  const run = core.runs.get(task.runId);
  if (run === undefined) return;
  const hold = holdingGate(task, now, waitingIn);
  if (hold === null) return;
  const queuedAt = task.queuedAt?.getTime() ?? 0;
  const last = task.heldBy;
  if (
    last !== undefined &&
    last.queuedAt === queuedAt &&
    last.gate === hold.gate &&
    last.limit === hold.limit &&
    last.key === hold.key
  )
    return;
  task.heldBy = { ...hold, queuedAt };
  core.fx.event(run, {
    case: "taskHeld",
    value: {
      taskRunId: task.id,
      stepId: task.stepId,
      kind: taskKind(task),
      attempt: task.attempt + 1,
      gate: HOLD_GATES[hold.gate],
      limit: cut(hold.limit, MAX_HOLD_NAME),
      key: cut(hold.key, MAX_HOLD_NAME),
      reason: cut(holdReason(task, now), MAX_HOLD_REASON),
    },
  });
  core.fx.commitSoon();
}

/**
 * ExplainPending's line for the gates of the core's decisions that hold `task` now: its keys,
 * then its rate limits (or its turn among a bucket's waiters), as explainPending lists them,
 * without its walk of a bucket's waiters for a task its tokens hold.
 */
function holdReason(task: TaskState, now: Date): string {
  const gates: Gate[] = [];
  if (task.claim !== undefined)
    for (const wait of keyWaits(task.claim)) gates.push({ kind: "concurrency-key", ...wait });
  const rate = rateGates(rateHolds(task, now), now);
  return pendingReason([...gates, ...(rate.length > 0 ? rate : turnGates(task))]);
}

/** The dispatcher admitted `task`: the gate it reported no longer holds it. */
export function clearHeld(task: TaskState): void {
  task.heldBy = undefined;
}

/**
 * A wake-up of `bucket` left queued `task` among its waiters: held by the bucket, by its pause or
 * its tokens. Nothing more than a comparison when that is what the task last reported, since a
 * long list of waiters is walked at every wake-up.
 */
export function noteWaiting(core: Core, task: TaskState, bucket: Bucket, now: Date): void {
  const last = task.heldBy;
  const paused = bucket.pausedUntil !== null && bucket.pausedUntil > now.getTime();
  if (
    last !== undefined &&
    last.limit === bucket.name &&
    last.key === bucket.key &&
    last.gate === (paused ? "rate-limit-paused" : "rate-limit") &&
    last.queuedAt === (task.queuedAt?.getTime() ?? 0)
  )
    return;
  noteHeld(core, task, now, bucket);
}

/**
 * The waiters of `bucket` are held by it anew (its key was paused or resumed): each whose holding
 * gate changed gets its task_held event.
 */
export function noteBucketWaiters(core: Core, bucket: Bucket, now: Date): void {
  for (const ref of bucket.waiters) {
    const task = core.tasks.get(ref.id);
    if (task !== undefined) noteHeld(core, task, now, bucket);
  }
}

// ---------------------------------------------------------------- runs

/**
 * The workflow's key that holds `run` back now: the first of its keys that is full, else the first
 * whose queue it is in (let out of a full one, it stays queued where others are before it); null
 * when it does not wait for its workflow's keys.
 */
export function runHoldingKey(run: RunState): RunHold | null {
  const claim = run.claim;
  if (claim?.state !== "parked") return null;
  const full = claim.slots.find((s) => claim.keys.holding(s.id) >= s.limit.limit);
  const slot = full ?? claim.slots.find((s) => claim.keys.spaces.get(s.id)?.waiters.includes(claim) === true);
  return slot === undefined ? null : { limit: slot.limit.expression, key: slot.value };
}

/**
 * `run` did not take its workflow's keys (runs.ts advance): when the key holding it is not the one
 * it last reported, the run_held event is emitted (committed soon).
 */
export function noteRunHeld(core: Core, run: RunState): void {
  if (run.status !== "RUNNING" || run.cancelRequested || run.claim === undefined) return;
  const hold = runHoldingKey(run);
  if (hold === null) return;
  const last = run.heldBy;
  if (last !== undefined && last.limit === hold.limit && last.key === hold.key) return;
  run.heldBy = hold;
  const gates: Gate[] = keyWaits(run.claim).map((w) => ({ kind: "concurrency-key", ...w }));
  core.fx.event(run, {
    case: "runHeld",
    value: {
      gate: HoldGate.CONCURRENCY_KEY,
      limit: cut(hold.limit, MAX_HOLD_NAME),
      key: cut(hold.key, MAX_HOLD_NAME),
      reason: cut(pendingReason(gates), MAX_HOLD_REASON),
    },
  });
  core.fx.commitSoon();
}
