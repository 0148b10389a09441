/**
 * Recovery in seconds (issue 28), as rules of the pure core: an executor that re-attaches under its
 * id gives up at once every lease it does not list, and after a restart a lease whose executor
 * does not come back expires one session timeout later, with no allowance on top.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CompiledWorkflow } from "../dag/index.js";
import type { RunState, TaskState } from "../model/run-state.js";
import { recover } from "./recovery.js";
import { started } from "./reports.js";
import { startRun } from "./runs.js";
import { attached, leasesToList, listedHeld, sessionLost } from "./sessions.js";
import { Simulation, storedState, workflowOf } from "./simulation.js";

const flow = (steps: unknown[]): CompiledWorkflow => workflowOf({ name: "flow", version: 1, steps });

const three = flow(
  ["a", "b", "c"].map((id) => ({ id, type: "t", retry: { maxAttempts: 3, jitter: "none" } })),
);

function begin(sim: Simulation, workflow: CompiledWorkflow): RunState {
  return startRun(
    sim.core,
    { definitionId: 1, workflow, input: {}, idempotencyKey: null, requestHash: null, labels: {} },
    sim.at().now,
  );
}

const attempts = (sim: Simulation, task: TaskState): string[] =>
  [...sim.written.attempts]
    .filter((a) => a.taskRunId === task.id)
    .sort((x, y) => x.number - y.number)
    .map((a) => `${a.number}:${a.status}:${a.error?.type ?? ""}`);

void describe("sessions: re-attach and restart", () => {
  it("a re-attach expires at once every lease of the executor it does not list, LEASED or RUNNING", () => {
    const sim = new Simulation(60_000);
    begin(sim, three);
    const old = sim.session("old", "ex");
    const [a, b, c] = [sim.lease(old)!, sim.lease(old)!, sim.lease(old)!];
    assert.equal(started(sim.core, old, sim.key(a), sim.at()), null);
    assert.equal(started(sim.core, old, sim.key(c), sim.at()), null);
    // The process dies: its stream ends, the leases wait for their executor.
    sim.sessions.delete("old");
    sessionLost(sim.core, old);
    assert.deepEqual(
      sim.timers.filter((t) => t.timer.kind === "lease-grace").map((t) => t.due - sim.clock),
      [60_000, 60_000, 60_000],
    );

    // Back under its id within the second, holding only c (a running lease it kept).
    sim.advanceTime(500);
    const back = sim.session("new", "ex");
    const { revoked, expired } = attached(sim.core, back, [sim.key(c)], sim.at());
    assert.deepEqual([revoked, expired], [[], 2]);
    for (const t of [a, b]) {
      assert.equal(t.status, "RETRY_WAIT", `${t.stepId} expired without waiting out the grace`);
      assert.equal(t.error?.type, "LEASE_EXPIRED");
      assert.equal(t.failures, 1, "lost work counts as a failed attempt, as a session lost for good does");
      assert.equal(
        t.nextAttemptAt?.getTime(),
        sim.clock + 1,
        "its retry is due at once, not after a backoff",
      );
      assert.equal(t.sessionId, null);
    }
    assert.deepEqual(attempts(sim, a), ["1:FAILED:LEASE_EXPIRED"]);
    assert.deepEqual(attempts(sim, b), ["1:FAILED:LEASE_EXPIRED"]);
    assert.equal(c.status, "RUNNING");
    assert.equal(c.sessionId, "new");
    assert.deepEqual([...back.leases], [c.id]);

    // The retries come due at once and are leased again.
    sim.advanceTime(1);
    const again = [sim.lease(back), sim.lease(back)];
    assert.deepEqual(again.map((t) => [t?.stepId, t?.attempt]).sort(), [
      ["a", 2],
      ["b", 2],
    ]);
    // The old grace timers, when they fire, change nothing.
    sim.advanceTime(60_000);
    assert.deepEqual(
      [a, b, c].map((t) => t.status),
      ["LEASED", "LEASED", "RUNNING"],
    );
  });

  it("a re-attach leaves other executors' leases alone and revokes a listed lease that is no longer its own", () => {
    const sim = new Simulation(60_000);
    begin(sim, three);
    const mine = sim.session("mine", "ex");
    const theirs = sim.session("theirs", "other");
    const a = sim.lease(mine)!;
    const b = sim.lease(theirs)!;
    const c = sim.lease(theirs)!;
    sim.sessions.delete("theirs");
    sessionLost(sim.core, theirs);

    const back = sim.session("back", "ex");
    // Lists another executor's lease: revoked, and nothing of that executor changes.
    const { revoked, expired } = attached(sim.core, back, [sim.key(a), sim.key(b)], sim.at());
    assert.deepEqual(
      revoked.map((k) => k.taskRunId),
      [b.id],
    );
    assert.equal(expired, 0);
    assert.deepEqual(
      [a.status, a.sessionId, b.status, b.sessionId, c.status],
      ["LEASED", "back", "LEASED", null, "LEASED"],
    );
  });

  it("a re-attach while the old session still looks open (half-open) cancels and expires its unlisted leases", () => {
    const sim = new Simulation(60_000);
    begin(sim, three);
    const old = sim.session("old", "ex");
    const a = sim.lease(old)!;
    const back = sim.session("new", "ex");
    const { expired } = attached(sim.core, back, [], sim.at());
    assert.equal(expired, 1);
    assert.deepEqual(sim.cancels, [
      { taskRunId: a.id, reason: "the executor re-attached without this lease" },
    ]);
    assert.equal(a.error?.type, "LEASE_EXPIRED");
    assert.equal(old.leases.size, 0, "the lease left the superseded session");
  });

  it("a lost session's leases wait until its executor has been silent for the session timeout, counted from its last word", () => {
    const sim = new Simulation(10_000);
    begin(sim, three);
    const killed = sim.session("killed", "ex1");
    const partitioned = sim.session("partitioned", "ex2");
    const a = sim.lease(killed)!;
    const b = sim.lease(partitioned)!;
    // A stream that ends 400 ms after its last message (a SIGKILLed process): 9.6 s of grace left.
    sessionLost(sim.core, killed, 400);
    // One declared dead after 11 s of silence (the liveness check): nothing left to wait for.
    sessionLost(sim.core, partitioned, 11_000);
    assert.deepEqual(
      sim.timers.flatMap((t) =>
        t.timer.kind === "lease-grace" ? [[t.timer.task.id, t.due - sim.clock]] : [],
      ),
      [
        [a.id, 9600],
        [b.id, 0],
      ],
    );
    sim.advanceTime(0);
    assert.deepEqual([a.status, b.error?.type], ["LEASED", "LEASE_EXPIRED"]);
    sim.advanceTime(9600);
    assert.equal(a.error?.type, "LEASE_EXPIRED");
  });

  it("after a restart a lease waits one session timeout for its executor, not more", () => {
    const before = new Simulation(1500);
    begin(before, three);
    const s = before.session("s", "ex");
    const [a, b] = [before.lease(s)!, before.lease(s)!];
    assert.equal(started(before.core, s, before.key(a), before.at()), null);

    const after = new Simulation(1500);
    after.clock = before.clock + 30_000;
    const result = recover(after.core, storedState(before), new Map([[1, three]]), new Map(), after.at());
    assert.deepEqual([result.queued, result.orphaned], [1, 2]);
    const graces = after.timers.filter((t) => t.timer.kind === "lease-grace");
    assert.deepEqual(
      graces.map((t) => t.due - after.clock),
      [1500, 1500],
      "the grace is the session timeout from the restart",
    );
    after.advanceTime(1499);
    assert.deepEqual(
      [a.id, b.id].map((id) => after.core.tasks.get(id)?.status),
      ["RUNNING", "LEASED"],
    );
    after.advanceTime(1);
    assert.deepEqual(
      [a.id, b.id].map((id) => after.core.tasks.get(id)?.error?.type),
      ["LEASE_EXPIRED", "LEASE_EXPIRED"],
    );
  });

  it("after a restart the time the scheduler took to start counts against the grace", () => {
    const before = new Simulation(1500);
    begin(before, three);
    const s = before.session("s", "ex");
    const a = before.lease(s)!;

    const after = new Simulation(1500);
    // The restart began 400 ms before recovery ran (taking the database, migrations, loading).
    recover(after.core, storedState(before), new Map([[1, three]]), new Map(), after.at(), 1500 - 400);
    after.advanceTime(1099);
    assert.equal(after.core.tasks.get(a.id)?.status, "LEASED");
    after.advanceTime(1);
    assert.equal(after.core.tasks.get(a.id)?.error?.type, "LEASE_EXPIRED");
  });

  it("after a restart an executor back under its id keeps what it lists and loses the rest at once", () => {
    const before = new Simulation(10_000);
    begin(before, three);
    const s = before.session("s", "ex");
    const [a, b] = [before.lease(s)!, before.lease(s)!];
    const keyA = before.key(a);

    const after = new Simulation(10_000);
    recover(after.core, storedState(before), new Map([[1, three]]), new Map(), after.at());
    after.advanceTime(800);
    const back = after.session("back", "ex");
    const { revoked, expired } = attached(after.core, back, [keyA], after.at());
    assert.deepEqual([revoked, expired], [[], 1]);
    assert.equal(after.core.tasks.get(a.id)?.sessionId, "back");
    assert.equal(after.core.tasks.get(b.id)?.error?.type, "LEASE_EXPIRED");
  });

  it("expires a lease sent before the ask that the executor's list leaves out, and only that", () => {
    const sim = new Simulation(60_000);
    begin(sim, three);
    const s = sim.session("s", "ex");
    const [a, b, c] = [sim.lease(s)!, sim.lease(s)!, sim.lease(s)!];
    assert.equal(started(sim.core, s, sim.key(a), sim.at()), null);
    // c is granted, its lease not written to the stream yet: not asked about.
    const asked = leasesToList(sim.core, s, new Map([[c.id, c.fencingToken]]));
    assert.deepEqual([...asked.keys()].sort(), [a.id, b.id].sort());
    // Meanwhile b is released and leased again (a new token): the answer cannot know that lease.
    b.fencingToken++;
    // The executor lists c (sent since) but neither a nor b's first lease.
    const expired = listedHeld(sim.core, s, asked, [sim.key(c)], sim.at());
    assert.equal(expired, 1, "a only: b's lease asked about is gone, c was not asked about");
    assert.equal(a.status, "RETRY_WAIT");
    assert.equal(a.error?.type, "LEASE_EXPIRED");
    assert.equal(a.nextAttemptAt?.getTime(), sim.clock + 1, "its retry due at once");
    assert.deepEqual(attempts(sim, a), ["1:FAILED:LEASE_EXPIRED"]);
    assert.deepEqual(
      sim.cancels.map((x) => x.taskRunId),
      [a.id],
      "the executor is told to stop it, in case",
    );
    assert.equal(b.status, "LEASED");
    assert.equal(c.status, "LEASED");
    assert.deepEqual([...s.leases].sort(), [b.id, c.id].sort());
  });

  it("keeps every lease the executor lists, and judges only leases still on the asking session", () => {
    const sim = new Simulation(60_000);
    begin(sim, three);
    const s = sim.session("s", "ex");
    const [a, b] = [sim.lease(s)!, sim.lease(s)!];
    const asked = leasesToList(sim.core, s, undefined);
    assert.equal(listedHeld(sim.core, s, asked, [sim.key(a), sim.key(b)], sim.at()), 0);
    // A replica not sure it still holds the runs' partition judges nothing, however the list reads.
    assert.equal(
      listedHeld(sim.core, s, asked, [], sim.at(), () => false),
      0,
    );
    assert.deepEqual([a.status, b.status], ["LEASED", "LEASED"]);
    // b moved to another session of the executor (a re-attach reclaimed it) before the answer.
    const other = sim.session("other", "ex");
    attached(sim.core, other, [sim.key(b)], sim.at());
    assert.equal(b.sessionId, "other");
    assert.equal(listedHeld(sim.core, s, asked, [], sim.at()), 0, "a expired on the re-attach, b is not s's");
    assert.equal(b.status, "LEASED");
  });
});
