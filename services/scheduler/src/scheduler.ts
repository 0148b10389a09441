/**
 * The scheduler as one component: database (embedded or external), engine and gRPC server, with
 * explicit states and a clean stop. Tests create it with port 0; main.ts wires it to the environment.
 */
import * as grpc from "@grpc/grpc-js";
import {
  ApiError,
  Code,
  serviceDefinition,
  type Logger,
  type MetricsConfig,
  type ProbesConfig,
  type TokenVerifier,
} from "@nexusflow/common";
import { type ArtifactStore, FilesystemArtifactStore, resolveOutputRef } from "@nexusflow/common/artifacts";
import { type OpsEndpoints, type Registry, startOpsEndpoints } from "@nexusflow/common/metrics";
import {
  ArtifactService,
  ClusterService,
  EventService,
  ExecutorService,
  ReplicaService,
  RateLimitService,
  ScheduleService,
  WorkflowService,
} from "@nexusflow/gen";
import { Health } from "@nexusflow/gen/grpc/health/v1/health_pb";
import { PgTaskIndex, artifactService } from "./api/artifact-service.js";
import { bindGrpcServer, createGrpcServer } from "./api/grpc-server.js";
import { clusterService } from "./api/cluster-service.js";
import { eventService } from "./api/event-service.js";
import { replicaService, sharedView } from "./api/replica-service.js";
import { readClusterView } from "./cluster/cluster-view.js";
import { addSchedulerHealth } from "./api/health.js";
import { executorService, executorServiceDefinition } from "./api/executor-session.js";
import { addReflection } from "./api/reflection.js";
import { rateLimitService } from "./api/rate-limit-service.js";
import { scheduleService } from "./api/schedule-service.js";
import { workflowService } from "./api/workflow-service.js";
import { ReplicaRouter } from "./cluster/replica-router.js";
import { PartitionLeases } from "./cluster/partition-leases.js";
import { Definitions } from "./engine/definitions.js";
import { Engine } from "./engine/engine.js";
import { createOutboxRelay, type EventsOptions, type OutboxRelay } from "./events/index.js";
import { registerSchedulerMetrics } from "./metrics/index.js";
import { registerEventSourceMetrics } from "./metrics/event-source-metrics.js";
import { KafkaEventSource, type KafkaEventSourceOptions } from "./triggers/kafka-source.js";
import { startEventMatches, storeEvent, type EventPublishDeps } from "./triggers/publish.js";
import { openDatabase, type Database } from "./persistence/database.js";
import { startEmbeddedPostgres, type EmbeddedDatabase } from "./persistence/embedded-postgres.js";
import { SchemaNotCurrentError, applyMigrations, pendingMigrations } from "./persistence/schema.js";
import type { RateLimitPurge } from "./persistence/rate-limit-purge.js";
import { DEFAULT_RUN_RETENTION_MS, type RunRetention } from "./persistence/retention.js";
import { PostgresDefinitionStore } from "./persistence/postgres-definition-store.js";
import { PostgresEngineStore } from "./persistence/postgres-engine-store.js";
import { RunStore } from "./persistence/run-store.js";
import type { FireLoop } from "./schedules/fire-loop.js";
import { FireStarter } from "./schedules/fires.js";
import { Coordinator } from "./cluster/coordinator.js";
import { coordinatorRoles } from "./coordinator-roles.js";
import { ClusterNotifications, RATE_LIMITS_CHANNEL, SCHEDULES_CHANNEL } from "./cluster/notifications.js";
import { EVENTS_CHANNEL, EventWaitScan } from "./triggers/wait-scan.js";
import { FireStore } from "./schedules/fire-store.js";
import { ScheduleStore } from "./schedules/store.js";
import { declaredScheduleHooks } from "./schedules/declared.js";
import { EventStore } from "./triggers/event-store.js";
import type { EventRetention } from "./triggers/event-retention.js";
import type { MatchLoop } from "./triggers/match-loop.js";
import { MatchStarter } from "./triggers/match-loop.js";
import { TriggerIndex } from "./triggers/trigger-index.js";
import { WaitMatchLoop, WaitMatchStore } from "./triggers/wait-matches.js";
import type { ParkingOptions } from "./engine/parking.js";
import { PostgresParkedRuns } from "./persistence/parked-runs.js";
import {
  acquireSchedulerLock,
  type SchedulerLock,
  type SchedulerLockedError,
} from "./persistence/scheduler-lock.js";

export { PortInUseError } from "./api/grpc-server.js";
export { SchedulerLockedError, isSchedulerLockedError } from "./persistence/scheduler-lock.js";
export { SchemaNotCurrentError, isSchemaNotCurrentError } from "./persistence/schema.js";

/**
 * How long calls still open once the engine stopped (its commits settled, their callers answered)
 * may take before the server cuts them: a StartRun forwarded to another replica waits for that
 * replica's commit (at most its 5 s commit timeout).
 */
const FORCE_SHUTDOWN_GRACE_MS = 6_000;

/** Options of {@link Scheduler}. */
export interface SchedulerOptions {
  /** Interface to listen on. @default "127.0.0.1" */
  host?: string;
  /** Port; 0 picks a free one. @default 0 */
  port?: number;
  /** PostgreSQL URL; undefined starts the embedded PostgreSQL in `dataDir`. */
  databaseUrl?: string | undefined;
  /** Local state directory (embedded PostgreSQL lives in `<dataDir>/postgres`). @default ".nexusflow" */
  dataDir?: string;
  /** Pool size of the hot-path connection pool. @default 10 */
  poolSize?: number;
  /**
   * Apply pending database migrations at start (under the migrate lock, as `migrate` does), so a
   * single process needs no separate step. False (MIGRATE_ON_START=false, where a deployment runs
   * `migrate` before the scheduler) applies nothing and fails start() with SchemaNotCurrentError,
   * naming the pending migrations, when the schema is behind this build. @default true
   */
  migrateOnStart?: boolean | undefined;
  /** Heartbeat interval told to executors. @default 2000 */
  heartbeatIntervalMs?: number;
  /** Session timeout (and lease grace period). @default 10000 */
  sessionTimeoutMs?: number;
  /** The time waited that is worth one step priority level (ageing). @default 10000 */
  priorityAgeingMs?: number | undefined;
  /**
   * Verifies bearer tokens: every call then needs a token with the scope its RPC requires
   * (executors: `executor`; reflection is public). Undefined lets every call in.
   * @default undefined
   */
  auth?: TokenVerifier | undefined;
  /**
   * Where executors store logs, files and offloaded outputs: read by ArtifactService and by the
   * engine (claim checks). The caller owns it (main.ts builds it with `createArtifactStore`).
   * @default a filesystem store under `<dataDir>/artifacts`
   */
  artifacts?: ArtifactStore | undefined;
  /**
   * How long a StartRun idempotency key names its run; after that the same key starts a new run.
   * @default 86400000 (24 hours)
   */
  idempotencyKeyRetentionMs?: number | undefined;
  /**
   * Finished runs that ended longer ago than this are deleted with their rows and artifacts
   * (see persistence/retention.ts); 0 keeps every run. @default 2592000000 (30 days)
   */
  runRetentionMs?: number | undefined;
  /** Time between two purges of old runs (and of old events). @default 60000 */
  runRetentionIntervalMs?: number | undefined;
  /**
   * Events published longer ago than this are deleted with their matches, except those with a
   * match whose run is still to start (triggers/event-retention.ts); 0 keeps every event.
   * @default 604800000 (7 days)
   */
  eventRetentionMs?: number | undefined;
  /**
   * Export each run (its GetRun view as JSON) to `exports/{yyyy}/{mm}/{dd}/{run_id}.json` in the
   * artifact store before deleting it. @default false
   */
  exportRunsBeforeDelete?: boolean | undefined;
  /** Lifecycle-event publishing (the outbox relay); undefined runs no relay. */
  events?: EventsOptions | undefined;
  /**
   * The Kafka event source: each record of its topics is published as an event
   * (triggers/kafka-source.ts). @default undefined (none)
   */
  eventSource?: Omit<KafkaEventSourceOptions, "sink" | "log"> | undefined;
  /**
   * The installation's partition count (PARTITIONS, docs/replicas.md): written by the first
   * scheduler of a new database, fixed from then on; another count refuses to start.
   * @default the stored count, or 16 for a new database
   */
  partitions?: number | undefined;
  /** How long a partition lease holds after its renewal (database time). @default 5000 */
  partitionLeaseMs?: number | undefined;
  /**
   * In a cluster, how often the rate limit pauses other replicas stored are read even without a
   * notification (one lost: a failed NOTIFY is only logged). @default 60000
   */
  rateLimitPauseReadMs?: number | undefined;
  /**
   * Share the database with other live replicas (SCHEDULER_CLUSTER, docs/replicas.md): no
   * one-per-database lock; this replica holds its share of the partitions (all of them while it is
   * alone) and hands them over when others join. @default false (one scheduler per database)
   */
  cluster?: boolean | undefined;
  /**
   * The address other replicas and executors reach this one at (written in `replicas`).
   * @default the address it listens on
   */
  advertiseAddress?: string | undefined;
  /**
   * The token this replica presents on calls it makes on its own to another replica (an overlap
   * policy ending a run held elsewhere), when the installation checks tokens (SCHEDULER_TOKEN or
   * SCHEDULER_TOKEN_FILE). @default none: such calls are refused with authentication on
   */
  peerToken?: (() => Promise<string | undefined>) | undefined;
  /**
   * Called when the scheduler stopped itself because it lost the database to another scheduler
   * (its lock session was lost and another scheduler took the lock meanwhile). Partitions taken by
   * another replica do not stop it: their runs leave memory, the others go on.
   * @default none
   */
  onFatal?: ((error: SchedulerLockedError) => void) | undefined;
  /**
   * Registry to record the scheduler's metrics on (metrics/: runs, tasks, commits, sessions,
   * queues, outbox, gRPC calls). @default undefined (no metrics)
   */
  metrics?: Registry | undefined;
  /**
   * Where to serve `metrics` at `/metrics` (METRICS_HOST, METRICS_PORT); a port set explicitly
   * that is taken fails start() with MetricsListenError. @default undefined (not served)
   */
  metricsEndpoint?: MetricsConfig | undefined;
  /**
   * Where `/healthz` and `/readyz` are served (serve.ts: the configuration's `probes`): on the
   * metrics endpoint, or on a port of their own (HEALTH_PORT), which is served even without
   * `metrics`. @default undefined (on the metrics endpoint, when there is one)
   */
  probesEndpoint?: ProbesConfig | undefined;
  /** When a run that only waits leaves memory, and how it is woken (engine/parking.ts). @default its defaults */
  parking?: ParkingOptions | undefined;
  log: Logger;
}

/** Scheduler lifecycle. */
export type SchedulerState = "IDLE" | "STARTING" | "RUNNING" | "STOPPING" | "STOPPED";

/** The scheduler service. */
export class Scheduler {
  private stateValue: SchedulerState = "IDLE";
  private embedded: EmbeddedDatabase | undefined;
  private lock: SchedulerLock | undefined;
  private leases: PartitionLeases | undefined;
  private db: Database | undefined;
  private router: ReplicaRouter | undefined;
  private engineValue: Engine | undefined;
  private engineStore: PostgresEngineStore | undefined;
  private relay: OutboxRelay | undefined;
  private eventSourceValue: KafkaEventSource | undefined;
  private retentionValue: RunRetention | undefined;
  private eventRetentionValue: EventRetention | undefined;
  private rateLimitPurgeValue: RateLimitPurge | undefined;
  private coordinator: Coordinator | undefined;
  private notifications: ClusterNotifications | undefined;
  private pauseReadTimer: NodeJS.Timeout | undefined;
  private fireLoop: FireLoop | undefined;
  private matchLoop: MatchLoop | undefined;
  private waitLoop: WaitMatchLoop | undefined;
  private waitScan: EventWaitScan | undefined;
  private server: grpc.Server | undefined;
  private ops: OpsEndpoints | undefined;
  private addressValue = "";

  constructor(private readonly options: SchedulerOptions) {}

  /** Current state. */
  get state(): SchedulerState {
    return this.stateValue;
  }

  /** host:port it listens on, once running. */
  get address(): string {
    return this.addressValue;
  }

  /** The group-commit writer's statistics (for the benchmark and metrics). */
  get writerStats(): PostgresEngineStore["writer"]["stats"] {
    if (this.engineStore === undefined) throw new Error("the scheduler is not started");
    return this.engineStore.writer.stats;
  }

  /** The scrape URL of the metrics endpoint, once running with one. */
  get metricsUrl(): string | undefined {
    return this.ops?.metrics?.url;
  }

  /** Base URL of `/healthz` and `/readyz` (e.g. "http://127.0.0.1:9464"), once running with one. */
  get probesUrl(): string | undefined {
    return (this.ops?.probes ?? this.ops?.metrics)?.url.replace(/\/metrics$/, "");
  }

  /** The partition leases of this replica (for tests and `nexusflow cluster`). */
  get partitions(): PartitionLeases {
    if (this.leases === undefined) throw new Error("the scheduler is not started");
    return this.leases;
  }

  /** The router to other replicas, in cluster mode (for tests, and to cancel runs held elsewhere). */
  get replicaRouter(): ReplicaRouter | undefined {
    return this.router;
  }

  /** The engine (for tests and metrics). */
  get engine(): Engine {
    if (this.engineValue === undefined) throw new Error("the scheduler is not started");
    return this.engineValue;
  }

  /** The Kafka event source, when one is configured (for tests). */
  get eventSource(): KafkaEventSource | undefined {
    return this.eventSourceValue;
  }

  /** The schedules' fire loop (for tests and metrics). */
  get schedules(): FireLoop {
    if (this.fireLoop === undefined) throw new Error("the scheduler is not started");
    return this.fireLoop;
  }

  /** The event retention (for tests and metrics). */
  get eventRetention(): EventRetention {
    if (this.eventRetentionValue === undefined) throw new Error("the scheduler is not started");
    return this.eventRetentionValue;
  }

  /** The purge of full rate limit buckets' rows (for tests). */
  get rateLimitPurge(): RateLimitPurge {
    if (this.rateLimitPurgeValue === undefined) throw new Error("the scheduler is not started");
    return this.rateLimitPurgeValue;
  }

  /** The run retention (for tests and metrics). */
  get retention(): RunRetention {
    if (this.retentionValue === undefined) throw new Error("the scheduler is not started");
    return this.retentionValue;
  }

  /**
   * Takes the database (one scheduler per database: SchedulerLockedError when another holds it),
   * connects, recovers, and starts serving.
   */
  async start(): Promise<string> {
    if (this.stateValue !== "IDLE") throw new Error(`cannot start a scheduler that is ${this.stateValue}`);
    this.stateValue = "STARTING";
    // The restart begins now: recovered leases expire one session timeout after it.
    const restartedAt = performance.now();
    const log = this.options.log;
    log.info("scheduler starting");
    try {
      let url = this.options.databaseUrl;
      if (url === undefined) {
        this.embedded = await startEmbeddedPostgres({
          dir: `${this.options.dataDir ?? ".nexusflow"}/postgres`,
          log,
        });
        url = this.embedded.localUrl;
        log.info({ port: this.embedded.port }, "embedded PostgreSQL started");
      }
      // Before migrations and recovery: a second scheduler must change nothing. Replicas of a
      // cluster share the database: the partitions' leases and the fence keep them apart.
      if (this.options.cluster !== true)
        this.lock = await acquireSchedulerLock({
          url,
          log,
          onLost: (error) => {
            const fatal = (): void => this.options.onFatal?.(error);
            this.stop().then(fatal, fatal);
          },
        });
      if (this.options.migrateOnStart ?? true) await applyMigrations(url, log);
      else {
        const pending = await pendingMigrations(url);
        if (pending.length > 0) throw new SchemaNotCurrentError(pending);
      }
      this.db = await openDatabase({ url, poolSize: this.options.poolSize ?? 10, log, migrate: false });
      // Before recovery writes anything: every group commit is fenced by these leases. Holding the
      // scheduler lock, this is the only live replica: it takes every partition at once. A
      // replica of a cluster takes its share of those nobody holds.
      this.leases = new PartitionLeases({
        url,
        log,
        sole: this.options.cluster !== true,
        partitions: this.options.partitions,
        ...(this.options.partitionLeaseMs === undefined ? {} : { leaseMs: this.options.partitionLeaseMs }),
        onLost: (partitions) => this.lostPartitions(partitions),
        // Runs in memory follow the partitions held (engine/partition-load.ts).
        onTaken: (partitions) => void this.engineValue?.partitions.load(partitions).then(() => this.loaded()),
        beforeRelease: (partitions) => this.engineValue?.partitions.release(partitions) ?? Promise.resolve(),
      });
      const leases = this.leases;
      await this.leases.start();
      // The default store is only read here; its folder appears when an executor first writes.
      const store =
        this.options.artifacts ??
        new FilesystemArtifactStore({ root: `${this.options.dataDir ?? ".nexusflow"}/artifacts` });
      this.engineStore = new PostgresEngineStore({
        db: this.db,
        log,
        fence: leases,
        // A commit refused for runs of partitions not held (lost meanwhile): they leave memory too.
        onFenced: (_runIds, error) => this.lostPartitions(error.partitions),
      });
      this.engineValue = new Engine({
        store: this.engineStore,
        // A version registered as the latest reconciles the schedules its definition declares.
        definitions: new Definitions(
          new PostgresDefinitionStore(
            this.db,
            declaredScheduleHooks({ log, wake: () => this.wakeSchedules() }),
          ),
          log,
        ),
        log,
        restartedAt,
        // Runs that only wait leave memory (engine/parking.ts).
        parking: { ...this.options.parking, store: new PostgresParkedRuns(this.db.pool, leases) },
        partitions: leases,
        resolveOutput: (ref) => resolveOutputRef(store, ref),
        ...(this.options.heartbeatIntervalMs === undefined
          ? {}
          : { heartbeatIntervalMs: this.options.heartbeatIntervalMs }),
        ...(this.options.sessionTimeoutMs === undefined
          ? {}
          : { sessionTimeoutMs: this.options.sessionTimeoutMs }),
        ...(this.options.idempotencyKeyRetentionMs === undefined
          ? {}
          : { idempotencyKeyRetentionMs: this.options.idempotencyKeyRetentionMs }),
        ...(this.options.priorityAgeingMs === undefined
          ? {}
          : { priorityAgeingMs: this.options.priorityAgeingMs }),
        // In a cluster every replica takes a pause or resume stored by another.
        ...(this.options.cluster === true
          ? { rateLimitPaused: () => this.announce(RATE_LIMITS_CHANNEL) }
          : {}),
      });
      await this.engineValue.start();
      const engine = this.engineValue;
      const runStore = new RunStore(this.db);
      const pool = this.db.pool;
      const cluster = this.options.cluster === true;
      const schedules = new ScheduleStore(pool);
      const fireStore = new FireStore(pool);
      const fires = new FireStarter(fireStore, engine, log);
      const events = new EventStore(pool);
      const matchStarter = new MatchStarter(events, engine, log);
      // Waits for an event: wait matches a crash left PENDING are applied by the loop's first pass.
      // In a cluster, each replica applies the matches of its own runs, and matches the events any
      // replica stores against its runs' waits (triggers/wait-scan.ts).
      const waitMatches = new WaitMatchStore(pool, cluster ? leases : undefined);
      const waitLoop = new WaitMatchLoop({ store: waitMatches, engine: engine.waits, log });
      this.waitLoop = waitLoop;
      waitLoop.start();
      if (cluster) {
        this.waitScan = new EventWaitScan({ pool, engine: engine.waits, store: waitMatches, log });
        this.waitScan.start();
      }
      const waits = { engine: engine.waits, store: waitMatches, log, wake: () => waitLoop.wake() };
      if (this.options.events !== undefined) {
        // In a cluster the coordinator's relay publishes, marks fenced (events/relay.ts `coordinated`).
        this.relay = createOutboxRelay(
          pool,
          log,
          this.options.events,
          cluster ? { coordinated: true, refused: (e) => this.coordinator?.refused(e) } : {},
        );
        this.relay.start();
        const relay = this.relay;
        this.engineValue.onEventsCommitted(() => relay.wake());
      }
      // The jobs that work on the whole database run on one replica: the one holding partition 0
      // (cluster/coordinator.ts); a sole replica always. Each term starts new instances.
      this.coordinator = new Coordinator({
        leases,
        log,
        sole: !cluster,
        roles: coordinatorRoles({
          options: this.options,
          engine,
          pool,
          store,
          runStore,
          schedules,
          fireStore,
          fires,
          events,
          matchStarter,
          relay: this.relay,
          refused: (e) => this.coordinator?.refused(e),
          cancelElsewhere: (runId, reason, compensate) => this.cancelElsewhere(runId, reason, compensate),
          started: {
            runRetention: (r) => (this.retentionValue = r),
            fireLoop: (l) => (this.fireLoop = l),
            matchLoop: (l) => (this.matchLoop = l),
            eventRetention: (r) => (this.eventRetentionValue = r),
            rateLimitPurge: (p) => (this.rateLimitPurgeValue = p),
          },
        }),
      });
      if (cluster) {
        this.notifications = new ClusterNotifications({
          url,
          log,
          handlers: {
            [SCHEDULES_CHANNEL]: () => this.fireLoop?.wake(),
            [EVENTS_CHANNEL]: () => this.waitScan?.wake(),
            [RATE_LIMITS_CHANNEL]: () => this.syncRateLimitPauses(),
          },
        });
        await this.notifications.start();
        // A pause stored by another replica since recovery read the buckets, before listening.
        this.syncRateLimitPauses();
        this.pauseReadTimer = setInterval(
          () => this.syncRateLimitPauses(),
          this.options.rateLimitPauseReadMs ?? 60_000,
        );
        this.pauseReadTimer.unref();
      }
      this.coordinator.start();
      const registry = this.options.metrics;
      if (registry !== undefined)
        registerSchedulerMetrics(registry, engine, this.engineStore.writer, {
          pool: this.db.pool,
          relay: this.relay,
        });
      // PublishEvent and the Kafka event source publish alike, with one trigger index.
      const publishing: EventPublishDeps = {
        store: events,
        triggers: new TriggerIndex(this.db.pool, log),
        starter: matchStarter,
        // The coordinator's loop (on another replica in a cluster: its next pass).
        wake: () => this.matchLoop?.wake(),
        waits,
        ...(cluster ? { announce: () => this.announce(EVENTS_CHANNEL) } : {}),
      };
      if (this.options.eventSource !== undefined) {
        const source = new KafkaEventSource({
          ...this.options.eventSource,
          sink: {
            store: (draft) => storeEvent(publishing, draft),
            start: (e) => startEventMatches(publishing, e),
          },
          log,
        });
        this.eventSourceValue = source;
        source.start();
        if (registry !== undefined) registerEventSourceMetrics(registry, source);
      }
      const server = createGrpcServer({ auth: this.options.auth, registry, log });
      // A replica of a cluster forwards calls for runs another replica holds (cluster/replica-router.ts).
      if (this.options.cluster === true) {
        this.router = new ReplicaRouter({ pool: this.db.pool, leases, log });
        this.router.start();
      }
      server.addService(
        serviceDefinition(WorkflowService),
        workflowService(
          this.engineValue,
          runStore,
          this.router,
          this.options.runRetentionMs ?? DEFAULT_RUN_RETENTION_MS,
        ),
      );
      server.addService(
        executorServiceDefinition(),
        executorService(this.engineValue, log, {
          authenticated: this.options.auth !== undefined,
          replicaId: leases.replicaId,
        }),
      );
      server.addService(
        serviceDefinition(ScheduleService),
        scheduleService({
          store: schedules,
          fireStore,
          definitions: engine.definitions,
          fires,
          wake: () => this.wakeSchedules(),
        }),
      );
      server.addService(serviceDefinition(EventService), eventService(publishing));
      server.addService(
        serviceDefinition(ArtifactService),
        artifactService({ store, tasks: new PgTaskIndex(this.db.pool), log }),
      );
      server.addService(serviceDefinition(ClusterService), clusterService(engine));
      server.addService(serviceDefinition(RateLimitService), rateLimitService(engine.rateLimits));
      server.addService(
        serviceDefinition(ReplicaService),
        replicaService({
          replicaId: leases.replicaId,
          // Without cluster mode, executors stop asking on their refresh (ListReplicasResponse.sole).
          sole: this.options.cluster !== true,
          // Executors ask every few seconds: one read per 250 ms at most, whoever asks.
          view: sharedView(() => readClusterView(pool, leases.leaseMs), 250),
        }),
      );
      // Keep in step with the services added above and below: reflection lists exactly these.
      addReflection(server, [
        WorkflowService,
        ScheduleService,
        RateLimitService,
        EventService,
        ExecutorService,
        ArtifactService,
        ClusterService,
        ReplicaService,
        Health,
      ]);
      const ready = addSchedulerHealth(server, {
        running: () => this.stateValue === "RUNNING",
        pool: this.db.pool,
      });
      const host = this.options.host ?? "127.0.0.1";
      const port = await bindGrpcServer(server, host, this.options.port ?? 0);
      this.server = server;
      this.ops = await startOpsEndpoints({
        metrics: this.options.metricsEndpoint,
        probes:
          this.options.probesEndpoint ??
          (this.options.metricsEndpoint === undefined
            ? undefined
            : { ...this.options.metricsEndpoint, onMetricsPort: true }),
        registry,
        log,
        ready,
      });
      this.addressValue = `${host.includes(":") ? `[${host}]` : host}:${port}`;
      this.leases.setAddress(this.options.advertiseAddress ?? this.addressValue);
      this.stateValue = "RUNNING";
      log.info({ address: this.addressValue }, "scheduler listening");
      return this.addressValue;
    } catch (e) {
      await this.release();
      this.stateValue = "STOPPED";
      throw e;
    }
  }

  /**
   * A schedule changed (created, updated, resumed, triggered, declared): the fire loop looks again
   * now. In a cluster the coordinator may be another replica: it is told through NOTIFY.
   */
  private wakeSchedules(): void {
    this.fireLoop?.wake();
    if (this.coordinator?.leading !== true) this.announce(SCHEDULES_CHANNEL);
  }

  /**
   * In a cluster, tells every replica through NOTIFY on `channel` (a schedule changed: the
   * coordinator's fire loop; an event stored: every replica's wait scan). A lost notification
   * delays, never loses: the fire loop wakes at its next fire time, the scan at its next wake.
   */
  private announce(channel: string): void {
    const pool = this.db?.pool;
    if (this.options.cluster !== true || pool === undefined) return;
    ClusterNotifications.notify(pool, channel).catch((e: unknown) => {
      this.options.log.warn({ err: e, channel }, "could not notify the other replicas");
    });
  }

  /** Takes the rate limit pauses and resumes another replica stored (engine/rate-limit-admin.ts). */
  private syncRateLimitPauses(): void {
    const engine = this.engineValue;
    if (engine === undefined) return;
    engine.rateLimits.sync().then(
      (changed) => {
        if (changed > 0)
          this.options.log.info({ changed }, "took rate limit pauses stored by other replicas");
      },
      (e: unknown) =>
        this.options.log.warn(
          { err: e },
          "could not read the rate limit pauses other replicas stored; read again at the next notification",
        ),
    );
  }

  /** Ends a run another replica holds (a schedule's overlap policy) through its owner's CancelRun. */
  private async cancelElsewhere(runId: string, reason: string, compensate: boolean): Promise<void> {
    const router = this.router;
    if (router === undefined) throw new ApiError(Code.UNAVAILABLE, `no live replica holds run ${runId} now`);
    // This replica's own call: its token, when the installation checks them.
    const token = await this.options.peerToken?.();
    const metadata = new grpc.Metadata();
    if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
    // Undefined: held here after all (the partition came back meanwhile).
    if ((await router.cancelRun(runId, reason, { compensate, metadata })) === undefined)
      await this.engine.cancelRun(runId, reason, compensate);
  }

  /** Partitions taken have their runs loaded: their waits look at the recent events again. */
  private loaded(): void {
    this.waitScan?.rewind();
    this.waitLoop?.wake();
  }

  /**
   * Partitions this replica held went to another replica (its renewals stopped long enough, or a
   * commit was refused by the fence): their runs leave memory and their executors are told to
   * stop their leases; the other partitions' runs go on (engine/partition-load.ts).
   */
  private lostPartitions(partitions: readonly number[]): void {
    this.engineValue?.partitions.unload(partitions, "its partition moved to another scheduler replica");
  }

  /** Stops serving, commits what is pending, closes the database (and the embedded server). */
  async stop(): Promise<void> {
    if (this.stateValue === "STOPPED" || this.stateValue === "STOPPING") return;
    this.stateValue = "STOPPING";
    await this.release();
    this.stateValue = "STOPPED";
    this.options.log.info("scheduler stopped");
  }

  private async release(): Promise<void> {
    // First: calls are no longer forwarded, and watches end (their callers go on elsewhere).
    this.router?.stop();
    this.router = undefined;
    // Its batch in progress ends and the offsets of the records it stored are committed.
    await this.eventSourceValue?.stop();
    this.eventSourceValue = undefined;
    // First: no fire starts a run while the engine stops (a fire in progress finishes); the other
    // singletons (match loop, retention) stop with it.
    await this.coordinator?.stop();
    this.coordinator = undefined;
    this.fireLoop = undefined;
    this.matchLoop = undefined;
    clearInterval(this.pauseReadTimer);
    this.pauseReadTimer = undefined;
    await this.notifications?.stop();
    this.notifications = undefined;
    await this.waitScan?.stop();
    this.waitScan = undefined;
    await this.waitLoop?.stop();
    this.waitLoop = undefined;
    await this.ops?.close();
    this.ops = undefined;
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) {
      await new Promise<void>((resolve) => {
        let force: NodeJS.Timeout | undefined;
        let done = false;
        server.tryShutdown(() => {
          done = true;
          clearTimeout(force);
          resolve();
        });
        // Sessions are infinite streams: end them so tryShutdown can finish. Calls waiting for a
        // commit are answered once the engine stopped (committed, or UNAVAILABLE: retry); what
        // is still open a grace later is cut (a caller then sees CANCELLED, not knowing).
        void (this.engineValue?.stop() ?? Promise.resolve()).finally(() => {
          if (done) return;
          force = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, FORCE_SHUTDOWN_GRACE_MS);
        });
      });
    }
    await this.engineValue?.stop();
    await this.relay?.stop();
    this.relay = undefined;
    // After the last commit: hands every partition over at once.
    await this.leases?.stop();
    this.leases = undefined;
    await this.db?.close();
    this.db = undefined;
    // Last: a successor may start once everything of this one is committed and closed.
    await this.lock?.release();
    this.lock = undefined;
    await this.embedded?.stop();
    this.embedded = undefined;
  }
}
