/**
 * The Kafka event source across a crash: a scheduler process configured by its environment
 * (EVENT_SOURCE_KAFKA_*) is SIGKILLed while it consumes a topic, with records stored whose offsets
 * were not committed yet; the scheduler started again gets those records again and every record
 * has started exactly one run, none lost, none doubled.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { requireService } from "@nexusflow/common/testing";
import pg from "pg";
import { killAll, startSchedulerProcess } from "../e2e/processes.js";
import { startTestDatabase, waitFor, workflowClient } from "../support.js";
import { KafkaFixture, eventsOfTopic, heldWorkflow, runsOf } from "./kafka-support.js";

describe("the Kafka event source across a crash", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let pool: pg.Pool;
  let kafka: KafkaFixture | undefined;

  before(async () => {
    db = await startTestDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
  });

  after(async () => {
    await killAll();
    await kafka?.close();
    await pool?.end();
    await db?.close();
  });

  it("starts each record's run exactly once after a SIGKILL mid-stream", async (t) => {
    const brokers = requireService(t, "KAFKA_BROKERS");
    if (brokers === undefined) return;
    kafka = await KafkaFixture.connect(brokers);
    const topic = await kafka.topic("ks-crash", 3);
    const groupId = `ks-crash-${randomUUID()}`;
    const env = {
      EVENT_SOURCE_KAFKA_BROKERS: brokers,
      EVENT_SOURCE_KAFKA_TOPICS: topic,
      EVENT_SOURCE_KAFKA_GROUP_ID: groupId,
      EVENT_SOURCE_KAFKA_START_FROM: "earliest",
      METRICS_PORT: "0",
    };
    const first = await startSchedulerProcess("scheduler-1", db.url, 0, env);
    await workflowClient(first.address).registerWorkflow({
      definition: { case: "specJson", value: heldWorkflow("ks-crash", "ks.crash.created") },
    });
    const total = 600;
    await kafka.produce(
      topic,
      Array.from({ length: total }, (_, n) => ({
        key: "ks.crash.created",
        value: JSON.stringify({ n }),
        partition: n % 3,
      })),
    );
    await waitFor("a first part of the stream", async () =>
      (await runsOf(pool, "ks-crash")).length >= 150 ? true : undefined,
    );
    await first.process.kill();
    const stored = await eventsOfTopic(pool, topic);
    const committed = await kafka.committed(groupId, topic);
    assert.ok(stored < total, `killed mid-stream (${stored} of ${total} stored)`);
    t.diagnostic(`at the kill: ${stored} records stored, ${committed} offsets committed`);

    // The killed member's partitions come back to the group once its session times out.
    await startSchedulerProcess("scheduler-2", db.url, 0, env);
    const runs = await waitFor(
      `${total} runs`,
      async () => {
        const r = await runsOf(pool, "ks-crash");
        return r.length >= total ? r : undefined;
      },
      60_000,
    );
    await kafka.waitForCommitted(groupId, topic, total);
    assert.deepEqual(
      runs.map((r) => (r.input as { n: number }).n).sort((a, b) => a - b),
      Array.from({ length: total }, (_, n) => n),
    );
    assert.equal(new Set(runs.map((r) => r.eventId)).size, total);
    assert.equal(await eventsOfTopic(pool, topic), total);
    const { rows } = await pool.query<{ n: string }>(
      `SELECT count(*) AS n FROM event_matches m JOIN events e USING (event_id)
       WHERE e.idempotency_key LIKE $1 AND m.status = 'STARTED'`,
      [`kafka:${topic}/%`],
    );
    assert.equal(Number(rows[0]?.n), total);
  });
});
