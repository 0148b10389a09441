/**
 * Lifecycle events on the real Kafka broker of scripts/test-services.sh: every committed event of
 * a run arrives, keyed by the run id, in sequence order; a broker outage mid-run delays events but
 * not the run; a scheduler SIGKILLed mid-publish loses nothing on restart (duplicates only as
 * repeats of an event id); a batch larger than a topic's `max.message.bytes` goes out in several
 * requests.
 *
 * The outage test stops and restarts the shared broker with scripts/kafka-ctl.sh (override the
 * script with KAFKA_CTL when the services were started from another checkout).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { after, afterEach, before, describe, it } from "node:test";
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { requireService } from "@nexusflow/common/testing";
import { LifecycleEventSchema, RunStatus } from "@nexusflow/gen";
import { Kafka, logLevel } from "kafkajs";
import pg from "pg";
import { KafkaPublisher } from "../../src/events/kafka-publisher.js";
import type { OutboxRecord } from "../../src/events/publisher.js";
import { OutboxRelay } from "../../src/events/relay.js";
import type { Scheduler } from "../../src/scheduler.js";
import { REPO_ROOT, killAll } from "../e2e/processes.js";
import {
  RawSession,
  outboxEvents,
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";
import { AutoExecutor, EventCollector, assertRunEvents, relayEnv, startRelayProcess } from "./support.js";

const execFileAsync = promisify(execFile);
const KAFKA_CTL = process.env["KAFKA_CTL"] ?? `${REPO_ROOT}scripts/kafka-ctl.sh`;

async function kafkaCtl(command: "stop" | "start"): Promise<void> {
  await execFileAsync(KAFKA_CTL, [command], { timeout: 180_000 });
}

/** A three-step chain; `a` is retried (the executor fails its first attempt in the first test). */
const CHAIN = {
  name: "events-chain",
  version: 1,
  steps: [
    { id: "a", type: "auto", retry: { maxAttempts: 3, initialInterval: "10ms" } },
    { id: "b", type: "auto", dependsOn: ["a"] },
    { id: "c", type: "auto", dependsOn: ["b"] },
  ],
};

/** `b` is done by a hand-driven session, so a test can hold the run between `a` and `c`. */
const HELD = {
  name: "events-held",
  version: 1,
  steps: [
    { id: "a", type: "auto" },
    { id: "b", type: "manual", dependsOn: ["a"] },
    { id: "c", type: "auto", dependsOn: ["b"] },
  ],
};

/** A small fan-out with retries, so leases lost in a crash are retried. */
const FAN = {
  name: "events-fan",
  version: 1,
  steps: [
    { id: "a", type: "auto", retry: { maxAttempts: 5, initialInterval: "10ms" } },
    { id: "b", type: "auto", dependsOn: ["a"], retry: { maxAttempts: 5, initialInterval: "10ms" } },
    { id: "c", type: "auto", dependsOn: ["a"], retry: { maxAttempts: 5, initialInterval: "10ms" } },
    { id: "d", type: "auto", dependsOn: ["b", "c"], retry: { maxAttempts: 5, initialInterval: "10ms" } },
  ],
};

/** Makes a topic of one partition that takes at most 64 KiB per record batch; returns its name. */
async function smallTopic(brokers: string): Promise<string> {
  const topic = `nexusflow-events-test-${randomUUID()}`;
  const kafka = new Kafka({
    clientId: "nexusflow-events-test",
    brokers: brokers.split(","),
    logLevel: logLevel.NOTHING,
  });
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({
      topics: [{ topic, numPartitions: 1, configEntries: [{ name: "max.message.bytes", value: "65536" }] }],
      waitForLeaders: true,
    });
  } finally {
    await admin.disconnect();
  }
  return topic;
}

/** Outbox records of `events` of one run, in sequence from 1, as the relay reads them. */
function outboxRecords(
  runId: string,
  events: readonly NonNullable<MessageInitShape<typeof LifecycleEventSchema>["event"]>[],
): OutboxRecord[] {
  return events.map((e, i) => {
    const event = create(LifecycleEventSchema, {
      eventId: randomUUID(),
      runId,
      sequence: BigInt(i + 1),
      time: timestampFromDate(new Date()),
      workflowName: "large",
      workflowVersion: 1,
      event: e,
    });
    return {
      id: i + 1,
      eventId: event.eventId,
      runId,
      sequence: i + 1,
      type: event.event.case ?? "",
      payload: toBinary(LifecycleEventSchema, event),
      traceContext: null,
      createdAt: new Date(),
    };
  });
}

describe("lifecycle events on Kafka", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let pool: pg.Pool;
  const cleanups: (() => Promise<void> | void)[] = [];

  /** An in-process scheduler with its relay publishing to `topic`. */
  async function schedulerWithRelay(
    brokers: string,
    topic: string,
  ): Promise<{ scheduler: Scheduler; relay: OutboxRelay }> {
    const scheduler = await startTestScheduler(db.url);
    const relayPool = new pg.Pool({ connectionString: db.url, max: 2 });
    const log = testLogger("relay");
    const relay = new OutboxRelay({
      pool: relayPool,
      log,
      publisher: new KafkaPublisher({
        brokers: brokers.split(","),
        topic,
        partitions: 3,
        log,
        requestTimeoutMs: 5000,
      }),
      pollIntervalMs: 20,
      retryMaxMs: 1000,
    });
    relay.start();
    cleanups.push(async () => {
      await relay.stop();
      await relayPool.end();
      await scheduler.stop();
    });
    const client = workflowClient(scheduler.address);
    for (const spec of [CHAIN, HELD, FAN])
      await client.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(spec) } });
    return { scheduler, relay };
  }

  async function collector(brokers: string, topic: string): Promise<EventCollector> {
    const c = await EventCollector.start(brokers.split(","), topic);
    cleanups.push(() => c.stop());
    return c;
  }

  function executor(address: string, options: ConstructorParameters<typeof AutoExecutor>[1]): AutoExecutor {
    const e = new AutoExecutor(address, options);
    cleanups.push(() => e.close());
    return e;
  }

  before(async () => {
    db = await startTestDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
  });

  // One relay publishes per database (advisory lock): each test's scheduler and relay go with it.
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    await killAll();
  });

  after(async () => {
    await pool?.end();
    await db?.close();
  });

  it(
    "publishes every event of each run, keyed by run id, in sequence order",
    { timeout: 120_000 },
    async (t) => {
      const brokers = requireService(t, "KAFKA_BROKERS");
      if (brokers === undefined) return;
      const topic = `nexusflow-events-test-${randomUUID()}`;
      const { scheduler } = await schedulerWithRelay(brokers, topic);
      const failedOnce = new Set<string>();
      await executor(scheduler.address, {
        executorId: "auto-1",
        taskTypes: ["auto"],
        // The first attempt of every run's step `a` fails (retryable).
        fail: (lease) => {
          if (lease.stepId !== "a" || failedOnce.has(lease.runId)) return false;
          failedOnce.add(lease.runId);
          return true;
        },
      }).start();
      const events = await collector(brokers, topic);
      const client = workflowClient(scheduler.address);

      const runIds: string[] = [];
      for (let i = 0; i < 6; i++) {
        const { run } = await client.startRun({ workflowName: CHAIN.name, input: jsonToValue({ i }) });
        assert.ok(run);
        runIds.push(run.id);
      }
      for (const id of runIds) assert.equal((await waitForRun(client, id)).status, RunStatus.SUCCEEDED);

      for (const id of runIds) {
        const committed = await outboxEvents(pool, [id]);
        const received = await events.waitForRun(id, committed.length);
        assertRunEvents(id, received, committed);
        assert.deepEqual(
          committed.map((c) => c.type),
          [
            "runStarted",
            "taskLeased",
            "taskStarted",
            "taskFailed",
            "taskRetryScheduled",
            "taskLeased",
            "taskStarted",
            "taskSucceeded",
            "taskLeased",
            "taskStarted",
            "taskSucceeded",
            "taskLeased",
            "taskStarted",
            "taskSucceeded",
            "runCompleted",
          ],
        );
        const last = received.at(-1)?.event.event;
        assert.equal(last?.case, "runCompleted");
        assert.equal(last.case === "runCompleted" ? last.value.status : undefined, RunStatus.SUCCEEDED);
      }
      assert.deepEqual(events.undecodable, []);
      // Runs spread over the topic's partitions (3), each run on one.
      assert.ok(
        new Set(events.received.map((r) => r.partition)).size > 1,
        "all runs landed on one partition",
      );
    },
  );

  it(
    "keeps running while Kafka is down and publishes everything, in order, once it is back",
    { timeout: 240_000 },
    async (t) => {
      const brokers = requireService(t, "KAFKA_BROKERS");
      if (brokers === undefined) return;
      const topic = `nexusflow-events-test-${randomUUID()}`;
      const { scheduler, relay } = await schedulerWithRelay(brokers, topic);
      await executor(scheduler.address, { executorId: "auto-2", taskTypes: ["auto"] }).start();
      const manual = new RawSession(scheduler.address);
      cleanups.push(() => manual.close());
      manual.send({ case: "attach", value: { executorId: "manual-2", taskTypes: ["manual"], slots: 1 } });
      await manual.next("attachAck");
      manual.send({ case: "credit", value: { n: 1 } });
      const client = workflowClient(scheduler.address);
      const before = await collector(brokers, topic);

      const { run } = await client.startRun({ workflowName: HELD.name, input: jsonToValue({}) });
      assert.ok(run);
      const lease = await manual.next("lease", 30_000);
      // Mid-run: the events so far (run started, `a` done, `b` leased) are on Kafka.
      await before.waitForRun(run.id, 5);
      await before.stop();

      let kafkaDown = false;
      cleanups.push(async () => {
        if (kafkaDown) await kafkaCtl("start");
      });
      await kafkaCtl("stop");
      kafkaDown = true;

      // State changes go on: `b` and `c` complete and the run finishes, and new runs start and finish.
      manual.send({ case: "started", value: { key: lease.key } });
      manual.send({ case: "completed", value: { key: lease.key, output: jsonToValue({ ok: true }) } });
      assert.equal((await waitForRun(client, run.id)).status, RunStatus.SUCCEEDED);
      const { run: during } = await client.startRun({ workflowName: CHAIN.name, input: jsonToValue({}) });
      assert.ok(during);
      assert.equal((await waitForRun(client, during.id)).status, RunStatus.SUCCEEDED);
      const pending = (await outboxEvents(pool, [run.id])).filter((e) => !e.published);
      assert.ok(
        pending.length >= 5,
        `events committed during the outage wait unpublished (${pending.length})`,
      );
      await waitFor("the relay to notice the outage", () => relay.stats.failures > 0, 60_000);

      await kafkaCtl("start");
      kafkaDown = false;
      const afterOutage = await collector(brokers, topic);
      for (const id of [run.id, during.id]) {
        await waitFor(
          `all events of ${id} to be published`,
          async () => (await outboxEvents(pool, [id])).every((e) => e.published),
          90_000,
        );
        const committed = await outboxEvents(pool, [id]);
        assertRunEvents(id, await afterOutage.waitForRun(id, committed.length), committed);
      }
      assert.deepEqual(afterOutage.undecodable, []);
    },
  );

  it(
    "loses and reorders nothing when the scheduler is SIGKILLed mid-publish",
    { timeout: 240_000 },
    async (t) => {
      const brokers = requireService(t, "KAFKA_BROKERS");
      if (brokers === undefined) return;
      const topic = `nexusflow-events-test-${randomUUID()}`;
      const env = relayEnv(db.url, brokers, topic);
      const startProcess = (name: string) => startRelayProcess(name, env);

      const first = await startProcess("scheduler-1");
      const client1 = workflowClient(first.address);
      await client1.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(FAN) } });
      await executor(first.address, { executorId: "auto-3", taskTypes: ["auto"], slots: 16 }).start();
      const events = await collector(brokers, topic);

      const runIds: string[] = [];
      for (let i = 0; i < 40; i++) {
        const { run } = await client1.startRun({ workflowName: FAN.name, input: jsonToValue({ i }) });
        assert.ok(run);
        runIds.push(run.id);
      }
      // Kill while events stream out: some are on Kafka, more are committed and waiting.
      await waitFor("events to reach Kafka", () => events.received.length >= 30, 60_000);
      await first.process.kill();
      const { rows } = await pool.query<{ unpublished: string; total: string }>(
        `SELECT sum(event_count) FILTER (WHERE published_at IS NULL) AS unpublished,
                sum(event_count) AS total FROM outbox_events`,
      );
      t.diagnostic(
        `killed with ${rows[0]?.unpublished}/${rows[0]?.total} events unpublished, ${events.received.length} received`,
      );
      // The kill rarely lands between Kafka's ack and the UPDATE that marks a batch; make that window
      // certain: the newest published rows (each the events of one commit) count as acked but
      // never marked, so they are sent again.
      const REPUBLISHED = 10;
      await pool.query(
        `UPDATE outbox_events SET published_at = NULL WHERE id IN (
         SELECT id FROM outbox_events WHERE published_at IS NOT NULL ORDER BY id DESC LIMIT $1)`,
        [REPUBLISHED],
      );

      const second = await startProcess("scheduler-2");
      await executor(second.address, { executorId: "auto-4", taskTypes: ["auto"], slots: 16 }).start();
      const client2 = workflowClient(second.address);
      for (const id of runIds) {
        const done = await waitForRun(client2, id, 90_000);
        assert.equal(done.status, RunStatus.SUCCEEDED, `run ${id}`);
      }

      await waitFor(
        "the outbox to be fully published",
        async () => {
          const r = await pool.query("SELECT 1 FROM outbox_events WHERE published_at IS NULL LIMIT 1");
          return r.rowCount === 0;
        },
        90_000,
      );
      let duplicates = 0;
      for (const id of runIds) {
        const committed = await outboxEvents(pool, [id]);
        const received = await events.waitForRun(id, committed.length);
        assertRunEvents(id, received, committed);
        assert.equal(committed[0]?.type, "runStarted");
        assert.equal(committed.at(-1)?.type, "runCompleted");
        duplicates += received.length - committed.length;
      }
      t.diagnostic(`${duplicates} duplicate deliveries (same event ids)`);
      assert.ok(
        duplicates >= REPUBLISHED,
        `the unmarked rows were published again (${duplicates} duplicates)`,
      );
      assert.deepEqual(events.undecodable, []);
      assert.deepEqual(
        second.process.problems().filter((l) => l.raw !== undefined),
        [],
      );
    },
  );

  it(
    "publishes a batch larger than the broker takes in one request in several, in order",
    { timeout: 120_000 },
    async (t) => {
      const brokers = requireService(t, "KAFKA_BROKERS");
      if (brokers === undefined) return;
      // A topic whose record batches may be at most 64 KiB (the broker's default is 1 MiB).
      const topic = await smallTopic(brokers);
      // Twenty events of 20 KB of one run: 400 KB for its partition in one batch, before.
      const runId = randomUUID();
      const records = outboxRecords(
        runId,
        Array.from({ length: 20 }, () => ({
          case: "runStarted" as const,
          value: { input: jsonToValue({ text: "x".repeat(20_000) }) },
        })),
      );
      const log = testLogger("publisher");
      const publisher = new KafkaPublisher({
        brokers: brokers.split(","),
        topic,
        log,
        maxSendBytes: 48 * 1024,
      });
      cleanups.push(() => publisher.close());
      const signal = new AbortController().signal;
      await publisher.connect(signal);
      await publisher.publish(records, signal);
      const events = await collector(brokers, topic);
      await waitFor("every event read back", () => events.received.length === records.length);
      assert.deepEqual(
        events.received.map((e) => Number(e.event.sequence)),
        records.map((r) => r.sequence),
      );
    },
  );

  it(
    "publishes an event larger than the topic takes truncated, and the events after it whole",
    { timeout: 120_000 },
    async (t) => {
      const brokers = requireService(t, "KAFKA_BROKERS");
      if (brokers === undefined) return;
      // A topic that takes at most 64 KiB per message; the publisher reads that from the broker.
      const topic = await smallTopic(brokers);
      const runId = randomUUID();
      const output = { report: "y".repeat(200_000) };
      const events: NonNullable<MessageInitShape<typeof LifecycleEventSchema>["event"]>[] = [
        { case: "runStarted", value: { input: jsonToValue({ small: true }) } },
        {
          case: "taskSucceeded",
          value: { taskRunId: "t1", stepId: "a", attempt: 1, output: jsonToValue(output) },
        },
        // Each within the topic's limit, together over it: not one record batch.
        {
          case: "taskSucceeded",
          value: { taskRunId: "t2", stepId: "b", attempt: 1, output: jsonToValue("z".repeat(30_000)) },
        },
        {
          case: "taskSucceeded",
          value: { taskRunId: "t3", stepId: "c", attempt: 1, output: jsonToValue("z".repeat(30_000)) },
        },
        { case: "runCompleted", value: { status: RunStatus.SUCCEEDED, output: jsonToValue({ done: 1 }) } },
      ];
      const records = outboxRecords(runId, events);
      const publisher = new KafkaPublisher({
        brokers: brokers.split(","),
        topic,
        log: testLogger("publisher"),
      });
      cleanups.push(() => publisher.close());
      const signal = new AbortController().signal;
      await publisher.connect(signal);
      await publisher.publish(records, signal);
      const received = await collector(brokers, topic);
      await waitFor("every event read back", () => received.received.length === records.length);
      const [started, succeeded, , , completed] = received.received;
      assert.deepEqual(
        received.received.map((e) => [
          Number(e.event.sequence),
          e.event.truncated,
          e.headers["nf-truncated"],
        ]),
        [
          [1, false, undefined],
          [2, true, "true"],
          [3, false, undefined],
          [4, false, undefined],
          [5, false, undefined],
        ],
      );
      assert.equal(started?.event.event.case, "runStarted");
      assert.equal(succeeded?.event.event.case, "taskSucceeded");
      if (succeeded?.event.event.case === "taskSucceeded") {
        assert.equal(succeeded.event.event.value.output, undefined);
        assert.equal(succeeded.event.event.value.stepId, "a");
      }
      assert.equal(completed?.event.event.case, "runCompleted");
      if (completed?.event.event.case === "runCompleted")
        assert.deepEqual(valueToJson(completed.event.event.value.output), { done: 1 });
    },
  );
});
