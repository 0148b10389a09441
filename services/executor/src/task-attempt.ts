/**
 * One leased attempt on this executor: builds the handler's {@link TaskContext} (abort signal,
 * deadline, throttled heartbeats, log, artifacts), runs the handler and turns what it returned or
 * threw into an {@link AttemptOutcome} (a large output becomes a claim check). No session I/O
 * here: heartbeats go through a callback and the outcome is returned, so the session decides
 * what is sent when.
 */
import type { JsonValue } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { nulCharacterPath, type Logger } from "@nexusflow/common";
import type { ArtifactStore } from "@nexusflow/common/artifacts";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { type ArtifactRef, type Lease, type LeaseKey, type LogRef, TaskKind } from "@nexusflow/gen";
import {
  NON_RECORDING_SPAN,
  spanContextFromTraceparent,
  tracer,
  tracingEnabled,
} from "@nexusflow/common/telemetry";
import {
  type Context,
  type Span,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  context,
  trace,
} from "@opentelemetry/api";
import {
  type ArtifactIdentity,
  type OutputOffloadOptions,
  createTaskArtifacts,
  settleOutput,
} from "./artifacts.js";
import type { TaskContext, TaskHandler } from "./handlers/index.js";
import { startTimer } from "./handlers/timers.js";
import type { AttemptLog, LogSink } from "./log-sink.js";
import { PayloadError, fromValue, toJsonPayload } from "./payload.js";
import { TaskError, type TaskFailure, isTaskError, toTaskFailure } from "./handlers/task-error.js";
import { createTaskLog } from "./task-log.js";

/** The tracer of handler spans. */
/** The longest a finished attempt waits for its log to be stored before it reports without it. */
const LOG_CLOSE_TIMEOUT_MS = 60_000;

const TRACER = "nexusflow-executor";

/** `ctx.startSpan` with tracing off. */
const noSpan = (): Span => NON_RECORDING_SPAN;

/** How an attempt ended, with where its log went; an offloaded output has `outputRef` (and output null). */
export type AttemptOutcome =
  | {
      readonly status: "completed";
      readonly output: JsonValue;
      readonly outputRef?: ArtifactRef | undefined;
      readonly logs: LogRef | undefined;
    }
  | { readonly status: "failed"; readonly failure: TaskFailure; readonly logs: LogRef | undefined };

type Settled =
  | { status: "completed"; output: JsonValue; outputRef?: ArtifactRef | undefined }
  | { status: "failed"; failure: TaskFailure };

/** What an attempt needs from the executor. */
export interface TaskAttemptDeps {
  readonly logSink: LogSink;
  /**
   * The task's logger, bound to its identity; called only when something is logged (a child
   * logger costs more to build than a no-op task takes to run).
   */
  readonly logger: () => Logger;
  /** Largest JSON output, progress or error details, in bytes. */
  readonly maxPayloadBytes: number;
  /** Where `ctx.artifacts` stores files; undefined when the executor has no store. */
  readonly artifacts?: ArtifactStore | undefined;
  /** Offloading of large outputs; undefined keeps every output inline. */
  readonly offload?: OutputOffloadOptions | undefined;
  /** Sends a task heartbeat now (the session drops it when disconnected). */
  readonly sendHeartbeat: (key: LeaseKey, progress: JsonValue | undefined) => void;
}

/** Smallest gap between two heartbeats of one task, unless its heartbeat timeout needs less. */
const HEARTBEAT_THROTTLE_MS = 1_000;

/** A map key for a lease: task run, attempt and fencing token. */
export function leaseKeyId(key: LeaseKey): string {
  return `${key.taskRunId}#${key.attempt}#${key.fencingToken}`;
}

/** One running attempt. Create, then call {@link TaskAttempt.run} once. */
export class TaskAttempt {
  /** {@link leaseKeyId} of the lease. */
  readonly id: string;
  readonly key: LeaseKey;
  readonly lease: Lease;
  readonly #deps: TaskAttemptDeps;
  readonly #controller = new AbortController();
  readonly #throttleMs: number;
  #silenced = false;
  #finished = false;
  /**
   * What {@link TaskAttempt.forceSettle} calls: resolves {@link #forced} while the handler runs,
   * rejects the log's store afterwards ({@link #closeLog}).
   */
  #force: ((settled: Settled) => void) | undefined;
  /** Resolved by {@link TaskAttempt.forceSettle} while the handler runs. */
  #forced: Promise<Settled>;
  #lastHeartbeatAt = Number.NEGATIVE_INFINITY;
  #pendingProgress: { value: unknown } | undefined;
  #heartbeatTimer: NodeJS.Timeout | undefined;
  #progressWarned = false;
  #sendWarned = false;

  constructor(lease: Lease & { key: LeaseKey }, deps: TaskAttemptDeps) {
    this.lease = lease;
    this.key = lease.key;
    this.id = leaseKeyId(lease.key);
    this.#deps = deps;
    const timeout = lease.heartbeatTimeoutMs;
    this.#throttleMs =
      timeout > 0 ? Math.min(HEARTBEAT_THROTTLE_MS, Math.floor(timeout / 4)) : HEARTBEAT_THROTTLE_MS;
    this.#forced = new Promise((resolve) => (this.#force = resolve));
  }

  /** The handler's signal. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Whether the outcome must not be reported (the lease is gone: revoked or rejected). */
  get silenced(): boolean {
    return this.#silenced;
  }

  /** Whether the handler has settled (or was given up on). */
  get finished(): boolean {
    return this.#finished;
  }

  /** Marks the outcome as not to be reported. */
  silence(): void {
    this.#silenced = true;
  }

  /** Aborts the handler's signal with `reason`; the first reason wins. */
  abort(reason: TaskError): void {
    if (!this.#controller.signal.aborted) this.#controller.abort(reason);
  }

  /**
   * Stops waiting for a handler that ignores its signal: {@link TaskAttempt.run} resolves with
   * `failure` now and whatever the handler does later is ignored.
   */
  forceSettle(failure: TaskFailure): void {
    this.#force?.({ status: "failed", failure });
  }

  /**
   * Runs `handler` on the lease's input. Never rejects. With `autoHeartbeat`, and a heartbeat
   * timeout on the lease, heartbeats go every throttle interval (a quarter of the timeout at most)
   * while the handler runs, besides any the handler sends.
   */
  async run(handler: TaskHandler, options: { autoHeartbeat?: boolean } = {}): Promise<AttemptOutcome> {
    const { lease } = this;
    const identity = {
      runId: lease.runId,
      stepId: lease.stepId,
      taskRunId: this.key.taskRunId,
      attempt: this.key.attempt,
      taskType: lease.taskType,
      kind: lease.kind === TaskKind.COMPENSATION ? ("COMPENSATION" as const) : ("STEP" as const),
      // An element of a map step: its objects go to the element's own folder (artifacts.ts).
      elementIndex: lease.elementIndex,
    };
    const log = this.#deps.logSink.open(identity);
    const taskLog = createTaskLog(log, this.key.attempt, this.#deps.logger);
    const deadline = lease.deadline === undefined ? undefined : timestampDate(lease.deadline);
    const stopDeadline = this.#armDeadline(deadline);
    const traced = tracingEnabled() ? this.#startSpan() : undefined;
    const span = traced?.span ?? NON_RECORDING_SPAN;
    const ctx: TaskContext = {
      signal: this.signal,
      runId: lease.runId,
      stepId: lease.stepId,
      taskRunId: this.key.taskRunId,
      attempt: this.key.attempt,
      taskType: lease.taskType,
      deadline,
      heartbeat: (progress?: unknown) => this.#heartbeat(progress),
      log: taskLog,
      artifacts: createTaskArtifacts(this.#deps.artifacts, identity),
      span,
      startSpan:
        traced === undefined
          ? noSpan
          : (name, attributes) =>
              tracer(TRACER).startSpan(name, attributes === undefined ? {} : { attributes }, traced.context),
    };
    const keepAlive =
      options.autoHeartbeat === true && lease.heartbeatTimeoutMs > 0
        ? setInterval(() => {
            // Progress the handler sent and the throttle holds back is kept, not replaced.
            if (this.#pendingProgress === undefined) this.#heartbeat(undefined);
          }, this.#throttleMs)
        : undefined;
    let settled: Settled;
    try {
      const invoked =
        traced === undefined
          ? this.#invoke(handler, ctx, identity)
          : context.with(traced.context, () => this.#invoke(handler, ctx, identity));
      settled = await Promise.race([invoked, this.#forced]);
    } finally {
      this.#finished = true;
      stopDeadline();
      clearInterval(keepAlive);
      clearTimeout(this.#heartbeatTimer);
    }
    if (traced !== undefined) {
      if (settled.status === "failed") {
        span.setAttribute("error.type", settled.failure.type);
        span.setStatus({ code: SpanStatusCode.ERROR, message: settled.failure.message });
      }
      span.end();
    }
    if (settled.status === "failed") {
      const { failure } = settled;
      taskLog.error(`attempt failed: ${failure.type}: ${failure.message}`, { retryable: failure.retryable });
    }
    taskLog.end();
    let logs: LogRef | undefined;
    try {
      logs = await this.#closeLog(log);
    } catch (e) {
      this.#deps.logger().warn({ err: e }, "could not store the task's log; reporting without it");
    }
    return { ...settled, logs };
  }

  /**
   * Stores the attempt's log: its reference, or a rejection when the attempt is given up on
   * meanwhile (a drain's grace over) or storing it takes too long (an artifact store that accepts
   * the connection and never answers), so that the attempt is reported without its log rather than
   * holding its slot, and a stop, for ever. One promise and one timer.
   */
  #closeLog(log: AttemptLog): Promise<LogRef | undefined> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`storing the task's log took more than ${LOG_CLOSE_TIMEOUT_MS} ms`)),
        LOG_CLOSE_TIMEOUT_MS,
      );
      this.#force = () => {
        clearTimeout(timer);
        reject(new Error("the attempt was given up on while its log was being stored"));
      };
      log.close().then(
        (ref) => {
          clearTimeout(timer);
          resolve(ref);
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });
  }

  /**
   * The handler's span, a child of the scheduler's attempt span the lease names (its
   * `trace_context`), and the context that makes it the active span.
   */
  #startSpan(): { span: Span; context: Context } {
    const { lease } = this;
    const remote = spanContextFromTraceparent(lease.traceContext["traceparent"]);
    // The run's trace is not recorded (sampled out where it started): the handler's span, and
    // any child, would record nothing. The lease's own context stays active, so calls the handler
    // makes are not recorded either, and no span is made: the lease's span context, wrapped.
    if (remote !== undefined && (remote.traceFlags & TraceFlags.SAMPLED) === 0) {
      const span = trace.wrapSpanContext(remote);
      return { span, context: trace.setSpan(ROOT_CONTEXT, span) };
    }
    const parent = remote === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, remote);
    const span = tracer(TRACER).startSpan(
      `handler ${lease.taskType}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          "nexusflow.run_id": lease.runId,
          "nexusflow.workflow": lease.workflowName,
          "nexusflow.step_id": lease.stepId,
          "nexusflow.task_run_id": this.key.taskRunId,
          "nexusflow.attempt": this.key.attempt,
          "nexusflow.task_type": lease.taskType,
          "nexusflow.task_kind": lease.kind === TaskKind.COMPENSATION ? "COMPENSATION" : "STEP",
        },
      },
      parent,
    );
    return { span, context: trace.setSpan(parent, span) };
  }

  async #invoke(handler: TaskHandler, ctx: TaskContext, identity: ArtifactIdentity): Promise<Settled> {
    try {
      const output: unknown = await handler(fromValue(this.lease.input), ctx);
      try {
        const settled = await settleOutput(output, identity, this.#deps.maxPayloadBytes, this.#deps.offload);
        if (settled.outputRef !== undefined)
          return { status: "completed", output: null, outputRef: settled.outputRef };
        // PostgreSQL stores no text with U+0000 in it; the scheduler would refuse the report. Looked
        // for in the JSON form (toJSON applied, no cycles left), which is what is sent.
        const nul = nulCharacterPath(settled.output, "output");
        if (nul !== undefined)
          throw new PayloadError("NUL", `holding a NUL character (U+0000) at ${nul}, which cannot be stored`);
        return { status: "completed", output: settled.output };
      } catch (e) {
        if (!(e instanceof PayloadError)) throw e;
        const type =
          e.problem === "TOO_LARGE" ? TaskErrorType.OUTPUT_TOO_LARGE : TaskErrorType.INVALID_OUTPUT;
        throw TaskError.terminal(type, `the handler's output is ${e.message}`, { cause: e });
      }
    } catch (e) {
      // A handler that reacts to an abort by throwing something generic (a killed child process,
      // a reset socket) still failed because of the abort: report the abort's reason, which says
      // whether a retry makes sense. A TaskError it throws is deliberate and wins.
      const error: unknown = this.signal.aborted && !isTaskError(e) ? this.signal.reason : e;
      return { status: "failed", failure: this.#sendable(toTaskFailure(error)) };
    }
  }

  /** Drops details that cannot be sent, so an odd `details` never loses the failure itself. */
  #sendable(failure: TaskFailure): TaskFailure {
    if (failure.details === undefined) return failure;
    try {
      return { ...failure, details: toJsonPayload(failure.details, this.#deps.maxPayloadBytes) };
    } catch (e) {
      this.#deps.logger().warn({ err: e }, "dropped the details of a task failure: they cannot be sent");
      const rest: TaskFailure = {
        type: failure.type,
        message: failure.message,
        retryable: failure.retryable,
      };
      if (failure.retryAfterMs !== undefined) rest.retryAfterMs = failure.retryAfterMs;
      if (failure.pauseKeyUntilMs !== undefined) rest.pauseKeyUntilMs = failure.pauseKeyUntilMs;
      return rest;
    }
  }

  #armDeadline(deadline: Date | undefined): () => void {
    if (deadline === undefined) return () => {};
    const onDeadline = (): void =>
      this.abort(
        TaskError.retryable(
          TaskErrorType.TIMEOUT,
          `the attempt passed its deadline ${deadline.toISOString()}`,
        ),
      );
    const ms = deadline.getTime() - Date.now();
    if (ms <= 0) {
      onDeadline();
      return () => {};
    }
    return startTimer(ms, onDeadline);
  }

  /** Sends at most one heartbeat per throttle interval; the latest progress wins and is sent last. */
  #heartbeat(progress: unknown): void {
    if (this.#finished) return;
    this.#pendingProgress = { value: progress };
    if (this.#heartbeatTimer !== undefined) return;
    const wait = this.#lastHeartbeatAt + this.#throttleMs - Date.now();
    if (wait <= 0) {
      this.#flushHeartbeat();
      return;
    }
    this.#heartbeatTimer = setTimeout(() => {
      this.#heartbeatTimer = undefined;
      this.#flushHeartbeat();
    }, wait);
  }

  #flushHeartbeat(): void {
    const pending = this.#pendingProgress;
    if (pending === undefined || this.#finished) return;
    this.#pendingProgress = undefined;
    this.#lastHeartbeatAt = Date.now();
    let progress: JsonValue | undefined;
    if (pending.value !== undefined) {
      try {
        progress = toJsonPayload(pending.value, this.#deps.maxPayloadBytes);
      } catch (e) {
        if (!this.#progressWarned) {
          this.#progressWarned = true;
          this.#deps
            .logger()
            .warn({ err: e }, "heartbeat progress cannot be sent; sending heartbeats without it");
        }
      }
    }
    // Called from the throttle's timer and the automatic heartbeats' interval, where a throw would
    // be an uncaught exception (the end of the executor process), and from `ctx.heartbeat`, which
    // must not fail the handler: a heartbeat that cannot go is logged, and tried without progress.
    try {
      this.#deps.sendHeartbeat(this.key, progress);
    } catch (e) {
      if (!this.#sendWarned) {
        this.#sendWarned = true;
        this.#deps.logger().warn({ err: e }, "could not send a heartbeat");
      }
      if (progress === undefined) return;
      try {
        this.#deps.sendHeartbeat(this.key, undefined);
      } catch {
        // Logged above; the next heartbeat tries again.
      }
    }
  }
}
