/**
 * Event retention: events published longer ago than the retention are deleted with their matches
 * (the foreign key cascades), oldest first, a batch per short statement with a pause between
 * batches, on the purge loop the run retention uses (persistence/purge-loop.ts). An event with a
 * match still STARTING (its run not started yet: the match loop's work), or a wait match still
 * PENDING (the waiting step not ended with it yet: triggers/wait-matches.ts), is kept until it is
 * settled; neither goes back to pending, so the check and the delete cannot race.
 *
 * Runs that events started are not touched (run retention has its own clock). A publish's
 * idempotency key lives as long as its event: it is honoured for at least the retention, and once
 * its event is deleted the same key publishes a new event, whose matches start new runs.
 */
import type { Logger } from "@nexusflow/common";
import type pg from "pg";
import { PurgeLoop, purgeInBatches, type PurgeLoopState } from "../persistence/purge-loop.js";

/** Options of {@link EventRetention}. */
export interface EventRetentionOptions {
  pool: pg.Pool;
  log: Logger;
  /** Events published longer ago than this are deleted; 0 keeps every event. @default 604800000 (7 days) */
  retentionMs?: number | undefined;
  /** Time between the end of one purge and the start of the next. @default 60000 */
  intervalMs?: number | undefined;
  /** Events deleted per statement. @default 1000 */
  batchSize?: number | undefined;
  /** Pause between two batches of one purge. @default 200 */
  pauseMs?: number | undefined;
}

/** The default of {@link EventRetentionOptions.retentionMs}. */
export const DEFAULT_EVENT_RETENTION_MS = 7 * 86_400_000;

// Oldest first through events_created_idx; SKIP LOCKED leaves an event a publish holds alone.
const PURGE_SQL = `WITH old AS (
    SELECT e.event_id FROM events e
    WHERE e.created_at < to_timestamp($1::float8 / 1000)
      AND NOT EXISTS (SELECT 1 FROM event_matches m WHERE m.event_id = e.event_id AND m.status = 'STARTING')
      AND NOT EXISTS (
        SELECT 1 FROM event_wait_matches w WHERE w.event_id = e.event_id AND w.status = 'PENDING')
    ORDER BY e.created_at LIMIT $2
    FOR UPDATE OF e SKIP LOCKED)
  DELETE FROM events e USING old WHERE e.event_id = old.event_id`;

/** Deletes old events periodically (see the module comment). */
export class EventRetention {
  private readonly retentionMs: number;
  private readonly batchSize: number;
  private readonly pauseMs: number;
  private readonly loop: PurgeLoop;
  /** Totals since start, for logs and tests. */
  readonly stats = { purges: 0, deleted: 0 };

  constructor(private readonly options: EventRetentionOptions) {
    this.retentionMs = options.retentionMs ?? DEFAULT_EVENT_RETENTION_MS;
    this.batchSize = options.batchSize ?? 1000;
    this.pauseMs = options.pauseMs ?? 200;
    this.loop = new PurgeLoop({
      name: "event retention purge",
      log: options.log,
      intervalMs: options.intervalMs ?? 60_000,
      purge: async (signal) => {
        const deleted = await this.purge(signal);
        if (deleted > 0) options.log.info({ deleted }, "deleted events past their retention");
      },
    });
  }

  /** Whether retention deletes anything (a retention of 0 turns it off). */
  get enabled(): boolean {
    return this.retentionMs > 0;
  }

  /** The purge loop's state. */
  get state(): PurgeLoopState["state"] {
    return this.loop.state;
  }

  /** Starts purging (the first purge right away); does nothing when disabled. */
  start(): void {
    this.loop.start(this.enabled);
  }

  /** Stops the timer and waits for a purge in progress to end its current batch. */
  stop(): Promise<void> {
    return this.loop.stop();
  }

  /**
   * One purge: batches until no event is past its retention (or `signal` aborts between batches).
   * Returns how many events it deleted; a retention of 0 deletes nothing.
   */
  async purge(signal?: AbortSignal): Promise<number> {
    if (!this.enabled) return 0;
    this.stats.purges++;
    const deleted = await purgeInBatches(
      async () =>
        (await this.options.pool.query(PURGE_SQL, [Date.now() - this.retentionMs, this.batchSize]))
          .rowCount ?? 0,
      this.batchSize,
      this.pauseMs,
      signal,
    );
    this.stats.deleted += deleted;
    return deleted;
  }
}
