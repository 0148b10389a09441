import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, loadSchedulerConfig } from "./config.js";

const BASE = { AUTH_DISABLED: "true" };

function refuses(env: Record<string, string>, variable: string, pattern: RegExp): void {
  assert.throws(
    () => loadSchedulerConfig({ ...BASE, ...env }),
    (e: unknown) => e instanceof ConfigError && e.variable === variable && pattern.test(e.message),
  );
}

describe("scheduler Kafka event source configuration", () => {
  it("is off without topics, even with KAFKA_BROKERS", () => {
    assert.equal(loadSchedulerConfig({ ...BASE, KAFKA_BROKERS: "k:9092" }).eventSource, undefined);
  });

  it("takes KAFKA_BROKERS and KAFKA_CLIENT_ID by default, group nexusflow-event-source, the record key, latest", () => {
    assert.deepEqual(
      loadSchedulerConfig({
        ...BASE,
        KAFKA_BROKERS: "k1:9092,k2:9092",
        KAFKA_CLIENT_ID: "sched-a",
        EVENT_SOURCE_KAFKA_TOPICS: "orders, payments,orders",
      }).eventSource,
      {
        brokers: ["k1:9092", "k2:9092"],
        topics: ["orders", "payments"],
        groupId: "nexusflow-event-source",
        keyHeader: undefined,
        startFrom: "latest",
        clientId: "sched-a",
      },
    );
  });

  it("reads its own brokers, group, key header and start position", () => {
    assert.deepEqual(
      loadSchedulerConfig({
        ...BASE,
        KAFKA_BROKERS: "lifecycle:9092",
        EVENT_SOURCE_KAFKA_BROKERS: "ingest:9093",
        EVENT_SOURCE_KAFKA_TOPICS: "shop.orders_v2",
        EVENT_SOURCE_KAFKA_GROUP_ID: "nf-prod",
        EVENT_SOURCE_KAFKA_KEY_HEADER: "event-type",
        EVENT_SOURCE_KAFKA_START_FROM: "earliest",
      }).eventSource,
      {
        brokers: ["ingest:9093"],
        topics: ["shop.orders_v2"],
        groupId: "nf-prod",
        keyHeader: "event-type",
        startFrom: "earliest",
        clientId: "nexusflow-scheduler",
      },
    );
  });

  it("names the variable at fault", () => {
    refuses(
      { EVENT_SOURCE_KAFKA_TOPICS: "orders" },
      "EVENT_SOURCE_KAFKA_BROKERS",
      /KAFKA_BROKERS is not set/,
    );
    refuses(
      { EVENT_SOURCE_KAFKA_TOPICS: "orders", EVENT_SOURCE_KAFKA_BROKERS: "k:9092,k2" },
      "EVENT_SOURCE_KAFKA_BROKERS",
      /entry 2 is not host:port: "k2"/,
    );
    refuses(
      { KAFKA_BROKERS: "k:9092", EVENT_SOURCE_KAFKA_TOPICS: "orders,bad topic" },
      "EVENT_SOURCE_KAFKA_TOPICS",
      /not a Kafka topic name: "bad topic"/,
    );
    refuses(
      { KAFKA_BROKERS: "k:9092", EVENT_SOURCE_KAFKA_TOPICS: ".." },
      "EVENT_SOURCE_KAFKA_TOPICS",
      /not a Kafka topic name/,
    );
    refuses(
      { KAFKA_BROKERS: "k:9092", EVENT_SOURCE_KAFKA_TOPICS: "t".repeat(250) },
      "EVENT_SOURCE_KAFKA_TOPICS",
      /not a Kafka topic name/,
    );
    refuses(
      { KAFKA_BROKERS: "k:9092", EVENT_SOURCE_KAFKA_TOPICS: "orders", EVENT_SOURCE_KAFKA_START_FROM: "now" },
      "EVENT_SOURCE_KAFKA_START_FROM",
      /expected one of latest, earliest/,
    );
    refuses(
      { EVENT_SOURCE_KAFKA_GROUP_ID: "g" },
      "EVENT_SOURCE_KAFKA_TOPICS",
      /required when EVENT_SOURCE_KAFKA_GROUP_ID/,
    );
    refuses({ KAFKA_BROKERS: "k:9092,:1" }, "KAFKA_BROKERS", /entry 2 is not host:port/);
  });
});
