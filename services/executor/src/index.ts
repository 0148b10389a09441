/**
 * @nexusflow/executor: embed an executor in your own process, or run `main.ts`.
 *
 * ```ts
 * import { Executor, TaskError, bearerToken } from "@nexusflow/executor";
 * const executor = new Executor({
 *   schedulerAddress: "127.0.0.1:50051",
 *   metadata: bearerToken(process.env.EXECUTOR_TOKEN ?? ""), // a token with the `executor` scope
 * });
 * executor.register("greet", (input: { name: string }) => ({ greeting: `hello ${input.name}` }));
 * await executor.start();
 * ```
 */
export { Executor, type ExecutorState, type StateListener, FATAL_ATTACH_CODES } from "./executor.js";
export {
  type ExecutorOptions,
  type ReconnectOptions,
  type CompiledExecutorOptions,
  type SessionMetadataProvider,
  compileExecutorOptions,
  EXECUTOR_VERSION,
} from "./options.js";
export { ExecutorError, type ExecutorErrorCode, isExecutorError } from "./errors.js";
export { type BearerTokenSource, bearerToken } from "./bearer.js";
export {
  TaskError,
  type TaskErrorOptions,
  type TaskFailure,
  cancellationError,
  isTaskError,
  toTaskFailure,
} from "./handlers/task-error.js";
export {
  TASK_ERROR_TYPES,
  THROWN_ERROR_FALLBACK_TYPE,
  TaskErrorType,
  httpStatusErrorType,
  isHttpStatusErrorType,
  isTaskErrorType,
} from "@nexusflow/common/task-error-types";
export {
  type AttemptIdentity,
  type AttemptLog,
  type LogRecord,
  type LogSink,
  type MemoryAttemptLog,
  MemoryLogSink,
  type MemoryLogSinkOptions,
} from "./log-sink.js";
export { ArtifactLogSink, type ArtifactLogSinkOptions, LOG_CONTENT_TYPE } from "./artifact-log-sink.js";
export {
  DEFAULT_MAX_OFFLOAD_BYTES,
  type OutputOffloadOptions,
  type SettledOutput,
  createTaskArtifacts,
  settleOutput,
} from "./artifacts.js";
export { SECRET_VARIABLES, processExecutorOptions, shellBaseEnv } from "./process-options.js";
export * from "./handlers/index.js";
/** An embedded executor's gauges (sessions, free slots) in your own Prometheus registry. */
export { registerExecutorMetrics } from "./metrics.js";
