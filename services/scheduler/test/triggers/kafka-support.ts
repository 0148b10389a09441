/**
 * Helpers of the Kafka event source tests: topics made on the real broker of
 * scripts/test-services.sh, a producer, the group's committed offsets, and the runs and events a
 * topic's records became, read from PostgreSQL.
 */
import { randomUUID } from "node:crypto";
import { Kafka, logLevel, type Admin, type Message, type Producer } from "kafkajs";
import type pg from "pg";
import type { Registry } from "@nexusflow/common/metrics";
import { waitFor } from "@nexusflow/common/testing";
import type { KafkaEventSource } from "../../src/triggers/kafka-source.js";

/** A producer and an admin client on the test broker. */
export class KafkaFixture {
  private constructor(
    private readonly admin: Admin,
    private readonly producer: Producer,
  ) {}

  static async connect(brokers: string): Promise<KafkaFixture> {
    const kafka = new Kafka({
      clientId: "nexusflow-event-source-test",
      brokers: brokers.split(","),
      logLevel: logLevel.NOTHING,
    });
    const admin = kafka.admin();
    await admin.connect();
    // Plain acks from all replicas, no idempotence: what a user's service would produce.
    const producer = kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
    return new KafkaFixture(admin, producer);
  }

  /** Creates a topic of a fresh name with `partitions` partitions; returns its name. */
  async topic(prefix: string, partitions: number): Promise<string> {
    const topic = `${prefix}-${randomUUID().slice(0, 8)}`;
    await this.admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true });
    return topic;
  }

  /** Produces `messages` to `topic`, acknowledged by the broker. */
  async produce(topic: string, messages: Message[]): Promise<void> {
    await this.producer.send({ topic, acks: -1, messages });
  }

  /** Sum over the partitions of `topic` of the offsets `groupId` committed (none: 0). */
  async committed(groupId: string, topic: string): Promise<number> {
    const [offsets] = await this.admin.fetchOffsets({ groupId, topics: [topic] });
    return (offsets?.partitions ?? []).reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
  }

  /**
   * Waits until `groupId` committed `total` offsets of `topic`; a timeout says what was committed
   * per partition and what `source` was doing.
   */
  async waitForCommitted(
    groupId: string,
    topic: string,
    total: number,
    source?: KafkaEventSource,
  ): Promise<void> {
    try {
      await waitFor(`${total} offsets committed`, async () =>
        (await this.committed(groupId, topic)) === total ? true : undefined,
      );
    } catch (e) {
      const [offsets] = await this.admin.fetchOffsets({ groupId, topics: [topic] });
      const ends = await this.admin.fetchTopicOffsets(topic);
      throw new Error(
        `${(e as Error).message}: committed ${JSON.stringify(offsets?.partitions)}, ends ${JSON.stringify(
          ends.map((p) => [p.partition, p.high]),
        )}, source ${source?.state}, records ${JSON.stringify([...(source?.stats.records ?? [])])}`,
        { cause: e },
      );
    }
  }

  async close(): Promise<void> {
    await this.producer.disconnect();
    await this.admin.disconnect();
  }
}

/** A workflow started by the events of `key` that waits forever (no executor serves its step). */
export function heldWorkflow(name: string, key: string): string {
  return JSON.stringify({
    name,
    version: 1,
    triggers: [{ event: key }],
    steps: [{ id: "hold", type: "kafka-source.never" }],
  });
}

/** The runs of `workflow`: each one's input and the event that started it. */
export async function runsOf(
  pool: pg.Pool,
  workflow: string,
): Promise<{ input: unknown; eventId: string; eventKey: string }[]> {
  const { rows } = await pool.query<{ input: unknown; event_id: string; event_key: string }>(
    `SELECT input, labels->>'event-id' AS event_id, labels->>'event-key' AS event_key
     FROM workflow_runs WHERE workflow_name = $1`,
    [workflow],
  );
  return rows.map((r) => ({ input: r.input, eventId: r.event_id, eventKey: r.event_key }));
}

/** How many events the records of `topic` became (by their idempotency keys). */
export async function eventsOfTopic(pool: pg.Pool, topic: string): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(
    `SELECT count(*) AS n FROM events WHERE idempotency_key LIKE $1`,
    [`kafka:${topic}/%`],
  );
  return Number(rows[0]?.n ?? 0);
}

/** The value of a metric's series with exactly `labels` (0 when absent). */
export async function metricValue(
  registry: Registry,
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (metric === undefined) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  const want = Object.entries(labels);
  const found = values.find(
    (v) =>
      Object.keys(v.labels).length === want.length &&
      want.every(([k, value]) => String(v.labels[k]) === value),
  );
  return found?.value ?? 0;
}
