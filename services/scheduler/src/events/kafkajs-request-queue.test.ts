/**
 * The fix of kafkajs' request queue (kafkajs-request-queue.ts), on kafkajs' own RequestQueue: an
 * idle queue arms no timer (kafkajs armed one every millisecond, with a negative delay that Node
 * 24 warns about), a pending request or a running throttle still gets its check, and the fix is
 * applied once and only to the method it describes.
 */
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { describe, it } from "node:test";
import { fixKafkaRequestQueue, scheduleCheckPendingRequests } from "./kafkajs-request-queue.js";

type Queue = {
  pending: unknown[];
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  checkPendingRequests(): void;
  scheduleCheckPendingRequests: (this: Queue) => void;
};

const RequestQueue = createRequire(import.meta.url)("kafkajs/src/network/requestQueue/index.js") as {
  new (options: object): Queue;
  prototype: Queue;
};

/** A kafkajs RequestQueue as a connection makes it (nothing sent: no socket needed). */
function queue(): Queue {
  const logger = {
    debug: () => undefined,
    warn: () => undefined,
    error: () => undefined,
    info: () => undefined,
  };
  return new RequestQueue({
    instrumentationEmitter: null,
    maxInFlightRequests: null,
    requestTimeout: 30_000,
    enforceRequestTimeout: true,
    clientId: "test",
    broker: "127.0.0.1:1",
    logger: { namespace: () => logger },
    isConnected: () => true,
  });
}

describe("kafkajs' request queue, fixed", () => {
  it("is fixed once, on kafkajs' RequestQueue as installed", () => {
    const first = fixKafkaRequestQueue();
    assert.ok(first === "fixed" || first === "already fixed", first);
    assert.equal(fixKafkaRequestQueue(), "already fixed");
    assert.equal(RequestQueue.prototype.scheduleCheckPendingRequests, scheduleCheckPendingRequests);
  });

  it("arms no timer for an idle queue, and one for a pending request or a running throttle", (t) => {
    fixKafkaRequestQueue();
    t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
    const q = queue();
    let checked = 0;
    q.checkPendingRequests = () => void checked++;
    assert.equal(q.throttledUntil, -1, "kafkajs starts unthrottled at -1");
    q.scheduleCheckPendingRequests();
    assert.equal(q.throttleCheckTimeoutId, null, "idle: nothing to check (kafkajs armed 1 ms, for ever)");
    t.mock.timers.tick(1_000);
    assert.equal(checked, 0);

    q.pending.push({});
    q.scheduleCheckPendingRequests();
    const timer = q.throttleCheckTimeoutId;
    assert.notEqual(timer, null, "a pending request is checked");
    q.scheduleCheckPendingRequests();
    assert.equal(q.throttleCheckTimeoutId, timer, "one timer at a time");
    t.mock.timers.tick(9);
    assert.equal(checked, 0);
    t.mock.timers.tick(1);
    assert.equal(checked, 1, "after kafkajs' 10 ms");
    assert.equal(q.throttleCheckTimeoutId, null);

    q.pending.length = 0;
    q.throttledUntil = Date.now() + 60_000;
    q.scheduleCheckPendingRequests();
    assert.notEqual(q.throttleCheckTimeoutId, null, "a throttle running is checked at its end, as before");
    t.mock.timers.tick(59_999);
    assert.equal(checked, 1);
    t.mock.timers.tick(1);
    assert.equal(checked, 2);
  });

  it("leaves alone a method that is not the one it fixes", () => {
    const other = { scheduleCheckPendingRequests: () => undefined };
    assert.equal(fixKafkaRequestQueue(other), "not the method described");
    assert.notEqual(other.scheduleCheckPendingRequests, scheduleCheckPendingRequests);
  });
});
