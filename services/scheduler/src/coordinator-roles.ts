/**
 * The singletons the coordinator starts for each of its terms (cluster/coordinator.ts), in start
 * order: run retention, the schedules' fire loop, the event match loop, event retention, the rate
 * limit purge (rows of buckets full again), and in a
 * cluster the outbox relay's turn (it stands by while this replica is not the coordinator; its
 * stop awaits the batch in progress). Each term makes new instances; `started` hands each to the
 * scheduler (its getters, its wake-ups).
 */
import { toJson } from "@bufbuild/protobuf";
import type { ArtifactStore } from "@nexusflow/common/artifacts";
import { RunSchema } from "@nexusflow/gen";
import type pg from "pg";
import { runDetail } from "./api/convert.js";
import type { CoordinatorRole } from "./cluster/coordinator.js";
import type { Engine } from "./engine/engine.js";
import type { OutboxRelay } from "./events/index.js";
import { RateLimitPurge } from "./persistence/rate-limit-purge.js";
import { RunRetention } from "./persistence/retention.js";
import type { RunStore } from "./persistence/run-store.js";
import { FireLoop } from "./schedules/fire-loop.js";
import type { FireStore } from "./schedules/fire-store.js";
import type { FireStarter } from "./schedules/fires.js";
import type { ScheduleStore } from "./schedules/store.js";
import type { SchedulerOptions } from "./scheduler.js";
import { EventRetention } from "./triggers/event-retention.js";
import type { EventStore } from "./triggers/event-store.js";
import { MatchLoop, type MatchStarter } from "./triggers/match-loop.js";

/**
 * In a cluster, how old a STARTING fire or event match must be before the coordinator drives it
 * as a leftover: the replica that wrote it drives it (its keyed start is in its memory only).
 */
const LEFTOVER_GRACE_MS = 30_000;

/** What the roles are made of. */
export interface CoordinatorRolesDeps {
  options: Pick<
    SchedulerOptions,
    | "log"
    | "cluster"
    | "exportRunsBeforeDelete"
    | "runRetentionMs"
    | "runRetentionIntervalMs"
    | "eventRetentionMs"
  >;
  engine: Engine;
  pool: pg.Pool;
  store: ArtifactStore;
  runStore: RunStore;
  schedules: ScheduleStore;
  fireStore: FireStore;
  fires: FireStarter;
  events: EventStore;
  matchStarter: MatchStarter;
  relay: OutboxRelay | undefined;
  /** A fenced write of a singleton was refused (NF001): the term is over. */
  refused: (e: unknown) => void;
  /** Ends a run another replica holds (an overlap policy). */
  cancelElsewhere: (runId: string, reason: string, compensate: boolean) => Promise<void>;
  /** Each instance as its term starts it. */
  started: {
    runRetention: (r: RunRetention) => void;
    fireLoop: (l: FireLoop) => void;
    matchLoop: (l: MatchLoop) => void;
    eventRetention: (r: EventRetention) => void;
    rateLimitPurge: (p: RateLimitPurge) => void;
  };
}

/** See the module comment. */
export function coordinatorRoles(deps: CoordinatorRolesDeps): CoordinatorRole[] {
  const { options, engine, started } = deps;
  const { log } = options;
  const roles: CoordinatorRole[] = [
    {
      name: "run retention",
      start: () => {
        const retention = new RunRetention({
          pool: deps.pool,
          store: deps.store,
          log,
          isActive: (runId) => engine.isActive(runId),
          exportRun:
            options.exportRunsBeforeDelete === true
              ? async (runId) => JSON.stringify(toJson(RunSchema, runDetail(await deps.runStore.get(runId))))
              : undefined,
          ...(options.runRetentionMs === undefined ? {} : { retentionMs: options.runRetentionMs }),
          ...(options.runRetentionIntervalMs === undefined
            ? {}
            : { intervalMs: options.runRetentionIntervalMs }),
        });
        started.runRetention(retention);
        retention.start();
        return retention;
      },
    },
    {
      name: "schedule fire loop",
      start: (fence) => {
        const loop = new FireLoop({
          store: deps.schedules,
          fireStore: deps.fireStore,
          engine,
          log,
          starter: deps.fires,
          ...(fence === undefined
            ? {}
            : {
                fence,
                refused: deps.refused,
                // Held and loaded: a run of a partition still loading is not in memory yet, and
                // would be taken for ended (its committed row says whether it is).
                ownsRun: (runId: string) => engine.partitions.loaded(runId),
                leftoverGraceMs: LEFTOVER_GRACE_MS,
                cancelElsewhere: deps.cancelElsewhere,
              }),
        });
        started.fireLoop(loop);
        loop.start();
        return loop;
      },
    },
    {
      // Events: matches a crash left STARTING are started by the loop's first pass.
      name: "event match loop",
      start: (fence) => {
        const loop = new MatchLoop({
          store: deps.events,
          starter: deps.matchStarter,
          log,
          ...(fence === undefined ? {} : { leftoverGraceMs: LEFTOVER_GRACE_MS }),
        });
        started.matchLoop(loop);
        loop.start();
        return loop;
      },
    },
    {
      name: "event retention",
      start: () => {
        const retention = new EventRetention({
          pool: deps.pool,
          log,
          retentionMs: options.eventRetentionMs,
          intervalMs: options.runRetentionIntervalMs,
        });
        started.eventRetention(retention);
        retention.start();
        return retention;
      },
    },
    {
      name: "rate limit purge",
      start: () => {
        const purge = new RateLimitPurge({
          pool: deps.pool,
          log,
          intervalMs: options.runRetentionIntervalMs,
        });
        started.rateLimitPurge(purge);
        purge.start();
        return purge;
      },
    },
  ];
  const relay = deps.relay;
  if (options.cluster === true && relay !== undefined)
    roles.push({
      name: "outbox relay",
      start: (fence) => {
        if (fence !== undefined) relay.lead(fence);
        return { stop: () => relay.resign() };
      },
    });
  return roles;
}
