/** Keyed concurrency limits through the pure core (simulation.ts): each strategy, mixes, recovery. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CompiledWorkflow } from "../dag/index.js";
import type { RunState, TaskState } from "../model/run-state.js";
import type { SessionLeases } from "./context.js";
import { explainPending, pendingReason, type Gate } from "./explain.js";
import { recover } from "./recovery.js";
import { completed, failed } from "./reports.js";
import { planRerun, type OriginalStep, type RerunPlan } from "./reruns.js";
import { advanceAny, cancelRun, startRun } from "./runs.js";
import { attached } from "./sessions.js";
import {
  beginRun,
  leaseAdmitted,
  leaseAllAdmitted,
  Simulation,
  storedState,
  workflowOf,
} from "./simulation.js";

const flow = (steps: unknown[], extra: Record<string, unknown> = {}): CompiledWorkflow =>
  workflowOf({ name: "flow", version: 1, steps, ...extra });

/** One step `a` of type t limited by `limits`. */
const limited = (limits: unknown[]): CompiledWorkflow => flow([{ id: "a", type: "t", concurrency: limits }]);

function settle(sim: Simulation): void {
  sim.settle((r) => advanceAny(sim.core, r, sim.at().now));
}

function succeed(sim: Simulation, session: SessionLeases, task: TaskState): void {
  assert.equal(completed(sim.core, session, sim.key(task), { ok: true }, null, null, sim.at()), null);
  settle(sim);
}

const keyGates = (run: RunState, step = "a"): Extract<Gate, { kind: "concurrency-key" }>[] =>
  explainPending(run, run.tasks.get(step) as TaskState).filter(
    (g): g is Extract<Gate, { kind: "concurrency-key" }> => g.kind === "concurrency-key",
  );

const task = (run: RunState, step = "a"): TaskState => run.tasks.get(step) as TaskState;

/** Never more holders of a key than its limit: the leased or running tasks per customer. */
function activePer(sim: Simulation, key: (run: RunState) => string): Map<string, number> {
  const n = new Map<string, number>();
  for (const run of sim.core.runs.values())
    for (const t of run.tasks.values())
      if (t.status === "LEASED" || t.status === "RUNNING") n.set(key(run), (n.get(key(run)) ?? 0) + 1);
  return n;
}

const customer = (run: RunState): string => (run.input as { c: string }).c;

void describe("keyed concurrency (core)", () => {
  it("queue: one per customer at a time, in order; other customers are leased meanwhile", () => {
    const sim = new Simulation();
    const w = limited([{ key: "input.c", limit: 1 }]);
    const s = sim.session("s");
    const [r1, r2, r3] = [
      beginRun(sim, w, { c: "c1" }),
      beginRun(sim, w, { c: "c1" }),
      beginRun(sim, w, { c: "c1" }),
    ];
    const other = beginRun(sim, w, { c: "c2" });
    // c1's first and c2's only run are leased; c1's others wait without holding up c2.
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r1.id, other.id],
    );
    assert.equal(task(r2).status, "QUEUED");
    const [g2] = keyGates(r2);
    assert.equal(keyGates(r2).length, 1);
    assert.deepEqual(
      { ...g2, holders: g2?.holders.map((h) => h.runId) },
      {
        kind: "concurrency-key",
        scope: "step",
        expression: "input.c",
        key: "c1",
        limit: 1,
        strategy: "queue",
        holders: [r1.id],
        holding: 1,
        position: 1,
        waiting: 2,
      },
    );
    assert.equal(keyGates(r3)[0]?.position, 2);
    assert.match(
      pendingReason(explainPending(r3, task(r3))),
      new RegExp(
        `^concurrency key "c1" \\(input\\.c, limit 1\\): held by a of run ${r1.id}; 2 of 2 in its queue$`,
      ),
    );
    // No executor gate for a task in a key's queue: it is out of its type's queue.
    assert.ok(explainPending(r3, task(r3)).every((g) => g.kind === "concurrency-key"));
    succeed(sim, s, task(r1));
    assert.equal(r1.status, "SUCCEEDED");
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r2.id],
    );
    assert.equal(keyGates(r3)[0]?.position, 1);
    succeed(sim, s, task(r2));
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r3.id],
    );
    succeed(sim, s, task(r3));
    succeed(sim, s, task(other));
    assert.equal(sim.core.runs.size, 0);
    assert.equal(sim.core.concurrency?.spaces.size, 0, "no key is left behind");
  });

  it("queue: a failed attempt's retry frees the slot meanwhile and waits its turn again", () => {
    const sim = new Simulation();
    const w = flow([
      {
        id: "a",
        type: "t",
        concurrency: [{ key: "input.c", limit: 1 }],
        retry: { maxAttempts: 2, initialInterval: "1s", jitter: "none" },
      },
    ]);
    const s = sim.session("s");
    const r1 = beginRun(sim, w, { c: "c1" });
    const r2 = beginRun(sim, w, { c: "c1" });
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r1.id],
    );
    assert.equal(
      failed(sim.core, s, sim.key(task(r1)), { type: "X", message: "x", retryable: true }, 0, null, sim.at()),
      null,
    );
    assert.equal(task(r1).status, "RETRY_WAIT");
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r2.id],
    );
    sim.advanceTime(1000);
    assert.equal(task(r1).status, "QUEUED");
    assert.deepEqual(leaseAllAdmitted(sim, s), []);
    assert.equal(keyGates(r1)[0]?.position, 1);
    succeed(sim, s, task(r2));
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r1.id],
    );
  });

  it("cancel-newest: a task arriving at a full key has its run cancelled; the holder goes on", () => {
    const sim = new Simulation();
    const w = limited([{ key: "input.c", limit: 1, strategy: "cancel-newest" }]);
    const s = sim.session("s");
    const r1 = beginRun(sim, w, { c: "c1" });
    const r2 = beginRun(sim, w, { c: "c1" });
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r1.id],
    );
    assert.equal(r2.status, "CANCELLED");
    assert.match(
      r2.error?.message ?? "",
      /concurrency key "c1" \(input\.c, limit 1\) is full: the newest task is cancelled \(cancel-newest\)/,
    );
    assert.equal(task(r1).status, "LEASED");
    succeed(sim, s, task(r1));
    assert.equal(r1.status, "SUCCEEDED");
  });

  it("cancel-in-progress: the holder's run is cancelled (its lease told to stop, compensated) and the newcomer leased", () => {
    const sim = new Simulation();
    const w = flow([
      { id: "pay", type: "t", compensate: { type: "refund" } },
      {
        id: "a",
        type: "t",
        dependsOn: ["pay"],
        concurrency: [{ key: "input.c", limit: 1, strategy: "cancel-in-progress" }],
      },
    ]);
    const s = sim.session("s");
    const r1 = beginRun(sim, w, { c: "c1" });
    const r2 = beginRun(sim, w, { c: "c1" });
    for (const t of leaseAllAdmitted(sim, s)) succeed(sim, s, t);
    const held = leaseAllAdmitted(sim, s);
    // r1's step, then r2's (r1 cancelled for it), then r1's compensation (outside the limit).
    assert.deepEqual(
      held.map((t) => [t.runId, t.stepId, t.kind]),
      [
        [r1.id, "a", "STEP"],
        [r2.id, "a", "STEP"],
        [r1.id, "pay", "COMPENSATION"],
      ],
    );
    assert.equal(task(r1).status, "CANCELLED");
    assert.equal(r1.status, "COMPENSATING", "cancelled with compensation");
    assert.ok(sim.cancels.some((c) => c.taskRunId === task(r1).id));
    assert.equal(task(r2).status, "LEASED");
    assert.equal(sim.core.concurrency?.spaces.values().next().value?.holders.size, 1);
  });

  it("keep-newest-queued: only the newest waiter is kept; it runs once the holder finishes", () => {
    const sim = new Simulation();
    const w = limited([{ key: "input.c", limit: 1, strategy: "keep-newest-queued" }]);
    const s = sim.session("s");
    const r1 = beginRun(sim, w, { c: "c1" });
    assert.equal(leaseAllAdmitted(sim, s).length, 1);
    const r2 = beginRun(sim, w, { c: "c1" });
    assert.deepEqual(leaseAllAdmitted(sim, s), []);
    assert.equal(keyGates(r2)[0]?.position, 1);
    const r3 = beginRun(sim, w, { c: "c1" });
    assert.deepEqual(leaseAllAdmitted(sim, s), []);
    assert.equal(r2.status, "CANCELLED");
    assert.match(r2.error?.message ?? "", /superseded by a newer task \(keep-newest-queued\)/);
    assert.deepEqual(
      { position: keyGates(r3)[0]?.position, waiting: keyGates(r3)[0]?.waiting },
      { position: 1, waiting: 1 },
    );
    succeed(sim, s, task(r1));
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r3.id],
    );
  });

  it("two limits on one task: per customer and per merchant, never above either", () => {
    const sim = new Simulation();
    const w = limited([
      { key: "input.c", limit: 1 },
      { key: "input.m", limit: 2 },
    ]);
    const s = sim.session("s");
    const inputs = [
      { c: "c1", m: "m1" },
      { c: "c1", m: "m2" },
      { c: "c2", m: "m1" },
      { c: "c3", m: "m1" },
      { c: "c4", m: "m2" },
      { c: "c2", m: "m2" },
    ];
    const runs = inputs.map((i) => beginRun(sim, w, i));
    let done = 0;
    const merchant = (r: RunState): string => (r.input as { m: string }).m;
    for (let round = 0; round < 20 && done < runs.length; round++) {
      leaseAllAdmitted(sim, s);
      for (const [, n] of activePer(sim, customer)) assert.ok(n <= 1, "one per customer");
      for (const [, n] of activePer(sim, merchant)) assert.ok(n <= 2, "two per merchant");
      const running = runs.filter((r) => task(r).status === "LEASED");
      assert.ok(running.length > 0, "something always runs");
      if (round === 0) {
        // c3/m1 waits for m1 (held by c1/m1 and c2/m1): its gate names that key alone.
        const g = keyGates(runs[3] as RunState);
        assert.deepEqual(
          g.map((x) => [x.key, x.holding, x.position]),
          [["m1", 2, 1]],
        );
      }
      for (const r of running) {
        succeed(sim, s, task(r));
        done++;
      }
    }
    assert.ok(runs.every((r) => r.status === "SUCCEEDED"));
  });

  it("mixed strategies on one task: cancel-newest decides first; cancel-in-progress cancels nobody while another key queues it", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    const newest = limited([
      { key: "input.c", limit: 1 },
      { key: "input.m", limit: 1, strategy: "cancel-newest" },
    ]);
    const a = beginRun(sim, newest, { c: "c1", m: "m1" });
    assert.equal(leaseAllAdmitted(sim, s).length, 1);
    // Both keys full: the merchant's cancel-newest cancels it rather than queue it for the customer.
    const b = beginRun(sim, newest, { c: "c1", m: "m1" });
    // Only the customer's key full: it queues.
    const c = beginRun(sim, newest, { c: "c1", m: "m2" });
    assert.deepEqual(leaseAllAdmitted(sim, s), []);
    assert.equal(b.status, "CANCELLED");
    assert.equal(c.status, "RUNNING");
    assert.equal(keyGates(c)[0]?.position, 1);
    succeed(sim, s, task(a));
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [c.id],
    );

    const preempt = limited([
      { key: "input.c", limit: 1, strategy: "cancel-in-progress" },
      { key: "input.m", limit: 1 },
    ]);
    const x = beginRun(sim, preempt, { c: "k1", m: "n1" });
    const y = beginRun(sim, preempt, { c: "k2", m: "n2" });
    assert.equal(leaseAllAdmitted(sim, s).length, 2);
    // Its customer k1 is held by x, its merchant n2 by y: it waits for n2, and x is not cancelled.
    const z = beginRun(sim, preempt, { c: "k1", m: "n2" });
    assert.deepEqual(leaseAllAdmitted(sim, s), []);
    assert.deepEqual(
      [x.status, task(x).status, keyGates(z).map((g) => [g.key, g.position])],
      [
        "RUNNING",
        "LEASED",
        [
          ["k1", 1],
          ["n2", 1],
        ],
      ],
    );
    // Once n2 frees, only the cancel-in-progress key is full: x gives way to z.
    succeed(sim, s, task(y));
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [z.id],
    );
    assert.equal(x.status, "CANCELLED");
  });

  it("a long queue on one key drains in arrival order", () => {
    const sim = new Simulation();
    const w = limited([{ key: "input.c", limit: 3 }]);
    const s = sim.session("s");
    const runs = Array.from({ length: 1000 }, () => beginRun(sim, w, { c: "hot" }));
    // One slot frees at a time (the oldest holder ends), and the first in line takes it.
    const order: string[] = [];
    const active: TaskState[] = [];
    for (let round = 0; round <= runs.length; round++) {
      for (const t of leaseAllAdmitted(sim, s)) {
        order.push(t.runId);
        active.push(t);
      }
      assert.ok(active.length <= 3);
      const oldest = active.shift();
      if (oldest === undefined) break;
      succeed(sim, s, oldest);
    }
    assert.deepEqual(
      order,
      runs.map((r) => r.id),
    );
  });

  it("a workflow's limit: a run waits with its steps pending, and starts when the holder ends", () => {
    const sim = new Simulation();
    const w = flow(
      [
        { id: "a", type: "t" },
        { id: "b", type: "t", dependsOn: ["a"] },
      ],
      { concurrency: [{ key: "input.c", limit: 1 }] },
    );
    const s = sim.session("s");
    const r1 = beginRun(sim, w, { c: 7 });
    const r2 = beginRun(sim, w, { c: "7" });
    assert.equal(task(r2).status, "PENDING");
    const [g] = keyGates(r2);
    assert.deepEqual(
      [g?.scope, g?.key, g?.holders.map((h) => [h.runId, h.stepId]), g?.position],
      ["workflow", "7", [[r1.id, null]], 1],
      '42 and "42" are one key',
    );
    assert.match(
      pendingReason(explainPending(r2, task(r2, "b"))),
      /^the run waits for concurrency key "7".*; unfinished dependencies: a$/,
    );
    succeed(sim, s, leaseAdmitted(sim, s) as TaskState);
    assert.equal(task(r2).status, "PENDING", "r1 still runs its second step");
    succeed(sim, s, leaseAdmitted(sim, s) as TaskState);
    assert.equal(r1.status, "SUCCEEDED");
    settle(sim);
    assert.equal(task(r2).status, "QUEUED");
    assert.deepEqual(keyGates(r2), []);
  });

  it("a key that is not a string or a number fails the step (or the run) naming the key", () => {
    const sim = new Simulation();
    const r = beginRun(sim, limited([{ key: "input.c", limit: 1 }]), { c: { id: 1 } });
    assert.equal(task(r).status, "FAILED");
    assert.equal(task(r).error?.type, "CONCURRENCY_KEY_ERROR");
    assert.match(
      task(r).error?.message ?? "",
      /concurrency key "input\.c" \(\$\.steps\[0\]\.concurrency\[0\]\.key\) is an object; a concurrency key must be a string or a number/,
    );
    assert.equal(r.status, "FAILED");
    const missing = beginRun(sim, limited([{ key: "input.c", limit: 1 }]), {});
    assert.match(task(missing).error?.message ?? "", /input\.c does not resolve/);
    const wf = beginRun(
      sim,
      flow([{ id: "a", type: "t" }], { concurrency: [{ key: "input.c", limit: 1 }] }),
      {
        c: null,
      },
    );
    assert.equal(wf.status, "FAILED");
    assert.equal(wf.error?.type, "CONCURRENCY_KEY_ERROR");
    assert.match(wf.error?.message ?? "", /is null/);
  });

  it("recovery rebuilds holders and queues from the runs: the limit holds across a restart", () => {
    const before = new Simulation();
    const w = limited([{ key: "input.c", limit: 1 }]);
    const wf = flow([{ id: "a", type: "u" }], { concurrency: [{ key: "input.c", limit: 1 }] });
    const s = before.session("s");
    const r1 = beginRun(before, w, { c: "c1" });
    before.clock += 10;
    const r2 = beginRun(before, w, { c: "c1" });
    before.clock += 10;
    const r3 = beginRun(before, w, { c: "c1" });
    const q1 = beginRun(before, wf, { c: "c1" });
    before.clock += 10;
    const q2 = beginRun(before, wf, { c: "c1" });
    assert.deepEqual(
      leaseAllAdmitted(before, s).map((t) => t.runId),
      [r1.id, q1.id],
    );
    const after = new Simulation();
    const workflows = new Map([
      [1, w],
      [2, wf],
    ]);
    recover(
      after.core,
      storedState(before, (r) => ([q1.id, q2.id].includes(r.id) ? 2 : 1)),
      workflows,
      new Map(),
      after.at(),
    );
    const run = (id: string): RunState => after.core.runs.get(id) as RunState;
    // The leased task still holds c1: no other c1 task is leased, in their order once it ends.
    const s2 = after.session("s2", "s");
    assert.deepEqual(leaseAllAdmitted(after, s2), []);
    assert.deepEqual([keyGates(run(r2.id))[0]?.position, keyGates(run(r3.id))[0]?.position], [1, 2]);
    assert.deepEqual(
      keyGates(run(r2.id))[0]?.holders.map((h) => h.runId),
      [r1.id],
    );
    // The waiting run still waits for its workflow key, held by the run that had started.
    assert.equal(task(run(q2.id)).status, "PENDING");
    assert.deepEqual(
      keyGates(run(q2.id))[0]?.holders.map((h) => h.runId),
      [q1.id],
    );
    // The old lease is reclaimed and completes: the next in line goes.
    const old = task(run(r1.id));
    assert.deepEqual(attached(after.core, s2, [after.key(old)], after.at()).revoked, []);
    succeed(after, s2, old);
    assert.deepEqual(
      leaseAllAdmitted(after, s2).map((t) => t.runId),
      [r2.id],
    );
  });

  it("a waiter let out of the queue that ends before it takes its slot passes its turn on", () => {
    const sim = new Simulation();
    const w = limited([{ key: "input.c", limit: 1 }]);
    const s = sim.session("s");
    const [r1, r2, r3] = [1, 2, 3].map(() => beginRun(sim, w, { c: "c1" })) as [RunState, RunState, RunState];
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r1.id],
    );
    // r1 ends: r2 is let out (offered, holding nothing yet); r3 stays in the queue behind it.
    succeed(sim, s, task(r1));
    // Before an executor takes it, r2's run is cancelled.
    cancelRun(sim.core, r2, "not needed", false, sim.at().now);
    settle(sim);
    // Its turn went to r3, which nobody holds the key against.
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r3.id],
    );
  });

  it("recovery: a rerun still waiting for its workflow's key keeps waiting (its taken-over steps do not count as started)", () => {
    const w = flow(
      [
        { id: "a", type: "t" },
        { id: "b", type: "t", dependsOn: ["a"] },
      ],
      { concurrency: [{ key: "input.c", limit: 1 }] },
    );
    const before = new Simulation();
    const holder = beginRun(before, w, { c: "c1" });
    assert.deepEqual(
      leaseAllAdmitted(before, before.session("s")).map((t) => t.stepId),
      ["a"],
    );
    const original = new Map<string, OriginalStep>([
      [
        "a",
        {
          taskRunId: "ta",
          status: "SUCCEEDED",
          input: null,
          output: { v: 1 },
          outputRef: null,
          compensated: false,
        },
      ],
      [
        "b",
        { taskRunId: "tb", status: "FAILED", input: null, output: null, outputRef: null, compensated: false },
      ],
    ]);
    const reused = planRerun(w, "orig", "b", original) as RerunPlan;
    const rerun = startRun(
      before.core,
      {
        definitionId: 1,
        workflow: w,
        input: { c: "c1" },
        idempotencyKey: null,
        requestHash: null,
        labels: {},
        rerun: { of: "orig", fromStep: "b", reused },
      },
      before.at().now,
    );
    assert.equal(rerun.claim?.state, "parked", "the rerun waits for c1");
    const after = new Simulation();
    recover(after.core, storedState(before), new Map([[1, w]]), new Map(), after.at());
    const run = (id: string): RunState => after.core.runs.get(id) as RunState;
    assert.deepEqual([run(holder.id).claim?.state, run(rerun.id).claim?.state], ["held", "parked"]);
    assert.equal(run(rerun.id).tasks.get("b")?.status, "PENDING");
  });
});
