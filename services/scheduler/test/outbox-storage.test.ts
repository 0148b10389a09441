/**
 * How the outbox stores a row's trace contexts (Migration20261207010000OutboxEventTraces): in
 * `event_traces`, as they are, not compressed, since a commit's trace and span ids are random bytes
 * that PostgreSQL would spend CPU trying to compress at every insert.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { migratedTestDatabase } from "./support.js";

describe("outbox storage", () => {
  const test = migratedTestDatabase();

  it("keeps a row's trace contexts uncompressed and its payload compressible", async () => {
    const storage = await test.db.pool.query<{ attname: string; attstorage: string }>(
      `SELECT attname, attstorage FROM pg_attribute
       WHERE attrelid = 'outbox_events'::regclass AND attname IN ('event_traces', 'payload')`,
    );
    const of = Object.fromEntries(storage.rows.map((r) => [r.attname, r.attstorage]));
    assert.deepEqual(of, { event_traces: "e", payload: "x" });
    // 8 KiB that would compress to almost nothing: stored at their full size.
    const runId = randomUUID();
    await test.db.pool.query(
      `INSERT INTO outbox_events (run_id, first_sequence, event_count, payload, event_traces)
       VALUES ($1, 1, 1, '\\x00'::bytea, $2)`,
      [runId, Buffer.alloc(8192)],
    );
    // Read back from the table: the size of the value as stored.
    const row = await test.db.pool.query<{ stored: number }>(
      "SELECT pg_column_size(event_traces) AS stored FROM outbox_events WHERE run_id = $1",
      [runId],
    );
    assert.ok(row.rows[0]!.stored >= 8192, `stored ${row.rows[0]!.stored} bytes of 8192`);
  });
});
