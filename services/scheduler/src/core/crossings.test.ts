/**
 * Rules of one run reached from another's (context.ts crossInto), through the pure core
 * (simulation.ts): a fault in them is the run's whose rules threw (Effects.fault), and the rules
 * that reached them go on; a run's end is recorded before its end reaches other runs; a parent's
 * rollback goes on past a fault in a child's own rollback (child-rollback.ts).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { TERMINAL_RUN_STATUSES, type RunState } from "../model/run-state.js";
import type { StoredTask } from "../persistence/engine-store.js";
import { childRollbackRead } from "./child-rollback.js";
import { childResolved, childRunId } from "./children.js";
import { completed, failed } from "./reports.js";
import { cancelRun, failBrokenRun } from "./runs.js";
import { beginRun, settleRuns, Simulation, workflowOf } from "./simulation.js";
import { completeRun } from "./transitions.js";
import { signalReceived } from "./waits.js";
import { throwOnce } from "./fault-injection.js";

/** A child that ends when it gets signal "go". */
const childFlow = workflowOf({ name: "child", version: 1, steps: [{ id: "w", wait: { signal: "go" } }] });
const parentFlow = workflowOf({
  name: "parent",
  version: 1,
  steps: [
    { id: "c", workflow: { name: "child" } },
    { id: "after", type: "t", dependsOn: ["c"] },
  ],
});

/** A parent run with its child started (what the shell does for the child start asked for). */
function family(sim: Simulation): { parent: RunState; child: RunState } {
  const parent = beginRun(sim, parentFlow, {});
  const [start] = sim.childStarts.splice(0);
  assert.ok(start);
  childResolved(
    sim.core,
    parent.id,
    start.stepId,
    { definitionId: 2, workflow: childFlow, input: {} },
    sim.at().now,
  );
  const child = sim.core.runs.get(childRunId(parent.id, "c"));
  assert.ok(child);
  return { parent, child };
}

void describe("rules of a run reached from another's (core)", () => {
  it("a fault in the parent's rules that a child's end runs is the parent's; the child's end stands", () => {
    const sim = new Simulation();
    sim.confineFaults = true;
    const { parent, child } = family(sim);
    throwOnce(parent, "workflow", "both", () => TERMINAL_RUN_STATUSES.has(child.status), "parent fault");
    signalReceived(sim.core, child, { name: "go", key: null, payload: 1 }, sim.at().now);
    assert.equal(child.status, "SUCCEEDED");
    assert.ok(sim.written.runs.has(child));
    assert.deepEqual(sim.eventsOf(child.id).slice(-1), ["runCompleted"]);
    assert.ok(sim.ended.includes(child));
    assert.deepEqual(
      sim.faults.map((f) => [f.run, (f.error as Error).message]),
      [[parent, "parent fault"]],
    );
    assert.equal(parent.tasks.get("c")?.status, "WAITING", "the parent's rules stopped at the fault");
  });

  it("by default the simulation throws such a fault on (a test sees its bug), recorded all the same", () => {
    const sim = new Simulation();
    const { parent, child } = family(sim);
    throwOnce(parent, "workflow", "both", () => TERMINAL_RUN_STATUSES.has(child.status), "parent fault");
    assert.throws(
      () => signalReceived(sim.core, child, { name: "go", key: null, payload: 1 }, sim.at().now),
      /parent fault/,
    );
    assert.deepEqual(
      sim.faults.map((f) => f.run),
      [parent],
    );
  });

  it("a fault in a child's cancel that its parent's cancel runs is the child's; the parent's cancel goes on", () => {
    const sim = new Simulation();
    sim.confineFaults = true;
    const { parent, child } = family(sim);
    throwOnce(child, "cancelRequested", "both", () => true, "child fault");
    assert.equal(cancelRun(sim.core, parent, "enough", false, sim.at().now), true);
    assert.equal(parent.status, "CANCELLED");
    assert.deepEqual(sim.eventsOf(parent.id).slice(-1), ["runCompleted"]);
    assert.deepEqual(
      sim.faults.map((f) => [f.run, (f.error as Error).message]),
      [[child, "child fault"]],
    );
    assert.equal(child.status, "RUNNING", "left to the shell to fail");
  });

  it("a fault in the cancel of a key's oldest holder (cancel-in-progress) is the holder's; the newer run starts", () => {
    const sim = new Simulation();
    sim.confineFaults = true;
    const flow = workflowOf({
      name: "latest",
      version: 1,
      concurrency: [{ key: "input.k", limit: 1, strategy: "cancel-in-progress" }],
      steps: [{ id: "s", type: "t" }],
    });
    const older = beginRun(sim, flow, { k: "a" });
    throwOnce(older, "cancelRequested", "both", () => true, "older fault");
    const newer = beginRun(sim, flow, { k: "a" });
    assert.equal(newer.claim?.state, "held");
    assert.equal(newer.tasks.get("s")?.status, "QUEUED");
    assert.deepEqual(
      sim.faults.map((f) => [f.run, (f.error as Error).message]),
      [[older, "older fault"]],
    );
  });

  it("a run's end is recorded before its concurrency slots are freed: a fault there leaves it recorded", () => {
    const sim = new Simulation();
    const flow = workflowOf({
      name: "keyed",
      version: 1,
      concurrency: [{ key: "input.k", limit: 1 }],
      steps: [{ id: "s", type: "t" }],
    });
    const run = beginRun(sim, flow, { k: "a" });
    assert.ok(run.claim);
    throwOnce(run.claim, "state", "both", () => TERMINAL_RUN_STATUSES.has(run.status), "release fault");
    sim.written.runs.clear();
    assert.throws(() => completeRun(sim.core, run, "SUCCEEDED", null, null, sim.at().now), /release fault/);
    assert.ok(sim.written.runs.has(run), "its row is written");
    assert.deepEqual(sim.eventsOf(run.id).slice(-1), ["runCompleted"]);
    assert.deepEqual(sim.ended, [run]);
  });
});

/** A child that charges, compensated by a refund. */
const chargeFlow = workflowOf({
  name: "charge",
  version: 1,
  steps: [{ id: "pay", type: "pay", compensate: { type: "refund" } }],
});
/** Reserves (compensated by a release), charges through its child, then fails. */
const sagaFlow = workflowOf({
  name: "saga",
  version: 1,
  steps: [
    { id: "reserve", type: "reserve", compensate: { type: "release" } },
    { id: "c", dependsOn: ["reserve"], workflow: { name: "charge" } },
    { id: "z", type: "boom", dependsOn: ["c"] },
  ],
});

/**
 * A saga whose child SUCCEEDED (and left memory) and whose last step failed: the parent rolls
 * back, its rollback of step c waiting for the read of the child's rows; `read` answers it with
 * the child's rows as stored (the shell's read, ChildRuns.rollBack).
 */
function sagaRollingBack(sim: Simulation): { parent: RunState; child: RunState; read: () => void } {
  const parent = beginRun(sim, sagaFlow, {});
  const s = sim.session("s");
  const report = (type: string): void => {
    const t = sim.lease(s);
    assert.equal(t?.type, type);
    if (type === "boom")
      failed(sim.core, s, sim.key(t), { type: "BOOM", message: "boom", retryable: false }, 0, null, sim.at());
    else assert.equal(completed(sim.core, s, sim.key(t), {}, null, null, sim.at()), null);
    settleRuns(sim);
    settleRuns(sim);
  };
  report("reserve");
  const [start] = sim.childStarts.splice(0);
  assert.ok(start);
  childResolved(
    sim.core,
    parent.id,
    start.stepId,
    { definitionId: 2, workflow: chargeFlow, input: {} },
    sim.at().now,
  );
  const childId = childRunId(parent.id, "c");
  const child = sim.core.runs.get(childId);
  assert.ok(child);
  report("pay");
  assert.equal(child.status, "SUCCEEDED");
  assert.equal(sim.core.runs.has(childId), false);
  report("boom");
  assert.equal(parent.status, "COMPENSATING");
  assert.deepEqual(sim.rollbackReads.splice(0), [{ runId: parent.id, stepId: "c", childRunId: childId }]);
  // The shell's answer: the child's rows as stored.
  const tasks = [...child.tasks.values()].map((t): StoredTask => {
    const { sessionId: _s, lastHeartbeat: _h, resolvedOutput: _r, ...rest } = t;
    return rest;
  });
  const stored = {
    id: child.id,
    definitionId: child.definitionId,
    workflowName: child.workflow.name,
    status: child.status,
    input: child.input,
    idempotencyKey: null,
    labels: {},
    cancelRequested: child.cancelRequested,
    compensateOnCancel: child.compensateOnCancel,
    error: child.error,
    lastEventSeq: child.eventSeq,
    deadline: null,
    createdAt: child.createdAt,
    parent: child.parent,
  };
  const read = (): void =>
    childRollbackRead(
      sim.core,
      parent.id,
      "c",
      childId,
      { stored, tasks, workflow: chargeFlow },
      sim.at().now,
    );
  return { parent, child, read };
}

/** Calls `strike(run)` with the run `runId` as it comes (back) into memory. */
function onRevive(sim: Simulation, runId: string, strike: (run: RunState) => void): void {
  const runs = sim.core.runs;
  const set = runs.set.bind(runs);
  runs.set = (id, run) => {
    if (id === runId) strike(run);
    return set(id, run);
  };
}

/** The parent's rollback goes on past its step c (its release), and ends COMPENSATION_FAILED. */
function assertRollbackGoesOn(sim: Simulation, parent: RunState): void {
  settleRuns(sim);
  const release = sim.lease(sim.sessions.get("s")!);
  assert.equal(release?.type, "release", "the rollback goes on");
  completed(sim.core, sim.sessions.get("s")!, sim.key(release), null, null, null, sim.at());
  settleRuns(sim);
  assert.equal(parent.status, "COMPENSATION_FAILED");
  assert.match(parent.error?.message ?? "", /compensation of c failed/);
}

void describe("a fault in a child's rollback that its parent's rollback runs (core)", () => {
  it("is the child's: before the child changed, its rollback failed, and the parent's rollback goes on", () => {
    const sim = new Simulation();
    sim.confineFaults = true;
    const { parent, child, read } = sagaRollingBack(sim);
    // A bug in starting the child's rollback, before it goes COMPENSATING: reading its compensations.
    onRevive(sim, child.id, (revived) =>
      throwOnce(revived, "compensations", "both", () => true, "child rollback fault"),
    );
    read();
    assert.deepEqual(
      sim.faults.map((f) => [f.run.id, (f.error as Error).message]),
      [[child.id, "child rollback fault"]],
    );
    const task = parent.compensations.get("c");
    assert.equal(task?.status, "FAILED");
    assert.equal(task?.error?.type, TaskErrorType.CHILD_FAILED);
    assert.match(
      task?.error?.message ?? "",
      new RegExp(`child run ${child.id} could not be rolled back: SCHEDULER_ERROR: .*child rollback fault`),
    );
    assert.equal(sim.core.runs.has(child.id), false, "still SUCCEEDED: back out of memory");
    assertRollbackGoesOn(sim, parent);
  });

  it("is the child's: once the child rolls back, it is waited for until it fails SCHEDULER_ERROR", () => {
    const sim = new Simulation();
    sim.confineFaults = true;
    const { parent, child, read } = sagaRollingBack(sim);
    let revived: RunState | undefined;
    // A bug in starting the child's rollback, once it is COMPENSATING: setting its waves.
    onRevive(sim, child.id, (r) => {
      revived = r;
      throwOnce(r, "compensationWaves", "both", () => true, "child waves fault");
    });
    read();
    assert.ok(revived);
    assert.deepEqual(
      sim.faults.map((f) => [f.run, (f.error as Error).message]),
      [[revived, "child waves fault"]],
    );
    assert.equal(revived.status, "COMPENSATING");
    const task = parent.compensations.get("c");
    assert.equal(task?.status, "WAITING", "the child's rollback is waited for");
    // What the shell does with the child's fault (engine faults.ts faultSoon).
    assert.equal(
      failBrokenRun(
        sim.core,
        revived,
        "the scheduler could not advance the run: child waves fault",
        sim.at().now,
      ),
      true,
    );
    assert.equal(task?.status, "FAILED");
    assert.equal(task?.error?.type, TaskErrorType.CHILD_FAILED);
    assert.match(
      task?.error?.message ?? "",
      /ended FAILED while it rolled back: SCHEDULER_ERROR: .*child waves fault/,
    );
    assertRollbackGoesOn(sim, parent);
  });
});
