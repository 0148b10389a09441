/**
 * What every rule of the core works on: the active runs and tasks (the in-memory model, changed in
 * place), the sessions' leases, and the sink of effects the shell carries out. The core has no
 * clock, randomness or I/O of its own: time, jitter and ids come in with each input (a
 * {@link Moment}, `newId`), and everything to be done outside goes out through {@link Effects}.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { LifecycleEventSchema } from "@nexusflow/gen";
import type { AttemptState, RunState, TaskState } from "../model/run-state.js";
import type { Bucket, RateLimitState } from "../model/rate-limit-state.js";
import type { ConcurrencyState } from "./concurrency.js";
import type { FairShareState } from "../model/fair-share-state.js";
import type { EventWaitIndex } from "./event-wait-index.js";

/** A lifecycle event as the rules emit it: the `event` oneof of LifecycleEvent. */
export type EventInit = NonNullable<MessageInitShape<typeof LifecycleEventSchema>["event"]>;

/** When an input happens: wall time, monotonic time (ms) and a jitter draw in [0, 1). */
export interface Moment {
  readonly now: Date;
  readonly mono: number;
  readonly jitter: number;
}

/** A session as the rules see it: which executor, and the task runs leased on it. */
export interface SessionLeases {
  readonly id: string;
  readonly executorId: string;
  readonly leases: Set<string>;
  /**
   * The session protocol version agreed in its attach (absent: 1): from version 3
   * (ELEMENT_FOLDERS_VERSION) a map element's report keys must be in the element's own folder.
   */
  readonly protocolVersion?: number;
}

/** A timer the shell sets and, when it fires, feeds back as an input (see timeouts.ts). */
export type Timer =
  | {
      readonly kind: "schedule-to-start";
      readonly task: TaskState;
      readonly attempt: number;
      readonly limitMs: number;
    }
  | { readonly kind: "start-to-close"; readonly task: TaskState; readonly token: number }
  | { readonly kind: "retry"; readonly task: TaskState }
  | { readonly kind: "run-deadline"; readonly run: RunState }
  | { readonly kind: "lease-grace"; readonly task: TaskState; readonly token: number }
  | { readonly kind: "durable"; readonly task: TaskState }
  | { readonly kind: "rate-limit"; readonly bucket: Bucket; readonly at: number };

/**
 * The effects of the rules, carried out by the shell as they are reported (no array of them is
 * built on the hot path). Rows and events are committed together by the next commit.
 */
export interface Effects {
  /** The run's row changed. */
  writeRun(run: RunState): void;
  /** The task's row changed. */
  writeTask(task: TaskState): void;
  /** The attempt's row changed. */
  writeAttempt(attempt: AttemptState): void;
  /** A lifecycle event of the run, numbered in this order. */
  event(run: RunState, event: EventInit): void;
  /** The task is ready: offer its lease to the sessions (`front`: a released lease keeps its place). */
  offer(task: TaskState, front: boolean): void;
  /** Hand out leases soon (a pass over the ready queues). */
  pump(): void;
  /** Tell the executor holding the task's lease to stop. */
  cancelLease(task: TaskState, reason: string): void;
  /** The task's lease ended: any grace timer of it is moot. */
  leaseEnded(task: TaskState): void;
  /** Set a timer, due in `delayMs`. */
  setTimer(timer: Timer, delayMs: number): void;
  /** Store the pause (or resume) of a rate limit bucket now. */
  pauseRateLimit(bucket: Bucket): void;
  /** Read the task's offloaded output back (see reports.ts outputResolved/outputUnavailable). */
  resolveOutput(task: TaskState): void;
  /** Evaluate the run once the reports already received are applied (see runs.ts advance). */
  advanceSoon(run: RunState): void;
  /**
   * A child workflow step (or map element) went WAITING: read the child's row, resolve its
   * workflow and input, and answer with children.ts childResolved (or childFoundEnded for a child
   * that already ended), naming the task by its stored step id.
   */
  startChild(run: RunState, task: TaskState): void;
  /**
   * The compensation `task` of a child workflow step rolls back `childRunId`, not in memory: read
   * its row (its tasks and workflow too when it SUCCEEDED) and answer with child-rollback.ts
   * childRollbackRead.
   */
  rollbackChild(run: RunState, task: TaskState, childRunId: string): void;
  /** The run ended: once committed, it leaves memory (see runs.ts forgetRun). */
  runEnded(run: RunState): void;
  /** Commit now (nobody needs to wait for it). */
  commit(): void;
  /** Commit soon, with the next commit if one is near. */
  commitSoon(): void;
  /**
   * A fault (a throw) in `run`'s rules where another run's rules reached them ({@link crossInto}):
   * `run`'s, not theirs. The shell logs it with `run`'s id and fails `run` SCHEDULER_ERROR soon,
   * not in the middle of the rules that reached it, which go on.
   */
  fault(run: RunState, error: unknown): void;
}

/** The state the rules work on and where their effects go. */
export interface Core {
  /** Active runs by id. */
  readonly runs: Map<string, RunState>;
  /** Task runs of active runs (and leased tasks of runs just ended) by id. */
  readonly tasks: Map<string, TaskState>;
  /** Attached sessions by id. */
  readonly sessions: ReadonlyMap<string, SessionLeases>;
  readonly fx: Effects;
  /** Grace of a lease whose session was lost before it expires. */
  readonly sessionTimeoutMs: number;
  /** A new unique id (runs, task runs). */
  newId(): string;
  /** Holders and queues of the concurrency keys, made on first use (see concurrency.ts). */
  concurrency?: ConcurrencyState;
  /** Token buckets of the rate limits, made on first use (see rate-limits.ts). */
  rateLimits?: RateLimitState;
  /** The ready queues by fair share, shared with the dispatcher (see fair-shares.ts). */
  fairShares?: FairShareState;
  /** The WAITING waits for an event, made on first use (see event-waits.ts). */
  eventWaits?: EventWaitIndex;
}

/** Why a report was not accepted; sent back as `Rejected`. */
export interface Rejection {
  code: "FAILED_PRECONDITION" | "NOT_FOUND" | "INVALID_ARGUMENT" | "RESOURCE_EXHAUSTED";
  message: string;
}

/**
 * Applies `fn`, rules of `run` reached from another run's (a child's end ends its parent's step, a
 * parent's cancel cancels its child, a concurrency strategy cancels another run): a fault in them
 * is `run`'s ({@link Effects.fault}), and the rules that reached them go on, the caller's run not
 * blamed for it nor cut off half way.
 */
export function crossInto(core: Core, run: RunState, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    core.fx.fault(run, e);
  }
}
