/** Waits for an event through the pure core (simulation.ts): matched, applied, timed out, recovered. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CompiledWorkflow } from "../dag/index.js";
import { applyEvent, matchEvent, type StoredWaitEvent } from "./event-waits.js";
import { explainPending, pendingReason } from "./explain.js";
import { recover } from "./recovery.js";
import { cancelRun } from "./runs.js";
import { beginRun, storedOf, Simulation, workflowOf } from "./simulation.js";
import { signalReceived } from "./waits.js";

const flow = (steps: unknown[], name = "flow"): CompiledWorkflow => workflowOf({ name, version: 1, steps });

let seq = 0;
/** An event as stored, published now. */
function stored(sim: Simulation, key: string, payload: unknown): StoredWaitEvent {
  return { eventId: `ev-${++seq}`, key, payload, publishTime: new Date(sim.clock) };
}

/** Publishes: matches, then applies the matches (as PublishEvent does around its statement). */
function publish(sim: Simulation, key: string, payload: unknown) {
  const event = stored(sim, key, payload);
  const { matches, failures } = matchEvent(sim.core, event);
  const outcomes = applyEvent(sim.core, event, matches, sim.at().now);
  return { event, matches, failures, outcomes };
}

const paid = flow([
  { id: "order", wait: { event: "orders.paid", filter: "event.payload.orderId == input.orderId" } },
]);

void describe("waits for an event (core)", () => {
  it("the first matching event ends the wait with the event as its output", () => {
    const sim = new Simulation();
    const run = beginRun(sim, paid, { orderId: "o-1" });
    const task = run.tasks.get("order")!;
    assert.equal(task.status, "WAITING");
    assert.equal(sim.offered.length, 0, "nothing for an executor");
    assert.deepEqual(task.input, {
      event: "orders.paid",
      filter: "event.payload.orderId == input.orderId",
    });
    assert.deepEqual(publish(sim, "orders.paid", { orderId: "o-2" }).matches, [], "another order");
    assert.deepEqual(publish(sim, "orders.created", { orderId: "o-1" }).matches, [], "another key");
    assert.equal(task.status, "WAITING");
    const hit = publish(sim, "orders.paid", { orderId: "o-1", amount: 12 });
    assert.deepEqual(hit.matches, [{ taskRunId: task.id, runId: run.id, stepId: "order" }]);
    assert.deepEqual(hit.outcomes, ["applied"]);
    assert.equal(task.status, "SUCCEEDED");
    assert.deepEqual(task.output, {
      eventId: hit.event.eventId,
      key: "orders.paid",
      payload: { orderId: "o-1", amount: 12 },
      publishTime: new Date(sim.clock).toISOString(),
    });
    assert.equal(run.status, "SUCCEEDED");
    assert.equal(sim.core.eventWaits?.size, 0, "no longer waiting: out of the index");
    // Satisfied once: the same match applied again (a retried publish) changes nothing.
    assert.deepEqual(applyEvent(sim.core, hit.event, hit.matches, sim.at().now), ["ended"]);
    assert.deepEqual(
      sim.eventsOf(run.id).filter((e) => e !== "taskStarted"),
      ["runStarted", "taskWaiting", "taskSucceeded", "runCompleted"],
    );
  });

  it("an event published before the step waits does not satisfy it", () => {
    const sim = new Simulation();
    const run = beginRun(
      sim,
      flow([
        { id: "gate", wait: { signal: "go" } },
        { id: "order", dependsOn: ["gate"], wait: { event: "orders.paid" } },
      ]),
    );
    assert.deepEqual(publish(sim, "orders.paid", { early: true }).matches, [], "nobody waits yet");
    signalReceived(sim.core, run, { name: "go", key: null, payload: null }, sim.at().now);
    // The step waits from now on: the earlier event was not kept for it.
    const order = run.tasks.get("order")!;
    assert.equal(order.status, "WAITING");
    assert.deepEqual(publish(sim, "orders.paid", { late: true }).outcomes, ["applied"]);
    assert.deepEqual((order.output as { payload: unknown }).payload, { late: true });
  });

  it("one event ends the waits of many runs; patterns and upstream outputs in filters", () => {
    const sim = new Simulation();
    const any = flow([{ id: "w", wait: { event: "orders.*" } }], "any");
    const deep = flow(
      [{ id: "w", wait: { event: "orders.**", filter: "event.key == 'orders.eu.paid'" } }],
      "deep",
    );
    const up = flow(
      [
        { id: "gate", wait: { signal: "go" } },
        {
          id: "w",
          dependsOn: ["gate"],
          wait: { event: "orders.paid", filter: "event.payload.amount >= steps.gate.output.min" },
        },
      ],
      "up",
    );
    const a = beginRun(sim, any);
    const b = beginRun(sim, any);
    const d = beginRun(sim, deep);
    const u = beginRun(sim, up);
    const first = publish(sim, "orders.paid", { amount: 5 });
    assert.deepEqual(
      first.matches.map((m) => m.runId).sort(),
      [a.id, b.id].sort(),
      "both runs of `any`; not `deep` (filter), not `up` (not waiting yet)",
    );
    assert.equal(a.status, "SUCCEEDED");
    assert.equal(b.status, "SUCCEEDED");
    assert.equal(d.status, "RUNNING");
    assert.deepEqual(publish(sim, "orders.eu.paid", {}).outcomes, ["applied"]);
    assert.equal(d.status, "SUCCEEDED");
    // `gate` takes its signal: `w` then waits, with the gate's output in its filter's scope.
    signalReceived(sim.core, u, { name: "go", key: null, payload: { min: 10 } }, sim.at().now);
    assert.deepEqual(publish(sim, "orders.paid", { amount: 5 }).matches, []);
    assert.deepEqual(publish(sim, "orders.paid", { amount: 10 }).outcomes, ["applied"]);
    assert.equal(u.status, "SUCCEEDED");
  });

  it("a filter that fails on an event is no match, reported once per wait", () => {
    const sim = new Simulation();
    const run = beginRun(sim, flow([{ id: "w", wait: { event: "x", filter: "event.payload.n > 1" } }]));
    const first = publish(sim, "x", { other: 1 });
    assert.deepEqual(first.matches, []);
    assert.equal(first.failures.length, 1);
    assert.match(first.failures[0]!.message, /event\.payload\.n/);
    assert.deepEqual(publish(sim, "x", "not an object").failures, [], "reported once");
    assert.equal(run.tasks.get("w")!.status, "WAITING");
    assert.deepEqual(publish(sim, "x", { n: 2 }).outcomes, ["applied"]);
  });

  it("times out with WAIT_TIMEOUT; a cancelled run's wait leaves the index; a late match is moot", () => {
    const sim = new Simulation();
    const timed = beginRun(sim, flow([{ id: "w", wait: { event: "late", timeout: "1m" } }]));
    const cancelled = beginRun(sim, flow([{ id: "w", wait: { event: "late" } }]));
    assert.equal(sim.core.eventWaits?.size, 2);
    const gate = explainPending(timed, timed.tasks.get("w")!, undefined, sim.at().now);
    assert.match(pendingReason(gate), /^waiting for an event matching "late" until /);
    // Matched while waiting, then the wait ends before the match is applied.
    const event = stored(sim, "late", 1);
    const matches = matchEvent(sim.core, event).matches;
    assert.equal(matches.length, 2);
    sim.advanceTime(60_000);
    const task = timed.tasks.get("w")!;
    assert.equal(task.status, "FAILED");
    assert.equal(task.error?.type, "WAIT_TIMEOUT");
    assert.match(task.error?.message ?? "", /^no event matching "late" was published by /);
    assert.equal(timed.status, "FAILED");
    cancelRun(sim.core, cancelled, "no", false, sim.at().now);
    assert.equal(sim.core.eventWaits?.size, 0);
    assert.deepEqual(applyEvent(sim.core, event, matches, sim.at().now), ["ended", "ended"]);
  });

  it("recovery enters a stored WAITING wait in the index, and its timeout from the stored time", () => {
    const sim = new Simulation();
    const workflow = flow([{ id: "w", wait: { event: "orders.paid", timeout: "10m" } }]);
    const before = beginRun(sim, workflow);
    const rows = storedOf(before);
    const after = new Simulation();
    after.clock = sim.clock + 4 * 60_000;
    const { runs } = recover(after.core, rows, new Map([[1, workflow]]), new Map(), after.at());
    const run = runs[0]!;
    assert.equal(after.core.eventWaits?.size, 1);
    assert.deepEqual(publish(after, "orders.paid", { ok: 1 }).outcomes, ["applied"]);
    assert.equal(run.status, "SUCCEEDED");
  });
});
