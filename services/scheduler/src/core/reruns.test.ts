/** Rerun from a step through the pure core: which steps are taken over, and how the new run starts. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CompiledWorkflow } from "../dag/index.js";
import type { TaskStatusName } from "../model/run-state.js";
import { isRefusal, planRerun, type OriginalStep, type RerunPlan, type RerunRefusal } from "./reruns.js";
import { failed } from "./reports.js";
import { advance, startRun } from "./runs.js";
import { Simulation, workflowOf } from "./simulation.js";

const step = (id: string, dependsOn: string[] = [], extra: Record<string, unknown> = {}) => ({
  id,
  type: "t",
  dependsOn,
  ...extra,
});

/** a -> b -> c -> d, plus a side branch a -> x -> y. */
const flow: CompiledWorkflow = workflowOf({
  name: "flow",
  version: 1,
  steps: [
    step("a"),
    step("b", ["a"], { input: { a: "{{ steps.a.output.v }}" } }),
    step("c", ["b"], { input: { b: "{{ steps.b.output.v }}" } }),
    step("d", ["c"]),
    step("x", ["a"]),
    step("y", ["x"]),
  ],
});

/** The original run's steps from `status` by step id (outputs `{v: "<id>-out"}`). */
function original(
  statuses: Record<string, TaskStatusName>,
  compensated: string[] = [],
): Map<string, OriginalStep> {
  return new Map(
    Object.entries(statuses).map(([id, status]) => [
      id,
      {
        taskRunId: `task-${id}`,
        status,
        input: { of: id },
        output: status === "SUCCEEDED" ? { v: `${id}-out` } : null,
        outputRef: null,
        compensated: compensated.includes(id),
      },
    ]),
  );
}

function plan(from: string, steps: Map<string, OriginalStep>): RerunPlan {
  const p = planRerun(flow, "run-1", from, steps);
  assert.ok(!isRefusal(p), isRefusal(p) ? p.message : "");
  return p;
}

function refusal(from: string, steps: Map<string, OriginalStep>): RerunRefusal {
  const p = planRerun(flow, "run-1", from, steps);
  assert.ok(isRefusal(p), "refused");
  return p;
}

void describe("rerun plans (core)", () => {
  it("takes over the chosen step's ancestors and succeeded side steps; reruns it and what is downstream", () => {
    const steps = original({
      a: "SUCCEEDED",
      b: "SUCCEEDED",
      c: "FAILED",
      d: "SKIPPED",
      x: "SUCCEEDED",
      y: "SUCCEEDED",
    });
    assert.deepEqual([...plan("c", steps).keys()], ["a", "b", "x", "y"]);
    assert.deepEqual([...plan("b", steps).keys()], ["a", "x", "y"]);
    assert.deepEqual([...plan("a", steps).keys()], []);
  });

  it("reruns a side step that did not succeed, and everything downstream of it", () => {
    const steps = original({
      a: "SUCCEEDED",
      b: "SUCCEEDED",
      c: "FAILED",
      d: "SKIPPED",
      x: "FAILED",
      y: "SKIPPED",
    });
    assert.deepEqual([...plan("c", steps).keys()], ["a", "b"]);
    // A compensated side step is not taken over either.
    const undone = original(
      { a: "SUCCEEDED", b: "SUCCEEDED", c: "FAILED", d: "SKIPPED", x: "SUCCEEDED", y: "SUCCEEDED" },
      ["x"],
    );
    assert.deepEqual([...plan("c", undone).keys()], ["a", "b"]);
  });

  it("refuses a step it does not know, and an upstream step that failed, never ran or was compensated", () => {
    const steps = original({
      a: "SUCCEEDED",
      b: "FAILED",
      c: "SKIPPED",
      d: "SKIPPED",
      x: "SUCCEEDED",
      y: "SUCCEEDED",
    });
    const unknown = refusal("nope", steps);
    assert.equal(unknown.code, "NOT_FOUND");
    assert.equal(unknown.field, "from_step");
    const failed = refusal("d", steps);
    assert.equal(failed.code, "FAILED_PRECONDITION");
    assert.match(failed.message, /step b, upstream of d, did not succeed in run run-1 \(FAILED\)/);
    const never = refusal("c", original({ a: "SUCCEEDED" }));
    assert.match(never.message, /step b, upstream of c, did not succeed in run run-1 \(it never ran\)/);
    const compensated = refusal(
      "c",
      original({ a: "SUCCEEDED", b: "SUCCEEDED", c: "FAILED", d: "SKIPPED" }, ["a"]),
    );
    assert.match(compensated.message, /step a, upstream of c, was compensated/);
  });

  it("lets the DAG decide again an upstream step a condition skipped", () => {
    const wf = workflowOf({
      name: "cond",
      version: 1,
      steps: [step("a"), step("maybe", ["a"], { when: "input.go == true" }), step("z", ["a", "maybe"])],
    });
    const steps = new Map<string, OriginalStep>([
      [
        "a",
        { taskRunId: "ta", status: "SUCCEEDED", input: null, output: 1, outputRef: null, compensated: false },
      ],
      [
        "maybe",
        {
          taskRunId: "tm",
          status: "SKIPPED",
          input: null,
          output: null,
          outputRef: null,
          compensated: false,
        },
      ],
    ]);
    const p = planRerun(wf, "run-1", "z", steps);
    assert.ok(!isRefusal(p));
    assert.deepEqual([...p.keys()], ["a"]);
  });

  it("starts a rerun with the taken-over steps SUCCEEDED, their events, and only the chosen step offered", () => {
    const sim = new Simulation();
    const steps = original({
      a: "SUCCEEDED",
      b: "SUCCEEDED",
      c: "FAILED",
      d: "SKIPPED",
      x: "SUCCEEDED",
      y: "SUCCEEDED",
    });
    const run = startRun(
      sim.core,
      {
        definitionId: 1,
        workflow: flow,
        input: {},
        idempotencyKey: null,
        requestHash: null,
        labels: { "rerun-of": "run-1" },
        rerun: { of: "run-1", fromStep: "c", reused: plan("c", steps), stepInput: { b: "by hand" } },
      },
      sim.at().now,
    );
    assert.deepEqual(
      [...run.tasks.values()].map((t) => [t.stepId, t.status]),
      [
        ["a", "SUCCEEDED"],
        ["b", "SUCCEEDED"],
        ["c", "QUEUED"],
        ["d", "PENDING"],
        ["x", "SUCCEEDED"],
        ["y", "SUCCEEDED"],
      ],
    );
    assert.deepEqual(run.tasks.get("b")?.output, { v: "b-out" });
    assert.deepEqual(run.tasks.get("c")?.input, { b: "by hand" }, "the new input, not the template's");
    assert.deepEqual(
      sim.offered.map((t) => t.stepId),
      ["c"],
    );
    assert.deepEqual(run.rerun, {
      of: "run-1",
      fromStep: "c",
      reused: { a: "task-a", b: "task-b", x: "task-x", y: "task-y" },
    });
    const events = sim.events.filter((e) => e.runId === run.id);
    assert.equal(events[0]?.case, "runStarted");
    assert.deepEqual(
      events
        .filter((e) => e.case === "taskSucceeded")
        .map((e) => [(e.value as { stepId: string }).stepId, (e.value as { reusedFrom: string }).reusedFrom]),
      [
        ["a", "task-a"],
        ["b", "task-b"],
        ["x", "task-x"],
        ["y", "task-y"],
      ],
    );
  });

  it("rolls back the steps it took over when the rerun fails: they are its own", () => {
    const sim = new Simulation();
    const wf = workflowOf({
      name: "saga",
      version: 1,
      steps: [
        step("a", [], { compensate: { type: "undo-a" } }),
        step("b", ["a"], { retry: { maxAttempts: 1 } }),
      ],
    });
    const reused = planRerun(wf, "run-1", "b", original({ a: "SUCCEEDED", b: "FAILED" }));
    assert.ok(!isRefusal(reused));
    const run = startRun(
      sim.core,
      {
        definitionId: 1,
        workflow: wf,
        input: {},
        idempotencyKey: null,
        requestHash: null,
        labels: {},
        rerun: { of: "run-1", fromStep: "b", reused },
      },
      sim.at().now,
    );
    const s = sim.session("s");
    const b = sim.lease(s)!;
    assert.equal(b.stepId, "b");
    failed(
      sim.core,
      s,
      sim.key(b),
      { type: "BOOM", message: "still broken", retryable: false },
      0,
      null,
      sim.at(),
    );
    sim.settle((r) => advance(sim.core, r, sim.at().now));
    assert.equal(run.status, "COMPENSATING");
    const undo = sim.lease(s)!;
    assert.equal(undo.type, "undo-a");
  });
});
