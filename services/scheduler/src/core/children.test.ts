/** Child workflow steps through the pure core (simulation.ts): no server, time by hand. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { partitionOf } from "../cluster/partitioning.js";
import type { CompiledWorkflow } from "../dag/index.js";
import type { ParentLink, RunState } from "../model/run-state.js";
import { childEnded, childFoundEnded, childResolved, childRunId } from "./children.js";
import { recover } from "./recovery.js";
import { completed } from "./reports.js";
import { cancelRun, dropRefusedRun, startRun } from "./runs.js";
import { beginRun, settleRuns, storedOf, Simulation, workflowOf } from "./simulation.js";
import { signalReceived } from "./waits.js";

const parentFlow = (steps: unknown[]): CompiledWorkflow => workflowOf({ name: "parent", version: 1, steps });
/** A child that ends when it gets signal "go" (its output: the payload), or fails after 1 s. */
const childFlow = workflowOf({
  name: "child",
  version: 1,
  steps: [{ id: "w", wait: { signal: "go", timeout: "1s" } }],
  output: "{{ steps.w.output }}",
});

function begin(sim: Simulation, workflow: CompiledWorkflow, parent: ParentLink | null = null): RunState {
  return beginRun(sim, workflow, { n: 7 }, parent);
}

/** Does what the shell does for each child start asked for: resolves it to `childFlow`. */
function startChildren(sim: Simulation): RunState[] {
  const started: RunState[] = [];
  for (const { runId, stepId } of sim.childStarts.splice(0)) {
    const parent = sim.core.runs.get(runId)!;
    const input = (parent.tasks.get(stepId)!.input as { input: unknown }).input;
    childResolved(sim.core, runId, stepId, { definitionId: 2, workflow: childFlow, input }, sim.at().now);
    started.push(sim.core.runs.get(childRunId(runId, stepId))!);
  }
  return started;
}

void describe("child workflow steps (core)", () => {
  it("a child's output is its step's output, in the child's commit; the next step gets it", () => {
    const sim = new Simulation();
    const run = begin(
      sim,
      parentFlow([
        { id: "c", workflow: { name: "child", input: { n: "{{ input.n }}" } } },
        { id: "after", type: "t", dependsOn: ["c"], input: "{{ steps.c.output }}" },
      ]),
    );
    const step = run.tasks.get("c")!;
    assert.equal(step.status, "WAITING");
    assert.deepEqual(step.input, { workflow: "child", version: null, input: { n: 7 } });
    assert.equal(sim.offered.length, 0, "nothing for an executor");
    assert.deepEqual(sim.childStarts, [{ runId: run.id, stepId: "c" }]);
    const [child] = startChildren(sim);
    assert.ok(child);
    assert.deepEqual(child.parent, { runId: run.id, stepId: "c", depth: 1 });
    assert.deepEqual(child.input, { n: 7 });
    assert.equal(child.id, childRunId(run.id, "c"));
    sim.written.runs.clear();
    sim.written.tasks.clear();
    signalReceived(sim.core, child, { name: "go", key: null, payload: { charged: 7 } }, sim.at().now);
    assert.equal(child.status, "SUCCEEDED");
    assert.equal(step.status, "SUCCEEDED");
    assert.deepEqual(step.output, { charged: 7 });
    assert.ok(sim.written.tasks.has(step) && sim.written.runs.has(child), "written in the same turn");
    settleRuns(sim);
    const after = run.tasks.get("after")!;
    assert.equal(after.status, "QUEUED");
    assert.deepEqual(after.input, { charged: 7 });
  });

  it("a failed child fails its step with CHILD_FAILED (the child's error in details); it is not started again", () => {
    const sim = new Simulation();
    const run = begin(sim, parentFlow([{ id: "c", workflow: { name: "child" } }]));
    const [child] = startChildren(sim);
    sim.advanceTime(1000);
    assert.equal(child!.status, "FAILED");
    const step = run.tasks.get("c")!;
    assert.equal(step.status, "FAILED");
    assert.equal(step.error?.type, TaskErrorType.CHILD_FAILED);
    assert.match(step.error?.message ?? "", /ended FAILED: WAIT_TIMEOUT/);
    assert.deepEqual((step.error?.details as { childRunId: string }).childRunId, child!.id);
    settleRuns(sim);
    assert.equal(run.status, "FAILED");
    assert.equal(run.error?.type, TaskErrorType.CHILD_FAILED);
    assert.equal(sim.childStarts.length, 0, "no second child");
  });

  it("a child is started once: a second resolution of the same step changes nothing", () => {
    const sim = new Simulation();
    const run = begin(sim, parentFlow([{ id: "c", workflow: { name: "child" } }]));
    const ask = sim.childStarts[0]!;
    startChildren(sim);
    const runs = sim.core.runs.size;
    childResolved(
      sim.core,
      ask.runId,
      ask.stepId,
      { definitionId: 2, workflow: childFlow, input: {} },
      sim.at().now,
    );
    assert.equal(sim.core.runs.size, runs);
    assert.equal(run.tasks.get("c")!.status, "WAITING");
  });

  it("a child that cannot start fails its step with the shell's error", () => {
    const sim = new Simulation();
    const run = begin(sim, parentFlow([{ id: "c", workflow: { name: "nope" } }]));
    const error = {
      type: TaskErrorType.CHILD_WORKFLOW_NOT_FOUND,
      message: "workflow nope is not registered",
      retryable: false,
    };
    childResolved(sim.core, run.id, "c", { error }, sim.at().now);
    assert.deepEqual(run.tasks.get("c")!.error, error);
    assert.equal(run.status, "FAILED");
  });

  it("cancelling a parent cancels its five running children; with abandon, none", () => {
    for (const policy of ["cancel", "abandon"] as const) {
      const sim = new Simulation();
      const steps = [1, 2, 3, 4, 5].map((i) => ({
        id: `c${i}`,
        workflow: { name: "child", onParentCancel: policy },
      }));
      const run = begin(sim, parentFlow(steps));
      const children = startChildren(sim);
      assert.equal(children.length, 5);
      cancelRun(sim.core, run, "operator", false, sim.at().now);
      assert.equal(run.status, "CANCELLED");
      for (const child of children) {
        assert.equal(child.status, policy === "cancel" ? "CANCELLED" : "RUNNING", policy);
        if (policy === "cancel") assert.match(child.error?.message ?? "", new RegExp(`parent run ${run.id}`));
      }
      for (const step of run.tasks.values()) assert.equal(step.status, "CANCELLED");
    }
  });

  it("a cancel with compensation reaches running children: a child's succeeded step is compensated", () => {
    const sim = new Simulation();
    const payThenWait = workflowOf({
      name: "pay-then-wait",
      version: 1,
      steps: [
        { id: "charge", type: "pay", compensate: { type: "refund" } },
        { id: "w", wait: { signal: "go" }, dependsOn: ["charge"] },
      ],
    });
    const run = begin(sim, parentFlow([{ id: "c", workflow: { name: "pay-then-wait" } }]));
    childResolved(sim.core, run.id, "c", { definitionId: 3, workflow: payThenWait, input: {} }, sim.at().now);
    const child = sim.core.runs.get(childRunId(run.id, "c"))!;
    const s = sim.session("s");
    const charge = sim.lease(s)!;
    assert.equal(completed(sim.core, s, sim.key(charge), { paid: 1 }, null, null, sim.at()), null);
    settleRuns(sim);
    assert.equal(child.tasks.get("w")!.status, "WAITING");
    cancelRun(sim.core, run, "operator", true, sim.at().now);
    assert.equal(child.status, "COMPENSATING", "the child rolls back its charge");
    const refund = sim.lease(s)!;
    assert.equal(refund.type, "refund");
    assert.equal(completed(sim.core, s, sim.key(refund), null, null, null, sim.at()), null);
    settleRuns(sim);
    assert.equal(child.status, "COMPENSATED");
    assert.equal(run.tasks.get("c")!.status, "CANCELLED", "the parent's step ended with the cancel");
  });

  it("a parent's run timeout cancels its running child", () => {
    const sim = new Simulation();
    const run = startRun(
      sim.core,
      {
        definitionId: 1,
        workflow: workflowOf({
          name: "parent",
          version: 1,
          timeout: "1m",
          steps: [{ id: "c", workflow: { name: "child" } }],
        }),
        input: {},
        idempotencyKey: null,
        requestHash: null,
        labels: {},
      },
      sim.at().now,
    );
    const patient = workflowOf({ name: "patient", version: 1, steps: [{ id: "w", wait: { signal: "go" } }] });
    childResolved(sim.core, run.id, "c", { definitionId: 2, workflow: patient, input: {} }, sim.at().now);
    const child = sim.core.runs.get(childRunId(run.id, "c"));
    sim.advanceTime(60_000);
    assert.equal(run.status, "TIMED_OUT");
    assert.equal(child!.status, "CANCELLED");
    assert.match(child!.error?.message ?? "", /run timed out/);
  });

  it("a child dropped for changes PostgreSQL refused fails its parent's step, not leaving it waiting", () => {
    const sim = new Simulation();
    const run = begin(sim, parentFlow([{ id: "c", workflow: { name: "child" } }]));
    const [child] = startChildren(sim);
    const dropped = dropRefusedRun(sim.core, child!.id, "invalid byte sequence");
    assert.ok(dropped);
    childEnded(sim.core, dropped, sim.at().now);
    const step = run.tasks.get("c")!;
    assert.equal(step.status, "FAILED");
    assert.equal(step.error?.type, TaskErrorType.CHILD_FAILED);
    assert.match(step.error?.message ?? "", /STORAGE_REFUSED/);
    settleRuns(sim);
    assert.equal(run.status, "FAILED");
  });

  it("a run 10 levels deep starts no child: CHILD_DEPTH_EXCEEDED", () => {
    const sim = new Simulation();
    const deep = begin(sim, parentFlow([{ id: "again", workflow: { name: "parent" } }]), {
      runId: "00000000-0000-4000-8000-000000000001",
      stepId: "again",
      depth: 10,
    });
    const step = deep.tasks.get("again")!;
    assert.equal(step.status, "FAILED");
    assert.equal(step.error?.type, TaskErrorType.CHILD_DEPTH_EXCEEDED);
    assert.equal(sim.childStarts.length, 0);
    const shallow = begin(sim, parentFlow([{ id: "again", workflow: { name: "parent" } }]), {
      runId: "00000000-0000-4000-8000-000000000001",
      stepId: "again",
      depth: 9,
    });
    assert.equal(shallow.tasks.get("again")!.status, "WAITING");
  });

  it("recovery asks for a child that is not active (not started, or ended while down), which then ends the step", () => {
    const sim = new Simulation();
    const workflow = parentFlow([{ id: "c", workflow: { name: "child" } }]);
    const before = begin(sim, workflow);
    const stored = storedOf(before);
    const after = new Simulation();
    const { runs } = recover(after.core, stored, new Map([[1, workflow]]), new Map(), after.at());
    const run = runs[0]!;
    assert.deepEqual(after.childStarts, [{ runId: run.id, stepId: "c" }]);
    childFoundEnded(
      after.core,
      run.id,
      "c",
      { status: "SUCCEEDED", output: 42, error: null },
      after.at().now,
    );
    assert.equal(run.tasks.get("c")!.output, 42);
    assert.equal(run.status, "SUCCEEDED");
  });

  it("a child's id is a UUID derived from its parent and step, in its parent's partition", () => {
    const parent = "3f2c9a4e-1b7d-4c8e-9a6f-0d1e2f3a4b5c";
    const id = childRunId(parent, "charge");
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(id, childRunId(parent, "charge"));
    assert.notEqual(id, childRunId(parent, "refund"));
    for (const n of [1, 16, 4096]) assert.equal(partitionOf(id, n), partitionOf(parent, n));
  });
});
