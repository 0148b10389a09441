/**
 * ChildRuns (children.ts): the rules it applies once a read is back (a child found ended, a child's
 * definition resolved, a child read for its parent's rollback) are confined to the run whose rules
 * they are (faults.ts): a fault there fails that run SCHEDULER_ERROR instead of escaping from the
 * read as a rejected promise, and is not taken for a database error to try again. Through the pure
 * core (core/simulation.ts) with the engine's confinement.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ApiError, createLogger } from "@nexusflow/common";
import { childResolved, childRunId } from "../core/index.js";
import { completed, failed } from "../core/reports.js";
import { beginRun, settleRuns, Simulation, workflowOf } from "../core/simulation.js";
import type { CompiledWorkflow } from "../dag/index.js";
import type { RunState } from "../model/run-state.js";
import type { RunOutcome, StoredRunRows } from "../persistence/engine-store.js";
import { ChildRuns } from "./children.js";
import { faultConfinement } from "./faults.js";

const log = createLogger("child-runs-test", "silent");

/** A child that charges, compensated by a refund. */
const chargeFlow = workflowOf({
  name: "charge",
  version: 1,
  steps: [{ id: "pay", type: "pay", compensate: { type: "refund" } }],
});
/** Charges through its child, then fails. */
const parentFlow = workflowOf({
  name: "parent",
  version: 1,
  steps: [
    { id: "c", workflow: { name: "charge" } },
    { id: "z", type: "boom", dependsOn: ["c"] },
  ],
});

/** A proxy that throws `message` whenever it is read: a run's evaluation, so advancing it throws. */
function broken(message: string): NonNullable<RunState["evaluation"]> {
  return new Proxy({} as NonNullable<RunState["evaluation"]>, {
    get: () => {
      throw new Error(message);
    },
  });
}

/**
 * The shell's child reads over a simulated core: the store answers from `outcomes`, the
 * definitions with `charge` (any other name is not registered), rules confined as the engine's.
 */
function setup(outcomes = new Map<string, RunOutcome>()) {
  const sim = new Simulation();
  sim.confineFaults = true;
  const dropped: string[] = [];
  let live = true;
  /** Reads tried again (logged at warn level by ChildRuns). */
  let retries = 0;
  const childLog = createLogger("child-runs-test", "warn", {
    destination: { write: () => void retries++ },
  });
  const children = new ChildRuns({
    store: {
      runOutcome: (id) => Promise.resolve(outcomes.get(id)),
      loadRun: (): Promise<StoredRunRows | undefined> => Promise.resolve(undefined),
    },
    definitions: {
      resolve: (name) =>
        name === "charge"
          ? Promise.resolve({ id: 2, workflow: chargeFlow, at: 0 })
          : Promise.reject(ApiError.notFound(`workflow ${name} is not registered`)),
      compiledById: (): Promise<CompiledWorkflow> => Promise.resolve(chargeFlow),
    },
    log: childLog,
    core: () => sim.core,
    live: () => live,
    retryMs: 60_000,
    confine: faultConfinement({
      log,
      core: () => sim.core,
      drop: (runId) => dropped.push(runId),
    }),
  });
  return {
    sim,
    children,
    dropped,
    retries: () => retries,
    stop: () => {
      live = false;
    },
  };
}

/** The run failed SCHEDULER_ERROR for `fault`. */
function assertFailed(run: RunState | undefined, fault: RegExp): void {
  assert.equal(run?.status, "FAILED");
  assert.equal(run.error?.type, "SCHEDULER_ERROR");
  assert.match(run.error?.message ?? "", fault);
}

void describe("ChildRuns: the rules applied once a read is back, a fault confined to their run", () => {
  it("a child found ended: a fault in the parent's rules fails the parent, not tried again", async () => {
    const outcomes = new Map<string, RunOutcome>();
    const { sim, children, retries, stop } = setup(outcomes);
    const parent = beginRun(sim, parentFlow, {});
    const [start] = sim.childStarts.splice(0);
    assert.ok(start);
    outcomes.set(childRunId(parent.id, "c"), { status: "SUCCEEDED", output: { paid: 1 }, error: null });
    // A bug in evaluating the parent once its step ends.
    parent.evaluation = broken("injected found-ended fault");
    try {
      await children.start(parent.id, start.stepId);
      assertFailed(parent, /injected found-ended fault/);
      assert.equal(retries(), 0, "a fault is not a database error to try again");
    } finally {
      stop();
    }
  });

  it("a child's definition resolved: a fault in the parent's rules (the step fails) fails the parent", async () => {
    const { sim, children, stop } = setup();
    const flow = workflowOf({ name: "p", version: 1, steps: [{ id: "c", workflow: { name: "missing" } }] });
    const parent = beginRun(sim, flow, {});
    const [start] = sim.childStarts.splice(0);
    assert.ok(start);
    parent.evaluation = broken("injected resolved fault");
    try {
      await children.start(parent.id, start.stepId);
      assertFailed(parent, /injected resolved fault/);
      assert.equal(parent.tasks.get("c")?.status, "FAILED");
      assert.equal(parent.tasks.get("c")?.error?.type, "CHILD_WORKFLOW_NOT_FOUND");
    } finally {
      stop();
    }
  });

  it("a child's definition resolved: a fault in the child's start fails the child; its parent's step fails CHILD_FAILED", async () => {
    const { sim, children, stop } = setup();
    const parent = beginRun(sim, parentFlow, {});
    const [start] = sim.childStarts.splice(0);
    assert.ok(start);
    const childId = childRunId(parent.id, "c");
    let child: RunState | undefined;
    const runs = sim.core.runs;
    const set = runs.set.bind(runs);
    runs.set = (id, run) => {
      // A bug in the child's first evaluation, as it starts.
      if (id === childId && child === undefined) (child = run).evaluation = broken("injected child fault");
      return set(id, run);
    };
    try {
      await children.start(parent.id, start.stepId);
      assertFailed(child, /injected child fault/);
      const step = parent.tasks.get("c");
      assert.equal(step?.status, "FAILED");
      assert.equal(step.error?.type, "CHILD_FAILED");
      assert.match(step.error?.message ?? "", /SCHEDULER_ERROR: .*injected child fault/);
      settleRuns(sim);
      assert.equal(parent.status, "FAILED");
      assert.notEqual(parent.error?.type, "SCHEDULER_ERROR", "the parent is not blamed");
    } finally {
      stop();
    }
  });

  it("a child read for its parent's rollback: a fault in the parent's rollback fails the parent", async () => {
    const { sim, children, stop } = setup();
    const parent = beginRun(sim, parentFlow, {});
    const [start] = sim.childStarts.splice(0);
    assert.ok(start);
    childResolved(
      sim.core,
      parent.id,
      start.stepId,
      { definitionId: 2, workflow: chargeFlow, input: {} },
      sim.at().now,
    );
    const s = sim.session("s");
    const pay = sim.lease(s);
    assert.equal(pay?.type, "pay");
    completed(sim.core, s, sim.key(pay), {}, null, null, sim.at());
    settleRuns(sim);
    settleRuns(sim);
    const boom = sim.lease(s);
    assert.equal(boom?.type, "boom");
    failed(
      sim.core,
      s,
      sim.key(boom),
      { type: "BOOM", message: "boom", retryable: false },
      0,
      null,
      sim.at(),
    );
    settleRuns(sim);
    assert.equal(parent.status, "COMPENSATING");
    const [read] = sim.rollbackReads.splice(0);
    assert.ok(read);
    // A bug in ending the rollback's task once the child is read (not stored: it fails).
    const task = parent.compensations.get("c");
    assert.ok(task);
    let output = task.output;
    Object.defineProperty(task, "output", {
      configurable: true,
      get: () => output,
      set: (v: unknown) => {
        if (v !== null) throw new Error("injected rollback read fault");
        output = v;
      },
    });
    try {
      await children.rollBack(read.runId, read.stepId, read.childRunId);
      assertFailed(parent, /injected rollback read fault/);
    } finally {
      stop();
    }
  });
});
