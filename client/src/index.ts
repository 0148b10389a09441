/**
 * @nexusflow/client: typed clients of the Nexusflow API (WorkflowService, ArtifactService) for
 * Node.js, over gRPC or Connect, with a bearer token, deadlines, retry of UNAVAILABLE for
 * idempotent calls and an AbortSignal per call.
 *
 * ```ts
 * import { NexusflowClient, RunStatus, runOutput } from "@nexusflow/client";
 * const nexusflow = new NexusflowClient({ baseUrl: "http://127.0.0.1:8080", token: process.env.NEXUSFLOW_TOKEN });
 * const { run } = await nexusflow.startRun({ workflowName: "hello-world", input: { name: "Ada" } });
 * const done = await nexusflow.waitForRun(run.id);
 * if (done.status === RunStatus.SUCCEEDED) console.log(runOutput(done));
 * ```
 */
export {
  NexusflowClient,
  type StartRunRequest,
  type StartedRun,
  type StartRunsResult,
  type WaitForRunOptions,
  TERMINAL_RUN_STATUSES,
  isTerminalRunStatus,
  runOutput,
} from "./client.js";
export { mergeWatchedRun } from "./watched-run.js";
export {
  type ClientOptions,
  type CompiledClientOptions,
  type CompiledRetryOptions,
  type Protocol,
  type RetryOptions,
  type TokenProvider,
  type TokenRequest,
  compileClientOptions,
  normaliseBaseUrl,
} from "./options.js";
export {
  type ClientErrorCode,
  Code,
  ConnectError,
  type FieldViolation,
  NexusflowClientError,
  fieldViolations,
  isNexusflowClientError,
  isRpcError,
} from "./errors.js";
export { IDEMPOTENT_METHODS, isIdempotentCall, retryDelayMs } from "./retry.js";
export {
  TASK_ERROR_TYPES,
  THROWN_ERROR_FALLBACK_TYPE,
  TaskErrorType,
  httpStatusErrorType,
  isHttpStatusErrorType,
  isTaskErrorType,
} from "@nexusflow/common/task-error-types";
export type { CallOptions, Client, Interceptor } from "@connectrpc/connect";
export type { JsonValue } from "@bufbuild/protobuf";
export {
  ArtifactService,
  RunStatus,
  RunView,
  TaskStatus,
  WorkflowService,
  type ArtifactRef,
  type Attempt,
  type LogLine,
  type RegisterWorkflowResponse,
  type Run,
  type TaskError,
  type TaskRun,
  type WatchRunResponse,
  type WorkflowDefinition,
} from "@nexusflow/gen";
