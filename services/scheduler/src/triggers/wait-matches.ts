/**
 * An event's matches of waiting steps (waits for an event, core/event-waits.ts), in PostgreSQL
 * (table `event_wait_matches`). They are stored with the event, in the statement that stores it
 * (event-store.ts insert), PENDING; then the engine ends each wait that still waits with the event
 * and, once that is committed, the match is settled from the step's row: SATISFIED when the step
 * succeeded with this event, WAIT_ENDED otherwise (it had timed out, been cancelled, or taken
 * another event first). A crash in between leaves matches PENDING: the loop's first pass after a
 * restart applies them, oldest event first, so a wait that several stored events matched takes
 * the first published.
 *
 * The loop: IDLE -> RUNNING -> STOPPING -> STOPPED (background/pass-loop.ts). It makes a pass at
 * once when started (after the engine's recovery), then whenever woken (a publish could not apply
 * its matches now), every `pollMs` while matches remain PENDING, and every `idleMs` otherwise.
 */
import type { Logger } from "@nexusflow/common";
import type pg from "pg";
import { BatchLoop } from "../background/batch-loop.js";
import type { StoredWaitEvent, WaitApplyOutcome, WaitMatch } from "../core/index.js";

/** Where a wait match is. */
export type WaitMatchStatus = "PENDING" | "SATISFIED" | "WAIT_ENDED";

/** A stored wait match. */
export interface WaitMatchRow extends WaitMatch {
  readonly eventId: string;
  readonly status: WaitMatchStatus;
}

/** A PENDING match with the event that applies it. */
export interface PendingWaitMatch extends WaitMatch {
  readonly event: StoredWaitEvent;
}

/** What applying needs of the engine (engine/waits.ts). */
export interface WaitApplier {
  applyEvent(
    event: StoredWaitEvent,
    matches: readonly Pick<WaitMatch, "taskRunId" | "runId">[],
  ): Promise<WaitApplyOutcome[]>;
}

/** The partitions whose runs' matches a replica applies (cluster/partition-leases.ts). */
export interface WaitMatchScope {
  readonly partitionCount: number;
  held(): readonly { partition: number }[];
}

/** Wait matches in PostgreSQL (rows written with their event by EventStore.insert). */
export class WaitMatchStore {
  /**
   * `scope`: the PENDING matches read are those of runs in the partitions held (a replica of a
   * cluster applies the matches of its own runs); undefined: every match.
   */
  constructor(
    private readonly pool: pg.Pool,
    private readonly scope?: WaitMatchScope,
  ) {}

  /**
   * Stores an event's matches PENDING unless stored already (by its publisher or an earlier scan:
   * wait-scan.ts); returns those it stored.
   */
  async insertPending(eventId: string, matches: readonly WaitMatch[]): Promise<WaitMatch[]> {
    if (matches.length === 0) return [];
    const { rows } = await this.pool.query<{ task_run_id: string }>(
      `INSERT INTO event_wait_matches (event_id, task_run_id, run_id, step_id, status, created_at)
       SELECT $1, x.task_run_id, x.run_id, x.step_id, 'PENDING', now()
       FROM unnest($2::uuid[], $3::uuid[], $4::text[]) AS x(task_run_id, run_id, step_id)
       ON CONFLICT (event_id, task_run_id) DO NOTHING
       RETURNING task_run_id`,
      [eventId, matches.map((m) => m.taskRunId), matches.map((m) => m.runId), matches.map((m) => m.stepId)],
    );
    const stored = new Set(rows.map((r) => r.task_run_id));
    return matches.filter((m) => stored.has(m.taskRunId));
  }

  /** An event's wait matches, by run and step. */
  async ofEvent(eventId: string): Promise<WaitMatchRow[]> {
    const { rows } = await this.pool.query<{
      task_run_id: string;
      run_id: string;
      step_id: string;
      status: WaitMatchStatus;
    }>(
      `SELECT task_run_id, run_id, step_id, status FROM event_wait_matches WHERE event_id = $1
       ORDER BY run_id, step_id`,
      [eventId],
    );
    return rows.map((r) => ({
      eventId,
      taskRunId: r.task_run_id,
      runId: r.run_id,
      stepId: r.step_id,
      status: r.status,
    }));
  }

  /** PENDING matches (of the runs in the scope), oldest event first, at most `limit`. */
  async pending(limit: number): Promise<PendingWaitMatch[]> {
    const scope = this.scope;
    const scoped = scope === undefined ? "" : " AND nexusflow_partition_of(m.run_id, $2) = ANY($3::int[])";
    const params = scope === undefined ? [] : [scope.partitionCount, scope.held().map((h) => h.partition)];
    const { rows } = await this.pool.query<{
      event_id: string;
      key: string;
      payload: unknown;
      created_at: Date;
      task_run_id: string;
      run_id: string;
      step_id: string;
    }>(
      `SELECT m.event_id, e.key, e.payload, e.created_at, m.task_run_id, m.run_id, m.step_id
       FROM event_wait_matches m JOIN events e ON e.event_id = m.event_id
       WHERE m.status = 'PENDING'${scoped}
       ORDER BY e.seq, m.task_run_id LIMIT $1`,
      [limit, ...params],
    );
    return rows.map((r) => ({
      taskRunId: r.task_run_id,
      runId: r.run_id,
      stepId: r.step_id,
      event: { eventId: r.event_id, key: r.key, payload: r.payload, publishTime: r.created_at },
    }));
  }

  /**
   * Settles PENDING matches from their steps' committed rows: SATISFIED when the step succeeded
   * with the match's event as its output, WAIT_ENDED otherwise. Call it only once the engine has
   * committed what it did with them.
   */
  async settle(eventId: string, taskRunIds: readonly string[]): Promise<void> {
    if (taskRunIds.length === 0) return;
    await this.pool.query(
      `UPDATE event_wait_matches m
       SET status = CASE WHEN t.status = 'SUCCEEDED' AND t.output->>'eventId' = m.event_id::text
                         THEN 'SATISFIED' ELSE 'WAIT_ENDED' END
       FROM unnest($2::uuid[]) AS x(task_run_id) LEFT JOIN task_runs t ON t.id = x.task_run_id
       WHERE m.event_id = $1 AND m.task_run_id = x.task_run_id AND m.status = 'PENDING'`,
      [eventId, taskRunIds],
    );
  }
}

/**
 * Applies an event's stored matches (the engine ends the waits that still wait, and commits),
 * then settles them. Throws when the engine or the database cannot now: the matches stay PENDING.
 */
export async function applyWaitMatches(
  store: WaitMatchStore,
  engine: WaitApplier,
  event: StoredWaitEvent,
  matches: readonly Pick<WaitMatch, "taskRunId" | "runId">[],
): Promise<void> {
  if (matches.length === 0) return;
  await engine.applyEvent(event, matches);
  await store.settle(
    event.eventId,
    matches.map((m) => m.taskRunId),
  );
}

/** What publishing needs for the waits (triggers/publish.ts). */
export interface EventWaitDeps {
  /** The engine's waits (engine/waits.ts): matched before the event is stored, applied after. */
  engine: WaitApplier & { matchEvent(event: { key: string; payload: unknown }): Promise<WaitMatch[]> };
  store: WaitMatchStore;
  log: Logger;
  /** Makes the loop apply what a publish could not. */
  wake(): void;
}

/**
 * Applies a just-stored event's wait matches (`known`: those stored with it; undefined: read
 * them, for an event stored earlier). A failure (the engine stopping, the database unavailable)
 * leaves them PENDING for the loop, woken: the event is stored, so the publish still succeeds.
 */
export async function applyEventWaits(
  deps: EventWaitDeps,
  event: StoredWaitEvent,
  known: readonly WaitMatch[] | undefined,
): Promise<void> {
  try {
    const matches = known ?? (await deps.store.ofEvent(event.eventId)).filter((m) => m.status === "PENDING");
    await applyWaitMatches(deps.store, deps.engine, event, matches);
  } catch (e) {
    deps.log.warn(
      { err: e, event_id: event.eventId },
      "an event's wait matches could not be applied now; the wait match loop will",
    );
    deps.wake();
  }
}

/** Options of {@link WaitMatchLoop}. */
export interface WaitMatchLoopOptions {
  store: WaitMatchStore;
  engine: WaitApplier;
  log: Logger;
  /** How often the loop looks again while matches remain PENDING; also the pause after a failed pass. @default 1000 */
  pollMs?: number | undefined;
  /** Most matches one pass applies. @default 500 */
  batchSize?: number | undefined;
  /** How long the loop sleeps when nothing is PENDING, unless woken. @default 30000 */
  idleMs?: number | undefined;
}

/**
 * See the module comment; state, passCount, start, stop and wake (a publish left matches PENDING)
 * are background/batch-loop.ts's.
 */
export class WaitMatchLoop extends BatchLoop {
  constructor(private readonly options: WaitMatchLoopOptions) {
    super({ name: "event wait match loop" }, options);
  }

  /** One pass: the PENDING matches, an event at a time in publish order. */
  protected async pass(): Promise<number> {
    const pending = await this.options.store.pending(this.batchSize);
    const byEvent = new Map<string, PendingWaitMatch[]>();
    for (const m of pending) {
      const list = byEvent.get(m.event.eventId);
      if (list === undefined) byEvent.set(m.event.eventId, [m]);
      else list.push(m);
    }
    for (const matches of byEvent.values()) {
      const event = (matches[0] as PendingWaitMatch).event;
      await applyWaitMatches(this.options.store, this.options.engine, event, matches);
    }
    if (pending.length === this.batchSize) return 0;
    return this.idleMs;
  }
}
