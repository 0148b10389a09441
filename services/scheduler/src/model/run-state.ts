/**
 * The scheduler's in-memory model of active runs. It is a cache of what is in PostgreSQL: every
 * change is written by the batch writer before anyone outside the scheduler acts on it, and
 * recovery rebuilds it from the tables alone.
 */
import { randomUUID } from "node:crypto";
import { RunStatus, TaskStatus, type TaskKind } from "@nexusflow/gen";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { traceparentSampled } from "@nexusflow/common/telemetry";
import type { Claim } from "./concurrency-state.js";
import type { FairKey, FairPath } from "./fair-share-state.js";
import type { QueueHold } from "./queue-hold.js";
import type { BucketSnapshot, RateWant } from "./rate-limit-state.js";
import type { RunHold, TaskHold } from "./task-hold.js";
import type { CompiledWorkflow, EvaluationMemo } from "../dag/index.js";

/** Run states as stored: the names of the generated RunStatus enum ("SUCCEEDED"). */
export type RunStatusName = Exclude<keyof typeof RunStatus, "UNSPECIFIED">;

/** Task (and attempt) states as stored: the names of the generated TaskStatus enum. */
export type TaskStatusName = Exclude<keyof typeof TaskStatus, "UNSPECIFIED">;

/** Step or compensation: the names of the generated TaskKind enum. */
export type TaskKindName = Exclude<keyof typeof TaskKind, "UNSPECIFIED">;

/** The stored name of a run state. */
export function runStatusName(status: Exclude<RunStatus, RunStatus.UNSPECIFIED>): RunStatusName {
  return RunStatus[status] as RunStatusName;
}

/** The stored name of a task state. */
export function taskStatusName(status: Exclude<TaskStatus, TaskStatus.UNSPECIFIED>): TaskStatusName {
  return TaskStatus[status] as TaskStatusName;
}

/** Run states after which nothing changes. */
export const TERMINAL_RUN_STATUSES: ReadonlySet<RunStatusName> = new Set(
  (
    [
      RunStatus.SUCCEEDED,
      RunStatus.FAILED,
      RunStatus.CANCELLED,
      RunStatus.TIMED_OUT,
      RunStatus.COMPENSATED,
      RunStatus.COMPENSATION_FAILED,
    ] as const
  ).map(runStatusName),
);

/** Task states after which nothing changes. */
export const TERMINAL_TASK_STATUSES: ReadonlySet<TaskStatusName> = new Set(
  ([TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED] as const).map(
    taskStatusName,
  ),
);

/** Task states in which a task may be held back, and so carry a pending reason (TaskRun.pending_reason). */
export const HELD_BACK_TASK_STATUSES: ReadonlySet<string> = new Set([
  "PENDING",
  "QUEUED",
  "RETRY_WAIT",
  "WAITING",
]);

/** Task (and attempt) states while an executor holds the lease. */
export const ACTIVE_LEASE: ReadonlySet<TaskStatusName> = new Set(
  ([TaskStatus.LEASED, TaskStatus.RUNNING] as const).map(taskStatusName),
);

/** Error type of a run whose changes PostgreSQL refused to store (see BatchWriter's onRefused). */
export const STORAGE_REFUSED = TaskErrorType.STORAGE_REFUSED;

/** A failure as stored with attempts, tasks and runs (the TaskError message as JSON). */
export interface ErrorInfo {
  type: string;
  message: string;
  retryable: boolean;
  details?: unknown;
}

/** One attempt of a task. */
export interface AttemptState {
  readonly taskRunId: string;
  readonly runId: string;
  readonly number: number;
  readonly fencingToken: number;
  readonly executorId: string;
  status: TaskStatusName;
  error: ErrorInfo | null;
  logs: unknown;
  readonly leasedAt: Date;
  startedAt: Date | null;
  endedAt: Date | null;
}

/** One task run (a step or a compensation) of an active run. */
export interface TaskState {
  readonly id: string;
  readonly runId: string;
  readonly stepId: string;
  readonly kind: TaskKindName;
  readonly type: string;
  readonly position: number;
  status: TaskStatusName;
  input: unknown;
  output: unknown;
  /** Claim check of an offloaded output (ArtifactRef as JSON); `output` is null then. */
  outputRef: unknown;
  /** The offloaded output read back from the artifact store (in memory only); undefined until read. */
  resolvedOutput?: unknown;
  error: ErrorInfo | null;
  skipReason: "condition" | "upstream" | null;
  /** Number of the latest attempt (0 before the first lease). */
  attempt: number;
  /** Fencing token of the latest lease; strictly increasing. */
  fencingToken: number;
  /** Failed attempts so far (released or expired-by-shutdown attempts do not count). */
  failures: number;
  executorId: string | null;
  /** Session holding the lease (in memory only). */
  sessionId: string | null;
  leaseExpiresAt: Date | null;
  nextAttemptAt: Date | null;
  queuedAt: Date | null;
  readonly createdAt: Date;
  endedAt: Date | null;
  /** The current attempt, while leased or running. */
  current: AttemptState | null;
  /** Last heartbeat of the running attempt (ms, monotonic clock; in memory only). */
  lastHeartbeat: number;
  /**
   * While QUEUED: the latest scheduling pass's decision for the task's type, why no executor
   * session took it (shared by the type's queued tasks; in memory only: it is about the sessions
   * attached to this process). Set when the task is offered; read by core/explain.ts.
   */
  hold?: QueueHold | undefined;
  /** The step's concurrency keys, from when it is first queued (core/concurrency.ts; in memory only). */
  claim?: Claim | undefined;
  /**
   * The step's rate limit buckets (core/rate-limits.ts; in memory only): null while their keys
   * are not evaluated yet (the engine sets it when it offers a task of a step with rate limits),
   * then evaluated when the task would first be leased.
   */
  rate?: RateWant[] | null | undefined;
  /** The buckets as this task's latest grant left them: written with its lease (rate_limit_grants). */
  rateTaken?: BucketSnapshot[] | undefined;
  /** The fair-share key whose ready queue it was last put in (core/fair-shares.ts; in memory only). */
  fairKey?: FairKey | undefined;
  /** The fair-share key its lease is charged to, until the lease ends (core/fair-shares.ts). */
  fairLease?: FairKey | undefined;
  /** While QUEUED: the gate its latest task_held event named (core/hold-events.ts; in memory only). */
  heldBy?: TaskHold | undefined;
  /**
   * An element task of a map step (core/maps.ts): the element's position. Stored as step id
   * `<step>[<index>]` (a step id cannot hold "["), `stepId` is the map step's own in memory.
   */
  elementIndex?: number | undefined;
  /**
   * A map element's current lease was granted on a session of protocol version 3 or later
   * (common/src/session.ts ELEMENT_FOLDERS_VERSION): its executor stores the element's objects in
   * the element's own folder, and only there is a key of its reports its own (core/reports.ts
   * foreignRefs), whatever session reports it later. False after a grant on an older session,
   * undefined for a lease this process did not grant (recovered from storage): the step's folder
   * is taken too then. In memory only.
   */
  elementFolder?: boolean | undefined;
}

/**
 * A map step being run (core/maps.ts), in memory: derived from its WAITING task (whose input is
 * the items) and its element tasks, so recovery rebuilds it from the rows. Counters, not scans:
 * an element's end costs O(1) whatever the number of elements.
 */
export interface MapState {
  /** The map step's own task (WAITING while its elements run). */
  readonly task: TaskState;
  readonly items: readonly unknown[];
  /** Element tasks by index; elements [0, created) exist. */
  readonly elements: TaskState[];
  /** Elements created so far (the next index to create). */
  created: number;
  /** Elements created and not ended. */
  inFlight: number;
  succeeded: number;
  failed: number;
  /** Succeeded elements whose offloaded output is not read back yet. */
  unresolved: number;
  /** True while elements are being made (an element failing meanwhile does not make more). */
  filling: boolean;
  /** Elements touched by the map's bookkeeping (created, ended, collected): a cost counter for tests. */
  work: number;
}

/**
 * A signal sent to a run (SignalRun), stored on the run's row (column `signals`) in the commit
 * that applies it: consumed by a wait step at once (`stepId`), or kept until one starts waiting.
 */
export interface SignalState {
  readonly name: string;
  /** Its idempotency key: a signal with a key the run already has is not stored again. */
  readonly key: string | null;
  /** Its payload while it is kept for a wait; null once consumed (it is the step's output then). */
  payload: unknown;
  /** When it was received (epoch ms). */
  readonly at: number;
  /** The wait step that consumed it; null while it is kept for a later wait. */
  stepId: string | null;
}

/** An active run with its tasks. */
export interface RunState {
  readonly id: string;
  readonly definitionId: number;
  readonly workflow: CompiledWorkflow;
  status: RunStatusName;
  readonly input: unknown;
  output: unknown;
  error: ErrorInfo | null;
  readonly idempotencyKey: string | null;
  /**
   * Hash of what the run was started with (see requestHash in ./idempotency.ts), kept with its
   * idempotency key; null without a key, or after recovery when the key now names a newer run.
   */
  readonly requestHash: string | null;
  readonly labels: Record<string, string>;
  /**
   * The W3C `traceparent` of the StartRun call that created the run (tracing on), stored with it:
   * every later span of the run (attempts, handlers, events) joins that trace, even after a
   * restart. Null with tracing off.
   */
  readonly traceParent: string | null;
  /**
   * The run's own trace context, `{ traceparent }` (one frozen object per run; null with tracing
   * off), and whether its trace is recorded (the sampled flag of `traceParent`). Derived from
   * `traceParent` once, when the run is made ({@link runTraceContext}, {@link runTraceSampled});
   * not stored: the leases and events of a run whose trace is sampled out all carry this object,
   * and tracing takes one branch for them.
   */
  readonly traceContext: Readonly<{ traceparent: string }> | null;
  readonly traceSampled: boolean;
  cancelRequested: boolean;
  compensateOnCancel: boolean;
  /** Last event sequence number used. */
  eventSeq: number;
  readonly deadline: Date | null;
  readonly createdAt: Date;
  endedAt: Date | null;
  /** Step tasks by step id. */
  readonly tasks: Map<string, TaskState>;
  /** Compensation tasks by the id of the step they compensate (saga rollback). */
  readonly compensations: Map<string, TaskState>;
  /** Compensation waves (step ids, reverse dependency order), set when rollback starts. */
  compensationWaves: string[][] | null;
  /** What the last evaluation of its DAG leaves for the next (dag/evaluate.ts; in memory only). */
  evaluation?: EvaluationMemo | undefined;
  /** Why the run rolls back; becomes the run's error. */
  rollbackError: ErrorInfo | null;
  /** The workflow's concurrency keys, when it has limits (core/concurrency.ts; in memory only). */
  claim?: Claim | undefined;
  /**
   * Its tasks whose concurrency or rate limit keys wait for an offloaded output to be read back
   * (after a restart; core/unread-keys.ts); undefined when none does (in memory only).
   */
  unreadKeys?: Set<TaskState> | undefined;
  /** While it waits for its workflow's keys: the key its latest run_held event named (core/hold-events.ts). */
  heldBy?: RunHold | undefined;
  /** Its tenant and key of fair shares, once evaluated (core/fair-shares.ts; in memory only). */
  fair?: FairPath | undefined;
  /** Signals received, in order (see SignalState); empty for most runs. */
  signals: SignalState[];
  /**
   * What a rerun (RerunRun) was made of, written with its first row (core/reruns.ts); undefined
   * for other runs, and after recovery (the row keeps it, nothing reads it back).
   */
  rerun?: RerunLink | undefined;
  /** The run that started this one from a child workflow step (core/children.ts); null for most. */
  readonly parent: ParentLink | null;
  /** Map steps running, by step id (core/maps.ts); undefined for runs without any. */
  maps?: Map<string, MapState> | undefined;
  /**
   * Compensations of child workflow steps waiting for their children's rollback, by step id
   * (core/child-rollback.ts; in memory only: rebuilt from the task's input after a restart).
   */
  childRollbacks?: Map<string, ChildRollback> | undefined;
}

/**
 * The compensation of a child workflow step (or of a map over one) while its children roll back
 * (core/child-rollback.ts): at most `parallelism` of them at once, in order.
 */
export interface ChildRollback {
  /** The compensation task (WAITING while the children roll back). */
  readonly task: TaskState;
  /** The child runs to roll back, in order (the task's input). */
  readonly ids: readonly string[];
  readonly parallelism: number;
  /** The next of `ids` to start. */
  next: number;
  /** Children started and not ended: "read" while the shell reads its row, "waiting" while it rolls back. */
  readonly inFlight: Map<string, "read" | "waiting">;
  /** Children ended, counted by their status (COMPENSATED, or unchanged: nothing was to undo). */
  readonly ended: Partial<Record<RunStatusName, number>>;
  /** The first children that could not be rolled back (at most 100), in the order they ended. */
  readonly failed: { childRunId: string; status: RunStatusName | null; error: ErrorInfo | null }[];
  failedCount: number;
  /** True while children are being started (one that ends at once does not start more). */
  filling: boolean;
}

/** A child run's parent: its run, its step, and how deep the child is (a root run is 0). */
export interface ParentLink {
  readonly runId: string;
  readonly stepId: string;
  readonly depth: number;
}

/** A rerun's link to its original run. */
export interface RerunLink {
  /** The original run's id. */
  readonly of: string;
  /** The step it reran from. */
  readonly fromStep: string;
  /** The original task run id of each step whose output it took over, by step id. */
  readonly reused: Readonly<Record<string, string>>;
}

/** The step id a task row is stored under: the step's, or `<step>[<index>]` for a map element. */
export function storedStepId(t: Pick<TaskState, "stepId" | "elementIndex">): string {
  return t.elementIndex === undefined ? t.stepId : `${t.stepId}[${t.elementIndex}]`;
}

/** The step id and element index of a stored task row's step id (see storedStepId). */
export function parseStoredStepId(stored: string): { stepId: string; elementIndex?: number } {
  const m = /^(.+)\[(\d+)\]$/.exec(stored);
  return m === null ? { stepId: stored } : { stepId: m[1] as string, elementIndex: Number(m[2]) };
}

/** A new task run of `runId`, PENDING, with no attempt yet (`id` random unless given). */
export function newTaskState(
  runId: string,
  stepId: string,
  kind: TaskState["kind"],
  type: string,
  position: number,
  now: Date,
  id: string = randomUUID(),
): TaskState {
  return {
    id,
    runId,
    stepId,
    kind,
    type,
    position,
    status: "PENDING",
    input: null,
    output: null,
    outputRef: null,
    error: null,
    skipReason: null,
    attempt: 0,
    fencingToken: 0,
    failures: 0,
    executorId: null,
    sessionId: null,
    leaseExpiresAt: null,
    nextAttemptAt: null,
    queuedAt: null,
    createdAt: now,
    endedAt: null,
    current: null,
    lastHeartbeat: 0,
  };
}

/** RunState.traceContext of a run whose `traceparent` is `traceParent`. */
export function runTraceContext(traceParent: string | null): Readonly<{ traceparent: string }> | null {
  return traceParent === null ? null : Object.freeze({ traceparent: traceParent });
}

/** RunState.traceSampled: the sampled flag of the run's W3C `traceparent`; false for none. */
export function runTraceSampled(traceParent: string | null): boolean {
  return traceparentSampled(traceParent) === true;
}

/**
 * The attempt a lease of `task` starts (its current attempt number and fencing token), LEASED to
 * `executorId` at `leasedAt`.
 */
export function leasedAttempt(
  task: Pick<TaskState, "id" | "runId" | "attempt" | "fencingToken">,
  executorId: string,
  leasedAt: Date,
): AttemptState {
  return {
    taskRunId: task.id,
    runId: task.runId,
    number: task.attempt,
    fencingToken: task.fencingToken,
    executorId,
    status: "LEASED",
    error: null,
    logs: null,
    leasedAt,
    startedAt: null,
    endedAt: null,
  };
}

/**
 * Every task of a run in memory: its steps, its compensations and its map steps' elements (which
 * are not among its tasks by step, core/maps.ts; a map rebuilt by recovery may have holes).
 */
export function* tasksOfRun(run: RunState): Iterable<TaskState> {
  yield* run.tasks.values();
  yield* run.compensations.values();
  for (const map of run.maps?.values() ?? []) for (const e of map.elements) if (e !== undefined) yield e;
}

/** A new RUNNING run, with no tasks yet and no event numbered. */
export function newRunState(init: {
  id?: string;
  definitionId: number;
  workflow: CompiledWorkflow;
  input: unknown;
  idempotencyKey: string | null;
  requestHash?: string | null;
  labels: Record<string, string>;
  traceParent?: string | null;
  parent?: ParentLink | null;
  now: Date;
}): RunState {
  const { now, workflow } = init;
  return {
    id: init.id ?? randomUUID(),
    definitionId: init.definitionId,
    workflow,
    status: "RUNNING",
    input: init.input,
    output: null,
    error: null,
    idempotencyKey: init.idempotencyKey,
    requestHash: init.requestHash ?? null,
    labels: init.labels,
    traceParent: init.traceParent ?? null,
    traceContext: runTraceContext(init.traceParent ?? null),
    traceSampled: runTraceSampled(init.traceParent ?? null),
    cancelRequested: false,
    compensateOnCancel: false,
    eventSeq: 0,
    deadline: workflow.timeoutMs === null ? null : new Date(now.getTime() + workflow.timeoutMs),
    createdAt: now,
    endedAt: null,
    tasks: new Map(),
    compensations: new Map(),
    compensationWaves: null,
    rollbackError: null,
    signals: [],
    parent: init.parent ?? null,
  };
}
