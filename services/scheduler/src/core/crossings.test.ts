/**
 * Rules of one run reached from another's (context.ts crossInto), through the pure core
 * (simulation.ts): a fault in them is the run's whose rules threw (Effects.fault), and the rules
 * that reached them go on; a run's end is recorded before its end reaches other runs.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TERMINAL_RUN_STATUSES, type RunState } from "../model/run-state.js";
import { childResolved, childRunId } from "./children.js";
import { cancelRun } from "./runs.js";
import { beginRun, Simulation, workflowOf } from "./simulation.js";
import { completeRun } from "./transitions.js";
import { signalReceived } from "./waits.js";

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

/** Makes `obj[key]` throw `message` once, the first time it is read or written while `when()` holds. */
function throwOnce<T extends object>(
  obj: T,
  key: keyof T & string,
  when: () => boolean,
  message: string,
): void {
  let value = obj[key];
  let thrown = false;
  const strike = (): void => {
    if (thrown || !when()) return;
    thrown = true;
    throw new Error(message);
  };
  Object.defineProperty(obj, key, {
    configurable: true,
    get: () => {
      strike();
      return value;
    },
    set: (v: T[keyof T & string]) => {
      strike();
      value = v;
    },
  });
}

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
    throwOnce(parent, "workflow", () => TERMINAL_RUN_STATUSES.has(child.status), "parent fault");
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
    throwOnce(parent, "workflow", () => TERMINAL_RUN_STATUSES.has(child.status), "parent fault");
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
    throwOnce(child, "cancelRequested", () => true, "child fault");
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
    throwOnce(older, "cancelRequested", () => true, "older fault");
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
    throwOnce(run.claim, "state", () => TERMINAL_RUN_STATUSES.has(run.status), "release fault");
    sim.written.runs.clear();
    assert.throws(() => completeRun(sim.core, run, "SUCCEEDED", null, null, sim.at().now), /release fault/);
    assert.ok(sim.written.runs.has(run), "its row is written");
    assert.deepEqual(sim.eventsOf(run.id).slice(-1), ["runCompleted"]);
    assert.deepEqual(sim.ended, [run]);
  });
});
