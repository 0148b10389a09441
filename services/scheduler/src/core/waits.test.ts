/** Durable waits and sleeps through the pure core (simulation.ts): no server, time by hand. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CompiledWorkflow } from "../dag/index.js";
import { recover } from "./recovery.js";
import { cancelRun } from "./runs.js";
import { beginRun, settleRuns, storedOf, Simulation, workflowOf } from "./simulation.js";
import { MAX_KEPT_SIGNAL_BYTES, MAX_TIMER_MS, signalReceived } from "./waits.js";

const flow = (steps: unknown[]): CompiledWorkflow => workflowOf({ name: "flow", version: 1, steps });

const signal = (name: string, payload: unknown = null, key: string | null = null) => ({ name, payload, key });

void describe("durable waits (core)", () => {
  it("a signal completes the waiting step in the same commit; no executor is offered anything", () => {
    const sim = new Simulation();
    const run = beginRun(sim, flow([{ id: "w", wait: { signal: "go" } }]));
    const task = run.tasks.get("w")!;
    assert.equal(task.status, "WAITING");
    assert.equal(sim.offered.length, 0, "nothing for an executor");
    assert.equal(sim.timers.length, 0, "no timeout, no timer");
    const out = signalReceived(sim.core, run, signal("go", { ok: true }), sim.at().now);
    assert.deepEqual(out, { stepId: "w", duplicate: false });
    assert.equal(task.status, "SUCCEEDED");
    assert.deepEqual(task.output, { ok: true });
    assert.equal(run.status, "SUCCEEDED");
    assert.deepEqual(
      run.signals.map((s) => [s.name, s.stepId, s.payload]),
      [["go", "w", null]],
      "consumed: the payload lives in the step's output",
    );
    assert.deepEqual(sim.eventsOf(run.id), [
      "runStarted",
      "taskWaiting",
      "signalReceived",
      "taskSucceeded",
      "runCompleted",
    ]);
  });

  it("a signal sent early is kept, and taken when its step starts waiting; a key is stored once", () => {
    const sim = new Simulation();
    const run = beginRun(
      sim,
      flow([
        { id: "a", wait: { signal: "first" } },
        { id: "b", wait: { signal: "second" }, dependsOn: ["a"] },
      ]),
    );
    assert.deepEqual(signalReceived(sim.core, run, signal("second", 2, "k"), sim.at().now), {
      stepId: null,
      duplicate: false,
    });
    assert.deepEqual(signalReceived(sim.core, run, signal("second", 3, "k"), sim.at().now), {
      stepId: null,
      duplicate: true,
    });
    assert.equal(run.signals.length, 1);
    assert.equal(run.tasks.get("b")!.status, "PENDING");
    signalReceived(sim.core, run, signal("first"), sim.at().now);
    settleRuns(sim);
    assert.equal(run.tasks.get("b")!.status, "SUCCEEDED");
    assert.equal(run.tasks.get("b")!.output, 2);
    assert.equal(run.status, "SUCCEEDED");
    assert.deepEqual(signalReceived(sim.core, run, signal("second", 4, "k"), sim.at().now), {
      stepId: "b",
      duplicate: true,
    });
    const late = signalReceived(sim.core, run, signal("second", 5), sim.at().now);
    assert.equal("code" in late && late.code, "FAILED_PRECONDITION");
  });

  it("a wait times out with WAIT_TIMEOUT, not retried; a cancelled run's timer changes nothing", () => {
    const sim = new Simulation();
    const run = beginRun(sim, flow([{ id: "w", wait: { signal: "go", timeout: "1m" } }]));
    sim.advanceTime(59_999);
    assert.equal(run.tasks.get("w")!.status, "WAITING");
    sim.advanceTime(1);
    const task = run.tasks.get("w")!;
    assert.equal(task.status, "FAILED");
    assert.equal(task.error?.type, "WAIT_TIMEOUT");
    assert.equal(task.attempt, 0);
    assert.equal(run.status, "FAILED");

    const other = beginRun(sim, flow([{ id: "w", wait: { signal: "go", timeout: "1m" } }]));
    cancelRun(sim.core, other, "no", false, sim.at().now);
    sim.advanceTime(60_000);
    assert.equal(other.tasks.get("w")!.status, "CANCELLED");
    assert.equal(other.status, "CANCELLED");
  });

  it("a sleep wakes at its time, in steps when it is further than a timer reaches", () => {
    const sim = new Simulation();
    const at = new Date(sim.clock + 40 * 86_400_000).toISOString();
    const run = beginRun(sim, flow([{ id: "s", sleep: { until: "{{ input.at }}" } }]), { at });
    const task = run.tasks.get("s")!;
    assert.equal(sim.timers[0]!.due - sim.clock, MAX_TIMER_MS, "one timer's reach at a time");
    sim.advanceTime(MAX_TIMER_MS);
    assert.equal(task.status, "WAITING", "woken early: set again for the rest");
    sim.advanceTime(40 * 86_400_000 - MAX_TIMER_MS);
    assert.equal(task.status, "SUCCEEDED");
    assert.deepEqual(task.output, { until: at });

    const bad = beginRun(sim, flow([{ id: "s", sleep: { until: "{{ input.at }}" } }]), { at: 12 });
    settleRuns(sim);
    assert.equal(bad.tasks.get("s")!.error?.type, "INVALID_SLEEP_UNTIL");
    assert.equal(bad.status, "FAILED");

    // Dates the calendar does not have, which Date.parse rolls into the next month or day.
    for (const at of [
      "2026-04-31T09:00:00Z",
      "2027-02-29T09:00:00Z",
      "2026-05-01T24:00:00Z",
      "2026-05-01T10:00:00+24:00",
    ]) {
      const none = beginRun(sim, flow([{ id: "s", sleep: { until: "{{ input.at }}" } }]), { at });
      settleRuns(sim);
      assert.equal(none.tasks.get("s")!.error?.type, "INVALID_SLEEP_UNTIL", at);
    }
    assert.throws(() => flow([{ id: "s", sleep: { until: "2027-02-29T09:00:00Z" } }]), /sleep\.until/);
    // A leap day that is one is taken.
    assert.doesNotThrow(() => flow([{ id: "s", sleep: { until: "2028-02-29T09:00:00Z" } }]));
  });

  it("refuses what a run cannot keep", () => {
    const sim = new Simulation();
    const run = beginRun(sim, flow([{ id: "w", wait: { signal: "go" } }]));
    const big = "x".repeat(MAX_KEPT_SIGNAL_BYTES / 2);
    assert.equal("code" in signalReceived(sim.core, run, signal("other", big), sim.at().now), false);
    const full = signalReceived(sim.core, run, signal("other", big), sim.at().now);
    assert.equal("code" in full && full.code, "RESOURCE_EXHAUSTED");
    // A signal a step takes at once is not kept: it still goes through.
    assert.deepEqual(signalReceived(sim.core, run, signal("go", big), sim.at().now), {
      stepId: "w",
      duplicate: false,
    });
  });

  it("recovery re-arms a wait's timeout and a sleep's wake-up from the stored time", () => {
    const sim = new Simulation();
    const workflow = flow([
      { id: "w", wait: { signal: "go", timeout: "10m" } },
      { id: "s", sleep: { for: "5m" } },
    ]);
    const before = beginRun(sim, workflow);
    const stored = storedOf(before);
    // Four minutes later, a new scheduler.
    const after = new Simulation();
    after.clock = sim.clock + 4 * 60_000;
    const { runs } = recover(after.core, stored, new Map([[1, workflow]]), new Map(), after.at());
    const run = runs[0]!;
    after.advanceTime(60_000 - 1);
    assert.equal(run.tasks.get("s")!.status, "WAITING");
    after.advanceTime(1);
    assert.equal(run.tasks.get("s")!.status, "SUCCEEDED", "woke at its stored time");
    signalReceived(after.core, run, signal("go", "late but in time"), after.at().now);
    assert.equal(run.tasks.get("w")!.output, "late but in time");
    assert.equal(run.status, "SUCCEEDED");
  });
});
