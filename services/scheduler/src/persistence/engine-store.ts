/**
 * What the engine needs of storage, as one interface with two implementations: PostgreSQL
 * (postgres-engine-store.ts: the group-commit writer, the recovery queries, the idempotency key
 * table) and memory (memory-engine-store.ts: the same contract, for tests of the engine without a
 * database). Both pass the suite in engine-store-contract.ts.
 */
import type { StoredBucket } from "../model/rate-limit-state.js";
import type { KeyRecord } from "./idempotency-keys.js";
import type { OutboxRow } from "./outbox.js";
import type { RefusedRunOutcome } from "./refused-run.js";
import type {
  AttemptState,
  ErrorInfo,
  RunState,
  ParentLink,
  RerunLink,
  RunStatusName,
  SignalState,
  TaskState,
} from "../model/run-state.js";

export type { KeyRecord, RefusedRunOutcome };

/** Some partitions of an installation with `count` partitions (a replica's, docs/replicas.md). */
export interface PartitionScope {
  readonly count: number;
  readonly partitions: readonly number[];
}

/** What one commit contained, for watchers and the outbox relay. */
export interface CommittedChanges {
  readonly runIds: ReadonlySet<string>;
  readonly events: number;
}

/** Told of commits and of runs whose changes the database refused for their data. */
export interface EngineStoreListener {
  /** After each successful commit. */
  committed(changes: CommittedChanges): void;
  /**
   * Before the waiters of the commit resolve: the run's changes (and its events of that commit,
   * and whatever was marked for it since) were dropped because the database refused their data.
   */
  refused(runId: string, error: Error): void;
}

/** How a run stands in the database: what a parent's child workflow step reads of its child. */
export interface RunOutcome {
  readonly status: RunStatusName;
  readonly output: unknown;
  readonly error: ErrorInfo | null;
}

/** An active run as stored (what recovery needs besides its compiled workflow). */
export interface StoredRun {
  readonly id: string;
  readonly definitionId: number;
  readonly workflowName: string;
  readonly status: RunStatusName;
  readonly input: unknown;
  readonly idempotencyKey: string | null;
  readonly labels: Record<string, string>;
  /** The run's trace context (RunState.traceParent); absent is null. */
  readonly traceParent?: string | null;
  readonly cancelRequested: boolean;
  readonly compensateOnCancel: boolean;
  readonly error: ErrorInfo | null;
  /** The last event sequence number used: the higher of the run row's and its outbox's. */
  readonly lastEventSeq: number;
  readonly deadline: Date | null;
  readonly createdAt: Date;
  /** Signals stored on the run (RunState.signals); absent is none. */
  readonly signals?: SignalState[];
  /** The run's parent, when a child workflow step started it (RunState.parent); absent is none. */
  readonly parent?: ParentLink | null;
  /** What a rerun was made of (RunState.rerun); absent for other runs. */
  readonly rerun?: RerunLink;
}

/** A run as stored with all its task rows, whatever its status (EngineStore.loadRun). */
export interface StoredRunRows {
  readonly run: StoredRun;
  readonly tasks: readonly StoredTask[];
}

/**
 * A task run of an active run as stored: its state without what lives in memory only (session,
 * heartbeat, a resolved offloaded output); `failures` counts its failed attempts, and `current` is
 * its latest attempt while it is LEASED or RUNNING (error, logs and end time not read).
 */
export type StoredTask = Omit<TaskState, "sessionId" | "lastHeartbeat" | "resolvedOutput">;

/** Everything recovery reads: active runs oldest first, their tasks by run and position. */
export interface StoredActiveState {
  readonly runs: readonly StoredRun[];
  readonly tasks: readonly StoredTask[];
}

/** A pause (or resume, `until` null) of a rate limit's key, as written by {@link EngineStore.pauseRateLimit}. */
export interface RateLimitPause {
  readonly name: string;
  readonly key: string;
  readonly until: number | null;
  readonly by: string;
  readonly note: string;
  /**
   * The bucket as it is (its tokens as of `refilledAt`, when they are back at its burst; null: not
   * known), for a row made by the pause: a bucket whose grants were all purged reads it back.
   */
  readonly tokens: number;
  readonly refilledAt: number;
  readonly fullAt: number | null;
}

/** A key paused now, as stored ({@link EngineStore.loadRateLimitPauses}). */
export interface StoredPause {
  readonly name: string;
  readonly key: string;
  /** Ms since the epoch, in the future when read. */
  readonly pausedUntil: number;
  readonly pausedBy: string;
  readonly pauseNote: string;
}

/** A page of stored buckets: of limit `name` ("" for all), after `after` (by name then key), at most `limit`. */
export interface RateLimitPage {
  readonly name: string;
  readonly after: { readonly name: string; readonly key: string } | null;
  readonly limit: number;
}

/** Storage of the engine's state; see the module comment. */
export interface EngineStore {
  /** Sets the one listener of commits and refusals (the engine). */
  listen(listener: EngineStoreListener): void;
  /** False while commits are failing (the database is unreachable). */
  readonly isHealthy: boolean;
  /** Whether `row` (a run, task or attempt object marked here) has been committed once. */
  isStored(row: object): boolean;
  /** Marks a run as changed; its idempotency key, if any, is written with it. */
  markRun(run: RunState): void;
  /** Marks a task as changed. */
  markTask(task: TaskState): void;
  /** Marks an attempt as changed. */
  markAttempt(attempt: AttemptState): void;
  /** Appends a lifecycle event (kept in order, committed with the rows marked with it). */
  addEvent(event: OutboxRow): void;
  /** Resolves when everything marked so far is committed; rejects once the store is closed. */
  flush(): Promise<void>;
  /**
   * The rows of `ids` left memory once committed (a parked run's): what is known of them for
   * their next write may go (a run loaded back is read again). @default nothing kept
   */
  released?(ids: Iterable<string>): void;
  /**
   * Runs whose partition was lost (PendingChanges.retire): what is marked for them is dropped and
   * never committed. @default kept (no partitions)
   */
  retire?(runs: readonly RunState[], tasks: readonly TaskState[]): void;
  /** Commits what is marked within `delayMs` unless another commit takes it along first. */
  flushSoon(delayMs: number): void;
  /**
   * The active runs (PENDING, RUNNING, COMPENSATING) with their tasks, but for parked ones
   * (parked-runs.ts); with `scope`, only the runs of those partitions (cluster/partitioning.ts).
   */
  loadActive(scope?: PartitionScope): Promise<StoredActiveState>;
  /**
   * The rate limits' token buckets as committed (core/rate-limits.ts), by name then key: all of
   * them (recovery), or with `page` one page of them (listing).
   */
  loadRateLimits(page?: RateLimitPage): Promise<StoredBucket[]>;
  /**
   * Writes a pause of a bucket's key until `until` (ms since the epoch; null: resumed), with who
   * and why, at once (not with a batch); a bucket without a row gets one, with its tokens.
   */
  pauseRateLimit(pause: RateLimitPause): Promise<void>;
  /**
   * The keys paused now, as stored (by any replica of a cluster), with who and why: what a replica
   * reads to take the pauses and resumes another wrote (engine/rate-limit-admin.ts).
   */
  loadRateLimitPauses(): Promise<StoredPause[]>;
  /** A run's status, output and error as committed (a child run, core/children.ts); undefined when absent. */
  runOutcome(runId: string): Promise<RunOutcome | undefined>;
  /**
   * A run's row and task rows as committed, whatever its status (a child that SUCCEEDED, back in
   * memory to roll back with its parent: core/child-rollback.ts); undefined when absent. Its rows
   * are written as stored ones from then on.
   */
  loadRun(runId: string): Promise<StoredRunRows | undefined>;
  /** The record of an idempotency key unless it is missing or older than `notBefore`. */
  lookupKey(workflowName: string, key: string, notBefore: Date): Promise<KeyRecord | undefined>;
  /** The keys of the given runs, by run id: only those whose key still names them. */
  keysOfRuns(
    runs: readonly { id: string; workflowName: string; key: string }[],
  ): Promise<Map<string, KeyRecord>>;
  /**
   * Ends a stored run FAILED with `error` in one step: its unfinished tasks and attempts
   * CANCELLED, a runCompleted event with its next sequence number (see refused-run.ts).
   */
  failRefusedRun(runId: string, error: ErrorInfo): Promise<RefusedRunOutcome>;
  /** Commits what is pending (best effort, bounded), then refuses new work. */
  close(): Promise<void>;
}

/**
 * Orders two strings by code point, as PostgreSQL's "C" collation orders their UTF-8 bytes (and
 * not as `<` does, by UTF-16 unit): the order of listed buckets, the same in memory and in SQL.
 */
export function codePointOrder(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i) as number;
    const y = b.codePointAt(i) as number;
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++;
  }
  return a.length < b.length ? -1 : 1;
}

/** Orders buckets by name, then key ({@link codePointOrder}). */
export function bucketOrder(a: { name: string; key: string }, b: { name: string; key: string }): number {
  return codePointOrder(a.name, b.name) || codePointOrder(a.key, b.key);
}

/** Whether bucket `b` belongs to `page`: of its limit, and after its position (by name then key). */
export function afterInPage(b: { name: string; key: string }, page: RateLimitPage): boolean {
  if (page.name !== "" && b.name !== page.name) return false;
  return page.after === null || bucketOrder(b, page.after) > 0;
}
