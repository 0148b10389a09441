/**
 * Event waits across the replicas of a cluster (docs/replicas.md): the replica that publishes an
 * event matches it against the waits of its own runs only (publish.ts); every replica then reads
 * the events stored since it last looked (woken by NOTIFY on {@link EVENTS_CHANNEL} after each
 * publish, and when it takes partitions) and matches each against the waits of the runs it holds,
 * in memory or parked (engine/waits.ts matchEvent: the partitions held only). Each match is stored
 * PENDING with `ON CONFLICT DO NOTHING` on (event, wait), and only those it inserted are applied
 * here (then settled): a wait its publisher matched, or that an earlier scan stored, is not applied
 * again, and a wait ends with at most one event (core/event-waits.ts). Matches it could not apply
 * stay PENDING for the wait match loop of the run's replica (wait-matches.ts, filtered by the
 * partitions held).
 *
 * Events are read in `seq` order, but a lower `seq` may commit after a higher one (two publishes
 * at once): the scan's low-water mark only passes events older than `settleMs`, and the events
 * above it already matched are remembered, so a late one is still read. A replica that takes
 * partitions (or starts) reads again the events of the last `rewindMs`: their runs were in no
 * replica's memory while they moved. The price of both: a wait that began less than that before
 * the scan read an event may take that event although it was published just before the wait began.
 *
 * The loop: IDLE -> RUNNING -> STOPPING -> STOPPED (background/pass-loop.ts).
 */
import type { Logger } from "@nexusflow/common";
import type pg from "pg";
import { BatchLoop } from "../background/batch-loop.js";
import type { WaitEvent, WaitMatch } from "../core/index.js";
import { applyWaitMatches, type WaitApplier, type WaitMatchStore } from "./wait-matches.js";

/** The channel a publish notifies once its event is stored (every replica's scan wakes). */
export const EVENTS_CHANNEL = "nexusflow_events";

/** Options of {@link EventWaitScan}. */
export interface EventWaitScanOptions {
  pool: pg.Pool;
  /** The engine's waits (engine/waits.ts): match against the runs held here, and apply. */
  engine: WaitApplier & { matchEvent(event: WaitEvent): Promise<WaitMatch[]> };
  store: WaitMatchStore;
  log: Logger;
  /** How long after its creation an event is taken as committed (or never to be). @default 5000 */
  settleMs?: number | undefined;
  /** How far back a start or a partition taken reads events again. @default 10000 */
  rewindMs?: number | undefined;
  /** Most events one query reads. @default 500 */
  batchSize?: number | undefined;
  /** Sleep when not woken. @default 30000 */
  idleMs?: number | undefined;
  /** The pause after a failed pass. @default 1000 */
  pollMs?: number | undefined;
}

interface EventRow {
  seq: string;
  event_id: string;
  key: string;
  payload: unknown;
  created_at: Date;
}

/** See the module comment. */
export class EventWaitScan extends BatchLoop {
  private readonly settleMs: number;
  private readonly rewindMs: number;
  /** Every event with a lower or equal seq has been matched here (or is older than settleMs). */
  private low: bigint | undefined;
  /** Events above `low` already matched, by seq. */
  private readonly seen = new Set<bigint>();
  private rewindPending = true;

  constructor(private readonly options: EventWaitScanOptions) {
    super({ name: "event wait scan" }, options);
    this.settleMs = options.settleMs ?? 5000;
    this.rewindMs = options.rewindMs ?? 10_000;
  }

  /** The runs of partitions just taken are in memory: read the recent events again for them. */
  rewind(): void {
    this.rewindPending = true;
    this.wake();
  }

  /** One pass: every event above the low-water mark not yet matched here. */
  protected async pass(): Promise<number> {
    const { pool, engine, store } = this.options;
    if (this.rewindPending) {
      this.rewindPending = false;
      const { rows } = await pool.query<{ low: string }>(
        `SELECT coalesce((SELECT min(seq) - 1 FROM events WHERE created_at > $1),
                         (SELECT max(seq) FROM events), 0)::text AS low`,
        [new Date(Date.now() - this.rewindMs)],
      );
      const low = BigInt(rows[0]?.low ?? "0");
      if (this.low === undefined || low < this.low) this.low = low;
      // Matched before the partitions came: match them again for the runs just loaded.
      this.seen.clear();
    }
    let after = this.low ?? 0n;
    const settled = Date.now() - this.settleMs;
    let advancing = true;
    for (;;) {
      const { rows } = await pool.query<EventRow>(
        `SELECT seq::text AS seq, event_id, key, payload, created_at FROM events WHERE seq > $1
         ORDER BY seq LIMIT $2`,
        [after.toString(), this.batchSize],
      );
      for (const row of rows) {
        const seq = BigInt(row.seq);
        after = seq;
        if (!this.seen.has(seq)) {
          await this.match(row, engine, store);
          this.seen.add(seq);
        }
        // The mark moves over settled events only (a lower seq may still be uncommitted above).
        if (advancing && row.created_at.getTime() < settled) {
          this.low = seq;
          this.seen.delete(seq);
        } else advancing = false;
      }
      if (rows.length < this.batchSize) break;
    }
    return this.seen.size > 0 ? Math.max(this.settleMs, this.pollMs) : this.idleMs;
  }

  private async match(
    row: EventRow,
    engine: EventWaitScanOptions["engine"],
    store: WaitMatchStore,
  ): Promise<void> {
    const matches = await engine.matchEvent({ key: row.key, payload: row.payload });
    if (matches.length === 0) return;
    const inserted = await store.insertPending(row.event_id, matches);
    await applyWaitMatches(
      store,
      engine,
      { eventId: row.event_id, key: row.key, payload: row.payload, publishTime: row.created_at },
      inserted,
    );
  }
}
