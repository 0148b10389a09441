/** The wire shape of a published event, and decoding it back, without a broker. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LifecycleEventSchema } from "@nexusflow/gen";
import { EventDecodeError, decodeEventMessage, decodeLifecycleEvent } from "./decode.js";
import { eventMessage, protoEventType, type OutboxRecord } from "./publisher.js";

const RUN = "0b6d9d4e-8f53-4d59-9f0b-8a4b7b1c2d3e";
const EVENT = "5f0c3a52-8a3e-4a55-b0f1-3d1e2c4b5a69";

function record(overrides: Partial<OutboxRecord> = {}): OutboxRecord {
  const payload = toBinary(
    LifecycleEventSchema,
    create(LifecycleEventSchema, {
      eventId: EVENT,
      runId: RUN,
      sequence: 4n,
      time: timestampFromDate(new Date("2026-11-26T10:00:00.000Z")),
      workflowName: "wf",
      workflowVersion: 2,
      event: { case: "taskSucceeded", value: { taskRunId: "t1", stepId: "charge", attempt: 1 } },
    }),
  );
  return {
    id: 17,
    eventId: EVENT,
    runId: RUN,
    sequence: 4,
    type: "taskSucceeded",
    payload,
    traceContext: null,
    createdAt: new Date("2026-11-26T10:00:00.000Z"),
    ...overrides,
  };
}

describe("event messages", () => {
  it("names event types as the .proto does", () => {
    assert.equal(protoEventType("taskSucceeded"), "task_succeeded");
    assert.equal(protoEventType("runStarted"), "run_started");
    assert.equal(protoEventType("taskRetryScheduled"), "task_retry_scheduled");
    // Every case of the oneof, task_held included, gets its .proto field name.
    const event = LifecycleEventSchema.oneofs.find((o) => o.name === "event");
    assert.ok(event !== undefined && event.fields.some((f) => f.name === "task_held"));
    for (const f of event.fields) assert.equal(protoEventType(f.localName), f.name);
    // Named again from what it remembered, and past its bound still named right.
    for (const f of event.fields) assert.equal(protoEventType(f.localName), f.name);
    for (let i = 0; i < 300; i++) assert.equal(protoEventType(`someCase${i}X`), `some_case${i}_x`);
  });

  it("keys by run id and carries type, content type, event id and sequence headers", () => {
    const m = eventMessage(record());
    assert.equal(m.key, RUN);
    assert.deepEqual(m.headers, {
      "nf-event-type": "task_succeeded",
      "content-type": "application/x-protobuf",
      "nf-event-id": EVENT,
      "nf-sequence": "4",
    });
    assert.equal(m.timestamp, String(Date.parse("2026-11-26T10:00:00.000Z")));
    assert.deepEqual(new Uint8Array(m.value), record().payload);
  });

  it("adds W3C trace context headers only when present", () => {
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const m = eventMessage(record({ traceContext: { traceparent, tracestate: "nf=1", baggage: 3 } }));
    assert.equal(m.headers["traceparent"], traceparent);
    assert.equal(m.headers["tracestate"], "nf=1");
    assert.equal(m.headers["baggage"], undefined);
    assert.equal(
      eventMessage(record({ traceContext: { traceparent: "" } })).headers["traceparent"],
      undefined,
    );
  });

  it("decodes a published message back to JSON with its headers", () => {
    const m = eventMessage(record());
    const decoded = decodeEventMessage("topic-a", 3, {
      key: Buffer.from(m.key),
      value: m.value,
      headers: Object.fromEntries(Object.entries(m.headers).map(([k, v]) => [k, Buffer.from(v)])),
      offset: "42",
      timestamp: m.timestamp,
    });
    assert.deepEqual(decoded, {
      topic: "topic-a",
      partition: 3,
      offset: "42",
      key: RUN,
      timestamp: "2026-11-26T10:00:00.000Z",
      headers: m.headers,
      type: "task_succeeded",
      event: {
        eventId: EVENT,
        runId: RUN,
        sequence: "4",
        time: "2026-11-26T10:00:00Z",
        workflowName: "wf",
        workflowVersion: 2,
        taskSucceeded: { taskRunId: "t1", stepId: "charge", attempt: 1 },
      },
    });
  });

  it("rejects values that are not lifecycle events", () => {
    assert.throws(
      () => decodeLifecycleEvent({ value: Buffer.from([0xff, 0xff, 0xff]), headers: {} }),
      EventDecodeError,
    );
    assert.throws(
      () => decodeLifecycleEvent({ value: record().payload, headers: { "content-type": "text/plain" } }),
      EventDecodeError,
    );
    assert.throws(() => decodeLifecycleEvent({ value: null }), EventDecodeError);
  });
});
