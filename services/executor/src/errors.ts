/** Errors of the {@link Executor} itself (not of tasks: those are `TaskError`s). */

/** Why an executor operation failed; recognise errors by this, never by message text. */
export type ExecutorErrorCode =
  /** An option is out of range or malformed. */
  | "INVALID_OPTIONS"
  /** `taskTypes` names a type that has no registered handler. */
  | "UNKNOWN_TASK_TYPES"
  /** `start()` was called twice, or `register()` after `start()`. */
  | "ALREADY_STARTED"
  /** `stop()` was called before the first attach. */
  | "STOPPED"
  /** The scheduler refused the session for a reason retrying cannot fix (see {@link FATAL_ATTACH_CODES}). */
  | "ATTACH_REFUSED";

/** An error of the executor's lifecycle, with a {@link ExecutorErrorCode}. */
export class ExecutorError extends Error {
  override name = "ExecutorError";
  constructor(
    readonly code: ExecutorErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** True for an {@link ExecutorError}, optionally with the given code. */
export function isExecutorError(e: unknown, code?: ExecutorErrorCode): e is ExecutorError {
  return e instanceof ExecutorError && (code === undefined || e.code === code);
}
