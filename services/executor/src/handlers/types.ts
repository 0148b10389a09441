/**
 * The handler API users implement: a task handler is an async function of the task's input and a
 * {@link TaskContext}. It returns the task's output (JSON-serialisable) or throws; throw a
 * `TaskError` to choose the error type and whether a retry may help.
 */
import type { Attributes, Span } from "@opentelemetry/api";
import type { ArtifactData } from "@nexusflow/common/artifacts";
import type { ArtifactRef } from "@nexusflow/gen";

/** Options of {@link TaskArtifacts.put}. */
export interface PutArtifactOptions {
  /**
   * Media type of the file.
   * @default "application/octet-stream"
   */
  contentType?: string | undefined;
}

/** `ctx.artifacts`: files a handler keeps with its attempt (reports, dumps, build outputs). */
export interface TaskArtifacts {
  /**
   * Saves `data` as `name` (may contain "/" for sub-folders; `logs.jsonl`, `logs/` and
   * `output.json` are reserved) under the attempt's folder, replacing a file of the same name.
   * Resolves to its ref (key, size, SHA-256). Rejects with a terminal TaskError
   * `INVALID_ARTIFACT` for a bad name or content type, `ARTIFACTS_UNAVAILABLE` when the executor
   * has no store, and a retryable `ARTIFACT_STORE_UNAVAILABLE` when the store cannot be written.
   */
  put(name: string, data: ArtifactData, options?: PutArtifactOptions): Promise<ArtifactRef>;
}

/**
 * Where a handler's log lines and its process output go (the task's log stream). Its methods work
 * detached too (`const { info } = ctx.log`; `child.stdout.on("data", (c) => write("stdout", c))`).
 */
export interface TaskLog {
  /** Logs an informational line with optional structured fields. */
  info(this: void, message: string, fields?: Record<string, unknown>): void;
  /** Logs a warning with optional structured fields. */
  warn(this: void, message: string, fields?: Record<string, unknown>): void;
  /** Logs an error with optional structured fields. */
  error(this: void, message: string, fields?: Record<string, unknown>): void;
  /** Forwards raw output (e.g. from a child process) as it arrives; chunks are not line-aligned. */
  write(this: void, stream: "stdout" | "stderr", chunk: string): void;
}

/** Everything a handler gets besides its input. */
export interface TaskContext {
  /** Aborts on cancel, lease loss, deadline or shutdown; its `reason` says which (see `cancellationError`). */
  readonly signal: AbortSignal;
  /** The workflow run this task belongs to. */
  readonly runId: string;
  /** The step of the workflow definition this task runs. */
  readonly stepId: string;
  /** This task run (one per step execution, shared by its attempts). */
  readonly taskRunId: string;
  /** Attempt number, starting at 1. */
  readonly attempt: number;
  /** The registered handler type, e.g. "http". */
  readonly taskType: string;
  /** When the attempt must finish, if the step has a timeout. */
  readonly deadline: Date | undefined;
  /** Tells the scheduler the task is alive, optionally with JSON-serialisable progress. */
  heartbeat(progress?: unknown): void;
  /** The task's log stream. */
  readonly log: TaskLog;
  /** Files kept with this attempt in the artifact store: `await ctx.artifacts.put("report.csv", csv)`. */
  readonly artifacts: TaskArtifacts;
  /**
   * The attempt's span (tracing on: OTEL_EXPORTER_OTLP_ENDPOINT set), in the run's trace; the
   * handler runs inside it, so spans of instrumented calls it makes (HTTP, gRPC, pg) join it. A
   * span that records nothing with tracing off.
   */
  readonly span: Span;
  /**
   * Starts a child span of {@link span} for a part of the handler's work; the handler ends it:
   * `const s = ctx.startSpan("parse"); try { ... } finally { s.end(); }`. Records nothing with
   * tracing off.
   */
  startSpan(name: string, attributes?: Attributes): Span;
}

/** A task implementation: input in, output (or a thrown error) out. */
export type TaskHandler<I = unknown, O = unknown> = (input: I, ctx: TaskContext) => Promise<O> | O;

/** How a registered handler's attempts heartbeat. */
export interface HandlerOptions {
  /**
   * `"manual"`: only the handler's own `ctx.heartbeat()` calls count, so a step's heartbeat timeout
   * catches a handler that stopped making progress. `"auto"`: the executor also heartbeats on the
   * handler's behalf while it runs (only for steps with a heartbeat timeout, often enough for it),
   * so the timeout catches an executor that stopped (a blocked event loop, a lost connection) —
   * for handlers that cannot report progress themselves, such as the built-in http, shell and sleep.
   * @default "manual"
   */
  heartbeat?: "auto" | "manual";
}

/** A handler with its options, as registered. */
export interface HandlerRegistration {
  readonly handler: TaskHandler;
  readonly heartbeat: "auto" | "manual";
}
