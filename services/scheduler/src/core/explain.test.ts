/** Why a task is not running: each gate of explain.ts, and mixes of them, on simulated runs. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CompiledWorkflow } from "../dag/index.js";
import type { RunState, TaskState } from "../model/run-state.js";
import { explainPending, pendingReason, type Gate } from "./explain.js";
import { holdOf, type QueueHold, type SessionView } from "./holds.js";
import { completed, failed } from "./reports.js";
import { advance, cancelRun, startRun } from "./runs.js";
import { Simulation, workflowOf } from "./simulation.js";

const flow = (steps: unknown[]): CompiledWorkflow => workflowOf({ name: "flow", version: 1, steps });

function begin(sim: Simulation, workflow: CompiledWorkflow): RunState {
  return startRun(
    sim.core,
    { definitionId: 1, workflow, input: { n: 2 }, idempotencyKey: null, requestHash: null, labels: {} },
    sim.at().now,
  );
}

const task = (run: RunState, step: string): TaskState => {
  const t = run.tasks.get(step);
  assert.ok(t, `task ${step}`);
  return t;
};

/** Completes the task leased to `session` now, and evaluates the run. */
function finish(sim: Simulation, run: RunState, t: TaskState, output: unknown = {}): void {
  const session = sim.sessions.get(t.sessionId ?? "") ?? sim.session("s");
  assert.equal(completed(sim.core, session, sim.key(t), output, null, null, sim.at()), null);
  sim.settle((r) => advance(sim.core, r, sim.at().now));
  assert.equal(t.status, "SUCCEEDED");
  void run;
}

/** The decision a scheduling pass at `at` would record for the task's type, from `sessions`. */
function pass(t: TaskState, sessions: SessionView[], at: Date): QueueHold {
  const record: QueueHold = { hold: holdOf(t.type, sessions), since: at };
  t.hold = record;
  return record;
}

const kinds = (gates: Gate[]): string[] => gates.map((g) => g.kind);

void describe("explain: the gates that hold a task", () => {
  it("dependencies: which steps a pending step waits for, as they finish", () => {
    const sim = new Simulation();
    const run = begin(
      sim,
      flow([
        { id: "a", type: "t" },
        { id: "b", type: "t" },
        { id: "c", type: "t", dependsOn: ["b", "a"] },
      ]),
    );
    const c = task(run, "c");
    assert.deepEqual(explainPending(run, c), [
      { kind: "dependencies", steps: ["a", "b"], readingOutput: [] },
    ]);
    assert.equal(pendingReason(explainPending(run, c)), "unfinished dependencies: a, b");
    const s = sim.session("s");
    const a = sim.lease(s)!;
    assert.equal(a.stepId, "a");
    // A dependency leased or running is still unfinished.
    assert.deepEqual(kinds(explainPending(run, c)), ["dependencies"]);
    finish(sim, run, a);
    assert.equal(pendingReason(explainPending(run, c)), "unfinished dependencies: b");
    finish(sim, run, sim.lease(s)!);
    // Both done: c was queued by the evaluation, and nothing holds it until a pass decides.
    assert.equal(c.status, "QUEUED");
    assert.deepEqual(explainPending(run, c), []);
  });

  it("dependencies: a succeeded step whose offloaded output is still being read", () => {
    const sim = new Simulation();
    const run = begin(
      sim,
      flow([
        { id: "a", type: "t" },
        { id: "b", type: "t", dependsOn: ["a"] },
      ]),
    );
    const s = sim.session("s");
    const a = sim.lease(s)!;
    a.status = "SUCCEEDED";
    a.outputRef = { uri: "s3://bucket/key" };
    a.resolvedOutput = undefined;
    assert.deepEqual(explainPending(run, task(run, "b")), [
      { kind: "dependencies", steps: [], readingOutput: ["a"] },
    ]);
    assert.equal(pendingReason(explainPending(run, task(run, "b"))), "reading the offloaded output of a");
  });

  it("condition: a step's `when` waits for its dependencies, with them", () => {
    const sim = new Simulation();
    const run = begin(
      sim,
      flow([
        { id: "check", type: "t" },
        { id: "ship", type: "t", dependsOn: ["check"], when: "steps.check.output.ok == true" },
      ]),
    );
    const gates = explainPending(run, task(run, "ship"));
    assert.deepEqual(gates, [
      { kind: "dependencies", steps: ["check"], readingOutput: [] },
      { kind: "condition", expression: "steps.check.output.ok == true", steps: ["check"] },
    ]);
    assert.equal(
      pendingReason(gates),
      'unfinished dependencies: check; condition "steps.check.output.ok == true" is decided once check finishes',
    );
    // Decided (false): the step is skipped, a finished task with no gates.
    finish(sim, run, sim.lease(sim.session("s"))!, { ok: false });
    assert.equal(task(run, "ship").status, "SKIPPED");
    assert.deepEqual(explainPending(run, task(run, "ship")), []);
  });

  it("retry backoff: the next attempt and when it is due", () => {
    const sim = new Simulation();
    const run = begin(
      sim,
      flow([{ id: "a", type: "t", retry: { maxAttempts: 4, initialInterval: "2s", jitter: "none" } }]),
    );
    const s = sim.session("s");
    const a = sim.lease(s)!;
    const error = { type: "CARD_DECLINED", message: "try later", retryable: true };
    assert.equal(failed(sim.core, s, sim.key(a), error, 0, null, sim.at()), null);
    assert.equal(a.status, "RETRY_WAIT");
    const due = new Date(sim.clock + 2000);
    const gates = explainPending(run, a);
    assert.deepEqual(gates, [
      { kind: "retry-backoff", until: due, nextAttempt: 2, maxAttempts: 4, lastError: error },
    ]);
    assert.equal(pendingReason(gates), `retry (attempt 2 of 4) due at ${due.toISOString()}`);
    // Due: queued again, no longer held by the backoff.
    sim.advanceTime(2000);
    assert.equal(a.status, "QUEUED");
    assert.deepEqual(explainPending(run, a), []);
  });

  it("no executor, then every executor busy: what the pass recorded, with the tasks ahead", () => {
    const sim = new Simulation();
    const wf = flow([{ id: "a", type: "charge" }]);
    const first = begin(sim, wf);
    const second = begin(sim, wf);
    const t1 = task(first, "a");
    const t2 = task(second, "a");
    const t0 = new Date(sim.clock);
    pass(t1, [], t0);
    t2.hold = t1.hold;
    assert.deepEqual(
      explainPending(second, t2, () => 1),
      [{ kind: "no-executor", type: "charge", ahead: 1, since: t0 }],
    );
    assert.equal(pendingReason(explainPending(second, t2)), 'no executor advertises type "charge"');

    // An executor with one slot attaches and takes the first task: the next pass finds it busy.
    sim.advanceTime(500);
    const t500 = new Date(sim.clock);
    const record = pass(t1, [{ types: new Set(["charge"]), credit: 0, draining: false }], t500);
    t2.hold = record;
    assert.deepEqual(
      explainPending(second, t2, () => 0),
      [{ kind: "executors-busy", type: "charge", executors: 1, draining: 0, ahead: 0, since: t500 }],
    );
    assert.equal(
      pendingReason(explainPending(second, t2)),
      'the one executor for type "charge" is busy (no credit)',
    );
    // The record is shared: the next pass's decision is what every queued task of the type reads.
    record.hold = holdOf("charge", [
      { types: new Set(["charge"]), credit: 0, draining: true },
      { types: new Set(["charge", "x"]), credit: 0, draining: false },
    ]);
    assert.equal(
      pendingReason(explainPending(second, t2)),
      'all 2 executors for type "charge" are busy (no credit) or draining',
    );
    record.hold = null;
    assert.deepEqual(explainPending(second, t2), [], "about to be leased");
  });

  it("schedule-to-start: the deadline of the queued attempt, beside what holds it", () => {
    const sim = new Simulation();
    const run = begin(sim, flow([{ id: "a", type: "t", timeouts: { scheduleToStart: "30s" } }]));
    const a = task(run, "a");
    const queuedAt = a.queuedAt!;
    pass(a, [], queuedAt);
    const gates = explainPending(run, a);
    assert.deepEqual(gates, [
      { kind: "no-executor", type: "t", ahead: 0, since: queuedAt },
      { kind: "schedule-to-start", deadline: new Date(queuedAt.getTime() + 30_000), timeoutMs: 30_000 },
    ]);
    // The deadline ends the wait rather than holding the task: not in the one line.
    assert.equal(pendingReason(gates), 'no executor advertises type "t"');
    assert.deepEqual(explainPending(run, a, () => 0).slice(1), gates.slice(1));
    // It passes: the attempt fails and waits for its retry (the engine's default policy).
    sim.advanceTime(30_000);
    assert.equal(a.status, "RETRY_WAIT");
    assert.deepEqual(kinds(explainPending(run, a)), ["retry-backoff"]);
  });

  it("a leased, running or finished task has no gates", () => {
    const sim = new Simulation();
    const run = begin(sim, flow([{ id: "a", type: "t" }]));
    const s = sim.session("s");
    const a = sim.lease(s)!;
    assert.equal(a.status, "LEASED");
    assert.deepEqual(explainPending(run, a), []);
    finish(sim, run, a);
    assert.deepEqual(explainPending(run, a), []);
  });

  it("a rollback: compensations wait for the wave before them; the run's own steps are held by it", () => {
    const sim = new Simulation();
    const run = begin(
      sim,
      flow([
        { id: "book", type: "t", compensate: { type: "undo" } },
        { id: "pay", type: "t", dependsOn: ["book"], compensate: { type: "undo" } },
        { id: "ship", type: "t", dependsOn: ["pay"] },
      ]),
    );
    const s = sim.session("s");
    finish(sim, run, sim.lease(s)!);
    finish(sim, run, sim.lease(s)!);
    assert.equal(task(run, "ship").status, "QUEUED");
    // A pending step of a run being cancelled is held by it (as it is until the cancel is applied).
    run.cancelRequested = true;
    assert.deepEqual(kinds(explainPending(run, task(run, "ship"))), ["run-stopping"]);
    assert.equal(pendingReason(explainPending(run, task(run, "ship"))), "the run was cancelled");
    run.cancelRequested = false;

    assert.ok(cancelRun(sim.core, run, "test", true, sim.at().now));
    assert.equal(run.status, "COMPENSATING");
    assert.equal(task(run, "ship").status, "CANCELLED");
    const undoPay = run.compensations.get("pay")!;
    const undoBook = run.compensations.get("book")!;
    assert.equal(undoPay.status, "QUEUED");
    assert.equal(undoBook.status, "PENDING");
    assert.deepEqual(explainPending(run, undoBook), [
      { kind: "dependencies", steps: ["pay"], readingOutput: [] },
    ]);
    assert.deepEqual(explainPending(run, undoPay), [], "the first wave is not held by the rollback");
  });
});
