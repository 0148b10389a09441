/** The dispatcher with concurrency keys: a task its keys refuse is skipped, never blocking the queue. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Claim } from "../core/index.js";
import { newTaskState, type TaskState } from "../model/run-state.js";
import { Dispatcher, type SessionHandle } from "./dispatcher.js";

function queued(name: string, type = "t", keyed = false): TaskState {
  const task = newTaskState("run", name, "STEP", type, 0, new Date(0), name);
  task.status = "QUEUED";
  task.queuedAt = new Date(0);
  // Only its presence matters to the dispatcher: the admit function decides.
  if (keyed) task.claim = { state: "free" } as Claim;
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

describe("dispatcher with concurrency keys", () => {
  it("skips a task whose key is full and leases the ones behind it; asks only for keyed tasks", () => {
    const asked: string[] = [];
    const d = new Dispatcher(10_000, (task) => {
      asked.push(task.stepId);
      return task.stepId !== "held";
    });
    for (const t of [
      queued("held", "t", true),
      queued("free"),
      queued("keyed-ok", "t", true),
      queued("other", "u"),
    ])
      d.enqueue(t);
    d.sessions.set("s", session(["t", "u"], 10));
    assert.deepEqual(
      d.take().map((p) => p.task.stepId),
      ["free", "keyed-ok", "other"],
    );
    assert.deepEqual(asked, ["held", "keyed-ok"]);
    // The refused task left the type's queue (it waits in its key's queue until offered again).
    assert.deepEqual(d.waiting("t"), []);
    assert.equal(d.sessions.get("s")?.credit, 7);
  });

  it("a refused task costs the session no credit: with one slot, the next task takes it", () => {
    const d = new Dispatcher(10_000, (task) => task.stepId !== "held");
    d.enqueue(queued("held", "t", true));
    d.enqueue(queued("next"));
    d.sessions.set("s", session(["t"], 1));
    assert.deepEqual(
      d.take().map((p) => p.task.stepId),
      ["next"],
    );
  });

  it("keyed tasks put back in front keep their order; a released lease without keys goes first", () => {
    const d = new Dispatcher(10_000, () => true);
    d.enqueue(queued("later"));
    for (const name of ["first", "second", "third"]) d.requeue(queued(name, "t", true));
    d.requeue(queued("released"));
    d.sessions.set("s", session(["t"], 10));
    assert.deepEqual(
      d.take().map((p) => p.task.stepId),
      ["released", "first", "second", "third", "later"],
    );
  });
});
