/**
 * Event retention against a real scheduler and PostgreSQL: events past the retention go with their
 * matches (the runs they started stay), recent ones stay, an old event whose match is still
 * pending is kept until a scheduler has started its run (and one whose wait match is pending until
 * it is settled), an idempotency key is honoured while its
 * event is kept and publishes anew once it is gone, a purge works in batches and stops between
 * them, 0 keeps everything, and a scheduler's own loop purges with EVENT_RETENTION's option.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue } from "@nexusflow/common";
import { EventMatchStatus, EventService, type WorkflowService } from "@nexusflow/gen";
import pg from "pg";
import type { Scheduler } from "../../src/index.js";
import { EventRetention } from "../../src/triggers/event-retention.js";
import { startTestDatabase, startTestScheduler, testLogger, waitFor, workflowClient } from "../support.js";

const DAY = 86_400_000;

describe("event retention", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;
  let pool: pg.Pool;
  let events: Client<typeof EventService>;
  let runs: Client<typeof WorkflowService>;

  const start = async (options: Parameters<typeof startTestScheduler>[1] = { eventRetentionMs: 0 }) => {
    scheduler = await startTestScheduler(db.url, options);
    events = createClient(EventService, createGrpcTransport({ baseUrl: `http://${scheduler.address}` }));
    runs = workflowClient(scheduler.address);
  };
  const stop = async () => {
    await scheduler?.stop();
    scheduler = undefined;
  };
  /** Makes events look published `days` ago. */
  const age = (ids: readonly string[], days: number) =>
    pool.query(
      `UPDATE events SET created_at = now() - $2 * interval '1 day' WHERE event_id = ANY($1::uuid[])`,
      [ids, days],
    );
  const exists = async (id: string): Promise<boolean> =>
    (await pool.query(`SELECT 1 FROM events WHERE event_id = $1`, [id])).rowCount === 1;
  const count = async (sql: string, params: unknown[] = []): Promise<number> =>
    Number((await pool.query<{ n: string }>(sql, params)).rows[0]?.n);
  const matchCount = (id: string): Promise<number> =>
    count(`SELECT count(*) AS n FROM event_matches WHERE event_id = $1`, [id]);
  const retention = (over: Partial<ConstructorParameters<typeof EventRetention>[0]> = {}) =>
    new EventRetention({ pool, log: testLogger("event-retention"), retentionMs: 7 * DAY, ...over });
  const publish = async (key: string, idempotencyKey = "") => {
    const { event, created } = await events.publishEvent({
      key,
      payload: jsonToValue({ id: randomUUID() }),
      idempotencyKey,
    });
    assert.ok(event);
    return { event, created };
  };

  before(async () => {
    db = await startTestDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 4 });
    await start();
    await runs.registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({
          name: "on-order",
          version: 1,
          steps: [{ id: "wait", type: "retention.never" }],
          triggers: [{ event: "orders.*" }],
        }),
      },
    });
  });

  after(async () => {
    await stop();
    await pool?.end();
    await db?.close();
  });

  it("deletes events past the retention with their matches, keeping their runs and recent events", async () => {
    const old = await publish("orders.created");
    const recent = await publish("orders.created");
    const runId = old.event.matches[0]?.runId ?? "";
    assert.equal(old.event.matches[0]?.status, EventMatchStatus.STARTED);
    await age([old.event.eventId], 8);
    assert.equal(await retention().purge(), 1);
    assert.equal(await exists(old.event.eventId), false);
    assert.equal(await matchCount(old.event.eventId), 0);
    assert.equal(await exists(recent.event.eventId), true);
    assert.equal(await matchCount(recent.event.eventId), 1);
    const { run } = await runs.getRun({ runId });
    assert.equal(run?.labels["event-id"], old.event.eventId);
    // A retention of 0 keeps everything.
    await age([recent.event.eventId], 400);
    const off = retention({ retentionMs: 0 });
    assert.equal(off.enabled, false);
    assert.equal(await off.purge(), 0);
    assert.equal(await exists(recent.event.eventId), true);
    await retention().purge();
  });

  it("keeps an old event while a match of it is pending, and deletes it once its run started", async () => {
    const { event } = await publish("orders.paid");
    await stop();
    // As a crash between storing an event and starting its runs leaves it.
    await pool.query(`UPDATE event_matches SET status = 'STARTING', run_id = NULL WHERE event_id = $1`, [
      event.eventId,
    ]);
    await age([event.eventId], 30);
    assert.equal(await retention().purge(), 0);
    assert.equal(await exists(event.eventId), true);
    // A scheduler starts the match's run (finding the one already started, by its key).
    await start();
    await waitFor("the match settled", async () => {
      const { rows } = await pool.query<{ status: string; run_id: string | null }>(
        `SELECT status, run_id FROM event_matches WHERE event_id = $1`,
        [event.eventId],
      );
      return rows[0]?.status === "STARTED" ? rows[0] : undefined;
    });
    assert.equal(await retention().purge(), 1);
    assert.equal(await exists(event.eventId), false);
  });

  it("keeps an old event while a waiting step it matched has not ended with it", async () => {
    const { event } = await publish("orders.refunded");
    await stop();
    // As a crash between storing the event with the waits it matched and ending them leaves it.
    await pool.query(
      `INSERT INTO event_wait_matches (event_id, task_run_id, run_id, step_id, status, created_at)
       VALUES ($1, gen_random_uuid(), gen_random_uuid(), 'approval', 'PENDING', now())`,
      [event.eventId],
    );
    await age([event.eventId], 30);
    assert.equal(await retention().purge(), 0);
    assert.equal(await exists(event.eventId), true);
    // As the scheduler settles it (the wait ended with the event, or had ended otherwise).
    await pool.query(`UPDATE event_wait_matches SET status = 'WAIT_ENDED' WHERE event_id = $1`, [
      event.eventId,
    ]);
    assert.equal(await retention().purge(), 1);
    assert.equal(await exists(event.eventId), false);
    assert.equal(
      await count(`SELECT count(*) AS n FROM event_wait_matches WHERE event_id = $1`, [event.eventId]),
      0,
    );
    await start();
  });

  it("honours an idempotency key while its event is kept, and publishes anew once it is gone", async () => {
    const first = await publish("orders.created", "order-42");
    assert.equal(first.created, true);
    await retention().purge();
    const again = await publish("orders.created", "order-42");
    assert.equal(again.created, false);
    assert.equal(again.event.eventId, first.event.eventId);
    await age([first.event.eventId], 8);
    assert.equal(await retention().purge(), 1);
    const later = await publish("orders.created", "order-42");
    assert.equal(later.created, true, "a key older than the retention publishes again");
    assert.notEqual(later.event.eventId, first.event.eventId);
    assert.notEqual(later.event.matches[0]?.runId, first.event.matches[0]?.runId, "and starts a new run");
  });

  it("purges in batches, stopping between two when its signal aborts", async () => {
    const before = await count(`SELECT count(*) AS n FROM events`);
    await pool.query(
      `INSERT INTO events (event_id, key, payload, created_at)
       SELECT gen_random_uuid(), 'bulk.old', '{}'::jsonb, now() - interval '10 days' - i * interval '1 second'
       FROM generate_series(1, 2500) AS i`,
    );
    const slow = retention({ batchSize: 1000, pauseMs: 3_600_000 });
    const abort = new AbortController();
    const purging = slow.purge(abort.signal);
    // The first batch is deleted, then the purge pauses: aborting ends it there.
    await waitFor("the first batch deleted", async () => {
      const n = await count(`SELECT count(*) AS n FROM events WHERE key = 'bulk.old'`);
      return n === 1500 ? true : undefined;
    });
    abort.abort();
    assert.equal(await purging, 1000);
    // The rest in three batches of a fresh purge (the last one short).
    const rest = retention({ batchSize: 600, pauseMs: 1 });
    assert.equal(await rest.purge(), 1500);
    assert.equal(rest.stats.deleted, 1500);
    assert.equal(await count(`SELECT count(*) AS n FROM events`), before);
  });

  it("runs in the scheduler with its retention, on the run retention's interval", async () => {
    await stop();
    await start({ eventRetentionMs: 2 * DAY, runRetentionIntervalMs: 1000 });
    assert.equal(scheduler?.eventRetention.enabled, true);
    const kept = await publish("orders.created");
    const old = await publish("orders.created");
    await age([old.event.eventId], 3);
    await age([kept.event.eventId], 1);
    await waitFor("the scheduler purged the old event", async () =>
      (await exists(old.event.eventId)) ? undefined : true,
    );
    assert.equal(await exists(kept.event.eventId), true);
  });
});
