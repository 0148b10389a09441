/**
 * Gauges of the scheduler's live state, read at scrape time (nothing on the engine's path): runs
 * active, executor sessions, leases in flight, free slots and ready tasks by task type, the age
 * of the oldest ready task, ready tasks, leases and the oldest ready task's age by fair-share
 * tenant (the most loaded, the rest summed), the writer's health, the outbox lag and the relay's
 * publish failures.
 * Everything the engine is asked goes through {@link LiveState}, the one place to follow when the
 * engine's read API changes.
 */
import { Counter, Gauge, type Registry } from "@nexusflow/common/metrics";
import type pg from "pg";
import type { Engine } from "../engine/engine.js";
import { readOutboxLag } from "../events/outbox-store.js";
import type { OutboxRelay } from "../events/relay.js";

/** An executor session as the gauges see it. */
export interface LiveSession {
  readonly types: ReadonlySet<string>;
  readonly credit: number;
  readonly draining: boolean;
  readonly leases: { readonly size: number };
}

/** What the gauges read from the engine. */
export interface LiveState {
  activeRuns(): number;
  sessions(): Iterable<LiveSession>;
  /** Task types with a ready queue (possibly empty). */
  readyTypes(): Iterable<string>;
  /** The ready tasks of `type`, oldest first. */
  ready(type: string): readonly { readonly queuedAt: Date | null }[];
  /** False while commits fail. */
  writerHealthy(): boolean;
  /** Per rate limit name: tasks waiting for its tokens or pauses, and its keys paused now. */
  rateLimits?(): Iterable<{ readonly name: string; readonly waiting: number; readonly paused: number }>;
  /**
   * Per task type, the fair-share tenants with the most ready tasks (a bounded number, the rest
   * summed under one tenant label) with their ready tasks and leases.
   */
  fairShares?(): Iterable<{
    readonly type: string;
    readonly tenant: string;
    readonly ready: number;
    readonly leased: number;
    /** When the tenant's oldest ready task was queued (ms since the epoch); null: none ready. */
    readonly oldest?: number | null;
  }>;
  /** Runs parked (left memory) and loaded back since start (engine/parking.ts). */
  parking?(): { readonly parked: number; readonly loaded: number } | undefined;
}

/** {@link LiveState} over the engine's public read API (stats(), sessions(), waitingTasks(), writerHealthy). */
export function engineLiveState(engine: Engine): LiveState {
  return {
    activeRuns: () => engine.stats().activeRuns,
    sessions: () => engine.sessions(),
    readyTypes: () => Object.keys(engine.stats().queued),
    ready: (type) => engine.waitingTasks(type),
    writerHealthy: () => engine.writerHealthy,
    rateLimits: () => engine.rateLimits.stats(),
    fairShares: () => engine.fairShareStats(),
    parking: () => engine.parking?.stats,
  };
}

/** Registers the live gauges on `registry`. */
export function registerLiveMetrics(
  registry: Registry,
  live: LiveState,
  options: { pool?: pg.Pool | undefined; relay?: OutboxRelay | undefined },
): void {
  const registers = [registry];
  const rateLimits = live.rateLimits?.bind(live);
  if (rateLimits !== undefined) {
    // One pass over the buckets sets both: in the collect of the first (registration order).
    const waiting = new Gauge({
      name: "nexusflow_scheduler_rate_limit_waiting_tasks",
      help: "Tasks waiting in this scheduler for a rate limit's tokens or for its paused key to resume, by limit.",
      labelNames: ["limit"],
      registers,
      collect() {
        waiting.reset();
        paused.reset();
        for (const r of rateLimits()) {
          waiting.set({ limit: r.name }, r.waiting);
          paused.set({ limit: r.name }, r.paused);
        }
      },
    });
    const paused = new Gauge({
      name: "nexusflow_scheduler_rate_limit_paused_keys",
      help: "Keys of a rate limit paused now (by a handler, an HTTP Retry-After or an operator), by limit.",
      labelNames: ["limit"],
      registers,
    });
  }
  const fairShares = live.fairShares?.bind(live);
  if (fairShares !== undefined) {
    // One pass over the trees sets both, in the collect of the first (registration order).
    const fairReady = new Gauge({
      name: "nexusflow_scheduler_fair_share_ready_tasks",
      help: 'Ready tasks by task type and fair-share tenant: the 20 tenants with the most per type, the rest summed as tenant="(other)"; tenant="" is the runs without fairness.',
      labelNames: ["task_type", "tenant"],
      registers,
      collect() {
        fairReady.reset();
        fairLeased.reset();
        fairOldest.reset();
        const now = Date.now();
        for (const s of fairShares()) {
          const labels = { task_type: s.type, tenant: s.tenant };
          fairReady.set(labels, s.ready);
          fairLeased.set(labels, s.leased);
          const oldest = s.oldest ?? null;
          fairOldest.set(labels, oldest === null ? 0 : Math.max(0, now - oldest) / 1000);
        }
      },
    });
    const fairLeased = new Gauge({
      name: "nexusflow_scheduler_fair_share_leases",
      help: "Leases held (tasks leased or running) by task type and fair-share tenant, for the tenants of nexusflow_scheduler_fair_share_ready_tasks.",
      labelNames: ["task_type", "tenant"],
      registers,
    });
    const fairOldest = new Gauge({
      name: "nexusflow_scheduler_fair_share_oldest_ready_age_seconds",
      help: "How long the oldest ready task of a task type and fair-share tenant has waited for a lease (0 when none waits), for the tenants of nexusflow_scheduler_fair_share_ready_tasks.",
      labelNames: ["task_type", "tenant"],
      registers,
    });
  }
  if (live.parking !== undefined) {
    const parking = (): { readonly parked: number; readonly loaded: number } | undefined => live.parking?.();
    new Counter({
      name: "nexusflow_scheduler_runs_parked_total",
      help: "Runs that only wait (signals, events, sleeps, child runs) moved out of the scheduler's memory, their rows in the database.",
      registers,
      collect() {
        this.reset();
        this.inc(parking()?.parked ?? 0);
      },
    });
    new Counter({
      name: "nexusflow_scheduler_runs_unparked_total",
      help: "Parked runs loaded back into memory because something happened to them (signal, event, due time, child end, cancel, read).",
      registers,
      collect() {
        this.reset();
        this.inc(parking()?.loaded ?? 0);
      },
    });
  }
  new Gauge({
    name: "nexusflow_scheduler_runs_active",
    help: "Runs not yet in a final state held in the scheduler's memory (parked runs, out of memory, are not counted).",
    registers,
    collect() {
      this.set(live.activeRuns());
    },
  });
  new Gauge({
    name: "nexusflow_scheduler_writer_healthy",
    help: "1 while the group-commit writer's commits succeed, 0 while they fail (database unreachable).",
    registers,
    collect() {
      this.set(live.writerHealthy() ? 1 : 0);
    },
  });
  // One pass over sessions and queues sets this group of gauges: it runs in the collect of the
  // first of them, which prom-client collects before the others (registration order).
  const sessions = new Gauge({
    name: "nexusflow_scheduler_executor_sessions",
    help: "Executor sessions attached to this scheduler.",
    registers,
    collect: () => collectSessions(),
  });
  const leases = new Gauge({
    name: "nexusflow_scheduler_leases_in_flight",
    help: "Leases held by attached executor sessions (tasks leased or running).",
    registers,
  });
  const executors = new Gauge({
    name: "nexusflow_scheduler_executors",
    help: "Attached executor sessions that advertise a task type (0 for a type with ready tasks and none), by task type.",
    labelNames: ["task_type"] as const,
    registers,
  });
  const freeSlots = new Gauge({
    name: "nexusflow_scheduler_free_slots",
    help: "Leases attached executors can still take (credit of sessions not draining) for a task type, by task type.",
    labelNames: ["task_type"] as const,
    registers,
  });
  const ready = new Gauge({
    name: "nexusflow_scheduler_tasks_ready",
    help: "Tasks ready but not leased (queue depth), by task type.",
    labelNames: ["task_type"] as const,
    registers,
  });
  const oldest = new Gauge({
    name: "nexusflow_scheduler_tasks_ready_oldest_age_seconds",
    help: "How long the oldest ready task of a type has waited for a lease, by task type (0 when none waits).",
    labelNames: ["task_type"] as const,
    registers,
  });
  const collectSessions = (): void => {
    let count = 0;
    let leased = 0;
    const byType = new Map<string, { executors: number; free: number }>();
    for (const s of live.sessions()) {
      count++;
      leased += s.leases.size;
      for (const type of s.types) {
        const t = byType.get(type) ?? { executors: 0, free: 0 };
        t.executors++;
        if (!s.draining) t.free += Math.max(0, s.credit);
        byType.set(type, t);
      }
    }
    sessions.set(count);
    leases.set(leased);
    executors.reset();
    freeSlots.reset();
    ready.reset();
    oldest.reset();
    const now = Date.now();
    for (const type of live.readyTypes()) {
      const waiting = live.ready(type);
      ready.labels(type).set(waiting.length);
      const first = waiting[0]?.queuedAt;
      oldest
        .labels(type)
        .set(first === null || first === undefined ? 0 : Math.max(0, now - first.getTime()) / 1000);
      if (waiting.length > 0 && !byType.has(type)) byType.set(type, { executors: 0, free: 0 });
    }
    for (const [type, t] of byType) {
      executors.labels(type).set(t.executors);
      freeSlots.labels(type).set(t.free);
    }
  };
  const { pool, relay } = options;
  if (pool !== undefined) {
    const rows = new Gauge({
      name: "nexusflow_outbox_pending_rows",
      help: "Outbox rows not yet published (a row is the events of one commit).",
      registers,
      collect: () => refresh(),
    });
    const age = new Gauge({
      name: "nexusflow_outbox_oldest_pending_age_seconds",
      help: "Age of the oldest outbox row not yet published (0 when none).",
      registers,
      collect: () => refresh(),
    });
    // One query per scrape for both gauges, each of which waits for it.
    let reading: Promise<void> | undefined;
    const refresh = (): Promise<void> =>
      (reading ??= readOutboxLag(pool)
        .then(
          (lag) => {
            rows.set(lag.rows);
            age.set(lag.oldestSeconds);
          },
          () => {
            // The database is unreachable: the writer's health says so; the lag is unknown.
            rows.set(Number.NaN);
            age.set(Number.NaN);
          },
        )
        .finally(() => {
          reading = undefined;
        }));
  }
  if (relay !== undefined) {
    let seen = 0;
    new Counter({
      name: "nexusflow_kafka_publish_errors_total",
      help: "Failed attempts to publish outbox events to the broker (each batch is retried until it succeeds).",
      registers,
      collect() {
        const n = relay.stats.publishFailures;
        if (n > seen) this.inc(n - seen);
        seen = n;
      },
    });
    let published = 0;
    new Counter({
      name: "nexusflow_outbox_published_events_total",
      help: "Lifecycle events the relay published (acknowledged by the broker) and marked.",
      registers,
      collect() {
        const n = relay.stats.published;
        if (n > published) this.inc(n - published);
        published = n;
      },
    });
  }
}
