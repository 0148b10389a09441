/** The engine's rules without a server: simulated runs (simulation.ts) through the pure core. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cancelRun, startRun, advance } from "./runs.js";
import { completed, failed, heartbeat, started, released } from "./reports.js";
import { retryDelay } from "./retries.js";
import { reclaim, sessionLost } from "./sessions.js";
import { checkHeartbeat } from "./timeouts.js";
import { Simulation, workflowOf } from "./simulation.js";
import type { CompiledWorkflow } from "../dag/index.js";

const flow = (steps: unknown[], extra: Record<string, unknown> = {}): CompiledWorkflow =>
  workflowOf({ name: "flow", version: 1, steps, ...extra });

function begin(sim: Simulation, workflow: CompiledWorkflow) {
  return startRun(
    sim.core,
    { definitionId: 1, workflow, input: {}, idempotencyKey: null, requestHash: null, labels: {} },
    sim.at().now,
  );
}

const ok = { type: "X", message: "x", retryable: true };

void describe("core rules", () => {
  it("fencing: stale, foreign, unknown and keyless reports change nothing", () => {
    const sim = new Simulation();
    begin(sim, flow([{ id: "a", type: "t" }]));
    const s1 = sim.session("s1");
    const s2 = sim.session("s2");
    const task = sim.lease(s1);
    assert.ok(task);
    const key = sim.key(task);
    assert.equal(started(sim.core, s2, key, sim.at())?.code, "FAILED_PRECONDITION", "foreign");
    assert.equal(started(sim.core, s1, { ...key, fencingToken: 0n }, sim.at())?.code, "FAILED_PRECONDITION");
    assert.equal(started(sim.core, s1, { ...key, taskRunId: "nope" }, sim.at())?.code, "NOT_FOUND");
    assert.equal(started(sim.core, s1, undefined, sim.at())?.code, "INVALID_ARGUMENT");
    assert.equal(task.status, "LEASED");
  });

  it("a completion is accepted at most once", () => {
    const sim = new Simulation();
    const run = begin(sim, flow([{ id: "a", type: "t" }]));
    const s = sim.session("s");
    const task = sim.lease(s)!;
    const key = sim.key(task);
    assert.equal(completed(sim.core, s, key, { v: 1 }, null, null, sim.at()), null);
    assert.equal(completed(sim.core, s, key, { v: 2 }, null, null, sim.at())?.code, "FAILED_PRECONDITION");
    assert.deepEqual(task.output, { v: 1 });
    sim.settle((r) => advance(sim.core, r, sim.at().now));
    assert.equal(run.status, "SUCCEEDED");
    assert.equal(sim.eventsOf(run.id).filter((c) => c === "taskSucceeded").length, 1);
  });

  it("artifact references outside the attempt's own folder are refused, and change nothing", () => {
    const sim = new Simulation();
    const other = begin(sim, flow([{ id: "a", type: "t" }]));
    const run = begin(sim, flow([{ id: "a", type: "t" }]));
    const s = sim.session("s");
    let task = sim.lease(s)!;
    if (task.runId !== run.id) task = sim.lease(s)!;
    const key = sim.key(task);
    const own = `runs/${run.id}/a/attempt-1/`;
    const refused = (outputRef: unknown, logs: unknown) =>
      completed(sim.core, s, key, null, outputRef, logs, sim.at());
    for (const foreign of [
      `runs/${other.id}/a/attempt-1/output.json`,
      "secrets/config.json",
      `${own}../../b/attempt-1/output.json`,
      `runs/${run.id}/a/attempt-2/output.json`,
    ]) {
      assert.equal(refused({ key: foreign }, null)?.code, "INVALID_ARGUMENT", foreign);
      assert.equal(refused(null, { key: foreign })?.code, "INVALID_ARGUMENT", foreign);
      assert.equal(failed(sim.core, s, key, ok, 0, { key: foreign }, sim.at())?.code, "INVALID_ARGUMENT");
    }
    assert.equal(refused({}, null)?.code, "INVALID_ARGUMENT", "a reference without a key");
    assert.equal(task.status, "LEASED", "nothing changed");
    // A log reference without a key names nothing (the proto allows it).
    assert.equal(refused({ key: `${own}output.json` }, { key: "" }), null);
    assert.equal(task.status, "SUCCEEDED");
  });

  it("retries: the jitter draw is an input and bounds the delay", () => {
    const policy = (jitter: string) =>
      flow([{ id: "a", type: "t", retry: { maxAttempts: 5, initialInterval: "1s", jitter } }]).stepsById.get(
        "a",
      )!.retry;
    assert.equal(retryDelay(policy("none"), ok, 2, 0, false, 0.3), 2000);
    assert.equal(retryDelay(policy("full"), ok, 2, 0, false, 0), 0);
    assert.equal(retryDelay(policy("full"), ok, 2, 0, false, 0.5), 1000);
    assert.equal(retryDelay(policy("equal"), ok, 2, 0, false, 0), 1000);
    assert.equal(retryDelay(policy("equal"), ok, 2, 0, false, 0.999), 1999);
    assert.equal(retryDelay(policy("none"), ok, 5, 0, false, 0), null, "no attempts left");
    assert.equal(retryDelay(policy("none"), { ...ok, retryable: false }, 1, 0, false, 0), null);
    assert.equal(retryDelay(policy("none"), ok, 1, 0, true, 0), null, "cancelled run");
    assert.equal(retryDelay(policy("none"), ok, 1, 250, false, 0), 250, "retry-after hint");
  });

  it("a failed attempt waits out its backoff, then is queued again", () => {
    const sim = new Simulation();
    const run = begin(
      sim,
      flow([{ id: "a", type: "t", retry: { maxAttempts: 2, initialInterval: "1s", jitter: "none" } }]),
    );
    const s = sim.session("s");
    const task = sim.lease(s)!;
    failed(sim.core, s, sim.key(task), ok, 0, null, sim.at());
    assert.equal(task.status, "RETRY_WAIT");
    sim.advanceTime(999);
    assert.equal(task.status, "RETRY_WAIT");
    sim.advanceTime(1);
    assert.equal(task.status, "QUEUED");
    const again = sim.lease(s)!;
    failed(sim.core, s, sim.key(again), ok, 0, null, sim.at());
    assert.equal(task.status, "FAILED");
    assert.equal(run.status, "FAILED");
  });

  it("timeouts: schedule-to-start, start-to-close and the run deadline", () => {
    const sim = new Simulation();
    const retry = { maxAttempts: 1 };
    const run = begin(
      sim,
      flow([
        { id: "a", type: "t", retry, timeouts: { scheduleToStart: "1s" } },
        { id: "b", type: "t", retry, timeouts: { startToClose: "2s" } },
      ]),
    );
    const a = run.tasks.get("a")!;
    const b = run.tasks.get("b")!;
    sim.offered.splice(sim.offered.indexOf(a), 1);
    const s = sim.session("s");
    sim.lease(s);
    // Lease sent: the shell arms start-to-close then.
    sim.core.fx.setTimer({ kind: "start-to-close", task: b, token: b.fencingToken }, 2000);
    sim.advanceTime(1000);
    assert.equal(a.status, "FAILED");
    assert.equal(a.error?.type, "SCHEDULE_TO_START_TIMEOUT");
    sim.advanceTime(1000);
    assert.equal(b.error?.type, "TIMEOUT");
    assert.deepEqual(
      sim.cancels.map((c) => c.reason),
      ["start-to-close timeout"],
    );
    assert.equal(run.status, "FAILED");

    const sim2 = new Simulation();
    const timed = begin(sim2, flow([{ id: "a", type: "t" }], { timeout: "5s" }));
    sim2.advanceTime(5000);
    assert.equal(timed.status, "TIMED_OUT");
    assert.equal(timed.tasks.get("a")?.status, "CANCELLED");
  });

  it("heartbeat timeout: a running attempt silent for longer than its limit fails, one that beats does not", () => {
    const sim = new Simulation();
    const run = begin(
      sim,
      flow([{ id: "a", type: "t", retry: { maxAttempts: 1 }, timeouts: { heartbeat: "1s" } }]),
    );
    const s = sim.session("s");
    const task = sim.lease(s)!;
    const key = sim.key(task);
    assert.equal(started(sim.core, s, key, sim.at()), null);
    sim.advanceTime(800);
    assert.equal(heartbeat(sim.core, s, key, sim.at()), null);
    sim.advanceTime(800);
    checkHeartbeat(sim.core, task.id, sim.at());
    assert.equal(task.status, "RUNNING", "beat 800 ms ago: within the limit");
    sim.advanceTime(201);
    checkHeartbeat(sim.core, task.id, sim.at());
    assert.equal(task.status, "FAILED");
    assert.equal(task.error?.type, "HEARTBEAT_TIMEOUT");
    assert.deepEqual(
      sim.cancels.map((c) => c.reason),
      ["heartbeat timeout"],
    );
    assert.equal(run.status, "FAILED");
    assert.equal(
      completed(sim.core, s, key, null, null, null, sim.at())?.code,
      "FAILED_PRECONDITION",
      "fenced",
    );
  });

  it("cancellation with compensation runs the compensations in reverse dependency order", () => {
    const sim = new Simulation();
    const run = begin(
      sim,
      flow([
        { id: "a", type: "t", compensate: { type: "undo-a" } },
        { id: "b", type: "t", dependsOn: ["a"], compensate: { type: "undo-b" } },
        { id: "c", type: "t", dependsOn: ["b"] },
      ]),
    );
    const s = sim.session("s");
    for (let i = 0; i < 2; i++) {
      const t = sim.lease(s)!;
      completed(sim.core, s, sim.key(t), null, null, null, sim.at());
      sim.settle((r) => advance(sim.core, r, sim.at().now));
    }
    const c = sim.lease(s)!;
    assert.equal(c.stepId, "c");
    assert.equal(cancelRun(sim.core, run, "stop", true, sim.at().now), true);
    assert.equal(cancelRun(sim.core, run, "stop", true, sim.at().now), false, "idempotent");
    assert.equal(run.status, "COMPENSATING");
    assert.deepEqual(
      sim.cancels.map((x) => x.taskRunId),
      [c.id],
    );
    const order: string[] = [];
    for (let t = sim.lease(s); t !== undefined; t = sim.lease(s)) {
      order.push(t.type);
      completed(sim.core, s, sim.key(t), null, null, null, sim.at());
    }
    assert.deepEqual(order, ["undo-b", "undo-a"]);
    assert.equal(run.status, "COMPENSATED");
  });

  it("a lost session's lease is reclaimed by its executor, or expires after the grace", () => {
    const sim = new Simulation(1000);
    begin(
      sim,
      flow([
        { id: "a", type: "t" },
        { id: "b", type: "t" },
      ]),
    );
    const s1 = sim.session("s1", "ex");
    const a = sim.lease(s1)!;
    const b = sim.lease(s1)!;
    sim.sessions.delete("s1");
    sessionLost(sim.core, s1);
    assert.equal(a.sessionId, null);
    const s2 = sim.session("s2", "ex");
    const revoked = reclaim(sim.core, s2, [sim.key(a), { ...sim.key(b), fencingToken: 99n }]);
    assert.deepEqual(
      revoked.map((k) => k.taskRunId),
      [b.id],
    );
    assert.equal(a.sessionId, "s2");
    sim.advanceTime(1000);
    assert.equal(a.status, "LEASED", "reclaimed: no expiry");
    assert.equal(b.status, "RETRY_WAIT");
    assert.equal(b.error?.type, "LEASE_EXPIRED");
  });

  it("a released lease goes back to the front without counting as a failure", () => {
    const sim = new Simulation();
    begin(
      sim,
      flow([
        { id: "a", type: "t" },
        { id: "b", type: "t" },
      ]),
    );
    const s = sim.session("s");
    const a = sim.lease(s)!;
    assert.equal(released(sim.core, s, sim.key(a), "", sim.at()), null);
    assert.equal(a.failures, 0);
    assert.equal(sim.lease(s), a);
  });
});
