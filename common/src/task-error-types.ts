/**
 * The error types the scheduler and the executor give a failed attempt, task or run (`error.type`
 * of `Attempt`, `TaskRun` and `Run` in GetRun; proto `nexusflow.v1.TaskError`). One vocabulary, so
 * a workflow's retry policy can name them without spelling strings by hand (`TaskErrorType` is
 * exported by @nexusflow/client, @nexusflow/executor and @nexusflow/common):
 *
 * ```ts
 * const retry = { maxAttempts: 5, nonRetryableErrors: [TaskErrorType.EXIT_CODE, "CARD_DECLINED"] };
 * ```
 *
 * Besides these constants, two families of types are produced: `HTTP_<status>` by the built-in
 * `http` handler ({@link httpStatusErrorType}), and the `name` of an error a handler threw that is
 * not a TaskError (`TypeError`, ...; {@link THROWN_ERROR_FALLBACK_TYPE} when it has none). Types a
 * handler gives its own `TaskError`s (`CARD_DECLINED`) are the handler's to document.
 *
 * "Retried by default" is the verdict the error carries (`retryable`); a retryable error is still
 * not retried once the step's `maxAttempts` are used or when its type is in `nonRetryableErrors`.
 * This module has no dependencies, so the client can re-export it.
 */
export const TaskErrorType = {
  // ---- Scheduler: timeouts and lost executors (every one retryable, like any attempt failure) ----

  /**
   * Scheduler. No executor leased and started the attempt within the step's `scheduleToStart`
   * (no executor attached serves its type, or none has a free slot), counted from when it was
   * queued. Retried by default; the attempt has no executor or start time. No details.
   */
  SCHEDULE_TO_START_TIMEOUT: "SCHEDULE_TO_START_TIMEOUT",
  /**
   * Scheduler or executor. The attempt passed its `startToClose` timeout: the scheduler fences the
   * lease and tells the executor to stop; the executor aborts the handler at the same deadline.
   * The built-in `http` and `shell` handlers also report it when their own `timeout` input passes,
   * and an abort by a `TimeoutError` (`AbortSignal.timeout`) becomes it. Retried by default.
   * Details: none, except `shell`, whose details are the command's output so far (`exitCode`,
   * `signal`, `stdout`, `stderr`, `stdoutTruncated`, `stderrTruncated`).
   */
  TIMEOUT: "TIMEOUT",
  /**
   * Scheduler. A running attempt whose step has a `heartbeat` timeout sent no heartbeat for longer
   * than that; the lease is fenced and the executor told to stop. Retried by default. No details.
   */
  HEARTBEAT_TIMEOUT: "HEARTBEAT_TIMEOUT",
  /**
   * Scheduler. The executor holding the lease lost its session and did not re-attach listing it
   * within the session timeout (counted from its last message), or re-attached under its id
   * without listing it (it no longer holds it). Retried by default, due at once rather than after
   * the policy's backoff, and counted against `maxAttempts`. No details.
   */
  LEASE_EXPIRED: "LEASE_EXPIRED",
  /**
   * Scheduler. The executor gave the lease back (a `Release` report, e.g. while draining): the
   * attempt ends CANCELLED with this error and the task is queued again at the front, without
   * counting as a failure against `maxAttempts` or the retry policy. Marked retryable. No details.
   */
  RELEASED: "RELEASED",

  // ---- Scheduler: runs ended by a user, a deadline, storage, or a failed step ----

  /**
   * Scheduler or executor. Scheduler: `CancelRun` cancelled the run; the run, and the attempts it
   * stopped, carry it with the cancellation's reason as message. Executor: the handler was aborted
   * because the scheduler cancelled its task, or threw an `AbortError` for another abort. Terminal.
   * No details.
   */
  CANCELLED: "CANCELLED",
  /**
   * Scheduler. The run passed its `timeout`: it ends TIMED_OUT with this error, and so do the
   * attempts it stopped. Terminal. No details.
   */
  RUN_TIMEOUT: "RUN_TIMEOUT",
  /**
   * Scheduler. The run's error when it failed because steps failed and the first of them has no
   * error of its own to lend (a run's error normally takes the type of its first failed step).
   * Also the error of a COMPENSATED run in that case. Terminal. No details.
   */
  STEP_FAILED: "STEP_FAILED",
  /**
   * Scheduler. The run's error when it ends COMPENSATION_FAILED: some compensations kept failing;
   * the message names them after the error that started the rollback. Terminal. No details.
   */
  COMPENSATION_FAILED: "COMPENSATION_FAILED",
  /**
   * Scheduler. PostgreSQL refused to store the run's changes for their data (retrying would fail
   * forever): the run ends FAILED with this error and its leases are cancelled; a run refused at
   * `StartRun` is not created. Terminal. No details.
   */
  STORAGE_REFUSED: "STORAGE_REFUSED",
  /**
   * Scheduler. Advancing the run threw an unexpected error (a fault in the scheduler, logged at
   * error level with the run's id): the run ends FAILED with this error, its leased tasks told to
   * stop, and the scheduler's other runs go on. A rollback is not started (it would run the same
   * code); a run already rolling back ends FAILED too. Terminal. No details.
   */
  SCHEDULER_ERROR: "SCHEDULER_ERROR",
  /**
   * Scheduler. The run's workflow definition, as stored, no longer passes this version's validation
   * (a rule added since it was registered): the scheduler cannot run it, so when it loads the run
   * (at start-up, with a partition it takes, or a parked run woken) the run ends FAILED with this
   * error, whose message names the problems; the scheduler's other runs load as usual. Register a
   * version that passes and start the run again. Terminal. No details.
   */
  DEFINITION_INVALID: "DEFINITION_INVALID",
  /**
   * Scheduler. A succeeded step's offloaded output (a claim check in the artifact store) is gone or
   * corrupt when the run needs it: the step fails. Terminal. No details.
   */
  OUTPUT_UNAVAILABLE: "OUTPUT_UNAVAILABLE",
  /**
   * Scheduler. A template could not be rendered against the run's data: a step's `input` (the step
   * fails before running), a compensation's `input` (that compensation fails), or the workflow's
   * `output` mapping (the run fails). The message names the JSON path. Terminal. No details.
   */
  TEMPLATE_ERROR: "TEMPLATE_ERROR",
  /**
   * Scheduler. A task's rendered input (a step's, a compensation's or a map element's) is larger
   * than the 15 MiB (as protobuf) a lease carries to an executor, e.g. a large run input or
   * upstream output templated in more than once: the task fails as soon as rendering passes that
   * size (or, for what rendering cannot count, when it would be leased), before any executor gets
   * it (no attempt). Terminal. No details.
   */
  INPUT_TOO_LARGE: "INPUT_TOO_LARGE",
  /**
   * Scheduler. A task's rendered input is nested deeper than the 48 levels of arrays and objects
   * an executor decodes: the task fails when it would be leased, before any executor gets it (no
   * attempt). Terminal. No details.
   */
  INPUT_TOO_DEEP: "INPUT_TOO_DEEP",
  /**
   * Scheduler. A step's `when` condition could not be evaluated (a missing path, wrong types): the
   * step fails before running. Terminal. No details.
   */
  EXPRESSION_ERROR: "EXPRESSION_ERROR",
  /**
   * Scheduler. A step's concurrency key (`concurrency[].key`) evaluated to something other than a
   * string or a number, or could not be evaluated (a missing path): the step fails before it is
   * queued. The message names the key's JSON path. Terminal. No details. (A workflow's key is
   * checked by StartRun, which answers INVALID_ARGUMENT instead.)
   */
  CONCURRENCY_KEY_ERROR: "CONCURRENCY_KEY_ERROR",
  /**
   * Scheduler. A step's rate limit key (`rateLimits[].key`) evaluated to something other than a
   * string or a number, or could not be evaluated: the step fails when it would first be leased.
   * Terminal. No details (the message names the limit, the key and its path).
   */
  RATE_LIMIT_KEY_ERROR: "RATE_LIMIT_KEY_ERROR",
  /**
   * Scheduler. A wait step (`wait: {signal, timeout}`) saw no signal of its name before its
   * timeout, or (`wait: {event, filter, timeout}`) no matching event was published while it waited:
   * the step fails for good (a wait is not retried; its retry policy does not apply), and the run
   * fails or rolls back like for any failed step. No details.
   */
  WAIT_TIMEOUT: "WAIT_TIMEOUT",
  /**
   * Scheduler. A sleep step's `until` template rendered something that is not an RFC 3339 time
   * with an offset: the step fails before sleeping. Terminal. No details.
   */
  INVALID_SLEEP_UNTIL: "INVALID_SLEEP_UNTIL",
  /**
   * Scheduler. A child workflow step's child run ended other than SUCCEEDED (FAILED, TIMED_OUT,
   * CANCELLED, COMPENSATED, COMPENSATION_FAILED): the step fails with this type, not the child's
   * (the child's own type is in the message and the details), so that a parent can tell "my child
   * failed" from its own steps' failures. Terminal: a failed child is not started again. Details:
   * `{"childRunId", "status", "error"}` (the child run's id, its status and its error). Also the
   * error of a child workflow step's compensation (the parent rolling back) when a child could not
   * roll back (it ended COMPENSATION_FAILED, or is no longer stored): details add `failedCount`
   * and `failed` (the first 100 such children).
   */
  CHILD_FAILED: "CHILD_FAILED",
  /**
   * Scheduler. A child workflow step names a workflow (or version) that is not registered when
   * the step starts (definitions may name workflows registered later). Terminal. No details.
   */
  CHILD_WORKFLOW_NOT_FOUND: "CHILD_WORKFLOW_NOT_FOUND",
  /**
   * Scheduler. A child workflow step could not start its child: the rendered `workflow.input` does
   * not match the child workflow's input schema or concurrency keys, or the child's definition, as
   * stored, no longer passes this version's validation. Terminal. No details.
   */
  CHILD_START_FAILED: "CHILD_START_FAILED",
  /**
   * Scheduler. A child workflow step of a run that is already 10 levels under its root run (a
   * workflow starting itself, or a chain that deep): the step fails instead of starting an 11th
   * level. Terminal. No details.
   */
  CHILD_DEPTH_EXCEEDED: "CHILD_DEPTH_EXCEEDED",
  /**
   * Scheduler. A map step's `map.items` did not evaluate to an array, or to one of more than
   * 10,000 elements: the step fails before any element runs. Terminal. Details: `{ "items" }`
   * (the expression), with `"got"` (the JSON type) or `"length"` (the array's length).
   */
  MAP_ITEMS_INVALID: "MAP_ITEMS_INVALID",
  /**
   * Scheduler. An element of a map step with `failure: "fail-fast"` failed for good (its retries
   * spent): the step fails and its other running elements are cancelled. Terminal. Details:
   * `{ "index", "error" }` (the element's position and its error).
   */
  MAP_ELEMENT_FAILED: "MAP_ELEMENT_FAILED",
  /**
   * Scheduler. Elements of a map step with `failure: "collect"` failed for good; the step failed
   * once every element had ended. Terminal. Details: `{ "failedCount", "succeededCount",
   * "failed": [{ "index", "error" }] }` (the first 100 failures in item order; every element's
   * own result stays on its task row, listed by GetRun as `<step>[<index>]`).
   */
  MAP_ELEMENTS_FAILED: "MAP_ELEMENTS_FAILED",
  /**
   * Scheduler. An executor reported a failure without a type (an executor not built on
   * @nexusflow/executor). Retried as the report says (by default when it says nothing).
   * Details: as reported.
   */
  UNKNOWN: "UNKNOWN",

  // ---- Executor: the attempt, its output and its artifacts ----

  /**
   * Executor. The lease names a task type this executor has no handler for, or does not
   * advertise. Terminal. Details: `{ taskType, known }` (registered types) or `{ taskType, served }`.
   */
  UNKNOWN_TASK_TYPE: "UNKNOWN_TASK_TYPE",
  /**
   * Executor. The handler's output cannot be sent: not JSON-serialisable, or a string holding a NUL
   * character (U+0000), which PostgreSQL cannot store. Terminal. No details.
   */
  INVALID_OUTPUT: "INVALID_OUTPUT",
  /**
   * Executor. The handler's output is larger than the executor's payload limit (without offload)
   * or its offload limit (`OutputOffloadOptions.maxBytes`). Terminal. No details.
   */
  OUTPUT_TOO_LARGE: "OUTPUT_TOO_LARGE",
  /**
   * Executor. An output above the offload threshold could not be written to the artifact store.
   * Retried by default. No details.
   */
  OUTPUT_OFFLOAD_FAILED: "OUTPUT_OFFLOAD_FAILED",
  /**
   * Executor. A handler called `ctx.artifacts.put` on an executor with no artifact store
   * configured. Terminal. No details.
   */
  ARTIFACTS_UNAVAILABLE: "ARTIFACTS_UNAVAILABLE",
  /**
   * Executor. The artifact store refused a `ctx.artifacts.put` for its name or data (an invalid
   * key, a conflict). Terminal. No details.
   */
  INVALID_ARTIFACT: "INVALID_ARTIFACT",
  /**
   * Executor. The artifact store failed a `ctx.artifacts.put` otherwise (unreachable, an error of
   * its own). Retried by default. No details.
   */
  ARTIFACT_STORE_UNAVAILABLE: "ARTIFACT_STORE_UNAVAILABLE",
  /**
   * Executor. The executor was stopped and the handler did not finish within the drain timeout,
   * so it was aborted. Retried by default (another executor may run it). No details.
   */
  EXECUTOR_SHUTDOWN: "EXECUTOR_SHUTDOWN",
  /**
   * Executor, as the abort reason a handler sees in `ctx.signal.reason`; never reported: the
   * scheduler gave the lease to another executor while this one was away (on re-attach). Terminal.
   */
  LEASE_REVOKED: "LEASE_REVOKED",
  /**
   * Executor, as the abort reason a handler sees in `ctx.signal.reason`; never reported: the
   * scheduler rejected a report on the lease (stale fencing token, task already decided), so the
   * work is no longer this executor's. The scheduler's own record says why (e.g. TIMEOUT,
   * LEASE_EXPIRED). Terminal.
   */
  LEASE_LOST: "LEASE_LOST",

  // ---- Executor: the built-in handlers ----

  /**
   * Executor, built-in handlers (`http`, `shell`, `sleep`). The task's input is invalid (a missing
   * or mistyped field, an unknown field, a bad duration). Terminal. Details: `{ field }`.
   */
  INVALID_INPUT: "INVALID_INPUT",
  /**
   * Executor, `http`. The request failed before a response arrived (DNS, refused or reset
   * connection, TLS) or while reading the body. Retried by default. No details.
   */
  NETWORK_ERROR: "NETWORK_ERROR",
  /**
   * Executor, `http`. The response body is larger than the handler's `maxResponseBytes`. Terminal.
   * Details: `{ status, maxBytes }`.
   */
  RESPONSE_TOO_LARGE: "RESPONSE_TOO_LARGE",
  /**
   * Executor, `http`. A 2xx response says JSON in its content-type but its body is not JSON.
   * Terminal. Details: `{ status, body }` (the body cut to a few KiB).
   */
  INVALID_RESPONSE: "INVALID_RESPONSE",
  /**
   * Executor, `shell`. The command exited with a non-zero code or was killed by a signal. Retried
   * by default, unless the input's `terminalExitCodes` lists the code or `retryOnExitCodes` does
   * not. Details: `{ exitCode, signal, stdout, stderr, stdoutTruncated, stderrTruncated }` (the
   * output's last characters).
   */
  EXIT_CODE: "EXIT_CODE",
  /** Executor, `shell`. The command is not in PATH, or no such file. Terminal. No details. */
  COMMAND_NOT_FOUND: "COMMAND_NOT_FOUND",
  /** Executor, `shell`. The input's `cwd` does not exist or is not a directory. Terminal. No details. */
  CWD_NOT_FOUND: "CWD_NOT_FOUND",
  /** Executor, `shell`. The command could not be started otherwise (permissions, ...). Terminal. No details. */
  SPAWN_FAILED: "SPAWN_FAILED",
} as const;

/** One of the error types of {@link TaskErrorType}. */
export type TaskErrorType = (typeof TaskErrorType)[keyof typeof TaskErrorType];

/** Every type of {@link TaskErrorType}, for checks and listings. */
export const TASK_ERROR_TYPES: readonly TaskErrorType[] = Object.freeze(Object.values(TaskErrorType));

/** True when `type` is one of {@link TaskErrorType} (not a family member or a handler's own type). */
export function isTaskErrorType(type: string): type is TaskErrorType {
  return (TASK_ERROR_TYPES as readonly string[]).includes(type);
}

/**
 * The type the built-in `http` handler gives a non-2xx response, e.g. `HTTP_404`. Retried by
 * default for 408, 429 and 5xx (after the response's `Retry-After`, when given), terminal for the
 * others. Details: `{ status, headers, body }` (the body cut to a few KiB).
 */
export function httpStatusErrorType(status: number): `HTTP_${number}` {
  return `HTTP_${status}`;
}

/** True for a type made by {@link httpStatusErrorType}. */
export function isHttpStatusErrorType(type: string): boolean {
  return /^HTTP_[1-5]\d\d$/.test(type);
}

/**
 * The type of a failure whose handler threw something that is not a TaskError: the thrown error's
 * `name` (`TypeError`, `MyError`), or this when it has none or is not an Error at all (a string).
 * Retried by default. No details.
 */
export const THROWN_ERROR_FALLBACK_TYPE = "Error";

/**
 * The longest failure `type` kept, in UTF-16 code units: an executor cuts a longer one before it
 * reports it, and the scheduler cuts what another client sends (common/src/text.ts boundedText).
 */
export const MAX_TASK_ERROR_TYPE_CHARS = 256;

/**
 * The longest failure `message` kept (16 Ki code units): a handler's error may carry a whole
 * response body or log, and a report larger than a session frame would end the session it is sent
 * on, every time it is sent again.
 */
export const MAX_TASK_ERROR_MESSAGE_CHARS = 16_384;
