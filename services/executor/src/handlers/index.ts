/** The executor's task-handler layer: the handler API, the registry and the built-in handlers. */
export type {
  HandlerOptions,
  HandlerRegistration,
  PutArtifactOptions,
  TaskArtifacts,
  TaskContext,
  TaskHandler,
  TaskLog,
} from "./types.js";
export {
  BUILTIN_TASK_TYPES,
  type BuiltinHandlerOptions,
  HandlerModuleError,
  HandlerRegistrationError,
  HandlerRegistry,
  type LoadHandlerModuleOptions,
  TASK_TYPE_PATTERN,
  loadHandlerModule,
  registerBuiltins,
} from "./registry.js";
export {
  type HttpHandlerOptions,
  type HttpInput,
  type HttpOutput,
  createHttpHandler,
  parseRetryAfter,
} from "./http.js";
export {
  type ShellArg,
  type ShellHandlerOptions,
  type ShellInput,
  type ShellOutput,
  createShellHandler,
} from "./shell.js";
export { type SleepInput, type SleepOutput, sleepHandler } from "./sleep.js";
export { noopHandler } from "./noop.js";
