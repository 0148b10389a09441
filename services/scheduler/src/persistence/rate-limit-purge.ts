/**
 * The rows of rate limit buckets that are full again (model/rate-limit-state.ts): a grant row whose
 * `full_at` has passed, and a pause row (rate_limit_buckets, seq 0) whose pause is over and whose
 * bucket is full, say no more than "no row" does (a bucket with no row is full), so they are
 * deleted, a batch per short statement with a pause between batches, on the purge loop the
 * retentions use (persistence/purge-loop.ts). Without it a keyed limit (one bucket per key value:
 * per customer, per tenant) leaves a row per key for ever. Run by the coordinator.
 *
 * Exact against the writer: a row is locked (SKIP LOCKED leaves one a commit holds) and its
 * `full_at` read again as it is then, so a grant committed meanwhile (which moves `full_at` later)
 * keeps it; a grant after the delete inserts the row anew. Cutoffs are `SKEW_MS` in the past, so a
 * replica whose clock runs behind the coordinator's loses no row it still needs.
 */
import type { Logger } from "@nexusflow/common";
import type pg from "pg";
import { PurgeLoop, purgeInBatches, type PurgeLoopState } from "./purge-loop.js";

/** Options of {@link RateLimitPurge}. */
export interface RateLimitPurgeOptions {
  pool: pg.Pool;
  log: Logger;
  /** Time between the end of one purge and the start of the next. @default 60000 */
  intervalMs?: number | undefined;
  /** Rows deleted per statement. @default 1000 */
  batchSize?: number | undefined;
  /** Pause between two batches of one purge. @default 200 */
  pauseMs?: number | undefined;
}

/** How far behind the coordinator's clock a replica's may run without a row of its going early. */
export const SKEW_MS = 5 * 60_000;

const GRANTS_SQL = `WITH full_again AS (
    SELECT name, key, shard FROM rate_limit_grants WHERE full_at < $1
    LIMIT $2 FOR UPDATE SKIP LOCKED)
  DELETE FROM rate_limit_grants g USING full_again f
  WHERE g.name = f.name AND g.key = f.key AND g.shard = f.shard`;

const PAUSES_SQL = `WITH over AS (
    SELECT name, key FROM rate_limit_buckets
    WHERE seq = 0 AND full_at < $1 AND (paused_until IS NULL OR paused_until < to_timestamp($1::float8 / 1000))
    LIMIT $2 FOR UPDATE SKIP LOCKED)
  DELETE FROM rate_limit_buckets b USING over o WHERE b.name = o.name AND b.key = o.key`;

/** Deletes the rows of full buckets periodically (see the module comment). */
export class RateLimitPurge {
  private readonly batchSize: number;
  private readonly pauseMs: number;
  private readonly loop: PurgeLoop;

  constructor(private readonly options: RateLimitPurgeOptions) {
    this.batchSize = options.batchSize ?? 1000;
    this.pauseMs = options.pauseMs ?? 200;
    this.loop = new PurgeLoop({
      name: "rate limit purge",
      log: options.log,
      intervalMs: options.intervalMs ?? 60_000,
      purge: async (signal) => {
        const r = await this.purge(signal);
        if (r.grants + r.pauses > 0) options.log.debug(r, "deleted the rows of full rate limit buckets");
      },
    });
  }

  /** The purge loop's state. */
  get state(): PurgeLoopState["state"] {
    return this.loop.state;
  }

  /** Starts purging (the first purge right away). */
  start(): void {
    this.loop.start();
  }

  /** Stops the timer and waits for a purge in progress to end its current batch. */
  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** One purge: batches until no row is left to delete (or `signal` aborts between batches). */
  async purge(signal?: AbortSignal): Promise<{ grants: number; pauses: number }> {
    const batches = (sql: string): Promise<number> =>
      purgeInBatches(
        async () =>
          (await this.options.pool.query(sql, [Date.now() - SKEW_MS, this.batchSize])).rowCount ?? 0,
        this.batchSize,
        this.pauseMs,
        signal,
      );
    const grants = await batches(GRANTS_SQL);
    return { grants, pauses: await batches(PAUSES_SQL) };
  }
}
