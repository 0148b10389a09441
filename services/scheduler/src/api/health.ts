/**
 * The scheduler's health: `grpc.health.v1.Health` on its gRPC port (for grpcurl and Kubernetes'
 * gRPC probes) and the readiness check that `/readyz` on the metrics port answers with too. Ready
 * means the scheduler has recovered its state and serves (state RUNNING), and PostgreSQL answers.
 */
import type * as grpc from "@grpc/grpc-js";
import { type ReadinessCheck, addHealthService, sharedReadiness } from "@nexusflow/common";
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
import type pg from "pg";

/** How long the database may take to answer `SELECT 1` before the scheduler counts as not ready. */
const DATABASE_CHECK_TIMEOUT_MS = 2000;

/** What the readiness check looks at. */
export interface SchedulerHealthOptions {
  /** True once the scheduler has recovered and serves, false while starting or stopping. */
  running: () => boolean;
  /** The hot-path pool: readiness asks it for a connection and a `SELECT 1`. */
  pool: pg.Pool;
}

/**
 * The scheduler's readiness: running, and PostgreSQL answering within 2 s. Whether it runs is read
 * at every call; the database's answer is shared by all callers for a second (sharedReadiness): the
 * health service needs no token, and its `SELECT 1` takes a connection of the pool the group
 * commits use, so a flood of Check calls must not take them all.
 */
export function schedulerReadiness(options: SchedulerHealthOptions): ReadinessCheck {
  const database = sharedReadiness(() => databaseAnswers(options.pool));
  return async () => {
    if (!options.running()) return "the scheduler is not running (starting, recovering or stopping)";
    return database();
  };
}

/** `SELECT 1` on `pool` within 2 s: undefined, else why not. */
async function databaseAnswers(pool: pg.Pool): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve("PostgreSQL did not answer within 2 s"), DATABASE_CHECK_TIMEOUT_MS);
  });
  const query = pool.query("SELECT 1").then(
    () => undefined,
    (e: unknown) => `PostgreSQL: ${e instanceof Error ? e.message : String(e)}`,
  );
  try {
    return await Promise.race([query, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Adds `grpc.health.v1.Health` to the scheduler's server and returns its readiness check. */
export function addSchedulerHealth(server: grpc.Server, options: SchedulerHealthOptions): ReadinessCheck {
  const ready = schedulerReadiness(options);
  addHealthService(server, {
    ready,
    services: [
      WorkflowService.typeName,
      ExecutorService.typeName,
      ArtifactService.typeName,
      ClusterService.typeName,
      ScheduleService.typeName,
      RateLimitService.typeName,
      EventService.typeName,
      ReplicaService.typeName,
    ],
  });
  return ready;
}
