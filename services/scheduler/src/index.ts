/** @nexusflow/scheduler: the scheduler component, for embedding and tests. */
export {
  Scheduler,
  PortInUseError,
  SchedulerLockedError,
  isSchedulerLockedError,
  type SchedulerOptions,
  type SchedulerState,
} from "./scheduler.js";
export {
  EmbeddedPostgresError,
  startEmbeddedPostgres,
  type EmbeddedDatabase,
} from "./persistence/embedded-postgres.js";
export { compileWorkflow } from "./dag/index.js";
export { RUNTIME_V8_FLAGS, tuneRuntime } from "./runtime.js";
