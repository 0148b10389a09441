/**
 * Options of {@link Executor}: the public interface with its documented defaults, and the one
 * function that applies and validates them (Temporal's `addDefaultWorkerOptions` pattern), so the
 * session code only ever sees a complete, checked {@link CompiledExecutorOptions}.
 */
import { createRequire } from "node:module";
import { hostname } from "node:os";
import * as grpc from "@grpc/grpc-js";
import { MAX_INLINE_OUTPUT_BYTES, createLogger, type Logger } from "@nexusflow/common";
import { type ArtifactStore, DEFAULT_OFFLOAD_THRESHOLD_BYTES } from "@nexusflow/common/artifacts";
import { ArtifactLogSink } from "./artifact-log-sink.js";
import { DEFAULT_MAX_OFFLOAD_BYTES } from "./artifacts.js";
import { ExecutorError } from "./errors.js";
import type { BuiltinHandlerOptions } from "./handlers/index.js";
import { type LogSink, MemoryLogSink } from "./log-sink.js";

/** Backoff between attempts to (re)open the session: capped exponential with full jitter. */
export interface ReconnectOptions {
  /**
   * Upper bound of the first delay, in milliseconds (the delay is uniform in [0, bound]).
   * @default 100
   */
  initialDelayMs?: number | undefined;
  /**
   * Cap of the bound, in milliseconds; it doubles after every failed attempt until it reaches this.
   * @default 5000
   */
  maxDelayMs?: number | undefined;
}

/** What an {@link Executor} is built from. Every field is optional. */
export interface ExecutorOptions {
  /**
   * The scheduler's gRPC address, host:port.
   * @default "127.0.0.1:50051"
   */
  schedulerAddress?: string | undefined;
  /**
   * Stable id of this executor process; reconnects reuse it so the scheduler recognises held leases.
   * @default `${hostname()}-${process.pid}`
   */
  executorId?: string | undefined;
  /**
   * Most tasks run at once: the credit granted to the scheduler.
   * @default 16
   */
  slots?: number | undefined;
  /**
   * Task types advertised to the scheduler; each must be registered by the time `start()` is called.
   * @default every registered type, as of `start()`
   */
  taskTypes?: readonly string[] | undefined;
  /**
   * Free-form labels sent with Attach (region, pool, ...).
   * @default {}
   */
  labels?: Readonly<Record<string, string>> | undefined;
  /**
   * Executor software version sent with Attach.
   * @default the version of the @nexusflow/executor package
   */
  version?: string | undefined;
  /**
   * How often the executor asks the scheduler which replicas own which partitions
   * (ReplicaService.ListReplicas), in milliseconds. With several live scheduler replicas it keeps
   * a session to each that holds partitions, and sends each lease's reports to the owner of its
   * run; it also asks at once when a session ends, a report is rejected NOT_FOUND or a Cancel says
   * a run's partition moved. A scheduler that does not answer it (UNIMPLEMENTED, PERMISSION_DENIED)
   * or a single replica: one session, as before. 0: never ask (one session to `schedulerAddress`).
   * @default 3000
   */
  replicaRefreshMs?: number | undefined;
  /**
   * Backoff between reconnection attempts.
   * @default { initialDelayMs: 100, maxDelayMs: 5000 }
   */
  reconnect?: ReconnectOptions | undefined;
  /**
   * How long `stop()` waits for running tasks before aborting them, in milliseconds.
   * @default 30000
   */
  drainTimeoutMs?: number | undefined;
  /**
   * How long an aborted task (drain timeout) gets to settle before the executor reports it failed
   * on its behalf and stops waiting for it, in milliseconds.
   * @default 2000
   */
  abortGraceMs?: number | undefined;
  /**
   * How long to wait for AttachAck after opening the session before giving up on it, in milliseconds.
   * @default 10000
   */
  attachTimeoutMs?: number | undefined;
  /**
   * Largest JSON payload (task output, progress, error details) sent to the scheduler, in bytes:
   * at most 15 MiB, below the scheduler's gRPC receive limit (16 MiB), which a report over it
   * would pass (the session then breaks, again at every reconnection while the report waits).
   * @default 3 MiB (3_145_728)
   */
  maxPayloadBytes?: number | undefined;
  /**
   * Structured logger.
   * @default a pino logger named "executor" at level "info"
   */
  logger?: Logger | undefined;
  /**
   * Channel credentials.
   * @default grpc.credentials.createInsecure()
   */
  credentials?: grpc.ChannelCredentials | undefined;
  /**
   * Metadata sent when opening every session (e.g. an `authorization` token), or a function that
   * returns it, called for every session the executor opens (to send a token that was rotated
   * since). When the function fails, that attempt fails and the executor retries with backoff.
   * @default no metadata
   */
  metadata?: grpc.Metadata | SessionMetadataProvider | undefined;
  /**
   * grpc-js channel options, merged over the executor's (keepalive, and reconnect backoff aligned
   * with {@link ExecutorOptions.reconnect}).
   * @default {}
   */
  channelOptions?: grpc.ChannelOptions | undefined;
  /**
   * Options of the built-in handlers (http, noop, shell, sleep), or `false` to register none.
   * @default {} (all built-ins with their defaults)
   */
  builtins?: BuiltinHandlerOptions | false | undefined;
  /**
   * Where each attempt's log lines go.
   * @default an {@link ArtifactLogSink} over `artifacts` when it is set, else a {@link MemoryLogSink}
   */
  logSink?: LogSink | undefined;
  /**
   * Where handlers' files (`ctx.artifacts`), attempt logs and large outputs are stored. Without
   * it `ctx.artifacts.put` fails with ARTIFACTS_UNAVAILABLE and outputs are never offloaded.
   * @default none
   */
  artifacts?: ArtifactStore | undefined;
  /**
   * Outputs whose JSON is larger than this are stored in `artifacts` as `output.json` and
   * reported by reference (claim check), in bytes. Only with `artifacts`. At most
   * `maxPayloadBytes`: an output larger than that cannot go inline, so it is offloaded whatever
   * the threshold, and a higher threshold (which could never apply) is refused `INVALID_OPTIONS`.
   * @default 256 KiB (262_144), or `maxPayloadBytes` when that is lower
   */
  offloadThresholdBytes?: number | undefined;
  /**
   * Largest output offloaded, in bytes; a larger one fails the attempt with OUTPUT_TOO_LARGE.
   * @default 256 MiB
   */
  maxOffloadBytes?: number | undefined;
}

/** Makes the metadata of one session (see {@link ExecutorOptions.metadata}). */
export type SessionMetadataProvider = () => grpc.Metadata | Promise<grpc.Metadata>;

/** {@link ExecutorOptions} with every default applied and every value checked. */
export interface CompiledExecutorOptions {
  readonly schedulerAddress: string;
  readonly executorId: string;
  readonly slots: number;
  readonly taskTypes: readonly string[] | undefined;
  readonly labels: Readonly<Record<string, string>>;
  readonly version: string;
  readonly reconnect: { readonly initialDelayMs: number; readonly maxDelayMs: number };
  readonly replicaRefreshMs: number;
  readonly drainTimeoutMs: number;
  readonly abortGraceMs: number;
  readonly attachTimeoutMs: number;
  readonly maxPayloadBytes: number;
  readonly logger: Logger;
  readonly credentials: grpc.ChannelCredentials;
  /** Makes each session's metadata (a fixed value is cloned). */
  readonly metadata: SessionMetadataProvider;
  readonly channelOptions: grpc.ChannelOptions;
  readonly builtins: BuiltinHandlerOptions | false;
  readonly logSink: LogSink;
  readonly artifacts: ArtifactStore | undefined;
  readonly offloadThresholdBytes: number;
  readonly maxOffloadBytes: number;
}

/** Version of this package, sent with Attach unless overridden. */
export const EXECUTOR_VERSION: string = (
  createRequire(import.meta.url)("../package.json") as { version: string }
).version;

/** Largest slot count; the wire field is an int32 and the scheduler has to track every lease. */
const MAX_SLOTS = 10_000;
/** Largest {@link ExecutorOptions.maxPayloadBytes}: 1 MiB below the scheduler's 16 MiB receive limit. */
export const MAX_PAYLOAD_BYTES = 15 * 1024 * 1024;
/**
 * Default {@link ExecutorOptions.maxPayloadBytes} (3 MiB): the executor process's, which no variable
 * sets (the configuration bounds ARTIFACT_OFFLOAD_THRESHOLD by it).
 */
export const DEFAULT_MAX_PAYLOAD_BYTES = MAX_INLINE_OUTPUT_BYTES;
/** Largest delay or timeout accepted: Node's timer limit (~24.8 days); longer ones would fire at once. */
const MAX_MS = 2_147_483_647;

function integer(name: string, value: number | undefined, def: number, min: number, max: number): number {
  const v = value ?? def;
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new ExecutorError(
      "INVALID_OPTIONS",
      `${name} must be an integer between ${min} and ${max}, got ${String(v)}`,
    );
  }
  return v;
}

function nonEmpty(name: string, value: string | undefined, def: string): string {
  const v = value ?? def;
  if (typeof v !== "string" || v.trim() === "") {
    throw new ExecutorError("INVALID_OPTIONS", `${name} must be a non-empty string`);
  }
  return v;
}

/**
 * {@link ExecutorOptions.offloadThresholdBytes}, checked against `maxPayloadBytes`: an output over
 * that limit is offloaded whatever the threshold (it cannot go inline), so a threshold set above it
 * would never apply. Set so, with a store to offload to, it is refused rather than lowered unseen.
 */
function offloadThreshold(options: ExecutorOptions, maxPayloadBytes: number): number {
  const given = options.offloadThresholdBytes;
  const threshold = integer("offloadThresholdBytes", given, DEFAULT_OFFLOAD_THRESHOLD_BYTES, 0, 2 ** 31 - 1);
  if (given === undefined) return Math.min(threshold, maxPayloadBytes);
  if (options.artifacts !== undefined && threshold > maxPayloadBytes) {
    throw new ExecutorError(
      "INVALID_OPTIONS",
      `offloadThresholdBytes (${threshold}) must not exceed maxPayloadBytes (${maxPayloadBytes}): an output larger than maxPayloadBytes is always offloaded, so this threshold would never apply`,
    );
  }
  return threshold;
}

/** Applies the defaults of {@link ExecutorOptions} and validates them. Throws {@link ExecutorError} `INVALID_OPTIONS`. */
export function compileExecutorOptions(options: ExecutorOptions = {}): CompiledExecutorOptions {
  const initialDelayMs = integer(
    "reconnect.initialDelayMs",
    options.reconnect?.initialDelayMs,
    100,
    1,
    MAX_MS,
  );
  const maxDelayMs = integer(
    "reconnect.maxDelayMs",
    options.reconnect?.maxDelayMs,
    Math.max(5_000, initialDelayMs),
    initialDelayMs,
    MAX_MS,
  );
  const taskTypes = options.taskTypes === undefined ? undefined : [...new Set(options.taskTypes)];
  if (taskTypes?.length === 0)
    throw new ExecutorError("INVALID_OPTIONS", "taskTypes must name at least one task type when given");
  const logger = options.logger ?? createLogger("executor", "info");
  const maxPayloadBytes = integer(
    "maxPayloadBytes",
    options.maxPayloadBytes,
    DEFAULT_MAX_PAYLOAD_BYTES,
    1,
    MAX_PAYLOAD_BYTES,
  );
  return {
    schedulerAddress: nonEmpty("schedulerAddress", options.schedulerAddress, "127.0.0.1:50051"),
    executorId: nonEmpty("executorId", options.executorId, `${hostname()}-${process.pid}`),
    slots: integer("slots", options.slots, 16, 1, MAX_SLOTS),
    taskTypes,
    labels: { ...options.labels },
    version: nonEmpty("version", options.version, EXECUTOR_VERSION),
    reconnect: { initialDelayMs, maxDelayMs },
    replicaRefreshMs: integer("replicaRefreshMs", options.replicaRefreshMs, 3_000, 0, MAX_MS),
    drainTimeoutMs: integer("drainTimeoutMs", options.drainTimeoutMs, 30_000, 0, MAX_MS),
    abortGraceMs: integer("abortGraceMs", options.abortGraceMs, 2_000, 0, MAX_MS),
    attachTimeoutMs: integer("attachTimeoutMs", options.attachTimeoutMs, 10_000, 1, MAX_MS),
    maxPayloadBytes,
    logger,
    credentials: options.credentials ?? grpc.credentials.createInsecure(),
    metadata: sessionMetadata(options.metadata),
    channelOptions: {
      // Detects a scheduler that vanished without closing the connection (no RST) in ~40 s
      // rather than after TCP's retransmission timeout (~15 min).
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
      // The channel's own reconnect backoff (1 s growing to 120 s by default) would otherwise
      // dominate ours: a session opened while the channel backs off fails at once.
      "grpc.initial_reconnect_backoff_ms": initialDelayMs,
      "grpc.max_reconnect_backoff_ms": maxDelayMs,
      // A lease carries its step's rendered input, which the scheduler may make larger than
      // grpc-js' 4 MiB default (a large run input or upstream output templated in): the scheduler
      // sends any size, and a lease refused here would end the session with every lease after it.
      "grpc.max_receive_message_length": -1,
      ...options.channelOptions,
    },
    builtins: options.builtins ?? {},
    logSink:
      options.logSink ??
      (options.artifacts === undefined
        ? new MemoryLogSink()
        : new ArtifactLogSink({ store: options.artifacts, logger })),
    artifacts: options.artifacts,
    offloadThresholdBytes: offloadThreshold(options, maxPayloadBytes),
    maxOffloadBytes: integer(
      "maxOffloadBytes",
      options.maxOffloadBytes,
      DEFAULT_MAX_OFFLOAD_BYTES,
      1,
      2 ** 31 - 1,
    ),
  };
}

function sessionMetadata(value: ExecutorOptions["metadata"]): SessionMetadataProvider {
  if (typeof value === "function") return value;
  if (value !== undefined && !(value instanceof grpc.Metadata)) {
    throw new ExecutorError(
      "INVALID_OPTIONS",
      "metadata: expected a grpc.Metadata or a function returning one",
    );
  }
  const fixed = value ?? new grpc.Metadata();
  return () => fixed.clone();
}
