/**
 * The Kafka event source on the real broker of scripts/test-services.sh and a real PostgreSQL:
 * records produced to a topic start the triggered workflow's runs, one per record; records that
 * are no event are counted and skipped while the next good one is processed; a scheduler stopped
 * mid-stream and started again neither loses nor doubles a match, and a group that reads the
 * whole topic again (every record delivered twice) starts nothing more.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, afterEach, before, describe, it } from "node:test";
import { createMetricsRegistry, type Registry } from "@nexusflow/common/metrics";
import { requireService } from "@nexusflow/common/testing";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import type { EventRow } from "../../src/triggers/event-store.js";
import { KafkaEventSource, type SourceEventSink } from "../../src/triggers/kafka-source.js";
import type { EventDraft } from "../../src/triggers/publish.js";
import { startTestDatabase, startTestScheduler, testLogger, waitFor, workflowClient } from "../support.js";
import { KafkaFixture, eventsOfTopic, heldWorkflow, metricValue, runsOf } from "./kafka-support.js";

const WORKFLOWS = [
  heldWorkflow("ks-header", "ks.header.created"),
  heldWorkflow("ks-filtered", "ks.filtered.ok"),
  heldWorkflow("ks-stream", "ks.stream.*"),
];

describe("the Kafka event source", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let pool: pg.Pool;
  let kafka: KafkaFixture | undefined;
  let scheduler: Scheduler | undefined;

  /** A scheduler consuming `topic` from its start, metrics recorded on a registry of its own. */
  async function consume(
    brokers: string,
    topic: string,
    source: { groupId: string; keyHeader?: string },
  ): Promise<{ scheduler: Scheduler; registry: Registry }> {
    const registry = createMetricsRegistry();
    scheduler = await startTestScheduler(db.url, {
      metrics: registry,
      eventSource: {
        brokers: brokers.split(","),
        topics: [topic],
        startFrom: "earliest",
        maxWaitMs: 100,
        sessionTimeoutMs: 6000,
        ...source,
      },
    });
    return { scheduler, registry };
  }

  async function stopScheduler(): Promise<void> {
    await scheduler?.stop();
    scheduler = undefined;
  }

  before(async () => {
    db = await startTestDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    // The workflows exist before any record is consumed.
    const s = await startTestScheduler(db.url);
    const client = workflowClient(s.address);
    for (const spec of WORKFLOWS)
      await client.registerWorkflow({ definition: { case: "specJson", value: spec } });
    await s.stop();
  });

  afterEach(stopScheduler);

  after(async () => {
    await kafka?.close();
    await pool?.end();
    await db?.close();
  });

  async function fixture(brokers: string): Promise<KafkaFixture> {
    kafka ??= await KafkaFixture.connect(brokers);
    return kafka;
  }

  it("starts one run per record, the key from a header, the payload as the run's input", async (t) => {
    const brokers = requireService(t, "KAFKA_BROKERS");
    if (brokers === undefined) return;
    const k = await fixture(brokers);
    const topic = await k.topic("ks-header", 3);
    const groupId = `ks-${randomUUID()}`;
    const { registry } = await consume(brokers, topic, { groupId, keyHeader: "event-type" });
    // The record key is the order id (it picks the partition); the header names the event.
    await k.produce(
      topic,
      Array.from({ length: 30 }, (_, n) => ({
        key: `order-${n}`,
        value: JSON.stringify({ n }),
        headers: { "event-type": "ks.header.created" },
      })),
    );
    const runs = await waitFor("30 runs", async () => {
      const r = await runsOf(pool, "ks-header");
      return r.length >= 30 ? r : undefined;
    });
    assert.deepEqual(
      runs.map((r) => (r.input as { n: number }).n).sort((a, b) => a - b),
      Array.from({ length: 30 }, (_, n) => n),
    );
    assert.ok(runs.every((r) => r.eventKey === "ks.header.created"));
    assert.equal(new Set(runs.map((r) => r.eventId)).size, 30);
    assert.equal(await eventsOfTopic(pool, topic), 30);
    // Every offset is committed once stored; nothing more is started meanwhile.
    await k.waitForCommitted(groupId, topic, 30, scheduler?.eventSource);
    assert.equal((await runsOf(pool, "ks-header")).length, 30);
    assert.equal(
      await metricValue(registry, "nexusflow_event_source_records_total", { topic, outcome: "stored" }),
      30,
    );
    assert.equal(await metricValue(registry, "nexusflow_event_source_up", {}), 1);
  });

  it("skips and counts a record that is no event, and processes the next one", async (t) => {
    const brokers = requireService(t, "KAFKA_BROKERS");
    if (brokers === undefined) return;
    const k = await fixture(brokers);
    const topic = await k.topic("ks-filtered", 1);
    const groupId = `ks-${randomUUID()}`;
    const { registry } = await consume(brokers, topic, { groupId });
    const good = (n: number): { key: string; value: string } => ({
      key: "ks.filtered.ok",
      value: JSON.stringify({ n }),
    });
    await k.produce(topic, [
      good(1),
      { key: "ks.filtered.ok", value: "{not json" },
      { key: null, value: JSON.stringify({ n: -1 }) },
      { key: "ks filtered", value: JSON.stringify({ n: -2 }) },
      { key: "ks.filtered.ok", value: JSON.stringify({ blob: "x".repeat(300 * 1024) }) },
      { key: "ks.filtered.ok", value: '{"text":"nul \\u0000 inside"}' },
      { key: "ks.filtered.ok", value: null },
      good(2),
    ]);
    const runs = await waitFor("the runs of both good records", async () => {
      const r = await runsOf(pool, "ks-filtered");
      return r.length >= 2 ? r : undefined;
    });
    assert.deepEqual(
      runs.map((r) => r.input).sort((a, b) => (a as { n: number }).n - (b as { n: number }).n),
      [{ n: 1 }, { n: 2 }],
    );
    assert.equal(await eventsOfTopic(pool, topic), 2);
    // Every offset is committed, the rejected records' included.
    await k.waitForCommitted(groupId, topic, 8, scheduler?.eventSource);
    const rejected = async (reason: string): Promise<number> =>
      metricValue(registry, "nexusflow_event_source_rejected_total", { topic, reason });
    assert.deepEqual(
      {
        not_json: await rejected("not_json"),
        no_key: await rejected("no_key"),
        invalid_key: await rejected("invalid_key"),
        too_large: await rejected("too_large"),
        not_storable: await rejected("not_storable"),
      },
      { not_json: 2, no_key: 1, invalid_key: 1, too_large: 1, not_storable: 1 },
    );
    assert.equal(
      await metricValue(registry, "nexusflow_event_source_records_total", { topic, outcome: "stored" }),
      2,
    );
    assert.equal(
      await metricValue(registry, "nexusflow_event_source_lag_records", { topic, partition: "0" }),
      0,
    );
  });

  it("neither loses nor doubles a match when stopped mid-stream, nor when every record comes again", async (t) => {
    const brokers = requireService(t, "KAFKA_BROKERS");
    if (brokers === undefined) return;
    const k = await fixture(brokers);
    const topic = await k.topic("ks-stream", 3);
    const groupId = `ks-${randomUUID()}`;
    const total = 600;
    const record = (n: number): { key: string; value: string; partition: number } => ({
      key: n % 2 === 0 ? "ks.stream.created" : "ks.stream.paid",
      value: JSON.stringify({ n }),
      partition: n % 3,
    });
    await k.produce(
      topic,
      Array.from({ length: total / 2 }, (_, n) => record(n)),
    );

    const first = await consume(brokers, topic, { groupId });
    await waitFor("a first part of the stream", async () =>
      (await runsOf(pool, "ks-stream")).length >= 60 ? true : undefined,
    );
    const firstSource = first.scheduler.eventSource;
    await stopScheduler();
    const storedBefore = await eventsOfTopic(pool, topic);
    assert.ok(storedBefore < total / 2, `the first scheduler stopped mid-stream (${storedBefore} stored)`);
    assert.equal(firstSource?.stats.get(topic, "stored"), storedBefore);
    assert.equal(firstSource?.state, "STOPPED");

    // More records while no scheduler runs, then a scheduler of the same group.
    await k.produce(
      topic,
      Array.from({ length: total / 2 }, (_, n) => record(total / 2 + n)),
    );
    await consume(brokers, topic, { groupId });
    const runs = await waitFor(`${total} runs`, async () => {
      const r = await runsOf(pool, "ks-stream");
      return r.length >= total ? r : undefined;
    });
    await k.waitForCommitted(groupId, topic, total, scheduler?.eventSource);
    await stopScheduler();
    const inputs = runs.map((r) => (r.input as { n: number }).n).sort((a, b) => a - b);
    assert.deepEqual(
      inputs,
      Array.from({ length: total }, (_, n) => n),
    );
    assert.equal(await eventsOfTopic(pool, topic), total);

    // Another group reads the whole topic again: each record is delivered a second time, as after
    // a crash before its offset was committed, and finds its event stored.
    const again = await consume(brokers, topic, { groupId: `ks-${randomUUID()}` });
    await waitFor("every record seen again", () =>
      again.scheduler.eventSource?.stats.get(topic, "duplicate") === total ? true : undefined,
    );
    assert.equal(again.scheduler.eventSource?.stats.get(topic, "stored"), 0);
    assert.equal((await runsOf(pool, "ks-stream")).length, total);
    assert.equal(await eventsOfTopic(pool, topic), total);
    assert.equal(
      await metricValue(again.registry, "nexusflow_event_source_records_total", {
        topic,
        outcome: "duplicate",
      }),
      total,
    );
  });

  it("retries the record in hand while its store fails, in order, and skips one the database refuses", async (t) => {
    const brokers = requireService(t, "KAFKA_BROKERS");
    if (brokers === undefined) return;
    const k = await fixture(brokers);
    const topic = await k.topic("ks-sink", 1);
    const groupId = `ks-${randomUUID()}`;
    // The source's own contract, with a store that loses its database three times on record 1,
    // refuses record 2's value for good (a data exception) and whose run starts fail on record 3.
    const stored: EventDraft[] = [];
    let outages = 3;
    const sink: SourceEventSink = {
      store(draft) {
        const n = (draft.payload as { n: number }).n;
        if (n === 1 && outages-- > 0)
          return Promise.reject(Object.assign(new Error("connection lost"), { code: "08006" }));
        if (n === 2)
          return Promise.reject(
            Object.assign(new Error("invalid input syntax for type json"), { code: "22P02" }),
          );
        stored.push(draft);
        return Promise.resolve({
          event: {
            eventId: randomUUID(),
            seq: String(stored.length),
            ...draft,
            createdAt: new Date(),
          },
          created: true,
        });
      },
      start(event: EventRow) {
        return (event.payload as { n: number }).n === 3
          ? Promise.reject(new Error("no run now"))
          : Promise.resolve();
      },
    };
    const source = new KafkaEventSource({
      brokers: brokers.split(","),
      topics: [topic],
      groupId,
      startFrom: "earliest",
      maxWaitMs: 100,
      sessionTimeoutMs: 6000,
      retryInitialMs: 20,
      sink,
      log: testLogger("kafka-source"),
    });
    source.start();
    try {
      await k.produce(
        topic,
        Array.from({ length: 5 }, (_, n) => ({ key: "ks.sink.created", value: JSON.stringify({ n }) })),
      );
      await k.waitForCommitted(groupId, topic, 5, source);
      assert.deepEqual(
        stored.map((d) => (d.payload as { n: number }).n),
        [0, 1, 3, 4],
      );
      assert.equal(stored[1]?.idempotencyKey?.startsWith(`kafka:${topic}/0/1@`), true);
      assert.equal(source.stats.storeFailures, 3);
      assert.equal(source.stats.get(topic, "not_storable"), 1);
      assert.equal(source.stats.get(topic, "stored"), 4);
    } finally {
      await source.stop();
    }
    assert.equal(source.state, "STOPPED");
  });
});
