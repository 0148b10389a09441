/** KafkaPublisher's options, checked when it is made rather than when it first connects. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createLogger } from "@nexusflow/common";
import { KafkaPublisher } from "./kafka-publisher.js";

const log = createLogger("test", "silent");

describe("KafkaPublisher options", () => {
  it("refuses options kafkajs or a broker would refuse later", () => {
    for (const [options, field] of [
      [{ sendRetries: 0 }, /sendRetries must be a whole number of at least 1, got 0/],
      [{ sendRetries: 1.5 }, /sendRetries/],
      [{ partitions: 0 }, /partitions/],
      [{ requestTimeoutMs: Number.NaN }, /requestTimeoutMs/],
      [{ maxSendBytes: 10 }, /maxSendBytes must be a whole number of at least 1024/],
      [{ maxEventBytes: Number.POSITIVE_INFINITY }, /maxEventBytes/],
    ] as const)
      assert.throws(() => new KafkaPublisher({ brokers: ["127.0.0.1:9"], log, ...options }), {
        name: "RangeError",
        message: field,
      });
  });

  it("takes the defaults and valid values", () => {
    const publisher = new KafkaPublisher({
      brokers: ["127.0.0.1:9"],
      log,
      sendRetries: 1,
      maxEventBytes: 4096,
    });
    assert.equal(publisher.topic, "nexusflow.events");
  });
});
