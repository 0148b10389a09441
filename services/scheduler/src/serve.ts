/** The scheduler process (after main.ts started tracing): read configuration, start, stop on signals. */
import { readFile } from "node:fs/promises";
import {
  ConfigError,
  KeyFileError,
  createLogger,
  logProcessWarnings,
  loadSchedulerConfig,
  tokenVerifierFromConfig,
} from "@nexusflow/common";
import { type ArtifactStore, createArtifactStore, isArtifactError } from "@nexusflow/common/artifacts";
import { MetricsListenError, createMetricsRegistry } from "@nexusflow/common/metrics";
import { shutdownTelemetry, tracingEnabled } from "@nexusflow/common/telemetry";
import { EmbeddedPostgresError } from "./persistence/embedded-postgres.js";
import { PortInUseError, Scheduler, isSchedulerLockedError, isSchemaNotCurrentError } from "./scheduler.js";
import { type IdleRelease, releaseMemoryWhenIdle, releaseStartupMemory, tuneRuntime } from "./runtime.js";

tuneRuntime();

/** SCHEDULER_TOKEN, or SCHEDULER_TOKEN_FILE read again for every call (a rotated token is taken). */
function peerToken(
  token: string | undefined,
  file: string | undefined,
): (() => Promise<string | undefined>) | undefined {
  if (token !== undefined) return () => Promise.resolve(token);
  if (file === undefined) return undefined;
  return async () => {
    const value = (await readFile(file, "utf8")).trim();
    if (value === "") throw new Error(`SCHEDULER_TOKEN_FILE: ${file} is empty`);
    return value;
  };
}

let config;
try {
  config = loadSchedulerConfig();
} catch (e) {
  if (e instanceof ConfigError) {
    process.stderr.write(`nexusflow-scheduler: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
}
const log = createLogger("scheduler", config.logLevel, { traceContext: tracingEnabled() });
logProcessWarnings(log);
let auth;
try {
  auth = await tokenVerifierFromConfig(config.auth);
} catch (e) {
  if (e instanceof KeyFileError) {
    process.stderr.write(`nexusflow-scheduler: AUTH_PUBLIC_KEYS: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
}
if (auth === undefined)
  log.warn("authentication is OFF (AUTH_DISABLED=true): any caller and any executor is let in");
let artifacts: ArtifactStore;
try {
  artifacts = await createArtifactStore(config.artifacts);
} catch (e) {
  if (e instanceof ConfigError || isArtifactError(e)) {
    process.stderr.write(`nexusflow-scheduler: artifact store: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
}
const scheduler = new Scheduler({
  artifacts,
  host: config.host,
  port: config.port,
  databaseUrl: config.database.url,
  dataDir: config.database.dataDir,
  poolSize: config.database.poolSize,
  migrateOnStart: config.migrateOnStart,
  partitions: config.partitions,
  cluster: config.cluster,
  partitionLeaseMs: config.partitionLeaseMs,
  advertiseAddress: config.advertiseAddress,
  peerToken: peerToken(config.peerToken, config.peerTokenFile),
  heartbeatIntervalMs: config.heartbeatIntervalMs,
  sessionTimeoutMs: config.sessionTimeoutMs,
  priorityAgeingMs: config.priorityAgeingMs,
  idempotencyKeyRetentionMs: config.retention.idempotencyKeyRetentionMs,
  runRetentionMs: config.retention.runRetentionMs,
  runRetentionIntervalMs: config.retention.runRetentionIntervalMs,
  eventRetentionMs: config.retention.eventRetentionMs,
  exportRunsBeforeDelete: config.retention.exportBeforeDelete,
  auth,
  metrics: config.metrics === undefined ? undefined : createMetricsRegistry(),
  metricsEndpoint: config.metrics,
  probesEndpoint: config.probes,
  onFatal: (error) => {
    process.stderr.write(`nexusflow-scheduler: ${error.message}\n`);
    process.exit(1);
  },
  events: {
    brokers: config.kafka.brokers,
    topic: config.kafka.topic,
    partitions: config.kafka.partitions,
    replicationFactor: config.kafka.replicationFactor,
    clientId: config.kafka.clientId,
    retentionMs: config.kafka.outboxRetentionMs,
    pruneIntervalMs: config.kafka.outboxPruneIntervalMs,
    batchSize: config.kafka.outboxBatchSize,
  },
  eventSource: config.eventSource,
  log,
});

let stopping = false;
let idleRelease: IdleRelease | undefined;
async function shutdown(signal: string): Promise<void> {
  if (stopping) {
    log.warn({ signal }, "second signal: exiting now");
    process.exit(1);
  }
  stopping = true;
  idleRelease?.stop();
  log.info({ signal }, "shutting down");
  await scheduler.stop();
  await shutdownTelemetry();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));

try {
  await scheduler.start();
} catch (e) {
  if (
    e instanceof PortInUseError ||
    e instanceof EmbeddedPostgresError ||
    e instanceof MetricsListenError ||
    isSchedulerLockedError(e) ||
    isSchemaNotCurrentError(e)
  ) {
    process.stderr.write(`nexusflow-scheduler: ${e.message}\n`);
    process.exit(1);
  }
  log.fatal({ err: e }, "scheduler failed to start");
  process.exit(1);
}
log.debug({ gc_ms: Math.round(releaseStartupMemory()) }, "start-up memory released");
if (!stopping)
  idleRelease = releaseMemoryWhenIdle({
    onRelease: ({ ms, rssBefore, rssAfter }) =>
      log.debug(
        { gc_ms: Math.round(ms), rss_mib_before: mib(rssBefore), rss_mib_after: mib(rssAfter) },
        "memory released while idle",
      ),
  });

function mib(bytes: number): number {
  return Math.round((bytes / 2 ** 20) * 10) / 10;
}
