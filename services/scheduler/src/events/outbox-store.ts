/**
 * The relay's side of the `outbox_events` table. Everything runs on one dedicated connection that
 * holds a session-level advisory lock: only the holder reads, marks and prunes, so two schedulers
 * never publish concurrently, and a crashed holder's lock vanishes with its connection. With a
 * `coordinated` (cluster mode, relay.ts) the connection takes no lock (the relay publishes only
 * while its replica is the coordinator), and each mark carries the coordinator's fence in its
 * statement.
 */
import type pg from "pg";
import { lifecycleEventId, withEventId } from "@nexusflow/common";
import { LifecycleEventSchema } from "@nexusflow/gen";
import { BinaryReader, WireType, getTextEncoding } from "@bufbuild/protobuf/wire";
import { type OutboxTraceColumns, rowTraceContexts, splitEventBatch } from "../persistence/outbox.js";
import type { OutboxRecord } from "./publisher.js";
import { coordinatorFenceSql, type CoordinatorFence } from "../cluster/coordinator.js";

/** Raised when the database side of the relay fails; `cause` is the pg error. */
export class OutboxStoreError extends Error {
  override name = "OutboxStoreError";
}

interface OutboxRow extends OutboxTraceColumns {
  id: string | number;
  run_id: string;
  first_sequence: string | number;
  event_count: number;
  payload: Buffer;
  created_at: Date;
}

// A row holds the events of one commit (a LifecycleEventBatch); the relay publishes each.
const FETCH_SQL = `SELECT id, run_id, first_sequence, event_count, payload, trace_context, event_traces, created_at
  FROM outbox_events WHERE published_at IS NULL ORDER BY id LIMIT $1`;
const MARK_SQL = `UPDATE outbox_events SET published_at = now() WHERE id = ANY($1::bigint[])`;
// The same under the coordinator's fence: NF001 (nothing marked) once another replica took over.
const fencedMarkSql = (fence: CoordinatorFence): { sql: string; params: [string, number] } => {
  const check = coordinatorFenceSql(fence, 2);
  return { sql: `WITH marked AS (${MARK_SQL}) ${check.sql}`, params: check.params };
};
// Oldest first along the primary key: published rows precede unpublished ones, so the scan stops
// early; the LIMIT keeps each delete (and its locks and WAL) small.
// (Recovery numbers a run's next event from its run and task rows, never from the outbox.)
const PRUNE_SQL = `DELETE FROM outbox_events WHERE id IN (
  SELECT o.id FROM outbox_events o
   WHERE o.published_at < now() - $1::double precision * interval '1 millisecond'
   ORDER BY o.id LIMIT $2)`;
// Events, not rows.
const BACKLOG_SQL = `SELECT coalesce(sum(event_count), 0)::bigint AS n
  FROM outbox_events WHERE published_at IS NULL`;

// Rows, with the oldest unpublished row's age; the partial index on unpublished ids finds them.
const LAG_SQL = `SELECT count(*)::bigint AS rows,
  coalesce(extract(epoch from now() - min(created_at)), 0)::float8 AS oldest_seconds
  FROM outbox_events WHERE published_at IS NULL`;

/** How far the relay is behind: unpublished outbox rows and the age of the oldest (0 when none). */
export interface OutboxLag {
  rows: number;
  oldestSeconds: number;
}

/**
 * Reads the outbox lag on a connection of `pool` (not the relay's: metrics must not hold up
 * publishing), for a scrape.
 */
export async function readOutboxLag(pool: pg.Pool): Promise<OutboxLag> {
  const { rows } = await pool.query<{ rows: string; oldest_seconds: number }>(LAG_SQL);
  const row = rows[0];
  return { rows: Number(row?.rows ?? 0), oldestSeconds: Number(row?.oldest_seconds ?? 0) };
}

/** Field number -> oneof case name ("taskSucceeded") of LifecycleEvent's `event`. */
const EVENT_CASES = new Map(
  LifecycleEventSchema.fields.filter((f) => f.oneof?.name === "event").map((f) => [f.number, f.localName]),
);

/** What a record needs from an event: its id, run, sequence and type (the `event` oneof's case). */
export interface EventHeader {
  eventId: string;
  runId: string;
  sequence: number;
  type: string;
}

/**
 * What a record needs from an event (its id, sequence and type), read from its bytes without
 * decoding the rest (inputs, outputs): the relay publishes the bytes as they are. The fields are
 * read straight from the bytes (no reader object, no tag arrays: the relay reads every event it
 * publishes); an encoding that path does not take (a group, a varint past 2^49, bytes cut short)
 * is read by protobuf-es's reader, which reads it or throws as it always did.
 */
export function eventHeader(bytes: Uint8Array): EventHeader {
  return headerFast(bytes) ?? headerByReader(bytes);
}

/** Varints up to this many bytes (49 bits) are read exactly as numbers here. */
const MAX_FAST_VARINT_BYTES = 7;
/** A tag is a uint32 varint: protobuf-es's reader refuses one written in more bytes, padded or not. */
const MAX_TAG_BYTES = 5;

/** Where {@link varintAt} stopped: the byte after the varint it read. */
let cursor = 0;

/** The varint at `pos` of `bytes` (cursor: past it), or -1 when cut short or past 2^49. */
function varintAt(bytes: Uint8Array, pos: number): number {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < MAX_FAST_VARINT_BYTES; i++) {
    if (pos >= bytes.length) return -1;
    const b = bytes[pos++] as number;
    value += (b & 0x7f) * scale;
    if (b < 0x80) {
      cursor = pos;
      return value;
    }
    scale *= 128;
  }
  return -1;
}

/** Reads {@link eventHeader}'s fields, or undefined for what it leaves to protobuf-es. */
function headerFast(bytes: Uint8Array): EventHeader | undefined {
  const len = bytes.length;
  let pos = 0;
  let eventId = "";
  let runId = "";
  let sequence = 0;
  let type = "unknown";
  while (pos < len) {
    const tag = varintAt(bytes, pos);
    // Field 0, tags past 32 bits and tags padded past five bytes are the reader's to refuse.
    if (tag < 8 || tag > 0xffffffff || cursor - pos > MAX_TAG_BYTES) return undefined;
    pos = cursor;
    const field = Math.floor(tag / 8);
    const wireType = (tag % 8) as WireType;
    if (wireType === WireType.Varint) {
      const v = varintAt(bytes, pos);
      if (v < 0) return undefined;
      pos = cursor;
      if (field === 3) {
        sequence = v;
        continue;
      }
    } else if (wireType === WireType.LengthDelimited) {
      const n = varintAt(bytes, pos);
      if (n < 0 || cursor + n > len) return undefined;
      const start = cursor;
      pos = cursor + n;
      if (field === 1) {
        eventId = decodeUtf8(bytes, start, pos);
        continue;
      }
      if (field === 2) {
        runId = decodeUtf8(bytes, start, pos);
        continue;
      }
    } else if (wireType === WireType.Bit64) pos += 8;
    else if (wireType === WireType.Bit32) pos += 4;
    else return undefined;
    if (pos > len) return undefined;
    const name = EVENT_CASES.get(field);
    if (name !== undefined) type = name;
  }
  return { eventId, runId, sequence, type };
}

/** A string field's bytes as protobuf-es decodes them (not strict: a bad sequence is U+FFFD). */
function decodeUtf8(bytes: Uint8Array, start: number, end: number): string {
  return getTextEncoding().decodeUtf8(bytes.subarray(start, end));
}

/** {@link eventHeader} by protobuf-es's reader. Exported for tests. */
export function headerByReader(bytes: Uint8Array): EventHeader {
  const reader = new BinaryReader(bytes);
  let eventId = "";
  let runId = "";
  let sequence = 0;
  let type = "unknown";
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.LengthDelimited) eventId = reader.string();
    else if (field === 2 && wireType === WireType.LengthDelimited) runId = reader.string();
    else if (field === 3 && wireType === WireType.Varint) sequence = Number(reader.int64());
    else {
      const name = EVENT_CASES.get(field);
      if (name !== undefined) type = name;
      reader.skip(wireType, field);
    }
  }
  return { eventId, runId, sequence, type };
}

/** The relay's connection to the outbox, once it holds the relay lock. */
export class OutboxStore {
  private client: pg.PoolClient | undefined;
  private closed = false;
  private readonly onClientError = (): void => {
    // The connection died (the next query fails and drops it). Listening keeps pg from turning
    // the client's 'error' event into an uncaught exception.
  };

  constructor(
    private readonly pool: pg.Pool,
    private readonly lockKey: bigint,
    private readonly coordinated = false,
  ) {}

  /** Whether this store holds the relay lock (as far as it knows). */
  get locked(): boolean {
    return this.client !== undefined;
  }

  /** Tries to take the relay lock on a dedicated connection; false when another relay holds it. */
  async tryLock(): Promise<boolean> {
    if (this.client !== undefined) return true;
    if (this.closed) return false;
    const client = await this.wrap(() => this.pool.connect());
    client.on("error", this.onClientError);
    if (this.closed) {
      // Closed while waiting for a connection: it must not keep one.
      this.releaseClient(client, false);
      return false;
    }
    if (this.coordinated) {
      this.client = client;
      return true;
    }
    try {
      const { rows } = await client.query<{ locked: boolean }>(
        "SELECT pg_try_advisory_lock($1::bigint) AS locked",
        [this.lockKey.toString()],
      );
      if (rows[0]?.locked === true) {
        this.client = client;
        return true;
      }
      this.releaseClient(client, false);
      return false;
    } catch (e) {
      this.releaseClient(client, true);
      throw new OutboxStoreError("could not take the outbox relay lock", { cause: e });
    }
  }

  /**
   * The events of the oldest `limit` unpublished rows, in commit order (a row is one commit's
   * events, each run's in sequence order). Every record of a row carries the row's id.
   */
  async fetch(limit: number): Promise<OutboxRecord[]> {
    const { rows } = await this.query<OutboxRow>(FETCH_SQL, [limit]);
    const records: OutboxRecord[] = [];
    for (const r of rows) {
      const id = Number(r.id);
      const batch = new Uint8Array(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength);
      const events = splitEventBatch(batch);
      if (events.length !== r.event_count)
        throw new Error(`outbox row ${id} holds ${events.length} events, expected ${r.event_count}`);
      const traces = rowTraceContexts(r, events.length);
      events.forEach((stored, i) => {
        const header = eventHeader(stored);
        // Rows written before one row held a whole commit name their run only on the row.
        const runId = header.runId === "" ? r.run_id : header.runId;
        // The outbox leaves event ids out (rows written before kept theirs): put it back.
        const eventId = header.eventId === "" ? lifecycleEventId(runId, header.sequence) : header.eventId;
        records.push({
          id,
          eventId,
          runId,
          sequence: header.sequence,
          type: header.type,
          payload: header.eventId === "" ? withEventId(stored, eventId) : stored,
          traceContext: traces[i] ?? null,
          createdAt: r.created_at,
        });
      });
    }
    return records;
  }

  /**
   * Marks rows as published (ids may repeat: one per event); coordinated, under the coordinator's
   * `fence` (NF001 once another replica took partition 0).
   */
  async markPublished(ids: readonly number[], fence?: CoordinatorFence): Promise<void> {
    if (ids.length === 0) return;
    const unique = [...new Set(ids)];
    if (!this.coordinated) {
      await this.query(MARK_SQL, [unique]);
      return;
    }
    if (fence === undefined) throw new OutboxStoreError("this replica is no longer the coordinator");
    const fenced = fencedMarkSql(fence);
    await this.query(fenced.sql, [unique, ...fenced.params]);
  }

  /** Deletes at most `limit` rows published more than `retentionMs` ago; returns how many. */
  async prune(retentionMs: number, limit: number): Promise<number> {
    const result = await this.query(PRUNE_SQL, [retentionMs, limit]);
    return result.rowCount ?? 0;
  }

  /** Number of unpublished events (not rows). */
  async backlog(): Promise<number> {
    const { rows } = await this.query<{ n: string | number }>(BACKLOG_SQL, []);
    return Number(rows[0]?.n ?? 0);
  }

  /**
   * Gives the lock back. `broken` (or a failed unlock) closes the connection instead, which
   * releases the lock on the server as well.
   */
  async unlock(broken = false): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client === undefined) return;
    if (broken) {
      this.releaseClient(client, true);
      return;
    }
    if (this.coordinated) {
      this.releaseClient(client, false);
      return;
    }
    try {
      await client.query("SELECT pg_advisory_unlock($1::bigint)", [this.lockKey.toString()]);
      this.releaseClient(client, false);
    } catch {
      this.releaseClient(client, true);
    }
  }

  /** Gives the lock back (see {@link unlock}) and refuses to take it again. */
  async close(broken = false): Promise<void> {
    this.closed = true;
    await this.unlock(broken);
  }

  private async query<R extends pg.QueryResultRow>(
    sql: string,
    params: unknown[],
  ): Promise<pg.QueryResult<R>> {
    const client = this.client;
    if (client === undefined) throw new OutboxStoreError("the outbox relay lock is not held");
    try {
      return await client.query<R>(sql, params);
    } catch (e) {
      // Whatever failed, the session (and with it the lock) may be gone: start over from tryLock.
      this.client = undefined;
      this.releaseClient(client, true);
      throw new OutboxStoreError("outbox query failed", { cause: e });
    }
  }

  private async wrap<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw new OutboxStoreError("could not connect to the database", { cause: e });
    }
  }

  private releaseClient(client: pg.PoolClient, destroy: boolean): void {
    // A destroyed connection may still report its end: keep listening to it.
    if (!destroy) client.off("error", this.onClientError);
    try {
      client.release(destroy);
    } catch {
      // Released twice (already destroyed by a failed query): nothing left to do.
    }
  }
}
