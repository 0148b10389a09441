/**
 * What an executor process (the service's main.ts, and the CLI's `nexusflow executor`) builds its
 * {@link Executor} from: its configuration, with the process's own secrets kept out of the
 * environment that `shell` tasks inherit.
 */
import type { ExecutorConfig } from "@nexusflow/common";
import { DEFAULT_MAX_PAYLOAD_BYTES, type ExecutorOptions } from "./options.js";

/**
 * Variables a `shell` task never inherits: the executor's credentials (S3, its token, a database
 * URL) and an operator's token that the shell starting it may hold.
 */
export const SECRET_VARIABLES: readonly string[] = [
  "S3_ACCESS_KEY",
  "S3_SECRET_KEY",
  "DATABASE_URL",
  "EXECUTOR_TOKEN",
  "EXECUTOR_TOKEN_FILE",
  "NEXUSFLOW_TOKEN",
];

/** `env` without {@link SECRET_VARIABLES}: the base environment of `shell` tasks. */
export function shellBaseEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && !SECRET_VARIABLES.includes(name)) out[name] = value;
  }
  return out;
}

/**
 * The options of an executor process: identity, capacity, types, scheduler and artifact offload
 * from `config` (whose ARTIFACT_OFFLOAD_THRESHOLD is at most the largest output the process sends
 * inline, `maxPayloadBytes`, 3 MiB), `shell` tasks on `env` without its secrets, and what only the
 * process knows (`rest`: its artifact store, logger, session metadata, channel options).
 */
export function processExecutorOptions(
  config: ExecutorConfig,
  env: NodeJS.ProcessEnv,
  rest: Pick<ExecutorOptions, "artifacts" | "logger" | "metadata" | "channelOptions">,
): ExecutorOptions {
  return {
    ...rest,
    maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES,
    offloadThresholdBytes: config.artifacts.offloadThresholdBytes,
    schedulerAddress: config.schedulerAddress,
    executorId: config.executorId,
    slots: config.slots,
    replicaRefreshMs: config.replicaRefreshMs,
    taskTypes: config.taskTypes,
    builtins: { shell: { baseEnv: shellBaseEnv(env) } },
  };
}
