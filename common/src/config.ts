/**
 * The one module that reads the environment. Each service calls its loader once at start-up and
 * passes typed options down; bad values fail fast with one line naming the variable.
 */
import { hostname } from "node:os";
import { parseDuration } from "./duration.js";
import { DEFAULT_EXPORT_DELAY_MS, type TelemetryConfig } from "./telemetry/index.js";

export type { TelemetryConfig } from "./telemetry/index.js";

/** Thrown for a missing or malformed environment variable; `variable` names it. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
  }
}

type Env = Readonly<Record<string, string | undefined>>;

function str(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === "" ? undefined : v.trim();
}

/** An integer from `min` to `max`; `why`, when given, explains the range in the error. */
function int(env: Env, name: string, def: number, min: number, max: number, why?: string): number {
  const v = str(env, name);
  if (v === undefined) return def;
  if (!/^-?\d+$/.test(v)) throw new ConfigError(name, `expected an integer, got ${JSON.stringify(v)}`);
  const n = Number(v);
  if (n < min || n > max)
    throw new ConfigError(
      name,
      `must be between ${min} and ${max}${why === undefined ? "" : ` (${why})`}, got ${n}`,
    );
  return n;
}

function port(env: Env, name: string, def: number): number {
  return int(env, name, def, 0, 65535);
}

function duration(env: Env, name: string, def: string): number {
  const v = str(env, name) ?? def;
  try {
    return parseDuration(v);
  } catch (e) {
    throw new ConfigError(name, (e as Error).message);
  }
}

/** A retention: a duration up to 10 years, or `0` to keep forever (returned as 0). */
function retention(env: Env, name: string, def: string): number {
  const v = str(env, name) ?? def;
  if (/^0+$/.test(v)) return 0;
  try {
    return parseDuration(v, 3650 * 86_400_000);
  } catch (e) {
    throw new ConfigError(name, `${(e as Error).message} (or 0 to turn it off)`);
  }
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], def: T): T {
  const v = str(env, name);
  if (v === undefined) return def;
  if (!(allowed as readonly string[]).includes(v)) {
    throw new ConfigError(name, `expected one of ${allowed.join(", ")}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}

function url(env: Env, name: string, protocols: readonly string[]): string | undefined {
  const v = str(env, name);
  if (v === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(v);
  } catch {
    throw new ConfigError(name, `not a valid URL: ${JSON.stringify(v)}`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `expected a ${protocols.join(" or ")} URL, got ${parsed.protocol}`);
  }
  return v;
}

function bool(env: Env, name: string, def: boolean): boolean {
  const v = str(env, name);
  if (v === undefined) return def;
  if (/^(true|1|yes)$/i.test(v)) return true;
  if (/^(false|0|no)$/i.test(v)) return false;
  throw new ConfigError(name, `expected true or false, got ${JSON.stringify(v)}`);
}

function list(env: Env, name: string): string[] | undefined {
  const v = str(env, name);
  if (v === undefined) return undefined;
  const items = v
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  return items.length === 0 ? undefined : items;
}

function hostPort(env: Env, name: string, def: string): string {
  const v = str(env, name) ?? def;
  if (!/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/.test(v)) {
    throw new ConfigError(name, `expected host:port, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A comma-separated list of host:port (one is a list of one): each item checked, none twice. */
function hostPorts(env: Env, name: string, def: string): string[] {
  const v = str(env, name) ?? def;
  const items = v.split(",").map((item) => item.trim());
  const seen = new Set<string>();
  for (const item of items) {
    if (item === "") throw new ConfigError(name, `an empty item in the list ${JSON.stringify(v)}`);
    hostPort({ [name]: item }, name, item);
    if (seen.has(item)) throw new ConfigError(name, `${item} is listed twice in ${JSON.stringify(v)}`);
    seen.add(item);
  }
  return items;
}

/** Log levels accepted by LOG_LEVEL. */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
/** A log level. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Where the scheduler keeps its state. */
export interface DatabaseConfig {
  /** PostgreSQL URL; undefined starts the embedded PostgreSQL. */
  url: string | undefined;
  /** Directory of embedded PostgreSQL data and other local state. */
  dataDir: string;
  /** Port of the embedded PostgreSQL (0 picks a free one). */
  embeddedPort: number;
  /** Connection pool size. */
  poolSize: number;
}

/** Kafka publishing; undefined brokers turn it off. */
export interface KafkaConfig {
  brokers: string[] | undefined;
  topic: string;
  partitions: number;
  replicationFactor: number;
  clientId: string;
  /** How long published outbox rows are kept. */
  outboxRetentionMs: number;
  /** How often published rows are pruned. */
  outboxPruneIntervalMs: number;
  /** Outbox rows per relay batch (a row is the events of one group commit: up to a few thousand). */
  outboxBatchSize: number;
}

/**
 * The Kafka event source (EVENT_SOURCE_KAFKA_*): each record of the named topics is published as
 * an event (key: the record key, or the header EVENT_SOURCE_KAFKA_KEY_HEADER names; payload: the
 * JSON value). Undefined while EVENT_SOURCE_KAFKA_TOPICS is unset.
 */
export interface EventSourceConfig {
  /** Bootstrap brokers (EVENT_SOURCE_KAFKA_BROKERS, else KAFKA_BROKERS). */
  brokers: string[];
  /** Topics consumed (EVENT_SOURCE_KAFKA_TOPICS, comma-separated). */
  topics: string[];
  /** Consumer group (EVENT_SOURCE_KAFKA_GROUP_ID, default nexusflow-event-source). */
  groupId: string;
  /** Header holding the event key (EVENT_SOURCE_KAFKA_KEY_HEADER); undefined: the record key. */
  keyHeader: string | undefined;
  /** Where a group with no committed offset starts (EVENT_SOURCE_KAFKA_START_FROM, default latest). */
  startFrom: "latest" | "earliest";
  /** Kafka client id (KAFKA_CLIENT_ID). */
  clientId: string;
}

/** Artifact storage: S3 when an endpoint is set, the filesystem otherwise. */
export interface ArtifactConfig {
  s3Endpoint: string | undefined;
  s3AccessKey: string | undefined;
  s3SecretKey: string | undefined;
  s3Region: string;
  s3Bucket: string;
  dir: string;
  /** Task outputs whose JSON is larger than this are offloaded to the store (claim check), in bytes. */
  offloadThresholdBytes: number;
}

/**
 * Bearer-token authentication. On whenever token keys are configured; with none configured the
 * services refuse to start unless AUTH_DISABLED=true says so explicitly. `nexusflow dev` (npm start)
 * configures a local dev key; production configures its identity provider's keys and never the
 * dev key (whose tokens carry `iss: nexusflow-dev` and so also fail any other AUTH_ISSUER).
 */
export interface AuthConfig {
  /** False only with AUTH_DISABLED=true: every call is let in. */
  enabled: boolean;
  /** JWKS URL of the identity provider (AUTH_JWKS_URL). */
  jwksUrl: string | undefined;
  /** Public key files: PEM, JWK or JWKS (AUTH_PUBLIC_KEYS, comma-separated paths). */
  publicKeyFiles: string[];
  /** Accepted token issuers (AUTH_ISSUER, comma-separated). */
  issuer: string[];
  /** Accepted token audiences (AUTH_AUDIENCE, comma-separated). */
  audience: string[];
  /** Tolerated clock difference for exp/nbf, in seconds (AUTH_CLOCK_SKEW, a duration). */
  clockToleranceSec: number;
}

/** How long the scheduler keeps what it stores. */
export interface RetentionConfig {
  /** Finished runs older than this (by end time) are deleted with their rows and artifacts; 0 keeps them. */
  runRetentionMs: number;
  /** How often the purge of old runs starts. */
  runRetentionIntervalMs: number;
  /** Export each run as JSON to the artifact store before deleting it. */
  exportBeforeDelete: boolean;
  /** How long a StartRun idempotency key names its run. */
  idempotencyKeyRetentionMs: number;
  /**
   * Events published longer ago than this are deleted with their matches (checked every
   * `runRetentionIntervalMs`); 0 keeps them. A publish's idempotency key lasts as long as its event.
   */
  eventRetentionMs: number;
}

/**
 * Where a service serves `/metrics` (the OpenMetrics text format): METRICS_HOST and METRICS_PORT, read
 * by every service with its own default port; `METRICS_PORT=off` turns the endpoint off.
 */
export interface MetricsConfig {
  /** Interface to listen on (METRICS_HOST). */
  host: string;
  /** Port (METRICS_PORT); 0 picks a free one. */
  port: number;
  /**
   * True when METRICS_PORT was set: a port in use then stops the service; the default port in
   * use only turns metrics off, with a warning (two executors on one host).
   */
  explicit: boolean;
}

/**
 * Where a service answers the orchestrator's probes, `GET /healthz` (live) and `GET /readyz`
 * (ready). By default they ride on the metrics endpoint (METRICS_HOST:METRICS_PORT). HEALTH_PORT
 * gives them a port that does not depend on metrics: they are served there whatever METRICS_PORT
 * says (off included), on the metrics endpoint's own server when both name the same port, on a
 * server of their own otherwise. The host is METRICS_HOST either way (one ops interface).
 */
export interface ProbesConfig {
  /** Interface to listen on (METRICS_HOST). */
  host: string;
  /** Port: HEALTH_PORT, else METRICS_PORT's; 0 picks a free one. */
  port: number;
  /** True when the probes are served by the metrics endpoint's server (HEALTH_PORT unset or equal to METRICS_PORT). */
  onMetricsPort: boolean;
}

/** Default metrics ports: scheduler 9464, executor 9465, gateway 9466. */
export const DEFAULT_METRICS_PORTS = { scheduler: 9464, executor: 9465, gateway: 9466 } as const;

/** Everything the scheduler reads from the environment. */
export interface SchedulerConfig {
  host: string;
  port: number;
  logLevel: LogLevel;
  database: DatabaseConfig;
  kafka: KafkaConfig;
  /** The Kafka event source; undefined when no topic is named. */
  eventSource: EventSourceConfig | undefined;
  artifacts: ArtifactConfig;
  /**
   * How often an executor with nothing else to say sends a heartbeat (HEARTBEAT_INTERVAL, 2 s;
   * Hatchet's workers beat every 4 s). The scheduler pings every half interval.
   */
  heartbeatIntervalMs: number;
  /**
   * Silence after which an executor session is dead (SESSION_TIMEOUT, 10 s: five intervals, a
   * third of Hatchet's 30 s); its leases expire this long after it was last heard from, or after
   * a scheduler restart. A crashed executor back under its id gives them up at once instead. The
   * README's "Executor loss" has the comparison with Temporal and Hatchet.
   */
  sessionTimeoutMs: number;
  /**
   * The time waited that is worth one step priority level (PRIORITY_AGEING, 10 s): a ready task
   * is leased before one a level above it that became ready more than this later, so none starves.
   */
  priorityAgeingMs: number;
  auth: AuthConfig;
  retention: RetentionConfig;
  /**
   * Apply pending database migrations at start (MIGRATE_ON_START, default true: `npm start` needs
   * no separate step). False where a deployment runs `migrate` first (compose, Kubernetes): the
   * scheduler then only checks that no migration is pending and refuses to start, naming them.
   */
  migrateOnStart: boolean;
  /**
   * The installation's partition count (PARTITIONS, 1 to 4096): runs are spread over this many
   * partitions, each owned by one scheduler replica (docs/replicas.md). Written by the first
   * scheduler of a new database and fixed from then on; undefined (unset) uses the stored count,
   * or 16 for a new database.
   */
  partitions: number | undefined;
  /**
   * Whether this scheduler shares its database with other live replicas (SCHEDULER_CLUSTER,
   * default false, docs/replicas.md): it then takes no one-per-database lock and holds its share
   * of the partitions. Without it a second scheduler on the same database refuses to start.
   */
  cluster: boolean;
  /**
   * How long a replica's lease on its partitions holds after a renewal (PARTITION_LEASE, 5s;
   * renewed every fifth of it): a replica killed or cut off loses its partitions after this.
   */
  partitionLeaseMs: number;
  /**
   * The gRPC address other replicas and executors reach this replica at
   * (SCHEDULER_ADVERTISE_ADDRESS, e.g. a pod IP and port); undefined: the address it listens on.
   */
  advertiseAddress: string | undefined;
  /**
   * The token this replica presents on the calls it makes on its own to another replica (the
   * schedules' fire loop ending a run held elsewhere), with authentication on (SCHEDULER_TOKEN,
   * scope runs:write); undefined: such calls carry none and are refused.
   */
  peerToken: string | undefined;
  /** File holding that token, read again for every such call (SCHEDULER_TOKEN_FILE). */
  peerTokenFile: string | undefined;
  /** The /metrics endpoint; undefined with METRICS_PORT=off. */
  metrics: MetricsConfig | undefined;
  /** The /healthz and /readyz endpoint; undefined with METRICS_PORT=off and no HEALTH_PORT. */
  probes: ProbesConfig | undefined;
}

/** Everything the executor reads from the environment. */
export interface ExecutorConfig {
  schedulerAddress: string;
  executorId: string;
  slots: number;
  taskTypes: string[] | undefined;
  /**
   * How often the executor asks for the scheduler replicas and their partitions
   * (EXECUTOR_REPLICA_REFRESH, 3s; 0 turns discovery off: one session to SCHEDULER_ADDRESS).
   */
  replicaRefreshMs: number;
  handlersModule: string | undefined;
  logLevel: LogLevel;
  artifacts: ArtifactConfig;
  /** Bearer token sent when opening the session (EXECUTOR_TOKEN); needs the `executor` scope. */
  token: string | undefined;
  /**
   * File holding that token (EXECUTOR_TOKEN_FILE), read again for every session the executor
   * opens, so a token rotated in place (a Kubernetes projected token, a Vault agent) is used on
   * the next reconnect. At most one of `token` and `tokenFile` is set.
   */
  tokenFile: string | undefined;
  /** The /metrics endpoint; undefined with METRICS_PORT=off. */
  metrics: MetricsConfig | undefined;
  /** The /healthz and /readyz endpoint; undefined with METRICS_PORT=off and no HEALTH_PORT. */
  probes: ProbesConfig | undefined;
}

/** Everything the gateway reads from the environment. */
export interface GatewayConfig {
  host: string;
  port: number;
  /**
   * The scheduler replicas' addresses (SCHEDULER_ADDRESS, host:port or a comma-separated list):
   * the gateway calls one and fails over to the others.
   */
  schedulerAddresses: string[];
  logLevel: LogLevel;
  auth: AuthConfig;
  /** Largest request (message or REST body) accepted, in bytes: 1 KiB to {@link MAX_GATEWAY_REQUEST_BYTES}. */
  maxRequestBytes: number;
  /** Most streaming calls open at once per token subject. */
  maxStreamsPerClient: number;
  /** The /metrics endpoint; undefined with METRICS_PORT=off. */
  metrics: MetricsConfig | undefined;
  /** The /healthz and /readyz endpoint; undefined with METRICS_PORT=off and no HEALTH_PORT. */
  probes: ProbesConfig | undefined;
}

/** The metrics and probe endpoints (METRICS_HOST, METRICS_PORT, HEALTH_PORT). */
function opsEndpoints(
  env: Env,
  defaultPort: number,
): { metrics: MetricsConfig | undefined; probes: ProbesConfig | undefined } {
  const m = metrics(env, defaultPort);
  const host = str(env, "METRICS_HOST") ?? "127.0.0.1";
  if (str(env, "HEALTH_PORT") === undefined)
    return { metrics: m, probes: m === undefined ? undefined : { host, port: m.port, onMetricsPort: true } };
  const healthPort = port(env, "HEALTH_PORT", 0);
  if (m !== undefined && m.port === healthPort)
    // One server for both, and the port was named: taken, it stops the service.
    return { metrics: { ...m, explicit: true }, probes: { host, port: healthPort, onMetricsPort: true } };
  return { metrics: m, probes: { host, port: healthPort, onMetricsPort: false } };
}

function metrics(env: Env, defaultPort: number): MetricsConfig | undefined {
  const v = str(env, "METRICS_PORT");
  if (v !== undefined && /^off$/i.test(v)) return undefined;
  if (v !== undefined && !/^\d+$/.test(v)) {
    throw new ConfigError(
      "METRICS_PORT",
      `expected a port (0 for any free one) or off, got ${JSON.stringify(v)}`,
    );
  }
  return {
    host: str(env, "METRICS_HOST") ?? "127.0.0.1",
    port: port(env, "METRICS_PORT", defaultPort),
    explicit: v !== undefined,
  };
}

function database(env: Env): DatabaseConfig {
  return {
    url: url(env, "DATABASE_URL", ["postgres:", "postgresql:"]),
    dataDir: str(env, "NEXUSFLOW_DATA_DIR") ?? ".nexusflow",
    embeddedPort: port(env, "EMBEDDED_PG_PORT", 0),
    poolSize: int(env, "DATABASE_POOL_SIZE", 10, 2, 200),
  };
}

/**
 * The largest task output (and progress, error details) an executor process sends inline, in bytes
 * (3 MiB): every larger output goes to the artifact store, so `ARTIFACT_OFFLOAD_THRESHOLD` is at
 * most this (a higher threshold would never apply).
 */
export const MAX_INLINE_OUTPUT_BYTES = 3 * 1024 * 1024;

function artifacts(env: Env): ArtifactConfig {
  return {
    s3Endpoint: url(env, "S3_ENDPOINT", ["http:", "https:"]),
    s3AccessKey: str(env, "S3_ACCESS_KEY"),
    s3SecretKey: str(env, "S3_SECRET_KEY"),
    s3Region: str(env, "S3_REGION") ?? "us-east-1",
    s3Bucket: str(env, "S3_BUCKET") ?? "nexusflow",
    dir: str(env, "ARTIFACTS_DIR") ?? `${str(env, "NEXUSFLOW_DATA_DIR") ?? ".nexusflow"}/artifacts`,
    offloadThresholdBytes: int(
      env,
      "ARTIFACT_OFFLOAD_THRESHOLD",
      256 * 1024,
      1024,
      MAX_INLINE_OUTPUT_BYTES,
      "an executor sends outputs of up to 3 MiB inline and stores every larger one in the artifact store, so a higher threshold would never apply",
    ),
  };
}

/** A comma-separated list of Kafka brokers, each host:port. */
function brokerList(env: Env, name: string): string[] | undefined {
  const v = str(env, name);
  return v?.split(",").map((b, i) => {
    if (!/^[^:\s]+:\d{1,5}$/.test(b.trim()))
      throw new ConfigError(name, `entry ${i + 1} is not host:port: ${JSON.stringify(b)}`);
    return b.trim();
  });
}

/** A Kafka topic name: letters, digits, '.', '_' and '-', at most 249 characters, not "." or "..". */
const TOPIC_NAME = /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,249}$/;

function eventSource(env: Env, clientId: string): EventSourceConfig | undefined {
  const topics = list(env, "EVENT_SOURCE_KAFKA_TOPICS");
  if (topics === undefined) {
    const stray = ["BROKERS", "GROUP_ID", "KEY_HEADER", "START_FROM"]
      .map((n) => `EVENT_SOURCE_KAFKA_${n}`)
      .find((n) => str(env, n) !== undefined);
    if (stray !== undefined)
      throw new ConfigError(
        "EVENT_SOURCE_KAFKA_TOPICS",
        `required when ${stray} is set (the topics to consume)`,
      );
    return undefined;
  }
  for (const topic of topics)
    if (!TOPIC_NAME.test(topic))
      throw new ConfigError("EVENT_SOURCE_KAFKA_TOPICS", `not a Kafka topic name: ${JSON.stringify(topic)}`);
  const brokers = brokerList(env, "EVENT_SOURCE_KAFKA_BROKERS") ?? brokerList(env, "KAFKA_BROKERS");
  if (brokers === undefined)
    throw new ConfigError(
      "EVENT_SOURCE_KAFKA_BROKERS",
      "required with EVENT_SOURCE_KAFKA_TOPICS when KAFKA_BROKERS is not set (the brokers of those topics)",
    );
  return {
    brokers,
    topics: [...new Set(topics)],
    groupId: str(env, "EVENT_SOURCE_KAFKA_GROUP_ID") ?? "nexusflow-event-source",
    keyHeader: str(env, "EVENT_SOURCE_KAFKA_KEY_HEADER"),
    startFrom: oneOf(env, "EVENT_SOURCE_KAFKA_START_FROM", ["latest", "earliest"], "latest"),
    clientId,
  };
}

function auth(env: Env): AuthConfig {
  const jwksUrl = url(env, "AUTH_JWKS_URL", ["http:", "https:"]);
  const publicKeyFiles = list(env, "AUTH_PUBLIC_KEYS") ?? [];
  const disabled = bool(env, "AUTH_DISABLED", false);
  const configured = jwksUrl !== undefined || publicKeyFiles.length > 0;
  const clockToleranceSec = Math.ceil(duration(env, "AUTH_CLOCK_SKEW", "30s") / 1000);
  if (disabled) {
    if (configured) {
      throw new ConfigError(
        "AUTH_DISABLED",
        "is true while AUTH_PUBLIC_KEYS or AUTH_JWKS_URL is set; choose one",
      );
    }
    return { enabled: false, jwksUrl, publicKeyFiles, issuer: [], audience: [], clockToleranceSec };
  }
  if (!configured) {
    throw new ConfigError(
      "AUTH_PUBLIC_KEYS",
      "no token keys configured: set AUTH_PUBLIC_KEYS (public key files) or AUTH_JWKS_URL " +
        "(`npm start` sets up a local dev key; AUTH_DISABLED=true turns authentication off, for trusted networks only)",
    );
  }
  const issuer = list(env, "AUTH_ISSUER");
  if (issuer === undefined) throw new ConfigError("AUTH_ISSUER", "required when token keys are configured");
  const audience = list(env, "AUTH_AUDIENCE");
  if (audience === undefined)
    throw new ConfigError("AUTH_AUDIENCE", "required when token keys are configured");
  return { enabled: true, jwksUrl, publicKeyFiles, issuer, audience, clockToleranceSec };
}

/** Reads the scheduler's configuration. Throws {@link ConfigError}. */
export function loadSchedulerConfig(env: Env = process.env): SchedulerConfig {
  const clientId = str(env, "KAFKA_CLIENT_ID") ?? "nexusflow-scheduler";
  return {
    host: str(env, "SCHEDULER_HOST") ?? "127.0.0.1",
    port: port(env, "SCHEDULER_PORT", 50051),
    logLevel: oneOf(env, "LOG_LEVEL", LOG_LEVELS, "info"),
    database: database(env),
    kafka: {
      brokers: brokerList(env, "KAFKA_BROKERS"),
      topic: str(env, "KAFKA_TOPIC") ?? "nexusflow.events",
      partitions: int(env, "KAFKA_PARTITIONS", 6, 1, 1000),
      replicationFactor: int(env, "KAFKA_REPLICATION_FACTOR", 1, 1, 10),
      clientId,
      outboxRetentionMs: duration(env, "OUTBOX_RETENTION", "1h"),
      outboxPruneIntervalMs: duration(env, "OUTBOX_PRUNE_INTERVAL", "1m"),
      outboxBatchSize: int(env, "OUTBOX_BATCH_SIZE", 50, 1, 10_000),
    },
    eventSource: eventSource(env, clientId),
    artifacts: artifacts(env),
    ...liveness(env),
    priorityAgeingMs: priorityAgeing(env),
    auth: auth(env),
    retention: retentionConfig(env),
    migrateOnStart: bool(env, "MIGRATE_ON_START", true),
    partitions: str(env, "PARTITIONS") === undefined ? undefined : int(env, "PARTITIONS", 16, 1, 4096),
    cluster: bool(env, "SCHEDULER_CLUSTER", false),
    partitionLeaseMs: partitionLease(env),
    ...tokenOrFile(env, "SCHEDULER_TOKEN", "SCHEDULER_TOKEN_FILE", (token, tokenFile) => ({
      peerToken: token,
      peerTokenFile: tokenFile,
    })),
    advertiseAddress:
      str(env, "SCHEDULER_ADVERTISE_ADDRESS") === undefined
        ? undefined
        : hostPort(env, "SCHEDULER_ADVERTISE_ADDRESS", ""),
    ...opsEndpoints(env, DEFAULT_METRICS_PORTS.scheduler),
  };
}

/** EXECUTOR_REPLICA_REFRESH: 0 (off), or from 100 ms to 10 minutes. */
function replicaRefresh(env: Env): number {
  if (str(env, "EXECUTOR_REPLICA_REFRESH") === "0") return 0;
  const ms = duration(env, "EXECUTOR_REPLICA_REFRESH", "3s");
  if (ms !== 0 && (ms < 100 || ms > 600_000))
    throw new ConfigError(
      "EXECUTOR_REPLICA_REFRESH",
      `expected 0 (off) or 100ms to 10m, got ${JSON.stringify(str(env, "EXECUTOR_REPLICA_REFRESH"))}`,
    );
  return ms;
}

/** PARTITION_LEASE: from 500 ms (renewed every fifth of it) to 10 minutes. */
function partitionLease(env: Env): number {
  const ms = duration(env, "PARTITION_LEASE", "5s");
  if (ms < 500 || ms > 600_000)
    throw new ConfigError(
      "PARTITION_LEASE",
      `expected 500ms to 10m, got ${JSON.stringify(str(env, "PARTITION_LEASE"))}`,
    );
  return ms;
}

/** HEARTBEAT_INTERVAL and SESSION_TIMEOUT: a session must be allowed more than one beat of silence. */
function liveness(env: Env): { heartbeatIntervalMs: number; sessionTimeoutMs: number } {
  const heartbeatIntervalMs = duration(env, "HEARTBEAT_INTERVAL", "2s");
  const sessionTimeoutMs = duration(env, "SESSION_TIMEOUT", "10s");
  if (sessionTimeoutMs <= heartbeatIntervalMs)
    throw new ConfigError(
      "SESSION_TIMEOUT",
      `must be longer than HEARTBEAT_INTERVAL (${heartbeatIntervalMs} ms), or every session would be declared dead between two beats`,
    );
  return { heartbeatIntervalMs, sessionTimeoutMs };
}

function priorityAgeing(env: Env): number {
  const ms = duration(env, "PRIORITY_AGEING", "10s");
  if (ms <= 0) throw new ConfigError("PRIORITY_AGEING", "must be longer than 0");
  return ms;
}

function retentionConfig(env: Env): RetentionConfig {
  const idempotencyKeyRetentionMs = duration(env, "IDEMPOTENCY_KEY_RETENTION", "24h");
  if (idempotencyKeyRetentionMs <= 0)
    throw new ConfigError("IDEMPOTENCY_KEY_RETENTION", "must be longer than 0");
  const runRetentionIntervalMs = duration(env, "RUN_RETENTION_INTERVAL", "1m");
  if (runRetentionIntervalMs < 1000) throw new ConfigError("RUN_RETENTION_INTERVAL", "must be at least 1s");
  const runRetentionMs = retention(env, "RUN_RETENTION", "30d");
  // A finished run's idempotency key goes with it: a shorter run retention would cut the key's.
  if (runRetentionMs > 0 && runRetentionMs < idempotencyKeyRetentionMs)
    throw new ConfigError(
      "RUN_RETENTION",
      `must be at least IDEMPOTENCY_KEY_RETENTION (${idempotencyKeyRetentionMs} ms), since a run's idempotency key is deleted with the run; or 0 to keep runs`,
    );
  return {
    runRetentionMs,
    runRetentionIntervalMs,
    exportBeforeDelete: bool(env, "RUN_EXPORT_BEFORE_DELETE", false),
    idempotencyKeyRetentionMs,
    eventRetentionMs: retention(env, "EVENT_RETENTION", "7d"),
  };
}

/** Reads the executor's configuration. Throws {@link ConfigError}. */
export function loadExecutorConfig(env: Env = process.env): ExecutorConfig {
  const types = str(env, "EXECUTOR_TASK_TYPES");
  return {
    schedulerAddress: hostPort(env, "SCHEDULER_ADDRESS", "127.0.0.1:50051"),
    executorId: str(env, "EXECUTOR_ID") ?? `${hostname()}-${process.pid}`,
    slots: int(env, "EXECUTOR_SLOTS", 16, 1, 10_000),
    replicaRefreshMs: replicaRefresh(env),
    taskTypes:
      types === undefined
        ? undefined
        : types
            .split(",")
            .map((t) => t.trim())
            .filter((t) => t !== ""),
    handlersModule: str(env, "EXECUTOR_HANDLERS"),
    logLevel: oneOf(env, "LOG_LEVEL", LOG_LEVELS, "info"),
    artifacts: artifacts(env),
    ...executorToken(env),
    ...opsEndpoints(env, DEFAULT_METRICS_PORTS.executor),
  };
}

function executorToken(env: Env): Pick<ExecutorConfig, "token" | "tokenFile"> {
  return tokenOrFile(env, "EXECUTOR_TOKEN", "EXECUTOR_TOKEN_FILE", (token, tokenFile) => ({
    token,
    tokenFile,
  }));
}

/** A token in `name` or in the file `fileName` names, not both (the names spelled out: docs and tests grep them). */
function tokenOrFile<T>(
  env: Env,
  name: string,
  fileName: string,
  make: (token: string | undefined, tokenFile: string | undefined) => T,
): T {
  const token = str(env, name);
  const tokenFile = str(env, fileName);
  if (token !== undefined && tokenFile !== undefined)
    throw new ConfigError(fileName, `set either ${name} or ${fileName}, not both`);
  return make(token, tokenFile);
}

/**
 * The largest request the gateway may be set to accept (GATEWAY_MAX_REQUEST_BYTES, and the
 * gateway's `maxRequestBytes`): 16 MiB, the scheduler's own receive limit
 * (`grpc.max_receive_message_length` in services/scheduler/src/scheduler.ts). A larger request
 * is answered with a reset of the gateway's HTTP/2 session to the scheduler (ENHANCE_YOUR_CALM),
 * which every client's calls share: they fail with it.
 */
export const MAX_GATEWAY_REQUEST_BYTES = 16 * 1024 * 1024;

/** Reads the gateway's configuration. Throws {@link ConfigError}. */
export function loadGatewayConfig(env: Env = process.env): GatewayConfig {
  return {
    host: str(env, "GATEWAY_HOST") ?? "127.0.0.1",
    port: port(env, "GATEWAY_PORT", 8080),
    schedulerAddresses: hostPorts(env, "SCHEDULER_ADDRESS", "127.0.0.1:50051"),
    logLevel: oneOf(env, "LOG_LEVEL", LOG_LEVELS, "info"),
    auth: auth(env),
    maxRequestBytes: int(
      env,
      "GATEWAY_MAX_REQUEST_BYTES",
      4 * 1024 * 1024,
      1024,
      MAX_GATEWAY_REQUEST_BYTES,
      "16 MiB, the largest message the scheduler accepts",
    ),
    maxStreamsPerClient: int(env, "GATEWAY_MAX_STREAMS_PER_CLIENT", 32, 1, 10_000),
    ...opsEndpoints(env, DEFAULT_METRICS_PORTS.gateway),
  };
}

const SAMPLERS = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio",
] as const;

/**
 * Reads the tracing configuration; `undefined` when tracing is off (the default). `service` is the
 * default service name. Throws {@link ConfigError}.
 */
export function loadTelemetryConfig(service: string, env: Env = process.env): TelemetryConfig | undefined {
  if (bool(env, "OTEL_SDK_DISABLED", false)) return undefined;
  const traces = url(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ["http:", "https:"]);
  const base = url(env, "OTEL_EXPORTER_OTLP_ENDPOINT", ["http:", "https:"]);
  if (traces === undefined && base === undefined) return undefined;
  const tracesUrl = traces ?? `${base!.replace(/\/+$/, "")}/v1/traces`;
  const sampler = oneOf(env, "OTEL_TRACES_SAMPLER", SAMPLERS, "parentbased_always_on");
  let sampleRatio = 1;
  if (sampler.endsWith("always_off")) sampleRatio = 0;
  else if (sampler.endsWith("traceidratio")) {
    const arg = str(env, "OTEL_TRACES_SAMPLER_ARG") ?? "1";
    const ratio = Number(arg);
    if (!/^\d*\.?\d+$/.test(arg) || ratio > 1) {
      throw new ConfigError(
        "OTEL_TRACES_SAMPLER_ARG",
        `expected a ratio from 0 to 1, got ${JSON.stringify(arg)}`,
      );
    }
    sampleRatio = ratio;
  }
  const headers: Record<string, string> = {};
  for (const pair of list(env, "OTEL_EXPORTER_OTLP_HEADERS") ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0)
      throw new ConfigError("OTEL_EXPORTER_OTLP_HEADERS", `expected key=value, got ${JSON.stringify(pair)}`);
    headers[pair.slice(0, eq).trim()] = decodeURIComponent(pair.slice(eq + 1).trim());
  }
  return {
    tracesUrl,
    serviceName: str(env, "OTEL_SERVICE_NAME") ?? service,
    sampleRatio,
    headers,
    exportDelayMs: int(env, "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_EXPORT_DELAY_MS, 1, 3_600_000),
  };
}

/** Configuration of `migrate` (the schema step before a scheduler starts): the database and logging. */
export interface MigrateConfig {
  logLevel: LogLevel;
  /** DATABASE_URL; required (migrate never starts the embedded PostgreSQL). */
  databaseUrl: string;
}

/** Reads `migrate`'s configuration. Throws {@link ConfigError}. */
export function loadMigrateConfig(env: Env = process.env): MigrateConfig {
  const databaseUrl = url(env, "DATABASE_URL", ["postgres:", "postgresql:"]);
  if (databaseUrl === undefined)
    throw new ConfigError("DATABASE_URL", "required by migrate (the database whose schema it updates)");
  return { logLevel: oneOf(env, "LOG_LEVEL", LOG_LEVELS, "info"), databaseUrl };
}
