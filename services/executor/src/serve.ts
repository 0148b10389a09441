/**
 * The executor process (after main.ts started tracing): reads its configuration, registers the built-in handlers and the user's
 * handler module (EXECUTOR_HANDLERS), attaches to the scheduler and drains on SIGTERM/SIGINT.
 * Wiring only; the behaviour lives in {@link Executor}.
 */
import { readFile } from "node:fs/promises";
import * as grpc from "@grpc/grpc-js";
import {
  ConfigError,
  type ExecutorConfig,
  createLogger,
  logProcessWarnings,
  loadExecutorConfig,
} from "@nexusflow/common";
import { type ArtifactStore, createArtifactStore, isArtifactError } from "@nexusflow/common/artifacts";
import {
  MetricsListenError,
  type OpsEndpoints,
  createMetricsRegistry,
  grpcClientMetrics,
  startOpsEndpoints,
} from "@nexusflow/common/metrics";
import { shutdownTelemetry, tracingEnabled } from "@nexusflow/common/telemetry";
import { Executor } from "./executor.js";
import { isExecutorError } from "./errors.js";
import { HandlerModuleError, HandlerRegistrationError, loadHandlerModule } from "./handlers/index.js";
import { registerExecutorMetrics } from "./metrics.js";
import { processExecutorOptions } from "./process-options.js";

/** Session metadata carrying `token` as a bearer token (none without one). */
function bearerMetadata(token: string | undefined): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

/** Bad configuration: one line naming the variable, exit status 2. */
function configFailure(message: string): never {
  process.stderr.write(`nexusflow-executor: ${message}\n`);
  process.exit(2);
}

let config: ExecutorConfig;
try {
  config = loadExecutorConfig();
} catch (e) {
  if (e instanceof ConfigError) configFailure(e.message);
  throw e;
}

const logger = createLogger("executor", config.logLevel, { traceContext: tracingEnabled() });
logProcessWarnings(logger);
// The scheduler wants a bearer token with the `executor` scope on the session (unless its
// AUTH_DISABLED=true): fixed (EXECUTOR_TOKEN) or read from a file for every session it opens
// (EXECUTOR_TOKEN_FILE), so a token rotated in place is used on the next reconnect.
const { token, tokenFile } = config;
const metadata =
  tokenFile === undefined
    ? bearerMetadata(token)
    : async (): Promise<grpc.Metadata> => {
        const value = (await readFile(tokenFile, "utf8")).trim();
        if (value === "") throw new Error(`the token file ${tokenFile} is empty`);
        return bearerMetadata(value);
      };
let artifacts: ArtifactStore;
try {
  artifacts = await createArtifactStore(config.artifacts);
} catch (e) {
  if (e instanceof ConfigError) configFailure(e.message);
  if (isArtifactError(e)) configFailure(`artifact store: ${e.message}`);
  throw e;
}
logger.info({ store: artifacts.kind }, "artifact store ready");
const registry = config.metrics === undefined ? undefined : createMetricsRegistry();
let executor: Executor;
try {
  executor = new Executor(
    processExecutorOptions(config, process.env, {
      artifacts,
      logger,
      metadata,
      // grpc-js takes client interceptors with the channel options.
      ...(registry === undefined ? {} : { channelOptions: { interceptors: [grpcClientMetrics(registry)] } }),
    }),
  );
} catch (e) {
  if (isExecutorError(e, "INVALID_OPTIONS")) configFailure(e.message);
  throw e;
}

if (registry !== undefined) registerExecutorMetrics(registry, executor, config.slots);
let ops: OpsEndpoints;
try {
  // Ready (GET /readyz) while it has a session with the scheduler.
  ops = await startOpsEndpoints({
    metrics: config.metrics,
    probes: config.probes,
    registry,
    log: logger,
    ready: () =>
      Promise.resolve(
        executor.state === "ATTACHED" ? undefined : `no session with the scheduler (${executor.state})`,
      ),
  });
} catch (e) {
  if (e instanceof MetricsListenError) {
    process.stderr.write(`nexusflow-executor: ${e.message}\n`);
    process.exit(1);
  }
  throw e;
}

if (config.handlersModule !== undefined) {
  try {
    const added = await loadHandlerModule(config.handlersModule, executor.registry);
    logger.info({ module: config.handlersModule, task_types: added }, "handler module loaded");
  } catch (e) {
    if (e instanceof HandlerModuleError || e instanceof HandlerRegistrationError)
      configFailure(`EXECUTOR_HANDLERS: ${e.message}`);
    throw e;
  }
}

let stopping = false;
const onSignal = (signal: NodeJS.Signals): void => {
  if (stopping) {
    logger.warn({ signal }, "second signal: exiting without draining");
    process.exit(1);
  }
  stopping = true;
  Promise.all([executor.stop(signal), ops.close()])
    .then(() => shutdownTelemetry())
    .then(
      () => process.exit(0),
      (e: unknown) => {
        logger.error({ err: e }, "stop failed");
        process.exit(1);
      },
    );
};
process.on("SIGTERM", onSignal);
process.on("SIGINT", onSignal);

try {
  await executor.start();
  logger.info(
    {
      scheduler_address: config.schedulerAddress,
      executor_id: config.executorId,
      slots: config.slots,
      session_id: executor.sessionId,
      task_types: executor.taskTypes,
    },
    "executor attached to the scheduler",
  );
} catch (e) {
  if (isExecutorError(e, "STOPPED")) {
    // A signal arrived before the first attach; onSignal finishes the stop.
  } else if (isExecutorError(e, "UNKNOWN_TASK_TYPES")) {
    configFailure(`EXECUTOR_TASK_TYPES: ${e.message}`);
  } else {
    logger.fatal({ err: e }, "the executor could not start");
    process.exit(1);
  }
}
