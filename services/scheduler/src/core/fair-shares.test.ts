/**
 * Fair shares in the pure core: the bound on how many of a backlogged tenant's tasks start before
 * another's few, weights, an idle tenant banking no credit, the key level within a tenant,
 * minimums, maximums that never leave a slot idle, priorities within a key, 10,000 tenants, and
 * the paths and errors of a workflow's `fairness`.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { FairGroup } from "../model/fair-share-state.js";
import { newTaskState, type TaskState } from "../model/run-state.js";
import {
  chargeRecovered,
  enqueueShare,
  fairPath,
  fairShareStats,
  FairShareKeyError,
  FairShareState,
  fairWait,
  OTHER_TENANTS,
  peekShare,
  PLAIN_PATH,
  PLAIN_SHARE,
  releaseShare,
  takeShare,
  type FairPath,
  type FairShare,
} from "./fair-shares.js";
import { startRun } from "./runs.js";
import { Simulation, workflowOf } from "./simulation.js";

let ids = 0;

/** A queued task of `type` (queued at `at` ms). */
function ready(label: string, type = "t", at = 0): TaskState {
  const t = newTaskState(`run-${label}`, label, "STEP", type, 0, new Date(at), `${label}#${++ids}`);
  t.status = "QUEUED";
  t.queuedAt = new Date(at);
  return t;
}

function share(s: Partial<FairShare> = {}): FairShare {
  return { ...PLAIN_SHARE, ...s };
}

function path(tenant: string, key = "", tenantShare = PLAIN_SHARE, keyShare = PLAIN_SHARE): FairPath {
  return { tenant, key, tenantShare, keyShare };
}

function put(state: FairShareState, t: TaskState, p: FairPath, priority = 0): TaskState {
  enqueueShare(state, t, p, (q) => q.push(t, priority));
  return t;
}

/** Leases the next task of `type` by fair share, as the dispatcher does; undefined when none is ready. */
function lease(state: FairShareState, type = "t"): TaskState | undefined {
  const tree = state.tree(type);
  const t = peekShare(tree);
  const key = tree.head;
  if (t === undefined || key === undefined) return undefined;
  key.queue.shift();
  takeShare(key, t, true);
  t.status = "LEASED";
  return t;
}

/** The lease of `t` ends. */
function end(t: TaskState): void {
  releaseShare(t);
  t.status = "SUCCEEDED";
}

/** Labels of the next `n` leases. */
function leases(state: FairShareState, n: number, type = "t"): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const t = lease(state, type);
    if (t === undefined) break;
    out.push(t.stepId);
  }
  return out;
}

/** Every parent comes before its children in a heap (checked over the whole tree). */
function assertHeaps(state: FairShareState, type = "t"): void {
  const tree = state.tree(type);
  const check = (heap: readonly FairGroup[]): void =>
    heap.forEach((g, i) => assert.equal(g.at, i, `group ${g.value} knows its place`));
  check(tree.heap);
  for (const tenant of tree.tenants.values()) check(tenant.heap);
}

describe("fair shares: the bound", () => {
  it("10,000 queued for A, then 10 for B: at most 10 of A's start before the last of B's", () => {
    const state = new FairShareState(10_000);
    for (let i = 0; i < 10_000; i++) put(state, ready("A"), path("A"));
    // A has been served a while (its virtual time is far from 0) when B's arrive.
    assert.deepEqual(new Set(leases(state, 500)), new Set(["A"]));
    for (let i = 0; i < 10; i++) put(state, ready("B"), path("B"));
    const order = leases(state, 40);
    const lastB = order.lastIndexOf("B");
    const aBefore = order.slice(0, lastB).filter((l) => l === "A").length;
    assert.ok(aBefore <= 10, `A started ${aBefore} before B's last: ${order.join(",")}`);
    // B banked nothing while it had no tasks: it alternates with A, never runs 2 in a row ahead.
    assert.equal(order.slice(0, 20).filter((l) => l === "B").length, 10);
    assert.doesNotMatch(order.slice(0, 20).join(""), /BB/);
    assertHeaps(state);
  });

  it("with weights 3 and 1, the leases split 3:1 while both have ready tasks", () => {
    const state = new FairShareState(10_000);
    for (let i = 0; i < 1000; i++) {
      put(state, ready("A"), path("A", "", share({ weight: 3 })));
      put(state, ready("B"), path("B"));
    }
    const order = leases(state, 400);
    const a = order.filter((l) => l === "A").length;
    assert.ok(Math.abs(a - 300) <= 1, `A got ${a} of 400`);
    // And in every window of 8 leases, A gets 6 give or take one: shares hold at every scale.
    for (let i = 0; i + 8 <= order.length; i += 8) {
      const w = order.slice(i, i + 8).filter((l) => l === "A").length;
      assert.ok(w >= 5 && w <= 7, `window ${i}: A got ${w} of 8`);
    }
  });

  it("a tenant that comes back after a pause starts from the clock, not from its old virtual time", () => {
    const state = new FairShareState(10_000);
    for (let i = 0; i < 1000; i++) put(state, ready("A"), path("A"));
    put(state, ready("B"), path("B"));
    leases(state, 2);
    // B is idle while A gets 300 leases: A's virtual time moves 300 ahead of B's.
    assert.deepEqual(new Set(leases(state, 300)), new Set(["A"]));
    for (let i = 0; i < 50; i++) put(state, ready("B"), path("B"));
    const order = leases(state, 20);
    const b = order.filter((l) => l === "B").length;
    assert.ok(b >= 9 && b <= 11, `B got ${b} of 20 (it must not take all 20 on credit)`);
  });
});

describe("fair shares: two levels", () => {
  it("keys share their tenant's share: a tenant's hot key delays its other key, and no other tenant", () => {
    const state = new FairShareState(10_000);
    for (let i = 0; i < 1000; i++) put(state, ready("A/hot"), path("A", "hot"));
    for (let i = 0; i < 5; i++) put(state, ready("A/cold"), path("A", "cold"));
    for (let i = 0; i < 5; i++) put(state, ready("B"), path("B", "x"));
    const order = leases(state, 20);
    // Tenants alternate; within A, its keys alternate: the cold key's 5 and B's 5 are done in 20.
    assert.equal(order.filter((l) => l === "B").length, 5);
    assert.equal(order.filter((l) => l === "A/cold").length, 5);
    assert.ok(order.lastIndexOf("B") <= 10, order.join(","));
    assert.ok(order.lastIndexOf("A/cold") <= 20, order.join(","));
    assertHeaps(state);
  });
});

describe("fair shares: minimums and maximums", () => {
  it("a group under its minimum is served first, whatever its virtual time", () => {
    const state = new FairShareState(10_000);
    for (let i = 0; i < 100; i++) put(state, ready("A"), path("A"));
    for (let i = 0; i < 100; i++) put(state, ready("C"), path("C", "", share({ min: 3 })));
    // C's 3 guaranteed first, then turns.
    const first = leases(state, 3);
    assert.deepEqual(first, ["C", "C", "C"]);
    // C is at its minimum: A, whose virtual time is behind, gets the next ones.
    assert.deepEqual(leases(state, 3), ["A", "A", "A"]);
  });

  it("a lease of a group at its minimum ending brings it back under it: it is served next", () => {
    const state = new FairShareState(10_000);
    for (let i = 0; i < 100; i++) put(state, ready("A"), path("A"));
    // Its minimum is its maximum: while it holds 2, the others get every slot.
    for (let i = 0; i < 100; i++) put(state, ready("C"), path("C", "", share({ min: 2, max: 2 })));
    const c = [lease(state), lease(state)];
    assert.deepEqual(leases(state, 10), Array<string>(10).fill("A"));
    end(c[0] as TaskState);
    assert.equal(lease(state)?.stepId, "C");
  });

  it("a group at its maximum yields while another can be served, and takes free slots when none can", () => {
    const state = new FairShareState(10_000);
    const capped = path("A", "", share({ weight: 10, max: 2 }));
    for (let i = 0; i < 10; i++) put(state, ready("A"), capped);
    for (let i = 0; i < 3; i++) put(state, ready("B"), path("B"));
    // By weight A would take 10 of 11; at its maximum of 2 it yields to B.
    const first = leases(state, 5);
    assert.equal(first.filter((l) => l === "A").length, 2, first.join(","));
    // Nothing else is ready: A runs over its maximum (work-conserving), as many as there are slots.
    assert.deepEqual(leases(state, 3), ["A", "A", "A"]);
    // B has ready tasks again: A (5 leases, max 2) yields to it again.
    put(state, ready("B"), path("B"));
    assert.equal(lease(state)?.stepId, "B");
  });

  it("a tenant whose every ready key is at its maximum yields to another tenant", () => {
    const state = new FairShareState(10_000);
    const k = path("A", "k", PLAIN_SHARE, share({ max: 1 }));
    for (let i = 0; i < 5; i++) put(state, ready("A"), k);
    for (let i = 0; i < 5; i++) put(state, ready("B"), path("B"));
    // A's key k is capped after one lease: B gets the rest while it has some.
    assert.deepEqual(leases(state, 6), ["A", "B", "B", "B", "B", "B"]);
    assert.deepEqual(leases(state, 2), ["A", "A"]);
  });
});

describe("fair shares: priorities", () => {
  it("order the tasks within a key; fairness decides between keys", () => {
    const state = new FairShareState(10_000);
    put(state, ready("A-low", "t", 0), path("A"), 0);
    put(state, ready("A-high", "t", 5), path("A"), 5);
    put(state, ready("B-low", "t", 0), path("B"), 0);
    put(state, ready("B-low2", "t", 1), path("B"), 0);
    // A's high priority task goes before A's own older one, but does not let A take B's turn.
    assert.deepEqual(leases(state, 4), ["A-high", "B-low", "A-low", "B-low2"]);
  });

  it("without fairness (one key), the order is priority with ageing, as before fair shares", () => {
    const state = new FairShareState(10_000);
    put(state, ready("old", "t", 0), PLAIN_PATH, 0);
    put(state, ready("higher", "t", 1_000), PLAIN_PATH, 1);
    put(state, ready("high", "t", 15_000), PLAIN_PATH, 1);
    // One level is worth 10 s of waiting (ageing): "higher" goes first, "high" came too late.
    assert.deepEqual(leases(state, 3), ["higher", "old", "high"]);
  });
});

describe("fair shares: state", () => {
  it("10,000 tenants with a task each: each is served once, groups are forgotten as they empty", () => {
    const state = new FairShareState(10_000);
    for (let i = 0; i < 10_000; i++) put(state, ready(`T${i}`), path(`T${i}`));
    const tree = state.tree("t");
    assert.equal(tree.heap.length, 10_000);
    assert.equal(tree.ready, 10_000);
    const served = leases(state, 10_001);
    assert.equal(served.length, 10_000);
    assert.equal(new Set(served).size, 10_000);
    // Equal virtual times: the older group first.
    assert.equal(served[0], "T0");
    assert.equal(served[9_999], "T9999");
    assert.equal(tree.heap.length, 0);
    assert.equal(tree.ready, 0);
    // Their leases hold their groups; the groups go once the leases end.
    assert.equal(tree.tenants.size, 10_000);
    for (const t of [...tree.tenants.values()].flatMap((tn) => [...tn.keys.values()]))
      assert.equal(t.leased, 1);
  });

  it("a leased task's release forgets a group with nothing left", () => {
    const state = new FairShareState(10_000);
    const t = put(state, ready("A"), path("A"));
    const leased = lease(state);
    assert.equal(leased, t);
    assert.equal(state.tree("t").tenants.get("A")?.leased, 1);
    end(t);
    assert.equal(state.tree("t").tenants.size, 0);
    // Released twice (a lease that ended, then the task): counted once.
    end(t);
    assert.equal(state.tree("t").tenants.size, 0);
  });

  it("cancelled tasks in a queue are dropped when found, and the ready count with them", () => {
    const state = new FairShareState(10_000);
    const a = [put(state, ready("A"), path("A")), put(state, ready("A"), path("A"))];
    put(state, ready("B"), path("B"));
    for (const t of a) t.status = "CANCELLED";
    assert.equal(state.tree("t").ready, 3);
    assert.deepEqual(leases(state, 3), ["B"]);
    assert.equal(state.tree("t").ready, 0);
    assert.equal(state.tree("t").tenants.size, 1, "only B, for its lease");
  });

  it("explains: the group served first in the task's place, at the level whose share is used", () => {
    const state = new FairShareState(10_000);
    const a = [1, 2, 3].map(() => put(state, ready("A"), path("A", "", share({ max: 1 }))));
    const b = put(state, ready("B"), path("B"));
    const first = lease(state);
    assert.equal(first, a[0]);
    // A holds its maximum: B is first among the tenants.
    assert.deepEqual(fairWait(a[1] as TaskState), {
      level: "tenant",
      tenant: "A",
      key: "",
      type: "t",
      leased: 1,
      weight: 1,
      min: 0,
      max: 1,
      atMax: true,
      next: "B",
      waiting: 2,
    });
    assert.equal(fairWait(b), null, "B is first: its share holds nothing");
    put(state, ready("B"), path("B", "k1"));
    const k1 = put(state, ready("B"), path("B", "k1"));
    const k2 = put(state, ready("B"), path("B", "k2"));
    assert.equal(lease(state), b);
    lease(state);
    // B's keys: k1 was served (its virtual time moved on), k2 is first now.
    assert.equal(fairWait(k1)?.level, "key");
    assert.equal(fairWait(k1)?.next, "k2");
    assert.equal(fairWait(k2), null);
  });

  it("metrics name the tenants with the most ready tasks and sum the rest, with their oldest", () => {
    const state = new FairShareState(10_000);
    // Tenant Ti's tasks are queued at i s, i s + 1 ms, ...
    for (let i = 0; i < 30; i++)
      for (let j = 0; j <= i; j++) put(state, ready(`T${i}`, "t", i * 1000 + j), path(`T${i}`));
    lease(state);
    const stats = fairShareStats(state, 20);
    assert.equal(stats.length, 21);
    assert.deepEqual(stats[0], { type: "t", tenant: "T29", ready: 30, leased: 0, oldest: 29_000 });
    const other = stats.find((s) => s.tenant === OTHER_TENANTS);
    // T0..T9 are past the 20 named: 1 + 2 + ... + 10 ready, less T0's one leased (so the oldest
    // ready is T1's first).
    assert.deepEqual(other, { type: "t", tenant: OTHER_TENANTS, ready: 54, leased: 1, oldest: 1000 });
  });
});

describe("fair shares: a workflow's fairness", () => {
  const wf = workflowOf({
    name: "fair",
    version: 1,
    fairness: [
      { key: "input.tenant", weight: 2, weights: { acme: 5 }, min: 1, max: 8 },
      { key: "input.customer", max: 2 },
    ],
    steps: [{ id: "s", type: "t" }],
  });

  it("paths: the tenant and key values, weights by value, minimums and maximums", () => {
    assert.deepEqual(fairPath({ id: "r", workflow: wf, input: { tenant: "acme", customer: 42 } }), {
      tenant: "acme",
      key: "42",
      tenantShare: { weight: 5, min: 1, max: 8 },
      keyShare: { weight: 1, min: 0, max: 2 },
    });
    assert.equal(
      fairPath({ id: "r", workflow: wf, input: { tenant: "b", customer: "c" } }).tenantShare.weight,
      2,
    );
    const plain = workflowOf({ name: "plain", version: 1, steps: [{ id: "s", type: "t" }] });
    assert.equal(fairPath({ id: "r", workflow: plain, input: null }), PLAIN_PATH);
  });

  it("a key that is not a string or a number is a FairShareKeyError naming its path", () => {
    assert.throws(
      () => fairPath({ id: "r", workflow: wf, input: { tenant: { id: 1 }, customer: "c" } }),
      (e: unknown) =>
        e instanceof FairShareKeyError &&
        e.path === "$.fairness[0].key" &&
        /is an? object; a fairness key must be a string or a number/.test(e.message),
    );
    assert.throws(
      () => fairPath({ id: "r", workflow: wf, input: { tenant: "a" } }),
      (e: unknown) => e instanceof FairShareKeyError && e.path === "$.fairness[1].key",
    );
  });

  it("recovery charges a lease held across a restart to its tenant: its maximum counts it", () => {
    const sim = new Simulation();
    const state = new FairShareState(10_000);
    sim.core.fairShares = state;
    const capped = workflowOf({
      name: "capped",
      version: 1,
      fairness: [{ key: "input.tenant", max: 1 }],
      steps: [{ id: "s", type: "t" }],
    });
    const run = startRun(
      sim.core,
      {
        definitionId: 1,
        workflow: capped,
        input: { tenant: "C" },
        idempotencyKey: null,
        requestHash: null,
        labels: {},
      },
      sim.at().now,
    );
    // As recovery finds it: leased by an executor before the restart.
    const held = run.tasks.get("s") as TaskState;
    held.status = "LEASED";
    chargeRecovered(sim.core, held);
    assert.equal(state.tree("t").tenants.get("C")?.leased, 1);
    const cPath = { ...path("C"), tenantShare: share({ max: 1 }) };
    put(state, ready("C"), cPath);
    put(state, ready("D"), path("D"));
    assert.equal(lease(state)?.stepId, "D", "C holds its maximum with the recovered lease");
    releaseShare(held);
    assert.equal(lease(state)?.stepId, "C");
  });
});
