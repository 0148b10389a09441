/**
 * How a task attempt fails. A handler throws {@link TaskError} to say what went wrong (`type`),
 * whether another attempt could succeed (`retryable`) and, optionally, how long to wait first.
 * Anything else it throws is turned into the same shape by {@link toTaskFailure}, so the session
 * code reports one closed form to the scheduler whatever the handler did.
 */

import { boundedText } from "@nexusflow/common";
import {
  MAX_TASK_ERROR_MESSAGE_CHARS,
  MAX_TASK_ERROR_TYPE_CHARS,
  THROWN_ERROR_FALLBACK_TYPE,
  TaskErrorType,
} from "@nexusflow/common/task-error-types";

/**
 * The longest delay a failure asks for before its retry (30 days): a longer `retryAfterMs` or
 * Retry-After is taken as this (a step's retry policy caps it further).
 */
export const MAX_RETRY_AFTER_MS = 30 * 24 * 3600 * 1000;

/** Marks TaskErrors across duplicated module instances (a user module may bundle its own copy). */
const TASK_ERROR_BRAND = Symbol.for("nexusflow.TaskError");

/** Optional parts of a {@link TaskError}. */
export interface TaskErrorOptions {
  /** Minimum delay before the next attempt, in milliseconds (only meaningful when retryable). */
  readonly retryAfterMs?: number | undefined;
  /** JSON-serialisable data about the failure (an HTTP response, a command's output). */
  readonly details?: unknown;
  /** The underlying error, kept for logs; never sent to the scheduler. */
  readonly cause?: unknown;
  /**
   * Pauses the keys of the step's rate limits until this time (a partner API's Retry-After): no
   * task of those buckets, of this run or any other, is leased before it.
   */
  readonly pauseKeyUntil?: Date | undefined;
}

/** A task failure with a type, a retry verdict and optional retry delay and details. */
export class TaskError extends Error {
  override name = "TaskError";
  /** What failed, e.g. "HTTP_404", "EXIT_CODE", "TIMEOUT" or a user-defined type. */
  readonly type: string;
  /** Whether another attempt may succeed; the workflow's retry policy still has the last word. */
  readonly retryable: boolean;
  /** Minimum delay before the next attempt, in milliseconds. */
  readonly retryAfterMs: number | undefined;
  /** JSON-serialisable data about the failure. */
  readonly details: unknown;
  /** The keys of the step's rate limits are paused until this time. */
  readonly pauseKeyUntil: Date | undefined;

  /** Prefer {@link TaskError.terminal} and {@link TaskError.retryable}, which name the verdict. */
  constructor(type: string, message: string, retryable: boolean, options: TaskErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    if (typeof type !== "string" || type.length === 0) {
      throw new TypeError("TaskError: type must be a non-empty string");
    }
    const { retryAfterMs } = options;
    if (retryAfterMs !== undefined && !(Number.isFinite(retryAfterMs) && retryAfterMs >= 0)) {
      throw new TypeError(
        `TaskError: retryAfterMs must be a non-negative number, got ${String(retryAfterMs)}`,
      );
    }
    this.type = type;
    this.retryable = retryable;
    this.retryAfterMs = retryAfterMs === undefined ? undefined : Math.round(retryAfterMs);
    this.details = options.details;
    const { pauseKeyUntil } = options;
    if (
      pauseKeyUntil !== undefined &&
      !(pauseKeyUntil instanceof Date && Number.isFinite(pauseKeyUntil.getTime()))
    )
      throw new TypeError(`TaskError: pauseKeyUntil must be a valid Date, got ${String(pauseKeyUntil)}`);
    this.pauseKeyUntil = pauseKeyUntil;
    Object.defineProperty(this, TASK_ERROR_BRAND, { value: true });
  }

  /** A failure that no retry can fix (bad input, a 404, a missing command). */
  static terminal(type: string, message: string, options?: TaskErrorOptions): TaskError {
    return new TaskError(type, message, false, options);
  }

  /** A failure that another attempt may not hit (a 503, a network error, a timeout). */
  static retryable(type: string, message: string, options?: TaskErrorOptions): TaskError {
    return new TaskError(type, message, true, options);
  }
}

/** True for a {@link TaskError}, including one created by another copy of this module. */
export function isTaskError(e: unknown): e is TaskError {
  return e instanceof TaskError || (typeof e === "object" && e !== null && TASK_ERROR_BRAND in e);
}

/** What the executor reports to the scheduler for a failed attempt. */
export interface TaskFailure {
  /** Error type, e.g. "HTTP_503", "EXIT_CODE", "CANCELLED", or an unknown error's `name`. */
  type: string;
  /** Human-readable description. */
  message: string;
  /** Whether another attempt may succeed. */
  retryable: boolean;
  /** Minimum delay before the next attempt, in milliseconds. */
  retryAfterMs?: number;
  /** JSON-serialisable data about the failure. */
  details?: unknown;
  /** The keys of the step's rate limits are paused until this time (ms since the epoch). */
  pauseKeyUntilMs?: number;
}

/**
 * The TaskError a handler should reject with once `signal` has aborted. A TaskError reason (how
 * the session says "lease lost" or "shutting down") is passed through; a TimeoutError reason
 * (e.g. from `AbortSignal.timeout` for a deadline) becomes a retryable TIMEOUT; anything else is a
 * terminal CANCELLED.
 */
export function cancellationError(signal: AbortSignal): TaskError {
  return fromAbortReason(signal.reason);
}

function fromAbortReason(reason: unknown): TaskError {
  if (isTaskError(reason)) return reason;
  if (errorName(reason) === "TimeoutError") {
    return TaskError.retryable(TaskErrorType.TIMEOUT, "task timed out", { cause: reason });
  }
  return TaskError.terminal(TaskErrorType.CANCELLED, "task was cancelled", { cause: reason });
}

/**
 * Turns anything a handler threw into a {@link TaskFailure}. Unknown errors are retryable with
 * `type` = their `name`; an AbortError is CANCELLED (not retryable) unless its cause says
 * otherwise (see {@link cancellationError}); a TimeoutError is a retryable TIMEOUT. The type and
 * message are cut to MAX_TASK_ERROR_TYPE_CHARS and MAX_TASK_ERROR_MESSAGE_CHARS, the delay to
 * {@link MAX_RETRY_AFTER_MS}.
 */
export function toTaskFailure(e: unknown): TaskFailure {
  const failure = failureOf(e);
  // Bounded here, the one way into a report: a failure too large for a session frame would end the
  // session each time it is sent, and a delay past int64 could not be encoded.
  failure.type = boundedText(failure.type, MAX_TASK_ERROR_TYPE_CHARS);
  failure.message = boundedText(failure.message, MAX_TASK_ERROR_MESSAGE_CHARS);
  if (failure.retryAfterMs !== undefined)
    failure.retryAfterMs = Math.min(failure.retryAfterMs, MAX_RETRY_AFTER_MS);
  return failure;
}

function failureOf(e: unknown): TaskFailure {
  const error = normalise(e);
  if (isTaskError(error)) {
    const failure: TaskFailure = { type: error.type, message: error.message, retryable: error.retryable };
    if (error.retryAfterMs !== undefined) failure.retryAfterMs = error.retryAfterMs;
    if (error.details !== undefined) failure.details = error.details;
    if (error.pauseKeyUntil !== undefined) failure.pauseKeyUntilMs = error.pauseKeyUntil.getTime();
    return failure;
  }
  if (error instanceof Error) {
    const type =
      typeof error.name === "string" && error.name.length > 0 ? error.name : THROWN_ERROR_FALLBACK_TYPE;
    return { type, message: error.message.length > 0 ? error.message : type, retryable: true };
  }
  return { type: THROWN_ERROR_FALLBACK_TYPE, message: describeThrown(error), retryable: true };
}

/** Maps the abort-shaped errors (AbortError, TimeoutError) to TaskErrors; others pass through. */
function normalise(e: unknown): unknown {
  switch (errorName(e)) {
    case "AbortError": {
      // Node's AbortError keeps the signal's reason as `cause`; fetch may reject with the reason itself.
      const cause = (e as { cause?: unknown }).cause;
      return cause === undefined
        ? TaskError.terminal(TaskErrorType.CANCELLED, "task was cancelled", { cause: e })
        : fromAbortReason(cause);
    }
    case "TimeoutError":
      return TaskError.retryable(TaskErrorType.TIMEOUT, messageOf(e) ?? "task timed out", { cause: e });
    default:
      return e;
  }
}

function errorName(e: unknown): string | undefined {
  if (typeof e !== "object" || e === null) return undefined;
  const name = (e as { name?: unknown }).name;
  return typeof name === "string" ? name : undefined;
}

function messageOf(e: unknown): string | undefined {
  const message = (e as { message?: unknown }).message;
  return typeof message === "string" && message.length > 0 ? message : undefined;
}

function describeThrown(value: unknown): string {
  switch (typeof value) {
    case "string":
      return value;
    case "number":
    case "boolean":
    case "bigint":
    case "symbol":
      return value.toString();
    case "undefined":
      return "handler threw undefined";
    default:
      if (value === null) return "handler threw null";
      try {
        const json = JSON.stringify(value);
        if (typeof json === "string") return json;
      } catch {
        // Not serialisable (cycles): describe the kind only.
      }
      return `handler threw a non-error ${typeof value}`;
  }
}
