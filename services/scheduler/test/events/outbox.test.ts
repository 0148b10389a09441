/**
 * The outbox relay against a real PostgreSQL with an in-memory publisher: commit order, marking
 * only after the acknowledgement, retrying the same batch, one relay at a time, recovering from a
 * lost connection, waking, and pruning. No broker needed; relay.serial.test.ts covers Kafka.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, beforeEach, describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { LifecycleEventSchema } from "@nexusflow/gen";
import { OutboxStore } from "../../src/events/outbox-store.js";
import { OutboxRelay, type OutboxRelayOptions } from "../../src/events/relay.js";
import { createOutboxRelay } from "../../src/events/setup.js";
import { openDatabase, type Database } from "../../src/persistence/database.js";
import { PostgresEngineStore } from "../../src/persistence/postgres-engine-store.js";
import { outboxEvents, startTestDatabase, testLogger, waitFor } from "../support.js";
import { MemoryPublisher, insertEvents } from "./support.js";

describe("outbox relay (PostgreSQL, in-memory publisher)", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let db: Database;
  const relays: OutboxRelay[] = [];

  const relay = (publisher: MemoryPublisher, options: Partial<OutboxRelayOptions> = {}): OutboxRelay => {
    const r = new OutboxRelay({
      pool: db.pool,
      publisher,
      log: testLogger("relay"),
      pollIntervalMs: 20,
      retryInitialMs: 10,
      retryMaxMs: 50,
      lockRetryMs: 50,
      ...options,
    });
    relays.push(r);
    return r;
  };

  const unpublished = async (): Promise<number> =>
    Number(
      (
        await db.pool.query<{ n: string }>(
          "SELECT count(*) AS n FROM outbox_events WHERE published_at IS NULL",
        )
      ).rows[0]?.n,
    );

  before(async () => {
    server = await startTestDatabase();
    db = await openDatabase({ url: server.url, log: testLogger("db") });
  });

  beforeEach(async () => {
    await Promise.all(relays.splice(0).map((r) => r.stop()));
    await db.pool.query("DELETE FROM outbox_events");
  });

  after(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    await db?.close();
    await server?.close();
  });

  it("publishes in commit order in batches and marks rows only after the publisher acknowledged", async () => {
    const a = randomUUID();
    const b = randomUUID();
    const ids = [
      ...(await insertEvents(db.pool, a, 7)),
      ...(await insertEvents(db.pool, b, 5)),
      ...(await insertEvents(db.pool, a, 4, 8)),
    ];
    const publisher = new MemoryPublisher();
    let open!: () => void;
    publisher.gate = new Promise((resolve) => (open = resolve));
    const r = relay(publisher, { batchSize: 5 });
    r.start();

    await waitFor("the first batch to be handed to the publisher", () => publisher.attempts.length === 1);
    assert.equal(publisher.attempts[0]?.length, 5);
    assert.equal(await unpublished(), 16, "nothing is marked before the acknowledgement");

    open();
    publisher.gate = undefined;
    await waitFor("every row to be published", async () => (await unpublished()) === 0);
    assert.deepEqual(
      publisher.published.map((p) => p.eventId),
      ids,
    );
    assert.deepEqual(
      publisher.attempts.map((batch) => batch.length),
      [5, 5, 5, 1],
    );
    assert.equal(r.stats.published, 16);
    const first = publisher.published[0];
    assert.equal(first?.runId, a);
    assert.equal(first?.sequence, 1);
    assert.equal(first?.type, "runStarted");
    assert.ok(first !== undefined && first.payload.byteLength > 0);
  });

  it("publishes each event of a row that holds several (one run's commit), in order, and marks the row once", async () => {
    const a = randomUUID();
    const b = randomUUID();
    // Rows: a 1-3, a 4-6, a 7, b 1-2.
    const ids = [
      ...(await insertEvents(db.pool, a, 7, 1, { perRow: 3 })),
      ...(await insertEvents(db.pool, b, 2, 1, { perRow: 2 })),
    ];
    // The backlog counts events, not rows.
    const store = new OutboxStore(db.pool, 42n);
    assert.equal(await store.tryLock(), true);
    assert.equal(await store.backlog(), 9);
    await store.close();
    const publisher = new MemoryPublisher();
    const r = relay(publisher, { batchSize: 2 });
    r.start();
    await waitFor("every row to be published", async () => (await unpublished()) === 0);
    assert.deepEqual(
      publisher.published.map((p) => p.eventId),
      ids,
    );
    assert.deepEqual(
      publisher.published.map((p) => [p.runId === a ? "a" : "b", p.sequence, p.type]),
      [
        ["a", 1, "runStarted"],
        ...[2, 3, 4, 5, 6, 7].map((n) => ["a", n, "taskStarted"]),
        ["b", 1, "runStarted"],
        ["b", 2, "taskStarted"],
      ],
    );
    // Batches of two rows: 3 + 3 events, then 1 + 2.
    assert.deepEqual(
      publisher.attempts.map((batch) => batch.length),
      [6, 3],
    );
    assert.equal(r.stats.published, 9);
    // Each record is exactly one event, carrying its row's id.
    const rowIds = new Set(publisher.published.map((p) => p.id));
    assert.equal(rowIds.size, 4);
    for (const p of publisher.published)
      assert.equal(fromBinary(LifecycleEventSchema, p.payload).eventId, p.eventId);
  });

  it("retries the same batch after publish failures and never skips an event", async () => {
    const run = randomUUID();
    const ids = await insertEvents(db.pool, run, 6);
    const publisher = new MemoryPublisher();
    publisher.failNext = 3;
    const r = relay(publisher, { batchSize: 4 });
    r.start();
    await waitFor("every row to be published", async () => (await unpublished()) === 0);
    // The first four attempts carry the same four events: three failures, then the success.
    for (const attempt of publisher.attempts.slice(0, 4))
      assert.deepEqual(
        attempt.map((e) => e.eventId),
        ids.slice(0, 4),
      );
    assert.deepEqual(
      publisher.published.map((e) => e.eventId),
      ids,
    );
    assert.equal(r.stats.failures, 3);
    assert.ok((await outboxEvents(db.pool, [run])).every((e) => e.published));
  });

  it("lets one relay publish at a time; a standby takes over when the active one stops", async () => {
    const first = new MemoryPublisher();
    const second = new MemoryPublisher();
    const r1 = relay(first);
    r1.start();
    await waitFor("the first relay to take the lock", () => r1.active);
    const r2 = relay(second);
    r2.start();

    const run = randomUUID();
    await insertEvents(db.pool, run, 3);
    await waitFor("the active relay to publish", async () => (await unpublished()) === 0);
    assert.equal(first.published.length, 3);
    assert.equal(second.attempts.length, 0, "the standby published nothing");
    assert.equal(r2.active, false);

    await r1.stop();
    assert.equal(r1.state, "STOPPED");
    assert.equal(first.closed, true);
    await insertEvents(db.pool, run, 2, 4);
    await waitFor(
      "the standby to take over and publish",
      async () => r2.active && (await unpublished()) === 0,
    );
    assert.deepEqual(
      second.published.map((e) => e.sequence),
      [4, 5],
    );
  });

  it("takes the lock again and continues after its database connection is killed", async () => {
    const publisher = new MemoryPublisher();
    const r = relay(publisher);
    r.start();
    const run = randomUUID();
    await insertEvents(db.pool, run, 2);
    await waitFor("the first events", async () => (await unpublished()) === 0);

    const killed = await db.pool.query(
      `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()`,
    );
    assert.equal(killed.rowCount, 1, "the relay held one advisory lock");
    await insertEvents(db.pool, run, 3, 3);
    await waitFor("the relay to recover and publish the rest", async () => (await unpublished()) === 0);
    assert.deepEqual(
      publisher.published.map((e) => e.sequence),
      [1, 2, 3, 4, 5],
    );
    assert.ok(r.stats.failures >= 1);
    assert.equal(r.active, true);
  });

  it("publishes at once when woken instead of waiting for the next poll", async () => {
    const publisher = new MemoryPublisher();
    const r = relay(publisher, { pollIntervalMs: 600_000 });
    r.start();
    await waitFor("the relay to find the outbox empty and wait", () => r.stats.emptyPolls === 1);
    await insertEvents(db.pool, randomUUID(), 2);
    r.wake();
    await waitFor("the woken relay to publish", () => publisher.published.length === 2, 5000);
  });

  it("stop() gives the lock back, leaves unacknowledged rows unpublished, and is idempotent", async () => {
    const publisher = new MemoryPublisher();
    publisher.gate = new Promise(() => undefined); // never acknowledges
    const r = relay(publisher);
    r.start();
    await insertEvents(db.pool, randomUUID(), 3);
    await waitFor("a batch in flight", () => publisher.attempts.length === 1);
    await Promise.all([r.stop(), r.stop()]);
    assert.equal(r.state, "STOPPED");
    assert.equal(await unpublished(), 3);
    const { rows } = await db.pool.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'");
    assert.equal(rows.length, 0, "the advisory lock is released");
    // A relay that never started stops cleanly too.
    const idle = relay(new MemoryPublisher());
    await idle.stop();
    assert.equal(idle.state, "STOPPED");
    assert.throws(() => idle.start(), /STOPPED/);
  });

  it("prunes published rows older than the retention in bounded batches, never unpublished or recent ones", async () => {
    const HOUR = 3_600_000;
    const old = randomUUID();
    const recent = randomUUID();
    const pending = randomUUID();
    await insertEvents(db.pool, old, 12, 1, { createdAgoMs: 3 * HOUR, publishedAgoMs: 2 * HOUR });
    await insertEvents(db.pool, recent, 3, 1, { createdAgoMs: 3 * HOUR, publishedAgoMs: 10 * 60_000 });
    await insertEvents(db.pool, pending, 4, 1, { createdAgoMs: 3 * HOUR });
    const publisher = new MemoryPublisher();
    publisher.failNext = Number.MAX_SAFE_INTEGER; // keeps `pending` unpublished
    const r = relay(publisher, {
      retentionMs: HOUR,
      pruneBatchSize: 5,
      pruneMaxBatches: 2,
      pruneIntervalMs: 20,
    });
    r.start();

    // Two statements of five per round: the first round stops at ten, the next one takes the rest.
    await waitFor("the first prune round", () => r.stats.pruneRounds >= 1);
    await waitFor("every expired row to be pruned", () => r.stats.pruned === 12);
    assert.ok(r.stats.pruneRounds >= 2);
    assert.equal((await outboxEvents(db.pool, [old])).length, 0);
    assert.equal((await outboxEvents(db.pool, [recent])).length, 3);
    assert.equal((await outboxEvents(db.pool, [pending])).length, 4);
    await r.stop();

    // Retention 0: everything published goes, at once.
    const r2 = relay(new MemoryPublisher(), { retentionMs: 0, pruneIntervalMs: 20 });
    r2.start();
    await waitFor("the rest to be published and pruned", async () => {
      const { rows } = await db.pool.query("SELECT 1 FROM outbox_events");
      return rows.length === 0;
    });
  });

  it("prunes published events of an active run too: recovery numbers from the run and task rows", async () => {
    const { rows } = await db.pool.query<{ id: string }>(
      `INSERT INTO workflow_definitions (name, version, spec, content_hash) VALUES ('prune-cover', 1, '{}', 'x')
       RETURNING id::text`,
    );
    const runId = randomUUID();
    await db.pool.query(
      `INSERT INTO workflow_runs (id, definition_id, workflow_name, workflow_version, status, event_seq)
       VALUES ($1, $2, 'prune-cover', 1, 'RUNNING', 2)`,
      [runId, rows[0]?.id],
    );
    // Events 3 and 4 were committed with a write of the run's task, which carries the sequence.
    await db.pool.query(
      `INSERT INTO task_runs (id, run_id, step_id, kind, type, status, position, run_event_seq)
       VALUES ($1, $2, 'a', 'STEP', 'noop', 'RUNNING', 0, 4)`,
      [randomUUID(), runId],
    );
    await insertEvents(db.pool, runId, 4, 1, { createdAgoMs: 60_000, publishedAgoMs: 60_000 });
    const r = relay(new MemoryPublisher(), { retentionMs: 0, pruneIntervalMs: 20 });
    r.start();
    await waitFor("the events to be pruned", async () => (await outboxEvents(db.pool, [runId])).length === 0);
    await r.stop();
    const store = new PostgresEngineStore({ db, log: testLogger("store") });
    const active = await store.loadActive();
    assert.equal(active.runs.find((x) => x.id === runId)?.lastEventSeq, 4);
  });

  it("with publishing off, marks events published unsent so pruning keeps the outbox bounded", async () => {
    const r = createOutboxRelay(db.pool, testLogger("relay"), {
      brokers: undefined,
      pollIntervalMs: 20,
      retentionMs: 0,
      pruneIntervalMs: 20,
    });
    relays.push(r);
    r.start();
    await insertEvents(db.pool, randomUUID(), 5);
    await waitFor("the events to be marked and pruned", async () => {
      const { rows } = await db.pool.query("SELECT 1 FROM outbox_events");
      return rows.length === 0 && r.stats.published === 5;
    });
  });
});
