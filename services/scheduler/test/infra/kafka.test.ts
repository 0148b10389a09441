/**
 * Proves the Kafka test harness (scripts/test-services.sh) and KafkaJS against the real broker:
 * a keyed, headered batch produced to a fresh topic comes back in order to a consumer group that
 * reads from the beginning, and the group's committed offset is visible to the admin client.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { requireService } from "@nexusflow/common/testing";
import { Kafka, Partitioners, logLevel } from "kafkajs";
import type { Admin, Consumer, IHeaders, KafkaMessage, Producer } from "kafkajs";

/** Rejects with a message naming `what` unless `promise` settles within `ms`; clears its timer. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Header values arrive as Buffers (or arrays of them); compare them as strings. */
function headersAsStrings(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (value === undefined) continue;
    out[name] = Array.isArray(value) ? value.map(String).join(",") : value.toString();
  }
  return out;
}

test(
  "kafka: produce keyed messages with headers, consume them in order from a consumer group",
  { timeout: 90_000 },
  async (t) => {
    const brokers = requireService(t, "KAFKA_BROKERS");
    if (brokers === undefined) return;

    const suffix = randomUUID();
    const topic = `nexusflow-infra-${suffix}`;
    const groupId = `nexusflow-infra-group-${suffix}`;
    const kafka = new Kafka({
      clientId: "nexusflow-infra-test",
      brokers: brokers.split(","),
      connectionTimeout: 5_000,
      requestTimeout: 15_000,
      logLevel: logLevel.WARN,
    });

    const admin: Admin = kafka.admin();
    const producer: Producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    const consumer: Consumer = kafka.consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 1_000 });
    try {
      await admin.connect();
      const created = await admin.createTopics({
        topics: [{ topic, numPartitions: 1, replicationFactor: 1 }],
        waitForLeaders: true,
      });
      assert.equal(created, true, "topic should be newly created");
      assert.ok((await admin.listTopics()).includes(topic));

      const sent = [
        { key: "run-1", value: "task-a queued", headers: { "x-run-id": "run-1", "x-attempt": "1" } },
        { key: "run-2", value: "task-b queued", headers: { "x-run-id": "run-2", "x-attempt": "1" } },
        { key: "run-1", value: "task-a leased", headers: { "x-run-id": "run-1", "x-attempt": "2" } },
        {
          key: "run-3",
          value: Buffer.from([0, 1, 2, 254, 255]),
          headers: { "x-run-id": "run-3", "x-attempt": "1" },
        },
      ];
      await producer.connect();
      const metadata = await producer.send({ topic, acks: -1, messages: sent });
      assert.equal(metadata.length, 1);
      assert.equal(metadata[0]?.errorCode, 0);
      assert.equal(metadata[0]?.baseOffset, "0");

      const received: { topic: string; partition: number; message: KafkaMessage }[] = [];
      let resolveAll!: () => void;
      const gotAll = new Promise<void>((resolve) => (resolveAll = resolve));
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await consumer.run({
        autoCommit: false,
        // Only record here: a throw inside eachMessage makes KafkaJS retry, not fail the test.
        eachMessage: ({ topic: from, partition, message }) => {
          received.push({ topic: from, partition, message });
          if (received.length >= sent.length) resolveAll();
          return Promise.resolve();
        },
      });
      await within(gotAll, 60_000, `${sent.length} messages on ${topic}`);

      assert.equal(received.length, sent.length, "no extra messages");
      assert.deepEqual(
        received.map((r) => `${r.topic}/${r.partition}@${r.message.offset}`),
        sent.map((_, i) => `${topic}/0@${i}`),
        "offsets in produce order",
      );
      assert.deepEqual(
        received.map(({ message: m }) => ({
          key: m.key?.toString(),
          value: m.value,
          headers: headersAsStrings(m.headers),
        })),
        sent.map((m) => ({ key: m.key, value: Buffer.from(m.value), headers: m.headers })),
      );

      // The group coordinator path (OffsetCommit/OffsetFetch) is where a client/broker version
      // mismatch would show, so prove it with a commit read back through the admin client.
      await consumer.commitOffsets([{ topic, partition: 0, offset: String(sent.length) }]);
      const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
      assert.deepEqual(offsets, [
        { topic, partitions: [{ partition: 0, offset: String(sent.length), metadata: null }] },
      ]);
    } finally {
      await consumer.disconnect();
      await producer.disconnect();
      await admin.deleteTopics({ topics: [topic], timeout: 10_000 }).catch((err: unknown) => {
        t.diagnostic(`could not delete ${topic}: ${String(err)}`);
      });
      await admin.disconnect();
    }
  },
);
