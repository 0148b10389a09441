/**
 * The Kafka event source across a broker outage: the shared broker of scripts/test-services.sh is
 * stopped while a scheduler consumes; the source leaves RUNNING for RETRYING (the scheduler goes on
 * serving), and once the broker is back it consumes again from where it committed: the records
 * produced after the outage start their runs, and none of those before starts a second one.
 *
 * Stops and restarts the broker with scripts/kafka-ctl.sh (KAFKA_CTL overrides the script), hence
 * a serial file.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { createMetricsRegistry } from "@nexusflow/common/metrics";
import { requireService } from "@nexusflow/common/testing";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import { REPO_ROOT } from "../e2e/processes.js";
import { startTestDatabase, startTestScheduler, waitFor, workflowClient } from "../support.js";
import { KafkaFixture, eventsOfTopic, heldWorkflow, metricValue, runsOf } from "./kafka-support.js";

const execFileAsync = promisify(execFile);
const KAFKA_CTL = process.env["KAFKA_CTL"] ?? `${REPO_ROOT}scripts/kafka-ctl.sh`;

async function kafkaCtl(command: "stop" | "start"): Promise<void> {
  await execFileAsync(KAFKA_CTL, [command], { timeout: 180_000 });
}

describe("the Kafka event source across a broker outage", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let pool: pg.Pool;
  let kafka: KafkaFixture | undefined;
  let scheduler: Scheduler | undefined;
  let kafkaDown = false;

  before(async () => {
    db = await startTestDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
  });

  after(async () => {
    if (kafkaDown) await kafkaCtl("start");
    await scheduler?.stop();
    await kafka?.close();
    await pool?.end();
    await db?.close();
  });

  it("consumes again from where it committed once the broker is back", async (t) => {
    const brokers = requireService(t, "KAFKA_BROKERS");
    if (brokers === undefined) return;
    kafka = await KafkaFixture.connect(brokers);
    const topic = await kafka.topic("ks-outage", 2);
    const groupId = `ks-outage-${randomUUID()}`;
    const registry = createMetricsRegistry();
    scheduler = await startTestScheduler(db.url, {
      metrics: registry,
      eventSource: {
        brokers: brokers.split(","),
        topics: [topic],
        groupId,
        startFrom: "earliest",
        maxWaitMs: 100,
        sessionTimeoutMs: 6000,
        connectionTimeoutMs: 1000,
        requestTimeoutMs: 3000,
        retryMaxMs: 1000,
      },
    });
    await workflowClient(scheduler.address).registerWorkflow({
      definition: { case: "specJson", value: heldWorkflow("ks-outage", "ks.outage.created") },
    });
    const records = (from: number, count: number): { key: string; value: string; partition: number }[] =>
      Array.from({ length: count }, (_, i) => ({
        key: "ks.outage.created",
        value: JSON.stringify({ n: from + i }),
        partition: (from + i) % 2,
      }));
    await kafka.produce(topic, records(0, 20));
    await waitFor("the runs of the records before the outage", async () =>
      (await runsOf(pool, "ks-outage")).length === 20 ? true : undefined,
    );
    await kafka.waitForCommitted(groupId, topic, 20, scheduler.eventSource);

    await kafkaCtl("stop");
    kafkaDown = true;
    const source = scheduler.eventSource;
    await waitFor("the source to notice the outage", () => source?.state === "RETRYING", 90_000);
    assert.equal(await metricValue(registry, "nexusflow_event_source_up", {}), 0);
    assert.equal(scheduler.state, "RUNNING");

    await kafkaCtl("start");
    kafkaDown = false;
    await kafka.produce(topic, records(20, 20));
    const runs = await waitFor(
      "the runs of the records after the outage",
      async () => {
        const r = await runsOf(pool, "ks-outage");
        return r.length >= 40 ? r : undefined;
      },
      90_000,
    );
    await kafka.waitForCommitted(groupId, topic, 40, source);
    assert.deepEqual(
      runs.map((r) => (r.input as { n: number }).n).sort((a, b) => a - b),
      Array.from({ length: 40 }, (_, n) => n),
    );
    assert.equal(await eventsOfTopic(pool, topic), 40);
    assert.equal(source?.state, "RUNNING");
    assert.equal(await metricValue(registry, "nexusflow_event_source_up", {}), 1);
  });
});
