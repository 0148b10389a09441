/**
 * Types of the workflow definition language (what users write), of the compiled form the
 * scheduler works with, and of the run state the evaluator reads.
 */
import type { ChildWorkflowSpec, CompiledChild } from "./child.js";
import type { CompiledDurable, SleepSpec, WaitSpec } from "./durable.js";
import type { Expr } from "./expr.js";
import type { CompiledMap, MapSpec } from "./map.js";
import type { ResolvedRetryPolicy } from "./retry.js";
import type { CompiledSchema } from "./schema.js";
import type { Template } from "./template.js";
import type { TriggerSpec } from "./triggers.js";
import type { ScheduleDeclarationSpec } from "./schedules.js";
import type { CompiledFairShare, FairShareSpec } from "./fair-shares.js";

/** Largest accepted workflow definition: 1 MiB of UTF-8 JSON text. */
export const MAX_SPEC_BYTES = 1024 * 1024;
/** Most steps in one workflow (1 -> 1000 -> 1 and 1,000-step chains fit with room to spare). */
export const MAX_STEPS = 5000;
/** Most entries in one step's `dependsOn`: a join may wait for every other step. */
export const MAX_DEPENDENCIES = MAX_STEPS - 1;
/** Deepest nesting of arrays/objects anywhere in a definition (the step input is 4 levels down). */
export const MAX_SPEC_DEPTH = 80;
/** Longest `description`, in characters. */
export const MAX_DESCRIPTION_LENGTH = 10_000;
/** Highest accepted `version` (fits a PostgreSQL integer). */
export const MAX_VERSION = 2_147_483_647;
/** Workflow names and task types: lower case, starting with a letter, at most 63 characters. */
export const NAME_PATTERN = /^[a-z][a-z0-9._-]{0,62}$/;
/** Step ids: letters, digits, `_` and `-`, not starting with a digit or `-`, at most 63 characters. */
export const STEP_ID_PATTERN = /^[A-Za-z_][A-Za-z0-9_-]{0,62}$/;

/** Retry policy as written; every field is optional and falls back to `defaults.retry`, then to the engine defaults. */
export interface RetryPolicy {
  /** Total attempts including the first, 1..100. */
  maxAttempts?: number;
  /** Delay before the second attempt, a duration such as "1s". */
  initialInterval?: string;
  /** Growth factor of the delay per attempt, 1..100. */
  backoffCoefficient?: number;
  /** Cap on the delay, a duration; must not be below initialInterval. */
  maxInterval?: string;
  /** How the delay is randomised. */
  jitter?: "none" | "full" | "equal";
  /** Error types (as reported by the task) that are never retried. */
  nonRetryableErrors?: string[];
}

/** Per-attempt time limits as written (durations). */
export interface StepTimeouts {
  /** From being scheduled to being picked up by an executor. */
  scheduleToStart?: string;
  /** From being picked up to finishing one attempt. */
  startToClose?: string;
  /** Longest gap between heartbeats of a running attempt. */
  heartbeat?: string;
}

/** Saga compensation of a step: a task run to undo it when the run fails after it succeeded. */
export interface CompensateSpec {
  type: string;
  /** Templated; may use `step.input` / `step.output` (the compensated step's own). */
  input?: unknown;
  retry?: RetryPolicy;
}

/** How a full concurrency key treats a task (or run) that wants one of its slots. */
export type ConcurrencyStrategy = "queue" | "cancel-newest" | "cancel-in-progress" | "keep-newest-queued";

/** The strategies, in the order the documentation lists them. */
export const CONCURRENCY_STRATEGIES: readonly ConcurrencyStrategy[] = [
  "queue",
  "cancel-newest",
  "cancel-in-progress",
  "keep-newest-queued",
];

/** Highest `limit` of a concurrency limit. */
export const MAX_CONCURRENCY_LIMIT = 10_000;
/** Most concurrency limits on one workflow or one step. */
export const MAX_CONCURRENCY_LIMITS = 10;

/**
 * A keyed concurrency limit as written: at most `limit` tasks (on a step) or runs (on the
 * workflow) with the same value of `key` hold a slot at once; `strategy` says what happens to one
 * more (default "queue").
 */
export interface ConcurrencyLimitSpec {
  /** Expression over `input`, `run` and (on a step) its upstream `steps.<id>.output`; a string or a number. */
  key: string;
  /** Slots per key value, 1..10000. */
  limit: number;
  strategy?: ConcurrencyStrategy;
}

/** One step of a workflow as written. */
export interface StepSpec {
  id: string;
  type: string;
  /** Templated value rendered when the step becomes ready. */
  input?: unknown;
  dependsOn?: string[];
  /** Expression; the step is skipped ("condition") when it is falsy. */
  when?: string;
  retry?: RetryPolicy;
  timeouts?: StepTimeouts;
  compensate?: CompensateSpec;
  /**
   * Scheduling priority from -10 to 10 (default: the workflow's `defaults.priority`, else 0):
   * among ready tasks of a type, higher first, each level worth a fixed time waited (ageing), so
   * that a waiting task of any priority is eventually first.
   */
  priority?: number;
  /** A durable wait for a signal or an event instead of a task (dag/durable.ts). */
  wait?: WaitSpec;
  /** A durable sleep instead of a task (dag/durable.ts). */
  sleep?: SleepSpec;
  /** Starts a run of another workflow instead of a task (dag/child.ts). */
  workflow?: ChildWorkflowSpec;
  /** Runs the step's task once per element of an array (dag/map.ts). */
  map?: MapSpec;
  /** Keyed concurrency limits on the step's tasks (its compensation is not limited). */
  concurrency?: ConcurrencyLimitSpec[];
  /** Named rate limits (token buckets) the step's tasks take tokens from when leased. */
  rateLimits?: RateLimitSpec[];
}

/** Most rate limits on one step. */
export const MAX_RATE_LIMITS = 10;
/** Highest `rate`, `burst` and `units` of a rate limit. */
export const MAX_RATE = 1_000_000;
/** Pattern of a rate limit's name. */
export const RATE_LIMIT_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/**
 * A named rate limit as written: a token bucket per value of `key` (one bucket when absent),
 * shared by every step of every workflow that names it; `rate` tokens come back every `per`
 * (default "1s") up to `burst` (default `units`: no window of `per` grants more than `rate`);
 * each leased task takes `units` (default 1).
 */
export interface RateLimitSpec {
  name: string;
  key?: string;
  units?: number;
  rate: number;
  per?: string;
  burst?: number;
}

/** A rate limit, validated, with its key parsed. */
export interface CompiledRateLimit {
  readonly name: string;
  /** The key expression as written; null: one bucket for the name. */
  readonly expression: string | null;
  readonly key: Expr | null;
  readonly units: number;
  readonly rate: number;
  readonly perMs: number;
  readonly burst: number;
  /** JSON path in the definition, e.g. `$.steps[1].rateLimits[0]`. */
  readonly path: string;
}

/** A workflow definition as written by users (JSON). */
export interface WorkflowSpec {
  name: string;
  version: number;
  description?: string;
  /** JSON Schema (practical subset) for the run input. */
  input?: Record<string, unknown>;
  defaults?: { retry?: RetryPolicy; timeouts?: StepTimeouts; priority?: number };
  /** Run-level timeout, a duration. */
  timeout?: string;
  steps: StepSpec[];
  /** Templated value computed when the run succeeds. */
  output?: unknown;
  /** Keyed concurrency limits on the runs (a run holds its slots from its start to its end). */
  concurrency?: ConcurrencyLimitSpec[];
  /** Events that start runs of the workflow, with their payload as input (dag/triggers.ts). */
  triggers?: TriggerSpec[];
  /** Cron schedules that start runs of the workflow (dag/schedules.ts). */
  schedules?: ScheduleDeclarationSpec[];
  /** Fair shares of the executors: the tenant, then a key within it (dag/fair-shares.ts). */
  fairness?: FairShareSpec[];
}

/** A concurrency limit, validated, with its key parsed. */
export interface CompiledConcurrencyLimit {
  /** "workflow" (the run holds the slot) or "step" (the step's task holds it). */
  readonly scope: "workflow" | "step";
  /** The key expression as written. */
  readonly expression: string;
  readonly key: Expr;
  readonly limit: number;
  readonly strategy: ConcurrencyStrategy;
  /**
   * The key space: slots are shared by the limits with the same space and key value, i.e. by
   * every version of the workflow (and step) with the same key expression.
   */
  readonly space: string;
  /** JSON path of the limit in the definition, e.g. `$.steps[1].concurrency[0]`. */
  readonly path: string;
}

/** Time limits in milliseconds; null means "no limit". */
export interface ResolvedTimeouts {
  readonly scheduleToStartMs: number | null;
  readonly startToCloseMs: number | null;
  readonly heartbeatMs: number | null;
}

/** A compensation with its template parsed and its retry policy merged with the workflow defaults. */
export interface CompiledCompensation {
  readonly type: string;
  readonly input: Template | null;
  readonly retry: ResolvedRetryPolicy;
  /** Compensation tasks use the workflow-level `defaults.timeouts` (they are a different task type than the step). */
  readonly timeouts: ResolvedTimeouts;
}

/** One step, validated, with everything the scheduler needs precomputed. */
export interface CompiledStep {
  readonly id: string;
  readonly type: string;
  /** Position in `spec.steps`, for locating errors (`$.steps[specIndex]`). */
  readonly specIndex: number;
  /** Position in the workflow's topological order (`CompiledWorkflow.steps[order]` is this step). */
  readonly order: number;
  readonly dependsOn: readonly string[];
  /** Steps that list this one in their `dependsOn`. */
  readonly dependents: readonly string[];
  /** Topological positions of `dependsOn`, for O(edges) evaluation. */
  readonly dependencyOrders: readonly number[];
  /** Topological positions of `dependents`. */
  readonly dependentOrders: readonly number[];
  readonly when: Expr | null;
  readonly input: Template | null;
  /** Step retry merged over `defaults.retry` over the engine defaults. */
  readonly retry: ResolvedRetryPolicy;
  /** Step timeouts merged over `defaults.timeouts`. */
  readonly timeouts: ResolvedTimeouts;
  /** Scheduling priority (`priority`, else `defaults.priority`, else 0), for it and its compensation. */
  readonly priority: number;
  readonly compensate: CompiledCompensation | null;
  /** A durable wait or sleep (no executor runs it; dag/durable.ts); null for a task. */
  readonly durable: CompiledDurable | null;
  /** A child workflow (no executor runs it; dag/child.ts); null otherwise. */
  readonly child: CompiledChild | null;
  /** A map step (dag/map.ts): its task runs once per element; null otherwise. */
  readonly map: CompiledMap | null;
  /** The step's concurrency limits (empty: none). */
  readonly concurrency: readonly CompiledConcurrencyLimit[];
  /** The step's rate limits (empty: none). */
  readonly rateLimits: readonly CompiledRateLimit[];
  /** The step as written. */
  readonly spec: Readonly<StepSpec>;
}

/** A validated workflow: the (deep-frozen) spec plus precomputed graph, templates and policies. */
export interface CompiledWorkflow {
  readonly name: string;
  readonly version: number;
  /** The definition as written (a frozen JSON copy; nothing filled in). */
  readonly spec: Readonly<WorkflowSpec>;
  /** Key-order-independent serialization of `spec`. */
  readonly canonicalJson: string;
  /** sha256 hex of `canonicalJson`: equal hashes mean identical content. */
  readonly contentHash: string;
  /** Run-level timeout; null when none. */
  readonly timeoutMs: number | null;
  /** Steps in topological order (dependencies first; ties keep the order of `spec.steps`). */
  readonly steps: readonly CompiledStep[];
  readonly stepsById: ReadonlyMap<string, CompiledStep>;
  /** Step ids in topological order. */
  readonly order: readonly string[];
  /** Step id to the ids it depends on. */
  readonly dependencies: ReadonlyMap<string, readonly string[]>;
  /** Step id to the ids that depend on it. */
  readonly dependents: ReadonlyMap<string, readonly string[]>;
  /** Parsed `output` mapping; null when the spec has none. */
  readonly output: Template | null;
  /** Compiled `input` schema; null when the spec has none. */
  readonly inputSchema: CompiledSchema | null;
  /** The workflow's concurrency limits on its runs (empty: none). */
  readonly concurrency: readonly CompiledConcurrencyLimit[];
  /** The levels of its fair shares, the tenant first (empty: none; dag/fair-shares.ts). */
  readonly fairness: readonly CompiledFairShare[];
}

/** Lifecycle of a step as the scheduler records it ("active" = leased, running or waiting for a retry). */
export type StepStatus = "pending" | "active" | "succeeded" | "failed" | "skipped" | "cancelled";

/** Why a step was skipped: its `when` was false, or something upstream failed / was skipped for that reason. */
export type SkipReason = "condition" | "upstream";

/** What the evaluator needs to know about one step of a run. Missing entries count as "pending". */
export interface StepState {
  readonly status: StepStatus;
  /** Result of a succeeded step. */
  readonly output?: unknown;
  /** Rendered input the step ran with (used for `step.input` in compensations). */
  readonly input?: unknown;
  /** Set with status "skipped"; a skipped state without it counts as "upstream". */
  readonly skipReason?: SkipReason;
}

/**
 * The recorded states of a run's steps, by step id, as evaluation reads them (only `get`): a
 * `Map`, or a view over the run's tasks that makes each state when asked.
 */
export type StepStates = Pick<ReadonlyMap<string, StepState>, "get">;

/** Identity of a run, visible to templates as `run.*`. */
export interface RunInfo {
  readonly id: string;
  /** Workflow name. */
  readonly workflow: string;
  readonly version: number;
}
