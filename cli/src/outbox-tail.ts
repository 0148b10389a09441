/**
 * `nexusflow events tail` without Kafka: reads the lifecycle events from the `outbox_events` table
 * (one row per commit, a LifecycleEventBatch of its events, each run's in sequence order) and
 * follows it by polling by id. Each event is turned into the message the relay would publish
 * (`eventMessage`) and decoded like a consumed Kafka message (`decodeEventMessage`), so the lines
 * have the same shape as on the Kafka path; `topic` is "outbox_events", `partition` 0 and `offset`
 * "<row id>:<index in the row>".
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { LifecycleEventBatchSchema, LifecycleEventSchema } from "@nexusflow/gen";
import { lifecycleEventId } from "@nexusflow/common";
import {
  decodeEventMessage,
  eventMessage,
  rowTraceContexts,
  type OutboxTraceColumns,
  type DecodedEvent,
} from "@nexusflow/scheduler/events";
import pg from "pg";

/** The `topic` of lines read from the outbox. */
export const OUTBOX_TOPIC = "outbox_events";

/** Options of {@link tailOutbox}. */
export interface OutboxTailOptions {
  /** PostgreSQL URL of the scheduler's database. */
  databaseUrl: string;
  /** Start at the oldest row still in the outbox instead of only new ones. */
  fromBeginning: boolean;
  /** Only this run's events. */
  runId: string | undefined;
  /** Pause between polls when nothing new came. @default 200 */
  pollIntervalMs?: number;
  /** Stops tailing (Ctrl-C). */
  signal: AbortSignal;
  /** Receives one JSON line per event (without the newline). */
  write: (line: string) => void;
  /** Receives diagnostics (without the newline). */
  warn: (line: string) => void;
}

/** Raised when the database cannot be reached or read. */
export class OutboxTailError extends Error {
  override name = "OutboxTailError";
}

interface Row extends OutboxTraceColumns {
  id: string;
  run_id: string;
  payload: Buffer;
  created_at: Date;
}

const PAGE = 500;
const START_SQL = "SELECT coalesce(max(id), 0)::text AS id FROM outbox_events";
// A row holds a whole commit's events, of any runs: `--run` filters the decoded events.
const POLL_SQL = `SELECT id::text AS id, run_id::text AS run_id, payload, trace_context, event_traces, created_at
  FROM outbox_events WHERE id > $1::bigint ORDER BY id LIMIT ${PAGE}`;

/** A URL without its password, for messages. */
export function redactDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== "") u.password = "***";
    return u.toString();
  } catch {
    return "(unparsable URL)";
  }
}

/** The events of one outbox row, decoded as the Kafka path decodes a consumed message. */
export function decodeOutboxRow(row: Row): DecodedEvent[] {
  const batch = fromBinary(LifecycleEventBatchSchema, row.payload);
  const traces = rowTraceContexts(row, batch.events.length);
  return batch.events.map((event, i) => {
    // Rows written before one row held a whole commit name their run only on the row.
    if (event.runId === "") event.runId = row.run_id;
    // The outbox leaves event ids out (rows written before kept theirs): derived as the relay does.
    if (event.eventId === "") event.eventId = lifecycleEventId(event.runId, event.sequence);
    const message = eventMessage({
      id: Number(row.id),
      eventId: event.eventId,
      runId: event.runId,
      sequence: Number(event.sequence),
      type: event.event.case ?? "unknown",
      payload: toBinary(LifecycleEventSchema, event),
      traceContext: traces[i] ?? null,
      createdAt: row.created_at,
    });
    return decodeEventMessage(OUTBOX_TOPIC, 0, {
      key: Buffer.from(message.key),
      value: message.value,
      headers: message.headers,
      offset: `${row.id}:${i}`,
      timestamp: message.timestamp,
    });
  });
}

/** Tails the outbox until `signal` aborts; closes its connection before resolving. */
export async function tailOutbox(o: OutboxTailOptions): Promise<void> {
  const client = new pg.Client({ connectionString: o.databaseUrl, connectionTimeoutMillis: 5000 });
  // A dropped connection surfaces as the next query's error; listening keeps it from being uncaught.
  client.on("error", () => undefined);
  const where = redactDatabaseUrl(o.databaseUrl);
  try {
    await client.connect();
  } catch (e) {
    throw new OutboxTailError(
      `cannot reach PostgreSQL at ${where}: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  try {
    const query = async <R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<R[]> => {
      try {
        return (await client.query<R>(sql, params)).rows;
      } catch (e) {
        throw new OutboxTailError(
          `reading the outbox at ${where} failed: ${e instanceof Error ? e.message : String(e)}`,
        );
      }
    };
    let last = o.fromBeginning ? "0" : ((await query<{ id: string }>(START_SQL, []))[0]?.id ?? "0");
    o.warn(`no Kafka brokers given: following the outbox table at ${where} after row ${last}`);
    while (!o.signal.aborted) {
      const rows = await query<Row>(POLL_SQL, [last]);
      for (const row of rows) {
        last = row.id;
        let events: DecodedEvent[];
        try {
          events = decodeOutboxRow(row);
        } catch (e) {
          o.warn(`skipping outbox row ${row.id}: ${e instanceof Error ? e.message : String(e)}`);
          continue;
        }
        for (const event of events)
          if (o.runId === undefined || event.key === o.runId) o.write(JSON.stringify(event));
      }
      if (rows.length < PAGE) {
        await delay(o.pollIntervalMs ?? 200, undefined, { signal: o.signal }).catch(() => undefined);
      }
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

// The embedded PostgreSQL's fixed dev credentials (services/scheduler embedded-postgres.ts).
const EMBEDDED_CREDENTIALS = "nexusflow:nexusflow";
const EMBEDDED_DATABASE = "nexusflow";

/**
 * The URL of the embedded PostgreSQL of data directory `dataDir` while it runs: its port is the
 * fourth line of `<dataDir>/postgres/postmaster.pid`. Undefined when it is not running there.
 */
export async function embeddedDatabaseUrl(dataDir: string): Promise<string | undefined> {
  try {
    const lines = (await readFile(join(dataDir, "postgres", "postmaster.pid"), "utf8")).split("\n");
    const port = Number(lines[3]?.trim());
    if (!Number.isInteger(port) || port <= 0 || port > 65535) return undefined;
    return `postgresql://${EMBEDDED_CREDENTIALS}@127.0.0.1:${port}/${EMBEDDED_DATABASE}`;
  } catch {
    return undefined;
  }
}
