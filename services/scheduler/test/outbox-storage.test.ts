/**
 * How the outbox stores a row's trace contexts (Migrations OutboxTraceContextStorage and
 * OutboxEventTraces): as they are, not compressed, since a commit's `traceparent`s are random ids
 * that PostgreSQL spent CPU compressing at every insert for little gain.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { openDatabase, type Database } from "../src/persistence/database.js";
import { startTestDatabase, testLogger } from "./support.js";

describe("outbox storage", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let db: Database;

  before(async () => {
    server = await startTestDatabase();
    db = await openDatabase({ url: server.url, log: testLogger("db") });
  });

  after(async () => {
    await db?.close();
    await server?.close();
  });

  it("keeps a row's trace contexts uncompressed (the binary ones and the JSON of rows before), its payload compressible", async () => {
    const storage = await db.pool.query<{ attname: string; attstorage: string }>(
      `SELECT attname, attstorage FROM pg_attribute
       WHERE attrelid = 'outbox_events'::regclass AND attname IN ('trace_context', 'event_traces', 'payload')`,
    );
    const of = Object.fromEntries(storage.rows.map((r) => [r.attname, r.attstorage]));
    assert.deepEqual(of, { trace_context: "e", event_traces: "e", payload: "x" });
    // A commit of 200 runs' contexts: stored at its full size (compressed it would be smaller).
    const contexts = Array.from({ length: 200 }, () => ({
      traceparent: `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-00`,
    }));
    const runId = randomUUID();
    await db.pool.query(
      `INSERT INTO outbox_events (run_id, first_sequence, event_count, payload, trace_context)
       VALUES ($1, 1, 200, '\\x00'::bytea, $2::jsonb)`,
      [runId, JSON.stringify(contexts)],
    );
    // Read back from the table: the size of the value as stored.
    const row = await db.pool.query<{ stored: number; text: number }>(
      `SELECT pg_column_size(trace_context) AS stored, length(trace_context::text) AS text
       FROM outbox_events WHERE run_id = $1`,
      [runId],
    );
    const { stored, text } = row.rows[0]!;
    assert.ok(stored >= text * 0.9, `stored ${stored} bytes of ${text}`);
  });
});
