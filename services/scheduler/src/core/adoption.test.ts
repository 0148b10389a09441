/**
 * An executor with a session to every scheduler replica (issue 22): a replica that loaded a
 * partition holds its leases in their grace, held by no session; the executor's first report of
 * such a lease, on its session to this replica, adopts it. Each Attach lists every lease the
 * executor holds; a replica judges only those of runs in the partitions it holds.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { LeaseKeySchema } from "@nexusflow/gen";
import type { RunState, TaskState } from "../model/run-state.js";
import { completed, heartbeat } from "./reports.js";
import { startRun } from "./runs.js";
import { attached, ownHeldLeases, sessionLost } from "./sessions.js";
import { Simulation, workflowOf } from "./simulation.js";

const two = workflowOf({
  name: "flow",
  version: 1,
  steps: ["a", "b"].map((id) => ({ id, type: "t", retry: { maxAttempts: 3, jitter: "none" } })),
});

function begin(sim: Simulation): RunState {
  return startRun(
    sim.core,
    { definitionId: 1, workflow: two, input: {}, idempotencyKey: null, requestHash: null, labels: {} },
    sim.at().now,
  );
}

/** Two leases of executor "ex" left in their grace (as after a partition load), and its live session here. */
function graced(sim: Simulation): { a: TaskState; b: TaskState } {
  begin(sim);
  const old = sim.session("old", "ex");
  const a = sim.lease(old)!;
  const b = sim.lease(old)!;
  sim.sessions.delete("old");
  sessionLost(sim.core, old);
  return { a, b };
}

void describe("adoption of a lease held by no session", () => {
  it("a report of the lease's executor on its session here adopts it and is handled", () => {
    const sim = new Simulation(10_000);
    const { a, b } = graced(sim);
    const here = sim.session("here", "ex");
    assert.equal(a.sessionId, null);

    assert.equal(heartbeat(sim.core, here, sim.key(a), sim.at()), null);
    assert.equal(a.sessionId, "here");
    assert.deepEqual([...here.leases], [a.id]);

    assert.equal(completed(sim.core, here, sim.key(b), { ok: 1 }, null, null, sim.at()), null);
    assert.equal(b.status, "SUCCEEDED", "the completion of an adopted lease is accepted");
    // The grace ends: an adopted lease does not expire.
    sim.advanceTime(10_001);
    assert.equal(a.status, "LEASED");
    assert.equal(a.failures, 0);
    // Accepted at most once: the same completion again is rejected.
    assert.equal(
      completed(sim.core, here, sim.key(b), { ok: 1 }, null, null, sim.at())?.code,
      "FAILED_PRECONDITION",
    );
  });

  it("anything else is rejected as before: another executor, a stale key, a lease another session holds", () => {
    const sim = new Simulation(10_000);
    const { a, b } = graced(sim);
    const stranger = sim.session("stranger", "other");
    assert.equal(heartbeat(sim.core, stranger, sim.key(a), sim.at())?.code, "FAILED_PRECONDITION");
    assert.equal(a.sessionId, null, "another executor's report adopts nothing");

    const here = sim.session("here", "ex");
    const stale = { ...sim.key(a), fencingToken: sim.key(a).fencingToken - 1n };
    assert.equal(heartbeat(sim.core, here, stale, sim.at())?.code, "FAILED_PRECONDITION");
    assert.equal(a.sessionId, null, "a stale key adopts nothing");

    // b held by a live session of the same executor id (not in its grace): not taken from it.
    const live = sim.session("live", "ex");
    b.sessionId = "live";
    live.leases.add(b.id);
    assert.equal(heartbeat(sim.core, here, sim.key(b), sim.at())?.code, "FAILED_PRECONDITION");
    assert.equal(b.sessionId, "live");

    // The grace ends unadopted: the lease expires as before.
    sim.advanceTime(10_001);
    assert.equal(a.status, "RETRY_WAIT");
    assert.equal(a.error?.type, "LEASE_EXPIRED");
  });
});

void describe("attach with leases of several replicas", () => {
  it("leases of runs in partitions not held here are neither reclaimed nor revoked; unlisted ones here expire", () => {
    const sim = new Simulation(10_000);
    const { a, b } = graced(sim);
    const mine = new Set([a.runId]);
    const owns = (runId: string): boolean => mine.has(runId);
    const foreign = create(LeaseKeySchema, {
      taskRunId: "elsewhere",
      attempt: 1,
      fencingToken: 7n,
      runId: "run-of-another-replica",
    });
    const legacy = create(LeaseKeySchema, { taskRunId: "unknown", attempt: 1, fencingToken: 1n });
    // The executor lists a (with its run), a lease of another replica, and a key without a run.
    const listed = [{ ...sim.key(a), runId: a.runId }, foreign, legacy];
    const judged = ownHeldLeases(listed, owns);
    assert.deepEqual(
      judged.map((k) => k.taskRunId),
      [a.id, "unknown"],
    );
    const back = sim.session("back", "ex");
    const { revoked } = attached(sim.core, back, judged, sim.at());
    assert.deepEqual(
      revoked.map((k) => k.taskRunId),
      ["unknown"],
      "a key without a run is judged as before",
    );
    assert.equal(a.sessionId, "back");
    // b is this replica's and was not listed: expired at once, as before.
    assert.equal(b.status, "RETRY_WAIT");
    assert.equal(b.error?.type, "LEASE_EXPIRED");
    // Every lease of this replica's runs listed: the same array, nothing copied.
    assert.equal(
      ownHeldLeases(judged, () => true),
      judged,
    );
  });
});
