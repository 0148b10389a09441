/** The dispatcher's order of ready tasks: priority with ageing, a released lease first. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newTaskState, type TaskState } from "../model/run-state.js";
import { Dispatcher, type SessionHandle } from "./dispatcher.js";

const T0 = Date.UTC(2026, 0, 31, 12, 0, 0);

/** A queued task of `type` that was queued at T0 + `atMs`. */
function queued(name: string, atMs: number, type = "t"): TaskState {
  const task = newTaskState("run", name, "STEP", type, 0, new Date(T0), name);
  task.status = "QUEUED";
  task.queuedAt = new Date(T0 + atMs);
  return task;
}

function session(types: string[], credit: number): SessionHandle {
  return {
    id: "s",
    executorId: "e",
    types: new Set(types),
    credit,
    leases: new Set(),
    draining: false,
    lastSeen: 0,
    send: () => undefined,
    close: () => undefined,
  };
}

/** The order in which one session with enough credit takes every task. */
function drain(d: Dispatcher, types = ["t"]): string[] {
  d.sessions.set("s", session(types, 1000));
  return d.take().map((p) => p.task.stepId);
}

describe("dispatcher order", () => {
  it("serves equal priorities oldest first, as a FIFO", () => {
    const d = new Dispatcher(10_000);
    for (const [name, at] of [
      ["a", 0],
      ["b", 5],
      ["c", 9],
    ] as const)
      d.enqueue(queued(name, at));
    assert.deepEqual(drain(d), ["a", "b", "c"]);
  });

  it("serves higher priority first, each level worth the ageing time waited", () => {
    const d = new Dispatcher(10_000);
    // Enqueued as they become ready (queue times only grow).
    d.enqueue(queued("old-low", 0), 0);
    d.enqueue(queued("low", 0), -1);
    d.enqueue(queued("newer-high", 5_000), 1); // one level (10 s) up, 5 s later: ahead
    d.enqueue(queued("new-high", 15_000), 1); // one level up, 15 s later: behind old-low
    d.enqueue(queued("top", 29_000), 3); // three levels (30 s) up, 29 s later: 1 s ahead of old-low
    assert.deepEqual(
      d.waiting("t").map((t) => t.stepId),
      ["newer-high", "top", "old-low", "new-high", "low"],
    );
    assert.deepEqual(drain(d), ["newer-high", "top", "old-low", "new-high", "low"]);
    assert.deepEqual(d.waiting("t"), []);
  });

  it("never starves a low priority: a stream of higher ones passes it only for a bounded time", () => {
    const d = new Dispatcher(1_000);
    d.enqueue(queued("waiting", 0), -10);
    // Priority 10 arrives every 100 ms: 20 levels above, they pass it for 20 s and no longer.
    for (let at = 0; at <= 30_000; at += 100) d.enqueue(queued(`hi-${at}`, at), 10);
    const order = drain(d);
    const at = order.indexOf("waiting");
    assert.equal(order[at - 1], "hi-19900");
    assert.equal(order[at + 1], "hi-20000", "ties go to the one queued first");
  });

  it("puts a released lease back in front, and picks across a session's types by place", () => {
    const d = new Dispatcher(10_000);
    d.enqueue(queued("x1", 0, "x"));
    d.enqueue(queued("y1", 1, "y"), 1);
    const released = queued("x0", 50, "x");
    d.requeue(released);
    assert.deepEqual(d.ahead(released), 0);
    assert.deepEqual(drain(d, ["x", "y"]), ["x0", "y1", "x1"]);
  });

  it("counts the tasks ahead of one, in its place", () => {
    const d = new Dispatcher(10_000);
    const a = queued("a", 0);
    const b = queued("b", 1_000);
    const c = queued("c", 2_000);
    d.enqueue(a);
    d.enqueue(b);
    d.enqueue(c, 1);
    assert.deepEqual([d.ahead(c), d.ahead(a), d.ahead(b)], [0, 1, 2]);
    // A task that left the queue (leased, cancelled) is skipped.
    a.status = "LEASED";
    assert.deepEqual([d.ahead(c), d.ahead(b)], [0, 1]);
  });
});
