/** The ready queue's oldest queued task, read without disturbing the dispatcher's peek. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PriorityQueue } from "./ready-queue.js";
import { newTaskState, type TaskState } from "./run-state.js";

function queued(label: string, at: number): TaskState {
  const t = newTaskState(`run-${label}`, label, "STEP", "t", 0, new Date(at), label);
  t.status = "QUEUED";
  t.queuedAt = new Date(at);
  return t;
}

describe("ready queue: oldest queued", () => {
  it("is the earliest of each level's and the front's first task still queued", () => {
    const q = new PriorityQueue(10_000);
    assert.equal(q.oldestQueuedAt(), null);
    const low = queued("low", 1000);
    const high = queued("high", 5000);
    q.push(low, 0);
    q.push(queued("low2", 2000), 0);
    q.push(high, 5);
    assert.equal(q.oldestQueuedAt(), 1000);
    // The head by priority is `high`: reading the oldest leaves the peek's head as it was.
    assert.equal(q.peek(), high);
    low.status = "CANCELLED";
    assert.equal(q.oldestQueuedAt(), 2000, "a stale entry is skipped");
    q.shift();
    assert.equal(q.peek()?.id, "low2");
    q.unshift(queued("released", 500));
    assert.equal(q.oldestQueuedAt(), 500, "the front counts too");
  });
});
