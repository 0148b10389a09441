/**
 * Named rate limits (`rateLimits` on a step): token buckets, one per limit name and key value,
 * shared by every step of every workflow that names the limit. A bucket holds at most `burst`
 * tokens and gains `rate` every `per`, continuously; a task takes `units` of each of its buckets
 * when it is leased. So in any window of length `per`, a bucket grants at most
 * `rate + burst - units` tokens: with the default burst (= units), at most `rate`.
 *
 * Decided when the task would be leased (the dispatcher asks {@link admitRate} through
 * runs.ts admitQueued, and skips a refused task, so an empty bucket never holds up other work):
 * a task whose bucket lacks its units, or whose key is paused, waits in the bucket's list of
 * waiters, and one timer per bucket offers them again when the tokens are there (never a poll).
 *
 * Durable: a grant records the bucket as it left it on the task ({@link TaskState.rateTaken}),
 * which the store writes with the task's lease row in one commit (table rate_limit_grants, a row
 * per writer shard upserted only by a later grant's `seq`); recovery reads the buckets back (each
 * one's highest `seq`) before any lease.
 * A pause (a handler's TaskError with pauseKeyUntil, an HTTP step's Retry-After, an operator's
 * PauseRateLimit) is written by its own statement (see the engine).
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { type CompiledRateLimit, type EvalScope } from "../dag/index.js";
import {
  type Bucket,
  type BucketSnapshot,
  liveBucket,
  RateLimitState,
  type RateWant,
} from "../model/rate-limit-state.js";
import type { TaskState } from "../model/run-state.js";
import { admitTask, type CancelRun, limitKeys, runScope, unreadSteps } from "./concurrency.js";
import type { Core } from "./context.js";
import { keyString } from "./key-value.js";
import { failTerminally, stepState } from "./transitions.js";
import { noteBucketWaiters, noteWaiting } from "./hold-events.js";
import { awaitRead } from "./unread-keys.js";

export { type Bucket, type BucketSnapshot, RateLimitState, type RateWant };

/** Tolerance of float token counts (a token refilled over 20 ms at 50/s is 1.0 within it). */
const EPSILON = 1e-9;

/** A rate limit key that is not a string or a number, or that cannot be evaluated. */
export class RateLimitKeyError extends Error {
  override name = "RateLimitKeyError";
  /** JSON path of the key in the definition, e.g. `$.steps[1].rateLimits[0].key`. */
  readonly path: string;

  constructor(path: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.path = path;
  }
}

/** The rate limit state of `core`, made on first use. */
export function rateLimitsOf(core: Core): RateLimitState {
  return (core.rateLimits ??= new RateLimitState());
}

/** The key value of one limit in `scope` ("" without a key); throws RateLimitKeyError. */
export function rateKeyValue(limit: CompiledRateLimit, scope: EvalScope): string {
  if (limit.key === null) return "";
  const path = `${limit.path}.key`;
  const what = `rate limit ${JSON.stringify(limit.name)} key ${JSON.stringify(limit.expression)} (${path})`;
  return keyString(
    limit.key,
    scope,
    what,
    "a rate limit key",
    (message, options) => new RateLimitKeyError(path, message, options),
  );
}

/**
 * Evaluates the keys of a step's task when it is first queued (`scope`: its run's input, run and
 * upstream outputs); returns the error that fails the step when a key is not a string or a number.
 */
export function wantRate(
  core: Core,
  task: TaskState,
  limits: readonly CompiledRateLimit[],
  scope: EvalScope,
  now: Date,
): RateLimitKeyError | null {
  if (task.rate !== undefined) return null;
  const state = rateLimitsOf(core);
  try {
    task.rate = limits.map((limit) => ({
      limit,
      bucket: state.bucket(limit.name, rateKeyValue(limit, scope), limit.burst, now.getTime()),
    }));
    return null;
  } catch (error) {
    if (error instanceof RateLimitKeyError) return error;
    throw error;
  }
}

/** Brings the bucket's tokens up to `now` by the limit's rate, at most its burst. */
function refill(b: Bucket, limit: CompiledRateLimit, now: number): void {
  if (now > b.refilledAt) {
    b.tokens = Math.min(limit.burst, b.tokens + ((now - b.refilledAt) * limit.rate) / limit.perMs);
    b.refilledAt = now;
  } else if (b.tokens > limit.burst) b.tokens = limit.burst;
  settle(b, limit);
}

/** Sets when the bucket's tokens are back at the limit's burst (RateLimitState drops it then). */
function settle(b: Bucket, limit: CompiledRateLimit): void {
  const missing = limit.burst - b.tokens;
  b.fullAt =
    missing > EPSILON ? b.refilledAt + Math.ceil((missing * limit.perMs) / limit.rate) : b.refilledAt;
}

/**
 * When `want`'s bucket can grant its units (ms since the epoch); `now` when it can now. Reads the
 * bucket in memory now ({@link liveBucket}): `want.bucket` is that one afterwards.
 */
export function readyAt(want: RateWant, now: number): number {
  const b = liveBucket(want);
  refill(b, want.limit, now);
  let at = now;
  if (b.pausedUntil !== null && b.pausedUntil > now) at = b.pausedUntil;
  const missing = want.limit.units - b.tokens;
  if (missing > EPSILON) at = Math.max(at, now + Math.ceil((missing * want.limit.perMs) / want.limit.rate));
  return at;
}

/**
 * Whether every bucket of `task` can grant its units at `now`, without taking them. When one
 * cannot, the task waits in that bucket's list and a wake-up is set: returns false.
 */
export function checkRate(core: Core, task: TaskState, now: Date): boolean {
  const wants = task.rate;
  if (wants == null) return true;
  const t = now.getTime();
  for (const want of wants) {
    const at = readyAt(want, t);
    if (at <= t) continue;
    const b = want.bucket;
    b.waiters.push(task);
    wake(core, b, at, t);
    return false;
  }
  return true;
}

/** Takes the units of every bucket of `task` (checkRate said they are there), recording the grant. */
export function takeRate(task: TaskState, now: Date): void {
  const wants = task.rate;
  if (wants == null) return;
  const t = now.getTime();
  const taken: BucketSnapshot[] = [];
  for (const want of wants) {
    const b = liveBucket(want);
    refill(b, want.limit, t);
    b.tokens = Math.max(0, b.tokens - want.limit.units);
    settle(b, want.limit);
    b.seq++;
    taken.push({
      id: b.id,
      name: b.name,
      key: b.key,
      tokens: b.tokens,
      refilledAt: b.refilledAt,
      seq: b.seq,
      fullAt: b.fullAt,
    });
  }
  task.rateTaken = taken;
}

/** Sets the bucket's one timer at `at` unless one is set as early. */
function wake(core: Core, b: Bucket, at: number, now: number): void {
  if (b.wakeAt !== null && b.wakeAt <= at) return;
  b.wakeAt = at;
  core.fx.setTimer({ kind: "rate-limit", bucket: b, at }, Math.max(0, at - now));
}

/**
 * A bucket's timer fired: its waiters still queued are offered again, in their order, as many as
 * its tokens allow now (each is checked again when leased); the rest wait for the next wake-up.
 */
export function rateWake(core: Core, b: Bucket, at: number, now: Date): void {
  if (b.wakeAt !== at) return;
  b.wakeAt = null;
  const t = now.getTime();
  const waiters = b.waiters.splice(0);
  // Offered, not taken: the dispatcher takes the tokens when it leases them. Only as many are let
  // out as there are tokens for, so that a long list is not walked again on every token.
  let budget: number | null = null;
  let next = Number.POSITIVE_INFINITY;
  let offered = false;
  for (const ref of waiters) {
    const task = core.tasks.get(ref.id);
    if (task === undefined || task.status !== "QUEUED") continue;
    const want = task.rate?.find((w) => w.bucket === b);
    if (want === undefined) continue;
    const ready = readyAt(want, t);
    budget ??= Math.floor((b.tokens + EPSILON) / want.limit.units);
    if (ready <= t && budget > 0) {
      budget--;
      core.fx.offer(task, true);
      offered = true;
      continue;
    }
    b.waiters.push(task);
    next = Math.min(
      next,
      ready > t ? ready : t + Math.ceil((want.limit.units * want.limit.perMs) / want.limit.rate),
    );
  }
  if (b.waiters.length > 0) wake(core, b, next, t);
  // Those left are still held by the bucket (after a pause that ended, by its tokens): a
  // task_held event for each whose gate changed.
  for (const ref of b.waiters) {
    const task = core.tasks.get(ref.id);
    if (task !== undefined) noteWaiting(core, task, b, now);
  }
  if (offered) core.fx.pump();
}

/** Pauses (or, with `until` null, resumes) one bucket; its waiters are woken at the end. */
export function pauseBucket(
  core: Core,
  b: Bucket,
  until: number | null,
  by: string,
  note: string,
  now: Date,
): void {
  const t = now.getTime();
  b.pausedUntil = until !== null && until > t ? until : null;
  b.pausedBy = b.pausedUntil === null ? "" : by;
  b.pauseNote = b.pausedUntil === null ? "" : note;
  if (b.waiters.length > 0) {
    b.wakeAt = null;
    wake(core, b, b.pausedUntil ?? t, t);
    // Its waiters are held by the pause now (or, resumed, by its tokens if any).
    noteBucketWaiters(core, b, now);
  }
}

/** The buckets of `task`'s rate limits that hold it at `now`, with when each lets it go. */
export function rateHolds(
  task: TaskState,
  now: Date,
): { name: string; key: string; nextTokenAt: number; bucket: Bucket }[] {
  const out: { name: string; key: string; nextTokenAt: number; bucket: Bucket }[] = [];
  for (const want of task.rate ?? []) {
    const at = readyAt(want, now.getTime());
    const b = want.bucket;
    if (at > now.getTime()) out.push({ name: b.name, key: b.key, nextTokenAt: at, bucket: b });
  }
  return out;
}

/**
 * The dispatcher is about to lease `task` (runs.ts admitQueued): its rate limits' keys are
 * evaluated on first use (a key that is not a string or a number fails the step with
 * RATE_LIMIT_KEY_ERROR; one that reads an offloaded output not read back yet, after a restart,
 * waits for the read: unread-keys.ts), then every bucket must have its units, then its
 * concurrency keys must admit it (`cancel`: how their strategies cancel a run); only then are the
 * tokens taken. False: skip it.
 */
export function admitWithRate(core: Core, task: TaskState, now: Date, cancel: CancelRun): boolean {
  if (task.rate === null) {
    const run = core.runs.get(task.runId);
    const limits = run?.workflow.stepsById.get(task.stepId)?.rateLimits;
    if (run === undefined || limits === undefined) task.rate = undefined;
    else {
      task.rate = undefined;
      const scope: EvalScope = {
        ...runScope(run),
        stepView: (id) => {
          const t = run.tasks.get(id);
          if (t === undefined) return undefined;
          const s = stepState(t);
          return { status: s.status, output: s.output };
        },
      };
      const error = wantRate(core, task, limits, scope, now);
      if (error !== null && unreadSteps(run, limitKeys(limits)).length > 0) {
        // Evaluated again when the output is read back and the task offered again.
        task.rate = null;
        awaitRead(run, task);
        return false;
      }
      if (error !== null) {
        failTerminally(
          core,
          run,
          task,
          { type: TaskErrorType.RATE_LIMIT_KEY_ERROR, message: error.message, retryable: false },
          now,
        );
        core.fx.advanceSoon(run);
        return false;
      }
    }
  }
  if (task.rate !== undefined && !checkRate(core, task, now)) return false;
  if (!admitTask(core, task, now, cancel)) return false;
  takeRate(task, now);
  return true;
}

/** Longest pause a handler may ask for (a partner's Retry-After of days is read as this). */
export const MAX_HANDLER_PAUSE_MS = 24 * 60 * 60 * 1000;

/**
 * A handler's failure paused the keys of its task's rate limits until `until` (TaskError
 * pauseKeyUntil, an HTTP step's Retry-After): each bucket is paused until then (at most
 * {@link MAX_HANDLER_PAUSE_MS} away; a longer pause already set stays), and the pause is stored.
 */
export function pauseTaskKeys(
  core: Core,
  task: TaskState,
  until: number,
  by: string,
  note: string,
  now: Date,
): void {
  const t = now.getTime();
  const end = Math.min(until, t + MAX_HANDLER_PAUSE_MS);
  for (const want of task.rate ?? []) {
    const b = liveBucket(want);
    if (b.pausedUntil !== null && b.pausedUntil >= end) continue;
    pauseBucket(core, b, end, by, note.slice(0, 500), now);
    core.fx.pauseRateLimit(b);
  }
}
