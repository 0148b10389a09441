/**
 * The dispatcher with fair shares: a pass interleaves tenants by weight, a capped tenant yields to
 * another type's work on a session that runs both and takes the free slots when nothing else is
 * ready (work-conserving), leases are charged as they are taken and released by the core, and
 * `ahead` counts within the task's own key.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PLAIN_SHARE, releaseShare, type FairPath } from "../core/fair-shares.js";
import { newTaskState, type TaskState } from "../model/run-state.js";
import { Dispatcher, type SessionHandle } from "./dispatcher.js";

let ids = 0;

function queued(tenant: string, type = "t"): TaskState {
  const task = newTaskState(`run-${tenant}`, tenant, "STEP", type, 0, new Date(0), `${tenant}-${++ids}`);
  task.status = "QUEUED";
  task.queuedAt = new Date(0);
  return task;
}

function tenant(name: string, max = 0, weight = 1): FairPath {
  return { tenant: name, key: "", tenantShare: { weight, min: 0, max }, keyShare: PLAIN_SHARE };
}

function session(id: string, types: string[], credit: number): SessionHandle {
  return {
    id,
    executorId: id,
    types: new Set(types),
    credit,
    leases: new Set(),
    draining: false,
    lastSeen: 0,
    send: () => undefined,
    close: () => undefined,
  };
}

describe("dispatcher with fair shares", () => {
  it("one pass interleaves the tenants by weight, whatever the order they were queued in", () => {
    const d = new Dispatcher();
    for (let i = 0; i < 100; i++) d.enqueue(queued("A"), 0, tenant("A"));
    for (let i = 0; i < 10; i++) d.enqueue(queued("B"), 0, tenant("B", 0, 2));
    d.sessions.set("s", session("s", ["t"], 15));
    const order = d.take().map((p) => p.task.stepId);
    // B (weight 2) gets two of every three leases while it has tasks.
    assert.equal(order.filter((l) => l === "B").length, 10, order.join(","));
    assert.equal(order.length, 15);
    assert.deepEqual(d.depth(), { t: 95 });
  });

  it("a capped tenant yields to another type's task on the same session, and takes free slots when none is left", () => {
    const d = new Dispatcher();
    for (let i = 0; i < 5; i++) d.enqueue(queued("A"), 0, tenant("A", 1));
    d.enqueue(queued("U", "u"), 0, tenant("U"));
    d.sessions.set("s", session("s", ["t", "u"], 10));
    const order = d.take().map((p) => p.task.stepId);
    // A's first lease caps it; the u task goes next although A's are older; then A runs over its
    // maximum: nothing else is ready, and a cap never leaves a slot idle.
    assert.deepEqual(order, ["A", "U", "A", "A", "A", "A"]);
    assert.equal(d.sessions.get("s")?.credit, 4);
  });

  it("leases count against the maximum until released", () => {
    const d = new Dispatcher();
    for (let i = 0; i < 3; i++) d.enqueue(queued("A"), 0, tenant("A", 1));
    d.sessions.set("s", session("s", ["t"], 1));
    const [first] = d.take();
    assert.ok(first);
    d.enqueue(queued("B"), 0, tenant("B"));
    d.enqueue(queued("B"), 0, tenant("B"));
    const s = d.sessions.get("s") as SessionHandle;
    s.credit = 1;
    assert.equal(d.take()[0]?.task.stepId, "B", "A holds its maximum");
    releaseShare(first.task);
    s.credit = 1;
    // A released its lease: it is under its maximum again, and behind in virtual time.
    assert.equal(d.take()[0]?.task.stepId, "A");
  });

  it("ahead counts the tasks of the task's own key; the tenants' tasks interleave", () => {
    const d = new Dispatcher();
    const a = [queued("A"), queued("A"), queued("A")];
    for (const t of a) d.enqueue(t, 0, tenant("A"));
    const b = queued("B");
    d.enqueue(b, 0, tenant("B"));
    assert.equal(d.ahead(a[2] as TaskState), 2);
    assert.equal(d.ahead(b), 0);
    // Oldest first across the keys (what the oldest-ready-task gauge reads).
    b.queuedAt = new Date(-1);
    assert.deepEqual(
      d.waiting("t").map((t) => t.stepId),
      ["B", "A", "A", "A"],
    );
  });
});
