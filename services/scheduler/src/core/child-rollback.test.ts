/**
 * A parent's rollback reaching its children, and maps over a child workflow, through the pure core
 * (simulation.ts): no server, time by hand; the shell's reads of stored children are answered from
 * the runs as they ended.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { TaskKind } from "@nexusflow/gen";
import type { CompiledWorkflow } from "../dag/index.js";
import type { RunState, TaskState } from "../model/run-state.js";
import type { StoredRun, StoredTask } from "../persistence/engine-store.js";
import { childRollbackRead, type ChildRollbackRead } from "./child-rollback.js";
import type { SessionLeases } from "./context.js";
import { childEnded, childResolved, childRunId } from "./children.js";
import { explainPending, pendingReason } from "./explain.js";
import { mapProgress } from "./maps.js";
import { completed, failed } from "./reports.js";
import { advance, cancelRun, dropRefusedRun, startRun } from "./runs.js";
import { Simulation, workflowOf } from "./simulation.js";
import { signalReceived } from "./waits.js";

const WORKFLOWS = new Map<string, CompiledWorkflow>();
function define(spec: Record<string, unknown>): CompiledWorkflow {
  const wf = workflowOf(spec);
  WORKFLOWS.set(wf.name, wf);
  return wf;
}

/** Charges, compensated by a refund. */
define({
  name: "charge",
  version: 1,
  steps: [
    {
      id: "pay",
      type: "pay",
      input: "{{ input }}",
      compensate: { type: "refund", input: "{{ step.input }}" },
    },
  ],
  output: { paid: "{{ steps.pay.output }}" },
});
/** Charges (compensated by a refund), then waits for signal "go". */
define({
  name: "charge-wait",
  version: 1,
  steps: [
    {
      id: "pay",
      type: "pay",
      input: "{{ input }}",
      compensate: { type: "refund", input: "{{ step.input }}" },
    },
    { id: "hold", dependsOn: ["pay"], wait: { signal: "go" } },
  ],
  output: { paid: "{{ steps.pay.output }}" },
});
/** Nothing to undo. */
define({
  name: "note",
  version: 1,
  steps: [{ id: "write", type: "note" }],
  output: "{{ steps.write.output }}",
});
/** A child with a child of its own: charges through "charge", then notes. */
define({
  name: "order",
  version: 1,
  steps: [
    { id: "sub", workflow: { name: "charge", input: "{{ input }}" } },
    { id: "log", type: "note", dependsOn: ["sub"] },
  ],
});

function begin(sim: Simulation, steps: unknown[], input: unknown = {}): RunState {
  const workflow = workflowOf({ name: "parent", version: 1, steps });
  return startRun(
    sim.core,
    { definitionId: 1, workflow, input, idempotencyKey: null, requestHash: null, labels: {} },
    sim.at().now,
  );
}

const settle = (sim: Simulation) => {
  for (let i = 0; i < 5; i++) sim.settle((r) => advance(sim.core, r, sim.at().now));
};

/** Does what the shell does for the children asked for: resolves each to its workflow (by name). */
function startChildren(sim: Simulation): RunState[] {
  const started: RunState[] = [];
  for (const { runId, stepId } of sim.childStarts.splice(0)) {
    const parent = sim.core.runs.get(runId)!;
    const key = /^(.+)\[(\d+)\]$/.exec(stepId);
    const task =
      key === null ? parent.tasks.get(stepId)! : parent.maps!.get(key[1]!)!.elements[Number(key[2])]!;
    const input = task.input as { workflow: string; input: unknown };
    const workflow = WORKFLOWS.get(input.workflow)!;
    childResolved(sim.core, runId, stepId, { definitionId: 2, workflow, input: input.input }, sim.at().now);
    started.push(sim.core.runs.get(childRunId(runId, stepId))!);
  }
  return started;
}

/**
 * Starts the children asked for (each kept in `ended`) and runs every task offered on `s` until
 * nothing is left: a "boom" task fails for good, any other succeeds with {}.
 */
function runToEnd(sim: Simulation, s: SessionLeases, ended: Map<string, RunState>): void {
  for (;;) {
    for (const c of startChildren(sim)) ended.set(c.id, c);
    const t = sim.lease(s);
    if (t === undefined && sim.childStarts.length > 0) continue;
    if (t === undefined) break;
    if (t.type === "boom")
      failed(sim.core, s, sim.key(t), { type: "BOOM", message: "boom", retryable: false }, 0, null, sim.at());
    else completed(sim.core, s, sim.key(t), {}, null, null, sim.at());
    settle(sim);
  }
}

/** The rows of a run as the store holds them once it ended (what the shell reads back). */
function rowsOf(run: RunState, elements: readonly TaskState[] = []): ChildRollbackRead {
  const stored: StoredRun = {
    id: run.id,
    definitionId: run.definitionId,
    workflowName: run.workflow.name,
    status: run.status,
    input: run.input,
    idempotencyKey: null,
    labels: {},
    cancelRequested: run.cancelRequested,
    compensateOnCancel: run.compensateOnCancel,
    error: run.error,
    lastEventSeq: run.eventSeq,
    deadline: null,
    createdAt: run.createdAt,
    parent: run.parent,
  };
  const tasks = [...run.tasks.values(), ...elements].map((t): StoredTask => {
    const { sessionId: _s, lastHeartbeat: _h, resolvedOutput: _r, ...rest } = t;
    return rest;
  });
  return { stored, tasks, workflow: run.workflow };
}

/** Answers the shell's reads of children from `ended` (runs as they ended, by id). */
function answerReads(sim: Simulation, ended: ReadonlyMap<string, RunState>): number {
  let n = 0;
  for (const r of sim.rollbackReads.splice(0)) {
    const run = ended.get(r.childRunId);
    const read: ChildRollbackRead =
      run === undefined
        ? undefined
        : run.status === "SUCCEEDED"
          ? rowsOf(run)
          : { status: run.status, error: run.error };
    childRollbackRead(sim.core, r.runId, r.stepId, r.childRunId, read, sim.at().now);
    n++;
  }
  return n;
}

describe("a parent's rollback reaches its children (core)", () => {
  it("a child that succeeded rolls back (its own compensations) before the parent goes past its step", () => {
    const sim = new Simulation();
    const run = begin(sim, [
      { id: "reserve", type: "reserve", compensate: { type: "release" } },
      { id: "c", dependsOn: ["reserve"], workflow: { name: "charge", input: { amount: 5 } } },
      { id: "ship", type: "ship", dependsOn: ["c"] },
    ]);
    const childId = childRunId(run.id, "c");
    let child: RunState | undefined;
    const s = sim.session("s");
    for (const type of ["reserve", "pay"]) {
      startChildren(sim);
      child ??= sim.core.runs.get(childId);
      const t = sim.lease(s)!;
      assert.equal(t.type, type);
      assert.equal(completed(sim.core, s, sim.key(t), { ok: type }, null, null, sim.at()), null);
      settle(sim);
    }
    assert.ok(child);
    assert.equal(child.status, "SUCCEEDED");
    assert.equal(sim.core.runs.has(childId), false, "an ended child leaves memory");
    const ship = sim.lease(s)!;
    failed(
      sim.core,
      s,
      sim.key(ship),
      { type: "NO_TRUCK", message: "no truck", retryable: false },
      0,
      null,
      sim.at(),
    );
    settle(sim);
    assert.equal(run.status, "COMPENSATING");
    const rollback = run.compensations.get("c")!;
    assert.equal(rollback.status, "WAITING");
    assert.deepEqual(rollback.input, { childRunIds: [childId] });
    assert.equal(run.compensations.get("reserve")!.status, "PENDING", "waits for the child's rollback");
    assert.deepEqual(sim.rollbackReads, [{ runId: run.id, stepId: "c", childRunId: childId }]);
    const waiting = sim.events.find(
      (e) =>
        e.runId === run.id &&
        e.case === "taskWaiting" &&
        e.value !== undefined &&
        "kind" in e.value &&
        e.value.kind === TaskKind.COMPENSATION,
    );
    assert.ok(waiting, "a taskWaiting of kind COMPENSATION");
    assert.equal((waiting.value as { childRunId: string }).childRunId, childId);
    // Why it waits: the child's rollback.
    assert.equal(
      pendingReason(explainPending(run, rollback, undefined, sim.at().now)),
      `waiting for child run ${childId} (charge) to roll back`,
    );

    answerReads(sim, new Map([[childId, child]]));
    const revived = sim.core.runs.get(childId)!;
    assert.equal(revived.status, "COMPENSATING", "SUCCEEDED -> COMPENSATING");
    assert.equal(revived.endedAt, null);
    const compensating = sim.events.filter((e) => e.runId === childId && e.case === "runCompensating");
    assert.deepEqual(
      compensating.map((e) => (e.value as { parentRunId: string }).parentRunId),
      [run.id],
    );
    assert.match(
      (compensating[0]!.value as { reason: string }).reason,
      new RegExp(`parent run ${run.id} rolls back step c: .*no truck`),
    );
    const refund = sim.lease(s)!;
    assert.deepEqual([refund.type, refund.runId, refund.input], ["refund", childId, { amount: 5 }]);
    assert.equal(sim.lease(s), undefined, "release waits for the child's refund");
    assert.equal(completed(sim.core, s, sim.key(refund), null, null, null, sim.at()), null);
    // The child's end reaches the parent's rollback in the same turn.
    assert.equal(revived.status, "COMPENSATED");
    assert.equal(rollback.status, "SUCCEEDED");
    assert.deepEqual(rollback.output, { children: { COMPENSATED: 1 } });
    settle(sim);
    const release = sim.lease(s)!;
    assert.equal(release.type, "release");
    completed(sim.core, s, sim.key(release), null, null, null, sim.at());
    settle(sim);
    assert.equal(run.status, "COMPENSATED");
    const events = sim.eventsOf(childId);
    assert.deepEqual(
      events.filter((e) => e === "runCompleted" || e === "runCompensating"),
      ["runCompleted", "runCompensating", "runCompleted"],
      "it ended, rolled back, and ended again",
    );
  });

  it("a child still in memory (the parent failed in the turn it ended) rolls back at once, and stays in memory", () => {
    const sim = new Simulation();
    const run = begin(sim, [
      { id: "c", workflow: { name: "charge", input: { n: 1 } } },
      { id: "z", type: "use", dependsOn: ["c"], input: "{{ steps.c.output.nope.deeper }}" },
    ]);
    const [child] = startChildren(sim);
    const s = sim.session("s");
    completed(sim.core, s, sim.key(sim.lease(s)!), {}, null, null, sim.at());
    // One pass, as the engine's: the child ends, then its parent is evaluated before the child's
    // end is committed (and the child forgotten): z cannot render its input and fails, the parent
    // rolls back, the child with it.
    sim.settle((r) => {
      advance(sim.core, r, sim.at().now);
      assert.equal(child!.status, "SUCCEEDED");
      for (const p of [...sim.soon]) {
        sim.soon.delete(p);
        advance(sim.core, p, sim.at().now);
      }
    });
    assert.equal(run.tasks.get("z")!.error?.type, TaskErrorType.TEMPLATE_ERROR);
    assert.equal(run.status, "COMPENSATING");
    assert.equal(sim.rollbackReads.length, 0, "in memory: nothing to read");
    assert.equal(child!.status, "COMPENSATING");
    assert.equal(sim.core.runs.get(child!.id), child, "not forgotten with its first end");
    completed(sim.core, s, sim.key(sim.lease(s)!), null, null, null, sim.at());
    settle(sim);
    assert.equal(child!.status, "COMPENSATED");
    assert.equal(run.status, "COMPENSATED");
    assert.equal(sim.core.runs.has(child!.id), false, "forgotten with its second end");
  });

  it("abandon leaves a succeeded child alone; a child with nothing to undo stays SUCCEEDED", () => {
    const sim = new Simulation();
    const run = begin(sim, [
      { id: "kept", workflow: { name: "charge", input: {}, onParentCancel: "abandon" } },
      { id: "noted", workflow: { name: "note" } },
      { id: "z", type: "boom", dependsOn: ["kept", "noted"] },
    ]);
    const ended = new Map<string, RunState>();
    const s = sim.session("s");
    for (let i = 0; i < 2; i++) {
      for (const c of startChildren(sim)) ended.set(c.id, c);
      const t = sim.lease(s)!;
      completed(sim.core, s, sim.key(t), {}, null, null, sim.at());
      settle(sim);
    }
    const z = sim.lease(s)!;
    assert.equal(z.type, "boom");
    failed(sim.core, s, sim.key(z), { type: "BOOM", message: "boom", retryable: false }, 0, null, sim.at());
    settle(sim);
    assert.deepEqual([...run.compensations.keys()], ["noted"], "abandon: not rolled back");
    answerReads(sim, ended);
    const noted = childRunId(run.id, "noted");
    assert.equal(sim.core.runs.has(noted), false, "nothing to undo: back out of memory");
    assert.equal(ended.get(noted)!.status, "SUCCEEDED");
    assert.deepEqual(run.compensations.get("noted")!.output, { children: { SUCCEEDED: 1 } });
    settle(sim);
    assert.equal(run.status, "COMPENSATED");
  });

  it("a child whose rollback fails, or that is no longer stored, fails the step's compensation: COMPENSATION_FAILED", () => {
    for (const gone of [false, true]) {
      const sim = new Simulation();
      const run = begin(sim, [
        { id: "c", workflow: { name: "charge", input: {} } },
        { id: "z", type: "boom", dependsOn: ["c"] },
      ]);
      const s = sim.session("s");
      const [child] = startChildren(sim);
      completed(sim.core, s, sim.key(sim.lease(s)!), {}, null, null, sim.at());
      settle(sim);
      const z = sim.lease(s)!;
      failed(sim.core, s, sim.key(z), { type: "BOOM", message: "boom", retryable: false }, 0, null, sim.at());
      settle(sim);
      answerReads(sim, gone ? new Map() : new Map([[child!.id, child!]]));
      if (!gone) {
        const revived = sim.core.runs.get(child!.id)!;
        const refund = sim.lease(s)!;
        failed(
          sim.core,
          s,
          sim.key(refund),
          { type: "BANK_DOWN", message: "down", retryable: false },
          0,
          null,
          sim.at(),
        );
        assert.equal(revived.status, "COMPENSATION_FAILED");
      }
      const task = run.compensations.get("c")!;
      assert.equal(task.status, "FAILED");
      assert.equal(task.error?.type, TaskErrorType.CHILD_FAILED);
      assert.match(task.error?.message ?? "", gone ? /is not stored/ : /ended COMPENSATION_FAILED/);
      assert.equal((task.error?.details as { childRunId: string }).childRunId, child!.id);
      settle(sim);
      assert.equal(run.status, "COMPENSATION_FAILED");
    }
  });

  it("a child dropped while it rolls back (changes PostgreSQL refused) fails the step's compensation", () => {
    const sim = new Simulation();
    const run = begin(sim, [
      { id: "c", workflow: { name: "charge", input: {} } },
      { id: "z", type: "boom", dependsOn: ["c"] },
    ]);
    const s = sim.session("s");
    const [child] = startChildren(sim);
    completed(sim.core, s, sim.key(sim.lease(s)!), {}, null, null, sim.at());
    settle(sim);
    const z = sim.lease(s)!;
    failed(sim.core, s, sim.key(z), { type: "BOOM", message: "boom", retryable: false }, 0, null, sim.at());
    settle(sim);
    answerReads(sim, new Map([[child!.id, child!]]));
    assert.equal(sim.core.runs.get(child!.id)?.status, "COMPENSATING");
    // What the engine does with a run whose changes were refused (engine.ts refused).
    const dropped = dropRefusedRun(sim.core, child!.id, "invalid byte sequence")!;
    childEnded(sim.core, dropped, sim.at().now);
    const task = run.compensations.get("c")!;
    assert.equal(task.status, "FAILED");
    assert.equal(task.error?.type, TaskErrorType.CHILD_FAILED);
    assert.match(task.error?.message ?? "", /ended FAILED while it rolled back: STORAGE_REFUSED/);
    settle(sim);
    assert.equal(run.status, "COMPENSATION_FAILED");
  });

  it("cancel with compensation of a parent with five children running: all cancelled, rolled back as declared, then the parent", () => {
    const sim = new Simulation();
    const run = begin(sim, [
      { id: "reserve", type: "reserve", compensate: { type: "release" } },
      ...[1, 2, 3, 4, 5].map((i) => ({
        id: `c${i}`,
        dependsOn: ["reserve"],
        workflow: { name: "charge-wait", input: { n: i } },
      })),
    ]);
    const s = sim.session("s");
    completed(sim.core, s, sim.key(sim.lease(s)!), {}, null, null, sim.at());
    settle(sim);
    const children = startChildren(sim);
    assert.equal(children.length, 5);
    for (let i = 0; i < 5; i++) completed(sim.core, s, sim.key(sim.lease(s)!), {}, null, null, sim.at());
    settle(sim);
    for (const c of children) assert.equal(c.tasks.get("hold")!.status, "WAITING");
    cancelRun(sim.core, run, "operator", true, sim.at().now);
    for (const c of children) {
      assert.equal(c.status, "COMPENSATING", "cancelled with compensation");
      assert.equal(c.tasks.get("hold")!.status, "CANCELLED");
    }
    assert.equal(run.status, "COMPENSATING");
    assert.deepEqual(run.compensationWaves, [["c5", "c4", "c3", "c2", "c1"], ["reserve"]]);
    assert.equal(sim.rollbackReads.length, 0, "children in memory: no read");
    const refunds = [];
    for (let t = sim.lease(s); t !== undefined; t = sim.lease(s)) refunds.push(t);
    assert.deepEqual(
      refunds.map((t) => [t.type, (t.input as { n: number }).n]).sort(),
      [1, 2, 3, 4, 5].map((n) => ["refund", n]),
      "release waits for the five refunds",
    );
    for (const t of refunds) completed(sim.core, s, sim.key(t), null, null, null, sim.at());
    for (const c of children) assert.equal(c.status, "COMPENSATED");
    settle(sim);
    const release = sim.lease(s)!;
    assert.equal(release.type, "release");
    completed(sim.core, s, sim.key(release), null, null, null, sim.at());
    settle(sim);
    assert.equal(run.status, "COMPENSATED");
  });

  it("a grandchild rolls back before its parent, which rolls back before the root goes on", () => {
    const sim = new Simulation();
    const run = begin(sim, [
      { id: "o", workflow: { name: "order", input: { k: 1 } } },
      { id: "z", type: "boom", dependsOn: ["o"] },
    ]);
    const ended = new Map<string, RunState>();
    const s = sim.session("s");
    runToEnd(sim, s, ended);
    const orderId = childRunId(run.id, "o");
    const chargeId = childRunId(orderId, "sub");
    assert.equal(run.status, "COMPENSATING");
    answerReads(sim, ended);
    const order = sim.core.runs.get(orderId)!;
    assert.equal(order.status, "COMPENSATING");
    assert.deepEqual(sim.rollbackReads, [{ runId: orderId, stepId: "sub", childRunId: chargeId }]);
    answerReads(sim, ended);
    const charge = sim.core.runs.get(chargeId)!;
    assert.equal(charge.status, "COMPENSATING");
    const refund = sim.lease(s)!;
    assert.deepEqual([refund.type, refund.runId], ["refund", chargeId]);
    completed(sim.core, s, sim.key(refund), null, null, null, sim.at());
    settle(sim);
    assert.equal(charge.status, "COMPENSATED");
    assert.equal(order.status, "COMPENSATED");
    assert.equal(run.status, "COMPENSATED");
  });
});

describe("maps over a child workflow (core)", () => {
  const fan = (map: Record<string, unknown>, extra: unknown[] = [], name = "charge") => [
    {
      id: "each",
      map: { items: "input.xs", ...map },
      workflow: { name, input: { x: "{{ item }}", i: "{{ index }}" } },
    },
    ...extra,
  ];

  it("one child per element, linked to the parent; parallelism honoured; outputs in order", () => {
    const sim = new Simulation();
    const run = begin(sim, fan({ parallelism: 2 }), { xs: [10, 20, 30, 40, 50] });
    const each = run.tasks.get("each")!;
    assert.equal(each.status, "WAITING");
    assert.deepEqual(
      sim.childStarts.map((c) => c.stepId),
      ["each[0]", "each[1]"],
    );
    const s = sim.session("s");
    let most = 0;
    for (;;) {
      const children = startChildren(sim);
      for (const c of children) {
        const key = c.parent!.stepId;
        assert.match(key, /^each\[\d\]$/);
        assert.equal(c.id, childRunId(run.id, key));
      }
      most = Math.max(most, mapProgress(run, "each")?.running ?? 0);
      const t = sim.lease(s);
      if (t === undefined) break;
      completed(sim.core, s, sim.key(t), (t.input as { x: number }).x * 2, null, null, sim.at());
      settle(sim);
    }
    assert.equal(most, 2, "at most two children at once");
    assert.equal(each.status, "SUCCEEDED");
    assert.deepEqual(
      each.output,
      [20, 40, 60, 80, 100].map((x) => ({ paid: x })),
    );
    settle(sim);
    assert.equal(run.status, "SUCCEEDED");
  });

  it("fail-fast: a failed child fails the step, the running children roll back; collect waits for all", () => {
    for (const failure of ["fail-fast", "collect"] as const) {
      const sim = new Simulation();
      const run = begin(sim, fan({ parallelism: 3, failure }, [], "charge-wait"), { xs: [1, 2, 3] });
      const children = startChildren(sim);
      assert.equal(children.length, 3);
      const s = sim.session("s");
      const pays = [sim.lease(s)!, sim.lease(s)!, sim.lease(s)!];
      for (const i of [0, 2]) completed(sim.core, s, sim.key(pays[i]!), {}, null, null, sim.at());
      settle(sim);
      // The second child's charge fails for good: that child fails.
      const declined = { type: "DECLINED", message: "no", retryable: false };
      failed(sim.core, s, sim.key(pays[1]!), declined, 0, null, sim.at());
      settle(sim);
      const each = run.tasks.get("each")!;
      if (failure === "fail-fast") {
        assert.equal(each.status, "FAILED");
        assert.equal(each.error?.type, TaskErrorType.MAP_ELEMENT_FAILED);
        for (const i of [0, 2]) {
          assert.equal(children[i]!.status, "COMPENSATING", "cancelled, rolling back its charge");
          assert.equal(children[i]!.tasks.get("hold")!.status, "CANCELLED");
        }
        assert.equal(run.status, "COMPENSATING", "the parent waits for their rollback");
      } else {
        assert.equal(each.status, "WAITING");
        for (const i of [0, 2]) childSignal(sim, children[i]!);
        // The parent is evaluated before the children's end is committed: still in memory.
        sim.settle((r) => {
          advance(sim.core, r, sim.at().now);
          for (const p of [...sim.soon]) {
            sim.soon.delete(p);
            advance(sim.core, p, sim.at().now);
          }
        });
        assert.equal(each.status, "FAILED");
        assert.equal(each.error?.type, TaskErrorType.MAP_ELEMENTS_FAILED);
        assert.deepEqual((each.error?.details as { succeededCount: number }).succeededCount, 2);
        assert.deepEqual(run.compensations.get("each")!.input, {
          childRunIds: [children[0]!.id, children[2]!.id],
        });
      }
      const refunds = [sim.lease(s)!, sim.lease(s)!];
      assert.deepEqual(
        refunds.map((t) => [t.type, t.runId]).sort(),
        [0, 2].map((i) => ["refund", children[i]!.id]).sort(),
      );
      for (const t of refunds) completed(sim.core, s, sim.key(t), null, null, null, sim.at());
      settle(sim);
      assert.equal(run.status, "COMPENSATED", failure);
    }
  });

  it("cancelling the parent cancels its running element children; a rollback reaches the ones that succeeded", () => {
    const sim = new Simulation();
    const run = begin(sim, fan({ parallelism: 2 }, [{ id: "z", type: "boom", dependsOn: ["each"] }]), {
      xs: [1, 2, 3],
    });
    const ended = new Map<string, RunState>();
    const s = sim.session("s");
    runToEnd(sim, s, ended);
    assert.equal(run.status, "COMPENSATING");
    const ids = [0, 1, 2].map((i) => childRunId(run.id, `each[${i}]`));
    assert.deepEqual(run.compensations.get("each")!.input, { childRunIds: ids });
    assert.equal(sim.rollbackReads.length, 2, "two at a time, the map's parallelism");
    answerReads(sim, ended);
    for (let round = 0; round < 3; round++) {
      const refunds = [];
      for (let t = sim.lease(s); t !== undefined; t = sim.lease(s)) refunds.push(t);
      for (const t of refunds) completed(sim.core, s, sim.key(t), null, null, null, sim.at());
      settle(sim);
      answerReads(sim, ended);
    }
    assert.deepEqual(run.compensations.get("each")!.output, { children: { COMPENSATED: 3 } });
    assert.equal(run.status, "COMPENSATED");

    // Cancel (no compensation) with elements running: their children are cancelled.
    const sim2 = new Simulation();
    const run2 = begin(sim2, fan({ parallelism: 2 }, [], "charge-wait"), { xs: [1, 2, 3] });
    const kids = startChildren(sim2);
    cancelRun(sim2.core, run2, "operator", false, sim2.at().now);
    assert.equal(run2.status, "CANCELLED");
    assert.deepEqual(
      kids.map((k) => k.status),
      ["CANCELLED", "CANCELLED"],
    );
    assert.equal(sim2.childStarts.length, 0, "no further element starts");
  });
});

/** Sends "go" to a child waiting in its `hold` step. */
function childSignal(sim: Simulation, child: RunState): void {
  assert.equal(child.tasks.get("hold")!.status, "WAITING");
  signalReceived(sim.core, child, { name: "go", key: null, payload: null }, sim.at().now);
}
