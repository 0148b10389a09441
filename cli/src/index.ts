/** @nexusflow/cli: the `nexusflow` command and the local development stack. */
export { type DevOptions, runDev } from "./dev.js";
export {
  ChildExitedError,
  ChildNotReadyError,
  ChildTimeoutError,
  type ChildExit,
  type ChildSpec,
  ManagedChild,
} from "./child.js";
export { formatChildLine, formatLogRecord, parseLogLine, type LogRecord } from "./log-format.js";
export { RunProgress, type TaskChange, formatRunSummary, formatTaskChange, isTerminal } from "./progress.js";
